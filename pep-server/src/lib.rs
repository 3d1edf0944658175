//! The pep provisioning core and HTTP daemon.
//!
//! - [`config`]: `pep.toml`, its defaults and [`config::Config::check`].
//! - [`model`]: the gateway request, typed and validated once ([`model::GatewayParams`]).
//! - [`clock`]: the time the core reads ([`clock::Clock`]).
//! - [`store`]: the identity store (SQLite, or PostgreSQL shared by several servers; all SQL lives there).
//! - [`orders`]: work orders of expected serials; [`hook`]: the pre-provisioning hook.
//! - [`provision`]: one provisioning, start to finish ([`provision::Provisioner`]), usable without HTTP;
//!   also the end of an identity (revocation) and the CRL ([`crl`]).
//! - [`audit`]: the tamper-evident audit trail's checkpoints, verification and export.
//! - [`activity`]: the live events the provisioner publishes (attempt started / finished).
//! - [`http`]: the HTTP API (axum): routes, authentication, limits, error answers.
//! - [`metrics`]: Prometheus counters, written out by hand.
//! - [`hooks`]: the event webhooks' delivery task (the outbox it sends is the store's).
//! - [`cloud`]: the sender of the store's claim outbox (claims in the device-management cloud).
//!
//! # Example
//!
//! The core without HTTP: load a configuration, open its store, provision one gateway, read the
//! identity back. This runs as a doctest against an in-process fake-fcc gateway, with the
//! repository's TEST-ONLY demo CA (`examples/embed_provisioner.rs` is the commented long form).
//!
//! ```
//! use std::sync::Arc;
//! use pep_server::config::Config;
//! use pep_server::model::GatewayFields;
//! use pep_server::provision::{ProvisionRequest, Provisioner};
//! use pep_server::store::Store;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
//! # let dir = tempfile::tempdir()?;
//! # let (gateway, handle) = fake_fcc::spawn(fake_fcc::GatewayConfig::default()).await?;
//! let mut config = Config::load(repo.join("fixtures/demo/pep.toml"))?;
//! config.resolve_relative_to(repo);
//! config.database_url = format!("sqlite://{}", dir.path().join("pep.sqlite").display());
//! let store = Store::open(&config.database_url).await?;
//! let provisioner = Provisioner::new(Arc::new(config), store)?;
//!
//! // Text fields as the HTTP API takes them, checked once; absent ones get the configured defaults.
//! let fields = GatewayFields {
//!     serial_number: Some("GW-0042".to_owned()),
//!     ip: Some(gateway.ip().to_string()),
//!     port: Some(gateway.port().to_string()),
//!     verification_key: Some("a1b2c3-d4e5f6/1a2b3c-35a4e900".to_owned()),
//!     ..GatewayFields::default()
//! };
//! let params = provisioner.gateway_params(fields, None)?;
//! let identity = provisioner
//!     .provision(ProvisionRequest { params, requester: "station-7".to_owned(), request_key: None })
//!     .await?;
//! println!("enrollment ID {}", identity.enrollment_id.as_str());
//!
//! let stored = provisioner.store().enrollment_id("GW-0042").await?;
//! assert_eq!(stored.as_deref(), Some(identity.enrollment_id.as_str()));
//! # handle.shutdown();
//! # provisioner.store().close().await;
//! # Ok(())
//! # }
//! ```
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

pub mod activity;
pub mod audit;
pub mod category;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod crl;
pub mod hook;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod model;
pub mod netpolicy;
pub mod orders;
pub mod provision;
pub mod store;
