//! Walking the audit chains (`pep-server audit verify`): rows arrive chain by chain in chain order
//! (from the database, or from an export), each is checked against its stored hash, its
//! predecessor and the signed checkpoints. The first broken link of each chain is reported, with
//! the row id and what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use pep_ca::P256Certificate;

use crate::store::chain::{self, ChainHash, GENESIS};
use crate::store::{ChainRow, Checkpoint};

/// Where a walk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The database: every chain starts at `seq` 1 with the genesis `prev_hash`.
    Genesis,
    /// An export (which may start mid-chain): each chain starts at its first row, whose
    /// `prev_hash` is taken as given.
    FirstRow,
}

/// One thing wrong with the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row's contents are not what its hash was computed over: the row was edited.
    ContentChanged {
        /// Row id.
        id: i64,
        /// Chain.
        chain: String,
        /// Position.
        seq: i64,
    },
    /// The row's `prev_hash` is not the hash of the row before it in the chain.
    LinkBroken {
        /// Row id.
        id: i64,
        /// Chain.
        chain: String,
        /// Position.
        seq: i64,
        /// The row before it (none: the chain's first row, whose `prev_hash` must be all zeros).
        previous_id: Option<i64>,
    },
    /// Rows are missing before this one: its position is not the next one.
    Missing {
        /// Row id.
        id: i64,
        /// Chain.
        chain: String,
        /// The position expected.
        expected_seq: i64,
        /// Its position.
        seq: i64,
        /// The row before the gap (none: the gap is at the chain's start).
        previous_id: Option<i64>,
    },
    /// The row is out of order: its id is not above the previous row's (ids were swapped), or its
    /// position repeats, or its chain was interrupted by another one (an export).
    Reordered {
        /// Row id.
        id: i64,
        /// Chain.
        chain: String,
        /// Position.
        seq: i64,
        /// The row it should follow.
        previous_id: i64,
    },
    /// The row is in no chain (no `seq`, no hash, or a hash of the wrong length).
    Unchained {
        /// Row id.
        id: i64,
    },
    /// A checkpoint's signature does not verify with the CA certificate.
    BadSignature {
        /// Checkpoint id.
        checkpoint: i64,
        /// Chain.
        chain: String,
        /// Position signed.
        seq: i64,
    },
    /// The row a checkpoint signed is gone: the chain was cut off (or the row deleted).
    CheckpointRowMissing {
        /// Checkpoint id.
        checkpoint: i64,
        /// Chain.
        chain: String,
        /// Position signed.
        seq: i64,
        /// Row id signed.
        audit_id: i64,
        /// The chain's last position found (none: no row at all).
        last_seq: Option<i64>,
    },
    /// The row at a checkpoint's position is not the one signed (another id or hash).
    CheckpointMismatch {
        /// Checkpoint id.
        checkpoint: i64,
        /// Chain.
        chain: String,
        /// Position signed.
        seq: i64,
        /// Row id signed.
        audit_id: i64,
        /// The row found there.
        found_id: i64,
    },
}

