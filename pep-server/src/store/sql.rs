//! Every SQL text of the store, once, for both backends.
//!
//! Placeholders are `$N`: PostgreSQL's own form, and for SQLite a named parameter that sqlx binds by
//! its number and SQLite (the writer thread, rusqlite) numbers by first appearance — so in every
//! text below each `$N` first appears in ascending order (a unit test checks it). The few texts
//! that differ per backend say why.

/// The columns of [`super::IdentityRecord`] (`i`: identities, `c`: its claim, if any).
macro_rules! record_columns {
    () => {
        "i.id, i.serial, i.device_id, TRUE AS deployed, i.hardware_version, i.radio_config, \
         i.led_config, i.category, i.cloud_address, i.api_address, i.gateway_services_address, \
         i.enrollment_id, i.created_at, c.state AS claim_state"
    };
}

/// The columns of an audit row as read.
macro_rules! audit_columns {
    () => {
        "id, at_ms, serial, gateway, requester, event, fcc_status, fcc_info, fcc_warnings, detail, \
         duration_ms"
    };
}

/// The columns of a chained audit row ([`super::ChainRow`]).
macro_rules! chain_columns {
    () => {
        "id, server_id, seq, at_ms, serial, gateway, requester, event, fcc_status, fcc_info, \
         fcc_warnings, detail, duration_ms, prev_hash, hash"
    };
}

/// The columns of [`super::IdentityDetail`] (every column but `server_id`).
macro_rules! detail_columns {
    () => {
        "id, serial, state, gateway, requester, ou, device_id, hardware_version, radio_config, \
         led_config, category, cloud_address, api_address, gateway_services_address, \
         verification_key, enrollment_id, cert_serial, cert_not_after, fcc_status, fcc_info, \
         fcc_warnings, last_error, cert_der, request_id, attempts, created_at, updated_at, \
         revoked_at, revoke_reason, revoke_note, revoked_by"
    };
}

/// `SELECT` the columns of one row type (`record_columns`, `audit_columns`, `detail_columns`),
/// then `$rest`.
macro_rules! select {
    ($columns:ident, $rest:literal) => {
        concat!("SELECT ", $columns!(), " ", $rest)
    };
}

/// Before [`RESERVE`] revives a revoked row: its identity (certificate, enrollment ID, the
/// revocation) moves into `identity_history`, in the reservation's transaction. A certificate
/// serial is archived once (`UNIQUE`): a concurrent reservation of the same serial on another
/// server waits for the first, then does nothing (and its upsert finds the row in flight).
pub(super) const ARCHIVE_REVOKED: &str = "INSERT INTO identity_history (serial, state, \
         enrollment_id, cert_serial, cert_not_after, cert_der, gateway, requester, \
         hardware_version, radio_config, led_config, category, api_address, \
         gateway_services_address, created_at, revoked_at, revoke_reason, revoke_note, revoked_by, \
         archived_at) \
     SELECT serial, state, enrollment_id, cert_serial, cert_not_after, cert_der, gateway, \
         requester, hardware_version, radio_config, led_config, category, api_address, \
         gateway_services_address, created_at, revoked_at, revoke_reason, revoke_note, revoked_by, \
         $1 \
     FROM identities WHERE serial = $2 AND state = 'revoked' \
     ON CONFLICT (cert_serial) DO NOTHING";

/// Reserve a serial: insert it in flight, or revive a `failed` or `revoked` row (the revoked
/// identity was archived first, [`ARCHIVE_REVOKED`]); a deployed, in-doubt or in-flight one is
/// left alone (no row returned). The UNIQUE(serial) constraint decides races, never a
/// check-then-insert. `$4` is the reserving server (PostgreSQL; NULL with SQLite), `$14` the
/// request key (or NULL), `$15` the work order (or NULL).
pub(super) const RESERVE: &str = "INSERT INTO identities (serial, state, gateway, requester, \
         server_id, hardware_version, radio_config, led_config, category, cloud_address, \
         api_address, gateway_services_address, verification_key, attempts, created_at, updated_at, \
         request_id, order_id) \
     VALUES ($1, 'in_flight', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13, $14, \
         $15) \
     ON CONFLICT (serial) DO UPDATE SET state = 'in_flight', gateway = EXCLUDED.gateway, \
         requester = EXCLUDED.requester, server_id = EXCLUDED.server_id, \
         hardware_version = EXCLUDED.hardware_version, \
         radio_config = EXCLUDED.radio_config, led_config = EXCLUDED.led_config, \
         category = EXCLUDED.category, cloud_address = EXCLUDED.cloud_address, \
         api_address = EXCLUDED.api_address, \
         gateway_services_address = EXCLUDED.gateway_services_address, \
         verification_key = EXCLUDED.verification_key, enrollment_id = NULL, \
         cert_serial = NULL, cert_not_after = NULL, cert_der = NULL, \
         request_id = EXCLUDED.request_id, order_id = EXCLUDED.order_id, fcc_status = NULL, \
         fcc_info = NULL, \
         fcc_warnings = '', last_error = NULL, attempts = identities.attempts + 1, \
         created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
         revoked_at = NULL, revoke_reason = NULL, revoke_note = NULL, revoked_by = NULL \
     WHERE identities.state IN ('failed', 'revoked') \
     RETURNING id";

