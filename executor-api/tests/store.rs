//! The `BuildStore` contract, run against the memory store and the SQLite store, and what
//! only the durable store adds: everything survives a reopen, and two handles on one file
//! (two processes on one state directory) never hand out the same id.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use executor_api::model::{BuildRecord, LogLine, StepRecord};
use executor_api::store::{FencedWrite, Lease, PostgresBuildStore};
use executor_api::{BuildStore, MemoryBuildStore, SqliteBuildStore};
use executor_base::testkit::postgres::TestDb;
use executor_base::{Annotations, ApiBuildStatus, BuildId, ErrorKind, ImageRef, JobId};
use serde_json::json;

fn record(id: BuildId) -> BuildRecord {
    BuildRecord {
        id,
        owner: "serve".into(),
        version: 1,
        settled: false,
        job_id: JobId::new(3).unwrap(),
        event_id: None,
        pipeline_id: None,
        job_name: Some("main".into()),
        container: ImageRef::parse("busybox:latest").unwrap(),
        annotations: Annotations::default(),
        environment: [("A".to_string(), "1".to_string())].into(),
        status: ApiBuildStatus::Queued,
        status_message: Some("Waiting".into()),
        meta: json!({}),
        create_time: Utc::now(),
        start_time: None,
        end_time: None,
        steps: vec![
            StepRecord::new("one", "true"),
            StepRecord::new("two", "false"),
        ],
        // Kept as given (the SQLite and PostgreSQL stores keep them in the row's JSON).
        timings: executor_base::BuildTimings {
            accepted: Some(chrono::DateTime::from_timestamp_millis(1_764_700_000_123).unwrap()),
            running: Some(chrono::DateTime::from_timestamp_millis(1_764_700_001_456).unwrap()),
            peak_memory_bytes: Some(12_345_678),
            ..Default::default()
        },
    }
}

fn line(n: u64) -> LogLine {
    LogLine {
        t: 1000 + n,
        m: format!("line {n}"),
        n,
    }
}

