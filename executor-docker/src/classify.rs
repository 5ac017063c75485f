//! Container state -> [`BuildStatus`], on the engine's reasons rather than exit codes.
//!
//! * `OOMKilled` wins over everything: an OOM kill is a failure even with exit code 0
//!   (a child killed for memory while the launcher exits 0).
//! * A daemon-side start error (`State.Error`, e.g. the entry point is missing) is a
//!   container configuration failure.
//! * In the native launch mode, exit code 3 is the launcher's own timeout.
//! * `dead` and `removing` (when we are not stopping it) mean the build was lost.
//! * **Killed from outside.** Exit code 137 (SIGKILL) or 143 (SIGTERM) without `OOMKilled`
//!   means the container's PID 1 was killed by a signal sent from outside the container:
//!   processes inside cannot kill their PID-namespace init with SIGKILL, and an
//!   unhandled SIGTERM is ignored by it. That is what a Docker daemon shutdown or restart
//!   does to running containers (SIGTERM, SIGKILL after the stop timeout, or SIGKILL when a
//!   restarted daemon restores them), or an operator's `docker kill`; our own `stop` is
//!   recorded before it kills. So such a build is `Lost` (whose fault: infrastructure,
//!   retry-safe), not a `nonZeroExit` blamed on the build. (A launcher that itself ends
//!   with `exit 137` would be misread the same way; no launcher does.)

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use executor_base::{BuildStatus, FailureReason, LaunchMode};

/// Exit codes of a PID 1 killed by SIGKILL / SIGTERM (128 + signal).
const KILLED_FROM_OUTSIDE: [(i64, &str); 2] = [(137, "SIGKILL"), (143, "SIGTERM")];

/// Classifies the build container's inspect answer.
pub(crate) fn classify(c: &ContainerInspectResponse, mode: LaunchMode) -> BuildStatus {
    let Some(state) = c.state.as_ref() else {
        return BuildStatus::pending("container state unknown");
    };
    let exit = state.exit_code.map(|c| c as i32);
    if state.oom_killed == Some(true) {
        return BuildStatus::oom(exit, "OOMKilled");
    }
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    if let Some(err) = state.error.as_deref().filter(|e| !e.is_empty())
        && !matches!(status, ContainerStateStatusEnum::RUNNING)
    {
        let mut s = BuildStatus::failed(
            FailureReason::ContainerConfig,
            format!("build container failed to start: {err}"),
            Some(err.to_string()),
        );
        s.exit_code = exit;
        if let Some(f) = s.failure.as_mut() {
            f.build_started = Some(false);
        }
        return s;
    }
    match status {
        ContainerStateStatusEnum::CREATED => {
            BuildStatus::pending("build container created, not started yet")
        }
        ContainerStateStatusEnum::RUNNING
        | ContainerStateStatusEnum::PAUSED
        | ContainerStateStatusEnum::RESTARTING => BuildStatus::running(),
        ContainerStateStatusEnum::EXITED => {
            let code = state.exit_code.unwrap_or(-1);
            if let Some((_, signal)) = KILLED_FROM_OUTSIDE.iter().find(|(c, _)| *c == code) {
                let mut s = BuildStatus::lost(
                    Some(true),
                    format!(
                        "the build container was killed from outside (exit code {code}, \
                         {signal}, not out of memory): a Docker daemon shutdown or restart, or \
                         a docker kill; not the build's fault"
                    ),
                );
                s.exit_code = Some(code as i32);
                if let Some(f) = s.failure.as_mut() {
                    f.evidence = Some(format!(
                        "exit code {code} ({signal}), OOMKilled false, finished at {}",
                        state.finished_at.as_deref().unwrap_or("?")
                    ));
                }
                return s;
            }
            if mode == LaunchMode::Native
                && let Some(s) = i32::try_from(code)
                    .ok()
                    .and_then(executor_base::launch_protocol::status_of_launch_exit)
            {
                return s;
            }
            BuildStatus::exited(code as i32)
        }
        ContainerStateStatusEnum::DEAD => BuildStatus::lost(
            Some(true),
            "build container is dead (the daemon failed to remove or stop it)",
        ),
        ContainerStateStatusEnum::REMOVING => BuildStatus::lost(
            Some(true),
            "build container is being removed by someone else",
        ),
        ContainerStateStatusEnum::STOPPING => BuildStatus::running(),
        ContainerStateStatusEnum::EMPTY => BuildStatus::pending("container state unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;
    use executor_base::Phase;

    fn with(state: ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            ..Default::default()
        }
    }

    fn exited(code: i64, oom: bool) -> ContainerInspectResponse {
        with(ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(code),
            oom_killed: Some(oom),
            ..Default::default()
        })
    }

    #[test]
    fn oom_with_exit_zero_is_a_failure() {
        let s = classify(&exited(0, true), LaunchMode::Native);
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.reason(), Some(FailureReason::OutOfMemory));
        assert_eq!(s.exit_code, Some(0));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            classify(&exited(0, false), LaunchMode::Native).phase,
            Phase::Succeeded
        );
        let f = classify(&exited(1, false), LaunchMode::Native);
        assert_eq!(f.reason(), Some(FailureReason::NonZeroExit));
        assert_eq!(f.exit_code, Some(1));
        assert_eq!(
            classify(&exited(3, false), LaunchMode::Native).phase,
            Phase::TimedOut
        );
        assert_eq!(
            classify(&exited(3, false), LaunchMode::Screwdriver).phase,
            Phase::Failed
        );
    }

    #[test]
    fn killed_from_outside_is_lost_not_the_builds_fault() {
        for code in [137, 143] {
            let s = classify(&exited(code, false), LaunchMode::Native);
            assert_eq!(s.phase, Phase::Lost, "{code}");
            let f = s.failure.as_ref().unwrap();
            assert_eq!(f.reason, FailureReason::InfrastructureLost);
            assert_eq!(f.reason.fault(), executor_base::Fault::Infrastructure);
            assert!(f.reason.retry_safe());
            assert_eq!(f.build_started, Some(true));
            assert_eq!(s.exit_code, Some(code as i32));
            assert!(s.message.contains("daemon shutdown or restart"), "{s}");
        }
        // Killed for memory stays the build's OOM whatever the code.
        let oom = classify(&exited(137, true), LaunchMode::Native);
        assert_eq!(oom.reason(), Some(FailureReason::OutOfMemory));
        // Other codes are the build's own.
        assert_eq!(
            classify(&exited(2, false), LaunchMode::Native).reason(),
            Some(FailureReason::NonZeroExit)
        );
    }

    #[test]
    fn running_created_dead_and_start_errors() {
        let st = |s| {
            with(ContainerState {
                status: Some(s),
                ..Default::default()
            })
        };
        assert_eq!(
            classify(&st(ContainerStateStatusEnum::RUNNING), LaunchMode::Native).phase,
            Phase::Running
        );
        assert_eq!(
            classify(&st(ContainerStateStatusEnum::CREATED), LaunchMode::Native).phase,
            Phase::Pending
        );
        assert_eq!(
            classify(&st(ContainerStateStatusEnum::DEAD), LaunchMode::Native).phase,
            Phase::Lost
        );
        let err = with(ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(127),
            error: Some("exec: \"/opt/sd/launch\": no such file or directory".into()),
            ..Default::default()
        });
        let s = classify(&err, LaunchMode::Native);
        assert_eq!(s.reason(), Some(FailureReason::ContainerConfig));
        assert_eq!(s.failure.unwrap().build_started, Some(false));
        assert_eq!(
            classify(&ContainerInspectResponse::default(), LaunchMode::Native).phase,
            Phase::Pending
        );
    }
}
