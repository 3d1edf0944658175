//! The pure pipeline (`Device::handle`) against the reference (docs/protocol.md): §7.1, every row of §7.3, the
//! behaviour confirmed on the genuine FCC (§0.1), sessions, CSRs, the 512-byte overflow, and a
//! never-panics property.

use crate::common;

use common::*;
use fake_fcc::{Device, DeviceOptions, DiskStore, ItemKind, Outcome, StorageWrite};
use fcc_proto::frame::ResponseFrame;
use fcc_proto::status::{FccStatus, WireStatus};
use time::{Duration, OffsetDateTime};

fn device() -> Device {
    Device::new(DeviceOptions::default())
}

/// Runs one bundle on a fresh device; returns (status, InfoMessage, warnings).
fn run(body: &[u8]) -> (u32, String, Vec<String>) {
    let mut dev = device();
    let outcome = dev.handle(body);
    let response = outcome.response.expect("a response body");
    (
        response.return_status.as_u32(),
        response.info_message,
        response.warnings,
    )
}

#[test]
fn by_tool_bundle_with_time_items_succeeds_with_three_warnings() {
    let pki = Pki::new();
    let mut dev = device();
    let outcome = dev.handle(&Parts::by_tool(&pki, true).encode());
    assert!(outcome.wire_success());
    assert!(outcome.session_finished);
    let r = outcome.response.unwrap();
    assert_eq!(r.return_status, FccStatus::Success, "{}", r.info_message);
    assert_eq!(r.info_message, "The Factory process succeeded\n");
    assert_eq!(r.sid.as_deref(), Some(SID));
    assert_eq!(
        r.warning_info(),
        "Item not set:mbed.UpdateAuthCert\nItem not set:mbed.ClassId\nItem not set:mbed.VendorId\n"
    );
    let s = dev.storage();
    assert_eq!(s.config("mbed.UseBootstrap"), Some(&[1, 0, 0, 0][..]));
    assert_eq!(
        s.config("mbed.MemoryTotalKB"),
        Some(&512u32.to_le_bytes()[..])
    );
    assert_eq!(
        s.config_text("mbed.EndpointName").as_deref(),
        Some(ENDPOINT)
    );
    assert!(
        s.config("mbed.CurrentTime").is_none(),
        "CurrentTime sets the clock, it is not stored"
    );
    assert_eq!(
        s.certificates["mbed.BootstrapDeviceCert"],
        vec![pki.device_cert.clone()]
    );
    assert_eq!(
        s.private_keys["mbed.BootstrapDevicePrivateKey"],
        pki.device_key_der()
    );
}

#[test]
fn by_tool_bundle_without_time_items_gives_the_seven_warnings_in_order() {
    let pki = Pki::new();
    let (status, info, warnings) = run(&Parts::by_tool(&pki, false).encode());
    assert_eq!(status, 0, "{info}");
    assert_eq!(
        warnings,
        [
            "Item not set:mbed.CurrentTime",
            "Item not set:mbed.Timezone",
            "Item not set:mbed.UTCOffset",
            "Certificate validity cannot be checked:mbed.BootstrapDeviceCert",
            "Item not set:mbed.UpdateAuthCert",
            "Item not set:mbed.ClassId",
            "Item not set:mbed.VendorId",
        ]
    );
}

#[test]
fn complete_bundle_has_no_warnings_and_fcc_proto_bundle_works_too() {
    let pki = Pki::new();
    let (status, info, warnings) = run(&Parts::complete(&pki).encode());
    assert_eq!(
        (status, info.as_str()),
        (0, "The Factory process succeeded\n")
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    // The same content built with fcc-proto's typed Bundle.
    let bundle = typed_bundle(&pki);
    let (status, info, warnings) = run(&bundle.encode().unwrap());
    assert_eq!(status, 0, "{info}");
    assert!(warnings.is_empty(), "{warnings:?}");
}

fn typed_bundle(pki: &Pki) -> fcc_proto::Bundle {
    use fcc_proto::{Bundle, CertificateItem, ConfigParam, KeyItem};
    Bundle {
        sid: Some("s-1".into()),
        keys: vec![KeyItem::private(
            "mbed.BootstrapDevicePrivateKey",
            zeroize::Zeroizing::new(pki.device_key_der()),
        )],
        certificates: vec![
            CertificateItem {
                name: "mbed.BootstrapDeviceCert".into(),
                der: pki.device_cert.clone(),
                private_key_name: None,
            },
            CertificateItem {
                name: "mbed.BootstrapServerCACert".into(),
                der: pki.bootstrap_ca.clone(),
                private_key_name: None,
            },
            CertificateItem {
                name: "mbed.UpdateAuthCert".into(),
                der: pki.ca.der(),
                private_key_name: None,
            },
        ],
        config_params: vec![
            ConfigParam::uint("mbed.UseBootstrap", 1),
            ConfigParam::uint("mbed.FirstToClaim", 1),
            ConfigParam::text(
                "mbed.BootstrapServerURI",
                "coaps://bootstrap.example.com:5684",
            ),
            ConfigParam::text("mbed.EndpointName", ENDPOINT),
            ConfigParam::text("mbed.SerialNumber", ENDPOINT),
            ConfigParam::text("mbed.Manufacturer", "Acme"),
            ConfigParam::text("mbed.ModelNumber", "M-1"),
            ConfigParam::text("mbed.DeviceType", "gw"),
            ConfigParam::text("mbed.HardwareVersion", "1.0"),
            ConfigParam::uint("mbed.MemoryTotalKB", 1024),
            ConfigParam::uint("mbed.CurrentTime", now()),
            ConfigParam::text("mbed.Timezone", "UTC"),
            ConfigParam::text("mbed.UTCOffset", "+00:00"),
            ConfigParam::bytes("mbed.VendorId", vec![1; 16]),
            ConfigParam::bytes("mbed.ClassId", vec![2; 16]),
        ],
        verify: Some(true),
        ..Bundle::default()
    }
}

#[test]
fn golden_vectors_match_byte_for_byte() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(format!(
            "{}/../fixtures/vectors/{name}.hex",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        hex::decode(text.split_whitespace().collect::<String>()).unwrap()
    };
    let mut dev = device();
    let ping = dev.handle(&read("ping_request_body"));
    assert_eq!(
        ping.reply,
        ResponseFrame::Body(read("ping_response_body").into())
    );
    assert!(!ping.session_finished);
    assert_eq!(
        fcc_proto::frame::encode_response(&ping.reply),
        read("ping_response_frame")
    );

    let mut dev = device();
    let wrong = dev.handle(&read("wrong_scheme_request_body"));
    assert_eq!(
        wrong.reply,
        ResponseFrame::Body(read("wrong_scheme_response_body").into())
    );
    assert!(wrong.session_finished);
    assert_eq!(
        fcc_proto::frame::encode_response(&ResponseFrame::Status(WireStatus::FailedToProcessData)),
        read("status9_response_frame")
    );
}

/// One row of the failure table: a bundle and the exact ReturnStatus and InfoMessage.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    status: u32,
    info: String,
}

fn case(name: &'static str, parts: &Parts, status: u32, info: &str) -> Case {
    Case {
        name,
        body: parts.encode(),
        status,
        info: info.to_owned(),
    }
}

