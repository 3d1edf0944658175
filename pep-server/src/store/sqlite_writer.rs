//! The SQLite store's write path: one thread, one connection, group commit.
//!
//! Every write of the hot path (reserve a serial, mark it deployed or failed) is sent to a
//! dedicated thread that owns the one writing connection. The thread takes every write waiting
//! in its queue (up to [`MAX_BATCH`]) and runs them in **one** `BEGIN IMMEDIATE … COMMIT`, each
//! inside its own savepoint, then answers each caller. Why, measured (docs/performance.md):
//!
//! * SQLite serializes writers anyway, so one writer loses no parallelism, and its page cache and
//!   prepared statements stay valid between transactions;
//! * a commit is the expensive part of a small write (WAL frames, the WAL index, locks): under
//!   load one commit now carries many provisionings;
//! * sqlx runs every statement of a SQLite connection on that connection's own worker thread and
//!   hands commands and rows over channels, about eight thread hand-offs per provisioning; here
//!   each write is one hand-off to the thread and one answer back, however many statements it has.
//!
//! A caller is answered only after the batch's `COMMIT`, so an answered write is as durable as a
//! committed transaction (WAL, `synchronous = NORMAL`: no fsync per commit, safe against a process
//! crash). A write that fails is rolled back to its savepoint and fails alone; a batch whose
//! `COMMIT` fails fails every write in it, and nothing of it is kept.
//!
//! Reads stay on sqlx's pool (WAL readers run beside the writer).
//!
//! The thread is the only writer of the audit hash chain (store/chain.rs): it keeps the chain's
//! head in memory (read once at start) and links each audit row as it inserts it, inside the
//! write's savepoint. A write rolled back to its savepoint takes its links back with it; a batch
//! that fails as a whole re-reads the head from the database.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::chain::{ChainHead, DEFAULT_CHAIN};
use super::claims::{ClaimState, Settlement as ClaimSettlement};
use super::outbox::{Claim, Delivery, EventRoutes, NewEvent, Settle, Settlement};
use super::{
    AuditEvent, AuditKeys, Decision, IdentityState, NewAttempt, NewAudit, Outcome, ReasonColumn,
    Reservation, Resolution, RevokeOrder, RevokeOutcome, RevokedIdentity, StoreError, WriteAhead,
    sql,
};

/// Most writes one transaction carries. Bounds how long a caller waits behind others' writes.
pub(super) const MAX_BATCH: usize = 256;

/// A write, with everything it needs owned (it crosses to the writer thread).
#[derive(Debug)]
pub(super) enum Write {
    /// Insert the serial as `in_flight`, or revive it from `failed`; audit `attempt` or `conflict`.
    Reserve(Box<NewAttempt>),
    /// `in_flight` → `deployed`; audit `deployed`.
    Deployed {
        id: i64,
        enrollment_id: String,
        cert_serial: String,
        cert_not_after: i64,
        /// FCC's warnings joined by `\n` (the column's form).
        fcc_warnings: String,
        /// The audit row's detail (enrollment ID, and the warnings if any).
        detail: String,
        duration_ms: i64,
        now_ms: i64,
        /// Queue the gateway's cloud claim in the same transaction.
        claim: bool,
    },
    /// `in_flight` → `failed`; audit `failed`.
    Failed {
        id: i64,
        fcc_status: Option<u32>,
        fcc_info: Option<String>,
        fcc_warnings: String,
        error: String,
        duration_ms: i64,
        now_ms: i64,
    },
    /// The certificate of in-flight row `id`, before its first byte goes to FCC (no audit row).
    Ahead { id: i64, ahead: Box<WriteAhead> },
    /// An operator's resolution of an in-doubt serial; audit `resolved`; with `claim`, a
    /// `deployed` resolution queues the cloud claim in the same transaction.
    Resolve { decision: Decision, claim: bool },
    /// Queue the cloud deletion of a claim (no audit row: the revocation that asks audits).
    ClaimDelete {
        enrollment_id: String,
        serial: String,
        now_ms: i64,
    },
    /// An operator's revocation of a deployed or in-doubt serial; audit `revoked`, its webhook
    /// event, and the deletion of its cloud claim (when one was queued), in one transaction.
    Revoke(Box<RevokeOrder>),
    /// Take the next CRL number.
    NextCrlNumber,
    /// A refused gateway address: audit `refused` only (no identity row).
    Refused {
        keys: Box<AuditKeys>,
        detail: String,
        now_ms: i64,
    },
    /// Every `in_flight` row → `in_doubt` (certificate written ahead: `in_doubt` text) or
    /// `failed` (`error`); audit each as `in_doubt` or `interrupted`.
    RecoverInterrupted {
        in_doubt: &'static str,
        error: &'static str,
        now_ms: i64,
    },
    /// The webhook outbox (`store::outbox`).
    Outbox(Box<OutboxWrite>),
    /// Either outbox's lease release at start-up (`statement`, `$1` = `owner`), answered with the
    /// rows it freed.
    ReleaseLeases {
        statement: &'static str,
        owner: Option<String>,
        context: &'static str,
    },
    /// The cloud claim outbox (`store::claims`).
    Claims(Box<ClaimsWrite>),
}

