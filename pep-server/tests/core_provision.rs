//! Provisioning acceptance: the library core against real fake-fcc gateways on 127.0.0.1, with a
//! real SQLite file in a temporary directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_fcc::{Fault, FaultKind, Faults, GatewayConfig, GatewayHandle, SessionReport, Sessions};
use fcc_proto::{FccStatus, names};
use pep_ca::EnrollmentId;
use pep_server::config::{Config, KeyMode};
use pep_server::model::{GatewayDefaults, GatewayFields};
use pep_server::provision::{ProvisionError, ProvisionRequest, Provisioner};
use pep_server::store::{IdentityState, SortOrder, Store};

struct Setup {
    dir: tempfile::TempDir,
    provisioner: Provisioner,
}

impl Setup {
    fn db_path(&self) -> PathBuf {
        self.dir.path().join("pep.sqlite")
    }

    fn store(&self) -> &Store {
        self.provisioner.store()
    }

    /// The bytes of the database file and its WAL.
    fn db_bytes(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(self.db_path()).unwrap();
        if let Ok(wal) = std::fs::read(self.dir.path().join("pep.sqlite-wal")) {
            bytes.extend(wal);
        }
        bytes
    }
}

fn config(db: &Path, key_mode: KeyMode, tweak: impl FnOnce(&mut Config)) -> Config {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Config::load(manifest.join("pep.example.toml")).unwrap();
    c.resolve_relative_to(manifest.parent().unwrap());
    // The repository's test CA: git checks its key out readable by all.
    c.ca.allow_insecure_key_permissions = true;
    c.database_url = format!("sqlite://{}", db.display());
    c.key_mode = key_mode;
    c.fcc.connect_timeout_ms = 2_000;
    c.fcc.write_timeout_ms = 5_000;
    c.fcc.read_timeout_ms = 20_000;
    c.request_deadline_ms = 60_000;
    tweak(&mut c);
    c
}

async fn setup_with(key_mode: KeyMode, tweak: impl FnOnce(&mut Config)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("pep.sqlite"), key_mode, tweak);
    let store = Store::open(&config.database_url).await.unwrap();
    let provisioner = Provisioner::new(Arc::new(config), store).unwrap();
    Setup { dir, provisioner }
}

async fn setup(key_mode: KeyMode) -> Setup {
    setup_with(key_mode, |_| {}).await
}

async fn gateway(tweak: impl FnOnce(&mut GatewayConfig)) -> (SocketAddr, GatewayHandle) {
    let mut config = GatewayConfig::default();
    tweak(&mut config);
    fake_fcc::spawn(config).await.unwrap()
}

fn fields(serial: &str, gw: SocketAddr) -> GatewayFields {
    GatewayFields {
        serial_number: Some(serial.to_owned()),
        ip: Some(gw.ip().to_string()),
        port: Some(gw.port().to_string()),
        hardware_version: Some("hw-rev-b".to_owned()),
        verification_key: Some("a1b2c3-d4e5f6/1a2b3c-35a4e900".to_owned()),
        ..GatewayFields::default()
    }
}

/// The defaults of the test configuration (which do not depend on the database).
fn defaults() -> GatewayDefaults {
    GatewayDefaults::from_config(&config(Path::new("unused"), KeyMode::ByTool, |_| {})).unwrap()
}

fn build(fields: GatewayFields) -> ProvisionRequest {
    ProvisionRequest {
        params: fields.into_params(None, &defaults()).unwrap(),
        requester: "test@127.0.0.1".to_owned(),
        request_key: None,
    }
}

fn request(serial: &str, gw: SocketAddr) -> ProvisionRequest {
    build(fields(serial, gw))
}

