//! A running service's output: read from its FIFOs line by line, into the supervisor's log
//! (prefixed `NAME.GROUP(O):` / `(E):` as Habitat does) and into `logs/run.{stdout,stderr}.log`,
//! rotated by size. Reading never waits on the log file's disk for long: a line is at most
//! [`MAX_LINE`] bytes and a full FIFO only ever stalls the service, never loses data.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt as _;

/// Longer lines are split (s6-log does the same at 8192).
pub const MAX_LINE: usize = 8192;
/// A log file is rotated (to `.1`, replacing the older one) past this size.
pub const ROTATE_AT: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Out => "O",
            Stream::Err => "E",
        }
    }

    pub fn file_stem(self) -> &'static str {
        match self {
            Stream::Out => "stdout",
            Stream::Err => "stderr",
        }
    }
}

/// A size-rotated log file.
struct LogFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    len: u64,
}

impl LogFile {
    fn new(path: PathBuf) -> LogFile {
        LogFile { path, file: None, len: 0 }
    }

    fn write_line(&mut self, line: &[u8]) {
        if self.file.is_none() {
            use std::os::unix::fs::OpenOptionsExt as _;
            match std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(&self.path) {
                Ok(f) => {
                    self.len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "cannot open a service log");
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(line).and_then(|_| f.write_all(b"\n"));
            self.len += line.len() as u64 + 1;
        }
        if self.len >= ROTATE_AT {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
        }
    }
}

/// Reads `fifo` until every writer is gone (the service and all it started have exited).
pub async fn pump(mut fifo: tokio::net::unix::pipe::Receiver, prefix: String, stream: Stream, logs: &Path) {
    let mut file = LogFile::new(logs.join(format!("run.{}.log", stream.file_stem())));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let emit = |line: &[u8], file: &mut LogFile| {
        let text = String::from_utf8_lossy(line);
        tracing::info!(target: "warren::service", "{prefix}({}): {text}", stream.tag());
        file.write_line(line);
    };
    loop {
        let n = match fifo.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            emit(&line[..line.len() - 1], &mut file);
        }
        while pending.len() >= MAX_LINE {
            let part: Vec<u8> = pending.drain(..MAX_LINE).collect();
            emit(&part, &mut file);
        }
    }
    if !pending.is_empty() {
        emit(&pending, &mut file);
    }
}