/// A write of the cloud claim sender. Not on the hot path, but on this thread all the same: a
/// second SQLite connection writing beside it would hold the database's one write lock against
/// the group commit, which then sleeps in the busy handler (measured: the fleet rate fell by a
/// quarter with `[cloud] mode = "each"`, docs/performance.md).
#[derive(Debug)]
pub(super) enum ClaimsWrite {
    /// Record the answers of rows `server` holds.
    Settle {
        server: String,
        now_ms: i64,
        settlements: Vec<ClaimSettlement>,
    },
    /// Rows `ids` went out in bulk task `task`.
    MarkBulk {
        server: String,
        task: String,
        now_ms: i64,
        ids: Vec<i64>,
    },
    /// Every row in `state` is due again at `now_ms`.
    Retry { state: ClaimState, now_ms: i64 },
}

/// A write of the webhook outbox.
#[derive(Debug)]
pub(super) enum OutboxWrite {
    /// An event in a transaction of its own ([`super::Store::enqueue_event`]).
    Enqueue(NewEvent),
    /// Lease due rows.
    Claim(Claim),
    /// Record the outcomes of attempts (the delivery task settles in batches).
    SettleMany(Vec<Settle>),
}

/// What a committed write returns.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// Of [`Write::Reserve`].
    Reservation(Reservation),
    /// Of [`Write::Deployed`]: the row's `created_at`.
    Deployed { created_at: i64 },
    /// Of [`Write::Failed`].
    Failed,
    /// Of [`Write::Ahead`].
    Ahead,
    /// Of [`Write::Resolve`].
    Resolved(Resolution),
    /// Of [`Write::Revoke`].
    Revoked(RevokeOutcome),
    /// Of [`Write::NextCrlNumber`].
    CrlNumber(i64),
    /// Of [`Write::Refused`].
    Refused,
    /// Of [`Write::ClaimDelete`].
    ClaimDelete,
    /// Of [`Write::RecoverInterrupted`]: rows recovered.
    Recovered(u64),
    /// Of an [`OutboxWrite`] other than a claim: rows written.
    Outbox(u64),
    /// Of [`OutboxWrite::Claim`]: the leased rows.
    Claimed(Vec<Delivery>),
    /// Of [`OutboxWrite::SettleMany`]: per settlement, whether its lease was still the owner's.
    Settled(Vec<bool>),
}

enum Command {
    Write {
        write: Write,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    },
    /// Finish the writes queued before this, close the connection, answer, and stop.
    Close { reply: oneshot::Sender<()> },
}

/// Handle of the writer thread. Cheap to clone; the thread stops at [`SqliteWriter::close`] or
/// when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct SqliteWriter {
    commands: mpsc::UnboundedSender<Command>,
}

fn write_error(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Write {
        context,
        reason: e.to_string(),
    }
}

impl SqliteWriter {
    /// Opens the writing connection to the database file at `path` (which the sqlx pool has
    /// already created and migrated) and starts the thread.
    /// `head` is the audit chain's head as committed (the thread is its only writer from now on).
    pub(super) fn start(
        path: &Path,
        busy_timeout: Duration,
        durability: super::sqlite::Durability,
        routes: EventRoutes,
        head: ChainHead,
    ) -> Result<SqliteWriter, StoreError> {
        let open = write_error("opening the writer connection");
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&open)?;
        conn.busy_timeout(busy_timeout).map_err(&open)?;
        // The same settings as the pool's connections (the journal mode is per database and
        // already WAL; synchronous and foreign keys are per connection). This connection makes
        // every write of the hot path: with FULL, each group commit syncs the WAL before any
        // caller of the batch is answered.
        let synchronous = match durability {
            super::sqlite::Durability::Full => "FULL",
            super::sqlite::Durability::Normal => "NORMAL",
        };
        // temp_store = MEMORY: each write runs in a savepoint, whose statement journal (the
        // pages it changed, kept to roll that write back alone) went to a temporary file, one
        // pwrite per page; a profile with cloud claims on showed those pwrites at 4 % of the
        // server's CPU (docs/performance.md). The journal only serves a rollback inside the
        // open transaction, never crash recovery (the WAL does that), so memory loses nothing.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY;"
        ))
        .map_err(&open)?;
        conn.set_prepared_statement_cache_capacity(16);
        let (commands, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("pep-sqlite-writer".to_owned())
            .spawn(move || run(conn, queue, &routes, head))
            .map_err(|e| StoreError::Write {
                context: "starting the writer thread",
                reason: e.to_string(),
            })?;
        Ok(SqliteWriter { commands })
    }

    /// Queues `write` and waits until its batch has committed.
    pub(super) async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Write { write, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Lets the writes queued so far commit, then closes the connection.
    pub(super) async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).is_ok() {
            let _ = done.await;
        }
    }
}