fn raw(name: &'static str, body: Vec<u8>, status: u32, info: &str) -> Case {
    Case {
        name,
        body,
        status,
        info: info.to_owned(),
    }
}

const OK: &str = "The Factory process succeeded\n";
const GENERAL: &str = "General error:";
const DEV_CERT: &str = "mbed.BootstrapDeviceCert";
const DEV_KEY: &str = "mbed.BootstrapDevicePrivateKey";

fn with(pki: &Pki, f: impl FnOnce(&mut Parts)) -> Parts {
    let mut p = Parts::by_tool(pki, true);
    f(&mut p);
    p
}

fn with_device_cert(pki: &Pki, der: Vec<u8>) -> Parts {
    with(pki, |p| {
        p.certs.as_mut().unwrap()[0] = cert_item(DEV_CERT, &der);
    })
}

fn cases(pki: &Pki) -> Vec<Case> {
    let now = OffsetDateTime::now_utc();
    let key = &pki.device_key;
    let other_ca = Ca::new("unrelated CA");
    let expired = device_cert(
        &pki.ca,
        key,
        ENDPOINT,
        Eku::ClientAuth,
        now - Duration::days(3650),
        now - Duration::days(1),
    );
    let pem_key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    let pem_cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .unwrap()
        .serialize_der();
    let other_key = new_key();
    let csr_request = |n: usize| {
        V::A(
            (0..n)
                .map(|i| {
                    m(&[
                        ("PrKN", t(&format!("k{i}"))),
                        ("Subj", t("CN=x")),
                        ("MD", V::U(1)),
                    ])
                })
                .collect(),
        )
    };
    let fields_with = |extra: (&str, V)| {
        with(pki, |p| {
            p.keys = Some(vec![m(&[
                ("Name", t(DEV_KEY)),
                ("Type", t("ECCPrivate")),
                ("Format", t("der")),
                ("Data", b(&pki.device_key_der())),
                extra,
            ])])
        })
    };

    vec![
        // ---- §7.3 ------------------------------------------------------------------------
        case(
            "no UseBootstrap",
            &with(pki, |p| {
                p.remove("mbed.UseBootstrap");
            }),
            25,
            "Item does not exist:mbed.UseBootstrap",
        ),
        case(
            "UseBootstrap = 2",
            &with(pki, |p| {
                p.set("mbed.UseBootstrap", V::U(2));
            }),
            30,
            "Bootstrap mode value incorrect:mbed.UseBootstrap",
        ),
        case(
            "empty EndpointName",
            &with(pki, |p| {
                p.set("mbed.EndpointName", t(""));
            }),
            26,
            "Item empty:mbed.EndpointName",
        ),
        case(
            "no Manufacturer",
            &with(pki, |p| {
                p.remove("mbed.Manufacturer");
            }),
            25,
            "Item does not exist:mbed.Manufacturer",
        ),
        case(
            "URI without aid, no FTC",
            &with(pki, |p| {
                p.set("mbed.BootstrapServerURI", t("coaps://b.example.com:5684"));
            }),
            28,
            "URI format incorrect:mbed.BootstrapServerURI",
        ),
        case(
            "CN differs from endpoint",
            &with_device_cert(pki, device_cert_20y(&pki.ca, key, "someone-else")),
            14,
            "Certificate CN attribute invalid:mbed.BootstrapDeviceCert",
        ),
        case(
            "key and certificate mismatch",
            &with(pki, |p| {
                p.keys = Some(vec![key_item(DEV_KEY, &other_key.serialize_der())]);
            }),
            34,
            "Certificate public key validation failed:mbed.BootstrapDeviceCert",
        ),
        case(
            "EKU without clientAuth",
            &with_device_cert(
                pki,
                device_cert(
                    &pki.ca,
                    key,
                    ENDPOINT,
                    Eku::ServerAuthOnly,
                    now - Duration::days(1),
                    now + Duration::days(7400),
                ),
            ),
            10,
            "Certificate invalid:mbed.BootstrapDeviceCert",
        ),
        case(
            "expired device certificate, time set",
            &with_device_cert(pki, expired.clone()),
            13,
            "Certificate expired:mbed.BootstrapDeviceCert",
        ),
        case(
            "ACL in a Keys item",
            &fields_with(("ACL", t("x"))),
            37,
            GENERAL,
        ),
        case(
            "ACL in a Certificates item",
            &with(pki, |p| {
                p.certs.as_mut().unwrap()[0] = m(&[
                    ("Name", t(DEV_CERT)),
                    ("Data", b(&pki.device_cert)),
                    ("ACL", t("x")),
                ]);
            }),
            37,
            GENERAL,
        ),
        case(
            "ACL in a ConfigParams item",
            &with(pki, |p| {
                p.top(
                    "ConfigParams",
                    V::A(vec![m(&[
                        ("Name", t("x")),
                        ("Data", t("y")),
                        ("ACL", t("z")),
                    ])]),
                );
            }),
            37,
            GENERAL,
        ),
        case(
            "Format pem",
            &fields_with(("Format", t("pem"))),
            37,
            GENERAL,
        ),
        case(
            "Verify: true",
            &with(pki, |p| {
                p.top("Verify", V::Bool(true));
            }),
            20,
            "General error:Verify",
        ),
        case(
            "unknown top-level key",
            &with(pki, |p| {
                p.top("Bogus", V::U(1));
            }),
            23,
            GENERAL,
        ),
        // ---- confirmed on the genuine FCC (§0.1) -------------------------------------------
        case(
            "UseBootstrap CBOR true",
            &with(pki, |p| {
                p.set("mbed.UseBootstrap", V::Bool(true));
            }),
            20,
            "General error:mbed.UseBootstrap",
        ),
        case(
            "UseBootstrap text \"true\"",
            &with(pki, |p| {
                p.set("mbed.UseBootstrap", t("true"));
            }),
            30,
            "Bootstrap mode value incorrect:mbed.UseBootstrap",
        ),
        case(
            "FirstToClaim text \"true\"",
            &with(pki, |p| {
                p.set("mbed.FirstToClaim", t("true"));
                p.set("mbed.BootstrapServerURI", t("coaps://b.example.com:5684"));
            }),
            28,
            "URI format incorrect:mbed.BootstrapServerURI",
        ),
        case(
            "first-to-claim bundle",
            &with(pki, |p| {
                p.set("mbed.FirstToClaim", V::U(1));
                p.set("mbed.BootstrapServerURI", t("coaps://b.example.com:5684"));
            }),
            0,
            OK,
        ),
        case(
            "first-to-claim with aid",
            &with(pki, |p| {
                p.set("mbed.FirstToClaim", V::U(1));
            }),
            29,
            "first to claim not allowed:mbed.BootstrapServerURI",
        ),
        case(
            "numeric params as 4 LE bytes",
            &with(pki, |p| {
                p.set("mbed.UseBootstrap", b(&[1, 0, 0, 0]));
                p.set("mbed.MemoryTotalKB", b(&[0, 2, 0, 0]));
            }),
            0,
            OK,
        ),
        case(
            "Format in ConfigParams",
            &with(pki, |p| {
                p.top(
                    "ConfigParams",
                    V::A(vec![m(&[("Name", t("x")), ("Format", t("der"))])]),
                );
            }),
            37,
            GENERAL,
        ),
        case(
            "Format DER upper case",
            &fields_with(("Format", t("DER"))),
            37,
            GENERAL,
        ),
        case(
            "Format absent",
            &with(pki, |p| {
                p.keys = Some(vec![m(&[
                    ("Name", t(DEV_KEY)),
                    ("Type", t("ECCPrivate")),
                    ("Data", b(&pki.device_key_der())),
                ])]);
            }),
            0,
            OK,
        ),
        case(
            "12 top-level pairs",
            &with(pki, |p| {
                p.top("Verify", V::U(1))
                    .top("Disable", V::U(0))
                    .top("KpAlvSess", V::U(0))
                    .top("Entropy", b(&[7; 48]));
                p.top("ROT", b(&[9; 16]))
                    .top("CertificateChains", V::A(vec![]))
                    .top("Disable", V::U(0));
            }),
            0,
            OK,
        ),
        case(
            "13 top-level pairs",
            &with(pki, |p| {
                p.top("Verify", V::U(1))
                    .top("Disable", V::U(0))
                    .top("KpAlvSess", V::U(0))
                    .top("Entropy", b(&[7; 48]));
                p.top("ROT", b(&[9; 16]))
                    .top("CertificateChains", V::A(vec![]))
                    .top("Verify", V::U(1))
                    .top("Disable", V::U(0));
            }),
            20,
            GENERAL,
        ),
        raw(
            "indefinite top map",
            enc(&V::MI(Parts::by_tool(pki, true).pairs())),
            20,
            GENERAL,
        ),
        case(
            "xbed.* names",
            &with(pki, |p| {
                for (n, _) in p.config.iter_mut() {
                    *n = n.replacen("mbed.", "xbed.", 1)
                }
            }),
            25,
            "Item does not exist:mbed.UseBootstrap",
        ),
        case(
            "item name with /",
            &with(pki, |p| {
                p.set("mbed/Evil", t("x"));
            }),
            16,
            "File name invalid:mbed/Evil",
        ),
        case(
            "item name of 101 characters",
            &with(pki, |p| {
                p.set(&"n".repeat(101), t("x"));
            }),
            16,
            &format!("File name too long:{}", "n".repeat(101)),
        ),
        case(
            "no EKU extension",
            &with_device_cert(
                pki,
                device_cert(
                    &pki.ca,
                    key,
                    ENDPOINT,
                    Eku::None,
                    now - Duration::days(1),
                    now + Duration::days(7400),
                ),
            ),
            0,
            OK,
        ),
        case(
            "anyExtendedKeyUsage",
            &with_device_cert(
                pki,
                device_cert(
                    &pki.ca,
                    key,
                    ENDPOINT,
                    Eku::Any,
                    now - Duration::days(1),
                    now + Duration::days(7400),
                ),
            ),
            0,
            OK,
        ),
        case(
            "device cert from an unrelated CA in Certificates",
            &with_device_cert(pki, device_cert_20y(&other_ca, key, ENDPOINT)),
            0,
            OK,
        ),
        case(
            "chain [device, unrelated CA]",
            &with(pki, |p| {
                p.certs = Some(vec![cert_item(
                    "mbed.BootstrapServerCACert",
                    &pki.bootstrap_ca,
                )]);
                p.chains = Some(vec![m(&[
                    ("Name", t(DEV_CERT)),
                    ("Format", t("der")),
                    (
                        "DataArray",
                        V::A(vec![b(&pki.device_cert), b(&other_ca.der())]),
                    ),
                ])]);
            }),
            18,
            "Chain validation error:mbed.BootstrapDeviceCert",
        ),
        case(
            "chain [device, its CA]",
            &with(pki, |p| {
                p.certs = Some(vec![cert_item(
                    "mbed.BootstrapServerCACert",
                    &pki.bootstrap_ca,
                )]);
                p.chains = Some(vec![m(&[
                    ("Name", t(DEV_CERT)),
                    ("Format", t("der")),
                    (
                        "DataArray",
                        V::A(vec![b(&pki.device_cert), b(&pki.ca.der())]),
                    ),
                ])]);
            }),
            0,
            OK,
        ),
        case(
            "same name in Certificates and CertificateChains",
            &with(pki, |p| {
                p.chains = Some(vec![m(&[
                    ("Name", t(DEV_CERT)),
                    ("DataArray", V::A(vec![b(&pki.device_cert)])),
                ])]);
            }),
            15,
            "Data already exists:mbed.BootstrapDeviceCert",
        ),
        case(
            "a certificate stored twice",
            &with(pki, |p| {
                p.certs
                    .as_mut()
                    .unwrap()
                    .push(cert_item(DEV_CERT, &pki.device_cert));
            }),
            17,
            "Data already exists:mbed.BootstrapDeviceCert",
        ),
        case(
            "a key stored twice",
            &with(pki, |p| {
                p.keys
                    .as_mut()
                    .unwrap()
                    .push(key_item(DEV_KEY, &pki.device_key_der()));
            }),
            17,
            "Data already exists:mbed.BootstrapDevicePrivateKey",
        ),
        case(
            "P-384 key",
            &with(pki, |p| {
                p.keys = Some(vec![key_item(DEV_KEY, &p384)]);
            }),
            18,
            "Public key format invalid:mbed.BootstrapDevicePrivateKey",
        ),
        case(
            "PEM in a der key",
            &with(pki, |p| {
                p.keys = Some(vec![key_item(DEV_KEY, pem_key.as_bytes())]);
            }),
            15,
            "General error:mbed.BootstrapDevicePrivateKey",
        ),
        case(
            "PEM in a certificate",
            &with_device_cert(pki, pem_cert.as_bytes().to_vec()),
            18,
            "Certificate parse failed:mbed.BootstrapDeviceCert",
        ),
        case(
            "empty key data",
            &with(pki, |p| {
                p.keys = Some(vec![key_item(DEV_KEY, &[])]);
            }),
            16,
            "Item data empty:mbed.BootstrapDevicePrivateKey",
        ),
        case(
            "six CSR requests",
            &with(pki, |p| {
                p.top("Verify", V::U(0)).top("CsrReqs", csr_request(6));
            }),
            36,
            "Too many CSR requests. Maximum CSR requests supported is CSR_MAX_NUMBER_OF_CSRS",
        ),
        case(
            "CSR without SID",
            &with(pki, |p| {
                p.sid = None;
                p.top("Verify", V::U(0)).top("CsrReqs", csr_request(1));
            }),
            20,
            GENERAL,
        ),
        case(
            "CSR without explicit Verify 0",
            &with(pki, |p| {
                p.top("CsrReqs", csr_request(1));
            }),
            20,
            GENERAL,
        ),
        case(
            "CurrentTime in milliseconds",
            &with(pki, |p| {
                p.set("mbed.CurrentTime", V::U(common::now() * 1000));
            }),
            13,
            "Certificate expired:mbed.BootstrapDeviceCert",
        ),
        case(
            "CurrentTime as text",
            &with(pki, |p| {
                p.set("mbed.CurrentTime", t("1735689600"));
            }),
            1,
            GENERAL,
        ),
        case(
            "CurrentTime 0 means not set",
            &with(pki, |p| {
                p.set("mbed.CurrentTime", V::U(0));
            }),
            0,
            OK,
        ),
        case(
            "CurrentTime before 2017",
            &with(pki, |p| {
                p.set("mbed.CurrentTime", V::U(1_000_000));
            }),
            1,
            GENERAL,
        ),
        case(
            "expired certificate without CurrentTime",
            &{
                let mut p = Parts::by_tool(pki, false);
                p.certs.as_mut().unwrap()[0] = cert_item(DEV_CERT, &expired);
                p
            },
            0,
            OK,
        ),
        case(
            "certificate with a P-384 key",
            &with_device_cert(
                pki,
                device_cert_20y(
                    &pki.ca,
                    &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
                    ENDPOINT,
                ),
            ),
            18,
            "Curve unsupported:mbed.BootstrapDeviceCert",
        ),
        case(
            "certificate signed with ECDSA-SHA384",
            &with_device_cert(
                pki,
                device_cert_20y(
                    &Ca::with_alg("p384 CA", &rcgen::PKCS_ECDSA_P384_SHA384),
                    key,
                    ENDPOINT,
                ),
            ),
            18,
            "General error:mbed.BootstrapDeviceCert",
        ),
        case(
            "ECCPublic P-256 key",
            &with(pki, |p| {
                p.keys.as_mut().unwrap().push(m(&[
                    ("Name", t("pub")),
                    ("Type", t("ECCPublic")),
                    ("Format", t("der")),
                    ("Data", b(&pki.device_key.public_key_der())),
                ]));
            }),
            0,
            OK,
        ),
        case(
            "ECCPublic P-384 key",
            &with(pki, |p| {
                p.keys.as_mut().unwrap().push(m(&[
                    ("Name", t("pub")),
                    ("Type", t("ECCPublic")),
                    (
                        "Data",
                        b(
                            &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
                                .unwrap()
                                .public_key_der(),
                        ),
                    ),
                ]));
            }),
            18,
            "Curve unsupported:pub",
        ),
        case(
            "ECCPublic with private key bytes",
            &with(pki, |p| {
                p.keys.as_mut().unwrap().push(m(&[
                    ("Name", t("pub")),
                    ("Type", t("ECCPublic")),
                    ("Data", b(&pki.device_key_der())),
                ]));
            }),
            18,
            "Public key parse failed:pub",
        ),
        // ---- structure and flags ------------------------------------------------------------
        raw("not CBOR", vec![0xff, 0x00], 20, GENERAL),
        raw(
            "trailing bytes",
            [enc(&m(&[("SchemeVersion", t("0.0.1"))])), vec![0]].concat(),
            20,
            GENERAL,
        ),
        raw("top level not a map", enc(&V::A(vec![])), 20, GENERAL),
        raw(
            "wrong scheme",
            enc(&m(&[("SchemeVersion", t("0.0.2"))])),
            24,
            GENERAL,
        ),
        raw(
            "scheme as bytes",
            enc(&m(&[
                ("SchemeVersion", b(b"0.0.1")),
                ("Verify", V::U(0)),
                ("KpAlvSess", V::U(1)),
            ])),
            0,
            OK,
        ),
        raw(
            "final message without UseBootstrap, Verify 0",
            enc(&m(&[("SchemeVersion", t("0.0.1")), ("Verify", V::U(0))])),
            25,
            "Item does not exist:mbed.UseBootstrap",
        ),
        raw("no scheme", enc(&m(&[("Verify", V::U(0))])), 24, GENERAL),
        raw(
            "key prefix quirk: Cert means Certificates",
            enc(&m(&[
                ("SchemeVersion", t("0.0.1")),
                ("Verify", V::U(0)),
                ("KpAlvSess", V::U(1)),
                ("Cert", V::A(vec![])),
            ])),
            0,
            OK,
        ),
        case(
            "KpAlvSess 2",
            &with(pki, |p| {
                p.top("KpAlvSess", V::U(2));
            }),
            35,
            "General error:KpAlvSess",
        ),
        case(
            "Disable with KpAlvSess",
            &with(pki, |p| {
                p.top("Disable", V::U(1)).top("KpAlvSess", V::U(1));
            }),
            35,
            GENERAL,
        ),
        case(
            "SID not text",
            &with(pki, |p| {
                p.sid = Some(V::U(5));
            }),
            20,
            "General error:SID",
        ),
        case(
            "Entropy of the wrong size",
            &with(pki, |p| {
                p.top("Entropy", b(&[1; 47]));
            }),
            3,
            "General error:entropy",
        ),
        case(
            "Entropy not bytes",
            &with(pki, |p| {
                p.top("Entropy", t("x"));
            }),
            20,
            "General error:entropy",
        ),
        case(
            "ROT twice",
            &with(pki, |p| {
                p.top("ROT", b(&[1; 16]));
            }),
            0,
            OK,
        ),
        case(
            "config Data of another type",
            &with(pki, |p| {
                p.set("mbed.Manufacturer", V::A(vec![]));
            }),
            20,
            "General error:mbed.Manufacturer",
        ),
        case(
            "config Data with tag 2",
            &with(pki, |p| {
                p.set("mbed.VendorId", V::Tag(2, Box::new(b(&[3; 16]))));
            }),
            0,
            "The Factory process succeeded\n",
        ),
        case(
            "config Data with another tag",
            &with(pki, |p| {
                p.set("mbed.VendorId", V::Tag(24, Box::new(b(&[3; 16]))));
            }),
            20,
            "General error:mbed.VendorId",
        ),
        case(
            "ClassId of 15 bytes",
            &with(pki, |p| {
                p.set("mbed.ClassId", b(&[3; 15]));
            }),
            27,
            "Item size is wrong:mbed.ClassId",
        ),
        case(
            "UTCOffset malformed",
            &with(pki, |p| {
                p.set("mbed.UTCOffset", t("UTC+1"));
            }),
            33,
            "UTC offset incorrect:mbed.UTCOffset",
        ),
        case(
            "URI not coap",
            &with(pki, |p| {
                p.set("mbed.BootstrapServerURI", t("https://x?aid=1"));
            }),
            28,
            "URI format incorrect:mbed.BootstrapServerURI",
        ),
        case(
            "no bootstrap CA",
            &with(pki, |p| {
                p.certs.as_mut().unwrap().pop();
            }),
            25,
            "Item does not exist:mbed.BootstrapServerCACert",
        ),
        case(
            "no device key",
            &with(pki, |p| {
                p.keys = None;
            }),
            25,
            "Item does not exist:mbed.BootstrapDevicePrivateKey",
        ),
        case(
            "Keys item without Type",
            &with(pki, |p| {
                p.keys = Some(vec![m(&[
                    ("Name", t(DEV_KEY)),
                    ("Data", b(&pki.device_key_der())),
                ])]);
            }),
            20,
            GENERAL,
        ),
        case(
            "RSAPrivate key type",
            &with(pki, |p| {
                p.keys = Some(vec![m(&[
                    ("Name", t(DEV_KEY)),
                    ("Type", t("RSAPrivate")),
                    ("Data", b(&pki.device_key_der())),
                ])]);
            }),
            37,
            GENERAL,
        ),
        case(
            "certificate Data not bytes",
            &with(pki, |p| {
                p.certs.as_mut().unwrap()[0] = m(&[("Name", t(DEV_CERT)), ("Data", t("x"))]);
            }),
            20,
            "General error:mbed.BootstrapDeviceCert",
        ),
        case(
            "PrKN of a missing key",
            &with(pki, |p| {
                p.certs.as_mut().unwrap()[0] = m(&[
                    ("Name", t(DEV_CERT)),
                    ("PrKN", t("nokey")),
                    ("Data", b(&pki.device_cert)),
                ]);
            }),
            34,
            "Item does not exist:nokey",
        ),
        case(
            "PrKN of the matching key",
            &with(pki, |p| {
                p.certs.as_mut().unwrap()[0] = m(&[
                    ("Name", t(DEV_CERT)),
                    ("PrKN", t(DEV_KEY)),
                    ("Data", b(&pki.device_cert)),
                ]);
            }),
            0,
            OK,
        ),
        case(
            "LwM2M mode, BS items present",
            &with(pki, |p| {
                p.set("mbed.UseBootstrap", V::U(0));
            }),
            25,
            "Item does not exist:mbed.LwM2MServerCACert",
        ),
    ]
}