/// Revoke a deployed or in-doubt identity (`$1` = now, also `updated_at`); no row returned when
/// the serial is unknown or in another state. Returns the audit keys and what the answer names.
pub(super) const REVOKE: &str = "UPDATE identities SET state = 'revoked', revoked_at = $1, \
         revoke_reason = $2, revoke_note = $3, revoked_by = $4, server_id = NULL, updated_at = $1 \
     WHERE serial = $5 AND state IN ('deployed', 'in_doubt') \
     RETURNING serial, gateway, requester, created_at, enrollment_id, cert_serial";

/// The past identities of one serial, oldest first.
pub(super) const HISTORY: &str = "SELECT id, serial, state, enrollment_id, cert_serial, \
         cert_not_after, gateway, requester, created_at, revoked_at, revoke_reason, revoke_note, \
         revoked_by, archived_at \
     FROM identity_history WHERE serial = $1 ORDER BY id";

/// Every revoked certificate, current (`identities`) and past (`identity_history`): the CRL's
/// entries, in revocation order.
pub(super) const REVOKED_CERTIFICATES: &str = "SELECT cert_serial, revoked_at, revoke_reason \
     FROM identities WHERE state = 'revoked' \
     UNION ALL \
     SELECT cert_serial, revoked_at, revoke_reason FROM identity_history WHERE state = 'revoked' \
     ORDER BY revoked_at, cert_serial";

/// Revoked identities (current and past) as enrollment-ID records, keyset-paged on
/// (`revoked_at`, `cert_serial`) after (`$1`, `$2`): the bulk-delete CSV.
pub(super) const LIST_REVOKED: &str = "SELECT id, serial, device_id, FALSE AS deployed, \
         hardware_version, radio_config, led_config, category, cloud_address, api_address, \
         gateway_services_address, enrollment_id, created_at, revoked_at, cert_serial, \
         CAST(NULL AS TEXT) AS claim_state \
     FROM (SELECT id, serial, device_id, hardware_version, radio_config, led_config, category, \
               cloud_address, api_address, gateway_services_address, \
               COALESCE(enrollment_id, '') AS enrollment_id, created_at, revoked_at, cert_serial \
           FROM identities WHERE state = 'revoked' \
           UNION ALL \
           SELECT id, serial, '' AS device_id, hardware_version, radio_config, led_config, \
               category, gateway_services_address AS cloud_address, api_address, \
               gateway_services_address, COALESCE(enrollment_id, '') AS enrollment_id, \
               created_at, revoked_at, cert_serial \
           FROM identity_history WHERE state = 'revoked') AS revoked \
     WHERE revoked_at > $1 OR (revoked_at = $1 AND cert_serial > $2) \
     ORDER BY revoked_at, cert_serial LIMIT $3";

/// The next CRL number: one more than the last one signed, by any server, ever.
pub(super) const NEXT_CRL_NUMBER: &str =
    "UPDATE crl_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number";

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

/// Appends one audit row as the next link of chain `$11` (store/chain.rs); returns its id.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (at_ms, serial, gateway, requester, \
         event, fcc_status, fcc_info, fcc_warnings, detail, duration_ms, server_id, seq, \
         prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     RETURNING id";

/// The head of chain `$1`: its last row (the `audit_chain` index).
pub(super) const CHAIN_HEAD: &str = "SELECT seq, id, hash FROM audit \
     WHERE server_id = $1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1";

