//! `sdx`: run, watch, stop and garbage-collect Screwdriver builds on any executor backend.
//!
//! ```text
//! sdx demo                      # reference API on loopback + a 3-step build on the process backend
//! sdx demo --fail               # the same with a failing step (exit 1)
//! sdx run --step build='make' --step test='make test' [--executor docker] [--api URL]
//! sdx status|stop BUILD_ID [--api URL]
//! sdx verify BUILD_ID --container IMAGE
//! sdx gc [--dry-run] [--executor all]
//! sdx doctor
//! sdx serve [--listen 127.0.0.1:8080]
//! sdx gearman-worker --job NAME
//! sdx launcher-image build [--tag REF] [--push]
//! ```
//!
//! `sdx` is also the reference launcher: invoked under the name `launch` (a symbolic link;
//! `demo`, `run` and `serve` create one in a temporary job-tools directory for the
//! process backend) or as `sdx launch ...`, it runs `sd_launch`. So a fresh clone needs
//! nothing but `cargo run -p executor-cli -- demo`.
//!
//! Configuration: flags, then `SDX_*` environment variables, then an optional TOML file
//! (`--config`, see the `config` module), then defaults. Errors are one line on stderr
//! (`sdx: ...`) with exit code 1 (failure) or 2 (configuration or usage).
//!
//! # Dependencies and why
//!
//! * `clap` (derive, env): flags with environment fallbacks and generated help.
//! * `toml` + `serde`: the config file, typed by each backend's own config struct.
//! * `indicatif`: the spinner while waiting.
//! * `reqwest`: the client of a remote API (`--api`), and Jenkins' version header.
//! * `bollard`, `kube` (features `docker`, `k8s`): the engines' version endpoints for
//!   `doctor`; the backends themselves build on them already.
//! * `tempfile`: the demo's job-tools and state directories, removed at the end.
//! * `metrics-exporter-prometheus` (recorder only) + `axum`: `sdx serve --metrics`, see
//!   the `metrics_server` module; axum is the reference API's server already.

// The argument docs are clap's `--help` text, read in a terminal: `<job>` there is a
// placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

/// `println!` that ignores a closed stdout (`sdx demo | head` must not panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, $($arg)*);
        let _ = out.flush();
    }};
}

mod backends;
mod cli;
mod client;
mod commands;
mod config;
mod embedded;
mod error;
mod follow;
mod metrics_server;
#[cfg(feature = "otlp")]
mod otel;
mod progress;
#[cfg(feature = "docker")]
mod static_launch;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// Whether `arg0` names the launcher (`launch`, `/opt/sd/launch`).
fn is_launch(arg0: &OsString) -> bool {
    Path::new(arg0).file_name().is_some_and(|n| n == "launch")
}

/// The log filter of `-v` counts (or `RUST_LOG` without `-v`).
fn log_filter(verbose: u8) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error")),
        1 => EnvFilter::new("info"),
        _ => EnvFilter::new("debug"),
    }
    // bollard logs request bodies and inspect answers at debug level, and in token mode
    // `env` (and launch mode `screwdriver`) those carry the build token: never shown.
    .add_directive("bollard=info".parse().expect("a valid directive"))
}

/// What must live until the end of `main`, after the async runtime is gone, for the
/// traces to be complete (with feature `otlp`: dropping it flushes the spans batched for
/// export).
struct Telemetry {
    #[cfg(feature = "otlp")]
    _otel: Option<otel::Guard>,
}

/// Logs to stderr by the `-v` filter; with feature `otlp` and an OTLP endpoint in the
/// environment, spans also go there (see the `otel` module).
fn init_tracing(verbose: u8) -> Result<Telemetry, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(log_filter(verbose));
    #[cfg(feature = "otlp")]
    {
        let (layer, guard) = otel::layer()?.unzip();
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(layer)
            .try_init();
        Ok(Telemetry { _otel: guard })
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = tracing_subscriber::registry().with(stderr).try_init();
        Ok(Telemetry {})
    }
}

fn main() -> ExitCode {
    // Multi-call: before anything starts a thread (the launcher blocks signals first).
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.first().is_some_and(is_launch) {
        std::process::exit(sd_launch::main_with_args(args));
    }
    if args.get(1).is_some_and(|a| a == "launch") {
        std::process::exit(sd_launch::main_with_args(args.into_iter().skip(1)));
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("sdx: internal error: {}", msg.replace('\n', " "));
    }));
    let cli = cli::Cli::parse();
    // reqwest (remote API, doctor, the OTLP exporter) and kube take rustls' process-wide
    // provider: ring.
    executor_base::tls::install_default_provider();
    // Dropped last, at the end of `main`: after the runtime's shutdown.
    let _telemetry = match init_tracing(cli.verbose) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sdx: {e}");
            return ExitCode::from(error::EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sdx: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sdx: {e}");
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bollard_debug_lines_are_never_shown() {
        use tracing::Level;
        use tracing_subscriber::layer::SubscriberExt;
        for v in [1, 2, 3] {
            let sub = tracing_subscriber::registry().with(super::log_filter(v));
            tracing::subscriber::with_default(sub, || {
                assert!(!tracing::enabled!(target: "bollard::docker", Level::DEBUG));
                assert!(tracing::enabled!(target: "bollard::docker", Level::INFO));
                assert_eq!(
                    tracing::enabled!(target: "executor_docker", Level::DEBUG),
                    v >= 2
                );
            });
        }
    }

    use super::*;

    #[test]
    fn launch_is_recognised_by_file_name() {
        assert!(is_launch(&OsString::from("/tmp/x/launch")));
        assert!(is_launch(&OsString::from("launch")));
        assert!(!is_launch(&OsString::from("/usr/bin/sdx")));
        assert!(!is_launch(&OsString::from("launcher")));
    }
}
