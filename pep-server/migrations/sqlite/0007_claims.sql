-- pep store, SQLite schema v7: the cloud claim outbox (issue #18).
--
-- One row per enrollment ID to claim (`action = 'claim'`) or to free (`action = 'delete'`) in the
-- device-management cloud. A claim row is inserted in the same transaction that marks its gateway
-- `deployed` (only when `[cloud] mode` is not `off`); the sender settles it later, so nothing is
-- lost to a restart or a cloud outage and provisioning never waits for the cloud.
--
-- * state: pending → claimed | already_claimed (409) | rejected (400/401/403) | retrying (5xx,
--   429, network; `next_attempt_at` says when); `deleted` for a delete row that is done.
-- * claimed_by / lease_until: the server that has the row in hand, until when (several servers on
--   PostgreSQL; one per SQLite file, which clears every lease at start-up).
-- * bulk_task: the bulk upload task the row went out in (polled again after a restart).
-- * cloud_id: the cloud's own id of the claim (for `DELETE /v3/device-enrollments/{id}`).

CREATE TABLE claims (
    id              INTEGER PRIMARY KEY,
    enrollment_id   TEXT    NOT NULL,
    serial          TEXT    NOT NULL,
    action          TEXT    NOT NULL DEFAULT 'claim' CHECK (action IN ('claim', 'delete')),
    state           TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'claimed', 'already_claimed', 'rejected',
                                             'retrying', 'deleted')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT,
    lease_until     INTEGER,
    bulk_task       TEXT,
    cloud_id        TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (enrollment_id, action)
);

-- The sender's due rows, and the listing by state (`GET /v3/claims?state=`).
CREATE INDEX claims_due ON claims (state, next_attempt_at);
CREATE INDEX claims_state ON claims (state, id);
