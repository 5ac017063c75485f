//! [`PrivateDockerd`]: a `dockerd` of a test's own, for tests that stop, kill or restart
//! the daemon without disturbing the shared one (or other tests using it).
//!
//! It has its own socket, data root, exec root (and so its own managed `containerd`),
//! pid file and an empty config file, `--bridge=none` and no iptables, all under one
//! short temporary directory; it needs root, like the shared daemon. Images come from the
//! shared daemon ([`PrivateDockerd::copy_images`]), never from a remote registry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ImportImageOptionsBuilder;
use futures::StreamExt;

/// How long a (re)started daemon may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a stopped daemon may take to exit (it stops running containers first, 10 s
/// each by default, concurrently).
const EXIT_WITHIN: Duration = Duration::from_secs(45);

/// A private `dockerd`; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct PrivateDockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Starts a daemon under a fresh directory named after `name` (keep it short: the
    /// containerd socket path inside must stay under 108 bytes) and waits until it answers.
    pub async fn start(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/sdxd-{name}-{}", std::process::id()));
        cleanup(&dir);
        std::fs::create_dir_all(&dir).expect("daemon directory");
        std::fs::write(dir.join("daemon.json"), "{}\n").expect("daemon config");
        let mut d = Self { dir, child: None };
        d.run().await;
        d
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("d.sock")
    }

    /// The endpoint, `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// A client of this daemon.
    pub async fn client(&self) -> Docker {
        Docker::connect_with_unix(
            &self.socket().display().to_string(),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("private docker socket")
        .negotiate_version()
        .await
        .expect("private docker version")
    }

    /// Whether the daemon process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("daemon log");
        let dir = self.dir.clone();
        let p = |f: &str| dir.join(f).display().to_string();
        let child = Command::new("dockerd")
            .args(["--config-file", &p("daemon.json")])
            .args(["-H", &self.host()])
            .args(["--data-root", &p("data")])
            .args(["--exec-root", &p("x")])
            .args(["--pidfile", &p("d.pid")])
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd (is it installed, are we root?)");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Ok(d) = Docker::connect_with_unix(
                &self.socket().display().to_string(),
                5,
                bollard::API_DEFAULT_VERSION,
            ) && d.ping().await.is_ok()
            {
                return;
            }
            assert!(
                self.is_running(),
                "private dockerd exited: see {}",
                p("dockerd.log")
            );
            assert!(
                t0.elapsed() < READY_WITHIN,
                "private dockerd not ready: see {}",
                p("dockerd.log")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &c.id().to_string()])
                .status();
        }
    }

    async fn wait_exit(&mut self) {
        let t0 = Instant::now();
        while self.is_running() {
            assert!(t0.elapsed() < EXIT_WITHIN, "private dockerd did not exit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.child = None;
    }

    /// Stops the daemon as a service manager does (SIGTERM: it stops its containers
    /// first) and waits until it has exited.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        self.wait_exit().await;
    }

    /// Kills the daemon (SIGKILL: its containers keep running under their shims until a
    /// restarted daemon restores them) and waits until it has exited.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        self.wait_exit().await;
    }

    /// Starts the daemon again (after [`Self::stop`] or [`Self::kill`]).
    pub async fn restart(&mut self) {
        assert!(!self.is_running(), "restart of a running daemon");
        self.run().await;
    }

    /// Copies images from the shared daemon (`docker save | docker load`).
    pub async fn copy_images(&self, references: &[&str]) {
        let shared = super::docker().await;
        let mine = self.client().await;
        for r in references {
            let mut tar = Vec::new();
            let mut s = shared.export_image(r);
            while let Some(chunk) = s.next().await {
                tar.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("export {r}: {e}")));
            }
            let mut load = mine.import_image(
                ImportImageOptionsBuilder::new().quiet(true).build(),
                bollard::body_full(tar.into()),
                None,
            );
            while let Some(item) = load.next().await {
                item.unwrap_or_else(|e| panic!("import {r}: {e}"));
            }
        }
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal("TERM");
            let t0 = Instant::now();
            while self.is_running() && t0.elapsed() < EXIT_WITHIN {
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.is_running() {
                self.signal("KILL");
            }
        }
        cleanup(&self.dir);
    }
}

/// Unmounts what a daemon left mounted under `dir` (its data root is bind-mounted onto
/// itself) and removes `dir`.
fn cleanup(dir: &Path) {
    let prefix = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
    let _ = std::fs::remove_dir_all(dir);
}