/// The highest id of the rows written before the chain existed (no row: nothing to chain).
pub(super) const LEGACY_UP_TO: &str = "SELECT up_to_id FROM audit_legacy";

/// The next page of rows written before the chain existed, in id order.
pub(super) const LEGACY_ROWS: &str = select!(
    chain_columns,
    "FROM audit WHERE hash IS NULL AND id > $1 AND id <= $2 ORDER BY id LIMIT $3"
);

/// Links a row written before the chain existed into the default chain.
pub(super) const CHAIN_LEGACY_ROW: &str =
    "UPDATE audit SET server_id = $1, seq = $2, prev_hash = $3, hash = $4 WHERE id = $5";

/// The legacy rows are chained: never again.
pub(super) const LEGACY_DONE: &str = "DELETE FROM audit_legacy";

/// PostgreSQL: one server at a time chains the legacy rows (a transaction-level advisory lock; the
/// number is arbitrary, `pep` in ASCII).
pub(super) const PG_LOCK_LEGACY: &str = "SELECT pg_advisory_xact_lock(7365984)";

/// Every chained row, chain by chain, in chain order (`audit verify`, `audit export`).
pub(super) const CHAIN_ROWS: &str = select!(
    chain_columns,
    "FROM audit WHERE seq IS NOT NULL ORDER BY server_id, seq"
);

/// Rows that are in no chain (written by something else than pep-server since v6).
pub(super) const UNCHAINED: &str = "SELECT id FROM audit \
     WHERE seq IS NULL OR hash IS NULL OR prev_hash IS NULL ORDER BY id LIMIT $1";

/// Stores a signed checkpoint.
pub(super) const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints (server_id, seq, \
         audit_id, hash, at_ms, signature) VALUES ($1, $2, $3, $4, $5, $6)";

/// Every checkpoint, oldest first.
pub(super) const CHECKPOINTS: &str = "SELECT id, server_id, seq, audit_id, hash, at_ms, signature \
     FROM audit_checkpoints ORDER BY id";

/// The `seq` of the latest checkpoint of chain `$1`.
pub(super) const LAST_CHECKPOINT_SEQ: &str =
    "SELECT MAX(seq) FROM audit_checkpoints WHERE server_id = $1";

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
    "FROM identities i LEFT JOIN claims c ON c.enrollment_id = i.enrollment_id \
         AND c.action = 'claim' \
     WHERE i.state = 'deployed' AND i.id > $1 ORDER BY i.id ASC LIMIT $2"
);

