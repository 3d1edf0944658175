//! PostgreSQL backend: one database shared by any number of pep servers.
//!
//! Everything that must hold across servers is decided by the database, never by a lock in this
//! process: the `UNIQUE (serial)` constraint and `INSERT … ON CONFLICT (serial) DO UPDATE … WHERE
//! state = 'failed'` decide which reservation wins (PostgreSQL serializes concurrent upserts of one
//! key on the row lock and re-checks the `WHERE` on the newest row version), and every state change
//! is one transaction together with its audit row.
//!
//! **In-flight rows belong to a server.** Each reservation records the reserving server's
//! [`StoreOptions::server_id`]. At start a server recovers (marks `failed`, audits `interrupted`)
//! only its *own* in-flight rows — those a previous run of the same server left behind — plus rows
//! of any server in flight for longer than [`StoreOptions::in_flight_lease`]; a background sweep
//! repeats the lease check, so the serials of a server that died and never came back become
//! retryable without anyone restarting. A live server's running attempts are never touched.
//!
//! **Each server appends to its own audit chain** (store/chain.rs, `server_id`), so servers never
//! wait for each other. Within a server, the chain's head is in memory and one lock orders the
//! appends: a transaction takes it after its row updates, right before its audit insert, and holds
//! it through its commit. So the chain's order is the commit order, and a transaction that rolls
//! back leaves no gap. The lease sweep's rows (other servers' expired attempts) go to the chain of
//! the server that sweeps: it is their writer.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::audit_log::{backfill_postgres, head_postgres};
use super::chain::ChainHead;
use super::outbox::{EventRoutes, NewEvent};
use super::{
    AuditEvent, AuditKeys, ConflictRow, Decision, DeployedOutcome, FailedOutcome, IN_DOUBT,
    INTERRUPTED, IdentityState, NewAttempt, NewAudit, Outcome, ReasonColumn, Reservation,
    Resolution, RevokeOrder, RevokeOutcome, RevokedIdentity, RevokedRow, StoreError, WriteAhead,
    join_warnings, now_ms, q, reservation_outcome, sql,
};

/// Default connections per server: PostgreSQL runs writes of different serials in parallel.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default lease: attempts are bounded by the request deadline (default 120 s), so an attempt in
/// flight for 20 minutes belongs to a server that is gone.
pub const DEFAULT_IN_FLIGHT_LEASE: Duration = Duration::from_secs(20 * 60);
/// Error text stored for attempts whose lease expired.
const EXPIRED: &str = "interrupted: the attempt stayed in flight longer than the lease (its server \
                       is gone); the gateway may hold a partial configuration, provision it again";

/// Options of a store shared by several servers (used by PostgreSQL; SQLite ignores them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// This server instance, stable across its restarts and different from every other server on
    /// the same database (default: the host name; `pep-server` uses `server_id` of `pep.toml`, or
    /// host name + listen address).
    pub server_id: String,
    /// How long an attempt may stay in flight before any server declares it interrupted. Must be
    /// well above the longest possible attempt (the request deadline).
    pub in_flight_lease: Duration,
    /// Connections this server opens at most (PostgreSQL's own `max_connections`, 100 by default,
    /// must cover every server's pool).
    pub max_connections: u32,
    /// How durable a commit is before it is acknowledged (`[store] durability`; both backends).
    pub durability: super::Durability,
    /// The webhook receivers (`[[hooks.events]]`; both backends): each outcome puts its event
    /// into their outbox in its own transaction. Empty (default): no outbox row is written.
    pub event_routes: EventRoutes,
    /// Queue a cloud claim in the transaction of each deployment (`[cloud] mode` not `off`; both
    /// backends).
    pub claims: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            server_id: default_server_id(),
            in_flight_lease: DEFAULT_IN_FLIGHT_LEASE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            durability: super::Durability::default(),
            event_routes: EventRoutes::default(),
            claims: false,
        }
    }
}

/// The host name (from the kernel), or `localhost` when it cannot be read.
pub fn default_server_id() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Aborts the lease sweep when the last clone of the store is dropped.
#[derive(Debug)]
struct SweepGuard(tokio::task::JoinHandle<()>);

