//! [`BuildPlan`]: everything `start` will create for one build, computed up front from the
//! validated [`StartConfig`] and the executor's options, with no engine call.
//!
//! Per build `<name>` = `<prefix><buildId>`:
//!
//! | resource | name | what it is |
//! |---|---|---|
//! | volume | `<name>-tools` | job-tools, filled from the launcher image on creation of `-init` |
//! | volume | `<name>-token` | the token file (token mode `file` only) |
//! | container | `<name>-init` | from the launcher image, never started; mounts both volumes read-write |
//! | container | `<name>-build` | from `container`, runs `launch`; mounts both volumes read-only |
//!
//! Everything carries the [`BuildLabels`] (`sdbuild`, build id, job id, expiry, owner)
//! plus a role label, so `stop` and the GC find it by label.
//!
//! In the default token mode `stdin` there is no token volume: the build container is
//! created with an open, once-only stdin, which `start` attaches to before starting it and
//! feeds the token through (`--token-file /dev/stdin`).

use std::collections::HashMap;
use std::fmt;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use executor_base::launch::expose_token;
use executor_base::{
    BuildId, BuildLabels, ImageRef, LaunchMode, LaunchSpec, Owner, StartConfig, TokenDelivery,
};

use crate::client::LABEL_ROLE;
use crate::config::{DockerConfig, TokenMode};

/// The token file's name inside the token directory.
pub(crate) const TOKEN_FILE: &str = "token";
/// The launcher's `--token-file` in token mode `stdin`.
pub(crate) const STDIN: &str = "/dev/stdin";

/// Names of one build's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `<prefix><buildId>`.
    pub base: String,
    /// `<base>-init`.
    pub init: String,
    /// `<base>-build`.
    pub build: String,
    /// `<base>-tools`.
    pub tools: String,
    /// `<base>-token`.
    pub token: String,
}

impl Names {
    /// The names of build `id` under `prefix`.
    pub(crate) fn new(prefix: &str, id: BuildId) -> Self {
        let base = executor_base::build_name(prefix, id);
        Self {
            init: format!("{base}-init"),
            build: format!("{base}-build"),
            tools: format!("{base}-tools"),
            token: format!("{base}-token"),
            base,
        }
    }

    /// `sdbuild=<base>`: the label selecting everything of the build.
    pub(crate) fn selector(&self) -> String {
        format!("{}={}", executor_base::labels::LABEL_SDBUILD, self.base)
    }
}

/// What `start` creates, in order.
#[derive(Clone)]
pub(crate) struct BuildPlan {
    /// The build.
    pub build_id: BuildId,
    /// Resource names.
    pub names: Names,
    /// The launcher image.
    pub launcher: ImageRef,
    /// The build image.
    pub image: ImageRef,
    /// Whether a token volume + file is used (token mode `file`).
    pub token_file: bool,
    /// Whether the token is fed to the build container's stdin (token mode `stdin`).
    pub token_stdin: bool,
    /// Directory of the token file (inside both containers).
    pub token_dir: String,
    /// The launcher container.
    pub init: ContainerCreateBody,
    /// The build container (may contain the token in env/args in the modes that say so).
    pub build: ContainerCreateBody,
    /// CPU limit, nano-CPUs (before capping at the daemon's CPU count).
    pub nano_cpus: i64,
    /// Memory limit, bytes.
    pub memory: i64,
}

