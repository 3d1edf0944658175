//! Copying a whole store into another, empty one: `pep-server migrate-store --from URL --to URL`
//! (typically SQLite → PostgreSQL when a factory grows from one line to several).
//!
//! Every identity (all states), every past identity (`identity_history`), the CRL number and every
//! audit row is copied with its id, so paging cursors and the
//! audit order stay valid. Rows still `in_flight` in the source cannot be finished by anyone after
//! the move: they arrive `failed` (retryable) with an `interrupted` audit row. The target must be
//! empty (no identity, no audit row); the copy is one transaction on the target, so it lands
//! completely or not at all. The source is read in one consistent snapshot; stop the servers using
//! it first.

use sqlx::{Postgres, Sqlite, Transaction};

// The rows as both schemas type them: every column the two share (an identity's `server_id` is
// not read: only in-flight rows have one, and they arrive failed).
use super::{
    AuditKeys, AuditRow, DetailRow as IdentityRow, IdentityState, NewAudit, Store, StoreError,
    now_ms, q,
};

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
    /// Identities copied revoked.
    pub revoked: u64,
    /// Past identities (`identity_history`) copied.
    pub history: u64,
}

impl MigrationReport {
    /// All identities copied.
    pub fn identities(&self) -> u64 {
        self.deployed + self.failed + self.in_doubt + self.revoked
    }
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
            attempts, created_at, updated_at, revoked_at, revoke_reason, revoke_note, revoked_by)
    };
}

/// The columns of `identity_history`, in order (with `id`).
macro_rules! history_columns {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* id, serial, state, enrollment_id, cert_serial, cert_not_after, cert_der,
            gateway, requester, hardware_version, radio_config, led_config, category, api_address,
            gateway_services_address, created_at, revoked_at, revoke_reason, revoke_note,
            revoked_by, archived_at)
    };
}

/// A row of `identity_history`, every column (copied as it is).
#[derive(sqlx::FromRow)]
struct HistoryCopy {
    id: i64,
    serial: String,
    state: String,
    enrollment_id: Option<String>,
    cert_serial: String,
    cert_not_after: Option<i64>,
    cert_der: Option<Vec<u8>>,
    gateway: String,
    requester: String,
    hardware_version: String,
    radio_config: String,
    led_config: String,
    category: String,
    api_address: String,
    gateway_services_address: String,
    created_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    revoke_note: Option<String>,
    revoked_by: Option<String>,
    archived_at: i64,
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

