//! `fake-fcc` over real TCP: fcc-proto's `FccClient` against `spawn`, the two-message CSR flow,
//! bad frames (nothing sent back, session handling of docs/protocol.md §1.5), faults, and the binary itself.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use fake_fcc::{Fault, Faults, GatewayConfig, ItemKind, Sessions};
use fcc_proto::frame::{HASH_LEN, TOKEN, ToolCodec, encode_request};
use fcc_proto::status::{FccStatus, WireStatus};
use fcc_proto::{
    Bundle, CertificateItem, ConfigParam, CsrRequest, FccClient, FccError, KeyItem, Timeouts,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// Generous connect and write timeouts, a short read timeout (for stalls and unread requests).
fn short_read(ms: u64) -> Timeouts {
    Timeouts {
        read: Duration::from_millis(ms),
        ..timeouts()
    }
}

fn timeouts() -> Timeouts {
    Timeouts::all(Duration::from_secs(10))
}

fn config_params() -> Vec<ConfigParam> {
    vec![
        ConfigParam::uint("mbed.UseBootstrap", 1),
        ConfigParam::text("mbed.EndpointName", ENDPOINT),
        ConfigParam::text("mbed.BootstrapServerURI", URI),
        ConfigParam::text("mbed.Manufacturer", "Acme"),
        ConfigParam::text("mbed.ModelNumber", "M-1"),
        ConfigParam::text("mbed.DeviceType", "gw"),
        ConfigParam::text("mbed.HardwareVersion", "1.0"),
        ConfigParam::uint("mbed.MemoryTotalKB", 512),
        ConfigParam::text("mbed.SerialNumber", ENDPOINT),
        ConfigParam::uint("mbed.CurrentTime", now()),
        ConfigParam::text("mbed.Timezone", "Europe/London"),
        ConfigParam::text("mbed.UTCOffset", "+00:00"),
        ConfigParam::bytes("mbed.ClassId", vec![1; 16]),
        ConfigParam::bytes("mbed.VendorId", vec![2; 16]),
    ]
}

fn cert(name: &str, der: Vec<u8>, key: Option<&str>) -> CertificateItem {
    CertificateItem {
        name: name.into(),
        der,
        private_key_name: key.map(Into::into),
    }
}

fn by_tool(pki: &Pki) -> Bundle {
    Bundle {
        sid: Some(SID.into()),
        keys: vec![KeyItem::private(
            "mbed.BootstrapDevicePrivateKey",
            zeroize::Zeroizing::new(pki.device_key_der()),
        )],
        certificates: vec![
            cert("mbed.BootstrapDeviceCert", pki.device_cert.clone(), None),
            cert("mbed.BootstrapServerCACert", pki.bootstrap_ca.clone(), None),
            cert("mbed.UpdateAuthCert", pki.ca.der(), None),
        ],
        config_params: config_params(),
        ..Bundle::default()
    }
}

async fn gateway(config: GatewayConfig) -> (SocketAddr, fake_fcc::GatewayHandle) {
    fake_fcc::spawn(config).await.expect("gateway starts")
}

/// Starts a gateway with the storage directory `storage_dir`, sends it the by-tool bundle with
/// `FccClient` and checks the answer is a success.
async fn by_tool_stored_in(
    pki: &Pki,
    storage_dir: &std::path::Path,
) -> (fcc_proto::Response, fake_fcc::GatewayHandle) {
    let (addr, handle) = gateway(GatewayConfig {
        storage_dir: Some(storage_dir.to_path_buf()),
        ..GatewayConfig::default()
    })
    .await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    let response = client.send(&by_tool(pki)).await.unwrap();
    assert_eq!(
        response.return_status,
        FccStatus::Success,
        "{}",
        response.info_message
    );
    (response, handle)
}

#[tokio::test]
async fn fcc_client_provisions_the_by_tool_bundle() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (response, mut handle) = by_tool_stored_in(&pki, dir.path()).await;
    assert!(response.warnings.is_empty(), "{:?}", response.warnings);
    assert_eq!(response.sid.as_deref(), Some(SID));

    let report = handle.next_report().await.unwrap();
    assert!(report.wire_success);
    assert_eq!(report.last_status, Some(FccStatus::Success));
    assert_eq!(report.messages, 1);
    assert!(
        report
            .storage
            .contains(ItemKind::PrivateKey, "mbed.BootstrapDevicePrivateKey")
    );
    assert!(report.disk_errors.is_empty(), "{:?}", report.disk_errors);
    assert!(handle.next_report().await.is_none(), "one session only");

    // The item files.
    let key_file = dir.path().join("PrvKey_mbed.BootstrapDevicePrivateKey");
    assert_eq!(std::fs::read(&key_file).unwrap(), pki.device_key_der());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("Cert_mbed.BootstrapDeviceCert")).unwrap(),
        pki.device_cert
    );
    assert_eq!(
        std::fs::read(dir.path().join("CfgParam_mbed.UseBootstrap")).unwrap(),
        [1, 0, 0, 0]
    );
    assert_eq!(
        std::fs::read(dir.path().join("CfgParam_mbed.EndpointName")).unwrap(),
        ENDPOINT.as_bytes()
    );
}

