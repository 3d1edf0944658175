//! The identity store: every SQL statement of the server lives below this module.
//!
//! [`Store`] is an enum over backends, selected by the database URL: SQLite ([`sqlite::SqliteStore`],
//! one server per file) and PostgreSQL ([`postgres::PostgresStore`], any number of servers sharing
//! one database).
//!
//! Life of a row: [`Store::reserve`] inserts (or revives a `failed` or `revoked`) row as
//! `in_flight` — the UNIQUE constraint on `serial` decides races, never a check-then-insert;
//! [`Store::mark_deployed`] or [`Store::mark_failed`] finish it. [`Store::revoke`] ends a
//! deployed (or in-doubt) identity; reviving a revoked row first moves its identity into the
//! serial's history ([`Store::history`]), in the reservation's transaction. Each of these is one
//! transaction together with its audit row.
//!
//! **Crash recovery happens in [`Store::open`]**: rows left `in_flight` by a process that died are
//! marked `failed` (so the serial can be retried) and audited as `interrupted`. With SQLite that is
//! every in-flight row, so one SQLite file must be served by one pep-server process at a time. With
//! PostgreSQL it is only the rows of this server instance ([`StoreOptions::server_id`]) plus rows
//! in flight for longer than [`StoreOptions::in_flight_lease`], so servers can start and stop
//! independently while the others keep provisioning.

/// `sql::INSERT_AUDIT` with a [`NewAudit`] and its chain [`chain::Link`] bound (returning the new
/// row's id): one binding for both sqlx backends (the servers' PostgreSQL writes and
/// `migrate-store`'s added rows).
macro_rules! insert_audit_query {
    ($audit:expr, $server_id:expr, $link:expr) => {{
        let a: &$crate::store::NewAudit<'_> = $audit;
        let link: &$crate::store::chain::Link = $link;
        sqlx::query_scalar::<_, i64>($crate::store::sql::INSERT_AUDIT)
            .bind(a.at_ms)
            .bind(&a.keys.serial)
            .bind(&a.keys.gateway)
            .bind(&a.keys.requester)
            .bind(a.event)
            .bind(a.fcc_status.map(i64::from))
            .bind(a.fcc_info)
            .bind(a.fcc_warnings)
            .bind(a.detail)
            .bind(a.duration_ms)
            .bind($server_id)
            .bind(link.seq)
            .bind(&link.prev_hash[..])
            .bind(&link.hash[..])
    }};
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$store` is: one query text
/// and one row mapping, compiled for both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let $pool = s.pool();
                $body
            }
            Store::Postgres(s) => {
                let $pool = s.pool();
                $body
            }
        }
    };
}

pub mod audit_log;
pub mod chain;
pub mod migrate;
pub mod postgres;
mod sql;
pub mod sqlite;
mod sqlite_writer;
mod tx;

use std::fmt;

use pep_ca::RevocationReason;

use crate::model::{GatewayParams, RequestKey};
// After `on_pool!`, which it uses.
pub mod orders;

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

/// A row type read the same from both backends (one `sqlx::FromRow` derive, both schemas).
pub(crate) trait BothRow:
    Send
    + Unpin
    + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
    + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
{
}

impl<T> BothRow for T where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
{
}

/// A value bound the same in both backends.
pub(crate) trait BothArg<'q>:
    'q
    + Send
    + sqlx::Encode<'q, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + sqlx::Encode<'q, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
{
}

impl<'q, A> BothArg<'q> for A where
    A: 'q
        + Send
        + sqlx::Encode<'q, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + sqlx::Encode<'q, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
{
}

pub use audit_log::{AuditSource, ChainRow, Checkpoint};
pub use migrate::{MigrationReport, migrate_store};
pub use postgres::{PostgresStore, StoreOptions, default_server_id};
pub use sqlite::{Durability, SqliteStore};

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
    /// Another process (a running pep-server, or `migrate-store`) has the SQLite file open.
    #[error(
        "the database {} is in use by another process: it holds the lock {} (one pep-server per \
         SQLite file; stop the other one first, or use PostgreSQL for several servers)",
        database.display(),
        lock.display()
    )]
    Locked {
        /// The database file.
        database: std::path::PathBuf,
        /// The lock file beside it.
        lock: std::path::PathBuf,
    },
    /// The lock file beside a SQLite database cannot be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    LockFile {
        /// The lock file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
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

/// A stored text that is not one of its enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{text}`")]
pub struct UnknownName {
    /// Which enum (`state`, `audit event`).
    pub what: &'static str,
    /// The stored text.
    pub text: String,
}

/// Stores a text enum as its `as_str()` name, in both backends (sqlx) and in the SQLite writer
/// (rusqlite).
macro_rules! text_column {
    ($t:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $t
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $t
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?.parse::<$t>()?)
            }
        }
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $t
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }
        impl rusqlite::types::FromSql for $t {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A text enum's one table of names: `as_str`, `FromStr` (an unknown text is an [`UnknownName`]
/// naming `$what`) and its column type (`text_column!`).
macro_rules! text_enum {
    ($t:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $t {
            /// The text stored in its column.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $t {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok($t::$variant),)+
                    other => Err(UnknownName {
                        what: $what,
                        text: other.to_owned(),
                    }),
                }
            }
        }
        text_column!($t);
    };
}

pub mod outbox;

pub use outbox::{
    Claim, Delivery, DeliveryCounts, DeliveryState, EventRoute, EventRoutes, HookEvent, NewEvent,
    Settle, Settlement,
};

