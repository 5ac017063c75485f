//! A `build:` job on the launcher, from its arguments to its report.
//!
//! 1. Refuse what cannot run: an unreadable job (over `maxPacketSize`: its body was
//!    dropped unread) or bad arguments ([`ZuulParams`], the environment parameters, the
//!    Screwdriver start fields). A refusal is a last `WORK_DATA`
//!    [`BuildReport::refusal`] (`result` `ERROR`, why, every bad parameter by name) and
//!    then `WORK_EXCEPTION`, which gearmand turns into `WORK_FAIL` for clients that did
//!    not ask for exceptions: every client sees why.
//! 2. Claim the job's `ZUUL_UUID` ([`Registry::claim`](super::registry::Registry)): a
//!    build with that uuid that runs already gets the job attached (a re-queued job
//!    after a dropped connection, a second submission); one that finished within
//!    `retainFinishedSecs` gets its outcome reported at once. Nothing runs twice.
//! 3. A new build: if every submitter is gone already (a withdrawn job taken in the same
//!    instant), `WORK_FAIL` and nothing starts. Otherwise the build's driver task starts
//!    it ([`super::driver`]) holding the job's slot, and the job is attached to it.
//! 4. An attached job: announce at once (`WORK_DATA` {name, number, manager, url,
//!    worker_*}, `worker_extra.starting` while the executor starts it), `WORK_STATUS`
//!    0/timeout once it runs and elapsed/timeout every `pollIntervalMs`, and at the end
//!    the report: `WORK_DATA` {result, ...} then `WORK_COMPLETE` for `SUCCESS`,
//!    `WORK_FAIL` otherwise (`WORK_EXCEPTION` after a refused start).
//!
//! If the connection that grabbed the job breaks, the job's handler leaves, but the
//! build goes on: gearmand re-queues the job, and whichever job of that uuid comes next
//! (on this launcher, after its reconnect or restart) is attached to it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use executor_base::{Error, FieldError, StartConfig, TimeoutPolicy};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::Launcher;
use super::registry::{BuildEntry, Claim, Finished, NewBuild};
use crate::gearman_worker::{Job, JobSink};
use crate::zuul::{
    BuildReport, LauncherException, RESULT_SUCCESS, StartAnnouncement, ZuulParams,
    build_environment,
};

/// The worker program's name in the start announcement.
const PROGRAM: &str = "sdx-gearman-worker";

/// A validated `build:` job.
pub(super) struct Prepared {
    pub name: String,
    pub node: Option<String>,
    pub number: u64,
    pub start: StartConfig,
    pub params: ZuulParams,
    pub timeout_secs: u64,
}

/// Ends a job with its report: `WORK_DATA`, then `WORK_COMPLETE` (`SUCCESS`),
/// `WORK_EXCEPTION` (a refusal) or `WORK_FAIL`.
pub(super) fn send_report(sink: &JobSink, report: &BuildReport) {
    let data = Bytes::from(serde_json::to_vec(report).unwrap_or_default());
    let sent = sink.data(data.clone()).and_then(|()| {
        if report.result == RESULT_SUCCESS {
            sink.complete(data)
        } else if let Some(e) = &report.error {
            sink.exception(serde_json::to_vec(e).unwrap_or_default())
        } else {
            sink.fail()
        }
    });
    if let Err(e) = sent {
        tracing::warn!(handle = %sink.handle(), error = %e, "could not report the job's end; gearmand re-queues it");
    }
}

/// Refuses a job: see step 1 of the module docs.
pub(super) fn refuse(sink: &JobSink, e: &Error, name: Option<&str>, number: Option<u64>) {
    let mut report = BuildReport::refusal(e);
    report.name = name.map(str::to_string);
    report.number = number;
    send_report(sink, &report);
}

/// `WORK_EXCEPTION` alone, for control jobs (`stop:`, `set_description:`).
pub(super) fn send_exception(sink: &JobSink, e: &Error) {
    let data = serde_json::to_vec(&LauncherException::from(e)).unwrap_or_default();
    if let Err(err) = sink.exception(data) {
        tracing::warn!(error = %err, "could not report a launcher error to gearmand");
    }
}

