//! SQLite backend: WAL, `synchronous=NORMAL`, 5 s busy timeout.
//!
//! Writes go to one dedicated writer thread with its own connection, which commits whatever is
//! queued as one transaction (group commit, `super::sqlite_writer`); reads run on a small sqlx
//! pool beside it (WAL readers never wait for the writer). Migrations are sqlx's.
//!
//! `sqlite::memory:` is a throw-away database in a temporary directory, removed when the store is
//! dropped: a real file, so that the writer thread and the readers share it like any other.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sqlite_writer::{SqliteWriter, Write, Written};
use super::{
    DeployedOutcome, FailedOutcome, INTERRUPTED, NewAttempt, Reservation, StoreError,
    join_warnings, now_ms,
};

/// How long a connection waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader pool size: reads run in parallel beside the writer (WAL).
const MAX_CONNECTIONS: u32 = 8;
/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (and the bulk copy of `store::migrate`).
    pool: SqlitePool,
    /// The one connection every write of the hot path runs on, on its own thread.
    writer: SqliteWriter,
    /// The temporary directory of a `sqlite::memory:` database, removed with the last clone.
    _scratch: Option<Arc<tempfile::TempDir>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database, runs the migrations, recovers interrupted attempts.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            url: url.to_owned(),
            source,
        };
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let (options, scratch) = if in_memory {
            let dir = tempfile::Builder::new()
                .prefix("pep-memory-")
                .tempdir()
                .map_err(|source| StoreError::CreateDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let options = SqliteConnectOptions::new().filename(dir.path().join("pep.sqlite"));
            (options, Some(Arc::new(dir)))
        } else {
            (SqliteConnectOptions::from_str(url).map_err(open_err)?, None)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let path = options.get_filename().to_owned();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let writer = SqliteWriter::start(&path, BUSY_TIMEOUT)?;
        let store = SqliteStore {
            pool,
            writer,
            _scratch: scratch,
        };
        let recovered = store.recover_interrupted().await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "marked attempts left in flight by a previous run as failed"
            );
        }
        Ok(store)
    }

    /// The readers' pool (the shared reads of [`super::Store`], and `store::migrate`).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn reserve(&self, attempt: &NewAttempt) -> Result<Reservation, StoreError> {
        // The one copy of the attempt: it crosses to the writer thread.
        let write = Write::Reserve(Box::new(attempt.clone()));
        match self.writer.write(write).await? {
            Written::Reservation(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn mark_deployed(
        &self,
        id: i64,
        o: &DeployedOutcome<'_>,
    ) -> Result<i64, StoreError> {
        let write = Write::Deployed {
            id,
            enrollment_id: o.enrollment_id.to_owned(),
            cert_serial: o.cert_serial.to_owned(),
            cert_not_after: o.cert_not_after,
            fcc_warnings: join_warnings(o.fcc_warnings),
            detail: o.detail(),
            duration_ms: o.duration_ms,
            now_ms: now_ms(),
        };
        match self.writer.write(write).await? {
            Written::Deployed { created_at } => Ok(created_at),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn mark_failed(
        &self,
        id: i64,
        o: &FailedOutcome<'_>,
    ) -> Result<(), StoreError> {
        let write = Write::Failed {
            id,
            fcc_status: o.fcc_status,
            fcc_info: o.fcc_info.map(str::to_owned),
            fcc_warnings: join_warnings(o.fcc_warnings),
            error: o.error.to_owned(),
            duration_ms: o.duration_ms,
            now_ms: now_ms(),
        };
        match self.writer.write(write).await? {
            Written::Failed => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        let write = Write::RecoverInterrupted {
            error: INTERRUPTED,
            now_ms: now_ms(),
        };
        match self.writer.write(write).await? {
            Written::Recovered(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// A write answered with another write's result: a bug in the writer, never input-derived.
fn unexpected(written: &Written) -> StoreError {
    StoreError::Corrupt(format!("the writer answered with {written:?}"))
}
