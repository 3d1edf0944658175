//! All of fake-fcc's integration tests in one binary: one compile and one link of the crate's
//! dependencies instead of one per file (CI's build time). `autotests = false` in Cargo.toml keeps
//! Cargo from also building each file alone. One file's tests: `cargo test -p fake-fcc --test suite --
//! <file>::`.

mod common;

mod device;
mod examples;
mod network;
