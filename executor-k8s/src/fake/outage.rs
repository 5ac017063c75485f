//! The fake's front door: a loopback TCP relay in front of the HTTP server, so a test can
//! take the "API server" away (connections refused, open ones reset, watches cut) and
//! bring it back on the same port, as when a real kube-apiserver restarts.

use std::net::SocketAddr;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// The relay: accepts on the public address and forwards to the server's own.
#[derive(Debug)]
pub(crate) struct FrontDoor {
    public: SocketAddr,
    backend: SocketAddr,
    /// The accept loop and every relayed connection, while up.
    tasks: Mutex<Option<Vec<AbortHandle>>>,
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl FrontDoor {
    /// A relay on `127.0.0.1:0` to `backend`, up.
    pub(crate) async fn open(backend: SocketAddr) -> std::sync::Arc<Self> {
        let listener = listen(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
        let door = std::sync::Arc::new(Self {
            public: listener.local_addr().expect("local addr"),
            backend,
            tasks: Mutex::new(Some(Vec::new())),
        });
        door.serve(listener);
        door
    }

    /// The address clients use.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.public
    }

    fn serve(self: &std::sync::Arc<Self>, listener: TcpListener) {
        let me = std::sync::Arc::downgrade(self);
        let backend = self.backend;
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(door) = me.upgrade() else { return };
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Some(tasks) = door.tasks.lock().as_mut() {
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(relay.abort_handle());
                } else {
                    relay.abort();
                }
            }
        });
        if let Some(tasks) = self.tasks.lock().as_mut() {
            tasks.push(accept.abort_handle());
        }
    }

    /// Stops accepting and drops every open connection.
    pub(crate) fn close(&self) {
        if let Some(tasks) = self.tasks.lock().take() {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// Accepts again on the same port.
    pub(crate) fn reopen(self: &std::sync::Arc<Self>) {
        if self.tasks.lock().is_some() {
            return;
        }
        let listener = listen(self.public).expect("re-bind the fake's port");
        *self.tasks.lock() = Some(Vec::new());
        self.serve(listener);
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        self.close();
    }
}
