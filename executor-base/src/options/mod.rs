//! One option system for every backend, in the manner of object_store's `ConfigKey`.
//!
//! Each backend declares its keys once, in an [`Options`] table next to its serde config:
//! the camelCase key, old spellings (aliases), a doc line, and a setter into the config
//! (usually a "lens" to the field, whose type knows its string form through
//! [`OptionValue`]). Retry, breaker, timeout, ecosystem and resource keys are declared once
//! here ([`Options::retry`], [`Options::breaker`], ...) and spelled the same everywhere.
//! From that one declaration, one implementation gives every backend:
//!
//! - `with_option(key, value)` and `FromIterator<(key, value)>` ([`ConfigBuilder`]);
//! - the environment: `EXECUTOR_<SCHEME>_<KEY>` for every key and alias
//!   ([`Options::env_var`]: `retry.maxRetries` of `docker` is
//!   `EXECUTOR_DOCKER_RETRY_MAX_RETRIES`), `EXECUTOR_<SCHEME>_CONFIG` holding a whole
//!   section as JSON, and declared engine fallbacks (`DOCKER_HOST`, `JENKINS_URL`, ...)
//!   used when the backend's own variable is absent ([`Options::fallback`]);
//! - config-file sections (TOML or JSON, as a [`serde_json::Value`]), nested tables
//!   meaning dotted keys (`[docker.retry] maxRetries = 3` is `retry.maxRetries`);
//! - the option tables of the READMEs and of `sdx options` ([`Options::markdown_table`],
//!   [`Options::check_readme`]).
//!
//! Unknown keys (and unknown `EXECUTOR_<SCHEME>_*` variables) are errors that suggest the
//! nearest known key; a value of the wrong type is an error naming the key and where the
//! value came from. Errors are collected and reported together by the builder's `build()`
//! as one [`ErrorKind::ConfigInvalid`](crate::ErrorKind::ConfigInvalid).
//!
//! # Precedence
//!
//! Each layer overrides the one before: **defaults < config file < environment < flags**
//! (`--opt`, typed `with_*` calls made after the layers). A builder applies what it is
//! given in call order, so `B::new().with_section(file).with_vars(env).with_options(flags)`
//! is the whole rule ([`ConfigBuilder::layered`] does exactly that). Within the
//! environment, a backend's own variable beats its engine fallback (`EXECUTOR_DOCKER_HOST`
//! over `DOCKER_HOST`). Keys that exclude each other (`host`/`socketPath`) are declared as
//! conflicting: setting one resets the other, and one layer setting both is an error.
//!
//! ```
//! use executor_base::options::{ConfigBuilder, Configurable, Configured, Options};
//! use std::sync::LazyLock;
//!
//! #[derive(Debug, Clone, Default)]
//! struct ToyConfig { prefix: String, slots: u32, retry: executor_base::RetryPolicy }
//!
//! impl Configurable for ToyConfig {
//!     fn options() -> &'static Options<Self> {
//!         static OPTIONS: LazyLock<Options<ToyConfig>> = LazyLock::new(|| {
//!             Options::<ToyConfig>::new("toy")
//!                 .field("prefix", "Prefix of every name.", |c| &mut c.prefix)
//!                 .field("slots", "Builds run at once.", |c| &mut c.slots)
//!                 .alias("maxBuilds")
//!                 .retry(|c| &mut c.retry)
//!         });
//!         &OPTIONS
//!     }
//! }
//!
//! let c = Configured::<ToyConfig>::default()
//!     .with_section(&serde_json::json!({"slots": 2, "retry": {"maxRetries": 1}}))
//!     .with_vars([("EXECUTOR_TOY_PREFIX", "ci-"), ("EXECUTOR_TOY_SLOTS", "3")])
//!     .with_option("maxBuilds", "4")
//!     .finish()
//!     .unwrap();
//! assert_eq!((c.prefix.as_str(), c.slots, c.retry.max_retries), ("ci-", 4, 1));
//!
//! let err = Configured::<ToyConfig>::default().with_option("slot", "2").finish().unwrap_err();
//! assert_eq!(err.message(), "slot: unknown option of toy; did you mean `slots`?");
//! let err = Configured::<ToyConfig>::default()
//!     .with_vars([("EXECUTOR_TOY_SLOTS", "many")]).finish().unwrap_err();
//! assert!(err.message().starts_with("slots: must be an integer"), "{err}");
//! assert!(err.message().ends_with("(from EXECUTOR_TOY_SLOTS)"), "{err}");
//! ```