impl Drop for SweepGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This server's audit chain: its head, `None` after a failure left it unknown (re-read from the
/// database before the next append). The lock is held from a transaction's audit insert through
/// its commit.
#[derive(Debug)]
struct Chain {
    head: tokio::sync::Mutex<Option<ChainHead>>,
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: Arc<StoreOptions>,
    chain: Arc<Chain>,
    sweep: Arc<SweepGuard>,
}

/// Which in-flight rows a recovery takes.
#[derive(Clone, Copy)]
enum Recover {
    /// This server's rows (any age) and everybody's expired rows.
    OwnAndExpired,
    /// Expired rows only (the periodic sweep, while this server's own attempts run).
    Expired,
}

impl PostgresStore {
    /// Connects, runs the migrations (serialized across servers by an advisory lock), recovers this
    /// server's interrupted attempts and expired ones, and starts the lease sweep.
    pub async fn open(url: &str, options: StoreOptions) -> Result<PostgresStore, StoreError> {
        let open_err = |source| StoreError::Open {
            url: redact(url),
            source,
        };
        let connect: PgConnectOptions = url.parse().map_err(open_err)?;
        let connect = connect.application_name("pep-server");
        // One direct connection first: a wrong host, user or password fails at once with
        // PostgreSQL's own message, instead of the pool retrying until its acquire timeout.
        let probe = PgConnection::connect_with(&connect)
            .await
            .map_err(open_err)?;
        let _ = probe.close().await;
        let durability = options.durability;
        let pool = PgPoolOptions::new()
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // `synchronous_commit = off` (for the server, database or role) acknowledges a
                    // commit before it is on disk; this server's sessions never run so with
                    // `durability = "full"`. A stronger setting (remote_write, remote_apply) stays.
                    if durability == super::Durability::Full {
                        sqlx::query(super::sql::PG_SYNCHRONOUS_COMMIT_NOT_OFF)
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        backfill_postgres(&pool).await?;
        // This server is the only writer of its chain: its head, read once, stays in memory.
        let head = head_postgres(&pool, &options.server_id).await?;
        let chain = Arc::new(Chain {
            head: tokio::sync::Mutex::new(Some(head)),
        });
        let options = Arc::new(options);
        let sweep = tokio::spawn(sweep_loop(
            pool.clone(),
            Arc::clone(&options),
            Arc::clone(&chain),
        ));
        let store = PostgresStore {
            pool,
            options,
            chain,
            sweep: Arc::new(SweepGuard(sweep)),
        };
        let synchronous_commit = store.synchronous_commit().await?;
        tracing::info!(
            durability = store.options.durability.as_str(),
            %synchronous_commit,
            "PostgreSQL commits"
        );
        let recovered = store.recover(Recover::OwnAndExpired).await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                server_id = %store.options.server_id,
                "marked attempts left in flight by a previous run (or expired) as failed"
            );
        }
        Ok(store)
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The `synchronous_commit` this server's sessions run with (`on` or stronger with
    /// `durability = "full"`); logged at start-up.
    pub async fn synchronous_commit(&self) -> Result<String, StoreError> {
        sqlx::query_scalar(super::sql::PG_SHOW_SYNCHRONOUS_COMMIT)
            .fetch_one(&self.pool)
            .await
            .map_err(super::q("reading synchronous_commit"))
    }

