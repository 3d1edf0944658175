//! Acceptance 4: signing device CSRs (`by_device` mode). CSRs are made with the openssl CLI.

use crate::common;

use std::path::Path;

use common::*;
use der::Decode;
use pep_ca::{CaError, CertProfile, EndpointName};
use x509_cert::Certificate;

/// A DER CSR for a new key on `curve` with subject `subj`; returns (CSR DER, key file name).
fn make_csr(dir: &Path, tag: &str, curve: &str, subj: &str, extra: &[&str]) -> Vec<u8> {
    let key = format!("{tag}.key");
    let csr = format!("{tag}.csr");
    openssl(
        dir,
        &["ecparam", "-name", curve, "-genkey", "-noout", "-out", &key],
    );
    let mut args = vec![
        "req", "-new", "-key", &key, "-subj", subj, "-outform", "DER", "-out", &csr,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
    std::fs::read(dir.join(&csr)).unwrap()
}

/// Reads one DER TLV at the start of `data`: (header length, content length).
fn tlv_len(data: &[u8]) -> (usize, usize) {
    let first = data[1];
    if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        let len = data[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (2 + n, len)
    }
}

fn encode_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else if len < 0x100 {
        vec![0x81, len as u8]
    } else {
        vec![0x82, (len >> 8) as u8, len as u8]
    }
}

/// Splits a CSR into (CertificationRequestInfo TLV, signatureAlgorithm TLV, signature TLV).
fn split_csr(csr: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (h, len) = tlv_len(csr);
    let body = &csr[h..h + len];
    let mut parts = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (h, len) = tlv_len(rest);
        parts.push(rest[..h + len].to_vec());
        rest = &rest[h + len..];
    }
    assert_eq!(parts.len(), 3);
    (parts[0].clone(), parts[1].clone(), parts[2].clone())
}

fn join_csr(info: &[u8], alg: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut body = info.to_vec();
    body.extend_from_slice(alg);
    body.extend_from_slice(sig);
    let mut out = vec![0x30];
    out.extend(encode_len(body.len()));
    out.extend(body);
    out
}

/// The CSR with its ecdsa-with-SHA256 AlgorithmIdentifier rewritten to carry an explicit NULL
/// parameter, as the genuine FCC sends it. The signature covers only the
/// CertificationRequestInfo, so it stays valid.
fn with_explicit_null(csr: &[u8]) -> Vec<u8> {
    let (info, alg, sig) = split_csr(csr);
    let ecdsa_sha256 = [
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    assert_eq!(alg, ecdsa_sha256);
    let mut null_alg = vec![0x30, 0x0c];
    null_alg.extend_from_slice(&ecdsa_sha256[2..]);
    null_alg.extend_from_slice(&[0x05, 0x00]);
    join_csr(&info, &null_alg, &sig)
}

fn name(s: &str) -> EndpointName {
    s.parse().unwrap()
}

#[test]
fn csr_is_signed_with_the_profile_not_the_requested_extensions() {
    let ca = fixture_ca().ca;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The request asks for a CA certificate; the profile wins.
    let csr = make_csr(
        d,
        "dev",
        "prime256v1",
        "/O=ignored/CN=GW-0007",
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    let cert = ca
        .sign_csr(&csr, &name("GW-0007"), &CertProfile::default())
        .unwrap();
    write_cert_pem(d, "leaf.pem", &cert.der);
    assert_verifies(d, "leaf.pem", &fixture_cert());
    let text = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("Subject: CN = GW-0007\n"), "{text}");
    assert!(
        text.contains("CA:FALSE") && !text.contains("CA:TRUE"),
        "{text}"
    );
    assert!(
        text.contains("Digital Signature\n") && !text.contains("Certificate Sign"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    // The certificate is for the request's key.
    let cert_pub = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
    let key_pub = openssl(d, &["pkey", "-in", "dev.key", "-pubout"]);
    assert_eq!(cert_pub, key_pub);
    assert_eq!(
        cert.enrollment_id,
        pep_ca::EnrollmentId::of_certificate(&cert.der)
    );
    Certificate::from_der(&cert.der).unwrap();
}

#[test]
fn csr_with_explicit_null_algorithm_parameters_is_accepted() {
    let ca = fixture_ca().ca;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csr = with_explicit_null(&make_csr(d, "fcc", "prime256v1", "/CN=GW-NULL", &[]));
    // openssl agrees the rewritten request is still correctly self-signed.
    std::fs::write(d.join("null.csr"), &csr).unwrap();
    let (ok, out) = openssl_status(
        d,
        &[
            "req", "-inform", "DER", "-in", "null.csr", "-noout", "-verify",
        ],
    );
    assert!(ok && out.contains("verify OK"), "{out}");
    let cert = ca
        .sign_csr(&csr, &name("GW-NULL"), &CertProfile::default())
        .unwrap();
    write_cert_pem(d, "leaf.pem", &cert.der);
    assert_verifies(d, "leaf.pem", &fixture_cert());
}

#[test]
fn csr_for_another_endpoint_is_refused() {
    let ca = fixture_ca().ca;
    let dir = tempfile::tempdir().unwrap();
    let csr = make_csr(dir.path(), "a", "prime256v1", "/CN=GW-0001", &[]);
    let err = ca
        .sign_csr(&csr, &name("GW-0002"), &CertProfile::default())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSubjectMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"GW-0001\"") && msg.contains("\"GW-0002\""),
        "{msg}"
    );
    // No CN at all.
    let csr = make_csr(dir.path(), "b", "prime256v1", "/O=Acme", &[]);
    let err = ca
        .sign_csr(&csr, &name("GW-0002"), &CertProfile::default())
        .unwrap_err();
    assert!(err.to_string().contains("subject CN (none)"), "{err}");
}

#[test]
fn csr_with_a_p384_key_is_refused() {
    let ca = fixture_ca().ca;
    let dir = tempfile::tempdir().unwrap();
    let csr = make_csr(dir.path(), "p384", "secp384r1", "/CN=GW-1", &[]);
    let err = ca
        .sign_csr(&csr, &name("GW-1"), &CertProfile::default())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrKeyNotP256 { .. }), "{err}");
    assert!(err.to_string().contains("secp384r1"), "{err}");
}

