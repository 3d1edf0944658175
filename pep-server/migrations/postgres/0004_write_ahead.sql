-- pep store, PostgreSQL schema v4: never lose an identity (issue #13).
--
-- * state `in_doubt`: the server stopped (or its lease expired) after the identity's first byte
--   could have reached FCC; the identity may be on the gateway. Only an operator (resolve) or the
--   same request key ends it.
-- * `cert_der`: the device certificate (public; never a private key), written ahead of the
--   injection together with its serial number and enrollment ID.
-- * `request_id`: the client's request key of the latest attempt (idempotent retry).
-- * `request_keys`: every request key ever used, with its serial: its primary key makes a key name
--   one serial across every server.

ALTER TABLE identities DROP CONSTRAINT identities_state_check;
ALTER TABLE identities ADD CONSTRAINT identities_state_check
    CHECK (state IN ('in_flight', 'deployed', 'failed', 'in_doubt'));
ALTER TABLE identities ADD COLUMN cert_der BYTEA;
ALTER TABLE identities ADD COLUMN request_id TEXT;

DROP INDEX identities_state;
-- Stats and the listing by state (`GET /v3/identities?state=`).
CREATE INDEX identities_state ON identities (state, id);

CREATE TABLE request_keys (
    request_id TEXT   PRIMARY KEY,
    serial     TEXT   NOT NULL,
    at_ms      BIGINT NOT NULL
);
