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

use super::{AuditEvent, IdentityState, Store, StoreError, now_ms};

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
    /// Identities copied in doubt (including in-flight ones whose certificate was written ahead:
    /// they may be on the gateway).
    pub in_doubt: u64,
}

impl MigrationReport {
    /// All identities copied.
    pub fn identities(&self) -> u64 {
        self.deployed + self.failed + self.in_doubt
    }
}

/// One identity row, every column the two schemas share (not `server_id`: only in-flight rows
/// have one, and they arrive failed).
#[derive(Debug, Clone, sqlx::FromRow)]
struct IdentityRow {
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
}

/// Binds the fields named, in order, to a query of either backend.
macro_rules! bind_fields {
    ($query:expr, $r:expr, $($field:ident),+) => {
        $query $(.bind(&$r.$field))+
    };
}

/// The columns of [`IdentityRow`], in order, as a text and as a binding.
macro_rules! identity_columns {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* id, serial, state, gateway, requester, ou, device_id, hardware_version,
            radio_config, led_config, category, cloud_address, api_address,
            gateway_services_address, verification_key, enrollment_id, cert_serial,
            cert_not_after, fcc_status, fcc_info, fcc_warnings, last_error, cert_der, request_id,
            attempts, created_at, updated_at)
    };
}

/// The columns of [`AuditRow`] but `id`, in order.
macro_rules! audit_columns {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* at_ms, serial, gateway, requester, event, fcc_status, fcc_info,
            fcc_warnings, detail, duration_ms)
    };
}

/// `"a, b, c"` of identifiers.
macro_rules! names {
    ($($field:ident),+) => {
        [$(stringify!($field)),+]
    };
}

/// One audit row (`id` is `None` for the rows this copy adds).
#[derive(Debug, Clone, sqlx::FromRow)]
struct AuditRow {
    id: Option<i64>,
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

/// An open transaction on either backend.
enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection, on either backend.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

/// `$1, $2, …, $n` (both backends, see `store::sql`).
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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
        on_tx!(self, conn => sqlx::query_scalar(&sql).fetch_one(conn).await)
            .map_err(q("counting the rows of the target"))
    }

    async fn identities_after(&mut self, after: i64) -> Result<Vec<IdentityRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM identities WHERE id > $1 ORDER BY id LIMIT $2",
            identity_columns!(names!()).join(", ")
        );
        on_tx!(self, conn => {
            sqlx::query_as(&sql).bind(after).bind(PAGE).fetch_all(conn).await
        })
        .map_err(q("reading identities from the source"))
    }

    async fn audit_after(&mut self, after: i64) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!(
            "SELECT id, {} FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
            audit_columns!(names!()).join(", ")
        );
        on_tx!(self, conn => {
            sqlx::query_as(&sql).bind(after).bind(PAGE).fetch_all(conn).await
        })
        .map_err(q("reading the audit trail from the source"))
    }

    async fn insert_identity(&mut self, r: &IdentityRow) -> Result<(), StoreError> {
        let columns = identity_columns!(names!());
        let sql = format!(
            "INSERT INTO identities ({}) VALUES ({})",
            columns.join(", "),
            placeholders(columns.len())
        );
        on_tx!(self, conn => {
            identity_columns!(bind_fields!(sqlx::query(&sql), r,))
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(q("writing identities to the target"))
    }

    /// Inserts an audit row, keeping its id when it has one.
    async fn insert_audit(&mut self, r: &AuditRow) -> Result<(), StoreError> {
        let columns = audit_columns!(names!());
        // With an id, `id` is the last column (so that both forms bind the others alike).
        let (id_column, n) = match r.id {
            Some(_) => (", id", columns.len() + 1),
            None => ("", columns.len()),
        };
        let sql = format!(
            "INSERT INTO audit ({}{id_column}) VALUES ({})",
            columns.join(", "),
            placeholders(n)
        );
        on_tx!(self, conn => {
            let query = audit_columns!(bind_fields!(sqlx::query(&sql), r,));
            match r.id {
                Some(id) => query.bind(id),
                None => query,
            }
            .execute(conn)
            .await
            .map(drop)
        })
        .map_err(q("writing the audit trail to the target"))
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
            match row.state {
                IdentityState::Deployed => report.deployed += 1,
                IdentityState::Failed => report.failed += 1,
                IdentityState::InDoubt => report.in_doubt += 1,
                IdentityState::InFlight => {
                    // Written ahead: the identity may have reached the gateway.
                    let (state, event, error) = if row.cert_der.is_some() {
                        report.in_doubt += 1;
                        (IdentityState::InDoubt, AuditEvent::InDoubt, super::IN_DOUBT)
                    } else {
                        report.failed += 1;
                        (
                            IdentityState::Failed,
                            AuditEvent::Interrupted,
                            MIGRATED_IN_FLIGHT,
                        )
                    };
                    report.interrupted += 1;
                    row.state = state;
                    row.last_error = Some(error.to_owned());
                    row.updated_at = now;
                    interrupted.push(AuditRow {
                        id: None,
                        at_ms: now,
                        serial: row.serial.clone(),
                        gateway: row.gateway.clone(),
                        requester: row.requester.clone(),
                        event,
                        fcc_status: None,
                        fcc_info: None,
                        fcc_warnings: String::new(),
                        detail: Some(error.to_owned()),
                        duration_ms: Some(now.saturating_sub(row.created_at)),
                    });
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
