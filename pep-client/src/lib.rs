//! The gateway-side client of pep: the library behind the `pep-cli` binary.
//!
//! `pep-cli` is a drop-in replacement for the old bash `pep-cli` (same commands, flags, defaults
//! and output files) plus `provision`, which runs the whole gateway flow: start FCC, read its
//! address, get the identity injected, check FCC's exit status, install `pal/` and `identity.json`.
//! See `docs/pep-cli.md` for the user documentation and the exit codes.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

pub mod api;
pub mod cli;
pub mod commands;
pub mod completions;
pub mod csv;
pub mod error;
pub mod fcc;
pub mod files;
pub mod fss;
pub mod retry;
pub mod serial;

pub use error::{CliError, exit};
