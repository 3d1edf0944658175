//! Device-side CSR generation: a DER PKCS#10 request signed with ECDSA-SHA256 by a fresh P-256
//! key, laid out the way mbedTLS 2.28 `mbedtls_x509write_csr_der` writes it in the genuine FCC:
//! subject parsed from the mbedTLS subject string (`C=UK,O=ARM,CN=...`), key usage and extended
//! key usage extensions in an extensionRequest attribute, and a signature AlgorithmIdentifier with
//! an explicit NULL parameter (which strict X.509 parsers reject; tools must accept it).
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use const_oid::ObjectIdentifier;
use fcc_proto::status::KcmStatus;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use zeroize::Zeroizing;

/// Why a device key could not be generated or could not sign. ring fails only when the operating
/// system's random number generator does; the device answers like a failed mbedTLS call.
#[derive(Debug, thiserror::Error)]
pub enum DeviceKeyError {
    /// ring could not generate the key (no randomness).
    #[error("P-256 key generation failed")]
    Generate,
    /// ring refused the PKCS#8 document it had just generated.
    #[error("the generated P-256 key was refused: {0}")]
    Rejected(ring::error::KeyRejected),
    /// ring's PKCS#8 document holds no P-256 `ECPrivateKey` with a 32-byte scalar.
    #[error("the generated PKCS#8 document holds no P-256 private key")]
    Pkcs8,
    /// ring could not sign (no randomness for the nonce).
    #[error("ECDSA signing failed")]
    Sign,
}

impl DeviceKeyError {
    /// The kcm status the device answers with: a key that cannot be made is a general error
    /// (`kcm_generate_keys_and_csr`), a CSR that cannot be signed is `FailedToWriteCsr`
    /// (`mbedtls_x509write_csr_der` failing).
    pub fn kcm_status(&self) -> KcmStatus {
        match self {
            DeviceKeyError::Sign => KcmStatus::FailedToWriteCsr,
            DeviceKeyError::Generate | DeviceKeyError::Rejected(_) | DeviceKeyError::Pkcs8 => {
                KcmStatus::Error
            }
        }
    }
}

/// A P-256 key the device generates for a CSR request (the by_device key mode).
///
/// Generated and used for signing with ring, not pure-Rust `p256`: ring is several times faster
/// at both, and a fleet simulates thousands of devices a second on the cores of the server it
/// measures. The scalar is kept (zeroized on drop) for the stored `ECPrivateKey`, whose bytes stay
/// those mbedTLS writes ([`crate::x509::ec_private_key_der`]).
pub struct DeviceKey {
    pair: EcdsaKeyPair,
    scalar: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the scalar.
        f.debug_struct("DeviceKey")
            .field("public_key", &hex::encode(self.public_point()))
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// A fresh random key.
    pub fn generate() -> Result<DeviceKey, DeviceKeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| DeviceKeyError::Generate)?;
        // ring hands the key out as PKCS#8 only (its buffer is not zeroized: ring keeps no
        // zeroizing types); the scalar is copied out of it into a zeroizing array.
        let scalar = scalar_of_pkcs8(pkcs8.as_ref()).ok_or(DeviceKeyError::Pkcs8)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(DeviceKeyError::Rejected)?;
        Ok(DeviceKey { pair, scalar })
    }

    /// The public key as an uncompressed SEC1 point (65 bytes).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The DER SubjectPublicKeyInfo, as stored under the key's name when `SM.Pub` asks for it and
    /// as written into the CSR.
    pub fn public_key_der(&self) -> Vec<u8> {
        crate::x509::spki_der(self.public_point())
    }

    /// The stored form of the key: the 121-byte SEC1 `ECPrivateKey` of mbedTLS `pk_write_key_der`.
    pub fn private_key_der(&self) -> Zeroizing<Vec<u8>> {
        crate::x509::ec_private_key_der(&self.scalar[..], self.public_point())
    }

    /// An ECDSA-SHA256 signature of `message`, DER-encoded (`ECDSA-Sig-Value`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DeviceKeyError> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| DeviceKeyError::Sign)?;
        Ok(signature.as_ref().to_vec())
    }
}