#[test]
fn failure_table_gives_the_exact_status_and_info_message() {
    let pki = Pki::new();
    let mut failures = Vec::new();
    for c in cases(&pki) {
        let mut dev = device();
        let outcome = dev.handle(&c.body);
        match outcome.response {
            Some(r) if r.return_status.as_u32() == c.status && r.info_message == c.info => {}
            Some(r) => failures.push(format!(
                "{}: got {} {:?}, expected {} {:?} (warnings {:?})",
                c.name,
                r.return_status.as_u32(),
                r.info_message,
                c.status,
                c.info,
                r.warnings
            )),
            None => failures.push(format!("{}: no response body (wire status 9)", c.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn strict_mode_matches_keys_exactly() {
    let mut strict = Device::new(DeviceOptions {
        strict: true,
        ..DeviceOptions::default()
    });
    let body = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        ("Cert", V::A(vec![])),
    ]));
    assert_eq!(strict.handle(&body).status, FccStatus::BundleInvalidGroup);
    assert_eq!(device().handle(&body).status, FccStatus::Success);
}

#[test]
fn items_stored_before_an_error_stay_stored() {
    let pki = Pki::new();
    let mut p = Parts::by_tool(&pki, true);
    p.config.insert(3, ("bad/name".into(), t("x")));
    let mut dev = device();
    let outcome = dev.handle(&p.encode());
    assert_eq!(outcome.status, FccStatus::KcmStorageError);
    let s = dev.storage();
    assert!(s.contains(ItemKind::PrivateKey, DEV_KEY));
    assert!(s.contains(ItemKind::Certificate, DEV_CERT));
    assert!(s.contains(ItemKind::ConfigParam, "mbed.UseBootstrap"));
    assert!(
        !s.contains(ItemKind::ConfigParam, "mbed.Manufacturer"),
        "nothing after the error is stored"
    );
}

#[test]
fn sessions_follow_the_keep_alive_flag() {
    let pki = Pki::new();
    let mut dev = device();
    assert!(dev.session_finished(), "initially finished");
    let first = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
    ]));
    let outcome = dev.handle(&first);
    assert!(outcome.storage_erased);
    assert!(!outcome.session_finished);

    // A final message failing while parsing leaves the session open (the genuine quirk).
    let mut bad = Parts::by_tool(&pki, true);
    bad.top("Bogus", V::U(1));
    let outcome = dev.handle(&bad.encode());
    assert_eq!(outcome.status, FccStatus::BundleInvalidGroup);
    assert!(!outcome.storage_erased);
    assert!(
        !outcome.session_finished,
        "the error came before the session flag was set"
    );

    // A final message failing in verification finishes it (the flag is set after the group loop).
    let mut dev2 = device();
    dev2.handle(&first);
    let mut fails_verify = Parts::by_tool(&pki, true);
    fails_verify.remove("mbed.Manufacturer");
    let outcome = dev2.handle(&fails_verify.encode());
    assert_eq!(outcome.status, FccStatus::ItemNotExist);
    assert!(outcome.session_finished);

    // Re-storing an item in a later message of the same session: 17.
    let mut dev3 = device();
    let mut part1 = Parts::by_tool(&pki, true);
    part1.top("Verify", V::U(0)).top("KpAlvSess", V::U(1));
    assert_eq!(dev3.handle(&part1.encode()).status, FccStatus::Success);
    let again = dev3.handle(&Parts::by_tool(&pki, true).encode());
    assert_eq!(again.status, FccStatus::KcmFileExistError);
    assert_eq!(
        again.response.unwrap().info_message,
        "Data already exists:mbed.BootstrapDevicePrivateKey"
    );
}