mod apply;
mod builder;
mod shared;
mod suggest;
mod table;
mod value;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use apply::{Problem, Problems, Source, env_vars};
pub use builder::{ConfigBuilder, Configurable, Configured};
pub use suggest::{did_you_mean, edit_distance};
pub use value::{Kind, OptionValue};

type SetFn<C> = Box<dyn Fn(&mut C, &str) -> Result<(), String> + Send + Sync>;
type SetPathFn<C> = Box<dyn Fn(&mut C, &[&str], &str) -> Result<(), String> + Send + Sync>;
type ShowFn<C> = Box<dyn Fn(&C) -> String + Send + Sync>;
type ResetFn<C> = Box<dyn Fn(&mut C) + Send + Sync>;

/// The environment variable of a backend option: `EXECUTOR_<SCHEME>_<KEY>`, both in
/// SCREAMING_SNAKE_CASE, dots of nested keys becoming `_`.
///
/// ```
/// use executor_base::options::env_var_name;
/// assert_eq!(env_var_name("docker", "pullPolicy"), "EXECUTOR_DOCKER_PULL_POLICY");
/// assert_eq!(env_var_name("k8s", "url"), "EXECUTOR_K8S_URL");
/// assert_eq!(env_var_name("gearmanWorker", "maxBuilds"), "EXECUTOR_GEARMAN_WORKER_MAX_BUILDS");
/// assert_eq!(env_var_name("docker", "retry.maxRetries"), "EXECUTOR_DOCKER_RETRY_MAX_RETRIES");
/// ```
pub fn env_var_name(scheme: &str, key: &str) -> String {
    format!("EXECUTOR_{}_{}", screaming(scheme), screaming(key))
}

/// `pullPolicy` -> `PULL_POLICY`, `retry.maxRetries` -> `RETRY_MAX_RETRIES`.
fn screaming(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c == '.' || c == '-' {
            out.push('_');
        } else if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c);
        } else {
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}

/// An environment variable read when the backend's own `EXECUTOR_<SCHEME>_<KEY>` is absent,
/// in the engine's usual name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The variable (`DOCKER_HOST`).
    pub var: &'static str,
    /// The key it sets, or `None` when the engine's own client reads it (`KUBECONFIG`).
    pub key: Option<&'static str>,
    /// What it means, for the tables.
    pub doc: &'static str,
}

/// One declared option of a config type `C`.
pub struct OptionKey<C> {
    name: &'static str,
    aliases: Vec<&'static str>,
    doc: &'static str,
    kind: Kind,
    secret: bool,
    conflicts: Vec<&'static str>,
    set: SetFn<C>,
    set_path: Option<SetPathFn<C>>,
    entries: bool,
    show: ShowFn<C>,
    reset: ResetFn<C>,
}

impl<C> fmt::Debug for OptionKey<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionKey")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("kind", &self.kind)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl<C> OptionKey<C> {
    /// The camelCase key (`pullPolicy`, `retry.maxRetries`).
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// Other accepted spellings.
    pub fn aliases(&self) -> &[&'static str] {
        &self.aliases
    }
    /// The doc line.
    pub fn doc(&self) -> &'static str {
        self.doc
    }
    /// The kind of value.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// Whether the value is a secret (never shown, never echoed in errors).
    pub fn is_secret(&self) -> bool {
        self.secret
    }
    /// Keys that exclude this one.
    pub fn conflicts(&self) -> &[&'static str] {
        &self.conflicts
    }
    /// Whether `<key>.<name>` sets one entry (`env.CI` of the process backend's `env`
    /// map) or, for JSON options, one nested field (`resources.ram.high`).
    pub fn takes_sub_keys(&self) -> bool {
        self.set_path.is_some()
    }
    /// The value in `config`, as shown in the tables (`[REDACTED]` for a set secret).
    pub fn show(&self, config: &C) -> String {
        (self.show)(config)
    }
    fn matches(&self, key: &str) -> bool {
        self.name == key || self.aliases.contains(&key)
    }
}

