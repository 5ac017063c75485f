//! The job's `config.xml` template: `{{placeholder}}`s replaced by XML-escaped values.
//!
//! The built-in template (`templates/job.xml`) is a freestyle project that declares the
//! build parameters (the token as a *password* parameter), pins the job to the node label,
//! runs the generated shell script and aborts the build after the job's own timeout
//! (build-timeout plugin) as the engine-side backstop. Users may replace it with their own
//! file; it is checked when the executor is built: every placeholder must be known, the
//! rendered document must be well-formed XML, and it must be a job Jenkins can build the
//! way the executor triggers it: it runs `{{script}}`, declares the build parameters
//! ([`crate::job::PARAMETERS`]) with `SD_TOKEN` as a `hudson.model.PasswordParameterDefinition`
//! (Jenkins refuses `buildWithParameters` on a job without parameter definitions and
//! ignores undeclared ones), and is not disabled (Jenkins answers 409).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use executor_base::{Error, ErrorKind};

use crate::job::{PARAMETERS, TOKEN_PARAMETER};
use crate::plugins::{TIMEOUT_WRAPPER, plugin_of};
use crate::xml::Element;

/// The class of a password parameter (core `hudson.model.PasswordParameterDefinition`).
const PASSWORD_PARAMETER: &str = "hudson.model.PasswordParameterDefinition";

/// The built-in `config.xml` template.
pub const BUILTIN_TEMPLATE: &str = include_str!("../templates/job.xml");

/// Every placeholder a template may use, with what it is replaced by.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "description",
        "the job description: a sentence plus the build's labels, one `key=value` per line (gc reads `screwdriver.cd/expires-at` from it)",
    ),
    ("build_id", "the build id"),
    (
        "job_name",
        "the Jenkins job name (`SD-<buildId>` by default)",
    ),
    (
        "sdbuild",
        "the `sdbuild` label value (same as the job name)",
    ),
    ("api_uri", "the API URI"),
    ("store_uri", "the store URI"),
    ("ui_uri", "the UI URI"),
    ("container", "the build's image"),
    ("launcher_image", "the job-tools (launcher) image"),
    (
        "mount_point",
        "where job-tools are mounted in the build container",
    ),
    (
        "timeout_minutes",
        "the build timeout in minutes (the launcher's)",
    ),
    (
        "job_timeout_minutes",
        "the job's own timeout in minutes: the build timeout plus a margin (engine-side backstop)",
    ),
    (
        "timeout_marker",
        "the build description written when the job's own timeout fires (status reads it as TimedOut)",
    ),
    ("node_label", "the node label the job is pinned to"),
    (
        "expires_at",
        "Unix seconds after which gc may delete the job",
    ),
    ("job_id", "the Screwdriver job id, or empty"),
    ("pipeline_id", "the pipeline id, or empty"),
    (
        "script",
        "the shell script that runs the build container with job-tools mounted and the launch command",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(&'static str),
}

/// A parsed and checked `config.xml` template.
///
/// ```
/// use executor_jenkins::JobTemplate;
/// let t = JobTemplate::builtin();
/// assert!(t.placeholders().contains(&"script"));
/// let err = JobTemplate::parse("<project>{{nope}}</project>", "inline").unwrap_err();
/// assert!(err.to_string().contains("unknown placeholder {{nope}}"));
/// ```
#[derive(Clone)]
pub struct JobTemplate {
    pieces: Arc<[Piece]>,
    origin: Arc<str>,
    /// Plugins whose classes the template uses, in order of first use.
    plugins: Arc<[String]>,
    /// Whether it has the build-timeout plugin's wrapper.
    timeout_wrapper: bool,
}

impl fmt::Debug for JobTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobTemplate")
            .field("origin", &self.origin)
            .field("placeholders", &self.placeholders())
            .finish()
    }
}

impl Default for JobTemplate {
    fn default() -> Self {
        Self::builtin()
    }
}

fn template_error(origin: &str, reason: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("templatePath: {origin}: {reason}"),
    )
    .with_executor(crate::SCHEME)
}

