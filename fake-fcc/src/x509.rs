//! X.509 and key parsing with the outcomes mbedTLS (as configured in the genuine FCC: P-256 only,
//! SHA-256 only, no RSA) gives, expressed as kcm statuses.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use fcc_proto::status::KcmStatus;

/// id-ecPublicKey.
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1 / secp256r1.
pub const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// ecdsa-with-SHA256.
pub const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA224 (SHA-224 comes with mbedTLS's SHA-256 module, so it parses).
pub const OID_ECDSA_SHA224: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.1");
/// commonName.
pub const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// organizationalUnitName.
pub const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// extKeyUsage extension.
pub const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// keyUsage extension.
pub const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
/// anyExtendedKeyUsage.
pub const OID_ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
/// id-kp-clientAuth.
pub const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Extensions mbedTLS 2.28 understands; an unknown one marked critical fails the parse.
const KNOWN_EXTENSIONS: [&str; 6] = [
    "2.5.29.19",             // basicConstraints
    "2.5.29.15",             // keyUsage
    "2.5.29.37",             // extKeyUsage
    "2.5.29.17",             // subjectAltName
    "2.16.840.1.113730.1.1", // nsCertType
    "2.5.29.32",             // certificatePolicies
];

/// Subject attribute types mbedTLS has a short name for. `pal_plat_X509GetField` walks the
/// subject in order and fails at the first attribute it cannot name.
const KNOWN_ATTRIBUTES: [&str; 19] = [
    "2.5.4.3",
    "2.5.4.6",
    "2.5.4.7",
    "2.5.4.8",
    "2.5.4.10",
    "2.5.4.11",
    "1.2.840.113549.1.9.1",
    "2.5.4.5",
    "2.5.4.16",
    "2.5.4.17",
    "2.5.4.4",
    "2.5.4.42",
    "2.5.4.43",
    "2.5.4.44",
    "2.5.4.12",
    "2.5.4.46",
    "2.5.4.65",
    "0.9.2342.19200300.100.1.25",
    "2.5.4.45",
];

/// A subject attribute type mbedTLS has no short name for (reading attributes stops there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAttribute(pub ObjectIdentifier);

/// A certificate as the device sees it after a successful parse.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    /// The DER of the certificate itself (mbedTLS ignores bytes after the outer SEQUENCE).
    pub der: Vec<u8>,
    /// The DER of the TBSCertificate (what the issuer signed).
    pub tbs: Vec<u8>,
    /// The signature value (a DER ECDSA-Sig-Value for the certificates that parse here).
    pub signature: Vec<u8>,
    /// Raw DER of the subject and issuer names (the self-signed check compares these bytes).
    pub subject_raw: Vec<u8>,
    /// See `subject_raw`.
    pub issuer_raw: Vec<u8>,
    /// Subject attributes in encoding order: (type, raw value bytes).
    pub subject_attrs: Vec<(ObjectIdentifier, Vec<u8>)>,
    /// notBefore as seconds since the epoch.
    pub not_before: u64,
    /// notAfter as seconds since the epoch.
    pub not_after: u64,
    /// The subject public key (always P-256 here).
    pub public_key: p256::PublicKey,
    /// The EKU purposes, `None` when the certificate has no EKU extension.
    pub eku: Option<Vec<ObjectIdentifier>>,
}

