//! `sdx launcher-image build`: the sdx launcher image, built through the Docker Engine
//! API, loaded into the daemon of the `docker` backend's configuration, and optionally
//! pushed.
//!
//! The image is always tagged with the default name the backends use in native mode
//! (`localhost/sdx-launcher:<version>`), so a local Docker daemon works with defaults
//! after this one command; `--tag` adds names, and `--push` pushes those (a cluster pulls
//! from a registry, see the README).

use executor_base::launch_protocol::sdx_launcher_reference;
use executor_docker::launcher_image::{ImageClient, LauncherImage, RegistryAuth, tag_reference};
use serde::Serialize;

use super::Ctx;
use crate::backends::{self, ProcessOverrides};
use crate::cli::{LauncherImageArgs, LauncherImageBuildArgs, LauncherImageCommand};
use crate::error::{CliError, CliResult};
use crate::static_launch;

/// What `build` did (the `--json` output).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    /// The Docker daemon.
    endpoint: String,
    /// The `launch` put in the image.
    launch: String,
    /// Where it came from.
    launch_source: &'static str,
    /// What it answered to `--version`.
    launch_version: String,
    /// The image id.
    image_id: String,
    /// Its size in bytes.
    size: i64,
    /// Every name it has.
    tags: Vec<String>,
    /// What was pushed: reference and digest.
    pushed: Vec<PushedRef>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PushedRef {
    reference: String,
    digest: Option<String>,
}

/// Runs `sdx launcher-image ...`.
pub async fn run(ctx: &Ctx, args: LauncherImageArgs) -> CliResult<u8> {
    match args.command {
        LauncherImageCommand::Build(a) => build(ctx, a).await,
    }
}

async fn build(ctx: &Ctx, a: LauncherImageBuildArgs) -> CliResult<u8> {
    let mut tags = vec![sdx_launcher_reference()];
    for t in &a.tags {
        tag_reference(t).map_err(|e| CliError::usage(format!("--tag: {}", e.message())))?;
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    if a.push && tags.len() == 1 {
        return Err(CliError::usage(format!(
            "--push: give --tag REGISTRY/REPOSITORY:TAG naming where to push ({} is a local name only)",
            tags[0]
        )));
    }
    let endpoint = backends::build_with_endpoint(
        executor_docker::SCHEME,
        &ctx.file,
        &ProcessOverrides::default(),
    )
    .await?
    .endpoint
    .unwrap_or_default();
    let client = ImageClient::connect(&endpoint)?;
    let arch = client
        .daemon_arch()
        .await
        .map_err(|e| CliError::from(e).context("asking the Docker daemon its architecture"))?;
    let quiet = a.json;
    let mut progress = |line: &str| {
        if !quiet {
            say!("{line}");
        }
    };
    let launch = tokio::task::block_in_place(|| {
        static_launch::find(a.launch.as_deref(), &arch, &mut progress)
    })?;
    progress(&format!(
        "launch: {} ({}; {}; {} bytes, static, {arch})",
        launch.path.display(),
        launch.source.describe(),
        launch.version,
        launch.bytes.len()
    ));
    let image = LauncherImage::new(launch.bytes.clone(), launch.version.clone());
    let built = client.build(&image, &tags).await?;
    progress(&format!(
        "built {} ({}, {} bytes) on {endpoint}",
        built.tags.join(", "),
        built.id,
        built.size
    ));
    let mut pushed = Vec::new();
    if a.push {
        for t in &tags[1..] {
            let r = tag_reference(t)?;
            let registry = r.registry().unwrap_or("docker.io").to_string();
            let auth = registry_auth(&registry);
            let p = client.push(t, auth.as_ref()).await?;
            progress(&format!(
                "pushed {}{}",
                p.reference,
                p.digest
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
            pushed.push(PushedRef {
                reference: p.reference,
                digest: p.digest,
            });
        }
    }
    if a.json {
        let report = Report {
            endpoint,
            launch: launch.path.display().to_string(),
            launch_source: launch.source.describe(),
            launch_version: launch.version,
            image_id: built.id,
            size: built.size,
            tags: built.tags,
            pushed,
        };
        say!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    Ok(0)
}

/// Credentials for `registry`: `SDX_REGISTRY_USERNAME` + `SDX_REGISTRY_PASSWORD`, else
/// what `docker login` stored inline in the Docker CLI config; none for anonymous pushes.
fn registry_auth(registry: &str) -> Option<RegistryAuth> {
    match (
        std::env::var("SDX_REGISTRY_USERNAME"),
        std::env::var("SDX_REGISTRY_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) if !u.is_empty() => Some(RegistryAuth::new(u, p)),
        _ => RegistryAuth::from_docker_config(registry),
    }
}
