//! Which Jenkins plugins a job template needs, whether Jenkins has them, and who
//! therefore enforces a build's job timeout.
//!
//! Jenkins loads a job's `config.xml` with XStream and silently drops elements whose class
//! comes from a plugin that is not installed or not active (core
//! `hudson/util/RobustCollectionConverter`, `RobustReflectionConverter.addErrorInContext`):
//! `createItem` still answers 200 and `GET config.xml` returns the posted file. Without
//! the build-timeout plugin the job's own timeout, the engine-side backstop, would vanish
//! without a trace, so the executor reads the plugin list (`GET /pluginManager/api/json`,
//! which needs Overall/SystemRead) and evaluates the template's needs against it. The
//! evaluation is a plain function of the template and the list, so a pre-flight check can
//! run it too.

use std::fmt;

use crate::api::PluginInfo;
use crate::template::JobTemplate;
use crate::xml::Element;

/// The short name of the build-timeout plugin.
pub const TIMEOUT_PLUGIN: &str = "build-timeout";

/// The element of the build-timeout plugin's wrapper, as XStream writes its class.
pub(crate) const TIMEOUT_WRAPPER: &str = "hudson.plugins.build__timeout.BuildTimeoutWrapper";

/// Which plugin provides a class, for classes written without a `plugin=` attribute.
const PLUGIN_PACKAGES: &[(&str, &str)] = &[
    ("hudson.plugins.build__timeout.", TIMEOUT_PLUGIN),
    ("hudson.plugins.build_timeout.", TIMEOUT_PLUGIN),
    ("com.cloudbees.hudson.plugins.folder.", "cloudbees-folder"),
];

/// The plugin an element's class comes from: its `plugin="name@version"` attribute (what
/// Jenkins writes for plugin classes), or a known package of its element name or `class`
/// attribute.
pub(crate) fn plugin_of(e: &Element) -> Option<String> {
    if let Some(p) = e.attr("plugin") {
        return Some(p.split('@').next().unwrap_or(p).to_string());
    }
    [Some(e.name.as_str()), e.attr("class")]
        .into_iter()
        .flatten()
        .find_map(|class| {
            PLUGIN_PACKAGES
                .iter()
                .find(|(pkg, _)| class.starts_with(pkg))
                .map(|(_, plugin)| plugin.to_string())
        })
}

/// Who stops a build that runs past its job timeout (build timeout plus
/// `jobTimeoutMarginMinutes`) on Jenkins' side, independently of the server's own timer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutBackstop {
    /// Jenkins: the template's build-timeout wrapper, with the plugin installed and active.
    Plugin,
    /// The executor, because the build-timeout plugin is not installed or not active (so
    /// Jenkins drops the wrapper): a build found running past its job timeout by `status`,
    /// `verify` or `gc` gets the timeout marker as its description and is stopped.
    ExecutorPluginMissing,
    /// The executor (as above), because the plugin list could not be read (it needs
    /// Overall/SystemRead), with the reason.
    ExecutorPluginUnknown(String),
    /// The executor (as above), because the job template has no build-timeout wrapper.
    ExecutorNoWrapper,
}

impl TimeoutBackstop {
    /// Whether Jenkins itself enforces the job timeout.
    pub fn by_jenkins(&self) -> bool {
        matches!(self, TimeoutBackstop::Plugin)
    }
}

impl fmt::Display for TimeoutBackstop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutBackstop::Plugin => f.write_str("the job's build-timeout wrapper"),
            TimeoutBackstop::ExecutorPluginMissing => f.write_str(
                "the executor (the build-timeout plugin is not installed or not active)",
            ),
            TimeoutBackstop::ExecutorPluginUnknown(why) => write!(
                f,
                "the executor (cannot tell whether the build-timeout plugin is installed: {why})"
            ),
            TimeoutBackstop::ExecutorNoWrapper => {
                f.write_str("the executor (the job template has no build-timeout wrapper)")
            }
        }
    }
}

