//! The hash chain in the database (the encoding is [`super::chain`]'s): chaining the rows written
//! before schema v6 at open, reading a chain's head, the signed checkpoints, and the read-only
//! [`AuditSource`] of `pep-server audit verify` / `audit export`, which opens a database without
//! migrating, recovering or locking it (a live server may keep writing beside it).

use std::ops::ControlFlow;
use std::str::FromStr;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::chain::{self, ChainHead, DEFAULT_CHAIN, RowFields};
use super::{Store, StoreError, q, sql};

/// Rows chained per round trip by the backfill.
const PAGE: i64 = 1000;

/// One audit row with its chain columns, as stored and as exported (one JSON object per line,
/// hashes in hex).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct ChainRow {
    /// Row id.
    pub id: i64,
    /// The chain (`""`: SQLite, and rows written before the chain existed).
    pub server_id: String,
    /// Position in the chain (none: the row is in no chain).
    pub seq: Option<i64>,
    /// ms since the epoch.
    pub at_ms: i64,
    /// Serial.
    pub serial: String,
    /// `ip:port`.
    pub gateway: String,
    /// Who asked.
    pub requester: String,
    /// The event's stored name (text, so that a row with an edited event still reads).
    pub event: String,
    /// FCC ReturnStatus.
    pub fcc_status: Option<i64>,
    /// FCC InfoMessage.
    pub fcc_info: Option<String>,
    /// FCC warnings, one per line.
    pub fcc_warnings: String,
    /// Detail text.
    pub detail: Option<String>,
    /// Attempt duration, ms.
    pub duration_ms: Option<i64>,
    /// The previous row's hash.
    #[serde(with = "hex_opt")]
    pub prev_hash: Option<Vec<u8>>,
    /// This row's hash.
    #[serde(with = "hex_opt")]
    pub hash: Option<Vec<u8>>,
}

impl ChainRow {
    /// Its hashed columns as row `seq` of chain `server_id` (the backfill chains rows that have
    /// neither yet).
    pub fn fields_at<'a>(&'a self, server_id: &'a str, seq: i64) -> RowFields<'a> {
        RowFields {
            server_id,
            seq,
            at_ms: self.at_ms,
            serial: &self.serial,
            gateway: &self.gateway,
            requester: &self.requester,
            event: &self.event,
            fcc_status: self.fcc_status,
            fcc_info: self.fcc_info.as_deref(),
            fcc_warnings: &self.fcc_warnings,
            detail: self.detail.as_deref(),
            duration_ms: self.duration_ms,
        }
    }

    /// Its hashed columns as stored (none when it has no `seq`).
    pub fn fields(&self) -> Option<RowFields<'_>> {
        self.seq.map(|seq| self.fields_at(&self.server_id, seq))
    }
}

/// A chain head signed by the factory CA.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Row id of the checkpoint.
    pub id: i64,
    /// The chain.
    pub server_id: String,
    /// The head's `seq`: the chain's row count.
    pub seq: i64,
    /// The head row's id.
    pub audit_id: i64,
    /// The head row's hash.
    #[serde(with = "hex_vec")]
    pub hash: Vec<u8>,
    /// When it was signed, ms since the epoch.
    pub at_ms: i64,
    /// ECDSA P-256 SHA-256 signature (DER) of [`chain::checkpoint_message`] by the CA key.
    #[serde(with = "hex_vec")]
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The bytes its signature covers (none when the stored hash has the wrong length).
    pub fn message(&self) -> Option<Vec<u8>> {
        let hash = chain::to_hash(&self.hash)?;
        Some(chain::checkpoint_message(&chain::CheckpointFields {
            server_id: &self.server_id,
            seq: self.seq,
            audit_id: self.audit_id,
            hash: &hash,
            at_ms: self.at_ms,
        }))
    }
}