    pub(super) async fn reserve(&self, a: &NewAttempt) -> Result<Reservation, StoreError> {
        let p = &a.params;
        let keys = AuditKeys::of(a);
        let (serial, gateway) = (keys.serial.as_str(), &keys.gateway);
        let key = a.request_key.as_ref().map(|k| k.as_str());
        let mut tx = self.begin().await?;
        if let Some(key) = key {
            // The key's primary key decides between servers: a concurrent claim of the same key
            // waits for the first one's commit, then does nothing and reads its serial.
            sqlx::query(sql::CLAIM_KEY)
                .bind(key)
                .bind(serial)
                .bind(a.now_ms)
                .execute(&mut *tx)
                .await
                .map_err(q("recording the request key"))?;
            let owner: String = sqlx::query_scalar(sql::KEY_SERIAL)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(q("reading the request key"))?;
            if owner != serial {
                let detail = super::key_used_detail(key);
                let audit = NewAudit::note(a.now_ms, &keys, AuditEvent::Conflict, Some(&detail));
                self.append_and_commit(tx, &[audit], "committing the refusal")
                    .await?;
                return Ok(Reservation::KeyUsed);
            }
        }
        // A revoked identity moves into the history before the upsert revives its row (a
        // concurrent archive of the same certificate waits on its UNIQUE entry, then does
        // nothing).
        sqlx::query(sql::ARCHIVE_REVOKED)
            .bind(a.now_ms)
            .bind(serial)
            .execute(&mut *tx)
            .await
            .map_err(q("archiving the revoked identity"))?;
        // Concurrent upserts of one serial wait for each other's row lock; the loser re-evaluates
        // the WHERE on the winner's row.
        let id: Option<i64> = sqlx::query_scalar(sql::RESERVE)
            .bind(serial)
            .bind(gateway)
            .bind(&a.requester)
            .bind(&self.options.server_id)
            .bind(p.hardware_version.as_str())
            .bind(p.radio_config.as_str())
            .bind(p.led_config.as_str())
            .bind(p.category.as_str())
            .bind(p.gateway_services_address.as_str()) // cloud address
            .bind(p.api_address.as_str())
            .bind(p.gateway_services_address.as_str())
            .bind(p.verification_key.as_ref().map(|k| k.as_str()))
            .bind(a.now_ms)
            .bind(key)
            .bind(a.order.as_ref().map(|o| o.as_str()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("reserving the serial"))?;

        let taken = match id {
            Some(id) => Ok(id),
            None => {
                // READ COMMITTED: this statement sees the committed row that blocked the upsert.
                let row: Option<ConflictRow> = sqlx::query_as(sql::CONFLICT_STATE)
                    .bind(serial)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(q("reading the conflicting row"))?;
                Err(row.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "serial `{serial}` conflicted but has no row (rows are never deleted)"
                    ))
                })?)
            }
        };
        let (result, event, detail) = reservation_outcome(taken, key);
        let audit = NewAudit::note(a.now_ms, &keys, event, detail.as_deref());
        self.append_and_commit(tx, &[audit], "committing the reservation")
            .await?;
        Ok(result)
    }

    pub(super) async fn mark_deployed(
        &self,
        id: i64,
        o: &DeployedOutcome<'_>,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let warnings = join_warnings(o.fcc_warnings);
        let update = sqlx::query_as(sql::MARK_DEPLOYED)
            .bind(o.enrollment_id)
            .bind(o.cert_serial)
            .bind(o.cert_not_after)
            .bind(&warnings)
            .bind(now)
            .bind(id);
        let detail = o.detail();
        let keys = self
            .finish_attempt(
                id,
                now,
                update,
                &o.outcome(&warnings, &detail),
                "marking the identity deployed",
                |keys| NewEvent::deployed(keys, o.enrollment_id, now),
            )
            .await?;
        Ok(keys.created_at)
    }

    pub(super) async fn mark_failed(
        &self,
        id: i64,
        o: &FailedOutcome<'_>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let warnings = join_warnings(o.fcc_warnings);
        let update = sqlx::query_as(sql::MARK_FAILED)
            .bind(o.fcc_status.map(i64::from))
            .bind(o.fcc_info)
            .bind(&warnings)
            .bind(o.error)
            .bind(now)
            .bind(id);
        self.finish_attempt(
            id,
            now,
            update,
            &o.outcome(&warnings),
            "marking the identity failed",
            |keys| NewEvent::failed(keys, o.fcc_status, o.error, now),
        )
        .await
        .map(drop)
    }

    /// Runs `update` (a `MARK_*` statement returning the row's [`AuditKeys`]), audits `outcome`
    /// and puts its webhook `event` into the outbox, in one transaction. `state = 'in_flight'` under the row lock: if another server
    /// expired this attempt in the meantime, nothing is updated and the caller learns it
    /// (NotInFlight).
    async fn finish_attempt(
        &self,
        id: i64,
        now: i64,
        update: sqlx::query::QueryAs<'_, sqlx::Postgres, AuditKeys, sqlx::postgres::PgArguments>,
        outcome: &Outcome<'_>,
        context: &'static str,
        event: impl FnOnce(&AuditKeys) -> NewEvent,
    ) -> Result<AuditKeys, StoreError> {
        let mut tx = self.begin().await?;
        let keys = update
            .fetch_optional(&mut *tx)
            .await
            .map_err(q(context))?
            .ok_or(StoreError::NotInFlight { id })?;
        enqueue(&mut tx, &self.options.event_routes, &event(&keys)).await?;
        if outcome.event == AuditEvent::Deployed && self.options.claims {
            super::claims::queue_claim_postgres(&mut tx, &keys.serial, now).await?;
        }
        let context = match outcome.event {
            AuditEvent::Deployed => "committing the deployment",
            _ => "committing the failure",
        };
        self.append_and_commit(tx, &[NewAudit::outcome(now, &keys, outcome)], context)
            .await?;
        Ok(keys)
    }

    pub(super) async fn write_ahead(&self, id: i64, a: WriteAhead) -> Result<(), StoreError> {
        // One statement, its own transaction; `updated_at` also renews the attempt's lease.
        let done = sqlx::query(sql::WRITE_AHEAD)
            .bind(&a.enrollment_id)
            .bind(&a.cert_serial)
            .bind(a.cert_not_after)
            .bind(&a.cert_der)
            .bind(a.now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("writing the certificate ahead of the injection"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotInFlight { id });
        }
        Ok(())
    }

    /// Runs one of the outboxes' lease releases (`$1`: the server or owner whose leases end):
    /// how many rows it freed.
    pub(super) async fn release_leases(
        &self,
        statement: &'static str,
        owner: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        sqlx::query(statement)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
    }

    pub(super) async fn resolve(&self, d: &Decision) -> Result<Resolution, StoreError> {
        let mut tx = self.begin().await?;
        let resolved: Option<ResolvedRow> = sqlx::query_as(sql::RESOLVE)
            .bind(d.state)
            .bind(d.last_error())
            .bind(d.now_ms)
            .bind(&d.serial)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("resolving an in-doubt identity"))?;
        let Some(ResolvedRow {
            keys,
            enrollment_id,
        }) = resolved
        else {
            return Ok(
                match state_of(&mut tx, &d.serial, "reading the identity to resolve").await? {
                    None => Resolution::Unknown,
                    Some(state) => Resolution::NotInDoubt { state },
                },
            );
        };
        let event = d.event(&keys, enrollment_id);
        enqueue(&mut tx, &self.options.event_routes, &event).await?;
        let (keys, detail) = (d.audit_keys(keys), d.detail());
        let audit = NewAudit::note(d.now_ms, &keys, AuditEvent::Resolved, Some(&detail));
        if d.state == IdentityState::Deployed && self.options.claims {
            super::claims::queue_claim_postgres(&mut tx, &d.serial, d.now_ms).await?;
        }
        self.append_and_commit(tx, &[audit], "committing the resolution")
            .await?;
        Ok(Resolution::Resolved)
    }

    pub(super) async fn revoke(&self, o: &RevokeOrder) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<RevokedRow> = sqlx::query_as(sql::REVOKE)
            .bind(o.now_ms)
            .bind(ReasonColumn(o.reason))
            .bind(&o.note)
            .bind(&o.who)
            .bind(&o.serial)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("revoking an identity"))?;
        let Some(row) = row else {
            return Ok(
                match state_of(&mut tx, &o.serial, "reading the identity to revoke").await? {
                    None => RevokeOutcome::Unknown,
                    Some(state) => RevokeOutcome::NotRevocable { state },
                },
            );
        };
        let revoked = RevokedIdentity {
            enrollment_id: row.enrollment_id,
            cert_serial: row.cert_serial,
            revoked_at_ms: o.now_ms,
        };
        let (keys, detail) = (o.audit_keys(row.keys), o.detail(&revoked));
        let audit = NewAudit::note(o.now_ms, &keys, AuditEvent::Revoked, Some(&detail));
        enqueue(
            &mut tx,
            &self.options.event_routes,
            &NewEvent::revoked(&keys, &revoked, o.reason, o.now_ms),
        )
        .await?;
        if let Some(enrollment_id) = &revoked.enrollment_id {
            super::claims::enqueue_claim_delete_if_claimed_postgres(
                &mut tx,
                enrollment_id,
                &keys.serial,
                o.now_ms,
            )
            .await?;
        }
        self.append_and_commit(tx, &[audit], "committing the revocation")
            .await?;
        Ok(RevokeOutcome::Revoked(revoked))
    }

    pub(super) async fn next_crl_number(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar(sql::NEXT_CRL_NUMBER)
            .fetch_one(&self.pool)
            .await
            .map_err(q("taking the next CRL number"))
    }

    /// Audits a refused gateway address (`refused`): one audit row, no identity row.
    pub(super) async fn audit_refused(
        &self,
        keys: &AuditKeys,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let audit = NewAudit::note(now_ms, keys, AuditEvent::Refused, Some(detail));
        let tx = self.begin().await?;
        self.append_and_commit(tx, &[audit], "committing the refusal")
            .await
    }

    /// A transaction on the pool (every write of this backend is one).
    pub(super) async fn begin(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool.begin().await.map_err(q("starting a transaction"))
    }

    /// Appends `audits` to this server's chain in `tx` and commits it (see the module
    /// documentation: the chain's lock is held through the commit).
    async fn append_and_commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        audits: &[NewAudit<'_>],
        context: &'static str,
    ) -> Result<(), StoreError> {
        append_and_commit(
            &self.pool,
            &self.chain,
            &self.options.server_id,
            tx,
            audits,
            context,
        )
        .await
    }

    /// Marks failed this server's in-flight rows and every row in flight for longer than the lease.
    /// Rows of other live servers are left alone, so this is safe while they run — but not while
    /// *this* server has attempts running.
    pub(super) async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        self.recover(Recover::OwnAndExpired).await
    }

    /// Marks failed every row in flight for longer than the lease (safe at any time).
    pub async fn recover_expired(&self) -> Result<u64, StoreError> {
        self.recover(Recover::Expired).await
    }

    async fn recover(&self, which: Recover) -> Result<u64, StoreError> {
        recover(&self.pool, &self.options, &self.chain, which).await
    }

    pub(super) async fn enqueue_event(&self, event: &NewEvent) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = enqueue(&mut tx, &self.options.event_routes, event).await?;
        tx.commit()
            .await
            .map_err(q("committing the webhook outbox"))?;
        Ok(n)
    }

    pub(super) async fn close(&self) {
        self.sweep.0.abort();
        self.pool.close().await;
    }
}