#[test]
fn csr_with_a_broken_signature_is_refused() {
    let ca = fixture_ca().ca;
    let dir = tempfile::tempdir().unwrap();
    let csr = make_csr(dir.path(), "s", "prime256v1", "/CN=GW-1", &[]);
    // Change the last byte of the signature's s value.
    let mut broken = csr.clone();
    let last = broken.len() - 1;
    broken[last] ^= 0x01;
    let err = ca
        .sign_csr(&broken, &name("GW-1"), &CertProfile::default())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignatureInvalid), "{err}");
    // Change the subject: GW-1 -> GW-2 keeps the structure and breaks the signature; the
    // signature is checked before the name.
    let pos = csr.windows(4).position(|w| w == b"GW-1").unwrap();
    let mut renamed = csr.clone();
    renamed[pos + 3] = b'2';
    let err = ca
        .sign_csr(&renamed, &name("GW-2"), &CertProfile::default())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignatureInvalid), "{err}");
    assert!(err.to_string().contains("self-signature"), "{err}");
}

#[test]
fn csr_with_another_digest_or_garbage_is_refused() {
    let ca = fixture_ca().ca;
    let dir = tempfile::tempdir().unwrap();
    let csr = make_csr(dir.path(), "h", "prime256v1", "/CN=GW-1", &["-sha384"]);
    let err = ca
        .sign_csr(&csr, &name("GW-1"), &CertProfile::default())
        .unwrap_err();
    assert!(
        matches!(err, CaError::CsrSignatureAlgorithm { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ecdsa-with-SHA384"), "{err}");

    for garbage in [
        &b""[..],
        b"\x30\x03\x02\x01",
        b"-----BEGIN CERTIFICATE REQUEST-----",
        &[0x30, 0x00],
    ] {
        let err = ca
            .sign_csr(garbage, &name("GW-1"), &CertProfile::default())
            .unwrap_err();
        assert!(
            matches!(err, CaError::CsrMalformed { .. }),
            "{garbage:?}: {err}"
        );
    }
    // Trailing bytes after the request.
    let mut trailing = csr.clone();
    trailing.push(0);
    let err = ca
        .sign_csr(&trailing, &name("GW-1"), &CertProfile::default())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrMalformed { .. }), "{err}");
}
