//! The executor's and the launcher worker's options: environment, file sections, flags,
//! unknown keys and bad values, and the README tables.

use std::path::Path;

use executor_base::ErrorKind;
use executor_base::options::{ConfigBuilder, Configurable, Configured};
use executor_gearman::{GearmanConfig, GearmanExecutorBuilder, WorkerConfig};
use serde_json::json;

async fn refused(b: GearmanExecutorBuilder) -> String {
    let e = b.build().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{e}");
    e.message().to_string()
}

#[tokio::test]
async fn executor_options_from_env_file_and_flags() {
    let file = json!({"server": "127.0.0.1:4999", "checkWorkers": true, "queueTimeoutSecs": 60,
                      "breaker": {"maxFailures": 2}});
    let vars = [
        ("EXECUTOR_GEARMAN_CHECK_WORKERS", "false"),
        ("EXECUTOR_GEARMAN_LIVENESS_INTERVAL_MS", "250"),
        ("EXECUTOR_GEARMAN_WORKER_JOBS", "not-the-executors"),
        ("EXECUTOR_GEARMAN_RETRY_BUDGET_MS", "2500"),
    ];
    let flags = [("queueTimeoutSecs".to_string(), "30".to_string())];
    let e = GearmanExecutorBuilder::new()
        .layered(Some(&file), vars, &flags)
        .build()
        .await
        .unwrap();
    let c = e.config();
    assert_eq!(c.server, "127.0.0.1:4999");
    assert!(!c.check_workers, "env over file");
    assert_eq!(c.liveness_interval_ms, 250);
    assert_eq!(c.queue_timeout_secs, 30, "flag over file");
    assert_eq!(c.breaker.max_failures, 2);
    assert_eq!(
        c.retry.budget,
        Some(std::time::Duration::from_millis(2500)),
        "the shared retry.budgetMs key"
    );
    assert_eq!(
        GearmanConfig::default().retry.budget,
        Some(executor_base::engine::DEFAULT_RETRY_BUDGET)
    );

    let m =
        refused(GearmanExecutorBuilder::new().with_vars([("EXECUTOR_GEARMAN_CHECK_WORKER", "no")]))
            .await;
    assert!(
        m.contains("did you mean EXECUTOR_GEARMAN_CHECK_WORKERS?"),
        "{m}"
    );
    let m = refused(
        GearmanExecutorBuilder::new().with_section(&json!({"livenessIntervalMs": "often"})),
    )
    .await;
    assert!(
        m.starts_with("livenessIntervalMs: must be an integer"),
        "{m}"
    );
    let m = refused(GearmanExecutorBuilder::from_iter([("sever", "x")])).await;
    assert_eq!(
        m,
        "sever: unknown option of gearman; did you mean `server`?"
    );
}

#[test]
fn worker_options_from_env_file_and_flags() {
    let file = json!({"server": "127.0.0.1:4999", "jobs": ["unit", "lint"], "maxBuilds": 2});
    let vars = [
        ("EXECUTOR_GEARMAN_WORKER_MAX_BUILDS", "3"),
        ("EXECUTOR_GEARMAN_WORKER_API_URI", "http://127.0.0.1:8080"),
        ("EXECUTOR_GEARMAN_WORKER_TOKEN", "never-shown"),
        ("EXECUTOR_GEARMAN_SERVER", "the executor's, not ours"),
    ];
    let flags = [("nodes".to_string(), "linux,arm".to_string())];
    let c = Configured::<WorkerConfig>::default()
        .layered(Some(&file), vars, &flags)
        .finish()
        .unwrap();
    assert_eq!(c.server, "127.0.0.1:4999");
    assert_eq!(c.jobs, ["unit", "lint"]);
    assert_eq!(c.max_builds, 3, "env over file");
    assert_eq!(c.nodes, ["linux", "arm"]);
    assert_eq!(
        c.default_api_uri.as_deref(),
        Some("http://127.0.0.1:8080"),
        "old variable name"
    );
    assert!(c.default_token.is_some());

    let e = Configured::<WorkerConfig>::default()
        .with_section(
            &json!({"maxBuild": 1, "stopAbandoned": "sometimes", "defaultToken": ["never-shown"]}),
        )
        .finish()
        .unwrap_err();
    let m = e.message();
    assert!(
        m.contains("maxBuild: unknown option of gearmanWorker; did you mean `maxBuilds`?"),
        "{m}"
    );
    assert!(m.contains("stopAbandoned: must be true or false"), "{m}");
    assert!(
        m.contains("defaultToken: expected a string, got an array"),
        "{m}"
    );
    assert!(!m.contains("never-shown"), "{m}");
}

#[test]
fn readme_tables_match_the_declarations() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    GearmanConfig::options()
        .check_readme_file(&readme)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        GearmanConfig::options().undeclared_fields(),
        Vec::<String>::new(),
        "fields of GearmanConfig no option key declares"
    );
    WorkerConfig::options()
        .check_readme_file(&readme)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        WorkerConfig::options().undeclared_fields(),
        Vec::<String>::new(),
        "fields of WorkerConfig no option key declares"
    );
}
