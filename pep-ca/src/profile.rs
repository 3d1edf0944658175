//! The device certificate profile: everything that decides what an issued certificate contains.
//!
//! * X.509 v3, 16-byte random positive serial number;
//! * issuer = the CA certificate's subject, byte for byte;
//! * subject = `C, ST, L, O, OU` (each only if configured) then `CN = <endpoint name>`;
//! * validity from now − 5 minutes (never before the CA's notBefore) to now + lifetime (default
//!   20 years), never past the CA's notAfter: see [`CaExpiryPolicy`];
//! * extensions: basicConstraints `CA:FALSE` (critical), keyUsage `digitalSignature` (critical),
//!   extendedKeyUsage `clientAuth`, subjectKeyIdentifier (SHA-1 of the public key, RFC 5280
//!   method 1), authorityKeyIdentifier (the CA's subjectKeyIdentifier when it has one), and
//!   cRLDistributionPoints (one URI) when [`CertProfile::crl_distribution_point`] is set;
//! * ECDSA with SHA-256 signature by the CA key.

use std::fmt::Write as _;

use time::{Duration, OffsetDateTime, UtcOffset};

use crate::derw::{push_tlv, tag, tlv};
use crate::endpoint::EndpointName;
use crate::error::{CaError, rfc3339};

/// The AlgorithmIdentifier ecdsa-with-SHA256, parameters absent (RFC 5758).
const ALG_ECDSA_WITH_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// SubjectPublicKeyInfo of a P-256 key up to the 65-byte uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// `[0] { INTEGER 2 }`: X.509 v3.
const VERSION_V3: &[u8] = &[0xa0, 0x03, 0x02, 0x01, 0x02];

const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
const OID_CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
/// id-kp-clientAuth (1.3.6.1.5.5.7.3.2).
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

const OID_COUNTRY: &[u8] = &[0x55, 0x04, 0x06];
const OID_STATE: &[u8] = &[0x55, 0x04, 0x08];
const OID_LOCALITY: &[u8] = &[0x55, 0x04, 0x07];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
const OID_ORG_UNIT: &[u8] = &[0x55, 0x04, 0x0b];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// How far back notBefore goes, for gateways whose clock is a little behind.
pub const BACKDATE: Duration = Duration::minutes(5);
/// The default lifetime: 20 years of 365.25 days. The device warns under 10 years.
pub const DEFAULT_LIFETIME: Duration = Duration::days(7305);
/// Under this remaining validity the device warns "Certificate validity is less than 10 years"
/// (docs/protocol.md §5.2: 315 360 000 s).
pub const DEVICE_WARNING_THRESHOLD: Duration = Duration::seconds(315_360_000);

/// What to do when the requested lifetime would end after the CA certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaExpiryPolicy {
    /// Shorten the device certificate to end with the CA certificate and report a warning in
    /// [`crate::IssuedCertificate::warnings`] (default). A certificate that outlives its CA would
    /// fail chain validation after the CA's end anyway.
    #[default]
    Shorten,
    /// Refuse to issue ([`CaError::LifetimeExceedsCa`]).
    Refuse,
}

/// The configurable part of the device certificate profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProfile {
    /// Validity length from the moment of issue (default 20 years, [`DEFAULT_LIFETIME`]).
    pub lifetime: Duration,
    /// Subject O.
    pub organization: Option<String>,
    /// Subject OU. (In LwM2M mode the device compares the first OU with the account id; the
    /// first-to-claim bootstrap flow does not look at it.)
    pub organizational_unit: Option<String>,
    /// Subject L.
    pub locality: Option<String>,
    /// Subject ST.
    pub state: Option<String>,
    /// Subject C: two upper-case letters (ISO 3166 alpha-2).
    pub country: Option<String>,
    /// What to do when the lifetime would end after the CA certificate.
    pub on_ca_expiry: CaExpiryPolicy,
    /// Where relying parties fetch the CA's CRL (an `http://` or `https://` URI): written as a
    /// cRLDistributionPoints extension into every device certificate. `None`: no extension.
    pub crl_distribution_point: Option<String>,
}

