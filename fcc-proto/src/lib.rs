//! The Factory Configurator Client (FCC) wire protocol, as spoken between a provisioning tool and
//! the FCC running on a gateway (see `docs/protocol.md` and the protocol reference).
//!
//! * [`frame`]: `mbedprov` framing, tool side and device side (plain functions over byte
//!   buffers; with the `tokio` feature also `tokio-util` codecs);
//! * [`bundle`]: the request bundle model and its CBOR encoding;
//! * [`response`]: the response model, encoded byte-exactly like the genuine FCC;
//! * [`status`]: the FCC, wire (ftcd) and kcm status tables;
//! * [`names`]: the `mbed.*` item names;
//! * `client`: the async tool-side client (the only module doing I/O; `tokio` feature).
//!
//! # Features
//!
//! * `tokio` (default): the async `FccClient` and the `tokio-util`
//!   `Decoder`/`Encoder` impls of the codecs. Without it (`default-features = false`) the crate
//!   is the codec alone — frames, bundle, response, status — and builds without tokio, e.g. for
//!   fuzzers or a device-side simulator with its own I/O.

pub mod bundle;
mod cbor;
#[cfg(feature = "tokio")]
pub mod client;
pub mod error;
pub mod frame;
pub mod names;
pub mod response;
pub mod status;

pub use bundle::{
    Bundle, CertificateChainItem, CertificateItem, ConfigParam, ConfigValue, CsrRequest, KeyItem,
    KeyType,
};
#[cfg(feature = "tokio")]
pub use client::{FccClient, Timeouts};
pub use error::FccError;
pub use frame::{DeviceCodec, ResponseFrame, ToolCodec};
pub use response::{CsrResponse, Response, SUCCESS_MESSAGE};
pub use status::{FccStatus, KcmStatus, WireStatus};
