//! What the fake Jenkins loads from a job's `config.xml`, the way Jenkins does.
//!
//! Jenkins keeps the posted file as it is (`GET config.xml` answers it verbatim) but
//! builds its job object from it with XStream. Elements whose class comes from a plugin
//! that is not installed (or not active) cannot be loaded: core's
//! `hudson.util.RobustCollectionConverter` / `RobustReflectionConverter.addErrorInContext`
//! drop them and record "old data", and the job is created anyway (`createItem` answers
//! 200). The model below is built the same way, so a job whose build-timeout wrapper was
//! dropped has no timeout, exactly as on a controller without the plugin.

use crate::plugins::{TIMEOUT_WRAPPER, plugin_of};
use crate::xml::Element;

const WRITE_DESCRIPTION: &str =
    "hudson.plugins.build__timeout.operations.WriteDescriptionOperation";
const ABORT: &str = "hudson.plugins.build__timeout.operations.AbortOperation";

/// A parameter definition of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamDef {
    /// `SD_TOKEN`.
    pub name: String,
    /// `hudson.model.PasswordParameterDefinition`.
    pub class: String,
    /// The default value (empty when absent).
    pub default: String,
}

/// The build-timeout wrapper, when it survived loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeoutWrapper {
    /// `timeoutMinutes` of the absolute strategy (a string in the plugin too).
    pub minutes: String,
    /// The `WriteDescriptionOperation` text, if that operation is configured.
    pub description: Option<String>,
    /// Whether an `AbortOperation` is configured.
    pub abort: bool,
}

/// A job as Jenkins loaded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobModel {
    /// The top-level `<description>`.
    pub description: String,
    /// `<disabled>true</disabled>`: the job is not buildable.
    pub disabled: bool,
    /// The parameter definitions; `None` without a `ParametersDefinitionProperty`.
    pub parameters: Option<Vec<ParamDef>>,
    /// `<assignedNode>`.
    pub assigned_node: Option<String>,
    /// The build-timeout wrapper.
    pub timeout: Option<TimeoutWrapper>,
    /// What was dropped while loading ("old data"), one line per element.
    pub old_data: Vec<String>,
}

impl JobModel {
    /// Loads `root` with the plugins `active(shortName)` says are installed and active.
    pub fn load(root: &Element, active: impl Fn(&str) -> bool) -> Self {
        let mut old_data = Vec::new();
        let root = without_missing_plugins(root, &active, &mut old_data);
        let parameters = root
            .at(&[
                "properties",
                "hudson.model.ParametersDefinitionProperty",
                "parameterDefinitions",
            ])
            .map(|defs| {
                defs.children
                    .iter()
                    .map(|d| ParamDef {
                        name: d.child_text("name").unwrap_or("").to_string(),
                        class: d.name.clone(),
                        default: d.child_text("defaultValue").unwrap_or("").to_string(),
                    })
                    .collect()
            });
        let timeout = root
            .at(&["buildWrappers", TIMEOUT_WRAPPER])
            .map(|w| TimeoutWrapper {
                minutes: w
                    .at(&["strategy", "timeoutMinutes"])
                    .map(|m| m.text.trim().to_string())
                    .unwrap_or_default(),
                description: w
                    .at(&["operationList", WRITE_DESCRIPTION, "description"])
                    .map(|d| d.text.clone()),
                abort: w.at(&["operationList", ABORT]).is_some(),
            });
        Self {
            description: root
                .child("description")
                .map(|d| d.text.clone())
                .unwrap_or_default(),
            disabled: root.child_text("disabled") == Some("true"),
            parameters,
            assigned_node: root.child_text("assignedNode").map(str::to_string),
            timeout,
            old_data,
        }
    }
}

fn without_missing_plugins(
    e: &Element,
    active: &impl Fn(&str) -> bool,
    old_data: &mut Vec<String>,
) -> Element {
    let mut out = Element {
        name: e.name.clone(),
        attrs: e.attrs.clone(),
        text: e.text.clone(),
        children: Vec::new(),
    };
    for c in &e.children {
        match plugin_of(c) {
            Some(p) if !active(&p) => old_data.push(format!(
                "{}: cannot load the class of plugin {p}, which is not installed",
                c.name
            )),
            _ => out
                .children
                .push(without_missing_plugins(c, active, old_data)),
        }
    }
    out
}

