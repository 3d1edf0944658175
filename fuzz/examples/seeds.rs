//! Writes the seed corpora under `fuzz/corpus/<target>/seed_*` from the golden vectors
//! (`fixtures/vectors`), the test CA and a real provisioning exchange with fake-fcc's `Device`
//! (a full `by_tool` bundle, a `by_device` CSR exchange). Deterministic apart from the fresh key
//! and certificate. Run from `fuzz/`: `cargo run --example seeds`.

use std::fs;
use std::path::Path;
use std::str::FromStr;

use der::{DecodePem, Encode};
use fake_fcc::{Device, DeviceOptions};
use fcc_proto::bundle::{Bundle, CertificateItem, ConfigParam, CsrRequest, KeyItem};
use fcc_proto::frame::{ResponseFrame, encode_request, encode_response};
use fcc_proto::{FccStatus, Response, WireStatus, names};
use pep_ca::{CertProfile, EndpointName, EnrollmentId, FactoryCa};

fn vector(name: &str) -> Vec<u8> {
    let text = fs::read_to_string(format!("../fixtures/vectors/{name}.hex")).expect("vector");
    hex::decode(text.trim()).expect("hex vector")
}

fn pem_der(path: &str) -> Vec<u8> {
    let pem = fs::read(path).expect("PEM fixture");
    x509_cert::Certificate::from_pem(&pem)
        .expect("certificate PEM")
        .to_der()
        .expect("DER")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(format!("seed_{name}")), bytes).expect("seed file");
}

