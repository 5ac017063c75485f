//! The spool: what `launch` could not report while the API was unreachable, in order, as
//! JSON lines in a file of the build's state (`--spool-file`, `SD_SPOOL_FILE`).
//!
//! `launch` appends every report it could not deliver (and, once one failed, every later
//! one, so the order holds), keeps retrying them with backoff, and removes the file when
//! all were delivered. What is left when `launch` exits is read by the API when it adopts
//! the build after a restart ([`read`]), so a build's outcome and step results never
//! depend on whether the API was up. Replaying an entry twice is harmless: step times and
//! codes are set again to the same values, log lines below the step's next line number are
//! dropped, and a final status is accepted once.
//!
//! One entry per line:
//!
//! ```text
//! {"op":"stepStart","step":"test","startTime":"2025-01-01T00:00:00.000Z"}
//! {"op":"logs","step":"test","lines":[{"t":1735689600000,"m":"ok","n":0}]}
//! {"op":"stepEnd","step":"test","endTime":"2025-01-01T00:00:01.000Z","code":0}
//! {"op":"status","status":"SUCCESS"}
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::api::LogLine;

/// The name of the spool file beside the workspace when none is given.
pub const DEFAULT_NAME: &str = "sd-spool.jsonl";

/// One report `launch` makes to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `PUT /v4/builds/{id}` with `{"status", "statusMessage"?}`.
    Status {
        /// `RUNNING`, `SUCCESS`, `FAILURE`, `ABORTED`.
        status: String,
        /// Why (for failures and aborts).
        message: Option<String>,
    },
    /// `PUT /v4/builds/{id}/steps/{step}` with `{"startTime"}`.
    StepStart {
        /// The step.
        step: String,
        /// ISO 8601.
        start_time: String,
    },
    /// `PUT /v4/builds/{id}/steps/{step}` with `{"endTime", "code"}`.
    StepEnd {
        /// The step.
        step: String,
        /// ISO 8601.
        end_time: String,
        /// The step's exit code.
        code: i32,
    },
    /// `POST /v4/builds/{id}/steps/{step}/logs` with the lines.
    Logs {
        /// The step.
        step: String,
        /// The lines, numbered within the step.
        lines: Vec<LogLine>,
    },
}

impl Entry {
    /// The entry as one JSON object (a spool line).
    pub fn to_json(&self) -> Value {
        match self {
            Entry::Status { status, message } => {
                let mut v = json!({"op": "status", "status": status});
                if let Some(m) = message {
                    v["statusMessage"] = Value::String(m.clone());
                }
                v
            }
            Entry::StepStart { step, start_time } => {
                json!({"op": "stepStart", "step": step, "startTime": start_time})
            }
            Entry::StepEnd {
                step,
                end_time,
                code,
            } => json!({"op": "stepEnd", "step": step, "endTime": end_time, "code": code}),
            Entry::Logs { step, lines } => json!({
                "op": "logs",
                "step": step,
                "lines": lines.iter().map(|l| json!({"t": l.t, "m": l.m, "n": l.n})).collect::<Vec<_>>(),
            }),
        }
    }

    /// Parses a spool line; `None` for anything else (a line cut short by a crash).
    pub fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(match v.get("op")?.as_str()? {
            "status" => Entry::Status {
                status: s("status")?,
                message: s("statusMessage"),
            },
            "stepStart" => Entry::StepStart {
                step: s("step")?,
                start_time: s("startTime")?,
            },
            "stepEnd" => Entry::StepEnd {
                step: s("step")?,
                end_time: s("endTime")?,
                code: i32::try_from(v.get("code")?.as_i64()?).ok()?,
            },
            "logs" => Entry::Logs {
                step: s("step")?,
                lines: v
                    .get("lines")?
                    .as_array()?
                    .iter()
                    .map(|l| {
                        Some(LogLine {
                            t: l.get("t")?.as_u64()?,
                            m: l.get("m")?.as_str()?.to_string(),
                            n: l.get("n")?.as_u64()?,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            },
            _ => return None,
        })
    }
}

/// An append-only spool file.
#[derive(Debug, Clone)]
pub struct Spool {
    path: PathBuf,
}

impl Spool {
    /// The spool at `path` (created on the first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line (written with a single `write`, so a crash leaves at
    /// most a cut last line, which [`read`] skips).
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let mut line = entry.to_json().to_string();
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(line.as_bytes())
    }

    /// Flushes the file to disk (for the final status).
    pub fn sync(&self) -> std::io::Result<()> {
        match std::fs::File::open(&self.path) {
            Ok(f) => f.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the file (everything was delivered); a missing file is fine.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The entries of the spool at `path`, in order; empty when there is none. Lines that do
/// not parse (cut short by a crash) are skipped.
///
/// ```
/// use sd_launch::spool::{Entry, Spool, read};
/// let dir = tempfile::tempdir().unwrap();
/// let spool = Spool::new(dir.path().join("spool.jsonl"));
/// let done = Entry::Status { status: "SUCCESS".into(), message: None };
/// spool.append(&done).unwrap();
/// assert_eq!(read(spool.path()), vec![done]);
/// spool.remove().unwrap();
/// assert!(read(spool.path()).is_empty());
/// ```
pub fn read(path: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Entry::from_json(&v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_round_trips_and_a_cut_line_is_skipped() {
        let entries = vec![
            Entry::StepStart {
                step: "a".into(),
                start_time: "2025-01-01T00:00:00.000Z".into(),
            },
            Entry::Logs {
                step: "a".into(),
                lines: vec![LogLine {
                    t: 5,
                    m: "x \"quoted\"\nnot really".into(),
                    n: 0,
                }],
            },
            Entry::StepEnd {
                step: "a".into(),
                end_time: "2025-01-01T00:00:01.000Z".into(),
                code: 1,
            },
            Entry::Status {
                status: "FAILURE".into(),
                message: Some("step a failed".into()),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("s.jsonl"));
        for e in &entries {
            spool.append(e).unwrap();
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(spool.path())
            .unwrap();
        f.write_all(b"{\"op\":\"status\",\"sta").unwrap();
        assert_eq!(read(spool.path()), entries);
        assert!(Entry::from_json(&json!({"op": "bogus"})).is_none());
    }
}
