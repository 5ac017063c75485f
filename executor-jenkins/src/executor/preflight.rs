//! Jenkins pre-flight: the credentials work (an authenticated `GET /api/json`), the
//! plugins the job template needs are installed and active (`/pluginManager/api/json`,
//! evaluated by [`crate::plugins`] as at build time), and the build's node label has at
//! least one online executor (`/label/<label>/api/json`: `totalExecutors` counts online
//! nodes only).

use executor_base::preflight::{Finding, Preflight, bounded, launch_mode_finding};
use executor_base::{Error, Level, StartConfig};

use super::JenkinsExecutor;
use crate::SCHEME;
use crate::error::JenkinsError;
use crate::plugins::{PluginCheck, TIMEOUT_PLUGIN, evaluate};

impl JenkinsExecutor {
    /// The cached pre-flight of `build` (key: its node label).
    pub(super) async fn run_preflight(&self, build: &StartConfig) -> Result<Preflight, Error> {
        let label = self
            .job
            .node_label(build)
            .map_err(|e| e.with_executor(SCHEME).with_operation("preflight"))?;
        self.preflight_cache
            .get_or_run(&label, || self.checks(&label))
            .await
    }

    async fn checks(&self, label: &str) -> Result<Preflight, Error> {
        let mut p = Preflight::new(SCHEME);
        let base = self.client.base().to_string();
        let timeout = self.preflight.check_timeout;
        p.push(launch_mode_finding(
            "jenkins.launchMode",
            self.job.launch_mode,
        ));
        let f = bounded("jenkins.credentials", &base, timeout, self.credentials()).await;
        let stop = f.level == Level::Fail;
        p.push(f);
        if stop {
            return Ok(p);
        }
        match tokio::time::timeout(timeout, self.client.plugins()).await {
            Ok(answer) => self.plugin_findings(answer, &mut p),
            Err(_) => p.push(Finding::fail(
                "jenkins.plugins",
                format!(
                    "no answer from {base} within {} ms (preflight.timeoutMs)",
                    timeout.as_millis()
                ),
            )),
        }
        let f = bounded("jenkins.agents", &base, timeout, self.agents(label)).await;
        p.push(f);
        Ok(p)
    }

    async fn credentials(&self) -> Finding {
        const CHECK: &str = "jenkins.credentials";
        let user = self.client.user().to_string();
        match self.client.version().await {
            Ok(v) => Finding::ok(
                CHECK,
                format!(
                    "user '{user}' signed in to Jenkins {v} at {}",
                    self.client.base()
                ),
            ),
            Err(JenkinsError::Status { status: 401, .. }) => Finding::fail(
                CHECK,
                format!(
                    "Jenkins at {} refused the credentials of user '{user}' (401): check `username` and `token`",
                    self.client.base()
                ),
            ),
            Err(JenkinsError::Status { status: 403, .. }) => Finding::fail(
                CHECK,
                format!(
                    "user '{user}' lacks Overall/Read on Jenkins at {} (403)",
                    self.client.base()
                ),
            ),
            Err(e) => Finding::fail(CHECK, format!("Jenkins at {}: {e}", self.client.base())),
        }
    }

    fn plugin_findings(
        &self,
        answer: Result<Vec<crate::api::PluginInfo>, JenkinsError>,
        p: &mut Preflight,
    ) {
        let check = match answer {
            Ok(list) => PluginCheck::Read(list),
            Err(JenkinsError::Status { status: 403, .. }) => {
                p.push(Finding::warn(
                    "jenkins.plugins",
                    format!(
                        "user '{}' may not read Jenkins' plugin list (Overall/SystemRead): the plugins the job template needs ({}) cannot be checked, and the executor enforces job timeouts itself",
                        self.client.user(),
                        self.job.template.required_plugins().join(", ")
                    ),
                ));
                return;
            }
            Err(e) => {
                p.push(Finding::fail(
                    "jenkins.plugins",
                    format!("reading the plugin list failed: {e}"),
                ));
                return;
            }
        };
        let ev = evaluate(&self.job.template, &check);
        for plugin in self.job.template.required_plugins() {
            let name = format!("jenkins.plugin.{plugin}");
            if !ev.missing.contains(plugin) {
                p.push(Finding::ok(
                    name,
                    format!("plugin {plugin} is installed and active"),
                ));
            } else if plugin == TIMEOUT_PLUGIN && !self.require_timeout_plugin {
                p.push(Finding::warn(
                    name,
                    format!(
                        "plugin {plugin} is not installed or not active, so Jenkins drops the job template's timeout wrapper: the executor enforces job timeouts itself (install it, or set requireTimeoutPlugin=true to refuse builds without it)"
                    ),
                ));
            } else {
                p.push(Finding::fail(
                    name,
                    format!(
                        "plugin {plugin} is not installed or not active: Jenkins silently drops the job template's {plugin} elements ({}); install it{}",
                        self.job.template.origin(),
                        if plugin == TIMEOUT_PLUGIN { " (requireTimeoutPlugin=true)" } else { "" }
                    ),
                ));
            }
        }
    }

    async fn agents(&self, label: &str) -> Finding {
        const CHECK: &str = "jenkins.agents";
        match self.client.label(label).await {
            Ok(l) if !l.offline && l.total_executors > 0 => Finding::ok(
                CHECK,
                format!(
                    "label '{label}': {} online executor(s) on {} node(s), {} idle",
                    l.total_executors,
                    l.nodes.len(),
                    l.idle_executors
                ),
            ),
            Ok(l) if l.nodes.is_empty() => Finding::fail(
                CHECK,
                format!(
                    "no Jenkins node has label '{label}' (option nodeLabel, plus the build's screwdriver.cd/nodeLabel): builds would wait in the queue forever"
                ),
            ),
            Ok(l) => Finding::fail(
                CHECK,
                format!(
                    "no online executor has label '{label}' (nodes {}: all offline or without executors): builds would wait in the queue",
                    l.nodes
                        .iter()
                        .map(|n| n.node_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Err(e) => Finding::fail(CHECK, format!("reading label '{label}' failed: {e}")),
        }
    }
}
