//! Paths into the repository and the Habitat interop fixtures.

use std::path::{Path, PathBuf};

/// The repository root (the parent of `host/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The Habitat interop fixtures: `$WARREN_INTEROP_DIR`, else `shared/interop/habitat` beside the
/// repository. Missing fixtures fail the test loudly; they are never skipped.
pub fn interop_dir() -> PathBuf {
    let dir = match std::env::var_os("WARREN_INTEROP_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("../shared/interop/habitat"),
    };
    assert!(
        dir.join("INDEX.md").is_file(),
        "Habitat interop fixtures are missing at {} (the repository expects shared/ beside it, or set \
         WARREN_INTEROP_DIR)",
        dir.display()
    );
    dir
}

/// `components/core/tests/fixtures/{rel}` in the interop fixtures.
pub fn core_fixture(rel: &str) -> PathBuf {
    let p = interop_dir().join("components/core/tests/fixtures").join(rel);
    assert!(p.exists(), "fixture missing: {}", p.display());
    p
}

/// `test/end-to-end/multi-supervisor/testcases/{rel}` in the interop fixtures.
pub fn e2e_fixture(rel: &str) -> PathBuf {
    let p = interop_dir().join("test/end-to-end/multi-supervisor/testcases").join(rel);
    assert!(p.exists(), "fixture missing: {}", p.display());
    p
}