fn fault(kind: FaultKind) -> Faults {
    Faults {
        faults: vec![Fault {
            kind,
            probability: 1.0,
        }],
        seed: Some(7),
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn device_cert(report: &SessionReport) -> Vec<u8> {
    report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0].clone()
}

/// The 32-byte private scalar inside a SEC1 or PKCS#8 P-256 key (`02 01 01 04 20 <scalar>`): the
/// secret part (the rest of the key, the public point, is also in the certificate).
fn private_scalar(key: &[u8]) -> &[u8] {
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = key
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a SEC1 ECPrivateKey");
    &key[at + marker.len()..at + marker.len() + 32]
}

fn contains_any_window(haystack: &[u8], needle: &[u8], window: usize) -> bool {
    needle
        .windows(window)
        .any(|w| haystack.windows(window).any(|h| h == w))
}

#[tokio::test]
async fn issued_identity_verifies_on_fake_fcc_without_warnings() {
    let s = setup(KeyMode::ByTool).await;
    let (addr, mut gw) = gateway(|_| {}).await;
    let identity = s
        .provisioner
        .provision(request("GW-0001", addr))
        .await
        .unwrap();
    let report = gw.next_report().await.unwrap();
    assert_eq!(report.last_status, Some(FccStatus::Success), "{report:?}");
    assert!(report.wire_success && report.error.is_none(), "{report:?}");

    // The enrollment ID is the SHA-256 of the certificate the device stored.
    let cert = device_cert(&report);
    assert_eq!(identity.enrollment_id, EnrollmentId::of_certificate(&cert));
    assert_eq!(identity.certificate_der.as_ref(), cert.as_slice());
    assert!(
        identity.fcc_warnings.is_empty(),
        "{:?}",
        identity.fcc_warnings
    );

    // What the device holds: key, bootstrap CA, update cert, params with endpoint = serial.
    let st = &report.storage;
    assert!(
        st.private_keys
            .contains_key(names::BOOTSTRAP_DEVICE_PRIVATE_KEY)
    );
    assert!(
        st.certificates
            .contains_key(names::BOOTSTRAP_SERVER_CA_CERT)
    );
    assert!(st.certificates.contains_key(names::UPDATE_AUTH_CERT));
    assert_eq!(
        st.config_text(names::ENDPOINT_NAME).as_deref(),
        Some("GW-0001")
    );
    assert_eq!(
        st.config_text(names::SERIAL_NUMBER).as_deref(),
        Some("GW-0001")
    );
    assert_eq!(
        st.config_text(names::HARDWARE_VERSION).as_deref(),
        Some("hw-rev-b")
    );
    let uri = st.config_text(names::BOOTSTRAP_SERVER_URI).unwrap();
    assert!(uri.starts_with("coaps://") && !uri.contains("aid="));
    assert_eq!(st.config(names::VENDOR_ID).map(<[u8]>::len), Some(16));
    assert_eq!(st.config(names::CLASS_ID).map(<[u8]>::len), Some(16));

    // The store: deployed, no warnings, the same enrollment ID; the private key is nowhere.
    let row = s.store().identity("GW-0001").await.unwrap().unwrap();
    assert_eq!(row.state, IdentityState::Deployed);
    assert!(row.fcc.warnings.is_empty());
    assert_eq!(row.fcc.status, Some(0));
    assert_eq!(
        row.enrollment_id.as_deref(),
        Some(identity.enrollment_id.as_str())
    );
    assert_eq!(row.gateway, addr.to_string());
    assert_eq!(
        s.store().enrollment_id("GW-0001").await.unwrap().as_deref(),
        Some(identity.enrollment_id.as_str())
    );
    assert_eq!(
        s.store()
            .verification_key("GW-0001")
            .await
            .unwrap()
            .as_deref(),
        Some("a1b2c3-d4e5f6/1a2b3c-35a4e900")
    );
    let key = private_scalar(&st.private_keys[names::BOOTSTRAP_DEVICE_PRIVATE_KEY]);
    assert!(!contains_any_window(&s.db_bytes(), key, 16));

    // The identity JSON of the original tool, plus apiServerAddress.
    let json = serde_json::to_value(&identity).unwrap();
    for key in [
        "serialNumber",
        "OU",
        "deviceID",
        "deployed",
        "hardwareVersion",
        "radioConfig",
        "ledConfig",
        "category",
        "cloudAddress",
        "apiAddress",
        "apiServerAddress",
        "gatewayServicesAddress",
        "enrollmentID",
        "createdAt",
    ] {
        assert!(json.get(key).is_some(), "{key} missing in {json}");
    }
    assert_eq!(json.as_object().unwrap().len(), 14, "{json}");
    assert_eq!(
        json["apiServerAddress"],
        "https://api.us-east-1.mbedcloud.com"
    );
    assert_eq!(
        json["cloudAddress"],
        "https://gateways.us-east-1.mbedcloud.com"
    );
    assert_eq!(json["radioConfig"], "00");
    assert_eq!(json["ledConfig"], "01");
    assert_eq!(json["category"], "production");
    assert_eq!(json["OU"], "");

    // The audit trail: the attempt and its outcome.
    let audit = s.store().audit_for("GW-0001").await.unwrap();
    let events: Vec<&str> = audit.iter().map(|a| a.event.as_str()).collect();
    assert_eq!(events, ["attempt", "deployed"]);
    assert_eq!(audit[1].gateway, addr.to_string());
    assert_eq!(audit[1].requester, "test@127.0.0.1");
    assert_eq!(audit[1].fcc.status, Some(0));
    assert!(audit[1].duration_ms.is_some());
}

#[tokio::test]
async fn same_serial_again_is_a_conflict() {
    let s = setup(KeyMode::ByTool).await;
    let (addr, _gw) = gateway(|g| g.sessions = Sessions::Count(2)).await;
    s.provisioner
        .provision(request("GW-DUP", addr))
        .await
        .unwrap();
    let err = s
        .provisioner
        .provision(request("GW-DUP", addr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::Conflict { serial, .. } if serial == "GW-DUP"),
        "{err}"
    );
    assert_eq!(err.http_status(), 409);
}

#[tokio::test]
async fn two_concurrent_provisions_of_one_serial_give_one_ok_and_one_conflict() {
    let s = setup(KeyMode::ByTool).await;
    let (a1, _g1) = gateway(|_| {}).await;
    let (a2, _g2) = gateway(|_| {}).await;
    let (r1, r2) = tokio::join!(
        s.provisioner.provision(request("GW-RACE", a1)),
        s.provisioner.provision(request("GW-RACE", a2)),
    );
    let results = [r1, r2];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(ProvisionError::Conflict { .. })))
        .count();
    assert_eq!((ok, conflicts), (1, 1), "{results:?}");
    assert_eq!(s.store().stats().await.unwrap().deployed, 1);
}

