//! Follows `{data_path}/CTL_SECRET` while the supervisor runs: a key fetch replaces it when
//! the cluster's ctl secret changes (after a revoke), and the gateway must stop accepting
//! the old one without a restart. New handshakes use the new secret; sessions already open
//! finish on the one they started with.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::ctl::CtlSecret;
use crate::ctl::secret::{self, CTL_SECRET_FILE};
use crate::watch::{FileWatch, RecursiveMode, Spec};

const DEBOUNCE: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The secret channel for the gateway, starting at `initial` and sent each new valid value of
/// the file. The watch lives as long as the channel has a receiver. Call from within the
/// tokio runtime.
pub fn follow(data_path: &Path, initial: CtlSecret, files: &FileWatch) -> watch::Receiver<Option<CtlSecret>> {
    let (tx, rx) = watch::channel(Some(initial));
    let path = data_path.join(CTL_SECRET_FILE);
    // The file is replaced by rename, so its folder is watched; reading it must not wake us.
    let spec = Spec { name: "ctl secret", debounce: DEBOUNCE, max_delay: MAX_DELAY, ignore_reads: true };
    let (subscriber, mut batches) = files.subscribe_tokio(spec);
    if let Err(e) = subscriber.watch(data_path, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the ctl secret file; a new secret is used only after a restart");
        return rx;
    }
    tokio::spawn(async move {
        let _subscriber = subscriber;
        loop {
            let batch = tokio::select! {
                b = batches.recv() => match b { Some(b) => b, None => return },
                _ = tx.closed() => return,
            };
            if batch.rescan || batch.paths.iter().any(|p| is_secret_file(p)) {
                reload(&path, &tx);
            }
        }
    });
    rx
}

fn is_secret_file(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == CTL_SECRET_FILE)
}

/// Sends the file's secret when it differs from the current one; a missing, unreadable or
/// empty file keeps the current secret (logged without either value).
fn reload(path: &Path, tx: &watch::Sender<Option<CtlSecret>>) {
    let next = match secret::read_file(path) {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::warn!(path = %path.display(), "the ctl secret file is gone; keeping the current secret");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the ctl secret file; keeping the current secret");
            return;
        }
    };
    let changed = tx.send_if_modified(|current| {
        if current.as_ref().is_some_and(|c| c.matches(next.expose())) {
            return false;
        }
        *current = Some(next);
        true
    });
    if changed {
        tracing::info!(path = %path.display(), "ctl secret rotated: new handshakes use the file's new secret");
    }
}
