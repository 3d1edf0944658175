//! pep-ca's parsing of untrusted input: the CA certificate PEM, the CA key PEM (first byte 0 or 1
//! selects which one is fuzzed, the other is the test CA's) and a gateway's CSR DER (`sign_csr`,
//! byte 2), plus endpoint names and enrollment IDs (byte 3). Never a panic; a signed CSR yields a
//! certificate whose enrollment ID is its SHA-256.
#![no_main]

use std::str::FromStr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pep_ca::{CertProfile, EndpointName, EnrollmentId, FactoryCa};

const CA_CERT: &[u8] = include_bytes!("../../fixtures/ca/CA_cert.pem");
const CA_KEY: &[u8] = include_bytes!("../../fixtures/ca/CA_private.pem");

fn ca() -> &'static FactoryCa {
    static CA: OnceLock<FactoryCa> = OnceLock::new();
    CA.get_or_init(|| {
        FactoryCa::from_pem(CA_CERT, CA_KEY)
            .expect("test CA loads")
            .ca
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let _ = FactoryCa::from_pem(input, CA_KEY);
        }
        1 => {
            let _ = FactoryCa::from_pem(CA_CERT, input);
        }
        2 => {
            let expected = EndpointName::from_str("fuzz-gw-0001").expect("valid name");
            if let Ok(cert) = ca().sign_csr(input, &expected, &CertProfile::default()) {
                assert_eq!(cert.enrollment_id, EnrollmentId::of_certificate(&cert.der));
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(input) {
                if let Ok(name) = EndpointName::from_str(text) {
                    assert_eq!(name.as_str(), text);
                }
                if let Ok(id) = EnrollmentId::from_str(text) {
                    assert_eq!(id.as_str().len(), 97);
                }
            }
        }
    }
});
