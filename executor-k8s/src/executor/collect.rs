//! Garbage collection: what `gc` and `cleanup` delete (expired objects, and the halves of
//! a start that never finished).

use std::collections::HashSet;

use chrono::Utc;
use executor_base::labels::{
    BuildLabels, LABEL_EXPIRES, LABEL_MANAGED_BY, LABEL_SDBUILD, MANAGED_BY,
};
use executor_base::owner::{LABEL_OWNER, Liveness, Owner};
use executor_base::{Error, GcReport};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::manifest;

use super::K8sExecutor;

impl K8sExecutor {
    /// Deletes the objects among `items` (of `kind` `pod` or `secret`) that are expired,
    /// or in `orphans`, and whose `sdbuild` label is in `only` when given.
    pub(super) async fn delete_collectable(
        &self,
        kind: &str,
        items: Vec<ObjectMeta>,
        orphans: &HashSet<String>,
        only: Option<&HashSet<String>>,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), Error> {
        let now = Utc::now();
        for m in items {
            let labels = m.labels.as_ref();
            let expiry = labels
                .and_then(|l| l.get(LABEL_EXPIRES))
                .map(String::as_str);
            let Some(name) = m.name.as_deref() else {
                continue;
            };
            let build = labels.and_then(|l| l.get(LABEL_SDBUILD));
            if !BuildLabels::is_expired(expiry, now) && !build.is_some_and(|b| orphans.contains(b))
            {
                continue;
            }
            if let Some(only) = only
                && !build.is_some_and(|b| only.contains(b))
            {
                continue;
            }
            if !dry_run {
                match kind {
                    "pod" => self.inner.client.delete_pod(name, Some(0)).await?,
                    _ => self.inner.client.delete_secret(name).await?,
                }
            }
            report.expired.push(format!("{kind}/{name}"));
        }
        Ok(())
    }

    /// The builds (`sdbuild` values) among `pods` whose start was killed half-way: the
    /// owner ([`LABEL_OWNER`]) is certainly gone and the pod's token Secret, which it
    /// reads through `secretKeyRef`, was never made. Such a pod can never run its build
    /// (the kubelet refuses it with `CreateContainerConfigError`), and nobody will make
    /// the Secret or stop it, so it is collected at once rather than at its expiry. A
    /// complete build of a gone owner runs on and is left to its expiry (a restarted
    /// server adopts it).
    pub(super) async fn half_made(
        &self,
        pods: &[ObjectMeta],
        secrets: &[ObjectMeta],
    ) -> Result<HashSet<String>, Error> {
        let have: HashSet<&str> = secrets.iter().filter_map(|m| m.name.as_deref()).collect();
        let mut out = HashSet::new();
        for m in pods {
            let (Some(name), Some(labels)) = (m.name.as_deref(), m.labels.as_ref()) else {
                continue;
            };
            let token = manifest::secret_name(name);
            if have.contains(token.as_str())
                || Owner::liveness_of_label(labels.get(LABEL_OWNER).map(String::as_str))
                    != Liveness::Gone
            {
                continue;
            }
            // Only a native-mode pod reads a Secret (Screwdriver mode has none).
            let Some(pod) = self.inner.client.get_pod(name).await? else {
                continue;
            };
            let reads_token = pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
                c.env.iter().flatten().any(|e| {
                    e.value_from
                        .as_ref()
                        .and_then(|v| v.secret_key_ref.as_ref())
                        .is_some_and(|r| r.name == token)
                })
            });
            if reads_token && let Some(b) = labels.get(LABEL_SDBUILD) {
                out.insert(b.clone());
            }
        }
        Ok(out)
    }

    /// Garbage collection of the namespace, or (`only`) of these builds' objects.
    pub(super) async fn collect(
        &self,
        dry_run: bool,
        only: Option<&HashSet<String>>,
    ) -> Result<GcReport, Error> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_EXPIRES}");
        let c = &self.inner.client;
        let mut report = GcReport {
            dry_run,
            expired: Vec::new(),
        };
        let pods = c.list_pod_metadata(&selector).await?;
        let secrets = c.list_secret_metadata(&selector).await?;
        let orphans = self.half_made(&pods, &secrets).await?;
        self.delete_collectable("pod", pods, &orphans, only, dry_run, &mut report)
            .await?;
        self.delete_collectable("secret", secrets, &orphans, only, dry_run, &mut report)
            .await?;
        Ok(report)
    }
}
