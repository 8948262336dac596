//! Installed packages as services read them: `{data_path}/pkgs/ORIGIN/NAME/VERSION/RELEASE`,
//! holding Habitat's metadata files (SVC_USER, SHUTDOWN_SIGNAL, ...) and `hooks/`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hooks::Hook;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{0:?} is not a package identifier (ORIGIN/NAME[/VERSION[/RELEASE]])")]
    BadIdent(String),
    #[error("no installed package matches {0} (install it with `warren pkg install FILE.hart`)")]
    NotInstalled(String),
}

/// `ORIGIN/NAME[/VERSION[/RELEASE]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageIdent {
    pub origin: String,
    pub name: String,
    pub version: Option<String>,
    pub release: Option<String>,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

impl std::str::FromStr for PackageIdent {
    type Err = PackageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=4).contains(&parts.len()) || !parts.iter().all(|p| valid_part(p)) {
            return Err(PackageError::BadIdent(s.to_string()));
        }
        Ok(PackageIdent {
            origin: parts[0].into(),
            name: parts[1].into(),
            version: parts.get(2).map(|v| v.to_string()),
            release: parts.get(3).map(|v| v.to_string()),
        })
    }
}

impl std::fmt::Display for PackageIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.origin, self.name)?;
        for part in [&self.version, &self.release].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// Compares versions part by part, numbers as numbers ("1.10.0" > "1.9.2").
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let key = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '+'])
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                (digits.parse().unwrap_or(0), p[digits.len()..].to_string())
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

/// An installed package, fully qualified.
#[derive(Debug, Clone)]
pub struct Installed {
    pub ident: PackageIdent,
    pub dir: PathBuf,
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| valid_part(n) && !n.starts_with('.'))
        .collect()
}

impl Installed {
    /// The latest installed package satisfying `ident` (the newest version, then release).
    pub fn find(data_path: &Path, ident: &PackageIdent) -> Result<Installed, PackageError> {
        let base = data_path.join("pkgs").join(&ident.origin).join(&ident.name);
        let mut best: Option<(String, String)> = None;
        for version in subdirs(&base) {
            if ident.version.as_ref().is_some_and(|v| *v != version) {
                continue;
            }
            for release in subdirs(&base.join(&version)) {
                if ident.release.as_ref().is_some_and(|r| *r != release) {
                    continue;
                }
                let newer = match &best {
                    None => true,
                    Some((bv, br)) => {
                        version_cmp(&version, bv).then_with(|| release.cmp(br)) == Ordering::Greater
                    }
                };
                if newer {
                    best = Some((version.clone(), release));
                }
            }
        }
        let (version, release) = best.ok_or_else(|| PackageError::NotInstalled(ident.to_string()))?;
        Ok(Installed {
            dir: base.join(&version).join(&release),
            ident: PackageIdent { version: Some(version), release: Some(release), ..ident.clone() },
        })
    }

    fn meta(&self, file: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(file)).ok()?;
        let t = text.trim();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// `SVC_USER` (Habitat's default: hab).
    pub fn svc_user(&self) -> String {
        self.meta("SVC_USER").unwrap_or_else(|| "hab".into())
    }

    pub fn svc_group(&self) -> Option<String> {
        self.meta("SVC_GROUP")
    }

    /// `SHUTDOWN_SIGNAL` as a signal number (a name such as TERM or SIGINT, or a number);
    /// TERM when unset or unknown.
    pub fn shutdown_signal(&self) -> i32 {
        self.meta("SHUTDOWN_SIGNAL").and_then(|s| signal_number(&s)).unwrap_or(libc::SIGTERM)
    }

    /// `SHUTDOWN_TIMEOUT` in seconds.
    pub fn shutdown_timeout(&self) -> Option<Duration> {
        self.meta("SHUTDOWN_TIMEOUT").and_then(|s| s.parse().ok()).map(Duration::from_secs)
    }

    /// Where the package keeps a hook's source (`hooks/NAME`; the run hook may also be a `run`
    /// file at the package root).
    pub fn hook_source(&self, hook: Hook) -> PathBuf {
        let in_hooks = self.dir.join("hooks").join(hook.file_name());
        if hook == Hook::Run && !in_hooks.is_file() {
            return self.dir.join("run");
        }
        in_hooks
    }
}

pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_parse_print_and_refuse_paths() {
        let i: PackageIdent = "acme/web/1.2.0/20261202120000".parse().unwrap();
        assert_eq!(i.to_string(), "acme/web/1.2.0/20261202120000");
        assert_eq!("acme/web".parse::<PackageIdent>().unwrap().version, None);
        for bad in ["acme", "acme/../x", "a/b/c/d/e", "acme//web", "acme/we b", "/etc/passwd"] {
            assert!(bad.parse::<PackageIdent>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_newest_matching_install_wins() {
        let dir = tempfile::tempdir().unwrap();
        for (v, r) in
            [("1.9.2", "20260101000000"), ("1.10.0", "20250101000000"), ("1.10.0", "20250102000000")]
        {
            std::fs::create_dir_all(dir.path().join(format!("pkgs/acme/web/{v}/{r}"))).unwrap();
        }
        let find = |s: &str| Installed::find(dir.path(), &s.parse().unwrap()).map(|p| p.ident.to_string());
        assert_eq!(find("acme/web").unwrap(), "acme/web/1.10.0/20250102000000");
        assert_eq!(find("acme/web/1.9.2").unwrap(), "acme/web/1.9.2/20260101000000");
        assert!(matches!(find("acme/web/2.0"), Err(PackageError::NotInstalled(_))));
        assert!(find("acme/other").is_err());
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("sigint"), Some(libc::SIGINT));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("BOGUS"), None);
        assert_eq!(signal_number("0"), None);
    }
}
