//! `fake-fcc`: a gateway simulator that behaves like the genuine Factory Configurator Client
//! (FCC) of `factory-configurator-client-example` on Linux, on the wire.
//!
//! The crate is split the quinn-proto way:
//!
//! * [`Device`] is the pure pipeline: CBOR bundle bytes in, an [`Outcome`] (the reply frame, the
//!   decoded [`Response`](fcc_proto::response::Response), the session flag, the item-file
//!   changes as [`StorageWrite`]s) out. It reproduces the genuine processing order (docs/protocol.md
//!   §2.1), the key-prefix quirk, "first error wins", no rollback, the verification of §5.2 with
//!   its warnings, the trust-CA step of §5.3, CSR generation and the 512/2560-byte response
//!   limits. No sockets, no files, no clock other than the device time set by `mbed.CurrentTime`.
//! * [`server`] is the thin tokio socket loop around it ([`spawn`]): it applies the outcome's
//!   storage writes to the storage directory ([`DiskStore::apply`]) before replying, with the
//!   receive-error behaviour of §1.5 (nothing sent back, close), sessions, fault injection ([`faults`]) and the
//!   stdout lines of §1.1.
//! * `main.rs` is the `fake-fcc` binary (clap only). Its `fleet` subcommand runs the
//!   `pep-fleet` binary of the `pep-loadgen` crate (the fleet load generator, which builds on
//!   this library) found next to it.
//!
//! # Storage layout
//!
//! With a storage directory (`--storage DIR`, default `./pal` for the binary) every stored item is
//! also written to one readable file, so tests and the gateway-side installer can inspect what was
//! injected. The directory's item files are removed on the first valid frame of each session
//! (like the genuine `fcc_storage_delete`):
//!
//! | File | Content |
//! |---|---|
//! | `DIR/PrvKey_<name>` | private key DER (mode 0600) |
//! | `DIR/PubKey_<name>` | public key DER |
//! | `DIR/Cert_<name>` | certificate DER, or element 0 (leaf) of a chain |
//! | `DIR/Crt1_<name>` .. `DIR/Crt4_<name>` | chain elements 1..4 |
//! | `DIR/CfgParam_<name>` | config param bytes exactly as stored (4 LE bytes for `mbed.UseBootstrap`) |
//!
//! The files are a copy for inspection: the items live in the device's memory. A file that
//! cannot be written is logged and listed in the session's [`SessionReport::disk_errors`]; the
//! device's answer does not depend on it.
//!
//! # Strict mode
//!
//! By default every quirk of the genuine FCC is reproduced. [`DeviceOptions::strict`] additionally
//! rejects what the genuine device tolerates: keys and values are matched exactly instead of by
//! prefix, a config value shorter than 4 bytes for a 4-byte param is rejected instead of
//! over-read, and `mbed.UTCOffset` must be exactly 6 characters.
//!
//! # Example
//!
//! A simulated gateway in-process, driven by [`fcc_proto::FccClient`] the way a station tool
//! drives a real one (`examples/fleet_in_process.rs` does it for ten):
//!
//! ```
//! use std::time::Duration;
//! use fcc_proto::{Bundle, ConfigParam, FccClient, Timeouts, names};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! // 127.0.0.1, a port the OS picks, one factory session, items kept in memory.
//! let (address, mut gateway) = fake_fcc::spawn(fake_fcc::GatewayConfig::default()).await?;
//!
//! let mut client = FccClient::connect(address, Timeouts::all(Duration::from_secs(10))).await?;
//! let bundle = Bundle {
//!     config_params: vec![ConfigParam::text(names::ENDPOINT_NAME, "GW-DOC-1")],
//!     ..Bundle::default()
//! };
//! let response = client.send(&bundle).await?;
//! client.close().await?;
//! // No identity was sent: the gateway answers, like FCC, that mandatory items are missing.
//! assert!(!response.is_success());
//!
//! // What the session left on the simulated device.
//! let report = gateway.next_report().await.expect("the session's report");
//! assert!(report.storage.config_params.contains_key(names::ENDPOINT_NAME));
//! # Ok(())
//! # }
//! ```
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

pub mod cbor;
pub mod csr;
pub mod device;
pub mod faults;
pub mod server;
pub mod storage;
mod verify;
pub mod x509;

pub use device::{Device, DeviceOptions, Outcome};
pub use faults::{Fault, FaultKind, Faults};
pub use server::{GatewayConfig, GatewayHandle, SessionReport, Sessions, spawn};
pub use storage::{DiskStore, ItemKind, Storage, StorageWrite};

use std::path::{Path, PathBuf};

/// The library's own errors (not device answers: those are FCC statuses in responses).
#[derive(Debug, thiserror::Error)]
pub enum FakeFccError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A storage file or directory could not be written, read or removed.
    #[error("storage error at {path}: {source}")]
    Storage {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A fault specification given on the command line is malformed.
    #[error("invalid fault specification {spec:?}: {reason}")]
    FaultSpec {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket error while serving a session.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl FakeFccError {
    pub(crate) fn storage(path: &Path, source: std::io::Error) -> FakeFccError {
        FakeFccError::Storage {
            path: path.to_path_buf(),
            source,
        }
    }
}
