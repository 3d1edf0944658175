-- pep store, SQLite schema v6: the tamper-evident audit trail (issue #16).
--
-- * audit `server_id`, `seq`, `prev_hash`, `hash`: every row is a link of a hash chain
--   (store/chain.rs defines the encoding). SQLite has one chain, `server_id = ''`.
-- * `audit_legacy`: the rows written before v6, chained once by the next pep-server start (the
--   hash is computed in Rust, by the same code as every other row); the marker row is then deleted.
-- * `audit_checkpoints`: the head of a chain, signed by the factory CA (ECDSA P-256 SHA-256, DER),
--   so that cutting off the tail of the trail is caught too.

ALTER TABLE audit ADD COLUMN server_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN seq INTEGER;
ALTER TABLE audit ADD COLUMN prev_hash BLOB;
ALTER TABLE audit ADD COLUMN hash BLOB;

-- One row per position of each chain; the head is the highest seq (an index lookup).
CREATE UNIQUE INDEX audit_chain ON audit (server_id, seq);

CREATE TABLE audit_legacy (
    up_to_id INTEGER NOT NULL
);
INSERT INTO audit_legacy (up_to_id) SELECT MAX(id) FROM audit HAVING COUNT(*) > 0;

CREATE TABLE audit_checkpoints (
    id        INTEGER PRIMARY KEY,
    server_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    audit_id  INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    at_ms     INTEGER NOT NULL,
    signature BLOB    NOT NULL
);
CREATE INDEX audit_checkpoints_by_chain ON audit_checkpoints (server_id, seq);
