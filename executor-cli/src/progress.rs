//! Showing a build as it runs: state transitions and step output as lines on stdout, a
//! spinner on stderr while waiting (hidden when stderr is not a terminal), and a final
//! summary with timings.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use executor_api::BuildEvent;
use executor_base::ApiBuildStatus;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// The live display of one build.
#[derive(Debug)]
pub struct Progress {
    build_id: u64,
    started: Instant,
    bar: ProgressBar,
    step_started: HashMap<String, Instant>,
    last_status: Option<(ApiBuildStatus, Option<String>)>,
    current_step: Option<String>,
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl Progress {
    /// Starts the display (and the spinner) for build `build_id`.
    pub fn new(build_id: u64) -> Self {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        bar.set_message(format!("build {build_id}: submitted"));
        bar.enable_steady_tick(Duration::from_millis(100));
        Self {
            build_id,
            started: Instant::now(),
            bar,
            step_started: HashMap::new(),
            last_status: None,
            current_step: None,
        }
    }

    /// Prints a line above the spinner.
    pub fn line(&self, text: &str) {
        self.bar.suspend(|| say!("{text}"));
    }

    fn stamp(&self) -> String {
        format!("[{:>7}]", secs(self.started.elapsed()))
    }

    fn spinner_message(&self, status: ApiBuildStatus) {
        let step = self
            .current_step
            .as_ref()
            .map(|s| format!(", step {s}"))
            .unwrap_or_default();
        self.bar
            .set_message(format!("build {}: {status}{step}", self.build_id));
    }

    /// Shows one event.
    pub fn on_event(&mut self, e: &BuildEvent) {
        match e {
            BuildEvent::Status {
                status,
                state,
                message,
                ..
            } => {
                let key = (*status, message.clone());
                if self.last_status.as_ref() == Some(&key) {
                    return;
                }
                self.last_status = Some(key);
                let msg = message
                    .as_deref()
                    .map(|m| format!(" - {m}"))
                    .unwrap_or_default();
                self.line(&format!(
                    "{} build {} {status} ({state}){msg}",
                    self.stamp(),
                    self.build_id
                ));
                self.spinner_message(*status);
            }
            BuildEvent::StepStarted { step, .. } => {
                self.step_started.insert(step.clone(), Instant::now());
                self.current_step = Some(step.clone());
                self.line(&format!("{} step {step} started", self.stamp()));
                if let Some((s, _)) = &self.last_status {
                    self.spinner_message(*s);
                }
            }
            BuildEvent::StepFinished { step, code, .. } => {
                let took = self
                    .step_started
                    .get(step)
                    .map(|t| format!(" after {}", secs(t.elapsed())))
                    .unwrap_or_default();
                let verdict = if *code == 0 { "succeeded" } else { "FAILED" };
                self.line(&format!(
                    "{} step {step} {verdict} (exit {code}){took}",
                    self.stamp()
                ));
                if self.current_step.as_deref() == Some(step) {
                    self.current_step = None;
                }
            }
            BuildEvent::Log { step, lines, .. } => {
                let mut out = String::new();
                for l in lines {
                    let _ = writeln!(out, "    {step} | {}", l.m);
                }
                self.bar.suspend(|| say_raw!("{out}"));
            }
        }
    }

    /// Stops the spinner.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)?
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn span(v: &Value, from: &str, to: &str) -> Option<String> {
    let d = time(v, to)? - time(v, from)?;
    d.to_std().ok().map(secs)
}

/// The final summary of a build (its wire form): status, message, total time and a table
/// of the steps with exit codes and times.
pub fn summary(build: &Value, executor: &str) -> String {
    let id = build["id"].as_u64().unwrap_or_default();
    let status = build["status"].as_str().unwrap_or("UNKNOWN");
    let mut out = String::new();
    let total = span(build, "createTime", "endTime")
        .map(|t| format!(" in {t}"))
        .unwrap_or_default();
    let _ = write!(out, "build {id} {status}{total} (executor {executor})");
    if status != "SUCCESS"
        && let Some(m) = build["statusMessage"].as_str()
    {
        let _ = write!(out, ": {m}");
    }
    out.push('\n');
    let steps = build["steps"].as_array().cloned().unwrap_or_default();
    let width = steps
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::len))
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "  {:<width$}  {:>4}  {:>8}", "STEP", "EXIT", "TIME");
    for s in &steps {
        let name = s["name"].as_str().unwrap_or("?");
        let (code, took) = match (s["code"].as_i64(), s["startTime"].is_string()) {
            (Some(c), _) => (
                c.to_string(),
                span(s, "startTime", "endTime").unwrap_or_else(|| "-".into()),
            ),
            (None, true) => ("-".into(), "stopped".into()),
            (None, false) => ("-".into(), "skipped".into()),
        };
        let _ = writeln!(out, "  {name:<width$}  {code:>4}  {took:>8}");
    }
    let timings: executor_base::BuildTimings =
        serde_json::from_value(build["timings"].clone()).unwrap_or_default();
    let phases = timings.to_string();
    if !phases.is_empty() {
        let _ = writeln!(out, "  on the engine: {phases}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_lists_steps_with_codes_and_times() {
        let b = json!({
            "id": 4, "status": "FAILURE", "statusMessage": "step test failed with exit code 1",
            "createTime": "2026-01-01T00:00:00.000Z", "endTime": "2026-01-01T00:00:01.500Z",
            "steps": [
                {"name": "hello", "code": 0, "startTime": "2026-01-01T00:00:00.100Z", "endTime": "2026-01-01T00:00:00.200Z"},
                {"name": "test", "code": 1, "startTime": "2026-01-01T00:00:00.300Z", "endTime": "2026-01-01T00:00:01.300Z"},
                {"name": "publish", "code": null, "startTime": null}
            ]
        });
        let s = summary(&b, "process");
        assert!(
            s.starts_with(
                "build 4 FAILURE in 1.50s (executor process): step test failed with exit code 1\n"
            ),
            "{s}"
        );
        assert!(s.contains("  hello       0     0.10s\n"), "{s}");
        assert!(s.contains("  test        1     1.00s\n"), "{s}");
        assert!(s.contains("  publish     -   skipped\n"), "{s}");
        assert!(!s.contains("on the engine"), "no timings, no line: {s}");
    }

    #[test]
    fn summary_shows_the_phases_the_engine_knows() {
        let b = json!({
            "id": 5, "status": "SUCCESS", "steps": [],
            "timings": {
                "accepted": "2026-01-01T00:00:00Z", "scheduled": "2026-01-01T00:00:01Z",
                "running": "2026-01-01T00:00:01.500Z", "finished": "2026-01-01T00:00:11.500Z",
                "peakMemoryBytes": 52428800u64
            }
        });
        let s = summary(&b, "docker");
        assert!(
            s.ends_with(
                "  on the engine: queued 1.0s, starting 0.5s, running 10.0s; peak memory 50.0 MiB\n"
            ),
            "{s}"
        );
    }
}
