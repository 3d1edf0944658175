//! The CA's CRL (issue #16): signed by the fixture CA, checked with the openssl CLI and parsed
//! and verified in Rust with `x509-cert`; the certificates' CRL distribution point.

use crate::common;

use common::*;
use const_oid::db::rfc5280::{
    ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_DISTRIBUTION_POINTS, ID_CE_CRL_NUMBER,
    ID_CE_CRL_REASONS, ID_CE_SUBJECT_KEY_IDENTIFIER,
};
use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use pep_ca::{CaError, CertProfile, CrlContent, EndpointName, RevocationReason, RevokedEntry};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, CrlDistributionPoints, CrlReason, SubjectKeyIdentifier,
};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

/// Two certificates of the fixture CA, revoked for two reasons, and their CRL.
fn revoked_pair() -> (Vec<pep_ca::IssuedCertificate>, Vec<RevokedEntry>) {
    let ca = fixture_ca().ca;
    let certs: Vec<_> = ["GW-CRL-1", "GW-CRL-2"]
        .iter()
        .map(|s| {
            ca.issue(&s.parse::<EndpointName>().unwrap(), &CertProfile::default())
                .unwrap()
                .certificate
        })
        .collect();
    let at = now() - Duration::minutes(3);
    let entries = vec![
        RevokedEntry {
            serial_hex: certs[0].serial_hex.clone(),
            revoked_at: at,
            reason: RevocationReason::KeyCompromise,
        },
        RevokedEntry {
            serial_hex: certs[1].serial_hex.clone(),
            revoked_at: at + Duration::seconds(1),
            reason: RevocationReason::Unspecified,
        },
    ];
    (certs, entries)
}

#[test]
fn crl_verifies_with_openssl_and_lists_serials_reasons_and_number() {
    let ca = fixture_ca().ca;
    let (certs, entries) = revoked_pair();
    let this_update = now();
    let der = ca
        .sign_crl(&CrlContent {
            number: 300,
            this_update,
            next_update: this_update + Duration::hours(24),
            revoked: &entries,
        })
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crl.der"), &der).unwrap();
    let ca_file = fixture_cert();
    let ca_file = ca_file.to_str().unwrap();
    let (ok, text) = openssl_status(
        dir.path(),
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", ca_file, "-noout", "-verify",
        ],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
    let listing = openssl(
        dir.path(),
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    );
    assert!(listing.contains("Version 2"), "{listing}");
    assert!(listing.contains("X509v3 CRL Number"), "{listing}");
    assert!(listing.contains("300"), "{listing}");
    assert!(listing.contains("Key Compromise"), "{listing}");
    for c in &certs {
        assert!(
            listing.contains(&c.serial_hex),
            "{} not in {listing}",
            c.serial_hex
        );
    }
    // An "unspecified" entry carries no reason code (RFC 5280 §5.3.1): one reason line only.
    assert_eq!(listing.matches("CRL Reason Code").count(), 1, "{listing}");

    // openssl verifies a certificate against the CRL: revoked.
    write_cert_pem(dir.path(), "leaf.pem", &certs[0].der);
    std::fs::write(
        dir.path().join("crl.pem"),
        openssl(
            dir.path(),
            &["crl", "-inform", "DER", "-in", "crl.der", "-outform", "PEM"],
        ),
    )
    .unwrap();
    let (ok, text) = openssl_status(
        dir.path(),
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            ca_file,
            "-CRLfile",
            "crl.pem",
            "leaf.pem",
        ],
    );
    assert!(!ok && text.contains("certificate revoked"), "{text}");
}

