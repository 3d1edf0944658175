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

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

use super::{
    AuditEntry, DeployedOutcome, FailedOutcome, IdentityDetail, IdentityRecord, IdentityState,
    MinuteOutcomes, NewAttempt, OutcomeCounts, Reservation, SortOrder, StoreError, StoreStats,
    now_ms,
};

/// Default connections per server: PostgreSQL runs writes of different serials in parallel.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default lease: attempts are bounded by the request deadline (default 120 s), so an attempt in
/// flight for 20 minutes belongs to a server that is gone.
pub const DEFAULT_IN_FLIGHT_LEASE: Duration = Duration::from_secs(20 * 60);
/// Error text stored for recovered attempts of this server.
const INTERRUPTED: &str = "interrupted: the server stopped while this attempt was in flight; \
                           the gateway may hold a partial configuration, provision it again";
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            server_id: default_server_id(),
            in_flight_lease: DEFAULT_IN_FLIGHT_LEASE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: Arc<StoreOptions>,
    sweep: Arc<SweepGuard>,
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

fn get(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

const RECORD_COLUMNS: &str = "id, serial, device_id, hardware_version, radio_config, led_config, \
     category, cloud_address, api_address, gateway_services_address, enrollment_id, created_at";

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
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let options = Arc::new(options);
        let sweep = tokio::spawn(sweep_loop(pool.clone(), Arc::clone(&options)));
        let store = PostgresStore {
            pool,
            options,
            sweep: Arc::new(SweepGuard(sweep)),
        };
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

    pub(super) async fn reserve(&self, a: &NewAttempt<'_>) -> Result<Reservation, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("starting a transaction"))?;
        // UNIQUE(serial) decides: a new serial is inserted, a failed one is revived, a deployed or
        // in-flight one is left alone (no row returned). Concurrent upserts of one serial wait for
        // each other's row lock; the loser re-evaluates the WHERE on the winner's row.
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO identities (serial, state, gateway, requester, server_id, hardware_version, \
                 radio_config, led_config, category, cloud_address, api_address, \
                 gateway_services_address, verification_key, attempts, created_at, updated_at) \
             VALUES ($1, 'in_flight', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13) \
             ON CONFLICT (serial) DO UPDATE SET state = 'in_flight', gateway = EXCLUDED.gateway, \
                 requester = EXCLUDED.requester, server_id = EXCLUDED.server_id, \
                 hardware_version = EXCLUDED.hardware_version, \
                 radio_config = EXCLUDED.radio_config, led_config = EXCLUDED.led_config, \
                 category = EXCLUDED.category, cloud_address = EXCLUDED.cloud_address, \
                 api_address = EXCLUDED.api_address, \
                 gateway_services_address = EXCLUDED.gateway_services_address, \
                 verification_key = EXCLUDED.verification_key, enrollment_id = NULL, \
                 cert_serial = NULL, cert_not_after = NULL, fcc_status = NULL, fcc_warnings = '', \
                 last_error = NULL, attempts = identities.attempts + 1, \
                 created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at \
             WHERE identities.state = 'failed' \
             RETURNING id",
        )
        .bind(a.serial)
        .bind(a.gateway)
        .bind(a.requester)
        .bind(&self.options.server_id)
        .bind(a.hardware_version)
        .bind(a.radio_config)
        .bind(a.led_config)
        .bind(a.category)
        .bind(a.cloud_address)
        .bind(a.api_address)
        .bind(a.gateway_services_address)
        .bind(a.verification_key)
        .bind(a.now_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(q("reserving the serial"))?;

        let result = match id {
            Some(id) => Reservation::Reserved { id },
            None => {
                // READ COMMITTED: this statement sees the committed row that blocked the upsert.
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM identities WHERE serial = $1")
                        .bind(a.serial)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(q("reading the conflicting row"))?;
                let state = state.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "serial `{}` conflicted but has no row (rows are never deleted)",
                        a.serial
                    ))
                })?;
                Reservation::Conflict {
                    state: IdentityState::parse(&state)?,
                }
            }
        };
        let (event, detail) = match result {
            Reservation::Reserved { .. } => ("attempt", None),
            Reservation::Conflict { state } => ("conflict", Some(format!("serial is {state}"))),
        };
        insert_audit(
            &mut tx,
            &AuditRow {
                at_ms: a.now_ms,
                serial: a.serial,
                gateway: a.gateway,
                requester: a.requester,
                event,
                fcc_status: None,
                detail: detail.as_deref(),
                duration_ms: None,
            },
        )
        .await?;
        tx.commit().await.map_err(q("committing the reservation"))?;
        Ok(result)
    }

    pub(super) async fn mark_deployed(
        &self,
        id: i64,
        o: &DeployedOutcome<'_>,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("starting a transaction"))?;
        // `state = 'in_flight'` under the row lock: if another server expired this attempt in the
        // meantime, nothing is updated and the caller learns it (NotInFlight).
        let row = sqlx::query(
            "UPDATE identities SET state = 'deployed', enrollment_id = $1, cert_serial = $2, \
                 cert_not_after = $3, fcc_status = 0, fcc_warnings = $4, last_error = NULL, \
                 server_id = NULL, updated_at = $5 \
             WHERE id = $6 AND state = 'in_flight' \
             RETURNING serial, gateway, requester, created_at",
        )
        .bind(o.enrollment_id)
        .bind(o.cert_serial)
        .bind(o.cert_not_after)
        .bind(o.fcc_warnings.join("\n"))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(q("marking the identity deployed"))?
        .ok_or(StoreError::NotInFlight { id })?;
        let (serial, gateway, requester, created_at) = audit_keys(&row)?;
        let detail = if o.fcc_warnings.is_empty() {
            o.enrollment_id.to_owned()
        } else {
            format!(
                "{}; FCC warnings: {}",
                o.enrollment_id,
                o.fcc_warnings.join("; ")
            )
        };
        insert_audit(
            &mut tx,
            &AuditRow {
                at_ms: now,
                serial: &serial,
                gateway: &gateway,
                requester: &requester,
                event: "deployed",
                fcc_status: Some(0),
                detail: Some(&detail),
                duration_ms: Some(o.duration_ms),
            },
        )
        .await?;
        tx.commit().await.map_err(q("committing the deployment"))?;
        Ok(created_at)
    }

    pub(super) async fn mark_failed(
        &self,
        id: i64,
        o: &FailedOutcome<'_>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("starting a transaction"))?;
        let row = sqlx::query(
            "UPDATE identities SET state = 'failed', fcc_status = $1, fcc_warnings = $2, \
                 last_error = $3, server_id = NULL, updated_at = $4 \
             WHERE id = $5 AND state = 'in_flight' \
             RETURNING serial, gateway, requester, created_at",
        )
        .bind(o.fcc_status.map(i64::from))
        .bind(o.fcc_warnings.join("\n"))
        .bind(o.error)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(q("marking the identity failed"))?
        .ok_or(StoreError::NotInFlight { id })?;
        let (serial, gateway, requester, _) = audit_keys(&row)?;
        insert_audit(
            &mut tx,
            &AuditRow {
                at_ms: now,
                serial: &serial,
                gateway: &gateway,
                requester: &requester,
                event: "failed",
                fcc_status: o.fcc_status,
                detail: Some(o.error),
                duration_ms: Some(o.duration_ms),
            },
        )
        .await?;
        tx.commit().await.map_err(q("committing the failure"))?;
        Ok(())
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
        recover(&self.pool, &self.options, which).await
    }

    pub(super) async fn enrollment_id(&self, serial: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT enrollment_id FROM identities WHERE serial = $1 AND state = 'deployed'",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
        .map_err(q("reading an enrollment ID"))
    }

    pub(super) async fn verification_key(
        &self,
        serial: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT verification_key FROM identities \
             WHERE serial = $1 AND state = 'deployed' AND verification_key IS NOT NULL \
                 AND verification_key <> ''",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
        .map_err(q("reading a verification key"))
    }

    pub(super) async fn list_deployed(
        &self,
        limit: u32,
        order: SortOrder,
        after_id: Option<i64>,
    ) -> Result<Vec<IdentityRecord>, StoreError> {
        // Keyset paging on the primary key through the partial index of deployed rows.
        let sql = match order {
            SortOrder::Asc => format!(
                "SELECT {RECORD_COLUMNS} FROM identities \
                 WHERE state = 'deployed' AND id > $1 ORDER BY id ASC LIMIT $2"
            ),
            SortOrder::Desc => format!(
                "SELECT {RECORD_COLUMNS} FROM identities \
                 WHERE state = 'deployed' AND id < $1 ORDER BY id DESC LIMIT $2"
            ),
        };
        let after = after_id.unwrap_or(match order {
            SortOrder::Asc => i64::MIN,
            SortOrder::Desc => i64::MAX,
        });
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(q("listing deployed identities"))?;
        rows.iter().map(record_from_row).collect()
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM identities GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(q("counting identities"))?;
        let mut stats = StoreStats::default();
        for (state, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match IdentityState::parse(&state)? {
                IdentityState::Deployed => stats.deployed = n,
                IdentityState::Failed => stats.failed = n,
                IdentityState::InFlight => stats.in_flight = n,
            }
        }
        Ok(stats)
    }

    pub(super) async fn identity(
        &self,
        serial: &str,
    ) -> Result<Option<IdentityDetail>, StoreError> {
        let row = sqlx::query(
            "SELECT id, serial, state, gateway, requester, ou, device_id, hardware_version, \
                 radio_config, led_config, category, cloud_address, api_address, \
                 gateway_services_address, verification_key, enrollment_id, cert_serial, \
                 cert_not_after, fcc_status, fcc_warnings, last_error, attempts, created_at, updated_at \
             FROM identities WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("reading an identity"))?;
        let Some(row) = row else { return Ok(None) };
        let warnings: String = row.try_get("fcc_warnings").map_err(get)?;
        let state: String = row.try_get("state").map_err(get)?;
        let fcc_status: Option<i64> = row.try_get("fcc_status").map_err(get)?;
        Ok(Some(IdentityDetail {
            id: row.try_get("id").map_err(get)?,
            serial_number: row.try_get("serial").map_err(get)?,
            state: IdentityState::parse(&state)?,
            gateway: row.try_get("gateway").map_err(get)?,
            requester: row.try_get("requester").map_err(get)?,
            ou: row.try_get("ou").map_err(get)?,
            device_id: row.try_get("device_id").map_err(get)?,
            hardware_version: row.try_get("hardware_version").map_err(get)?,
            radio_config: row.try_get("radio_config").map_err(get)?,
            led_config: row.try_get("led_config").map_err(get)?,
            category: row.try_get("category").map_err(get)?,
            cloud_address: row.try_get("cloud_address").map_err(get)?,
            api_address: row.try_get("api_address").map_err(get)?,
            gateway_services_address: row.try_get("gateway_services_address").map_err(get)?,
            verification_key: row.try_get("verification_key").map_err(get)?,
            enrollment_id: row.try_get("enrollment_id").map_err(get)?,
            cert_serial: row.try_get("cert_serial").map_err(get)?,
            cert_not_after: row.try_get("cert_not_after").map_err(get)?,
            fcc_status: fcc_status.and_then(|s| u32::try_from(s).ok()),
            fcc_warnings: split_warnings(&warnings),
            last_error: row.try_get("last_error").map_err(get)?,
            attempts: row.try_get("attempts").map_err(get)?,
            created_at_ms: row.try_get("created_at").map_err(get)?,
            updated_at_ms: row.try_get("updated_at").map_err(get)?,
        }))
    }

    pub(super) async fn audit_for(&self, serial: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms \
             FROM audit WHERE serial = $1 ORDER BY id",
        )
        .bind(serial)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the audit trail"))?;
        rows.iter()
            .map(|row| {
                let fcc_status: Option<i64> = row.try_get("fcc_status").map_err(get)?;
                Ok(AuditEntry {
                    id: row.try_get("id").map_err(get)?,
                    at_ms: row.try_get("at_ms").map_err(get)?,
                    serial: row.try_get("serial").map_err(get)?,
                    gateway: row.try_get("gateway").map_err(get)?,
                    requester: row.try_get("requester").map_err(get)?,
                    event: row.try_get("event").map_err(get)?,
                    fcc_status: fcc_status.and_then(|s| u32::try_from(s).ok()),
                    detail: row.try_get("detail").map_err(get)?,
                    duration_ms: row.try_get("duration_ms").map_err(get)?,
                })
            })
            .collect()
    }

    pub(super) async fn outcome_counts(&self, since_ms: i64) -> Result<OutcomeCounts, StoreError> {
        let (deployed, failed): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE event = 'deployed'), \
                    COUNT(*) FILTER (WHERE event IN ('failed', 'interrupted')) \
             FROM audit WHERE at_ms >= $1",
        )
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(q("counting outcomes"))?;
        Ok(OutcomeCounts {
            deployed: u64::try_from(deployed).unwrap_or(0),
            failed: u64::try_from(failed).unwrap_or(0),
        })
    }

    pub(super) async fn outcomes_per_minute(
        &self,
        since_ms: i64,
    ) -> Result<Vec<MinuteOutcomes>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT at_ms / 60000 AS minute, COUNT(*) FILTER (WHERE event = 'deployed'), \
                    COUNT(*) FILTER (WHERE event IN ('failed', 'interrupted')) \
             FROM audit WHERE at_ms >= $1 AND event IN ('deployed', 'failed', 'interrupted') \
             GROUP BY minute ORDER BY minute",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(q("counting outcomes per minute"))?;
        Ok(rows
            .into_iter()
            .map(|(minute, deployed, failed)| MinuteOutcomes {
                minute,
                counts: OutcomeCounts {
                    deployed: u64::try_from(deployed).unwrap_or(0),
                    failed: u64::try_from(failed).unwrap_or(0),
                },
            })
            .collect())
    }

    pub(super) async fn recent_outcomes(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms \
             FROM audit WHERE event IN ('deployed', 'failed', 'interrupted') \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the latest outcomes"))?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(super) async fn audit_by_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // starts_with, not a range: the database's collation may not sort by code point.
        let rows = sqlx::query(
            "SELECT id, at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms \
             FROM audit WHERE starts_with(serial, $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("searching the audit trail"))?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(super) async fn close(&self) {
        self.sweep.0.abort();
        self.pool.close().await;
    }
}

