//! Docker pre-flight ([`executor_base::Executor::preflight`]): the daemon and its API
//! version, the launcher image (present or pullable, and its launch-protocol label against
//! the launch mode), the build image (present or pullable).
//!
//! "Pullable" is asked of the daemon (`GET /distribution/<image>/json`): it reaches the
//! registry with its own configuration (mirrors, insecure registries, credentials) and
//! answers whether the manifest exists, without pulling a layer. A launcher image that is
//! not present yet cannot show its labels before the pull, so that is a `warn`, checked
//! again by the first build that pulls it.

use bollard::Docker;
use executor_base::preflight::{
    Finding, Preflight, bounded, launch_mode_finding, launcher_label_finding,
};
use executor_base::{Error, ImageRef, StartConfig};

use crate::client::DEFAULT_REGISTRY;
use crate::config::PullPolicy;
use crate::executor::DockerExecutor;

/// The key the findings of `build` depend on (the cache key).
pub(crate) fn key(exec: &DockerExecutor, build: &StartConfig) -> String {
    let c = exec.config();
    format!(
        "{}|{:?}|{:?}|{}",
        exec.launcher.as_str(),
        c.launch_mode,
        c.pull_policy,
        build.container.as_str()
    )
}

/// Runs the checks (uncached).
pub(crate) async fn run(exec: &DockerExecutor, build: &StartConfig) -> Result<Preflight, Error> {
    let mut p = Preflight::new(crate::SCHEME);
    let endpoint = exec.endpoint().to_string();
    let timeout = exec.config().preflight.check_timeout;
    let mode = exec.config().launch_mode;
    p.push(launch_mode_finding("docker.launchMode", mode));

    let mut docker = None;
    let daemon = bounded("docker.daemon", &endpoint, timeout, async {
        let d = match exec.engine.docker().await {
            Ok(d) => d,
            Err(e) => {
                return Finding::fail(
                    "docker.daemon",
                    format!("cannot reach the Docker daemon at {endpoint}: {e}"),
                );
            }
        };
        let f = match d.version().await {
            Ok(v) => Finding::ok(
                "docker.daemon",
                format!(
                    "Docker {} at {endpoint} (API {}, this client speaks {})",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default(),
                    d.client_version()
                ),
            ),
            Err(e) => Finding::fail(
                "docker.daemon",
                format!(
                    "the Docker daemon at {endpoint} did not tell its version: {}",
                    crate::error::map(e, &endpoint)
                ),
            ),
        };
        docker = Some(d);
        f
    })
    .await;
    let reached = daemon.level != executor_base::Level::Fail;
    p.push(daemon);
    let Some(docker) = docker.filter(|_| reached) else {
        return Ok(p);
    };

    let policy = exec.config().pull_policy;
    let launcher = &exec.launcher;
    let f = bounded(
        "docker.launcherImage",
        &registry_of(launcher),
        timeout,
        launcher_image(&docker, launcher, mode, policy),
    )
    .await;
    p.push(f);

    p.push(Finding::ok(
        "docker.buildImage.reference",
        format!("container {} is a valid image reference", build.container),
    ));
    let f = bounded(
        "docker.buildImage",
        &registry_of(&build.container),
        timeout,
        image_available(
            &docker,
            "docker.buildImage",
            "build image",
            &build.container,
            policy,
        ),
    )
    .await;
    p.push(f);
    Ok(p)
}

/// The registry an image comes from (`docker.io` when it names none).
fn registry_of(image: &ImageRef) -> String {
    format!("registry {}", image.registry().unwrap_or(DEFAULT_REGISTRY))
}

/// Whether the daemon has `image` (its labels when it has it): `Ok(None)` when absent.
async fn inspect(
    docker: &Docker,
    image: &ImageRef,
) -> Result<Option<std::collections::HashMap<String, String>>, bollard::errors::Error> {
    match docker.inspect_image(image.as_str()).await {
        Ok(i) => Ok(Some(i.config.and_then(|c| c.labels).unwrap_or_default())),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The launcher image: present (then its label decides) or pullable.
async fn launcher_image(
    docker: &Docker,
    image: &ImageRef,
    mode: executor_base::LaunchMode,
    policy: PullPolicy,
) -> Finding {
    const CHECK: &str = "docker.launcherImage";
    match inspect(docker, image).await {
        Ok(Some(labels)) => launcher_label_finding(
            CHECK,
            image.as_str(),
            mode,
            labels
                .get(executor_base::launch_protocol::LABEL_LAUNCH_PROTOCOL)
                .map(String::as_str),
        ),
        Ok(None) => {
            let f = image_available(docker, CHECK, "launcher image", image, policy).await;
            if f.level == executor_base::Level::Ok {
                Finding::warn(
                    CHECK,
                    format!(
                        "{}; its launch-protocol label is checked when it is pulled (pull it now with `docker pull {image}` to check it here)",
                        f.message
                    ),
                )
            } else {
                f
            }
        }
        Err(e) => Finding::fail(
            CHECK,
            format!("inspecting launcher image {image} failed: {e}"),
        ),
    }
}

/// `image` is present on the daemon, or its registry has its manifest (and the pull
/// policy lets it be pulled).
async fn image_available(
    docker: &Docker,
    check: &str,
    what: &str,
    image: &ImageRef,
    policy: PullPolicy,
) -> Finding {
    match inspect(docker, image).await {
        Ok(Some(_)) if policy != PullPolicy::Always => {
            return Finding::ok(check, format!("{what} {image} is present on the daemon"));
        }
        Ok(Some(_)) | Ok(None) => {}
        Err(e) => {
            return Finding::fail(check, format!("inspecting {what} {image} failed: {e}"));
        }
    }
    if policy == PullPolicy::Never {
        return Finding::fail(
            check,
            format!("{what} {image} is not present on the daemon and pullPolicy=never"),
        );
    }
    let registry = image.registry().unwrap_or(DEFAULT_REGISTRY);
    match docker.inspect_registry_image(image.as_str(), None).await {
        Ok(d) => Finding::ok(
            check,
            format!(
                "{what} {image} is pullable from {registry} (manifest {})",
                d.descriptor.digest.unwrap_or_default()
            ),
        ),
        Err(e) => Finding::fail(
            check,
            format!(
                "{what} {image} is not present on the daemon and not pullable from {registry}: {}",
                registry_error(e)
            ),
        ),
    }
}

/// The daemon's message about a registry, without bollard's wrapping.
fn registry_error(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (daemon answered {status_code})"),
        other => other.to_string(),
    }
}