#[tokio::test]
async fn sixty_four_concurrent_distinct_serials_are_each_deployed_once() {
    let s = setup(KeyMode::ByTool).await;
    let mut gateways = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (addr, gw) = gateway(|_| {}).await;
        gateways.push(gw);
        let p = s.provisioner.clone();
        tasks.push(tokio::spawn(async move {
            p.provision(request(&format!("GW-{i:03}"), addr)).await
        }));
    }
    for t in tasks {
        let identity = t.await.unwrap().unwrap();
        assert!(identity.fcc_warnings.is_empty());
    }
    for gw in &mut gateways {
        let report = gw.next_report().await.unwrap();
        assert_eq!(report.last_status, Some(FccStatus::Success));
    }
    let stats = s.store().stats().await.unwrap();
    assert_eq!((stats.deployed, stats.failed, stats.in_flight), (64, 0, 0));
    let listed = s
        .store()
        .list_deployed(1000, SortOrder::Asc, None)
        .await
        .unwrap();
    let mut serials: Vec<String> = listed.into_iter().map(|r| r.serial_number).collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 64);
}

#[tokio::test]
async fn closed_port_is_unreachable_and_the_serial_stays_retryable() {
    let s = setup(KeyMode::ByTool).await;
    let addr = closed_port();
    let err = s
        .provisioner
        .provision(request("GW-LATE", addr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::GatewayUnreachable { gateway, .. } if *gateway == addr),
        "{err}"
    );
    assert_eq!(err.http_status(), 504);
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let row = s.store().identity("GW-LATE").await.unwrap().unwrap();
    assert_eq!(row.state, IdentityState::Failed);
    assert!(row.last_error.unwrap().contains(&addr.to_string()));
    assert_eq!(s.store().enrollment_id("GW-LATE").await.unwrap(), None);

    // Later, FCC is up: the same serial provisions.
    let (addr2, mut gw) = gateway(|_| {}).await;
    s.provisioner
        .provision(request("GW-LATE", addr2))
        .await
        .unwrap();
    assert_eq!(
        gw.next_report().await.unwrap().last_status,
        Some(FccStatus::Success)
    );
    let row = s.store().identity("GW-LATE").await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (IdentityState::Deployed, 2));
}