/// Deployed identities before a cursor, newest first.
pub(super) const LIST_DEPLOYED_DESC: &str = select!(
    record_columns,
    "FROM identities i LEFT JOIN claims c ON c.enrollment_id = i.enrollment_id \
         AND c.action = 'claim' \
     WHERE i.state = 'deployed' AND i.id < $1 ORDER BY i.id DESC LIMIT $2"
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
/// in the JSON array `$4`, due longest ago first: in the order of the partial index
/// `hook_deliveries_open`, so the scan stops at `$5` rows. SQLite's planner, without statistics,
/// preferred the state index and sorted the whole backlog at every lease: `INDEXED BY` names the
/// index (checked by `EXPLAIN QUERY PLAN` in a unit test) — only the oldest open row of each (receiver, serial), so
/// a later event of a serial never goes out before an earlier one is delivered (or dead). One
/// server per SQLite file: no row locks needed.
pub(super) const CLAIM_DELIVERIES_SQLITE: &str = concat!(
    "UPDATE hook_deliveries SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT d.id FROM hook_deliveries d INDEXED BY hook_deliveries_open \
         WHERE d.state IN ('pending', 'failing') AND d.next_attempt_at <= $3 \
             AND (d.lease_until IS NULL OR d.lease_until < $3) \
             AND d.receiver IN (SELECT value FROM json_each($4)) \
             AND NOT EXISTS (SELECT 1 FROM hook_deliveries e \
                 WHERE e.receiver = d.receiver AND e.serial = d.serial AND e.id < d.id \
                     AND e.state IN ('pending', 'failing')) \
         ORDER BY d.next_attempt_at, d.id LIMIT $5) \
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
         ORDER BY d.next_attempt_at, d.id LIMIT $5 FOR UPDATE SKIP LOCKED) \
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
/// The columns of [`super::ClaimRow`].
macro_rules! claim_columns {
    () => {
        "id, enrollment_id, serial, action, state, attempts, next_attempt_at, last_error, \
         claimed_by, bulk_task, cloud_id, created_at, updated_at"
    };
}

/// The cloud claim of a deployed serial, queued in the transaction that deploys it (`[cloud]
/// mode` not `off`): `$1` now, `$2` the serial. An enrollment ID queued already stays as it is.
/// (SQLite needs the `WHERE` before `ON CONFLICT` of an `INSERT … SELECT`; it is there.)
pub(super) const QUEUE_CLAIM: &str = "INSERT INTO claims (enrollment_id, serial, action, state, \
         attempts, next_attempt_at, created_at, updated_at) \
     SELECT enrollment_id, serial, 'claim', 'pending', 0, $1, $1, $1 FROM identities \
     WHERE serial = $2 AND state = 'deployed' AND enrollment_id IS NOT NULL \
     ON CONFLICT (enrollment_id, action) DO NOTHING";

/// The deletion of a claim in the cloud (a revoked or scrapped gateway): `$1` enrollment ID,
/// `$2` serial, `$3` now. The cloud's id of the claim, when known, is copied for `DELETE
/// /v3/device-enrollments/{id}`; a deletion queued before is queued again.
pub(super) const QUEUE_CLAIM_DELETE: &str = "INSERT INTO claims (enrollment_id, serial, action, \
         state, attempts, next_attempt_at, cloud_id, created_at, updated_at) \
     VALUES ($1, $2, 'delete', 'pending', 0, $3, \
         (SELECT cloud_id FROM claims WHERE enrollment_id = $1 AND action = 'claim'), $3, $3) \
     ON CONFLICT (enrollment_id, action) DO UPDATE SET state = 'pending', attempts = 0, \
         next_attempt_at = EXCLUDED.next_attempt_at, cloud_id = EXCLUDED.cloud_id, \
         last_error = NULL, lease_until = NULL, bulk_task = NULL, updated_at = EXCLUDED.updated_at";

/// A revocation's deletion of the claim of `$1` (serial `$2`, now `$3`): queued only when this
/// store queued a claim for that enrollment ID (`[cloud] mode` was on when it deployed; without a
/// claim row the operator frees it with the bulk-delete CSV). Otherwise as [`QUEUE_CLAIM_DELETE`].
pub(super) const QUEUE_CLAIM_DELETE_IF_CLAIMED: &str = "INSERT INTO claims (enrollment_id, serial, \
         action, state, attempts, next_attempt_at, cloud_id, created_at, updated_at) \
     SELECT $1, $2, 'delete', 'pending', 0, $3, c.cloud_id, $3, $3 FROM claims c \
     WHERE c.enrollment_id = $1 AND c.action = 'claim' \
     ON CONFLICT (enrollment_id, action) DO UPDATE SET state = 'pending', attempts = 0, \
         next_attempt_at = EXCLUDED.next_attempt_at, cloud_id = EXCLUDED.cloud_id, \
         last_error = NULL, lease_until = NULL, bulk_task = NULL, updated_at = EXCLUDED.updated_at";

/// The rows due to be sent, due longest ago first (the order of the partial index `claims_open`:
/// the scan stops at the LIMIT instead of sorting the backlog). A deletion waits until its claim
/// is settled (never overtakes it). `$also`: a further condition (PostgreSQL: the lease is free).
macro_rules! due_claims {
    ($from:literal, $now:literal, $also:literal) => {
        concat!(
            " FROM ",
            $from,
            " WHERE d.state IN ('pending', 'retrying') AND d.next_attempt_at <= ",
            $now,
            " AND (d.action = 'claim' OR NOT EXISTS (SELECT 1 FROM claims c \
                 WHERE c.enrollment_id = d.enrollment_id AND c.action = 'claim' \
                     AND c.state IN ('pending', 'retrying')))",
            $also,
            " ORDER BY d.next_attempt_at, d.id"
        )
    };
}

/// SQLite: the due rows (`$1` now, `$2` how many), read without a lease. One process serves a
/// file (its lock, `store::sqlite`) and runs one sender, whose rounds never overlap: nobody else
/// could take them, and a lease would be one more write of every claim on the writer thread
/// (measured in docs/performance.md, #18). What a crash leaves unsettled is still due, so it is
/// sent again after the restart. Its planner, without statistics, preferred the state index and
/// sorted every due row at each round: `INDEXED BY` names the index that gives them in order
/// (checked by `EXPLAIN QUERY PLAN` in a unit test).
pub(super) const TAKE_CLAIMS_SQLITE: &str = concat!(
    "SELECT ",
    claim_columns!(),
    due_claims!("claims d INDEXED BY claims_open", "$1", ""),
    " LIMIT $2"
);

/// PostgreSQL, servers sharing the table: the due rows whose lease is free, taken by `$1` until
/// `$2` (`$3` now, `$4` how many). Rows another server is taking right now are skipped, not waited
/// for; the lease keeps them from being taken twice after that transaction commits.
pub(super) const TAKE_CLAIMS_POSTGRES: &str = concat!(
    "UPDATE claims SET claimed_by = $1, lease_until = $2, updated_at = $3 \
     WHERE id IN (SELECT id",
    due_claims!(
        "claims d",
        "$3",
        " AND (d.lease_until IS NULL OR d.lease_until < $3)"
    ),
    " LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING ",
    claim_columns!()
);

/// The answer to one row, by the server that sent it (`$7`, which `claimed_by` names from then
/// on): `$1` state, `$2` attempts added, `$3` next attempt, `$4` error, `$5` the cloud's id (kept
/// when NULL), `$6` when, `$8` the row. The lease ends. `$owner`: PostgreSQL settles only a row
/// whose lease is still the sender's; SQLite has no leases (see [`TAKE_CLAIMS_SQLITE`]).
macro_rules! settle_claim {
    ($owner:literal) => {
        concat!(
            "UPDATE claims SET state = $1, attempts = attempts + $2, \
                 next_attempt_at = $3, last_error = $4, cloud_id = COALESCE($5, cloud_id), \
                 lease_until = NULL, bulk_task = NULL, updated_at = $6, claimed_by = $7 \
             WHERE id = $8",
            $owner
        )
    };
}

/// `settle_claim!` on SQLite.
pub(super) const SETTLE_CLAIM_SQLITE: &str = settle_claim!("");
/// `settle_claim!` on PostgreSQL.
pub(super) const SETTLE_CLAIM_POSTGRES: &str = settle_claim!(" AND claimed_by = $7");

/// A row went out in bulk task `$1` (polled until it completes, also after a restart), sent by
/// `$3` (`$2` now, `$4` the row). `$owner` as in `settle_claim!`.
macro_rules! mark_bulk {
    ($owner:literal) => {
        concat!(
            "UPDATE claims SET bulk_task = $1, attempts = attempts + 1, updated_at = $2, \
                 claimed_by = $3 WHERE id = $4",
            $owner
        )
    };
}

/// `mark_bulk!` on SQLite.
pub(super) const MARK_BULK_SQLITE: &str = mark_bulk!("");
/// `mark_bulk!` on PostgreSQL.
pub(super) const MARK_BULK_POSTGRES: &str = mark_bulk!(" AND claimed_by = $3");

/// Start-up: the leases of a previous run of this server (`$1`; NULL with SQLite: every lease,
/// the file has one server) end, so its rows are sent again at once.
pub(super) const RELEASE_CLAIM_LEASES: &str = "UPDATE claims SET lease_until = NULL \
     WHERE lease_until IS NOT NULL AND ($1 IS NULL OR claimed_by = $1)";

/// Claims after a cursor, in one state (`$1`) or all (`$1` NULL), oldest first.
pub(super) const LIST_CLAIMS_ASC: &str = select!(
    claim_columns,
    "FROM claims WHERE ($1 IS NULL OR state = $1) AND id > $2 ORDER BY id ASC LIMIT $3"
);

/// Claims before a cursor, newest first.
pub(super) const LIST_CLAIMS_DESC: &str = select!(
    claim_columns,
    "FROM claims WHERE ($1 IS NULL OR state = $1) AND id < $2 ORDER BY id DESC LIMIT $3"
);

/// Claim rows per action and state.
pub(super) const CLAIM_STATS: &str =
    "SELECT action, state, COUNT(*) FROM claims GROUP BY action, state";

/// The latest error the cloud answered (or the network gave), with its serial and time.
pub(super) const LAST_CLAIM_ERROR: &str = "SELECT last_error, serial, updated_at FROM claims \
     WHERE last_error IS NOT NULL AND state IN ('rejected', 'retrying', 'already_claimed') \
     ORDER BY updated_at DESC, id DESC LIMIT 1";

/// `cloud retry --state S`: every row in state `$2` is due again at `$1`.
pub(super) const RETRY_CLAIMS: &str = "UPDATE claims SET state = 'pending', next_attempt_at = $1, \
         lease_until = NULL, bulk_task = NULL, updated_at = $1 WHERE state = $2";

/// The columns of an order as read (`store::orders::OrderRow`).
macro_rules! order_columns {
    () => {
        "order_id, state, hardware_version, radio_config, led_config, category, api_address, \
         gateway_services_address, created_by, created_at, closed_at"
    };
}

/// A new work order, open. `$2`..`$7` are its product fields (NULL: not set).
pub(super) const INSERT_ORDER: &str = "INSERT INTO orders (order_id, state, hardware_version, \
         radio_config, led_config, category, api_address, gateway_services_address, created_by, \
         created_at) \
     VALUES ($1, 'open', $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (order_id) DO NOTHING";

/// 1 when any work order exists, else 0 (the provisioning skips the order lookup without any).
pub(super) const ANY_ORDER: &str =
    "SELECT COUNT(*) FROM (SELECT 1 FROM orders LIMIT 1) AS any_order";

/// One order.
pub(super) const ORDER: &str = select!(order_columns, "FROM orders WHERE order_id = $1");

/// The newest orders.
pub(super) const ORDERS: &str = select!(
    order_columns,
    "FROM orders ORDER BY created_at DESC, order_id LIMIT $1"
);

/// The open orders, oldest first (the floor page).
pub(super) const OPEN_ORDERS: &str = select!(
    order_columns,
    "FROM orders WHERE state = 'open' ORDER BY created_at, order_id LIMIT $1"
);

/// Closes an open order.
pub(super) const CLOSE_ORDER: &str =
    "UPDATE orders SET state = 'closed', closed_at = $1 WHERE order_id = $2 AND state = 'open'";

/// An order's state (locks nothing; the uploads re-check it when they finish).
pub(super) const ORDER_STATE: &str = "SELECT state FROM orders WHERE order_id = $1";

/// A range of an order.
pub(super) const INSERT_RANGE: &str = "INSERT INTO order_ranges (order_id, prefix, first_n, \
         last_n, width) VALUES ($1, $2, $3, $4, $5)";

/// An order's ranges, in the order given.
pub(super) const ORDER_RANGES: &str = "SELECT prefix, first_n, last_n, width FROM order_ranges \
     WHERE order_id = $1 ORDER BY id";

/// The ranges of the open orders, with their order (the overlap check of a new order).
pub(super) const OPEN_RANGES: &str = "SELECT r.order_id, r.prefix, r.first_n, r.last_n, r.width \
     FROM order_ranges r JOIN orders o ON o.order_id = r.order_id WHERE o.state = 'open'";

/// The ranges whose prefix starts serial `$1`, with their order (`substr`/`length` count
/// characters in both backends). Few rows: the number is checked by `SerialRange::contains`.
pub(super) const RANGES_FOR_SERIAL: &str = concat!(
    "SELECT r.prefix, r.first_n, r.last_n, r.width, ",
    order_columns!(),
    " FROM order_ranges r JOIN orders USING (order_id) \
     WHERE substr($1, 1, length(r.prefix)) = r.prefix"
);

/// The order of an explicit serial, once its upload is done (a serial is in one upload at most:
/// it is the key of `order_serials`).
pub(super) const ORDER_OF_SERIAL: &str = select!(
    order_columns,
    "FROM orders WHERE order_id = (SELECT s.order_id \
         FROM order_serials s JOIN order_uploads u ON u.id = s.upload_id \
         WHERE s.serial = $1 AND u.state = 'done')"
);

/// Every order (`migrate-store`).
pub(super) const ALL_ORDERS: &str = select!(order_columns, "FROM orders");

/// An order copied as it is (`migrate-store`).
pub(super) const COPY_ORDER: &str = concat!(
    "INSERT INTO orders (",
    order_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);

/// A batch of explicit serials starts (`loading`: its rows do not count yet).
pub(super) const BEGIN_UPLOAD: &str = "INSERT INTO order_uploads (order_id, state, serials, \
         started_at) VALUES ($1, 'loading', 0, $2) RETURNING id";

/// A batch is complete: its serials count from this commit on.
pub(super) const FINISH_UPLOAD: &str = "UPDATE order_uploads SET state = 'done', serials = $1 \
     WHERE id = $2 AND state = 'loading'";

/// Up to `$2` rows of an abandoned batch (deleted a slice at a time: no long transaction).
pub(super) const DELETE_UPLOAD_ROWS: &str = "DELETE FROM order_serials WHERE serial IN \
     (SELECT serial FROM order_serials WHERE upload_id = $1 LIMIT $2)";

/// An abandoned batch, once its rows are gone.
pub(super) const DELETE_UPLOAD: &str =
    "DELETE FROM order_uploads WHERE id = $1 AND state = 'loading'";

/// Batches still loading since before `$1` (their server stopped mid-upload).
pub(super) const STALE_UPLOADS: &str =
    "SELECT id FROM order_uploads WHERE state = 'loading' AND started_at < $1";

/// Who holds explicit serial `$1`: order, batch, line.
pub(super) const SERIAL_HOLDER: &str =
    "SELECT order_id, upload_id, line FROM order_serials WHERE serial = $1";

/// An order's explicit serials that count.
pub(super) const ORDER_EXPECTED: &str = "SELECT CAST(COALESCE(SUM(serials), 0) AS BIGINT) \
     FROM order_uploads WHERE order_id = $1 AND state = 'done'";

/// An order's identities per state.
pub(super) const ORDER_PROGRESS: &str =
    "SELECT state, COUNT(*) FROM identities WHERE order_id = $1 GROUP BY state";

/// The text inserting `rows` explicit serials of one batch: `$1` the order, `$2` the batch, then
/// each row's serial and line. A serial held already is skipped (`DO NOTHING`): the caller
/// compares the rows written with the rows sent and names the first serial that was not.
pub(super) fn insert_order_serials(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 24);
    sql.push_str("INSERT INTO order_serials (order_id, upload_id, serial, line) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        let n = 3 + 2 * i;
        sql.push_str(&format!("($1, $2, ${n}, ${})", n + 1));
    }
    sql.push_str(" ON CONFLICT (serial) DO NOTHING");
    sql
}

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
            ARCHIVE_REVOKED,
            RESERVE,
            REVOKE,
            HISTORY,
            REVOKED_CERTIFICATES,
            LIST_REVOKED,
            NEXT_CRL_NUMBER,
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
            CHAIN_HEAD,
            LEGACY_ROWS,
            CHAIN_LEGACY_ROW,
            CHAIN_ROWS,
            UNCHAINED,
            INSERT_CHECKPOINT,
            LAST_CHECKPOINT_SEQ,
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
            QUEUE_CLAIM,
            QUEUE_CLAIM_DELETE,
            QUEUE_CLAIM_DELETE_IF_CLAIMED,
            TAKE_CLAIMS_SQLITE,
            TAKE_CLAIMS_POSTGRES,
            SETTLE_CLAIM_SQLITE,
            SETTLE_CLAIM_POSTGRES,
            MARK_BULK_SQLITE,
            MARK_BULK_POSTGRES,
            RELEASE_CLAIM_LEASES,
            LIST_CLAIMS_ASC,
            LIST_CLAIMS_DESC,
            CLAIM_STATS,
            LAST_CLAIM_ERROR,
            RETRY_CLAIMS,
            INSERT_ORDER,
            ANY_ORDER,
            ORDER,
            ORDERS,
            OPEN_ORDERS,
            CLOSE_ORDER,
            ORDER_STATE,
            INSERT_RANGE,
            ORDER_RANGES,
            RANGES_FOR_SERIAL,
            ORDER_OF_SERIAL,
            ALL_ORDERS,
            COPY_ORDER,
            BEGIN_UPLOAD,
            FINISH_UPLOAD,
            DELETE_UPLOAD_ROWS,
            DELETE_UPLOAD,
            STALE_UPLOADS,
            SERIAL_HOLDER,
            ORDER_EXPECTED,
            ORDER_PROGRESS,
            insert_order_serials(3).as_str(),
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