/// A chain's name for people (SQLite's and the legacy rows' chain is the empty name).
fn chain_name(chain: &str) -> String {
    if chain.is_empty() {
        "\"\" (the default chain)".to_owned()
    } else {
        format!("{chain:?}")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ContentChanged { id, chain, seq } => write!(
                f,
                "audit row {id} (chain {}, seq {seq}): hash mismatch of the row contents: the row \
                 was changed after it was written",
                chain_name(chain)
            ),
            Problem::LinkBroken {
                id,
                chain,
                seq,
                previous_id: Some(prev),
            } => write!(
                f,
                "audit row {id} (chain {}, seq {seq}): prev_hash link broken: it does not match \
                 the hash of the previous row {prev} (a row was changed and re-hashed, replaced \
                 or inserted)",
                chain_name(chain)
            ),
            Problem::LinkBroken {
                id,
                chain,
                seq,
                previous_id: None,
            } => write!(
                f,
                "audit row {id} (chain {}, seq {seq}): prev_hash link broken: the first row of a \
                 chain must link to the genesis hash (all zeros)",
                chain_name(chain)
            ),
            Problem::Missing {
                id,
                chain,
                expected_seq,
                seq,
                previous_id,
            } => write!(
                f,
                "audit row {id} (chain {}, seq {seq}): row missing before it{}: expected seq \
                 {expected_seq}, {} row(s) deleted",
                chain_name(chain),
                previous_id.map_or_else(String::new, |p| format!(" (after row {p})")),
                seq.saturating_sub(*expected_seq)
            ),
            Problem::Reordered {
                id,
                chain,
                seq,
                previous_id,
            } => write!(
                f,
                "audit row {id} (chain {}, seq {seq}): rows reordered: it comes after row \
                 {previous_id} in the chain but its id is not above it (ids swapped or moved)",
                chain_name(chain)
            ),
            Problem::Unchained { id } => write!(
                f,
                "audit row {id}: in no chain (no seq or hash): it was inserted or altered outside \
                 pep-server"
            ),
            Problem::BadSignature {
                checkpoint,
                chain,
                seq,
            } => write!(
                f,
                "checkpoint {checkpoint} (chain {}, seq {seq}): the signature does not verify \
                 with the CA certificate: the checkpoint was forged or altered, or the CA \
                 certificate given is not the one that signed it",
                chain_name(chain)
            ),
            Problem::CheckpointRowMissing {
                checkpoint,
                chain,
                seq,
                audit_id,
                last_seq,
            } => match last_seq {
                Some(last) if last < seq => write!(
                    f,
                    "checkpoint {checkpoint} signed audit row {audit_id} (chain {}, seq {seq}) \
                     but the chain ends at seq {last}: rows were deleted from the tail",
                    chain_name(chain)
                ),
                Some(_) => write!(
                    f,
                    "checkpoint {checkpoint} signed audit row {audit_id} (chain {}, seq {seq}), \
                     which is missing",
                    chain_name(chain)
                ),
                None => write!(
                    f,
                    "checkpoint {checkpoint} signed audit row {audit_id} (chain {}, seq {seq}) \
                     but the chain has no row at all: it was deleted",
                    chain_name(chain)
                ),
            },
            Problem::CheckpointMismatch {
                checkpoint,
                chain,
                seq,
                audit_id,
                found_id,
            } => write!(
                f,
                "checkpoint {checkpoint} signed audit row {audit_id} (chain {}, seq {seq}) but \
                 row {found_id} with another hash is there now: the chain was rewritten",
                chain_name(chain)
            ),
        }
    }
}

/// What a chain looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Rows read.
    pub rows: u64,
    /// First position read.
    pub first_seq: i64,
    /// Last position read.
    pub last_seq: i64,
    /// Last row's id.
    pub last_id: i64,
    /// Last row's hash, hex.
    pub head_hash: String,
    /// Checkpoints of this chain that were checked against a row.
    pub checkpoints: u64,
    /// The chain's first problem, if any.
    pub broken: bool,
}

/// The result of a walk.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per chain.
    pub chains: BTreeMap<String, ChainSummary>,
    /// Every problem found (at most one broken link per chain, plus checkpoint problems).
    pub problems: Vec<Problem>,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Checkpoints not checkable: they sign a row before the first exported one.
    pub checkpoints_before_export: u64,
}