impl Default for CertProfile {
    fn default() -> Self {
        Self {
            lifetime: DEFAULT_LIFETIME,
            organization: None,
            organizational_unit: None,
            locality: None,
            state: None,
            country: None,
            on_ca_expiry: CaExpiryPolicy::Shorten,
            crl_distribution_point: None,
        }
    }
}

impl CertProfile {
    /// Checks every field; the same checks run on each issue, this lets a configuration be checked
    /// at start-up.
    pub fn validate(&self) -> Result<(), CaError> {
        if self.lifetime <= Duration::ZERO {
            return Err(CaError::InvalidProfile {
                field: "lifetime",
                reason: "must be positive".to_owned(),
            });
        }
        if self.lifetime > Duration::days(365 * 1000) {
            return Err(CaError::InvalidProfile {
                field: "lifetime",
                reason: "must be under 1000 years".to_owned(),
            });
        }
        if let Some(c) = &self.country
            && (c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(CaError::InvalidProfile {
                field: "country",
                reason: format!("{c:?} is not two upper-case letters (ISO 3166 alpha-2)"),
            });
        }
        for (field, value, max) in [
            ("organization", &self.organization, 64),
            ("organizational_unit", &self.organizational_unit, 64),
            ("locality", &self.locality, 128),
            ("state", &self.state, 128),
        ] {
            let Some(v) = value else { continue };
            let len = v.chars().count();
            if len == 0 || len > max {
                return Err(CaError::InvalidProfile {
                    field,
                    reason: format!("must be 1 to {max} characters, not {len}"),
                });
            }
            if v.chars().any(char::is_control) {
                return Err(CaError::InvalidProfile {
                    field,
                    reason: "must not contain control characters".to_owned(),
                });
            }
        }
        if let Some(url) = &self.crl_distribution_point {
            crl_distribution_points(url)?;
        }
        Ok(())
    }

    /// The subject Name DER for `endpoint`.
    pub(crate) fn subject_der(&self, endpoint: &EndpointName) -> Vec<u8> {
        let mut rdns = Vec::with_capacity(128);
        let mut push_rdn = |oid: &[u8], string_tag: u8, value: &str| {
            let mut atv = tlv(tag::OID, oid);
            push_tlv(&mut atv, string_tag, value.as_bytes());
            let atv = tlv(tag::SEQUENCE, &atv);
            push_tlv(&mut rdns, tag::SET, &atv);
        };
        if let Some(c) = &self.country {
            push_rdn(OID_COUNTRY, tag::PRINTABLE_STRING, c);
        }
        for (oid, value) in [
            (OID_STATE, &self.state),
            (OID_LOCALITY, &self.locality),
            (OID_ORGANIZATION, &self.organization),
            (OID_ORG_UNIT, &self.organizational_unit),
        ] {
            if let Some(v) = value {
                push_rdn(oid, tag::UTF8_STRING, v);
            }
        }
        push_rdn(OID_COMMON_NAME, tag::UTF8_STRING, endpoint.as_str());
        tlv(tag::SEQUENCE, &rdns)
    }
}

/// The validity decided for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub warnings: Vec<String>,
}

/// Decides notBefore/notAfter for a certificate issued at `now` (whole seconds, UTC).
pub(crate) fn validity(
    now: OffsetDateTime,
    profile: &CertProfile,
    ca_not_before: OffsetDateTime,
    ca_not_after: OffsetDateTime,
) -> Result<Validity, CaError> {
    let now = now
        .to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|_| CaError::Crypto {
            operation: "truncating the clock to seconds",
        })?;
    if now > ca_not_after {
        return Err(CaError::CaNoLongerValid {
            not_after: ca_not_after,
        });
    }
    let not_before = (now - BACKDATE).max(ca_not_before);
    let requested = now
        .checked_add(profile.lifetime)
        .ok_or_else(|| CaError::InvalidProfile {
            field: "lifetime",
            reason: "ends beyond the representable date range".to_owned(),
        })?;
    let mut warnings = Vec::new();
    let not_after = if requested > ca_not_after {
        match profile.on_ca_expiry {
            CaExpiryPolicy::Refuse => {
                return Err(CaError::LifetimeExceedsCa {
                    requested,
                    ca_not_after,
                });
            }
            CaExpiryPolicy::Shorten => {
                warnings.push(format!(
                    "certificate lifetime shortened to end with the CA certificate at {} (requested {})",
                    rfc3339(&ca_not_after),
                    rfc3339(&requested)
                ));
                ca_not_after
            }
        }
    } else {
        requested
    };
    if not_after - now < DEVICE_WARNING_THRESHOLD {
        warnings.push(format!(
            "certificate is valid for less than 10 years (until {}): the device will warn \
             \"Certificate validity is less than 10 years\"",
            rfc3339(&not_after)
        ));
    }
    Ok(Validity {
        not_before,
        not_after,
        warnings,
    })
}

