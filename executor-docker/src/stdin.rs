//! Token mode `stdin`: the token reaches the launcher through the build container's stdin.
//!
//! The build container is created with `OpenStdin` + `StdinOnce`. Before it is started,
//! `start` attaches to its stdin only ([`Engine::attach_stdin`], an HTTP upgrade on the
//! daemon connection, as `docker run -i` does); after the start it writes the token and
//! closes its half of the stream ([`StdinFeed::deliver`]). With `StdinOnce` the daemon then
//! closes the container's stdin, so the launcher's `--token-file /dev/stdin` reads exactly
//! the token followed by end-of-file, and nothing can attach and write to it again.
//!
//! The token is never in the container's config, in a file or in a volume.

use std::pin::Pin;
use std::time::Duration;

use executor_base::{Error, ErrorKind};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// An attach to a container's stdin, made before its start. Only the write half is kept:
/// nothing but stdin is attached, so the read half carries nothing.
pub(crate) struct StdinFeed {
    pub(crate) container: String,
    pub(crate) input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl std::fmt::Debug for StdinFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinFeed")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl StdinFeed {
    /// Writes `data` and closes the stream (at most `within`). The bytes are then in the
    /// daemon's socket buffer, which it copies to the container's stdin before the
    /// end-of-file that closes it (`StdinOnce`).
    ///
    /// There is no later acknowledgement to wait for: the daemon ends a `StdinOnce` attach
    /// only when the container is not running, which for an attach made before the start
    /// depends on a race inside the daemon (in most runs the attach ends at once; in about
    /// one in a hundred it lasts as long as the build).
    ///
    /// Errors never contain `data`.
    pub(crate) async fn deliver(mut self, data: &[u8], within: Duration) -> Result<(), Error> {
        let container = self.container.clone();
        let fail = |what: String| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot feed the token to the stdin of {container}: {what}"),
            )
            .temporary()
        };
        let feed = async {
            self.input
                .write_all(data)
                .await
                .map_err(|e| fail(e.to_string()))?;
            self.input.shutdown().await.map_err(|e| fail(e.to_string()))
        };
        // Dropping the feed then closes our end of the connection; the daemon still reads
        // what is queued before it sees the end.
        tokio::time::timeout(within, feed)
            .await
            .map_err(|_| fail(format!("the daemon did not take it within {within:?}")))?
    }
}
