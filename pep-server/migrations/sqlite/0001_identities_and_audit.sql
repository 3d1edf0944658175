-- pep store, SQLite schema v1.
-- Never a private key here: device keys are zeroized after injection, the CA key stays in its file.

-- One row per gateway serial. `id` is the paging cursor of the enrollment-ID list (keyset paging).
CREATE TABLE identities (
    id                       INTEGER PRIMARY KEY,
    serial                   TEXT    NOT NULL UNIQUE,
    state                    TEXT    NOT NULL CHECK (state IN ('in_flight', 'deployed', 'failed')),
    -- ip:port of the FCC of the latest attempt, and who asked for it
    gateway                  TEXT    NOT NULL,
    requester                TEXT    NOT NULL,
    -- unknown at the factory (assigned at first connection): stay empty
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
    -- set once deployed
    enrollment_id            TEXT,
    cert_serial              TEXT,
    cert_not_after           INTEGER,          -- unix seconds
    -- FCC's answer of the latest attempt: ReturnStatus and WarningInfo lines joined by '\n'
    fcc_status               INTEGER,
    fcc_warnings             TEXT    NOT NULL DEFAULT '',
    last_error               TEXT,
    attempts                 INTEGER NOT NULL DEFAULT 1,
    created_at               INTEGER NOT NULL, -- ms since the epoch, at the latest attempt's start
    updated_at               INTEGER NOT NULL  -- ms since the epoch
);

-- Paging over deployed gateways stays an index range scan however many failed rows there are.
CREATE INDEX identities_deployed_by_id ON identities (id) WHERE state = 'deployed';
-- Start-up recovery and stats look at in-flight / failed rows.
CREATE INDEX identities_state ON identities (state);

-- Append-only trail of every attempt and outcome.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    serial      TEXT    NOT NULL,
    gateway     TEXT    NOT NULL,
    requester   TEXT    NOT NULL,
    -- attempt | deployed | failed | conflict | interrupted
    event       TEXT    NOT NULL,
    fcc_status  INTEGER,
    detail      TEXT,
    duration_ms INTEGER
);

CREATE INDEX audit_by_serial ON audit (serial, id);
