//! The parts of Jenkins' JSON API the executor reads, and the `tree=` filters that ask
//! Jenkins for exactly those fields (one small answer per call).

use serde::Deserialize;

/// `tree` of `GET /job/<name>/api/json`.
pub(crate) const JOB_TREE: &str = "name,description,inQueue,nextBuildNumber,queueItem[id,why,cancelled,inQueueSince],lastBuild[number,building,result,description,timestamp,duration,queueId]";
/// `tree` of `GET /job/<name>/<n>/api/json`.
pub(crate) const BUILD_TREE: &str = "number,building,result,description,timestamp,duration,queueId";
/// `tree` of `GET /queue/item/<id>/api/json`.
pub(crate) const QUEUE_TREE: &str =
    "id,why,cancelled,blocked,stuck,inQueueSince,executable[number]";
/// `tree` of `GET <folder>/api/json` (the job list gc reads; `/api/json` at the root).
pub(crate) const JOBS_TREE: &str =
    "jobs[name,description,inQueue,lastBuild[number,building,result,description,timestamp]]";
/// `tree` of `GET /pluginManager/api/json`.
pub(crate) const PLUGINS_TREE: &str = "plugins[shortName,active,enabled,version]";

/// `GET /crumbIssuer/api/json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CrumbAnswer {
    pub crumb: String,
    pub crumb_request_field: String,
}

/// A job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct JobInfo {
    pub name: Option<String>,
    pub description: Option<String>,
    pub in_queue: bool,
    pub next_build_number: Option<u64>,
    pub queue_item: Option<QueueItem>,
    pub last_build: Option<BuildInfo>,
}

impl JobInfo {
    /// Whether the job has a queued item or a running build.
    pub fn is_live(&self) -> bool {
        self.in_queue || self.last_build.as_ref().is_some_and(|b| b.building)
    }

    /// The number of the last build, 0 when there is none.
    pub fn last_number(&self) -> u64 {
        self.last_build.as_ref().map_or(0, |b| b.number)
    }
}

/// A queue item (also the `queueItem` of a job). Items still in the queue (waiting,
/// blocked, buildable) export neither `cancelled` nor `executable`; a `LeftItem` exports
/// both, `executable` being null until the build exists (core `hudson/model/Queue.java`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct QueueItem {
    /// `hudson.model.Queue$LeftItem`, `…$WaitingItem`, `…$BuildableItem`, ….
    #[serde(rename = "_class")]
    pub class: Option<String>,
    pub id: u64,
    pub why: Option<String>,
    pub cancelled: Option<bool>,
    pub blocked: Option<bool>,
    pub stuck: Option<bool>,
    /// When it entered the queue, milliseconds since the epoch (`Item.getInQueueSince`;
    /// left items keep it).
    pub in_queue_since: Option<i64>,
    pub executable: Option<Executable>,
}

impl QueueItem {
    /// Whether the item left the queue (cancelled, or handed to an executor).
    pub fn has_left(&self) -> bool {
        self.cancelled.is_some()
            || self.executable.is_some()
            || self
                .class
                .as_deref()
                .is_some_and(|c| c.ends_with("$LeftItem"))
    }
}

/// The build a queue item became.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Executable {
    pub number: u64,
}

/// A build.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct BuildInfo {
    pub number: u64,
    pub building: bool,
    pub result: Option<String>,
    pub description: Option<String>,
    /// When it started, milliseconds since the epoch (`Run.getTimestamp`).
    pub timestamp: Option<i64>,
    /// How long it ran, in milliseconds (`Run.getDuration`: 0 while it is building).
    pub duration: Option<i64>,
    /// The queue item it came from (`Run.getQueueId`).
    pub queue_id: Option<u64>,
}

/// `GET /api/json?tree=jobs[...]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JobList {
    pub jobs: Vec<JobInfo>,
}

/// One installed plugin (`PluginWrapper`'s exported fields).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PluginInfo {
    pub short_name: String,
    pub active: bool,
    pub enabled: bool,
    pub version: Option<String>,
}

/// `GET /pluginManager/api/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PluginList {
    pub plugins: Vec<PluginInfo>,
}

/// The `tree` of a label's `GET /label/<label>/api/json`.
pub(crate) const LABEL_TREE: &str =
    "name,offline,totalExecutors,busyExecutors,idleExecutors,nodes[nodeName]";

/// A label (core `hudson.model.Label`'s exported fields): `totalExecutors` counts the
/// executors of its *online* nodes only; `offline` is true when no node of the label is
/// online (also when it has no node at all: Jenkins answers 200 for any label).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct LabelInfo {
    pub name: String,
    pub offline: bool,
    pub total_executors: u32,
    pub busy_executors: u32,
    pub idle_executors: u32,
    pub nodes: Vec<LabelNode>,
}

/// A node of a label.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct LabelNode {
    pub node_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jenkins_answers() {
        let j: JobInfo = serde_json::from_str(
            r#"{"_class":"hudson.model.FreeStyleProject","name":"SD-1","description":null,
                "inQueue":true,"nextBuildNumber":1,"queueItem":{"_class":"hudson.model.Queue$WaitingItem","id":7,"why":"In the quiet period"},
                "lastBuild":null}"#,
        )
        .unwrap();
        assert!(j.is_live());
        assert_eq!(j.queue_item.as_ref().unwrap().id, 7);
        assert_eq!(j.last_number(), 0);
        let q: QueueItem = serde_json::from_str(
            r#"{"_class":"hudson.model.Queue$LeftItem","id":7,"why":null,"cancelled":false,
                "executable":{"_class":"hudson.model.FreeStyleBuild","number":3,"url":"http://x/job/SD-1/3/"}}"#,
        )
        .unwrap();
        assert!(q.has_left());
        assert_eq!(q.executable.unwrap().number, 3);
        let starting: QueueItem = serde_json::from_str(
            r#"{"_class":"hudson.model.Queue$LeftItem","id":7,"cancelled":false,"executable":null}"#,
        )
        .unwrap();
        assert!(starting.has_left() && starting.executable.is_none());
        let waiting: QueueItem = serde_json::from_str(
            r#"{"_class":"hudson.model.Queue$BuildableItem","id":8,"why":"w","inQueueSince":1700000000000}"#,
        )
        .unwrap();
        assert!(!waiting.has_left());
        assert_eq!(waiting.in_queue_since, Some(1_700_000_000_000));
        let b: BuildInfo = serde_json::from_str(
            r#"{"number":3,"building":false,"result":"UNSTABLE","description":null,"timestamp":1700000000000,"duration":61500,"queueId":7}"#,
        )
        .unwrap();
        assert_eq!(b.result.as_deref(), Some("UNSTABLE"));
        assert_eq!(
            (b.timestamp, b.duration, b.queue_id),
            (Some(1_700_000_000_000), Some(61_500), Some(7))
        );
        let p: PluginList = serde_json::from_str(
            r#"{"_class":"hudson.LocalPluginManager","plugins":[{"active":true,"enabled":true,"shortName":"build-timeout","version":"1.33"}]}"#,
        )
        .unwrap();
        assert_eq!(p.plugins[0].short_name, "build-timeout");
    }
}
