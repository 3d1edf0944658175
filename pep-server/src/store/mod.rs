//! The identity store: every SQL statement of the server lives below this module.
//!
//! [`Store`] is an enum over backends, selected by the database URL: SQLite ([`sqlite::SqliteStore`],
//! one server per file) and PostgreSQL ([`postgres::PostgresStore`], any number of servers sharing
//! one database).
//!
//! Life of a row: [`Store::reserve`] inserts (or revives a `failed`) row as `in_flight` — the UNIQUE
//! constraint on `serial` decides races, never a check-then-insert; [`Store::mark_deployed`] or
//! [`Store::mark_failed`] finish it. Each of these is one transaction together with its audit row.
//!
//! **Crash recovery happens in [`Store::open`]**: rows left `in_flight` by a process that died are
//! marked `failed` (so the serial can be retried) and audited as `interrupted`. With SQLite that is
//! every in-flight row, so one SQLite file must be served by one pep-server process at a time. With
//! PostgreSQL it is only the rows of this server instance ([`StoreOptions::server_id`]) plus rows
//! in flight for longer than [`StoreOptions::in_flight_lease`], so servers can start and stop
//! independently while the others keep provisioning.

pub mod migrate;
pub mod postgres;
pub mod sqlite;
mod sqlite_writer;

use std::fmt;

pub use migrate::{MigrationReport, migrate_store};
pub use postgres::{PostgresStore, StoreOptions, default_server_id};
pub use sqlite::SqliteStore;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error(
        "unsupported database URL `{0}` (expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB)"
    )]
    UnsupportedUrl(String),
    /// The database directory could not be created.
    #[error("cannot create database directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Opening / connecting failed.
    #[error("cannot open database {url}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// The cause.
        source: sqlx::Error,
    },
    /// Running the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error while {context}: {source}")]
    Query {
        /// What the store was doing.
        context: &'static str,
        /// The cause.
        source: sqlx::Error,
    },
    /// A write of the SQLite writer thread failed (the write was rolled back).
    #[error("database error while {context}: {reason}")]
    Write {
        /// What the store was doing.
        context: &'static str,
        /// The cause.
        reason: String,
    },
    /// The store was closed (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    /// A row was not in the state the operation requires (e.g. finishing an attempt that is no longer
    /// in flight because another process recovered it).
    #[error("identity row {id} is not in flight (state changed underneath)")]
    NotInFlight {
        /// The row id.
        id: i64,
    },
    /// A stored value is not what the schema promises.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// `migrate-store` copies into an empty store only.
    #[error(
        "the target store already holds {identities} identities and {audit} audit rows; \
         migrate-store copies into an empty store only"
    )]
    TargetNotEmpty {
        /// Identities in the target.
        identities: u64,
        /// Audit rows in the target.
        audit: u64,
    },
}

/// State of an identity row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityState {
    /// An attempt is running (or the process died during one; recovered at start-up).
    InFlight,
    /// Injected with success.
    Deployed,
    /// The latest attempt failed; the serial may be retried.
    Failed,
}

impl IdentityState {
    /// The text stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityState::InFlight => "in_flight",
            IdentityState::Deployed => "deployed",
            IdentityState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "in_flight" => Ok(IdentityState::InFlight),
            "deployed" => Ok(IdentityState::Deployed),
            "failed" => Ok(IdentityState::Failed),
            other => Err(StoreError::Corrupt(format!("unknown state `{other}`"))),
        }
    }
}

