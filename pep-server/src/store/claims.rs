//! The cloud claim outbox (issue #18): the `claims` table, read and settled by the sender
//! (`crate::cloud`).
//!
//! A claim row is written in the transaction that marks its gateway `deployed` (the SQLite writer
//! thread's `Write::Deployed`/`Write::Resolve`, PostgreSQL's finishing transaction), so a deployed
//! gateway is never without its queued claim and provisioning never waits for the cloud. The
//! sender takes due rows (PostgreSQL: under a lease, `claimed_by` and `lease_until`, with `FOR
//! UPDATE SKIP LOCKED`, so with several servers each row is taken by one; SQLite: one server per
//! file, read without one), sends them, and settles each with the cloud's answer. These writes
//! are not on the provisioning hot path, but on SQLite they run on the writer thread all the same
//! (its group commit is the file's only writer: a pool connection writing beside it made the
//! provisioning writes wait on the busy timeout); PostgreSQL runs them on the pool.

use std::time::Duration;

use super::sqlite_writer::ClaimsWrite;
use super::{SortOrder, Store, StoreError, UnknownName, now_ms, q, sql};
use std::fmt;

/// Where a claim row stands (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimState {
    /// Queued, not sent yet (or sent in a bulk task that has not completed).
    Pending,
    /// The cloud accepted the claim (2xx).
    Claimed,
    /// The cloud answered `409`: the ID was claimed already (by this account earlier, or another).
    AlreadyClaimed,
    /// The cloud refused it (`400`, `401`, `403`): not retried until an operator re-queues it.
    Rejected,
    /// A `5xx`, `429` or network error: sent again at `next_attempt_at`.
    Retrying,
    /// A deletion the cloud carried out (or found nothing to delete).
    Deleted,
}

text_enum!(ClaimState, "claim state", {
    Pending => "pending",
    Claimed => "claimed",
    AlreadyClaimed => "already_claimed",
    Rejected => "rejected",
    Retrying => "retrying",
    Deleted => "deleted",
});

impl ClaimState {
    /// Every state, in the order the metrics and the floor page list them.
    pub const ALL: [ClaimState; 6] = [
        ClaimState::Pending,
        ClaimState::Retrying,
        ClaimState::Claimed,
        ClaimState::AlreadyClaimed,
        ClaimState::Rejected,
        ClaimState::Deleted,
    ];
}

/// What a row asks of the cloud (the `action` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimAction {
    /// Claim the enrollment ID for the account.
    Claim,
    /// Free the claim (a revoked or scrapped gateway).
    Delete,
}

text_enum!(ClaimAction, "claim action", {
    Claim => "claim",
    Delete => "delete",
});

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimRow {
    /// Row id (the paging cursor).
    pub id: i64,
    /// The enrollment ID (`A-…`).
    pub enrollment_id: String,
    /// The gateway's serial.
    pub serial: String,
    /// Claim or delete.
    pub action: ClaimAction,
    /// Where it stands.
    pub state: ClaimState,
    /// Requests made for it so far.
    pub attempts: i64,
    /// When it is due (ms since the epoch).
    pub next_attempt_at: i64,
    /// What the cloud (or the network) answered last, when that was not a success. Never holds the
    /// API key.
    pub last_error: Option<String>,
    /// The server that sent it (or has it in hand).
    pub claimed_by: Option<String>,
    /// The bulk task it went out in, while that task has not completed.
    pub bulk_task: Option<String>,
    /// The cloud's own id of the claim.
    pub cloud_id: Option<String>,
    /// Queued at (ms since the epoch).
    pub created_at: i64,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}

/// The sender's answer for one row it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Row id.
    pub id: i64,
    /// The new state.
    pub state: ClaimState,
    /// Whether a request was made (counts as an attempt).
    pub attempted: bool,
    /// When it is due again (for `retrying`; otherwise now).
    pub next_attempt_at: i64,
    /// The error to show (none after a success).
    pub last_error: Option<String>,
    /// The cloud's id of the claim, when it answered one.
    pub cloud_id: Option<String>,
}

/// Rows per state, for claims and for deletions (the metrics and the floor page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClaimStats {
    /// Claim rows per state, in [`ClaimState::ALL`] order.
    pub claims: [u64; 6],
    /// Delete rows per state, in [`ClaimState::ALL`] order.
    pub deletes: [u64; 6],
}

impl ClaimStats {
    /// Claim rows in `state`.
    pub fn claims_in(&self, state: ClaimState) -> u64 {
        self.claims[index(state)]
    }

    /// Delete rows in `state`.
    pub fn deletes_in(&self, state: ClaimState) -> u64 {
        self.deletes[index(state)]
    }
}

impl super::Tally for ClaimStats {
    type Row = (ClaimAction, ClaimState, i64);

    fn count(&mut self, (action, state, n): Self::Row) {
        let n = super::count(n);
        match action {
            ClaimAction::Claim => self.claims[index(state)] = n,
            ClaimAction::Delete => self.deletes[index(state)] = n,
        }
    }
}

