//! [`ConfigBuilder`]: the option methods every builder gets from its declarations.

use serde_json::Value;

use super::{Options, Problems, Source, env_vars};
use crate::error::Error;

/// A config type with declared options.
pub trait Configurable: Clone + Default + Send + Sync + 'static {
    /// The declarations (built once, e.g. in a `LazyLock`).
    fn options() -> &'static Options<Self>;
}

/// The option methods of a builder, implemented once for every backend: a builder
/// exposes its config and a [`Problems`] list, and gets `with_option`, `with_options`,
/// `with_vars`, `with_section`, `from_env` and [`ConfigBuilder::layered`].
///
/// Problems are kept until the builder's `build()`, which reports them all in one
/// [`crate::ErrorKind::ConfigInvalid`] error ([`Problems::check`]).
pub trait ConfigBuilder: Sized {
    /// The config the options set.
    type Config: Configurable;

    /// The config and the problem list, to apply options to.
    fn option_parts(&mut self) -> (&mut Self::Config, &mut Problems);

    /// Sets one option by key (`pullPolicy`, `retry.maxRetries`, an alias, `env.CI`).
    fn with_option(mut self, key: &str, value: &str) -> Self {
        let (config, problems) = self.option_parts();
        Self::Config::options().apply_pairs(config, [(key, value)], Source::Code, problems);
        self
    }

    /// Sets options from `key=value` pairs as one layer (two conflicting keys in one
    /// batch are refused).
    fn with_options<I, K, V>(mut self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (config, problems) = self.option_parts();
        Self::Config::options().apply_pairs(config, pairs, Source::Code, problems);
        self
    }

    /// Applies the environment layer from these variables (see
    /// [`Options::apply_vars`]); other variables are ignored.
    fn with_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (config, problems) = self.option_parts();
        Self::Config::options().apply_vars(config, vars, problems);
        self
    }

    /// Applies a config-file section (TOML converted to JSON, or JSON).
    fn with_section(mut self, section: &Value) -> Self {
        let (config, problems) = self.option_parts();
        Self::Config::options().apply_section(config, section, problems);
        self
    }

    /// Defaults overridden by the process environment.
    fn from_env() -> Self
    where
        Self: Default,
    {
        Self::default().with_vars(env_vars())
    }

    /// The layers in precedence order over the current config: the file section, then
    /// the environment `vars`, then the flags, so that flag > env > file > default.
    fn layered<I, K, V>(self, section: Option<&Value>, vars: I, flags: &[(String, String)]) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let b = match section {
            Some(s) => self.with_section(s),
            None => self,
        };
        let mut b = b.with_vars(vars);
        let (config, problems) = b.option_parts();
        Self::Config::options().apply_pairs(
            config,
            flags.iter().map(|(k, v)| (k, v)),
            Source::Flag,
            problems,
        );
        b
    }
}

/// A config with its problems, for configs without a builder of their own (the
/// reference API's, the Gearman launcher worker's).
///
/// ```
/// use executor_base::options::{ConfigBuilder, Configured};
/// # #[derive(Debug, Clone, Default)] struct Toy { n: u32 }
/// # impl executor_base::options::Configurable for Toy {
/// #     fn options() -> &'static executor_base::options::Options<Self> {
/// #         static O: std::sync::LazyLock<executor_base::options::Options<Toy>> =
/// #             std::sync::LazyLock::new(|| executor_base::options::Options::<Toy>::new("toy").field("n", "n", |c| &mut c.n));
/// #         &O
/// #     }
/// # }
/// let toy: Toy = Configured::default().with_option("n", "3").finish().unwrap();
/// assert_eq!(toy.n, 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Configured<C> {
    config: C,
    problems: Problems,
}

impl<C: Configurable> Configured<C> {
    /// Starts from `config`.
    pub fn new(config: C) -> Self {
        Self {
            config,
            problems: Problems::default(),
        }
    }

    /// The config so far (problems not checked).
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The config, or one `ConfigInvalid` error listing every problem.
    pub fn finish(self) -> Result<C, Error> {
        self.problems.check(C::options().scheme())?;
        Ok(self.config)
    }
}

impl<C: Configurable> ConfigBuilder for Configured<C> {
    type Config = C;
    fn option_parts(&mut self) -> (&mut C, &mut Problems) {
        (&mut self.config, &mut self.problems)
    }
}
