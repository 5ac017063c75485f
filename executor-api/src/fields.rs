//! Checks every JSON body of the API shares: no unknown fields (with the closest known
//! one suggested), and ids within the integers every JSON client reads exactly.

use executor_base::FieldError;
use executor_base::options::edit_distance;
use serde_json::{Map, Value};

/// The largest id the API accepts: 2^53, the last integer a JSON number (an IEEE double
/// in JavaScript clients) holds exactly.
pub const MAX_ID: u64 = 1 << 53;

/// The reason given for an id outside `1..=MAX_ID`.
pub const ID_RANGE: &str = "must be an integer from 1 to 9007199254740992 (2^53)";

/// An id field (`id`, `jobId`, ...): a JSON integer or a string of one, in `1..=2^53`.
///
/// ```
/// use executor_api::fields::parse_id;
/// use serde_json::json;
/// assert_eq!(parse_id("id", &json!(42)).unwrap(), 42);
/// assert_eq!(parse_id("id", &json!("7")).unwrap(), 7);
/// assert!(parse_id("id", &json!(0)).is_err());
/// assert!(parse_id("id", &json!(18446744073709551615u64)).is_err());
/// assert!(parse_id("id", &json!(1.5)).is_err());
/// ```
pub fn parse_id(field: &str, value: &Value) -> Result<u64, FieldError> {
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.filter(|n| (1..=MAX_ID).contains(n))
        .ok_or_else(|| FieldError::new(field, ID_RANGE))
}

/// An id in a URL path: 422 when it is an integer outside `1..=2^53`, 400 when it is not
/// an integer at all (the caller tells them apart by [`PathId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathId {
    /// A valid id.
    Valid(u64),
    /// Digits, but outside `1..=2^53` (0, or too large for any build).
    OutOfRange,
    /// Not an integer.
    NotANumber,
}

impl PathId {
    /// Classifies the path segment `s`.
    pub fn parse(s: &str) -> Self {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return PathId::NotANumber;
        }
        match s.parse::<u64>() {
            Ok(n) if (1..=MAX_ID).contains(&n) => PathId::Valid(n),
            _ => PathId::OutOfRange,
        }
    }
}

/// One error per key of `map` that is not in `known`, named `<prefix><key>`, suggesting
/// the closest known key when one is close enough.
pub fn unknown_fields(map: &Map<String, Value>, known: &[&str], prefix: &str) -> Vec<FieldError> {
    map.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| FieldError::new(format!("{prefix}{k}"), unknown_reason(k, known)))
        .collect()
}

/// "unknown field; did you mean \"annotations\"?" or the list of known fields.
pub fn unknown_reason(key: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(k) => format!("unknown field; did you mean {k:?}?"),
        None => format!("unknown field, expected one of {}", known.join(", ")),
    }
}

/// The known key nearest to `key` (case-insensitive edit distance), if it is within a
/// third of the key's length (at least 1, so one typo is always caught).
pub fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn suggestions() {
        let known = ["annotations", "environment", "steps", "container", "id"];
        assert_eq!(closest("anotations", &known), Some("annotations"));
        assert_eq!(closest("Steps", &known), Some("steps"));
        assert_eq!(closest("stpes", &known), Some("steps"));
        assert_eq!(closest("ib", &known), Some("id"));
        assert_eq!(closest("zzzzzz", &known), None);
        let m = json!({"anotations": {}, "steps": []});
        let errs = unknown_fields(m.as_object().unwrap(), &known, "");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "anotations: unknown field; did you mean \"annotations\"?"
        );
        let m = json!({"colour": 1});
        assert!(
            unknown_fields(m.as_object().unwrap(), &["status"], "x.")[0]
                .to_string()
                .starts_with("x.colour: unknown field, expected one of status")
        );
    }

    #[test]
    fn path_ids() {
        assert_eq!(PathId::parse("42"), PathId::Valid(42));
        assert_eq!(PathId::parse("9007199254740992"), PathId::Valid(MAX_ID));
        assert_eq!(PathId::parse("9007199254740993"), PathId::OutOfRange);
        assert_eq!(PathId::parse("0"), PathId::OutOfRange);
        assert_eq!(PathId::parse("99999999999999999999999"), PathId::OutOfRange);
        assert_eq!(PathId::parse("-1"), PathId::NotANumber);
        assert_eq!(PathId::parse("abc"), PathId::NotANumber);
        assert_eq!(PathId::parse(""), PathId::NotANumber);
    }
}
