//! Copying a whole store into another, empty one: `pep-server migrate-store --from URL --to URL`
//! (typically SQLite → PostgreSQL when a factory grows from one line to several).
//!
//! Every identity (all states), every past identity (`identity_history`), the CRL number, every
//! audit row with its checkpoints and the work orders (with their ranges and the serials of their
//! finished uploads) are copied with their ids, so paging cursors and the
//! audit order stay valid. Rows still `in_flight` in the source cannot be finished by anyone after
//! the move: they arrive `failed` (retryable) with an `interrupted` audit row. The target must be
//! empty (no identity, no audit row); the copy is one transaction on the target, so it lands
//! completely or not at all.
//!
//! The audit hash chains arrive as they are (every chain column, and the signed checkpoints), so
//! `audit verify` checks the target as it checked the source; the `interrupted` rows this copy adds
//! are appended to the default chain (`server_id = ''`, the chain of SQLite). The source is read in one consistent snapshot; stop the servers using
//! it first.

// The rows as both schemas type them: every column the two share (an identity's `server_id` is
// not read: only in-flight rows have one, and they arrive failed).
use super::chain::{ChainHead, DEFAULT_CHAIN};
use super::orders::OrderRow;
use super::tx::{Tx, on_tx};
use super::{
    AuditKeys, ChainRow, Checkpoint, DetailRow as IdentityRow, IdentityState, NewAudit, Store,
    StoreError, now_ms, q, sql,
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

/// The columns of [`ChainRow`], in order (with `id`).
macro_rules! audit_columns {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* id, at_ms, serial, gateway, requester, event, fcc_status, fcc_info,
            fcc_warnings, detail, duration_ms, server_id, seq, prev_hash, hash)
    };
}

/// The columns of [`Checkpoint`], in order (with `id`).
macro_rules! checkpoint_columns {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* id, server_id, seq, audit_id, hash, at_ms, signature)
    };
}

/// `"a, b, c"` of identifiers.
macro_rules! names {
    ($($field:ident),+) => {
        [$(stringify!($field)),+]
    };
}

/// `INSERT INTO table (columns) VALUES ($1, …)` of a copied row.
fn insert_sql(table: &str, columns: &[&str]) -> String {
    format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.join(", "),
        placeholders(columns.len())
    )
}

