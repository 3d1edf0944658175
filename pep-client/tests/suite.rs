//! All of pep-client's integration tests in one binary: one compile and one link of the crate's
//! dependencies instead of one per file (CI's build time). `autotests = false` in Cargo.toml keeps
//! Cargo from also building each file alone. One file's tests: `cargo test -p pep-client --test suite --
//! <file>::`.

mod common;

mod completions;
mod e2e;
mod export_all;
mod https_server;
mod lost_answer;
mod revoke;
mod tls;
