//! The option system: sources, precedence, conflicts, unknown keys, type errors, tables.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use executor_base::options::{ConfigBuilder, Configurable, Configured, Options};
use executor_base::secrecy::{ExposeSecret, SecretString};
use executor_base::{BreakerConfig, ErrorKind, ResourceTable, RetryPolicy, TimeoutPolicy};
use serde_json::json;

#[derive(Debug, Clone, Default)]
struct Toy {
    host: Option<String>,
    socket_path: Option<String>,
    slots: u32,
    token: Option<SecretString>,
    env: BTreeMap<String, String>,
    resources: ResourceTable,
    retry: RetryPolicy,
    breaker: BreakerConfig,
    timeout: TimeoutPolicy,
}

impl Configurable for Toy {
    fn options() -> &'static Options<Self> {
        static O: LazyLock<Options<Toy>> = LazyLock::new(|| {
            Options::<Toy>::new("toyEngine")
                .field("host", "Endpoint.", |c| &mut c.host)
                .conflicts_with("socketPath")
                .field("socketPath", "Socket.", |c| &mut c.socket_path)
                .field("slots", "Builds at once.", |c| &mut c.slots)
                .alias("maxBuilds")
                .field("token", "Credential.", |c| &mut c.token)
                .secret()
                .entries("env", "Build environment.", |c| &mut c.env)
                .resources(|c| &mut c.resources)
                .retry(|c| &mut c.retry)
                .breaker(|c| &mut c.breaker)
                .timeout(|c| &mut c.timeout)
                .fallback("TOY_HOST", "host", "the engine's own variable.")
                .engine_variable("TOY_CONFIG_FILE", "read by the engine's client.")
                .foreign_env_prefix("EXECUTOR_TOY_ENGINE_WORKER_")
        });
        &O
    }
}

fn toy() -> Configured<Toy> {
    Configured::default()
}

fn err(c: Configured<Toy>) -> String {
    let e = c.finish().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    e.message().to_string()
}

#[test]
fn precedence_is_flag_over_env_over_file_over_default() {
    let file = json!({"slots": 1, "timeout": {"defaultMinutes": 10, "maxMinutes": 20}});
    let vars = [
        ("EXECUTOR_TOY_ENGINE_SLOTS", "2"),
        ("EXECUTOR_TOY_ENGINE_TIMEOUT_MAX_MINUTES", "30"),
    ];
    let flags = vec![("slots".to_string(), "3".to_string())];
    let c = toy().layered(Some(&file), vars, &flags).finish().unwrap();
    assert_eq!(c.slots, 3, "flag wins");
    assert_eq!(c.timeout.max_minutes, 30, "env beats file");
    assert_eq!(c.timeout.default_minutes, 10, "file beats default");
    assert_eq!(c.retry, RetryPolicy::default(), "default stays");
    // A flag that sets a key well withdraws a lower layer's refusal of it...
    let bad_env = [("EXECUTOR_TOY_ENGINE_SLOTS", "many")];
    toy().layered(None, bad_env, &flags).finish().unwrap();
    // ...but never an unknown key.
    let typo = [("EXECUTOR_TOY_ENGINE_SLOT", "2")];
    assert!(toy().layered(None, typo, &flags).finish().is_err());
}

#[test]
fn fallbacks_apply_only_when_the_key_and_its_conflicts_are_unset_in_the_environment() {
    let c = toy()
        .with_section(&json!({"socketPath": "/from/file"}))
        .with_vars([("TOY_HOST", "tcp://h:1")])
        .finish()
        .unwrap();
    assert_eq!(
        c.host.as_deref(),
        Some("tcp://h:1"),
        "the environment beats the file"
    );
    assert_eq!(
        c.socket_path, None,
        "setting host reset its conflicting key"
    );
    let c = toy()
        .with_vars([
            ("TOY_HOST", "tcp://h:1"),
            ("EXECUTOR_TOY_ENGINE_SOCKET_PATH", "/s"),
        ])
        .finish()
        .unwrap();
    assert_eq!(
        (c.host, c.socket_path.as_deref()),
        (None, Some("/s")),
        "own variable beats fallback"
    );
    let m = err(toy().with_vars([
        ("EXECUTOR_TOY_ENGINE_HOST", "h"),
        ("EXECUTOR_TOY_ENGINE_SOCKET_PATH", "/s"),
    ]));
    assert!(m.contains("conflicts with host"), "{m}");
    let m = err(toy().with_section(&json!({"host": "h", "socketPath": "/s"})));
    assert!(m.contains("conflicts with"), "{m}");
    // Single calls: the last one wins.
    let c = toy()
        .with_option("host", "h")
        .with_option("socketPath", "/s")
        .finish()
        .unwrap();
    assert_eq!((c.host, c.socket_path.as_deref()), (None, Some("/s")));
}

