//! Settings: `--opt` flags over environment variables over an optional TOML file over
//! defaults, for every backend and the reference API alike (executor-base's option
//! system does the layering; see `executor_base::options`).
//!
//! ```toml
//! executor = "process,docker"       # the router's backends; the first is the default
//!
//! [api]                             # `sdx options api`
//! statusPollMs = 500
//!
//! [process]                         # `sdx options process`
//! stopGraceMs = 2000
//!
//! [docker]                          # and so on for [k8s], [jenkins], [gearman],
//! pullPolicy = "never"              # [gearmanWorker]
//! [docker.retry]                    # nested tables are dotted keys: retry.maxRetries
//! maxRetries = 3
//! ```
//!
//! Every key of a section can also come from `EXECUTOR_<SCHEME>_<KEY>` (which beats the
//! file) and from `--opt <scheme>.<key>=<value>` (which beats both). Unknown sections,
//! unknown keys and values of the wrong type are refused when the file is loaded, naming
//! the key and suggesting the nearest known one.

use std::collections::BTreeMap;
use std::path::Path;

use executor_base::options::{ConfigBuilder, Configurable, Configured, did_you_mean, env_vars};
use serde_json::Value;

use crate::backends;
use crate::error::{CliError, CliResult};

/// The option schemes `sdx` knows: the backends, the Gearman launcher worker, the API.
pub const SCHEMES: &[&str] = &[
    "api",
    "process",
    "docker",
    "k8s",
    "jenkins",
    "gearman",
    "gearmanWorker",
];

/// Applies a config-file section and `--opt` flags to a default config; the problems as
/// an error.
pub type CheckFn = fn(Option<&Value>, &[(String, String)]) -> Result<(), executor_base::Error>;

/// What one compiled-in scheme offers the command line.
#[derive(Debug, Clone, Copy)]
pub struct Scheme {
    /// Its name (`docker`).
    pub name: &'static str,
    /// Applies a section and flags to a default config; the problems as an error.
    pub check: CheckFn,
    /// Its plain-text option listing.
    pub text: fn() -> String,
    /// Its Markdown option table.
    pub markdown: fn() -> String,
}

fn scheme<C: Configurable>() -> Scheme {
    Scheme {
        name: C::options().scheme(),
        check: |section, flags| {
            Configured::<C>::default()
                .layered(section, std::iter::empty::<(&str, &str)>(), flags)
                .finish()
                .map(|_| ())
        },
        text: || C::options().text_table(),
        markdown: || C::options().markdown_table(),
    }
}

/// The schemes compiled into this `sdx`, in [`SCHEMES`] order.
pub fn compiled_schemes() -> Vec<Scheme> {
    #[cfg_attr(
        not(any(
            feature = "docker",
            feature = "k8s",
            feature = "jenkins",
            feature = "gearman"
        )),
        allow(unused_mut)
    )]
    let mut out = vec![
        scheme::<executor_api::ApiConfig>(),
        scheme::<executor_process::ProcessConfig>(),
    ];
    #[cfg(feature = "docker")]
    out.push(scheme::<executor_docker::DockerConfig>());
    #[cfg(feature = "k8s")]
    out.push(scheme::<executor_k8s::K8sConfig>());
    #[cfg(feature = "jenkins")]
    out.push(scheme::<executor_jenkins::JenkinsConfig>());
    #[cfg(feature = "gearman")]
    {
        out.push(scheme::<executor_gearman::GearmanConfig>());
        out.push(scheme::<executor_gearman::WorkerConfig>());
    }
    out
}

/// The compiled scheme `name`, or a usage error suggesting the nearest (and saying when
/// the scheme exists but was not compiled in).
pub fn find_scheme(name: &str, what: &str) -> CliResult<Scheme> {
    if let Some(s) = compiled_schemes().into_iter().find(|s| s.name == name) {
        return Ok(s);
    }
    if SCHEMES.contains(&name) {
        let feature = if name == "gearmanWorker" {
            "gearman"
        } else {
            name
        };
        return Err(CliError::usage(format!(
            "{what}: this sdx was built without {name} (cargo build -p executor-cli --features {feature})"
        )));
    }
    let hint = did_you_mean(name, SCHEMES.iter().copied())
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(CliError::usage(format!(
        "{what}: unknown section {name:?}, expected one of {}{hint}",
        SCHEMES.join(", ")
    )))
}