impl ParsedCert {
    /// The first subject attribute of `oid`, walking the subject like `pal_plat_X509GetField`:
    /// an error when an attribute before it has a type mbedTLS cannot name, `Ok(None)` when
    /// there is none.
    pub fn attribute(&self, oid: ObjectIdentifier) -> Result<Option<&[u8]>, UnknownAttribute> {
        for (attr, value) in &self.subject_attrs {
            if !KNOWN_ATTRIBUTES.iter().any(|k| attr.to_string() == *k) {
                return Err(UnknownAttribute(*attr));
            }
            if *attr == oid {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// mbedTLS `x509_crt_check_extended_key_usage` for clientAuth: no EKU extension means no
    /// restriction, anyExtendedKeyUsage also passes.
    pub fn allows_client_auth(&self) -> bool {
        match &self.eku {
            None => true,
            Some(purposes) => purposes
                .iter()
                .any(|p| *p == OID_CLIENT_AUTH || *p == OID_ANY_EKU),
        }
    }

    /// Whether subject and issuer are the same bytes (the signature is not checked).
    pub fn is_self_signed(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }

    /// Whether `issuer_key` verifies this certificate's signature over SHA-256 of the TBS, the
    /// way chain links are checked (`cs_x509_cert_verify_der_signature` with SHA-256).
    ///
    /// Verified with ring, not pure-Rust `p256`: several times faster, and a fleet simulates
    /// thousands of devices a second, each checking its chain. The outcome is the same: ring also
    /// takes only a strict DER `ECDSA-Sig-Value` (minimal INTEGERs, no trailing bytes) with r and
    /// s in [1, n-1], and hashes the TBS with SHA-256 whatever the certificate's algorithm.
    pub fn is_signed_by(&self, issuer_key: &p256::PublicKey) -> bool {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
        // ring takes the uncompressed point (the parsed key may have come compressed).
        let point = issuer_key.to_encoded_point(false);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point.as_bytes())
            .verify(&self.tbs, &self.signature)
            .is_ok()
    }

    /// The 33-byte compressed public key, the CA identifier written to `time_srv_id`.
    pub fn compressed_key(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        self.public_key.to_encoded_point(true).as_bytes().to_vec()
    }
}

/// Whether `public` is the public key of `key` (mbedTLS `mbedtls_pk_check_pair`, which FCC runs
/// when it stores a certificate bound to a key and again when it verifies the bundle).
///
/// Derived with ring's P-256 (one fixed-base scalar multiplication, about ten times faster than
/// pure-Rust `p256`'s): a fleet runs thousands of simulated gateways on the same cores as the
/// server it measures, and this check was half of each gateway's CPU time.
pub fn key_pair_matches(key: &p256::SecretKey, public: &p256::PublicKey) -> bool {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let scalar = zeroize::Zeroizing::new(key.to_bytes());
    let point = public.to_encoded_point(false);
    // ring derives the public key from the scalar and refuses the pair when they differ.
    EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &scalar[..],
        point.as_bytes(),
        &ring::rand::SystemRandom::new(),
    )
    .is_ok()
}

/// What a device has already worked out about the certificates it was given.
///
/// The genuine FCC parses a certificate, and checks it against its private key, again at every
/// step that looks at it (storing it, then each verification step). The outcome is the same every
/// time, so the simulator works each one out once per device and remembers it: this halves a
/// simulated gateway's CPU time, which matters when one fleet process simulates thousands of
/// gateways on the cores of the server it measures.
#[derive(Default)]
pub struct CertMemo {
    parsed: RefCell<HashMap<Vec<u8>, Arc<ParsedCert>>>,
    /// (private key name, certificate DER) pairs found to match, until a private key changes.
    matching_pairs: RefCell<HashSet<(String, Vec<u8>)>>,
}

impl CertMemo {
    /// [`parse_certificate`], once per distinct DER (failures are not remembered).
    pub fn parse(&self, der: &[u8]) -> Result<Arc<ParsedCert>, KcmStatus> {
        if let Some(parsed) = self.parsed.borrow().get(der) {
            return Ok(Arc::clone(parsed));
        }
        let parsed = Arc::new(parse_certificate(der)?);
        self.parsed
            .borrow_mut()
            .insert(der.to_vec(), Arc::clone(&parsed));
        Ok(parsed)
    }

    /// [`key_pair_matches`] for the private key stored as `key_name` and the certificate `der`,
    /// once per pair while the private keys stay as they are.
    pub fn pair_matches(
        &self,
        key_name: &str,
        key: &p256::SecretKey,
        der: &[u8],
        cert: &ParsedCert,
    ) -> bool {
        let pair = (key_name.to_owned(), der.to_vec());
        if self.matching_pairs.borrow().contains(&pair) {
            return true;
        }
        let matches = key_pair_matches(key, &cert.public_key);
        if matches {
            self.matching_pairs.borrow_mut().insert(pair);
        }
        matches
    }

    /// A private key was stored, removed or wiped: pairs must be checked again.
    pub fn forget_pairs(&self) {
        self.matching_pairs.borrow_mut().clear();
    }
}

/// Reads one DER TLV header at the start of `buf`: (tag, header length, content length).
pub(crate) fn tlv(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*buf.get(2 + i)?);
        }
        (2 + n, len)
    };
    // A length past the end of the input is no TLV (short form included: it used to be trusted,
    // and `split_tlv` panicked on a 2-byte header claiming more bytes than there were).
    if buf.len() - header < len {
        return None;
    }
    Some((tag, header, len))
}

