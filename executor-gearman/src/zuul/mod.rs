//! The Zuul-Gearman launcher protocol's payloads (`seeds/zuul-launchers.txt`).
//!
//! - `build:<job>[:<node>]` jobs carry the Zuul parameters as a JSON object ([`params`]:
//!   [`ZuulParams`] validates them, [`build_environment`] makes them the build's
//!   environment, with the table of what Zuul sends), plus (our extension) the
//!   Screwdriver start fields `buildId`, `apiUri`, `container`, `token`, `annotations`, ...
//! - The worker's first `WORK_DATA` is a [`StartAnnouncement`]; its last one a
//!   [`BuildReport`] with `result`, followed by `WORK_COMPLETE` (`SUCCESS`) or
//!   `WORK_FAIL` (anything else) ([`reports`]).
//! - A job the launcher refuses (bad arguments, an unreadable job, a start the wrapped
//!   executor refused) gets a last `WORK_DATA` [`BuildReport::refusal`] (`result`
//!   `ERROR` with the reason, as Zuul's own executor reports launcher errors, so plain
//!   clients see why) and then `WORK_EXCEPTION` carrying a [`LauncherException`]
//!   ([`exception`]), which gearmand turns into `WORK_FAIL` for clients that did not ask
//!   for exceptions.
//! - `stop:<manager>` takes a [`StopTarget`] (a [`BuildRef`], or a job's uuid); `set_description:<manager>` a
//!   [`DescriptionRequest`] ([`control`]).

pub mod control;
pub mod exception;
pub mod params;
mod reader;
pub mod reports;

pub use control::{
    BuildRef, DescriptionRequest, StopTarget, parse_build_ref, parse_description, parse_stop_target,
};
pub use exception::{ExceptionField, LauncherException};
pub use params::{ChangeRef, ZuulParams, build_environment, is_environment_parameter};
pub use reports::{
    BuildReport, RESULT_ABORTED, RESULT_ERROR, RESULT_FAILURE, RESULT_LOST, RESULT_SUCCESS,
    RESULT_TIMED_OUT, StartAnnouncement,
};
