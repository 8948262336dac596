//! `PkgInstall` on the supervisor: a `.hart` streamed over the ctl gateway into the package
//! store.
//!
//! 1. The announced size is checked against [`MAX_PACKAGE_SIZE`] before a byte is read.
//! 2. The chunks go to a private spool file under `{data_path}/tmp` (never into the store). The
//!    header is checked as soon as it has arrived: a signer whose public key is not in the
//!    supervisor's key cache, or a signature that does not hold, is refused right there.
//! 3. The payload is hashed as it arrives; once it is complete the digest must be the signed one.
//! 4. Only then is the package unpacked, into a staging directory under the store, and moved
//!    into place ([`PackageStore::install_verified`], which checks the layout and that the signer
//!    is of the package's own origin).
//!
//! Any failure (including a client that stops sending, or goes away) removes the spool file
//! and the staging directory: nothing is left. At most [`MAX_CONCURRENT_INSTALLS`] run at once.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::crypto::KeyCache;
use crate::crypto::hart::{self, HartError, HartHeader};
use crate::crypto::sodium::Blake2b256;
use crate::ctl::proto::{self, ErrCode, NetErr};
use crate::ctl::{Reply, ReplySink, Upload, UploadError};
use crate::services::package::{MAX_PACKAGE_SIZE, PackageError, PackageStore};

/// Installs that may run at the same time (each holds a spool file of up to 1 GiB).
pub const MAX_CONCURRENT_INSTALLS: usize = 2;
/// A HART-1 header is five lines, well under this.
const MAX_HEADER: usize = 4096;
/// NetProgress is sent about this often (bytes received).
const PROGRESS_EVERY: u64 = 1024 * 1024;
const SPOOL_PREFIX: &str = ".upload-";

/// What `PkgInstall` needs of the supervisor.
#[derive(Clone)]
pub struct Installer {
    pub keys: KeyCache,
    pub store: PackageStore,
    /// `{data_path}/tmp`, where uploads are spooled.
    pub spool_dir: PathBuf,
    pub slots: Arc<Semaphore>,
}

fn err(code: ErrCode, msg: impl std::fmt::Display) -> NetErr {
    NetErr::new(code, msg.to_string())
}

fn upload_err(e: UploadError) -> NetErr {
    let code = match e {
        UploadError::Timeout(_) | UploadError::Closed { .. } | UploadError::TooSlow(_) => ErrCode::Io,
        UploadError::TooLong { .. } => ErrCode::EntityTooLarge,
        UploadError::Protocol(_) => ErrCode::BadPayload,
    };
    err(code, format!("package upload: {e}"))
}

fn hart_err(e: HartError) -> NetErr {
    match e {
        HartError::Crypto(c @ crate::crypto::CryptoError::KeyNotFound { .. }) => err(
            ErrCode::NotFound,
            format!(
                "{c}: the package's signer is unknown here (import the origin's public key into the supervisor's key cache)"
            ),
        ),
        HartError::Io { context, source } => err(ErrCode::Io, format!("{context}: {source}")),
        other => err(ErrCode::InvalidPayload, other),
    }
}

fn package_err(e: PackageError) -> NetErr {
    match e {
        PackageError::Hart(h) => hart_err(h),
        PackageError::Io { what, source } => err(ErrCode::Io, format!("{what}: {source}")),
        PackageError::WrongSigner { .. } => err(ErrCode::Unauthorized, e),
        other => err(ErrCode::InvalidPayload, other),
    }
}

/// The spool file, removed unless kept.
struct Spool {
    path: PathBuf,
    file: Option<fs::File>,
}

impl Spool {
    fn create(dir: &Path) -> Result<Spool, NetErr> {
        use std::os::unix::fs::OpenOptionsExt as _;
        crate::fsutil::create_private_dir(dir)
            .map_err(|e| err(ErrCode::Io, format!("{}: {e}", dir.display())))?;
        let path =
            dir.join(format!("{SPOOL_PREFIX}{}-{}.hart", std::process::id(), crate::fsutil::random_hex()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err(ErrCode::Io, format!("{}: {e}", path.display())))?;
        Ok(Spool { path, file: Some(file) })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), NetErr> {
        let file = self.file.as_mut().ok_or_else(|| err(ErrCode::Internal, "spool closed"))?;
        file.write_all(bytes).map_err(|e| err(ErrCode::Io, format!("{}: {e}", self.path.display())))
    }

    fn finish(&mut self) -> Result<(), NetErr> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| err(ErrCode::Io, format!("{}: {e}", self.path.display())))?;
        }
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes spool files a killed supervisor left (call at start, before installs run).
pub fn sweep_spool(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(SPOOL_PREFIX))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// Where the header ends: after its fifth newline (the blank line).
fn header_end(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(4).map(|(i, _)| i + 1)
}

