//! SQLite backend: WAL, `synchronous = FULL` by default ([`Durability`]), 5 s busy timeout, one
//! process per database file (an exclusive lock on `<file>.lock`).
//!
//! Writes go to one dedicated writer thread with its own connection, which commits whatever is
//! queued as one transaction (group commit, `store::sqlite_writer`); reads run on a small sqlx
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

use super::outbox::{Claim, Delivery, EventRoutes, Settle};
use super::sqlite_writer::{ClaimsWrite, OutboxWrite, SqliteWriter, Write, Written};
use super::{
    AuditKeys, Decision, DeployedOutcome, FailedOutcome, IN_DOUBT, INTERRUPTED, NewAttempt,
    Reservation, Resolution, RevokeOrder, RevokeOutcome, StoreError, WriteAhead, join_warnings,
    now_ms,
};

/// How durable a commit is before the store reports it done (`[store] durability`).
///
/// In WAL mode `NORMAL` syncs the WAL only at checkpoints: a commit survives the process being
/// killed, but a power cut or kernel crash can take the last commits with it — after the server
/// answered 200 and the gateway installed its identity. `FULL` syncs the WAL at every commit; the
/// writer thread commits a whole batch of queued writes at once, so one fsync covers the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Power-loss safe: every commit is on disk before it is acknowledged (SQLite
    /// `synchronous = FULL`; PostgreSQL sessions never run with `synchronous_commit = off`).
    #[default]
    Full,
    /// Survives a crash of the process, not of the machine (SQLite `synchronous = NORMAL`; the
    /// PostgreSQL server's own `synchronous_commit`). For labs and benchmarks only.
    Normal,
}

impl Durability {
    /// The `[store] durability` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        }
    }

    fn sqlite_synchronous(self) -> SqliteSynchronous {
        match self {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        }
    }
}

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
    /// The exclusive lock on `<database>.lock`, released by [`close`](Self::close) or with the
    /// last clone (or when the process dies: the kernel drops it). Start-up recovery marks every
    /// in-flight row of the file, so a second process must never open a live database.
    lock: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    /// Queue a cloud claim with each deployment (`[cloud] mode` not `off`).
    claims: bool,
}

/// Takes the exclusive lock beside the database file `db`, or names the holder's lock file.
fn lock_database(db: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::LockFile {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            database: db.to_owned(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::LockFile {
            path: lock_path,
            source,
        }),
    }
}

/// Sends `$write` to the writer thread and takes the value of the answer `$answer` (any other
/// answer is a defect of the writer, [`unexpected`]).
macro_rules! written {
    ($self:ident, $write:expr, $answer:pat => $value:expr) => {
        match $self.writer.write($write).await? {
            $answer => Ok($value),
            other => Err(unexpected(&other)),
        }
    };
}

