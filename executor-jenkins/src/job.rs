//! One build's Jenkins job: its name, its rendered `config.xml`, its description (which
//! carries the labels gc reads) and the parameters of `buildWithParameters`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use executor_base::labels::{LABEL_EXPIRES, LABEL_MANAGED_BY, MANAGED_BY};
use executor_base::launch::expose_token;
use executor_base::{
    BuildId, BuildLabels, Ecosystem, Error, LaunchMode, LaunchSpec, ResourceTable, StartConfig,
    TimeoutPolicy, TokenDelivery, build_name,
};
use secrecy::SecretString;
use url::form_urlencoded;

use crate::client::Body;
use crate::config::PullPolicy;
use crate::script::{self, ScriptSpec, TOKEN_FILE};
use crate::template::{JobTemplate, check_xml_chars};

/// Starts the build description the job's own timeout writes (see the template's
/// `timeout_marker`); status reads an aborted build carrying it as timed out.
pub const TIMEOUT_MARKER: &str = "sdx-timeout:";

/// The build parameters every job declares and `buildWithParameters` sends, in order.
pub const PARAMETERS: [&str; 7] = [
    "SD_BUILD_ID",
    "SD_API",
    "SD_STORE",
    "SD_UI",
    "SD_CONTAINER",
    "SD_BUILD_TIMEOUT",
    TOKEN_PARAMETER,
];

/// The build token's parameter (a password parameter: Jenkins keeps it out of the job and
/// the build's displayed parameters).
pub const TOKEN_PARAMETER: &str = "SD_TOKEN";

/// The description line (`key=value`) that records the job's own timeout in minutes, so
/// any executor can tell when a build of the job is overdue.
pub(crate) const LABEL_JOB_TIMEOUT: &str = "screwdriver.cd/job-timeout-minutes";

/// The build description of a build the job's own timeout of `minutes` aborted. It has
/// no `'`, `{` or `$`: the build-timeout plugin passes the text through `$VAR` expansion
/// and `java.text.MessageFormat`, which would eat a lone apostrophe and everything quoted
/// after it (`WriteDescriptionOperation.perform`).
pub(crate) fn timeout_marker(minutes: u32) -> String {
    format!("{TIMEOUT_MARKER} the job timeout of {minutes} minutes aborted this build")
}

/// The validated options that shape a job.
#[derive(Debug, Clone)]
pub(crate) struct JobSettings {
    pub job_prefix: String,
    pub node_label: String,
    pub launcher_image: String,
    pub mount_point: String,
    pub launch_mode: LaunchMode,
    pub docker_command: String,
    pub docker_network: Option<String>,
    pub pull_policy: PullPolicy,
    pub timeout: TimeoutPolicy,
    pub job_timeout_margin_minutes: u32,
    pub expiry_grace_minutes: u32,
    pub ecosystem: Ecosystem,
    pub resources: ResourceTable,
    pub template: JobTemplate,
}

/// A rendered job, ready to be sent.
pub(crate) struct RenderedJob {
    /// The job name.
    pub name: String,
    /// The job's own timeout in minutes (build timeout + margin).
    pub job_timeout_minutes: u32,
    /// `config.xml`.
    pub xml: String,
    /// The `buildWithParameters` form (holds the token: never formatted).
    pub form: Body,
}

impl JobSettings {
    /// `<jobPrefix><buildId>`.
    pub fn job_name(&self, id: BuildId) -> String {
        build_name(&self.job_prefix, id)
    }