#[test]
fn split_bundle_over_two_messages_succeeds() {
    let pki = Pki::new();
    let full = Parts::complete(&pki);
    let mut first = full.clone();
    first.certs = None;
    first.config.truncate(4);
    first.top("Verify", V::U(0)).top("KpAlvSess", V::U(1));
    let mut second = full.clone();
    second.keys = None;
    second.config.drain(..4);
    let mut dev = device();
    assert_eq!(dev.handle(&first.encode()).status, FccStatus::Success);
    let last = dev.handle(&second.encode());
    assert_eq!(last.status, FccStatus::Success, "{:?}", last.response);
    assert!(last.response.unwrap().warnings.is_empty());
    assert!(last.session_finished);
}

#[test]
fn response_overflow_answers_wire_status_9_and_keeps_the_items() {
    let pki = Pki::new();
    let mut p = Parts::by_tool(&pki, false);
    p.sid = Some(t(&"s".repeat(200)));
    let mut dev = device();
    let outcome = dev.handle(&p.encode());
    assert_eq!(
        outcome.reply,
        ResponseFrame::Status(WireStatus::FailedToProcessData)
    );
    assert_eq!(fcc_proto::frame::encode_response(&outcome.reply).len(), 12);
    assert!(outcome.response.is_none());
    assert_eq!(outcome.status, FccStatus::BundleResponseError);
    assert!(outcome.session_finished);
    assert!(dev.storage().contains(ItemKind::Certificate, DEV_CERT));
    assert!(dev.storage().contains(ItemKind::PrivateKey, DEV_KEY));

    // The same with a short SID fits.
    let mut fits = Parts::by_tool(&pki, false);
    fits.sid = Some(t("s"));
    assert!(device().handle(&fits.encode()).wire_success());
}

