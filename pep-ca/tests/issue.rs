//! Acceptance 1: certificates issued by the fixture CA, checked with the openssl CLI.

use crate::common;

use common::*;
use der::{Decode, Encode};
use pep_ca::{
    CaError, CaExpiryPolicy, CaWarning, CertProfile, EndpointName, EnrollmentId, FactoryCa,
};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;

#[test]
fn issued_certificate_verifies_and_fingerprint_is_the_enrollment_id() {
    let loaded = fixture_ca();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let ca = loaded.ca;
    let name: EndpointName = "GW-0001".parse().unwrap();
    let before = OffsetDateTime::now_utc();
    let id = ca.issue(&name, &CertProfile::default()).unwrap();
    let cert = &id.certificate;
    assert!(cert.warnings.is_empty(), "{:?}", cert.warnings);

    let dir = tempfile::tempdir().unwrap();
    write_cert_pem(dir.path(), "leaf.pem", &cert.der);
    assert_verifies(dir.path(), "leaf.pem", &fixture_cert());

    // openssl 3 prints "sha256 Fingerprint=", 1.1 "SHA256 Fingerprint=".
    let fp = openssl(
        dir.path(),
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let (label, hex) = fp.trim().split_once('=').unwrap();
    assert!(label.eq_ignore_ascii_case("SHA256 Fingerprint"), "{fp}");
    assert_eq!(format!("A-{hex}"), cert.enrollment_id.as_str());
    assert_eq!(cert.enrollment_id, EnrollmentId::of_certificate(&cert.der));

    let text = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    for expected in [
        "Version: 3 (0x2)",
        "Signature Algorithm: ecdsa-with-SHA256",
        "Subject: CN = GW-0001\n",
        "Issuer: CN = pep TEST ONLY factory CA, O = pep test fixtures (not for production)",
        "NIST CURVE: P-256",
        "X509v3 Basic Constraints: critical\n                CA:FALSE",
        "X509v3 Key Usage: critical\n                Digital Signature\n",
        "X509v3 Extended Key Usage: \n                TLS Web Client Authentication\n",
        "X509v3 Subject Key Identifier: \n",
        // The fixture CA's subjectKeyIdentifier.
        "X509v3 Authority Key Identifier: \n                B4:36:FB:A9:9F:3D:04:50:1B:D1:0E:27:06:FA:ED:B9:7A:B5:7C:69",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // Issuer byte-identical to the CA's subject; 16-byte positive serial; validity.
    let parsed = Certificate::from_der(&cert.der).unwrap();
    let ca_cert = Certificate::from_der(ca.certificate_der()).unwrap();
    assert_eq!(
        parsed.tbs_certificate.issuer.to_der().unwrap(),
        ca_cert.tbs_certificate.subject.to_der().unwrap()
    );
    let serial = parsed.tbs_certificate.serial_number.as_bytes();
    assert_eq!(serial.len(), 16);
    assert!(serial[0] < 0x80 && serial[0] != 0);
    assert_eq!(hex::encode_upper(serial), cert.serial_hex);
    let after = OffsetDateTime::now_utc();
    assert!(cert.not_before <= before - Duration::minutes(5) + Duration::SECOND);
    assert!(cert.not_before >= before - Duration::minutes(5) - Duration::SECOND);
    let lifetime = cert.not_after - cert.not_before - Duration::minutes(5);
    assert!(lifetime >= Duration::days(7305) - (after - before) - Duration::SECOND);
    assert!(lifetime <= Duration::days(7305) + Duration::SECOND);

    // The private key is PKCS#8 and belongs to the certificate.
    let key_der = id.private_key.to_der();
    std::fs::write(dir.path().join("key.der"), &*key_der).unwrap();
    let key_text = openssl(
        dir.path(),
        &["asn1parse", "-inform", "DER", "-in", "key.der"],
    );
    assert!(
        key_text.contains("id-ecPublicKey") && key_text.contains("prime256v1"),
        "{key_text}"
    );
    let key_pub = openssl(
        dir.path(),
        &["pkey", "-inform", "DER", "-in", "key.der", "-pubout"],
    );
    let cert_pub = openssl(
        dir.path(),
        &["x509", "-in", "leaf.pem", "-noout", "-pubkey"],
    );
    assert_eq!(key_pub, cert_pub);
}

#[test]
fn profile_fields_go_into_the_subject() {
    let ca = fixture_ca().ca;
    let profile = CertProfile {
        organization: Some("Acme Gateways".into()),
        organizational_unit: Some("Factory 7".into()),
        locality: Some("Cambridge".into()),
        state: Some("Cambs".into()),
        country: Some("GB".into()),
        lifetime: Duration::days(3650 * 2),
        on_ca_expiry: CaExpiryPolicy::Refuse,
        crl_distribution_point: None,
    };
    let name: EndpointName = "SN 0042 (rev.B)".parse().unwrap();
    let id = ca.issue(&name, &profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_cert_pem(dir.path(), "leaf.pem", &id.certificate.der);
    assert_verifies(dir.path(), "leaf.pem", &fixture_cert());
    let subject = openssl(
        dir.path(),
        &[
            "x509", "-in", "leaf.pem", "-noout", "-subject", "-nameopt", "RFC2253",
        ],
    );
    assert_eq!(
        subject.trim(),
        "subject=CN=SN 0042 (rev.B),OU=Factory 7,O=Acme Gateways,L=Cambridge,ST=Cambs,C=GB"
    );
    assert_eq!(
        id.certificate.not_after - id.certificate.not_before,
        Duration::days(7300) + Duration::minutes(5)
    );
}

#[test]
fn invalid_profile_is_refused_before_signing() {
    let ca = fixture_ca().ca;
    let name: EndpointName = "GW-1".parse().unwrap();
    let profile = CertProfile {
        country: Some("Germany".into()),
        ..CertProfile::default()
    };
    let err = ca.issue(&name, &profile).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::InvalidProfile {
                field: "country",
                ..
            }
        ),
        "{err}"
    );
}

/// A CA of `days` validity, made with the openssl CLI; `extra` are more `req` arguments.
fn short_ca(
    dir: &std::path::Path,
    days: &str,
    extra: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    let mut args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        days,
        "-sha256",
        "-subj",
        "/CN=short CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
    (dir.join("ca.pem"), dir.join("ca.key"))
}

#[test]
fn lifetime_past_the_ca_is_shortened_with_a_warning_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = short_ca(dir.path(), "365", &[]);
    let loaded = FactoryCa::load(&cert, &key).unwrap();
    assert!(
        loaded.warnings.iter().any(|w| matches!(
            w,
            CaWarning::CaExpiresSoon {
                under_ten_years: true,
                ..
            }
        )),
        "{:?}",
        loaded.warnings
    );
    let ca = loaded.ca;
    let name: EndpointName = "GW-2".parse().unwrap();

    let id = ca.issue(&name, &CertProfile::default()).unwrap();
    assert_eq!(id.certificate.not_after, ca.not_after());
    assert!(
        id.certificate
            .warnings
            .iter()
            .any(|w| w.contains("shortened")),
        "{:?}",
        id.certificate.warnings
    );
    assert!(
        id.certificate
            .warnings
            .iter()
            .any(|w| w.contains("less than 10 years"))
    );
    write_cert_pem(dir.path(), "leaf.pem", &id.certificate.der);
    assert_verifies(dir.path(), "leaf.pem", &cert);

    let refuse = CertProfile {
        on_ca_expiry: CaExpiryPolicy::Refuse,
        ..CertProfile::default()
    };
    let err = ca.issue(&name, &refuse).unwrap_err();
    assert!(matches!(err, CaError::LifetimeExceedsCa { .. }), "{err}");
    assert!(err.to_string().contains("on_ca_expiry = refuse"), "{err}");
}