/// The writer thread: takes what is queued, commits it as one batch, answers, repeats.
fn run(
    mut conn: Connection,
    mut queue: mpsc::UnboundedReceiver<Command>,
    routes: &EventRoutes,
    mut head: ChainHead,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut close = None;
    while close.is_none() {
        let Some(first) = queue.blocking_recv() else {
            break; // every handle is gone
        };
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write { write, reply } => batch.push((write, reply)),
                Command::Close { reply } => {
                    close = Some(reply);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let results = commit_batch(&mut conn, routes, &mut head, batch.iter().map(|(w, _)| w));
            for ((_, reply), result) in batch.drain(..).zip(results) {
                // A caller that gave up is not an error: its write is committed all the same.
                let _ = reply.send(result);
            }
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite writer connection failed");
    }
    if let Some(reply) = close {
        let _ = reply.send(());
    }
}

/// Runs `writes` in one transaction, each in its own savepoint, linking their audit rows after
/// `head`. One result per write, in order.
fn commit_batch<'a>(
    conn: &mut Connection,
    routes: &EventRoutes,
    head: &mut ChainHead,
    writes: impl ExactSizeIterator<Item = &'a Write>,
) -> Vec<Result<Written, StoreError>> {
    let n = writes.len();
    let fail_all = |context: &'static str, e: rusqlite::Error| {
        let reason = e.to_string();
        (0..n)
            .map(|_| {
                Err(StoreError::Write {
                    context,
                    reason: reason.clone(),
                })
            })
            .collect()
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all("starting a write transaction", e);
    }
    let batch_head = *head;
    let mut results = Vec::with_capacity(n);
    for write in writes {
        let write_head = *head;
        let result = run_cached(conn, "SAVEPOINT write")
            .map_err(write_error("starting a savepoint"))
            .and_then(|()| apply(conn, routes, head, write));
        let end = if result.is_ok() {
            run_cached(conn, "RELEASE write")
        } else {
            // Undo this write alone (its audit links too); the others of the batch stay.
            *head = write_head;
            run_cached(conn, "ROLLBACK TO write").and_then(|()| run_cached(conn, "RELEASE write"))
        };
        if let Err(e) = end {
            let _ = conn.execute_batch("ROLLBACK");
            *head = reread_head(conn, batch_head);
            return fail_all("ending a savepoint", e);
        }
        results.push(result);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        *head = reread_head(conn, batch_head);
        return fail_all("committing", e);
    }
    results
}

/// The chain head as committed, after a batch failed as a whole (rolled back: normally
/// `batch_head`; the database says for sure). If even that read fails, `batch_head`.
fn reread_head(conn: &Connection, batch_head: ChainHead) -> ChainHead {
    let read = conn
        .prepare_cached(sql::CHAIN_HEAD)
        .and_then(|mut s| {
            s.query_row(params![DEFAULT_CHAIN], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .optional()
        })
        .map_err(write_error("reading the head of the audit chain"))
        .and_then(|row| match row {
            Some((seq, id, hash)) => ChainHead::stored(seq, id, &hash),
            None => Ok(ChainHead::default()),
        });
    match read {
        Ok(head) => head,
        Err(e) => {
            tracing::error!(error = %e, "cannot re-read the audit chain head after a failed batch");
            batch_head
        }
    }
}

/// Runs a statement without parameters or rows from the statement cache (parsed once, not per
/// write: the savepoint statements run twice per write).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn apply(
    conn: &Connection,
    routes: &EventRoutes,
    head: &mut ChainHead,
    write: &Write,
) -> Result<Written, StoreError> {
    match write {
        Write::Reserve(a) => reserve(conn, head, a).map(Written::Reservation),
        Write::Deployed {
            id,
            enrollment_id,
            cert_serial,
            cert_not_after,
            fcc_warnings,
            detail,
            duration_ms,
            now_ms,
            claim,
        } => finish_attempt(
            conn,
            head,
            *id,
            "marking the identity deployed",
            sql::MARK_DEPLOYED,
            params![
                enrollment_id,
                cert_serial,
                cert_not_after,
                fcc_warnings,
                now_ms,
                id
            ],
            *now_ms,
            &Outcome {
                event: AuditEvent::Deployed,
                fcc_status: Some(0),
                fcc_info: None,
                fcc_warnings,
                detail,
                duration_ms: *duration_ms,
            },
        )
        .and_then(|keys| {
            if *claim {
                super::claims::queue_claim_sqlite(conn, &keys.serial, *now_ms)
                    .map_err(write_error("queueing the cloud claim"))?;
            }
            enqueue(
                conn,
                routes,
                &NewEvent::deployed(&keys, enrollment_id, *now_ms),
            )?;
            Ok(Written::Deployed {
                created_at: keys.created_at,
            })
        }),
        Write::Failed {
            id,
            fcc_status,
            fcc_info,
            fcc_warnings,
            error,
            duration_ms,
            now_ms,
        } => finish_attempt(
            conn,
            head,
            *id,
            "marking the identity failed",
            sql::MARK_FAILED,
            params![fcc_status, fcc_info, fcc_warnings, error, now_ms, id],
            *now_ms,
            &Outcome {
                event: AuditEvent::Failed,
                fcc_status: *fcc_status,
                fcc_info: fcc_info.as_deref(),
                fcc_warnings,
                detail: error,
                duration_ms: *duration_ms,
            },
        )
        .and_then(|keys| {
            enqueue(
                conn,
                routes,
                &NewEvent::failed(&keys, *fcc_status, error, *now_ms),
            )?;
            Ok(Written::Failed)
        }),
        Write::Ahead { id, ahead } => {
            let n = conn
                .prepare_cached(sql::WRITE_AHEAD)
                .and_then(|mut s| {
                    s.execute(params![
                        ahead.enrollment_id,
                        ahead.cert_serial,
                        ahead.cert_not_after,
                        ahead.cert_der,
                        ahead.now_ms,
                        id
                    ])
                })
                .map_err(write_error(
                    "writing the certificate ahead of the injection",
                ))?;
            if n == 0 {
                return Err(StoreError::NotInFlight { id: *id });
            }
            Ok(Written::Ahead)
        }
        Write::Resolve { decision, claim } => {
            let resolution = resolve(conn, routes, head, decision)?;
            if *claim
                && resolution == Resolution::Resolved
                && decision.state == IdentityState::Deployed
            {
                super::claims::queue_claim_sqlite(conn, &decision.serial, decision.now_ms)
                    .map_err(write_error("queueing the cloud claim"))?;
            }
            Ok(Written::Resolved(resolution))
        }
        Write::ClaimDelete {
            enrollment_id,
            serial,
            now_ms,
        } => super::claims::enqueue_claim_delete_sqlite(conn, enrollment_id, serial, *now_ms)
            .map(|()| Written::ClaimDelete)
            .map_err(write_error("queueing a claim deletion")),
        Write::Revoke(order) => revoke(conn, routes, head, order).map(Written::Revoked),
        Write::NextCrlNumber => conn
            .prepare_cached(sql::NEXT_CRL_NUMBER)
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map(Written::CrlNumber)
            .map_err(write_error("taking the next CRL number")),
        Write::Refused {
            keys,
            detail,
            now_ms,
        } => {
            let audit = NewAudit::note(*now_ms, keys, AuditEvent::Refused, Some(detail));
            insert_audit(conn, head, &audit).map(|()| Written::Refused)
        }
        Write::RecoverInterrupted {
            in_doubt,
            error,
            now_ms,
        } => {
            let rows = conn
                .prepare(sql::RECOVER_ALL)
                .and_then(|mut s| {
                    s.query_map(params![in_doubt, error, now_ms], |r| {
                        Ok((audit_keys(r)?, r.get::<_, String>(4)?, r.get(5)?))
                    })?
                    .collect::<Result<Vec<(AuditKeys, String, IdentityState)>, _>>()
                })
                .map_err(write_error("recovering interrupted attempts"))?;
            for (row, last_error, state) in &rows {
                let audit = NewAudit::recovered(*now_ms, row, *state, last_error);
                insert_audit(conn, head, &audit)?;
                if let Some(event) = NewEvent::interrupted(row, *state, last_error, *now_ms) {
                    enqueue(conn, routes, &event)?;
                }
            }
            Ok(Written::Recovered(rows.len() as u64))
        }
        Write::Outbox(o) => outbox(conn, routes, o),
        Write::ReleaseLeases {
            statement,
            owner,
            context,
        } => conn
            .prepare_cached(statement)
            .and_then(|mut st| st.execute(params![owner]))
            .map(|n| Written::Outbox(n as u64))
            .map_err(write_error(context)),
        Write::Claims(c) => claims_write(conn, c),
    }
}