impl SqliteStore {
    /// Opens (creating if missing) the database, takes its lock, runs the migrations, recovers
    /// interrupted attempts. Fails with [`StoreError::Locked`] while another process has it open.
    /// Deployed and failed outcomes put events into the webhook outbox for `routes`; with
    /// `claims`, each deployment queues its cloud claim in the same transaction (`[cloud] mode`
    /// not `off`).
    pub async fn open(
        url: &str,
        durability: Durability,
        routes: EventRoutes,
        claims: bool,
    ) -> Result<SqliteStore, StoreError> {
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
            .synchronous(durability.sqlite_synchronous())
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
        // Before anything reads or recovers the file. A throw-away `sqlite::memory:` database is
        // this process's alone.
        let lock = if in_memory {
            None
        } else {
            Some(lock_database(&path)?)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        // Before the writer exists, so nothing appends meanwhile: the rows written before the
        // hash chain are linked first, then the writer takes over the chain from its head.
        super::audit_log::backfill_sqlite(&pool).await?;
        let head = super::audit_log::head_sqlite(&pool, super::chain::DEFAULT_CHAIN).await?;
        let writer = SqliteWriter::start(&path, BUSY_TIMEOUT, durability, routes, head)?;
        let store = SqliteStore {
            pool,
            writer,
            _scratch: scratch,
            lock: Arc::new(std::sync::Mutex::new(lock)),
            claims,
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
        written!(self, write, Written::Reservation(r) => r)
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
            claim: self.claims,
        };
        written!(self, write, Written::Deployed { created_at } => created_at)
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
        written!(self, write, Written::Failed => ())
    }

    pub(super) async fn write_ahead(&self, id: i64, ahead: WriteAhead) -> Result<(), StoreError> {
        let write = Write::Ahead {
            id,
            ahead: Box::new(ahead),
        };
        written!(self, write, Written::Ahead => ())
    }

    pub(super) async fn resolve(&self, decision: Decision) -> Result<Resolution, StoreError> {
        let write = Write::Resolve {
            decision,
            claim: self.claims,
        };
        written!(self, write, Written::Resolved(r) => r)
    }

    pub(super) async fn revoke(&self, order: RevokeOrder) -> Result<RevokeOutcome, StoreError> {
        written!(self, Write::Revoke(Box::new(order)), Written::Revoked(r) => r)
    }

    pub(super) async fn next_crl_number(&self) -> Result<i64, StoreError> {
        written!(self, Write::NextCrlNumber, Written::CrlNumber(n) => n)
    }

    pub(super) async fn audit_refused(
        &self,
        keys: AuditKeys,
        detail: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let write = Write::Refused {
            keys: Box::new(keys),
            detail,
            now_ms,
        };
        written!(self, write, Written::Refused => ())
    }

    pub(super) async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        let write = Write::RecoverInterrupted {
            in_doubt: IN_DOUBT,
            error: INTERRUPTED,
            now_ms: now_ms(),
        };
        written!(self, write, Written::Recovered(n) => n)
    }

    /// A write of the webhook outbox other than a claim or a settlement, answered with the rows
    /// it wrote.
    pub(super) async fn outbox(&self, write: OutboxWrite) -> Result<u64, StoreError> {
        written!(self, Write::Outbox(Box::new(write)), Written::Outbox(n) => n)
    }

    /// Runs an outbox's lease release (`$1` = `owner`) on the writer thread: the rows it freed.
    pub(super) async fn release_leases(
        &self,
        statement: &'static str,
        owner: Option<String>,
        context: &'static str,
    ) -> Result<u64, StoreError> {
        let write = Write::ReleaseLeases {
            statement,
            owner,
            context,
        };
        written!(self, write, Written::Outbox(n) => n)
    }

    /// Whether deployments queue their cloud claim.
    pub(super) fn queues_claims(&self) -> bool {
        self.claims
    }

    /// Queues a claim deletion: one write of the writer thread.
    pub(super) async fn enqueue_claim_delete(
        &self,
        enrollment_id: String,
        serial: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let write = Write::ClaimDelete {
            enrollment_id,
            serial,
            now_ms,
        };
        written!(self, write, Written::ClaimDelete => ())
    }

    pub(super) async fn claim_deliveries(&self, claim: Claim) -> Result<Vec<Delivery>, StoreError> {
        written!(self, Write::Outbox(Box::new(OutboxWrite::Claim(claim))), Written::Claimed(rows) => rows)
    }

    pub(super) async fn settle_deliveries(
        &self,
        all: Vec<Settle>,
    ) -> Result<Vec<bool>, StoreError> {
        written!(self, Write::Outbox(Box::new(OutboxWrite::SettleMany(all))), Written::Settled(done) => done)
    }

    /// A write of the cloud claim sender, answered with the rows it wrote.
    pub(super) async fn claims(&self, write: ClaimsWrite) -> Result<u64, StoreError> {
        written!(self, Write::Claims(Box::new(write)), Written::Outbox(n) => n)
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
        // Closed: the file may be opened again (by this process or another).
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }
}

/// A write answered with another write's result: a bug in the writer, never input-derived.
fn unexpected(written: &Written) -> StoreError {
    StoreError::Corrupt(format!("the writer answered with {written:?}"))
}