// After `text_enum!` and `on_pool!`, which it uses. Its `Settlement` (a cloud answer) is
// `store::claims::Settlement`, beside the webhook outbox's `store::Settlement`.
pub mod claims;
pub use claims::{
    ClaimAction, ClaimError, ClaimRow, ClaimState, ClaimStats, enqueue_claim_delete_postgres,
};

/// State of an identity row (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityState {
    /// An attempt is running (or the process died during one; recovered at start-up).
    InFlight,
    /// Injected with success.
    Deployed,
    /// The latest attempt failed; the serial may be retried.
    Failed,
    /// The server stopped after the identity's first byte could have reached FCC: the gateway
    /// may hold it. The row keeps the certificate and its enrollment ID; only an operator
    /// ([`Store::resolve`]) turns it `deployed` or `failed`.
    InDoubt,
    /// An operator revoked the identity ([`Store::revoke`]): its certificate is in the CRL and
    /// its enrollment ID in the bulk-delete CSV. The serial may be provisioned again.
    Revoked,
}

text_enum!(IdentityState, "state", {
    InFlight => "in_flight",
    Deployed => "deployed",
    Failed => "failed",
    InDoubt => "in_doubt",
    Revoked => "revoked",
});

/// What an audit row records (the `event` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    /// A serial was reserved: an attempt starts.
    Attempt,
    /// The attempt injected the identity.
    Deployed,
    /// The attempt failed (retryable).
    Failed,
    /// The serial was deployed or in flight already: refused.
    Conflict,
    /// The attempt was in flight when its server stopped (or its lease expired, or the store was
    /// migrated): recorded as failed.
    Interrupted,
    /// The attempt was stopped after its identity could have reached FCC: recorded `in_doubt`.
    InDoubt,
    /// A request with the key of a deployed attempt: the stored identity was answered again, no
    /// certificate was issued.
    Replay,
    /// An operator resolved an in-doubt row (`deployed` or `failed`).
    Resolved,
    /// The gateway address was refused by the network policy (`[fcc] allowed_networks`,
    /// `require_peer_ip`) before any connection: no identity row exists or changes for it.
    Refused,
    /// An operator revoked the identity (reason, note and who in the row's detail and requester).
    Revoked,
}

text_enum!(AuditEvent, "audit event", {
    Attempt => "attempt",
    Deployed => "deployed",
    Failed => "failed",
    Conflict => "conflict",
    Interrupted => "interrupted",
    InDoubt => "in_doubt",
    Replay => "replay",
    Resolved => "resolved",
    Refused => "refused",
    Revoked => "revoked",
});

impl PartialEq<&str> for AuditEvent {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Error text stored for attempts found in flight at start-up (SQLite: all of them; PostgreSQL:
/// this server's).
pub(crate) const INTERRUPTED: &str = "interrupted: the server stopped while this attempt was in \
                                      flight; the gateway may hold a partial configuration, \
                                      provision it again";

/// Error text stored for attempts found in flight at start-up after their identity could have
/// reached FCC.
pub(crate) const IN_DOUBT: &str = "in doubt: the server stopped while injecting this identity, \
                                   which may be on the gateway; check the gateway and resolve it \
                                   with POST /v3/identities/{serial}/resolve";

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IdentityRecord {
    /// Row id, the paging cursor (`_id` / `last` in the API).
    pub id: i64,
    /// The serial number (= endpoint name = certificate CN).
    #[sqlx(rename = "serial")]
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
    #[sqlx(rename = "created_at")]
    pub created_at_ms: i64,
    /// The state of its cloud claim (`[cloud]`), if one was queued.
    pub claim_state: Option<ClaimState>,
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
    /// What FCC answered the latest attempt.
    pub fcc: FccAnswer,
    /// Error of the latest failed attempt.
    pub last_error: Option<String>,
    /// The device certificate (DER), written ahead of the injection.
    pub cert_der: Option<Vec<u8>>,
    /// The request key of the latest attempt.
    pub request_id: Option<String>,
    /// Number of attempts.
    pub attempts: i64,
    /// ms since the epoch, start of the latest attempt.
    pub created_at_ms: i64,
    /// ms since the epoch, last change.
    pub updated_at_ms: i64,
    /// How the identity was revoked (state `revoked` only).
    pub revocation: Option<Revocation>,
}

/// How an identity was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When, ms since the epoch (the CRL entry's revocationDate).
    pub at_ms: i64,
    /// Why (the CRL entry's reasonCode).
    pub reason: RevocationReason,
    /// The operator's note.
    pub note: Option<String>,
    /// Who revoked it (token or station name, and address).
    pub by: String,
}

impl Revocation {
    /// From the four revocation columns (all NULL unless revoked).
    fn stored(
        at_ms: Option<i64>,
        reason: Option<ReasonColumn>,
        note: Option<String>,
        by: Option<String>,
    ) -> Option<Revocation> {
        Some(Revocation {
            at_ms: at_ms?,
            reason: reason.map_or(RevocationReason::Unspecified, |r| r.0),
            note,
            by: by.unwrap_or_default(),
        })
    }
}

/// The `revoke_reason` column: a [`RevocationReason`] stored by its RFC 5280 name (the one
/// table of names is pep-ca's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReasonColumn(pub(crate) RevocationReason);

impl ReasonColumn {
    fn as_str(self) -> &'static str {
        self.0.as_str()
    }
}

impl std::str::FromStr for ReasonColumn {
    type Err = pep_ca::crl::UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(ReasonColumn)
    }
}

text_column!(ReasonColumn);

