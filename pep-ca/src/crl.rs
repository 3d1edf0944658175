//! The factory CA's certificate revocation list (RFC 5280 §5): an X.509 v2 CRL built with
//! `x509-cert`'s types and signed through [`FactoryCa::sign`], so a CA key in a PKCS#11 token
//! signs it as it signs certificates.
//!
//! What a CRL holds: the issuer (the CA's subject), `thisUpdate`/`nextUpdate`, one entry per
//! revoked certificate (serial number, revocation date, reasonCode unless `unspecified`, which
//! RFC 5280 §5.3.1 says to leave out), and the CRL extensions authorityKeyIdentifier and
//! cRLNumber. Which certificates are revoked and the number of the CRL are the caller's (the
//! server keeps them in its store, so the number only grows across restarts).

use std::str::FromStr;

use const_oid::db::rfc5280::{ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_NUMBER, ID_CE_CRL_REASONS};
use const_oid::db::rfc5912::ECDSA_WITH_SHA_256;
use der::asn1::{BitString, GeneralizedTime, OctetString, Uint, UtcTime};
use der::{Decode as _, Encode as _};
use time::OffsetDateTime;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlReason};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use crate::ca::FactoryCa;
use crate::error::CaError;

/// Why a certificate was revoked: the RFC 5280 §5.3.1 reason codes a revocation here may carry,
/// named as in the RFC's ASN.1.
///
/// `certificateHold` and `removeFromCRL` are not offered: a hold is a suspension meant to be lifted
/// (and `removeFromCRL` lifts it in delta CRLs), while a revocation here is final — the serial
/// gets a new identity instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// `unspecified` (0): no reasonCode extension is written.
    Unspecified,
    /// `keyCompromise` (1): the device key leaked or may have.
    KeyCompromise,
    /// `cACompromise` (2).
    CaCompromise,
    /// `affiliationChanged` (3).
    AffiliationChanged,
    /// `superseded` (4): e.g. a reworked board gets a new identity.
    Superseded,
    /// `cessationOfOperation` (5): e.g. a scrapped or returned gateway.
    CessationOfOperation,
    /// `privilegeWithdrawn` (9).
    PrivilegeWithdrawn,
    /// `aACompromise` (10).
    AaCompromise,
}

/// A text that names no [`RevocationReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a revocation reason: {why}")]
pub struct UnknownReason {
    /// The text given.
    pub text: String,
    /// What is accepted instead.
    pub why: String,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [RevocationReason; 8] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The RFC 5280 name (`keyCompromise`): the API's, the CLI's and the store's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    /// The CRLReason code (`keyCompromise` → 1).
    pub fn code(self) -> u8 {
        self.crl_reason() as u8
    }

    fn crl_reason(self) -> CrlReason {
        match self {
            RevocationReason::Unspecified => CrlReason::Unspecified,
            RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
            RevocationReason::CaCompromise => CrlReason::CaCompromise,
            RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
            RevocationReason::Superseded => CrlReason::Superseded,
            RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => CrlReason::AaCompromise,
        }
    }

    /// Every accepted name, for messages: `unspecified, keyCompromise, …`.
    pub fn names() -> String {
        RevocationReason::ALL
            .map(RevocationReason::as_str)
            .join(", ")
    }
}

impl FromStr for RevocationReason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, UnknownReason> {
        if let Some(r) = RevocationReason::ALL.into_iter().find(|r| r.as_str() == s) {
            return Ok(r);
        }
        let why = match s {
            "certificateHold" | "removeFromCRL" => format!(
                "a hold is a suspension, and revocations here are final (the serial is \
                 provisioned again with a new identity); use one of {}",
                RevocationReason::names()
            ),
            _ => format!("expected one of {}", RevocationReason::names()),
        };
        Err(UnknownReason {
            text: s.chars().take(64).collect(),
            why,
        })
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revoked certificate as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number, hex (as [`crate::IssuedCertificate::serial_hex`]).
    pub serial_hex: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// What one CRL says besides the issuer.
#[derive(Debug, Clone, Copy)]
pub struct CrlContent<'a> {
    /// The cRLNumber: greater than the number of every CRL signed before.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate: when relying parties should fetch a new one at the latest.
    pub next_update: OffsetDateTime,
    /// The revoked certificates.
    pub revoked: &'a [RevokedEntry],
}

fn crl_error(detail: impl std::fmt::Display) -> CaError {
    CaError::Crl {
        detail: detail.to_string(),
    }
}

/// An X.509 Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §5.1.2.4).
fn x509_time(t: OffsetDateTime) -> Result<Time, CaError> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| crl_error(format!("time {t} is before 1970")))?;
    let since_epoch = std::time::Duration::from_secs(secs);
    if t.year() < 2050 {
        UtcTime::from_unix_duration(since_epoch).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(since_epoch).map(Time::GeneralTime)
    }
    .map_err(crl_error)
}

/// The serial number INTEGER of a certificate serial written as hex.
fn serial_number(hex: &str) -> Result<SerialNumber, CaError> {
    let bad = || {
        crl_error(format!(
            "certificate serial number `{hex}` is not even-length hex"
        ))
    };
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    // The bytes are the unsigned value; the INTEGER gets its leading zero octet when needed.
    SerialNumber::new(&bytes).map_err(crl_error)
}

fn extension(
    oid: const_oid::ObjectIdentifier,
    value: &impl der::Encode,
) -> Result<Extension, CaError> {
    Ok(Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(value.to_der().map_err(crl_error)?).map_err(crl_error)?,
    })
}

impl FactoryCa {
    /// Signs a CRL listing `content.revoked`, DER. The number, times and entries are the
    /// caller's; the issuer and authorityKeyIdentifier are this CA's. A token that is away gives
    /// [`CaError::TokenUnavailable`], like [`FactoryCa::issue`].
    pub fn sign_crl(&self, content: &CrlContent<'_>) -> Result<Vec<u8>, CaError> {
        if content.next_update <= content.this_update {
            return Err(crl_error("nextUpdate must be after thisUpdate"));
        }
        let issuer = Name::from_der(self.subject_der()).map_err(crl_error)?;
        let revoked = content
            .revoked
            .iter()
            .map(|entry| {
                let extensions = match entry.reason {
                    // RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent
                    // instead of using the unspecified (0) reasonCode value".
                    RevocationReason::Unspecified => None,
                    reason => Some(vec![extension(ID_CE_CRL_REASONS, &reason.crl_reason())?]),
                };
                Ok(RevokedCert {
                    serial_number: serial_number(&entry.serial_hex)?,
                    revocation_date: x509_time(entry.revoked_at)?,
                    crl_entry_extensions: extensions,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let authority_key_id = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.key_id()).map_err(crl_error)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let number = Uint::new(&content.number.to_be_bytes()).map_err(crl_error)?;
        let algorithm = spki::AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA_256,
            parameters: None,
        };
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: algorithm.clone(),
            issuer,
            this_update: x509_time(content.this_update)?,
            next_update: Some(x509_time(content.next_update)?),
            // An empty list is left out (RFC 5280 §5.1.2.6).
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: Some(vec![
                extension(ID_CE_AUTHORITY_KEY_IDENTIFIER, &authority_key_id)?,
                extension(ID_CE_CRL_NUMBER, &number)?,
            ]),
        };
        let tbs_der = tbs.to_der().map_err(crl_error)?;
        let signature = self.sign(&tbs_der)?;
        let crl = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: algorithm,
            signature: BitString::from_bytes(&signature).map_err(crl_error)?,
        };
        crl.to_der().map_err(crl_error)
    }
}