fn with_chunk(chunk: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![chunk];
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

fn main() {
    let ca_cert = fs::read("../fixtures/ca/CA_cert.pem").expect("CA cert");
    let ca_key = fs::read("../fixtures/ca/CA_private.pem").expect("CA key");
    let ca = FactoryCa::from_pem(&ca_cert, &ca_key).expect("test CA").ca;
    let endpoint = EndpointName::from_str("GW-SEED-0001").expect("name");
    let profile = CertProfile::default();
    let identity = ca.issue(&endpoint, &profile).expect("issue");
    let bootstrap_ca = pem_der("../fixtures/bootstrap/bootstrap_ca.pem");
    let update_auth = pem_der("../fixtures/bootstrap/update_auth_cert.pem");

    // The by_tool bundle pep-server sends: key, certificates, every config param, verified.
    let full = Bundle {
        sid: Some("seed-sid-1".into()),
        keys: vec![KeyItem::private(
            names::BOOTSTRAP_DEVICE_PRIVATE_KEY,
            identity.private_key.to_der(),
        )],
        certificates: vec![
            CertificateItem {
                name: names::BOOTSTRAP_DEVICE_CERT.into(),
                der: identity.certificate.der.clone(),
                private_key_name: Some(names::BOOTSTRAP_DEVICE_PRIVATE_KEY.into()),
            },
            CertificateItem {
                name: names::BOOTSTRAP_SERVER_CA_CERT.into(),
                der: bootstrap_ca,
                private_key_name: None,
            },
            CertificateItem {
                name: names::UPDATE_AUTH_CERT.into(),
                der: update_auth,
                private_key_name: None,
            },
        ],
        config_params: vec![
            ConfigParam::uint(names::USE_BOOTSTRAP, 1),
            ConfigParam::text(names::ENDPOINT_NAME, "GW-SEED-0001"),
            ConfigParam::text(
                names::BOOTSTRAP_SERVER_URI,
                "coaps://bootstrap.example:5684",
            ),
            ConfigParam::text(names::MANUFACTURER, "pep"),
            ConfigParam::text(names::MODEL_NUMBER, "edge-1"),
            ConfigParam::text(names::DEVICE_TYPE, "gateway"),
            ConfigParam::text(names::HARDWARE_VERSION, "1.0"),
            ConfigParam::uint(names::MEMORY_TOTAL_KB, 1024),
            ConfigParam::text(names::SERIAL_NUMBER, "GW-SEED-0001"),
            ConfigParam::uint(names::CURRENT_TIME, 1_780_000_000),
            ConfigParam::text(names::TIMEZONE, "Europe/Berlin"),
            ConfigParam::text(names::UTC_OFFSET, "+01:00"),
            ConfigParam::bytes(names::VENDOR_ID, vec![0x11; 16]),
            ConfigParam::bytes(names::CLASS_ID, vec![0x22; 16]),
        ],
        entropy: Some([0x5a; 48]),
        rot: Some([0xa5; 16]),
        verify: Some(true),
        ..Bundle::default()
    };
    let full_body = full.encode().expect("full bundle encodes");

    // by_device message 1: the device generates a key and answers with a CSR.
    let csr_bundle = Bundle {
        sid: Some("seed-sid-2".into()),
        csr_requests: vec![CsrRequest {
            private_key_name: names::BOOTSTRAP_DEVICE_PRIVATE_KEY.into(),
            subject: "CN=fuzz-gw-0001".into(),
            md: 1,
            key_usage: Some(1),
            ext_key_usage: Some(4),
        }],
        verify: Some(false),
        keep_alive: Some(true),
        ..Bundle::default()
    };
    let csr_body = csr_bundle.encode().expect("CSR bundle encodes");

    let mut device = Device::new(DeviceOptions::default());
    let csr_outcome = device.handle(&csr_body);
    let csr_response = csr_outcome.response.clone().expect("CSR response");
    assert!(csr_response.is_success(), "{csr_response:?}");
    let csr_der = csr_response.csrs[0].der.clone();
    let csr_reply = encode_response(&csr_outcome.reply);
    let ResponseFrame::Body(csr_response_body) = &csr_outcome.reply else {
        panic!("CSR reply is a body");
    };

    let mut device = Device::new(DeviceOptions::default());
    let full_outcome = device.handle(&full_body);
    let full_response_body = match &full_outcome.reply {
        ResponseFrame::Body(b) => b.to_vec(),
        ResponseFrame::Status(s) => panic!("full bundle answered wire status {s}"),
    };
    let warned = Response {
        warnings: vec!["Warning: item is self-signed: mbed.BootstrapServerCACert".into()],
        ..Response::success(Some("seed-sid-3".into()))
    }
    .encode();
    let rejected =
        Response::error(None, FccStatus::InvalidCertificate, "Invalid certificate:").encode();

    // device_frame: [chunk size] + the bytes a tool sends.
    let ping_frame = vector("ping_request_frame");
    let full_frame = encode_request(&full_body);
    write("device_frame", "ping", &with_chunk(0xff, &[&ping_frame]));
    write(
        "device_frame",
        "full_bundle",
        &with_chunk(0xff, &[&full_frame]),
    );
    write(
        "device_frame",
        "garbage_then_ping_small_chunks",
        &with_chunk(3, &[b"xxmbmbed", &ping_frame]),
    );
    write(
        "device_frame",
        "two_frames",
        &with_chunk(64, &[&ping_frame, &encode_request(&csr_body)]),
    );
    write(
        "device_frame",
        "zero_length",
        &with_chunk(0xff, &[b"mbedprov\0\0\0\0", &ping_frame]),
    );

    // tool_frame: [chunk size] + the bytes a gateway answers.
    write(
        "tool_frame",
        "ping_response",
        &with_chunk(0xff, &[&vector("ping_response_frame")]),
    );
    write(
        "tool_frame",
        "status9",
        &with_chunk(0xff, &[&vector("status9_response_frame")]),
    );
    write(
        "tool_frame",
        "csr_response_small_chunks",
        &with_chunk(5, &[&csr_reply]),
    );
    write(
        "tool_frame",
        "status_then_body",
        &with_chunk(
            13,
            &[
                &encode_response(&ResponseFrame::Status(WireStatus::from_u32(3))),
                &vector("ping_response_frame"),
            ],
        ),
    );

    // response_cbor: response bodies.
    write("response_cbor", "ping", &vector("ping_response_body"));
    write(
        "response_cbor",
        "wrong_scheme",
        &vector("wrong_scheme_response_body"),
    );
    write("response_cbor", "csr", csr_response_body);
    write("response_cbor", "full_bundle", &full_response_body);
    write("response_cbor", "warning", &warned);
    write("response_cbor", "rejected", &rejected);

    // fake_fcc_bundle: request bodies.
    write("fake_fcc_bundle", "ping", &vector("ping_request_body"));
    write(
        "fake_fcc_bundle",
        "wrong_scheme",
        &vector("wrong_scheme_request_body"),
    );
    write("fake_fcc_bundle", "full_bundle", &full_body);
    write("fake_fcc_bundle", "csr_request", &csr_body);

    // ca_pem_csr: [selector] + input.
    write("ca_pem_csr", "ca_cert_pem", &with_chunk(0, &[&ca_cert]));
    write("ca_pem_csr", "ca_key_pem", &with_chunk(1, &[&ca_key]));
    write("ca_pem_csr", "device_csr", &with_chunk(2, &[&csr_der]));
    write(
        "ca_pem_csr",
        "endpoint_name",
        &with_chunk(3, &[b"GW-0001 (line 2), rack=4/5?"]),
    );
    let eid = EnrollmentId::of_certificate(&identity.certificate.der);
    write(
        "ca_pem_csr",
        "enrollment_id",
        &with_chunk(3, &[eid.as_str().as_bytes()]),
    );

    // identity_query: raw query strings of GET /v3/identity.
    for (name, q) in [
        ("minimal", "serialNumber=GW-0001&ip=127.0.0.1&port=7777"),
        (
            "full",
            "serialNumber=GW%2D0002&ip=10.1.2.3&port=41000&apiAddress=https%3A%2F%2Fapi.example&gatewayServicesAddress=gw.example&hardwareVersion=1.2&radioConfig=eu868&ledConfig=a+b&category=production&verificationKey=abc",
        ),
        ("duplicate", "serialNumber=a&serialNumber=b"),
        ("bad_escape", "serialNumber=GW%G1&port=%1"),
        (
            "mapped_v6",
            "serialNumber=GW-3&ip=%3A%3Affff%3A10.0.0.1&port=1",
        ),
        ("empty_values", "serialNumber=GW-4&ip=&port=&category=&&x"),
    ] {
        write("identity_query", name, q.as_bytes());
    }
    println!("seeds written under corpus/");
}