/// The config file's contents and the `--opt` flags: everything but the environment,
/// which is read where a config is built.
#[derive(Debug, Default, Clone)]
pub struct FileConfig {
    /// Default of `--executor`.
    pub executor: Option<String>,
    /// The file's sections (`[docker]` ...) as JSON, by scheme.
    sections: BTreeMap<String, Value>,
    /// The `--opt` flags by scheme, in the order given.
    flags: BTreeMap<String, Vec<(String, String)>>,
}

impl FileConfig {
    /// Reads and checks `path` (no file: defaults) and the `--opt` flags
    /// (`<scheme>.<key>=<value>`). Every section of a compiled-in scheme and every flag is
    /// applied to a default config here, so a misspelt key fails at once, whichever
    /// backends this command uses.
    pub fn load(path: Option<&Path>, opts: &[String]) -> CliResult<Self> {
        let mut me = Self::default();
        if let Some(path) = path {
            let at = |m: String| CliError::usage(format!("config file {}: {m}", path.display()));
            let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| at(e.message().trim().to_string()))?;
            for (k, v) in table {
                match (k.as_str(), v) {
                    ("executor", toml::Value::String(s)) => me.executor = Some(s),
                    ("executor", _) => {
                        return Err(at(
                            "executor: expected a string like \"process,docker\"".into()
                        ));
                    }
                    (name, v) => {
                        if !SCHEMES.contains(&name) {
                            let mut known = vec!["executor"];
                            known.extend(SCHEMES);
                            let hint = did_you_mean(name, known.iter().copied())
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                            return Err(at(format!(
                                "unknown key `{name}`, expected executor or a section ({}){hint}",
                                SCHEMES.join(", ")
                            )));
                        }
                        if !v.is_table() {
                            return Err(at(format!("[{name}] must be a table of options")));
                        }
                        let json =
                            serde_json::to_value(v).map_err(|e| at(format!("[{name}]: {e}")))?;
                        me.sections.insert(name.to_string(), json);
                    }
                }
            }
            for s in compiled_schemes() {
                if let Some(section) = me.sections.get(s.name) {
                    (s.check)(Some(section), &[])
                        .map_err(|e| at(format!("[{}] {}", s.name, e.message())))?;
                }
            }
        }
        for opt in opts {
            let (scheme, key, value) = parse_opt(opt)?;
            let s = find_scheme(scheme, "--opt")?;
            let pair = [(key.to_string(), value.to_string())];
            (s.check)(None, &pair)
                .map_err(|e| CliError::usage(format!("--opt {scheme}.{}", e.message())))?;
            me.flags.entry(scheme.to_string()).or_default().extend(pair);
        }
        Ok(me)
    }

    /// Builds `B` from the layers of `scheme`: its file section, then the environment,
    /// then its `--opt` flags.
    pub fn layered<B: ConfigBuilder>(&self, scheme: &str, builder: B) -> B {
        let empty = Vec::new();
        builder.layered(
            self.sections.get(scheme),
            env_vars(),
            self.flags.get(scheme).unwrap_or(&empty),
        )
    }

    /// The config of `scheme` from its layers, or a usage error naming every bad key.
    pub fn config<C: Configurable>(&self) -> CliResult<C> {
        let scheme = C::options().scheme();
        self.layered(scheme, Configured::<C>::default())
            .finish()
            .map_err(|e| CliError::from(e).context(format!("{scheme} options")))
    }
}

/// `docker.pullPolicy=never` -> (`docker`, `pullPolicy`, `never`).
fn parse_opt(opt: &str) -> CliResult<(&str, &str, &str)> {
    let bad = || {
        CliError::usage(format!(
            "--opt {opt:?}: expected <scheme>.<key>=<value>, e.g. docker.pullPolicy=never (see `sdx options`)"
        ))
    };
    let (name, value) = opt.split_once('=').ok_or_else(bad)?;
    let (scheme, key) = name.trim().split_once('.').ok_or_else(bad)?;
    if scheme.is_empty() || key.is_empty() {
        return Err(bad());
    }
    Ok((scheme, key, value))
}

