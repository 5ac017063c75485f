//! [`PodExtras`]: what the pod takes from a build's annotations beyond CPU, RAM and
//! timeout (which `executor-base` parses): `terminationGracePeriodSeconds`, `disk` and
//! `diskSpeed`, checked at `start` before anything is created.

use executor_base::annotations::{BETA_PREFIX, PREFIX};
use executor_base::{Annotations, Error};
use serde_json::Value;

use crate::names;

/// The pod label carrying the disk tier.
pub(crate) const DISK_LABEL: &str = "screwdriver.cd/disk";
/// The disk tiers upstream knows (anything else is `LOW`).
const DISK_TIERS: &[&str] = &["TURBO", "HIGH", "LOW", "MICRO"];

/// Per-build pod settings from annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodExtras {
    /// `screwdriver.cd/terminationGracePeriodSeconds` when present and positive.
    pub(crate) grace_seconds: Option<i64>,
    /// `screwdriver.cd/disk` as a tier (`LOW` when absent or unknown).
    pub(crate) disk: &'static str,
    /// `screwdriver.cd/diskSpeed`, lower-cased, when non-empty.
    pub(crate) disk_speed: Option<String>,
}

impl Default for PodExtras {
    fn default() -> Self {
        Self {
            grace_seconds: None,
            disk: "LOW",
            disk_speed: None,
        }
    }
}

/// The annotation `screwdriver.cd/<name>` (either prefix) with the key it was given under.
fn lookup<'a>(a: &'a Annotations, name: &str) -> Option<(String, &'a Value)> {
    [PREFIX, BETA_PREFIX].iter().find_map(|p| {
        let key = format!("{p}{name}");
        let v = a.raw().get(&key)?;
        (!v.is_null()).then_some((key, v))
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

impl PodExtras {
    /// Reads the annotations. A non-integer or negative grace period, or a disk speed
    /// that cannot be a node label value, is an `Invalid` error naming
    /// `annotations[<key>]`.
    pub(crate) fn from_annotations(a: &Annotations) -> Result<Self, Error> {
        let mut out = Self::default();
        if let Some((key, v)) = lookup(a, "terminationGracePeriodSeconds") {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n >= 0 => out.grace_seconds = (n > 0).then_some(n),
                _ => {
                    return Err(Error::invalid_field(
                        format!("annotations[{key}]"),
                        format!("must be a whole number of seconds, not negative, got {v}"),
                    ));
                }
            }
        }
        if let Some((_, v)) = lookup(a, "disk") {
            let tier = text(v).to_ascii_uppercase();
            out.disk = DISK_TIERS
                .iter()
                .copied()
                .find(|t| *t == tier)
                .unwrap_or("LOW");
        }
        if let Some((key, v)) = lookup(a, "diskSpeed") {
            let speed = text(v).to_lowercase();
            if !speed.is_empty() {
                if !names::is_label_value(&speed) {
                    return Err(Error::invalid_field(
                        format!("annotations[{key}]"),
                        format!("{speed:?} cannot be a node label value"),
                    ));
                }
                out.disk_speed = Some(speed);
            }
        }
        Ok(out)
    }

    /// The pod's termination grace: the annotation's when it is larger than `configured`.
    pub(crate) fn grace(&self, configured: i64) -> i64 {
        self.grace_seconds.map_or(configured, |g| g.max(configured))
    }
}

#[cfg(test)]
mod tests {
    use executor_base::{AnnotationMode, ErrorKind};
    use serde_json::json;

    use super::*;

    fn extras(v: Value) -> Result<PodExtras, Error> {
        PodExtras::from_annotations(&Annotations::parse(&v, AnnotationMode::Strict).unwrap())
    }

    #[test]
    fn absent_annotations_give_upstream_defaults() {
        let e = extras(json!({})).unwrap();
        assert_eq!(e, PodExtras::default());
        assert_eq!(e.disk, "LOW");
        assert_eq!(e.grace(30), 30);
    }

    #[test]
    fn grace_is_the_larger_of_annotation_and_config() {
        let e = extras(json!({"screwdriver.cd/terminationGracePeriodSeconds": 120})).unwrap();
        assert_eq!(e.grace(30), 120);
        assert_eq!(e.grace(300), 300);
        let s = extras(json!({"beta.screwdriver.cd/terminationGracePeriodSeconds": " 45 "}));
        assert_eq!(s.unwrap().grace(30), 45);
        let zero = extras(json!({"screwdriver.cd/terminationGracePeriodSeconds": 0})).unwrap();
        assert_eq!(zero.grace(30), 30);
    }

    #[test]
    fn bad_grace_is_an_invalid_field() {
        for bad in [json!(-5), json!("soon"), json!(1.5), json!(true)] {
            let e =
                extras(json!({"screwdriver.cd/terminationGracePeriodSeconds": bad})).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid);
            assert_eq!(
                e.field_errors()[0].field,
                "annotations[screwdriver.cd/terminationGracePeriodSeconds]",
                "{e}"
            );
        }
    }

    #[test]
    fn disk_tiers_and_speed() {
        let e = extras(json!({"screwdriver.cd/disk": "high", "screwdriver.cd/diskSpeed": "FAST"}))
            .unwrap();
        assert_eq!(e.disk, "HIGH");
        assert_eq!(e.disk_speed.as_deref(), Some("fast"));
        for unknown in [json!("MAX"), json!("huge"), json!(3)] {
            assert_eq!(
                extras(json!({"screwdriver.cd/disk": unknown}))
                    .unwrap()
                    .disk,
                "LOW"
            );
        }
        assert_eq!(
            extras(json!({"screwdriver.cd/diskSpeed": ""}))
                .unwrap()
                .disk_speed,
            None
        );
        let e = extras(json!({"screwdriver.cd/diskSpeed": "very fast"})).unwrap_err();
        assert_eq!(
            e.field_errors()[0].field,
            "annotations[screwdriver.cd/diskSpeed]"
        );
    }
}