/// The build-timeout plugin's `WriteDescriptionOperation.perform`: `$VAR`/`${VAR}` of the
/// build's environment expanded (unknown names left as they are, as `EnvVars.expand`
/// does), then `java.text.MessageFormat.format(text, minutes)`: `{0}` is the timeout in
/// minutes, text between single quotes is literal, `''` is one quote, and a lone quote
/// starts a literal section that runs to the end (so the quote itself disappears).
pub(crate) fn write_description(text: &str, env: &[(String, String)], minutes: u64) -> String {
    message_format(&expand(text, env), minutes)
}

fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(b) => match b.find('}') {
                Some(end) => (&b[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match env.iter().find(|(k, _)| !name.is_empty() && k == name) {
            Some((_, v)) => {
                out.push_str(v);
                rest = &after[consumed..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn message_format(text: &str, minutes: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => quoted = !quoted,
            '{' if !quoted => {
                let arg: String = chars.by_ref().take_while(|&c| c != '}').collect();
                if arg.trim().split(',').next() == Some("0") {
                    out.push_str(&minutes.to_string());
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(xml: &str, active: &[&str]) -> JobModel {
        JobModel::load(&crate::xml::parse(xml).unwrap(), |p| active.contains(&p))
    }

    const JOB: &str = "<project><description>top</description><properties>\
        <hudson.model.ParametersDefinitionProperty><parameterDefinitions>\
        <hudson.model.StringParameterDefinition><name>A</name><defaultValue>1</defaultValue>\
        <description>not the job's</description></hudson.model.StringParameterDefinition>\
        <hudson.model.PasswordParameterDefinition><name>SD_TOKEN</name></hudson.model.PasswordParameterDefinition>\
        </parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>\
        <disabled>true</disabled><buildWrappers>\
        <hudson.plugins.build__timeout.BuildTimeoutWrapper plugin=\"build-timeout@1.33\">\
        <strategy class=\"hudson.plugins.build_timeout.impl.AbsoluteTimeOutStrategy\"><timeoutMinutes>35</timeoutMinutes></strategy>\
        <operationList><hudson.plugins.build__timeout.operations.WriteDescriptionOperation>\
        <description>x</description></hudson.plugins.build__timeout.operations.WriteDescriptionOperation>\
        <hudson.plugins.build__timeout.operations.AbortOperation/></operationList>\
        </hudson.plugins.build__timeout.BuildTimeoutWrapper></buildWrappers></project>";

    #[test]
    fn loads_what_jenkins_reads() {
        let m = model(JOB, &["build-timeout"]);
        assert_eq!(m.description, "top", "the top-level description only");
        assert!(m.disabled);
        let ps = m.parameters.as_ref().unwrap();
        assert_eq!(ps[0].default, "1");
        assert_eq!(ps[1].class, "hudson.model.PasswordParameterDefinition");
        let t = m.timeout.unwrap();
        assert_eq!(
            (t.minutes.as_str(), t.description.as_deref(), t.abort),
            ("35", Some("x"), true)
        );
        assert!(m.old_data.is_empty());
        assert_eq!(model("<project/>", &[]).parameters, None);
    }

    #[test]
    fn elements_of_missing_plugins_are_dropped_and_recorded() {
        // core RobustCollectionConverter: the job loads, without the wrapper.
        let m = model(JOB, &[]);
        assert_eq!(m.timeout, None);
        assert_eq!(m.old_data.len(), 1);
        assert!(
            m.old_data[0].contains("plugin build-timeout"),
            "{:?}",
            m.old_data
        );
        assert!(m.parameters.is_some(), "core classes stay");
    }

    #[test]
    fn write_description_expands_then_applies_message_format() {
        let env = [("BUILD_NUMBER".to_string(), "3".to_string())];
        assert_eq!(
            write_description("sdx-timeout: the job's own timeout of 95 minutes", &env, 95),
            "sdx-timeout: the jobs own timeout of 95 minutes",
            "a lone quote disappears (MessageFormat)"
        );
        assert_eq!(
            write_description(
                "#$BUILD_NUMBER ${BUILD_NUMBER} $NOPE after {0} min, it''s '{0}'",
                &env,
                7
            ),
            "#3 3 $NOPE after 7 min, it's {0}"
        );
    }
}