/// Hex (de)serialization of an optional byte string.
mod hex_opt {
    pub(super) fn serialize<S: serde::Serializer>(
        v: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = serde::Deserialize::deserialize(d)?;
        text.map(|t| hex::decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Hex (de)serialization of a byte string.
mod hex_vec {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// The head of chain `$server_id` read through `$executor` (the empty chain's when it has no row).
macro_rules! read_head {
    ($executor:expr, $server_id:expr) => {{
        let row: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(sql::CHAIN_HEAD)
            .bind($server_id)
            .fetch_optional($executor)
            .await
            .map_err(q("reading the head of the audit chain"))?;
        match row {
            Some((seq, id, hash)) => ChainHead::stored(seq, id, &hash)?,
            None => ChainHead::default(),
        }
    }};
}

/// The backfill, written once for both pools: in one transaction (after `$lock`, if any), chains
/// every row written before v6 into the default chain, in id order, then deletes the marker.
macro_rules! backfill_legacy {
    ($pool:expr, $lock:expr) => {{
        let mut tx = $pool
            .begin()
            .await
            .map_err(q("starting to chain the audit rows written before v6"))?;
        let lock: Option<&str> = $lock;
        if let Some(lock) = lock {
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(q("locking the audit backfill"))?;
        }
        let up_to: Option<i64> = sqlx::query_scalar(sql::LEGACY_UP_TO)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("reading the audit backfill marker"))?;
        let mut chained = 0u64;
        if let Some(up_to) = up_to {
            let mut head = read_head!(&mut *tx, DEFAULT_CHAIN);
            let mut after = i64::MIN;
            loop {
                let page: Vec<ChainRow> = sqlx::query_as(sql::LEGACY_ROWS)
                    .bind(after)
                    .bind(up_to)
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(q("reading the audit rows written before v6"))?;
                let Some(last) = page.last() else { break };
                after = last.id;
                for row in &page {
                    let link = head.link(&row.fields_at(DEFAULT_CHAIN, head.next_seq()));
                    sqlx::query(sql::CHAIN_LEGACY_ROW)
                        .bind(DEFAULT_CHAIN)
                        .bind(link.seq)
                        .bind(&link.prev_hash[..])
                        .bind(&link.hash[..])
                        .bind(row.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(q("chaining the audit rows written before v6"))?;
                    head = ChainHead::after(&link, row.id);
                    chained += 1;
                }
            }
            sqlx::query(sql::LEGACY_DONE)
                .execute(&mut *tx)
                .await
                .map_err(q("clearing the audit backfill marker"))?;
        }
        tx.commit()
            .await
            .map_err(q("committing the audit backfill"))?;
        if chained > 0 {
            tracing::info!(
                rows = chained,
                "chained the audit rows written before the hash chain existed"
            );
        }
        Ok(chained)
    }};
}

/// SQLite: chains the rows written before v6 (at open, before the writer thread starts).
pub(super) async fn backfill_sqlite(pool: &SqlitePool) -> Result<u64, StoreError> {
    backfill_legacy!(pool, None)
}

/// PostgreSQL: chains the rows written before v6 (at open; the first server to start does it, the
/// others wait for its advisory lock and find nothing left).
pub(super) async fn backfill_postgres(pool: &PgPool) -> Result<u64, StoreError> {
    backfill_legacy!(pool, Some(sql::PG_LOCK_LEGACY))
}

/// The head of chain `server_id` (SQLite writer start).
pub(super) async fn head_sqlite(
    pool: &SqlitePool,
    server_id: &str,
) -> Result<ChainHead, StoreError> {
    Ok(read_head!(pool, server_id))
}

/// The head of chain `server_id` (PostgreSQL open, and after a commit whose outcome is unknown).
pub(super) async fn head_postgres(pool: &PgPool, server_id: &str) -> Result<ChainHead, StoreError> {
    Ok(read_head!(pool, server_id))
}

impl Store {
    /// The chains this server checkpoints, with their committed heads: SQLite's one chain;
    /// PostgreSQL: this server's and the chain of the rows written before v6.
    pub async fn chain_heads(&self) -> Result<Vec<(String, ChainHead)>, StoreError> {
        let mut chains = vec![DEFAULT_CHAIN.to_owned()];
        if let Store::Postgres(s) = self
            && s.options().server_id != DEFAULT_CHAIN
        {
            chains.insert(0, s.options().server_id.clone());
        }
        let mut heads = Vec::with_capacity(chains.len());
        for server_id in chains {
            let head = on_pool!(self, pool => read_head!(pool, &server_id));
            heads.push((server_id, head));
        }
        Ok(heads)
    }

    /// The `seq` of the latest checkpoint of chain `server_id`, if any.
    pub async fn last_checkpoint_seq(&self, server_id: &str) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query_scalar(sql::LAST_CHECKPOINT_SEQ)
                .bind(server_id)
                .fetch_one(pool)
                .await
        })
        .map_err(q("reading the latest audit checkpoint"))
    }

    /// Stores a signed checkpoint (`id` is assigned).
    pub async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(sql::INSERT_CHECKPOINT)
                .bind(&c.server_id)
                .bind(c.seq)
                .bind(c.audit_id)
                .bind(&c.hash)
                .bind(c.at_ms)
                .bind(&c.signature)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(q("storing an audit checkpoint"))?;
        Ok(())
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        on_pool!(self, pool => sqlx::query_as(sql::CHECKPOINTS).fetch_all(pool).await)
            .map_err(q("reading the audit checkpoints"))
    }
}

