-- pep store, SQLite: the outbox of the event webhooks (issue #17, `[[hooks.events]]`).
--
-- One row per event and receiver, inserted in the same transaction as the state change it
-- reports (only when receivers are configured), then delivered by the server's delivery task:
-- `pending` (never tried) → `delivered`, or `failing` (tried, retried with backoff) → `delivered`
-- or, past the receiver's maximum age, `dead`. The payload is the JSON POSTed (never a secret or
-- a private key). `lease_owner`/`lease_until`: the server sending the row right now.

CREATE TABLE hook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    receiver        TEXT    NOT NULL,
    serial          TEXT    NOT NULL,
    event           TEXT    NOT NULL CHECK (event IN ('deployed', 'failed', 'revoked')),
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL
                            CHECK (state IN ('pending', 'delivered', 'failing', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    UNIQUE (event_id, receiver)
);

-- The delivery task's scan: rows still to send that are due. By due time, so that a backlog
-- waiting for a receiver that is down (failing, retried later) is not read at every poll.
CREATE INDEX hook_deliveries_open ON hook_deliveries (next_attempt_at, id)
    WHERE state IN ('pending', 'failing');
-- In order per (receiver, serial): is an earlier row of the same serial still open?
CREATE INDEX hook_deliveries_open_by_serial ON hook_deliveries (receiver, serial, id)
    WHERE state IN ('pending', 'failing');
-- The listing by state (`GET /v3/hooks/deliveries?state=`) and the counts of /metrics.
CREATE INDEX hook_deliveries_state ON hook_deliveries (state, id);
