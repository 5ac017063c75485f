//! `sdx serve`: the reference API on a port, dispatching to the configured backend(s),
//! until SIGINT or SIGTERM.
//!
//! Builds, steps, logs and the id sequence are kept in `api.db` in the state directory
//! (`--store` picks another store), timers in `timers.db` beside it. On SIGINT or SIGTERM
//! the server stops accepting builds and exits, leaving running builds running; the next
//! `sdx serve` on the same state directory adopts them (`--cancel-on-exit`: abort them
//! instead, the old behaviour). One `sdx serve` per state directory: a second one is
//! refused (`api.lock`), unless the store is PostgreSQL (`--store postgres://...`):
//! then several instances share the builds, timers and possibly the state directory,
//! coordinating through leases (see `executor_api::lease`).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use secrecy::{ExposeSecret, SecretString};

use super::Ctx;
use crate::cli::ServeArgs;
use crate::embedded::{Embedded, EmbeddedOptions, Mode, api_config};
use crate::error::{CliError, CliResult};

fn listen_addr(s: &str) -> CliResult<SocketAddr> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::usage(format!("--listen: not an address: {s:?}")))
}

fn write_token(path: &Path, token: &SecretString) -> CliResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::failure(format!("--token-file {}: {e}", path.display())))?;
    writeln!(f, "{}", token.expose_secret())
        .map_err(|e| CliError::failure(format!("--token-file {}: {e}", path.display())))
}

/// Takes `<state>/api.lock` for this process, so one `sdx serve` adopts a state
/// directory's builds at a time. Released when the process exits, however it exits.
fn lock_state_dir(state_dir: &Path) -> CliResult<Flock<std::fs::File>> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| CliError::failure(format!("state directory {}: {e}", state_dir.display())))?;
    let path = state_dir.join("api.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        CliError::failure(format!(
            "another sdx serve uses the state directory {} ({}: {e}); stop it, or give this one its own EXECUTOR_PROCESS_STATE_DIR",
            state_dir.display(),
            path.display()
        ))
    })
}

/// Serves until interrupted.
pub async fn run(ctx: &Ctx, a: ServeArgs) -> CliResult<u8> {
    let mut api = api_config(&ctx.file)?;
    if let Some(u) = &a.public_uri {
        api.public_uri = Some(u.clone());
    }
    if let Ok(t) = std::env::var("SDX_API_TOKEN")
        && !t.trim().is_empty()
    {
        api.user_token = Some(SecretString::from(t.trim().to_string()));
    }
    let state_dir = crate::backends::state_dir(&ctx.file)?;
    // Instances sharing a PostgreSQL store coordinate through leases, so they may also
    // share a state directory (the process backend's builds on this host).
    let shared = crate::embedded::serve_store(a.store.as_deref(), &api, &state_dir)?.is_shared();
    let _lock = if shared {
        None
    } else {
        Some(lock_state_dir(&state_dir)?)
    };
    // Before the backends start, so their first engine calls are counted.
    let metrics = match &a.metrics {
        Some(m) => {
            let addr = listen_addr(m)
                .map_err(|_| CliError::usage(format!("--metrics: not an address: {m:?}")))?;
            Some(crate::metrics_server::MetricsServer::start(addr).await?)
        }
        None => None,
    };
    let opts = EmbeddedOptions {
        listen: listen_addr(&a.listen)?,
        mode: Mode::Serve(a.store.clone()),
        api,
    };
    let emb = Embedded::start(&ctx.file, &ctx.executors, opts).await?;
    let (token_file, remove_after): (PathBuf, bool) = match &a.token_file {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!("sdx-api-{}.token", emb.server.local_addr().port())),
            true,
        ),
    };
    if let Err(e) = write_token(&token_file, emb.server.state().user_token()) {
        emb.shutdown(false).await;
        return Err(e);
    }
    say!(
        "sdx serve: reference API at {} (executor {})",
        emb.server.url(),
        emb.label()
    );
    say!(
        "administrator token in {} (export SDX_API_TOKEN=$(cat {}) for sdx run/status/stop --api {})",
        token_file.display(),
        token_file.display(),
        emb.server.url()
    );
    if let Some(m) = &metrics {
        say!("metrics at http://{}/metrics", m.addr());
    }
    if let Some(id) = emb.server.state().instance() {
        say!(
            "instance {id}: shares the store with other sdx serve instances (lease {} ms, renewed every {} ms)",
            emb.server.state().config().lease_ttl_ms,
            emb.server.state().config().lease_renew_ms
        );
    }
    say!(
        "builds kept in {}; stop with Ctrl-C ({})",
        emb.server.state().store().uri(),
        if a.cancel_on_exit {
            "open builds are aborted"
        } else {
            "running builds keep running and are adopted by the next sdx serve"
        }
    );
    crate::follow::signalled().await;
    if a.cancel_on_exit {
        say!("shutting down: aborting open builds");
    } else {
        say!("shutting down: running builds keep running");
    }
    emb.shutdown(a.cancel_on_exit).await;
    if remove_after {
        let _ = std::fs::remove_file(&token_file);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_token_files() {
        assert_eq!(
            listen_addr("127.0.0.1:0").unwrap().ip().to_string(),
            "127.0.0.1"
        );
        assert_eq!(listen_addr("nope").unwrap_err().code, 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        write_token(&p, &SecretString::from("abc")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "abc\n");
    }

    #[test]
    fn one_server_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_state_dir(dir.path()).unwrap();
        let e = lock_state_dir(dir.path()).unwrap_err();
        assert!(e.message.contains("another sdx serve"), "{}", e.message);
        drop(held);
        lock_state_dir(dir.path()).unwrap();
    }
}
