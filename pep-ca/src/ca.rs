//! The factory CA: loading it, issuing device identities, signing CSRs.

use std::fmt;
use std::path::Path;

use const_oid::db::rfc5280::{
    ID_CE_BASIC_CONSTRAINTS, ID_CE_KEY_USAGE, ID_CE_SUBJECT_KEY_IDENTIFIER,
};
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, SECP_256_R_1};
use der::asn1::AnyRef;
use der::{Decode, Reader, SliceReader, Tag, Tagged};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::{self, PemObject};
use time::OffsetDateTime;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use zeroize::Zeroizing;

use crate::csr;
use crate::endpoint::EndpointName;
use crate::enrollment::EnrollmentId;
use crate::error::{CaError, CaWarning};
use crate::key::DevicePrivateKey;
use crate::pem::{is_blank, parse_certificates};
use crate::pkcs11::{Pkcs11Config, Pkcs11Key};
use crate::profile::{self, CertProfile, TbsParts};

/// A loaded factory CA, ready to sign.
///
/// Everything a signature needs (issuer name, authority key identifier, the signing key) is
/// prepared once at load, so issuing does not re-parse anything. `Send + Sync`: share it in an
/// `Arc`.
pub struct FactoryCa {
    cert_der: Vec<u8>,
    chain: Vec<Vec<u8>>,
    subject_der: Vec<u8>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fixed_extensions: Vec<u8>,
    authority_key_id: Vec<u8>,
    /// The CA's key identifier (its subjectKeyIdentifier, or RFC 5280 method 1): the CRL's
    /// authorityKeyIdentifier.
    key_id: Vec<u8>,
    signer: Signer,
    /// Where the key is, for people (`check-config`, logs).
    key_location: String,
    rng: SystemRandom,
}

/// The one place the CA key signs: certificates, and whatever pep signs later (CRLs).
enum Signer {
    /// The key in this process's memory (loaded from a file).
    Memory(EcdsaKeyPair),
    /// The key in a token; the signature happens there.
    Pkcs11(Pkcs11Key),
}

/// The parts of the CA certificate every signature needs, and what is checked of it.
struct CertParts {
    chain: Vec<Vec<u8>>,
    subject_der: Vec<u8>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key_id: Vec<u8>,
    point: [u8; 65],
}

/// A CA and what was noticed while loading it.
#[derive(Debug)]
pub struct LoadedCa {
    /// The CA.
    pub ca: FactoryCa,
    /// Things to tell the operator (key file permissions, CA expiring before the default
    /// device-certificate lifetime).
    pub warnings: Vec<CaWarning>,
}

/// A device certificate just issued.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its enrollment ID.
    pub enrollment_id: EnrollmentId,
    /// The serial number, upper-case hex (32 digits).
    pub serial_hex: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// What the operator should know (lifetime shortened to the CA's end, under 10 years).
    pub warnings: Vec<String>,
}

impl fmt::Debug for IssuedCertificate {
    /// The DER is summarised by its length: the enrollment ID identifies it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("der_len", &self.der.len())
            .field("enrollment_id", &self.enrollment_id.as_str())
            .field("serial_hex", &self.serial_hex)
            .field("not_before", &crate::error::rfc3339(&self.not_before))
            .field("not_after", &crate::error::rfc3339(&self.not_after))
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// A device identity: a new key and its certificate (`by_tool` mode).
#[derive(Debug)]
pub struct IssuedIdentity {
    /// The certificate.
    pub certificate: IssuedCertificate,
    /// The private key (PKCS#8, zeroized on drop).
    pub private_key: DevicePrivateKey,
}

impl FactoryCa {
    /// Loads `CA_cert.pem` (one certificate, or a chain leaf-first: the first one is the CA that
    /// signs) and `CA_private.pem` (SEC1 `EC PRIVATE KEY`, with or without an `EC PARAMETERS`
    /// block, or PKCS#8 `PRIVATE KEY`; unencrypted, P-256).
    ///
    /// Refuses encrypted keys, other curves, a key that is not the certificate's, a certificate
    /// that is not a CA (basicConstraints CA:TRUE and keyUsage keyCertSign are required), a CA
    /// outside its validity, and empty, garbage or missing files. Warns when the key file is
    /// accessible by group or others.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<LoadedCa, CaError> {
        let cert_file = cert_path.display().to_string();
        let key_file = key_path.display().to_string();
        let cert_pem = std::fs::read(cert_path).map_err(|source| CaError::Read {
            file: cert_file.clone(),
            source,
        })?;
        let key_pem = Zeroizing::new(std::fs::read(key_path).map_err(|source| CaError::Read {
            file: key_file.clone(),
            source,
        })?);
        let mut loaded = Self::from_pem_named(&cert_pem, &cert_file, &key_pem, &key_file)?;
        if let Some(warning) = key_file_warning(key_path, &key_file) {
            loaded.warnings.insert(0, warning);
        }
        // The warnings are returned, not logged: the caller decides (the server logs them,
        // `check-config` prints them).
        tracing::debug!(
            subject = %loaded.ca.subject,
            not_after = %crate::error::rfc3339(&loaded.ca.not_after),
            "factory CA loaded"
        );
        Ok(loaded)
    }