/// The recovery transaction (shared by [`PostgresStore`] and the background sweep).
async fn recover(
    pool: &PgPool,
    options: &StoreOptions,
    chain: &Chain,
    which: Recover,
) -> Result<u64, StoreError> {
    let now = now_ms();
    let lease_ms = i64::try_from(options.in_flight_lease.as_millis()).unwrap_or(i64::MAX);
    let expired_before = now.saturating_sub(lease_ms);
    let mut tx = pool.begin().await.map_err(q("starting a transaction"))?;
    let own = match which {
        Recover::OwnAndExpired => Some(options.server_id.as_str()),
        Recover::Expired => None,
    };
    let rows: Vec<RecoveredRow> = sqlx::query_as(sql::RECOVER_OWN_AND_EXPIRED)
        .bind(IN_DOUBT)
        .bind(own)
        .bind(INTERRUPTED)
        .bind(EXPIRED)
        .bind(now)
        .bind(expired_before)
        .fetch_all(&mut *tx)
        .await
        .map_err(q("recovering interrupted attempts"))?;
    for row in &rows {
        if let Some(event) = NewEvent::interrupted(&row.keys, row.state, &row.last_error, now) {
            enqueue(&mut tx, &options.event_routes, &event).await?;
        }
    }
    let audits: Vec<NewAudit<'_>> = rows
        .iter()
        .map(|row| NewAudit::recovered(now, &row.keys, row.state, &row.last_error))
        .collect();
    append_and_commit(
        pool,
        chain,
        &options.server_id,
        tx,
        &audits,
        "committing the recovery",
    )
    .await?;
    Ok(rows.len() as u64)
}

