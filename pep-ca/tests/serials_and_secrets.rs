//! Acceptance 5: unique positive serials over 10,000 certificates; no key material in any
//! `Debug`/`Display` output.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use der::Decode;
use p256::pkcs8::DecodePrivateKey as _;
use pep_ca::{CaError, CertProfile, EndpointName, FactoryCa};
use x509_cert::Certificate;

#[test]
fn ten_thousand_serials_are_unique_and_positive() {
    let ca = Arc::new(fixture_ca().ca);
    let name: EndpointName = "GW-SERIALS".parse().unwrap();
    let profile = CertProfile::default();
    let start = Instant::now();
    let mut serials = HashSet::with_capacity(10_000);
    for i in 0..10_000 {
        let id = ca.issue(&name, &profile).unwrap();
        let cert = id.certificate;
        assert_eq!(cert.serial_hex.len(), 32);
        // Positive: the top bit of the first byte is clear; and not zero-padded.
        let first = u8::from_str_radix(&cert.serial_hex[..2], 16).unwrap();
        assert!(first != 0 && first < 0x80, "{}", cert.serial_hex);
        if i % 500 == 0 {
            // The DER says the same.
            let parsed = Certificate::from_der(&cert.der).unwrap();
            assert_eq!(
                hex::encode_upper(parsed.tbs_certificate.serial_number.as_bytes()),
                cert.serial_hex
            );
        }
        assert!(serials.insert(cert.serial_hex), "duplicate serial at {i}");
    }
    eprintln!("issued 10000 identities in {:?}", start.elapsed());
    assert_eq!(serials.len(), 10_000);
}

fn forms(bytes: &[u8]) -> Vec<String> {
    let upper = hex::encode_upper(bytes);
    let colon = bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    // `{:?}` of a byte slice: "[48, 129, ...]", without the brackets.
    let debug = format!("{bytes:?}");
    let debug = debug
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    vec![
        hex::encode(bytes),
        upper,
        colon.to_ascii_lowercase(),
        colon,
        debug,
        String::from_utf8_lossy(bytes).into_owned(),
    ]
}

/// Asserts none of the secrets appears in `text`; for the 32-byte scalars, not even their first
/// 8 bytes in hex.
fn assert_no_secret(text: &str, secrets: &[(&str, &[u8])]) {
    for (what, bytes) in secrets {
        for form in forms(bytes) {
            assert!(!text.contains(&form), "{what} leaked in {text:?}");
        }
        if bytes.len() == 32 {
            for form in forms(&bytes[..8]).into_iter().take(4) {
                assert!(!text.contains(&form), "part of {what} leaked in {text:?}");
            }
        }
    }
}

#[test]
fn no_key_material_in_debug_or_display() {
    let ca_key_pem = std::fs::read_to_string(fixture_key()).unwrap();
    let ca_secret = p256::SecretKey::from_sec1_pem(&ca_key_pem).unwrap();
    let ca_scalar = ca_secret.to_bytes().to_vec();
    let ca_sec1_der = {
        use rustls_pki_types::PrivateSec1KeyDer;
        use rustls_pki_types::pem::PemObject as _;
        PrivateSec1KeyDer::from_pem_slice(ca_key_pem.as_bytes())
            .unwrap()
            .secret_sec1_der()
            .to_vec()
    };

    let loaded = fixture_ca();
    let loaded_dbg = format!("{loaded:?}");
    let ca = &loaded.ca;
    let id = ca
        .issue(&"GW-SECRET".parse().unwrap(), &CertProfile::default())
        .unwrap();
    let key_der = id.private_key.to_der().to_vec();
    let device_scalar = p256::SecretKey::from_pkcs8_der(&key_der)
        .unwrap()
        .to_bytes()
        .to_vec();
    let secrets: [(&str, &[u8]); 4] = [
        ("CA scalar", &ca_scalar),
        ("CA key DER", &ca_sec1_der),
        ("device scalar", &device_scalar),
        ("device key DER", &key_der),
    ];

    // Errors that involve the keys: mismatch, encrypted, curve, plus CSR and name errors.
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "other.key",
        ],
    );
    let mut errors: Vec<CaError> = vec![
        FactoryCa::load(&fixture_cert(), &dir.path().join("other.key")).unwrap_err(),
        FactoryCa::from_pem(ca_key_pem.as_bytes(), ca_key_pem.as_bytes()).unwrap_err(),
        FactoryCa::from_pem(&std::fs::read(fixture_cert()).unwrap(), &key_der).unwrap_err(),
        ca.sign_csr(&key_der, &"GW-1".parse().unwrap(), &CertProfile::default())
            .unwrap_err(),
        "bad_name".parse::<EndpointName>().unwrap_err(),
    ];
    // The device key, PEM-wrapped, given as a CA key for the fixture certificate.
    let device_pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64_encode(&key_der)
    );
    errors.push(
        FactoryCa::from_pem(
            &std::fs::read(fixture_cert()).unwrap(),
            device_pem.as_bytes(),
        )
        .unwrap_err(),
    );

    let mut outputs = vec![
        format!("{:?}", id.private_key),
        format!("{id:?}"),
        format!("{:?}", id.certificate),
        format!("{ca:?}"),
        loaded_dbg,
    ];
    for w in &loaded.warnings {
        outputs.push(format!("{w} {w:?}"));
    }
    for e in &errors {
        outputs.push(format!("{e} {e:?}"));
    }
    for out in &outputs {
        assert_no_secret(out, &secrets);
    }
    assert!(format!("{:?}", id.private_key).contains("redacted"));
    assert!(format!("{ca:?}").contains("redacted"));
}

/// Standard base64 (the tests have no base64 dependency).
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