    /// Like [`FactoryCa::load`], from PEM already in memory (no file-permission check). Errors
    /// name the inputs "CA certificate PEM" and "CA key PEM".
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCa, CaError> {
        Self::from_pem_named(cert_pem, "CA certificate PEM", key_pem, "CA key PEM")
    }

    fn from_pem_named(
        cert_pem: &[u8],
        cert_file: &str,
        key_pem: &[u8],
        key_file: &str,
    ) -> Result<LoadedCa, CaError> {
        let (chain, cert) = parse_certificates(cert_pem, cert_file)?;
        let secret = parse_private_key(key_pem, key_file)?;
        let cert_key = certificate_key(&cert, cert_file)?;
        if secret.public_key() != cert_key {
            return Err(CaError::KeyMismatch {
                key_file: key_file.to_owned(),
                cert_file: cert_file.to_owned(),
            });
        }
        let parts = ca_parts(chain, &cert, cert_key, cert_file)?;
        let rng = SystemRandom::new();
        let scalar = Zeroizing::new(secret.to_bytes());
        let signer = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &scalar[..],
            &parts.point,
            &rng,
        )
        .map_err(|_| CaError::KeyMismatch {
            key_file: key_file.to_owned(),
            cert_file: cert_file.to_owned(),
        })?;
        Ok(Self::assemble(
            parts,
            Signer::Memory(signer),
            format!("file {key_file}"),
        ))
    }

    /// Loads the CA certificate (see [`FactoryCa::load`]) with its key in a PKCS#11 token: opens
    /// the module and the token, logs in, finds the key, checks it is P-256, signs a test digest
    /// and verifies it with the certificate's public key. Errors name what failed.
    pub fn load_pkcs11(cert_path: &Path, key: Pkcs11Config) -> Result<LoadedCa, CaError> {
        let cert_file = cert_path.display().to_string();
        let cert_pem = std::fs::read(cert_path).map_err(|source| CaError::Read {
            file: cert_file.clone(),
            source,
        })?;
        let (chain, cert) = parse_certificates(&cert_pem, &cert_file)?;
        let cert_key = certificate_key(&cert, &cert_file)?;
        let parts = ca_parts(chain, &cert, cert_key, &cert_file)?;
        let token = Pkcs11Key::open(key)?;
        // The test signature: proves the key signs and is the certificate's.
        let probe = b"pep: does the token's key match the CA certificate?";
        let digest = ring::digest::digest(&ring::digest::SHA256, probe);
        let raw = token.sign_digest(digest.as_ref())?;
        let verifier = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &parts.point[..],
        );
        if verifier.verify(probe, &raw).is_err() {
            return Err(CaError::TokenKeyMismatch {
                key: token.uri().describe(),
                cert_file,
            });
        }
        let location = format!(
            "PKCS#11 {} (module {})",
            token.uri().describe(),
            token.module().display()
        );
        let loaded = Self::assemble(parts, Signer::Pkcs11(token), location);
        tracing::debug!(
            subject = %loaded.ca.subject,
            key = %loaded.ca.key_location,
            "factory CA loaded"
        );
        Ok(loaded)
    }

    fn assemble(parts: CertParts, signer: Signer, key_location: String) -> LoadedCa {
        let now = OffsetDateTime::now_utc();
        let mut warnings = Vec::new();
        if parts.not_after < now + profile::DEFAULT_LIFETIME {
            warnings.push(CaWarning::CaExpiresSoon {
                not_after: parts.not_after,
                under_ten_years: parts.not_after - now < profile::DEVICE_WARNING_THRESHOLD,
            });
        }
        let ca = FactoryCa {
            cert_der: parts.chain.first().cloned().unwrap_or_default(),
            chain: parts.chain,
            subject_der: parts.subject_der,
            subject: parts.subject,
            not_before: parts.not_before,
            not_after: parts.not_after,
            fixed_extensions: profile::fixed_extensions(),
            authority_key_id: profile::authority_key_id_extension(&parts.key_id),
            key_id: parts.key_id,
            signer,
            key_location,
            rng: SystemRandom::new(),
        };
        LoadedCa { ca, warnings }
    }
}