/// Appends an X.509 Time: UTCTime for 1950–2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5).
fn push_time(out: &mut Vec<u8>, t: OffsetDateTime) -> Result<(), CaError> {
    let t = t.to_offset(UtcOffset::UTC);
    let year = t.year();
    let mut s = String::with_capacity(15);
    let (tag, _) = if (1950..2050).contains(&year) {
        (tag::UTC_TIME, write!(s, "{:02}", year % 100))
    } else if (0..=9999).contains(&year) {
        (tag::GENERALIZED_TIME, write!(s, "{year:04}"))
    } else {
        return Err(CaError::InvalidProfile {
            field: "lifetime",
            reason: format!("year {year} cannot be written in a certificate"),
        });
    };
    let _ = write!(
        s,
        "{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    push_tlv(out, tag, s.as_bytes());
    Ok(())
}

/// One X.509 extension.
pub(crate) fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut ext = tlv(tag::OID, oid);
    if critical {
        ext.extend_from_slice(&[0x01, 0x01, 0xff]);
    }
    push_tlv(&mut ext, tag::OCTET_STRING, value);
    tlv(tag::SEQUENCE, &ext)
}

/// The extensions every device certificate carries unchanged: basicConstraints CA:FALSE,
/// keyUsage digitalSignature, extendedKeyUsage clientAuth.
pub(crate) fn fixed_extensions() -> Vec<u8> {
    let mut out = extension(OID_BASIC_CONSTRAINTS, true, &[0x30, 0x00]);
    // BIT STRING, 7 unused bits, bit 0 (digitalSignature) set.
    out.extend(extension(OID_KEY_USAGE, true, &[0x03, 0x02, 0x07, 0x80]));
    let eku = tlv(tag::SEQUENCE, &tlv(tag::OID, OID_CLIENT_AUTH));
    out.extend(extension(OID_EXT_KEY_USAGE, false, &eku));
    out
}

/// The authorityKeyIdentifier extension naming `key_id`.
pub(crate) fn authority_key_id_extension(key_id: &[u8]) -> Vec<u8> {
    let aki = tlv(tag::SEQUENCE, &tlv(tag::CONTEXT_0_PRIMITIVE, key_id));
    extension(OID_AUTHORITY_KEY_ID, false, &aki)
}

/// The cRLDistributionPoints extension: one distribution point, its full name the URI `url`
/// (RFC 5280 §4.2.1.13), encoded with `x509-cert`'s types.
pub(crate) fn crl_distribution_points(url: &str) -> Result<Vec<u8>, CaError> {
    use der::Encode as _;
    use x509_cert::ext::pkix::crl::dp::DistributionPoint;
    use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
    let invalid = |reason: String| CaError::InvalidProfile {
        field: "crl_distribution_point",
        reason,
    };
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) || url.len() < 10 {
        return Err(invalid(format!(
            "{url:?} is not an http:// or https:// URI"
        )));
    }
    if url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{url:?} must be ASCII without spaces or control characters (an IA5String URI)"
        )));
    }
    let uri = der::asn1::Ia5String::new(url).map_err(|e| invalid(e.to_string()))?;
    let points = x509_cert::ext::pkix::CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![
            GeneralName::UniformResourceIdentifier(uri),
        ])),
        reasons: None,
        crl_issuer: None,
    }]);
    let value = points.to_der().map_err(|e| invalid(e.to_string()))?;
    Ok(extension(OID_CRL_DISTRIBUTION_POINTS, false, &value))
}

/// RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey BIT STRING's bytes.
pub(crate) fn key_identifier(public_key_bits: &[u8]) -> [u8; 20] {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, public_key_bits);
    let mut id = [0u8; 20];
    id.copy_from_slice(digest.as_ref());
    id
}

/// What varies from one device certificate to the next.
pub(crate) struct TbsParts<'a> {
    /// Content octets of the serial INTEGER (already minimal and positive).
    pub serial: &'a [u8],
    /// The CA certificate's subject, raw DER.
    pub issuer: &'a [u8],
    pub validity: &'a Validity,
    pub subject: &'a [u8],
    /// Uncompressed P-256 point (65 bytes, 0x04 first).
    pub public_point: &'a [u8; 65],
    /// basicConstraints, keyUsage, extendedKeyUsage.
    pub fixed_extensions: &'a [u8],
    /// authorityKeyIdentifier.
    pub authority_key_id: &'a [u8],
    /// The CRL distribution point URI, if the profile has one.
    pub crl_distribution_point: Option<&'a str>,
}

/// Encodes the TBSCertificate.
pub(crate) fn tbs_certificate(parts: &TbsParts<'_>) -> Result<Vec<u8>, CaError> {
    let mut body = Vec::with_capacity(512);
    body.extend_from_slice(VERSION_V3);
    push_tlv(&mut body, tag::INTEGER, parts.serial);
    body.extend_from_slice(ALG_ECDSA_WITH_SHA256);
    body.extend_from_slice(parts.issuer);
    let mut validity = Vec::with_capacity(34);
    push_time(&mut validity, parts.validity.not_before)?;
    push_time(&mut validity, parts.validity.not_after)?;
    push_tlv(&mut body, tag::SEQUENCE, &validity);
    body.extend_from_slice(parts.subject);
    body.extend_from_slice(P256_SPKI_PREFIX);
    body.extend_from_slice(parts.public_point);

    let ski = extension(
        OID_SUBJECT_KEY_ID,
        false,
        &tlv(tag::OCTET_STRING, &key_identifier(parts.public_point)),
    );
    let crl_dp = parts
        .crl_distribution_point
        .map(crl_distribution_points)
        .transpose()?
        .unwrap_or_default();
    let mut exts = Vec::with_capacity(
        parts.fixed_extensions.len() + ski.len() + parts.authority_key_id.len() + crl_dp.len(),
    );
    exts.extend_from_slice(parts.fixed_extensions);
    exts.extend_from_slice(&ski);
    exts.extend_from_slice(parts.authority_key_id);
    exts.extend_from_slice(&crl_dp);
    push_tlv(&mut body, tag::CONTEXT_3, &tlv(tag::SEQUENCE, &exts));
    Ok(tlv(tag::SEQUENCE, &body))
}

/// A PKCS#10 CertificationRequestInfo for a P-256 key, asking for `extensions`
/// (extensionRequest attribute). Signed and wrapped like a certificate by [`certificate`].
pub(crate) fn certification_request_info(
    subject: &[u8],
    public_point: &[u8; 65],
    extensions: &[u8],
) -> Vec<u8> {
    // pkcs-9-at-extensionRequest, 1.2.840.113549.1.9.14.
    const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(subject);
    body.extend_from_slice(P256_SPKI_PREFIX);
    body.extend_from_slice(public_point);
    let mut attribute = tlv(tag::OID, OID_EXTENSION_REQUEST);
    push_tlv(&mut attribute, tag::SET, &tlv(tag::SEQUENCE, extensions));
    // attributes [0] IMPLICIT SET OF Attribute.
    push_tlv(&mut body, 0xa0, &tlv(tag::SEQUENCE, &attribute));
    tlv(tag::SEQUENCE, &body)
}