/// The recovery transaction (shared by [`PostgresStore`] and the background sweep).
async fn recover(pool: &PgPool, options: &StoreOptions, which: Recover) -> Result<u64, StoreError> {
    let now = now_ms();
    let lease_ms = i64::try_from(options.in_flight_lease.as_millis()).unwrap_or(i64::MAX);
    let expired_before = now.saturating_sub(lease_ms);
    let mut tx = pool.begin().await.map_err(q("starting a transaction"))?;
    // FOR UPDATE SKIP LOCKED: rows another server is finishing right now are skipped, not waited
    // for; whatever that server commits wins. The outer UPDATE re-checks state under the lock.
    let own = match which {
        Recover::OwnAndExpired => Some(options.server_id.as_str()),
        Recover::Expired => None,
    };
    let rows = sqlx::query(
        "UPDATE identities SET state = 'failed', \
             last_error = CASE WHEN server_id = $1 THEN $2 ELSE $3 END, \
             server_id = NULL, updated_at = $4 \
         WHERE id IN (SELECT id FROM identities \
                      WHERE state = 'in_flight' AND (server_id = $1 OR updated_at < $5) \
                      FOR UPDATE SKIP LOCKED) \
             AND state = 'in_flight' \
         RETURNING serial, gateway, requester, created_at, last_error",
    )
    .bind(own)
    .bind(INTERRUPTED)
    .bind(EXPIRED)
    .bind(now)
    .bind(expired_before)
    .fetch_all(&mut *tx)
    .await
    .map_err(q("recovering interrupted attempts"))?;
    for row in &rows {
        let (serial, gateway, requester, created_at) = audit_keys(row)?;
        let detail: String = row.try_get("last_error").map_err(get)?;
        insert_audit(
            &mut tx,
            &AuditRow {
                at_ms: now,
                serial: &serial,
                gateway: &gateway,
                requester: &requester,
                event: "interrupted",
                fcc_status: None,
                detail: Some(&detail),
                duration_ms: Some(now.saturating_sub(created_at)),
            },
        )
        .await?;
    }
    tx.commit().await.map_err(q("committing the recovery"))?;
    Ok(rows.len() as u64)
}

