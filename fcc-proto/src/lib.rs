//! The Factory Configurator Client (FCC) wire protocol, as spoken between a provisioning tool and
//! the FCC running on a gateway (described in `docs/protocol.md`).
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
//!
//! # Example
//!
//! A bundle on its way from the tool to the device, without a socket: the tool encodes it and
//! frames it, the device's codec reads the frame back.
//!
//! ```
//! use bytes::BytesMut;
//! use fcc_proto::{Bundle, ConfigParam, DeviceCodec, frame, names};
//!
//! let bundle = Bundle {
//!     config_params: vec![ConfigParam::text(names::ENDPOINT_NAME, "GW-0042")],
//!     // The last message of the session: the device verifies and ends its factory flow.
//!     keep_alive: Some(false),
//!     ..Bundle::default()
//! };
//! // On the wire: "mbedprov", the body length, the CBOR body, its SHA-256.
//! let wire = frame::encode_request(&bundle.encode()?);
//! let mut received = BytesMut::from(&wire[..]);
//! let body = DeviceCodec::new().decode_request(&mut received)?.expect("one whole frame");
//! assert_eq!(Bundle::decode(&body)?, bundle);
//! # Ok::<(), fcc_proto::FccError>(())
//! ```
//!
//! Sending it to a gateway's FCC (see `examples/inject_bundle.rs` for a complete program):
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn inject(bundle: &fcc_proto::Bundle) -> Result<(), fcc_proto::FccError> {
//! use fcc_proto::{FccClient, Timeouts};
//!
//! let address = "10.0.0.2:40123".parse().expect("an IP:PORT");
//! let mut client = FccClient::connect(address, Timeouts::default()).await?;
//! let response = client.send(bundle).await?;
//! println!("{} {}", response.return_status, response.info_message);
//! for warning in &response.warnings {
//!     println!("warning: {warning}");
//! }
//! # Ok(())
//! # }
//! ```
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

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
