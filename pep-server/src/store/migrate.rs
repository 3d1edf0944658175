//! Copying a whole store into another, empty one: `pep-server migrate-store --from URL --to URL`
//! (typically SQLite → PostgreSQL when a factory grows from one line to several).
//!
//! Every identity (all states) and every audit row is copied with its id, so paging cursors and the
//! audit order stay valid. Rows still `in_flight` in the source cannot be finished by anyone after
//! the move: they arrive `failed` (retryable) with an `interrupted` audit row. The target must be
//! empty (no identity, no audit row); the copy is one transaction on the target, so it lands
//! completely or not at all. The source is read in one consistent snapshot; stop the servers using
//! it first.

use sqlx::{Postgres, Sqlite, Transaction};

use super::{Store, StoreError, now_ms};

/// Rows read per round trip.
const PAGE: i64 = 1000;
/// `last_error` of rows that were in flight in the source.
const MIGRATED_IN_FLIGHT: &str = "interrupted: the attempt was in flight when the store was \
                                  migrated; the gateway may hold a partial configuration, provision it again";

/// What [`migrate_store`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Identities copied as deployed.
    pub deployed: u64,
    /// Identities copied as failed (including the formerly in-flight ones).
    pub failed: u64,
    /// Identities that were in flight in the source and arrived failed.
    pub interrupted: u64,
    /// Audit rows copied from the source (the new `interrupted` rows not counted).
    pub audit: u64,
}

impl MigrationReport {
    /// All identities copied.
    pub fn identities(&self) -> u64 {
        self.deployed + self.failed
    }
}

/// One identity row, every column the two schemas share.
#[derive(Debug, Clone, sqlx::FromRow)]
struct IdentityRow {
    id: i64,
    serial: String,
    state: String,
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
    fcc_warnings: String,
    last_error: Option<String>,
    attempts: i64,
    created_at: i64,
    updated_at: i64,
}

const IDENTITY_COLUMNS: [&str; 24] = [
    "id",
    "serial",
    "state",
    "gateway",
    "requester",
    "ou",
    "device_id",
    "hardware_version",
    "radio_config",
    "led_config",
    "category",
    "cloud_address",
    "api_address",
    "gateway_services_address",
    "verification_key",
    "enrollment_id",
    "cert_serial",
    "cert_not_after",
    "fcc_status",
    "fcc_warnings",
    "last_error",
    "attempts",
    "created_at",
    "updated_at",
];

/// One audit row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct AuditRow {
    id: Option<i64>,
    at_ms: i64,
    serial: String,
    gateway: String,
    requester: String,
    event: String,
    fcc_status: Option<i64>,
    detail: Option<String>,
    duration_ms: Option<i64>,
}

const AUDIT_COLUMNS: [&str; 9] = [
    "id",
    "at_ms",
    "serial",
    "gateway",
    "requester",
    "event",
    "fcc_status",
    "detail",
    "duration_ms",
];

/// An open transaction on either backend.
enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