fn index(state: ClaimState) -> usize {
    ClaimState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

/// The latest error of the outbox (the floor page).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimError {
    /// What was answered.
    pub last_error: String,
    /// Of which gateway.
    pub serial: String,
    /// When (ms since the epoch).
    pub updated_at: i64,
}

/// Queues the cloud deletion of the claim of `enrollment_id` inside the SQLite writer's open
/// transaction (the revocation's write, merged with #16).
pub(crate) fn enqueue_claim_delete_sqlite(
    conn: &rusqlite::Connection,
    enrollment_id: &str,
    serial: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    claim_delete_sqlite(conn, sql::QUEUE_CLAIM_DELETE, enrollment_id, serial, now_ms)
}

/// Queues the cloud deletion of the claim of `enrollment_id` inside an open PostgreSQL
/// transaction (the revocation's transaction, merged with #16).
pub async fn enqueue_claim_delete_postgres(
    tx: &mut sqlx::PgConnection,
    enrollment_id: &str,
    serial: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    claim_delete_postgres(tx, sql::QUEUE_CLAIM_DELETE, enrollment_id, serial, now_ms)
        .await
        .map_err(q("queueing a claim deletion"))
}

/// A revocation's claim deletion inside the SQLite writer's open transaction: queued only when a
/// claim of `enrollment_id` was queued (`sql::QUEUE_CLAIM_DELETE_IF_CLAIMED`).
pub(crate) fn enqueue_claim_delete_if_claimed_sqlite(
    conn: &rusqlite::Connection,
    enrollment_id: &str,
    serial: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    claim_delete_sqlite(
        conn,
        sql::QUEUE_CLAIM_DELETE_IF_CLAIMED,
        enrollment_id,
        serial,
        now_ms,
    )
}

/// [`enqueue_claim_delete_if_claimed_sqlite`] inside the revocation's PostgreSQL transaction.
pub(crate) async fn enqueue_claim_delete_if_claimed_postgres(
    tx: &mut sqlx::PgConnection,
    enrollment_id: &str,
    serial: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    claim_delete_postgres(
        tx,
        sql::QUEUE_CLAIM_DELETE_IF_CLAIMED,
        enrollment_id,
        serial,
        now_ms,
    )
    .await
    .map_err(q("queueing the deletion of the cloud claim"))
}

/// Runs one of the claim-deletion statements (`$1` enrollment ID, `$2` serial, `$3` now) in the
/// SQLite writer's open transaction.
fn claim_delete_sqlite(
    conn: &rusqlite::Connection,
    statement: &str,
    enrollment_id: &str,
    serial: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?
        .execute(rusqlite::params![enrollment_id, serial, now_ms])
        .map(drop)
}

/// [`claim_delete_sqlite`] in an open PostgreSQL transaction.
async fn claim_delete_postgres(
    tx: &mut sqlx::PgConnection,
    statement: &'static str,
    enrollment_id: &str,
    serial: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(statement)
        .bind(enrollment_id)
        .bind(serial)
        .bind(now_ms)
        .execute(tx)
        .await
        .map(drop)
}

/// Queues the cloud claim of the deployed `serial` inside the SQLite writer's open transaction.
pub(crate) fn queue_claim_sqlite(
    conn: &rusqlite::Connection,
    serial: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(sql::QUEUE_CLAIM)?
        .execute(rusqlite::params![now_ms, serial])
        .map(drop)
}