impl fmt::Display for IdentityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sort order of [`Store::list_deployed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Oldest first (ids ascending).
    Asc,
    /// Newest first (ids descending), the API default.
    #[default]
    Desc,
}

/// A deployed identity as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// Row id, the paging cursor (`_id` / `last` in the API).
    pub id: i64,
    /// The serial number (= endpoint name = certificate CN).
    pub serial_number: String,
    /// Device ID (empty at the factory).
    pub device_id: String,
    /// Always true for listed records.
    pub deployed: bool,
    /// Hardware version.
    pub hardware_version: String,
    /// Radio configuration.
    pub radio_config: String,
    /// LED configuration.
    pub led_config: String,
    /// `production` or `development`.
    pub category: String,
    /// Cloud address (= gateway services address).
    pub cloud_address: String,
    /// API address.
    pub api_address: String,
    /// Gateway services address.
    pub gateway_services_address: String,
    /// Enrollment ID (`A-` + SHA-256 of the certificate).
    pub enrollment_id: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
}

/// Everything stored about one serial (for operators and tests; never holds a private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDetail {
    /// Row id.
    pub id: i64,
    /// Serial.
    pub serial_number: String,
    /// Row state.
    pub state: IdentityState,
    /// `ip:port` of the latest attempt.
    pub gateway: String,
    /// Requester of the latest attempt.
    pub requester: String,
    /// OU (empty).
    pub ou: String,
    /// Device ID (empty).
    pub device_id: String,
    /// Hardware version.
    pub hardware_version: String,
    /// Radio configuration.
    pub radio_config: String,
    /// LED configuration.
    pub led_config: String,
    /// Category.
    pub category: String,
    /// Cloud address.
    pub cloud_address: String,
    /// API address.
    pub api_address: String,
    /// Gateway services address.
    pub gateway_services_address: String,
    /// FSS verification key, if given.
    pub verification_key: Option<String>,
    /// Enrollment ID once deployed.
    pub enrollment_id: Option<String>,
    /// Certificate serial (hex) once deployed.
    pub cert_serial: Option<String>,
    /// Certificate notAfter (unix seconds) once deployed.
    pub cert_not_after: Option<i64>,
    /// FCC ReturnStatus of the latest attempt, if FCC answered.
    pub fcc_status: Option<u32>,
    /// FCC warnings of the latest attempt.
    pub fcc_warnings: Vec<String>,
    /// Error of the latest failed attempt.
    pub last_error: Option<String>,
    /// Number of attempts.
    pub attempts: i64,
    /// ms since the epoch, start of the latest attempt.
    pub created_at_ms: i64,
    /// ms since the epoch, last change.
    pub updated_at_ms: i64,
}

/// Counts per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Deployed gateways.
    pub deployed: u64,
    /// Serials whose latest attempt failed.
    pub failed: u64,
    /// Attempts running now.
    pub in_flight: u64,
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Row id (append order).
    pub id: i64,
    /// ms since the epoch.
    pub at_ms: i64,
    /// Serial.
    pub serial: String,
    /// `ip:port`.
    pub gateway: String,
    /// Who asked.
    pub requester: String,
    /// `attempt`, `deployed`, `failed`, `conflict` or `interrupted`.
    pub event: String,
    /// FCC ReturnStatus, when FCC answered.
    pub fcc_status: Option<u32>,
    /// Error text or other detail.
    pub detail: Option<String>,
    /// Duration of the attempt, ms (outcome rows).
    pub duration_ms: Option<i64>,
}

/// Outcome counts of the audit trail over a period (the factory-floor counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutcomeCounts {
    /// `deployed` audit rows.
    pub deployed: u64,
    /// `failed` and `interrupted` audit rows (failed attempts).
    pub failed: u64,
}

/// Outcome counts of one minute (the factory-floor rate chart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MinuteOutcomes {
    /// The minute: `at_ms / 60_000`.
    pub minute: i64,
    /// Outcomes in that minute.
    pub counts: OutcomeCounts,
}

/// The data of a new attempt.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    /// Serial (already validated).
    pub serial: &'a str,
    /// `ip:port`.
    pub gateway: &'a str,
    /// Who asked.
    pub requester: &'a str,
    /// Hardware version.
    pub hardware_version: &'a str,
    /// Radio configuration.
    pub radio_config: &'a str,
    /// LED configuration.
    pub led_config: &'a str,
    /// `production` or `development`.
    pub category: &'a str,
    /// Cloud address.
    pub cloud_address: &'a str,
    /// API address.
    pub api_address: &'a str,
    /// Gateway services address.
    pub gateway_services_address: &'a str,
    /// FSS verification key.
    pub verification_key: Option<&'a str>,
    /// Start time, ms since the epoch (becomes `created_at`).
    pub now_ms: i64,
}

/// Result of [`Store::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The serial is ours: row id.
    Reserved {
        /// Row id.
        id: i64,
    },
    /// The serial is deployed or another attempt is in flight.
    Conflict {
        /// The existing row's state.
        state: IdentityState,
    },
}

/// Outcome data of a successful injection.
#[derive(Debug, Clone)]
pub struct DeployedOutcome<'a> {
    /// Enrollment ID.
    pub enrollment_id: &'a str,
    /// Certificate serial, hex.
    pub cert_serial: &'a str,
    /// Certificate notAfter, unix seconds.
    pub cert_not_after: i64,
    /// FCC warnings (normally none).
    pub fcc_warnings: &'a [String],
    /// Attempt duration, ms.
    pub duration_ms: i64,
}

/// Outcome data of a failed attempt.
#[derive(Debug, Clone)]
pub struct FailedOutcome<'a> {
    /// FCC ReturnStatus if FCC answered.
    pub fcc_status: Option<u32>,
    /// FCC warnings if FCC answered.
    pub fcc_warnings: &'a [String],
    /// What went wrong (InfoMessage or transport error, with the gateway).
    pub error: &'a str,
    /// Attempt duration, ms.
    pub duration_ms: i64,
}

/// The store (one variant per backend).
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite (default).
    Sqlite(SqliteStore),
    /// PostgreSQL (`postgres://` or `postgresql://`), shared by several servers.
    Postgres(PostgresStore),
}