/// A database opened read-only for `audit verify` and `audit export`: no migration, no recovery, no
/// lock (a server may keep writing).
#[derive(Debug)]
pub enum AuditSource {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the source's pool.
macro_rules! on_source {
    ($source:expr, $pool:ident => $body:expr) => {
        match $source {
            AuditSource::Sqlite($pool) => $body,
            AuditSource::Postgres($pool) => $body,
        }
    };
}

impl AuditSource {
    /// Opens `url` (`sqlite://PATH` or `postgres://...`) for reading. A SQLite file that does not
    /// exist is an error, never created.
    pub async fn open(url: &str) -> Result<AuditSource, StoreError> {
        let open_err = |source| StoreError::Open {
            url: super::postgres::redact(url),
            source,
        };
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err(StoreError::UnsupportedUrl(format!(
                    "{url} (an in-memory database is gone with its server: nothing to read)"
                )));
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(open_err)?
                .read_only(true)
                .create_if_missing(false);
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .map_err(open_err)?;
            Ok(AuditSource::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options: PgConnectOptions = url.parse().map_err(open_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options.application_name("pep-server audit"))
                .await
                .map_err(open_err)?;
            Ok(AuditSource::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl(super::postgres::redact(url)))
        }
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        on_source!(self, pool => sqlx::query_as(sql::CHECKPOINTS).fetch_all(pool).await)
            .map_err(schema_q("reading the audit checkpoints"))
    }

    /// Ids of rows in no chain, at most `limit`.
    pub async fn unchained(&self, limit: u32) -> Result<Vec<i64>, StoreError> {
        on_source!(self, pool => {
            sqlx::query_scalar(sql::UNCHAINED)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .map_err(schema_q("looking for audit rows outside the chain"))
    }

    /// Streams every chained row, chain by chain in chain order, to `f` until it breaks.
    pub async fn for_each_row(
        &self,
        f: &mut (dyn FnMut(ChainRow) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        on_source!(self, pool => {
            let mut rows = sqlx::query_as::<_, ChainRow>(sql::CHAIN_ROWS).fetch(pool);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(schema_q("reading the audit trail"))?
            {
                if f(row).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        on_source!(self, pool => pool.close().await);
    }
}

/// A query error of the read-only source: a database never opened by a pep-server with the hash
/// chain (schema v6) lacks its columns, which the error says.
fn schema_q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        let missing = matches!(&source, sqlx::Error::Database(e)
            if e.message().contains("no such column") || e.message().contains("no such table")
                || e.message().contains("does not exist"));
        if missing {
            StoreError::Corrupt(format!(
                "{context}: the database has no audit hash chain ({source}); it was never opened \
                 by a pep-server with the tamper-evident audit trail (schema v6): start that \
                 version once to migrate it"
            ))
        } else {
            StoreError::Query { context, source }
        }
    }
}
