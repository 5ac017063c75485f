//! Neither the API token nor a build token appears in errors, Debug output, requests
//! other than the build's own parameters, or any log line (all levels, all crates).

mod common;

use std::io::Write;
use std::sync::Arc;

use common::*;
use executor_base::Executor;
use executor_jenkins::fake::{FAKE_TOKEN, Fault, FaultAction};
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_appear_in_logs_errors_or_debug_output() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (j, e) = setup().await;
    let mut seen = format!("{e:?} {:?} {:?}", j.executor_builder(), e.stats());
    let mut look = |r: Result<(), executor_base::Error>| {
        if let Err(err) = r {
            seen.push_str(&format!("{err} {err:?}"));
        }
    };
    look(e.start(&build(1)).await);
    look(e.start(&build(1)).await); // AlreadyExists
    j.expire_crumbs();
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::ProcessThenRespond(502),
    ));
    look(e.start(&build(2)).await);
    j.inject(Fault::status("POST", "/buildWithParameters", 400));
    look(e.start(&build(3)).await);
    j.start_all_queued();
    look(e.status(&stop_cfg(1)).await.map(|_| ()));
    look(e.verify(&build(2)).await.map(|_| ()));
    look(e.stop(&stop_cfg(1)).await);
    look(e.stop(&stop_cfg(2)).await);
    look(e.status(&stop_cfg(99)).await.map(|_| ()));
    look(e.gc(false).await.map(|_| ()));
    let wrong = j
        .executor_builder()
        .with_credentials("screwdriver", "wrong-api-token-beef")
        .build()
        .await
        .unwrap();
    look(wrong.start(&build(4)).await);
    look(wrong.status(&stop_cfg(1)).await.map(|_| ()));
    seen.push_str(&format!("{wrong:?} {:?}", e.stats()));

    let logs = String::from_utf8(buf.0.lock().clone()).unwrap();
    assert!(
        logs.contains("jenkins request"),
        "the capture works: {logs}"
    );
    for secret in [BUILD_TOKEN, FAKE_TOKEN, "wrong-api-token-beef"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        assert!(
            !seen.contains(secret),
            "{secret} in an error or Debug output:\n{seen}"
        );
    }
    // The token travels only in the build's form body, never in a URL or a job config.
    assert!(
        j.requests()
            .iter()
            .all(|r| !r.query.contains(BUILD_TOKEN) && !r.path.contains(BUILD_TOKEN))
    );
    for job in j.job_names() {
        assert!(!j.job_config(&job).unwrap().contains(BUILD_TOKEN));
    }
}
