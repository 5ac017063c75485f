//! The parts of Jenkins' JSON API the executor reads, and the `tree=` filters that ask
//! Jenkins for exactly those fields (one small answer per call).

use serde::Deserialize;

/// `tree` of `GET /job/<name>/api/json`.
pub(crate) const JOB_TREE: &str = "name,description,inQueue,nextBuildNumber,queueItem[id,why,cancelled],lastBuild[number,building,result,description]";
/// `tree` of `GET /job/<name>/<n>/api/json`.
pub(crate) const BUILD_TREE: &str = "number,building,result,description";
/// `tree` of `GET /queue/item/<id>/api/json`.
pub(crate) const QUEUE_TREE: &str = "id,why,cancelled,blocked,stuck,executable[number]";
/// `tree` of `GET <folder>/api/json` (the job list gc reads; `/api/json` at the root).
pub(crate) const JOBS_TREE: &str =
    "jobs[name,description,inQueue,lastBuild[number,building,result,description]]";

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

/// A queue item (also the `queueItem` of a job).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct QueueItem {
    pub id: u64,
    pub why: Option<String>,
    pub cancelled: Option<bool>,
    pub blocked: Option<bool>,
    pub stuck: Option<bool>,
    pub executable: Option<Executable>,
}

/// The build a queue item became.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Executable {
    pub number: u64,
}

/// A build.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BuildInfo {
    pub number: u64,
    pub building: bool,
    pub result: Option<String>,
    pub description: Option<String>,
}

/// `GET /api/json?tree=jobs[...]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JobList {
    pub jobs: Vec<JobInfo>,
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
        assert_eq!(q.executable.unwrap().number, 3);
        let b: BuildInfo = serde_json::from_str(
            r#"{"number":3,"building":false,"result":"UNSTABLE","description":null}"#,
        )
        .unwrap();
        assert_eq!(b.result.as_deref(), Some("UNSTABLE"));
    }
}