impl JobTemplate {
    /// The built-in template.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_TEMPLATE, "built-in template").expect("the built-in template is valid")
    }

    /// Reads and checks a template file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| template_error(&origin, format!("cannot read: {e}")))?;
        Self::parse(&text, &origin)
    }

    /// Parses and checks a template; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let mut t = Self::parse_syntax(text, origin)?;
        // Render with values full of XML metacharacters: a template that is well-formed
        // with those is well-formed with any escaped value.
        let sample: BTreeMap<&str, String> = PLACEHOLDERS
            .iter()
            .map(|(n, _)| (*n, format!("<{n}> & \"'{n}'\" ]]>")))
            .collect();
        let root = crate::xml::parse(&t.render(&sample)).map_err(|e| template_error(origin, e))?;
        check_job(&t, &root).map_err(|e| template_error(origin, e))?;
        let mut plugins: Vec<String> = Vec::new();
        for p in root.descendants().into_iter().filter_map(plugin_of) {
            if !plugins.contains(&p) {
                plugins.push(p);
            }
        }
        t.plugins = plugins.into();
        t.timeout_wrapper = root.at(&["buildWrappers", TIMEOUT_WRAPPER]).is_some();
        Ok(t)
    }

    /// The placeholders only: names known, every `{{` closed.
    fn parse_syntax(text: &str, origin: &str) -> Result<Self, Error> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| template_error(origin, "unterminated {{ placeholder"))?;
            let name = after[..end].trim();
            let known = PLACEHOLDERS
                .iter()
                .map(|(n, _)| *n)
                .find(|n| *n == name)
                .ok_or_else(|| {
                    template_error(
                        origin,
                        format!(
                            "unknown placeholder {{{{{name}}}}}, expected one of {}",
                            PLACEHOLDERS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            pieces.push(Piece::Var(known));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self {
            pieces: pieces.into(),
            origin: origin.into(),
            plugins: Arc::from(Vec::new()),
            timeout_wrapper: false,
        })
    }

    /// The Jenkins plugins whose classes the template uses (`plugin="…"` attributes and
    /// known plugin packages), in order of first use; Jenkins silently drops their
    /// elements when a plugin is missing.
    pub fn required_plugins(&self) -> &[String] {
        &self.plugins
    }

    /// Whether the template has the build-timeout plugin's wrapper (the job's own
    /// timeout, the engine-side backstop).
    pub fn has_timeout_wrapper(&self) -> bool {
        self.timeout_wrapper
    }

    /// The placeholders this template uses, in order of first use.
    pub fn placeholders(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for p in self.pieces.iter() {
            if let Piece::Var(n) = p
                && !v.contains(n)
            {
                v.push(*n);
            }
        }
        v
    }

    /// Where the template came from (a path or "built-in template").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders with `values` (unescaped; each is XML-escaped here). A placeholder without
    /// a value renders empty.
    pub(crate) fn render(&self, values: &BTreeMap<&str, String>) -> String {
        let mut out = String::with_capacity(4096);
        for p in self.pieces.iter() {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(n) => {
                    out.push_str(&xml_escape(values.get(n).map(String::as_str).unwrap_or("")))
                }
            }
        }
        out
    }
}