/// The CA certificate's public key, which must be EC P-256.
fn certificate_key(
    cert: &x509_cert::Certificate,
    cert_file: &str,
) -> Result<p256::PublicKey, CaError> {
    let tbs = &cert.tbs_certificate;

    // The certificate's key: EC P-256.
    let spki = &tbs.subject_public_key_info;
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(CaError::UnsupportedKeyType {
            file: cert_file.to_owned(),
            key_type: csr::oid_name(&spki.algorithm.oid),
        });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
        .ok_or_else(|| CaError::UnsupportedCurve {
            file: cert_file.to_owned(),
            curve: "(no named curve)".to_owned(),
        })?;
    if curve != SECP_256_R_1 {
        return Err(CaError::UnsupportedCurve {
            file: cert_file.to_owned(),
            curve: csr::oid_name(&curve),
        });
    }
    let bad_cert = |detail: &str| CaError::CertificateParse {
        file: cert_file.to_owned(),
        index: 1,
        detail: detail.to_owned(),
    };
    spki.subject_public_key
        .as_bytes()
        .and_then(|b| p256::PublicKey::from_sec1_bytes(b).ok())
        .ok_or_else(|| bad_cert("the public key is not a valid P-256 point"))
}

/// The extension `oid` of `tbs` decoded, if present; a bad encoding is `"name: why"`.
fn decoded_extension<'a, T: Decode<'a>>(
    tbs: &'a x509_cert::TbsCertificate,
    oid: const_oid::ObjectIdentifier,
    name: &str,
) -> Result<Option<T>, String> {
    tbs.extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid)
        .map(|e| T::from_der(e.extn_value.as_bytes()))
        .transpose()
        .map_err(|e| format!("{name}: {e}"))
}

