//! The audit trail's hash chain: the **one** canonical encoding of an audit row and of a signed
//! checkpoint. The writers (the SQLite writer thread, the PostgreSQL transactions, the legacy
//! backfill, `migrate-store`), `pep-server audit verify` and `audit export` all hash through
//! [`row_hash`], so they cannot disagree on what a row is.
//!
//! # Chains
//!
//! Rows form one chain per writer: `server_id` names the chain (`""` for SQLite, which has one
//! writer per file, and for rows written before the chain existed; a PostgreSQL server's
//! `server_id` otherwise), `seq` numbers its rows 1, 2, 3, … with no gap. Row `seq = n` stores
//! `prev_hash` = the `hash` of row `n - 1` (32 zero bytes for `n = 1`) and
//! `hash = SHA-256(encoding(prev_hash, row))`. Only one process ever appends to a chain, so
//! writers of different servers never wait for each other.
//!
//! # Row encoding (version 1)
//!
//! The SHA-256 input is the concatenation of:
//!
//! 1. the domain tag, as a text field: `pep-audit-row/v1`;
//! 2. `prev_hash`: 32 raw bytes;
//! 3. the fields, in this order: `server_id` (text), `seq` (integer), `at_ms` (integer), `serial`,
//!    `gateway`, `requester`, `event` (texts), `fcc_status` (integer or null), `fcc_info` (text or
//!    null), `fcc_warnings` (text), `detail` (text or null), `duration_ms` (integer or null).
//!
//! Each field is self-delimiting, so no two different rows encode alike:
//!
//! * null: the byte `0x00`;
//! * text: the byte `0x01`, its UTF-8 length as 4 bytes big-endian, the UTF-8 bytes;
//! * integer: the byte `0x02`, the value as 8 bytes big-endian two's complement.
//!
//! The row `id` is not hashed (PostgreSQL assigns it from a sequence shared by all servers, after
//! the hash is known); `audit verify` checks instead that ids grow along each chain, so swapping
//! rows' ids is caught as a reordering.
//!
//! # Checkpoint encoding (version 1)
//!
//! The CA signs (ECDSA P-256 with SHA-256): text `pep-audit-checkpoint/v1`, `server_id` (text),
//! `seq` (integer: the head's position = the number of rows in the chain), `audit_id` (integer: the
//! head row's id), the head's `hash` (32 raw bytes), `at_ms` (integer: when it was signed).

use sha2::{Digest, Sha256};

/// Length of a chain hash (SHA-256).
pub const HASH_LEN: usize = 32;

/// A chain hash.
pub type ChainHash = [u8; HASH_LEN];

/// The `prev_hash` of a chain's first row.
pub const GENESIS: ChainHash = [0; HASH_LEN];

/// The chain of SQLite (one writer per file) and of the rows written before the chain existed.
pub const DEFAULT_CHAIN: &str = "";

const ROW_TAG: &str = "pep-audit-row/v1";
const CHECKPOINT_TAG: &str = "pep-audit-checkpoint/v1";

/// The hashed columns of one audit row, borrowed from wherever the row is (a row being written, a
/// row read back, a line of an export).
#[derive(Debug, Clone, Copy)]
pub struct RowFields<'a> {
    /// The chain.
    pub server_id: &'a str,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// ms since the epoch.
    pub at_ms: i64,
    /// Serial.
    pub serial: &'a str,
    /// `ip:port`.
    pub gateway: &'a str,
    /// Who asked.
    pub requester: &'a str,
    /// The event's stored name.
    pub event: &'a str,
    /// FCC ReturnStatus.
    pub fcc_status: Option<i64>,
    /// FCC InfoMessage.
    pub fcc_info: Option<&'a str>,
    /// FCC warnings, one per line.
    pub fcc_warnings: &'a str,
    /// Detail text.
    pub detail: Option<&'a str>,
    /// Attempt duration, ms.
    pub duration_ms: Option<i64>,
}

/// Feeds the self-delimiting field encoding into a hasher (or a buffer).
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn text(&mut self, s: &str) {
        self.put(&[0x01]);
        // A text longer than 4 GiB cannot be stored in either database.
        self.put(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.put(s.as_bytes());
    }

    fn int(&mut self, v: i64) {
        self.put(&[0x02]);
        self.put(&v.to_be_bytes());
    }

    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => self.put(&[0x00]),
        }
    }

    fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int(v),
            None => self.put(&[0x00]),
        }
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// `hash` of a row whose predecessor's hash is `prev` (see the module documentation). Hashes the
/// fields in place: no allocation on the writers' hot path.
pub fn row_hash(prev: &ChainHash, f: &RowFields<'_>) -> ChainHash {
    let mut h = Sha256::new();
    h.text(ROW_TAG);
    h.put(prev);
    h.text(f.server_id);
    h.int(f.seq);
    h.int(f.at_ms);
    h.text(f.serial);
    h.text(f.gateway);
    h.text(f.requester);
    h.text(f.event);
    h.opt_int(f.fcc_status);
    h.opt_text(f.fcc_info);
    h.text(f.fcc_warnings);
    h.opt_text(f.detail);
    h.opt_int(f.duration_ms);
    h.finalize().into()
}