#[test]
fn crl_parses_and_its_signature_verifies_in_rust() {
    let ca = fixture_ca().ca;
    let (certs, entries) = revoked_pair();
    let this_update = now();
    let der = ca
        .sign_crl(&CrlContent {
            number: 7,
            this_update,
            next_update: this_update + Duration::hours(5),
            revoked: &entries,
        })
        .unwrap();
    let crl = CertificateList::from_der(&der).unwrap();
    let tbs = &crl.tbs_cert_list;
    assert_eq!(tbs.version, x509_cert::Version::V2);

    let ca_cert = Certificate::from_der(ca.certificate_der()).unwrap();
    assert_eq!(tbs.issuer, ca_cert.tbs_certificate.subject);
    assert_eq!(
        tbs.this_update.to_unix_duration().as_secs() as i64,
        this_update.unix_timestamp()
    );
    assert_eq!(
        tbs.next_update.unwrap().to_unix_duration().as_secs() as i64,
        (this_update + Duration::hours(5)).unix_timestamp()
    );

    // The signature, with the CA certificate's public key.
    let spki = &ca_cert.tbs_certificate.subject_public_key_info;
    let key =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).unwrap();
    let signature =
        p256::ecdsa::Signature::from_der(crl.signature.raw_bytes()).expect("a DER ECDSA signature");
    key.verify(&tbs.to_der().unwrap(), &signature)
        .expect("the CRL's signature verifies with the CA key");
    assert_eq!(
        crl.signature_algorithm.oid,
        const_oid::db::rfc5912::ECDSA_WITH_SHA_256
    );

    // Entries: serial numbers, dates, reason codes.
    let revoked = tbs.revoked_certificates.as_ref().unwrap();
    assert_eq!(revoked.len(), 2);
    for ((entry, cert), wanted) in revoked.iter().zip(&certs).zip(&entries) {
        let issued = Certificate::from_der(&cert.der).unwrap();
        assert_eq!(entry.serial_number, issued.tbs_certificate.serial_number);
        assert_eq!(
            entry.revocation_date.to_unix_duration().as_secs() as i64,
            wanted.revoked_at.unix_timestamp()
        );
    }
    let reason_ext = revoked[0].crl_entry_extensions.as_ref().unwrap();
    assert_eq!(reason_ext.len(), 1);
    assert_eq!(reason_ext[0].extn_id, ID_CE_CRL_REASONS);
    assert_eq!(
        CrlReason::from_der(reason_ext[0].extn_value.as_bytes()).unwrap(),
        CrlReason::KeyCompromise
    );
    assert!(revoked[1].crl_entry_extensions.is_none());

    // CRL extensions: the number and the CA's key identifier.
    let exts = tbs.crl_extensions.as_ref().unwrap();
    let number = exts.iter().find(|e| e.extn_id == ID_CE_CRL_NUMBER).unwrap();
    let number = der::asn1::Uint::from_der(number.extn_value.as_bytes()).unwrap();
    assert_eq!(number.as_bytes(), &[7]);
    let aki = exts
        .iter()
        .find(|e| e.extn_id == ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .unwrap();
    let aki = AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes()).unwrap();
    let ski = ca_cert
        .tbs_certificate
        .extensions
        .as_ref()
        .and_then(|e| e.iter().find(|e| e.extn_id == ID_CE_SUBJECT_KEY_IDENTIFIER))
        .map(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).unwrap());
    if let Some(ski) = ski {
        assert_eq!(aki.key_identifier.unwrap(), ski.0);
    } else {
        assert_eq!(aki.key_identifier.unwrap().as_bytes().len(), 20);
    }
}

#[test]
fn an_empty_crl_has_no_entries_and_still_verifies() {
    let ca = fixture_ca().ca;
    let t = now();
    let der = ca
        .sign_crl(&CrlContent {
            number: 1,
            this_update: t,
            next_update: t + Duration::hours(1),
            revoked: &[],
        })
        .unwrap();
    let crl = CertificateList::from_der(&der).unwrap();
    assert!(crl.tbs_cert_list.revoked_certificates.is_none());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crl.der"), &der).unwrap();
    let ca_file = fixture_cert();
    let (ok, text) = openssl_status(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            ca_file.to_str().unwrap(),
            "-noout",
            "-verify",
        ],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
}

