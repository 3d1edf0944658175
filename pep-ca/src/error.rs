//! The crate's one error enum and the load-time warnings.

use std::fmt;

use time::OffsetDateTime;

/// Formats a timestamp as RFC 3339 for messages (`Display` of `OffsetDateTime` is not meant for
/// people).
pub(crate) fn rfc3339(t: &OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Everything that can go wrong in `pep-ca`.
///
/// Messages name the file (or the input) and the problem. They never contain key material: at
/// most a file name, a curve name, a certificate field or the endpoint name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file could not be read (missing, unreadable, a directory, ...).
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or holds only white space.
    #[error("{file} is empty")]
    EmptyFile {
        /// The file.
        file: String,
    },
    /// The file looks like PEM but a block is broken (bad base64, missing END line, ...).
    #[error("{file} is not valid PEM: {detail}")]
    Pem {
        /// The file.
        file: String,
        /// What the PEM parser said.
        detail: String,
    },
    /// The file holds no PEM block of the kind needed (garbage, DER, a key where a certificate
    /// was expected, ...).
    #[error("{file} holds no PEM {expected} block")]
    NoPemBlock {
        /// The file.
        file: String,
        /// The PEM label(s) that were looked for.
        expected: &'static str,
    },
    /// A certificate in the file is not valid DER X.509.
    #[error("{file}: certificate #{index} cannot be parsed: {detail}")]
    CertificateParse {
        /// The file.
        file: String,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What the parser said.
        detail: String,
    },
    /// A certificate's public key is not an EC P-256 (secp256r1) key.
    #[error("{file} does not hold a P-256 (secp256r1) EC public key")]
    NotP256Certificate {
        /// The file.
        file: String,
    },
    /// The private key is encrypted (PKCS#8 `ENCRYPTED PRIVATE KEY` or legacy `Proc-Type: 4,ENCRYPTED`).
    #[error(
        "{file}: the private key is encrypted; pep needs the unencrypted key (protect the file with permissions 0600 instead)"
    )]
    EncryptedKey {
        /// The file.
        file: String,
    },
    /// The private key's DER structure is invalid.
    #[error("{file}: the private key cannot be parsed: {detail}")]
    KeyParse {
        /// The file.
        file: String,
        /// What was wrong.
        detail: String,
    },
    /// The key (or the certificate's public key) is not an EC key.
    #[error("{file}: unsupported key type {key_type}; the factory CA must have an EC P-256 key")]
    UnsupportedKeyType {
        /// The file.
        file: String,
        /// The key algorithm found.
        key_type: String,
    },
    /// An EC key on a curve other than P-256.
    #[error("{file}: unsupported curve {curve}; the factory CA must use P-256 (prime256v1)")]
    UnsupportedCurve {
        /// The file.
        file: String,
        /// The curve found.
        curve: String,
    },
    /// The private key is not the key of the CA certificate.
    #[error("the private key in {key_file} does not match the certificate in {cert_file}")]
    KeyMismatch {
        /// The key file.
        key_file: String,
        /// The certificate file.
        cert_file: String,
    },
    /// The certificate is not a CA certificate (basicConstraints).
    #[error("{file}: the certificate is not a CA: {reason}")]
    NotCa {
        /// The file.
        file: String,
        /// Why.
        reason: &'static str,
    },
    /// The CA certificate may not sign certificates (keyUsage).
    #[error("{file}: the CA certificate may not sign certificates: {reason}")]
    NoKeyCertSign {
        /// The file.
        file: String,
        /// Why.
        reason: &'static str,
    },
    /// The CA certificate's notBefore is in the future.
    #[error("{file}: the CA certificate is not valid before {}", rfc3339(.not_before))]
    CaNotYetValid {
        /// The file.
        file: String,
        /// The CA's notBefore.
        not_before: OffsetDateTime,
    },
    /// The CA certificate's notAfter is in the past.
    #[error("{file}: the CA certificate expired at {}", rfc3339(.not_after))]
    CaExpired {
        /// The file.
        file: String,
        /// The CA's notAfter.
        not_after: OffsetDateTime,
    },
    /// The CA expired while the server was running.
    #[error("the factory CA certificate expired at {}; no certificate can be issued", rfc3339(.not_after))]
    CaNoLongerValid {
        /// The CA's notAfter.
        not_after: OffsetDateTime,
    },
    /// The endpoint name breaks the cloud's endpoint-name rule.
    #[error("invalid endpoint name {name:?}: {reason}")]
    InvalidEndpointName {
        /// The name (truncated when very long).
        name: String,
        /// Why.
        reason: String,
    },
    /// A field of the [`crate::CertProfile`] is unusable.
    #[error("invalid certificate profile: {field}: {reason}")]
    InvalidProfile {
        /// The profile field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The requested lifetime ends after the CA certificate and the policy is
    /// [`crate::CaExpiryPolicy::Refuse`].
    #[error(
        "the device certificate would end at {}, after the CA certificate's notAfter {} (on_ca_expiry = refuse)",
        rfc3339(.requested), rfc3339(.ca_not_after)
    )]
    LifetimeExceedsCa {
        /// The notAfter the profile asked for.
        requested: OffsetDateTime,
        /// The CA's notAfter.
        ca_not_after: OffsetDateTime,
    },
    /// The CSR is not a DER PKCS#10 certification request.
    #[error("CSR rejected: not a DER PKCS#10 request: {detail}")]
    CsrMalformed {
        /// What the parser said.
        detail: String,
    },
    /// The CSR's public key is not an EC P-256 key.
    #[error("CSR rejected: the public key is not P-256: {detail}")]
    CsrKeyNotP256 {
        /// What was found.
        detail: String,
    },
    /// The CSR is signed with something other than ecdsa-with-SHA256.
    #[error("CSR rejected: signature algorithm {algorithm} is not ecdsa-with-SHA256")]
    CsrSignatureAlgorithm {
        /// The algorithm found.
        algorithm: String,
    },
    /// The CSR's self-signature does not verify with its public key.
    #[error("CSR rejected: the self-signature does not verify with the request's public key")]
    CsrSignatureInvalid,
    /// The CSR's subject CN is not the expected endpoint name.
    #[error(
        "CSR rejected: subject CN {} is not the expected endpoint name {expected:?}",
        .found.as_deref().map_or_else(|| "(none)".to_owned(), |f| format!("{f:?}"))
    )]
    CsrSubjectMismatch {
        /// The endpoint name the certificate is for.
        expected: String,
        /// The first CN of the CSR's subject, if any.
        found: Option<String>,
    },
    /// A string is not an enrollment ID.
    #[error("invalid enrollment ID {input:?}: {reason}")]
    InvalidEnrollmentId {
        /// The input (truncated when very long).
        input: String,
        /// Why.
        reason: &'static str,
    },
    /// A CRL could not be encoded (a revoked certificate's serial number or a time that X.509
    /// cannot hold).
    #[error("cannot build the CRL: {detail}")]
    Crl {
        /// What was wrong.
        detail: String,
    },
    /// The crypto backend failed (random number generator, key construction).
    #[error("crypto failure: {operation}")]
    Crypto {
        /// What was being done.
        operation: &'static str,
    },
    /// `ca.key` looks like a PKCS#11 URI but is not a usable one. The URI itself is not
    /// repeated: it may hold a PIN.
    #[error("the PKCS#11 URI is invalid: {reason}")]
    Pkcs11Uri {
        /// What is wrong.
        reason: String,
    },
    /// The PKCS#11 module cannot be loaded or initialised.
    #[error("cannot load the PKCS#11 module {module}: {detail}")]
    Pkcs11Module {
        /// The module's path.
        module: String,
        /// What the loader or `C_Initialize` said.
        detail: String,
    },
    /// No token matches the URI.
    #[error("no PKCS#11 token matches {key} (tokens present: {present})")]
    TokenNotFound {
        /// The key's place (token, object).
        key: String,
        /// The labels of the tokens that are present.
        present: String,
    },
    /// The token refused the PIN.
    #[error("the PKCS#11 token refused the PIN ({token}): check pin_file or PEP_PKCS11_PIN")]
    PinIncorrect {
        /// The token.
        token: String,
    },
    /// The token locked the PIN after too many wrong attempts.
    #[error("the PIN of the PKCS#11 token is locked ({token}): unlock it with the SO PIN")]
    PinLocked {
        /// The token.
        token: String,
    },
    /// No private key in the token matches the URI.
    #[error("no private key {key} in the PKCS#11 token")]
    KeyNotFound {
        /// The key's place (token, object).
        key: String,
    },
    /// More than one private key matches the URI.
    #[error("{count} private keys match {key}: add id= to the URI")]
    KeyAmbiguous {
        /// The key's place (token, object).
        key: String,
        /// How many.
        count: usize,
    },
    /// `ca generate-pkcs11` found an object with the label already.
    #[error("the token already holds an object {key}: choose another label")]
    KeyExists {
        /// The key's place (token, object).
        key: String,
    },
    /// The key in the token is not an EC P-256 signing key.
    #[error("the PKCS#11 key {key} cannot be the factory CA key: {detail}")]
    TokenKeyNotP256 {
        /// The key's place (token, object).
        key: String,
        /// Why.
        detail: String,
    },
    /// The key in the token is not the key of the CA certificate (its test signature does not
    /// verify with the certificate's public key).
    #[error("the PKCS#11 key {key} does not match the certificate in {cert_file}")]
    TokenKeyMismatch {
        /// The key's place (token, object).
        key: String,
        /// The certificate file.
        cert_file: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 error while {operation}: {source}")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The module's answer.
        #[source]
        source: cryptoki::error::Error,
    },
    /// The token is away (unplugged, HSM unreachable, module failing): signing is impossible
    /// right now and will be tried again. Retryable: see [`CaError::is_unavailable`].
    #[error("the CA key is unavailable ({key}): {detail}; signing resumes when the token is back")]
    TokenUnavailable {
        /// The key's place (token, object).
        key: String,
        /// What failed last.
        detail: String,
    },
}