/// An identity a serial had before its current one (`identity_history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastIdentity {
    /// History row id.
    pub id: i64,
    /// The serial.
    pub serial_number: String,
    /// The state it ended in (`revoked`).
    pub state: IdentityState,
    /// Its enrollment ID.
    pub enrollment_id: Option<String>,
    /// Its certificate serial (hex).
    pub cert_serial: String,
    /// Its certificate's notAfter, unix seconds.
    pub cert_not_after: Option<i64>,
    /// `ip:port` of the attempt that provisioned it.
    pub gateway: String,
    /// Who asked for it.
    pub requester: String,
    /// ms since the epoch, start of the attempt that provisioned it.
    pub created_at_ms: i64,
    /// How it was revoked.
    pub revocation: Option<Revocation>,
    /// ms since the epoch, when a new attempt replaced it.
    pub archived_at_ms: i64,
}

/// [`PastIdentity`] as its columns are typed in both schemas.
#[derive(sqlx::FromRow)]
struct HistoryRow {
    id: i64,
    serial: String,
    state: IdentityState,
    enrollment_id: Option<String>,
    cert_serial: String,
    cert_not_after: Option<i64>,
    gateway: String,
    requester: String,
    created_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<ReasonColumn>,
    revoke_note: Option<String>,
    revoked_by: Option<String>,
    archived_at: i64,
}

impl From<HistoryRow> for PastIdentity {
    fn from(r: HistoryRow) -> Self {
        PastIdentity {
            id: r.id,
            serial_number: r.serial,
            state: r.state,
            enrollment_id: r.enrollment_id,
            cert_serial: r.cert_serial,
            cert_not_after: r.cert_not_after,
            gateway: r.gateway,
            requester: r.requester,
            created_at_ms: r.created_at,
            revocation: Revocation::stored(
                r.revoked_at,
                r.revoke_reason,
                r.revoke_note,
                r.revoked_by,
            ),
            archived_at_ms: r.archived_at,
        }
    }
}

/// A revoked certificate, current or past: one entry of the CRL.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedCertificate {
    /// The certificate serial (hex).
    pub cert_serial: String,
    /// When it was revoked, ms since the epoch.
    pub revoked_at: i64,
    /// Why.
    revoke_reason: Option<ReasonColumn>,
}

impl RevokedCertificate {
    /// Why it was revoked.
    pub fn reason(&self) -> RevocationReason {
        self.revoke_reason
            .map_or(RevocationReason::Unspecified, |r| r.0)
    }
}

/// A revoked identity (current or past) as the bulk-delete CSV lists it: the fields of the
/// enrollment-ID CSV (`deployed` false) and the paging cursor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedRecord {
    /// The CSV's fields.
    #[sqlx(flatten)]
    pub record: IdentityRecord,
    /// When it was revoked, ms since the epoch (cursor, first part).
    pub revoked_at: i64,
    /// Its certificate serial (cursor, second part).
    pub cert_serial: String,
}

/// An operator's revocation of one serial ([`Store::revoke`]), owned: the SQLite writer thread
/// takes it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RevokeOrder {
    pub(crate) serial: String,
    pub(crate) reason: RevocationReason,
    pub(crate) note: Option<String>,
    /// Who revoked (the audit row's requester).
    pub(crate) who: String,
    pub(crate) now_ms: i64,
}

impl RevokeOrder {
    /// The audit row's detail.
    pub(crate) fn detail(&self, revoked: &RevokedIdentity) -> String {
        let mut d = format!(
            "revoked ({}) by {}: certificate {}, enrollment ID {}",
            self.reason,
            self.who,
            revoked.cert_serial,
            revoked.enrollment_id.as_deref().unwrap_or("-")
        );
        if let Some(note) = &self.note {
            d.push_str("; note: ");
            d.push_str(note);
        }
        d
    }

    /// The audit keys of the revoked row, with the operator as the requester.
    pub(crate) fn audit_keys(&self, row: AuditKeys) -> AuditKeys {
        AuditKeys {
            requester: self.who.clone(),
            ..row
        }
    }
}

/// The row [`sql::REVOKE`] returns.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RevokedRow {
    #[sqlx(flatten)]
    pub(crate) keys: AuditKeys,
    pub(crate) enrollment_id: Option<String>,
    pub(crate) cert_serial: String,
}

/// The identity a revocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedIdentity {
    /// Its enrollment ID (to free its cloud claim).
    pub enrollment_id: Option<String>,
    /// Its certificate serial (hex), now in the CRL.
    pub cert_serial: String,
    /// When, ms since the epoch.
    pub revoked_at_ms: i64,
}

/// Result of [`Store::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked (audited `revoked`).
    Revoked(RevokedIdentity),
    /// No row has this serial.
    Unknown,
    /// The row is neither deployed nor in doubt (already revoked, failed or in flight): nothing
    /// changed.
    NotRevocable {
        /// Its state.
        state: IdentityState,
    },
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
    /// Attempts whose identity may be on the gateway, waiting for an operator.
    pub in_doubt: u64,
    /// Serials whose current identity is revoked.
    pub revoked: u64,
}

impl Tally for StoreStats {
    type Row = (IdentityState, i64);

    fn count(&mut self, (state, n): Self::Row) {
        let n = count(n);
        match state {
            IdentityState::Deployed => self.deployed = n,
            IdentityState::Failed => self.failed = n,
            IdentityState::InFlight => self.in_flight = n,
            IdentityState::InDoubt => self.in_doubt = n,
            IdentityState::Revoked => self.revoked = n,
        }
    }
}

/// Counters filled by [`Store::tally`] from the rows of a `GROUP BY` count: the per-state counts of
/// identities, webhook deliveries and cloud claims.
pub(crate) trait Tally: Default {
    /// One row: the key columns, then `COUNT(*)`.
    type Row: BothRow;