impl Installer {
    pub async fn install(
        &self,
        req: proto::PkgInstall,
        mut upload: Upload,
        out: ReplySink,
    ) -> Result<Reply, NetErr> {
        let size = upload.declared_len();
        let name = req.file_name.unwrap_or_else(|| "the package".into());
        let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
        if size == 0 {
            return Err(err(ErrCode::UpdateClient, "client out of date: size is missing or 0"));
        }
        if size > MAX_PACKAGE_SIZE {
            return Err(err(
                ErrCode::EntityTooLarge,
                format!("{name} is {size} bytes; packages may be at most {MAX_PACKAGE_SIZE} bytes (1 GiB)"),
            ));
        }
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            return Err(err(ErrCode::Conflict, "other package installs are in progress; try again shortly"));
        };
        let mut spool = Spool::create(&self.spool_dir)?;
        let mut head: Vec<u8> = Vec::new();
        let mut expected: Option<([u8; 32], HartHeader)> = None;
        let mut hasher = Blake2b256::new();
        let mut next_progress = PROGRESS_EVERY;
        let received = loop {
            let chunk = match upload.next_chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break upload.received(),
                Err(e) => {
                    tracing::warn!(package = %name, error = %e, "package install aborted; nothing was kept");
                    return Err(upload_err(e));
                }
            };
            spool.write(&chunk)?;
            if expected.is_some() {
                hasher.update(&chunk);
            } else {
                head.extend_from_slice(&chunk);
                if let Some(end) = header_end(&head[..head.len().min(MAX_HEADER)]) {
                    let header = HartHeader::read(&mut &head[..end]).map_err(hart_err)?;
                    let key = hart::signer_public_key(&self.keys, &header.signer)
                        .map_err(|e| hart_err(HartError::Crypto(e)))?;
                    let digest = header.signed_payload_digest(&key).map_err(hart_err)?;
                    hasher.update(&head[end..]);
                    let _ = out.line(format!("Receiving {name}, signed by {}", header.signer)).await;
                    expected = Some((digest, header));
                    head = Vec::new();
                } else if head.len() > MAX_HEADER {
                    return Err(hart_err(HartError::MalformedHeader(
                        "no HART-1 header in the first 4 KiB".into(),
                    )));
                }
            }
            if upload.received() >= next_progress {
                out.try_progress(size, upload.received());
                next_progress = upload.received() + PROGRESS_EVERY;
            }
        };
        out.try_progress(size, received);
        let Some((digest, header)) = expected else {
            return Err(hart_err(HartError::MalformedHeader("the file ends inside its header".into())));
        };
        hart::check_digest(&digest, &hasher.finalize()).map_err(hart_err)?;
        spool.finish()?;
        let _ = out.line(format!("Verified {name}: signed by {}", header.signer)).await;

        let (store, keys, path) = (self.store.clone(), self.keys.clone(), spool.path.clone());
        let installed = tokio::task::spawn_blocking(move || store.install_verified(&path, &keys))
            .await
            .map_err(|e| err(ErrCode::Internal, format!("the install task failed: {e}")))?
            .map_err(package_err)?;
        drop(spool);
        let ident = &installed.package.ident;
        if installed.already {
            tracing::info!(package = %ident, "package already installed");
        } else {
            tracing::info!(package = %ident, signer = %installed.signer, path = %installed.package.path.display(), "package installed");
        }
        Ok(Reply::new(&proto::PkgInstalled {
            ident: proto::PackageIdent {
                origin: ident.origin.clone(),
                name: ident.name.clone(),
                version: ident.version.clone(),
                release: ident.release.clone(),
            },
            already_installed: installed.already,
            signer: installed.signer.clone(),
            path: Some(installed.package.path.display().to_string()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_ends_after_its_blank_line() {
        assert_eq!(header_end(b"HART-1\nk-1\nBLAKE2b\nsig\n\nxz"), Some(24));
        assert_eq!(header_end(b"HART-1\nk-1\nBLAKE2b\nsig\n"), None);
    }
}