impl Report {
    /// True when every chain and checkpoint is intact.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, c) in &self.chains {
            writeln!(
                f,
                "chain {}: {} row(s), seq {}..{}, head row {} hash {}, {} checkpoint(s) matched{}",
                chain_name(name),
                c.rows,
                c.first_seq,
                c.last_seq,
                c.last_id,
                c.head_hash,
                c.checkpoints,
                if c.broken { ", BROKEN" } else { "" }
            )?;
        }
        if self.checkpoints == 0 {
            writeln!(
                f,
                "warning: no signed checkpoint: rows cut off the tail cannot be detected"
            )?;
        }
        if self.checkpoints_before_export > 0 {
            writeln!(
                f,
                "note: {} checkpoint(s) sign rows before the export's first row: not checked",
                self.checkpoints_before_export
            )?;
        }
        for p in &self.problems {
            writeln!(f, "FAILED: {p}")?;
        }
        if self.intact() {
            writeln!(
                f,
                "audit trail intact: {} chain(s), {} checkpoint(s)",
                self.chains.len(),
                self.checkpoints
            )
        } else {
            writeln!(
                f,
                "audit trail NOT intact: {} problem(s)",
                self.problems.len()
            )
        }
    }
}

/// The walk of the chain being read.
struct Walk {
    chain: String,
    next_seq: i64,
    prev_hash: ChainHash,
    last_id: i64,
    broken: bool,
}

/// The verifier: give it the checkpoints, then the rows (chain by chain, in chain order), then
/// [`Verifier::finish`].
pub struct Verifier {
    start: Start,
    /// Checkpoints by (chain, seq), with whether a row matched them.
    checkpoints: HashMap<(String, i64), Vec<(Checkpoint, bool)>>,
    walk: Option<Walk>,
    report: Report,
}

impl Verifier {
    /// Checks every checkpoint's signature with `ca` and keeps them to match the rows.
    pub fn new(start: Start, checkpoints: Vec<Checkpoint>, ca: &P256Certificate) -> Verifier {
        let mut report = Report {
            checkpoints: checkpoints.len() as u64,
            ..Report::default()
        };
        let mut by_row: HashMap<(String, i64), Vec<(Checkpoint, bool)>> = HashMap::new();
        for c in checkpoints {
            let signed = c
                .message()
                .is_some_and(|message| ca.verifies(&message, &c.signature));
            if !signed {
                report.problems.push(Problem::BadSignature {
                    checkpoint: c.id,
                    chain: c.server_id.clone(),
                    seq: c.seq,
                });
            }
            by_row
                .entry((c.server_id.clone(), c.seq))
                .or_default()
                .push((c, false));
        }
        Verifier {
            start,
            checkpoints: by_row,
            walk: None,
            report,
        }
    }

    /// A row that is in no chain at all (database rows without `seq` or hash).
    pub fn unchained(&mut self, id: i64) {
        self.report.problems.push(Problem::Unchained { id });
    }

    /// The next row.
    pub fn row(&mut self, row: &ChainRow) {
        let (Some(seq), Some(prev), Some(hash)) = (
            row.seq,
            row.prev_hash.as_deref().and_then(chain::to_hash),
            row.hash.as_deref().and_then(chain::to_hash),
        ) else {
            self.report.problems.push(Problem::Unchained { id: row.id });
            return;
        };
        if self.walk.as_ref().is_none_or(|w| w.chain != row.server_id) {
            self.start_chain(row, seq);
        }
        let Some(walk) = self.walk.as_mut() else {
            return;
        };
        let summary = self
            .report
            .chains
            .entry(row.server_id.clone())
            .or_insert_with(|| ChainSummary {
                rows: 0,
                first_seq: seq,
                last_seq: seq,
                last_id: row.id,
                head_hash: String::new(),
                checkpoints: 0,
                broken: false,
            });
        summary.rows += 1;
        summary.last_seq = seq;
        summary.last_id = row.id;
        summary.head_hash = hex::encode(hash);

        if let Some(checkpoints) = self.checkpoints.get_mut(&(row.server_id.clone(), seq)) {
            for (c, matched) in checkpoints.iter_mut() {
                *matched = true;
                if c.audit_id == row.id && c.hash == hash {
                    summary.checkpoints += 1;
                } else {
                    self.report.problems.push(Problem::CheckpointMismatch {
                        checkpoint: c.id,
                        chain: c.server_id.clone(),
                        seq,
                        audit_id: c.audit_id,
                        found_id: row.id,
                    });
                }
            }
        }
        if walk.broken {
            return; // the first broken link of a chain is reported; the rest is counted only
        }
        let problem = check_link(walk, row, seq, &prev, &hash);
        walk.next_seq = seq.saturating_add(1);
        walk.prev_hash = hash;
        walk.last_id = row.id;
        if let Some(problem) = problem {
            walk.broken = true;
            summary.broken = true;
            self.report.problems.push(problem);
        }
    }

