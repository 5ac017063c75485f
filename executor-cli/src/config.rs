//! Settings: flags and environment variables (clap) over an optional TOML file over
//! defaults.
//!
//! ```toml
//! executor = "process,docker"       # the router's backends; the first is the default
//!
//! [api]                             # executor_api::ApiConfig (camelCase keys)
//! statusPollMs = 500
//!
//! [process]                         # executor_process::ProcessConfig
//! stopGraceMs = 2000
//!
//! [docker]                          # executor_docker::DockerConfig, and so on for
//!                                   # [k8s], [jenkins], [gearman], [gearmanWorker]
//! ```
//!
//! A backend's section replaces that backend's `EXECUTOR_<SCHEME>_*` environment
//! variables; without a section the backend reads them (`from_env`).

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::backends;
use crate::error::{CliError, CliResult};

/// The TOML file's contents; each backend's section is kept raw and typed by the backend
/// that reads it (so a file may name a backend this build of `sdx` does not include).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    /// Default of `--executor`.
    pub executor: Option<String>,
    /// `[api]`: the reference API's options.
    pub api: Option<toml::Value>,
    /// `[process]`.
    pub process: Option<toml::Value>,
    /// `[docker]`.
    pub docker: Option<toml::Value>,
    /// `[k8s]`.
    pub k8s: Option<toml::Value>,
    /// `[jenkins]`.
    pub jenkins: Option<toml::Value>,
    /// `[gearman]`.
    pub gearman: Option<toml::Value>,
    /// `[gearmanWorker]`: the launcher worker's options.
    pub gearman_worker: Option<toml::Value>,
}

impl FileConfig {
    /// Reads and parses `path` (no file: defaults).
    pub fn load(path: Option<&Path>) -> CliResult<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            CliError::usage(format!(
                "config file {}: {}",
                path.display(),
                e.message().trim()
            ))
        })
    }

    /// The raw section `name`.
    fn raw(&self, name: &str) -> Option<&toml::Value> {
        match name {
            "api" => self.api.as_ref(),
            "process" => self.process.as_ref(),
            "docker" => self.docker.as_ref(),
            "k8s" => self.k8s.as_ref(),
            "jenkins" => self.jenkins.as_ref(),
            "gearman" => self.gearman.as_ref(),
            "gearmanWorker" => self.gearman_worker.as_ref(),
            _ => None,
        }
    }

    /// Section `name` as `T`; the error names the section and the problem.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> CliResult<Option<T>> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => v.clone().try_into::<T>().map(Some).map_err(|e| {
                CliError::usage(format!("config file [{name}]: {}", e.message().trim()))
            }),
        }
    }
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
                String::new()
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
    fn file_sections_are_typed_with_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sdx.toml");
        std::fs::write(
            &p,
            "executor = \"process\"\n[api]\nstatusPollMs = 50\n[process]\nstopGraceMs = \"soon\"\n",
        )
        .unwrap();
        let f = FileConfig::load(Some(&p)).unwrap();
        let api: executor_api::ApiConfig = f.section("api").unwrap().unwrap();
        assert_eq!(api.status_poll_ms, 50);
        let e = f
            .section::<executor_process::ProcessConfig>("process")
            .unwrap_err();
        assert!(
            e.message.starts_with("config file [process]:"),
            "{}",
            e.message
        );
        std::fs::write(&p, "bogus = 1\n").unwrap();
        let e = FileConfig::load(Some(&p)).unwrap_err();
        assert!(e.message.contains("unknown field"), "{}", e.message);
        assert!(FileConfig::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