#[test]
fn indefinite_csr_array_answers_wire_status_9() {
    let body = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("SID", t("s")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        ("CsrReqs", V::AI(vec![])),
    ]));
    let outcome = device().handle(&body);
    assert_eq!(
        outcome.reply,
        ResponseFrame::Status(WireStatus::FailedToProcessData)
    );
}

#[test]
fn csr_flow_on_the_pipeline() {
    let pki = Pki::new();
    let mut dev = device();
    let request = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("SID", t("s-42")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        (
            "CsrReqs",
            V::A(vec![m(&[
                ("PrKN", t(DEV_KEY)),
                ("Subj", t(&format!("CN={ENDPOINT}"))),
                ("MD", V::U(1)),
                ("Ext", m(&[("KU", V::U(1)), ("EKU", V::U(4))])),
            ])]),
        ),
    ]));
    let outcome = dev.handle(&request);
    let response = outcome.response.unwrap();
    assert_eq!(
        response.return_status,
        FccStatus::Success,
        "{}",
        response.info_message
    );
    assert_eq!(response.csrs.len(), 1);
    assert_eq!(response.csrs[0].private_key_name, DEV_KEY);
    let csr = &response.csrs[0].der;
    let public_key = check_csr(csr, ENDPOINT);
    assert!(dev.storage().private_keys.contains_key(DEV_KEY));

    // Reusing the name in another CSR request: 17 without a name.
    let again = dev.handle(&request);
    assert_eq!(again.status, FccStatus::KcmFileExistError);
    assert_eq!(
        again.response.unwrap().info_message,
        "Desired generated key name already exists:"
    );

    // A certificate for another key with PrKN: 34, session stays open.
    let mut wrong = Parts::complete(&pki);
    wrong.keys = None;
    wrong.certs.as_mut().unwrap()[0] = m(&[
        ("Name", t(DEV_CERT)),
        ("PrKN", t(DEV_KEY)),
        ("Data", b(&pki.device_cert)),
    ]);
    let outcome = dev.handle(&wrong.encode());
    assert_eq!(
        outcome.status,
        FccStatus::CertificatePublicKeyCorrelationError
    );
    assert_eq!(
        outcome.response.unwrap().info_message,
        "Self-generated certificate validation failed:mbed.BootstrapDeviceCert"
    );
    assert!(!outcome.session_finished);

    // The certificate for the CSR's key: 0.
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&public_key).unwrap();
    let now = OffsetDateTime::now_utc();
    let cert = device_cert(
        &pki.ca,
        &spki,
        ENDPOINT,
        Eku::ClientAuth,
        now - Duration::days(1),
        now + Duration::days(7400),
    );
    let mut right = Parts::complete(&pki);
    right.keys = None;
    right.certs.as_mut().unwrap()[0] = m(&[
        ("Name", t(DEV_CERT)),
        ("PrKN", t(DEV_KEY)),
        ("Data", b(&cert)),
    ]);
    let outcome = dev.handle(&right.encode());
    assert_eq!(outcome.status, FccStatus::Success, "{:?}", outcome.response);
    assert!(outcome.session_finished);
}

