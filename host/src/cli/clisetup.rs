//! `warren cli setup`: writes the client's cli.toml (default supervisor, ctl secrets), asking
//! on a terminal, or from flags alone (scripts, provisioning).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::ctl::DEFAULT_REMOTE;
use crate::ctl::cli_toml::{self, Changes};
use crate::ctl::client::remote_addr;
use crate::secret::SecretString;

#[derive(Subcommand, Debug)]
pub enum CliCommand {
    /// Write cli.toml: the supervisor commands talk to by default and the ctl secret(s) to
    /// reach it. On a terminal with no flags it asks (the secret is not echoed); with flags it
    /// asks nothing. Other settings in the file are kept; the file is written 0600.
    Setup(SetupArgs),
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// The default for --remote-sup, HOST[:PORT].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub remote_sup: Option<String>,
    /// The ctl secret: the supervisor's CTL_SECRET text, `-` to read it from stdin (kept out
    /// of the process list), or FILE:/path to read it from at each use (so a rotated file
    /// needs no new setup).
    #[arg(long, value_name = "SECRET|-|FILE:/path")]
    pub ctl_secret: Option<SecretString>,
    /// Store --ctl-secret for this supervisor only ([remote."HOST:PORT"]), for fleets whose
    /// supervisors have different secrets.
    #[arg(long = "for", value_name = "HOST[:PORT]", requires = "ctl_secret")]
    pub for_remote: Option<String>,
}

pub fn run(cmd: CliCommand) -> anyhow::Result<()> {
    match cmd {
        CliCommand::Setup(args) => setup(args),
    }
}

fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let path = cli_toml::path();
    let changes = if args.remote_sup.is_none() && args.ctl_secret.is_none() {
        if !std::io::stdin().is_terminal() {
            bail!(
                "nothing to set: give --remote-sup and/or --ctl-secret (stdin is not a terminal, \
                 so no questions are asked)"
            );
        }
        ask(&path)?
    } else {
        Changes {
            remote_sup: args.remote_sup.as_deref().map(remote_addr),
            ctl_secret: match args.ctl_secret {
                Some(s) if s.expose() == "-" => {
                    let mut line = Zeroizing::new(String::new());
                    std::io::stdin().lock().read_line(&mut line)?;
                    Some(Zeroizing::new(line.trim().to_string()))
                }
                other => other.map(|s| Zeroizing::new(s.expose().to_string())),
            },
            for_remote: args.for_remote.as_deref().map(remote_addr),
        }
    };
    cli_toml::apply(&path, &changes).with_context(|| format!("cannot write {}", path.display()))?;
    outln!("wrote {} (check it with `warren ctl ping`)", path.display())?;
    Ok(())
}

/// The questions, on stderr; answers from stdin. Empty answers keep what is there.
fn ask(path: &std::path::Path) -> anyhow::Result<Changes> {
    let current = cli_toml::remote_sup(path)?;
    let shown = current.clone().unwrap_or_else(|| DEFAULT_REMOTE.to_string());
    eprintln!("Setting up {} (press Enter to keep a value).", path.display());
    let remote = prompt(&format!("Supervisor to talk to by default, HOST[:PORT] [{shown}]: "))?;
    let target = remote_addr(if remote.trim().is_empty() { &shown } else { remote.trim() });
    let has_secret = cli_toml::ctl_secret(path, &target).ok().flatten().is_some();
    let secret = prompt_hidden(&format!(
        "ctl secret for {target}: its CTL_SECRET text or FILE:/path [{}]: ",
        if has_secret { "keep the one set" } else { "none set: uses the local CTL_SECRET" }
    ))?;
    Ok(Changes {
        remote_sup: (!remote.trim().is_empty()).then_some(target),
        ctl_secret: (!secret.trim().is_empty()).then(|| Zeroizing::new(secret.trim().to_string())),
        for_remote: None,
    })
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// A line read with the terminal's echo off (restored even when reading fails).
fn prompt_hidden(question: &str) -> anyhow::Result<Zeroizing<String>> {
    // Echo goes off before the question shows, so nothing typed after it is echoed.
    let _echo = EchoOff::new();
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    eprintln!();
    read?;
    let trimmed = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(trimmed);
    Ok(line)
}

/// Turns stdin's echo off while alive. Ctrl-C, SIGTERM or SIGHUP meanwhile restore it before
/// the process dies of the signal, so the shell is not left with a terminal that hides typing.
struct EchoOff(Option<Box<Restore>>);

/// The attributes to restore, and the handlers that were there before ours.
struct Restore {
    saved: libc::termios,
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

const RESTORE_ON: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// The saved attributes for the signal handler (set before it is installed, cleared after it
/// is removed).
static SAVED: std::sync::atomic::AtomicPtr<libc::termios> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

extern "C" fn restore_and_die(sig: libc::c_int) {
    let saved = SAVED.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: tcsetattr, signal and raise are async-signal-safe; `saved` points into the live
    // `Restore` box (cleared before the box is dropped).
    unsafe {
        if !saved.is_null() {
            libc::tcsetattr(0, libc::TCSANOW, saved);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; failure leaves echo on.
        // The handlers are installed only once `SAVED` points at the attributes to restore.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let mut restore = Box::new(Restore { saved: t, previous: Vec::new() });
            SAVED.store(&mut restore.saved, std::sync::atomic::Ordering::SeqCst);
            for sig in RESTORE_ON {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = restore_and_die as extern "C" fn(libc::c_int) as usize;
                let mut previous: libc::sigaction = std::mem::zeroed();
                // A signal ignored before (SIGHUP under nohup) stays ignored.
                if libc::sigaction(sig, std::ptr::null(), &mut previous) != 0
                    || previous.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
                if libc::sigaction(sig, &action, std::ptr::null_mut()) == 0 {
                    restore.previous.push((sig, previous));
                }
            }
            // Should this fail, echo stays on and dropping restores what is there anyway.
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(restore))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(restore) = &self.0 {
            // SAFETY: restores the attributes read in `new`, then the earlier handlers; the
            // handler's pointer is cleared before the box goes.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &restore.saved);
                for (sig, previous) in &restore.previous {
                    libc::sigaction(*sig, previous, std::ptr::null_mut());
                }
            }
            SAVED.store(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
        }
    }
}
