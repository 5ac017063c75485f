//! The launch flow: token, RUNNING, steps, final status.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::api::ApiClient;
use crate::args::Args;
use crate::report::{Reporter, is_transient, retry_until};
use crate::signals::Abort;
use crate::spool::{Entry, Spool};
use crate::step::{StepContext, StepEnd, StepSpec, run_step};
use crate::timefmt::iso8601;
use crate::token::{Token, read_token};

/// How a launch ended; [`Outcome::exit_code`] is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded (exit 0).
    Success,
    /// A step failed (exit 1).
    StepFailed,
    /// A usage error, an unreadable token, or the build could not start: the token
    /// exchange, RUNNING or fetching the steps was refused or the API stayed unreachable
    /// (exit 2). Reports after the start never change the outcome.
    UsageOrApiError,
    /// The build timed out (exit 3).
    TimedOut,
    /// Aborted by SIGTERM, SIGINT or SIGHUP (exit 1).
    Aborted,
    /// The API had already aborted the build when RUNNING was asked for: no step ran
    /// (exit 4, so the executor reports it canceled, as the API does).
    AbortedByApi,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::StepFailed | Outcome::Aborted => 1,
            Outcome::UsageOrApiError => 2,
            Outcome::TimedOut => 3,
            Outcome::AbortedByApi => 4,
        }
    }
}

/// Runs one build as `launch` does.
#[derive(Debug)]
pub struct Launcher {
    args: Args,
    abort: Abort,
    env_token: Option<String>,
}

fn describe(d: Duration) -> String {
    let s = d.as_secs();
    match (s % 60, s / 60) {
        (0, 1) => "1 minute".into(),
        (0, m) => format!("{m} minutes"),
        (_, _) if s == 1 => "1 second".into(),
        _ => format!("{s} seconds"),
    }
}

/// Parses the build's `steps` (`[{"name", "command"}]`), naming the bad field.
pub fn parse_steps(build: &Value) -> Result<Vec<StepSpec>, String> {
    let Some(steps) = build.get("steps").and_then(Value::as_array) else {
        return Err("steps: must be an array".into());
    };
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| format!("steps[{i}].name: must be a non-empty string"))?;
            let command = s
                .get("command")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("steps[{i}].command: must be a string"))?;
            Ok(StepSpec {
                name: name.to_string(),
                command: command.to_string(),
            })
        })
        .collect()
}

