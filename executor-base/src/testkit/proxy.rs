//! [`FaultProxy`]: a loopback fault-injecting proxy (TCP or Unix socket) that tests put
//! between an executor and its engine (dockerd's socket, the Kubernetes API server, a
//! Jenkins controller, gearmand) and drive per connection.
//!
//! Every new connection gets the next [`FaultMode`] of the script ([`FaultProxy::script`]),
//! or the proxy's current mode ([`FaultProxy::set`]). Changing the mode severs every live
//! connection, as an engine going away does, so a client's pooled connections see the new
//! mode at once; except a switch between no fault and a short delay (under 1 s), the one
//! change an engine makes without dropping a connection: live connections are kept, and
//! while a delay is set each request on them reaches the engine that much later (a
//! client that keeps one connection, like Gearman's, sees a slow engine, not a cut). The
//! modes:
//!
//! | mode | what the client sees |
//! |---|---|
//! | [`FaultMode::Pass`] | the engine |
//! | [`FaultMode::Refuse`] | connection refused: the listener is closed (as set mode; in a script, a connection accepted and closed at once) |
//! | [`FaultMode::Blackhole`] | a connection accepted that never answers |
//! | [`FaultMode::Delay`] | the engine, each request held this long first (on live connections too) |
//! | [`FaultMode::ResetAfter`] | the request reaches the engine; the answer is cut by a TCP reset after that many bytes (a plain close on a Unix socket) |
//! | [`FaultMode::CutAfter`] | the request reaches the engine; the answer ends (orderly close) after that many bytes: a truncated body |
//! | [`FaultMode::Status`] | HTTP only: the request never reaches the engine; the answer is that status (with `Retry-After` when given) and a JSON body, then close |
//!
//! The HTTP modes need plain HTTP (a TLS client would see garbage); the connection modes
//! work for any protocol.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultMode {
    /// Forward both ways.
    Pass,
    /// Refuse connections (the listener is closed while this is the set mode).
    Refuse,
    /// Accept, read and discard, never answer.
    Blackhole,
    /// Hold the connection this long, then forward.
    Delay(Duration),
    /// Forward the request; reset the connection after this many bytes of the answer.
    ResetAfter(usize),
    /// Forward the request; close the connection after this many bytes of the answer.
    CutAfter(usize),
    /// Answer the first HTTP request with this status and close (never forwarded).
    Status {
        /// The HTTP status code (e.g. 500, 503, 429).
        code: u16,
        /// A `Retry-After` header in seconds, if any.
        retry_after: Option<u64>,
    },
}

impl FaultMode {
    /// `429 Too Many Requests` with `Retry-After: secs`.
    pub fn too_many_requests(secs: u64) -> Self {
        Self::Status {
            code: 429,
            retry_after: Some(secs),
        }
    }

    /// A plain HTTP error status without `Retry-After`.
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            retry_after: None,
        }
    }
}

/// Where the proxy listens and forwards.
#[derive(Debug, Clone)]
enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {
    /// A TCP reset instead of an orderly close when dropped (no-op for Unix sockets).
    fn reset_on_drop(&self) {}
}
impl Stream for TcpStream {
    fn reset_on_drop(&self) {
        let _ = self.set_zero_linger();
    }
}
impl Stream for UnixStream {}

type BoxStream = Pin<Box<dyn Stream>>;

struct Shared {
    listen: Endpoint,
    upstream: Endpoint,
    mode: Mutex<FaultMode>,
    /// The listener while not refusing (closed, so connections are refused, otherwise).
    slot: Mutex<Option<Arc<Listener>>>,
    script: Mutex<VecDeque<FaultMode>>,
    /// Bumped on every mode change; live connections end when it moves.
    generation: watch::Sender<u64>,
    accepted: AtomicUsize,
    answered: AtomicUsize,
    /// Bytes read from clients, whatever the mode.
    received: AtomicUsize,
    shutdown: CancellationToken,
}

/// A loopback fault-injecting proxy; stops (and removes its socket) on drop.
#[derive(Clone)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    _guard: Arc<DropGuard>,
}

