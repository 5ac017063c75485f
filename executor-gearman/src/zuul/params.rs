//! The Zuul parameters of a `build:` job: validated ([`ZuulParams`]) and turned into the
//! build's environment ([`build_environment`]).
//!
//! Every parameter whose name starts with an upper-case letter (Zuul's own, `SWIFT_logs_URL`,
//! whatever a Zuul parameter function adds) becomes an environment variable of the
//! build, as Zuul's Jenkins plugin makes them; Screwdriver's start fields are camelCase
//! and start lower case (`buildId`, `apiUri`, ...). Names must be environment names
//! (`[A-Za-z_][A-Za-z0-9_]*`) and values strings, numbers or booleans (numbers and
//! booleans as their JSON text); `SD_*` names and `CONTAINER_IMAGE` are refused (they
//! belong to the launch environment and cannot be overridden).
//! The ones Zuul v2 sends (`seeds/zuul-launchers.txt`, and Zuul's `launch()`):
//!
//! | parameter | sent for | checked |
//! |---|---|---|
//! | `ZUUL_UUID` | every build | required; at most 64 characters; equals the Gearman unique id |
//! | `ZUUL_PROJECT` | every build | required string |
//! | `ZUUL_PIPELINE` | every build | required string |
//! | `ZUUL_REF` | every build | required string |
//! | `ZUUL_COMMIT` | every build (changes: the merged commit; ref updates: the new revision) | 7-64 hex digits; required unless `ZUUL_CHANGE` + `ZUUL_PATCHSET` |
//! | `ZUUL_URL` | when configured | a URL |
//! | `BASE_LOG_PATH`, `LOG_PATH` | every build | relative paths without `..` |
//! | `ZUUL_BRANCH` | changes | string; required with `ZUUL_CHANGE` |
//! | `ZUUL_CHANGE`, `ZUUL_PATCHSET` | changes | positive integers (or their text), together |
//! | `ZUUL_CHANGES` | changes | `project:branch:ref` entries joined by `^` |
//! | `ZUUL_CHANGE_IDS` | changes | string (`number,patchset` pairs) |
//! | `ZUUL_REFNAME` | ref updates | string |
//! | `ZUUL_OLDREV`, `ZUUL_NEWREV` | ref updates | 7-64 hex digits (unset: zeros) |
//! | `ZUUL_SHORT_OLDREV`, `ZUUL_SHORT_NEWREV` | ref updates | 4-64 hex digits |
//! | `ZUUL_NODE` | jobs bound to a node | string (also the function's `:<node>`) |
//! | `SWIFT_<NAME>_URL`, `_HMAC_BODY`, `_SIGNATURE`, `_LOGSERVER_PREFIX` | jobs with swift log upload | strings |
//! | `OFFLINE_NODE_WHEN_COMPLETE` | when asked | boolean (or `true`/`false`/`1`/`0`/`yes`/`no`); the launcher drains after the build |
//! | any other name starting upper case | parameter functions | string, number or boolean |
//!
//! Every bad parameter is reported at once, by name, in the refusal.

use executor_base::build_env::{BuildEnv, check_name, value_text};
use executor_base::{Error, FieldError};
use serde_json::{Map, Value};

use super::reader::Reader;

/// The Zuul parameters of a `build:` job, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZuulParams {
    /// `ZUUL_UUID` (required): the build's unique key, also the Gearman unique id.
    pub uuid: String,
    /// `ZUUL_PROJECT` (required).
    pub project: String,
    /// `ZUUL_PIPELINE` (required).
    pub pipeline: String,
    /// `ZUUL_REF` (required): the ref holding the commit(s) to build.
    pub git_ref: String,
    /// `ZUUL_COMMIT`: SHA-1 (or SHA-256) at the head of `ZUUL_REF`.
    pub commit: Option<String>,
    /// `ZUUL_BRANCH` (required with `ZUUL_CHANGE`).
    pub branch: Option<String>,
    /// `ZUUL_CHANGE`: the change number.
    pub change: Option<u64>,
    /// `ZUUL_PATCHSET` (required with `ZUUL_CHANGE`).
    pub patchset: Option<u64>,
    /// `ZUUL_CHANGES`: `project:branch:ref` entries separated by `^`.
    pub changes: Vec<ChangeRef>,
    /// `ZUUL_CHANGE_IDS`.
    pub change_ids: Option<String>,
    /// `ZUUL_URL`: the Zuul server's git URL.
    pub url: Option<String>,
    /// `ZUUL_OLDREV` (ref updates).
    pub oldrev: Option<String>,
    /// `ZUUL_NEWREV` (ref updates).
    pub newrev: Option<String>,
    /// `ZUUL_SHORT_OLDREV` (ref updates).
    pub short_oldrev: Option<String>,
    /// `ZUUL_SHORT_NEWREV` (ref updates).
    pub short_newrev: Option<String>,
    /// `ZUUL_REFNAME` (ref updates): the updated ref's name.
    pub refname: Option<String>,
    /// `ZUUL_NODE`: the node (class) the job asked for (also in the function name).
    pub node: Option<String>,
    /// `BASE_LOG_PATH`: a relative path.
    pub base_log_path: Option<String>,
    /// `LOG_PATH`: a relative path.
    pub log_path: Option<String>,
    /// `OFFLINE_NODE_WHEN_COMPLETE`: take the launcher offline once this build is done.
    pub offline_node_when_complete: bool,
}