/// Puts `event` into the outbox for every receiver subscribed to it, inside the transaction of
/// `conn` (the writer's batch: the same transaction as the state change it reports). Nothing
/// without receivers. The revocation's write calls it too.
pub(super) fn enqueue(
    conn: &Connection,
    routes: &EventRoutes,
    event: &NewEvent,
) -> Result<u64, StoreError> {
    let Some(rows) = event.rows(routes) else {
        return Ok(0);
    };
    let mut insert = conn
        .prepare_cached(sql::INSERT_DELIVERY)
        .map_err(write_error("writing the webhook outbox"))?;
    for receiver in &rows.receivers {
        insert
            .execute(params![
                rows.event_id,
                receiver,
                event.serial,
                event.event,
                rows.payload,
                event.at_ms
            ])
            .map_err(write_error("writing the webhook outbox"))?;
    }
    Ok(rows.receivers.len() as u64)
}

fn outbox(conn: &Connection, routes: &EventRoutes, o: &OutboxWrite) -> Result<Written, StoreError> {
    match o {
        OutboxWrite::Enqueue(event) => enqueue(conn, routes, event).map(Written::Outbox),
        OutboxWrite::Claim(c) => conn
            .prepare_cached(sql::CLAIM_DELIVERIES_SQLITE)
            .and_then(|mut s| {
                s.query_map(
                    params![
                        c.owner,
                        c.lease_until_ms,
                        c.now_ms,
                        c.receivers_json(),
                        i64::from(c.limit)
                    ],
                    delivery,
                )?
                .collect::<Result<Vec<_>, _>>()
            })
            .map(|mut rows| {
                // RETURNING gives no order: the delivery task starts the oldest first.
                rows.sort_by_key(|d| d.id);
                Written::Claimed(rows)
            })
            .map_err(write_error("claiming webhook deliveries")),
        OutboxWrite::SettleMany(all) => all
            .iter()
            .map(|s| settle_delivery(conn, s).map(|done| done > 0))
            .collect::<Result<Vec<bool>, StoreError>>()
            .map(Written::Settled),
    }
}