#[test]
fn unknown_keys_and_variables_suggest_the_nearest() {
    assert_eq!(
        err(toy().with_option("slot", "1")),
        "slot: unknown option of toyEngine; did you mean `slots`?"
    );
    let m = err(toy().with_section(&json!({"retry": {"maxRetry": 1}})));
    assert_eq!(
        m,
        "retry.maxRetry: unknown option of toyEngine; did you mean `retry.maxRetries`?"
    );
    let m = err(toy().with_vars([("EXECUTOR_TOY_ENGINE_SLOTZ", "1")]));
    assert!(m.contains("did you mean EXECUTOR_TOY_ENGINE_SLOTS?"), "{m}");
    assert!(m.ends_with("(from EXECUTOR_TOY_ENGINE_SLOTZ)"), "{m}");
    let m = err(toy().layered(None, [("HOME", "/")], &[("colour".into(), "blue".into())]));
    assert!(m.contains("known: host, socketPath"), "{m}");
    assert!(m.ends_with("(from --opt)"), "{m}");
    // Another scheme's variables and unrelated ones are not ours.
    toy()
        .with_vars([("EXECUTOR_TOY_ENGINE_WORKER_JOBS", "x"), ("HOME", "/root")])
        .finish()
        .unwrap();
}

#[test]
fn type_errors_name_the_key_and_the_source() {
    let m = err(toy().with_section(&json!({"slots": "many"})));
    assert!(m.starts_with("slots: must be an integer"), "{m}");
    let m = err(toy().with_section(&json!({"slots": [1]})));
    assert_eq!(m, "slots: expected an integer, got an array");
    let m = err(toy().with_vars([("EXECUTOR_TOY_ENGINE_RETRY_JITTER", "perhaps")]));
    assert!(m.starts_with("retry.jitter: must be true or false"), "{m}");
    assert!(m.contains("(from EXECUTOR_TOY_ENGINE_RETRY_JITTER)"), "{m}");
    // All problems are reported together.
    let m = err(toy()
        .with_option("slots", "x")
        .with_option("breaker.maxFailures", "y"));
    assert!(
        m.contains("slots: ") && m.contains("; breaker.maxFailures: "),
        "{m}"
    );
}

#[test]
fn secrets_are_set_but_never_echoed_or_shown() {
    let c = toy()
        .with_vars([("EXECUTOR_TOY_ENGINE_TOKEN", " s3cret ")])
        .finish()
        .unwrap();
    assert_eq!(c.token.unwrap().expose_secret(), " s3cret ");
    let m = err(toy().with_section(&json!({"token": {"s3cret": 1}})));
    assert!(!m.contains("s3cret"), "{m}");
    let table = Toy::options().markdown_table();
    assert!(table.contains("Secret: never shown."), "{table}");
}

#[test]
fn aliases_durations_json_merge_and_entries() {
    let c = toy()
        .with_section(&json!({
            "maxBuilds": 4,
            "retry": {"initialBackoff": 250},
            "breaker": {"callTimeoutMs": 1500},
            "timeoutDefaultMinutes": 7,
            "resources": {"ram": {"high": 8}},
            "env": {"CI": "true"},
        }))
        .with_option("resources.cpu.low", "3")
        .with_option("env.DEBUG", "1")
        .with_vars([("EXECUTOR_TOY_ENGINE_ENV_LANG", "C")])
        .finish()
        .unwrap();
    assert_eq!(c.slots, 4);
    assert_eq!(c.retry.initial_backoff.as_millis(), 250);
    assert_eq!(c.breaker.call_timeout.as_millis(), 1500);
    assert_eq!(c.timeout.default_minutes, 7);
    assert_eq!(c.resources.ram.high, 8.0);
    assert_eq!(
        c.resources.ram.low, 2.0,
        "other RAM tiers keep RAM defaults"
    );
    assert_eq!(c.resources.cpu.low, 3.0);
    assert_eq!(c.env.len(), 3, "{:?}", c.env);
    let m = err(toy().with_option("resources.ram.high", "lots"));
    assert!(m.starts_with("resources.ram.high: "), "{m}");
}

#[test]
fn whole_section_variable_comes_first() {
    let c = toy()
        .with_vars([
            ("EXECUTOR_TOY_ENGINE_CONFIG", r#"{"slots": 5, "host": "a"}"#),
            ("EXECUTOR_TOY_ENGINE_SLOTS", "6"),
        ])
        .finish()
        .unwrap();
    assert_eq!((c.slots, c.host.as_deref()), (6, Some("a")));
    let m = err(toy().with_vars([("EXECUTOR_TOY_ENGINE_CONFIG", "{")]));
    assert!(m.starts_with("config: must be a JSON object"), "{m}");
}

#[test]
fn tables_list_every_key_variable_and_default() {
    let o = Toy::options();
    let t = o.markdown_table();
    for needle in [
        "| `slots` (`maxBuilds`) | `EXECUTOR_TOY_ENGINE_SLOTS` | integer | `0` |",
        "`EXECUTOR_TOY_ENGINE_HOST`, `TOY_HOST`",
        "| `retry.maxRetries` | `EXECUTOR_TOY_ENGINE_RETRY_MAX_RETRIES` | integer | `5` |",
        "`timeout.defaultMinutes` (`timeoutDefaultMinutes`)",
        "`EXECUTOR_TOY_ENGINE_ENV_<NAME>`",
        "`TOY_CONFIG_FILE`: read by the engine's client.",
    ] {
        assert!(t.contains(needle), "{needle} missing in\n{t}");
    }
    let readme = format!("intro\n<!-- options:toyEngine -->\n{t}<!-- /options:toyEngine -->\n");
    o.check_readme(&readme).unwrap();
    let stale = readme.replace("Builds at once.", "Builds.");
    assert!(
        o.check_readme(&stale)
            .unwrap_err()
            .contains("Builds at once.")
    );
    assert!(
        o.text_table()
            .contains("retry.maxRetries (integer, default 5)")
    );
}