#[test]
fn bad_crl_input_is_refused_naming_what_is_wrong() {
    let ca = fixture_ca().ca;
    let t = now();
    let bad_serial = [RevokedEntry {
        serial_hex: "XYZ".to_owned(),
        revoked_at: t,
        reason: RevocationReason::Superseded,
    }];
    let err = ca
        .sign_crl(&CrlContent {
            number: 1,
            this_update: t,
            next_update: t + Duration::hours(1),
            revoked: &bad_serial,
        })
        .unwrap_err();
    assert!(
        matches!(&err, CaError::Crl { detail } if detail.contains("XYZ")),
        "{err}"
    );
    let err = ca
        .sign_crl(&CrlContent {
            number: 1,
            this_update: t,
            next_update: t,
            revoked: &[],
        })
        .unwrap_err();
    assert!(err.to_string().contains("nextUpdate"), "{err}");
}

#[test]
fn reasons_use_the_rfc_names_and_a_hold_is_refused() {
    for r in RevocationReason::ALL {
        assert_eq!(r.as_str().parse::<RevocationReason>().unwrap(), r);
    }
    assert_eq!(RevocationReason::KeyCompromise.code(), 1);
    assert_eq!(RevocationReason::CaCompromise.as_str(), "cACompromise");
    assert_eq!(RevocationReason::PrivilegeWithdrawn.code(), 9);
    let e = "certificateHold".parse::<RevocationReason>().unwrap_err();
    assert!(e.to_string().contains("final"), "{e}");
    let e = "KeyCompromise".parse::<RevocationReason>().unwrap_err();
    assert!(e.to_string().contains("keyCompromise"), "{e}");
}

#[test]
fn certificates_carry_the_crl_distribution_point_when_configured() {
    let ca = fixture_ca().ca;
    let url = "http://pki.factory.example/v3/crl";
    let profile = CertProfile {
        crl_distribution_point: Some(url.to_owned()),
        ..CertProfile::default()
    };
    let name: EndpointName = "GW-CRLDP".parse().unwrap();
    let find = |der: &[u8]| {
        let cert = Certificate::from_der(der).unwrap();
        cert.tbs_certificate
            .extensions
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.extn_id == ID_CE_CRL_DISTRIBUTION_POINTS)
    };
    let issued = ca.issue(&name, &profile).unwrap().certificate;
    let ext = find(&issued.der).expect("a cRLDistributionPoints extension");
    assert!(!ext.critical);
    let points = CrlDistributionPoints::from_der(ext.extn_value.as_bytes()).unwrap();
    let Some(DistributionPointName::FullName(names)) = &points.0[0].distribution_point else {
        panic!("{points:?}");
    };
    assert!(
        matches!(&names[0], GeneralName::UniformResourceIdentifier(u) if u.as_str() == url),
        "{names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    write_cert_pem(dir.path(), "leaf.pem", &issued.der);
    assert_verifies(dir.path(), "leaf.pem", &fixture_cert());
    let text = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(
        text.contains("CRL Distribution Points") && text.contains(url),
        "{text}"
    );

    // Without the setting: no extension.
    let plain = ca
        .issue(&name, &CertProfile::default())
        .unwrap()
        .certificate;
    assert!(find(&plain.der).is_none());

    // A URL that is not http(s), or not ASCII, is refused naming the field.
    for bad in [
        "ftp://pki.example/crl",
        "http://pki.exämple/crl",
        "http://a b/crl",
    ] {
        let p = CertProfile {
            crl_distribution_point: Some(bad.to_owned()),
            ..CertProfile::default()
        };
        let err = ca.issue(&name, &p).unwrap_err();
        assert!(
            matches!(&err, CaError::InvalidProfile { field, .. } if *field == "crl_distribution_point"),
            "{bad}: {err}"
        );
    }
}