/// Records how one attempt of a leased webhook row ended; the rows written (0: the lease was lost).
fn settle_delivery(conn: &Connection, s: &Settle) -> Result<usize, StoreError> {
    match &s.outcome {
        Settlement::Delivered => conn
            .prepare_cached(sql::DELIVERY_DELIVERED)
            .and_then(|mut st| st.execute(params![s.now_ms, s.id, s.owner])),
        Settlement::Failed {
            state,
            next_attempt_ms,
            error,
        } => conn
            .prepare_cached(sql::DELIVERY_FAILED)
            .and_then(|mut st| {
                st.execute(params![
                    state,
                    next_attempt_ms,
                    error,
                    s.now_ms,
                    s.id,
                    s.owner
                ])
            }),
    }
    .map_err(write_error("recording a webhook delivery"))
}

/// The cloud claim sender's writes (`store::claims`), in the writer's transaction.
fn claims_write(conn: &Connection, w: &ClaimsWrite) -> Result<Written, StoreError> {
    match w {
        ClaimsWrite::Settle {
            server,
            now_ms,
            settlements,
        } => {
            let mut st = conn
                .prepare_cached(sql::SETTLE_CLAIM_SQLITE)
                .map_err(write_error("settling cloud claims"))?;
            for s in settlements {
                st.execute(params![
                    s.state,
                    i64::from(s.attempted),
                    s.next_attempt_at,
                    s.last_error,
                    s.cloud_id,
                    now_ms,
                    server,
                    s.id
                ])
                .map_err(write_error("settling cloud claims"))?;
            }
            Ok(Written::Outbox(settlements.len() as u64))
        }
        ClaimsWrite::MarkBulk {
            server,
            task,
            now_ms,
            ids,
        } => {
            let mut st = conn
                .prepare_cached(sql::MARK_BULK_SQLITE)
                .map_err(write_error("recording a bulk upload"))?;
            for id in ids {
                st.execute(params![task, now_ms, server, id])
                    .map_err(write_error("recording a bulk upload"))?;
            }
            Ok(Written::Outbox(ids.len() as u64))
        }
        ClaimsWrite::Retry { state, now_ms } => conn
            .prepare_cached(sql::RETRY_CLAIMS)
            .and_then(|mut st| st.execute(params![now_ms, state]))
            .map(|n| Written::Outbox(n as u64))
            .map_err(write_error("re-queueing cloud claims")),
    }
}

/// A [`Delivery`] from the columns of `sql::delivery_columns`, in order.
fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        receiver: r.get(2)?,
        serial: r.get(3)?,
        event: r.get(4)?,
        payload: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        delivered_at: r.get(12)?,
    })
}

/// The audit row of an attempt's outcome.
/// Moves the in-flight row `id` to its outcome with `update` (an `UPDATE … WHERE id = … AND
/// state = 'in_flight' RETURNING serial, gateway, requester, created_at`) and appends the outcome's
/// audit row. A row that is no longer in flight is [`StoreError::NotInFlight`], with nothing written.
#[allow(clippy::too_many_arguments)] // the parts of one statement and its audit row
fn finish_attempt(
    conn: &Connection,
    head: &mut ChainHead,
    id: i64,
    context: &'static str,
    update: &str,
    params: impl rusqlite::Params,
    at_ms: i64,
    outcome: &Outcome<'_>,
) -> Result<AuditKeys, StoreError> {
    let keys = conn
        .prepare_cached(update)
        .and_then(|mut s| s.query_row(params, audit_keys).optional())
        .map_err(write_error(context))?
        .ok_or(StoreError::NotInFlight { id })?;
    insert_audit(conn, head, &NewAudit::outcome(at_ms, &keys, outcome))?;
    Ok(keys)
}

/// `in_doubt` → `state` for `serial`, audited with who asked; or why not.
fn resolve(
    conn: &Connection,
    routes: &EventRoutes,
    head: &mut ChainHead,
    d: &Decision,
) -> Result<Resolution, StoreError> {
    let resolved = conn
        .prepare_cached(sql::RESOLVE)
        .and_then(|mut s| {
            s.query_row(params![d.state, d.last_error(), d.now_ms, d.serial], |r| {
                Ok((audit_keys(r)?, r.get::<_, Option<String>>(4)?))
            })
            .optional()
        })
        .map_err(write_error("resolving an in-doubt identity"))?;
    let Some((keys, enrollment_id)) = resolved else {
        return Ok(
            match state_of(conn, &d.serial, "reading the identity to resolve")? {
                None => Resolution::Unknown,
                Some(state) => Resolution::NotInDoubt { state },
            },
        );
    };
    enqueue(conn, routes, &d.event(&keys, enrollment_id))?;
    let (keys, detail) = (d.audit_keys(keys), d.detail());
    let audit = NewAudit::note(d.now_ms, &keys, AuditEvent::Resolved, Some(&detail));
    insert_audit(conn, head, &audit)?;
    Ok(Resolution::Resolved)
}

/// The state of `serial` (`None`: no such row), read after a conditional update matched nothing,
/// to say why (`sql::CONFLICT_STATE`, its second column).
fn state_of(
    conn: &Connection,
    serial: &str,
    context: &'static str,
) -> Result<Option<IdentityState>, StoreError> {
    conn.prepare_cached(sql::CONFLICT_STATE)
        .and_then(|mut s| s.query_row(params![serial], |r| r.get(1)).optional())
        .map_err(write_error(context))
}