impl Launcher {
    pub(super) async fn run_build(self: Arc<Self>, job: Job) {
        let _in_flight = crate::in_flight::InFlight::enter("worker");
        // The slot goes with the build (which may outlive this job), not the job.
        let slot = job.take_slot();
        let Job {
            handle,
            function,
            unique,
            data,
            unreadable,
            local_addr,
            sink,
            ..
        } = job;
        if let Some(reason) = unreadable {
            let e = Error::invalid_field(
                "(arguments)",
                format!(
                    "could not be read: {reason} (the launcher's maxPacketSize); they were dropped unread"
                ),
            );
            tracing::warn!(%handle, %function, error = %e, "refused an unreadable build job");
            return refuse(&sink, &e, None, None);
        }
        let p = match self.prepare(&function, &unique, &data) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%handle, %function, error = %e, "refused build job");
                return refuse(&sink, &e, None, None);
            }
        };
        let url = self.build_url(&p);
        // Outcomes past the retention window are forgotten, their records removed.
        let (expired, claim) = {
            let mut registry = self.registry.lock();
            let expired = registry.expire(self.cfg.retain_finished);
            let claim = registry.claim(&p.params.uuid, || {
                BuildEntry::new(
                    NewBuild {
                        name: p.name.clone(),
                        number: p.number,
                        uuid: p.params.uuid.clone(),
                        function: function.clone(),
                        node: p.node.clone(),
                        stop: p.start.to_stop(),
                        url,
                        timeout_secs: p.timeout_secs,
                        handle: handle.clone(),
                    },
                    None,
                )
            });
            (expired, claim)
        };
        for number in expired {
            self.forget_number(number);
        }
        let entry = match claim {
            Claim::Running(entry) => {
                tracing::info!(%handle, uuid = %entry.uuid, number = entry.number, "job of a running build: attached to it");
                drop(slot); // the build holds its own
                return self.attach(&sink, local_addr, &entry).await;
            }
            Claim::Finished(f) => {
                tracing::info!(%handle, uuid = %p.params.uuid, number = f.number, result = %f.report.result, "job of a finished build: reporting its outcome");
                return self.replay(&sink, local_addr, &p, &f);
            }
            Claim::New(entry) => entry,
        };
        if self.nobody_waits(&handle, &entry.uuid, true).await {
            // The submitter withdrew the job as we took it: nobody would see the build.
            tracing::info!(%handle, "the job's submitter is gone: not starting the build");
            self.registry.lock().retire(&entry, None);
            let _ = sink.fail();
            return;
        }
        if p.params.offline_node_when_complete {
            // No further builds on this node; it goes offline once the running ones end.
            self.offline.cancel();
        }
        self.record(&entry, crate::launcher::state::Stage::Starting, None)
            .await;
        tokio::spawn(self.clone().drive(entry.clone(), Some(p.start), slot));
        self.attach(&sink, local_addr, &entry).await;
    }

    /// Reports the build to one job until it ends or the job's connection breaks.
    pub(super) async fn attach(
        &self,
        sink: &JobSink,
        local_addr: Option<SocketAddr>,
        entry: &Arc<BuildEntry>,
    ) {
        let _attached = entry.attach(&sink.handle());
        let mut started = entry.watch_started();
        let mut outcome = entry.watch_outcome();
        let starting = started.borrow_and_update().is_none();
        let announced = serde_json::to_vec(&self.announcement(entry, local_addr, starting))
            .map_err(|e| e.to_string())
            .and_then(|d| sink.data(d).map_err(|e| e.to_string()));
        if announced.is_err() {
            return; // the connection is gone already
        }
        let mut progress = tokio::time::interval(self.cfg.progress_interval);
        let mut last_sent = None;
        loop {
            if let Some(report) = outcome.borrow_and_update().clone() {
                return send_report(sink, &report);
            }
            let running = *started.borrow_and_update() == Some(true);
            if running {
                let elapsed = entry.began.elapsed().as_secs().min(entry.timeout_secs);
                if last_sent != Some(elapsed) {
                    last_sent = Some(elapsed);
                    let _ = sink.status(elapsed, entry.timeout_secs);
                }
            }
            tokio::select! {
                _ = outcome.changed() => {}
                _ = started.changed(), if !running => {}
                _ = progress.tick() => {}
                _ = sink.connection_lost() => {
                    tracing::warn!(handle = %sink.handle(), number = entry.number, "gearman connection lost mid-build; the build goes on for the re-queued job");
                    return;
                }
            }
        }
    }

    /// Reports a finished build's outcome to a job of the same uuid.
    fn replay(&self, sink: &JobSink, local_addr: Option<SocketAddr>, p: &Prepared, f: &Finished) {
        let entry = Arc::new(BuildEntry::new(
            NewBuild {
                name: f.name.clone(),
                number: f.number,
                uuid: p.params.uuid.clone(),
                function: String::new(),
                node: p.node.clone(),
                stop: executor_base::StopConfig::new(f.build_id),
                url: self.build_url(p),
                timeout_secs: p.timeout_secs,
                handle: sink.handle(),
            },
            Some(true),
        ));
        let announced = serde_json::to_vec(&self.announcement(&entry, local_addr, false))
            .map_err(|e| e.to_string())
            .and_then(|d| sink.data(d).map_err(|e| e.to_string()));
        if announced.is_ok() {
            send_report(sink, &f.report);
        }
    }

    /// Validates the job and builds the start config.
    fn prepare(&self, function: &str, unique: &str, data: &[u8]) -> Result<Prepared, Error> {
        let rest = function.strip_prefix("build:").ok_or_else(|| {
            Error::invalid_field(
                "(function)",
                format!("{function:?} is not a build: function"),
            )
        })?;
        let (name, node) = match rest.split_once(':') {
            Some((n, node)) => (n.to_string(), Some(node.to_string())),
            None => (rest.to_string(), None),
        };
        let args: Value = serde_json::from_slice(data).map_err(|e| {
            Error::invalid_field("(arguments)", format!("must be a JSON object ({e})"))
        })?;
        let Value::Object(mut map) = args else {
            return Err(Error::invalid_field("(arguments)", "must be a JSON object"));
        };
        let zuul = ZuulParams::parse(&map, unique);
        let number = self.next_number();
        let mut fields: Vec<FieldError> = Vec::new();
        if let Err(e) = &zuul {
            fields.extend(e.field_errors().iter().cloned());
        }
        // Zuul's parameters become the build's environment (beside any `env` given).
        match build_environment(&map) {
            Ok(params) if !params.is_empty() => {
                let mut env = match map.remove("env") {
                    Some(Value::Object(e)) => e,
                    Some(other) => {
                        map.insert("env".into(), other);
                        Map::new()
                    }
                    None => Map::new(),
                };
                for (k, v) in params.iter() {
                    env.insert(k.to_string(), Value::String(v.to_string()));
                }
                map.entry("env").or_insert(Value::Object(env));
            }
            Ok(_) => {}
            Err(errors) => {
                for f in errors {
                    if !fields.iter().any(|g| g.field == f.field) {
                        fields.push(f);
                    }
                }
            }
        }
        self.fill_defaults(&mut map, number, node.as_deref(), &mut fields);
        let start = StartConfig::from_json(&Value::Object(map));
        // Report every bad parameter at once: Zuul's, the defaults we lacked, Screwdriver's.
        if let Err(e) = &start {
            let extra: Vec<FieldError> = e
                .field_errors()
                .iter()
                .filter(|f| !fields.iter().any(|g| g.field == f.field))
                .cloned()
                .collect();
            fields.extend(extra);
            if e.field_errors().is_empty() {
                fields.push(FieldError::new("(arguments)", e.message()));
            }
        }
        if !fields.is_empty() {
            return Err(Error::invalid(fields));
        }
        let (params, start) = (zuul.expect("checked"), start.expect("checked"));
        let timeout_secs = u64::from(TimeoutPolicy::default().minutes(&start.annotations)) * 60;
        Ok(Prepared {
            name,
            node,
            number,
            start,
            params,
            timeout_secs,
        })
    }

    /// Fills `buildId`, `apiUri`, `container`, `token` and `storeUri` from the worker's
    /// defaults when the arguments lack them; records what neither provides.
    fn fill_defaults(
        &self,
        map: &mut Map<String, Value>,
        number: u64,
        node: Option<&str>,
        missing: &mut Vec<FieldError>,
    ) {
        let raw = &self.cfg.raw;
        let absent = |map: &Map<String, Value>, k: &str| map.get(k).is_none_or(Value::is_null);
        if absent(map, "buildId") {
            map.insert("buildId".into(), number.into());
        }
        let defaults: [(&str, Option<String>, &str); 3] = [
            (
                "apiUri",
                self.cfg.default_api_uri.as_ref().map(|u| u.to_string()),
                "defaultApiUri",
            ),
            (
                "container",
                raw.default_container.clone(),
                "defaultContainer",
            ),
            (
                "token",
                raw.default_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                "defaultToken",
            ),
        ];
        for (key, value, setting) in defaults {
            if absent(map, key) {
                match value {
                    Some(v) => {
                        map.insert(key.into(), Value::String(v));
                    }
                    None => missing.push(FieldError::new(
                        key,
                        format!(
                            "is required (not in the job arguments and the worker has no {setting})"
                        ),
                    )),
                }
            }
        }
        if absent(map, "storeUri")
            && let Some(u) = &self.cfg.default_store_uri
        {
            map.insert("storeUri".into(), Value::String(u.to_string()));
        }
        if let Some(node) = node {
            map.entry("gearmanNode")
                .or_insert_with(|| Value::String(node.to_string()));
        }
    }

    fn announcement(
        &self,
        entry: &BuildEntry,
        local_addr: Option<SocketAddr>,
        starting: bool,
    ) -> StartAnnouncement {
        let mut extra = Map::new();
        extra.insert(
            "executor".into(),
            Value::String(self.executor.name().to_string()),
        );
        extra.insert("buildId".into(), entry.stop.build_id.get().into());
        if starting {
            // Announced before the executor's start returned: not running yet.
            extra.insert("starting".into(), Value::Bool(true));
        }
        if let Some(node) = &entry.node {
            extra.insert("node".into(), Value::String(node.clone()));
        }
        StartAnnouncement {
            name: entry.name.clone(),
            number: entry.number,
            manager: self.manager.clone(),
            url: entry.url.clone(),
            worker_name: Some(self.cfg.worker_name.clone()),
            worker_hostname: Some(self.cfg.hostname.clone()),
            worker_ips: local_addr.map(|a| a.ip().to_string()).into_iter().collect(),
            worker_fqdn: Some(self.cfg.hostname.clone()),
            worker_program: Some(PROGRAM.to_string()),
            worker_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            worker_extra: extra,
        }
    }

    fn build_url(&self, p: &Prepared) -> Option<String> {
        let b = &p.start;
        match &self.cfg.raw.build_url {
            Some(t) => Some(
                t.replace("{buildId}", &b.build_id.to_string())
                    .replace("{number}", &p.number.to_string())
                    .replace("{name}", &p.name)
                    .replace("{uuid}", &p.params.uuid)
                    .replace("{manager}", &self.manager),
            ),
            None => match (&b.ui_uri, b.pipeline_id) {
                (Some(ui), Some(pid)) => Some(format!(
                    "{}/pipelines/{pid}/builds/{}",
                    ui.as_str().trim_end_matches('/'),
                    b.build_id
                )),
                _ => None,
            },
        }
    }
}