    /// Takes the count of one row (each key has one row).
    fn count(&mut self, row: Self::Row);
}

/// A `COUNT(*)` (or `SUM`) read as BIGINT, as a count: never negative, a negative one reads 0.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
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
    /// What happened.
    pub event: AuditEvent,
    /// What FCC answered (outcome rows).
    pub fcc: FccAnswer,
    /// Error text or other detail.
    pub detail: Option<String>,
    /// Duration of the attempt, ms (outcome rows).
    pub duration_ms: Option<i64>,
}

/// The warnings column: one warning per line (a warning is one line of FCC's WarningInfo).
pub(crate) fn join_warnings(warnings: &[String]) -> String {
    warnings.join("\n")
}

/// What FCC answered an attempt, as stored with an identity (its latest attempt) and an audit row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FccAnswer {
    /// ReturnStatus, when FCC answered.
    pub status: Option<u32>,
    /// InfoMessage, when FCC rejected the attempt.
    pub info: Option<String>,
    /// Warnings, one per line of FCC's WarningInfo.
    pub warnings: Vec<String>,
}

impl FccAnswer {
    /// From its three columns: the status as BIGINT / INTEGER, the warnings [`join_warnings`]ed.
    fn stored(status: Option<i64>, info: Option<String>, warnings: &str) -> FccAnswer {
        FccAnswer {
            status: status.and_then(|s| u32::try_from(s).ok()),
            info,
            warnings: warnings
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// [`IdentityDetail`] as its columns are typed in both schemas.
#[derive(sqlx::FromRow)]
struct DetailRow {
    id: i64,
    serial: String,
    state: IdentityState,
    gateway: String,
    requester: String,
    ou: String,
    device_id: String,
    hardware_version: String,
    radio_config: String,
    led_config: String,
    category: String,
    cloud_address: String,
    api_address: String,
    gateway_services_address: String,
    verification_key: Option<String>,
    enrollment_id: Option<String>,
    cert_serial: Option<String>,
    cert_not_after: Option<i64>,
    fcc_status: Option<i64>,
    fcc_info: Option<String>,
    fcc_warnings: String,
    last_error: Option<String>,
    cert_der: Option<Vec<u8>>,
    request_id: Option<String>,
    attempts: i64,
    created_at: i64,
    updated_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<ReasonColumn>,
    revoke_note: Option<String>,
    revoked_by: Option<String>,
}

impl From<DetailRow> for IdentityDetail {
    fn from(r: DetailRow) -> Self {
        IdentityDetail {
            id: r.id,
            serial_number: r.serial,
            state: r.state,
            gateway: r.gateway,
            requester: r.requester,
            ou: r.ou,
            device_id: r.device_id,
            hardware_version: r.hardware_version,
            radio_config: r.radio_config,
            led_config: r.led_config,
            category: r.category,
            cloud_address: r.cloud_address,
            api_address: r.api_address,
            gateway_services_address: r.gateway_services_address,
            verification_key: r.verification_key,
            enrollment_id: r.enrollment_id,
            cert_serial: r.cert_serial,
            cert_not_after: r.cert_not_after,
            fcc: FccAnswer::stored(r.fcc_status, r.fcc_info, &r.fcc_warnings),
            last_error: r.last_error,
            cert_der: r.cert_der,
            request_id: r.request_id,
            attempts: r.attempts,
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
            revocation: Revocation::stored(
                r.revoked_at,
                r.revoke_reason,
                r.revoke_note,
                r.revoked_by,
            ),
        }
    }
}

/// [`AuditEntry`] as its columns are typed in both schemas.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at_ms: i64,
    serial: String,
    gateway: String,
    requester: String,
    event: AuditEvent,
    fcc_status: Option<i64>,
    fcc_info: Option<String>,
    fcc_warnings: String,
    detail: Option<String>,
    duration_ms: Option<i64>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id,
            at_ms: r.at_ms,
            serial: r.serial,
            gateway: r.gateway,
            requester: r.requester,
            event: r.event,
            fcc: FccAnswer::stored(r.fcc_status, r.fcc_info, &r.fcc_warnings),
            detail: r.detail,
            duration_ms: r.duration_ms,
        }
    }
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

/// A new attempt, owned: the SQLite writer thread takes it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    /// What to provision (validated).
    pub params: GatewayParams,
    /// Who asked.
    pub requester: String,
    /// Start time, ms since the epoch (becomes `created_at`).
    pub now_ms: i64,
    /// The client's request key, if it sent one.
    pub request_key: Option<RequestKey>,
    /// The work order the serial was admitted under (`[orders]`), recorded on the row.
    pub order: Option<crate::orders::OrderId>,
}

/// Result of [`Store::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The serial is ours: row id.
    Reserved {
        /// Row id.
        id: i64,
    },
    /// The serial is deployed, in doubt, or another attempt is in flight.
    Conflict {
        /// The existing row's state.
        state: IdentityState,
        /// The row's attempt was made with the request's key (a retry of the same request).
        same_key: bool,
    },
    /// The request's key made the deployed attempt of row `id`: answer its stored identity
    /// (audited `replay`), issue nothing.
    Replay {
        /// Row id.
        id: i64,
    },
    /// The request's key was used for another serial: refused (audited `conflict`).
    KeyUsed,
}

/// What is written ahead of an injection ([`Store::write_ahead`]): the device certificate (public;
/// never its private key), its serial number and its enrollment ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAhead {
    /// Enrollment ID.
    pub enrollment_id: String,
    /// Certificate serial, hex.
    pub cert_serial: String,
    /// Certificate notAfter, unix seconds.
    pub cert_not_after: i64,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Now, ms since the epoch.
    pub now_ms: i64,
}