#[test]
fn ca_without_subject_key_identifier_and_chain_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = short_ca(
        dir.path(),
        "9000",
        &["-addext", "subjectKeyIdentifier=none"],
    );
    // A chain file: the CA first, then another certificate.
    let mut chain = std::fs::read(&cert).unwrap();
    chain.extend(std::fs::read(fixture_cert()).unwrap());
    std::fs::write(dir.path().join("chain.pem"), &chain).unwrap();
    let loaded = FactoryCa::load(&dir.path().join("chain.pem"), &key).unwrap();
    assert_eq!(loaded.ca.chain_der().len(), 2);
    assert_eq!(loaded.ca.chain_der()[0], loaded.ca.certificate_der());
    let id = loaded
        .ca
        .issue(&"GW-3".parse().unwrap(), &CertProfile::default())
        .unwrap();
    write_cert_pem(dir.path(), "leaf.pem", &id.certificate.der);
    // Not -x509_strict: that also demands a subjectKeyIdentifier on the CA itself.
    let out = openssl(
        dir.path(),
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            cert.to_str().unwrap(),
            "leaf.pem",
        ],
    );
    assert_eq!(out.trim(), "leaf.pem: OK");
    let text = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
}

/// The core takes a clock: a certificate issued "at" a fixed time starts five minutes before it
/// (the backdating), whatever the wall clock says.
#[test]
fn issue_at_a_fixed_time_starts_the_validity_there() {
    let ca = fixture_ca().ca;
    let name: EndpointName = "GW-CLOCK".parse().unwrap();
    // Inside the fixture CA's validity, well away from the wall clock.
    let at = ca.not_before() + Duration::days(3) + Duration::milliseconds(750);
    let id = ca.issue_at(&name, &CertProfile::default(), at).unwrap();
    let whole = at.replace_nanosecond(0).unwrap();
    assert_eq!(id.certificate.not_before, whole - Duration::minutes(5));
    assert_eq!(
        id.certificate.not_after,
        whole + CertProfile::default().lifetime
    );
    let parsed = Certificate::from_der(&id.certificate.der).unwrap();
    let nb = parsed
        .tbs_certificate
        .validity
        .not_before
        .to_unix_duration();
    assert_eq!(
        nb.as_secs() as i64,
        (whole - Duration::minutes(5)).unix_timestamp()
    );
}