#[tokio::test]
async fn rejected_by_fcc_carries_its_info_message_and_stays_retryable() {
    let s = setup(KeyMode::ByTool).await;
    let (addr, _gw) = gateway(|g| {
        g.faults = fault(FaultKind::ReturnStatus(FccStatus::from_u32(13)));
    })
    .await;
    let err = s
        .provisioner
        .provision(request("GW-REJ", addr))
        .await
        .unwrap_err();
    let ProvisionError::GatewayRejected {
        gateway: rejected_by,
        status,
        info,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*rejected_by, addr);
    assert_eq!(status.as_u32(), 13);
    assert!(!info.is_empty());
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains(info.as_str()),
        "{text}"
    );
    assert_eq!(err.http_status(), 502);
    let row = s.store().identity("GW-REJ").await.unwrap().unwrap();
    assert_eq!(row.state, IdentityState::Failed);
    assert_eq!(row.fcc.status, Some(13));
    assert_eq!(s.store().enrollment_id("GW-REJ").await.unwrap(), None);
    let audit = s.store().audit_for("GW-REJ").await.unwrap();
    assert_eq!(audit.last().unwrap().event, "failed");
    assert_eq!(audit.last().unwrap().fcc.status, Some(13));

    let (addr2, _gw2) = gateway(|_| {}).await;
    s.provisioner
        .provision(request("GW-REJ", addr2))
        .await
        .unwrap();
}

#[tokio::test]
async fn stalled_gateway_times_out_after_the_configured_read_timeout() {
    let s = setup_with(KeyMode::ByTool, |c| c.fcc.read_timeout_ms = 300).await;
    let (addr, _gw) = gateway(|g| {
        g.faults = fault(FaultKind::Stall(Duration::from_secs(30)));
    })
    .await;
    let err = s
        .provisioner
        .provision(request("GW-SLOW", addr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::GatewayTimeout { gateway, .. } if *gateway == addr),
        "{err}"
    );
    assert_eq!(err.http_status(), 504);
    assert_eq!(
        s.store().identity("GW-SLOW").await.unwrap().unwrap().state,
        IdentityState::Failed
    );
}

#[tokio::test]
async fn gateway_closing_without_reply_is_a_gateway_failure() {
    let s = setup(KeyMode::ByTool).await;
    let (addr, _gw) = gateway(|g| g.faults = fault(FaultKind::CloseWithoutReply)).await;
    let err = s
        .provisioner
        .provision(request("GW-CLOSE", addr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::GatewayFailed { gateway, .. } if *gateway == addr),
        "{err}"
    );
    assert_eq!(err.http_status(), 502);
}