/// The head of a checkpoint, as signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointFields<'a> {
    /// The chain.
    pub server_id: &'a str,
    /// The head's `seq` (= rows in the chain).
    pub seq: i64,
    /// The head row's id.
    pub audit_id: i64,
    /// The head row's hash.
    pub hash: &'a ChainHash,
    /// When the checkpoint was made, ms since the epoch.
    pub at_ms: i64,
}

/// The bytes the CA signs for a checkpoint (see the module documentation).
pub fn checkpoint_message(c: &CheckpointFields<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.text(CHECKPOINT_TAG);
    m.text(c.server_id);
    m.int(c.seq);
    m.int(c.audit_id);
    m.put(c.hash);
    m.int(c.at_ms);
    m
}

/// The last row of a chain as its one writer knows it: what the next row links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Its `seq` (0: the chain is empty).
    pub seq: i64,
    /// Its row id (0: the chain is empty).
    pub id: i64,
    /// Its hash ([`GENESIS`] when the chain is empty).
    pub hash: ChainHash,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            id: 0,
            hash: GENESIS,
        }
    }
}

/// The chain columns of a row about to be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Its position.
    pub seq: i64,
    /// The previous row's hash.
    pub prev_hash: ChainHash,
    /// Its own hash.
    pub hash: ChainHash,
}

impl ChainHead {
    /// The link of the row after this head; `fields(seq)` gives the row's hashed columns.
    pub fn link(&self, fields: &RowFields<'_>) -> Link {
        Link {
            seq: fields.seq,
            prev_hash: self.hash,
            hash: row_hash(&self.hash, fields),
        }
    }

    /// The next `seq`.
    pub fn next_seq(&self) -> i64 {
        self.seq + 1
    }

    /// The head once `link` is stored as row `id`.
    pub fn after(link: &Link, id: i64) -> ChainHead {
        ChainHead {
            seq: link.seq,
            id,
            hash: link.hash,
        }
    }

    /// From stored columns; a hash of the wrong length is a corrupt store.
    pub fn stored(seq: i64, id: i64, hash: &[u8]) -> Result<ChainHead, super::StoreError> {
        let hash = to_hash(hash).ok_or_else(|| {
            super::StoreError::Corrupt(format!(
                "audit row {id}: its hash has {} bytes, not {HASH_LEN}",
                hash.len()
            ))
        })?;
        Ok(ChainHead { seq, id, hash })
    }
}

/// A stored hash, if it has the right length.
pub fn to_hash(bytes: &[u8]) -> Option<ChainHash> {
    ChainHash::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>() -> RowFields<'a> {
        RowFields {
            server_id: "",
            seq: 1,
            at_ms: 1_700_000_000_000,
            serial: "SN1",
            gateway: "127.0.0.1:9",
            requester: "line-1",
            event: "attempt",
            fcc_status: None,
            fcc_info: None,
            fcc_warnings: "",
            detail: None,
            duration_ms: None,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = row_hash(&GENESIS, &fields());
        let changed = [
            RowFields {
                server_id: "a",
                ..fields()
            },
            RowFields { seq: 2, ..fields() },
            RowFields {
                at_ms: 1,
                ..fields()
            },
            RowFields {
                serial: "SN2",
                ..fields()
            },
            RowFields {
                gateway: "127.0.0.1:8",
                ..fields()
            },
            RowFields {
                requester: "x",
                ..fields()
            },
            RowFields {
                event: "deployed",
                ..fields()
            },
            RowFields {
                fcc_status: Some(0),
                ..fields()
            },
            RowFields {
                fcc_info: Some(""),
                ..fields()
            },
            RowFields {
                fcc_warnings: "w",
                ..fields()
            },
            RowFields {
                detail: Some(""),
                ..fields()
            },
            RowFields {
                duration_ms: Some(0),
                ..fields()
            },
        ];
        for f in &changed {
            assert_ne!(row_hash(&GENESIS, f), base, "{f:?}");
        }
        assert_ne!(row_hash(&[1; 32], &fields()), base);
        assert_eq!(row_hash(&GENESIS, &fields()), base);
    }

    #[test]
    fn text_boundaries_are_part_of_the_encoding() {
        // "ab" + "c" and "a" + "bc" must not collide.
        let a = RowFields {
            serial: "ab",
            gateway: "c",
            ..fields()
        };
        let b = RowFields {
            serial: "a",
            gateway: "bc",
            ..fields()
        };
        assert_ne!(row_hash(&GENESIS, &a), row_hash(&GENESIS, &b));
    }
}