/// What Jenkins needs of a job the executor triggers with `buildWithParameters`.
fn check_job(t: &JobTemplate, root: &Element) -> Result<(), String> {
    if !t.placeholders().contains(&"script") {
        return Err("the job must run the generated script: {{script}} is missing".into());
    }
    let defs = root
        .at(&[
            "properties",
            "hudson.model.ParametersDefinitionProperty",
            "parameterDefinitions",
        ])
        .ok_or_else(|| {
            format!(
                "the job must declare the build parameters {} in \
                 properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions \
                 (Jenkins refuses buildWithParameters on a job without them)",
                PARAMETERS.join(", ")
            )
        })?;
    let declared = |name: &str| {
        defs.children
            .iter()
            .find(|d| d.child_text("name") == Some(name))
    };
    let missing: Vec<&str> = PARAMETERS
        .iter()
        .copied()
        .filter(|p| declared(p).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the job must declare the build parameters {} (Jenkins drops undeclared ones); missing: {}",
            PARAMETERS.join(", "),
            missing.join(", ")
        ));
    }
    match declared(TOKEN_PARAMETER) {
        Some(d) if d.name == PASSWORD_PARAMETER => {}
        Some(d) => {
            return Err(format!(
                "{TOKEN_PARAMETER} must be a {PASSWORD_PARAMETER} (a {} keeps and shows the token)",
                d.name
            ));
        }
        None => unreachable!("checked above"),
    }
    if root.child_text("disabled") == Some("true") {
        return Err("the job must not be disabled (Jenkins answers 409 to its builds)".into());
    }
    Ok(())
}

/// Escapes `& < > " '` for element text and attribute values.
pub(crate) fn xml_escape(s: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Refuses characters XML cannot carry (control characters other than tab and newline).
pub(crate) fn check_xml_chars(field: &str, s: &str) -> Result<(), Error> {
    if s.chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n' && c != '\r')
    {
        return Err(Error::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Reads the whole document; the first syntax error, with its byte position.
#[cfg(any(test, feature = "test-support"))]
pub(crate) fn check_well_formed(xml: &str) -> Result<(), String> {
    crate::xml::parse(xml).map(drop)
}

/// The text of the first `<tag>` element in document order, if any.
#[cfg(test)]
pub(crate) fn element_text(xml: &str, tag: &str) -> Option<String> {
    let root = crate::xml::parse(xml).ok()?;
    root.descendants()
        .into_iter()
        .find(|e| e.name == tag)
        .map(|e| e.text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_uses_the_core_placeholders() {
        let t = JobTemplate::builtin();
        for p in [
            "description",
            "script",
            "node_label",
            "job_timeout_minutes",
            "timeout_marker",
        ] {
            assert!(t.placeholders().contains(&p), "{p}");
        }
        assert!(!BUILTIN_TEMPLATE.contains("{{token"));
        assert_eq!(t.origin(), "built-in template");
        assert!(format!("{t:?}").contains("built-in"));
    }

    #[test]
    fn rendering_escapes_every_value() {
        let t = JobTemplate::parse_syntax("<a><b>{{script}}</b><c x=\"{{node_label}}\"/></a>", "t")
            .unwrap();
        let mut v = BTreeMap::new();
        v.insert("script", "echo '<x>' && echo \"]]>\"".to_string());
        v.insert("node_label", "a\"b".to_string());
        let out = t.render(&v);
        check_well_formed(&out).unwrap();
        assert_eq!(
            element_text(&out, "b").unwrap(),
            "echo '<x>' && echo \"]]>\""
        );
        assert!(out.contains("x=\"a&quot;b\""));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let e = JobTemplate::parse("<a>{{script</a>", "mine.xml").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(
            e.to_string()
                .contains("templatePath: mine.xml: unterminated"),
            "{e}"
        );
        let e = JobTemplate::parse("<a><b>{{script}}</a>", "mine.xml").unwrap_err();
        assert!(e.to_string().contains("not well-formed"), "{e}");
        let e = JobTemplate::parse("<a/><b/>", "mine.xml").unwrap_err();
        assert!(e.to_string().contains("one root element"), "{e}");
        // A placeholder inside an attribute without quotes would break on hostile values.
        let e = JobTemplate::parse("<a x={{script}}/>", "mine.xml").unwrap_err();
        assert!(e.to_string().contains("not well-formed"), "{e}");
        let e = JobTemplate::from_file(Path::new("/nonexistent/job.xml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(check_xml_chars("f", "ok\tline\n").is_ok());
        let e = check_xml_chars("annotations[screwdriver.cd/nodeLabel]", "a\u{1}b").unwrap_err();
        assert_eq!(
            e.field_errors()[0].field,
            "annotations[screwdriver.cd/nodeLabel]"
        );
    }
}
