//! The factory CA: the only code of pep that touches the CA private key.
//!
//! * [`FactoryCa::load`] reads `CA_cert.pem` and `CA_private.pem` and refuses anything that
//!   would produce certificates the devices or the cloud reject.
//! * [`FactoryCa::issue`] generates a device key and certificate (`by_tool` mode);
//!   [`FactoryCa::sign_csr`] certifies a key generated on the gateway (`by_device` mode).
//! * [`EnrollmentId`] is what the cloud's first-to-claim list holds for a device;
//!   [`enrollment_csv`] is the one format of that list's CSV file (server and `pep-cli` alike).
//!
//! [`crl`] signs the CA's revocation list ([`FactoryCa::sign_crl`]).
//!
//! [`pem`] reads certificate files (PEM or DER) for the CA and for the certificates a provisioning
//! injects. The certificate profile lives in [`profile`]; `docs/ca.md` describes it for operators.
//!
//! # Example
//!
//! ```
//! use pep_ca::{CertProfile, EndpointName, EnrollmentId, FactoryCa};
//!
//! // The repository's test CA; a factory loads its own with `FactoryCa::load(cert, key)`.
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/ca");
//! let cert_pem = std::fs::read(format!("{dir}/CA_cert.pem"))?;
//! let key_pem = std::fs::read(format!("{dir}/CA_private.pem"))?;
//! let ca = FactoryCa::from_pem(&cert_pem, &key_pem)?.ca;
//!
//! // The serial number is the endpoint name and the certificate's CN.
//! let endpoint = EndpointName::new("GW-0042")?;
//! let identity = ca.issue(&endpoint, &CertProfile::default())?;
//! let certificate = &identity.certificate;
//! // What the cloud's first-to-claim list holds for this device.
//! assert_eq!(certificate.enrollment_id, EnrollmentId::of_certificate(&certificate.der));
//! println!("{endpoint}: {}", certificate.enrollment_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/issue_identity.rs` also signs a device's CSR.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

mod ca;
pub mod crl;
mod csr;
mod derw;
mod endpoint;
mod enrollment;
pub mod enrollment_csv;
mod error;
mod key;
pub mod pem;
pub mod pkcs11;
pub mod profile;
pub mod setup;

pub use ca::{FactoryCa, IssuedCertificate, IssuedIdentity, LoadedCa};
pub use crl::{CrlContent, RevocationReason, RevokedEntry};
pub use endpoint::EndpointName;
pub use enrollment::EnrollmentId;
pub use error::{CaError, CaWarning};
pub use key::DevicePrivateKey;
pub use pem::P256Certificate;
pub use profile::{CaExpiryPolicy, CertProfile};