/// Splits `buf` into its first TLV (whole) and the rest.
fn split_tlv(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, header, len) = tlv(buf)?;
    Some(buf.split_at(header + len))
}

/// The content bytes of the TLV at the start of `buf`.
fn content(buf: &[u8]) -> Option<&[u8]> {
    let (_, header, len) = tlv(buf)?;
    buf.get(header..header + len)
}

/// The parsing profile: serial numbers up to 32 bytes, like mbedTLS
/// (`MBEDTLS_X509_RFC5280_MAX_SERIAL_LEN`), instead of RFC 5280's 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbedTlsProfile;

impl x509_cert::certificate::Profile for MbedTlsProfile {
    fn check_serial_number(
        serial: &x509_cert::serial_number::SerialNumber<Self>,
    ) -> der::Result<()> {
        if serial.as_bytes().len() > 32 {
            return Err(der::Tag::Integer.value_error());
        }
        Ok(())
    }
}

/// Whether a signature AlgorithmIdentifier's parameters are absent or NULL, as mbedTLS requires
/// for ECDSA.
fn params_absent_or_null(params: &Option<der::asn1::Any>) -> bool {
    match params {
        None => true,
        Some(any) => der::Tagged::tag(any) == der::Tag::Null && any.value().is_empty(),
    }
}

/// Parses a DER certificate like `mbedtls_x509_crt_parse_der` in the genuine build, in its
/// order: TBS signature algorithm, names and validity, public key, extensions, then the outer
/// signature algorithm.
///
/// Errors: `InvalidMdType` (a signature algorithm other than ECDSA with SHA-224/256),
/// `UnsupportedCurve` (EC key on another curve), `ParsingDerCert` (anything else).
pub fn parse_certificate(input: &[u8]) -> Result<ParsedCert, KcmStatus> {
    let bad = KcmStatus::ParsingDerCert;
    let (cert_der, _trailing) = split_tlv(input).ok_or(bad)?;
    let cert = x509_cert::certificate::CertificateInner::<MbedTlsProfile>::from_der(cert_der)
        .map_err(|_| bad)?;
    let tbs = &cert.tbs_certificate;

    let sig_alg = tbs.signature.oid;
    if sig_alg != OID_ECDSA_SHA256 && sig_alg != OID_ECDSA_SHA224 {
        return Err(KcmStatus::InvalidMdType);
    }
    if !params_absent_or_null(&tbs.signature.parameters) {
        return Err(bad);
    }

    let spki = &tbs.subject_public_key_info;
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(bad);
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or(bad)?;
    if curve != OID_P256 {
        return Err(KcmStatus::UnsupportedCurve);
    }
    let point = spki.subject_public_key.as_bytes().ok_or(bad)?;
    let public_key = p256::PublicKey::from_sec1_bytes(point).map_err(|_| bad)?;

    let mut eku = None;
    for ext in tbs.extensions.iter().flatten() {
        let id = ext.extn_id.to_string();
        if ext.extn_id == OID_EXT_KEY_USAGE {
            let purposes =
                Vec::<ObjectIdentifier>::from_der(ext.extn_value.as_bytes()).map_err(|_| bad)?;
            if purposes.is_empty() {
                return Err(bad);
            }
            eku = Some(purposes);
        } else if ext.critical && !KNOWN_EXTENSIONS.contains(&id.as_str()) {
            return Err(bad);
        }
    }

    if cert.signature_algorithm.oid != sig_alg
        || cert.signature_algorithm.parameters != tbs.signature.parameters
    {
        return Err(bad);
    }

    let mut subject_attrs = Vec::new();
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter() {
            subject_attrs.push((atv.oid, atv.value.value().to_vec()));
        }
    }

    // Raw slices of tbs, issuer and subject, taken from the input so they are byte-exact.
    let cert_content = content(cert_der).ok_or(bad)?;
    let (tbs_der, _) = split_tlv(cert_content).ok_or(bad)?;
    let mut rest = content(tbs_der).ok_or(bad)?;
    if rest.first() == Some(&0xa0) {
        rest = split_tlv(rest).ok_or(bad)?.1; // [0] version
    }
    let (_serial, rest) = split_tlv(rest).ok_or(bad)?;
    let (_alg, rest) = split_tlv(rest).ok_or(bad)?;
    let (issuer_raw, rest) = split_tlv(rest).ok_or(bad)?;
    let (_validity, rest) = split_tlv(rest).ok_or(bad)?;
    let (subject_raw, _) = split_tlv(rest).ok_or(bad)?;

    Ok(ParsedCert {
        der: cert_der.to_vec(),
        tbs: tbs_der.to_vec(),
        signature: cert.signature.as_bytes().ok_or(bad)?.to_vec(),
        subject_raw: subject_raw.to_vec(),
        issuer_raw: issuer_raw.to_vec(),
        subject_attrs,
        not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        public_key,
        eku,
    })
}

