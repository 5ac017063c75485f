//! [`OptionValue`]: how one option's string form (an environment variable, `--opt`, a
//! scalar of a config file) becomes a typed field value, and back for the tables.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use crate::annotations::{ResourceRequest, Tier};
use crate::launch::LaunchMode;

/// What kind of value an option takes; shown in the option tables and used to refuse a
/// config-file value of the wrong shape (a table where a string belongs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    String,
    /// A whole number.
    Integer,
    /// A number, fractions allowed.
    Number,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Boolean,
    /// An `http(s)` URL without credentials.
    Url,
    /// A file system path.
    Path,
    /// A comma separated list (`a,b`) or a JSON array.
    List,
    /// `key=value` pairs separated by commas, or a JSON object.
    Map,
    /// A JSON value (in a config file: the same value as a table or array).
    Json,
    /// One of these words (case-insensitive).
    OneOf(&'static [&'static str]),
}

impl Kind {
    /// A short description for tables and error messages (`integer`, `missing|always|never`).
    pub fn describe(&self) -> String {
        match self {
            Kind::String => "string".into(),
            Kind::Integer => "integer".into(),
            Kind::Number => "number".into(),
            Kind::Boolean => "boolean".into(),
            Kind::Url => "URL".into(),
            Kind::Path => "path".into(),
            Kind::List => "list".into(),
            Kind::Map => "map".into(),
            Kind::Json => "JSON".into(),
            Kind::OneOf(words) => words.join("|"),
        }
    }

    /// The description with its article (`an integer`, `one of missing|always|never`).
    pub fn with_article(&self) -> String {
        match self {
            Kind::OneOf(_) => format!("one of {}", self.describe()),
            Kind::Integer | Kind::Url => format!("an {}", self.describe()),
            _ => format!("a {}", self.describe()),
        }
    }

    /// Whether a config file may give this option as a table or an array.
    pub fn is_structured(&self) -> bool {
        matches!(self, Kind::List | Kind::Map | Kind::Json)
    }
}

/// A field type that options can set from a string.
///
/// Implemented for the plain types configs use (strings, numbers, booleans, paths, URLs,
/// lists, maps, [`Option`]s of them, secrets) and for executor-base's own enums; a
/// backend implements it for its own enums (`PullPolicy`). Structured values without a
/// string form (a list of tolerations) are declared with [`super::Options::json`] instead.
pub trait OptionValue: Sized {
    /// The kind of value, for tables and file type checks.
    fn kind() -> Kind;
    /// Parses the string form; the error says what was expected (the caller names the key).
    fn parse_option(raw: &str) -> Result<Self, String>;
    /// The string form shown in tables (`""` for nothing).
    fn show_option(&self) -> String;
}

fn quoted(raw: &str) -> String {
    let mut s = raw.trim().to_string();
    if s.chars().count() > 60 {
        s = s.chars().take(60).collect::<String>() + "...";
    }
    format!("{s:?}")
}

impl OptionValue for String {
    fn kind() -> Kind {
        Kind::String
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        Ok(raw.trim().to_string())
    }
    fn show_option(&self) -> String {
        self.clone()
    }
}

impl OptionValue for PathBuf {
    fn kind() -> Kind {
        Kind::Path
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        Ok(PathBuf::from(raw.trim()))
    }
    fn show_option(&self) -> String {
        self.display().to_string()
    }
}

impl OptionValue for bool {
    fn kind() -> Kind {
        Kind::Boolean
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("must be true or false, got {}", quoted(raw))),
        }
    }
    fn show_option(&self) -> String {
        self.to_string()
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl OptionValue for $t {
            fn kind() -> Kind {
                Kind::Integer
            }
            fn parse_option(raw: &str) -> Result<Self, String> {
                raw.trim().parse::<$t>().map_err(|_| {
                    format!(
                        "must be an integer from {} to {}, got {}",
                        <$t>::MIN,
                        <$t>::MAX,
                        quoted(raw)
                    )
                })
            }
            fn show_option(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer!(u16, u32, u64, usize, i32, i64);

impl OptionValue for f64 {
    fn kind() -> Kind {
        Kind::Number
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("must be a number, got {}", quoted(raw))),
        }
    }
    fn show_option(&self) -> String {
        self.to_string()
    }
}

impl OptionValue for Url {
    fn kind() -> Kind {
        Kind::Url
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        crate::config::parse_http_url(raw)
    }
    fn show_option(&self) -> String {
        self.as_str().to_string()
    }
}

impl OptionValue for SecretString {
    fn kind() -> Kind {
        Kind::String
    }
    /// Taken as given (not trimmed): a secret's bytes are the caller's business.
    fn parse_option(raw: &str) -> Result<Self, String> {
        Ok(SecretString::from(raw.to_string()))
    }
    /// Never the secret itself.
    fn show_option(&self) -> String {
        "[REDACTED]".into()
    }
}

/// `None` for an empty string; otherwise the inner type's form.
impl<T: OptionValue> OptionValue for Option<T> {
    fn kind() -> Kind {
        T::kind()
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            T::parse_option(raw).map(Some)
        }
    }
    fn show_option(&self) -> String {
        self.as_ref().map(T::show_option).unwrap_or_default()
    }
}

