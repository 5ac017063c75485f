//! The launch handshake on Kubernetes: in native mode a build container that exited 0 is
//! a success only when `launch` wrote the handshake for this build to the container's
//! termination message.
//!
//! The build container has `terminationMessagePath: /dev/termination-log` (policy `File`)
//! and `SD_LAUNCH_RESULT_FILE` naming it; `launch` writes the handshake line there when it
//! ends, and the kubelet copies the file into `status.containerStatuses[].state
//! .terminated.message`. The executor reads it from the pod it already watches (no log
//! access, no extra request) and decides through the shared
//! [`exit_zero_status`](executor_base::launch_protocol::exit_zero_status): no handshake
//! (upstream's launcher on native mode's `--token-file`), another build's, or a non-
//! `SUCCESS` one is `Failed` with `launchProtocol`. Screwdriver mode keeps exit 0 as
//! success (upstream's launcher exits 0 whatever happened).

use executor_base::launch_protocol::{LaunchResult, exit_zero_status, status_of_launch_exit};
use executor_base::{BuildId, BuildStatus, FailureReason, LaunchMode, Phase};

use crate::config::K8sConfig;
use crate::view::PodView;

/// What checking the handshake needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandshakeCheck {
    mode: LaunchMode,
    launcher: String,
}

impl HandshakeCheck {
    /// The check for pods made under `cfg`.
    pub(crate) fn new(cfg: &K8sConfig) -> Self {
        Self {
            mode: cfg.launch_mode,
            launcher: cfg.launcher_reference(),
        }
    }

    /// `status` (classified from `view`, the pod of build `id`) unless it is a success
    /// without the handshake, or (native mode) a plain non-zero exit that is one of
    /// `launch`'s own codes: 3 timed out, 4 aborted by the API before anything ran
    /// ([`status_of_launch_exit`], as the Docker and process backends map them).
    pub(crate) fn apply(&self, id: BuildId, view: &PodView, status: BuildStatus) -> BuildStatus {
        if self.mode != LaunchMode::Native {
            return status;
        }
        if status.reason() == Some(FailureReason::NonZeroExit)
            && let Some((code, _, _)) = view.build.terminated()
            && status.exit_code == Some(code)
            && let Some(own) = status_of_launch_exit(code)
        {
            return own;
        }
        if status.phase != Phase::Succeeded {
            return status;
        }
        let found = view
            .build
            .terminated()
            .and_then(|(_, _, message)| message)
            .and_then(|m| LaunchResult::find(m, id.get()));
        exit_zero_status(self.mode, id.get(), found.as_ref(), &self.launcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn view(message: Option<&str>) -> PodView {
        exited(0, message)
    }

    fn exited(code: i32, message: Option<&str>) -> PodView {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sd-7-abcde"},
            "spec": {"containers": [{"name": "sd-7"}]},
            "status": {"phase": if code == 0 { "Succeeded" } else { "Failed" },
                "containerStatuses": [{
                "name": "sd-7", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": message}}}]}
        }))
        .unwrap();
        PodView::from_pod(&pod, None, chrono::Utc::now(), |_, _| false)
    }

    #[test]
    fn launchs_own_exit_codes_are_its_outcomes_in_native_mode() {
        let id = BuildId::new(7).unwrap();
        let native = HandshakeCheck::new(&K8sConfig::default());
        let s = native.apply(id, &exited(3, None), BuildStatus::exited(3));
        assert_eq!((s.phase, s.exit_code), (Phase::TimedOut, Some(3)));
        let s = native.apply(id, &exited(4, None), BuildStatus::exited(4));
        assert_eq!((s.phase, s.exit_code), (Phase::Canceled, Some(4)));
        let five = BuildStatus::exited(5);
        assert_eq!(native.apply(id, &exited(5, None), five.clone()), five);
        // An out-of-memory kill that happens to exit 3 stays what it is.
        let oom = BuildStatus::oom(Some(3), "OOMKilled");
        assert_eq!(native.apply(id, &exited(3, None), oom.clone()), oom);
        // Screwdriver mode: upstream's launcher gives these codes no meaning.
        let sd = HandshakeCheck::new(&K8sConfig {
            launch_mode: LaunchMode::Screwdriver,
            ..K8sConfig::default()
        });
        let three = BuildStatus::exited(3);
        assert_eq!(sd.apply(id, &exited(3, None), three.clone()), three);
    }

    #[test]
    fn success_needs_this_builds_handshake_in_native_mode() {
        let id = BuildId::new(7).unwrap();
        let native = HandshakeCheck::new(&K8sConfig::default());
        let ok = "sdx-launch-result protocol=1 build=7 status=SUCCESS\n";
        let s = native.apply(id, &view(Some(ok)), BuildStatus::succeeded());
        assert_eq!(s.phase, Phase::Succeeded);
        let s = native.apply(id, &view(None), BuildStatus::succeeded());
        assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol));
        assert!(
            s.message.contains("localhost/sdx-launcher:"),
            "{}",
            s.message
        );
        let other = "sdx-launch-result protocol=1 build=8 status=SUCCESS";
        let s = native.apply(id, &view(Some(other)), BuildStatus::succeeded());
        assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol));
        // Failures are not touched.
        let failed = BuildStatus::exited(2);
        assert_eq!(native.apply(id, &view(None), failed.clone()), failed);
        // Screwdriver mode: exit 0 is all that can be known.
        let sd = HandshakeCheck::new(&K8sConfig {
            launch_mode: LaunchMode::Screwdriver,
            ..K8sConfig::default()
        });
        assert_eq!(
            sd.apply(id, &view(None), BuildStatus::succeeded()).phase,
            Phase::Succeeded
        );
    }
}