/// `deployed`/`in_doubt` → `revoked` for `order.serial`, audited with who asked; or why not.
fn revoke(
    conn: &Connection,
    routes: &EventRoutes,
    head: &mut ChainHead,
    order: &RevokeOrder,
) -> Result<RevokeOutcome, StoreError> {
    let row = conn
        .prepare_cached(sql::REVOKE)
        .and_then(|mut s| {
            s.query_row(
                params![
                    order.now_ms,
                    ReasonColumn(order.reason),
                    order.note,
                    order.who,
                    order.serial
                ],
                |r| Ok((audit_keys(r)?, r.get::<_, Option<String>>(4)?, r.get(5)?)),
            )
            .optional()
        })
        .map_err(write_error("revoking an identity"))?;
    let Some((keys, enrollment_id, cert_serial)) = row else {
        return Ok(
            match state_of(conn, &order.serial, "reading the identity to revoke")? {
                None => RevokeOutcome::Unknown,
                Some(state) => RevokeOutcome::NotRevocable { state },
            },
        );
    };
    let revoked = RevokedIdentity {
        enrollment_id,
        cert_serial,
        revoked_at_ms: order.now_ms,
    };
    let (keys, detail) = (order.audit_keys(keys), order.detail(&revoked));
    let audit = NewAudit::note(order.now_ms, &keys, AuditEvent::Revoked, Some(&detail));
    insert_audit(conn, head, &audit)?;
    enqueue(
        conn,
        routes,
        &NewEvent::revoked(&keys, &revoked, order.reason, order.now_ms),
    )?;
    if let Some(enrollment_id) = &revoked.enrollment_id {
        super::claims::enqueue_claim_delete_if_claimed_sqlite(
            conn,
            enrollment_id,
            &keys.serial,
            order.now_ms,
        )
        .map_err(write_error("queueing the deletion of the cloud claim"))?;
    }
    Ok(RevokeOutcome::Revoked(revoked))
}

