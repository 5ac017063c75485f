//! The sdx launcher image and the launch protocol it speaks.
//!
//! Native launch mode runs `<mountPoint>/launch --token-file … <buildId>`: only a
//! launcher that speaks this protocol understands that command. The stock
//! `screwdrivercd/launcher` image does not: its `launch` prints its usage on an unknown
//! flag and **exits 0**, so an engine that only looks at the exit code records success for
//! a build that never ran. Two things close that hole:
//!
//! * **The sdx launcher image** (`sdx launcher-image build`): `FROM scratch`, the static
//!   reference `launch` at `/opt/sd/launch`, `VOLUME /opt/sd`, and the labels
//!   [`LABEL_LAUNCH_PROTOCOL`] = [`LAUNCH_PROTOCOL`] and [`LABEL_SDX_VERSION`]. Its
//!   default name is [`SDX_LAUNCHER_IMAGE`]:[`SDX_LAUNCHER_TAG`], the default launcher of
//!   the Docker, Kubernetes and Jenkins backends in native mode. The `localhost/`
//!   registry part makes a missing image fail fast instead of being looked up on a public
//!   registry under a name nobody here controls.
//! * **Pre-flight** (`Executor::preflight`) reads the label where the engine lets it and
//!   refuses an image that does not speak the protocol of the configured mode.

use crate::launch::LaunchMode;

/// Repository of the sdx launcher image built by `sdx launcher-image build`.
pub const SDX_LAUNCHER_IMAGE: &str = "localhost/sdx-launcher";

/// Tag of the sdx launcher image: the sdx version it was built with.
pub const SDX_LAUNCHER_TAG: &str = env!("CARGO_PKG_VERSION");

/// Image label naming the launch protocol the image's `launch` speaks.
pub const LABEL_LAUNCH_PROTOCOL: &str = "cd.screwdriver.sdx.launch-protocol";

/// Image label naming the sdx version that built the image.
pub const LABEL_SDX_VERSION: &str = "cd.screwdriver.sdx.version";

/// The launch protocol of this version: native mode's command line, with the token out
/// of the argument list.
pub const LAUNCH_PROTOCOL: u32 = 1;

/// The repository of upstream's launcher image (Screwdriver launch mode).
pub const STOCK_LAUNCHER_IMAGE: &str = "screwdrivercd/launcher";

/// The tag of upstream's launcher image that the backends default to in Screwdriver mode.
pub const STOCK_LAUNCHER_TAG: &str = "stable";

/// `<repository>:<tag>` of the sdx launcher image: the default launcher in native mode.
pub const SDX_LAUNCHER_REFERENCE: &str =
    concat!("localhost/sdx-launcher:", env!("CARGO_PKG_VERSION"));

/// `<repository>:<tag>` of upstream's launcher image: the default in Screwdriver mode.
pub const STOCK_LAUNCHER_REFERENCE: &str = "screwdrivercd/launcher:stable";

/// `<repository>:<tag>` of the sdx launcher image.
///
/// ```
/// assert_eq!(
///     executor_base::launch_protocol::sdx_launcher_reference(),
///     format!("localhost/sdx-launcher:{}", env!("CARGO_PKG_VERSION"))
/// );
/// ```
pub fn sdx_launcher_reference() -> String {
    format!("{SDX_LAUNCHER_IMAGE}:{SDX_LAUNCHER_TAG}")
}

