//! Garbage collection of a launcher worker's state directory (`sdx gc`).
//!
//! A worker killed with `kill -9` and not restarted leaves its builds running with nobody
//! to report them: [`WorkerGc`] finds them through the directory's records once no
//! worker holds its lock, and settles each one the way a restarted worker would, except
//! that nothing is adopted:
//!
//! - **running**: stopped on the executor (which removes its token file) and recorded as
//!   finished (`ABORTED`), so a job of that `ZUUL_UUID` that gearmand re-queued gets this
//!   outcome from the next worker instead of a second run;
//! - **ended meanwhile**: its outcome recorded, what it held on the executor released;
//! - **never started** (unknown to the executor): the record is removed;
//! - **finished longer ago than the retention window**: the record is removed.
//!
//! A directory a live worker holds is left alone (that worker follows its builds and
//! removes expired records itself); while `sdx gc` works on a directory, a worker
//! starting on it is refused, naming the pid.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use executor_gearman::launcher::gc::WorkerGc;
//! let dir = tempfile::tempdir().unwrap();
//! // No worker ever used it: nothing to collect, nothing created.
//! assert!(matches!(WorkerGc::open(&dir.path().join("w")).unwrap(), WorkerGc::Absent));
//! assert!(!dir.path().join("w").exists());
//! # });
//! ```

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use executor_base::{BuildStatus, Error, ErrorKind, Executor, StopConfig};
use serde::Serialize;

use super::state::{Existing, Record, Stage, StateDir};
use crate::zuul::BuildReport;

/// How long a stopped build may take to reach a terminal status.
const STOP_WAIT: Duration = Duration::from_secs(120);

/// A worker state directory opened for collection.
#[derive(Debug)]
pub enum WorkerGc {
    /// No worker ever used the directory.
    Absent,
    /// A live worker holds it (the pid it wrote): nothing is touched.
    InUse(String),
    /// Locked for collection: see [`WorkerGc::collect`].
    Ready(ReadyDir),
}

/// A locked worker state directory whose worker is gone.
#[derive(Debug)]
pub struct ReadyDir(StateDir);

/// What [`WorkerGc::collect`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The pid of the live worker holding the directory (then nothing was touched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_by: Option<String>,
    /// Builds of a gone worker still running: stopped (or, dry run, to be stopped).
    pub stopped: Vec<String>,
    /// Builds of a gone worker that had ended: outcome recorded, resources released.
    pub settled: Vec<String>,
    /// Records removed: outcomes past the retention window, starts that never happened.
    pub expired: Vec<String>,
}

impl WorkerGcReport {
    /// Whether nothing was found to do.
    pub fn is_empty(&self) -> bool {
        self.stopped.is_empty() && self.settled.is_empty() && self.expired.is_empty()
    }
}

impl WorkerGc {
    /// Opens the worker state directory `dir` (`stateDir`), creating nothing.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Ok(match StateDir::open_existing(dir)? {
            Existing::Absent => Self::Absent,
            Existing::InUse(pid) => Self::InUse(pid),
            Existing::Open(s) => Self::Ready(ReadyDir(s)),
        })
    }

    /// Collects the directory with `executor` (the one the worker ran its builds on),
    /// keeping finished outcomes for `retain` (the worker's `retainFinishedSecs`).
    pub async fn collect(
        &self,
        executor: &dyn Executor,
        retain: Duration,
        dry_run: bool,
    ) -> Result<WorkerGcReport, Error> {
        let mut report = WorkerGcReport {
            dry_run,
            ..WorkerGcReport::default()
        };
        let state = match self {
            Self::Absent => return Ok(report),
            Self::InUse(pid) => {
                report.in_use_by = Some(pid.clone());
                return Ok(report);
            }
            Self::Ready(ReadyDir(state)) => state,
        };
        for rec in state.load_all() {
            let what = format!(
                "build {} ({}, ZUUL_UUID {})",
                rec.number, rec.name, rec.uuid
            );
            match rec.stage {
                Stage::Finished => {
                    let age = rec
                        .finished_at
                        .and_then(|at| (Utc::now() - at).to_std().ok())
                        .unwrap_or(Duration::MAX);
                    if age >= retain {
                        if !dry_run {
                            state.remove(rec.number);
                        }
                        report
                            .expired
                            .push(format!("{what}: outcome past retention"));
                    }
                }
                Stage::Starting | Stage::Running => {
                    settle(state, executor, rec, what, dry_run, &mut report).await?;
                }
            }
        }
        Ok(report)
    }
}

/// Settles one build of a gone worker (see the module docs).
async fn settle(
    state: &StateDir,
    executor: &dyn Executor,
    mut rec: Record,
    what: String,
    dry_run: bool,
    report: &mut WorkerGcReport,
) -> Result<(), Error> {
    let Ok(stop) = rec.stop_config() else {
        tracing::warn!(dir = %state.path().display(), number = rec.number, "unreadable build record: left alone");
        return Ok(());
    };
    let status = match executor.status(&stop).await {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if !dry_run {
                state.remove(rec.number);
            }
            report.expired.push(format!("{what}: never started"));
            return Ok(());
        }
        other => other?,
    };
    let stopping = !status.is_terminal();
    if dry_run {
        let list = if stopping {
            &mut report.stopped
        } else {
            &mut report.settled
        };
        list.push(format!("{what}: {status}"));
        return Ok(());
    }
    let status = if stopping {
        executor.stop(&stop).await?;
        wait_terminal(executor, &stop, status).await?
    } else {
        // Ended while no worker ran: release what it still holds (its token file).
        executor.stop(&stop).await?;
        status
    };
    let mut outcome = BuildReport::from_status(&status, stopping);
    outcome.name = Some(rec.name.clone());
    outcome.number = Some(rec.number);
    let line = format!("{what}: {}", outcome.result);
    rec.stage = Stage::Finished;
    rec.report = Some(outcome);
    rec.finished_at = Some(Utc::now());
    state.save(&rec)?;
    if stopping {
        report.stopped.push(line);
    } else {
        report.settled.push(line);
    }
    Ok(())
}

