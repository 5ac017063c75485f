//! Applying options from each source: one key, a batch of flags, the environment, a
//! config-file section. Every failure becomes a [`Problem`] naming the key and the source.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::{Kind, OptionKey, Options, screaming};
use crate::error::{Error, ErrorKind};

/// Where a value came from, so an error can say where to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A call in code (`with_option`).
    Code,
    /// A command-line flag (`--opt`).
    Flag,
    /// An environment variable.
    Env(String),
    /// A config-file section.
    File,
}

/// One refused option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key as given (or the variable's key part).
    pub key: String,
    /// Where the value came from.
    pub source: Source,
    /// What is wrong (never the value of a secret).
    pub reason: String,
    /// The declared key whose value was refused (not for unknown keys), so a later layer
    /// that sets it well can withdraw the problem.
    refused: Option<&'static str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)?;
        match &self.source {
            Source::Env(var) => write!(f, " (from {var})"),
            Source::Flag => write!(f, " (from --opt)"),
            Source::Code | Source::File => Ok(()),
        }
    }
}

/// The problems found while applying options, reported together by `build()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, key: impl Into<String>, source: Source, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            source,
            reason: reason.into(),
            refused: None,
        });
    }

    fn push_refused(&mut self, declared: &'static str, key: &str, source: &Source, reason: String) {
        self.0.push(Problem {
            key: key.to_string(),
            source: source.clone(),
            reason,
            refused: Some(declared),
        });
    }

    /// Drops the refused values of `declared`: a higher layer set it well (a flag fixing
    /// a bad environment variable). Unknown keys are never withdrawn.
    fn withdraw(&mut self, declared: &'static str) {
        self.0.retain(|p| p.refused != Some(declared));
    }

    /// Whether nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok` when empty, else one [`ErrorKind::ConfigInvalid`] listing every problem
    /// (`key: reason; key: reason`), tagged with `executor` and the first key.
    pub fn check(&self, executor: &'static str) -> Result<(), Error> {
        let Some(first) = self.0.first() else {
            return Ok(());
        };
        let message = self
            .0
            .iter()
            .map(Problem::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::new(ErrorKind::ConfigInvalid, message)
            .with_executor(executor)
            .with_operation("build")
            .with_context("key", first.key.clone()))
    }
}

/// The process environment as pairs (non-UTF-8 names and values converted lossily).
pub fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// What a key names: a declared option, or a sub-key of one.
enum Target<'a, C> {
    Key(&'a OptionKey<C>),
    Sub(&'a OptionKey<C>, Vec<&'a str>),
}

impl<'a, C> Target<'a, C> {
    fn key(&self) -> &'a OptionKey<C> {
        match self {
            Target::Key(k) | Target::Sub(k, _) => k,
        }
    }
}

/// The keys one layer set, to refuse two conflicting keys in one layer.
#[derive(Default)]
struct Layer {
    set: BTreeSet<&'static str>,
}

