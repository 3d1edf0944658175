//! The tamper-evident audit trail, beyond writing it (which the store does, store/chain.rs):
//!
//! - [`checkpoint`]: the periodic signed checkpoints of the chain heads (a running server);
//! - [`verify`]: walking the chains and naming the first broken link (`pep-server audit verify`);
//! - [`export`]: the chains as JSON Lines (`pep-server audit export`), and reading them back.

pub mod checkpoint;
pub mod export;
pub mod verify;

use std::path::PathBuf;

use crate::store::StoreError;

/// Errors of the audit commands (not what they find: that is a [`verify::Problem`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of an export is not an export line.
    #[error("{}, line {line}: not an audit export line: {detail}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// `--since` is neither an RFC 3339 time nor ms since the epoch.
    #[error(
        "--since `{0}` is neither an RFC 3339 time (2026-12-07T08:00:00Z) nor ms since the epoch"
    )]
    Since(String),
    /// The CA certificate could not be read.
    #[error("the CA certificate: {0}")]
    CaCert(#[from] pep_ca::CaError),
}