/// Result of [`Store::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The in-doubt row now has the asked state (audited `resolved`).
    Resolved,
    /// No row has this serial.
    Unknown,
    /// The row is not in doubt (nothing changed).
    NotInDoubt {
        /// Its state.
        state: IdentityState,
    },
}

/// The row that blocked a reservation (`sql::CONFLICT_STATE`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConflictRow {
    pub(crate) id: i64,
    pub(crate) state: IdentityState,
    pub(crate) request_id: Option<String>,
    pub(crate) enrollment_id: Option<String>,
}

/// What a reservation answers and audits (both backends): the row id when the upsert took the
/// serial (`Ok`); for the row that blocked it (`Err`), a replay when the request's key made the
/// deployed attempt, a conflict otherwise.
pub(crate) fn reservation_outcome(
    taken: Result<i64, ConflictRow>,
    key: Option<&str>,
) -> (Reservation, AuditEvent, Option<String>) {
    let row = match taken {
        Ok(id) => {
            let detail = key.map(|k| format!("request key {k}"));
            return (Reservation::Reserved { id }, AuditEvent::Attempt, detail);
        }
        Err(row) => row,
    };
    let same_key = key.is_some() && row.request_id.as_deref() == key;
    let state = row.state;
    let (result, event, detail) = match key {
        Some(key) if same_key && state == IdentityState::Deployed => (
            Reservation::Replay { id: row.id },
            AuditEvent::Replay,
            format!(
                "request key {key}: replay of the deployed identity {}; no new certificate",
                row.enrollment_id.as_deref().unwrap_or("-")
            ),
        ),
        Some(key) if same_key => (
            Reservation::Conflict { state, same_key },
            AuditEvent::Conflict,
            format!("serial is {state}; request key {key} of that attempt"),
        ),
        _ => (
            Reservation::Conflict { state, same_key },
            AuditEvent::Conflict,
            format!("serial is {state}"),
        ),
    };
    (result, event, Some(detail))
}

/// The audit detail of a request key refused because it names another serial.
pub(crate) fn key_used_detail(key: &str) -> String {
    format!("request key {key} was used for another serial")
}

/// An operator's decision on an in-doubt serial ([`Store::resolve`]), owned: the SQLite writer
/// thread takes it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The serial.
    pub(crate) serial: String,
    /// `deployed` or `failed`.
    pub(crate) state: IdentityState,
    /// Who decided (the audit row's requester).
    pub(crate) who: String,
    /// Now, ms since the epoch.
    pub(crate) now_ms: i64,
}

impl Decision {
    /// The `last_error` it leaves (none for `deployed`).
    pub(crate) fn last_error(&self) -> Option<String> {
        (self.state != IdentityState::Deployed).then(|| {
            format!(
                "resolved failed by {}: the gateway does not hold this identity; provision it again",
                self.who
            )
        })
    }

    /// The audit row's detail.
    pub(crate) fn detail(&self) -> String {
        format!("in_doubt resolved {} by {}", self.state, self.who)
    }

    /// The webhook event of the resolution: `deployed` (with the written-ahead enrollment ID) or
    /// `failed` (with the `last_error` it leaves).
    pub(crate) fn event(&self, row: &AuditKeys, enrollment_id: Option<String>) -> NewEvent {
        let deployed = self.state == IdentityState::Deployed;
        NewEvent {
            event: if deployed {
                HookEvent::Deployed
            } else {
                HookEvent::Failed
            },
            serial: row.serial.clone(),
            enrollment_id: enrollment_id.filter(|_| deployed),
            gateway: row.gateway.clone(),
            at_ms: self.now_ms,
            fcc_status: None,
            detail: self.last_error(),
        }
    }

    /// The audit keys of the resolved row, with the operator as the requester.
    pub(crate) fn audit_keys(&self, row: AuditKeys) -> AuditKeys {
        AuditKeys {
            requester: self.who.clone(),
            ..row
        }
    }
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

impl DeployedOutcome<'_> {
    /// Its audit row, with the stored `warnings` and [`DeployedOutcome::detail`].
    pub(crate) fn outcome<'s>(&self, warnings: &'s str, detail: &'s str) -> Outcome<'s> {
        Outcome {
            event: AuditEvent::Deployed,
            fcc_status: Some(0),
            fcc_info: None,
            fcc_warnings: warnings,
            detail,
            duration_ms: self.duration_ms,
        }
    }

    /// The audit row's detail: the enrollment ID, and the warnings if any.
    fn detail(&self) -> String {
        if self.fcc_warnings.is_empty() {
            self.enrollment_id.to_owned()
        } else {
            format!(
                "{}; FCC warnings: {}",
                self.enrollment_id,
                self.fcc_warnings.join("; ")
            )
        }
    }
}

/// The columns of an identity row its audit rows repeat (`RETURNING` of the updates, both
/// backends).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct AuditKeys {
    pub(crate) serial: String,
    pub(crate) gateway: String,
    pub(crate) requester: String,
    pub(crate) created_at: i64,
}

impl AuditKeys {
    /// The keys of a new attempt's row.
    pub(crate) fn of(a: &NewAttempt) -> AuditKeys {
        AuditKeys {
            serial: a.params.serial_number.as_str().to_owned(),
            gateway: a.params.gateway.to_string(),
            requester: a.requester.clone(),
            created_at: a.now_ms,
        }
    }
}