#[test]
fn five_csrs_fit_and_failed_csrs_drop_the_csrs() {
    let mut dev = device();
    let reqs: Vec<V> = (0..5)
        .map(|i| {
            m(&[
                ("PrKN", t(&format!("k{i}"))),
                ("Subj", t("C=UK,O=ARM,CN=x")),
                ("MD", V::U(1)),
            ])
        })
        .collect();
    let body = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("SID", t("s")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        ("CsrReqs", V::A(reqs)),
    ]));
    let outcome = dev.handle(&body);
    assert_eq!(outcome.response.unwrap().csrs.len(), 5);

    // A bad subject in the second request: 18 General error:, no Csrs, the first key stays.
    let mut dev = device();
    let reqs = vec![
        m(&[("PrKN", t("a")), ("Subj", t("CN=x")), ("MD", V::U(1))]),
        m(&[("PrKN", t("b")), ("Subj", t("XX=x")), ("MD", V::U(1))]),
    ];
    let body = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("SID", t("s")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        ("CsrReqs", V::A(reqs)),
    ]));
    let r = dev.handle(&body).response.unwrap();
    assert_eq!(
        (r.return_status.as_u32(), r.info_message.as_str()),
        (18, "General error:")
    );
    assert!(r.csrs.is_empty());
    assert!(dev.storage().private_keys.contains_key("a"));
    assert!(
        !dev.storage().private_keys.contains_key("b"),
        "the key of a failed CSR is deleted"
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = device().handle(&body);
        }

        #[test]
        fn mutated_bundles(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let body = enc(&m(&[
                ("SchemeVersion", t("0.0.1")),
                ("Keys", V::A(vec![m(&[("Name", t("k")), ("Type", t("ECCPrivate")), ("Data", b(&[0x30, 3, 2, 1, 1]))])])),
                ("ConfigParams", V::A(vec![m(&[("Name", t("mbed.UseBootstrap")), ("Data", t("x"))])])),
                ("CsrReqs", V::A(vec![m(&[("PrKN", t("k2")), ("Subj", t("CN=a")), ("MD", V::U(1)), ("SM", m(&[("Prv", t("Device"))]))])])),
                ("SID", t("s")),
                ("Verify", V::U(0)),
            ]));
            let mut body = body;
            for (i, v) in flips {
                let idx = i.index(body.len());
                body[idx] = v;
            }
            let _ = device().handle(&body);
        }
    }
}

#[test]
fn disable_then_every_bundle_gets_wire_status_9() {
    let pki = Pki::new();
    let mut dev = device();
    let mut p = Parts::complete(&pki);
    p.top("Disable", V::U(1));
    let outcome = dev.handle(&p.encode());
    assert_eq!(outcome.status, FccStatus::Success, "{:?}", outcome.response);
    let after = dev.handle(&enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
    ])));
    assert_eq!(
        after.reply,
        ResponseFrame::Status(WireStatus::FailedToProcessData)
    );
    assert_eq!(after.status, FccStatus::FactoryDisabledError);
}

#[test]
fn csr_storage_medium() {
    let csr = |sm: V| {
        enc(&m(&[
            ("SchemeVersion", t("0.0.1")),
            ("SID", t("s")),
            ("Verify", V::U(0)),
            ("KpAlvSess", V::U(1)),
            (
                "CsrReqs",
                V::A(vec![m(&[
                    ("PrKN", t("k")),
                    ("Subj", t("CN=x")),
                    ("MD", V::U(1)),
                    ("SM", sm),
                ])]),
            ),
        ]))
    };
    let mut dev = device();
    let outcome = dev.handle(&csr(m(&[("Prv", t("Device")), ("Pub", t("Device"))])));
    assert_eq!(outcome.status, FccStatus::Success);
    assert!(dev.storage().private_keys.contains_key("k"));
    let public = &dev.storage().public_keys["k"];
    let csr_der = &outcome.response.unwrap().csrs[0].der;
    assert!(
        csr_der.windows(public.len()).any(|w| w == &public[..]),
        "the stored public key is the CSR's"
    );

    assert_eq!(
        device().handle(&csr(m(&[("Prv", t("Device"))]))).status,
        FccStatus::Success
    );
    assert_eq!(
        device().handle(&csr(m(&[("Pub", t("Device"))]))).status,
        FccStatus::BundleError
    );
    assert_eq!(
        device().handle(&csr(m(&[("Prv", t("SE"))]))).status,
        FccStatus::NotSupported
    );
    assert_eq!(
        device().handle(&csr(m(&[("Prv", t("Disk"))]))).status,
        FccStatus::BundleError
    );
    assert_eq!(
        device()
            .handle(&csr(V::MI(vec![(t("Prv"), t("Device"))])))
            .status,
        FccStatus::BundleError
    );
    assert_eq!(device().handle(&csr(m(&[]))).status, FccStatus::BundleError);
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for depth in [200usize, 255, 300, 100_000] {
        let mut body = vec![0x81; depth];
        body.push(0x00);
        let outcome = device().handle(&body);
        assert_eq!(outcome.status, FccStatus::BundleError, "depth {depth}");
    }
    // Inside a value the device ignores (CSR extension "Trust"), moderate nesting is fine.
    let mut nested = V::U(0);
    for _ in 0..100 {
        nested = V::A(vec![nested]);
    }
    let body = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("SID", t("s")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        (
            "CsrReqs",
            V::A(vec![m(&[
                ("PrKN", t("k")),
                ("Subj", t("CN=x")),
                ("MD", V::U(1)),
                ("Ext", m(&[("Trust", nested)])),
            ])]),
        ),
    ]));
    assert_eq!(device().handle(&body).status, FccStatus::Success);
}