/// Checks the CA certificate is a CA, within its validity, and prepares what issuing needs.
fn ca_parts(
    chain: Vec<Vec<u8>>,
    cert: &x509_cert::Certificate,
    cert_key: p256::PublicKey,
    cert_file: &str,
) -> Result<CertParts, CaError> {
    let tbs = &cert.tbs_certificate;
    let bad_cert = |detail: &str| CaError::CertificateParse {
        file: cert_file.to_owned(),
        index: 1,
        detail: detail.to_owned(),
    };
    // A CA that may sign certificates.
    let basic: Option<BasicConstraints> =
        decoded_extension(tbs, ID_CE_BASIC_CONSTRAINTS, "basicConstraints")
            .map_err(|e| bad_cert(&e))?;
    let not_ca = |reason| CaError::NotCa {
        file: cert_file.to_owned(),
        reason,
    };
    match basic {
        None => {
            return Err(not_ca(
                "it has no basicConstraints extension (CA:TRUE is required)",
            ));
        }
        Some(b) if !b.ca => return Err(not_ca("basicConstraints says CA:FALSE")),
        Some(_) => {}
    }
    let usage: Option<KeyUsage> =
        decoded_extension(tbs, ID_CE_KEY_USAGE, "keyUsage").map_err(|e| bad_cert(&e))?;
    let no_key_cert_sign = |reason| CaError::NoKeyCertSign {
        file: cert_file.to_owned(),
        reason,
    };
    match usage {
        None => {
            return Err(no_key_cert_sign(
                "it has no keyUsage extension (keyCertSign is required)",
            ));
        }
        Some(u) if !u.key_cert_sign() => {
            return Err(no_key_cert_sign("its keyUsage lacks keyCertSign"));
        }
        Some(_) => {}
    }
    let ski: Option<SubjectKeyIdentifier> =
        decoded_extension(tbs, ID_CE_SUBJECT_KEY_IDENTIFIER, "subjectKeyIdentifier")
            .map_err(|e| bad_cert(&e))?;

    // Within its validity.
    let time = |t: x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs())
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or_else(|| bad_cert("validity date out of range"))
    };
    let not_before = time(tbs.validity.not_before)?;
    let not_after = time(tbs.validity.not_after)?;
    let now = OffsetDateTime::now_utc();
    if now < not_before {
        return Err(CaError::CaNotYetValid {
            file: cert_file.to_owned(),
            not_before,
        });
    }
    if now > not_after {
        return Err(CaError::CaExpired {
            file: cert_file.to_owned(),
            not_after,
        });
    }

    // Prepared once for every issue.
    let first = chain.first().ok_or_else(|| bad_cert("no certificate"))?;
    let subject_der = raw_subject(first)
        .map_err(|e| bad_cert(&format!("subject: {e}")))?
        .to_vec();
    let encoded = cert_key.to_encoded_point(false);
    let point: [u8; 65] = encoded
        .as_bytes()
        .try_into()
        .map_err(|_| bad_cert("the public key is not an uncompressed P-256 point"))?;
    let key_id = match &ski {
        Some(ski) => ski.0.as_bytes().to_vec(),
        None => profile::key_identifier(&point).to_vec(),
    };
    Ok(CertParts {
        chain,
        subject_der,
        subject: tbs.subject.to_string(),
        not_before,
        not_after,
        key_id,
        point,
    })
}

impl FactoryCa {
    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Every certificate of the certificate file, DER, in file order (the CA first).
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The CA's subject, RFC 4514 text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The CA's notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The CA's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA's subject Name, DER (the CRL's issuer).
    pub(crate) fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The CA's key identifier (the CRL's authorityKeyIdentifier).
    pub(crate) fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// Where the key is, for people: `file /etc/pep/CA_private.pem` or
    /// `PKCS#11 token "pep-factory", object "ca-key" (module ...)`.
    pub fn key_location(&self) -> &str {
        &self.key_location
    }

    /// True when the key is in a PKCS#11 token: each signature is a call into the module that
    /// may block (an async caller runs it on a blocking thread).
    pub fn key_in_token(&self) -> bool {
        matches!(self.signer, Signer::Pkcs11(_))
    }

    /// False while the token holding the key is away (after a failed signature, until it is
    /// re-opened); always true for a key in memory.
    pub fn is_available(&self) -> bool {
        match &self.signer {
            Signer::Memory(_) => true,
            Signer::Pkcs11(key) => key.is_available(),
        }
    }

    /// Like [`FactoryCa::is_available`], but asks the token (re-opening it when it came back):
    /// may block on the module, like a signature.
    pub fn probe(&self) -> bool {
        match &self.signer {
            Signer::Memory(_) => true,
            Signer::Pkcs11(key) => key.probe(),
        }
    }

