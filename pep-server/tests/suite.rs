//! All of pep-server's integration tests in one binary.
//!
//! Each file beside this one was its own test binary, and every one of them linked the whole
//! server with its dependencies and instantiated the same generic code (tokio, axum, sqlx, reqwest)
//! again: 38 links made up most of CI's build time. One binary compiles and links that once.
//! `autotests = false` in Cargo.toml keeps Cargo from also building each file alone. Run one file's
//! tests with `cargo test -p pep-server --test suite -- robust_chaos::`.

mod floor_support;
mod http_support;
mod pg_support;

mod audit_chain;
mod cloud_claims;
mod core_config;
mod core_provision;
mod core_secrets;
mod core_store;
mod deploy_files;
mod examples;
mod floor_events;
mod floor_layout;
mod floor_page;
mod floor_store;
mod hooks_events;
mod hooks_preprovision;
mod hsm_pkcs11;
mod http_export;
mod http_hostile;
mod http_ops;
mod http_provision;
mod http_security;
mod http_tls;
mod lifecycle_outboxes;
mod lifecycle_revoke;
mod ops_files;
mod orders;
mod orders_store;
mod pg_audit_chain;
mod pg_cloud_claims;
mod pg_config;
mod pg_migrate;
mod pg_revoke;
mod pg_store;
mod pg_two_servers;
mod robust_chaos;
mod robust_durability;
mod robust_http;
mod robust_identity;
mod robust_startup;
