//! One-shot `warren` runs: the binary, a clean environment and the outcome.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_warren");

/// `warren` with every `WARREN_*` variable of the calling shell removed, so a developer's
/// settings (key cache, data path, config, ring key, token) never decide a test's outcome.
/// Tests set what they need on the returned command.
pub fn command() -> Command {
    command_via(&[])
}

/// `command()` run through `prefix` (e.g. `ip netns exec NS`, which execs in place: the child's
/// pid is warren's own).
pub fn command_via(prefix: &[&str]) -> Command {
    let mut cmd = match prefix {
        [] => Command::new(BIN),
        [program, args @ ..] => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
    };
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WARREN_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The outcome of one `warren` process.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
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

/// Runs `command()` to completion, with `stdin` piped in.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning warren");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        // The child may exit before reading everything (a refusal); that is not a test failure.
        let _ = pipe.write_all(input);
    }
    child.wait_with_output().expect("waiting for warren").into()
}

/// Runs `warren ARGS` with `stdin` piped in and the given environment (tests pass
/// `--cache-key-path` or set WARREN_CACHE_KEY_PATH through `envs`).
pub fn warren_with(args: &[&str], stdin: Option<&[u8]>, envs: &[(&str, &Path)]) -> Run {
    let mut cmd = command();
    cmd.args(args).env("WARREN_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run(&mut cmd, stdin)
}

pub fn warren(args: &[&str]) -> Run {
    warren_with(args, None, &[])
}