/// One entry of `ZUUL_CHANGES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRef {
    /// Project name.
    pub project: String,
    /// Target branch.
    pub branch: String,
    /// Revision ref.
    pub git_ref: String,
}

impl ZuulParams {
    /// Validates the `ZUUL_*` parameters of a job's arguments. `unique` is the Gearman
    /// unique id the job was submitted with; when non-empty it must equal `ZUUL_UUID`.
    /// Every bad parameter is reported, by name.
    ///
    /// ```
    /// use executor_gearman::zuul::ZuulParams;
    /// let args = serde_json::json!({"ZUUL_UUID": "u1", "ZUUL_PROJECT": "org/repo",
    ///     "ZUUL_PIPELINE": "check", "ZUUL_REF": "refs/zuul/master/Z1", "ZUUL_CHANGE": "42"});
    /// let e = ZuulParams::parse(args.as_object().unwrap(), "u1").unwrap_err();
    /// assert_eq!(e.to_string(), "invalid: ZUUL_BRANCH: is required with ZUUL_CHANGE; ZUUL_PATCHSET: is required with ZUUL_CHANGE");
    /// ```
    pub fn parse(args: &Map<String, Value>, unique: &str) -> Result<Self, Error> {
        let mut r = Reader::new(args);
        let uuid = r.string("ZUUL_UUID", true);
        if let Some(u) = &uuid {
            if u.len() > 64 {
                r.errors.push(FieldError::new(
                    "ZUUL_UUID",
                    "must be at most 64 characters (gearmand's unique id limit)",
                ));
            } else if !unique.is_empty() && unique != u {
                r.errors.push(FieldError::new(
                    "ZUUL_UUID",
                    "does not match the job's Gearman unique id",
                ));
            }
        }
        let project = r.string("ZUUL_PROJECT", true);
        let pipeline = r.string("ZUUL_PIPELINE", true);
        let git_ref = r.string("ZUUL_REF", true);
        let commit = r.hex("ZUUL_COMMIT", 7, 64);
        let branch = r.string("ZUUL_BRANCH", false);
        let change = r.number("ZUUL_CHANGE");
        let patchset = r.number("ZUUL_PATCHSET");
        let has_change = r.get("ZUUL_CHANGE").is_some();
        if has_change && branch.is_none() && r.get("ZUUL_BRANCH").is_none() {
            r.errors.push(FieldError::new(
                "ZUUL_BRANCH",
                "is required with ZUUL_CHANGE",
            ));
        }
        if has_change && r.get("ZUUL_PATCHSET").is_none() {
            r.errors.push(FieldError::new(
                "ZUUL_PATCHSET",
                "is required with ZUUL_CHANGE",
            ));
        }
        if !has_change && r.get("ZUUL_PATCHSET").is_some() {
            r.errors.push(FieldError::new(
                "ZUUL_CHANGE",
                "is required with ZUUL_PATCHSET",
            ));
        }
        if !has_change && r.get("ZUUL_COMMIT").is_none() {
            r.errors.push(FieldError::new(
                "ZUUL_COMMIT",
                "is required (or ZUUL_CHANGE and ZUUL_PATCHSET)",
            ));
        }
        let changes = match r.string("ZUUL_CHANGES", false) {
            Some(s) => parse_changes(&s).unwrap_or_else(|reason| {
                r.errors.push(FieldError::new("ZUUL_CHANGES", reason));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let change_ids = r.string("ZUUL_CHANGE_IDS", false);
        let url = r.string("ZUUL_URL", false);
        if let Some(u) = &url
            && url::Url::parse(u).is_err()
        {
            r.errors.push(FieldError::new("ZUUL_URL", "must be a URL"));
        }
        // The seed's own examples use 32 digits; Gerrit sends 40.
        let oldrev = r.hex("ZUUL_OLDREV", 7, 64);
        let newrev = r.hex("ZUUL_NEWREV", 7, 64);
        let short_oldrev = r.hex("ZUUL_SHORT_OLDREV", 4, 64);
        let short_newrev = r.hex("ZUUL_SHORT_NEWREV", 4, 64);
        let refname = r.string("ZUUL_REFNAME", false);
        let node = r.string("ZUUL_NODE", false);
        let base_log_path = r.relative_path("BASE_LOG_PATH");
        let log_path = r.relative_path("LOG_PATH");
        let offline_node_when_complete = r.flag("OFFLINE_NODE_WHEN_COMPLETE");
        if !r.errors.is_empty() {
            return Err(Error::invalid(r.errors));
        }
        Ok(Self {
            uuid: uuid.unwrap_or_default(),
            project: project.unwrap_or_default(),
            pipeline: pipeline.unwrap_or_default(),
            git_ref: git_ref.unwrap_or_default(),
            commit,
            branch,
            change,
            patchset,
            changes,
            change_ids,
            url,
            oldrev,
            newrev,
            short_oldrev,
            short_newrev,
            refname,
            node,
            base_log_path,
            log_path,
            offline_node_when_complete,
        })
    }
}

fn parse_changes(s: &str) -> Result<Vec<ChangeRef>, String> {
    s.split('^')
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(p), Some(b), Some(r)) if !p.is_empty() && !b.is_empty() && !r.is_empty() => {
                    Ok(ChangeRef {
                        project: p.to_string(),
                        branch: b.to_string(),
                        git_ref: r.to_string(),
                    })
                }
                _ => Err(format!("entry {entry:?} is not project:branch:ref")),
            }
        })
        .collect()
}