    fn start_chain(&mut self, row: &ChainRow, seq: i64) {
        let seen = self.report.chains.contains_key(&row.server_id);
        let walk = match self.start {
            Start::Genesis => Walk {
                chain: row.server_id.clone(),
                next_seq: 1,
                prev_hash: GENESIS,
                last_id: i64::MIN,
                broken: false,
            },
            Start::FirstRow => Walk {
                chain: row.server_id.clone(),
                next_seq: seq,
                prev_hash: row
                    .prev_hash
                    .as_deref()
                    .and_then(chain::to_hash)
                    .unwrap_or(GENESIS),
                last_id: i64::MIN,
                broken: false,
            },
        };
        self.walk = Some(walk);
        if seen {
            // The chain was left for another and comes back: its rows are out of order.
            let previous_id = self
                .report
                .chains
                .get(&row.server_id)
                .map_or(0, |c| c.last_id);
            self.report.problems.push(Problem::Reordered {
                id: row.id,
                chain: row.server_id.clone(),
                seq,
                previous_id,
            });
            if let Some(w) = self.walk.as_mut() {
                w.broken = true;
            }
            if let Some(c) = self.report.chains.get_mut(&row.server_id) {
                c.broken = true;
            }
        }
    }

    /// The report, once every row was given: checkpoints whose row never came are problems.
    pub fn finish(mut self) -> Report {
        for ((chain, seq), checkpoints) in self.checkpoints {
            for (c, matched) in checkpoints {
                if matched {
                    continue;
                }
                let summary = self.report.chains.get(&chain);
                if self.start == Start::FirstRow && summary.is_none_or(|s| seq < s.first_seq) {
                    self.report.checkpoints_before_export += 1;
                    continue;
                }
                self.report.problems.push(Problem::CheckpointRowMissing {
                    checkpoint: c.id,
                    chain: chain.clone(),
                    seq,
                    audit_id: c.audit_id,
                    last_seq: summary.map(|s| s.last_seq),
                });
            }
        }
        self.report
    }
}