/// A backend's declared options: its scheme (`docker`), its keys, its environment
/// fallbacks. Build it once (in a `LazyLock`) with the declaration methods, and hand it
/// out through [`Configurable::options`].
pub struct Options<C> {
    scheme: &'static str,
    keys: Vec<OptionKey<C>>,
    fallbacks: Vec<Fallback>,
    foreign_env: Vec<String>,
}

impl<C> fmt::Debug for Options<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("scheme", &self.scheme)
            .field(
                "keys",
                &self.keys.iter().map(|k| k.name).collect::<Vec<_>>(),
            )
            .field("fallbacks", &self.fallbacks)
            .finish()
    }
}

impl<C: Clone + Default + 'static> Options<C> {
    /// An empty declaration for `scheme` (`docker`, `gearmanWorker`, `api`).
    pub fn new(scheme: &'static str) -> Self {
        Self {
            scheme,
            keys: Vec::new(),
            fallbacks: Vec::new(),
            foreign_env: Vec::new(),
        }
    }

    /// A key for a field whose type has a string form ([`OptionValue`]); `lens` points
    /// from the config to the field.
    pub fn field<T, F>(self, name: &'static str, doc: &'static str, lens: F) -> Self
    where
        T: OptionValue + Clone + 'static,
        F: for<'a> Fn(&'a mut C) -> &'a mut T + Copy + Send + Sync + 'static,
    {
        self.custom(
            name,
            doc,
            T::kind(),
            move |c, raw| {
                *lens(c) = T::parse_option(raw)?;
                Ok(())
            },
            move |c| lens(&mut c.clone()).show_option(),
            move |c| *lens(c) = lens(&mut C::default()).clone(),
        )
    }

    /// A key for a structured field set from JSON (in a config file: a table or an
    /// array). An object is merged into the current value, so `{"ram": {"high": 8}}`
    /// changes only that tier; `<key>.<path>` sets one nested field
    /// (`resources.ram.high=8`).
    pub fn json<T, F>(mut self, name: &'static str, doc: &'static str, lens: F) -> Self
    where
        T: Serialize + DeserializeOwned + Clone + 'static,
        F: for<'a> Fn(&'a mut C) -> &'a mut T + Copy + Send + Sync + 'static,
    {
        self = self.custom(
            name,
            doc,
            Kind::Json,
            move |c, raw| {
                let patch: Value =
                    serde_json::from_str(raw.trim()).map_err(|e| format!("must be JSON ({e})"))?;
                merge_into(lens(c), patch)
            },
            move |c| serde_json::to_string(lens(&mut c.clone())).unwrap_or_else(|e| e.to_string()),
            move |c| *lens(c) = lens(&mut C::default()).clone(),
        );
        self.last().set_path = Some(Box::new(move |c, path, raw| {
            let leaf = serde_json::from_str::<Value>(raw.trim())
                .unwrap_or_else(|_| Value::String(raw.trim().to_string()));
            let patch = path.iter().rev().fold(leaf, |v, p| {
                Value::Object([(p.to_string(), v)].into_iter().collect())
            });
            merge_into(lens(c), patch)
        }));
        self
    }

    /// A key for a map of strings whose entries may also be set one by one:
    /// `<key>.<NAME>=value` and `EXECUTOR_<SCHEME>_<KEY>_<NAME>=value` (the name kept as
    /// written). The whole map is `k=v,k=v` or a JSON object, merged into the current one.
    pub fn entries<F>(mut self, name: &'static str, doc: &'static str, lens: F) -> Self
    where
        F: for<'a> Fn(&'a mut C) -> &'a mut std::collections::BTreeMap<String, String>
            + Copy
            + Send
            + Sync
            + 'static,
    {
        self = self.custom(
            name,
            doc,
            Kind::Map,
            move |c, raw| {
                let add = <std::collections::BTreeMap<String, String>>::parse_option(raw)?;
                lens(c).extend(add);
                Ok(())
            },
            move |c| lens(&mut c.clone()).show_option(),
            move |c| lens(c).clear(),
        );
        let last = self.last();
        last.entries = true;
        last.set_path = Some(Box::new(move |c, path, raw| {
            lens(c).insert(path.join("."), raw.to_string());
            Ok(())
        }));
        self
    }

    /// A key with hand-written parsing: `set` parses `raw` into the config, `show` renders
    /// the current value, `reset` restores the default (used when a conflicting key is set).
    pub fn custom(
        mut self,
        name: &'static str,
        doc: &'static str,
        kind: Kind,
        set: impl Fn(&mut C, &str) -> Result<(), String> + Send + Sync + 'static,
        show: impl Fn(&C) -> String + Send + Sync + 'static,
        reset: impl Fn(&mut C) + Send + Sync + 'static,
    ) -> Self {
        assert!(
            self.find_exact(name).is_none(),
            "option {name} of {} declared twice",
            self.scheme
        );
        assert!(
            name != "config",
            "`config` is reserved for EXECUTOR_<SCHEME>_CONFIG"
        );
        self.keys.push(OptionKey {
            name,
            aliases: Vec::new(),
            doc,
            kind,
            secret: false,
            conflicts: Vec::new(),
            set: Box::new(set),
            set_path: None,
            entries: false,
            show: Box::new(show),
            reset: Box::new(reset),
        });
        self
    }

    /// Another accepted spelling of the last declared key (its environment variable is
    /// read too).
    pub fn alias(mut self, alias: &'static str) -> Self {
        assert!(
            self.find_exact(alias).is_none(),
            "alias {alias} of {} already names a key",
            self.scheme
        );
        self.last().aliases.push(alias);
        self
    }

    /// Marks the last declared key secret: its value is never shown, never echoed.
    pub fn secret(mut self) -> Self {
        self.last().secret = true;
        self
    }

    /// Declares that the last key and `other` exclude each other: setting one resets the
    /// other, and one layer (a file section, the environment, one `--opt` batch) setting
    /// both is an error.
    pub fn conflicts_with(mut self, other: &'static str) -> Self {
        self.last().conflicts.push(other);
        self
    }

    /// Reads `var` for `key` when `EXECUTOR_<SCHEME>_<KEY>` (and every key conflicting with
    /// `key`) is absent from the environment: the engine's usual variable (`DOCKER_HOST`).
    pub fn fallback(mut self, var: &'static str, key: &'static str, doc: &'static str) -> Self {
        assert!(
            self.find_exact(key).is_some(),
            "fallback for undeclared {key}"
        );
        self.fallbacks.push(Fallback {
            var,
            key: Some(key),
            doc,
        });
        self
    }

    /// Documents a variable the engine's own client reads (`KUBECONFIG`).
    pub fn engine_variable(mut self, var: &'static str, doc: &'static str) -> Self {
        self.fallbacks.push(Fallback {
            var,
            key: None,
            doc,
        });
        self
    }

    /// Variables under this backend's prefix that belong to another scheme
    /// (`EXECUTOR_GEARMAN_WORKER_` under `EXECUTOR_GEARMAN_`): not ours, not unknown.
    pub fn foreign_env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.foreign_env.push(prefix.into());
        self
    }

    fn last(&mut self) -> &mut OptionKey<C> {
        self.keys.last_mut().expect("declare a key first")
    }
}

