//! Every SQL text of the store, once, for both backends.
//!
//! Placeholders are `$N`: PostgreSQL's own form, and for SQLite a named parameter that sqlx binds by
//! its number and SQLite (the writer thread, rusqlite) numbers by first appearance — so in every
//! text below each `$N` first appears in ascending order (a unit test checks it). The few texts
//! that differ per backend say why.

/// The columns of [`super::IdentityRecord`].
macro_rules! record_columns {
    () => {
        "id, serial, device_id, TRUE AS deployed, hardware_version, radio_config, led_config, \
         category, cloud_address, api_address, gateway_services_address, enrollment_id, created_at"
    };
}

/// The columns of an audit row as read.
macro_rules! audit_columns {
    () => {
        "id, at_ms, serial, gateway, requester, event, fcc_status, fcc_info, fcc_warnings, detail, \
         duration_ms"
    };
}

/// The columns of [`super::IdentityDetail`] (every column but `server_id`).
macro_rules! detail_columns {
    () => {
        "id, serial, state, gateway, requester, ou, device_id, hardware_version, radio_config, \
         led_config, category, cloud_address, api_address, gateway_services_address, \
         verification_key, enrollment_id, cert_serial, cert_not_after, fcc_status, fcc_info, \
         fcc_warnings, last_error, cert_der, request_id, attempts, created_at, updated_at"
    };
}

/// `SELECT` the columns of one row type (`record_columns`, `audit_columns`, `detail_columns`),
/// then `$rest`.
macro_rules! select {
    ($columns:ident, $rest:literal) => {
        concat!("SELECT ", $columns!(), " ", $rest)
    };
}

/// Reserve a serial: insert it in flight, or revive a `failed` row; a deployed or in-flight one is
/// left alone (no row returned). The UNIQUE(serial) constraint decides races, never a
/// check-then-insert. `$4` is the reserving server (PostgreSQL; NULL with SQLite), `$14` the
/// request key (or NULL).
pub(super) const RESERVE: &str = "INSERT INTO identities (serial, state, gateway, requester, \
         server_id, hardware_version, radio_config, led_config, category, cloud_address, \
         api_address, gateway_services_address, verification_key, attempts, created_at, updated_at, \
         request_id) \
     VALUES ($1, 'in_flight', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13, $14) \
     ON CONFLICT (serial) DO UPDATE SET state = 'in_flight', gateway = EXCLUDED.gateway, \
         requester = EXCLUDED.requester, server_id = EXCLUDED.server_id, \
         hardware_version = EXCLUDED.hardware_version, \
         radio_config = EXCLUDED.radio_config, led_config = EXCLUDED.led_config, \
         category = EXCLUDED.category, cloud_address = EXCLUDED.cloud_address, \
         api_address = EXCLUDED.api_address, \
         gateway_services_address = EXCLUDED.gateway_services_address, \
         verification_key = EXCLUDED.verification_key, enrollment_id = NULL, \
         cert_serial = NULL, cert_not_after = NULL, cert_der = NULL, \
         request_id = EXCLUDED.request_id, fcc_status = NULL, fcc_info = NULL, \
         fcc_warnings = '', last_error = NULL, attempts = identities.attempts + 1, \
         created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at \
     WHERE identities.state = 'failed' \
     RETURNING id";

/// The row that made a reservation conflict: its id, state, request key and enrollment ID.
pub(super) const CONFLICT_STATE: &str =
    "SELECT id, state, request_id, enrollment_id FROM identities WHERE serial = $1";

/// Records that request key `$1` names serial `$2`, unless the key is known already (its primary
/// key decides races between servers). Then [`KEY_SERIAL`] says whose it is.
pub(super) const CLAIM_KEY: &str = "INSERT INTO request_keys (request_id, serial, at_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (request_id) DO NOTHING";

/// The serial a request key names.
pub(super) const KEY_SERIAL: &str = "SELECT serial FROM request_keys WHERE request_id = $1";

/// Write-ahead: the certificate, its serial number and enrollment ID, before the identity's first
/// byte goes to FCC (only if still in flight). From here on, an interruption is `in_doubt`.
pub(super) const WRITE_AHEAD: &str = "UPDATE identities SET enrollment_id = $1, cert_serial = $2, \
         cert_not_after = $3, cert_der = $4, updated_at = $5 \
     WHERE id = $6 AND state = 'in_flight'";

/// An operator's resolution of an in-doubt row: `$1` is `deployed` or `failed`. The enrollment
/// ID (written ahead) goes into the webhook event.
pub(super) const RESOLVE: &str = "UPDATE identities SET state = $1, last_error = $2, \
         server_id = NULL, updated_at = $3 \
     WHERE serial = $4 AND state = 'in_doubt' \
     RETURNING serial, gateway, requester, created_at, enrollment_id";