async fn contract(store: Arc<dyn BuildStore>) {
    // ids: increasing, never reused, a client's id moves the sequence
    let a = store.next_id().await.unwrap();
    let b = store.next_id().await.unwrap();
    assert!(b > a, "{a} {b}");
    store.insert(&record(a)).await.unwrap();
    let e = store.insert(&record(a)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let far = BuildId::new(b.get() + 100).unwrap();
    store.insert(&record(far)).await.unwrap();
    assert!(store.next_id().await.unwrap() > far);

    // get, list
    let got = store.get(a.get()).await.unwrap().unwrap();
    assert_eq!(got.job_name.as_deref(), Some("main"));
    assert_eq!(got.environment["A"], "1");
    assert_eq!(got.steps.len(), 2);
    assert_eq!(got.steps[1].command, "false");
    assert!(store.get(999_999).await.unwrap().is_none());
    let ids: Vec<u64> = store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|(i, _)| i.get())
        .collect();
    assert_eq!(ids, [a.get(), far.get()]);

    // conditional writes
    let mut first = store.get(a.get()).await.unwrap().unwrap();
    let mut stale = first.clone();
    first.status = ApiBuildStatus::Running;
    first.steps[0].start_time = Some(Utc::now());
    assert!(store.update(&first).await.unwrap());
    stale.status = ApiBuildStatus::Aborted;
    assert!(
        !store.update(&stale).await.unwrap(),
        "a stale copy is refused"
    );
    let now = store.get(a.get()).await.unwrap().unwrap();
    assert_eq!(now.status, ApiBuildStatus::Running);
    assert_eq!(now.version, first.version + 1);
    assert!(now.steps[0].start_time.is_some());

    // log lines: retried posts are not stored twice, paging
    let got = store
        .append_logs(a.get(), "one", &[line(0), line(1)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 2);
    let again = store
        .append_logs(a.get(), "one", &[line(1), line(2)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, vec![line(2)]);
    assert_eq!(
        store.logs(a.get(), "one", 1, 10).await.unwrap().unwrap(),
        vec![line(1), line(2)]
    );
    assert_eq!(
        store.logs(a.get(), "one", 0, 1).await.unwrap().unwrap(),
        vec![line(0)]
    );
    assert!(
        store
            .append_logs(a.get(), "nope", &[line(0)])
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.logs(a.get(), "nope", 0, 1).await.unwrap().is_none());
    // an update never touches the line count
    let mut cur = store.get(a.get()).await.unwrap().unwrap();
    assert_eq!(cur.steps[0].next_line, 3);
    cur.steps[0].next_line = 0;
    cur.status = ApiBuildStatus::Success;
    assert!(store.update(&cur).await.unwrap());
    assert_eq!(
        store.get(a.get()).await.unwrap().unwrap().steps[0].next_line,
        3
    );

    // unsettled: open or final-but-unsettled builds
    let unsettled: Vec<u64> = store
        .unsettled()
        .await
        .unwrap()
        .iter()
        .map(|b| b.id.get())
        .collect();
    assert_eq!(unsettled, [a.get(), far.get()]);
    let mut done = store.get(a.get()).await.unwrap().unwrap();
    done.settled = true;
    assert!(store.update(&done).await.unwrap());
    let unsettled: Vec<u64> = store
        .unsettled()
        .await
        .unwrap()
        .iter()
        .map(|b| b.id.get())
        .collect();
    assert_eq!(unsettled, [far.get()]);

    // secrets: the first value stays
    assert_eq!(store.secret("k", "v1").await.unwrap(), "v1");
    assert_eq!(store.secret("k", "v2").await.unwrap(), "v1");
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryBuildStore::new())).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(
        SqliteBuildStore::open(dir.path().join("api.db"))
            .await
            .unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn the_sqlite_store_survives_a_reopen_and_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/api.db");
    let first = {
        let store = SqliteBuildStore::open(&path).await.unwrap();
        let id = store.next_id().await.unwrap();
        store.insert(&record(id)).await.unwrap();
        store
            .append_logs(id.get(), "one", &[line(0)])
            .await
            .unwrap();
        // taken but never inserted: still never handed out again
        store.next_id().await.unwrap();
        assert_eq!(store.secret("jwt", "key-1").await.unwrap(), "key-1");
        id
    };
    let store = SqliteBuildStore::open(&path).await.unwrap();
    let b = store.get(first.get()).await.unwrap().unwrap();
    assert_eq!(b.steps[0].next_line, 1);
    assert_eq!(
        store
            .logs(first.get(), "one", 0, 10)
            .await
            .unwrap()
            .unwrap(),
        vec![line(0)]
    );
    assert_eq!(store.next_id().await.unwrap().get(), first.get() + 2);
    assert_eq!(store.secret("jwt", "key-2").await.unwrap(), "key-1");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600,
        "the file holds the signing key"
    );
}

#[tokio::test]
async fn two_handles_on_one_file_never_hand_out_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.db");
    let (a, b) = tokio::join!(SqliteBuildStore::open(&path), SqliteBuildStore::open(&path));
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { s.next_id().await.unwrap().get() },
        ));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        assert!(seen.insert(t.await.unwrap()), "an id was handed out twice");
    }
    assert_eq!(seen.len(), 100);
}

