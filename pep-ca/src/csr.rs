//! PKCS#10 certification requests from the device (`by_device` mode).
//!
//! Parsed by hand with `der` rather than through a strict typed decoder, for two reasons: the
//! signature must be checked over the exact CertificationRequestInfo bytes as received, and the
//! genuine FCC encodes the ecdsa-with-SHA256 AlgorithmIdentifier with an explicit NULL parameter
//! (docs/protocol.md §0.1), which RFC 5758 forbids but we must accept.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_EC_PUBLIC_KEY, SECP_256_R_1};
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Reader, SliceReader, Tag, Tagged};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x509_cert::name::Name;

use crate::endpoint::EndpointName;
use crate::error::{CaError, clip};

/// Parses `der`, checks the key is P-256, the self-signature verifies and the first subject CN
/// is `expected`; returns the uncompressed public point. The requested extensions are ignored:
/// the profile decides the certificate's extensions.
pub(crate) fn verified_public_point(
    der: &[u8],
    expected: &EndpointName,
) -> Result<[u8; 65], CaError> {
    let malformed = |e: der::Error| CaError::CsrMalformed {
        detail: e.to_string(),
    };
    let outer = AnyRef::from_der(der).map_err(malformed)?;
    if outer.tag() != Tag::Sequence {
        return Err(CaError::CsrMalformed {
            detail: format!("expected a SEQUENCE, found {}", outer.tag()),
        });
    }
    let mut r = SliceReader::new(outer.value()).map_err(malformed)?;
    let info = r.tlv_bytes().map_err(malformed)?;
    let sig_alg: AlgorithmIdentifierRef<'_> = r.decode().map_err(malformed)?;
    let signature: BitStringRef<'_> = r.decode().map_err(malformed)?;
    r.finish(()).map_err(malformed)?;

    let (subject, spki) = parse_info(info).map_err(malformed)?;
    let point = p256_point(&spki)?;

    // ecdsa-with-SHA256 with absent parameters (RFC 5758), or NULL as the genuine FCC sends.
    let params_ok = sig_alg
        .parameters
        .as_ref()
        .is_none_or(|p| p.tag() == Tag::Null && p.value().is_empty());
    if sig_alg.oid != ECDSA_WITH_SHA_256 || !params_ok {
        let mut algorithm = oid_name(&sig_alg.oid);
        if let Some(p) = &sig_alg.parameters {
            algorithm.push_str(&format!(" with {} parameters", p.tag()));
        }
        return Err(CaError::CsrSignatureAlgorithm { algorithm });
    }
    let signature = signature.as_bytes().ok_or(CaError::CsrSignatureInvalid)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &point[..])
        .verify(info, signature)
        .map_err(|_| CaError::CsrSignatureInvalid)?;

    let found = first_common_name(&subject);
    if found.as_deref() != Some(expected.as_str()) {
        return Err(CaError::CsrSubjectMismatch {
            expected: expected.as_str().to_owned(),
            found: found.map(|f| clip(&f)),
        });
    }
    Ok(point)
}

/// CertificationRequestInfo ::= SEQUENCE { version INTEGER (0), subject Name,
/// subjectPKInfo SubjectPublicKeyInfo, attributes [0] ... }. The attributes are not needed.
fn parse_info(info: &[u8]) -> der::Result<(Name, SubjectPublicKeyInfoRef<'_>)> {
    let seq = AnyRef::from_der(info)?;
    seq.tag().assert_eq(Tag::Sequence)?;
    let mut r = SliceReader::new(seq.value())?;
    let version: u8 = r.decode()?;
    if version != 0 {
        return Err(der::Tag::Integer.value_error());
    }
    let subject: Name = r.decode()?;
    let spki: SubjectPublicKeyInfoRef<'_> = r.decode()?;
    Ok((subject, spki))
}

/// The P-256 point of the request's key, validated (on the curve) and uncompressed.
fn p256_point(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<[u8; 65], CaError> {
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(CaError::CsrKeyNotP256 {
            detail: format!("key algorithm {}", oid_name(&spki.algorithm.oid)),
        });
    }
    let curve = spki
        .algorithm
        .parameters_oid()
        .map_err(|_| CaError::CsrKeyNotP256 {
            detail: "EC key without a named curve".to_owned(),
        })?;
    if curve != SECP_256_R_1 {
        return Err(CaError::CsrKeyNotP256 {
            detail: format!("curve {}", oid_name(&curve)),
        });
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| CaError::CsrKeyNotP256 {
            detail: "public key BIT STRING has unused bits".to_owned(),
        })?;
    let key = p256::PublicKey::from_sec1_bytes(bits).map_err(|_| CaError::CsrKeyNotP256 {
        detail: "the public key is not a valid P-256 point".to_owned(),
    })?;
    let encoded = key.to_encoded_point(false);
    encoded
        .as_bytes()
        .try_into()
        .map_err(|_| CaError::CsrKeyNotP256 {
            detail: "the public key is not a valid P-256 point".to_owned(),
        })
}

/// The first CN of `name`, as text (UTF8String, PrintableString, IA5String, ...).
pub(crate) fn first_common_name(name: &Name) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == const_oid::db::rfc4519::CN)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned())
}

/// A readable name for an OID: `secp384r1 (1.3.132.0.34)`.
pub(crate) fn oid_name(oid: &ObjectIdentifier) -> String {
    match const_oid::db::DB.by_oid(oid) {
        Some(name) => format!("{name} ({oid})"),
        None => oid.to_string(),
    }
}
