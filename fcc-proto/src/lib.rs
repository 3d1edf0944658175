//! The Factory Configurator Client (FCC) wire protocol, as spoken between a provisioning tool and
//! the FCC running on a gateway (see `docs/protocol.md` and the protocol reference).
//!
//! * [`frame`]: `mbedprov` framing as `tokio-util` codecs, tool side and device side;
//! * [`bundle`]: the request bundle model and its CBOR encoding;
//! * [`response`]: the response model, encoded byte-exactly like the genuine FCC;
//! * [`status`]: the FCC, wire (ftcd) and kcm status tables;
//! * [`names`]: the `mbed.*` item names;
//! * [`client`]: the async tool-side client (the only module doing I/O).

pub mod bundle;
mod cbor;
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
pub use client::{FccClient, Timeouts};
pub use error::FccError;
pub use frame::{DeviceCodec, ResponseFrame, ToolCodec};
pub use response::{CsrResponse, Response, SUCCESS_MESSAGE};
pub use status::{FccStatus, KcmStatus, WireStatus};