impl<C: 'static> Options<C> {
    fn resolve<'a>(&'a self, key: &'a str) -> Option<Target<'a, C>> {
        if let Some(k) = self.find_exact(key) {
            return Some(Target::Key(k));
        }
        // The longest declared prefix that takes sub-keys: `env.CI`, `resources.ram.high`.
        let mut cut = key.len();
        while let Some(dot) = key[..cut].rfind('.') {
            if let Some(k) = self.find_exact(&key[..dot]).filter(|k| k.takes_sub_keys()) {
                let rest = &key[dot + 1..];
                if rest.is_empty() {
                    return None;
                }
                let path = if k.entries {
                    vec![rest]
                } else {
                    rest.split('.').collect()
                };
                return Some(Target::Sub(k, path));
            }
            cut = dot;
        }
        None
    }

    fn unknown(&self, key: &str) -> String {
        let mut candidates: Vec<String> = self.spellings().map(str::to_string).collect();
        candidates.extend(
            self.keys
                .iter()
                .filter(|k| k.takes_sub_keys())
                .map(|k| format!("{}.<name>", k.name)),
        );
        match super::did_you_mean(key, candidates.iter().map(String::as_str)) {
            Some(s) => format!("unknown option of {}; did you mean `{s}`?", self.scheme),
            None => format!(
                "unknown option of {}; known: {}",
                self.scheme,
                self.keys
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn set_target(&self, config: &mut C, target: &Target<'_, C>, raw: &str) -> Result<(), String> {
        let k = target.key();
        let result = match target {
            Target::Key(k) => (k.set)(config, raw),
            Target::Sub(k, path) => {
                (k.set_path.as_ref().expect("sub-key target"))(config, path, raw)
            }
        };
        let result = if k.secret {
            result.map_err(|_| format!("must be {}", k.kind.with_article()))
        } else {
            result
        };
        if result.is_ok() {
            for other in &k.conflicts {
                if let Some(o) = self.find_exact(other) {
                    (o.reset)(config);
                }
            }
            for o in self.keys.iter().filter(|o| o.conflicts.contains(&k.name)) {
                (o.reset)(config);
            }
        }
        result
    }

    fn conflicts(&self, a: &OptionKey<C>, b: &str) -> bool {
        a.conflicts.contains(&b)
            || self
                .find_exact(b)
                .is_some_and(|o| o.conflicts.contains(&a.name))
    }

    /// Sets one key (a declared key, an alias, `<map>.<NAME>` or `<json>.<path>`), as
    /// `with_option` does; the error is the reason (unknown keys suggest the nearest).
    pub fn set(&self, config: &mut C, key: &str, value: &str) -> Result<(), String> {
        match self.resolve(key.trim()) {
            Some(t) => self.set_target(config, &t, value),
            None => Err(self.unknown(key.trim())),
        }
    }

    fn set_in_layer(
        &self,
        config: &mut C,
        layer: &mut Layer,
        key: &str,
        value: &str,
        source: &Source,
        problems: &mut Problems,
    ) {
        let key = key.trim();
        let Some(target) = self.resolve(key) else {
            problems.push(key, source.clone(), self.unknown(key));
            return;
        };
        let k = target.key();
        if let Some(other) = layer.set.iter().find(|o| self.conflicts(k, o)) {
            problems.push(
                key,
                source.clone(),
                format!("conflicts with {other}; set one of them"),
            );
            return;
        }
        match self.set_target(config, &target, value) {
            Ok(()) => {
                layer.set.insert(k.name);
                if matches!(target, Target::Key(_)) {
                    problems.withdraw(k.name);
                }
            }
            Err(reason) => problems.push_refused(k.name, key, source, reason),
        }
    }

    /// Applies `key=value` pairs in order as one layer (`--opt` flags, `from_iter`).
    pub fn apply_pairs<I, K, V>(
        &self,
        config: &mut C,
        pairs: I,
        source: Source,
        problems: &mut Problems,
    ) where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut layer = Layer::default();
        for (k, v) in pairs {
            self.set_in_layer(
                config,
                &mut layer,
                k.as_ref(),
                v.as_ref(),
                &source,
                problems,
            );
        }
    }

    /// Applies the environment layer from `vars` (all of them: fallbacks live outside the
    /// prefix): `EXECUTOR_<SCHEME>_CONFIG` first (a JSON section), then every
    /// `EXECUTOR_<SCHEME>_<KEY>` (unknown ones are problems), then the fallbacks of keys
    /// still unset.
    pub fn apply_vars<I, K, V>(&self, config: &mut C, vars: I, problems: &mut Problems)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let all: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let prefix = self.env_prefix();
        let whole = format!("{prefix}CONFIG");
        if let Some(json) = all.get(&whole) {
            match serde_json::from_str::<Value>(json) {
                Ok(v) => self.apply_section_from(config, &v, &Source::Env(whole.clone()), problems),
                Err(e) => problems.push(
                    "config",
                    Source::Env(whole.clone()),
                    format!("must be a JSON object ({e})"),
                ),
            }
        }
        // Suffix -> (key, is alias); canonical spellings applied after aliases so they win.
        let mut by_suffix: BTreeMap<String, (&OptionKey<C>, bool)> = BTreeMap::new();
        for k in &self.keys {
            for a in &k.aliases {
                by_suffix.entry(screaming(a)).or_insert((k, true));
            }
            by_suffix.insert(screaming(k.name), (k, false));
        }
        let mut found: Vec<(u8, usize, String, String, String)> = Vec::new();
        for (var, value) in &all {
            let Some(suffix) = var.strip_prefix(&prefix) else {
                continue;
            };
            if *var == whole || self.foreign_env.iter().any(|f| var.starts_with(f.as_str())) {
                continue;
            }
            if let Some((k, alias)) = by_suffix.get(suffix) {
                let order = self
                    .keys
                    .iter()
                    .position(|x| std::ptr::eq(x, *k))
                    .unwrap_or(0);
                found.push((
                    u8::from(!alias),
                    order,
                    k.name.to_string(),
                    var.clone(),
                    value.clone(),
                ));
                continue;
            }
            let entry = self.keys.iter().filter(|k| k.entries).find_map(|k| {
                let head = format!("{}_", screaming(k.name));
                suffix
                    .strip_prefix(&head)
                    .filter(|n| !n.is_empty())
                    .map(|n| (k, n.to_string()))
            });
            match entry {
                Some((k, name)) => found.push((
                    2,
                    0,
                    format!("{}.{name}", k.name),
                    var.clone(),
                    value.clone(),
                )),
                None => {
                    let vars: Vec<String> =
                        by_suffix.keys().map(|s| format!("{prefix}{s}")).collect();
                    let reason = match super::did_you_mean(var, vars.iter().map(String::as_str)) {
                        Some(s) => {
                            format!("unknown variable of {}; did you mean {s}?", self.scheme)
                        }
                        None => format!(
                            "unknown variable of {} (see `sdx options {}`)",
                            self.scheme, self.scheme
                        ),
                    };
                    problems.push(
                        suffix.to_ascii_lowercase(),
                        Source::Env(var.clone()),
                        reason,
                    );
                }
            }
        }
        found.sort_by_key(|a| (a.0, a.1));
        let mut layer = Layer::default();
        for (_, _, key, var, value) in found {
            self.set_in_layer(
                config,
                &mut layer,
                &key,
                &value,
                &Source::Env(var),
                problems,
            );
        }
        for f in &self.fallbacks {
            let (Some(key), Some(value)) = (f.key, all.get(f.var)) else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            let Some(k) = self.find_exact(key) else {
                continue;
            };
            if layer.set.contains(k.name) || layer.set.iter().any(|o| self.conflicts(k, o)) {
                continue;
            }
            self.set_in_layer(
                config,
                &mut layer,
                key,
                value,
                &Source::Env(f.var.to_string()),
                problems,
            );
        }
    }

    /// Applies a config-file section (a JSON object; TOML converts to one) as one layer.
    /// Nested objects are dotted keys unless the key takes a structured value; a table
    /// or an array for a scalar key, and unknown keys, are problems.
    pub fn apply_section(&self, config: &mut C, section: &Value, problems: &mut Problems) {
        self.apply_section_from(config, section, &Source::File, problems);
    }

    fn apply_section_from(
        &self,
        config: &mut C,
        section: &Value,
        source: &Source,
        problems: &mut Problems,
    ) {
        let Value::Object(map) = section else {
            problems.push(self.scheme, source.clone(), "must be a table of options");
            return;
        };
        let mut layer = Layer::default();
        self.walk(config, &mut layer, "", map, source, problems);
    }

    fn walk(
        &self,
        config: &mut C,
        layer: &mut Layer,
        prefix: &str,
        map: &serde_json::Map<String, Value>,
        source: &Source,
        problems: &mut Problems,
    ) {
        for (k, v) in map {
            let full = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let target = self.resolve(&full);
            let raw = match (&target, v) {
                (None, Value::Object(inner))
                    if self.spellings().any(|s| s.starts_with(&format!("{full}."))) =>
                {
                    self.walk(config, layer, &full, inner, source, problems);
                    continue;
                }
                (None, _) => {
                    problems.push(&full, source.clone(), self.unknown(&full));
                    continue;
                }
                (Some(Target::Sub(..)), v) => match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                (Some(Target::Key(key)), v) => match file_value(key, v) {
                    Ok(raw) => raw,
                    Err(reason) => {
                        problems.push(&full, source.clone(), reason);
                        continue;
                    }
                },
            };
            self.set_in_layer(config, layer, &full, &raw, source, problems);
        }
    }
}

/// The string form of a config-file value for `key`.
fn file_value<C>(key: &OptionKey<C>, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Bool(_) | Value::Number(_) => Ok(v.to_string()),
        Value::Array(_) if matches!(key.kind, Kind::List | Kind::Json) => Ok(v.to_string()),
        Value::Object(_) if matches!(key.kind, Kind::Map | Kind::Json) => Ok(v.to_string()),
        Value::Array(_) => Err(format!(
            "expected {}, got an array",
            key.kind.with_article()
        )),
        Value::Object(_) => Err(format!("expected {}, got a table", key.kind.with_article())),
    }
}