/// Every lease/4 (between 1 s and 5 min), expires attempts whose server is gone.
async fn sweep_loop(pool: PgPool, options: Arc<StoreOptions>) {
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
        match recover(&pool, &options, Recover::Expired).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                expired = n,
                "marked attempts in flight longer than the lease as failed"
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

struct AuditRow<'a> {
    at_ms: i64,
    serial: &'a str,
    gateway: &'a str,
    requester: &'a str,
    event: &'a str,
    fcc_status: Option<u32>,
    detail: Option<&'a str>,
    duration_ms: Option<i64>,
}

async fn insert_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    a: &AuditRow<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.at_ms)
    .bind(a.serial)
    .bind(a.gateway)
    .bind(a.requester)
    .bind(a.event)
    .bind(a.fcc_status.map(i64::from))
    .bind(a.detail)
    .bind(a.duration_ms)
    .execute(&mut **tx)
    .await
    .map_err(q("appending to the audit trail"))?;
    Ok(())
}

fn audit_keys(row: &PgRow) -> Result<(String, String, String, i64), StoreError> {
    Ok((
        row.try_get("serial").map_err(get)?,
        row.try_get("gateway").map_err(get)?,
        row.try_get("requester").map_err(get)?,
        row.try_get("created_at").map_err(get)?,
    ))
}