/// Whether a parameter is meant for the build's environment (its name starts upper
/// case) rather than a Screwdriver start field (camelCase, starting lower case).
pub fn is_environment_parameter(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// The build environment from a job's arguments: every parameter starting upper case (see the
/// [module docs](self)); `null` values are left out. Every refused parameter is
/// reported by its name.
///
/// ```
/// use executor_gearman::zuul::build_environment;
/// let args = serde_json::json!({"ZUUL_REF": "refs/zuul/master/Z1", "ZUUL_CHANGE": 42,
///     "buildId": 7, "SD_TOKEN": "x", "SWIFT_logs_URL": "http://swift"});
/// let e = build_environment(args.as_object().unwrap()).unwrap_err();
/// assert_eq!(e[0].to_string(), "SD_TOKEN: is reserved for the launch environment (SD_* and CONTAINER_IMAGE cannot be set by a build)");
/// let args = serde_json::json!({"ZUUL_REF": "refs/zuul/master/Z1", "ZUUL_CHANGE": 42,
///     "buildId": 7, "SWIFT_logs_URL": "http://swift"});
/// let env = build_environment(args.as_object().unwrap()).unwrap();
/// assert_eq!(env.iter().collect::<Vec<_>>(),
///     [("SWIFT_logs_URL", "http://swift"), ("ZUUL_CHANGE", "42"), ("ZUUL_REF", "refs/zuul/master/Z1")]);
/// ```
pub fn build_environment(args: &Map<String, Value>) -> Result<BuildEnv, Vec<FieldError>> {
    let mut env = Map::new();
    let mut errors = Vec::new();
    let mut names: Vec<&String> = args
        .keys()
        .filter(|k| is_environment_parameter(k))
        .collect();
    names.sort();
    for name in names {
        let value = &args[name];
        if value.is_null() {
            continue;
        }
        match check_name(name).and_then(|()| value_text(value)) {
            Ok(text) => {
                env.insert(name.clone(), Value::String(text));
            }
            Err(reason) => errors.push(FieldError::new(name.clone(), reason)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Names and values were checked one by one; this adds the total size bound.
    BuildEnv::from_json("(parameters)", &Value::Object(env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Result<ZuulParams, Error> {
        ZuulParams::parse(v.as_object().unwrap(), "")
    }

    fn base() -> Value {
        json!({"ZUUL_UUID": "abc", "ZUUL_PROJECT": "org/repo", "ZUUL_PIPELINE": "gate",
               "ZUUL_REF": "refs/zuul/master/Z1", "ZUUL_COMMIT": "0123456789abcdef0123456789abcdef01234567"})
    }

    #[test]
    fn a_ref_update_is_accepted() {
        let p = params(base()).unwrap();
        assert_eq!(p.project, "org/repo");
        assert!(!p.offline_node_when_complete);
    }
    #[test]
    fn a_change_with_numbers_as_strings_is_accepted() {
        let mut v = base();
        let o = v.as_object_mut().unwrap();
        o.remove("ZUUL_COMMIT");
        o.insert("ZUUL_CHANGE".into(), json!("1234"));
        o.insert("ZUUL_PATCHSET".into(), json!(3));
        o.insert("ZUUL_BRANCH".into(), json!("master"));
        o.insert(
            "ZUUL_CHANGES".into(),
            json!("org/a:master:refs/changes/1/1/1^org/b:master:refs/changes/2/2/2"),
        );
        o.insert("OFFLINE_NODE_WHEN_COMPLETE".into(), json!("true"));
        let p = params(v).unwrap();
        assert_eq!((p.change, p.patchset), (Some(1234), Some(3)));
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.changes[1].project, "org/b");
        assert!(p.offline_node_when_complete);
    }
    #[test]
    fn every_bad_parameter_is_named() {
        let e = params(json!({"ZUUL_UUID": "", "ZUUL_PROJECT": 7, "ZUUL_REF": "r",
            "ZUUL_COMMIT": "xyz", "LOG_PATH": "../etc", "ZUUL_CHANGES": "nocolons",
            "OFFLINE_NODE_WHEN_COMPLETE": "maybe", "ZUUL_URL": "not a url"}))
        .unwrap_err();
        let fields: Vec<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "ZUUL_UUID",
                "ZUUL_PROJECT",
                "ZUUL_PIPELINE",
                "ZUUL_COMMIT",
                "ZUUL_CHANGES",
                "ZUUL_URL",
                "LOG_PATH",
                "OFFLINE_NODE_WHEN_COMPLETE"
            ]
        );
    }
    #[test]
    fn the_unique_id_must_match_the_uuid() {
        let e = ZuulParams::parse(base().as_object().unwrap(), "other").unwrap_err();
        assert_eq!(e.field_errors()[0].field, "ZUUL_UUID");
        assert!(ZuulParams::parse(base().as_object().unwrap(), "abc").is_ok());
    }

    #[test]
    fn the_seeds_ref_update_examples_are_accepted() {
        // seeds/zuul-launchers.txt: 32-digit revisions, unset ones all zeros.
        let mut v = base();
        let o = v.as_object_mut().unwrap();
        o.insert("ZUUL_REFNAME".into(), json!("master"));
        o.insert(
            "ZUUL_OLDREV".into(),
            json!("00000000000000000000000000000000"),
        );
        o.insert(
            "ZUUL_NEWREV".into(),
            json!("123456789abcdef123456789abcdef12"),
        );
        o.insert("ZUUL_SHORT_OLDREV".into(), json!("0000000"));
        o.insert("ZUUL_SHORT_NEWREV".into(), json!("1234567"));
        let p = params(v).unwrap();
        assert_eq!(p.short_newrev.as_deref(), Some("1234567"));
        assert_eq!(p.refname.as_deref(), Some("master"));
        let mut v = base();
        v.as_object_mut()
            .unwrap()
            .insert("ZUUL_SHORT_OLDREV".into(), json!("xyz"));
        assert_eq!(
            params(v).unwrap_err().field_errors()[0].field,
            "ZUUL_SHORT_OLDREV"
        );
    }

    #[test]
    fn every_parameter_starting_upper_case_is_environment() {
        let mut v = base();
        let o = v.as_object_mut().unwrap();
        o.insert(
            "SWIFT_logs_URL".into(),
            json!("https://swift/v1/AUTH_x/logs"),
        );
        o.insert("ZUUL_CHANGE".into(), json!(42));
        o.insert("OFFLINE_NODE_WHEN_COMPLETE".into(), json!(false));
        o.insert("ZUUL_NODE".into(), json!(null));
        o.insert("buildId".into(), json!(7));
        o.insert("annotations".into(), json!({"screwdriver.cd/timeout": 5}));
        let env = build_environment(o).unwrap();
        let names: Vec<&str> = env.names().collect();
        assert_eq!(
            names,
            [
                "OFFLINE_NODE_WHEN_COMPLETE",
                "SWIFT_logs_URL",
                "ZUUL_CHANGE",
                "ZUUL_COMMIT",
                "ZUUL_PIPELINE",
                "ZUUL_PROJECT",
                "ZUUL_REF",
                "ZUUL_UUID"
            ]
        );
        assert_eq!(env.get("OFFLINE_NODE_WHEN_COMPLETE"), Some("false"));
        let bad =
            json!({"SD_BUILD_ID": "1", "ZUUL-X": "y", "ZUUL_LIST": ["a"], "CONTAINER_IMAGE": "i"});
        let e = build_environment(bad.as_object().unwrap()).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["CONTAINER_IMAGE", "SD_BUILD_ID", "ZUUL-X", "ZUUL_LIST"]
        );
    }
}