/// A JSON array of strings, or `a,b,c` (items trimmed, empty items dropped).
impl OptionValue for Vec<String> {
    fn kind() -> Kind {
        Kind::List
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        let t = raw.trim();
        if t.starts_with('[') {
            return serde_json::from_str(t)
                .map_err(|e| format!("must be a JSON array of strings or a,b,c ({e})"));
        }
        Ok(t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }
    fn show_option(&self) -> String {
        self.join(",")
    }
}

/// A JSON object of strings, or `k=v,k=v`.
impl OptionValue for BTreeMap<String, String> {
    fn kind() -> Kind {
        Kind::Map
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        let t = raw.trim();
        if t.starts_with('{') {
            return serde_json::from_str(t)
                .map_err(|e| format!("must be a JSON object of strings or k=v,k=v ({e})"));
        }
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!("must be k=v,k=v, got item {}", quoted(kv))),
            })
            .collect()
    }
    fn show_option(&self) -> String {
        self.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl OptionValue for LaunchMode {
    fn kind() -> Kind {
        Kind::OneOf(&["native", "screwdriver"])
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(LaunchMode::Native),
            "screwdriver" => Ok(LaunchMode::Screwdriver),
            _ => Err(format!(
                "unknown launch mode {}, expected native or screwdriver",
                quoted(raw)
            )),
        }
    }
    fn show_option(&self) -> String {
        match self {
            LaunchMode::Native => "native".into(),
            LaunchMode::Screwdriver => "screwdriver".into(),
        }
    }
}

/// A tier name (`LOW`) or a whole positive amount (`3`).
impl OptionValue for ResourceRequest {
    fn kind() -> Kind {
        Kind::String
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        let v = raw.trim();
        if let Ok(t) = v.parse::<Tier>() {
            return Ok(ResourceRequest::Tier(t));
        }
        match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(ResourceRequest::Amount(n)),
            _ => Err(format!(
                "unknown tier {}, expected MICRO, LOW, HIGH, TURBO, MAX or a whole positive number",
                quoted(raw)
            )),
        }
    }
    fn show_option(&self) -> String {
        match self {
            ResourceRequest::Tier(t) => format!("{t:?}").to_ascii_uppercase(),
            ResourceRequest::Amount(n) => n.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_parse_and_name_what_was_expected() {
        assert_eq!(u32::parse_option(" 7 "), Ok(7));
        assert!(u32::parse_option("soon").unwrap_err().contains("\"soon\""));
        assert!(u16::parse_option("70000").unwrap_err().contains("65535"));
        assert_eq!(bool::parse_option("Yes"), Ok(true));
        assert!(bool::parse_option("maybe").is_err());
        assert!(f64::parse_option("NaN").is_err());
        assert_eq!(Option::<u32>::parse_option(""), Ok(None));
        assert!(Url::parse_option("ftp://x").is_err());
    }

    #[test]
    fn lists_and_maps_take_both_forms() {
        assert_eq!(
            Vec::<String>::parse_option("a, b,,c").unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(Vec::<String>::parse_option(r#"["a,b"]"#).unwrap(), ["a,b"]);
        let m = BTreeMap::<String, String>::parse_option("k=v, x = y").unwrap();
        assert_eq!(m.show_option(), "k=v,x=y");
        assert_eq!(
            BTreeMap::<String, String>::parse_option(r#"{"a":"1"}"#).unwrap()["a"],
            "1"
        );
        assert!(BTreeMap::<String, String>::parse_option("novalue").is_err());
    }

    #[test]
    fn secrets_are_never_shown() {
        let s = SecretString::parse_option(" hunter2 ").unwrap();
        assert_eq!(s.show_option(), "[REDACTED]");
        assert_eq!(
            Option::<SecretString>::parse_option("")
                .unwrap()
                .show_option(),
            ""
        );
    }

    #[test]
    fn resource_requests() {
        assert_eq!(
            ResourceRequest::parse_option("high").unwrap().show_option(),
            "HIGH"
        );
        assert_eq!(
            ResourceRequest::parse_option("3").unwrap(),
            ResourceRequest::Amount(3)
        );
        assert!(ResourceRequest::parse_option("0").is_err());
    }
}
