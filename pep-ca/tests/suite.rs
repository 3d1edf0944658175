//! All of pep-ca's integration tests in one binary: one compile and one link of the crate's
//! dependencies instead of one per file (CI's build time). `autotests = false` in Cargo.toml keeps
//! Cargo from also building each file alone. One file's tests: `cargo test -p pep-ca --test suite --
//! <file>::`.

mod common;

mod crl;
mod csr;
mod examples;
mod issue;
mod load;
mod pkcs11;
mod serials_and_secrets;
