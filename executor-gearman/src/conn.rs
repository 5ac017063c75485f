//! Opening a framed connection to gearmand.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::codec::PacketCodec;
use crate::error::GearmanError;

/// A connection speaking Gearman packets.
pub(crate) type Conn = Framed<TcpStream, PacketCodec>;

/// Connects to `addr` within `timeout`, with `TCP_NODELAY` (packets are small and
/// latency-bound). Returns the connection and our local address (reported to Zuul as the
/// launcher's IP).
pub(crate) async fn connect(
    addr: &str,
    timeout: Duration,
    max_packet_size: usize,
) -> Result<(Conn, Option<SocketAddr>), GearmanError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(GearmanError::Connect {
                addr: addr.to_string(),
                source,
            });
        }
        Err(_) => {
            return Err(GearmanError::Connect {
                addr: addr.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                ),
            });
        }
    };
    // Best effort: a socket that refuses NODELAY still works, only slower.
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    Ok((
        Framed::new(stream, PacketCodec::new(max_packet_size)),
        local,
    ))
}