fn record_from_row(row: &PgRow) -> Result<IdentityRecord, StoreError> {
    let enrollment_id: Option<String> = row.try_get("enrollment_id").map_err(get)?;
    Ok(IdentityRecord {
        id: row.try_get("id").map_err(get)?,
        serial_number: row.try_get("serial").map_err(get)?,
        device_id: row.try_get("device_id").map_err(get)?,
        deployed: true,
        hardware_version: row.try_get("hardware_version").map_err(get)?,
        radio_config: row.try_get("radio_config").map_err(get)?,
        led_config: row.try_get("led_config").map_err(get)?,
        category: row.try_get("category").map_err(get)?,
        cloud_address: row.try_get("cloud_address").map_err(get)?,
        api_address: row.try_get("api_address").map_err(get)?,
        gateway_services_address: row.try_get("gateway_services_address").map_err(get)?,
        enrollment_id: enrollment_id
            .ok_or_else(|| StoreError::Corrupt("deployed row without enrollment ID".to_owned()))?,
        created_at_ms: row.try_get("created_at").map_err(get)?,
    })
}

fn split_warnings(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry, StoreError> {
    let fcc_status: Option<i64> = row.try_get("fcc_status").map_err(get)?;
    Ok(AuditEntry {
        id: row.try_get("id").map_err(get)?,
        at_ms: row.try_get("at_ms").map_err(get)?,
        serial: row.try_get("serial").map_err(get)?,
        gateway: row.try_get("gateway").map_err(get)?,
        requester: row.try_get("requester").map_err(get)?,
        event: row.try_get("event").map_err(get)?,
        fcc_status: fcc_status.and_then(|s| u32::try_from(s).ok()),
        detail: row.try_get("detail").map_err(get)?,
        duration_ms: row.try_get("duration_ms").map_err(get)?,
    })
}
