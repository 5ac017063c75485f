//! Findings about the launch protocol, the same for every backend that runs a launcher
//! image.

use super::Finding;
use crate::launch::LaunchMode;
use crate::launch_protocol::{LABEL_LAUNCH_PROTOCOL, LAUNCH_PROTOCOL, SDX_LAUNCHER_REFERENCE};

/// What the launch mode lets an executor know about a build's outcome: `ok` in native
/// mode (the launch handshake proves the build ran), `warn` in Screwdriver mode, where
/// upstream's launcher exits 0 whatever happened. `check` is the finding's name
/// (`<backend>.launchMode`).
///
/// ```
/// use executor_base::LaunchMode;
/// use executor_base::preflight::{launch_mode_finding, Level};
/// assert_eq!(launch_mode_finding("docker.launchMode", LaunchMode::Native).level, Level::Ok);
/// let w = launch_mode_finding("docker.launchMode", LaunchMode::Screwdriver);
/// assert_eq!(w.level, Level::Warn);
/// assert!(w.message.contains("launchMode=screwdriver"), "{}", w.message);
/// ```
pub fn launch_mode_finding(check: &str, mode: LaunchMode) -> Finding {
    match mode {
        LaunchMode::Native => Finding::ok(
            check,
            format!(
                "launchMode=native: a build succeeds only with the launch handshake (protocol {LAUNCH_PROTOCOL})"
            ),
        ),
        LaunchMode::Screwdriver => Finding::warn(
            check,
            "launchMode=screwdriver: upstream's launcher exits 0 whatever happened, so a build's success cannot be proven here (the API server knows the outcome); use launchMode=native with the sdx launcher image to prove it",
        ),
    }
}

/// Whether a launcher image whose [`LABEL_LAUNCH_PROTOCOL`] label is `label` (`None`:
/// the image has none) can run builds in `mode`. Native mode needs this version's
/// protocol; Screwdriver mode runs upstream's `launcher_entrypoint.sh`, so a labelled
/// sdx image there is a `fail` (it has no such script) and an unlabelled one `ok`.
///
/// ```
/// use executor_base::LaunchMode;
/// use executor_base::preflight::{launcher_label_finding, Level};
/// let f = launcher_label_finding("docker.launcherImage", "img:1", LaunchMode::Native, Some("1"));
/// assert_eq!(f.level, Level::Ok);
/// let f = launcher_label_finding("docker.launcherImage", "stock:1", LaunchMode::Native, None);
/// assert_eq!(f.level, Level::Fail);
/// assert!(f.message.contains("cd.screwdriver.sdx.launch-protocol"), "{}", f.message);
/// assert!(f.message.contains("stock:1"), "{}", f.message);
/// let f = launcher_label_finding("docker.launcherImage", "img:1", LaunchMode::Native, Some("7"));
/// assert_eq!(f.level, Level::Fail);
/// ```
pub fn launcher_label_finding(
    check: &str,
    image: &str,
    mode: LaunchMode,
    label: Option<&str>,
) -> Finding {
    let expected = LAUNCH_PROTOCOL.to_string();
    match (mode, label.map(str::trim)) {
        (LaunchMode::Native, Some(l)) if l == expected => Finding::ok(
            check,
            format!("launcher image {image} speaks launch protocol {l} ({LABEL_LAUNCH_PROTOCOL})"),
        ),
        (LaunchMode::Native, Some(l)) => Finding::fail(
            check,
            format!(
                "launcher image {image} speaks launch protocol {l} ({LABEL_LAUNCH_PROTOCOL}), this sdx needs {expected} in launchMode=native: rebuild it with `sdx launcher-image build` (default {SDX_LAUNCHER_REFERENCE})"
            ),
        ),
        (LaunchMode::Native, None) => Finding::fail(
            check,
            format!(
                "launcher image {image} has no {LABEL_LAUNCH_PROTOCOL} label, so its launch does not speak the sdx launch protocol that launchMode=native needs (a stock launcher exits 0 without running the build): use the sdx launcher image (`sdx launcher-image build`, default {SDX_LAUNCHER_REFERENCE}) or set launchMode=screwdriver"
            ),
        ),
        (LaunchMode::Screwdriver, Some(l)) => Finding::fail(
            check,
            format!(
                "launcher image {image} is an sdx launcher image (launch protocol {l}), which has no launcher_entrypoint.sh for launchMode=screwdriver: use upstream's screwdrivercd/launcher or launchMode=native"
            ),
        ),
        (LaunchMode::Screwdriver, None) => Finding::ok(
            check,
            format!(
                "launcher image {image} (no {LABEL_LAUNCH_PROTOCOL} label: upstream's contract, as launchMode=screwdriver expects)"
            ),
        ),
    }
}
