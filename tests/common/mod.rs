//! Helpers shared by the integration tests. Add functions; don't rewrite others'.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Habitat interop fixtures: `$WARREN_INTEROP_DIR`, else `shared/interop/habitat` beside the
/// repository. Missing fixtures fail the test loudly; they are never skipped.
pub fn interop_dir() -> PathBuf {
    let dir = match std::env::var_os("WARREN_INTEROP_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/interop/habitat"),
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

pub fn warren_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warren"))
}

/// The outcome of one `warren` process.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "warren failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts a clean failure (exit 1, an `error:` line, no panic) and returns stderr.
    pub fn fails(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit 1:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.stderr.contains("error:"), "no error line: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "warren panicked: {}", self.stderr);
        &self.stderr
    }
}

/// Runs `warren ARGS` with `stdin` piped in and WARREN_CACHE_KEY_PATH unset (tests pass
/// `--cache-key-path` or set it through `envs`).
pub fn warren_with(args: &[&str], stdin: Option<&[u8]>, envs: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(warren_bin());
    cmd.args(args)
        .env_remove("WARREN_CACHE_KEY_PATH")
        .env("WARREN_LOG", "warn")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning warren");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        // The child may exit before reading everything (a refusal); that is not a test failure.
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().expect("waiting for warren");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn warren(args: &[&str]) -> Run {
    warren_with(args, None, &[])
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A small deterministic PRNG (xorshift64*) for property-style loops without extra crates.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `bytes` with 1 to `max_edits` random byte replacements, deletions or insertions.
    pub fn mutate(&mut self, bytes: &[u8], max_edits: usize) -> Vec<u8> {
        let mut m = bytes.to_vec();
        for _ in 0..=self.below(max_edits) {
            let i = self.below(m.len());
            match self.below(3) {
                0 => m[i] = self.next() as u8,
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, self.next() as u8),
            }
        }
        m
    }
}