impl CaError {
    /// True when the CA key cannot sign right now but may later without a restart (a PKCS#11
    /// token that went away): the caller should answer "try again" rather than "broken".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CaError::TokenUnavailable { .. })
    }
}

/// Something about the loaded CA that works but deserves the operator's attention.
///
/// Returned as data by [`crate::FactoryCa::load`] so the server can log it and `check-config` can
/// print it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaWarning {
    /// The key file can be read or written by group or others.
    KeyFileAccessible {
        /// The key file.
        file: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The CA certificate ends before the default device-certificate lifetime would.
    CaExpiresSoon {
        /// The CA's notAfter.
        not_after: OffsetDateTime,
        /// Whether it also ends within the 10 years under which the device warns.
        under_ten_years: bool,
    },
}

impl fmt::Display for CaWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyFileAccessible { file, mode } => write!(
                f,
                "{file} is accessible by group or others (mode {:04o}); restrict it with chmod 600",
                mode & 0o7777
            ),
            Self::CaExpiresSoon {
                not_after,
                under_ten_years,
            } => {
                write!(
                    f,
                    "the CA certificate expires at {}, before the default 20-year device certificate lifetime: \
                     device certificates are shortened to end with it (or refused with on_ca_expiry = refuse)",
                    rfc3339(not_after)
                )?;
                if *under_ten_years {
                    write!(
                        f,
                        "; that is less than 10 years, so every device will warn \"Certificate validity is less than 10 years\""
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Cuts an input-derived string for an error message so a huge input cannot flood the logs.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}
