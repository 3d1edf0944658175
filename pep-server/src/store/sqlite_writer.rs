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

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{IdentityState, Reservation, StoreError};

/// Most writes one transaction carries. Bounds how long a caller waits behind others' writes.
pub(super) const MAX_BATCH: usize = 256;

/// A write, with everything it needs owned (it crosses to the writer thread).
#[derive(Debug)]
pub(super) enum Write {
    /// Insert the serial as `in_flight`, or revive it from `failed`; audit `attempt` or `conflict`.
    Reserve(Box<Attempt>),
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
    },
    /// `in_flight` → `failed`; audit `failed`.
    Failed {
        id: i64,
        fcc_status: Option<u32>,
        fcc_warnings: String,
        error: String,
        duration_ms: i64,
        now_ms: i64,
    },
    /// Every `in_flight` row → `failed` with `error`; audit each as `interrupted`.
    RecoverInterrupted { error: &'static str, now_ms: i64 },
}

/// An owned [`super::NewAttempt`].
#[derive(Debug)]
pub(super) struct Attempt {
    pub serial: String,
    pub gateway: String,
    pub requester: String,
    pub hardware_version: String,
    pub radio_config: String,
    pub led_config: String,
    pub category: String,
    pub cloud_address: String,
    pub api_address: String,
    pub gateway_services_address: String,
    pub verification_key: Option<String>,
    pub now_ms: i64,
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
    /// Of [`Write::RecoverInterrupted`]: rows recovered.
    Recovered(u64),
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
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> Result<SqliteWriter, StoreError> {
        let open = write_error("opening the writer connection");
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&open)?;
        conn.busy_timeout(busy_timeout).map_err(&open)?;
        // The same settings as the pool's connections (the journal mode is per database and
        // already WAL; synchronous and foreign keys are per connection).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(&open)?;
        conn.set_prepared_statement_cache_capacity(16);
        let (commands, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("pep-sqlite-writer".to_owned())
            .spawn(move || run(conn, queue))
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
fn run(mut conn: Connection, mut queue: mpsc::UnboundedReceiver<Command>) {
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
            let results = commit_batch(&mut conn, batch.iter().map(|(w, _)| w));
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

/// Runs `writes` in one transaction, each in its own savepoint. One result per write, in order.
fn commit_batch<'a>(
    conn: &mut Connection,
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
    let mut results = Vec::with_capacity(n);
    for write in writes {
        let result = run_cached(conn, "SAVEPOINT write")
            .map_err(write_error("starting a savepoint"))
            .and_then(|()| apply(conn, write));
        let end = if result.is_ok() {
            run_cached(conn, "RELEASE write")
        } else {
            // Undo this write alone; the others of the batch stay.
            run_cached(conn, "ROLLBACK TO write").and_then(|()| run_cached(conn, "RELEASE write"))
        };
        if let Err(e) = end {
            let _ = conn.execute_batch("ROLLBACK");
            return fail_all("ending a savepoint", e);
        }
        results.push(result);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return fail_all("committing", e);
    }
    results
}

/// Runs a statement without parameters or rows from the statement cache (parsed once, not per
/// write: the savepoint statements run twice per write).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn apply(conn: &Connection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::Reserve(a) => reserve(conn, a).map(Written::Reservation),
        Write::Deployed {
            id,
            enrollment_id,
            cert_serial,
            cert_not_after,
            fcc_warnings,
            detail,
            duration_ms,
            now_ms,
        } => finish_attempt(
            conn,
            *id,
            "marking the identity deployed",
            "UPDATE identities SET state = 'deployed', enrollment_id = ?1, cert_serial = ?2, \
                 cert_not_after = ?3, fcc_status = 0, fcc_warnings = ?4, last_error = NULL, \
                 updated_at = ?5 \
             WHERE id = ?6 AND state = 'in_flight' \
             RETURNING serial, gateway, requester, created_at",
            params![
                enrollment_id,
                cert_serial,
                cert_not_after,
                fcc_warnings,
                now_ms,
                id
            ],
            Outcome {
                at_ms: *now_ms,
                event: "deployed",
                fcc_status: Some(0),
                detail,
                duration_ms: *duration_ms,
            },
        )
        .map(|keys| Written::Deployed {
            created_at: keys.created_at,
        }),
        Write::Failed {
            id,
            fcc_status,
            fcc_warnings,
            error,
            duration_ms,
            now_ms,
        } => finish_attempt(
            conn,
            *id,
            "marking the identity failed",
            "UPDATE identities SET state = 'failed', fcc_status = ?1, fcc_warnings = ?2, \
                 last_error = ?3, updated_at = ?4 \
             WHERE id = ?5 AND state = 'in_flight' \
             RETURNING serial, gateway, requester, created_at",
            params![fcc_status, fcc_warnings, error, now_ms, id],
            Outcome {
                at_ms: *now_ms,
                event: "failed",
                fcc_status: *fcc_status,
                detail: error,
                duration_ms: *duration_ms,
            },
        )
        .map(|_| Written::Failed),
        Write::RecoverInterrupted { error, now_ms } => {
            let rows = conn
                .prepare(
                    "UPDATE identities SET state = 'failed', last_error = ?1, updated_at = ?2 \
                     WHERE state = 'in_flight' \
                     RETURNING serial, gateway, requester, created_at",
                )
                .and_then(|mut s| {
                    s.query_map(params![error, now_ms], audit_keys)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(write_error("recovering interrupted attempts"))?;
            for row in &rows {
                insert_audit(
                    conn,
                    &AuditRow {
                        at_ms: *now_ms,
                        keys: row,
                        event: "interrupted",
                        fcc_status: None,
                        detail: Some(error),
                        duration_ms: Some(now_ms.saturating_sub(row.created_at)),
                    },
                )?;
            }
            Ok(Written::Recovered(rows.len() as u64))
        }
    }
}

/// The audit row of an attempt's outcome.
struct Outcome<'a> {
    at_ms: i64,
    event: &'static str,
    fcc_status: Option<u32>,
    detail: &'a str,
    duration_ms: i64,
}

/// Moves the in-flight row `id` to its outcome with `update` (an `UPDATE … WHERE id = … AND
/// state = 'in_flight' RETURNING serial, gateway, requester, created_at`) and appends the outcome's
/// audit row. A row that is no longer in flight is [`StoreError::NotInFlight`], with nothing written.
fn finish_attempt(
    conn: &Connection,
    id: i64,
    context: &'static str,
    update: &str,
    params: impl rusqlite::Params,
    outcome: Outcome<'_>,
) -> Result<AuditKeys, StoreError> {
    let keys = conn
        .prepare_cached(update)
        .and_then(|mut s| s.query_row(params, audit_keys).optional())
        .map_err(write_error(context))?
        .ok_or(StoreError::NotInFlight { id })?;
    insert_audit(
        conn,
        &AuditRow {
            at_ms: outcome.at_ms,
            keys: &keys,
            event: outcome.event,
            fcc_status: outcome.fcc_status,
            detail: Some(outcome.detail),
            duration_ms: Some(outcome.duration_ms),
        },
    )?;
    Ok(keys)
}

fn reserve(conn: &Connection, a: &Attempt) -> Result<Reservation, StoreError> {
    // The UNIQUE(serial) constraint decides: a new serial is inserted, a failed one is revived,
    // a deployed or in-flight one is left alone (no row returned).
    let id: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO identities (serial, state, gateway, requester, hardware_version, radio_config, \
                 led_config, category, cloud_address, api_address, gateway_services_address, \
                 verification_key, attempts, created_at, updated_at) \
             VALUES (?1, 'in_flight', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?12) \
             ON CONFLICT(serial) DO UPDATE SET state = 'in_flight', gateway = excluded.gateway, \
                 requester = excluded.requester, hardware_version = excluded.hardware_version, \
                 radio_config = excluded.radio_config, led_config = excluded.led_config, \
                 category = excluded.category, cloud_address = excluded.cloud_address, \
                 api_address = excluded.api_address, \
                 gateway_services_address = excluded.gateway_services_address, \
                 verification_key = excluded.verification_key, enrollment_id = NULL, \
                 cert_serial = NULL, cert_not_after = NULL, fcc_status = NULL, fcc_warnings = '', \
                 last_error = NULL, attempts = identities.attempts + 1, \
                 created_at = excluded.created_at, updated_at = excluded.updated_at \
             WHERE identities.state = 'failed' \
             RETURNING id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    a.serial,
                    a.gateway,
                    a.requester,
                    a.hardware_version,
                    a.radio_config,
                    a.led_config,
                    a.category,
                    a.cloud_address,
                    a.api_address,
                    a.gateway_services_address,
                    a.verification_key,
                    a.now_ms
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(write_error("reserving the serial"))?;
    let (result, event, detail) = match id {
        Some(id) => (Reservation::Reserved { id }, "attempt", None),
        None => {
            let state: String = conn
                .prepare_cached("SELECT state FROM identities WHERE serial = ?1")
                .and_then(|mut s| s.query_row(params![a.serial], |r| r.get(0)))
                .map_err(write_error("reading the conflicting row"))?;
            let state = IdentityState::parse(&state)?;
            (
                Reservation::Conflict { state },
                "conflict",
                Some(format!("serial is {state}")),
            )
        }
    };
    let keys = AuditKeys {
        serial: a.serial.clone(),
        gateway: a.gateway.clone(),
        requester: a.requester.clone(),
        created_at: a.now_ms,
    };
    insert_audit(
        conn,
        &AuditRow {
            at_ms: a.now_ms,
            keys: &keys,
            event,
            fcc_status: None,
            detail: detail.as_deref(),
            duration_ms: None,
        },
    )?;
    Ok(result)
}

/// The columns an audit row copies from its identity row.
struct AuditKeys {
    serial: String,
    gateway: String,
    requester: String,
    created_at: i64,
}

fn audit_keys(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditKeys> {
    Ok(AuditKeys {
        serial: row.get(0)?,
        gateway: row.get(1)?,
        requester: row.get(2)?,
        created_at: row.get(3)?,
    })
}

struct AuditRow<'a> {
    at_ms: i64,
    keys: &'a AuditKeys,
    event: &'a str,
    fcc_status: Option<u32>,
    detail: Option<&'a str>,
    duration_ms: Option<i64>,
}

fn insert_audit(conn: &Connection, a: &AuditRow<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.at_ms,
            a.keys.serial,
            a.keys.gateway,
            a.keys.requester,
            a.event,
            a.fcc_status,
            a.detail,
            a.duration_ms
        ])
    })
    .map_err(write_error("appending to the audit trail"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        conn
    }

    fn attempt(serial: &str) -> Write {
        Write::Reserve(Box::new(Attempt {
            serial: serial.to_owned(),
            gateway: "127.0.0.1:1".to_owned(),
            requester: "test".to_owned(),
            hardware_version: "hw".to_owned(),
            radio_config: "00".to_owned(),
            led_config: "01".to_owned(),
            category: "production".to_owned(),
            cloud_address: "https://gw.example".to_owned(),
            api_address: "https://api.example".to_owned(),
            gateway_services_address: "https://gw.example".to_owned(),
            verification_key: None,
            now_ms: 1,
        }))
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn one_batch_keeps_the_good_writes_and_undoes_the_failed_one_alone() {
        let mut conn = schema();
        let writes = [
            attempt("A"),
            Write::Failed {
                id: 999,
                fcc_status: None,
                fcc_warnings: String::new(),
                error: "x".to_owned(),
                duration_ms: 1,
                now_ms: 2,
            },
            // Fails inside the statement: the category CHECK constraint.
            Write::Reserve(Box::new(Attempt {
                category: "neither".to_owned(),
                ..match attempt("C") {
                    Write::Reserve(a) => *a,
                    _ => unreachable!(),
                }
            })),
            attempt("B"),
            attempt("A"),
        ];
        let results = commit_batch(&mut conn, writes.iter());
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
                state: IdentityState::InFlight
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
    }

    #[test]
    fn a_batch_that_cannot_begin_fails_every_write() {
        let mut conn = schema();
        conn.execute_batch("BEGIN").unwrap(); // BEGIN IMMEDIATE inside a transaction fails
        let writes = [attempt("A"), attempt("B")];
        let results = commit_batch(&mut conn, writes.iter());
        assert_eq!(results.len(), 2);
        for r in &results {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("starting a write transaction"), "{e}");
        }
    }
}