#[tokio::test]
async fn by_device_mode_deploys_and_the_key_never_leaves_the_device() {
    let s = setup(KeyMode::ByDevice).await;
    let (addr, mut gw) = gateway(|_| {}).await;
    let identity = s
        .provisioner
        .provision(request("GW-CSR-1", addr))
        .await
        .unwrap();
    let report = gw.next_report().await.unwrap();
    assert_eq!(report.last_status, Some(FccStatus::Success), "{report:?}");
    assert_eq!(report.messages, 2);
    let cert = device_cert(&report);
    assert_eq!(identity.enrollment_id, EnrollmentId::of_certificate(&cert));
    assert!(identity.fcc_warnings.is_empty());

    // The device generated and kept the key; neither the store nor the identity has it.
    let stored = report.storage.private_keys[names::BOOTSTRAP_DEVICE_PRIVATE_KEY].clone();
    let key = private_scalar(&stored);
    assert!(!contains_any_window(&s.db_bytes(), key, 16));
    let json = serde_json::to_vec(&identity).unwrap();
    assert!(!contains_any_window(&json, key, 16));
    assert!(!contains_any_window(&identity.certificate_der, key, 16));
    assert!(!format!("{identity:?}").contains(&format!("{:?}", &key[..8])));
    let row = s.store().identity("GW-CSR-1").await.unwrap().unwrap();
    assert_eq!(row.state, IdentityState::Deployed);
    assert!(row.fcc.warnings.is_empty());
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let s = setup(KeyMode::ByTool).await;
    let gw = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    let long = "x".repeat(257);
    let cases: Vec<(GatewayFields, &str)> = vec![
        (fields("bad\nserial", gw), "serialNumber"),
        (fields("", gw), "serialNumber"),
        (fields(&"S".repeat(65), gw), "serialNumber"),
        (
            GatewayFields {
                port: Some("0".into()),
                ..fields("GW-1", gw)
            },
            "port",
        ),
        (
            GatewayFields {
                ip: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED).to_string()),
                ..fields("GW-1", gw)
            },
            "ip",
        ),
        (
            GatewayFields {
                category: Some("staging".into()),
                ..fields("GW-1", gw)
            },
            "category",
        ),
        (
            GatewayFields {
                hardware_version: Some(long.clone()),
                ..fields("GW-1", gw)
            },
            "hardwareVersion",
        ),
        (
            GatewayFields {
                radio_config: Some("a\u{0}b".into()),
                ..fields("GW-1", gw)
            },
            "radioConfig",
        ),
        (
            GatewayFields {
                api_address: Some("not a url".into()),
                ..fields("GW-1", gw)
            },
            "apiAddress",
        ),
        (
            GatewayFields {
                verification_key: Some(long),
                ..fields("GW-1", gw)
            },
            "verificationKey",
        ),
    ];
    for (req, field) in cases {
        // The core's one validation, with the configured defaults.
        let err: ProvisionError = s.provisioner.gateway_params(req, None).unwrap_err().into();
        match &err {
            ProvisionError::InvalidRequest { field: f, .. } => assert_eq!(f, field, "{err}"),
            other => panic!("{field}: {other}"),
        }
        assert_eq!(err.http_status(), 400);
    }
    // Nothing was reserved.
    let stats = s.store().stats().await.unwrap();
    assert_eq!((stats.deployed, stats.failed, stats.in_flight), (0, 0, 0));
}

#[tokio::test]
async fn development_category_and_custom_addresses_are_recorded() {
    let s = setup(KeyMode::ByTool).await;
    let (addr, _gw) = gateway(|_| {}).await;
    let identity = s
        .provisioner
        .provision(build(GatewayFields {
            api_address: Some("https://api.example.com".into()),
            gateway_services_address: Some("https://gw.example.com".into()),
            radio_config: Some("02".into()),
            led_config: Some("03".into()),
            category: Some("development".into()),
            ..fields("GW-DEV", addr)
        }))
        .await
        .unwrap();
    assert_eq!(identity.api_server_address, "https://api.example.com");
    assert_eq!(identity.cloud_address, "https://gw.example.com");
    let page = s
        .store()
        .list_deployed(10, SortOrder::Desc, None)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let r = &page[0];
    assert_eq!(
        (
            r.category.as_str(),
            r.radio_config.as_str(),
            r.led_config.as_str()
        ),
        ("development", "02", "03")
    );
    assert_eq!(r.gateway_services_address, "https://gw.example.com");
    assert_eq!(r.created_at_ms, identity.created_at);
}

#[tokio::test]
async fn injections_beyond_the_limit_wait_for_a_slot() {
    let s = setup_with(KeyMode::ByTool, |c| c.fcc.max_concurrent_injections = 1).await;
    // Two "gateways" that accept and never answer, so we control when each attempt ends.
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());

    let p = s.provisioner.clone();
    let first = tokio::spawn(async move { p.provision(request("GW-SLOT-A", addr_a)).await });
    let (conn_a, _) = a.accept().await.unwrap();
    assert_eq!(s.provisioner.free_injection_slots(), 0);

    let p = s.provisioner.clone();
    let second = tokio::spawn(async move { p.provision(request("GW-SLOT-B", addr_b)).await });
    // B is reserved (in flight) but must not connect while A holds the only slot.
    while s.store().identity("GW-SLOT-B").await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.accept())
            .await
            .is_err(),
        "B connected while A held the only injection slot"
    );

    // A's gateway goes away: A fails, its slot goes to B.
    drop(conn_a);
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, ProvisionError::GatewayFailed { .. }), "{err}");
    let (conn_b, _) = b.accept().await.unwrap();
    drop(conn_b);
    assert!(second.await.unwrap().is_err());
    assert_eq!(s.provisioner.free_injection_slots(), 1);
}

