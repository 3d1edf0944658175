//! A test CA and one certificate it signed, made with rcgen at test time (issue #14 §1 tests).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA and one certificate it signed, as PEM files in `dir`.
pub(crate) struct Pki {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub ca_der: Vec<u8>,
}

pub(crate) fn make_pki(dir: &Path, name: &str, sans: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let write = |file: String, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_pem: write(format!("{name}-ca.pem"), ca.pem()),
        cert_pem: write(format!("{name}.pem"), cert.pem()),
        key_pem: write(format!("{name}.key"), key.serialize_pem()),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
        ca_der: ca.der().to_vec(),
    }
}
