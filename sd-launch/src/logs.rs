//! Streaming a step's output: pipe readers split it into lines and a shipper thread
//! batches them (100 lines or 250 ms) to the [`Reporter`] (the API, or the spool while it
//! is unreachable) and echoes them to our stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::api::LogLine;
use crate::report::Reporter;
use crate::spool::Entry;
use crate::timefmt::unix_millis;

/// Lines longer than this are split.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines per `POST .../logs`.
pub const BATCH_LINES: usize = 100;
/// Longest time a line waits before it is posted.
pub const BATCH_WAIT: Duration = Duration::from_millis(250);

/// What the readers (and the step runner) tell the shipper.
#[derive(Debug)]
pub enum Msg {
    /// One line of output.
    Line(String),
    /// A pipe reached its end.
    Eof,
    /// The step's process has ended: stop once every pipe ended, or at this deadline
    /// (a background process may hold a pipe open).
    Finish(Instant),
}

/// Reads `r` and sends its lines (lossy UTF-8, without `\n` or `\r\n`), then [`Msg::Eof`].
pub fn pump(r: impl Read, tx: &Sender<Msg>) {
    let mut reader = BufReader::with_capacity(8192, r);
    let mut pending: Vec<u8> = Vec::new();
    let send = |pending: &mut Vec<u8>| {
        if pending.last() == Some(&b'\r') {
            pending.pop();
        }
        let line = String::from_utf8_lossy(pending).into_owned();
        pending.clear();
        tx.send(Msg::Line(line)).is_ok()
    };
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => &[],
        };
        if buf.is_empty() {
            if !pending.is_empty() {
                send(&mut pending);
            }
            let _ = tx.send(Msg::Eof);
            return;
        }
        let used = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                pending.extend_from_slice(&buf[..i]);
                i + 1
            }
            None => {
                pending.extend_from_slice(buf);
                buf.len()
            }
        };
        let complete = used > 0 && buf[used - 1] == b'\n';
        reader.consume(used);
        if (complete || pending.len() >= MAX_LINE_BYTES) && !send(&mut pending) {
            return;
        }
    }
}

/// The shipper of one step's lines.
#[derive(Debug)]
pub struct Shipper {
    tx: Sender<Msg>,
    handle: JoinHandle<u64>,
}

impl Shipper {
    /// Starts shipping the lines of `step` through `api` (when given), expecting `pipes`
    /// ends.
    pub fn start(api: Option<Reporter>, step: String, pipes: usize) -> Self {
        let (tx, rx) = channel();
        let handle = std::thread::spawn(move || ship(rx, api.as_ref(), &step, pipes));
        Self { tx, handle }
    }

    /// A sender for readers and for our own lines (timeout notices).
    pub fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    /// Waits until every pipe ended (at most `grace` more), posts what is left and
    /// returns the number of lines.
    pub fn finish(self, grace: Duration) -> u64 {
        let _ = self.tx.send(Msg::Finish(Instant::now() + grace));
        drop(self.tx);
        self.handle.join().unwrap_or(0)
    }
}

fn flush(api: Option<&Reporter>, step: &str, buf: &mut Vec<LogLine>) {
    if buf.is_empty() {
        return;
    }
    if let Some(api) = api {
        api.send(Entry::Logs {
            step: step.to_string(),
            lines: std::mem::take(buf),
        });
    }
    buf.clear();
}

fn ship(rx: Receiver<Msg>, api: Option<&Reporter>, step: &str, pipes: usize) -> u64 {
    let mut buf: Vec<LogLine> = Vec::new();
    let mut n = 0u64;
    let mut eofs = 0usize;
    let mut finish_by: Option<Instant> = None;
    let mut first_buffered: Option<Instant> = None;
    loop {
        if finish_by.is_some_and(|d| eofs >= pipes || Instant::now() >= d) {
            break;
        }
        let wait = match (first_buffered, finish_by) {
            (Some(t), _) => BATCH_WAIT.saturating_sub(t.elapsed()),
            (None, Some(d)) => d.saturating_duration_since(Instant::now()),
            (None, None) => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Line(m)) => {
                {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{m}");
                }
                buf.push(LogLine {
                    t: unix_millis(SystemTime::now()),
                    m,
                    n,
                });
                n += 1;
                first_buffered.get_or_insert_with(Instant::now);
                if buf.len() >= BATCH_LINES {
                    flush(api, step, &mut buf);
                    first_buffered = None;
                }
            }
            Ok(Msg::Eof) => eofs += 1,
            Ok(Msg::Finish(d)) => finish_by = Some(d),
            Err(RecvTimeoutError::Timeout) => {
                if first_buffered.is_some_and(|t| t.elapsed() >= BATCH_WAIT) {
                    flush(api, step, &mut buf);
                    first_buffered = None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    flush(api, step, &mut buf);
    let _ = std::io::stdout().flush();
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let (tx, rx) = channel();
        pump(input, &tx);
        drop(tx);
        let mut out = Vec::new();
        let mut eof = false;
        for m in rx {
            match m {
                Msg::Line(l) => out.push(l),
                Msg::Eof => eof = true,
                Msg::Finish(_) => unreachable!(),
            }
        }
        assert!(eof);
        out
    }

    #[test]
    fn splits_lines_and_keeps_the_tail() {
        assert_eq!(lines(b"a\r\nb\n\nc"), ["a", "b", "", "c"]);
        assert_eq!(lines(b""), Vec::<String>::new());
        assert_eq!(lines(b"\xff\n"), ["\u{fffd}"]);
    }

    #[test]
    fn long_lines_are_split() {
        let big = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let got = lines(&big);
        assert_eq!(got.iter().map(String::len).sum::<usize>(), big.len());
        assert!(got.iter().all(|l| l.len() <= MAX_LINE_BYTES + 8192));
    }

    #[test]
    fn shipper_counts_lines_and_stops_at_the_grace() {
        let s = Shipper::start(None, "x".into(), 2);
        let tx = s.sender();
        tx.send(Msg::Line("one".into())).unwrap();
        tx.send(Msg::Eof).unwrap();
        // The second pipe never ends (a background process holds it): the grace ends it.
        assert_eq!(s.finish(Duration::from_millis(50)), 1);
    }
}
