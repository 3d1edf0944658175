//! SQLite backend: WAL, `synchronous=NORMAL`, 5 s busy timeout.
//!
//! Writes go to one dedicated writer thread with its own connection, which commits whatever is
//! queued as one transaction (group commit, [`super::sqlite_writer`]); reads run on a small sqlx
//! pool beside it (WAL readers never wait for the writer). Migrations are sqlx's.
//!
//! `sqlite::memory:` is a throw-away database in a temporary directory, removed when the store is
//! dropped: a real file, so that the writer thread and the readers share it like any other.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::sqlite_writer::{Attempt, SqliteWriter, Write, Written};
use super::{
    AuditEntry, DeployedOutcome, FailedOutcome, IdentityDetail, IdentityRecord, IdentityState,
    MinuteOutcomes, NewAttempt, OutcomeCounts, Reservation, SortOrder, StoreError, StoreStats,
    now_ms,
};

/// How long a connection waits for a lock another connection holds.
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
    /// The one connection every write of the hot path runs on, on its own thread.
    writer: SqliteWriter,
    /// The temporary directory of a `sqlite::memory:` database, removed with the last clone.
    _scratch: Option<Arc<tempfile::TempDir>>,
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
        let (options, scratch) = if in_memory {
            let dir = tempfile::Builder::new()
                .prefix("pep-memory-")
                .tempdir()
                .map_err(|source| StoreError::CreateDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let options = SqliteConnectOptions::new().filename(dir.path().join("pep.sqlite"));
            (options, Some(Arc::new(dir)))
        } else {
            (SqliteConnectOptions::from_str(url).map_err(open_err)?, None)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let path = options.get_filename().to_owned();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let writer = SqliteWriter::start(&path, BUSY_TIMEOUT)?;
        let store = SqliteStore {
            pool,
            writer,
            _scratch: scratch,
        };
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

    pub(super) async fn reserve(&self, a: &NewAttempt<'_>) -> Result<Reservation, StoreError> {
        let attempt = Attempt {
            serial: a.serial.to_owned(),
            gateway: a.gateway.to_owned(),
            requester: a.requester.to_owned(),
            hardware_version: a.hardware_version.to_owned(),
            radio_config: a.radio_config.to_owned(),
            led_config: a.led_config.to_owned(),
            category: a.category.to_owned(),
            cloud_address: a.cloud_address.to_owned(),
            api_address: a.api_address.to_owned(),
            gateway_services_address: a.gateway_services_address.to_owned(),
            verification_key: a.verification_key.map(str::to_owned),
            now_ms: a.now_ms,
        };
        match self.writer.write(Write::Reserve(Box::new(attempt))).await? {
            Written::Reservation(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn mark_deployed(
        &self,
        id: i64,
        o: &DeployedOutcome<'_>,
    ) -> Result<i64, StoreError> {
        let detail = if o.fcc_warnings.is_empty() {
            o.enrollment_id.to_owned()
        } else {
            format!(
                "{}; FCC warnings: {}",
                o.enrollment_id,
                o.fcc_warnings.join("; ")
            )
        };
        let write = Write::Deployed {
            id,
            enrollment_id: o.enrollment_id.to_owned(),
            cert_serial: o.cert_serial.to_owned(),
            cert_not_after: o.cert_not_after,
            fcc_warnings: o.fcc_warnings.join("\n"),
            detail,
            duration_ms: o.duration_ms,
            now_ms: now_ms(),
        };
        match self.writer.write(write).await? {
            Written::Deployed { created_at } => Ok(created_at),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn mark_failed(
        &self,
        id: i64,
        o: &FailedOutcome<'_>,
    ) -> Result<(), StoreError> {
        let write = Write::Failed {
            id,
            fcc_status: o.fcc_status,
            fcc_warnings: o.fcc_warnings.join("\n"),
            error: o.error.to_owned(),
            duration_ms: o.duration_ms,
            now_ms: now_ms(),
        };
        match self.writer.write(write).await? {
            Written::Failed => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        let write = Write::RecoverInterrupted {
            error: INTERRUPTED,
            now_ms: now_ms(),
        };
        match self.writer.write(write).await? {
            Written::Recovered(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
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

/// A write answered with another write's result: a bug in the writer, never input-derived.
fn unexpected(written: &Written) -> StoreError {
    StoreError::Corrupt(format!("the writer answered with {written:?}"))
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