impl<C> Options<C> {
    /// The scheme (`docker`).
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The declared keys, in declaration order.
    pub fn keys(&self) -> &[OptionKey<C>] {
        &self.keys
    }

    /// The declared fallbacks.
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// The environment variable of `key` (`EXECUTOR_<SCHEME>_<KEY>`).
    pub fn env_var(&self, key: &str) -> String {
        env_var_name(self.scheme, key)
    }

    /// The prefix of this backend's variables (`EXECUTOR_DOCKER_`).
    pub fn env_prefix(&self) -> String {
        format!("EXECUTOR_{}_", screaming(self.scheme))
    }

    /// The key named `key` exactly or by an alias.
    pub fn find_exact(&self, key: &str) -> Option<&OptionKey<C>> {
        self.keys.iter().find(|k| k.matches(key))
    }

    /// Every accepted spelling, for suggestions.
    fn spellings(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys
            .iter()
            .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
    }
}

/// Merges `patch` into the JSON form of `slot` (objects key by key, anything else
/// replaced) and reads it back.
fn merge_into<T: Serialize + DeserializeOwned>(slot: &mut T, patch: Value) -> Result<(), String> {
    let mut current = serde_json::to_value(&*slot).map_err(|e| e.to_string())?;
    merge(&mut current, patch);
    *slot = serde_json::from_value(current).map_err(|e| e.to_string())?;
    Ok(())
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
