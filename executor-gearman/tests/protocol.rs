//! The client and worker: against the real gearmand and geard, and against a scripted
//! fake server on loopback for reconnects, broken connections and unreadable packets.

#[macro_use]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use executor_gearman::codec::{Frame, PacketCodec, SkipReason};
use executor_gearman::packet::{Packet, PacketType};
use executor_gearman::{
    ClientOptions, GearmanClient, GearmanError, GearmanWorker, JobEvent, WorkerOptions,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

/// The next packet from a fake server's connection (panics on a skipped one).
async fn next(f: &mut Framed<tokio::net::TcpStream, PacketCodec>) -> Packet {
    match f.next().await {
        Some(Ok(Frame::Packet(p))) => p,
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// Runs a worker doing `function` with `handler` until the returned sender fires.
async fn spawn_worker<H, Fut>(
    server: Server,
    function: &str,
    max_jobs: usize,
    handler: H,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>)
where
    H: Fn(executor_gearman::Job) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let mut opts = WorkerOptions::new(server.addr(), vec![function.to_string()]);
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

on_both_servers! {
async fn submit_data_status_complete(server: Server) {
    let f = unique("reverse");
    let (stop, task) = spawn_worker(server, &f, 4, |job| async move {
        let s = job.sink;
        s.data(Bytes::from_static(b"partial")).unwrap();
        s.warning(Bytes::from_static(b"careful")).unwrap();
        s.status(1, 2).unwrap();
        let mut out = job.data.to_vec();
        out.reverse();
        s.complete(out).unwrap();
    })
    .await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    // ECHO_REQ is optional: geard never answers it, and the answer to the submit that
    // follows says so at once (no timeout); gearmand echoes.
    let (echo, job) = tokio::join!(
        client.echo(Bytes::from_static(b"ping\0pong")),
        client.submit(&f, "u-1", Bytes::from_static(b"abc\0"))
    );
    match server {
        Server::Gearmand => assert_eq!(echo.unwrap(), Bytes::from_static(b"ping\0pong")),
        Server::Geard => assert!(matches!(echo, Err(GearmanError::Unanswered("ECHO_REQ"))), "{echo:?}"),
    }
    let mut job = job.unwrap();
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
}

on_both_servers! {
async fn exceptions_fail_and_status_are_delivered(server: Server) {
    let f = unique("flaky");
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (stop, task) = spawn_worker(server, &f, 4, move |job| {
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
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
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
    // Without the exceptions option gearmand turns an exception into WORK_FAIL; geard
    // forwards it to every client.
    let plain = GearmanClient::connect(
        &server.addr(),
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
    match server {
        Server::Gearmand => assert_eq!(end, JobEvent::Fail),
        Server::Geard => assert_eq!(end, JobEvent::Exception(Bytes::from_static(b"boom"))),
    }
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
}

on_both_servers! {
/// gearmand coalesces jobs with the same unique id; geard runs each submission.
async fn jobs_with_the_same_unique(server: Server) {
    let f = unique("coalesce");
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (stop, task) = spawn_worker(server, &f, 1, move |job| {
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
            job.sink.complete(job.data).unwrap();
        }
    })
    .await;
    let a = GearmanClient::lazy(&server.addr(), ClientOptions::default());
    let b = GearmanClient::lazy(&server.addr(), ClientOptions::default());
    let ja = a.submit(&f, "same", "a".into()).await.unwrap();
    // The first job is held by the worker: on gearmand a second submission joins it.
    let jb = b.submit(&f, "same", "b".into()).await.unwrap();
    assert_eq!(ja.handle == jb.handle, server == Server::Gearmand);
    release_tx.send_replace(true);
    let (ea, eb) = (ja.wait().await.1, jb.wait().await.1);
    assert_eq!(ea, JobEvent::Complete(Bytes::from_static(b"a")));
    let b_gets: &'static [u8] = if server == Server::Gearmand { b"a" } else { b"b" };
    assert_eq!(eb, JobEvent::Complete(Bytes::from_static(b_gets)));
    let _ = stop.send(());
    task.await.unwrap();
}
}

#[tokio::test]
async fn the_client_reports_a_broken_connection_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        // First connection: like geard, no answer to OPTION_REQ; the client does not
        // wait for one. Create a job, then drop the connection.
        let (s, _) = listener.accept().await.unwrap();
        let mut f = Framed::new(s, PacketCodec::default());
        let p = next(&mut f).await;
        assert_eq!(
            (p.kind, p.arg_str(0)),
            (PacketType::OPTION_REQ, Some("exceptions"))
        );
        let p = next(&mut f).await;
        assert_eq!((p.kind, p.arg_str(0)), (PacketType::SUBMIT_JOB, Some("fn")));
        f.send(Packet::res(PacketType::JOB_CREATED, ["H:fake:1"]))
            .await
            .unwrap();
        f.send(Packet::res(PacketType::WORK_DATA, ["H:fake:1", "hello"]))
            .await
            .unwrap();
        drop(f);
        // Second connection: the client re-sends its option (answered, like gearmand),
        // then echoes work; an ERROR answers the oldest request; an unreadable answer
        // fails its request and the connection goes on.
        let (s, _) = listener.accept().await.unwrap();
        let mut f = Framed::new(s, PacketCodec::default());
        assert_eq!(next(&mut f).await.kind, PacketType::OPTION_REQ);
        f.send(Packet::res(PacketType::OPTION_RES, ["exceptions"]))
            .await
            .unwrap();
        let p = next(&mut f).await;
        assert_eq!(p.kind, PacketType::ECHO_REQ);
        f.send(Packet::res(PacketType::ECHO_RES, [p.args[0].clone()]))
            .await
            .unwrap();
        let p = next(&mut f).await;
        assert_eq!(p.kind, PacketType::SUBMIT_JOB);
        f.send(Packet::res(
            PacketType::ERROR,
            ["QUEUE_FULL", "too many jobs"],
        ))
        .await
        .unwrap();
        let p = next(&mut f).await;
        assert_eq!(p.kind, PacketType::GET_STATUS);
        {
            use tokio::io::AsyncWriteExt;
            // A STATUS_RES with one argument only: skipped, the request fails.
            f.get_mut()
                .write_all(b"\0RES\0\0\0\x14\0\0\0\x03H:1")
                .await
                .unwrap();
        }
        // Then garbage: the client must drop the connection, not panic.
        let p = next(&mut f).await;
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
    let e = client.status("H:fake:1").await.unwrap_err();
    assert!(matches!(e, GearmanError::Unreadable(_)), "{e}");
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

/// What a worker sends when it (re)connects: its id, its functions, the registration
/// barrier and its first grab.
async fn registration(
    f: &mut Framed<tokio::net::TcpStream, PacketCodec>,
    packets: usize,
) -> Vec<(PacketType, String)> {
    let mut seen = Vec::new();
    for _ in 0..packets {
        let p = next(f).await;
        seen.push((p.kind, p.arg_lossy(0)));
    }
    seen
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
    let mut registered = worker.registered();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let server = tokio::spawn(async move {
        for round in 0..2 {
            let (s, _) = listener.accept().await.unwrap();
            let mut f = Framed::new(s, PacketCodec::default());
            // No ECHO_REQ (geard never answers it): a GET_STATUS every server answers,
            // in order after the CAN_DOs, tells the worker it is registered.
            assert_eq!(
                registration(&mut f, 5).await,
                [
                    (PacketType::SET_CLIENT_ID, "w1".to_string()),
                    (PacketType::CAN_DO, "build:a".to_string()),
                    (PacketType::CAN_DO, "build:a:n".to_string()),
                    (
                        PacketType::GET_STATUS,
                        "sdx-registration-barrier".to_string()
                    ),
                    (PacketType::GRAB_JOB_UNIQ, String::new()),
                ],
                "round {round}"
            );
            f.send(Packet::res(
                PacketType::STATUS_RES,
                ["sdx-registration-barrier", "0", "0", "", ""],
            ))
            .await
            .unwrap();
            if round == 0 {
                f.send(Packet::res(
                    PacketType::JOB_ASSIGN_UNIQ,
                    ["H:1", "build:a", "u1", "{}"],
                ))
                .await
                .unwrap();
                // The worker grabs again while it has a free slot; then the connection breaks.
                assert_eq!(next(&mut f).await.kind, PacketType::GRAB_JOB_UNIQ);
                drop(f);
            } else {
                f.send(Packet::res(PacketType::NO_JOB, Vec::<Bytes>::new()))
                    .await
                    .unwrap();
                assert_eq!(next(&mut f).await.kind, PacketType::PRE_SLEEP);
                f.send(Packet::res(PacketType::NOOP, Vec::<Bytes>::new()))
                    .await
                    .unwrap();
                assert_eq!(next(&mut f).await.kind, PacketType::GRAB_JOB_UNIQ);
                f.send(Packet::res(PacketType::NO_JOB, Vec::<Bytes>::new()))
                    .await
                    .unwrap();
                assert_eq!(next(&mut f).await.kind, PacketType::PRE_SLEEP);
                let _ = stop_tx.take().expect("once").send(());
                // Drained: the worker unregisters and closes.
                assert_eq!(next(&mut f).await.kind, PacketType::RESET_ABILITIES);
                assert!(f.next().await.is_none());
            }
        }
    });
    let registered_seen = tokio::spawn(async move { registered.wait_for(|r| *r).await.is_ok() });
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
    assert!(
        registered_seen.await.unwrap(),
        "registered after the barrier's answer"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn an_unreadable_job_goes_to_the_handler_and_the_connection_stays() {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut opts = WorkerOptions::new(addr, vec!["build:a".into()]);
    opts.max_packet_size = 1024;
    let worker = GearmanWorker::new(opts);
    let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut f = Framed::new(s, PacketCodec::new(64 * 1024));
        // CAN_DO, the barrier's GET_STATUS, GRAB_JOB_UNIQ.
        let seen = registration(&mut f, 3).await;
        assert_eq!(seen.last().unwrap().0, PacketType::GRAB_JOB_UNIQ);
        // A packet type no protocol version defines: skipped.
        {
            use tokio::io::AsyncWriteExt;
            f.get_mut()
                .write_all(b"\0RES\0\0\0\x63\0\0\0\x02ab")
                .await
                .unwrap();
        }
        // A job of 40 000 bytes, far over the worker's 1024.
        let big = Bytes::from(format!("{{\"x\":\"{}\"}}", "y".repeat(40_000)));
        f.send(Packet::res(
            PacketType::JOB_ASSIGN_UNIQ,
            [
                Bytes::from_static(b"H:big"),
                Bytes::from_static(b"build:a"),
                Bytes::from_static(b"u-big"),
                big,
            ],
        ))
        .await
        .unwrap();
        // Answered on the same connection, which goes on grabbing.
        let p = next(&mut f).await;
        assert_eq!(
            (p.kind, p.arg_str(0)),
            (PacketType::WORK_FAIL, Some("H:big"))
        );
        assert_eq!(next(&mut f).await.kind, PacketType::GRAB_JOB_UNIQ);
        f.send(Packet::res(
            PacketType::JOB_ASSIGN_UNIQ,
            ["H:2", "build:a", "u2", "{}"],
        ))
        .await
        .unwrap();
        let p = next(&mut f).await;
        assert_eq!(
            (p.kind, p.arg_str(0)),
            (PacketType::WORK_COMPLETE, Some("H:2"))
        );
        f
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = worker.run(
        move |job| {
            let tx = jobs_tx.clone();
            async move {
                match job.unreadable {
                    Some(_) => job.sink.fail().unwrap(),
                    None => job.sink.complete(Bytes::new()).unwrap(),
                }
                let _ = tx.send((job.handle, job.unique, job.data.len(), job.unreadable));
            }
        },
        async {
            let _ = stop_rx.await;
        },
    );
    let check = async {
        let (h, u, len, why) = jobs_rx.recv().await.unwrap();
        assert_eq!((h.as_str(), u.as_str(), len), ("H:big", "u-big", 0));
        assert!(
            matches!(why, Some(SkipReason::TooLarge { max: 1024, .. })),
            "{why:?}"
        );
        let (h, _, _, why) = jobs_rx.recv().await.unwrap();
        assert_eq!((h.as_str(), why), ("H:2", None));
        let _f = server.await.unwrap();
        let _ = stop_tx.send(());
    };
    let (r, ()) = tokio::join!(run, check);
    // The fake server is gone by now; the drain ends on the reconnect loop.
    assert!(r.is_ok());
}

#[tokio::test]
async fn reconnects_back_off_with_jitter_instead_of_storming() {
    // A server that accepts and closes every connection at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    // Default reconnect timings: 100 ms, doubling up to 5 s, half to all of it.
    let worker = GearmanWorker::new(WorkerOptions::new(addr, vec!["build:a".into()]));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        worker
            .run(|_job| async {}, async {
                let _ = stop_rx.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    // Waits of at least 50, 100, 200, 400, 800 ms: at most 6 connections in 2 s
    // (the unpaced loop made hundreds).
    assert!((2..=6).contains(&n), "{n} connections in 2 s");
    let _ = stop_tx.send(());
    run.await.unwrap().unwrap();
    server.abort();
}
