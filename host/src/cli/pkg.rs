//! `warren pkg build|install|sign|verify|header|extract`: HART-1 packages.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::ctl::RemoteSup;
use super::keys::CacheArgs;
use crate::crypto::{KeyKind, SigSecretKey, archive, hart};
use crate::ctl::client::UploadBody;
use crate::ctl::proto::{self, ConsoleLine, NetProgress};
use crate::ctl::{CtlRequest, Frame};
use crate::services::build;
use crate::services::package::MAX_PACKAGE_SIZE;

#[derive(Subcommand, Debug)]
pub enum PkgCommand {
    /// Build a package from a source directory into a signed
    /// ORIGIN-NAME-VERSION-RELEASE-x86_64-linux.hart (release: the UTC time, YYYYMMDDhhmmss),
    /// signed with the latest secret key of ORIGIN. DIR holds plan.toml (name, version,
    /// svc_user, svc_group, run, exports, exposes, binds, binds_optional, shutdown_signal,
    /// shutdown_timeout, maintainer, license, description, upstream_url), hooks/ (init, run,
    /// post-run, health-check, reconfigure, suitability, file-updated, post-stop), config/
    /// (templates), default.toml and any other files. The payload has Habitat's layout,
    /// hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/, with its metadata files (IDENT, TARGET, MANIFEST,
    /// SVC_USER, SVC_GROUP, EXPORTS, EXPOSES, BINDS, ...). Left out: plan.toml (its text is in
    /// MANIFEST), top-level names starting with '.', and *.hart files. Prints the package's
    /// path as the last line.
    #[command(verbatim_doc_comment)]
    Build {
        /// The package's source directory.
        dir: PathBuf,
        /// Origin whose latest secret signing key signs the package.
        #[arg(long)]
        origin: String,
        /// Where to write the package [default: the current directory].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Install a package into a running supervisor's package store
    /// ({data_path}/pkgs/ORIGIN/NAME/VERSION/RELEASE), streamed over its ctl gateway. The
    /// supervisor verifies it against the origin keys in its own key cache before anything is
    /// written, and installs all or nothing; installing an ident again changes nothing. At most
    /// 1 GiB.
    #[command(verbatim_doc_comment)]
    Install {
        /// The package file (.hart).
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteSup,
    },
    /// Sign an xz tarball, or a directory (tarred and xz-compressed by warren), into a HART-1
    /// package signed with the latest key of ORIGIN. DEST is written atomically.
    Sign {
        /// Origin whose latest secret signing key signs the package.
        #[arg(long)]
        origin: String,
        /// An xz-compressed tarball, or a directory to package.
        src: PathBuf,
        /// The package file to write (e.g. acme-app-1.0.0-x86_64-linux.hart).
        dest: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Verify a package's signature and payload digest. Exits 0 only if both hold; the signer's
    /// public key must be in the key cache under its exact name-revision.
    Verify {
        /// The package file.
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Print a package's header (format version, signing key, hash type, raw signature)
    /// without verifying it.
    Header {
        /// The package file.
        file: PathBuf,
    },
    /// Verify a package, then unpack its payload into DIR. Unsafe entries (absolute paths, `..`,
    /// devices, links leaving DIR) refuse the whole package and nothing is left behind.
    Extract {
        /// The package file.
        file: PathBuf,
        /// Destination directory (created if missing; existing files are never replaced).
        dir: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// A byte progress bar on stderr, hidden for small files or when stderr is not a terminal.
pub fn progress_bar(total: Option<u64>, message: &str) -> ProgressBar {
    let interactive = std::io::stderr().is_terminal();
    let bar = match total {
        Some(len) if interactive && len >= PROGRESS_MIN_BYTES => {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        }
        None if interactive => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        }
        _ => ProgressBar::hidden(),
    };
    bar.set_message(message.to_string());
    bar
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

impl PkgCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            PkgCommand::Build { dir, origin, out, cache } => {
                let key = SigSecretKey::try_from(&cache.cache().latest(KeyKind::SigSecret, &origin)?)?;
                let out = out.unwrap_or_else(|| PathBuf::from("."));
                let built = build::build(&dir, &key, &out)
                    .with_context(|| format!("building the package in {}", dir.display()))?;
                outln!(
                    "Built {} ({} entries), signed by {}, BLAKE2b {}",
                    built.ident,
                    built.files,
                    built.verified.signer,
                    built.verified.digest_hex()
                )?;
                outln!("{}", built.path.display())?;
                Ok(())
            }
            PkgCommand::Install { file, remote } => install(&file, &remote),
            PkgCommand::Sign { origin, src, dest, cache } => {
                let cache = cache.cache();
                let key = SigSecretKey::try_from(&cache.latest(KeyKind::SigSecret, &origin)?)?;
                let meta = std::fs::metadata(&src).with_context(|| format!("reading {}", src.display()))?;
                let v = if meta.is_dir() {
                    let bar = progress_bar(None, "packing");
                    let v = hart::sign_to_path(&dest, &key, |out| {
                        let mut counted = CountingWriter { inner: out, n: 0, bar: &bar };
                        archive::pack_dir(&src, &mut counted)
                    });
                    bar.finish_and_clear();
                    v
                } else {
                    let bar = progress_bar(Some(meta.len()), "signing");
                    let v = hart::sign_payload_file(&src, &dest, &key, &mut |n| bar.set_position(n));
                    bar.finish_and_clear();
                    v
                }
                .with_context(|| format!("signing {} into {}", src.display(), dest.display()))?;
                outln!(
                    "Signed {} with {} (payload {} bytes, BLAKE2b {})",
                    dest.display(),
                    v.signer,
                    v.payload_len,
                    v.digest_hex()
                )?;
                Ok(())
            }
            PkgCommand::Verify { file, cache } => {
                let bar = progress_bar(file_len(&file), "verifying");
                let v = hart::verify_file(&file, &cache.cache(), &mut |n| bar.set_position(n));
                bar.finish_and_clear();
                let v = v.with_context(|| format!("verifying {}", file.display()))?;
                outln!("Verified {}: signed by {}, BLAKE2b {}", file.display(), v.signer, v.digest_hex())?;
                Ok(())
            }
            PkgCommand::Header { file } => {
                let h = hart::read_header(&file).with_context(|| format!("reading {}", file.display()))?;
                outln!("Package: {}", file.display())?;
                outln!("Format Version: {}", hart::HART_FORMAT)?;
                outln!("Key Name: {}", h.signer)?;
                outln!("Hash Type: {}", hart::HASH_TYPE)?;
                outln!("Raw Signature: {}", h.raw_signature())?;
                Ok(())
            }
            PkgCommand::Extract { file, dir, cache } => {
                // Verify, then unpack: the file is read twice.
                let bar = progress_bar(file_len(&file).map(|n| 2 * n), "verifying and extracting");
                let done =
                    archive::extract_verified(&file, &dir, &cache.cache(), &mut |n| bar.set_position(n));
                bar.finish_and_clear();
                let done =
                    done.with_context(|| format!("extracting {} into {}", file.display(), dir.display()))?;
                outln!(
                    "Extracted {} entries from {} (signed by {}) into {}",
                    done.entries,
                    file.display(),
                    done.verified.signer,
                    dir.display()
                )?;
                Ok(())
            }
        }
    }
}

/// `warren pkg install FILE`: the file streamed to the supervisor, its lines printed.
fn install(file: &Path, remote: &RemoteSup) -> anyhow::Result<()> {
    install_hart(file, remote).map(drop)
}

/// Streams `file` to the supervisor's package store; returns the installed ident.
pub fn install_hart(file: &Path, remote: &RemoteSup) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata().with_context(|| format!("reading {}", file.display()))?.len();
    anyhow::ensure!(len > 0, "{} is empty", file.display());
    anyhow::ensure!(
        len <= MAX_PACKAGE_SIZE,
        "{} is {len} bytes; packages may be at most {MAX_PACKAGE_SIZE} bytes (1 GiB)",
        file.display()
    );
    let client = remote.client()?;
    let req = CtlRequest::PkgInstall(proto::PkgInstall {
        size: Some(len),
        file_name: file.file_name().map(|n| n.to_string_lossy().into_owned()),
    });
    let bar = progress_bar(Some(len), "uploading");
    let mut failed: Option<std::io::Error> = None;
    let reply = client.upload(
        &req,
        UploadBody { body: &mut f, len, on_sent: &mut |n| bar.set_position(n) },
        |frame: &Frame| {
            if let Ok(line) = frame.decode::<ConsoleLine>() {
                use std::io::Write as _;
                if let Err(e) = bar.suspend(|| write!(std::io::stdout().lock(), "{}", line.line)) {
                    failed.get_or_insert(e);
                }
            } else if frame.decode::<NetProgress>().is_ok() {
                // The bar already shows what was sent.
            }
        },
    );
    bar.finish_and_clear();
    if let Some(e) = failed {
        return Err(e.into());
    }
    let reply = reply.with_context(|| format!("installing {}", file.display()))?;
    let done: proto::PkgInstalled =
        reply.decode().with_context(|| format!("installing {} on {}", file.display(), client.remote()))?;
    let i = &done.ident;
    let ident = format!(
        "{}/{}/{}/{}",
        i.origin,
        i.name,
        i.version.as_deref().unwrap_or(""),
        i.release.as_deref().unwrap_or("")
    );
    if done.already_installed {
        outln!("{ident} is already installed on {} (nothing changed)", client.remote())?;
    } else {
        outln!("Installed {ident} on {} (signed by {})", client.remote(), done.signer)?;
    }
    Ok(ident)
}

/// Counts compressed bytes for the directory-packing spinner.
struct CountingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    n: u64,
    bar: &'a ProgressBar,
}

impl std::io::Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        self.bar.set_position(self.n);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