/// Whether `name` is reserved for launch and the executors (`SD_*`): a build's
/// `environment` cannot override the token, the API URL or the build's identity.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("SD_")
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Launcher {
    /// A launcher for `args`; the token comes from `args.token_file` or `SD_TOKEN`.
    pub fn new(args: Args) -> Self {
        Self {
            args,
            abort: Abort::new(),
            env_token: std::env::var("SD_TOKEN").ok(),
        }
    }

    /// Uses this abort flag (see [`crate::signals::install`]).
    pub fn with_abort(mut self, abort: Abort) -> Self {
        self.abort = abort;
        self
    }

    /// Uses this token instead of `SD_TOKEN` when no token file is given.
    pub fn with_env_token(mut self, token: Option<String>) -> Self {
        self.env_token = token;
        self
    }

    /// Reports a build that could not run as FAILURE (through the spool if need be) and
    /// returns [`Outcome::UsageOrApiError`].
    fn fail(&self, reporter: &Reporter, message: &str) -> Outcome {
        eprintln!("launch: {message}");
        reporter.send(Entry::Status {
            status: "FAILURE".into(),
            message: Some(message.to_string()),
        });
        reporter.flush(Instant::now() + self.args.api_retry);
        Outcome::UsageOrApiError
    }

    /// Runs the build and reports it; returns the outcome.
    ///
    /// The token exchange, RUNNING and fetching the steps wait for an unreachable API up
    /// to `--api-retry-secs` (the build cannot run without them). Everything reported
    /// after that goes through a [`Reporter`]: when the API is unreachable, reports are
    /// spooled and retried, and the exit code is the build's outcome either way.
    pub fn run(self) -> Outcome {
        let a = &self.args;
        let token = match read_token(a.token_file.as_deref(), self.env_token.clone()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("launch: {e}");
                return Outcome::UsageOrApiError;
            }
        };
        let patience = Instant::now() + a.api_retry;
        let mut api = ApiClient::new(&a.api_uri, a.build_id, token.clone());
        if token.is_temporal() {
            match retry_until(patience, || api.exchange_token(a.timeout_minutes() + 30)) {
                Ok(t) => api.set_token(t),
                Err(e) => {
                    // The temporary token may still update its own build (upstream rule).
                    let reporter = Reporter::new(api.clone(), Some(Spool::new(&a.spool_file)));
                    return self.fail(&reporter, &format!("token exchange failed: {e}"));
                }
            }
        }
        if a.only_fetch_token {
            crate::say(api.token().expose());
            return Outcome::Success;
        }
        let reporter = Reporter::new(api.clone(), Some(Spool::new(&a.spool_file)));
        if let Err(e) = mark_running(&api, patience) {
            if aborted_by_api(&api, &e) {
                eprintln!(
                    "launch: the build was aborted before it started (the API refused RUNNING: {e}); no step runs"
                );
                return Outcome::AbortedByApi;
            }
            eprintln!("launch: cannot mark the build RUNNING: {e}");
            return Outcome::UsageOrApiError;
        }
        let deadline = Instant::now() + a.build_timeout;
        let build = match retry_until(patience, || api.get_build()) {
            Ok(b) => b,
            Err(e) => return self.fail(&reporter, &format!("cannot fetch the build: {e}")),
        };
        let steps = match parse_steps(&build) {
            Ok(s) => s,
            Err(e) => return self.fail(&reporter, &format!("the build's steps are invalid: {e}")),
        };
        let workspace = match self.prepare_workspace() {
            Ok(w) => w,
            Err(e) => return self.fail(&reporter, &e),
        };
        let env = self.environment(&build, api.token(), &workspace);
        let timeout_text = describe(a.build_timeout);
        let (outcome, message) =
            self.run_steps(&reporter, &steps, &workspace, env, deadline, &timeout_text);
        let status = match outcome {
            Outcome::Success => "SUCCESS",
            Outcome::Aborted => "ABORTED",
            _ => "FAILURE",
        };
        if let Some(m) = &message {
            eprintln!("launch: {m}");
        }
        reporter.send(Entry::Status {
            status: status.into(),
            message,
        });
        reporter.flush(self.report_deadline());
        outcome
    }

    /// Until when the last reports are retried: `--api-retry-secs`, or once the build is
    /// aborted, what is left of the executor's stop grace (it SIGKILLs us after it).
    fn report_deadline(&self) -> Instant {
        let a = &self.args;
        let normal = Instant::now() + a.api_retry;
        match self.abort.since() {
            Some(at) => normal.min(at + a.stop_grace.saturating_sub(a.stop_grace / 20)),
            None => normal,
        }
    }

    fn run_steps(
        &self,
        reporter: &Reporter,
        steps: &[StepSpec],
        workspace: &std::path::Path,
        mut env: Vec<(String, String)>,
        deadline: Instant,
        timeout_text: &str,
    ) -> (Outcome, Option<String>) {
        let mut outcome = Outcome::Success;
        let mut message = None;
        for step in steps {
            if self.abort.signal().is_some() && outcome != Outcome::Aborted {
                outcome = Outcome::Aborted;
                message = Some(format!("aborted by signal before step {}", step.name));
            }
            if outcome != Outcome::Success
                && !(outcome == Outcome::StepFailed && step.is_teardown())
            {
                continue;
            }
            crate::say(&format!("$ {}", step.command));
            reporter.send(Entry::StepStart {
                step: step.name.clone(),
                start_time: iso8601(SystemTime::now()),
            });
            let ctx = StepContext {
                shell: &self.args.shell_bin,
                workspace,
                env: &env,
                deadline,
                timeout_text,
                abort: &self.abort,
                abort_grace: self.args.step_abort_grace(),
            };
            let (end, _lines) = run_step(&ctx, step, Some(reporter.clone()));
            let code = end.code();
            reporter.send(Entry::StepEnd {
                step: step.name.clone(),
                end_time: iso8601(SystemTime::now()),
                code,
            });
            if outcome != Outcome::Success {
                continue; // a teardown step after a failure does not change the outcome
            }
            match end {
                StepEnd::Exited(0) => {}
                StepEnd::Exited(c) => {
                    outcome = Outcome::StepFailed;
                    message = Some(format!("step {} failed with exit code {c}", step.name));
                    env.push(("SD_STEP_EXIT_CODE".into(), c.to_string()));
                }
                StepEnd::SpawnFailed(e) => {
                    outcome = Outcome::StepFailed;
                    message = Some(format!("step {} could not start: {e}", step.name));
                    env.push(("SD_STEP_EXIT_CODE".into(), code.to_string()));
                }
                StepEnd::TimedOut => {
                    outcome = Outcome::TimedOut;
                    message = Some(format!(
                        "Build timed out after {timeout_text} (step {} was killed)",
                        step.name
                    ));
                }
                StepEnd::Aborted(sig) => {
                    outcome = Outcome::Aborted;
                    message = Some(format!("aborted by signal {sig} during step {}", step.name));
                }
            }
        }
        (outcome, message)
    }

    fn prepare_workspace(&self) -> Result<PathBuf, String> {
        let ws = &self.args.workspace;
        std::fs::create_dir_all(ws.join("artifacts"))
            .map_err(|e| format!("cannot create the workspace {}: {e}", ws.display()))?;
        std::path::absolute(ws).map_err(|e| format!("workspace {}: {e}", ws.display()))
    }

    fn environment(
        &self,
        build: &Value,
        token: &Token,
        workspace: &std::path::Path,
    ) -> Vec<(String, String)> {
        let a = &self.args;
        let mut env: Vec<(String, String)> = vec![
            ("CI".into(), "true".into()),
            ("CONTINUOUS_INTEGRATION".into(), "true".into()),
            ("SCREWDRIVER".into(), "true".into()),
            ("SD_BUILD_ID".into(), a.build_id.to_string()),
            ("SD_TOKEN".into(), token.expose().to_string()),
            ("SD_API_URL".into(), format!("{}/v4/", a.api_uri)),
            ("SD_STORE_URL".into(), format!("{}/v1/", a.store_uri)),
            ("SD_UI_URL".into(), format!("{}/", a.ui_uri)),
            ("SD_ROOT_DIR".into(), workspace.display().to_string()),
            (
                "SD_ARTIFACTS_DIR".into(),
                workspace.join("artifacts").display().to_string(),
            ),
        ];
        for (key, var) in [
            ("jobId", "SD_JOB_ID"),
            ("eventId", "SD_EVENT_ID"),
            ("pipelineId", "SD_PIPELINE_ID"),
        ] {
            if let Some(v) = build.get(key).and_then(scalar) {
                env.push((var.into(), v));
            }
        }
        if let Some(Value::Object(vars)) = build.get("environment") {
            for (k, v) in vars {
                if is_reserved(k) {
                    eprintln!(
                        "launch: the build's environment may not set {k}: SD_* variables are set by launch"
                    );
                    continue;
                }
                if let Some(v) = scalar(v) {
                    env.push((k.clone(), v));
                }
            }
        }
        env
    }
}

