//! Issuing with the CA key in a PKCS#11 token (SoftHSM2) against the key in memory.
//!
//! `cargo bench -p pep-ca --bench pkcs11 -- --warm-up-time 1 --measurement-time 3`
//!
//! SoftHSM2 finds its tokens through `SOFTHSM2_CONF`, read when the module is initialised; the
//! benchmark makes a fresh token in a temporary directory and runs itself again with that variable
//! (a process may not set its own environment here: no `unsafe`).
// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::Criterion;
use pep_ca::pkcs11::Pkcs11Config;
use pep_ca::setup::{CaRequest, new_token_ca};
use pep_ca::{CertProfile, EndpointName, FactoryCa};
use workspace_bins::softhsm::{MODULE, PIN, SoftToken};
use zeroize::Zeroizing;

const CHILD_DIR: &str = "PEP_PKCS11_BENCH_DIR";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ca")
        .join(name);
    std::fs::read(path).unwrap()
}

fn bench(c: &mut Criterion, dir: &Path) {
    let made = new_token_ca(
        Path::new(MODULE),
        "pep-bench",
        "ca-key",
        PIN,
        "Bench HSM CA",
        CaRequest::SelfSigned { days: 3650 },
    )
    .unwrap();
    let cert = dir.join("ca.pem");
    std::fs::write(&cert, made.output_pem).unwrap();
    let token_ca = FactoryCa::load_pkcs11(
        &cert,
        Pkcs11Config {
            module: MODULE.into(),
            uri: made.uri.parse().unwrap(),
            pin: Zeroizing::new(PIN.to_owned()),
            sessions: pep_ca::pkcs11::DEFAULT_SESSIONS,
        },
    )
    .unwrap()
    .ca;
    let memory_ca = FactoryCa::from_pem(&fixture("CA_cert.pem"), &fixture("CA_private.pem"))
        .unwrap()
        .ca;
    let name: EndpointName = "GW-BENCH-0001".parse().unwrap();
    let profile = CertProfile::default();
    c.bench_function("issue identity, key in memory (ring)", |b| {
        b.iter(|| black_box(memory_ca.issue(black_box(&name), &profile).unwrap()))
    });
    c.bench_function("issue identity, key in SoftHSM2 (PKCS#11)", |b| {
        b.iter(|| black_box(token_ca.issue(black_box(&name), &profile).unwrap()))
    });
    c.bench_function("CA signature only, SoftHSM2", |b| {
        b.iter(|| {
            black_box(
                token_ca
                    .sign(black_box(b"a 400-byte TBSCertificate stands here"))
                    .unwrap(),
            )
        })
    });
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, &PathBuf::from(dir));
        c.final_summary();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = SoftToken::new(dir.path(), "pep-bench");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env(CHILD_DIR, dir.path())
        .envs(token.env())
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(1));
}