struct DropGuard(CancellationToken, Option<PathBuf>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
        if let Some(p) = &self.1 {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen", &self.shared.listen)
            .field("upstream", &self.shared.upstream)
            .field("mode", &*self.shared.mode.lock())
            .finish()
    }
}

impl FaultProxy {
    /// A proxy on a fresh loopback TCP port in front of `upstream` (`host:port`).
    pub async fn tcp(upstream: &str) -> io::Result<Self> {
        let up = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .ok_or_else(|| io::Error::other(format!("{upstream} resolves to nothing")))?;
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let at = l.local_addr()?;
        Ok(Self::spawn(
            Endpoint::Tcp(at),
            Endpoint::Tcp(up),
            Listener::Tcp(l),
        ))
    }

    /// A proxy on the Unix socket `at` (replaced if present) in front of the Unix socket
    /// `upstream`.
    pub async fn unix(upstream: impl AsRef<Path>, at: impl AsRef<Path>) -> io::Result<Self> {
        let at = at.as_ref().to_path_buf();
        let _ = std::fs::remove_file(&at);
        let l = UnixListener::bind(&at)?;
        Ok(Self::spawn(
            Endpoint::Unix(at),
            Endpoint::Unix(upstream.as_ref().to_path_buf()),
            Listener::Unix(l),
        ))
    }

    /// Another proxy in front of the same upstream, listening on a fresh TCP port or on
    /// `<this socket>.<n>`; its mode is its own. The fault matrix gives each of its lanes
    /// one.
    pub async fn twin(&self) -> io::Result<Self> {
        static TWINS: AtomicUsize = AtomicUsize::new(0);
        match (&self.shared.listen, &self.shared.upstream) {
            (Endpoint::Unix(at), Endpoint::Unix(up)) => {
                let n = TWINS.fetch_add(1, Ordering::SeqCst) + 1;
                let mut name = at.clone().into_os_string();
                name.push(format!(".{n}"));
                Self::unix(up, PathBuf::from(name)).await
            }
            (_, Endpoint::Tcp(up)) => Self::tcp(&up.to_string()).await,
            (Endpoint::Tcp(_), Endpoint::Unix(up)) => Err(io::Error::other(format!(
                "no TCP twin of a proxy in front of the Unix socket {}",
                up.display()
            ))),
        }
    }