    /// The node label: `<nodeLabel>-<annotation>` when the build has a
    /// `screwdriver.cd/nodeLabel` annotation (upstream), else `<nodeLabel>`.
    pub(crate) fn node_label(&self, build: &StartConfig) -> Result<String, Error> {
        let extra = match build.annotations.get("nodeLabel") {
            None | Some(serde_json::Value::Null) => return Ok(self.node_label.clone()),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        check_xml_chars("annotations[screwdriver.cd/nodeLabel]", &extra)?;
        Ok(format!("{}-{}", self.node_label, extra))
    }

    /// Renders the job of `build` at time `now`.
    pub fn render(&self, build: &StartConfig, now: DateTime<Utc>) -> Result<RenderedJob, Error> {
        let name = self.job_name(build.build_id);
        let minutes = self.timeout.minutes(&build.annotations);
        let job_minutes = minutes + self.job_timeout_margin_minutes;
        let expires =
            now + chrono::Duration::minutes(i64::from(minutes + self.expiry_grace_minutes));
        let labels = BuildLabels::new(&self.job_prefix, build.build_id, build.job_id, expires);
        let store = build.store_uri.as_ref().unwrap_or(&self.ecosystem.store);
        let ui = build.ui_uri.as_ref().unwrap_or(&self.ecosystem.ui);

        let command = match self.launch_mode {
            LaunchMode::Native => {
                LaunchSpec::new(build, &self.mount_point, &self.ecosystem, minutes)
                    .native(&TokenDelivery::File(TOKEN_FILE.to_string()))
            }
            LaunchMode::Screwdriver => {
                // run.sh takes the token as an argument; render it as a reference to the
                // container's SD_TOKEN so the job's config never holds the value.
                const SENTINEL: &str = "sdx-token-placeholder";
                let mut b = build.clone();
                b.token = SecretString::from(SENTINEL);
                let mut c =
                    LaunchSpec::new(&b, &self.mount_point, &self.ecosystem, minutes).screwdriver();
                for a in &mut c.args {
                    *a = a.replace(&format!("\"{SENTINEL}\""), "\"$SD_TOKEN\"");
                }
                c.args_contain_token = false;
                c
            }
        };
        let pairs = labels.to_pairs();
        let container = build.container.as_str().to_string();
        let script = script::render(&ScriptSpec {
            docker: &self.docker_command,
            name: &name,
            launcher_image: &self.launcher_image,
            container: &container,
            command: &command,
            token_file: (self.launch_mode == LaunchMode::Native).then_some(TOKEN_FILE),
            labels: &pairs,
            cpus: script::cpus(self.resources.cpu_millis(build.annotations.cpu())),
            memory_bytes: self.resources.memory_bytes(build.annotations.ram()),
            network: self.docker_network.as_deref(),
            pull: self.pull_policy,
        });

        let mut v: BTreeMap<&str, String> = BTreeMap::new();
        v.insert("description", description(&labels, job_minutes));
        v.insert("build_id", build.build_id.to_string());
        v.insert("job_name", name.clone());
        v.insert("sdbuild", labels.name());
        v.insert("api_uri", build.api_uri.to_string());
        v.insert("store_uri", store.to_string());
        v.insert("ui_uri", ui.to_string());
        v.insert("container", container.clone());
        v.insert("launcher_image", self.launcher_image.clone());
        v.insert("mount_point", self.mount_point.clone());
        v.insert("timeout_minutes", minutes.to_string());
        v.insert("job_timeout_minutes", job_minutes.to_string());
        v.insert("timeout_marker", timeout_marker(job_minutes));
        v.insert("node_label", self.node_label(build)?);
        v.insert("expires_at", expires.timestamp().to_string());
        v.insert(
            "job_id",
            build.job_id.map(|j| j.to_string()).unwrap_or_default(),
        );
        v.insert(
            "pipeline_id",
            build.pipeline_id.map(|p| p.to_string()).unwrap_or_default(),
        );
        v.insert("script", script);
        let xml = self.template.render(&v);

        let values = [
            build.build_id.to_string(),
            build.api_uri.to_string(),
            store.to_string(),
            ui.to_string(),
            container,
            minutes.to_string(),
        ];
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in PARAMETERS.iter().zip(&values) {
            form.append_pair(name, value);
        }
        form.append_pair(TOKEN_PARAMETER, expose_token(&build.token));
        let form = form.finish();
        Ok(RenderedJob {
            name,
            job_timeout_minutes: job_minutes,
            xml,
            form: Body::Form(form),
        })
    }
}

/// The job description: one sentence, then the build's labels and the job's own timeout
/// as `key=value` lines.
pub(crate) fn description(labels: &BuildLabels, job_timeout_minutes: u32) -> String {
    let mut d = format!(
        "Screwdriver build {}, run by sdx executor-jenkins. Managed job: sdx gc deletes it after it expires.\n",
        labels.build_id
    );
    for (k, v) in labels.to_pairs() {
        d.push_str(k);
        d.push('=');
        d.push_str(&v);
        d.push('\n');
    }
    d.push_str(&format!("{LABEL_JOB_TIMEOUT}={job_timeout_minutes}\n"));
    d
}

/// What gc reads back from a job description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DescribedJob {
    /// Created by this library (`app.kubernetes.io/managed-by=sdx`).
    pub managed: bool,
    /// `screwdriver.cd/expires-at`.
    pub expires_at: Option<DateTime<Utc>>,
    /// `screwdriver.cd/job-timeout-minutes`: the job's own timeout.
    pub job_timeout_minutes: Option<u32>,
}

impl DescribedJob {
    /// Parses the `key=value` lines of a description.
    pub fn parse(description: &str) -> Self {
        let mut managed = false;
        let mut expires_at = None;
        let mut job_timeout_minutes = None;
        for line in description.lines() {
            match line.trim().split_once('=') {
                Some((k, v)) if k == LABEL_MANAGED_BY => managed = v.trim() == MANAGED_BY,
                Some((k, v)) if k == LABEL_EXPIRES => expires_at = BuildLabels::parse_expiry(v),
                Some((k, v)) if k == LABEL_JOB_TIMEOUT => {
                    job_timeout_minutes = v.trim().parse().ok()
                }
                _ => {}
            }
        }
        Self {
            managed,
            expires_at,
            job_timeout_minutes,
        }
    }