    /// The next page of `table` (ids above `after`), its `columns` read as `T`.
    async fn page_after<T>(
        &mut self,
        table: &str,
        columns: &[&str],
        after: i64,
        context: &'static str,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + Unpin,
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let sql = format!(
            "SELECT {} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2",
            columns.join(", ")
        );
        on_tx!(self, conn => {
            sqlx::query_as(&sql).bind(after).bind(PAGE).fetch_all(conn).await
        })
        .map_err(q(context))
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

    /// Request keys after `after` (in the source's order of the key; keys are never empty).
    async fn keys_after(&mut self, after: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        on_tx!(self, conn => {
            sqlx::query_as(
                "SELECT request_id, serial, at_ms FROM request_keys WHERE request_id > $1 \
                 ORDER BY request_id LIMIT $2",
            )
            .bind(after)
            .bind(PAGE)
            .fetch_all(conn)
            .await
        })
        .map_err(q("reading the request keys from the source"))
    }

    async fn insert_key(
        &mut self,
        (key, serial, at_ms): &(String, String, i64),
    ) -> Result<(), StoreError> {
        on_tx!(self, conn => {
            sqlx::query("INSERT INTO request_keys (request_id, serial, at_ms) VALUES ($1, $2, $3)")
                .bind(key)
                .bind(serial)
                .bind(at_ms)
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(q("writing the request keys to the target"))
    }

    /// Inserts a copied history row with its id.
    async fn insert_history(&mut self, r: &HistoryCopy) -> Result<(), StoreError> {
        let columns = history_columns!(names!());
        let sql = format!(
            "INSERT INTO identity_history ({}) VALUES ({})",
            columns.join(", "),
            placeholders(columns.len())
        );
        on_tx!(self, conn => {
            history_columns!(bind_fields!(sqlx::query(&sql), r,))
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(q("writing the identity history to the target"))
    }

    /// The source's CRL number, so that the target's next CRL still gets a greater one.
    async fn crl_number(&mut self) -> Result<i64, StoreError> {
        on_tx!(self, conn => {
            sqlx::query_scalar("SELECT crl_number FROM crl_state WHERE id = 1")
                .fetch_one(conn)
                .await
        })
        .map_err(q("reading the CRL number of the source"))
    }

    async fn set_crl_number(&mut self, n: i64) -> Result<(), StoreError> {
        on_tx!(self, conn => {
            sqlx::query("UPDATE crl_state SET crl_number = $1 WHERE id = 1")
                .bind(n)
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(q("writing the CRL number to the target"))
    }

    /// Inserts a copied audit row with its id.
    async fn insert_audit(&mut self, r: &AuditRow) -> Result<(), StoreError> {
        let columns = audit_columns!(names!());
        let sql = format!(
            "INSERT INTO audit ({}, id) VALUES ({})",
            columns.join(", "),
            placeholders(columns.len() + 1)
        );
        on_tx!(self, conn => {
            audit_columns!(bind_fields!(sqlx::query(&sql), r,))
                .bind(r.id)
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(q("writing the audit trail to the target"))
    }

    /// Appends an audit row this copy adds (a new id).
    async fn append_audit(&mut self, a: &NewAudit<'_>) -> Result<(), StoreError> {
        on_tx!(self, conn => {
            insert_audit_query!(a)
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
            for table in ["identities", "audit", "identity_history"] {
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
        let page: Vec<IdentityRow> = source
            .page_after(
                "identities",
                &identity_columns!(names!()),
                after,
                "reading identities from the source",
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for mut row in page {
            match row.state {
                IdentityState::Deployed => report.deployed += 1,
                IdentityState::Failed => report.failed += 1,
                IdentityState::InDoubt => report.in_doubt += 1,
                IdentityState::Revoked => report.revoked += 1,
                IdentityState::InFlight => {
                    // Written ahead: the identity may have reached the gateway.
                    let (state, error) = if row.cert_der.is_some() {
                        report.in_doubt += 1;
                        (IdentityState::InDoubt, super::IN_DOUBT)
                    } else {
                        report.failed += 1;
                        (IdentityState::Failed, MIGRATED_IN_FLIGHT)
                    };
                    report.interrupted += 1;
                    row.state = state;
                    row.last_error = Some(error.to_owned());
                    row.updated_at = now;
                    let keys = AuditKeys {
                        serial: row.serial.clone(),
                        gateway: row.gateway.clone(),
                        requester: row.requester.clone(),
                        created_at: row.created_at,
                    };
                    interrupted.push((keys, state, error));
                }
            }
            target.insert_identity(&row).await?;
        }
    }

    let mut after = i64::MIN;
    loop {
        let page: Vec<AuditRow> = source
            .page_after(
                "audit",
                &audit_columns!(names!(id,)),
                after,
                "reading the audit trail from the source",
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            target.insert_audit(&row).await?;
            report.audit += 1;
        }
    }
    let mut after = i64::MIN;
    loop {
        let page: Vec<HistoryCopy> = source
            .page_after(
                "identity_history",
                &history_columns!(names!()),
                after,
                "reading the identity history from the source",
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            target.insert_history(&row).await?;
            report.history += 1;
        }
    }
    let crl_number = source.crl_number().await?;
    target.set_crl_number(crl_number).await?;
    // Every request key ever used names its serial in the target too (a key is never reused).
    let mut after = String::new();
    loop {
        let page = source.keys_after(&after).await?;
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        for key in &page {
            target.insert_key(key).await?;
        }
    }
    source.commit().await?;

    target.advance_sequences().await?;
    for (keys, state, error) in &interrupted {
        target
            .append_audit(&NewAudit::recovered(now, keys, *state, error))
            .await?;
    }
    target.commit().await?;
    Ok(report)
}
