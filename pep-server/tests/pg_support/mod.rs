//! Shared harness of the `pg_*` tests: a fresh database on the real PostgreSQL server of this
//! machine (127.0.0.1:5432, user `postgres`, trust auth), dropped again when the guard goes out of
//! scope — also when the test panics. PostgreSQL not answering is a test FAILURE, never a skip.

use rand::Rng;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The maintenance database the harness connects to for CREATE/DROP DATABASE.
pub(crate) const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test; dropped (with `FORCE`, closing leftover connections) on drop.
pub(crate) struct TestDb {
    /// The database name, `pep_test_<random>`.
    pub name: String,
    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub url: String,
}

async fn admin() -> PgConnection {
    PgConnection::connect(ADMIN_URL).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {ADMIN_URL} ({e}). The pg_* tests need the local \
             server (127.0.0.1:5432, user postgres, trust auth): start it with \
             `pg_ctlcluster --skip-systemctl-redirect <version> main start`, or run .ci/run, \
             which starts it. These tests fail rather than skip."
        )
    })
}

impl TestDb {
    /// Creates `pep_test_<random>`.
    pub(crate) async fn create() -> TestDb {
        let name = format!("pep_test_{:016x}", rand::thread_rng().r#gen::<u64>());
        let mut conn = admin().await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        // Test databases need no durability across a PostgreSQL crash: skipping the WAL flush per
        // commit keeps thousands of small transactions fast on a shared CI machine. Visibility,
        // locking and constraints — what the tests check — are unchanged.
        sqlx::query(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("ALTER DATABASE {name} failed: {e}"));
        let _ = conn.close().await;
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a fresh thread with its own runtime can block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(ADMIN_URL)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
