//! `sdx doctor`: for each backend, is it configured, is its engine reachable, which
//! version, are the permissions there, and what its pre-flight finds
//! ([`executor_base::Executor::preflight`]) for a probe build of `--image` (default: the
//! sdx launcher image, present wherever the native defaults work).
//!
//! Reachability and permissions are checked through the executor contract itself (a
//! `status` of a build id nobody uses must answer "not found"; a dry-run `gc` must be
//! able to list resources), so the check exercises the same client, credentials and
//! retry policy as real builds. Versions come from each engine's own version endpoint.

use std::future::Future;
use std::time::Duration;

use executor_base::{BuildId, ErrorKind, Finding, Preflight, StartConfig, StopConfig};
use serde::Serialize;

use super::Ctx;
use crate::backends::{self, ProcessOverrides};
use crate::cli::DoctorArgs;
use crate::error::{CliResult, EXIT_FAILURE};

/// A build id no real build uses (2^53 - 1, the largest id JSON clients keep exact).
const PROBE_BUILD: u64 = 9_007_199_254_740_991;
/// Bound on each check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The findings about one backend.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The backend.
    pub backend: String,
    /// `ok`, or why the backend could not be built.
    pub config: String,
    /// `yes`, `no: ...`, or `-` when not checked.
    pub reachable: String,
    /// `ok`, or what was refused.
    pub permissions: String,
    /// The engine's version, when it tells.
    pub version: String,
    /// Where it works (socket, URL, namespace, job-tools directory).
    pub endpoint: String,
    /// Whether the backend can run builds.
    pub healthy: bool,
    /// Whether the backend is configured at all (it could be built).
    pub configured: bool,
    /// The pre-flight's findings for the probe build (a configuration the backend could
    /// not be built with is one `fail` finding naming the key).
    pub preflight: Option<Preflight>,
}

async fn bounded<T>(f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CHECK_TIMEOUT, f).await.ok()
}

/// The probe build pre-flight checks: build id [`PROBE_BUILD`], image `image`.
fn probe_build(image: &str) -> Result<StartConfig, String> {
    StartConfig::builder(PROBE_BUILD, "http://127.0.0.1:9", image, "sdx-doctor-probe")
        .build()
        .map_err(|e| format!("--image: {e}"))
}

async fn check(ctx: &Ctx, name: &str, image: &str) -> Report {
    let mut r = Report {
        backend: name.to_string(),
        reachable: "-".into(),
        permissions: "-".into(),
        version: "-".into(),
        endpoint: "-".into(),
        ..Report::default()
    };
    let built = match bounded(backends::build_with_endpoint(
        name,
        &ctx.file,
        &ProcessOverrides::default(),
    ))
    .await
    {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            let mut p = Preflight::new(name);
            p.push(Finding::fail(format!("{name}.config"), e.message.clone()));
            r.preflight = Some(p);
            r.config = e.message;
            return r;
        }
        None => {
            r.config = format!(
                "building the backend took over {}s",
                CHECK_TIMEOUT.as_secs()
            );
            return r;
        }
    };
    r.configured = true;
    r.config = "ok".into();
    if let Some(e) = &built.endpoint {
        r.endpoint = e.clone();
    }
    let Some(probe_id) = BuildId::new(PROBE_BUILD) else {
        return r;
    };
    let probe = StopConfig::new(probe_id);
    match bounded(built.executor.status(&probe)).await {
        None => r.reachable = format!("no: no answer within {}s", CHECK_TIMEOUT.as_secs()),
        Some(Ok(_)) => r.reachable = "yes".into(),
        Some(Err(e)) => match e.kind() {
            ErrorKind::NotFound => r.reachable = "yes".into(),
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
                r.reachable = "yes".into();
                r.permissions = format!("refused: {e}");
            }
            _ => r.reachable = format!("no: {e}"),
        },
    }
    if r.reachable == "yes" && r.permissions == "-" {
        r.permissions = match bounded(built.executor.gc(true)).await {
            Some(Ok(report)) => {
                format!("ok (can list resources; {} expired)", report.expired.len())
            }
            Some(Err(e)) => format!("refused: {e}"),
            None => format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
        };
    }
    if r.reachable == "yes" {
        match bounded(version(name, built.endpoint.as_deref())).await {
            Some(Some(Ok(v))) => r.version = v,
            Some(Some(Err(e))) if name == "gearman" => {
                r.reachable = format!("no: {e}");
                r.permissions = "-".into();
            }
            Some(Some(Err(e))) => r.version = format!("unknown ({e})"),
            Some(None) => {}
            None => r.version = format!("unknown (no answer within {}s)", CHECK_TIMEOUT.as_secs()),
        }
    }
    r.preflight = Some(match probe_build(image) {
        Ok(build) => match bounded(built.executor.preflight(&build)).await {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                let mut p = Preflight::new(name);
                p.push(Finding::fail(format!("{name}.preflight"), e.to_string()));
                p
            }
            None => {
                let mut p = Preflight::new(name);
                p.push(Finding::fail(
                    format!("{name}.preflight"),
                    format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
                ));
                p
            }
        },
        Err(e) => {
            let mut p = Preflight::new(name);
            p.push(Finding::fail(format!("{name}.preflight"), e));
            p
        }
    });
    let passed = r.preflight.as_ref().is_some_and(Preflight::passed);
    r.healthy = r.reachable == "yes" && r.permissions.starts_with("ok") && passed;
    r
}

