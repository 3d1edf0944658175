//! Helpers shared by the integration tests: the fixture CA and the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use pep_ca::{FactoryCa, LoadedCa};

/// `fixtures/ca` of the workspace.
pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ca")
}

pub(crate) fn fixture_cert() -> PathBuf {
    fixture_dir().join("CA_cert.pem")
}

pub(crate) fn fixture_key() -> PathBuf {
    fixture_dir().join("CA_private.pem")
}

/// The fixture CA. Loaded from PEM in memory so the permissions of the checked-out key file do
/// not matter.
pub(crate) fn fixture_ca() -> LoadedCa {
    let cert = std::fs::read(fixture_cert()).unwrap();
    let key = std::fs::read(fixture_key()).unwrap();
    FactoryCa::from_pem(&cert, &key).unwrap()
}

/// Runs `openssl args...` in `dir`; panics with its stderr if it fails; returns stdout.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `openssl args...` in `dir` and returns (success, stdout + stderr).
pub(crate) fn openssl_status(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// PEM-encodes a DER certificate through openssl and writes it to `dir/name`.
pub(crate) fn write_cert_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let der_name = format!("{name}.der");
    std::fs::write(dir.join(&der_name), der).unwrap();
    openssl(
        dir,
        &["x509", "-inform", "DER", "-in", &der_name, "-out", name],
    );
    dir.join(name)
}

/// Asserts `cert` (PEM file in `dir`) verifies against the fixture CA as a TLS client
/// certificate, strictly.
pub(crate) fn assert_verifies(dir: &Path, cert: &str, ca: &Path) {
    let ca = ca.to_str().unwrap();
    let out = openssl(
        dir,
        &[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca,
            cert,
        ],
    );
    assert_eq!(out.trim(), format!("{cert}: OK"));
}