#[test]
fn config_data_tags_and_empty_chunked_strings() {
    let pki = Pki::new();
    // Tag 2 first: every following tag is skipped too.
    let mut p = Parts::by_tool(&pki, true);
    p.set(
        "mbed.VendorId",
        V::Tag(2, Box::new(V::Tag(99, Box::new(b(&[3; 16]))))),
    );
    let mut dev = device();
    assert_eq!(dev.handle(&p.encode()).status, FccStatus::Success);
    assert_eq!(dev.storage().config("mbed.VendorId"), Some(&[3u8; 16][..]));
    // An empty chunked string is a NULL pointer: a 4-byte param then fails with 15.
    let mut p = Parts::by_tool(&pki, true);
    p.set("mbed.UseBootstrap", V::Raw(vec![0x5f, 0xff]));
    let r = device().handle(&p.encode()).response.unwrap();
    assert_eq!(
        (r.return_status.as_u32(), r.info_message.as_str()),
        (15, "General error:mbed.UseBootstrap")
    );
    // A short text for a 4-byte param over-reads the following message bytes.
    let mut p = Parts::by_tool(&pki, true);
    p.set("mbed.MemoryTotalKB", t("1"));
    let mut dev = device();
    dev.handle(&p.encode());
    let stored = dev.storage().config("mbed.MemoryTotalKB").unwrap().to_vec();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0], b'1');
    // Strict mode refuses it instead.
    let mut strict = Device::new(DeviceOptions {
        strict: true,
        ..DeviceOptions::default()
    });
    let r = strict.handle(&p.encode()).response.unwrap();
    assert_eq!(
        (r.return_status.as_u32(), r.info_message.as_str()),
        (20, "General error:mbed.MemoryTotalKB")
    );
}

#[test]
fn verification_warnings_and_lwm2m_mode() {
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let key = &pki.device_key;
    let warnings = |parts: &Parts| {
        let r = device().handle(&parts.encode()).response.unwrap();
        (r.return_status.as_u32(), r.info_message, r.warnings)
    };

    // Self-signed, five-year, not-yet-valid certificates.
    let self_signed = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, ENDPOINT);
        params.distinguished_name = dn;
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365 * 5);
        params.self_signed(key).unwrap().der().to_vec()
    };
    let (status, _, w) = warnings(&with_device_cert(&pki, self_signed));
    assert_eq!(status, 0);
    assert_eq!(
        w[..2],
        [
            "Certificate is self signed:mbed.BootstrapDeviceCert",
            "Certificate validity is less than 10 years:mbed.BootstrapDeviceCert"
        ]
    );
    let future = device_cert(
        &pki.ca,
        key,
        ENDPOINT,
        Eku::ClientAuth,
        now + Duration::days(2),
        now + Duration::days(7400),
    );
    let (status, _, w) = warnings(&with_device_cert(&pki, future));
    assert_eq!(status, 0);
    assert_eq!(
        w[0],
        "Certificate validity cannot be checked:mbed.BootstrapDeviceCert"
    );

    // Items of the other mode are redundant; an expired update certificate is an error.
    let mut p = Parts::by_tool(&pki, true);
    p.set("mbed.LwM2MServerURI", t("coaps://lwm2m.example.com?aid=x"));
    let (_, _, w) = warnings(&p);
    assert_eq!(w[0], "Item redundant:mbed.LwM2MServerURI");
    let expired = device_cert(
        &pki.ca,
        key,
        "update",
        Eku::None,
        now - Duration::days(400),
        now - Duration::days(1),
    );
    let mut p = Parts::by_tool(&pki, true);
    p.certs
        .as_mut()
        .unwrap()
        .push(cert_item("mbed.UpdateAuthCert", &expired));
    let (status, info, _) = warnings(&p);
    assert_eq!(
        (status, info.as_str()),
        (13, "Certificate expired:mbed.UpdateAuthCert")
    );

    // LwM2M mode: the OU must be the aid at the end of the URI.
    let lwm2m_cert = |ou: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, ENDPOINT);
        dn.push(rcgen::DnType::OrganizationalUnitName, ou);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(7400);
        params
            .signed_by(key, &pki.ca.cert, &pki.ca.key)
            .unwrap()
            .der()
            .to_vec()
    };
    let lwm2m = |ou: &str, uri: &str| {
        let mut p = Parts::complete(&pki);
        p.keys = Some(vec![key_item(
            "mbed.LwM2MDevicePrivateKey",
            &pki.device_key_der(),
        )]);
        p.certs = Some(vec![
            cert_item("mbed.LwM2MDeviceCert", &lwm2m_cert(ou)),
            cert_item("mbed.LwM2MServerCACert", &pki.bootstrap_ca),
            cert_item("mbed.UpdateAuthCert", &pki.ca.der()),
        ]);
        p.set("mbed.UseBootstrap", V::U(0));
        p.remove("mbed.BootstrapServerURI");
        p.set("mbed.LwM2MServerURI", t(uri));
        p
    };
    let (status, info, w) = warnings(&lwm2m("acct1", "coaps://lwm2m.example.com:5684?aid=acct1"));
    assert_eq!((status, info.as_str()), (0, OK));
    assert_eq!(w, ["Bootstrap mode not activated:mbed.UseBootstrap"]);
    let (status, info, _) = warnings(&lwm2m("acct1", "coaps://lwm2m.example.com:5684?aid=acct2"));
    assert_eq!(
        (status, info.as_str()),
        (14, "Certificate CN attribute invalid:mbed.LwM2MDeviceCert")
    );
    let (status, info, _) = warnings(&lwm2m(
        "acct1",
        "coaps://lwm2m.example.com:5684?aid=acct1&x=1",
    ));
    assert_eq!(
        (status, info.as_str()),
        (14, "Certificate CN attribute invalid:mbed.LwM2MDeviceCert")
    );
    let (status, info, _) = warnings(&lwm2m("acct1", "coaps://lwm2m.example.com:5684"));
    assert_eq!(
        (status, info.as_str()),
        (28, "URI format incorrect:mbed.LwM2MServerURI")
    );
    let mut ftc = lwm2m("acct1", "coaps://lwm2m.example.com:5684?aid=acct1");
    ftc.set("mbed.FirstToClaim", V::U(1));
    let (status, info, _) = warnings(&ftc);
    assert_eq!(
        (status, info.as_str()),
        (29, "first to claim not allowed:mbed.FirstToClaim")
    );
}