/// The launcher image a backend uses: `configured`, except that the untouched native
/// default ([`SDX_LAUNCHER_REFERENCE`]) becomes upstream's image in Screwdriver mode,
/// whose `launcher_entrypoint.sh` + `run.sh` contract only that image speaks.
///
/// ```
/// use executor_base::LaunchMode;
/// use executor_base::launch_protocol::{launcher_for_mode, SDX_LAUNCHER_REFERENCE};
/// assert_eq!(launcher_for_mode(SDX_LAUNCHER_REFERENCE, LaunchMode::Native), SDX_LAUNCHER_REFERENCE);
/// assert_eq!(launcher_for_mode(SDX_LAUNCHER_REFERENCE, LaunchMode::Screwdriver), "screwdrivercd/launcher:stable");
/// assert_eq!(launcher_for_mode("reg:5000/mine:1", LaunchMode::Screwdriver), "reg:5000/mine:1");
/// ```
pub fn launcher_for_mode(configured: &str, mode: LaunchMode) -> String {
    if mode == LaunchMode::Screwdriver && configured == SDX_LAUNCHER_REFERENCE {
        STOCK_LAUNCHER_REFERENCE.to_string()
    } else {
        configured.to_string()
    }
}

/// First word of the launch handshake line.
pub const RESULT_MARKER: &str = "sdx-launch-result";

/// The launch handshake: the last line the reference `launch` writes to its standard
/// output when it ends, proof that it ran the build (upstream's launcher, or any program
/// that exits 0 without running the build, never writes it):
///
/// ```text
/// sdx-launch-result protocol=1 build=<buildId> status=<SUCCESS|FAILURE|ABORTED|TIMEOUT|ERROR>
/// ```
///
/// A backend reads it where its engine keeps the build's output (Docker: the build
/// container's log) and, in native mode, reports a build whose launcher exited 0 without
/// it as failed ([`FailureReason::LaunchProtocol`](crate::FailureReason::LaunchProtocol)),
/// through [`exit_zero_status`].
///
/// ```
/// use executor_base::launch_protocol::LaunchResult;
/// let r = LaunchResult { protocol: 1, build_id: 42, status: "SUCCESS".into() };
/// assert_eq!(r.line(), "sdx-launch-result protocol=1 build=42 status=SUCCESS");
/// let out = format!("step output\n{}\n", r.line());
/// assert_eq!(LaunchResult::find(&out, 42), Some(r));
/// assert_eq!(LaunchResult::find(&out, 43), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchResult {
    /// The launch protocol `launch` speaks.
    pub protocol: u32,
    /// The build it ran.
    pub build_id: u64,
    /// How the build ended, as `launch` reported it to the API.
    pub status: String,
}

impl LaunchResult {
    /// The handshake line (without a newline).
    pub fn line(&self) -> String {
        format!(
            "{RESULT_MARKER} protocol={} build={} status={}",
            self.protocol, self.build_id, self.status
        )
    }

    /// Parses one handshake line (surrounding whitespace and a log prefix before the
    /// marker are ignored); `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.find(RESULT_MARKER)? + RESULT_MARKER.len()..];
        let (mut protocol, mut build_id, mut status) = (None, None, None);
        for field in rest.split_whitespace() {
            match field.split_once('=')? {
                ("protocol", v) => protocol = v.parse().ok(),
                ("build", v) => build_id = v.parse().ok(),
                ("status", v) if !v.is_empty() => status = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Self {
            protocol: protocol?,
            build_id: build_id?,
            status: status?,
        })
    }

    /// The last handshake of build `build_id` in `output` (a log tail).
    pub fn find(output: &str, build_id: u64) -> Option<Self> {
        output
            .lines()
            .rev()
            .filter_map(Self::parse)
            .find(|r| r.build_id == build_id)
    }
}

