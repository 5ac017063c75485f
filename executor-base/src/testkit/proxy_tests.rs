//! Each mode of the proxy against a tiny HTTP server, over TCP and a Unix socket.

use super::*;

/// A one-route HTTP server: every request gets `200` and a 1000-byte body.
async fn http_upstream_tcp() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            tokio::spawn(answer(Box::pin(c)));
        }
    });
    addr
}

async fn http_upstream_unix(dir: &Path) -> PathBuf {
    let p = dir.join("up.sock");
    let l = UnixListener::bind(&p).unwrap();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            tokio::spawn(answer(Box::pin(c)));
        }
    });
    p
}

const BODY_LEN: usize = 1000;

/// Answers one request, then closes (the client asks `Connection: close`).
async fn answer(mut c: BoxStream) {
    if read_head(&mut c).await.is_ok() {
        let body = "x".repeat(BODY_LEN);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_LEN}\r\n\r\n");
        let _ = c.write_all(head.as_bytes()).await;
        let _ = c.write_all(body.as_bytes()).await;
        let _ = c.shutdown().await;
    }
}

/// One request on a fresh connection: the whole answer, or the I/O error.
async fn get(proxy: &FaultProxy) -> io::Result<Vec<u8>> {
    let mut c: BoxStream = match &proxy.shared.listen {
        Endpoint::Tcp(a) => Box::pin(TcpStream::connect(a).await?),
        Endpoint::Unix(p) => Box::pin(UnixStream::connect(p).await?),
    };
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).await?;
    Ok(out)
}

async fn get_within(proxy: &FaultProxy, d: Duration) -> Option<io::Result<Vec<u8>>> {
    tokio::time::timeout(d, get(proxy)).await.ok()
}

fn full_answer(out: &[u8]) -> bool {
    out.starts_with(b"HTTP/1.1 200 OK") && out.ends_with(&[b'x'; BODY_LEN])
}

async fn every_mode(proxy: FaultProxy, tcp: bool) {
    let ok = get(&proxy).await.unwrap();
    assert!(full_answer(&ok), "{}", String::from_utf8_lossy(&ok));

    proxy.set(FaultMode::Refuse);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = get(&proxy).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");

    proxy.set(FaultMode::Pass);
    let ok = get(&proxy).await.unwrap();
    assert!(full_answer(&ok));

    proxy.set(FaultMode::Blackhole);
    assert!(
        get_within(&proxy, Duration::from_millis(300))
            .await
            .is_none()
    );

    proxy.set(FaultMode::Delay(Duration::from_millis(300)));
    let t = std::time::Instant::now();
    assert!(full_answer(&get(&proxy).await.unwrap()));
    assert!(t.elapsed() >= Duration::from_millis(300));

    proxy.set(FaultMode::CutAfter(100));
    let cut = get(&proxy).await.unwrap();
    assert_eq!(cut.len(), 100);

    proxy.set(FaultMode::ResetAfter(100));
    match get(&proxy).await {
        Err(e) if tcp => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        Ok(out) => assert!(!tcp && out.len() == 100, "{}", out.len()),
        other => panic!("{other:?}"),
    }

    proxy.set(FaultMode::too_many_requests(7));
    let out = String::from_utf8(get(&proxy).await.unwrap()).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nRetry-After: 7\r\n"), "{out}");
    assert_eq!(proxy.answered(), 1);

    // A script applies per connection, then the set mode again.
    proxy.set(FaultMode::Pass);
    proxy.script([FaultMode::status(503), FaultMode::status(500)]);
    assert!(
        String::from_utf8(get(&proxy).await.unwrap())
            .unwrap()
            .starts_with("HTTP/1.1 503")
    );
    assert!(
        String::from_utf8(get(&proxy).await.unwrap())
            .unwrap()
            .starts_with("HTTP/1.1 500")
    );
    assert!(full_answer(&get(&proxy).await.unwrap()));
    assert!(proxy.accepted() >= 9);
}

#[tokio::test]
async fn every_mode_over_tcp() {
    let up = http_upstream_tcp().await;
    every_mode(FaultProxy::tcp(&up).await.unwrap(), true).await;
}

#[tokio::test]
async fn every_mode_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let up = http_upstream_unix(dir.path()).await;
    let proxy = FaultProxy::unix(&up, dir.path().join("proxy.sock"))
        .await
        .unwrap();
    assert!(proxy.url("http").starts_with("unix://"));
    every_mode(proxy, false).await;
}

#[tokio::test]
async fn a_mode_change_severs_live_connections() {
    let up = http_upstream_tcp().await;
    let proxy = FaultProxy::tcp(&up).await.unwrap();
    proxy.set(FaultMode::Blackhole);
    let p = proxy.clone();
    let pending = tokio::spawn(async move { get(&p).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set(FaultMode::Pass);
    let out = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("severed")
        .unwrap();
    // Closed without an answer.
    assert!(out.map(|b| b.is_empty()).unwrap_or(true));
}

/// An upstream with one long-lived connection per client and a request/answer
/// protocol: a request is a 4-byte big-endian length and that many bytes, the answer one
/// byte `k`.
async fn request_answer_upstream_tcp() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut body = Vec::new();
                while let Ok(n) = c.read_u32().await {
                    body.resize(n as usize, 0);
                    if c.read_exact(&mut body).await.is_err() || c.write_all(b"k").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends a request of `bytes` bytes on `c` and reads its answer; how long it took.
async fn round_trip(c: &mut TcpStream, bytes: usize) -> Duration {
    let t = std::time::Instant::now();
    let mut request = (bytes as u32).to_be_bytes().to_vec();
    request.resize(4 + bytes, b'g');
    c.write_all(&request)
        .await
        .expect("the live connection was kept");
    let mut answer = [0u8; 1];
    c.read_exact(&mut answer)
        .await
        .expect("the live connection was kept");
    assert_eq!(&answer, b"k");
    t.elapsed()
}

#[tokio::test]
async fn a_short_delay_reaches_live_connections_request_by_request_without_cutting_them() {
    let up = request_answer_upstream_tcp().await;
    let proxy = FaultProxy::tcp(&up).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip(&mut c, 10).await < Duration::from_millis(200));
    let delay = Duration::from_millis(300);
    proxy.set(FaultMode::Delay(delay));
    for _ in 0..2 {
        let took = round_trip(&mut c, 10).await;
        assert!(
            took >= delay,
            "a request on a live connection was not delayed: {took:?}"
        );
    }
    // A long request (many reads on the proxy's side) is held once, not per chunk.
    let took = round_trip(&mut c, 4 << 20).await;
    assert!(took >= delay, "{took:?}");
    assert!(
        took < delay * 5,
        "a long request was held per chunk: {took:?}"
    );
    proxy.set(FaultMode::Pass);
    assert!(round_trip(&mut c, 10).await < Duration::from_millis(200));
    assert_eq!(proxy.accepted(), 1, "the connection was cut and made again");
    // A fault that is not a short delay still severs it.
    proxy.set(FaultMode::Delay(Duration::from_secs(5)));
    let mut buf = [0u8; 1];
    let cut = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
        .await
        .expect("severed");
    assert!(matches!(cut, Ok(0) | Err(_)), "{cut:?}");
}