/// Queues the cloud claim of the deployed `serial` inside an open PostgreSQL transaction.
pub(crate) async fn queue_claim_postgres(
    tx: &mut sqlx::PgConnection,
    serial: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(sql::QUEUE_CLAIM)
        .bind(now_ms)
        .bind(serial)
        .execute(tx)
        .await
        .map_err(q("queueing the cloud claim"))
        .map(drop)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Whether this store queues a cloud claim with each deployment (`[cloud] mode` not `off`).
    pub fn queues_claims(&self) -> bool {
        match self {
            Store::Sqlite(s) => s.queues_claims(),
            Store::Postgres(s) => s.options().claims,
        }
    }

    /// Queues the cloud deletion of the claim of `enrollment_id` (of `serial`) in its own
    /// transaction. Inside a revocation's transaction use [`enqueue_claim_delete_postgres`] or
    /// the SQLite writer's `enqueue_claim_delete_sqlite`.
    pub async fn enqueue_claim_delete(
        &self,
        enrollment_id: &str,
        serial: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.enqueue_claim_delete(enrollment_id.to_owned(), serial.to_owned(), now_ms())
                    .await
            }
            Store::Postgres(s) => {
                let mut conn = s
                    .pool()
                    .acquire()
                    .await
                    .map_err(q("queueing a claim deletion"))?;
                enqueue_claim_delete_postgres(&mut conn, enrollment_id, serial, now_ms()).await
            }
        }
    }

    /// Takes up to `limit` due rows for `server`, oldest first. PostgreSQL: under a lease until
    /// `lease` from now; rows held by another server's live lease are neither taken nor waited
    /// for. SQLite: read without a lease, because one process serves a file and runs one sender
    /// whose rounds never overlap (`sql::TAKE_CLAIMS_SQLITE`); a library user calls this from
    /// one task at a time, settling each round before the next.
    pub async fn take_claims(
        &self,
        server: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimRow>, StoreError> {
        let now = now_ms();
        match self {
            Store::Sqlite(s) => sqlx::query_as(sql::TAKE_CLAIMS_SQLITE)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(s.pool())
                .await
                .map_err(q("reading due cloud claims")),
            Store::Postgres(s) => sqlx::query_as(sql::TAKE_CLAIMS_POSTGRES)
                .bind(server)
                .bind(now.saturating_add(ms(lease)))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(s.pool())
                .await
                .map_err(q("taking due cloud claims")),
        }
    }

    /// Records the answers of rows `server` holds, in one transaction.
    pub async fn settle_claims(
        &self,
        server: &str,
        settlements: &[Settlement],
    ) -> Result<(), StoreError> {
        if settlements.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let pg = match self {
            Store::Sqlite(s) => {
                let settle = ClaimsWrite::Settle {
                    server: server.to_owned(),
                    now_ms: now,
                    settlements: settlements.to_vec(),
                };
                return s.claims(settle).await.map(drop);
            }
            Store::Postgres(s) => s,
        };
        let mut tx = pg.begin().await?;
        for s in settlements {
            sqlx::query(sql::SETTLE_CLAIM_POSTGRES)
                .bind(s.state)
                .bind(i64::from(s.attempted))
                .bind(s.next_attempt_at)
                .bind(s.last_error.as_deref())
                .bind(s.cloud_id.as_deref())
                .bind(now)
                .bind(server)
                .bind(s.id)
                .execute(&mut *tx)
                .await
                .map_err(q("settling cloud claims"))?;
        }
        tx.commit().await.map_err(q("committing cloud claims"))
    }

    /// Records that rows `ids` (held by `server`) went out in bulk task `task`.
    pub async fn mark_bulk(&self, server: &str, task: &str, ids: &[i64]) -> Result<(), StoreError> {
        let now = now_ms();
        let pg = match self {
            Store::Sqlite(s) => {
                let mark = ClaimsWrite::MarkBulk {
                    server: server.to_owned(),
                    task: task.to_owned(),
                    now_ms: now,
                    ids: ids.to_vec(),
                };
                return s.claims(mark).await.map(drop);
            }
            Store::Postgres(s) => s,
        };
        let mut tx = pg.begin().await?;
        for id in ids {
            sqlx::query(sql::MARK_BULK_POSTGRES)
                .bind(task)
                .bind(now)
                .bind(server)
                .bind(*id)
                .execute(&mut *tx)
                .await
                .map_err(q("recording a bulk upload"))?;
        }
        tx.commit().await.map_err(q("committing a bulk upload"))
    }

    /// Ends the leases a previous run of `server` left (SQLite: every lease). Call at start-up,
    /// before the sender runs.
    pub async fn release_claim_leases(&self, server: &str) -> Result<u64, StoreError> {
        let owner = match self {
            // One server per SQLite file: every lease is a previous run's (`$1` NULL).
            Store::Sqlite(_) => None,
            Store::Postgres(_) => Some(server),
        };
        self.release_leases(
            sql::RELEASE_CLAIM_LEASES,
            owner,
            "releasing cloud claim leases",
        )
        .await
    }

    /// Outbox rows in `state` (or every row), keyset-paged on `id` like [`Store::list_deployed`].
    pub async fn list_claims(
        &self,
        state: Option<ClaimState>,
        limit: u32,
        order: SortOrder,
        after_id: Option<i64>,
    ) -> Result<Vec<ClaimRow>, StoreError> {
        let listing = (sql::LIST_CLAIMS_ASC, sql::LIST_CLAIMS_DESC);
        // `$1` NULL lists every state.
        let state = state.map(ClaimState::as_str);
        self.state_page(
            listing,
            state,
            limit,
            order,
            after_id,
            "listing cloud claims",
        )
        .await
    }

    /// Rows per action and state.
    pub async fn claim_stats(&self) -> Result<ClaimStats, StoreError> {
        self.tally(sql::CLAIM_STATS, None, "counting cloud claims")
            .await
    }

    /// The latest error of the outbox, if any row has one.
    pub async fn last_claim_error(&self) -> Result<Option<ClaimError>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query_as(sql::LAST_CLAIM_ERROR).fetch_optional(pool).await
        })
        .map_err(q("reading the latest cloud error"))
    }

    /// Every row in `state` is due again now (`pep-server cloud retry --state`); returns how many.
    pub async fn retry_claims(&self, state: ClaimState) -> Result<u64, StoreError> {
        let now = now_ms();
        match self {
            Store::Sqlite(s) => s.claims(ClaimsWrite::Retry { state, now_ms: now }).await,
            Store::Postgres(s) => sqlx::query(sql::RETRY_CLAIMS)
                .bind(now)
                .bind(state)
                .execute(s.pool())
                .await
                .map(|r| r.rows_affected())
                .map_err(q("re-queueing cloud claims")),
        }
    }
}