/// `pal_plat_isPEM`: `strstr` for a PEM armour line in the bytes before the first NUL.
pub fn looks_like_pem(bytes: &[u8]) -> bool {
    let s = crate::cbor::c_str(bytes);
    let has = |needle: &[u8]| s.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ") || has(b"-----END ")
}

/// Parses a private key like `pal_plat_parseECPrivateKeyFromDER` + the range check: PEM text is
/// `InvalidParameter`; anything mbedTLS's `pk_parse_key` would not take (other curves, RSA,
/// garbage, out-of-range scalar) is `PkKeyInvalidFormat`, because `pk_parse_key` collapses all its
/// attempts into that one error. Accepts PKCS#8 and SEC1 (with named-curve parameters).
pub fn parse_private_key(der: &[u8]) -> Result<p256::SecretKey, KcmStatus> {
    if looks_like_pem(der) {
        return Err(KcmStatus::InvalidParameter);
    }
    if der.is_empty() {
        return Err(KcmStatus::PkKeyInvalidFormat);
    }
    parse_pkcs8(der)
        .or_else(|| parse_sec1(der, None))
        .ok_or(KcmStatus::PkKeyInvalidFormat)
}

fn parse_pkcs8(der: &[u8]) -> Option<p256::SecretKey> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).ok()?;
    if info.algorithm.oid != OID_EC_PUBLIC_KEY {
        return None;
    }
    let curve = info
        .algorithm
        .parameters
        .as_ref()?
        .decode_as::<ObjectIdentifier>()
        .ok()?;
    if curve != OID_P256 {
        return None;
    }
    parse_sec1(info.private_key, Some(curve))
}

fn parse_sec1(der: &[u8], curve_from_outer: Option<ObjectIdentifier>) -> Option<p256::SecretKey> {
    let key = sec1::EcPrivateKey::from_der(der).ok()?;
    let curve = match key.parameters {
        Some(params) => params.named_curve()?,
        None => curve_from_outer?,
    };
    if curve != OID_P256 {
        return None;
    }
    p256::SecretKey::from_slice(key.private_key).ok()
}

/// Parses a SubjectPublicKeyInfo like `pal_plat_parseECPublicKeyFromDER`.
pub fn parse_public_key(der: &[u8]) -> Result<p256::PublicKey, KcmStatus> {
    if looks_like_pem(der) {
        return Err(KcmStatus::InvalidParameter);
    }
    let (first, trailing) = split_tlv(der).ok_or(KcmStatus::ParsingDerPublicKey)?;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(first)
        .map_err(|_| KcmStatus::ParsingDerPublicKey)?;
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(KcmStatus::PkUnknownPkAlg);
    }
    let curve = spki
        .algorithm
        .parameters
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or(KcmStatus::ParsingDerPublicKey)?;
    if curve != OID_P256 {
        return Err(KcmStatus::UnsupportedCurve);
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(KcmStatus::ParsingDerPublicKey)?;
    let key =
        p256::PublicKey::from_sec1_bytes(point).map_err(|_| KcmStatus::ParsingDerPublicKey)?;
    if !trailing.is_empty() {
        return Err(KcmStatus::InvalidPkPubkey);
    }
    Ok(key)
}

/// The DER SubjectPublicKeyInfo of a P-256 public key (uncompressed point).
pub fn public_key_der(key: &p256::PublicKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    spki_der(key.to_encoded_point(false).as_bytes())
}