/// The checks of one row against its stored hash and the row before it.
fn check_link(
    walk: &Walk,
    row: &ChainRow,
    seq: i64,
    prev: &ChainHash,
    hash: &ChainHash,
) -> Option<Problem> {
    let chain = || row.server_id.clone();
    let first = walk.last_id == i64::MIN;
    if let Some(fields) = row.fields()
        && chain::row_hash(prev, &fields) != *hash
    {
        return Some(Problem::ContentChanged {
            id: row.id,
            chain: chain(),
            seq,
        });
    }
    if seq > walk.next_seq {
        return Some(Problem::Missing {
            id: row.id,
            chain: chain(),
            expected_seq: walk.next_seq,
            seq,
            previous_id: (!first).then_some(walk.last_id),
        });
    }
    if seq < walk.next_seq || (!first && row.id <= walk.last_id) {
        return Some(Problem::Reordered {
            id: row.id,
            chain: chain(),
            seq,
            previous_id: walk.last_id,
        });
    }
    if *prev != walk.prev_hash {
        return Some(Problem::LinkBroken {
            id: row.id,
            chain: chain(),
            seq,
            previous_id: (!first).then_some(walk.last_id),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> P256Certificate {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ca/CA_cert.pem");
        pep_ca::pem::read_p256_certificate(&path).unwrap()
    }

    /// A well-formed chain `chain` of `n` rows with ids 10, 20, 30, ...
    fn rows(chain: &str, n: i64) -> Vec<ChainRow> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let mut row = ChainRow {
                    id: seq * 10,
                    server_id: chain.to_owned(),
                    seq: Some(seq),
                    at_ms: 1_000 + seq,
                    serial: format!("SN{seq}"),
                    gateway: "127.0.0.1:1".to_owned(),
                    requester: "t".to_owned(),
                    event: "attempt".to_owned(),
                    fcc_status: None,
                    fcc_info: None,
                    fcc_warnings: String::new(),
                    detail: None,
                    duration_ms: None,
                    prev_hash: Some(prev.to_vec()),
                    hash: None,
                };
                let hash = chain::row_hash(&prev, &row.fields().unwrap());
                row.hash = Some(hash.to_vec());
                prev = hash;
                row
            })
            .collect()
    }

    fn walk(start: Start, rows: &[ChainRow]) -> Report {
        let mut v = Verifier::new(start, Vec::new(), &ca());
        for r in rows {
            v.row(r);
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_passes_and_each_change_is_named() {
        let good = rows("a", 5);
        assert!(walk(Start::Genesis, &good).intact());
        // From the middle (an export): only with Start::FirstRow.
        assert!(walk(Start::FirstRow, &good[2..]).intact());
        assert!(matches!(
            walk(Start::Genesis, &good[2..]).problems[..],
            [Problem::Missing {
                id: 30,
                expected_seq: 1,
                ..
            }]
        ));

        let mut edited = good.clone();
        edited[2].detail = Some("x".to_owned());
        assert!(matches!(
            walk(Start::Genesis, &edited).problems[..],
            [Problem::ContentChanged { id: 30, .. }]
        ));

        let mut deleted = good.clone();
        deleted.remove(2);
        assert!(matches!(
            walk(Start::Genesis, &deleted).problems[..],
            [Problem::Missing {
                id: 40,
                expected_seq: 3,
                previous_id: Some(20),
                ..
            }]
        ));

        let mut swapped = good.clone();
        swapped[1].id = 30;
        swapped[2].id = 20;
        assert!(matches!(
            walk(Start::Genesis, &swapped).problems[..],
            [Problem::Reordered {
                id: 20,
                previous_id: 30,
                ..
            }]
        ));

        // Re-hashed after an edit: its own hash is right, the next row's link is not.
        let mut rehashed = good.clone();
        rehashed[2].detail = Some("x".to_owned());
        let prev = chain::to_hash(rehashed[2].prev_hash.as_deref().unwrap()).unwrap();
        rehashed[2].hash = Some(chain::row_hash(&prev, &rehashed[2].fields().unwrap()).to_vec());
        assert!(matches!(
            walk(Start::Genesis, &rehashed).problems[..],
            [Problem::LinkBroken {
                id: 40,
                previous_id: Some(30),
                ..
            }]
        ));

        let mut unchained = good.clone();
        unchained[1].hash = None;
        assert!(
            walk(Start::Genesis, &unchained)
                .problems
                .contains(&Problem::Unchained { id: 20 })
        );
    }

    #[test]
    fn chains_are_walked_apart_and_a_forged_checkpoint_fails() {
        let mut both = rows("a", 3);
        both.extend(rows("b", 2));
        let report = walk(Start::Genesis, &both);
        assert!(report.intact(), "{report}");
        assert_eq!(report.chains.len(), 2);

        let head = both[2].hash.clone().unwrap();
        let forged = Checkpoint {
            id: 1,
            server_id: "a".to_owned(),
            seq: 3,
            audit_id: 30,
            hash: head,
            at_ms: 5,
            signature: vec![0x30, 0x00],
        };
        let mut v = Verifier::new(Start::Genesis, vec![forged], &ca());
        for r in &both {
            v.row(r);
        }
        let report = v.finish();
        assert!(matches!(
            report.problems[..],
            [Problem::BadSignature { checkpoint: 1, .. }]
        ));
        // Its row matched: the signature is what failed.
        assert_eq!(report.chains["a"].checkpoints, 1);
    }
}
