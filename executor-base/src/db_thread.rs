//! [`DbThread`]: a blocking database connection on a thread of its own.
//!
//! Embedded databases (SQLite through `rusqlite`) do blocking file I/O. Rather than
//! `spawn_blocking` per statement (which needs the connection to move between threads and
//! gives no ordering), the connection lives on one dedicated thread that runs the jobs
//! async callers send it, one after another, in the order they were sent. The timer
//! store ([`crate::timer::SqliteTimerStore`]) and the reference API's build store use it.

use std::fmt;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};

type Job<C> = Box<dyn FnOnce(&mut C) + Send>;

/// A connection of type `C` owned by one thread; see the [module docs](self).
///
/// Dropping it closes the connection: the thread finishes the job it is running, then
/// ends, and the drop waits for it (so a database file is closed when the drop returns).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use executor_base::db_thread::DbThread;
/// let db = DbThread::open("counter", || Ok(0u64)).await.unwrap();
/// let n = db.call(|c| { *c += 2; Ok(*c) }).await.unwrap();
/// assert_eq!(n, 2);
/// # });
/// ```
pub struct DbThread<C> {
    what: &'static str,
    jobs: Option<std_mpsc::Sender<Job<C>>>,
    thread: Option<JoinHandle<()>>,
}

impl<C> fmt::Debug for DbThread<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbThread")
            .field("what", &self.what)
            .field("open", &self.jobs.is_some())
            .finish()
    }
}

impl<C> Drop for DbThread<C> {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<C: 'static> DbThread<C> {
    /// Starts a thread named `sdx-<what>`, opens the connection there with `open`, and
    /// returns once it is open (or `open`'s error). `what` also names the store in the
    /// error of a call after the thread stopped.
    pub async fn open(
        what: &'static str,
        open: impl FnOnce() -> Result<C, Error> + Send + 'static,
    ) -> Result<Self, Error> {
        let (jobs, rx) = std_mpsc::channel::<Job<C>>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), Error>>();
        let thread = std::thread::Builder::new()
            .name(format!("sdx-{what}"))
            .spawn(move || match open() {
                Ok(mut conn) => {
                    let _ = ready_tx.send(Ok(()));
                    while let Ok(job) = rx.recv() {
                        job(&mut conn);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{what}: cannot start its thread: {e}"),
                )
            })?;
        let this = Self {
            what,
            jobs: Some(jobs),
            thread: Some(thread),
        };
        ready_rx.await.map_err(|_| this.closed())??;
        Ok(this)
    }

    fn closed(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!("{}: the database thread has stopped", self.what),
        )
    }

    /// Runs `f` with the connection on the thread, after every job sent before it, and
    /// returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let job: Job<C> = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| self.closed())?
            .send(job)
            .map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_and_open_errors_come_back() {
        let db = DbThread::open("order", || Ok(Vec::<u32>::new()))
            .await
            .unwrap();
        let calls: Vec<_> = (0..50u32)
            .map(|i| {
                db.call(move |v| {
                    v.push(i);
                    Ok(std::thread::current().name().map(str::to_string))
                })
            })
            .collect();
        for name in futures::future::join_all(calls).await {
            assert_eq!(name.unwrap().as_deref(), Some("sdx-order"));
        }
        let seen = db.call(|v| Ok(v.clone())).await.unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        let e = DbThread::<()>::open("broken", || {
            Err(Error::new(ErrorKind::ConfigInvalid, "no such file"))
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    }
}