/// The backends asked for: `--executor`/`SDX_EXECUTOR`, else the file's `executor`, else
/// `process`. `all` means every compiled-in backend. Unknown names are refused, naming
/// the known ones.
pub fn executors(flag: Option<&str>, file: &FileConfig) -> CliResult<Vec<String>> {
    let raw = flag
        .or(file.executor.as_deref())
        .unwrap_or(backends::PROCESS);
    let mut out: Vec<String> = Vec::new();
    for name in raw
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
    {
        if name == "all" {
            for b in backends::compiled() {
                if !out.iter().any(|o| o == b) {
                    out.push(b.to_string());
                }
            }
            continue;
        }
        if !backends::compiled().contains(&name.as_str()) {
            let hint = if backends::KNOWN.contains(&name.as_str()) {
                format!(
                    " (this sdx was built without it: cargo build -p executor-cli --features {name})"
                )
            } else {
                did_you_mean(&name, backends::KNOWN.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default()
            };
            return Err(CliError::usage(format!(
                "--executor: unknown backend {name:?}, expected one of {}{hint}",
                backends::compiled().join(", ")
            )));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        out.push(backends::PROCESS.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sdx.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn executor_lists() {
        let f = FileConfig::default();
        assert_eq!(executors(None, &f).unwrap(), ["process"]);
        assert_eq!(
            executors(Some(" Process , process"), &f).unwrap(),
            ["process"]
        );
        let e = executors(Some("dokcer"), &f).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("unknown backend \"dokcer\""),
            "{}",
            e.message
        );
        let all = executors(Some("all"), &f).unwrap();
        assert_eq!(all[0], "process");
        assert_eq!(all.len(), backends::compiled().len());
        let f = FileConfig {
            executor: Some("process".into()),
            ..FileConfig::default()
        };
        assert_eq!(executors(None, &f).unwrap(), ["process"]);
    }

    #[test]
    fn file_sections_are_checked_with_named_errors_and_suggestions() {
        let (_d, p) = file(
            "executor = \"process\"\n[api]\nstatusPollMs = 50\n[process]\nstopGraceMs = 2000\n",
        );
        let f = FileConfig::load(Some(&p), &[]).unwrap();
        let api: executor_api::ApiConfig = f.config().unwrap();
        assert_eq!(api.status_poll_ms, 50);

        let (_d, p) = file("[process]\nstopGraceMs = \"soon\"\n");
        let e = FileConfig::load(Some(&p), &[]).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .contains("[process] stopGraceMs: must be an integer"),
            "{}",
            e.message
        );

        let (_d, p) = file("[process]\nstopGracems = 1\n");
        let e = FileConfig::load(Some(&p), &[]).unwrap_err();
        assert!(
            e.message.contains("did you mean `stopGraceMs`?"),
            "{}",
            e.message
        );

        let (_d, p) = file("[api]\nstatusPolMs = 1\n");
        let e = FileConfig::load(Some(&p), &[]).unwrap_err();
        assert!(
            e.message
                .contains("[api] statusPolMs: unknown option of api; did you mean `statusPollMs`?"),
            "{}",
            e.message
        );

        let (_d, p) = file("[procss]\nstopGraceMs = 1\n");
        let e = FileConfig::load(Some(&p), &[]).unwrap_err();
        assert!(
            e.message.contains("unknown key `procss`")
                && e.message.contains("did you mean `process`?"),
            "{}",
            e.message
        );

        let (_d, p) = file("executor = 1\n");
        assert!(FileConfig::load(Some(&p), &[]).is_err());
        assert!(FileConfig::load(Some(&p.with_file_name("missing.toml")), &[]).is_err());
    }

    #[test]
    fn opts_are_checked_and_layered_over_the_file() {
        let (_d, p) = file("[process]\nstopGraceMs = 1000\ntimeoutGraceMs = 5000\n");
        let f = FileConfig::load(Some(&p), &["process.stopGraceMs=2000".into()]).unwrap();
        let c: executor_process::ProcessConfig = f.config().unwrap();
        assert_eq!((c.stop_grace_ms, c.timeout_grace_ms), (2000, 5000));

        for (opt, want) in [
            ("process.stopGraceMs", "expected <scheme>.<key>=<value>"),
            ("stopGraceMs=1", "expected <scheme>.<key>=<value>"),
            ("procss.stopGraceMs=1", "did you mean `process`?"),
            ("process.stopGrace=1", "did you mean `stopGraceMs`?"),
            (
                "process.stopGraceMs=soon",
                "--opt process.stopGraceMs: must be an integer",
            ),
        ] {
            let e = FileConfig::load(None, &[opt.to_string()]).unwrap_err();
            assert_eq!(e.code, 2, "{opt}");
            assert!(e.message.contains(want), "{opt}: {}", e.message);
        }
    }
}
