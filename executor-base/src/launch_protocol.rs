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