#[tokio::test]
async fn the_request_deadline_ends_a_stalled_attempt_as_a_retryable_timeout() {
    let s = setup_with(KeyMode::ByTool, |c| c.request_deadline_ms = 300).await;
    let (addr, _gw) = gateway(|g| {
        g.faults = fault(FaultKind::Stall(Duration::from_secs(30)));
    })
    .await;
    let err = s
        .provisioner
        .provision(request("GW-DEADLINE", addr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::GatewayTimeout { error, .. } if error.is_deadline() && error.to_string().contains("deadline")),
        "{err}"
    );
    let row = s.store().identity("GW-DEADLINE").await.unwrap().unwrap();
    assert_eq!(row.state, IdentityState::Failed);
}

#[tokio::test]
async fn entropy_and_root_of_trust_can_be_injected() {
    let s = setup_with(KeyMode::ByTool, |c| {
        c.fcc.entropy_rot = pep_server::config::EntropyMode::Random;
    })
    .await;
    let (addr, mut gw) = gateway(|_| {}).await;
    let identity = s
        .provisioner
        .provision(request("GW-ENTROPY", addr))
        .await
        .unwrap();
    assert!(identity.fcc_warnings.is_empty());
    assert_eq!(
        gw.next_report().await.unwrap().last_status,
        Some(FccStatus::Success)
    );
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_leave_the_serial_in_flight() {
    let s = setup(KeyMode::ByTool).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = s.provisioner.clone();
    let caller = tokio::spawn(async move { p.provision(request("GW-GONE", addr)).await });
    let (conn, _) = listener.accept().await.unwrap();
    // The caller (e.g. an HTTP client that disconnected) goes away mid-injection...
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    // ...then the gateway closes: the attempt still ends, recorded as failed and retryable.
    drop(conn);
    loop {
        let row = s.store().identity("GW-GONE").await.unwrap().unwrap();
        if row.state != IdentityState::InFlight {
            assert_eq!(row.state, IdentityState::Failed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (addr2, _gw) = gateway(|_| {}).await;
    s.provisioner
        .provision(request("GW-GONE", addr2))
        .await
        .unwrap();
}

/// The core takes its time from the clock it is given: a fixed clock gives that `createdAt` (API
/// answer and store) and a certificate whose validity starts there (less the 5-minute backdating).
#[tokio::test]
async fn a_fixed_clock_sets_created_at_and_not_before() {
    use pep_server::clock::FixedClock;
    use time::{Duration as Span, OffsetDateTime};
    use x509_cert::der::Decode;

    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("pep.sqlite"), KeyMode::ByTool, |_| {});
    let store = Store::open(&config.database_url).await.unwrap();
    // Three days ago, a whole second: inside the fixture CA's validity, not the wall clock.
    let at = (OffsetDateTime::now_utc() - Span::days(3))
        .replace_nanosecond(0)
        .unwrap();
    let at_ms = at.unix_timestamp() * 1000;
    let provisioner =
        Provisioner::with_clock(Arc::new(config), store, Arc::new(FixedClock(at))).unwrap();
    let (addr, _gw) = gateway(|_| {}).await;
    let identity = provisioner
        .provision(request("GW-CLOCK", addr))
        .await
        .unwrap();
    assert_eq!(identity.created_at, at_ms);
    let cert = x509_cert::Certificate::from_der(identity.certificate_der.as_ref()).unwrap();
    let not_before = cert.tbs_certificate.validity.not_before.to_unix_duration();
    assert_eq!(not_before.as_secs() as i64, at.unix_timestamp() - 300);
    let row = provisioner
        .store()
        .identity("GW-CLOCK")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.created_at_ms, at_ms);
}