/// Follows a stopped build to its terminal status, within [`STOP_WAIT`].
async fn wait_terminal(
    executor: &dyn Executor,
    stop: &StopConfig,
    mut seen: BuildStatus,
) -> Result<BuildStatus, Error> {
    let follow = async {
        while !seen.is_terminal() {
            seen = executor.wait_for_change(stop, &seen).await?;
        }
        Ok::<_, Error>(seen)
    };
    tokio::time::timeout(STOP_WAIT, follow).await.map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "build {} did not end within {}s of its stop",
                stop.build_id,
                STOP_WAIT.as_secs()
            ),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::testkit::fake::{FakeExecutor, Script};
    use executor_base::{BuildId, Phase, StartConfig};

    fn record(number: u64, stage: Stage, finished_ago: Option<i64>) -> Record {
        let stop = StopConfig::new(BuildId::new(number).unwrap());
        Record {
            uuid: format!("u{number}"),
            name: "unit".into(),
            number,
            function: "build:unit".into(),
            handle: "H:1".into(),
            stop: Record::stop_value(&stop),
            timeout_secs: 60,
            started_at: Utc::now(),
            stage,
            report: finished_ago
                .map(|_| BuildReport::from_status(&executor_base::BuildStatus::succeeded(), false)),
            finished_at: finished_ago.map(|s| Utc::now() - chrono::Duration::seconds(s)),
        }
    }

    fn start(id: u64) -> StartConfig {
        StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", "t")
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_gone_workers_builds_are_settled_and_expired_records_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeExecutor::new();
        fake.set_default_script(Script::run_until_stopped());
        fake.start(&start(1)).await.unwrap();
        fake.set_default_script(Script::succeed_after(Duration::ZERO));
        fake.start(&start(2)).await.unwrap();
        {
            let state = StateDir::open(dir.path()).unwrap();
            state.save(&record(1, Stage::Running, None)).unwrap();
            state.save(&record(2, Stage::Running, None)).unwrap();
            state.save(&record(3, Stage::Starting, None)).unwrap();
            state.save(&record(4, Stage::Finished, Some(7200))).unwrap();
            state.save(&record(5, Stage::Finished, Some(10))).unwrap();
            // A live worker holds the directory: nothing is touched.
            let WorkerGc::InUse(pid) = WorkerGc::open(dir.path()).unwrap() else {
                panic!("not in use")
            };
            assert_eq!(pid, std::process::id().to_string());
        }
        // Build 2 reaches its end.
        while !fake
            .status(&StopConfig::new(BuildId::new(2).unwrap()))
            .await
            .unwrap()
            .is_terminal()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let hour = Duration::from_secs(3600);
        let gc = WorkerGc::open(dir.path()).unwrap();
        let dry = gc.collect(&fake, hour, true).await.unwrap();
        assert_eq!(
            (dry.stopped.len(), dry.settled.len(), dry.expired.len()),
            (1, 1, 2),
            "{dry:?}"
        );
        assert_eq!(fake.calls().stop, 0, "a dry run stops nothing");
        let done = gc.collect(&fake, hour, false).await.unwrap();
        assert_eq!(done.stopped, ["build 1 (unit, ZUUL_UUID u1): ABORTED"]);
        assert_eq!(done.settled, ["build 2 (unit, ZUUL_UUID u2): SUCCESS"]);
        assert_eq!(
            done.expired,
            [
                "build 3 (unit, ZUUL_UUID u3): never started",
                "build 4 (unit, ZUUL_UUID u4): outcome past retention"
            ]
        );
        let s1 = fake
            .status(&StopConfig::new(BuildId::new(1).unwrap()))
            .await
            .unwrap();
        assert_eq!(s1.phase, Phase::Canceled);
        drop(gc);
        // What is left: the settled outcomes (for re-queued jobs) and the recent one.
        let state = StateDir::open(dir.path()).unwrap();
        let left: Vec<(u64, Stage, Option<String>)> = state
            .load_all()
            .into_iter()
            .map(|r| (r.number, r.stage, r.report.map(|r| r.result)))
            .collect::<Vec<_>>();
        let mut left = left;
        left.sort_by_key(|l| l.0);
        assert_eq!(
            left,
            [
                (1, Stage::Finished, Some("ABORTED".into())),
                (2, Stage::Finished, Some("SUCCESS".into())),
                (5, Stage::Finished, Some("SUCCESS".into())),
            ]
        );
        drop(state);
        // A second run finds nothing to do.
        let again = WorkerGc::open(dir.path())
            .unwrap()
            .collect(&fake, hour, false)
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
    }
}