/// Every lease/4 (between 1 s and 5 min), expires attempts whose server is gone.
async fn sweep_loop(pool: PgPool, options: Arc<StoreOptions>, chain: Arc<Chain>) {
    let period =
        (options.in_flight_lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; open() has just recovered
    loop {
        ticker.tick().await;
        if pool.is_closed() {
            return;
        }
        match recover(&pool, &options, &chain, Recover::Expired).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                expired = n,
                "marked attempts in flight longer than the lease as failed (or in_doubt when their identity may have reached FCC)"
            ),
            Err(e) => tracing::warn!(error = %e, "lease sweep failed; retrying later"),
        }
    }
}

/// The URL without its password (for error messages).
pub(super) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Cannot fail for a URL that already has a password (it has a host).
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The columns an audit row copies from its identity row (`RETURNING` of the updates).
/// A resolved row (`sql::RESOLVE`).
#[derive(sqlx::FromRow)]
struct ResolvedRow {
    #[sqlx(flatten)]
    keys: AuditKeys,
    enrollment_id: Option<String>,
}

/// A row the recovery marked failed.
#[derive(sqlx::FromRow)]
struct RecoveredRow {
    #[sqlx(flatten)]
    keys: AuditKeys,
    last_error: String,
    state: IdentityState,
}

