//! `screwdriver.cd/*` annotations: both spellings (`screwdriver.cd/x` and
//! `beta.screwdriver.cd/x`), string/integer/boolean values, typed values for the keys the
//! executors use, every other key kept as given.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FieldError;

/// The annotation prefix (`screwdriver.cd/`).
pub const PREFIX: &str = "screwdriver.cd/";
/// The older spelling of the prefix (`beta.screwdriver.cd/`), treated the same.
pub const BETA_PREFIX: &str = "beta.screwdriver.cd/";

/// How unknown tier values are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationMode {
    /// Unknown values are a validation error naming the annotation (our default).
    #[default]
    Strict,
    /// Unknown values fall back to `LOW`, as upstream executor-k8s does.
    Compatible,
}

/// A named resource tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Tier {
    /// `MICRO`
    Micro,
    /// `LOW` (the default)
    Low,
    /// `HIGH`
    High,
    /// `TURBO`
    Turbo,
    /// `MAX`
    Max,
}

impl Tier {
    /// The upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Micro => "MICRO",
            Tier::Low => "LOW",
            Tier::High => "HIGH",
            Tier::Turbo => "TURBO",
            Tier::Max => "MAX",
        }
    }
}

impl FromStr for Tier {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_uppercase().as_str() {
            "MICRO" => Ok(Tier::Micro),
            "LOW" => Ok(Tier::Low),
            "HIGH" => Ok(Tier::High),
            "TURBO" => Ok(Tier::Turbo),
            "MAX" => Ok(Tier::Max),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CPU or RAM request from an annotation: a tier or a plain number
/// (cores for CPU, GiB for RAM), resolved against a [`crate::ResourceTable`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResourceRequest {
    /// A named tier.
    Tier(Tier),
    /// An explicit amount (capped at the table's maximum when resolved).
    Amount(u32),
}

/// Parsed annotations of a build.
///
/// ```
/// use executor_base::{Annotations, AnnotationMode, ResourceRequest, Tier};
/// let a = Annotations::parse(
///     &serde_json::json!({"beta.screwdriver.cd/cpu": "high", "screwdriver.cd/timeout": "45",
///                          "screwdriver.cd/executor": "docker", "team.example/owner": "ci"}),
///     AnnotationMode::Strict,
/// ).unwrap();
/// assert_eq!(a.cpu(), Some(ResourceRequest::Tier(Tier::High)));
/// assert_eq!(a.timeout_minutes(), Some(45));
/// assert_eq!(a.executor(), Some("docker"));
/// assert_eq!(a.raw().len(), 4);
///
/// let err = Annotations::parse(&serde_json::json!({"screwdriver.cd/cpu": "HUGE"}), AnnotationMode::Strict).unwrap_err();
/// assert_eq!(err[0].to_string(), "annotations[screwdriver.cd/cpu]: unknown tier \"HUGE\", expected MICRO, LOW, HIGH, TURBO, MAX or a whole number of cores");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    raw: BTreeMap<String, Value>,
    timeout_minutes: Option<u32>,
    cpu: Option<ResourceRequest>,
    ram: Option<ResourceRequest>,
    executor: Option<String>,
}

impl Annotations {
    /// Parses an annotations object; `null` is the same as `{}`.
    pub fn parse(value: &Value, mode: AnnotationMode) -> Result<Self, Vec<FieldError>> {
        let map = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(m) => m,
            _ => {
                return Err(vec![FieldError::new(
                    "annotations",
                    "must be an object of key/value pairs",
                )]);
            }
        };
        let mut out = Self::default();
        let mut errors = Vec::new();
        for (key, v) in map {
            let field = format!("annotations[{key}]");
            match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {}
                _ => {
                    errors.push(FieldError::new(
                        &field,
                        "must be a string, an integer or a boolean",
                    ));
                    continue;
                }
            }
            out.raw.insert(key.clone(), v.clone());
            let Some(name) = short_name(key) else {
                continue;
            };
            let result = match name {
                "timeout" => parse_timeout(v).map(|t| out.timeout_minutes = Some(t)),
                "cpu" => parse_resource(v, mode, "cores").map(|r| out.cpu = Some(r)),
                "ram" => parse_resource(v, mode, "GiB").map(|r| out.ram = Some(r)),
                "executor" => parse_executor(v).map(|e| out.executor = Some(e)),
                _ => Ok(()),
            };
            if let Err(reason) = result {
                errors.push(FieldError::new(field, reason));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Looks a `screwdriver.cd/<name>` annotation up under either prefix.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.raw
            .get(&format!("{PREFIX}{name}"))
            .or_else(|| self.raw.get(&format!("{BETA_PREFIX}{name}")))
    }

    /// Every annotation as given, including unknown keys.
    pub fn raw(&self) -> &BTreeMap<String, Value> {
        &self.raw
    }

    /// `screwdriver.cd/timeout` in minutes, unbounded (see [`crate::TimeoutPolicy`]).
    pub fn timeout_minutes(&self) -> Option<u32> {
        self.timeout_minutes
    }

    /// `screwdriver.cd/cpu`.
    pub fn cpu(&self) -> Option<ResourceRequest> {
        self.cpu
    }

    /// `screwdriver.cd/ram`.
    pub fn ram(&self) -> Option<ResourceRequest> {
        self.ram
    }

    /// `screwdriver.cd/executor`, lower-cased.
    pub fn executor(&self) -> Option<&str> {
        self.executor.as_deref()
    }

    /// Whether there are no annotations at all.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The annotations as a JSON object (the wire form).
    pub fn to_json(&self) -> Value {
        Value::Object(self.raw.clone().into_iter().collect())
    }
}

/// The part after `screwdriver.cd/` for either prefix.
fn short_name(key: &str) -> Option<&str> {
    key.strip_prefix(BETA_PREFIX)
        .or_else(|| key.strip_prefix(PREFIX))
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_timeout(v: &Value) -> Result<u32, String> {
    match as_u64(v) {
        Some(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(n as u32),
        _ => Err(format!(
            "must be a positive whole number of minutes, got {v}"
        )),
    }
}

fn parse_resource(v: &Value, mode: AnnotationMode, unit: &str) -> Result<ResourceRequest, String> {
    if let Some(n) = as_u64(v) {
        return match u32::try_from(n) {
            Ok(n) if n > 0 => Ok(ResourceRequest::Amount(n)),
            _ => Err(format!(
                "must be a tier or a positive whole number of {unit}"
            )),
        };
    }
    if let Value::String(s) = v
        && let Ok(t) = s.parse::<Tier>()
    {
        return Ok(ResourceRequest::Tier(t));
    }
    match mode {
        AnnotationMode::Compatible => Ok(ResourceRequest::Tier(Tier::Low)),
        AnnotationMode::Strict => {
            let shown = match v {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            Err(format!(
                "unknown tier {shown}, expected MICRO, LOW, HIGH, TURBO, MAX or a whole number of {unit}"
            ))
        }
    }
}

fn parse_executor(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s)
            if !s.trim().is_empty()
                && s.trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(s.trim().to_ascii_lowercase())
        }
        _ => Err("must be an executor name (letters, digits, '-' or '_')".into()),
    }
}

impl Serialize for Annotations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}
