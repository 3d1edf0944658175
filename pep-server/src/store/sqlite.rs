//! SQLite backend: WAL, `synchronous=NORMAL`, 5 s busy timeout, a small pool.
//!
//! SQLite serializes writers, so write transactions start with `BEGIN IMMEDIATE`: the write lock is
//! taken (or waited for, up to the busy timeout) at the start, which avoids the read-then-upgrade
//! `SQLITE_BUSY` failure of deferred transactions under concurrency. Readers run in parallel (WAL).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::{
    AuditEntry, DeployedOutcome, FailedOutcome, IdentityDetail, IdentityRecord, IdentityState,
    MinuteOutcomes, NewAttempt, OutcomeCounts, Reservation, SortOrder, StoreError, StoreStats,
    now_ms,
};

/// How long a connection waits for the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader pool size: reads run in parallel beside the writer (WAL).
const MAX_CONNECTIONS: u32 = 8;
/// Error text stored for attempts found in flight at start-up.
const INTERRUPTED: &str = "interrupted: the server stopped while this attempt was in flight; \
                           the gateway may hold a partial configuration, provision it again";

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (and the bulk copy of `store::migrate`).
    pool: SqlitePool,
    /// The one connection every write transaction of the hot path runs on. SQLite serializes
    /// writers anyway; funnelling them through one connection means no two connections fight over
    /// the write lock (no busy-handler sleeps), and the writer's page cache and prepared
    /// statements stay valid between transactions instead of being re-read after every other
    /// connection's commit. Profiled: this halved the server's CPU per provisioning.
    writer: SqlitePool,
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

const RECORD_COLUMNS: &str = "id, serial, device_id, hardware_version, radio_config, led_config, \
     category, cloud_address, api_address, gateway_services_address, enrollment_id, created_at";

impl SqliteStore {
    /// Opens (creating if missing) the database, runs the migrations, recovers interrupted attempts.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            url: url.to_owned(),
            source,
        };
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if !in_memory
            && let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let pool_options = if in_memory {
            // One connection keeps the in-memory database alive and consistent.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        };
        let writer_options = options.clone();
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let writer = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(writer_options)
                .await
                .map_err(open_err)?
        };
        let store = SqliteStore { pool, writer };
        let recovered = store.recover_interrupted().await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "marked attempts left in flight by a previous run as failed"
            );
        }
        Ok(store)
    }

    /// The pool, for `store::migrate` (which copies whole tables between backends).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(q("starting a write transaction"))
    }

    pub(super) async fn reserve(&self, a: &NewAttempt<'_>) -> Result<Reservation, StoreError> {
        let mut tx = self.begin_write().await?;
        // The UNIQUE(serial) constraint decides: a new serial is inserted, a failed one is revived,
        // a deployed or in-flight one is left alone (no row returned).
        let id: Option<i64> = sqlx::query_scalar(
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
        .bind(a.serial)
        .bind(a.gateway)
        .bind(a.requester)
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
                let state: String =
                    sqlx::query_scalar("SELECT state FROM identities WHERE serial = ?1")
                        .bind(a.serial)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(q("reading the conflicting row"))?;
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE identities SET state = 'deployed', enrollment_id = ?1, cert_serial = ?2, \
                 cert_not_after = ?3, fcc_status = 0, fcc_warnings = ?4, last_error = NULL, \
                 updated_at = ?5 \
             WHERE id = ?6 AND state = 'in_flight' \
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE identities SET state = 'failed', fcc_status = ?1, fcc_warnings = ?2, \
                 last_error = ?3, updated_at = ?4 \
             WHERE id = ?5 AND state = 'in_flight' \
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

    pub(super) async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE identities SET state = 'failed', last_error = ?1, updated_at = ?2 \
             WHERE state = 'in_flight' \
             RETURNING serial, gateway, requester, created_at",
        )
        .bind(INTERRUPTED)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(q("recovering interrupted attempts"))?;
        for row in &rows {
            let (serial, gateway, requester, created_at) = audit_keys(row)?;
            insert_audit(
                &mut tx,
                &AuditRow {
                    at_ms: now,
                    serial: &serial,
                    gateway: &gateway,
                    requester: &requester,
                    event: "interrupted",
                    fcc_status: None,
                    detail: Some(INTERRUPTED),
                    duration_ms: Some(now.saturating_sub(created_at)),
                },
            )
            .await?;
        }
        tx.commit().await.map_err(q("committing the recovery"))?;
        Ok(rows.len() as u64)
    }

    pub(super) async fn enrollment_id(&self, serial: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT enrollment_id FROM identities WHERE serial = ?1 AND state = 'deployed'",
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
             WHERE serial = ?1 AND state = 'deployed' AND verification_key IS NOT NULL \
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
        // Keyset paging on the integer primary key: each page is an index range scan, so a page
        // costs the same at row 10 and at row 10 million.
        let sql = match order {
            SortOrder::Asc => format!(
                "SELECT {RECORD_COLUMNS} FROM identities \
                 WHERE state = 'deployed' AND id > ?1 ORDER BY id ASC LIMIT ?2"
            ),
            SortOrder::Desc => format!(
                "SELECT {RECORD_COLUMNS} FROM identities \
                 WHERE state = 'deployed' AND id < ?1 ORDER BY id DESC LIMIT ?2"
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
             FROM identities WHERE serial = ?1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("reading an identity"))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
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
             FROM audit WHERE serial = ?1 ORDER BY id",
        )
        .bind(serial)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the audit trail"))?;
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
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
            "SELECT COALESCE(SUM(event = 'deployed'), 0), \
                    COALESCE(SUM(event IN ('failed', 'interrupted')), 0) \
             FROM audit WHERE at_ms >= ?1",
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
            "SELECT at_ms / 60000 AS minute, SUM(event = 'deployed'), \
                    SUM(event IN ('failed', 'interrupted')) \
             FROM audit WHERE at_ms >= ?1 AND event IN ('deployed', 'failed', 'interrupted') \
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
             ORDER BY id DESC LIMIT ?1",
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
        // A range on the (serial, id) index: every string starting with `prefix` sorts between
        // `prefix` and `prefix` + the highest code point (BINARY collation compares UTF-8 bytes).
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT id, at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms \
             FROM audit WHERE serial >= ?1 AND serial < ?2 ORDER BY id DESC LIMIT ?3",
        )
        .bind(prefix)
        .bind(upper)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("searching the audit trail"))?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
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
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    a: &AuditRow<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at_ms, serial, gateway, requester, event, fcc_status, detail, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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

fn audit_keys(row: &SqliteRow) -> Result<(String, String, String, i64), StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    Ok((
        row.try_get("serial").map_err(get)?,
        row.try_get("gateway").map_err(get)?,
        row.try_get("requester").map_err(get)?,
        row.try_get("created_at").map_err(get)?,
    ))
}

fn record_from_row(row: &SqliteRow) -> Result<IdentityRecord, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
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

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
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
