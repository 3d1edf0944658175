//! The pep provisioning core and HTTP daemon.
//!
//! - [`config`]: `pep.toml`, its defaults and [`config::Config::check`].
//! - [`model`]: the gateway request, typed and validated once ([`model::GatewayParams`]).
//! - [`clock`]: the time the core reads ([`clock::Clock`]).
//! - [`store`]: the identity store (SQLite, or PostgreSQL shared by several servers; all SQL lives there).
//! - [`provision`]: one provisioning, start to finish ([`provision::Provisioner`]), usable without HTTP.
//! - [`activity`]: the live events the provisioner publishes (attempt started / finished).
//! - [`http`]: the HTTP API (axum): routes, authentication, limits, error answers.
//! - [`metrics`]: Prometheus counters, written out by hand.
#![forbid(unsafe_code)]

pub mod activity;
pub mod category;
pub mod clock;
pub mod config;
pub mod http;
pub mod metrics;
pub mod model;
pub mod provision;
pub mod store;