/// The 32-byte scalar of ring's PKCS#8 document, read by the device's own private-key parser
/// (the one `SM.Priv` items go through).
fn scalar_of_pkcs8(document: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let key = crate::x509::parse_private_key(document).ok()?;
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&key.to_bytes());
    Some(scalar)
}

/// KU bits of a CSR request (kcm values).
pub mod ku {
    /// digitalSignature.
    pub const DIGITAL_SIGNATURE: u32 = 0x1;
    /// nonRepudiation.
    pub const NON_REPUDIATION: u32 = 0x2;
    /// keyCertSign.
    pub const KEY_CERT_SIGN: u32 = 0x4;
    /// keyAgreement.
    pub const KEY_AGREEMENT: u32 = 0x8;
}

/// EKU bits of a CSR request (kcm values) and the OIDs they stand for, in the order mbedTLS
/// writes them.
pub const EKU_BITS: [(u32, &str); 7] = [
    (1 << 0, "2.5.29.37.0"),       // anyExtendedKeyUsage
    (1 << 1, "1.3.6.1.5.5.7.3.1"), // serverAuth
    (1 << 2, "1.3.6.1.5.5.7.3.2"), // clientAuth
    (1 << 3, "1.3.6.1.5.5.7.3.3"), // codeSigning
    (1 << 4, "1.3.6.1.5.5.7.3.4"), // emailProtection
    (1 << 8, "1.3.6.1.5.5.7.3.8"), // timeStamping
    (1 << 9, "1.3.6.1.5.5.7.3.9"), // OCSPSigning
];

/// `kcm_md_type_e` value of SHA-256.
pub const MD_SHA256: u32 = 1;

/// The parameters of one CSR request (`kcm_csr_params_s`).
#[derive(Debug, Clone, Default)]
pub struct CsrParams {
    /// The mbedTLS subject string (up to its first NUL).
    pub subject: Vec<u8>,
    /// `kcm_md_type_e` (1 = SHA-256).
    pub md: u32,
    /// KU bitmask (0 = no KU extension).
    pub key_usage: u32,
    /// EKU bitmask (0 = no EKU extension).
    pub ext_key_usage: u32,
}

/// A subject attribute known to mbedTLS's `x509_attrs` table: names, OID, default string tag.
const ATTRIBUTES: [(&str, &str, u8); 28] = [
    ("CN", "2.5.4.3", UTF8),
    ("commonName", "2.5.4.3", UTF8),
    ("C", "2.5.4.6", PRINTABLE),
    ("countryName", "2.5.4.6", PRINTABLE),
    ("O", "2.5.4.10", UTF8),
    ("organizationName", "2.5.4.10", UTF8),
    ("L", "2.5.4.7", UTF8),
    ("locality", "2.5.4.7", UTF8),
    ("R", "1.2.840.113549.1.9.1", IA5),
    ("OU", "2.5.4.11", UTF8),
    ("organizationalUnitName", "2.5.4.11", UTF8),
    ("ST", "2.5.4.8", UTF8),
    ("stateOrProvinceName", "2.5.4.8", UTF8),
    ("emailAddress", "1.2.840.113549.1.9.1", IA5),
    ("serialNumber", "2.5.4.5", PRINTABLE),
    ("postalAddress", "2.5.4.16", PRINTABLE),
    ("postalCode", "2.5.4.17", PRINTABLE),
    ("dnQualifier", "2.5.4.46", PRINTABLE),
    ("title", "2.5.4.12", UTF8),
    ("surName", "2.5.4.4", UTF8),
    ("SN", "2.5.4.4", UTF8),
    ("givenName", "2.5.4.42", UTF8),
    ("GN", "2.5.4.42", UTF8),
    ("initials", "2.5.4.43", UTF8),
    ("pseudonym", "2.5.4.65", UTF8),
    ("generationQualifier", "2.5.4.44", UTF8),
    ("domainComponent", "0.9.2342.19200300.100.1.25", IA5),
    ("DC", "0.9.2342.19200300.100.1.25", IA5),
];
const UTF8: u8 = 0x0c;
const PRINTABLE: u8 = 0x13;
const IA5: u8 = 0x16;
/// `MBEDTLS_X509_MAX_DN_NAME_SIZE`.
const MAX_DN_VALUE: usize = 256;

