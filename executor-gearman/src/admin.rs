//! gearmand's text admin protocol (same port): the `status` command.
//!
//! `status\n` answers one line per function, `FUNCTION\tQUEUED\tRUNNING\tWORKERS\n`,
//! ended by `.\n`. QUEUED counts every job of the function (running ones included),
//! WORKERS the connections that registered it (busy or not).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::GearmanError;

/// One function as the admin `status` command reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStatus {
    /// The function name.
    pub function: String,
    /// Jobs known (queued and running).
    pub total: u64,
    /// Jobs held by a worker.
    pub running: u64,
    /// Worker connections that can do the function.
    pub workers: u64,
}

/// Parses the lines of a `status` answer (without the final `.`).
///
/// ```
/// let s = executor_gearman::admin::parse_status("build:unit\t2\t1\t3\nstop:m\t0\t0\t1\n");
/// assert_eq!(s[0].function, "build:unit");
/// assert_eq!((s[0].total, s[0].running, s[0].workers), (2, 1, 3));
/// ```
pub fn parse_status(text: &str) -> Vec<FunctionStatus> {
    text.lines()
        .filter_map(|line| {
            // Function names may contain tabs in theory; the three numbers are the last fields.
            let mut parts = line.rsplitn(4, '\t');
            let workers = parts.next()?.trim().parse().ok()?;
            let running = parts.next()?.trim().parse().ok()?;
            let total = parts.next()?.trim().parse().ok()?;
            let function = parts.next()?.to_string();
            Some(FunctionStatus {
                function,
                total,
                running,
                workers,
            })
        })
        .collect()
}

/// Runs `status` against gearmand at `addr` on a fresh connection, within `timeout`.
pub async fn status(addr: &str, timeout: Duration) -> Result<Vec<FunctionStatus>, GearmanError> {
    let run = async {
        let mut stream =
            TcpStream::connect(addr)
                .await
                .map_err(|source| GearmanError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
        stream
            .write_all(b"status\n")
            .await
            .map_err(|e| GearmanError::Codec(e.into()))?;
        let mut reader = BufReader::new(stream);
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .await
                .map_err(|e| GearmanError::Codec(e.into()))?;
            if n == 0 {
                return Err(GearmanError::Disconnected);
            }
            if line.trim_end() == "." {
                return Ok(parse_status(&text));
            }
            if text.len() > 16 * 1024 * 1024 {
                return Err(GearmanError::Unexpected(
                    "admin status answer too large".into(),
                ));
            }
            text.push_str(&line);
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| GearmanError::Timeout("admin status"))?
}

/// The number of workers registered for `function` (0 when gearmand does not know it).
pub async fn workers_for(
    addr: &str,
    function: &str,
    timeout: Duration,
) -> Result<u64, GearmanError> {
    Ok(status(addr, timeout)
        .await?
        .into_iter()
        .find(|f| f.function == function)
        .map_or(0, |f| f.workers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_lines_are_skipped() {
        let s = parse_status("ok\nfn\tx\t1\t2\nfn2\t1\t0\t0\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].function, "fn2");
    }
}