fn reserve(
    conn: &Connection,
    head: &mut ChainHead,
    a: &NewAttempt,
) -> Result<Reservation, StoreError> {
    let p = &a.params;
    let keys = AuditKeys::of(a);
    let (serial, gateway) = (keys.serial.as_str(), &keys.gateway);
    let key = a.request_key.as_ref().map(|k| k.as_str());
    if let Some(key) = key {
        let owner: String = conn
            .prepare_cached(sql::CLAIM_KEY)
            .and_then(|mut s| s.execute(params![key, serial, a.now_ms]))
            .and_then(|_| {
                conn.prepare_cached(sql::KEY_SERIAL)
                    .and_then(|mut s| s.query_row(params![key], |r| r.get(0)))
            })
            .map_err(write_error("recording the request key"))?;
        if owner != serial {
            let detail = super::key_used_detail(key);
            let audit = NewAudit::note(a.now_ms, &keys, AuditEvent::Conflict, Some(&detail));
            insert_audit(conn, head, &audit)?;
            return Ok(Reservation::KeyUsed);
        }
    }
    // A revoked identity moves into the history before the upsert revives its row.
    conn.prepare_cached(sql::ARCHIVE_REVOKED)
        .and_then(|mut s| s.execute(params![a.now_ms, serial]))
        .map_err(write_error("archiving the revoked identity"))?;
    let id: Option<i64> = conn
        .prepare_cached(sql::RESERVE)
        .and_then(|mut s| {
            s.query_row(
                params![
                    serial,
                    gateway,
                    a.requester,
                    None::<&str>, // server_id: one server per SQLite file
                    p.hardware_version.as_str(),
                    p.radio_config.as_str(),
                    p.led_config.as_str(),
                    p.category.as_str(),
                    p.gateway_services_address.as_str(), // cloud address
                    p.api_address.as_str(),
                    p.gateway_services_address.as_str(),
                    p.verification_key.as_ref().map(|k| k.as_str()),
                    a.now_ms,
                    key,
                    a.order.as_ref().map(|o| o.as_str())
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(write_error("reserving the serial"))?;
    let taken = match id {
        Some(id) => Ok(id),
        None => Err(conn
            .prepare_cached(sql::CONFLICT_STATE)
            .and_then(|mut s| {
                s.query_row(params![serial], |r| {
                    Ok(super::ConflictRow {
                        id: r.get(0)?,
                        state: r.get(1)?,
                        request_id: r.get(2)?,
                        enrollment_id: r.get(3)?,
                    })
                })
            })
            .map_err(write_error("reading the conflicting row"))?),
    };
    let (result, event, detail) = super::reservation_outcome(taken, key);
    insert_audit(
        conn,
        head,
        &NewAudit::note(a.now_ms, &keys, event, detail.as_deref()),
    )?;
    Ok(result)
}

/// The columns an audit row copies from its identity row.
fn audit_keys(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditKeys> {
    Ok(AuditKeys {
        serial: row.get(0)?,
        gateway: row.get(1)?,
        requester: row.get(2)?,
        created_at: row.get(3)?,
    })
}

/// Appends `a` as the next link of the chain after `head`, and moves `head` to it.
fn insert_audit(
    conn: &Connection,
    head: &mut ChainHead,
    a: &NewAudit<'_>,
) -> Result<(), StoreError> {
    // The hash is computed here, on the writer thread, over the row's bytes already in memory.
    let link = a.link(DEFAULT_CHAIN, head);
    let id: i64 = conn
        .prepare_cached(sql::INSERT_AUDIT)
        .and_then(|mut s| {
            s.query_row(
                params![
                    a.at_ms,
                    a.keys.serial,
                    a.keys.gateway,
                    a.keys.requester,
                    a.event,
                    a.fcc_status,
                    a.fcc_info,
                    a.fcc_warnings,
                    a.detail,
                    a.duration_ms,
                    DEFAULT_CHAIN,
                    link.seq,
                    &link.prev_hash[..],
                    &link.hash[..]
                ],
                |r| r.get(0),
            )
        })
        .map_err(write_error("appending to the audit trail"))?;
    *head = ChainHead::after(&link, id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HookEvent;

    fn schema() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!(
            "../../migrations/sqlite/0001_identities_and_audit.sql"
        ))
        .unwrap();
        conn.execute_batch(include_str!(
            "../../migrations/sqlite/0002_audit_by_time.sql"
        ))
        .unwrap();
        conn.execute_batch(include_str!("../../migrations/sqlite/0003_fcc_facts.sql"))
            .unwrap();
        conn.execute_batch(include_str!("../../migrations/sqlite/0004_write_ahead.sql"))
            .unwrap();
        // The later migrations, in order.
        for migration in [
            include_str!("../../migrations/sqlite/0005_revocation.sql"),
            include_str!("../../migrations/sqlite/0006_audit_chain.sql"),
            include_str!("../../migrations/sqlite/0007_claims.sql"),
            include_str!("../../migrations/sqlite/0008_work_orders.sql"),
            include_str!("../../migrations/sqlite/0009_hook_deliveries.sql"),
            include_str!("../../migrations/sqlite/0010_claims_open.sql"),
        ] {
            conn.execute_batch(migration).unwrap();
        }
        conn
    }

    /// The outbox scans read their partial index in due order and stop at the LIMIT: no sort of
    /// the whole backlog (a temporary B-tree) at every round.
    #[test]
    fn outbox_scans_read_their_partial_index_in_order() {
        let conn = schema();
        for (statement, index) in [
            (sql::TAKE_CLAIMS_SQLITE, "claims_open"),
            (sql::CLAIM_DELIVERIES_SQLITE, "hook_deliveries_open"),
        ] {
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
                .unwrap();
            // Unbound parameters are NULL: the plan does not depend on them.
            let mut rows = st.raw_query();
            let mut plan = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                plan.push(row.get::<_, String>(3).unwrap());
            }
            let plan = plan.join("\n");
            assert!(plan.contains(&format!("USING INDEX {index}")), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    fn attempt(serial: &str) -> Write {
        let text = |s: &str| crate::model::FieldText::new(s.to_owned()).unwrap();
        let url = |s: &str| crate::model::HttpUrl::new(s.to_owned()).unwrap();
        Write::Reserve(Box::new(NewAttempt {
            params: crate::model::GatewayParams {
                serial_number: serial.parse().unwrap(),
                gateway: "127.0.0.1:1".parse().unwrap(),
                api_address: url("https://api.example"),
                gateway_services_address: url("https://gw.example"),
                hardware_version: text("hw"),
                radio_config: text("00"),
                led_config: text("01"),
                category: crate::model::Category::Production,
                verification_key: None,
                defaulted: Default::default(),
            },
            requester: "test".to_owned(),
            now_ms: 1,
            request_key: None,
            order: None,
        }))
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn one_batch_keeps_the_good_writes_and_undoes_the_failed_one_alone() {
        let mut conn = schema();
        conn.execute_batch(
            "CREATE TRIGGER refuse_c BEFORE INSERT ON identities WHEN NEW.serial = 'C' \
             BEGIN SELECT RAISE(ABORT, 'CHECK failed: the test refuses C'); END;",
        )
        .unwrap();
        let writes = [
            attempt("A"),
            Write::Failed {
                id: 999,
                fcc_status: None,
                fcc_info: None,
                fcc_warnings: String::new(),
                error: "x".to_owned(),
                duration_ms: 1,
                now_ms: 2,
            },
            // Fails inside the statement (typed parameters cannot break the CHECK constraints
            // any more, so a trigger refuses this one).
            attempt("C"),
            attempt("B"),
            attempt("A"),
        ];
        let mut head = ChainHead::default();
        let results = commit_batch(&mut conn, &EventRoutes::default(), &mut head, writes.iter());
        assert!(matches!(
            results[0],
            Ok(Written::Reservation(Reservation::Reserved { .. }))
        ));
        assert!(
            matches!(results[1], Err(StoreError::NotInFlight { id: 999 })),
            "{:?}",
            results[1]
        );
        let e = results[2].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("reserving the serial") && e.contains("CHECK"),
            "{e}"
        );
        assert!(matches!(
            results[3],
            Ok(Written::Reservation(Reservation::Reserved { .. }))
        ));
        // The second reservation of A sees the first one, committed or not, in the same batch.
        assert_eq!(
            results[4].as_ref().ok(),
            Some(&Written::Reservation(Reservation::Conflict {
                state: IdentityState::InFlight,
                same_key: false,
            }))
        );
        assert_eq!(count(&conn, "SELECT count(*) FROM identities"), 2);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM identities WHERE serial = 'C'"),
            0
        );
        // attempt A, attempt B, conflict A: nothing of the failed writes.
        assert_eq!(count(&conn, "SELECT count(*) FROM audit"), 3);
        assert!(conn.is_autocommit(), "the batch's transaction is closed");
        // The failed writes took their links back: the chain is 1, 2, 3 without a gap.
        assert_eq!(head.seq, 3);
        assert_eq!(
            count(
                &conn,
                "SELECT group_concat(seq) = '1,2,3' FROM (SELECT seq FROM audit ORDER BY id)"
            ),
            1
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM audit a JOIN audit b ON b.seq = a.seq + 1 WHERE b.prev_hash <> a.hash"
            ),
            0
        );
    }

    fn deployed(id: i64) -> Write {
        Write::Deployed {
            id,
            enrollment_id: format!("A-{id}"),
            cert_serial: "01".to_owned(),
            cert_not_after: 2,
            fcc_warnings: String::new(),
            detail: String::new(),
            duration_ms: 1,
            now_ms: 3,
            claim: false,
        }
    }

    /// The outcome and its webhook event are one write: both are kept, or neither.
    #[test]
    fn an_outcome_and_its_outbox_rows_commit_together_or_not_at_all() {
        let mut conn = schema();
        let mut head = ChainHead::default();
        let routes = EventRoutes {
            routes: vec![super::super::EventRoute {
                receiver: "mes".into(),
                events: [HookEvent::Deployed].into(),
            }],
        };
        let reserved = commit_batch(
            &mut conn,
            &routes,
            &mut head,
            [attempt("A"), attempt("B")].iter(),
        );
        assert!(reserved.iter().all(Result::is_ok), "{reserved:?}");
        let results = commit_batch(&mut conn, &routes, &mut head, [deployed(1)].iter());
        assert!(results[0].is_ok(), "{results:?}");
        let (serial, event, state, payload): (String, String, String, String) = conn
            .query_row(
                "SELECT serial, event, state, payload FROM hook_deliveries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (serial.as_str(), event.as_str(), state.as_str()),
            ("A", "deployed", "pending")
        );
        assert!(payload.contains("\"enrollmentID\":\"A-1\""), "{payload}");

        // The outbox refuses the next row: the state change is undone with it.
        conn.execute_batch(
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON hook_deliveries \
             BEGIN SELECT RAISE(ABORT, 'outbox full'); END;",
        )
        .unwrap();
        let results = commit_batch(&mut conn, &routes, &mut head, [deployed(2)].iter());
        let e = results[0].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("webhook outbox") && e.contains("outbox full"),
            "{e}"
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM identities WHERE serial = 'B' AND state = 'in_flight'"
            ),
            1
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM audit WHERE event = 'deployed'"),
            1
        );

        // Without receivers no row is written at all.
        let none = EventRoutes::default();
        let results = commit_batch(&mut conn, &none, &mut head, [deployed(2)].iter());
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(count(&conn, "SELECT count(*) FROM hook_deliveries"), 1);
    }

    /// An attempt the recovery marks `failed` is a `failed` event; one it leaves `in_doubt` is
    /// none (the operator's resolution will be).
    #[test]
    fn recovered_failed_attempts_are_failed_events() {
        let mut conn = schema();
        let routes = EventRoutes {
            routes: vec![super::super::EventRoute {
                receiver: "mes".into(),
                events: [HookEvent::Failed, HookEvent::Deployed].into(),
            }],
        };
        let writes = [
            attempt("A"),
            attempt("B"),
            Write::Ahead {
                id: 2,
                ahead: Box::new(WriteAhead {
                    enrollment_id: "A-2".into(),
                    cert_serial: "02".into(),
                    cert_not_after: 2,
                    cert_der: vec![0x30],
                    now_ms: 2,
                }),
            },
            Write::RecoverInterrupted {
                in_doubt: "in doubt",
                error: "interrupted",
                now_ms: 5,
            },
        ];
        let results = commit_batch(&mut conn, &routes, &mut ChainHead::default(), writes.iter());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let (serial, event, payload): (String, String, String) = conn
            .query_row(
                "SELECT serial, event, payload FROM hook_deliveries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((serial.as_str(), event.as_str()), ("A", "failed"));
        assert!(payload.contains("\"error\":\"interrupted\""), "{payload}");
        assert_eq!(count(&conn, "SELECT count(*) FROM hook_deliveries"), 1);
    }

    #[test]
    fn a_batch_that_cannot_begin_fails_every_write() {
        let mut conn = schema();
        conn.execute_batch("BEGIN").unwrap(); // BEGIN IMMEDIATE inside a transaction fails
        let writes = [attempt("A"), attempt("B")];
        let mut head = ChainHead::default();
        let results = commit_batch(&mut conn, &EventRoutes::default(), &mut head, writes.iter());
        assert_eq!(results.len(), 2);
        for r in &results {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("starting a write transaction"), "{e}");
        }
    }
}
