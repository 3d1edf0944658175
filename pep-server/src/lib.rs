//! The pep provisioning core and HTTP daemon.
//!
//! - [`config`]: `pep.toml`, its defaults and [`config::Config::check`].
#![forbid(unsafe_code)]

pub mod config;