/// One parsed subject attribute: OID, string tag, value.
type NamePart = (&'static str, u8, Vec<u8>);

/// `mbedtls_x509_string_to_names`: `name=value` pairs separated by commas, `\,` escapes a comma,
/// spaces after a comma are skipped, a repeated attribute replaces the earlier value in place.
/// Unknown attribute: `InvalidOid`; bad escape or over-long value: `InvalidNameFormat`.
pub fn parse_subject(subject: &[u8]) -> Result<Vec<NamePart>, KcmStatus> {
    let mut parts: Vec<NamePart> = Vec::new();
    let end = subject.len();
    let at = |i: usize| subject.get(i).copied().unwrap_or(0);
    let mut in_tag = true;
    let mut s = 0usize;
    let mut c = 0usize;
    let mut value: Vec<u8> = Vec::new();
    let mut attr: Option<(&'static str, u8)> = None;
    while c <= end {
        if in_tag && at(c) == b'=' {
            let name = subject.get(s..c).unwrap_or_default();
            let found = ATTRIBUTES
                .iter()
                .find(|(n, _, _)| n.as_bytes() == name)
                .ok_or(KcmStatus::InvalidOid)?;
            attr = Some((found.1, found.2));
            s = c + 1;
            in_tag = false;
            value.clear();
        }
        if !in_tag && at(c) == b'\\' && c != end {
            c += 1;
            if c == end || at(c) != b',' {
                return Err(KcmStatus::InvalidNameFormat);
            }
        } else if !in_tag && (at(c) == b',' || c == end) {
            let (oid, tag) = attr.ok_or(KcmStatus::InvalidNameFormat)?;
            match parts.iter_mut().find(|(o, _, _)| *o == oid) {
                Some(existing) => {
                    existing.1 = tag;
                    existing.2 = value.clone();
                }
                None => parts.push((oid, tag, value.clone())),
            }
            while c < end && at(c + 1) == b' ' {
                c += 1;
            }
            s = c + 1;
            in_tag = true;
        }
        if !in_tag && s != c + 1 {
            value.push(at(c));
            if value.len() == MAX_DN_VALUE {
                return Err(KcmStatus::InvalidNameFormat);
            }
        }
        c += 1;
    }
    Ok(parts)
}

/// A DER TLV with a definite length.
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(bytes.get(skip..).unwrap_or_default());
    }
    out.extend_from_slice(content);
    out
}

