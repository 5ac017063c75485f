//! The shared conformance suite against the process backend, whose `launch` keeps
//! running until stopped.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use executor_base::testkit::conformance::{ConformanceConfig, SilentLauncher, conformance};
use executor_base::{Executor, FailureReason};
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_conformance() {
    let tools = common::job_tools("exec sleep 3600");
    let root = Arc::new(tempfile::tempdir().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let tools_path = tools.path().to_path_buf();
    // A launcher that exits 0 without the launch handshake (upstream's on `--token-file`).
    let silent_tools = Arc::new(common::job_tools_without_handshake(
        r#"echo "Incorrect Usage. flag provided but not defined: -token-file"; exit 0"#,
    ));
    let silent_root = root.clone();
    let silent_launcher = SilentLauncher {
        executor: Arc::new(move || {
            let tools = silent_tools.path().to_path_buf();
            let state = silent_root.path().join("state-silent");
            let out = silent_root.path().to_path_buf();
            async move {
                Arc::new(common::executor(&tools, &state, &out).await) as Arc<dyn Executor>
            }
            .boxed()
        }),
        api_uri: None,
        reason: Some(FailureReason::LaunchProtocol),
    };
    conformance(
        || {
            let state = root.path().join(format!("state-{}", n.fetch_add(1, Ordering::Relaxed)));
            let out = root.path().to_path_buf();
            let tools = tools_path.clone();
            async move { Arc::new(common::executor(&tools, &state, &out).await) as Arc<dyn Executor> }
        },
        ConformanceConfig {
            first_build_id: 1000,
            settle: Duration::from_secs(20),
            // A process cannot vanish behind its parent's back: an outside kill is seen as a
            // signal exit. Lost after a restart is covered in tests/process.rs.
            lose_build: None,
            silent_launcher: Some(silent_launcher),
            ..Default::default()
        },
    )
    .await;
}
