//! A throwaway PostgreSQL database per test (features `testkit` + `postgres`).
//!
//! The server is `SDX_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! the one `.ci/run` starts). [`TestDb::create`] makes a database with a unique name and
//! drops it (with `FORCE`, so connections left open by a killed process do not keep it)
//! when the value is dropped. Without a reachable server the test is skipped loudly, and
//! fails under `CI=true` ([`super::daemon::require`]).

use tokio_postgres::NoTls;

/// The variable naming the test server.
pub const ENV: &str = "SDX_TEST_POSTGRES";
/// The server used when [`ENV`] is unset.
pub const DEFAULT_URI: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The test server's URI (maintenance database).
pub fn server_uri() -> String {
    std::env::var(ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URI.to_string())
}

/// A database made for one test; dropped with the value.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    uri: String,
    server: String,
}

async fn admin(server: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(server, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

/// Validates a database name made here (letters, digits, `_`): identifiers cannot be
/// bound as parameters, so this is the only SQL put together from a string.
fn ident(name: &str) -> &str {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "bad test database name {name:?}"
    );
    name
}

impl TestDb {
    /// Creates `sdx_<prefix>_<pid>_<random>`; `None` (after printing why) when no server
    /// answers outside CI. Panics under `CI=true` when none answers.
    pub async fn create(prefix: &str) -> Option<Self> {
        let server = server_uri();
        let client = match admin(&server).await {
            Ok(c) => c,
            Err(e) => {
                super::daemon::require("PostgreSQL", false, &format!("{ENV}={server}: {e}"));
                return None;
            }
        };
        let name = format!(
            "sdx_{}_{}_{:08x}",
            prefix.to_ascii_lowercase(),
            std::process::id(),
            fastrand::u32(..)
        );
        client
            .batch_execute(&format!("CREATE DATABASE {}", ident(&name)))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let mut url = url::Url::parse(&server).expect("SDX_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        Some(Self {
            name,
            uri: url.to_string(),
            server,
        })
    }

    /// The database's URI (`postgres://.../<name>`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside a runtime: do it on a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(c) = admin(&server).await {
                    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name));
                    if let Err(e) = c.batch_execute(&sql).await {
                        eprintln!("could not drop test database {name}: {e}");
                    }
                }
            });
        })
        .join();
    }
}