    /// Whether gc may delete the job at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.managed && self.expires_at.is_some_and(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::template::{check_well_formed, element_text};

    fn settings(mode: LaunchMode) -> JobSettings {
        JobSettings {
            job_prefix: "SD-".into(),
            node_label: "screwdriver".into(),
            launcher_image: "screwdrivercd/launcher:stable".into(),
            mount_point: "/opt/sd".into(),
            launch_mode: mode,
            docker_command: "docker".into(),
            docker_network: None,
            pull_policy: PullPolicy::Always,
            timeout: TimeoutPolicy::default(),
            job_timeout_margin_minutes: 5,
            expiry_grace_minutes: 30,
            ecosystem: Ecosystem::default(),
            resources: ResourceTable::default(),
            template: JobTemplate::builtin(),
        }
    }

    fn build() -> StartConfig {
        StartConfig::builder(42, "http://127.0.0.1:9/a?b=1&c=2", "node:22", "tok-SECRET")
            .job_id(7)
            .annotation("screwdriver.cd/timeout", 30)
            .annotation("screwdriver.cd/nodeLabel", "gpu&<big>")
            .build()
            .unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn renders_a_well_formed_job_without_the_token() {
        let j = settings(LaunchMode::Native)
            .render(&build(), now())
            .unwrap();
        assert_eq!(j.name, "SD-42");
        check_well_formed(&j.xml).unwrap();
        assert!(!j.xml.contains("tok-SECRET"));
        assert_eq!(
            element_text(&j.xml, "assignedNode").unwrap(),
            "screwdriver-gpu&<big>"
        );
        assert_eq!(element_text(&j.xml, "timeoutMinutes").unwrap(), "35");
        let d = DescribedJob::parse(&element_text(&j.xml, "description").unwrap());
        assert!(d.managed);
        assert_eq!(d.job_timeout_minutes, Some(35));
        assert_eq!(j.job_timeout_minutes, 35);
        let marker = timeout_marker(35);
        assert!(
            j.xml
                .contains(&format!("<description>{marker}</description>"))
        );
        assert!(
            !marker.contains(['\'', '{', '$']),
            "MessageFormat-safe: {marker}"
        );
        assert_eq!(d.expires_at, Some(now() + chrono::Duration::minutes(60)));
        let cmd = element_text(&j.xml, "command").unwrap();
        assert!(cmd.contains("'--build-timeout' '30'"), "{cmd}");
        assert!(cmd.contains("'--token-file' '/run/sd/token'"), "{cmd}");
        let Body::Form(f) = &j.form else {
            panic!("form")
        };
        let params: BTreeMap<String, String> =
            form_urlencoded::parse(f.as_bytes()).into_owned().collect();
        assert_eq!(params["SD_TOKEN"], "tok-SECRET");
        assert_eq!(params["SD_BUILD_TIMEOUT"], "30");
        assert_eq!(params["SD_API"], "http://127.0.0.1:9/a?b=1&c=2");
        assert_eq!(params.len(), 7);
    }

    #[test]
    fn screwdriver_mode_references_the_token_variable() {
        let j = settings(LaunchMode::Screwdriver)
            .render(&build(), now())
            .unwrap();
        assert!(!j.xml.contains("tok-SECRET"));
        let cmd = element_text(&j.xml, "command").unwrap();
        assert!(cmd.contains("'/opt/sd/launcher_entrypoint.sh'"), "{cmd}");
        assert!(cmd.contains("\"$SD_TOKEN\""), "{cmd}");
        assert!(cmd.contains("--env SD_TOKEN"), "{cmd}");
    }

    #[test]
    fn control_characters_in_the_node_label_are_refused() {
        let b = StartConfig::builder(1, "http://127.0.0.1:9", "node:22", "t")
            .annotation("screwdriver.cd/nodeLabel", "a\u{7}b")
            .build()
            .unwrap();
        let e = settings(LaunchMode::Native)
            .render(&b, now())
            .err()
            .unwrap();
        assert_eq!(
            e.field_errors()[0].field,
            "annotations[screwdriver.cd/nodeLabel]"
        );
    }

    #[test]
    fn descriptions_round_trip_and_expire() {
        let l = BuildLabels::new("SD-", BuildId::new(3).unwrap(), None, now());
        let d = DescribedJob::parse(&description(&l, 95));
        assert_eq!(d.job_timeout_minutes, Some(95));
        assert!(d.expired(now()));
        assert!(!d.expired(now() - chrono::Duration::seconds(1)));
        assert!(
            !DescribedJob::parse("screwdriver.cd/expires-at=1").expired(now()),
            "unmanaged"
        );
        assert!(
            !DescribedJob::parse("app.kubernetes.io/managed-by=sdx").expired(now()),
            "undated"
        );
    }
}
