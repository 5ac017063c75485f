//! Names and labels every backend puts on what it creates, so `stop` finds a build's
//! resources and `gc` finds orphans after a crash.

use chrono::{DateTime, TimeZone, Utc};

use crate::ids::{BuildId, JobId};
use crate::owner::{LABEL_OWNER, Owner};

/// `sdbuild=<prefix><buildId>`: upstream's selector label on everything.
pub const LABEL_SDBUILD: &str = "sdbuild";
/// `app=screwdriver` on pods and containers.
pub const LABEL_APP: &str = "app";
/// `tier=builds` on pods and containers.
pub const LABEL_TIER: &str = "tier";
/// The build id, unprefixed.
pub const LABEL_BUILD_ID: &str = "screwdriver.cd/build-id";
/// The job id, when known.
pub const LABEL_JOB_ID: &str = "screwdriver.cd/job-id";
/// When the resource may be garbage-collected: Unix seconds (a valid k8s label value).
pub const LABEL_EXPIRES: &str = "screwdriver.cd/expires-at";
/// Marks resources created by this library.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "sdx";

/// `<prefix><buildId>`, the base of every resource name.
pub fn build_name(prefix: &str, build_id: BuildId) -> String {
    format!("{prefix}{build_id}")
}

/// The label set of one build.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use executor_base::{BuildId, BuildLabels};
/// let l = BuildLabels::new("sd-", BuildId::new(42).unwrap(), None, Utc.timestamp_opt(1_800_000_000, 0).unwrap());
/// let pairs = l.to_pairs();
/// assert!(pairs.contains(&("sdbuild", "sd-42".to_string())));
/// assert!(pairs.contains(&("screwdriver.cd/expires-at", "1800000000".to_string())));
/// assert_eq!(BuildLabels::parse_expiry("1800000000"), Some(Utc.timestamp_opt(1_800_000_000, 0).unwrap()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLabels {
    /// The configured prefix.
    pub prefix: String,
    /// The build.
    pub build_id: BuildId,
    /// The job, when known.
    pub job_id: Option<JobId>,
    /// When an orphan may be removed.
    pub expires_at: DateTime<Utc>,
    /// Who is responsible for the resources ([`LABEL_OWNER`]); the garbage collector
    /// removes them as soon as it is gone, without waiting for the expiry.
    pub owner: Option<Owner>,
}

impl BuildLabels {
    /// Labels for a build.
    pub fn new(
        prefix: &str,
        build_id: BuildId,
        job_id: Option<JobId>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            prefix: prefix.to_string(),
            build_id,
            job_id,
            expires_at,
            owner: None,
        }
    }

    /// The same labels with an owner ([`crate::owner`]).
    ///
    /// ```
    /// use chrono::Utc;
    /// use executor_base::{BuildId, BuildLabels};
    /// use executor_base::owner::{LABEL_OWNER, Owner};
    /// let me = Owner::current();
    /// let l = BuildLabels::new("", BuildId::new(1).unwrap(), None, Utc::now()).with_owner(me.clone());
    /// let owner = l.to_pairs().into_iter().find(|(k, _)| *k == LABEL_OWNER).map(|(_, v)| v);
    /// assert_eq!(owner, me.map(|o| o.to_label()));
    /// ```
    pub fn with_owner(mut self, owner: Option<Owner>) -> Self {
        self.owner = owner;
        self
    }

    /// `<prefix><buildId>`.
    pub fn name(&self) -> String {
        build_name(&self.prefix, self.build_id)
    }

    /// `sdbuild=<prefix><buildId>`, the selector for everything of this build.
    pub fn selector(&self) -> String {
        format!("{LABEL_SDBUILD}={}", self.name())
    }

    /// All labels as key/value pairs.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            (LABEL_SDBUILD, self.name()),
            (LABEL_APP, "screwdriver".to_string()),
            (LABEL_TIER, "builds".to_string()),
            (LABEL_BUILD_ID, self.build_id.to_string()),
            (LABEL_EXPIRES, self.expires_at.timestamp().to_string()),
            (LABEL_MANAGED_BY, MANAGED_BY.to_string()),
        ];
        if let Some(j) = self.job_id {
            v.push((LABEL_JOB_ID, j.to_string()));
        }
        if let Some(o) = &self.owner {
            v.push((LABEL_OWNER, o.to_label()));
        }
        v
    }

    /// Parses an expiry label value (Unix seconds).
    pub fn parse_expiry(value: &str) -> Option<DateTime<Utc>> {
        let secs: i64 = value.trim().parse().ok()?;
        Utc.timestamp_opt(secs, 0).single()
    }

    /// Whether a resource with this expiry label value may be collected at `now`.
    /// A missing or unreadable label is never expired (we do not delete what we cannot date).
    pub fn is_expired(value: Option<&str>, now: DateTime<Utc>) -> bool {
        value.and_then(Self::parse_expiry).is_some_and(|t| t <= now)
    }
}