/// Inserts the copied row `$r` into `$table` of the target `$tx`, every column of the list
/// `$columns` (with the row's id) bound from the field of the same name.
macro_rules! insert_copied {
    ($tx:expr, $table:literal, $columns:ident, $r:expr, $context:literal) => {{
        let sql = insert_sql($table, &$columns!(names!()));
        on_tx!($tx, conn => {
            $columns!(bind_fields!(sqlx::query(&sql), $r,))
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(q($context))
    }};
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
    async fn begin_locked(store: &Store) -> Result<Tx, StoreError> {
        let mut tx = Tx::begin_write(store, "starting the write transaction on the target").await?;
        if let Tx::Postgres(tx) = &mut tx {
            sqlx::query("LOCK TABLE identities, audit IN EXCLUSIVE MODE")
                .execute(&mut **tx)
                .await
                .map_err(q("locking the target tables"))?;
        }
        Ok(tx)
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
        T: super::BothRow,
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
        insert_copied!(
            self,
            "identities",
            identity_columns,
            r,
            "writing identities to the target"
        )
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

    /// Inserts a copied checkpoint with its id.
    async fn insert_checkpoint(&mut self, r: &Checkpoint) -> Result<(), StoreError> {
        insert_copied!(
            self,
            "audit_checkpoints",
            checkpoint_columns,
            r,
            "writing the audit checkpoints to the target"
        )
    }

    /// The head of the default chain as copied so far.
    async fn default_head(&mut self) -> Result<ChainHead, StoreError> {
        let row: Option<(i64, i64, Vec<u8>)> = on_tx!(self, conn => {
            sqlx::query_as(sql::CHAIN_HEAD)
                .bind(DEFAULT_CHAIN)
                .fetch_optional(conn)
                .await
        })
        .map_err(q("reading the head of the audit chain of the target"))?;
        match row {
            Some((seq, id, hash)) => ChainHead::stored(seq, id, &hash),
            None => Ok(ChainHead::default()),
        }
    }

    /// Inserts a copied history row with its id.
    async fn insert_history(&mut self, r: &HistoryCopy) -> Result<(), StoreError> {
        insert_copied!(
            self,
            "identity_history",
            history_columns,
            r,
            "writing the identity history to the target"
        )
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
    async fn insert_audit(&mut self, r: &ChainRow) -> Result<(), StoreError> {
        insert_copied!(
            self,
            "audit",
            audit_columns,
            r,
            "writing the audit trail to the target"
        )
    }

    /// Appends an audit row this copy adds (a new id) to the default chain after `head`.
    async fn append_audit(
        &mut self,
        head: &mut ChainHead,
        a: &NewAudit<'_>,
    ) -> Result<(), StoreError> {
        let link = a.link(DEFAULT_CHAIN, head);
        let id = on_tx!(self, conn => {
            insert_audit_query!(a, DEFAULT_CHAIN, &link)
                .fetch_one(conn)
                .await
        })
        .map_err(q("writing the audit trail to the target"))?;
        *head = ChainHead::after(&link, id);
        Ok(())
    }

    /// After explicit ids: PostgreSQL's identity sequences continue above the highest id (SQLite's
    /// `INTEGER PRIMARY KEY` does so by itself).
    async fn advance_sequences(&mut self) -> Result<(), StoreError> {
        if let Tx::Postgres(tx) = self {
            for table in [
                "identities",
                "identity_history",
                "audit",
                "audit_checkpoints",
                "order_uploads",
                "order_ranges",
            ] {
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
}

/// The work orders (issue #17): every order, its ranges, its finished uploads with their serials,
/// and the order of each identity. Uploads still loading never counted and are not copied.
async fn copy_orders(source: &mut Tx, target: &mut Tx) -> Result<(), StoreError> {
    let read = || q("reading the work orders from the source");
    let write = || q("writing the work orders to the target");
    let orders: Vec<OrderRow> =
        on_tx!(source, conn => sqlx::query_as(sql::ALL_ORDERS).fetch_all(conn).await)
            .map_err(read())?;
    for o in &orders {
        let p = &o.product;
        on_tx!(target, conn => {
            sqlx::query(sql::COPY_ORDER)
                .bind(&o.order_id)
                .bind(&o.state)
                .bind(&p.hardware_version)
                .bind(&p.radio_config)
                .bind(&p.led_config)
                .bind(&p.category)
                .bind(&p.api_address)
                .bind(&p.gateway_services_address)
                .bind(&o.created_by)
                .bind(o.created_at)
                .bind(o.closed_at)
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(write())?;
    }
    type RangeRow = (i64, String, String, i64, i64, Option<i64>);
    let ranges: Vec<RangeRow> = on_tx!(source, conn => {
        sqlx::query_as("SELECT id, order_id, prefix, first_n, last_n, width FROM order_ranges")
            .fetch_all(conn)
            .await
    })
    .map_err(read())?;
    for r in &ranges {
        on_tx!(target, conn => {
            sqlx::query(
                "INSERT INTO order_ranges (id, order_id, prefix, first_n, last_n, width) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(r.0).bind(&r.1).bind(&r.2).bind(r.3).bind(r.4).bind(r.5)
            .execute(conn)
            .await
            .map(drop)
        })
        .map_err(write())?;
    }
    let uploads: Vec<(i64, String, i64, i64)> = on_tx!(source, conn => {
        sqlx::query_as(
            "SELECT id, order_id, serials, started_at FROM order_uploads WHERE state = 'done'",
        )
        .fetch_all(conn)
        .await
    })
    .map_err(read())?;
    for u in &uploads {
        on_tx!(target, conn => {
            sqlx::query(
                "INSERT INTO order_uploads (id, order_id, state, serials, started_at) \
                 VALUES ($1, $2, 'done', $3, $4)",
            )
            .bind(u.0).bind(&u.1).bind(u.2).bind(u.3)
            .execute(conn)
            .await
            .map(drop)
        })
        .map_err(write())?;
        let mut after = String::new();
        loop {
            let page: Vec<(String, i64)> = on_tx!(source, conn => {
                sqlx::query_as(
                    "SELECT serial, line FROM order_serials WHERE upload_id = $1 AND serial > $2 \
                     ORDER BY serial LIMIT $3",
                )
                .bind(u.0).bind(&after).bind(PAGE)
                .fetch_all(conn)
                .await
            })
            .map_err(read())?;
            let Some(last) = page.last() else { break };
            after = last.0.clone();
            for (serial, line) in &page {
                on_tx!(target, conn => {
                    sqlx::query(
                        "INSERT INTO order_serials (order_id, upload_id, serial, line) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&u.1).bind(u.0).bind(serial).bind(line)
                    .execute(conn)
                    .await
                    .map(drop)
                })
                .map_err(write())?;
            }
        }
    }
    let mut after = i64::MIN;
    loop {
        let page: Vec<(i64, String)> = on_tx!(source, conn => {
            sqlx::query_as(
                "SELECT id, order_id FROM identities WHERE order_id IS NOT NULL AND id > $1 \
                 ORDER BY id LIMIT $2",
            )
            .bind(after).bind(PAGE)
            .fetch_all(conn)
            .await
        })
        .map_err(read())?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (id, order) in &page {
            on_tx!(target, conn => {
                sqlx::query("UPDATE identities SET order_id = $1 WHERE id = $2")
                    .bind(order).bind(id)
                    .execute(conn)
                    .await
                    .map(drop)
            })
            .map_err(write())?;
        }
    }
    Ok(())
}

/// Copies every identity and audit row of `from` into `to`, which must hold neither.
///
/// In-flight identities arrive failed with an `interrupted` audit row. On any error nothing is
/// written to `to` (one transaction).
pub async fn migrate_store(from: &Store, to: &Store) -> Result<MigrationReport, StoreError> {
    let mut target = Tx::begin_locked(to).await?;
    let identities = target.count("identities").await?;
    let audit = target.count("audit").await?;
    if identities > 0 || audit > 0 {
        return Err(StoreError::TargetNotEmpty {
            identities: super::count(identities),
            audit: super::count(audit),
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
        let page: Vec<ChainRow> = source
            .page_after(
                "audit",
                &audit_columns!(names!()),
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
        let page: Vec<Checkpoint> = source
            .page_after(
                "audit_checkpoints",
                &checkpoint_columns!(names!()),
                after,
                "reading the audit checkpoints from the source",
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in &page {
            target.insert_checkpoint(row).await?;
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
    copy_orders(&mut source, &mut target).await?;
    source.commit("committing").await?;

    target.advance_sequences().await?;
    let mut head = target.default_head().await?;
    for (keys, state, error) in &interrupted {
        target
            .append_audit(&mut head, &NewAudit::recovered(now, keys, *state, error))
            .await?;
    }
    target.commit("committing").await?;
    Ok(report)
}
