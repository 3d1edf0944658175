//! Making a factory CA: a P-256 key (in a file or in a PKCS#11 token) and either a self-signed CA
//! certificate or a PKCS#10 request for an external root (`pep-server ca init`, `pep-server ca
//! generate-pkcs11`).
//!
//! The CA certificate: subject and issuer `CN=<name>`, basicConstraints CA:TRUE pathlen 0
//! (critical; it certifies devices only), keyUsage keyCertSign + cRLSign (critical),
//! subjectKeyIdentifier and authorityKeyIdentifier (SHA-1 of the public key), 16-byte random serial,
//! ECDSA with SHA-256.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::derw::{push_tlv, tag, tlv};
use crate::error::CaError;
use crate::key::DevicePrivateKey;
use crate::pkcs11::{self, Pkcs11Config, Pkcs11Key, Pkcs11Uri};
use crate::profile::{self, TbsParts, Validity};

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
/// Default lifetime of a new CA: 30 years, past the 20 years of the device certificates it issues.
pub const DEFAULT_CA_DAYS: u32 = 10_958;

/// What to make: a self-signed CA certificate or a request for an external root to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaRequest {
    /// A self-signed CA certificate valid for this many days.
    SelfSigned {
        /// Days from now.
        days: u32,
    },
    /// A PKCS#10 request (the root decides the validity and adds its own extensions; the request
    /// asks for the CA ones).
    Csr,
}

/// A new CA whose key is in a file.
pub struct FileCa {
    /// The private key, PKCS#8 PEM (`PRIVATE KEY`), zeroized on drop.
    pub key_pem: Zeroizing<String>,
    /// The certificate or the request, PEM.
    pub output_pem: String,
    /// The certificate or the request, DER.
    pub output_der: Vec<u8>,
}

impl std::fmt::Debug for FileCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCa")
            .field("key_pem", &"<redacted>")
            .field("output_der_len", &self.output_der.len())
            .finish()
    }
}

/// Generates a P-256 CA key in memory and its certificate (or request) `CN=<name>`.
pub fn new_file_ca(name: &str, request: CaRequest) -> Result<FileCa, CaError> {
    check_name(name)?;
    let rng = SystemRandom::new();
    let (key, point) = DevicePrivateKey::generate(&rng)?;
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.as_der(), &rng)
        .map_err(|_| CaError::Crypto {
            operation: "loading the new CA key",
        })?;
    let sign = |message: &[u8]| {
        signer
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| CaError::Crypto {
                operation: "signing with the new CA key",
            })
    };
    let output_der = build(name, &point, request, &sign)?;
    let key_pem = Zeroizing::new(pem_encode("PRIVATE KEY", key.as_der()));
    Ok(FileCa {
        key_pem,
        output_pem: pem_encode(pem_label(request), &output_der),
        output_der,
    })
}

/// A new CA whose key was just generated in a token.
#[derive(Debug)]
pub struct TokenCa {
    /// The key's URI, for `[ca] key`.
    pub uri: String,
    /// The key's `CKA_ID`, hex.
    pub id_hex: String,
    /// The certificate or the request, PEM.
    pub output_pem: String,
    /// The certificate or the request, DER.
    pub output_der: Vec<u8>,
}

/// Generates a non-extractable P-256 key labelled `label` in the token labelled `token` and signs
/// the CA certificate (or the request) `CN=<name>` with it, in the token.
pub fn new_token_ca(
    module: &Path,
    token: &str,
    label: &str,
    pin: &str,
    name: &str,
    request: CaRequest,
) -> Result<TokenCa, CaError> {
    check_name(name)?;
    let generated = pkcs11::generate_key(module, token, label, pin)?;
    let id_hex: String = generated.id.iter().map(|b| format!("{b:02x}")).collect();
    let uri_text = format!(
        "pkcs11:token={};object={}",
        uri_escape(token),
        uri_escape(label)
    );
    let uri: Pkcs11Uri = uri_text.parse()?;
    let key = Pkcs11Key::open(Pkcs11Config {
        module: module.to_owned(),
        uri: format!("{uri_text};id={}", percent_all(&generated.id)).parse()?,
        pin: Zeroizing::new(pin.to_owned()),
        sessions: 1,
    })?;
    let sign = |message: &[u8]| key.sign_der(message);
    let output_der = build(name, &generated.public_point, request, &sign)?;
    Ok(TokenCa {
        uri: uri.as_str().to_owned(),
        id_hex,
        output_pem: pem_encode(pem_label(request), &output_der),
        output_der,
    })
}