/// The engine's version (`None` when the engine has no version endpoint).
async fn version(name: &str, endpoint: Option<&str>) -> Option<Result<String, String>> {
    match name {
        backends::PROCESS => {
            let launch = endpoint.map(|d| std::path::Path::new(d).join("launch"));
            let found = launch.as_ref().is_some_and(|l| l.exists());
            Some(Ok(format!(
                "sdx {} ({})",
                env!("CARGO_PKG_VERSION"),
                if found {
                    "launch found"
                } else {
                    "no launch in job tools; demo/run/serve link their own"
                }
            )))
        }
        #[cfg(feature = "docker")]
        "docker" => {
            let ep = endpoint?;
            let client = if let Some(path) = ep.strip_prefix("unix://") {
                bollard::Docker::connect_with_unix(path, 10, bollard::API_DEFAULT_VERSION)
            } else {
                bollard::Docker::connect_with_http(ep, 10, bollard::API_DEFAULT_VERSION)
            };
            let v = match client {
                Ok(c) => c.version().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            Some(v.map(|v| {
                format!(
                    "Docker {} (API {})",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default()
                )
            }))
        }
        #[cfg(feature = "k8s")]
        "k8s" => {
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => return Some(Err(e.to_string())),
            };
            Some(
                client
                    .apiserver_version()
                    .await
                    .map(|info| format!("Kubernetes {}", info.git_version))
                    .map_err(|e| e.to_string()),
            )
        }
        #[cfg(feature = "jenkins")]
        "jenkins" => {
            let base = endpoint?.trim_end_matches('/').to_string();
            let resp = match reqwest::Client::new()
                .get(format!("{base}/api/json"))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Some(Err(e.to_string())),
            };
            Some(
                resp.headers()
                    .get("X-Jenkins")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!("Jenkins {v}"))
                    .ok_or_else(|| "no X-Jenkins header: is this Jenkins?".to_string()),
            )
        }
        #[cfg(feature = "gearman")]
        "gearman" => {
            let server = endpoint?;
            Some(
                executor_gearman::admin::status(server, Duration::from_secs(5))
                    .await
                    .map(|f| format!("gearmand at {server} ({} functions registered)", f.len()))
                    .map_err(|e| format!("gearmand at {server}: {e}")),
            )
        }
        _ => None,
    }
}

/// Runs the checks; exit 1 when a backend that was asked for explicitly (or that is
/// configured) cannot run builds.
pub async fn run(ctx: &Ctx, a: DoctorArgs) -> CliResult<u8> {
    let names: Vec<String> = if ctx.explicit_executors {
        ctx.executors.clone()
    } else {
        backends::compiled().into_iter().map(String::from).collect()
    };
    let image = a
        .image
        .clone()
        .unwrap_or_else(|| executor_base::launch_protocol::SDX_LAUNCHER_REFERENCE.to_string());
    let mut reports = Vec::new();
    for n in &names {
        reports.push(check(ctx, n, &image).await);
    }
    let bad = reports
        .iter()
        .any(|r| !r.healthy && (ctx.explicit_executors || r.configured));
    if a.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    } else {
        for r in &reports {
            let mark = if r.healthy {
                "ok"
            } else if r.configured || ctx.explicit_executors {
                "PROBLEM"
            } else {
                "not configured"
            };
            say!("{} [{mark}]", r.backend);
            say!("  config:      {}", r.config);
            say!("  endpoint:    {}", r.endpoint);
            say!("  reachable:   {}", r.reachable);
            say!("  permissions: {}", r.permissions);
            say!("  version:     {}", r.version);
            if let Some(p) = &r.preflight {
                say!(
                    "  preflight:   {} (build image {image})",
                    if p.passed() { "passed" } else { "FAILED" }
                );
                say_raw!("{}", super::findings::table(p, "    "));
            }
        }
    }
    Ok(if bad { EXIT_FAILURE } else { 0 })
}
