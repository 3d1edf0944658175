//! The pep provisioning core and HTTP daemon.
//!
//! - [`config`]: `pep.toml`, its defaults and [`config::Config::check`].
//! - [`store`]: the identity store (SQLite now; all SQL lives there).
#![forbid(unsafe_code)]

pub mod config;
pub mod store;