    /// An ECDSA-with-SHA256 signature (DER) of `message` by the CA key. Certificates are signed
    /// through it, and so is whatever pep signs later (CRLs). A token that is away gives
    /// [`CaError::TokenUnavailable`].
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        match &self.signer {
            Signer::Memory(key) => key
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CaError::Crypto {
                    operation: "signing with the CA key",
                }),
            Signer::Pkcs11(key) => key.sign_der(message),
        }
    }

    /// Issues a device identity (`by_tool` mode): a new P-256 key and its certificate with
    /// CN = `endpoint`, valid from now (the wall clock); see [`FactoryCa::issue_at`].
    pub fn issue(
        &self,
        endpoint: &EndpointName,
        profile: &CertProfile,
    ) -> Result<IssuedIdentity, CaError> {
        self.issue_at(endpoint, profile, OffsetDateTime::now_utc())
    }

    /// [`FactoryCa::issue`] with the issuing time given: the certificate's validity starts at
    /// `now` (less the profile's backdating), so a caller with its own clock gets deterministic
    /// certificates.
    pub fn issue_at(
        &self,
        endpoint: &EndpointName,
        profile: &CertProfile,
        now: OffsetDateTime,
    ) -> Result<IssuedIdentity, CaError> {
        profile.validate()?;
        let (private_key, point) = DevicePrivateKey::generate(&self.rng)?;
        let certificate = self.certify(&point, endpoint, profile, now)?;
        Ok(IssuedIdentity {
            certificate,
            private_key,
        })
    }

    /// Signs a device's DER PKCS#10 request (`by_device` mode: the key never leaves the
    /// gateway). The request must carry a valid self-signature by a P-256 key and the subject
    /// CN `expected`; the certificate gets the same profile as [`FactoryCa::issue`], whatever
    /// extensions the request asks for.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        expected: &EndpointName,
        profile: &CertProfile,
    ) -> Result<IssuedCertificate, CaError> {
        self.sign_csr_at(csr_der, expected, profile, OffsetDateTime::now_utc())
    }

    /// [`FactoryCa::sign_csr`] with the issuing time given (see [`FactoryCa::issue_at`]).
    pub fn sign_csr_at(
        &self,
        csr_der: &[u8],
        expected: &EndpointName,
        profile: &CertProfile,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CaError> {
        profile.validate()?;
        let point = csr::verified_public_point(csr_der, expected)?;
        self.certify(&point, expected, profile, now)
    }

    fn certify(
        &self,
        point: &[u8; 65],
        endpoint: &EndpointName,
        profile: &CertProfile,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CaError> {
        let validity = profile::validity(now, profile, self.not_before, self.not_after)?;
        let serial = Self::serial();
        let subject = profile.subject_der(endpoint);
        let tbs = profile::tbs_certificate(&TbsParts {
            serial: &serial,
            issuer: &self.subject_der,
            validity: &validity,
            subject: &subject,
            public_point: point,
            fixed_extensions: &self.fixed_extensions,
            authority_key_id: &self.authority_key_id,
            crl_distribution_point: profile.crl_distribution_point.as_deref(),
        })?;
        let signature = self.sign(&tbs)?;
        let der = profile::certificate(&tbs, &signature);
        let serial_hex = hex_upper(&serial);
        tracing::debug!(
            endpoint = %endpoint,
            serial = %serial_hex,
            warnings = validity.warnings.len(),
            "device certificate issued"
        );
        Ok(IssuedCertificate {
            enrollment_id: EnrollmentId::of_certificate(&der),
            der,
            serial_hex,
            not_before: validity.not_before,
            not_after: validity.not_after,
            warnings: validity.warnings,
        })
    }

    /// 16 random bytes, positive, with a non-zero first byte so the DER INTEGER is always 16
    /// bytes long (about 127 bits of randomness). Drawn from `rand`'s thread-local CSPRNG
    /// (ChaCha, seeded and periodically reseeded from the OS): unpredictable like the OS source,
    /// without a system call per certificate.
    fn serial() -> [u8; 16] {
        use rand::RngCore as _;
        let mut rng = rand::thread_rng();
        let mut serial = [0u8; 16];
        loop {
            rng.fill_bytes(&mut serial);
            serial[0] &= 0x7f;
            if serial[0] != 0 {
                return serial;
            }
        }
    }
}

impl fmt::Debug for FactoryCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactoryCa")
            .field("subject", &self.subject)
            .field("not_before", &crate::error::rfc3339(&self.not_before))
            .field("not_after", &crate::error::rfc3339(&self.not_after))
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .field("key_location", &self.key_location)
            .finish()
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The P-256 private key of a PEM file.
fn parse_private_key(pem: &[u8], file: &str) -> Result<p256::SecretKey, CaError> {
    if is_blank(pem) {
        return Err(CaError::EmptyFile {
            file: file.to_owned(),
        });
    }
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(pem, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(CaError::EncryptedKey {
            file: file.to_owned(),
        });
    }
    // `EC PARAMETERS` blocks (written by `openssl ecparam -genkey`) are skipped by the iterator;
    // the curve is checked on the key itself.
    let key = Zeroizing::new(PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => CaError::NoPemBlock {
            file: file.to_owned(),
            expected: "PRIVATE KEY or EC PRIVATE KEY",
        },
        e => CaError::Pem {
            file: file.to_owned(),
            detail: e.to_string(),
        },
    })?);
    let bad = |detail: String| CaError::KeyParse {
        file: file.to_owned(),
        detail,
    };
    let check_curve =
        |params: Option<sec1::EcParameters>| match params.and_then(|p| p.named_curve()) {
            Some(curve) if curve != SECP_256_R_1 => Err(CaError::UnsupportedCurve {
                file: file.to_owned(),
                curve: csr::oid_name(&curve),
            }),
            _ => Ok(()),
        };
    let ec = match &*key {
        PrivateKeyDer::Pkcs1(_) => {
            return Err(CaError::UnsupportedKeyType {
                file: file.to_owned(),
                key_type: "RSA".to_owned(),
            });
        }
        PrivateKeyDer::Sec1(k) => sec1::EcPrivateKey::from_der(k.secret_sec1_der())
            .map_err(|e| bad(format!("SEC1 ECPrivateKey: {e}")))?,
        PrivateKeyDer::Pkcs8(k) => {
            let info = pkcs8::PrivateKeyInfo::from_der(k.secret_pkcs8_der())
                .map_err(|e| bad(format!("PKCS#8 PrivateKeyInfo: {e}")))?;
            if info.algorithm.oid != ID_EC_PUBLIC_KEY {
                return Err(CaError::UnsupportedKeyType {
                    file: file.to_owned(),
                    key_type: csr::oid_name(&info.algorithm.oid),
                });
            }
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| bad("PKCS#8 EC key without a named curve".to_owned()))?;
            check_curve(Some(sec1::EcParameters::NamedCurve(curve)))?;
            sec1::EcPrivateKey::from_der(info.private_key)
                .map_err(|e| bad(format!("ECPrivateKey inside PKCS#8: {e}")))?
        }
        _ => {
            return Err(CaError::UnsupportedKeyType {
                file: file.to_owned(),
                key_type: "unknown".to_owned(),
            });
        }
    };
    check_curve(ec.parameters)?;
    if ec.private_key.len() != 32 {
        return Err(CaError::UnsupportedCurve {
            file: file.to_owned(),
            curve: format!(
                "(a {}-byte private key; P-256 has 32)",
                ec.private_key.len()
            ),
        });
    }
    p256::SecretKey::from_slice(ec.private_key)
        .map_err(|_| bad("the private scalar is not a valid P-256 key".to_owned()))
}

/// The subject Name of a DER certificate exactly as encoded there (for a byte-identical issuer).
fn raw_subject(cert_der: &[u8]) -> der::Result<&[u8]> {
    let cert = AnyRef::from_der(cert_der)?;
    cert.tag().assert_eq(Tag::Sequence)?;
    let mut r = SliceReader::new(cert.value())?;
    let tbs: AnyRef<'_> = r.decode()?;
    tbs.tag().assert_eq(Tag::Sequence)?;
    let mut r = SliceReader::new(tbs.value())?;
    // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject.
    if r.peek_byte() == Some(0xa0) {
        r.tlv_bytes()?;
    }
    for _ in 0..4 {
        r.tlv_bytes()?;
    }
    r.tlv_bytes()
}

/// A warning when the key file is accessible by group or others.
fn key_file_warning(path: &Path, file: &str) -> Option<CaWarning> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| CaWarning::KeyFileAccessible {
            file: file.to_owned(),
            mode,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_ca_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FactoryCa>();
        assert_send_sync::<IssuedIdentity>();
    }

    #[test]
    fn hex_is_upper() {
        assert_eq!(hex_upper(&[0x0a, 0xbc, 0x01]), "0ABC01");
    }
}