fn pem_label(request: CaRequest) -> &'static str {
    match request {
        CaRequest::SelfSigned { .. } => "CERTIFICATE",
        CaRequest::Csr => "CERTIFICATE REQUEST",
    }
}

fn check_name(name: &str) -> Result<(), CaError> {
    let reason = if name.trim().is_empty() {
        "is empty"
    } else if name.chars().count() > 64 {
        "is longer than 64 characters"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(CaError::InvalidProfile {
        field: "name",
        reason: reason.to_owned(),
    })
}

/// Signs a message with the new CA key: DER ECDSA-with-SHA256.
type SignFn<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, CaError> + 'a;

fn build(
    name: &str,
    point: &[u8; 65],
    request: CaRequest,
    sign: &SignFn<'_>,
) -> Result<Vec<u8>, CaError> {
    let mut atv = tlv(tag::OID, OID_COMMON_NAME);
    push_tlv(&mut atv, tag::UTF8_STRING, name.as_bytes());
    let rdn = tlv(tag::SET, &tlv(tag::SEQUENCE, &atv));
    let subject = tlv(tag::SEQUENCE, &rdn);
    // basicConstraints CA:TRUE, pathLenConstraint 0.
    let mut extensions = profile::extension(
        OID_BASIC_CONSTRAINTS,
        true,
        &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00],
    );
    // keyUsage: BIT STRING, 1 unused bit, keyCertSign (bit 5) + cRLSign (bit 6).
    extensions.extend(profile::extension(
        OID_KEY_USAGE,
        true,
        &[0x03, 0x02, 0x01, 0x06],
    ));
    match request {
        CaRequest::SelfSigned { days } => {
            if days == 0 {
                return Err(CaError::InvalidProfile {
                    field: "days",
                    reason: "must be greater than 0".to_owned(),
                });
            }
            let now = OffsetDateTime::now_utc();
            let validity = Validity {
                not_before: now - profile::BACKDATE,
                not_after: now + Duration::days(i64::from(days)),
                warnings: Vec::new(),
            };
            let key_id = profile::key_identifier(point);
            let mut serial = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
            serial[0] = (serial[0] & 0x7f) | 0x01;
            let tbs = profile::tbs_certificate(&TbsParts {
                serial: &serial,
                issuer: &subject,
                validity: &validity,
                subject: &subject,
                public_point: point,
                fixed_extensions: &extensions,
                authority_key_id: &profile::authority_key_id_extension(&key_id),
                // A self-signed CA certificate points at no CRL.
                crl_distribution_point: None,
            })?;
            let signature = sign(&tbs)?;
            Ok(profile::certificate(&tbs, &signature))
        }
        CaRequest::Csr => {
            let info = profile::certification_request_info(&subject, point, &extensions);
            let signature = sign(&info)?;
            Ok(profile::certificate(&info, &signature))
        }
    }
}

/// RFC 7512 percent-encoding of a URI attribute value (unreserved characters stay).
fn uri_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// PEM with 64-character lines.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_else(|_| String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ca_loads_back_as_a_factory_ca() {
        let made = new_file_ca("ACME Factory CA 2027", CaRequest::SelfSigned { days: 30 }).unwrap();
        let loaded =
            crate::FactoryCa::from_pem(made.output_pem.as_bytes(), made.key_pem.as_bytes())
                .unwrap();
        assert_eq!(loaded.ca.subject(), "CN=ACME Factory CA 2027");
        assert!(made.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "  ", "a\nb"] {
            assert!(new_file_ca(bad, CaRequest::Csr).is_err(), "{bad:?}");
        }
        let e = new_file_ca("x", CaRequest::SelfSigned { days: 0 }).unwrap_err();
        assert!(e.to_string().contains("days"), "{e}");
    }

    #[test]
    fn uri_escape_keeps_unreserved() {
        assert_eq!(uri_escape("pep factory;1"), "pep%20factory%3B1");
    }
}
