//! Acceptance 3: loading the CA. Every bad file is made with the openssl CLI in a tempdir.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::*;
use pep_ca::{CaError, CaWarning, CertProfile, FactoryCa};

/// A P-256 key written the way `openssl ecparam -genkey -noout` does (SEC1, no EC PARAMETERS).
fn p256_key(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ],
    );
    dir.join(name)
}

/// A self-signed certificate for `key` with the given extensions.
fn self_signed(dir: &Path, key: &str, name: &str, exts: &[&str]) -> PathBuf {
    let mut args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-out",
        name,
        "-days",
        "9000",
        "-sha256",
        "-subj",
        "/CN=test CA",
    ];
    for e in exts {
        args.push("-addext");
        args.push(e);
    }
    openssl(dir, &args);
    dir.join(name)
}

const CA_EXTS: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign",
];

/// A P-256 CA (key + certificate) in `dir`.
fn good_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let key = p256_key(dir, "ca.key");
    let cert = self_signed(dir, "ca.key", "ca.pem", CA_EXTS);
    (cert, key)
}

fn load_err(cert: &Path, key: &Path) -> CaError {
    FactoryCa::load(cert, key).expect_err("the CA must be refused")
}

fn assert_names(err: &CaError, file: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(file.to_str().unwrap()),
        "{msg:?} does not name {file:?}"
    );
}

#[test]
fn sec1_with_and_without_parameters_and_pkcs8_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `openssl ecparam -genkey` without -noout writes an EC PARAMETERS block first.
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            "params.key",
        ],
    );
    let text = std::fs::read_to_string(d.join("params.key")).unwrap();
    assert!(text.starts_with("-----BEGIN EC PARAMETERS-----"), "{text}");
    let cert = self_signed(d, "params.key", "ca.pem", CA_EXTS);
    // The same key as SEC1 only and as PKCS#8.
    openssl(d, &["ec", "-in", "params.key", "-out", "sec1.key"]);
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "params.key",
            "-out",
            "pkcs8.key",
        ],
    );
    assert!(
        std::fs::read_to_string(d.join("pkcs8.key"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    for key in ["params.key", "sec1.key", "pkcs8.key"] {
        let path = d.join(key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = FactoryCa::load(&cert, &path).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            loaded
                .warnings
                .iter()
                .all(|w| !matches!(w, CaWarning::KeyFileAccessible { .. }))
        );
        loaded
            .ca
            .issue(&"GW-1".parse().unwrap(), &CertProfile::default())
            .unwrap();
    }
    // A PKCS#8 key generated directly by genpkey.
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "gen.key",
        ],
    );
    let cert = self_signed(d, "gen.key", "gen.pem", CA_EXTS);
    FactoryCa::load(&cert, &d.join("gen.key")).unwrap();
}

#[test]
fn the_fixture_ca_loads() {
    let loaded = FactoryCa::load(&fixture_cert(), &fixture_key()).unwrap();
    assert_eq!(loaded.ca.certificate_der().len(), {
        let pem = std::fs::read(fixture_cert()).unwrap();
        pem::der_len(&pem)
    });
    assert!(loaded.ca.subject().contains("pep TEST ONLY factory CA"));
}

mod pem {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    pub(crate) fn der_len(pem: &[u8]) -> usize {
        CertificateDer::from_pem_slice(pem).unwrap().len()
    }
}

#[test]
fn group_readable_key_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = good_ca(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let loaded = FactoryCa::load(&cert, &key).unwrap();
    let w = loaded
        .warnings
        .iter()
        .find(|w| matches!(w, CaWarning::KeyFileAccessible { mode, .. } if mode & 0o777 == 0o640))
        .unwrap_or_else(|| panic!("{:?}", loaded.warnings));
    let text = w.to_string();
    assert!(
        text.contains(key.to_str().unwrap()) && text.contains("0640") && text.contains("chmod 600"),
        "{text}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = FactoryCa::load(&cert, &key).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn encrypted_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = good_ca(d);
    let key = key.to_str().unwrap();
    // Legacy SEC1 encryption (Proc-Type / DEK-Info headers) and PKCS#8 encryption.
    openssl(
        d,
        &[
            "ec",
            "-in",
            key,
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            "enc_sec1.key",
        ],
    );
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            key,
            "-v2",
            "aes256",
            "-passout",
            "pass:x",
            "-out",
            "enc_p8.key",
        ],
    );
    for name in ["enc_sec1.key", "enc_p8.key"] {
        let path = d.join(name);
        let err = load_err(&cert, &path);
        assert!(matches!(err, CaError::EncryptedKey { .. }), "{name}: {err}");
        assert_names(&err, &path);
        assert!(err.to_string().contains("encrypted"));
    }
}

#[test]
fn other_curves_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "p384.key",
        ],
    );
    let cert = self_signed(d, "p384.key", "p384.pem", CA_EXTS);
    let key = d.join("p384.key");
    // A P-384 CA (key and certificate).
    let err = load_err(&cert, &key);
    assert!(matches!(err, CaError::UnsupportedCurve { .. }), "{err}");
    assert!(err.to_string().contains("secp384r1"), "{err}");
    // A P-384 key with a P-256 certificate: the key file is named.
    let err = load_err(&fixture_cert(), &key);
    assert!(matches!(err, CaError::UnsupportedCurve { .. }), "{err}");
    assert_names(&err, &key);
    // The same as PKCS#8.
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "p384.key",
            "-out",
            "p384_p8.key",
        ],
    );
    let err = load_err(&fixture_cert(), &d.join("p384_p8.key"));
    assert!(matches!(err, CaError::UnsupportedCurve { .. }), "{err}");
    // A P-384 certificate with a P-256 key: the certificate file is named.
    let err = load_err(&cert, &fixture_key());
    assert!(matches!(err, CaError::UnsupportedCurve { .. }), "{err}");
    assert_names(&err, &cert);
    // RSA.
    openssl(d, &["genrsa", "-out", "rsa.key", "2048"]);
    let err = load_err(&fixture_cert(), &d.join("rsa.key"));
    assert!(matches!(err, CaError::UnsupportedKeyType { .. }), "{err}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = p256_key(dir.path(), "other.key");
    let err = load_err(&fixture_cert(), &other);
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert_names(&err, &other);
    assert_names(&err, &fixture_cert());
}