/// The DER SubjectPublicKeyInfo of a P-256 public key given as its SEC1 point: id-ecPublicKey
/// with the named curve, the bytes `p256`'s `EncodePublicKey` writes for the uncompressed point.
/// Written by hand so that a key generated with ring needs no `p256` point.
pub fn spki_der(point: &[u8]) -> Vec<u8> {
    use crate::csr::der;
    let algorithm = der(
        0x30,
        &[
            der(0x06, OID_EC_PUBLIC_KEY.as_bytes()),
            der(0x06, OID_P256.as_bytes()),
        ]
        .concat(),
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    der(0x30, &[algorithm, der(0x03, &bits)].concat())
}

/// The DER `ECPrivateKey` (SEC1) of a P-256 key as mbedTLS `pk_write_key_der` writes it (121
/// bytes, with the named-curve parameters and the public key), the form a device-generated key
/// is stored in. The parameters matter: without them mbedTLS cannot parse a SEC1 key.
pub fn private_key_der(key: &p256::SecretKey) -> zeroize::Zeroizing<Vec<u8>> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let scalar = zeroize::Zeroizing::new(key.to_bytes());
    let point = key.public_key().to_encoded_point(false);
    ec_private_key_der(&scalar[..], point.as_bytes())
}

/// [`private_key_der`] of a key given as its 32-byte scalar and its uncompressed SEC1 point (a
/// key generated with ring, whose point is known without a scalar multiplication).
pub fn ec_private_key_der(scalar: &[u8], point: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    use crate::csr::der;
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    let content = zeroize::Zeroizing::new(
        [
            der(0x02, &[1]),
            der(0x04, scalar),
            der(0xa0, &der(0x06, OID_P256.as_bytes())),
            der(0xa1, &der(0x03, &bits)),
        ]
        .concat(),
    );
    zeroize::Zeroizing::new(der(0x30, &content))
}

/// Re-encodes an OID list as a DER SEQUENCE (used by tests and the CSR writer).
pub fn encode_oid_sequence(oids: &[ObjectIdentifier]) -> Vec<u8> {
    oids.to_vec().to_der().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_input_is_refused_not_a_panic() {
        for input in [
            &b"not a certificate"[..],
            &[0x30, 0x05, 0x02],
            &[0x30, 0x82, 0x01],
            &[0x30],
        ] {
            assert_eq!(
                parse_certificate(input).unwrap_err(),
                KcmStatus::ParsingDerCert,
                "{input:?}"
            );
            assert!(tlv(input).is_none(), "{input:?}");
        }
    }

    #[test]
    fn generated_keys_parse_back() {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = private_key_der(&key);
        assert_eq!(
            der.len(),
            121,
            "the mbedTLS SEC1 form with parameters and public key"
        );
        assert_eq!(parse_private_key(&der).unwrap(), key);
    }
}

#[cfg(test)]
mod memo_tests {
    use super::*;

    /// A self-signed P-256 certificate of `key` (rcgen) and the key as a p256 secret.
    fn cert_of(key: &rcgen::KeyPair) -> (Vec<u8>, p256::SecretKey) {
        let params = rcgen::CertificateParams::new(vec!["memo".to_owned()]).unwrap();
        let der = params.self_signed(key).unwrap().der().to_vec();
        let secret = parse_private_key(&key.serialize_der()).unwrap();
        (der, secret)
    }

    #[test]
    fn remembered_outcomes_equal_computed_ones_and_key_changes_are_not_missed() {
        let memo = CertMemo::default();
        let k1 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let k2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (c1, s1) = cert_of(&k1);
        let (_, s2) = cert_of(&k2);

        let parsed = memo.parse(&c1).unwrap();
        assert!(
            Arc::ptr_eq(&parsed, &memo.parse(&c1).unwrap()),
            "parsed once"
        );
        assert_eq!(
            parsed.subject_raw,
            parse_certificate(&c1).unwrap().subject_raw
        );
        assert_eq!(
            memo.parse(b"not a certificate").unwrap_err(),
            parse_certificate(b"not a certificate").unwrap_err()
        );

        assert!(memo.pair_matches("key", &s1, &c1, &parsed));
        assert!(
            !memo.pair_matches("other", &s2, &c1, &parsed),
            "a wrong key never matches"
        );
        // Remembered: the same name and certificate match without the key being looked at...
        assert!(memo.pair_matches("key", &s2, &c1, &parsed));
        // ...until a private key changes, after which the new key is checked for real.
        memo.forget_pairs();
        assert!(!memo.pair_matches("key", &s2, &c1, &parsed));
        assert!(memo.pair_matches("key", &s1, &c1, &parsed));
    }
}

