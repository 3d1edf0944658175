//! Issuing throughput of the factory CA, against the floor of the crypto it needs.
//!
//! `cargo bench -p pep-ca -- --warm-up-time 1 --measurement-time 3`
// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pep_ca::{CertProfile, EndpointName, FactoryCa};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ca")
        .join(name);
    std::fs::read(path).unwrap()
}

/// A DER CSR for a fresh P-256 key with CN = `cn` (built with rcgen, as a device would).
fn csr(cn: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn bench(c: &mut Criterion) {
    let ca = FactoryCa::from_pem(&fixture("CA_cert.pem"), &fixture("CA_private.pem"))
        .unwrap()
        .ca;
    let name: EndpointName = "GW-BENCH-0001".parse().unwrap();
    let profile = CertProfile::default();

    c.bench_function("issue identity (keygen + sign + DER)", |b| {
        b.iter(|| {
            let id = ca.issue(black_box(&name), &profile).unwrap();
            black_box((id.private_key.to_der(), id.certificate.der))
        })
    });

    let request = csr(name.as_str());
    c.bench_function("sign CSR (parse + verify + sign)", |b| {
        b.iter(|| black_box(ca.sign_csr(black_box(&request), &name, &profile).unwrap()))
    });

    // The floor: the two P-256 operations of an identity with the backend pep-ca uses (ring).
    let rng = SystemRandom::new();
    let signer_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let signer =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, signer_pkcs8.as_ref(), &rng)
            .unwrap();
    let message = vec![0x5au8; 400]; // about the size of a device TBSCertificate
    c.bench_function("floor ring: P-256 keygen + 1 ECDSA sign", |b| {
        b.iter(|| {
            let key = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let sig = signer.sign(&rng, black_box(&message)).unwrap();
            black_box((key, sig))
        })
    });

    // For comparison only: the same with pure-Rust p256 (not used for issuing).
    use p256::ecdsa::signature::Signer as _;
    let p256_signer = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    c.bench_function("comparison p256: P-256 keygen + 1 ECDSA sign", |b| {
        b.iter(|| {
            let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let public = key.public_key();
            let sig: p256::ecdsa::Signature = p256_signer.sign(black_box(&message));
            black_box((public, sig))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