/// `in_flight` → `deployed` (only if still in flight: another server may have expired it).
pub(super) const MARK_DEPLOYED: &str = "UPDATE identities SET state = 'deployed', \
         enrollment_id = $1, cert_serial = $2, cert_not_after = $3, fcc_status = 0, \
         fcc_info = NULL, fcc_warnings = $4, last_error = NULL, server_id = NULL, updated_at = $5 \
     WHERE id = $6 AND state = 'in_flight' \
     RETURNING serial, gateway, requester, created_at";

/// `in_flight` → `failed`.
pub(super) const MARK_FAILED: &str = "UPDATE identities SET state = 'failed', fcc_status = $1, \
         fcc_info = $2, fcc_warnings = $3, last_error = $4, server_id = NULL, updated_at = $5 \
     WHERE id = $6 AND state = 'in_flight' \
     RETURNING serial, gateway, requester, created_at";

/// SQLite recovery: one server per file, so every in-flight row was this server's. A row with a
/// written-ahead certificate may be on the gateway: `in_doubt` (`$1`), else `failed` (`$2`).
pub(super) const RECOVER_ALL: &str = "UPDATE identities SET \
         state = CASE WHEN cert_der IS NOT NULL THEN 'in_doubt' ELSE 'failed' END, \
         last_error = CASE WHEN cert_der IS NOT NULL THEN $1 ELSE $2 END, \
         server_id = NULL, updated_at = $3 \
     WHERE state = 'in_flight' \
     RETURNING serial, gateway, requester, created_at, last_error, state";

/// PostgreSQL recovery: this server's in-flight rows (`$1`, NULL in the periodic sweep) and every
/// row in flight since before `$5`. FOR UPDATE SKIP LOCKED (PostgreSQL only): rows another server
/// is finishing right now are skipped, not waited for; the outer UPDATE re-checks the state.
/// Rows with a written-ahead certificate become `in_doubt` (`$1`), the others `failed`.
pub(super) const RECOVER_OWN_AND_EXPIRED: &str = "UPDATE identities SET \
         state = CASE WHEN cert_der IS NOT NULL THEN 'in_doubt' ELSE 'failed' END, \
         last_error = CASE WHEN cert_der IS NOT NULL THEN $1 WHEN server_id = $2 THEN $3 \
                           ELSE $4 END, \
         server_id = NULL, updated_at = $5 \
     WHERE id IN (SELECT id FROM identities \
                  WHERE state = 'in_flight' AND (server_id = $2 OR updated_at < $6) \
                  FOR UPDATE SKIP LOCKED) \
         AND state = 'in_flight' \
     RETURNING serial, gateway, requester, created_at, last_error, state";

/// Appends one audit row.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (at_ms, serial, gateway, requester, \
         event, fcc_status, fcc_info, fcc_warnings, detail, duration_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// The enrollment ID of a deployed serial.
pub(super) const ENROLLMENT_ID: &str =
    "SELECT enrollment_id FROM identities WHERE serial = $1 AND state = 'deployed'";

/// The FSS verification key of a deployed serial.
pub(super) const VERIFICATION_KEY: &str = "SELECT verification_key FROM identities \
     WHERE serial = $1 AND state = 'deployed' AND verification_key IS NOT NULL \
         AND verification_key <> ''";

/// Deployed identities after a cursor, oldest first. Keyset paging on the integer primary key
/// (through the partial index of deployed rows): a page costs the same at row 10 and at row 10
/// million.
pub(super) const LIST_DEPLOYED_ASC: &str = select!(
    record_columns,
    "FROM identities WHERE state = 'deployed' AND id > $1 ORDER BY id ASC LIMIT $2"
);

/// Deployed identities before a cursor, newest first.
pub(super) const LIST_DEPLOYED_DESC: &str = select!(
    record_columns,
    "FROM identities WHERE state = 'deployed' AND id < $1 ORDER BY id DESC LIMIT $2"
);

/// Rows per state.
pub(super) const STATS: &str = "SELECT state, COUNT(*) FROM identities GROUP BY state";

/// Everything about one serial.
pub(super) const IDENTITY: &str = select!(detail_columns, "FROM identities WHERE serial = $1");

/// Rows in one state after a cursor, oldest first (the `(state, id)` index).
pub(super) const LIST_BY_STATE_ASC: &str = select!(
    detail_columns,
    "FROM identities WHERE state = $1 AND id > $2 ORDER BY id ASC LIMIT $3"
);