#[tokio::test]
async fn a_bad_store_uri_names_the_key() {
    let e = executor_api::StoreUri::parse("mysql://db/sdx").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.to_string().contains("buildStore"), "{e}");
    let e = executor_api::StoreUri::parse("postgres://u:hunter2@db/sdx?bogus=1").unwrap_err();
    assert!(e.to_string().contains("buildStore"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = PostgresBuildStore::connect("postgres://u:hunter2@127.0.0.1:1/sdx?connect_timeout=1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("buildStore"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = SqliteBuildStore::open("/proc/nope/api.db")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("buildStore"), "{e}");
}

#[tokio::test]
async fn the_postgres_store_keeps_the_contract_and_survives_a_reconnect() {
    let Some(db) = TestDb::create("store_contract").await else {
        return;
    };
    contract(Arc::new(
        PostgresBuildStore::connect(db.uri()).await.unwrap(),
    ))
    .await;
    let store = PostgresBuildStore::connect(db.uri()).await.unwrap();
    let id = store.next_id().await.unwrap();
    store.insert(&record(id)).await.unwrap();
    store
        .append_logs(id.get(), "one", &[line(0), line(1)])
        .await
        .unwrap();
    assert_eq!(store.secret("jwt", "key-1").await.unwrap(), "key-1");
    drop(store);
    let store = PostgresBuildStore::connect(db.uri()).await.unwrap();
    assert_eq!(
        store.get(id.get()).await.unwrap().unwrap().steps[0].next_line,
        2
    );
    assert_eq!(store.secret("jwt", "key-2").await.unwrap(), "key-1");
    assert!(store.next_id().await.unwrap() > id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_stores_never_hand_out_the_same_id() {
    let Some(db) = TestDb::create("store_ids").await else {
        return;
    };
    let (a, b) = tokio::join!(
        PostgresBuildStore::connect(db.uri()),
        PostgresBuildStore::connect(db.uri())
    );
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { s.next_id().await.unwrap().get() },
        ));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        assert!(seen.insert(t.await.unwrap()), "an id was handed out twice");
    }
}

/// Leases: one holder at a time, tokens grow when the lease changes hands, renewal is
/// one call for all of a holder's leases, an expired lease is taken over, and the old
/// holder's fenced writes and checks are refused from then on.
#[tokio::test]
async fn postgres_leases_fence_a_stale_holder() {
    let Some(db) = TestDb::create("store_leases").await else {
        return;
    };
    let store = PostgresBuildStore::connect(db.uri()).await.unwrap();
    let ttl = std::time::Duration::from_millis(400);
    let ids: Vec<BuildId> = (1..=3).map(|n| BuildId::new(n).unwrap()).collect();
    let mut leases: Vec<Lease> = Vec::new();
    for id in &ids {
        leases.push(store.insert_leased(&record(*id), "a", ttl).await.unwrap());
    }
    assert!(leases.iter().all(|l| l.token == 1 && l.holder == "a"));
    // b cannot take a live lease; a keeps its own; nothing is adoptable.
    assert!(store.acquire(ids[0], "b", ttl).await.unwrap().is_none());
    assert_eq!(
        store
            .acquire(ids[0], "a", ttl)
            .await
            .unwrap()
            .unwrap()
            .token,
        1
    );
    assert!(store.adoptable().await.unwrap().is_empty());
    // One renewal keeps all three alive past the first ttl.
    tokio::time::sleep(ttl / 2).await;
    assert_eq!(store.renew("a", ttl).await.unwrap().len(), 3);
    tokio::time::sleep(ttl / 2 + std::time::Duration::from_millis(50)).await;
    assert!(store.check(&leases[0]).await.unwrap());
    // a stops renewing (paused): its leases expire and b takes build 1 over.
    tokio::time::sleep(ttl).await;
    assert!(
        !store.check(&leases[0]).await.unwrap(),
        "an expired lease fails the check"
    );
    assert_eq!(store.adoptable().await.unwrap().len(), 3);
    let taken = store.acquire(ids[0], "b", ttl).await.unwrap().unwrap();
    assert_eq!(
        taken.token, 2,
        "the token grows when the lease changes hands"
    );
    // a wakes up: its renewal no longer returns build 1, its write is fenced.
    let renewed = store.renew("a", ttl).await.unwrap();
    assert_eq!(renewed.len(), 2);
    assert!(renewed.iter().all(|l| l.build_id != ids[0]));
    let mut b = store.get(1).await.unwrap().unwrap();
    b.status = ApiBuildStatus::Failure;
    assert_eq!(
        store.update_fenced(&b, &leases[0]).await.unwrap(),
        FencedWrite::Fenced
    );
    assert!(!store.check(&leases[0]).await.unwrap());
    // b's write with its token goes through; a stale version is a conflict, not a fence.
    assert_eq!(
        store.update_fenced(&b, &taken).await.unwrap(),
        FencedWrite::Done
    );
    assert_eq!(
        store.update_fenced(&b, &taken).await.unwrap(),
        FencedWrite::Conflict
    );
    assert_eq!(
        store.get(1).await.unwrap().unwrap().status,
        ApiBuildStatus::Failure
    );
    // Released: another holder takes it at once, with a larger token.
    store.release(&taken).await.unwrap();
    assert_eq!(
        store
            .acquire(ids[0], "c", ttl)
            .await
            .unwrap()
            .unwrap()
            .token,
        3
    );
}