impl Store {
    /// Opens the database at `url` (creating a SQLite file and its directory if missing), runs the
    /// migrations and marks attempts left in flight by a crash as failed (audited as `interrupted`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, StoreOptions::default()).await
    }

    /// [`Store::open`] with the options of a shared database (server id, in-flight lease); SQLite
    /// ignores them. A `postgres://` URL recovers only this server's interrupted attempts and the
    /// expired ones.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PostgresStore::open(url, options).await?))
        } else {
            Err(StoreError::UnsupportedUrl(postgres::redact(url)))
        }
    }

    /// Reserves `attempt.serial` in one transaction (with an `attempt` audit row, or a `conflict` one).
    pub async fn reserve(&self, attempt: &NewAttempt<'_>) -> Result<Reservation, StoreError> {
        match self {
            Store::Sqlite(s) => s.reserve(attempt).await,
            Store::Postgres(s) => s.reserve(attempt).await,
        }
    }

    /// Marks row `id` deployed and audits it, in one transaction. Returns the row's `created_at` (ms).
    pub async fn mark_deployed(
        &self,
        id: i64,
        outcome: &DeployedOutcome<'_>,
    ) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.mark_deployed(id, outcome).await,
            Store::Postgres(s) => s.mark_deployed(id, outcome).await,
        }
    }

    /// Marks row `id` failed (retryable) and audits it, in one transaction.
    pub async fn mark_failed(
        &self,
        id: i64,
        outcome: &FailedOutcome<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.mark_failed(id, outcome).await,
            Store::Postgres(s) => s.mark_failed(id, outcome).await,
        }
    }

    /// Marks every `in_flight` row failed and audits each as `interrupted`; returns how many.
    /// [`Store::open`] calls it; only call it again when no attempt of this server can be running.
    /// PostgreSQL: only this server's rows and rows in flight longer than the lease.
    pub async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.recover_interrupted().await,
            Store::Postgres(s) => s.recover_interrupted().await,
        }
    }

    /// The enrollment ID of a deployed serial.
    pub async fn enrollment_id(&self, serial: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => s.enrollment_id(serial).await,
            Store::Postgres(s) => s.enrollment_id(serial).await,
        }
    }

    /// The FSS verification key of a deployed serial, if one was given.
    pub async fn verification_key(&self, serial: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => s.verification_key(serial).await,
            Store::Postgres(s) => s.verification_key(serial).await,
        }
    }

    /// Deployed identities, keyset-paged on `id`: `Asc` → ids > `after_id`, `Desc` → ids < `after_id`.
    pub async fn list_deployed(
        &self,
        limit: u32,
        order: SortOrder,
        after_id: Option<i64>,
    ) -> Result<Vec<IdentityRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_deployed(limit, order, after_id).await,
            Store::Postgres(s) => s.list_deployed(limit, order, after_id).await,
        }
    }

    /// Counts per state.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        match self {
            Store::Sqlite(s) => s.stats().await,
            Store::Postgres(s) => s.stats().await,
        }
    }

    /// Everything stored about `serial`, whatever its state.
    pub async fn identity(&self, serial: &str) -> Result<Option<IdentityDetail>, StoreError> {
        match self {
            Store::Sqlite(s) => s.identity(serial).await,
            Store::Postgres(s) => s.identity(serial).await,
        }
    }

    /// The audit trail of `serial`, oldest first.
    pub async fn audit_for(&self, serial: &str) -> Result<Vec<AuditEntry>, StoreError> {
        match self {
            Store::Sqlite(s) => s.audit_for(serial).await,
            Store::Postgres(s) => s.audit_for(serial).await,
        }
    }

    /// Outcomes (deployed; failed or interrupted) audited at or after `since_ms`.
    pub async fn outcome_counts(&self, since_ms: i64) -> Result<OutcomeCounts, StoreError> {
        match self {
            Store::Sqlite(s) => s.outcome_counts(since_ms).await,
            Store::Postgres(s) => s.outcome_counts(since_ms).await,
        }
    }

    /// Outcomes per minute at or after `since_ms`, oldest minute first; minutes without an
    /// outcome are absent.
    pub async fn outcomes_per_minute(
        &self,
        since_ms: i64,
    ) -> Result<Vec<MinuteOutcomes>, StoreError> {
        match self {
            Store::Sqlite(s) => s.outcomes_per_minute(since_ms).await,
            Store::Postgres(s) => s.outcomes_per_minute(since_ms).await,
        }
    }

    /// The latest `limit` outcome rows of the audit trail (deployed, failed, interrupted), newest
    /// first.
    pub async fn recent_outcomes(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        match self {
            Store::Sqlite(s) => s.recent_outcomes(limit).await,
            Store::Postgres(s) => s.recent_outcomes(limit).await,
        }
    }

    /// The audit rows of every serial starting with `prefix` (an exact serial is its own prefix),
    /// newest first, at most `limit`.
    pub async fn audit_by_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        match self {
            Store::Sqlite(s) => s.audit_by_prefix(prefix, limit).await,
            Store::Postgres(s) => s.audit_by_prefix(prefix, limit).await,
        }
    }

    /// Closes the connections (waits for running queries).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}
