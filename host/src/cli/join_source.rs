//! Where a join string comes from (`admit join`, `sup run --join`): a file, stdin (`-`) or
//! `WARREN_JOIN`. Never the command line: a join string is a one-time secret, and argv is
//! world-readable (`ps`, /proc/PID/cmdline) and kept in shell history.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

use crate::admission::JoinString;
use crate::admission::join::PREFIX;

pub const JOIN_ENV: &str = "WARREN_JOIN";

/// A join string is about 150 characters; anything much longer is not one.
const MAX_LEN: u64 = 4096;

/// Whether `arg` is a join string itself (rather than a path to one): such an argument is
/// refused, since it was already exposed on the command line.
fn looks_like_join_string(arg: &str) -> bool {
    let t = arg.trim();
    t.get(..PREFIX.len() + 1).is_some_and(|p| p.eq_ignore_ascii_case(&format!("{PREFIX}-")))
        || JoinString::parse(t).is_ok()
}

fn read_limited(mut from: impl std::io::Read) -> std::io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    (&mut from).take(MAX_LEN + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_LEN {
        return Err(std::io::Error::other("longer than any join string"));
    }
    Ok(text)
}

/// Refuses an argument that is a join string itself, without echoing it.
pub fn refuse_on_argv(flag: &str, arg: Option<&str>) -> anyhow::Result<()> {
    if arg.is_some_and(looks_like_join_string) {
        bail!(
            "{flag}: a join string is a secret and does not belong on the command line (ps and \
             shell history show it; treat this one as exposed and revoke it): pass a FILE holding \
             it, `-` to read it from stdin, or set {JOIN_ENV}"
        );
    }
    Ok(())
}

/// The join string from `arg` (`FILE` or `-`), else from `WARREN_JOIN`; `None` when neither
/// is given. Errors say which source failed, never what it held.
pub fn read(flag: &str, arg: Option<&str>) -> anyhow::Result<Option<Zeroizing<String>>> {
    refuse_on_argv(flag, arg)?;
    let text = match arg {
        Some("-") => read_limited(std::io::stdin().lock()).context("reading the join string from stdin")?,
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("{flag} {path}: cannot open the file"))?;
            read_limited(file).with_context(|| format!("{flag} {path}: cannot read the join string"))?
        }
        None => match std::env::var(JOIN_ENV) {
            Ok(v) => Zeroizing::new(v),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{JOIN_ENV} is not valid UTF-8"),
        },
    };
    if text.trim().is_empty() {
        let source = match arg {
            Some("-") => "stdin".to_string(),
            Some(path) => format!("the file {path}"),
            None => JOIN_ENV.to_string(),
        };
        bail!("{flag}: {source} holds no join string");
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_strings_are_told_from_paths() {
        let j = crate::admission::JoinString {
            id: crate::admission::TokenId([1, 2, 3, 4, 5]),
            secret: Zeroizing::new([7u8; crate::admission::join::SECRET_LEN]),
            pin: crate::admission::Pin::of(&[9u8; 32]),
        }
        .encode();
        assert!(looks_like_join_string(&j));
        assert!(looks_like_join_string(&j.to_lowercase()));
        assert!(looks_like_join_string(" WJ1-anything"));
        for path in ["/etc/warren/web1.join", "web1.join", "-", "wj1.txt"] {
            assert!(!looks_like_join_string(path), "{path}");
        }
        let err = read("--join", Some(&j)).unwrap_err().to_string();
        assert!(err.contains(JOIN_ENV) && err.contains("FILE") && !err.contains(&j[13..30]), "{err}");
    }

    #[test]
    fn a_missing_or_empty_file_names_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.join");
        let err = format!("{:#}", read("--join", Some(missing.to_str().unwrap())).unwrap_err());
        assert!(err.contains("none.join") && err.contains("cannot open"), "{err}");
        let empty = dir.path().join("empty.join");
        std::fs::write(&empty, "\n").unwrap();
        let err = read("--join", Some(empty.to_str().unwrap())).unwrap_err().to_string();
        assert!(err.contains("holds no join string"), "{err}");
        let good = dir.path().join("good.join");
        std::fs::write(&good, "WJ1-x\n").unwrap();
        assert_eq!(
            read("--join", Some(good.to_str().unwrap())).unwrap().as_deref().map(|s| s.as_str()),
            Some("WJ1-x\n")
        );
    }
}
