//! A field reader over a JSON arguments object that collects every error.

use executor_base::FieldError;
use serde_json::{Map, Value};

/// Reads fields of an arguments object, collecting an error per bad field.
pub(crate) struct Reader<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) errors: Vec<FieldError>,
}

impl<'a> Reader<'a> {
    /// A reader over `map`.
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&mut self, name: &str, required: bool) -> Option<String> {
        match self.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                if s.chars().any(char::is_control) {
                    self.errors
                        .push(FieldError::new(name, "must not contain control characters"));
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(Value::String(_)) => {
                if required {
                    self.errors.push(FieldError::new(name, "must not be empty"));
                }
                None
            }
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                None
            }
            None => {
                if required {
                    self.errors.push(FieldError::new(name, "is required"));
                }
                None
            }
        }
    }

    pub(crate) fn number(&mut self, name: &str) -> Option<u64> {
        let parsed = match self.get(name)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed.filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                self.errors
                    .push(FieldError::new(name, "must be a positive integer"));
                None
            }
        }
    }

    pub(crate) fn hex(&mut self, name: &str, min: usize, max: usize) -> Option<String> {
        let s = self.string(name, false)?;
        if (min..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()) {
            Some(s)
        } else {
            self.errors.push(FieldError::new(
                name,
                format!("must be {min} to {max} hexadecimal digits"),
            ));
            None
        }
    }

    pub(crate) fn relative_path(&mut self, name: &str) -> Option<String> {
        let s = self.string(name, false)?;
        if s.starts_with('/') || s.split('/').any(|c| c == "..") {
            self.errors.push(FieldError::new(
                name,
                "must be a relative path without '..' components",
            ));
            None
        } else {
            Some(s)
        }
    }

    pub(crate) fn flag(&mut self, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => {
                    self.errors.push(FieldError::new(name, "must be a boolean"));
                    false
                }
            },
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a boolean"));
                false
            }
        }
    }
}
