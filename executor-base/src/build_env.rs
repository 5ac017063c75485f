//! The build's own environment variables: the `env` field of a [`crate::StartConfig`].
//!
//! A caller may hand a build extra environment variables (a Zuul launcher passes every
//! Zuul parameter this way, as Zuul's Jenkins plugin does). Every backend sets them in
//! the build's environment through [`crate::LaunchSpec`], after the launch's own
//! variables. They are plain environment: visible to every step, in the engine's
//! inspection output (`docker inspect`, the pod spec) and in `/proc`, so never pass
//! secrets this way (the token has its own delivery).
//!
//! Names are checked when the config is parsed: `[A-Za-z_][A-Za-z0-9_]*`, at most
//! [`MAX_NAME_LEN`] bytes; names the launch sets itself ([`is_reserved`]: every `SD_*`
//! name and `CONTAINER_IMAGE`) are refused, so a job can never override the build id,
//! API, store or token file the executor hands to `launch`. Values are strings (numbers
//! and booleans are taken as their JSON text) without NUL bytes, each at most
//! [`MAX_VALUE_LEN`] bytes (Linux's limit on one environment string), all together at
//! most [`MAX_TOTAL_LEN`].
//!
//! ```
//! use executor_base::build_env::BuildEnv;
//! let env = BuildEnv::from_json("env", &serde_json::json!({"ZUUL_PIPELINE": "gate", "RETRIES": 3})).unwrap();
//! assert_eq!(env.get("RETRIES"), Some("3"));
//! let err = BuildEnv::from_json("env", &serde_json::json!({"SD_TOKEN": "x", "1X": "y"})).unwrap_err();
//! assert_eq!(err[0].to_string(), "env[1X]: must match [A-Za-z_][A-Za-z0-9_]*");
//! assert_eq!(err[1].to_string(), "env[SD_TOKEN]: is reserved for the launch environment (SD_* and CONTAINER_IMAGE cannot be set by a build)");
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::FieldError;

/// Prefix of the names the launch environment reserves (`SD_BUILD_ID`, `SD_TOKEN`, ...).
pub const RESERVED_PREFIX: &str = "SD_";

/// Names outside [`RESERVED_PREFIX`] that the launch sets itself.
pub const RESERVED_NAMES: &[&str] = &["CONTAINER_IMAGE"];

/// Longest variable name accepted.
pub const MAX_NAME_LEN: usize = 256;

/// Longest value accepted (Linux refuses longer environment strings: `MAX_ARG_STRLEN`).
pub const MAX_VALUE_LEN: usize = 128 * 1024;

/// Largest total size (names and values) accepted.
pub const MAX_TOTAL_LEN: usize = 1024 * 1024;

/// Whether `name` is set by the launch itself and cannot be given by a build.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX) || RESERVED_NAMES.contains(&name)
}

/// Why `name` cannot be an environment variable of a build, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("must match [A-Za-z_][A-Za-z0-9_]*".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    if is_reserved(name) {
        return Err(format!(
            "is reserved for the launch environment ({RESERVED_PREFIX}* and {} cannot be set by a build)",
            RESERVED_NAMES.join(", ")
        ));
    }
    Ok(())
}

/// The text of a JSON value as an environment value, or why it cannot be one.
pub fn value_text(value: &Value) -> Result<String, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Err("must be a string, number or boolean".into()),
    };
    if text.contains('\0') {
        return Err("must not contain NUL bytes".into());
    }
    if text.len() > MAX_VALUE_LEN {
        return Err(format!("must be at most {MAX_VALUE_LEN} bytes"));
    }
    Ok(text)
}

/// A build's validated extra environment, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildEnv {
    vars: BTreeMap<String, String>,
}

impl BuildEnv {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JSON object of variables; errors name `<field>[<NAME>]`. Every bad
    /// variable is reported.
    pub fn from_json(field: &str, value: &Value) -> Result<Self, Vec<FieldError>> {
        let Value::Object(map) = value else {
            return Err(vec![FieldError::new(
                field,
                "must be an object of NAME: value",
            )]);
        };
        let mut errors = Vec::new();
        let mut env = Self::new();
        // Sorted, so errors come in the same order whatever the map keeps.
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        for name in names {
            let v = &map[name];
            let checked = check_name(name).and_then(|()| value_text(v));
            match checked {
                Ok(text) => {
                    env.vars.insert(name.clone(), text);
                }
                Err(reason) => errors.push(FieldError::new(format!("{field}[{name}]"), reason)),
            }
        }
        if errors.is_empty() && env.total_len() > MAX_TOTAL_LEN {
            errors.push(FieldError::new(
                field,
                format!("must total at most {MAX_TOTAL_LEN} bytes"),
            ));
        }
        if errors.is_empty() {
            Ok(env)
        } else {
            Err(errors)
        }
    }

    /// Adds a variable, checked like [`BuildEnv::from_json`] does.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), String> {
        check_name(name)?;
        let text = value_text(&Value::String(value.to_string()))?;
        self.vars.insert(name.to_string(), text);
        Ok(())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The variables, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// How many variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The wire form: a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.vars
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<Map<String, Value>>(),
        )
    }

    fn total_len(&self) -> usize {
        self.vars.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reserved_and_malformed_names_are_refused_by_name() {
        let e = BuildEnv::from_json(
            "env",
            &json!({"SD_BUILD_ID": "1", "CONTAINER_IMAGE": "x", "A-B": "1", "": "1", "OK": "fine"}),
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "env[]",
                "env[A-B]",
                "env[CONTAINER_IMAGE]",
                "env[SD_BUILD_ID]"
            ]
        );
    }

    #[test]
    fn values_are_strings_numbers_or_booleans_without_nul() {
        let env = BuildEnv::from_json("env", &json!({"A": true, "B": 1.5, "C": ""})).unwrap();
        assert_eq!(
            env.iter().collect::<Vec<_>>(),
            [("A", "true"), ("B", "1.5"), ("C", "")]
        );
        let e =
            BuildEnv::from_json("env", &json!({"A": [1], "B": "x\u{0}y", "C": null})).unwrap_err();
        assert_eq!(e.len(), 3);
        assert!(e[1].reason.contains("NUL"));
        let big = "x".repeat(MAX_VALUE_LEN + 1);
        assert!(BuildEnv::from_json("env", &json!({ "A": big })).is_err());
        assert!(BuildEnv::from_json("env", &json!("A=1")).is_err());
    }

    #[test]
    fn insert_checks_like_parsing() {
        let mut env = BuildEnv::new();
        env.insert("ZUUL_REF", "refs/zuul/master/Z1").unwrap();
        assert!(env.insert("SD_TOKEN", "x").is_err());
        assert_eq!(env.to_json(), json!({"ZUUL_REF": "refs/zuul/master/Z1"}));
    }
}