/// Wraps a TBSCertificate and its DER ECDSA signature into a Certificate.
pub(crate) fn certificate(tbs: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(signature);
    let mut body = Vec::with_capacity(tbs.len() + signature.len() + 20);
    body.extend_from_slice(tbs);
    body.extend_from_slice(ALG_ECDSA_WITH_SHA256);
    push_tlv(&mut body, tag::BIT_STRING, &bits);
    tlv(tag::SEQUENCE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ca_window() -> (OffsetDateTime, OffsetDateTime) {
        (
            datetime!(2020-01-01 0:00 UTC),
            datetime!(2070-01-01 0:00 UTC),
        )
    }

    #[test]
    fn default_validity_is_twenty_years_backdated_five_minutes() {
        let (nb, na) = ca_window();
        let now = datetime!(2026-06-01 12:00:00.75 UTC);
        let v = validity(now, &CertProfile::default(), nb, na).unwrap();
        assert_eq!(v.not_before, datetime!(2026-06-01 11:55 UTC));
        assert_eq!(
            v.not_after,
            datetime!(2026-06-01 12:00 UTC) + DEFAULT_LIFETIME
        );
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    }

    #[test]
    fn not_before_never_precedes_the_ca() {
        let (nb, na) = ca_window();
        let v = validity(nb + Duration::minutes(1), &CertProfile::default(), nb, na).unwrap();
        assert_eq!(v.not_before, nb);
    }

    #[test]
    fn lifetime_past_the_ca_is_shortened_or_refused() {
        let (nb, na) = ca_window();
        let now = datetime!(2065-01-01 0:00 UTC);
        let v = validity(now, &CertProfile::default(), nb, na).unwrap();
        assert_eq!(v.not_after, na);
        assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
        assert!(v.warnings[0].contains("shortened"));
        assert!(v.warnings[1].contains("less than 10 years"));

        let refuse = CertProfile {
            on_ca_expiry: CaExpiryPolicy::Refuse,
            ..CertProfile::default()
        };
        let err = validity(now, &refuse, nb, na).unwrap_err();
        assert!(matches!(err, CaError::LifetimeExceedsCa { .. }), "{err}");
        assert!(err.to_string().contains("2070-01-01T00:00:00Z"), "{err}");

        let err = validity(na + Duration::SECOND, &CertProfile::default(), nb, na).unwrap_err();
        assert!(matches!(err, CaError::CaNoLongerValid { .. }), "{err}");
    }

    #[test]
    fn short_lifetime_warns_like_the_device() {
        let (nb, na) = ca_window();
        let p = CertProfile {
            lifetime: Duration::days(365),
            ..CertProfile::default()
        };
        let v = validity(datetime!(2030-01-01 0:00 UTC), &p, nb, na).unwrap();
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("less than 10 years"));
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        let mut out = Vec::new();
        push_time(&mut out, datetime!(2049-12-31 23:59:59 UTC)).unwrap();
        assert_eq!(out, b"\x17\x0d491231235959Z");
        out.clear();
        push_time(&mut out, datetime!(2050-01-01 0:00:00 UTC)).unwrap();
        assert_eq!(out, b"\x18\x0f20500101000000Z");
    }

    #[test]
    fn profile_validation_names_the_field() {
        let bad = [
            CertProfile {
                lifetime: Duration::ZERO,
                ..CertProfile::default()
            },
            CertProfile {
                country: Some("de".to_owned()),
                ..CertProfile::default()
            },
            CertProfile {
                country: Some("DEU".to_owned()),
                ..CertProfile::default()
            },
            CertProfile {
                organization: Some(String::new()),
                ..CertProfile::default()
            },
            CertProfile {
                locality: Some("a\nb".to_owned()),
                ..CertProfile::default()
            },
            CertProfile {
                organizational_unit: Some("x".repeat(65)),
                ..CertProfile::default()
            },
        ];
        for (p, field) in bad.iter().zip([
            "lifetime",
            "country",
            "country",
            "organization",
            "locality",
            "organizational_unit",
        ]) {
            let err = p.validate().unwrap_err();
            assert!(
                matches!(err, CaError::InvalidProfile { field: f, .. } if f == field),
                "{err}"
            );
        }
        CertProfile::default().validate().unwrap();
    }
}