#[tokio::test]
async fn an_unwritable_storage_directory_is_reported_and_the_answer_unchanged() {
    // The storage "directory" is a regular file: neither wiping nor writing an item file works.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("pal");
    std::fs::write(&not_a_dir, b"a file").unwrap();
    let (_, mut handle) = by_tool_stored_in(&pki, &not_a_dir).await;
    let report = handle.next_report().await.unwrap();
    assert!(report.wire_success);
    assert!(
        report
            .storage
            .contains(ItemKind::Certificate, "mbed.BootstrapDeviceCert")
    );
    // The wipe and every item write failed, each named with its path.
    assert!(report.disk_errors.len() > 1, "{:?}", report.disk_errors);
    assert!(
        report
            .disk_errors
            .iter()
            .all(|e| e.contains(&not_a_dir.display().to_string())),
        "{:?}",
        report.disk_errors
    );
    assert_eq!(std::fs::read(&not_a_dir).unwrap(), b"a file");
}

#[tokio::test]
async fn two_message_csr_flow_over_tcp() {
    let pki = Pki::new();
    let (addr, mut handle) = gateway(GatewayConfig::default()).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    let first = Bundle {
        sid: Some("s-42".into()),
        csr_requests: vec![CsrRequest {
            private_key_name: "mbed.BootstrapDevicePrivateKey".into(),
            subject: format!("CN={ENDPOINT}"),
            md: 1,
            key_usage: Some(1),
            ext_key_usage: Some(4),
        }],
        verify: Some(false),
        keep_alive: Some(true),
        ..Bundle::default()
    };
    let response = client.send(&first).await.unwrap();
    assert_eq!(
        response.return_status,
        FccStatus::Success,
        "{}",
        response.info_message
    );
    assert_eq!(response.csrs.len(), 1);
    assert_eq!(
        response.csrs[0].private_key_name,
        "mbed.BootstrapDevicePrivateKey"
    );
    let spki = check_csr(&response.csrs[0].der, ENDPOINT);

    let spki = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let device_cert = {
        let now = time::OffsetDateTime::now_utc();
        common::device_cert(
            &pki.ca,
            &spki,
            ENDPOINT,
            Eku::ClientAuth,
            now - time::Duration::days(1),
            now + time::Duration::days(7400),
        )
    };
    let mut second = by_tool(&pki);
    second.keys.clear();
    second.certificates[0] = cert(
        "mbed.BootstrapDeviceCert",
        device_cert,
        Some("mbed.BootstrapDevicePrivateKey"),
    );
    let response = client.send(&second).await.unwrap();
    assert_eq!(
        response.return_status,
        FccStatus::Success,
        "{}",
        response.info_message
    );

    let report = handle.next_report().await.unwrap();
    assert!(report.wire_success);
    assert_eq!(report.messages, 2);
}

/// Writes raw bytes on a fresh connection and returns what the device sent back before closing.
async fn send_bytes(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("the device closes the connection")
        .ok();
    got
}

fn ping() -> Vec<u8> {
    enc(&m(&[
        ("SchemeVersion", t("0.0.1")),
        ("Verify", V::U(0)),
        ("KpAlvSess", V::U(1)),
    ]))
}

