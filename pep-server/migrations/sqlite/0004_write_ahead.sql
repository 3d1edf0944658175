-- pep store, SQLite schema v4: never lose an identity (issue #13).
--
-- * state `in_doubt`: the server stopped after the identity's first byte could have reached FCC;
--   the identity may be on the gateway. Only an operator (resolve) or the same request key ends it.
-- * `cert_der`: the device certificate (public; never a private key), written ahead of the
--   injection together with its serial number and enrollment ID.
-- * `request_id`: the client's request key of the latest attempt (idempotent retry).
-- * `request_keys`: every request key ever used, with its serial: a key names one serial forever.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (same ids, same rows).

CREATE TABLE identities_v4 (
    id                       INTEGER PRIMARY KEY,
    serial                   TEXT    NOT NULL UNIQUE,
    state                    TEXT    NOT NULL
                                     CHECK (state IN ('in_flight', 'deployed', 'failed', 'in_doubt')),
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
    request_id               TEXT
);

INSERT INTO identities_v4 (id, serial, state, gateway, requester, ou, device_id,
        hardware_version, radio_config, led_config, category, cloud_address, api_address,
        gateway_services_address, verification_key, enrollment_id, cert_serial, cert_not_after,
        fcc_status, fcc_warnings, last_error, attempts, created_at, updated_at, server_id, fcc_info)
    SELECT id, serial, state, gateway, requester, ou, device_id,
        hardware_version, radio_config, led_config, category, cloud_address, api_address,
        gateway_services_address, verification_key, enrollment_id, cert_serial, cert_not_after,
        fcc_status, fcc_warnings, last_error, attempts, created_at, updated_at, server_id, fcc_info
    FROM identities;

DROP TABLE identities;
ALTER TABLE identities_v4 RENAME TO identities;

CREATE INDEX identities_deployed_by_id ON identities (id) WHERE state = 'deployed';
-- Start-up recovery, stats and the listing by state (`GET /v3/identities?state=`).
CREATE INDEX identities_state ON identities (state, id);

CREATE TABLE request_keys (
    request_id TEXT    PRIMARY KEY,
    serial     TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL
);