/// Whether RUNNING was refused because the build is already ABORTED (read back once: an
/// abort that raced the start), as opposed to a bad token or an unreachable API.
fn aborted_by_api(api: &ApiClient, refused: &crate::api::ApiError) -> bool {
    !is_transient(refused)
        && refused.status == Some(403)
        && api
            .get_build()
            .is_ok_and(|b| b["status"].as_str() == Some("ABORTED"))
}

/// Marks the build RUNNING, retrying an unreachable API until `patience`. When an
/// attempt got no usable answer (the API may have applied it and died before answering,
/// or a gateway answered 5xx) and a
/// later one is refused, the build is read back: RUNNING means the earlier attempt
/// landed, so the build goes on; anything else (aborted meanwhile) is the refusal.
fn mark_running(api: &ApiClient, patience: Instant) -> Result<(), crate::api::ApiError> {
    // Every attempt is seen here (no retries inside the client).
    let once = api.clone().with_max_retries(0);
    let mut unanswered = false;
    retry_until(patience, || match once.update_status("RUNNING", None) {
        Err(e) if is_transient(&e) => {
            unanswered = true;
            Err(e)
        }
        Err(e) if unanswered && e.status == Some(403) => match api.get_build() {
            Ok(b) if b["status"] == "RUNNING" => {
                eprintln!(
                    "launch: the build is RUNNING already: an earlier attempt whose answer was lost marked it"
                );
                Ok(())
            }
            _ => Err(e),
        },
        r => r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_are_parsed_naming_the_bad_field() {
        let ok = parse_steps(&json!({"steps": [{"name": "a", "command": "true"}]})).unwrap();
        assert_eq!(ok[0].name, "a");
        assert_eq!(
            parse_steps(&json!({})).unwrap_err(),
            "steps: must be an array"
        );
        assert_eq!(
            parse_steps(&json!({"steps": [{"name": "a", "command": "x"}, {"command": "y"}]}))
                .unwrap_err(),
            "steps[1].name: must be a non-empty string"
        );
        assert_eq!(
            parse_steps(&json!({"steps": [{"name": "a"}]})).unwrap_err(),
            "steps[0].command: must be a string"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(describe(Duration::from_secs(60)), "1 minute");
        assert_eq!(describe(Duration::from_secs(5400)), "90 minutes");
        assert_eq!(describe(Duration::from_secs(1)), "1 second");
        assert_eq!(describe(Duration::from_secs(90)), "90 seconds");
        assert_eq!(Outcome::TimedOut.exit_code(), 3);
        assert_eq!(Outcome::Aborted.exit_code(), 1);
    }
}
