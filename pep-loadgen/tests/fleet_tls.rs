//! `pep-fleet` over HTTPS: the real binary against a small test-only rustls server on 127.0.0.1
//! whose certificate (for the IP 127.0.0.1) is signed by a CA made with rcgen at test time.
//!
//! The server is not pep-server: it answers every request `503` and closes the connection, so
//! each gateway of the fleet opens a new connection and the server can tell, per connection,
//! whether the TLS handshake was a full one or a resumption. What is checked: the fleet reaches
//! an `https://` server only when `--ca-cert` names the CA that signed its certificate; a new
//! connection resumes the TLS session of an earlier one (the session reuse the HTTPS benchmark
//! relies on); a bad `--ca-cert` file stops the fleet with an error that names it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::HandshakeKind;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

const PEP_FLEET: &str = env!("CARGO_BIN_EXE_pep-fleet");

/// A test CA (written to `dir/ca.pem`) and a server certificate and key for 127.0.0.1 it signed.
fn make_certs(dir: &Path) -> (PathBuf, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (
        ca_path,
        cert.der().clone(),
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// What the test server saw of one connection.
#[derive(Debug, Clone)]
struct Seen {
    handshake: Option<HandshakeKind>,
    request_line: Option<String>,
}

/// Starts the test server: every connection is served on its own thread, its first request
/// answered `503` with `Connection: close`. Returns its address and what it saw.
fn start_tls_server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    // rustls' default: stateful resumption from an in-memory cache of 256 sessions.
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = Arc::clone(&config);
            let record = Arc::clone(&record);
            std::thread::spawn(move || serve_one(stream, config, &record));
        }
    });
    (addr, seen)
}

fn serve_one(
    stream: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    record: &Mutex<Vec<Seen>>,
) {
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
    // Reading drives the handshake; a client that refuses the certificate ends it here.
    let mut request_line = String::new();
    let read = tls.read_line(&mut request_line);
    let mut seen = Seen {
        handshake: tls.get_ref().conn.handshake_kind(),
        request_line: None,
    };
    if read.is_ok_and(|n| n > 0) {
        seen.request_line = Some(request_line.trim_end().to_owned());
        let mut line = String::new();
        while tls.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let body = "test server";
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let tls = tls.get_mut();
        let _ = tls.write_all(answer.as_bytes());
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
    record.lock().unwrap().push(seen);
}

fn fleet(addr: SocketAddr, dir: &Path, extra: &[&str]) -> (Output, Option<Value>) {
    let json = dir.join("fleet.json");
    let _ = std::fs::remove_file(&json);
    let output = Command::new(PEP_FLEET)
        .args([
            "--gateways",
            "12",
            "--concurrency",
            "2",
            "--timeout-ms",
            "20000",
        ])
        .arg("--server")
        .arg(format!("https://{addr}"))
        .arg("--json")
        .arg(&json)
        .args(extra)
        .env_remove("PEP_TOKEN")
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    (output, report)
}

#[test]
fn https_fleet_trusts_its_ca_cert_and_resumes_tls_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let (addr, seen) = start_tls_server(cert, key);

    // With the CA: every request reaches the server over TLS and gets its 503.
    let ca_arg = ca.to_str().unwrap();
    let (output, report) = fleet(addr, dir.path(), &["--ca-cert", ca_arg]);
    let report =
        report.unwrap_or_else(|| panic!("no report: {}", String::from_utf8_lossy(&output.stderr)));
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(output.status.code(), Some(1), "the 503s are failures");
    let failures = report["failures"].as_object().unwrap();
    assert_eq!(
        failures.keys().collect::<Vec<_>>(),
        ["http_503"],
        "{failures:?}"
    );
    assert_eq!(report["failures"]["http_503"]["unexpected"], 12);
    let served = seen.lock().unwrap().clone();
    assert_eq!(served.len(), 12, "{served:?}");
    for s in &served {
        let line = s.request_line.as_deref().unwrap_or_default();
        assert!(
            line.starts_with("GET /v3/identity?serialNumber=") && line.ends_with(" HTTP/1.1"),
            "{line}"
        );
    }
    // The server closed every connection, so each gateway's request came on a new one: all but
    // the first two (opened at once, before any session is cached) resume a session; some slack
    // for a connection opened before the ticket of a finished one was read. Without session
    // resumption in the client, none would.
    let full = served
        .iter()
        .filter(|s| s.handshake == Some(HandshakeKind::Full))
        .count();
    let resumed = served
        .iter()
        .filter(|s| s.handshake == Some(HandshakeKind::Resumed))
        .count();
    println!("handshakes: {full} full, {resumed} resumed");
    assert_eq!(full + resumed, 12, "{served:?}");
    assert!(resumed >= 8, "{full} full, {resumed} resumed handshakes");

    // Without it, the server's certificate is not trusted: no request gets through.
    seen.lock().unwrap().clear();
    let (output, report) = fleet(addr, dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let report = report.unwrap();
    assert_eq!(
        report["failures"]["transport"]["unexpected"], 12,
        "{report}"
    );
    let examples = report["examples"].to_string();
    assert!(examples.contains("certificate"), "{examples}");
    let served = seen.lock().unwrap().clone();
    assert!(
        served.iter().all(|s| s.request_line.is_none()),
        "{served:?}"
    );
}

#[test]
fn bad_ca_cert_files_stop_the_fleet_with_an_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, says) in [
        (&not_pem, "holds no usable PEM certificate"),
        (&missing, "cannot read"),
    ] {
        let (output, report) = fleet(addr, dir.path(), &["--ca-cert", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(report.is_none());
        assert!(
            stderr.contains("--ca-cert")
                && stderr.contains(says)
                && stderr.contains(file.to_str().unwrap()),
            "{stderr}"
        );
    }
    // A CA with a plain-HTTP URL is refused before the run.
    let output = Command::new(PEP_FLEET)
        .args([
            "--gateways",
            "1",
            "--server",
            "http://127.0.0.1:9",
            "--ca-cert",
        ])
        .arg(&not_pem)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ca-cert") && stderr.contains("https://"),
        "{stderr}"
    );
}
