//! The client and worker: against the real gearmand, and against a scripted fake
//! gearmand on loopback for reconnects and broken connections.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use executor_gearman::codec::PacketCodec;
use executor_gearman::packet::{Packet, PacketType};
use executor_gearman::{
    ClientOptions, GearmanClient, GearmanError, GearmanWorker, JobEvent, WorkerOptions,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

/// Runs a worker doing `function` with `handler` until the returned sender fires.
async fn spawn_worker<H, Fut>(
    function: &str,
    max_jobs: usize,
    handler: H,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>)
where
    H: Fn(executor_gearman::Job) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let mut opts = WorkerOptions::new(GEARMAND, vec![function.to_string()]);
    opts.max_jobs = max_jobs;
    opts.client_id = Some(format!("test-{function}"));
    let worker = GearmanWorker::new(opts);
    let mut registered = worker.registered();
    let task = tokio::spawn(async move {
        worker
            .run(handler, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    tokio::time::timeout(SETTLE, registered.wait_for(|r| *r))
        .await
        .expect("registered")
        .expect("worker alive");
    (tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_data_status_complete_through_gearmand() {
    if !gearmand() {
        return;
    }
    let f = unique("reverse");
    let (stop, task) = spawn_worker(&f, 4, |job| async move {
        let s = job.sink;
        s.data(Bytes::from_static(b"partial")).unwrap();
        s.warning(Bytes::from_static(b"careful")).unwrap();
        s.status(1, 2).unwrap();
        let mut out = job.data.to_vec();
        out.reverse();
        s.complete(out).unwrap();
    })
    .await;
    let client = GearmanClient::connect(GEARMAND, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(
        client
            .echo(Bytes::from_static(b"ping\0pong"))
            .await
            .unwrap(),
        Bytes::from_static(b"ping\0pong")
    );
    let mut job = client
        .submit(&f, "u-1", Bytes::from_static(b"abc\0"))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(ev) = job.events.recv().await {
        events.push(ev);
    }
    assert_eq!(
        events,
        [
            JobEvent::Data(Bytes::from_static(b"partial")),
            JobEvent::Warning(Bytes::from_static(b"careful")),
            JobEvent::Status {
                numerator: 1,
                denominator: 2
            },
            JobEvent::Complete(Bytes::from_static(b"\0cba")),
        ]
    );
    let gone = client.status(&job.handle).await.unwrap();
    assert!(!gone.known);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_fail_and_status_are_delivered() {
    if !gearmand() {
        return;
    }
    let f = unique("flaky");
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (stop, task) = spawn_worker(&f, 4, move |job| {
        let mut release = release_rx.clone();
        async move {
            match &job.data[..] {
                b"raise" => job.sink.exception(Bytes::from_static(b"boom")).unwrap(),
                b"fail" => job.sink.fail().unwrap(),
                _ => {
                    let _ = release.wait_for(|r| *r).await;
                    job.sink.complete(Bytes::new()).unwrap();
                }
            }
        }
    })
    .await;
    let client = GearmanClient::connect(GEARMAND, ClientOptions::default())
        .await
        .unwrap();
    let (_, end) = client
        .submit(&f, "", "raise".into())
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(end, JobEvent::Exception(Bytes::from_static(b"boom")));
    let (_, end) = client
        .submit(&f, "", "fail".into())
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(end, JobEvent::Fail);
    // Without the exceptions option gearmand turns an exception into WORK_FAIL.
    let plain = GearmanClient::connect(
        GEARMAND,
        ClientOptions {
            exceptions: false,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let (_, end) = plain
        .submit(&f, "", "raise".into())
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(end, JobEvent::Fail);
    // GET_STATUS sees a held job as running.
    let held = client.submit(&f, "", "hold".into()).await.unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let s = client.status(&held.handle).await.unwrap();
        if s.known && s.running {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release_tx.send_replace(true);
    let (_, end) = held.wait().await;
    assert_eq!(end, JobEvent::Complete(Bytes::new()));
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_the_same_unique_are_coalesced() {
    if !gearmand() {
        return;
    }
    let f = unique("coalesce");
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (stop, task) = spawn_worker(&f, 1, move |job| {
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
            job.sink.complete(job.data).unwrap();
        }
    })
    .await;
    let a = GearmanClient::lazy(GEARMAND, ClientOptions::default());
    let b = GearmanClient::lazy(GEARMAND, ClientOptions::default());
    let ja = a.submit(&f, "same", "a".into()).await.unwrap();
    // The first job is held by the worker: a second submission joins it.
    let jb = b.submit(&f, "same", "b".into()).await.unwrap();
    assert_eq!(ja.handle, jb.handle);
    release_tx.send_replace(true);
    let (ea, eb) = (ja.wait().await.1, jb.wait().await.1);
    assert_eq!(ea, JobEvent::Complete(Bytes::from_static(b"a")));
    assert_eq!(eb, ea);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn the_client_reports_a_broken_connection_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        // First connection: create a job, then drop the connection.
        let (s, _) = listener.accept().await.unwrap();
        let mut f = Framed::new(s, PacketCodec::default());
        let p = f.next().await.unwrap().unwrap();
        assert_eq!(p.kind, PacketType::OPTION_REQ);
        f.send(Packet::res(PacketType::OPTION_RES, ["exceptions"]))
            .await
            .unwrap();
        let p = f.next().await.unwrap().unwrap();
        assert_eq!((p.kind, p.arg_str(0)), (PacketType::SUBMIT_JOB, Some("fn")));
        f.send(Packet::res(PacketType::JOB_CREATED, ["H:fake:1"]))
            .await
            .unwrap();
        f.send(Packet::res(PacketType::WORK_DATA, ["H:fake:1", "hello"]))
            .await
            .unwrap();
        drop(f);
        // Second connection: the client re-sends its option, then echoes work; an
        // ERROR answers the oldest request.
        let (s, _) = listener.accept().await.unwrap();
        let mut f = Framed::new(s, PacketCodec::default());
        assert_eq!(
            f.next().await.unwrap().unwrap().kind,
            PacketType::OPTION_REQ
        );
        f.send(Packet::res(PacketType::OPTION_RES, ["exceptions"]))
            .await
            .unwrap();
        let p = f.next().await.unwrap().unwrap();
        assert_eq!(p.kind, PacketType::ECHO_REQ);
        f.send(Packet::res(PacketType::ECHO_RES, [p.args[0].clone()]))
            .await
            .unwrap();
        let p = f.next().await.unwrap().unwrap();
        assert_eq!(p.kind, PacketType::SUBMIT_JOB);
        f.send(Packet::res(
            PacketType::ERROR,
            ["QUEUE_FULL", "too many jobs"],
        ))
        .await
        .unwrap();
        // Then garbage: the client must drop the connection, not panic.
        let p = f.next().await.unwrap().unwrap();
        assert_eq!(p.kind, PacketType::GET_STATUS);
        use tokio::io::AsyncWriteExt;
        let mut raw = f.into_inner();
        raw.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        raw
    });
    let client = GearmanClient::connect(&addr, ClientOptions::default())
        .await
        .unwrap();
    let job = client.submit("fn", "u", "x".into()).await.unwrap();
    assert_eq!(job.handle, "H:fake:1");
    let (data, end) = job.wait().await;
    assert_eq!(data, [Bytes::from_static(b"hello")]);
    assert_eq!(end, JobEvent::Disconnected);
    assert_eq!(
        client.echo("again".into()).await.unwrap(),
        Bytes::from_static(b"again")
    );
    match client.submit("fn", "u", "x".into()).await {
        Err(GearmanError::Server { code, text }) => assert_eq!(
            (code.as_str(), text.as_str()),
            ("QUEUE_FULL", "too many jobs")
        ),
        other => panic!("{other:?}"),
    }
    let e = client.status("H:fake:2").await.unwrap_err();
    assert!(
        matches!(e, GearmanError::Codec(_) | GearmanError::Disconnected),
        "{e}"
    );
    drop(server.await.unwrap());
    // Nothing listens any more: a connect error, typed and temporary.
    drop(client);
    let e = GearmanClient::connect("127.0.0.1:1", ClientOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, GearmanError::Connect { .. }) && e.is_temporary(),
        "{e}"
    );
}

#[tokio::test]
async fn the_worker_reconnects_re_registers_and_signals_lost_jobs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (lost_tx, lost_rx) = oneshot::channel::<bool>();
    let lost_tx = std::sync::Mutex::new(Some(lost_tx));
    let mut opts = WorkerOptions::new(addr, vec!["build:a".into(), "build:a:n".into()]);
    opts.client_id = Some("w1".into());
    opts.max_jobs = 2;
    opts.reconnect_initial = Duration::from_millis(10);
    let worker = GearmanWorker::new(opts);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let server = tokio::spawn(async move {
        for round in 0..2 {
            let (s, _) = listener.accept().await.unwrap();
            let mut f = Framed::new(s, PacketCodec::default());
            let mut seen = Vec::new();
            for _ in 0..4 {
                let p = f.next().await.unwrap().unwrap();
                seen.push((p.kind, p.arg_lossy(0)));
            }
            assert_eq!(
                seen,
                [
                    (PacketType::SET_CLIENT_ID, "w1".to_string()),
                    (PacketType::CAN_DO, "build:a".to_string()),
                    (PacketType::CAN_DO, "build:a:n".to_string()),
                    (PacketType::ECHO_REQ, "registered".to_string()),
                ],
                "round {round}"
            );
            // Registered once gearmand answers the echo; then the worker grabs.
            f.send(Packet::res(PacketType::ECHO_RES, ["registered"]))
                .await
                .unwrap();
            assert_eq!(
                f.next().await.unwrap().unwrap().kind,
                PacketType::GRAB_JOB_UNIQ
            );
            if round == 0 {
                f.send(Packet::res(
                    PacketType::JOB_ASSIGN_UNIQ,
                    ["H:1", "build:a", "u1", "{}"],
                ))
                .await
                .unwrap();
                // The worker grabs again while it has room; then the connection breaks.
                assert_eq!(
                    f.next().await.unwrap().unwrap().kind,
                    PacketType::GRAB_JOB_UNIQ
                );
                drop(f);
            } else {
                f.send(Packet::res(PacketType::NO_JOB, Vec::<Bytes>::new()))
                    .await
                    .unwrap();
                assert_eq!(f.next().await.unwrap().unwrap().kind, PacketType::PRE_SLEEP);
                f.send(Packet::res(PacketType::NOOP, Vec::<Bytes>::new()))
                    .await
                    .unwrap();
                assert_eq!(
                    f.next().await.unwrap().unwrap().kind,
                    PacketType::GRAB_JOB_UNIQ
                );
                f.send(Packet::res(PacketType::NO_JOB, Vec::<Bytes>::new()))
                    .await
                    .unwrap();
                assert_eq!(f.next().await.unwrap().unwrap().kind, PacketType::PRE_SLEEP);
                let _ = stop_tx.take().expect("once").send(());
                // Drained: the worker unregisters and closes.
                assert_eq!(
                    f.next().await.unwrap().unwrap().kind,
                    PacketType::RESET_ABILITIES
                );
                assert!(f.next().await.is_none());
            }
        }
    });
    worker
        .run(
            move |job| {
                let tx = lost_tx.lock().unwrap().take();
                async move {
                    assert_eq!((job.handle.as_str(), job.unique.as_str()), ("H:1", "u1"));
                    job.sink.connection_lost().await;
                    assert!(job.sink.data("late").is_err());
                    if let Some(tx) = tx {
                        let _ = tx.send(job.sink.is_connection_lost());
                    }
                }
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
    assert!(
        lost_rx.await.unwrap(),
        "the running job learned its connection was lost"
    );
    server.await.unwrap();
}