#[cfg(test)]
mod ring_tests {
    use super::*;

    /// What `is_signed_by` computed with `p256` before it used ring: the reference outcome.
    fn p256_verifies(cert: &ParsedCert, issuer: &p256::PublicKey) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use sha2::{Digest, Sha256};
        let Ok(sig) = p256::ecdsa::Signature::from_der(&cert.signature) else {
            return false;
        };
        p256::ecdsa::VerifyingKey::from(issuer)
            .verify_prehash(&Sha256::digest(&cert.tbs), &sig)
            .is_ok()
    }

    /// A CA, a device certificate it signed (both parsed) and the device key.
    fn chain() -> (ParsedCert, ParsedCert, rcgen::KeyPair) {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let device_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["device".to_owned()])
            .unwrap()
            .signed_by(&device_key, &ca, &ca_key)
            .unwrap();
        (
            parse_certificate(ca.der()).unwrap(),
            parse_certificate(leaf.der()).unwrap(),
            device_key,
        )
    }

    #[test]
    fn chain_links_verify_as_with_p256() {
        let (ca, leaf, _) = chain();
        let (other_ca, _, _) = chain();
        assert!(leaf.is_signed_by(&ca.public_key));
        assert!(!leaf.is_signed_by(&other_ca.public_key));
        assert!(!ca.is_signed_by(&leaf.public_key));
        assert!(ca.is_signed_by(&ca.public_key), "self-signed");

        let sig = p256::ecdsa::Signature::from_der(&leaf.signature).unwrap();
        let with_signature = |der: Vec<u8>| ParsedCert {
            signature: der,
            ..leaf.clone()
        };
        // Both s and n - s verify (neither library insists on a low s for P-256).
        let flipped =
            p256::ecdsa::Signature::from_scalars(sig.r().to_bytes(), (-*sig.s()).to_bytes())
                .unwrap();
        let flipped = with_signature(flipped.to_der().as_bytes().to_vec());
        assert!(flipped.is_signed_by(&ca.public_key));
        assert!(p256_verifies(&flipped, &ca.public_key));
        // A non-minimal INTEGER (an extra leading zero) and trailing bytes: neither takes them.
        let r = sig.r().to_bytes();
        let s = sig.s().to_bytes();
        let int = |v: &[u8]| crate::csr::der(0x02, &[&[0, 0][..], v].concat());
        let padded = with_signature(crate::csr::der(0x30, &[int(&r), int(&s)].concat()));
        assert!(!padded.is_signed_by(&ca.public_key));
        assert!(!p256_verifies(&padded, &ca.public_key));
        let mut trailing = leaf.signature.clone();
        trailing.push(0);
        let trailing = with_signature(trailing);
        assert!(!trailing.is_signed_by(&ca.public_key));
        assert!(!p256_verifies(&trailing, &ca.public_key));
        // Another TBS under the same signature.
        let mut tbs = leaf.clone();
        if let Some(last) = tbs.tbs.last_mut() {
            *last ^= 1;
        }
        assert!(!tbs.is_signed_by(&ca.public_key));
    }

    #[test]
    fn a_mismatched_key_pair_is_refused_with_the_same_status() {
        let (_, leaf, device_key) = chain();
        let (_, _, other_key) = chain();
        let key = parse_private_key(&device_key.serialize_der()).unwrap();
        let other = parse_private_key(&other_key.serialize_der()).unwrap();
        assert!(key_pair_matches(&key, &leaf.public_key));
        assert!(!key_pair_matches(&other, &leaf.public_key));
        assert_eq!(
            other.public_key() == leaf.public_key,
            key_pair_matches(&other, &leaf.public_key),
            "the same answer as p256's scalar multiplication"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// One changed byte of the signature: ring and p256 agree on every outcome.
        #[test]
        fn corrupted_signatures_get_the_p256_outcome(index in 0usize..80, xor in 1u8..=255) {
            let (ca, leaf, _) = chain();
            let mut cert = leaf.clone();
            let i = index % cert.signature.len();
            cert.signature[i] ^= xor;
            proptest::prop_assert_eq!(
                cert.is_signed_by(&ca.public_key),
                p256_verifies(&cert, &ca.public_key)
            );
        }
    }
}
