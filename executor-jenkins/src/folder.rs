//! The Jenkins folder jobs live in (CloudBees Folders plugin): option parsing, validation
//! and the `job/<segment>/job/<segment>` path every job URL is built under.

use std::fmt;

/// A validated folder path: no segments for the root, else `ci/screwdriver` as
/// `["ci", "screwdriver"]`. Segments are kept as written; they are percent-encoded only
/// when a URL is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Folder {
    segments: Vec<String>,
}

impl Folder {
    /// Parses the `folder` option: empty (after trimming white space) is the root;
    /// otherwise segments separated by `/`, none empty, `.` or `..`, no leading or trailing
    /// `/`, and no control characters anywhere. The error says why (the caller names the
    /// key).
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(Self::default());
        }
        if v.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        if v.starts_with('/') || v.ends_with('/') {
            return Err(format!(
                "{v:?} must be a folder path like ci/screwdriver, without a leading or trailing '/'"
            ));
        }
        let mut segments = Vec::new();
        for s in v.split('/') {
            match s {
                _ if s.trim().is_empty() => {
                    return Err(format!("{v:?} has an empty segment (\"//\")"));
                }
                "." | ".." => return Err(format!("{v:?} must not hold a {s:?} segment")),
                _ => segments.push(s.to_string()),
            }
        }
        Ok(Self { segments })
    }

    /// Whether jobs live at Jenkins' root.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The URL path segments of the folder: `["job", "ci", "job", "screwdriver"]`
    /// (empty for the root), to be percent-encoded one by one.
    pub fn url_segments(&self) -> Vec<&str> {
        self.segments
            .iter()
            .flat_map(|s| ["job", s.as_str()])
            .collect()
    }

    /// The Jenkins path of an item in this folder, unencoded:
    /// `job/ci/job/screwdriver/job/SD-1` (`job/SD-1` at the root).
    pub fn item_path(&self, name: &str) -> String {
        let mut segs = self.url_segments();
        segs.extend(["job", name]);
        segs.join("/")
    }
}

/// `ci/screwdriver`, or `/` for the root.
impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("/")
        } else {
            f.write_str(&self.segments.join("/"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_builds_segments() {
        assert!(Folder::parse("").unwrap().is_root());
        assert!(Folder::parse("  ").unwrap().is_root());
        let f = Folder::parse(" ci/screwdriver ").unwrap();
        assert_eq!(f.url_segments(), ["job", "ci", "job", "screwdriver"]);
        assert_eq!(f.item_path("SD-1"), "job/ci/job/screwdriver/job/SD-1");
        assert_eq!(f.to_string(), "ci/screwdriver");
        assert_eq!(Folder::default().item_path("SD-1"), "job/SD-1");
        assert_eq!(Folder::default().to_string(), "/");
        let odd = Folder::parse("team a/ü%?#").unwrap();
        assert_eq!(odd.url_segments(), ["job", "team a", "job", "ü%?#"]);
    }

    #[test]
    fn refuses_bad_paths() {
        for bad in [
            "/ci", "ci/", "/", "ci//sd", "ci/ /sd", ".", "..", "ci/..", "./ci", "ci/\n", "c\ti",
            "ci\u{7f}",
        ] {
            assert!(Folder::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Folder::parse("ci/..").unwrap_err().contains("\"..\""));
        assert!(
            Folder::parse("ci//x")
                .unwrap_err()
                .contains("empty segment")
        );
        assert!(Folder::parse("a\u{1}").unwrap_err().contains("control"));
    }
}
