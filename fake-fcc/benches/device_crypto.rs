//! The simulated device's own P-256 work per provisioning, one benchmark per step: the by_device
//! key generation and CSR, one chain link's signature check, and the by_tool key-pair check. A
//! fleet runs thousands of simulated gateways on the cores of the server it measures, so this
//! cost is taken away from the server.
//!
//! `cargo bench -p fake-fcc --bench device_crypto -- --warm-up-time 1 --measurement-time 3`
// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fake_fcc::csr::{self, CsrParams};
use fake_fcc::x509;

/// The CSR a by_device bundle asks for (what pep-server sends: clientAuth, digitalSignature).
fn params() -> CsrParams {
    CsrParams {
        subject: b"C=UK,O=ARM,CN=GW-BENCH-0001".to_vec(),
        md: csr::MD_SHA256,
        key_usage: csr::ku::DIGITAL_SIGNATURE,
        ext_key_usage: 1 << 2,
    }
}

/// A CA and a device certificate it signed, and the device's key (rcgen, as in the tests).
fn chain() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let device_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "GW-BENCH-0001");
    let leaf = params.signed_by(&device_key, &ca, &ca_key).unwrap();
    (
        ca.der().to_vec(),
        leaf.der().to_vec(),
        device_key.serialize_der(),
    )
}

/// by_device: what `kcm_generate_keys_and_csr` does (key, its stored DER forms, the CSR).
fn by_device(params: &CsrParams) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let key = csr::DeviceKey::generate().unwrap();
    let key_der = key.private_key_der();
    let public_der = key.public_key_der();
    let csr = csr::build_csr(&key, params).unwrap();
    (key_der.to_vec(), public_der, csr)
}

fn bench(c: &mut Criterion) {
    let params = params();
    c.bench_function("by_device: keygen + CSR", |b| {
        b.iter(|| black_box(by_device(black_box(&params))))
    });

    let (ca_der, leaf_der, key_der) = chain();
    let ca = x509::parse_certificate(&ca_der).unwrap();
    let leaf = x509::parse_certificate(&leaf_der).unwrap();
    assert!(leaf.is_signed_by(&ca.public_key));
    c.bench_function("chain: verify one link", |b| {
        b.iter(|| black_box(black_box(&leaf).is_signed_by(black_box(&ca.public_key))))
    });

    let key = x509::parse_private_key(&key_der).unwrap();
    assert!(x509::key_pair_matches(&key, &leaf.public_key));
    c.bench_function("by_tool: key-pair check", |b| {
        b.iter(|| black_box(x509::key_pair_matches(black_box(&key), &leaf.public_key)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
