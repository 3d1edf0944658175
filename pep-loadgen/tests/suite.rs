//! All of pep-loadgen's integration tests in one binary: one compile and one link of the crate's
//! dependencies instead of one per file (CI's build time). `autotests = false` in Cargo.toml keeps
//! Cargo from also building each file alone. One file's tests: `cargo test -p pep-loadgen --test suite --
//! <file>::`.

mod fleet;
mod fleet_tls;
