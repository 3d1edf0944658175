-- pep store, SQLite schema v8: work orders of expected serials (issue #17).
--
-- * `orders`: one work order; its product fields (NULL: not set by the order) are the identity
--   defaults of its serials, between the request's own fields and `[defaults]`.
-- * `order_uploads`: one batch of explicit serials (the JSON list, or one CSV upload). Its rows are
--   written in many short transactions (a million serials must not hold SQLite's write lock for
--   seconds) and count only once the batch is `done`: an upload is all-or-nothing.
-- * `order_serials`: the explicit serials; the primary key makes a serial belong to one order.
-- * `order_ranges`: ranges kept as ranges (`prefix` + a number from..to, zero-padded to `width`).
-- * `identities.order_id`: the order an identity was provisioned for.

CREATE TABLE orders (
    order_id                 TEXT    PRIMARY KEY,
    state                    TEXT    NOT NULL CHECK (state IN ('open', 'closed')),
    hardware_version         TEXT,
    radio_config             TEXT,
    led_config               TEXT,
    category                 TEXT    CHECK (category IN ('production', 'development')),
    api_address              TEXT,
    gateway_services_address TEXT,
    created_by               TEXT    NOT NULL,
    created_at               INTEGER NOT NULL,
    closed_at                INTEGER
);

CREATE TABLE order_uploads (
    id         INTEGER PRIMARY KEY,
    order_id   TEXT    NOT NULL REFERENCES orders (order_id),
    state      TEXT    NOT NULL CHECK (state IN ('loading', 'done')),
    serials    INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL
);

CREATE INDEX order_uploads_by_order ON order_uploads (order_id, state);

CREATE TABLE order_serials (
    serial    TEXT    PRIMARY KEY,
    order_id  TEXT    NOT NULL,
    upload_id INTEGER NOT NULL,
    line      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX order_serials_by_upload ON order_serials (upload_id);

CREATE TABLE order_ranges (
    id       INTEGER PRIMARY KEY,
    order_id TEXT    NOT NULL REFERENCES orders (order_id),
    prefix   TEXT    NOT NULL,
    first_n  INTEGER NOT NULL,
    last_n   INTEGER NOT NULL,
    width    INTEGER
);

ALTER TABLE identities ADD COLUMN order_id TEXT;

CREATE INDEX identities_by_order ON identities (order_id, state) WHERE order_id IS NOT NULL;