#[tokio::test]
async fn bad_frames_get_no_reply_and_end_a_fresh_session() {
    let body = ping();
    let good = encode_request(&body);
    let mut bad_hash = good.clone();
    *bad_hash.last_mut().unwrap() ^= 1;
    let zero_length = [TOKEN.as_slice(), &[0, 0, 0, 0], &[0; HASH_LEN]].concat();
    let oversize = [TOKEN.as_slice(), &(100_000u32).to_le_bytes()].concat();
    let truncated_body = good[..20].to_vec();
    let truncated_hash = good[..good.len() - 5].to_vec();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("bad hash", bad_hash, &FccError::HashMismatch.to_string()),
        (
            "zero length",
            zero_length,
            &FccError::ZeroLength.to_string(),
        ),
        ("oversize", oversize, "100000"),
        (
            "truncated body",
            truncated_body,
            &FccError::Truncated.to_string(),
        ),
        (
            "peer closes inside the hash",
            truncated_hash,
            &FccError::Truncated.to_string(),
        ),
    ];
    let mut errors = Vec::new();
    for (name, bytes, expected) in cases {
        let (addr, mut handle) = gateway(GatewayConfig {
            max_frame_len: 4096,
            ..GatewayConfig::default()
        })
        .await;
        let got = send_bytes(addr, &bytes, true).await;
        assert!(
            got.is_empty(),
            "{name}: the device must send nothing, got {got:02x?}"
        );
        let report = tokio::time::timeout(Duration::from_secs(10), handle.next_report())
            .await
            .unwrap()
            .unwrap();
        assert!(!report.wire_success, "{name}: the session fails (exit 1)");
        assert_eq!(report.messages, 0);
        let error = report.error.unwrap_or_default();
        assert!(
            error.contains(expected),
            "{name}: {error:?} should mention {expected:?}"
        );
        errors.push(error);
    }
    errors.sort();
    errors.dedup();
    assert_eq!(
        errors.len(),
        4,
        "distinct errors (both truncations are Truncated): {errors:?}"
    );
}

