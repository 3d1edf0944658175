-- pep store, SQLite schema v5: revocation, re-provisioning and the CRL (issue #16).
--
-- * state `revoked`: an operator revoked the identity (RFC 5280 reason, a note, who and when). Its
--   certificate is listed in the CRL; the serial may be provisioned again (a new key, certificate
--   and enrollment ID).
-- * `identity_history`: every identity a serial had before its current one. A reservation that
--   revives a revoked row moves the old identity here first, in the same transaction. A
--   certificate serial appears once (UNIQUE): two reservations racing for the same revoked serial
--   cannot archive it twice.
-- * `crl_state`: the number of the latest CRL signed. It only grows (RFC 5280 §5.2.3), also
--   across restarts and across the servers of a shared database.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (same ids, same rows).

CREATE TABLE identities_v5 (
    id                       INTEGER PRIMARY KEY,
    serial                   TEXT    NOT NULL UNIQUE,
    state                    TEXT    NOT NULL
                                     CHECK (state IN ('in_flight', 'deployed', 'failed', 'in_doubt',
                                                      'revoked')),
    gateway                  TEXT    NOT NULL,
    requester                TEXT    NOT NULL,
    ou                       TEXT    NOT NULL DEFAULT '',
    device_id                TEXT    NOT NULL DEFAULT '',
    hardware_version         TEXT    NOT NULL,
    radio_config             TEXT    NOT NULL,
    led_config               TEXT    NOT NULL,
    category                 TEXT    NOT NULL CHECK (category IN ('production', 'development')),
    cloud_address            TEXT    NOT NULL,
    api_address              TEXT    NOT NULL,
    gateway_services_address TEXT    NOT NULL,
    verification_key         TEXT,
    enrollment_id            TEXT,
    cert_serial              TEXT,
    cert_not_after           INTEGER,
    fcc_status               INTEGER,
    fcc_warnings             TEXT    NOT NULL DEFAULT '',
    last_error               TEXT,
    attempts                 INTEGER NOT NULL DEFAULT 1,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    server_id                TEXT,
    fcc_info                 TEXT,
    cert_der                 BLOB,
    request_id               TEXT,
    -- set when revoked: ms since the epoch, RFC 5280 reason name, the operator's note, who
    revoked_at               INTEGER,
    revoke_reason            TEXT,
    revoke_note              TEXT,
    revoked_by               TEXT,
    CHECK (state <> 'revoked' OR (revoked_at IS NOT NULL AND cert_serial IS NOT NULL))
);

INSERT INTO identities_v5 (id, serial, state, gateway, requester, ou, device_id,
        hardware_version, radio_config, led_config, category, cloud_address, api_address,
        gateway_services_address, verification_key, enrollment_id, cert_serial, cert_not_after,
        fcc_status, fcc_warnings, last_error, attempts, created_at, updated_at, server_id, fcc_info,
        cert_der, request_id)
    SELECT id, serial, state, gateway, requester, ou, device_id,
        hardware_version, radio_config, led_config, category, cloud_address, api_address,
        gateway_services_address, verification_key, enrollment_id, cert_serial, cert_not_after,
        fcc_status, fcc_warnings, last_error, attempts, created_at, updated_at, server_id, fcc_info,
        cert_der, request_id
    FROM identities;

DROP TABLE identities;
ALTER TABLE identities_v5 RENAME TO identities;

CREATE INDEX identities_deployed_by_id ON identities (id) WHERE state = 'deployed';
CREATE INDEX identities_state ON identities (state, id);

CREATE TABLE identity_history (
    id                       INTEGER PRIMARY KEY,
    serial                   TEXT    NOT NULL,
    -- the state the identity ended in (`revoked`)
    state                    TEXT    NOT NULL,
    enrollment_id            TEXT,
    cert_serial              TEXT    NOT NULL UNIQUE,
    cert_not_after           INTEGER,
    cert_der                 BLOB,
    gateway                  TEXT    NOT NULL,
    requester                TEXT    NOT NULL,
    hardware_version         TEXT    NOT NULL,
    radio_config             TEXT    NOT NULL,
    led_config               TEXT    NOT NULL,
    category                 TEXT    NOT NULL,
    api_address              TEXT    NOT NULL,
    gateway_services_address TEXT    NOT NULL,
    created_at               INTEGER NOT NULL,
    revoked_at               INTEGER,
    revoke_reason            TEXT,
    revoke_note              TEXT,
    revoked_by               TEXT,
    -- when the identity was replaced by a new attempt
    archived_at              INTEGER NOT NULL
);

CREATE INDEX identity_history_by_serial ON identity_history (serial, id);

CREATE TABLE crl_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    crl_number INTEGER NOT NULL
);
INSERT INTO crl_state (id, crl_number) VALUES (1, 0);
