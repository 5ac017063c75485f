//! The field-by-field JSON reader every config parses with, and the shared field checks.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::{Map, Value};
use url::Url;

use crate::annotations::Annotations;
use crate::error::{Error, FieldError};

use super::ParseOptions;

/// Field-by-field reader over a JSON object that collects every error.
pub(crate) struct Fields<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(value: &'a Value) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                errors: Vec::new(),
            }),
            _ => Err(Error::invalid_field("(config)", "must be a JSON object")),
        }
    }

    pub(crate) fn present(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn missing(&mut self, name: &str) {
        self.errors.push(FieldError::new(name, "is required"));
    }

    pub(crate) fn id<T>(
        &mut self,
        name: &str,
        parse: fn(&str, &Value) -> Result<T, FieldError>,
        required: bool,
    ) -> Option<T> {
        match self.present(name) {
            Some(v) => match parse(name, v) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.errors.push(e);
                    None
                }
            },
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
        }
    }

    pub(crate) fn string(&mut self, name: &str, required: bool) -> Option<&'a str> {
        match self.present(name) {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                None
            }
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
        }
    }

    /// A string field run through `parse`; a refusal is recorded against `name`.
    pub(crate) fn parsed<T>(
        &mut self,
        name: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(name, required)?;
        match parse(s) {
            Ok(t) => Some(t),
            Err(reason) => {
                self.errors.push(FieldError::new(name, reason));
                None
            }
        }
    }

    pub(crate) fn url(&mut self, name: &str, required: bool) -> Option<Url> {
        self.parsed(name, required, parse_http_url)
    }

    pub(crate) fn token(&mut self, name: &str, required: bool) -> Option<SecretString> {
        let s = self.string(name, required)?;
        if s.trim().is_empty() {
            self.errors.push(FieldError::new(name, "must not be empty"));
            return None;
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            // Never echo the value: it is a secret.
            self.errors.push(FieldError::new(
                name,
                "must not contain white space or control characters",
            ));
            return None;
        }
        Some(SecretString::from(s.to_string()))
    }

    pub(crate) fn bool(&mut self, name: &str) -> Option<bool> {
        match self.present(name) {
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a boolean"));
                None
            }
            None => None,
        }
    }

    pub(crate) fn annotations(&mut self, opts: ParseOptions) -> Annotations {
        match Annotations::parse(
            self.map.get("annotations").unwrap_or(&Value::Null),
            opts.annotation_mode,
        ) {
            Ok(a) => a,
            Err(mut errs) => {
                self.errors.append(&mut errs);
                Annotations::default()
            }
        }
    }

    pub(crate) fn extra(&self, known: &[&str]) -> BTreeMap<String, Value> {
        self.map
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(self.errors))
        }
    }
}

/// Parses an `http` or `https` URL with a host.
pub fn parse_http_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| format!("must be an http(s) URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http(s) URL, got scheme {:?}",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must be an http(s) URL with a host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(u)
}

pub(crate) fn parse_job_name(s: &str) -> Result<String, String> {
    // Upstream: ^(PR-[0-9]+:)?(([\w-]+)|(?:stage@([\w-]+):(setup|teardown)))$, max 110.
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    let body = match s.strip_prefix("PR-").and_then(|r| r.split_once(':')) {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => s,
    };
    let ok = s.len() <= 110
        && (word(body)
            || body
                .strip_prefix("stage@")
                .and_then(|r| r.split_once(':'))
                .is_some_and(|(stage, hook)| {
                    word(stage) && (hook == "setup" || hook == "teardown")
                }));
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be a job name (letters, digits, '_', '-', optionally PR-<n>: or stage@<name>:setup|teardown, at most 110 characters)".to_string())
    }
}