/// How an attempt ended, as its audit row records it (both backends).
pub(crate) struct Outcome<'a> {
    pub(crate) event: AuditEvent,
    pub(crate) fcc_status: Option<u32>,
    pub(crate) fcc_info: Option<&'a str>,
    /// [`join_warnings`] of the warnings.
    pub(crate) fcc_warnings: &'a str,
    pub(crate) detail: &'a str,
    pub(crate) duration_ms: i64,
}

/// One audit row to append with `sql::INSERT_AUDIT` (both backends).
pub(crate) struct NewAudit<'a> {
    pub(crate) at_ms: i64,
    pub(crate) keys: &'a AuditKeys,
    pub(crate) event: AuditEvent,
    pub(crate) fcc_status: Option<u32>,
    pub(crate) fcc_info: Option<&'a str>,
    pub(crate) fcc_warnings: &'a str,
    pub(crate) detail: Option<&'a str>,
    pub(crate) duration_ms: Option<i64>,
}

impl<'a> NewAudit<'a> {
    /// Its hashed columns as row `seq` of chain `server_id`.
    pub(crate) fn fields(&self, server_id: &'a str, seq: i64) -> chain::RowFields<'a> {
        chain::RowFields {
            server_id,
            seq,
            at_ms: self.at_ms,
            serial: &self.keys.serial,
            gateway: &self.keys.gateway,
            requester: &self.keys.requester,
            event: self.event.as_str(),
            fcc_status: self.fcc_status.map(i64::from),
            fcc_info: self.fcc_info,
            fcc_warnings: self.fcc_warnings,
            detail: self.detail,
            duration_ms: self.duration_ms,
        }
    }

    /// Its link after `head` on chain `server_id`.
    pub(crate) fn link(&self, server_id: &'a str, head: &chain::ChainHead) -> chain::Link {
        head.link(&self.fields(server_id, head.next_seq()))
    }

    /// A row without an FCC answer or a duration (reservations, refusals, resolutions).
    pub(crate) fn note(
        at_ms: i64,
        keys: &'a AuditKeys,
        event: AuditEvent,
        detail: Option<&'a str>,
    ) -> Self {
        NewAudit {
            at_ms,
            keys,
            event,
            fcc_status: None,
            fcc_info: None,
            fcc_warnings: "",
            detail,
            duration_ms: None,
        }
    }

    /// The row of an attempt found in flight at start-up (or past its lease): `in_doubt` when its
    /// identity could have reached FCC, else `interrupted`; `detail` is the error stored.
    pub(crate) fn recovered(
        at_ms: i64,
        keys: &'a AuditKeys,
        state: IdentityState,
        detail: &'a str,
    ) -> Self {
        let event = if state == IdentityState::InDoubt {
            AuditEvent::InDoubt
        } else {
            AuditEvent::Interrupted
        };
        NewAudit {
            duration_ms: Some(at_ms.saturating_sub(keys.created_at)),
            ..NewAudit::note(at_ms, keys, event, Some(detail))
        }
    }

    /// The row that finishes an attempt.
    pub(crate) fn outcome(at_ms: i64, keys: &'a AuditKeys, o: &Outcome<'a>) -> Self {
        NewAudit {
            at_ms,
            keys,
            event: o.event,
            fcc_status: o.fcc_status,
            fcc_info: o.fcc_info,
            fcc_warnings: o.fcc_warnings,
            detail: Some(o.detail),
            duration_ms: Some(o.duration_ms),
        }
    }
}

/// Outcome data of a failed attempt.
#[derive(Debug, Clone)]
pub struct FailedOutcome<'a> {
    /// FCC ReturnStatus if FCC answered.
    pub fcc_status: Option<u32>,
    /// FCC's InfoMessage if FCC rejected the attempt.
    pub fcc_info: Option<&'a str>,
    /// FCC warnings if FCC answered.
    pub fcc_warnings: &'a [String],
    /// What went wrong (InfoMessage or transport error, with the gateway).
    pub error: &'a str,
    /// Attempt duration, ms.
    pub duration_ms: i64,
}