/// Appends `audits` (in order) to chain `server_id` inside `tx`, then commits `tx`. The chain's
/// lock is taken here — after the transaction's row updates, so a holder never waits for a row
/// lock another waiter holds — and released after the commit. Any failure leaves the head unknown
/// (a commit that failed may still have happened): the next append re-reads it.
async fn append_and_commit(
    pool: &PgPool,
    chain: &Chain,
    server_id: &str,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    audits: &[NewAudit<'_>],
    context: &'static str,
) -> Result<(), StoreError> {
    let mut guard = chain.head.lock().await;
    let mut head = match *guard {
        Some(head) => head,
        None => head_postgres(pool, server_id).await?,
    };
    *guard = None;
    for a in audits {
        let link = a.link(server_id, &head);
        let id = insert_audit_query!(a, server_id, &link)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("appending to the audit trail"))?;
        head = ChainHead::after(&link, id);
    }
    tx.commit().await.map_err(q(context))?;
    *guard = Some(head);
    Ok(())
}

/// Puts `event` into the outbox for every receiver subscribed to it, inside `tx` (the
/// transaction of the state change it reports). Nothing without receivers. The revocation's
/// transaction calls it too.
pub(super) async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    routes: &EventRoutes,
    event: &NewEvent,
) -> Result<u64, StoreError> {
    let Some(rows) = event.rows(routes) else {
        return Ok(0);
    };
    for receiver in &rows.receivers {
        sqlx::query(sql::INSERT_DELIVERY)
            .bind(&rows.event_id)
            .bind(*receiver)
            .bind(&event.serial)
            .bind(event.event)
            .bind(&rows.payload)
            .bind(event.at_ms)
            .execute(&mut **tx)
            .await
            .map_err(q("writing the webhook outbox"))?;
    }
    Ok(rows.receivers.len() as u64)
}

/// The state of `serial` (`None`: no such row), read in `tx` after a conditional update matched
/// nothing, to say why (`sql::CONFLICT_STATE`).
async fn state_of(
    tx: &mut PgConnection,
    serial: &str,
    context: &'static str,
) -> Result<Option<IdentityState>, StoreError> {
    let row: Option<ConflictRow> = sqlx::query_as(sql::CONFLICT_STATE)
        .bind(serial)
        .fetch_optional(tx)
        .await
        .map_err(q(context))?;
    Ok(row.map(|r| r.state))
}
