//! `pep-server audit export`: the audit chains as JSON Lines, one object per line — `"type":
//! "row"` lines (every column of [`ChainRow`], hashes in hex), chain by chain in chain order, then
//! `"type": "checkpoint"` lines (the signed checkpoints of the exported rows) — and reading an
//! export back for `audit verify --file`, without the database.
//!
//! `--since` selects, in each chain, the first row written at or after that time and every row
//! after it: an export is a contiguous piece of each chain, which verifies from its first row's
//! `prev_hash` on.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::Path;

use super::AuditError;
use super::verify::{Report, Start, Verifier};
use crate::store::{AuditSource, ChainRow, Checkpoint};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    /// An audit row.
    Row(ChainRow),
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// Rows.
    pub rows: u64,
    /// Chains with at least one row.
    pub chains: u64,
    /// Checkpoints.
    pub checkpoints: u64,
}

/// `--since`: an RFC 3339 time or ms since the epoch.
pub fn parse_since(text: &str) -> Result<i64, AuditError> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| AuditError::Since(text.to_owned()));
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| AuditError::Since(text.to_owned()))?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| AuditError::Since(text.to_owned()))
}

/// Writes the rows of each chain from its first row at or after `since_ms` on, then their
/// checkpoints, to `out` (which `path` names in errors).
pub async fn export(
    source: &AuditSource,
    since_ms: i64,
    out: &mut (dyn Write + Send),
    path: &Path,
) -> Result<ExportSummary, AuditError> {
    // Read first: every row a checkpoint signs was committed before it, so the rows read next
    // include it.
    let checkpoints = source.checkpoints().await?;
    let mut summary = ExportSummary::default();
    // Per chain: the first exported seq (none: nothing at or after `since` yet).
    let mut first_seq: HashMap<String, i64> = HashMap::new();
    let mut failed = None;
    source
        .for_each_row(&mut |row: ChainRow| {
            let (Some(seq), chain) = (row.seq, &row.server_id) else {
                return ControlFlow::Continue(());
            };
            if !first_seq.contains_key(chain) {
                if row.at_ms < since_ms {
                    return ControlFlow::Continue(());
                }
                first_seq.insert(chain.clone(), seq);
                summary.chains += 1;
            }
            summary.rows += 1;
            match write_line(out, &ExportLine::Row(row)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
        .await?;
    if let Some(source) = failed {
        return Err(AuditError::Io {
            path: path.to_owned(),
            source,
        });
    }
    for c in checkpoints {
        if first_seq
            .get(&c.server_id)
            .is_some_and(|first| c.seq >= *first)
        {
            summary.checkpoints += 1;
            write_line(out, &ExportLine::Checkpoint(c)).map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    out.flush().map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(summary)
}

fn write_line(out: &mut (dyn Write + Send), line: &ExportLine) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// Reads the export at `path` line by line, giving each line to `f`.
fn read_lines(path: &Path, mut f: impl FnMut(ExportLine)) -> Result<(), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line).map_err(|e| AuditError::Line {
            path: path.to_owned(),
            line: line_no,
            detail: e.to_string(),
        })?;
        f(parsed);
    }
    Ok(())
}

/// `audit verify --file`: checks an export without the database. Each chain verifies from its
/// first row's `prev_hash`; checkpoints are checked against `ca` and the exported rows.
pub fn verify_file(path: &Path, ca: &pep_ca::P256Certificate) -> Result<Report, AuditError> {
    // Two passes: the checkpoints first (they follow the rows in the file).
    let mut checkpoints = Vec::new();
    read_lines(path, |line| {
        if let ExportLine::Checkpoint(c) = line {
            checkpoints.push(c);
        }
    })?;
    let mut verifier = Verifier::new(Start::FirstRow, checkpoints, ca);
    read_lines(path, |line| {
        if let ExportLine::Row(row) = line {
            verifier.row(&row);
        }
    })?;
    Ok(verifier.finish())
}

/// `audit verify --database`: walks every chain of the database from its genesis.
pub async fn verify_database(
    source: &AuditSource,
    ca: &pep_ca::P256Certificate,
) -> Result<Report, AuditError> {
    let checkpoints = source.checkpoints().await?;
    let mut verifier = Verifier::new(Start::Genesis, checkpoints, ca);
    for id in source.unchained(100).await? {
        verifier.unchained(id);
    }
    source
        .for_each_row(&mut |row: ChainRow| {
            verifier.row(&row);
            ControlFlow::Continue(())
        })
        .await?;
    Ok(verifier.finish())
}
