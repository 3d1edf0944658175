//! Load a factory CA, issue a device identity (`by_tool` mode), sign a device's CSR (`by_device`
//! mode), and print the enrollment IDs: what a factory's own tool does with `pep-ca`.
//!
//! ```sh
//! cargo run -p pep-ca --example issue_identity                       # the repository's test CA
//! cargo run -p pep-ca --example issue_identity -- CA_cert.pem CA_private.pem GW-0042
//! ```
//!
//! `pep-ca/tests/examples.rs` runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use pep_ca::{CertProfile, EndpointName, FactoryCa};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("issue_identity: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // The test CA of the repository unless a CA is named (never use it in a factory).
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ca");
    let mut args = std::env::args_os().skip(1);
    let cert = args
        .next()
        .map_or(fixtures.join("CA_cert.pem"), PathBuf::from);
    let key = args
        .next()
        .map_or(fixtures.join("CA_private.pem"), PathBuf::from);
    let serial = args.next().map_or("GW-EXAMPLE-1".to_owned(), |s| {
        s.to_string_lossy().into_owned()
    });

    // Loading checks the CA (a P-256 CA certificate that matches its key, in its validity) and
    // returns what the operator should hear, e.g. a key file readable by others.
    let loaded = FactoryCa::load(&cert, &key)?;
    for warning in &loaded.warnings {
        println!("CA warning: {warning}");
    }
    let ca = loaded.ca;
    println!("CA: {}", ca.subject());

    // The serial number becomes the endpoint name and the certificate's CN; it is validated once.
    let endpoint = EndpointName::new(&serial)?;
    // Subject fields, lifetime (20 years by default) and what to do past the CA's end.
    let profile = CertProfile::default();

    // by_tool: a new P-256 key and its certificate. The key is zeroized when dropped.
    let identity = ca.issue(&endpoint, &profile)?;
    let certificate = &identity.certificate;
    println!(
        "issued {} (serial {}, valid until {}), key {} bytes PKCS#8",
        endpoint,
        certificate.serial_hex,
        certificate.not_after,
        identity.private_key.as_der().len()
    );
    // The enrollment ID is what the cloud's first-to-claim list holds for this device.
    println!("enrollment ID: {}", certificate.enrollment_id);

    // by_device: the gateway generated its key and sent a PKCS#10 request with CN = serial. Here
    // rcgen plays the gateway.
    let device_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, endpoint.as_str());
    let csr = params.serialize_request(&device_key)?;
    // The CA checks the request's signature and CN, then applies the same profile as `issue`.
    let signed = ca.sign_csr(csr.der(), &endpoint, &profile)?;
    println!(
        "signed CSR of {endpoint}: enrollment ID {}",
        signed.enrollment_id
    );
    for warning in identity.certificate.warnings.iter().chain(&signed.warnings) {
        println!("certificate warning: {warning}");
    }
    Ok(())
}
