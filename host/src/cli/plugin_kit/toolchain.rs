//! Finding a compiler for wasm32-wasip2 the way scripts/build-plugins.sh does: rustup's target
//! (added when missing), else Debian's rustc-web building its own std, linked by
//! wasm-component-ld. `WARREN_WASM_ROUTE=rustup|debian` forces one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub const TARGET: &str = "wasm32-wasip2";
const COMPONENT_LD_VERSION: &str = "0.5.31";
const DEBIAN_PACKAGES: &str = "rustc-web cargo-web rust-web-src lld-19 wasi-libc";

pub enum Route {
    Rustup,
    Debian { component_ld: PathBuf },
}

impl Route {
    pub fn label(&self) -> &'static str {
        match self {
            Route::Rustup => "rustup",
            Route::Debian { .. } => "debian",
        }
    }

    /// `cargo build --release` of the crate at `manifest` for the target, into `target_dir`
    /// (the Debian route under `debian/`, another compiler's artifacts).
    pub fn cargo_build(&self, manifest: &Path, target_dir: &Path) -> (Command, PathBuf) {
        let mut cmd;
        let dir = match self {
            Route::Rustup => {
                cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                target_dir.to_path_buf()
            }
            Route::Debian { component_ld } => {
                cmd = Command::new("/usr/bin/cargo");
                let path = std::env::var("PATH").unwrap_or_default();
                cmd.env("PATH", format!("/usr/lib/llvm-19/bin:{path}"))
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env("CARGO_TARGET_WASM32_WASIP2_LINKER", component_ld)
                    .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-L/usr/lib/wasm32-wasi")
                    .arg("-Zbuild-std=std,panic_abort");
                target_dir.join("debian")
            }
        };
        // Never through a workspace wrapper meant for the host (scripts/test.sh lints with one).
        cmd.env_remove("RUSTC_WORKSPACE_WRAPPER").env_remove("CLIPPY_ARGS");
        cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(manifest)
            .arg("--target-dir")
            .arg(&dir);
        (cmd, dir)
    }
}

/// The route to build with, installing the rustup target or wasm-component-ld if needed.
pub fn find() -> anyhow::Result<Route> {
    match std::env::var("WARREN_WASM_ROUTE").as_deref() {
        Ok("rustup") => rustup_ready()
            .then_some(Route::Rustup)
            .context("WARREN_WASM_ROUTE=rustup but rustup's wasm32-wasip2 target is unavailable"),
        Ok("debian") => debian_ready(),
        Ok("auto") | Err(_) => {
            if rustup_ready() {
                return Ok(Route::Rustup);
            }
            eprintln!("warren: falling back to Debian's rustc-web");
            debian_ready()
        }
        Ok(other) => bail!("WARREN_WASM_ROUTE must be rustup, debian or unset (got {other:?})"),
    }
}

fn rustup_has_target() -> bool {
    Command::new("rustup").args(["target", "list", "--installed"]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET)
    })
}

fn rustup_ready() -> bool {
    if rustup_has_target() {
        return true;
    }
    if Command::new("rustup").arg("--version").output().is_err() {
        eprintln!("warren: rustup not found");
        return false;
    }
    eprintln!("warren: rustup target {TARGET} not installed; trying `rustup target add {TARGET}`");
    Command::new("rustup").args(["target", "add", TARGET]).status().is_ok_and(|s| s.success())
        && rustup_has_target()
}

fn debian_ready() -> anyhow::Result<Route> {
    let need = ["/usr/bin/rustc", "/usr/bin/cargo", "/usr/lib/llvm-19/bin/wasm-ld", "/usr/lib/wasm32-wasi"];
    if let Some(missing) = need.iter().find(|p| !Path::new(p).exists()) {
        bail!(
            "no compiler for {TARGET}: rustup has no such target and {missing} is missing; \
             run `rustup target add {TARGET}`, or `apt-get install {DEBIAN_PACKAGES}` \
             (scripts/build-plugins.sh in warren's repository does the latter itself)"
        );
    }
    Ok(Route::Debian { component_ld: component_ld()? })
}

/// wasm-component-ld: on PATH, in warren's repository's .tools (where build-plugins.sh puts
/// it), or installed with cargo into ~/.warren/tools.
fn component_ld() -> anyhow::Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/wasm-component-ld");
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    let tools = home.join(".warren/tools");
    let installed = tools.join("bin/wasm-component-ld");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("wasm-component-ld")).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(found) = on_path.into_iter().chain([repo, installed.clone()]).find(|p| p.is_file()) {
        return Ok(found);
    }
    eprintln!("warren: installing wasm-component-ld {COMPONENT_LD_VERSION} into {}", tools.display());
    let ok = Command::new("cargo")
        .args(["install", "--locked", &format!("wasm-component-ld@{COMPONENT_LD_VERSION}"), "--root"])
        .arg(&tools)
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !installed.is_file() {
        bail!("cargo install wasm-component-ld@{COMPONENT_LD_VERSION} failed");
    }
    Ok(installed)
}
