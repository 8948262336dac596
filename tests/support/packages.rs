//! Packages made the way a user makes them: `warren pkg build` of a source folder.

use std::path::{Path, PathBuf};

use super::cli::{Run, warren};
use super::files::path_str;
use super::fixtures::repo_root;

/// `warren pkg build SRC --origin ORIGIN --out OUT --cache-key-path KEYS`.
pub fn pkg_build(src: &Path, origin: &str, keys: &Path, out: &Path) -> Run {
    warren(&[
        "pkg",
        "build",
        path_str(src),
        "--origin",
        origin,
        "--out",
        path_str(out),
        "--cache-key-path",
        path_str(keys),
    ])
}

/// The example service's source (`examples/packages/hello-http`).
pub fn hello_http_src() -> PathBuf {
    repo_root().join("examples/packages/hello-http")
}

/// Builds the example with `origin`'s key from `keys`; returns the .hart (the last line).
pub fn build_hello_http(keys: &Path, origin: &str, out: &Path) -> PathBuf {
    PathBuf::from(pkg_build(&hello_http_src(), origin, keys, out).ok().lines().last().unwrap())
}
