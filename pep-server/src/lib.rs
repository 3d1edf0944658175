//! The pep provisioning core and HTTP daemon.
//!
//! - [`config`]: `pep.toml`, its defaults and [`config::Config::check`].
//! - [`store`]: the identity store (SQLite now; all SQL lives there).
//! - [`provision`]: one provisioning, start to finish ([`provision::Provisioner`]), usable without HTTP.
#![forbid(unsafe_code)]

pub mod config;
pub mod provision;
pub mod store;
