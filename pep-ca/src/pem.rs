//! Reading certificates from files: PEM (one or more `CERTIFICATE` blocks) or raw DER.
//!
//! The factory CA ([`crate::FactoryCa::load`]) and the other certificates a provisioning injects
//! (the bootstrap server's CA, the firmware-update authority's certificate) are read by the same
//! code, so a file that one accepts the other accepts too, and every error names the file.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::path::Path;

use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, SECP_256_R_1};
use der::Decode;
use der::asn1::ObjectIdentifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::error::CaError;

/// An X.509 certificate with a P-256 (secp256r1) EC public key, as read by
/// [`read_p256_certificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P256Certificate {
    der: CertificateDer<'static>,
    not_after: OffsetDateTime,
}

impl P256Certificate {
    /// The certificate's DER encoding (what FCC receives).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The DER encoding, owned.
    pub fn into_der(self) -> CertificateDer<'static> {
        self.der
    }

    /// The end of the certificate's validity (`notAfter`). Expiry is the caller's judgement: it
    /// knows its clock and how long the certificate must last.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// True when `signature` (ECDSA P-256 with SHA-256, DER, as [`crate::FactoryCa::sign`] makes)
    /// is a signature of `message` by this certificate's key. For what the CA signed besides
    /// certificates (pep-server's audit checkpoints).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(self.der.as_ref()) else {
            return false;
        };
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let Some(point) = spki.subject_public_key.as_bytes() else {
            return false;
        };
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
            .verify(message, signature)
            .is_ok()
    }
}

/// Reads the first certificate of `path` (PEM `CERTIFICATE` blocks, or one raw DER certificate)
/// and checks that it is X.509 with a P-256 EC public key. Errors name the file.
pub fn read_p256_certificate(path: &Path) -> Result<P256Certificate, CaError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CaError::Read {
        file: file.clone(),
        source,
    })?;
    p256_certificate(&bytes, &file)
}

/// [`read_p256_certificate`] on bytes already in memory; `file` names the input in errors.
pub fn p256_certificate(bytes: &[u8], file: &str) -> Result<P256Certificate, CaError> {
    // A DER certificate is a SEQUENCE (0x30); PEM text never starts with that byte.
    let (der, cert) = if bytes.first() == Some(&0x30) {
        let cert = Certificate::from_der(bytes).map_err(|e| CaError::CertificateParse {
            file: file.to_owned(),
            index: 1,
            detail: e.to_string(),
        })?;
        (bytes.to_vec(), cert)
    } else {
        let (mut ders, cert) = parse_certificates(bytes, file)?;
        (ders.swap_remove(0), cert)
    };
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP_256_R_1) {
        return Err(CaError::NotP256Certificate {
            file: file.to_owned(),
        });
    }
    let not_after = OffsetDateTime::from_unix_timestamp(
        i64::try_from(
            cert.tbs_certificate
                .validity
                .not_after
                .to_unix_duration()
                .as_secs(),
        )
        .unwrap_or(i64::MAX),
    )
    // Beyond what `time` represents (year 9999 is the X.509 maximum, well inside): treat as "never".
    .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC));
    Ok(P256Certificate {
        der: CertificateDer::from(der),
        not_after,
    })
}

/// True when `data` is empty or holds only white space.
pub(crate) fn is_blank(data: &[u8]) -> bool {
    data.iter().all(u8::is_ascii_whitespace)
}

/// All certificates of a PEM file (DER each); the first one parsed.
pub(crate) fn parse_certificates(
    pem: &[u8],
    file: &str,
) -> Result<(Vec<Vec<u8>>, Certificate), CaError> {
    if is_blank(pem) {
        return Err(CaError::EmptyFile {
            file: file.to_owned(),
        });
    }
    let ders = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem {
            file: file.to_owned(),
            detail: e.to_string(),
        })?;
    let mut first = None;
    for (i, der) in ders.iter().enumerate() {
        let cert = Certificate::from_der(der).map_err(|e| CaError::CertificateParse {
            file: file.to_owned(),
            index: i + 1,
            detail: e.to_string(),
        })?;
        first.get_or_insert(cert);
    }
    match first {
        Some(cert) => Ok((ders, cert)),
        None => Err(CaError::NoPemBlock {
            file: file.to_owned(),
            expected: "CERTIFICATE",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(name)
    }

    #[test]
    fn pem_and_der_give_the_same_certificate() {
        let pem = read_p256_certificate(&fixture("bootstrap/bootstrap_ca.pem")).unwrap();
        let der = p256_certificate(pem.der().as_ref(), "bootstrap_ca.der").unwrap();
        assert_eq!(pem, der);
        assert!(pem.not_after() > OffsetDateTime::UNIX_EPOCH);
    }

    #[test]
    fn wrong_files_are_refused_naming_the_file() {
        let key = std::fs::read(fixture("ca/CA_private.pem")).unwrap();
        for (bytes, needle) in [
            (&b""[..], "x.pem is empty"),
            (&b" \n"[..], "x.pem is empty"),
            (&key[..], "x.pem holds no PEM CERTIFICATE block"),
            (
                &b"\x30\x03\x02\x01\x01"[..],
                "x.pem: certificate #1 cannot be parsed",
            ),
            (
                &b"-----BEGIN CERTIFICATE-----\nAAA"[..],
                "x.pem is not valid PEM",
            ),
        ] {
            let e = p256_certificate(bytes, "x.pem").unwrap_err().to_string();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
            // Never any key material in a message.
            assert!(!e.contains("PRIVATE"), "{e}");
        }
        let e = read_p256_certificate(&fixture("ca/nope.pem")).unwrap_err();
        assert!(matches!(e, CaError::Read { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }
}