impl<'a> FailedOutcome<'a> {
    /// Its audit row, with the stored `warnings`.
    pub(crate) fn outcome<'s>(&self, warnings: &'s str) -> Outcome<'s>
    where
        'a: 's,
    {
        Outcome {
            event: AuditEvent::Failed,
            fcc_status: self.fcc_status,
            fcc_info: self.fcc_info,
            fcc_warnings: warnings,
            detail: self.error,
            duration_ms: self.duration_ms,
        }
    }
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
            Ok(Store::Sqlite(
                SqliteStore::open(
                    url,
                    options.durability,
                    options.event_routes,
                    options.claims,
                )
                .await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PostgresStore::open(url, options).await?))
        } else {
            Err(StoreError::UnsupportedUrl(postgres::redact(url)))
        }
    }

    /// Reserves `attempt.serial` in one transaction (with an `attempt` audit row, or a `conflict` one).
    pub async fn reserve(&self, attempt: &NewAttempt) -> Result<Reservation, StoreError> {
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

    /// Writes the certificate of in-flight row `id` ahead of its injection: from now on, an
    /// interruption leaves the row `in_doubt`. SQLite: one write of the group-commit writer.
    pub async fn write_ahead(&self, id: i64, ahead: WriteAhead) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.write_ahead(id, ahead).await,
            Store::Postgres(s) => s.write_ahead(id, ahead).await,
        }
    }

    /// An operator's resolution of the in-doubt `serial` as `deployed` (its written-ahead
    /// enrollment ID joins the CSV) or `failed` (the serial may be provisioned again), audited with
    /// `who`. `state` must be one of these two.
    pub async fn resolve(
        &self,
        serial: &str,
        state: IdentityState,
        who: &str,
    ) -> Result<Resolution, StoreError> {
        if !matches!(state, IdentityState::Deployed | IdentityState::Failed) {
            return Err(StoreError::Corrupt(format!(
                "an in-doubt identity resolves deployed or failed, not {state}"
            )));
        }
        let decision = Decision {
            serial: serial.to_owned(),
            state,
            who: who.to_owned(),
            now_ms: now_ms(),
        };
        match self {
            Store::Sqlite(s) => s.resolve(decision).await,
            Store::Postgres(s) => s.resolve(&decision).await,
        }
    }

    /// Revokes the deployed or in-doubt identity of `serial` with `reason` and `note`, audited
    /// (`revoked`) with `who`, in one transaction: its certificate joins the CRL
    /// ([`Store::revoked_certificates`]) and its enrollment ID the bulk-delete list
    /// ([`Store::list_revoked`]). An unknown serial or another state changes nothing.
    /// SQLite: one write of the group-commit writer.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
        note: Option<&str>,
        who: &str,
    ) -> Result<RevokeOutcome, StoreError> {
        let order = RevokeOrder {
            serial: serial.to_owned(),
            reason,
            note: note.map(str::to_owned),
            who: who.to_owned(),
            now_ms: now_ms(),
        };
        match self {
            Store::Sqlite(s) => s.revoke(order).await,
            Store::Postgres(s) => s.revoke(&order).await,
        }
    }

    /// The identities `serial` had before its current one, oldest first (empty if it never was
    /// provisioned again after a revocation).
    pub async fn history(&self, serial: &str) -> Result<Vec<PastIdentity>, StoreError> {
        let rows: Vec<HistoryRow> = self
            .rows(sql::HISTORY, serial, "reading the identity history")
            .await?;
        Ok(rows.into_iter().map(PastIdentity::from).collect())
    }

    /// Every revoked certificate, current and past, in revocation order: the CRL's entries.
    pub async fn revoked_certificates(&self) -> Result<Vec<RevokedCertificate>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query_as(sql::REVOKED_CERTIFICATES).fetch_all(pool).await
        })
        .map_err(q("reading the revoked certificates"))
    }

    /// Revoked identities (current and past) in revocation order, keyset-paged on
    /// (`revoked_at`, `cert_serial`) after `after` (`None`: from the first).
    pub async fn list_revoked(
        &self,
        limit: u32,
        after: Option<(i64, &str)>,
    ) -> Result<Vec<RevokedRecord>, StoreError> {
        let (at, serial) = after.unwrap_or((i64::MIN, ""));
        on_pool!(self, pool => {
            sqlx::query_as(sql::LIST_REVOKED)
                .bind(at)
                .bind(serial)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .map_err(q("listing revoked identities"))
    }

    /// The number for the next CRL: greater than every number handed out before, by any server
    /// of this database, across restarts (one committed counter). SQLite: one write of the
    /// group-commit writer.
    pub async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let n = match self {
            Store::Sqlite(s) => s.next_crl_number().await?,
            Store::Postgres(s) => s.next_crl_number().await?,
        };
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("CRL number {n} is negative")))
    }

    /// Audits a request whose gateway address the network policy refused (`refused`, with `detail`
    /// naming the rule). Only the audit trail is written: no identity row is created or changed.
    pub async fn audit_refused(
        &self,
        serial: &str,
        gateway: &str,
        requester: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let keys = AuditKeys {
            serial: serial.to_owned(),
            gateway: gateway.to_owned(),
            requester: requester.to_owned(),
            created_at: now,
        };
        match self {
            Store::Sqlite(s) => s.audit_refused(keys, detail.to_owned(), now).await,
            Store::Postgres(s) => s.audit_refused(&keys, detail, now).await,
        }
    }

    /// Rows in `state`, keyset-paged on `id` like [`Store::list_deployed`].
    pub async fn list_by_state(
        &self,
        state: IdentityState,
        limit: u32,
        order: SortOrder,
        after_id: Option<i64>,
    ) -> Result<Vec<IdentityDetail>, StoreError> {
        let listing = (sql::LIST_BY_STATE_ASC, sql::LIST_BY_STATE_DESC);
        let rows: Vec<DetailRow> = self
            .state_page(
                listing,
                state,
                limit,
                order,
                after_id,
                "listing identities by state",
            )
            .await?;
        Ok(rows.into_iter().map(IdentityDetail::from).collect())
    }

    /// Marks every `in_flight` row `in_doubt` (its certificate was written ahead: it may be on the
    /// gateway; audited `in_doubt`) or `failed` (audited `interrupted`); returns how many.
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
        let row: Option<(Option<String>,)> = self
            .row(sql::ENROLLMENT_ID, serial, "reading an enrollment ID")
            .await?;
        Ok(row.and_then(|(id,)| id))
    }

    /// The FSS verification key of a deployed serial (none if it was not given).
    pub async fn verification_key(&self, serial: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .row(sql::VERIFICATION_KEY, serial, "reading a verification key")
            .await?;
        Ok(row.and_then(|(key,)| key))
    }

    /// Deployed identities, keyset-paged on `id`: `Asc` → ids > `after_id`, `Desc` → ids < `after_id`.
    pub async fn list_deployed(
        &self,
        limit: u32,
        order: SortOrder,
        after_id: Option<i64>,
    ) -> Result<Vec<IdentityRecord>, StoreError> {
        let (sql, start) = match order {
            SortOrder::Asc => (sql::LIST_DEPLOYED_ASC, i64::MIN),
            SortOrder::Desc => (sql::LIST_DEPLOYED_DESC, i64::MAX),
        };
        let after = after_id.unwrap_or(start);
        on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .map_err(q("listing deployed identities"))
    }

    /// Every row of `sql` with `$1` = `arg`, as `T`, on whichever pool (one text and one row type
    /// for both backends); `context` names the read in errors.
    pub(crate) async fn rows<'q, T: BothRow, A: BothArg<'q>>(
        &self,
        sql: &'q str,
        arg: A,
        context: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        on_pool!(self, pool => sqlx::query_as(sql).bind(arg).fetch_all(pool).await)
            .map_err(q(context))
    }

    /// The row of `sql` with `$1` = `arg`, if any, like [`Store::rows`].
    pub(crate) async fn row<'q, T: BothRow, A: BothArg<'q>>(
        &self,
        sql: &'q str,
        arg: A,
        context: &'static str,
    ) -> Result<Option<T>, StoreError> {
        on_pool!(self, pool => sqlx::query_as(sql).bind(arg).fetch_optional(pool).await)
            .map_err(q(context))
    }

    /// One keyset page of rows in `state` from the `listing` texts (ascending, descending; `$1`
    /// state, `$2` cursor, `$3` limit), on either pool: `Asc` → ids after `after`, `Desc` → ids
    /// before it.
    pub(crate) async fn state_page<'q, T: BothRow, S: BothArg<'q>>(
        &self,
        (asc, desc): (&'q str, &'q str),
        state: S,
        limit: u32,
        order: SortOrder,
        after: Option<i64>,
        context: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let (sql, start) = match order {
            SortOrder::Asc => (asc, i64::MIN),
            SortOrder::Desc => (desc, i64::MAX),
        };
        on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(state)
                .bind(after.unwrap_or(start))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .map_err(q(context))
    }

    /// Runs one of the outboxes' lease releases (`statement`, `$1` = `owner`; NULL: every lease)
    /// on either backend (SQLite: on the writer thread); how many rows it freed.
    pub(crate) async fn release_leases(
        &self,
        statement: &'static str,
        owner: Option<&str>,
        context: &'static str,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.release_leases(statement, owner.map(str::to_owned), context)
                    .await
            }
            Store::Postgres(s) => s.release_leases(statement, owner).await.map_err(q(context)),
        }
    }

    /// Counts per state.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.tally(sql::STATS, None, "counting identities").await
    }

    /// The counters `T` filled from the rows of `sql`, a `SELECT key…, COUNT(*) … GROUP BY key…`
    /// text (`$1` is `arg`, when given): one statement and one row type for both backends.
    pub(crate) async fn tally<T: Tally>(
        &self,
        sql: &'static str,
        arg: Option<&str>,
        context: &'static str,
    ) -> Result<T, StoreError> {
        let rows: Vec<T::Row> = on_pool!(self, pool => {
            let query = sqlx::query_as(sql);
            match arg {
                Some(arg) => query.bind(arg),
                None => query,
            }
            .fetch_all(pool)
            .await
        })
        .map_err(q(context))?;
        let mut tally = T::default();
        for row in rows {
            tally.count(row);
        }
        Ok(tally)
    }

    /// Everything stored about `serial`, whatever its state.
    pub async fn identity(&self, serial: &str) -> Result<Option<IdentityDetail>, StoreError> {
        let row: Option<DetailRow> = self
            .row(sql::IDENTITY, serial, "reading an identity")
            .await?;
        Ok(row.map(IdentityDetail::from))
    }

    /// The audit trail of `serial`, oldest first.
    pub async fn audit_for(&self, serial: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = self
            .rows(sql::AUDIT_FOR, serial, "reading the audit trail")
            .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    /// Outcomes (deployed; failed or interrupted) audited at or after `since_ms`.
    pub async fn outcome_counts(&self, since_ms: i64) -> Result<OutcomeCounts, StoreError> {
        let (deployed, failed): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(sql::OUTCOME_COUNTS)
                .bind(since_ms)
                .fetch_one(pool)
                .await
        })
        .map_err(q("counting outcomes"))?;
        Ok(OutcomeCounts {
            deployed: count(deployed),
            failed: count(failed),
        })
    }

    /// Outcomes per minute at or after `since_ms`, oldest minute first; minutes without an
    /// outcome are absent.
    pub async fn outcomes_per_minute(
        &self,
        since_ms: i64,
    ) -> Result<Vec<MinuteOutcomes>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = self
            .rows(
                sql::OUTCOMES_PER_MINUTE,
                since_ms,
                "counting outcomes per minute",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, deployed, failed)| MinuteOutcomes {
                minute,
                counts: OutcomeCounts {
                    deployed: count(deployed),
                    failed: count(failed),
                },
            })
            .collect())
    }

    /// The latest `limit` outcome rows of the audit trail (deployed, failed, interrupted), newest
    /// first.
    pub async fn recent_outcomes(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = self
            .rows(
                sql::RECENT_OUTCOMES,
                i64::from(limit),
                "reading the latest outcomes",
            )
            .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    /// The audit rows of every serial starting with `prefix` (an exact serial is its own prefix),
    /// newest first, at most `limit`.
    pub async fn audit_by_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::from(limit);
        let rows: Vec<AuditRow> = match self {
            Store::Sqlite(s) => {
                sqlx::query_as(sql::AUDIT_BY_PREFIX_SQLITE)
                    .bind(prefix)
                    .bind(format!("{prefix}\u{10FFFF}"))
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await
            }
            Store::Postgres(s) => {
                sqlx::query_as(sql::AUDIT_BY_PREFIX_POSTGRES)
                    .bind(prefix)
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await
            }
        }
        .map_err(q("searching the audit trail"))?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
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