/// What reading the plugin list gave.
#[derive(Debug, Clone)]
pub(crate) enum PluginCheck {
    /// The installed plugins.
    Read(Vec<PluginInfo>),
    /// Jenkins refused to show them (403: the user lacks Overall/SystemRead). Asking again
    /// will not help.
    Forbidden(String),
    /// Jenkins could not be asked (unreachable, 401, 5xx): worth asking again later.
    Failed(String),
}

/// A template evaluated against a plugin check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evaluation {
    /// Who enforces the job timeout.
    pub backstop: TimeoutBackstop,
    /// Plugins the template uses that are not installed and active (their elements are
    /// dropped by Jenkins); empty when the list could not be read.
    pub missing: Vec<String>,
    /// Whether the list should be read again later (it could not be read this time).
    pub recheck: bool,
}

/// Evaluates what `template` needs against `check`.
pub(crate) fn evaluate(template: &JobTemplate, check: &PluginCheck) -> Evaluation {
    let (missing, unknown, recheck) = match check {
        PluginCheck::Read(installed) => {
            let active = |name: &str| installed.iter().any(|p| p.short_name == name && p.active);
            let missing: Vec<String> = template
                .required_plugins()
                .iter()
                .filter(|p| !active(p))
                .cloned()
                .collect();
            (missing, None, false)
        }
        PluginCheck::Forbidden(why) => (Vec::new(), Some(why.clone()), false),
        PluginCheck::Failed(why) => (Vec::new(), Some(why.clone()), true),
    };
    let backstop = if !template.has_timeout_wrapper() {
        TimeoutBackstop::ExecutorNoWrapper
    } else if let Some(why) = unknown {
        TimeoutBackstop::ExecutorPluginUnknown(why)
    } else if missing.iter().any(|p| p == TIMEOUT_PLUGIN) {
        TimeoutBackstop::ExecutorPluginMissing
    } else {
        TimeoutBackstop::Plugin
    };
    Evaluation {
        backstop,
        missing,
        recheck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str, active: bool) -> PluginInfo {
        PluginInfo {
            short_name: name.into(),
            active,
            enabled: active,
            version: None,
        }
    }

    #[test]
    fn the_builtin_template_needs_build_timeout() {
        let t = JobTemplate::builtin();
        assert_eq!(t.required_plugins(), [TIMEOUT_PLUGIN]);
        let with = evaluate(&t, &PluginCheck::Read(vec![plugin(TIMEOUT_PLUGIN, true)]));
        assert_eq!(with.backstop, TimeoutBackstop::Plugin);
        assert!(with.backstop.by_jenkins() && with.missing.is_empty() && !with.recheck);
        let disabled = evaluate(&t, &PluginCheck::Read(vec![plugin(TIMEOUT_PLUGIN, false)]));
        assert_eq!(disabled.backstop, TimeoutBackstop::ExecutorPluginMissing);
        assert_eq!(disabled.missing, [TIMEOUT_PLUGIN]);
        let none = evaluate(&t, &PluginCheck::Read(vec![]));
        assert_eq!(none.backstop, TimeoutBackstop::ExecutorPluginMissing);
        let forbidden = evaluate(&t, &PluginCheck::Forbidden("403".into()));
        assert!(matches!(
            forbidden.backstop,
            TimeoutBackstop::ExecutorPluginUnknown(_)
        ));
        assert!(!forbidden.recheck);
        assert!(evaluate(&t, &PluginCheck::Failed("down".into())).recheck);
        assert!(
            TimeoutBackstop::ExecutorPluginMissing
                .to_string()
                .contains("not installed")
        );
    }

    #[test]
    fn plugins_are_named_by_attribute_or_package() {
        let e = crate::xml::parse(
            "<a><x plugin=\"git@5.2\"/><hudson.plugins.build__timeout.Foo/><s class=\"com.cloudbees.hudson.plugins.folder.Folder\"/><hudson.tasks.Shell/></a>",
        )
        .unwrap();
        let names: Vec<Option<String>> = e.children.iter().map(plugin_of).collect();
        assert_eq!(
            names,
            [
                Some("git".into()),
                Some(TIMEOUT_PLUGIN.into()),
                Some("cloudbees-folder".into()),
                None
            ]
        );
    }
}