/// `?N` for SQLite, `$N` for PostgreSQL.
fn placeholders(tx: &Tx, n: usize) -> String {
    let sigil = match tx {
        Tx::Sqlite(_) => '?',
        Tx::Postgres(_) => '$',
    };
    (1..=n)
        .map(|i| format!("{sigil}{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds the same values in the same order to a query of either backend.
macro_rules! bind_identity {
    ($query:expr, $r:expr) => {
        $query
            .bind($r.id)
            .bind(&$r.serial)
            .bind(&$r.state)
            .bind(&$r.gateway)
            .bind(&$r.requester)
            .bind(&$r.ou)
            .bind(&$r.device_id)
            .bind(&$r.hardware_version)
            .bind(&$r.radio_config)
            .bind(&$r.led_config)
            .bind(&$r.category)
            .bind(&$r.cloud_address)
            .bind(&$r.api_address)
            .bind(&$r.gateway_services_address)
            .bind(&$r.verification_key)
            .bind(&$r.enrollment_id)
            .bind(&$r.cert_serial)
            .bind($r.cert_not_after)
            .bind($r.fcc_status)
            .bind(&$r.fcc_warnings)
            .bind(&$r.last_error)
            .bind($r.attempts)
            .bind($r.created_at)
            .bind($r.updated_at)
    };
}

macro_rules! bind_audit {
    ($query:expr, $r:expr) => {
        $query
            .bind($r.at_ms)
            .bind(&$r.serial)
            .bind(&$r.gateway)
            .bind(&$r.requester)
            .bind(&$r.event)
            .bind($r.fcc_status)
            .bind(&$r.detail)
            .bind($r.duration_ms)
    };
}

impl Tx {
    /// A read-only snapshot of the source.
    async fn begin_snapshot(store: &Store) -> Result<Tx, StoreError> {
        let context = "starting the read snapshot of the source";
        Ok(match store {
            // A deferred SQLite transaction holds one WAL snapshot from its first read on.
            Store::Sqlite(s) => Tx::Sqlite(s.pool().begin().await.map_err(q(context))?),
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await.map_err(q(context))?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(q(context))?;
                Tx::Postgres(tx)
            }
        })
    }

    /// A write transaction on the target that keeps servers out while it runs.
    async fn begin_write(store: &Store) -> Result<Tx, StoreError> {
        let context = "starting the write transaction on the target";
        Ok(match store {
            Store::Sqlite(s) => Tx::Sqlite(
                s.pool()
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(q(context))?,
            ),
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await.map_err(q(context))?;
                sqlx::query("LOCK TABLE identities, audit IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .map_err(q("locking the target tables"))?;
                Tx::Postgres(tx)
            }
        })
    }

    async fn count(&mut self, table: &'static str) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let context = "counting the rows of the target";
        match self {
            Tx::Sqlite(tx) => sqlx::query_scalar(&sql).fetch_one(&mut **tx).await,
            Tx::Postgres(tx) => sqlx::query_scalar(&sql).fetch_one(&mut **tx).await,
        }
        .map_err(q(context))
    }

    async fn identities_after(&mut self, after: i64) -> Result<Vec<IdentityRow>, StoreError> {
        let p = placeholders(self, 2);
        let (p1, p2) = p.split_once(", ").unwrap_or(("", ""));
        let sql = format!(
            "SELECT {} FROM identities WHERE id > {p1} ORDER BY id LIMIT {p2}",
            IDENTITY_COLUMNS.join(", ")
        );
        let context = "reading identities from the source";
        match self {
            Tx::Sqlite(tx) => {
                sqlx::query_as(&sql)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut **tx)
                    .await
            }
            Tx::Postgres(tx) => {
                sqlx::query_as(&sql)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
        .map_err(q(context))
    }

    async fn audit_after(&mut self, after: i64) -> Result<Vec<AuditRow>, StoreError> {
        let p = placeholders(self, 2);
        let (p1, p2) = p.split_once(", ").unwrap_or(("", ""));
        let sql = format!(
            "SELECT {} FROM audit WHERE id > {p1} ORDER BY id LIMIT {p2}",
            AUDIT_COLUMNS.join(", ")
        );
        let context = "reading the audit trail from the source";
        match self {
            Tx::Sqlite(tx) => {
                sqlx::query_as(&sql)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut **tx)
                    .await
            }
            Tx::Postgres(tx) => {
                sqlx::query_as(&sql)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
        .map_err(q(context))
    }

    async fn insert_identity(&mut self, r: &IdentityRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO identities ({}) VALUES ({})",
            IDENTITY_COLUMNS.join(", "),
            placeholders(self, IDENTITY_COLUMNS.len())
        );
        let context = "writing identities to the target";
        match self {
            Tx::Sqlite(tx) => bind_identity!(sqlx::query(&sql), r)
                .execute(&mut **tx)
                .await
                .map(drop),
            Tx::Postgres(tx) => bind_identity!(sqlx::query(&sql), r)
                .execute(&mut **tx)
                .await
                .map(drop),
        }
        .map_err(q(context))
    }

    /// Inserts an audit row, keeping its id when it has one.
    async fn insert_audit(&mut self, r: &AuditRow) -> Result<(), StoreError> {
        let columns = &AUDIT_COLUMNS[1..];
        let context = "writing the audit trail to the target";
        match r.id {
            Some(id) => {
                let sql = format!(
                    "INSERT INTO audit (id, {}) VALUES ({})",
                    columns.join(", "),
                    placeholders(self, AUDIT_COLUMNS.len())
                );
                match self {
                    Tx::Sqlite(tx) => bind_audit!(sqlx::query(&sql).bind(id), r)
                        .execute(&mut **tx)
                        .await
                        .map(drop),
                    Tx::Postgres(tx) => bind_audit!(sqlx::query(&sql).bind(id), r)
                        .execute(&mut **tx)
                        .await
                        .map(drop),
                }
            }
            None => {
                let sql = format!(
                    "INSERT INTO audit ({}) VALUES ({})",
                    columns.join(", "),
                    placeholders(self, columns.len())
                );
                match self {
                    Tx::Sqlite(tx) => bind_audit!(sqlx::query(&sql), r)
                        .execute(&mut **tx)
                        .await
                        .map(drop),
                    Tx::Postgres(tx) => bind_audit!(sqlx::query(&sql), r)
                        .execute(&mut **tx)
                        .await
                        .map(drop),
                }
            }
        }
        .map_err(q(context))
    }

    /// After explicit ids: PostgreSQL's identity sequences continue above the highest id (SQLite's
    /// `INTEGER PRIMARY KEY` does so by itself).
    async fn advance_sequences(&mut self) -> Result<(), StoreError> {
        if let Tx::Postgres(tx) = self {
            for table in ["identities", "audit"] {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                         COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                );
                sqlx::query(&sql)
                    .execute(&mut **tx)
                    .await
                    .map_err(q("advancing the id sequences of the target"))?;
            }
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .map_err(q("committing"))
    }
}

/// Copies every identity and audit row of `from` into `to`, which must hold neither.
///
/// In-flight identities arrive failed with an `interrupted` audit row. On any error nothing is
/// written to `to` (one transaction).
pub async fn migrate_store(from: &Store, to: &Store) -> Result<MigrationReport, StoreError> {
    let mut target = Tx::begin_write(to).await?;
    let identities = target.count("identities").await?;
    let audit = target.count("audit").await?;
    if identities > 0 || audit > 0 {
        return Err(StoreError::TargetNotEmpty {
            identities: u64::try_from(identities).unwrap_or(0),
            audit: u64::try_from(audit).unwrap_or(0),
        });
    }
    let mut source = Tx::begin_snapshot(from).await?;
    let mut report = MigrationReport::default();
    let mut interrupted = Vec::new();
    let now = now_ms();

    let mut after = i64::MIN;
    loop {
        let page = source.identities_after(after).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for mut row in page {
            match row.state.as_str() {
                "deployed" => report.deployed += 1,
                "failed" => report.failed += 1,
                "in_flight" => {
                    report.failed += 1;
                    report.interrupted += 1;
                    row.state = "failed".to_owned();
                    row.last_error = Some(MIGRATED_IN_FLIGHT.to_owned());
                    row.updated_at = now;
                    interrupted.push(AuditRow {
                        id: None,
                        at_ms: now,
                        serial: row.serial.clone(),
                        gateway: row.gateway.clone(),
                        requester: row.requester.clone(),
                        event: "interrupted".to_owned(),
                        fcc_status: None,
                        detail: Some(MIGRATED_IN_FLIGHT.to_owned()),
                        duration_ms: Some(now.saturating_sub(row.created_at)),
                    });
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "identity {} (serial `{}`) has unknown state `{other}`",
                        row.id, row.serial
                    )));
                }
            }
            target.insert_identity(&row).await?;
        }
    }

    let mut after = i64::MIN;
    loop {
        let page = source.audit_after(after).await?;
        let Some(last) = page.last() else { break };
        after = last
            .id
            .ok_or_else(|| StoreError::Corrupt("audit row without id".to_owned()))?;
        for row in page {
            target.insert_audit(&row).await?;
            report.audit += 1;
        }
    }
    source.commit().await?;

    target.advance_sequences().await?;
    for row in &interrupted {
        target.insert_audit(row).await?;
    }
    target.commit().await?;
    Ok(report)
}