#[test]
fn certificates_that_are_not_a_ca_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    p256_key(d, "k.key");
    let key = d.join("k.key");
    let cases: [(&str, &[&str]); 4] = [
        (
            "ca_false.pem",
            &[
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,keyCertSign",
            ],
        ),
        // See below: made with a configuration without default extensions.
        ("no_bc.pem", &["keyUsage=critical,keyCertSign"]),
        (
            "no_keycertsign.pem",
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,digitalSignature,cRLSign",
            ],
        ),
        ("no_ku.pem", &["basicConstraints=critical,CA:TRUE"]),
    ];
    // `req -x509` with the system configuration adds basicConstraints CA:TRUE; a configuration
    // without extension sections does not.
    std::fs::write(d.join("bare.cnf"), "[req]\ndistinguished_name = dn\n[dn]\n").unwrap();
    for (name, exts) in cases {
        let cert = if name == "no_bc.pem" {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-config",
                    "bare.cnf",
                    "-key",
                    "k.key",
                    "-out",
                    name,
                    "-days",
                    "9000",
                    "-subj",
                    "/CN=no bc",
                    "-addext",
                    exts[0],
                ],
            );
            let text = openssl(d, &["x509", "-in", name, "-noout", "-text"]);
            assert!(!text.contains("Basic Constraints"), "{text}");
            d.join(name)
        } else {
            self_signed(d, "k.key", name, exts)
        };
        let err = load_err(&cert, &key);
        match name {
            "ca_false.pem" | "no_bc.pem" => {
                assert!(matches!(err, CaError::NotCa { .. }), "{name}: {err}")
            }
            _ => assert!(
                matches!(err, CaError::NoKeyCertSign { .. }),
                "{name}: {err}"
            ),
        }
        assert_names(&err, &cert);
    }
}

/// A self-signed CA with explicit validity dates, through `openssl ca -selfsign` (this openssl
/// has no `x509 -not_before`).
fn ca_with_dates(dir: &Path, start: &str, end: &str) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = ./index.txt\nserial = ./serial\nnew_certs_dir = .\n\
         default_md = sha256\npolicy = p\nx509_extensions = ext\nunique_subject = no\n\
         [p]\ncommonName = supplied\n\
         [ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\nsubjectKeyIdentifier = hash\n",
    )
    .unwrap();
    p256_key(dir, "dated.key");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "dated.key",
            "-subj",
            "/CN=dated CA",
            "-out",
            "dated.csr",
        ],
    );
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            "dated.key",
            "-in",
            "dated.csr",
            "-startdate",
            start,
            "-enddate",
            end,
            "-out",
            "dated.pem",
        ],
    );
    (dir.join("dated.pem"), dir.join("dated.key"))
}

#[test]
fn expired_and_not_yet_valid_cas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_with_dates(dir.path(), "20200101000000Z", "20210101000000Z");
    let err = load_err(&cert, &key);
    assert!(matches!(err, CaError::CaExpired { .. }), "{err}");
    assert_names(&err, &cert);
    assert!(err.to_string().contains("2021-01-01T00:00:00Z"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_with_dates(dir.path(), "20900101000000Z", "20950101000000Z");
    let err = load_err(&cert, &key);
    assert!(matches!(err, CaError::CaNotYetValid { .. }), "{err}");
    assert_names(&err, &cert);
}

#[test]
fn empty_garbage_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = good_ca(d);
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "\n  \n").unwrap();
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, b"\x00\xffnot a pem file at all\n\x13\x37").unwrap();
    let broken = d.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_der = d.join("not_der.pem");
    std::fs::write(
        &not_der,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = d.join("missing.pem");

    for (bad_cert, check) in [
        (&empty, "empty" as &str),
        (&garbage, "holds no PEM CERTIFICATE block"),
        (&broken, "not valid PEM"),
        (&not_der, "cannot be parsed"),
        (&missing, "cannot read"),
        // A key where the certificate should be.
        (&key, "holds no PEM CERTIFICATE block"),
    ] {
        let err = load_err(bad_cert, &key);
        assert!(err.to_string().contains(check), "{bad_cert:?}: {err}");
        assert_names(&err, bad_cert);
    }
    for (bad_key, check) in [
        (&empty, "empty" as &str),
        (&garbage, "holds no PEM PRIVATE KEY or EC PRIVATE KEY block"),
        (&missing, "cannot read"),
        (&cert, "holds no PEM PRIVATE KEY or EC PRIVATE KEY block"),
    ] {
        let err = load_err(&cert, bad_key);
        assert!(err.to_string().contains(check), "{bad_key:?}: {err}");
        assert_names(&err, bad_key);
    }
    assert!(matches!(load_err(&missing, &key), CaError::Read { .. }));
    // Valid PEM, invalid key DER.
    let bad_der = d.join("bad_der.key");
    std::fs::write(
        &bad_der,
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = load_err(&cert, &bad_der);
    assert!(matches!(err, CaError::KeyParse { .. }), "{err}");
    assert_names(&err, &bad_der);
}