    fn spawn(listen: Endpoint, upstream: Endpoint, l: Listener) -> Self {
        let shutdown = CancellationToken::new();
        let path = match &listen {
            Endpoint::Unix(p) => Some(p.clone()),
            Endpoint::Tcp(_) => None,
        };
        let shared = Arc::new(Shared {
            listen,
            upstream,
            mode: Mutex::new(FaultMode::Pass),
            slot: Mutex::new(Some(Arc::new(l))),
            script: Mutex::new(VecDeque::new()),
            generation: watch::channel(0).0,
            accepted: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(accept_loop(shared.clone()));
        Self {
            shared,
            _guard: Arc::new(DropGuard(shutdown, path)),
        }
    }

    /// `host:port` of a TCP proxy.
    pub fn addr(&self) -> String {
        match &self.shared.listen {
            Endpoint::Tcp(a) => a.to_string(),
            Endpoint::Unix(p) => p.display().to_string(),
        }
    }

    /// `scheme://host:port` of a TCP proxy, or `unix://<path>` of a Unix one.
    pub fn url(&self, scheme: &str) -> String {
        match &self.shared.listen {
            Endpoint::Tcp(a) => format!("{scheme}://{a}"),
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
        }
    }

    /// Sets the mode of every new connection (after the script), severing live ones;
    /// except a switch between no fault and a short delay (under 1 s), either way: those
    /// connections are healthy, and cutting them would be a fault of its own (a client
    /// that keeps one connection, like Gearman's, would see it). A short delay reaches
    /// them request by request instead.
    pub fn set(&self, mode: FaultMode) {
        let healthy_now = is_healthy(&mode);
        let old = std::mem::replace(&mut *self.shared.mode.lock(), mode);
        sync_listener(&self.shared);
        if !(healthy_now && is_healthy(&old)) {
            self.shared.generation.send_modify(|g| *g += 1);
        }
    }

    /// The next connections get these modes, one each, before the set mode applies again.
    pub fn script(&self, modes: impl IntoIterator<Item = FaultMode>) {
        self.shared.script.lock().extend(modes);
        sync_listener(&self.shared);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// The current set mode.
    pub fn mode(&self) -> FaultMode {
        self.shared.mode.lock().clone()
    }

    /// Connections accepted so far (refused ones are not seen).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes the proxy has read from its clients so far, in any mode (refused
    /// connections send none): whether a request was attempted, also over a connection
    /// a client kept open.
    pub fn received(&self) -> usize {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected HTTP status so far.
    pub fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `at` again (synchronously, so the proxy listens when `set` returns).
    fn bind(at: &Endpoint) -> io::Result<Self> {
        Ok(match at {
            Endpoint::Tcp(a) => {
                let l = std::net::TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                Self::Tcp(TcpListener::from_std(l)?)
            }
            Endpoint::Unix(p) => {
                let _ = std::fs::remove_file(p);
                let l = std::os::unix::net::UnixListener::bind(p)?;
                l.set_nonblocking(true)?;
                Self::Unix(UnixListener::from_std(l)?)
            }
        })
    }

    async fn accept(&self) -> io::Result<BoxStream> {
        Ok(match self {
            Self::Tcp(l) => Box::pin(l.accept().await?.0),
            Self::Unix(l) => Box::pin(l.accept().await?.0),
        })
    }
}

fn refusing(s: &Shared) -> bool {
    s.script.lock().is_empty() && *s.mode.lock() == FaultMode::Refuse
}

/// Closes the listener while refusing (a Unix socket's file stays, as a dead daemon's
/// does, so connecting is refused rather than "not found"), binds it again otherwise.
fn sync_listener(s: &Shared) {
    let mut slot = s.slot.lock();
    if refusing(s) {
        *slot = None;
    } else if slot.is_none() {
        let mut tries = 0;
        loop {
            match Listener::bind(&s.listen) {
                Ok(l) => break *slot = Some(Arc::new(l)),
                Err(_) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => panic!("fault proxy: cannot listen on {:?} again: {e}", s.listen),
            }
        }
    }
}

/// No fault, or a delay short enough that an engine answering that slowly keeps its
/// connections.
fn is_healthy(mode: &FaultMode) -> bool {
    match mode {
        FaultMode::Pass => true,
        FaultMode::Delay(d) => *d < Duration::from_secs(1),
        _ => false,
    }
}

/// The delay set now, which every forwarded request waits (see [`FaultProxy::set`]).
fn current_delay(s: &Shared) -> Option<Duration> {
    match *s.mode.lock() {
        FaultMode::Delay(d) => Some(d),
        _ => None,
    }
}

async fn accept_loop(s: Arc<Shared>) {
    let mut changes = s.generation.subscribe();
    loop {
        let listener = s.slot.lock().clone();
        let Some(l) = listener else {
            tokio::select! {
                _ = changes.changed() => continue,
                _ = s.shutdown.cancelled() => return,
            }
        };
        tokio::select! {
            r = l.accept() => {
                drop(l);
                let Ok(conn) = r else { continue };
                if s.slot.lock().is_none() {
                    // Accepted in the instant before a switch to refusing: closed at once.
                    continue;
                }
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let mode = s.script.lock().pop_front().unwrap_or_else(|| s.mode.lock().clone());
                sync_listener(&s);
                let gen_rx = s.generation.subscribe();
                tokio::spawn(serve(s.clone(), conn, mode, gen_rx));
            }
            _ = changes.changed() => {}
            _ = s.shutdown.cancelled() => return,
        }
    }
}

async fn connect(up: &Endpoint) -> io::Result<BoxStream> {
    Ok(match up {
        Endpoint::Tcp(a) => Box::pin(TcpStream::connect(a).await?),
        Endpoint::Unix(p) => Box::pin(UnixStream::connect(p).await?),
    })
}

async fn serve(s: Arc<Shared>, conn: BoxStream, mode: FaultMode, mut gen_rx: watch::Receiver<u64>) {
    gen_rx.mark_unchanged();
    let sever = async move {
        let _ = gen_rx.changed().await;
    };
    tokio::select! {
        _ = run(&s, conn, mode) => {}
        _ = sever => {}
        _ = s.shutdown.cancelled() => {}
    }
}

async fn run(s: &Shared, mut conn: BoxStream, mode: FaultMode) {
    match mode {
        FaultMode::Refuse => {}
        FaultMode::Blackhole => {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = conn.read(&mut buf).await {
                s.received.fetch_add(n, Ordering::SeqCst);
            }
            std::future::pending::<()>().await;
        }
        FaultMode::Status { code, retry_after } => {
            let head = read_head(&mut conn).await;
            if let Ok(n) = head {
                s.received.fetch_add(n, Ordering::SeqCst);
                s.answered.fetch_add(1, Ordering::SeqCst);
                let body = format!(
                    "{{\"message\":\"fault proxy: injected {code}\",\"kind\":\"Status\",\"code\":{code}}}"
                );
                let retry = retry_after
                    .map(|r| format!("Retry-After: {r}\r\n"))
                    .unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n",
                    reason(code),
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        }
        FaultMode::Delay(d) => {
            // The request is taken at once (so it counts as attempted) and reaches the
            // engine `d` later.
            let mut first = vec![0u8; 16 * 1024];
            let n = match conn.read(&mut first).await {
                Ok(n @ 1..) => n,
                _ => return,
            };
            s.received.fetch_add(n, Ordering::SeqCst);
            first.truncate(n);
            tokio::time::sleep(d).await;
            forward(s, conn, first, None, false).await;
        }
        FaultMode::Pass => forward(s, conn, Vec::new(), None, false).await,
        FaultMode::ResetAfter(n) => forward(s, conn, Vec::new(), Some(n), true).await,
        FaultMode::CutAfter(n) => forward(s, conn, Vec::new(), Some(n), false).await,
    }
}

/// Forwards both ways (`first`: what was already read from the client); with `limit`,
/// the answer ends after that many bytes (by a reset when `reset`).
async fn forward(s: &Shared, conn: BoxStream, first: Vec<u8>, limit: Option<usize>, reset: bool) {
    let Ok(up) = connect(&s.upstream).await else {
        // The engine itself is down: the client sees its connection closed.
        return;
    };
    let (mut cr, mut cw) = tokio::io::split(conn);
    let (mut ur, mut uw) = tokio::io::split(up);
    // Whether the engine answered since the client last sent: the client's next bytes
    // begin a new request, which a delay set meanwhile holds (once per request, not per
    // chunk of a long upload).
    let answered = AtomicBool::new(false);
    let to_up = async {
        if uw.write_all(&first).await.is_ok() {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                s.received.fetch_add(n, Ordering::SeqCst);
                if answered.swap(false, Ordering::SeqCst)
                    && let Some(d) = current_delay(s)
                {
                    tokio::time::sleep(d).await;
                }
                if uw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        let _ = uw.shutdown().await;
        std::future::pending::<()>().await;
    };
    let to_client = async {
        let mut answer = (&mut ur).take(limit.map_or(u64::MAX, |n| n as u64));
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = answer.read(&mut buf).await {
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            answered.store(true, Ordering::SeqCst);
        }
        let _ = cw.flush().await;
        if !reset {
            let _ = cw.shutdown().await;
        }
    };
    tokio::select! {
        _ = to_up => {}
        _ = to_client => {}
    }
    if reset {
        let conn = cr.unsplit(cw);
        conn.reset_on_drop();
    }
}

/// Reads up to the end of an HTTP request head (the body, if any, is left unread);
/// returns how many bytes it read.
async fn read_head(conn: &mut BoxStream) -> io::Result<usize> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head.len())
}

fn reason(code: u16) -> &'static str {
    match code {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