#[tokio::test]
async fn client_side_checks_and_closed_connections_are_distinct_errors() {
    let (addr, _handle) = gateway(GatewayConfig {
        max_frame_len: 4096,
        ..GatewayConfig::default()
    })
    .await;
    let mut client = FccClient::connect(addr, timeouts())
        .await
        .unwrap()
        .with_max_frame_len(64);
    assert!(matches!(
        client.send_raw(&[]).await,
        Err(FccError::ZeroLength)
    ));
    assert!(matches!(
        client.send_raw(&[0; 65]).await,
        Err(FccError::Oversize { len: 65, max: 64 })
    ));

    // A frame the device cannot read: it closes without a reply.
    let (addr, _handle) = gateway(GatewayConfig::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut frame = encode_request(&ping());
    *frame.last_mut().unwrap() ^= 1;
    stream.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
}

#[tokio::test]
async fn garbage_before_the_token_is_skipped() {
    let (addr, mut handle) = gateway(GatewayConfig::default()).await;
    let final_msg = enc(&m(&[("SchemeVersion", t("0.0.2"))]));
    // A partial token followed by a mismatch resets the scan; the mismatching byte is dropped.
    let bytes = [
        b"garbage\x00mbedpr!".as_slice(),
        &encode_request(&final_msg),
    ]
    .concat();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut frames = FramedRead::new(stream, ToolCodec::new());
    let frame = tokio::time::timeout(Duration::from_secs(10), frames.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let fcc_proto::ResponseFrame::Body(body) = frame else {
        panic!("a response body")
    };
    let response = fcc_proto::Response::decode(&body).unwrap();
    assert_eq!(response.return_status, FccStatus::BundleInvalidScheme);
    let report = handle.next_report().await.unwrap();
    assert!(report.wire_success);
}

#[tokio::test]
async fn kept_alive_session_survives_a_receive_error_and_a_reconnect() {
    let pki = Pki::new();
    let (addr, mut handle) = gateway(GatewayConfig::default()).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    let response = client.send_raw(&ping()).await.unwrap();
    assert!(response.is_success());
    // A bad frame on the same connection: no reply, connection closed, session still open.
    let mut frame = encode_request(&ping());
    *frame.last_mut().unwrap() ^= 1;
    client.write_request(&ping()).await.unwrap();
    let _ = client.read_response().await.unwrap();
    drop(client);
    let got = send_bytes(addr, &frame, false).await;
    assert!(got.is_empty());
    // Idle close between frames is not an error either.
    drop(TcpStream::connect(addr).await.unwrap());
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    let response = client.send(&by_tool(&pki)).await.unwrap();
    assert!(response.is_success(), "{}", response.info_message);
    let report = handle.next_report().await.unwrap();
    assert!(report.wire_success);
    assert_eq!(report.messages, 3);
}

#[tokio::test]
async fn several_sessions_each_with_fresh_storage() {
    let pki = Pki::new();
    let (addr, mut handle) = gateway(GatewayConfig {
        sessions: Sessions::Count(2),
        ..GatewayConfig::default()
    })
    .await;
    for _ in 0..2 {
        let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
        let response = client.send(&by_tool(&pki)).await.unwrap();
        assert!(
            response.is_success(),
            "fresh storage: no 'already exists' ({})",
            response.info_message
        );
        assert!(handle.next_report().await.unwrap().wire_success);
    }
    assert!(handle.next_report().await.is_none());
}

#[tokio::test]
async fn response_overflow_is_wire_status_9_over_tcp() {
    let pki = Pki::new();
    let (addr, mut handle) = gateway(GatewayConfig::default()).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    let mut bundle = by_tool(&pki);
    bundle.sid = Some("s".repeat(450));
    let err = client.send(&bundle).await.unwrap_err();
    assert!(
        matches!(err, FccError::WireStatus(WireStatus::FailedToProcessData)),
        "{err}"
    );
    let report = handle.next_report().await.unwrap();
    assert!(!report.wire_success);
    assert_eq!(report.last_status, Some(FccStatus::BundleResponseError));
    assert!(
        report
            .storage
            .contains(ItemKind::Certificate, "mbed.BootstrapDeviceCert"),
        "items stay stored"
    );
}

#[tokio::test]
async fn injected_faults() {
    let fault = |spec: &str| Faults {
        faults: vec![spec.parse::<Fault>().unwrap()],
        seed: Some(7),
    };
    let cfg = |spec: &str| GatewayConfig {
        faults: fault(spec),
        sessions: Sessions::Forever,
        ..GatewayConfig::default()
    };

    let (addr, _h) = gateway(cfg("close")).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    assert!(matches!(
        client.send_raw(&ping()).await,
        Err(FccError::ClosedWithoutResponse)
    ));

    let (addr, _h) = gateway(cfg("corrupt-hash")).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    assert!(matches!(
        client.send_raw(&ping()).await,
        Err(FccError::HashMismatch)
    ));

    let (addr, _h) = gateway(cfg("wire9")).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    assert!(matches!(
        client.send_raw(&ping()).await,
        Err(FccError::WireStatus(WireStatus::FailedToProcessData))
    ));

    let (addr, _h) = gateway(cfg("return-status=17")).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    let r = client.send_raw(&ping()).await.unwrap();
    assert_eq!(
        (r.return_status, r.info_message.as_str()),
        (FccStatus::KcmFileExistError, "General error:")
    );

    let (addr, _h) = gateway(cfg("stall=300")).await;
    let mut client = FccClient::connect(addr, short_read(50)).await.unwrap();
    assert!(matches!(
        client.send_raw(&ping()).await,
        Err(FccError::ReadTimeout)
    ));

    let (addr, _h) = gateway(cfg("never-read")).await;
    let mut client = FccClient::connect(addr, short_read(200)).await.unwrap();
    assert!(matches!(
        client.send_raw(&ping()).await,
        Err(FccError::ReadTimeout)
    ));

    // Probability 0 never fires.
    let (addr, _h) = gateway(cfg("close:0")).await;
    let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
    assert!(client.send_raw(&ping()).await.unwrap().is_success());
}

mod binary {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    struct Running {
        child: std::process::Child,
        addr: SocketAddr,
        address_line: String,
        before: Vec<String>,
        lines: std::sync::mpsc::Receiver<String>,
    }

    fn start(storage: &std::path::Path) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-fcc"))
            .args(["--storage", storage.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut before = Vec::new();
        let (addr, address_line) = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .expect("the address line");
            match regex_lite_addr(&line) {
                Some(addr) => break (addr, line),
                None => before.push(line),
            }
        };
        Running {
            child,
            addr,
            address_line,
            before,
            lines,
        }
    }

    /// `Client IP Address and Port :\s+(\d+\.\d+\.\d+\.\d+):(\d+)`, without a regex dependency.
    fn regex_lite_addr(line: &str) -> Option<SocketAddr> {
        let rest = line.split("Client IP Address and Port :").nth(1)?;
        let rest = rest.trim_start();
        let (ip, port) = rest.split_once(':')?;
        let ip: std::net::Ipv4Addr = ip.parse().ok()?;
        let port: u16 = port.trim_end().parse().ok()?;
        (ip.octets().len() == 4 && rest.len() > 1).then(|| SocketAddr::from((ip, port)))
    }

    fn wait(mut running: Running) -> (i32, Vec<String>) {
        let status = running.child.wait().unwrap();
        let mut lines = Vec::new();
        while let Ok(line) = running.lines.recv_timeout(Duration::from_secs(2)) {
            lines.push(line);
        }
        (status.code().unwrap_or(-1), lines)
    }

    #[test]
    fn binary_provisions_and_exits_0() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path());
        assert!((1024..=65534).contains(&running.addr.port()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let response = rt.block_on(async {
            let mut client = FccClient::connect(running.addr, timeouts()).await.unwrap();
            client.send(&by_tool(&pki)).await.unwrap()
        });
        assert!(response.is_success(), "{}", response.info_message);
        let (code, lines) = wait(running);
        assert_eq!(code, 0);
        for expected in [
            "Storage is erased",
            "Successfully processed comm message",
            "Successfully completed factory flow",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected:?} in {lines:?}"
            );
        }
        assert_eq!(
            std::fs::read(dir.path().join("PrvKey_mbed.BootstrapDevicePrivateKey")).unwrap(),
            pki.device_key_der()
        );
        assert_eq!(
            std::fs::read(dir.path().join("Cert_mbed.BootstrapServerCACert")).unwrap(),
            pki.bootstrap_ca
        );
        assert_eq!(
            std::fs::read(dir.path().join("CfgParam_mbed.MemoryTotalKB")).unwrap(),
            512u32.to_le_bytes()
        );
    }

    #[test]
    fn binary_exits_1_when_the_first_frame_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CfgParam_stale"), b"old").unwrap();
        let running = start(dir.path());
        let mut frame = encode_request(&ping());
        *frame.last_mut().unwrap() ^= 1;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(send_bytes(running.addr, &frame, true));
        assert!(got.is_empty());
        let (code, lines) = wait(running);
        assert_eq!(code, 1);
        assert!(
            lines.iter().any(|l| l == "Inconsistent message signature"),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l == "Storage is erased"),
            "no valid frame, no wipe: {lines:?}"
        );
        assert!(dir.path().join("CfgParam_stale").exists());
    }

    #[test]
    fn help_documents_the_options_and_the_storage_layout() {
        let out = Command::new(env!("CARGO_BIN_EXE_fake-fcc"))
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "--bind",
            "--port",
            "--storage",
            "--sessions",
            "--strict",
            "--fault",
            "--seed",
            "--max-frame-len",
            "PrvKey_<name>",
            "Crt1_<name>",
            "CfgParam_<name>",
            "Client IP Address and Port",
            "KpAlvSess",
            "stall=MS",
            "never-read",
            "exit code 0",
        ] {
            assert!(help.contains(needle), "--help should mention {needle:?}");
        }
        let bad = Command::new(env!("CARGO_BIN_EXE_fake-fcc"))
            .args(["--fault", "explode"])
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown fault"));
    }

    #[test]
    fn fleet_without_pep_fleet_next_to_it_exits_2_naming_it() {
        // A copy of the binary alone in a directory: no `pep-fleet` beside it.
        let dir = tempfile::tempdir().unwrap();
        let lonely = dir.path().join("fake-fcc");
        std::fs::copy(env!("CARGO_BIN_EXE_fake-fcc"), &lonely).unwrap();
        // Another test's thread may fork while the copy's write handle is open; the child holds
        // it until it execs, and exec fails with ETXTBSY meanwhile (a race of multi-threaded
        // test binaries): retry briefly.
        let mut tries = 0;
        let out = loop {
            match Command::new(&lonely)
                .args(["fleet", "--gateways", "1"])
                .output()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("pep-fleet")
                && stderr.contains(&dir.path().join("pep-fleet").display().to_string()),
            "{stderr}"
        );
    }

    #[test]
    fn address_line_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut running = start(dir.path());
        assert_eq!(running.before, [""], "a blank line before the address line");
        assert_eq!(
            running.address_line,
            format!(" Client IP Address and Port :  {}", running.addr)
        );
        let mut after = Vec::new();
        while after.last().map(String::as_str) != Some("Factory flow begins...") {
            after.push(
                running
                    .lines
                    .recv_timeout(Duration::from_secs(20))
                    .expect("start-up lines"),
            );
        }
        assert_eq!(
            after,
            [
                "",
                " Client is waiting for incoming connection...",
                "Factory flow begins..."
            ]
        );
        running.child.kill().unwrap();
        let _ = running.child.wait();
        assert!(
            regex_lite_addr(" Client IP Address and Port :  127.0.0.1:4242")
                == Some("127.0.0.1:4242".parse().unwrap())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_gateways_in_one_process() {
    let pki = std::sync::Arc::new(Pki::new());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let pki = pki.clone();
        tasks.push(tokio::spawn(async move {
            let (addr, mut handle) = gateway(GatewayConfig::default()).await;
            let mut client = FccClient::connect(addr, timeouts()).await.unwrap();
            let response = client.send(&by_tool(&pki)).await.unwrap();
            assert!(response.is_success(), "{}", response.info_message);
            let report = handle.next_report().await.unwrap();
            assert!(report.wire_success);
            report.storage.len()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap() >= 15);
    }
}
