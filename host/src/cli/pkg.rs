//! `warren pkg sign|verify|header|extract`: HART-1 packages.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::keys::CacheArgs;
use crate::crypto::{KeyKind, SigSecretKey, archive, hart};

#[derive(Subcommand, Debug)]
pub enum PkgCommand {
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