#[test]
fn first_valid_frame_wipes_the_item_files_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CfgParam_old"), b"x").unwrap();
    std::fs::write(dir.path().join("Crt2_old"), b"x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"keep").unwrap();
    let mut dev = Device::new(DeviceOptions {
        storage_writes: true,
        ..DeviceOptions::default()
    });
    // The device lists the file changes; the caller (here this test) makes them.
    let disk = DiskStore::new(dir.path());
    let handle = |dev: &mut Device, body: &[u8]| -> Outcome {
        let outcome = dev.handle(body);
        for write in &outcome.writes {
            disk.apply(write).unwrap();
        }
        outcome
    };
    let ping = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
    ]));
    assert!(handle(&mut dev, &ping).storage_erased);
    assert!(!dir.path().join("CfgParam_old").exists());
    assert!(!dir.path().join("Crt2_old").exists());
    assert!(dir.path().join("notes.txt").exists());

    // A chain is written element by element; a CSR key with mode 0600.
    let pki = Pki::new();
    let chain = enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("SID", t("s")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
        (
            "CertificateChains",
            V::A(vec![m(&[
                ("Name", t("c")),
                (
                    "DataArray",
                    V::A(vec![b(&pki.device_cert), b(&pki.ca.der())]),
                ),
            ])]),
        ),
        (
            "CsrReqs",
            V::A(vec![m(&[
                ("PrKN", t("gen")),
                ("Subj", t("CN=x")),
                ("MD", V::U(1)),
            ])]),
        ),
    ]));
    let outcome = handle(&mut dev, &chain);
    assert!(!outcome.storage_erased);
    assert_eq!(outcome.status, FccStatus::Success, "{:?}", outcome.response);
    assert_eq!(
        std::fs::read(dir.path().join("Cert_c")).unwrap(),
        pki.device_cert
    );
    assert_eq!(
        std::fs::read(dir.path().join("Crt1_c")).unwrap(),
        pki.ca.der()
    );
    assert_eq!(
        std::fs::read(dir.path().join("PrvKey_gen")).unwrap(),
        dev.storage().private_keys["gen"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("PrvKey_gen"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// A keep-alive message without verification, with `extra` top-level pairs.
fn kept_alive(extra: &[(&str, V)]) -> Vec<u8> {
    let mut pairs = vec![
        ("SchemeVersion", t("0.0.1")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
    ];
    pairs.extend(extra.iter().cloned());
    enc(&m(&pairs))
}

#[test]
fn storage_writes_are_listed_in_order_and_only_when_asked() {
    let pki = Pki::new();
    let store = kept_alive(&[
        ("Keys", V::A(vec![key_item("k", &pki.device_key_der())])),
        (
            "ConfigParams",
            V::A(vec![m(&[
                ("Name", t("mbed.Manufacturer")),
                ("Data", t("acme")),
            ])]),
        ),
    ]);
    // Memory only (the default): nothing listed, the items are stored all the same.
    let mut dev = device();
    let outcome = dev.handle(&store);
    assert_eq!(outcome.status, FccStatus::Success, "{:?}", outcome.response);
    assert!(outcome.writes.is_empty());
    assert!(dev.storage().contains(ItemKind::PrivateKey, "k"));

    let mut dev = Device::new(DeviceOptions {
        storage_writes: true,
        ..DeviceOptions::default()
    });
    let outcome = dev.handle(&store);
    assert_eq!(outcome.status, FccStatus::Success, "{:?}", outcome.response);
    let listed: Vec<String> = outcome
        .writes
        .iter()
        .map(|w| match w {
            StorageWrite::Wipe => "wipe".to_owned(),
            StorageWrite::Put {
                kind, name, index, ..
            } => format!("put {kind:?} {name} {index}"),
            StorageWrite::Remove { kind, name, index } => {
                format!("remove {kind:?} {name} {index}")
            }
        })
        .collect();
    assert_eq!(
        listed,
        [
            "wipe",
            "put PrivateKey k 0",
            "put ConfigParam mbed.Manufacturer 0"
        ]
    );
    let StorageWrite::Put { data, .. } = &outcome.writes[1] else {
        unreachable!()
    };
    assert_eq!(&data[..], &dev.storage().private_keys["k"][..]);
    // Key bytes never show in Debug output.
    let debug = format!("{:?}", outcome.writes);
    assert!(debug.contains("len"), "{debug}");
    // The wipe comes only with the first message of the session.
    let outcome = dev.handle(&kept_alive(&[]));
    assert!(outcome.writes.is_empty(), "{:?}", outcome.writes);
}

#[test]
fn a_response_of_exactly_512_bytes_fits() {
    let ping_with_sid = |len: usize| {
        enc(&m(&[
            ("SchemeVersion", t("0.0.1")),
            ("SID", t(&"x".repeat(len))),
            ("Verify", V::U(0)),
            ("KpAlvSess", V::U(1)),
        ]))
    };
    let size = |len: usize| {
        fcc_proto::Response::success(Some("x".repeat(len)))
            .encode()
            .len()
    };
    let fits = (0..512).rev().find(|l| size(*l) <= 512).unwrap();
    assert_eq!(size(fits), 512, "a SID length gives exactly 512 bytes");
    let outcome = device().handle(&ping_with_sid(fits));
    assert!(outcome.wire_success());
    assert_eq!(
        fcc_proto::frame::encode_response(&outcome.reply).len(),
        16 + 512 + 32
    );
    let outcome = device().handle(&ping_with_sid(fits + 1));
    assert_eq!(
        outcome.reply,
        ResponseFrame::Status(WireStatus::FailedToProcessData)
    );
}

#[test]
fn rot_and_entropy_are_write_once_per_session() {
    let pki = Pki::new();
    // ROT and Entropy in the first message, then again: 7 and 8.
    let mut dev = device();
    assert_eq!(
        dev.handle(&kept_alive(&[
            ("Entropy", b(&[1; 48])),
            ("ROT", b(&[2; 16]))
        ]))
        .status,
        FccStatus::Success
    );
    let r = dev
        .handle(&kept_alive(&[("ROT", b(&[2; 16]))]))
        .response
        .unwrap();
    assert_eq!(
        (r.return_status.as_u32(), r.info_message.as_str()),
        (7, "Root of trust error:rot")
    );
    let r = dev
        .handle(&kept_alive(&[("Entropy", b(&[1; 48]))]))
        .response
        .unwrap();
    assert_eq!(
        (r.return_status.as_u32(), r.info_message.as_str()),
        (8, "Entropy error:entropy")
    );

    // Storing an item generates a root of trust: a later ROT is refused.
    let mut dev = device();
    let store = kept_alive(&[("Keys", V::A(vec![key_item("k", &pki.device_key_der())]))]);
    assert_eq!(dev.handle(&store).status, FccStatus::Success);
    assert_eq!(
        dev.handle(&kept_alive(&[("ROT", b(&[2; 16]))])).status,
        FccStatus::RotError
    );

    // Without stored items a later ROT is still accepted.
    let mut dev = device();
    assert_eq!(dev.handle(&kept_alive(&[])).status, FccStatus::Success);
    assert_eq!(
        dev.handle(&kept_alive(&[("ROT", b(&[2; 16]))])).status,
        FccStatus::Success
    );
}