fn oid(dotted: &str) -> Vec<u8> {
    // The OIDs here are constants of this module; an unparsable one would be a programming error
    // caught by the unit tests, and encodes as an empty OID rather than panicking.
    let bytes = ObjectIdentifier::new(dotted)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_default();
    der(0x06, &bytes)
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

/// `mbedtls_asn1_write_named_bitstring` of one byte: trailing zero bits are dropped.
fn named_bitstring(byte: u8) -> Vec<u8> {
    if byte == 0 {
        return der(0x03, &[0]);
    }
    let unused = byte.trailing_zeros() as u8;
    der(0x03, &[unused, byte])
}

/// Builds and signs the CSR. Errors as the genuine `csr_generate`: EKU bits outside the table
/// (`InvalidParameter`), a subject mbedTLS cannot parse (`InvalidOid`/`InvalidNameFormat`), an MD
/// other than SHA-256 (`InvalidMdType`), KU bits that map to nothing (`Error`).
pub fn build_csr(key: &DeviceKey, params: &CsrParams) -> Result<Vec<u8>, KcmStatus> {
    let all_eku = EKU_BITS.iter().fold(0u32, |acc, (bit, _)| acc | bit);
    if params.ext_key_usage & !all_eku != 0 {
        return Err(KcmStatus::InvalidParameter);
    }
    let names = parse_subject(&params.subject)?;
    if params.md != MD_SHA256 {
        return Err(KcmStatus::InvalidMdType);
    }

    let mut extensions: Vec<Vec<u8>> = Vec::new();
    if params.key_usage != 0 {
        let mut bits = 0u8;
        if params.key_usage & ku::DIGITAL_SIGNATURE != 0 {
            bits |= 0x80;
        }
        if params.key_usage & ku::NON_REPUDIATION != 0 {
            bits |= 0x40;
        }
        if params.key_usage & ku::KEY_CERT_SIGN != 0 {
            bits |= 0x04;
        }
        if params.key_usage & ku::KEY_AGREEMENT != 0 {
            bits |= 0x08;
        }
        if bits == 0 {
            return Err(KcmStatus::Error);
        }
        extensions.push(seq(&[
            &oid("2.5.29.15"),
            &der(0x04, &named_bitstring(bits)),
        ]));
    }
    if params.ext_key_usage != 0 {
        let purposes: Vec<u8> = EKU_BITS
            .iter()
            .filter(|(bit, _)| params.ext_key_usage & bit != 0)
            .flat_map(|(_, o)| oid(o))
            .collect();
        extensions.push(seq(&[&oid("2.5.29.37"), &der(0x04, &der(0x30, &purposes))]));
    }

    let subject: Vec<u8> = names
        .iter()
        .flat_map(|(o, tag, value)| der(0x31, &seq(&[&oid(o), &der(*tag, value)])))
        .collect();
    let subject = der(0x30, &subject);
    let spki = key.public_key_der();
    let attributes = if extensions.is_empty() {
        der(0xa0, &[])
    } else {
        let exts = der(0x30, &extensions.concat());
        der(
            0xa0,
            &seq(&[&oid("1.2.840.113549.1.9.14"), &der(0x31, &exts)]),
        )
    };
    let info = seq(&[&der(0x02, &[0]), &subject, &spki, &attributes]);

    // A DER ECDSA-Sig-Value, as mbedTLS writes it (minimal INTEGERs, whatever ECDSA library).
    let sig_der = key.sign(&info).map_err(|e| e.kcm_status())?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig_der);
    // ecdsa-with-SHA256 with an explicit NULL parameter, as mbedTLS writes it.
    let algorithm = seq(&[&oid("1.2.840.10045.4.3.2"), &[0x05, 0x00]]);
    Ok(seq(&[&info, &algorithm, &der(0x03, &bits)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_strings_parse_like_mbedtls() {
        let parts = parse_subject(b"C=UK,O=ARM, CN=dev-1").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], ("2.5.4.6", PRINTABLE, b"UK".to_vec()));
        assert_eq!(parts[2], ("2.5.4.3", UTF8, b"dev-1".to_vec()));
        let escaped = parse_subject(b"CN=a\\,b").unwrap();
        assert_eq!(escaped[0].2, b"a,b".to_vec());
        let replaced = parse_subject(b"CN=a,O=x,CN=b").unwrap();
        assert_eq!(replaced.len(), 2);
        assert_eq!(replaced[0].2, b"b".to_vec());
        assert_eq!(parse_subject(b"XX=a"), Err(KcmStatus::InvalidOid));
        assert_eq!(parse_subject(b"CN=a\\b"), Err(KcmStatus::InvalidNameFormat));
        assert!(parse_subject(b"").unwrap().is_empty());
        let long = [b"CN=".as_slice(), &[b'a'; 300]].concat();
        assert_eq!(parse_subject(&long), Err(KcmStatus::InvalidNameFormat));
    }

    #[test]
    fn csr_errors_follow_the_genuine_order() {
        let key = DeviceKey::generate().unwrap();
        let params = |subject: &[u8], md, eku| CsrParams {
            subject: subject.to_vec(),
            md,
            key_usage: 0,
            ext_key_usage: eku,
        };
        assert_eq!(
            build_csr(&key, &params(b"CN=x", 1, 1 << 5)),
            Err(KcmStatus::InvalidParameter)
        );
        assert_eq!(
            build_csr(&key, &params(b"Q=x", 2, 0)),
            Err(KcmStatus::InvalidOid)
        );
        assert_eq!(
            build_csr(&key, &params(b"CN=x", 2, 0)),
            Err(KcmStatus::InvalidMdType)
        );
        let mut unknown_ku = params(b"CN=x", 1, 0);
        unknown_ku.key_usage = 0x10;
        assert_eq!(build_csr(&key, &unknown_ku), Err(KcmStatus::Error));
        assert!(build_csr(&key, &params(b"CN=x", 1, 4)).is_ok());
    }

    /// The by_device CSR, signed with ring, verifies with `p256` (an independent ECDSA), in the
    /// mbedTLS layout; the stored private and public keys are those of the CSR, in the forms the
    /// `p256` code wrote them before.
    #[test]
    fn ring_signed_csr_verifies_independently_in_the_mbedtls_layout() {
        use p256::ecdsa::signature::Verifier;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePublicKey;

        let key = DeviceKey::generate().unwrap();
        let params = CsrParams {
            subject: b"C=UK,O=ARM,CN=dev-1".to_vec(),
            md: MD_SHA256,
            key_usage: ku::DIGITAL_SIGNATURE,
            ext_key_usage: 1 << 2,
        };
        let csr = build_csr(&key, &params).unwrap();

        // SEQUENCE { info, algorithm, BIT STRING }, split as raw bytes (no re-encoding).
        let (_, header, len) = crate::x509::tlv(&csr).unwrap();
        assert_eq!(header + len, csr.len());
        let body = &csr[header..];
        let (_, h, l) = crate::x509::tlv(body).unwrap();
        let (info, rest) = body.split_at(h + l);
        let (_, h, l) = crate::x509::tlv(rest).unwrap();
        let (algorithm, rest) = rest.split_at(h + l);
        assert_eq!(
            algorithm,
            [
                0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00
            ],
            "ecdsa-with-SHA256 with the explicit NULL of mbedTLS"
        );
        let (tag, h, l) = crate::x509::tlv(rest).unwrap();
        assert_eq!((tag, h + l), (0x03, rest.len()));
        assert_eq!(rest[h], 0, "no unused bits");
        let signature = p256::ecdsa::Signature::from_der(&rest[h + 1..]).unwrap();

        let public = p256::PublicKey::from_sec1_bytes(key.public_point()).unwrap();
        p256::ecdsa::VerifyingKey::from(&public)
            .verify(info, &signature)
            .expect("the CSR signature verifies with p256");

        // The SubjectPublicKeyInfo bytes p256 wrote, in the CSR and in the stored public key.
        let spki = public.to_public_key_der().unwrap();
        assert_eq!(key.public_key_der(), spki.as_bytes());
        assert!(
            info.windows(spki.as_bytes().len())
                .any(|w| w == spki.as_bytes())
        );

        // The stored private key: the 121-byte mbedTLS SEC1 form, which parses back to the key.
        let stored = key.private_key_der();
        assert_eq!(stored.len(), 121);
        let parsed = crate::x509::parse_private_key(&stored).unwrap();
        assert_eq!(parsed.public_key(), public);
        assert_eq!(
            &stored[..],
            &crate::x509::private_key_der(&parsed)[..],
            "byte-identical to what the p256 code stored"
        );
        assert_eq!(
            parsed.public_key().to_encoded_point(false).as_bytes(),
            key.public_point()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
        #[test]
        fn subject_parsing_never_panics(subject in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_subject(&subject);
        }

        #[test]
        fn subject_like_strings_never_panic(subject in "[A-Za-z=, \\\\]{0,40}") {
            let _ = parse_subject(subject.as_bytes());
        }
    }
}