/// Rows in one state before a cursor, newest first.
pub(super) const LIST_BY_STATE_DESC: &str = select!(
    detail_columns,
    "FROM identities WHERE state = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);

/// The audit trail of one serial, oldest first.
pub(super) const AUDIT_FOR: &str =
    select!(audit_columns, "FROM audit WHERE serial = $1 ORDER BY id");

/// Outcomes since a time (`FILTER`: PostgreSQL, and SQLite since 3.30).
pub(super) const OUTCOME_COUNTS: &str = "SELECT COUNT(*) FILTER (WHERE event = 'deployed'), \
         COUNT(*) FILTER (WHERE event IN ('failed', 'interrupted')) \
     FROM audit WHERE at_ms >= $1";

/// Outcomes per minute since a time.
pub(super) const OUTCOMES_PER_MINUTE: &str = "SELECT at_ms / 60000 AS minute, \
         COUNT(*) FILTER (WHERE event = 'deployed'), \
         COUNT(*) FILTER (WHERE event IN ('failed', 'interrupted')) \
     FROM audit WHERE at_ms >= $1 AND event IN ('deployed', 'failed', 'interrupted') \
     GROUP BY minute ORDER BY minute";

/// The latest outcome rows.
pub(super) const RECENT_OUTCOMES: &str = select!(
    audit_columns,
    "FROM audit WHERE event IN ('deployed', 'failed', 'interrupted', 'in_doubt', 'resolved') \
     ORDER BY id DESC LIMIT $1"
);

/// SQLite: a prefix search as a range on the (serial, id) index — every string starting with `$1`
/// sorts between `$1` and `$2` = `$1` + U+10FFFF (BINARY collation compares UTF-8 bytes).
pub(super) const AUDIT_BY_PREFIX_SQLITE: &str = select!(
    audit_columns,
    "FROM audit WHERE serial >= $1 AND serial < $2 ORDER BY id DESC LIMIT $3"
);

/// PostgreSQL: `starts_with`, not a range: the database's collation may not sort by code point.
pub(super) const AUDIT_BY_PREFIX_POSTGRES: &str = select!(
    audit_columns,
    "FROM audit WHERE starts_with(serial, $1) ORDER BY id DESC LIMIT $2"
);

/// The columns of a [`super::outbox::Delivery`].
macro_rules! delivery_columns {
    () => {
        "id, event_id, receiver, serial, event, payload, state, attempts, next_attempt_at, \
         last_error, created_at, updated_at, delivered_at"
    };
}

/// Outbox: one event for one receiver, `pending`, due at once. In the transaction of the state
/// change it reports (or of [`super::Store::enqueue_event`]).
pub(super) const INSERT_DELIVERY: &str = "INSERT INTO hook_deliveries (event_id, receiver, \
         serial, event, payload, state, attempts, next_attempt_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)";

/// SQLite: leases (`$1` owner, `$2` until) up to `$5` due rows (`$3` now) of the receivers named
/// in the JSON array `$4`, oldest first — only the oldest open row of each (receiver, serial), so
/// a later event of a serial never goes out before an earlier one is delivered (or dead). One
/// server per SQLite file: no row locks needed.
pub(super) const CLAIM_DELIVERIES_SQLITE: &str = concat!(
    "UPDATE hook_deliveries SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT d.id FROM hook_deliveries d \
         WHERE d.state IN ('pending', 'failing') AND d.next_attempt_at <= $3 \
             AND (d.lease_until IS NULL OR d.lease_until < $3) \
             AND d.receiver IN (SELECT value FROM json_each($4)) \
             AND NOT EXISTS (SELECT 1 FROM hook_deliveries e \
                 WHERE e.receiver = d.receiver AND e.serial = d.serial AND e.id < d.id \
                     AND e.state IN ('pending', 'failing')) \
         ORDER BY d.id LIMIT $5) \
     RETURNING ",
    delivery_columns!()
);

/// PostgreSQL: [`CLAIM_DELIVERIES_SQLITE`] for servers sharing the table: `FOR UPDATE SKIP
/// LOCKED` lets concurrent claims pass each other without taking the same row, and the lease
/// keeps the row from other servers while this one sends it (a server that dies loses its
/// leases when they expire). `$4` is the JSON array as text.
pub(super) const CLAIM_DELIVERIES_POSTGRES: &str = concat!(
    "UPDATE hook_deliveries SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT d.id FROM hook_deliveries d \
         WHERE d.state IN ('pending', 'failing') AND d.next_attempt_at <= $3 \
             AND (d.lease_until IS NULL OR d.lease_until < $3) \
             AND d.receiver IN (SELECT jsonb_array_elements_text($4::jsonb)) \
             AND NOT EXISTS (SELECT 1 FROM hook_deliveries e \
                 WHERE e.receiver = d.receiver AND e.serial = d.serial AND e.id < d.id \
                     AND e.state IN ('pending', 'failing')) \
         ORDER BY d.id LIMIT $5 FOR UPDATE SKIP LOCKED) \
     RETURNING ",
    delivery_columns!()
);

/// A leased row was delivered (only while the lease is still `$3`'s: a server whose lease
/// expired and was taken over writes nothing).
pub(super) const DELIVERY_DELIVERED: &str = "UPDATE hook_deliveries SET state = 'delivered', \
         attempts = attempts + 1, last_error = NULL, delivered_at = $1, updated_at = $1, \
         lease_owner = NULL, lease_until = NULL \
     WHERE id = $2 AND lease_owner = $3";

/// A leased row's attempt failed: `$1` is `failing` (retried at `$2`) or `dead`.
pub(super) const DELIVERY_FAILED: &str = "UPDATE hook_deliveries SET state = $1, \
         attempts = attempts + 1, next_attempt_at = $2, last_error = $3, updated_at = $4, \
         lease_owner = NULL, lease_until = NULL \
     WHERE id = $5 AND lease_owner = $6";

/// Gives up the leases of `$1` (a server starting again after it was killed while sending).
pub(super) const RELEASE_DELIVERY_LEASES: &str = "UPDATE hook_deliveries \
     SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1";

/// Outbox rows in one state after a cursor, oldest first.
pub(super) const LIST_DELIVERIES_ASC: &str = select!(
    delivery_columns,
    "FROM hook_deliveries WHERE state = $1 AND id > $2 ORDER BY id ASC LIMIT $3"
);

/// Outbox rows in one state before a cursor, newest first.
pub(super) const LIST_DELIVERIES_DESC: &str = select!(
    delivery_columns,
    "FROM hook_deliveries WHERE state = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);

/// Outbox rows per state.
pub(super) const DELIVERY_COUNTS: &str =
    "SELECT state, COUNT(*) FROM hook_deliveries GROUP BY state";

/// The outbox rows of one serial, oldest first.
pub(super) const DELIVERIES_FOR: &str = select!(
    delivery_columns,
    "FROM hook_deliveries WHERE serial = $1 ORDER BY id"
);

/// PostgreSQL: this session's `synchronous_commit`.
pub(super) const PG_SHOW_SYNCHRONOUS_COMMIT: &str = "SELECT current_setting('synchronous_commit')";

/// PostgreSQL: turns `synchronous_commit` on for this session when it is off, keeping any other
/// (durable) setting.
pub(super) const PG_SYNCHRONOUS_COMMIT_NOT_OFF: &str = "SELECT set_config('synchronous_commit', 'on', false) \
     WHERE current_setting('synchronous_commit') = 'off'";

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite numbers `$N` parameters by first appearance; sqlx and PostgreSQL by N. They agree
    /// only if every text introduces `$1`, `$2`, … in this order.
    #[test]
    fn placeholders_first_appear_in_ascending_order() {
        for sql in [
            RESERVE,
            CONFLICT_STATE,
            CLAIM_KEY,
            KEY_SERIAL,
            WRITE_AHEAD,
            RESOLVE,
            LIST_BY_STATE_ASC,
            LIST_BY_STATE_DESC,
            MARK_DEPLOYED,
            MARK_FAILED,
            RECOVER_ALL,
            RECOVER_OWN_AND_EXPIRED,
            INSERT_AUDIT,
            ENROLLMENT_ID,
            VERIFICATION_KEY,
            LIST_DEPLOYED_ASC,
            LIST_DEPLOYED_DESC,
            STATS,
            IDENTITY,
            AUDIT_FOR,
            OUTCOME_COUNTS,
            OUTCOMES_PER_MINUTE,
            RECENT_OUTCOMES,
            AUDIT_BY_PREFIX_SQLITE,
            AUDIT_BY_PREFIX_POSTGRES,
            INSERT_DELIVERY,
            CLAIM_DELIVERIES_SQLITE,
            CLAIM_DELIVERIES_POSTGRES,
            DELIVERY_DELIVERED,
            DELIVERY_FAILED,
            RELEASE_DELIVERY_LEASES,
            LIST_DELIVERIES_ASC,
            LIST_DELIVERIES_DESC,
            DELIVERY_COUNTS,
            DELIVERIES_FOR,
        ] {
            let mut seen = 0;
            let mut rest = sql;
            while let Some(at) = rest.find('$') {
                rest = &rest[at + 1..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let n: usize = digits.parse().unwrap();
                assert!(n <= seen + 1, "${n} before ${} in {sql}", seen + 1);
                seen = seen.max(n);
            }
            assert!(!sql.contains('?'), "{sql}");
        }
    }
}