impl fmt::Debug for BuildPlan {
    // The build container's body may carry the token (env/screwdriver modes): not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildPlan")
            .field("build_id", &self.build_id)
            .field("names", &self.names)
            .field("launcher", &self.launcher)
            .field("image", &self.image)
            .field("token_file", &self.token_file)
            .field("token_stdin", &self.token_stdin)
            .field("nano_cpus", &self.nano_cpus)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl BuildPlan {
    /// Plans build `b` at time `now` for `owner`. `launcher` is the validated launcher
    /// reference.
    pub(crate) fn new(
        cfg: &DockerConfig,
        launcher: &ImageRef,
        b: &StartConfig,
        now: DateTime<Utc>,
        owner: Option<&Owner>,
    ) -> Self {
        let names = Names::new(&cfg.prefix, b.build_id);
        let timeout = cfg.timeout.minutes(&b.annotations);
        let expires =
            now + ChronoDuration::minutes(i64::from(timeout) + i64::from(cfg.expiry_grace_minutes));
        let labels =
            BuildLabels::new(&cfg.prefix, b.build_id, b.job_id, expires).with_owner(owner.cloned());
        let with_role = |role: &str| -> HashMap<String, String> {
            let mut m: HashMap<String, String> = labels
                .to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            m.insert(LABEL_ROLE.to_string(), role.to_string());
            m
        };

        let mount = cfg.mount_point.trim_end_matches('/').to_string();
        let token_dir = cfg.token_dir.trim_end_matches('/').to_string();
        let native = cfg.launch_mode == LaunchMode::Native;
        let token_file = native && cfg.token_mode == TokenMode::File;
        let token_stdin = native && cfg.token_mode == TokenMode::Stdin;

        let spec = LaunchSpec::new(b, &mount, &cfg.ecosystem, timeout);
        let delivery = match cfg.token_mode {
            TokenMode::Stdin => TokenDelivery::File(STDIN.to_string()),
            TokenMode::File => TokenDelivery::File(format!("{token_dir}/{TOKEN_FILE}")),
            TokenMode::Env => TokenDelivery::EnvFromSecret,
        };
        let cmd = spec.command(cfg.launch_mode, &delivery);
        let mut env: Vec<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if cfg.launch_mode == LaunchMode::Native && cfg.token_mode == TokenMode::Env {
            // Documented: visible in `docker inspect`.
            env.push(format!(
                "{}={}",
                executor_base::launch::TOKEN_ENV,
                expose_token(&b.token)
            ));
        }

        let cpu_req = b.annotations.cpu().or(cfg.default_cpu);
        let ram_req = b.annotations.ram().or(cfg.default_ram);
        let nano_cpus = (cfg.resources.cpu_millis(cpu_req) as i64).saturating_mul(1_000_000);
        let memory = cfg.resources.memory_bytes(ram_req) as i64;

        // Named volumes created by the daemon with the init container (labels included),
        // filled from the launcher image on that creation (copy-up), read-only in the build.
        let tools_labels = with_role("tools");
        let token_labels = with_role("token");
        let mut init_mounts = vec![volume_mount(&names.tools, &mount, false, &tools_labels)];
        let mut build_mounts = vec![volume_mount(&names.tools, &mount, true, &tools_labels)];
        if token_file {
            init_mounts.push(volume_mount(&names.token, &token_dir, false, &token_labels));
            build_mounts.push(volume_mount(&names.token, &token_dir, true, &token_labels));
        }

        let init = ContainerCreateBody {
            image: Some(launcher.as_str().to_string()),
            // Never started: it exists to fill the tools volume from the launcher image.
            entrypoint: Some(vec!["/bin/true".to_string()]),
            cmd: Some(Vec::new()),
            labels: Some(with_role("init")),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(init_mounts),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Network mode `none` also disables networking at the daemon level: the same
        // isolation (a namespace with only `lo`), without a libnetwork sandbox per build
        // (Docker 20.10's libnetwork can deadlock when many sandboxes are torn down at once).
        let no_network = cfg.network.as_deref() == Some("none");
        let build = ContainerCreateBody {
            network_disabled: no_network.then_some(true),
            image: Some(b.container.as_str().to_string()),
            entrypoint: Some(vec![cmd.entrypoint.clone()]),
            cmd: Some(cmd.args.clone()),
            env: Some(env),
            // Token mode `stdin`: one attach (ours, made before the start) feeds the token,
            // and its end closes the build's stdin.
            open_stdin: token_stdin.then_some(true),
            stdin_once: token_stdin.then_some(true),
            attach_stdin: token_stdin.then_some(true),
            labels: Some(with_role("build")),
            host_config: Some(HostConfig {
                mounts: Some(build_mounts),
                nano_cpus: Some(nano_cpus),
                memory: Some(memory),
                // No swap: the memory limit is the limit, so OOM is deterministic.
                memory_swap: Some(memory),
                network_mode: cfg.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Self {
            build_id: b.build_id,
            launcher: launcher.clone(),
            image: b.container.clone(),
            token_file,
            token_stdin,
            token_dir,
            init,
            build,
            nano_cpus,
            memory,
            names,
        }
    }

    /// Caps the CPU limit at the daemon's CPU count (Docker refuses more).
    pub(crate) fn cap_cpus(&mut self, ncpu: Option<i64>) {
        if let Some(n) = ncpu.filter(|n| *n > 0) {
            let cap = n.saturating_mul(1_000_000_000);
            if self.nano_cpus > cap {
                self.nano_cpus = cap;
                if let Some(hc) = self.build.host_config.as_mut() {
                    hc.nano_cpus = Some(cap);
                }
            }
        }
    }
}

/// A named-volume mount; the daemon creates the volume with `labels` if it is missing.
/// The read-only (build) mounts never copy the image's content into the volume, so only
/// the launcher image fills the tools volume, whichever container is created first.
fn volume_mount(
    name: &str,
    target: &str,
    read_only: bool,
    labels: &HashMap<String, String>,
) -> Mount {
    Mount {
        typ: Some(MountType::VOLUME),
        source: Some(name.to_string()),
        target: Some(target.to_string()),
        read_only: Some(read_only),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(read_only),
            labels: Some(labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A tar archive holding the token file (mode 0444, owned by root) for the token volume.
/// The world-read bit lets a build image that runs as a non-root user read it; only the
/// build's own container mounts the volume.
pub(crate) fn token_tar(token: &secrecy::SecretString) -> bytes::Bytes {
    let data = expose_token(token).as_bytes();
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o444);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, TOKEN_FILE, data)
        .expect("writing to a Vec cannot fail");
    bytes::Bytes::from(builder.into_inner().expect("writing to a Vec cannot fail"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::{ResourceTable, TierTable};

    fn start(annotations: serde_json::Value) -> StartConfig {
        StartConfig::from_json(&serde_json::json!({
            "buildId": 42, "jobId": 7, "apiUri": "http://127.0.0.1:8080", "container": "node:22",
            "token": "sekrit-token", "annotations": annotations
        }))
        .unwrap()
    }

    fn mount_count(body: &ContainerCreateBody) -> usize {
        body.host_config
            .as_ref()
            .and_then(|h| h.mounts.as_ref())
            .map_or(0, Vec::len)
    }

    fn launcher() -> ImageRef {
        "screwdrivercd/launcher:stable".parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn names_labels_and_native_command_with_a_token_file() {
        let cfg = DockerConfig {
            prefix: "ci-".into(),
            network: Some("none".into()),
            token_mode: TokenMode::File,
            ..Default::default()
        };
        let p = BuildPlan::new(
            &cfg,
            &launcher(),
            &start(serde_json::json!({"screwdriver.cd/timeout": 30})),
            now(),
            Owner::current().as_ref(),
        );
        assert_eq!(p.names.init, "ci-42-init");
        assert_eq!(p.names.build, "ci-42-build");
        let labels = p.build.labels.as_ref().unwrap();
        assert_eq!(labels["sdbuild"], "ci-42");
        assert_eq!(labels["screwdriver.cd/job-id"], "7");
        assert_eq!(
            labels[executor_base::owner::LABEL_OWNER],
            Owner::current().unwrap().to_label()
        );
        for c in [&p.init, &p.build] {
            let vol = &c.host_config.as_ref().unwrap().mounts.as_ref().unwrap()[0];
            let vol_labels = vol
                .volume_options
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap();
            assert!(vol_labels.contains_key(executor_base::owner::LABEL_OWNER));
        }
        // 30 min timeout + 30 min grace.
        assert_eq!(
            labels["screwdriver.cd/expires-at"],
            (1_800_000_000 + 3600).to_string()
        );
        assert_eq!(p.build.entrypoint.as_deref().unwrap(), ["/opt/sd/launch"]);
        let args = p.build.cmd.as_ref().unwrap().join(" ");
        assert!(args.contains("--token-file /run/sd/token 42"), "{args}");
        let hc = p.build.host_config.as_ref().unwrap();
        let mounts: Vec<String> = hc
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}:{}:{}",
                    m.source.as_deref().unwrap(),
                    m.target.as_deref().unwrap(),
                    if m.read_only == Some(true) {
                        "ro"
                    } else {
                        "rw"
                    }
                )
            })
            .collect();
        assert_eq!(mounts, ["ci-42-tools:/opt/sd:ro", "ci-42-token:/run/sd:ro"]);
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(p.build.network_disabled, Some(true));
        let body = serde_json::to_string(&p.build).unwrap();
        assert!(!body.contains("sekrit-token"));
        assert!(!format!("{p:?}").contains("sekrit-token"));
        assert_eq!(
            p.init.image.as_deref(),
            Some("screwdrivercd/launcher:stable")
        );
    }

    #[test]
    fn the_default_token_mode_feeds_stdin_and_needs_no_token_volume() {
        let p = BuildPlan::new(
            &DockerConfig::default(),
            &launcher(),
            &start(serde_json::json!({})),
            now(),
            None,
        );
        assert!(p.token_stdin && !p.token_file);
        let args = p.build.cmd.as_ref().unwrap().join(" ");
        assert!(args.ends_with("--token-file /dev/stdin 42"), "{args}");
        assert_eq!(
            (p.build.open_stdin, p.build.stdin_once, p.build.attach_stdin),
            (Some(true), Some(true), Some(true))
        );
        assert_eq!(mount_count(&p.build), 1, "only the tools volume");
        assert_eq!(mount_count(&p.init), 1);
        assert!(
            !serde_json::to_string(&p.build)
                .unwrap()
                .contains("sekrit-token")
        );
        assert!(!format!("{p:?}").contains("sekrit-token"));
    }

    #[test]
    fn env_and_screwdriver_modes_carry_the_token_as_documented() {
        let cfg = DockerConfig {
            token_mode: TokenMode::Env,
            ..Default::default()
        };
        let p = BuildPlan::new(
            &cfg,
            &launcher(),
            &start(serde_json::json!({})),
            now(),
            None,
        );
        assert!(!p.token_file);
        assert!(
            p.build
                .env
                .as_ref()
                .unwrap()
                .contains(&"SD_TOKEN=sekrit-token".to_string())
        );
        assert_eq!(mount_count(&p.build), 1);

        let cfg = DockerConfig {
            launch_mode: LaunchMode::Screwdriver,
            ..Default::default()
        };
        let p = BuildPlan::new(
            &cfg,
            &launcher(),
            &start(serde_json::json!({})),
            now(),
            None,
        );
        assert_eq!(
            p.build.entrypoint.as_deref().unwrap(),
            ["/opt/sd/launcher_entrypoint.sh"]
        );
        assert!(p.build.cmd.as_ref().unwrap()[0].starts_with("/opt/sd/run.sh \"sekrit-token\""));
        assert!(!format!("{p:?}").contains("sekrit-token"));
    }

    #[test]
    fn resources_from_tiers_defaults_and_cap() {
        let cfg = DockerConfig {
            resources: ResourceTable {
                cpu: TierTable::CPU_DEFAULT,
                ram: TierTable {
                    micro: 0.25,
                    ..TierTable::RAM_DEFAULT
                },
            },
            ..Default::default()
        };
        let mut p = BuildPlan::new(
            &cfg,
            &launcher(),
            &start(
                serde_json::json!({"screwdriver.cd/cpu": "HIGH", "screwdriver.cd/ram": "MICRO"}),
            ),
            now(),
            None,
        );
        assert_eq!(p.nano_cpus, 6_000_000_000);
        assert_eq!(p.memory, 256 * 1024 * 1024);
        p.cap_cpus(Some(2));
        assert_eq!(
            p.build.host_config.as_ref().unwrap().nano_cpus,
            Some(2_000_000_000)
        );

        let cfg = DockerConfig {
            default_ram: Some(executor_base::ResourceRequest::Tier(
                executor_base::Tier::High,
            )),
            ..Default::default()
        };
        let p = BuildPlan::new(
            &cfg,
            &launcher(),
            &start(serde_json::json!({})),
            now(),
            None,
        );
        assert_eq!(p.memory, 12 * 1024 * 1024 * 1024);
        assert_eq!(p.nano_cpus, 2_000_000_000);
    }

    #[test]
    fn token_tar_holds_one_readable_file() {
        let t = token_tar(&secrecy::SecretString::from("abc".to_string()));
        let mut a = tar::Archive::new(&t[..]);
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some(TOKEN_FILE));
        assert_eq!(e.header().mode().unwrap(), 0o444);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        assert_eq!(s, "abc");
        assert!(entries.next().is_none());
    }
}
