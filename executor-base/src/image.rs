//! Container image references: `[registry/]name[:tag][@digest]`, parsed per the
//! distribution reference grammar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A parsed, valid container image reference.
///
/// ```
/// use executor_base::ImageRef;
/// let r: ImageRef = "127.0.0.1:5000/team/node:22@sha256:0123456789abcdef0123456789abcdef".parse().unwrap();
/// assert_eq!(r.registry(), Some("127.0.0.1:5000"));
/// assert_eq!(r.repository(), "team/node");
/// assert_eq!(r.tag(), Some("22"));
/// assert!(r.digest().is_some());
/// let plain: ImageRef = "node:4".parse().unwrap();
/// assert_eq!(plain.name_with_tag(), "node:4");
/// assert!("".parse::<ImageRef>().is_err());
/// assert!("Node:4".parse::<ImageRef>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    original: String,
    registry: Option<String>,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference, explaining what is wrong when it is not valid.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty image reference".into());
        }
        if s.len() > 4096 {
            return Err("image reference longer than 4096 characters".into());
        }
        if s.chars().any(|c| c.is_whitespace()) {
            return Err(format!("image reference {s:?} contains white space"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                validate_digest(d)?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag)?;
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(format!("image reference {s:?} has no name"));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            let r = parts.remove(0);
            validate_registry(r)?;
            Some(r.to_string())
        } else {
            None
        };
        for p in &parts {
            validate_component(p)?;
        }
        let repository = parts.join("/");
        if repository.len() > 255 {
            return Err("repository name longer than 255 characters".into());
        }
        Ok(Self {
            original: s.to_string(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port), if the reference names one.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The repository path without registry, tag or digest (`library/node` stays `node`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:...`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `[registry/]repository` without tag or digest: what a pull asks for.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// `name:tag` with the tag defaulting to `latest` (digest dropped).
    pub fn name_with_tag(&self) -> String {
        format!(
            "{}:{}",
            self.name(),
            self.tag.as_deref().unwrap_or("latest")
        )
    }

    /// The reference as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.original
    }
}

fn validate_component(p: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid repository path component {p:?}: lowercase letters, digits and single '.', '_', '__' or '-' separators only"
        )
    };
    if p.is_empty() {
        return Err(bad());
    }
    let bytes = p.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_registry(r: &str) -> Result<(), String> {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || r.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    if let Some(p) = port
        && (p.is_empty()
            || !p.chars().all(|c| c.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535))
    {
        return Err(format!("invalid registry port in {r:?}"));
    }
    let host_ok = !host.is_empty()
        && host.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':'
        })
        && !host.starts_with('-')
        && !host.starts_with('.');
    if !host_ok {
        return Err(format!("invalid registry host {r:?}"));
    }
    Ok(())
}

fn validate_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {t:?}: up to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        ))
    }
}

fn validate_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("invalid digest {d:?}: expected <algorithm>:<hex>"));
    };
    let alg_ok = !alg.is_empty()
        && alg
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    if alg_ok && hex_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid digest {d:?}: expected <algorithm>:<at least 32 hex digits>"
        ))
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s).map_err(|reason| Error::invalid_field("container", reason))
    }
}

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        r.original
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({:?})", self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_references() {
        for s in [
            "node:4",
            "busybox",
            "library/node:22-alpine",
            "localhost/sd/build:1",
            "localhost:5000/sd/build:1",
            "registry.example.com/a/b/c:v1.2.3",
            "a__b/c-d---e:x",
            "node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn refuses_malformed_references() {
        for s in [
            "",
            " ",
            "Node",
            "node:",
            ":tag",
            "node:-x",
            "node@sha256:xyz",
            "a//b",
            "-a",
            "a-",
            "node:a b",
            "reg.io:99999/x",
            "a/.b",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn splits_parts() {
        let r = ImageRef::parse("127.0.0.1:5000/sd/launcher:stable").unwrap();
        assert_eq!(r.registry(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository(), "sd/launcher");
        assert_eq!(r.tag(), Some("stable"));
        assert_eq!(r.name(), "127.0.0.1:5000/sd/launcher");
        let r = ImageRef::parse("node").unwrap();
        assert_eq!(r.name_with_tag(), "node:latest");
    }
}
