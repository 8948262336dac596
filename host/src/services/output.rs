//! A running service's output: read from its FIFOs line by line, into the supervisor's log
//! (prefixed `NAME.GROUP(O):` / `(E):` as Habitat does) and into `logs/run.{stdout,stderr}.log`,
//! rotated by size. Reading never waits on the log file's disk for long: a line is at most
//! [`MAX_LINE`] bytes and a full FIFO only ever stalls the service, never loses data.

use std::io::Write as _;
use std::path::{Path, PathBuf};

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

/// Bytes read from a FIFO at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Reads `fifo` until every writer is gone (the service and all it started have exited).
///
/// An idle pump holds no buffer: the read buffer exists only between a wake-up and the read,
/// and a partial line's buffer is freed once the line is complete. Two pumps per service wait
/// for as long as the service is quiet, so a buffer kept across the wait would cost
/// 2 × [`READ_CHUNK`] of memory per service (3.2 MiB for 100 services, `bench svc`).
pub async fn pump(fifo: tokio::net::unix::pipe::Receiver, prefix: String, stream: Stream, logs: &Path) {
    let mut file = LogFile::new(logs.join(format!("run.{}.log", stream.file_stem())));
    let mut pending: Vec<u8> = Vec::new();
    let emit = |line: &[u8], file: &mut LogFile| {
        let text = String::from_utf8_lossy(line);
        tracing::info!(target: "warren::service", "{prefix}({}): {text}", stream.tag());
        file.write_line(line);
    };
    loop {
        let Ok(ready) = fifo.ready(tokio::io::Interest::READABLE).await else { break };
        let mut buf = vec![0u8; READ_CHUNK];
        let n = match fifo.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // Every writer it had is gone (tokio keeps "read closed" set from then on), yet a
            // new instance of the service opened the FIFO again: that one has a reader of its
            // own, and waiting on here would spin.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && ready.is_read_closed() => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        drop(buf);
        // Whole lines out; a line longer than MAX_LINE in parts, whether its newline came in
        // this read or not yet.
        loop {
            match pending.iter().take(MAX_LINE + 1).position(|b| *b == b'\n') {
                Some(i) => {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    emit(&line[..i], &mut file);
                }
                None if pending.len() >= MAX_LINE => {
                    let part: Vec<u8> = pending.drain(..MAX_LINE).collect();
                    emit(&part, &mut file);
                }
                None => break,
            }
        }
        if pending.is_empty() {
            // Its capacity would stay allocated through the next (maybe endless) wait.
            pending = Vec::new();
        } else {
            pending.shrink_to_fit();
        }
    }
    if !pending.is_empty() {
        emit(&pending, &mut file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines split across writes are joined, overlong ones split at [`MAX_LINE`], a last line
    /// without a newline is kept, and the pump ends when the last writer closes.
    #[tokio::test]
    async fn pump_joins_partial_lines_splits_long_ones_and_ends_with_the_writers() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("svc.out");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
        let reader = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&fifo).unwrap();
        let logs = dir.path().to_path_buf();
        let pump = tokio::spawn(async move { pump(reader, "t.default".into(), Stream::Out, &logs).await });
        writer.write_all(b"hel").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        writer.write_all(b"lo\nsecond\n").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        writer.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        writer.write_all(b"\ntail").unwrap();
        drop(writer);
        tokio::time::timeout(std::time::Duration::from_secs(10), pump).await.unwrap().unwrap();
        let log = std::fs::read_to_string(dir.path().join("run.stdout.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(&lines[..2], ["hello", "second"]);
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "x".repeat(10));
        assert_eq!(lines[4], "tail");
    }
}