/// The status of build `build_id` whose launcher (from image `launcher`) exited 0, given
/// the handshake found in its output (`None`: none).
///
/// * Screwdriver mode: succeeded. Upstream's launcher exits 0 whatever happened (it
///   reports the outcome to the API only), so an executor cannot know more there.
/// * Native mode: succeeded only with a handshake for this build saying `SUCCESS` in a
///   protocol this version speaks; otherwise failed with
///   [`FailureReason::LaunchProtocol`](crate::FailureReason::LaunchProtocol) and a message
///   naming the image and what to do.
///
/// ```
/// use executor_base::launch_protocol::{exit_zero_status, LaunchResult};
/// use executor_base::{FailureReason, LaunchMode, Phase};
/// let ok = LaunchResult { protocol: 1, build_id: 7, status: "SUCCESS".into() };
/// assert_eq!(exit_zero_status(LaunchMode::Native, 7, Some(&ok), "img").phase, Phase::Succeeded);
/// let s = exit_zero_status(LaunchMode::Native, 7, None, "screwdrivercd/launcher:stable");
/// assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol));
/// assert!(s.message.contains("screwdrivercd/launcher:stable"), "{}", s.message);
/// assert_eq!(exit_zero_status(LaunchMode::Screwdriver, 7, None, "img").phase, Phase::Succeeded);
/// ```
pub fn exit_zero_status(
    mode: LaunchMode,
    build_id: u64,
    handshake: Option<&LaunchResult>,
    launcher: &str,
) -> crate::BuildStatus {
    use crate::{BuildStatus, FailureReason};
    if mode == LaunchMode::Screwdriver {
        return BuildStatus::succeeded();
    }
    let problem = match handshake {
        Some(r) if r.build_id == build_id && r.protocol == LAUNCH_PROTOCOL => {
            if r.status == "SUCCESS" {
                return BuildStatus::succeeded();
            }
            format!("the launcher reported the build {} but exited 0", r.status)
        }
        Some(r) => format!(
            "the launcher's handshake is for build {} in launch protocol {}, expected build {build_id} in protocol {LAUNCH_PROTOCOL}",
            r.build_id, r.protocol
        ),
        None => format!(
            "the launcher exited 0 without the launch handshake, so no step is known to have run: launcher {launcher} does not speak sdx launch protocol {LAUNCH_PROTOCOL} (native launch mode). Use the sdx launcher image (`sdx launcher-image build`, default {SDX_LAUNCHER_REFERENCE}), or set launchMode=screwdriver for upstream's screwdrivercd/launcher"
        ),
    };
    let mut s = BuildStatus::failed(
        FailureReason::LaunchProtocol,
        problem,
        handshake.map(LaunchResult::line),
    );
    s.exit_code = Some(0);
    s
}

/// `launch`'s exit code for "the build ran past its timeout" (native launch mode).
pub const EXIT_TIMED_OUT: i32 = 3;

/// `launch`'s exit code for "the API had already aborted the build when `launch` asked to
/// mark it RUNNING": no step ran, and the build is `Canceled`, as the API says (native
/// launch mode). Without it such a build looked like a usage or API error (exit 2).
pub const EXIT_ABORTED_BY_API: i32 = 4;

/// What a native `launch`'s exit code means where the protocol gives it a meaning of its
/// own: [`EXIT_TIMED_OUT`] is `TimedOut`, [`EXIT_ABORTED_BY_API`] is `Canceled`; `None` for
/// every other code, which the backend maps (0 through [`exit_zero_status`], the rest
/// failures). Every backend that sees `launch`'s exit code maps it through here.
///
/// ```
/// use executor_base::Phase;
/// use executor_base::launch_protocol::{EXIT_ABORTED_BY_API, status_of_launch_exit};
/// let s = status_of_launch_exit(EXIT_ABORTED_BY_API).unwrap();
/// assert_eq!((s.phase, s.exit_code), (Phase::Canceled, Some(4)));
/// assert_eq!(status_of_launch_exit(3).unwrap().phase, Phase::TimedOut);
/// assert!(status_of_launch_exit(1).is_none());
/// ```
pub fn status_of_launch_exit(code: i32) -> Option<crate::BuildStatus> {
    use crate::{BuildStatus, Phase};
    let mut s = match code {
        EXIT_TIMED_OUT => {
            BuildStatus::timed_out("launch stopped the build at its timeout (exit code 3)")
        }
        EXIT_ABORTED_BY_API => {
            let mut s = BuildStatus::canceled();
            debug_assert_eq!(s.phase, Phase::Canceled);
            s.message =
                "the API had aborted the build before launch started it; no step ran (exit code 4)"
                    .into();
            s
        }
        _ => return None,
    };
    s.exit_code = Some(code);
    Some(s)
}
