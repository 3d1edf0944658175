//! HTTPS on the API (issue #14 §1), with real `pep-server` processes and certificates made by
//! rcgen at test time: reqwest over HTTPS, station certificates (mTLS) accepted and refused,
//! certificate rotation by SIGHUP while a client loops, plain HTTP beyond loopback refused, and
//! bad TLS files refused at start naming the file.

use crate::http_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fake_fcc::Sessions;
use http_support::{BOTH, Options, Server, config_toml, gateway, identity_path};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};

/// A test CA: its certificate (PEM) and what it needs to sign.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `cn` (also its SAN DNS name when `san`), with this serial: (cert PEM, key PEM).
    fn leaf(
        &self,
        cn: &str,
        san: bool,
        serial: u8,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let sans = if san { vec![cn.to_owned()] } else { Vec::new() };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from_slice(&[serial]));
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes the server certificate (serial `serial`) and key into `dir` as server.pem/server.key.
fn write_server_cert(ca: &TestCa, dir: &Path, serial: u8) {
    let (cert, key) = ca.leaf(
        "localhost",
        true,
        serial,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
}

/// Starts a server with `[tls]` (server certificate serial 1) and `extra` appended to the config.
async fn start_tls(ca: &TestCa, extra: &str) -> (Server, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(ca, dir.path(), 1);
    let config = format!(
        "{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        config_toml(dir.path(), &Options::default()),
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display(),
    );
    std::fs::write(dir.path().join("pep.toml"), config).unwrap();
    let server = Server::start_in(dir).await;
    let addr: SocketAddr = server
        .base
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    (server, addr)
}

/// A reqwest client trusting only `ca`, reaching `localhost` at `addr`, with an optional
/// client certificate (cert PEM + key PEM).
fn client(ca: &TestCa, addr: SocketAddr, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .tls_info(true)
        .timeout(Duration::from_secs(60));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// The serial of the certificate the server presented for `response`.
fn served_serial(response: &reqwest::Response) -> Vec<u8> {
    use x509_cert::der::Decode as _;
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info");
    let der = info.peer_certificate().expect("a server certificate");
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    cert.tbs_certificate.serial_number.as_bytes().to_vec()
}

#[tokio::test]
async fn https_serves_healthz_and_provisions_and_refuses_plain_http() {
    let ca = TestCa::new("pep test CA");
    let (server, addr) = start_tls(&ca, "").await;
    let c = client(&ca, addr, None);
    let r = c.get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_serial(&r), [1]);

    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let r = c
        .get(url(addr, &identity_path("GW-TLS-1", gw)))
        .bearer_auth(BOTH)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("GW-TLS-1"), "{body}");

    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client not trusting the test CA refuses the server.
    let other = TestCa::new("another CA");
    assert!(
        client(&other, addr, None)
            .get(url(addr, "/healthz"))
            .send()
            .await
            .is_err()
    );
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn station_certificates_authenticate_and_are_scoped() {
    let ca = TestCa::new("pep test CA");
    let stations = TestCa::new("station CA");
    let dir = tempfile::tempdir().unwrap();
    let client_ca = dir.path().join("stations.pem");
    std::fs::write(&client_ca, stations.pem()).unwrap();
    let extra = format!(
        "client_ca = \"{}\"\n\n[[stations]]\nsubject = \"station-1.factory\"\nroles = [\"provision\"]\nserial_prefixes = [\"GW-LINE1-\"]\n\n[[stations]]\nsubject = \"reader.factory\"\nroles = [\"read\"]\n",
        client_ca.display()
    );
    let (server, addr) = start_tls(&ca, &extra).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;

    // Station 1 by its CN: provisions within its prefix, 403 outside it, 403 on reads.
    let station1 = stations.leaf(
        "station-1.factory",
        false,
        9,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let c = client(&ca, addr, Some(&station1));
    let r = c
        .get(url(addr, &identity_path("GW-LINE1-1", gw)))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let r = c
        .get(url(addr, &identity_path("GW-LINE2-1", gw)))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("GW-LINE1-"), "{body}");
    let r = c.get(url(addr, "/v3/enrollment-ids")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // A bearer token keeps working beside the certificate, and wins over it.
    let r = c
        .get(url(addr, "/v3/enrollment-ids"))
        .bearer_auth(BOTH)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The reader station by its SAN DNS name reads.
    let reader = stations.leaf(
        "reader.factory",
        true,
        10,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let r = client(&ca, addr, Some(&reader))
        .get(url(addr, "/v3/enrollment-ids"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Signed by the station CA but mapped to no station: no role.
    let stranger = stations.leaf(
        "station-9.factory",
        false,
        11,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let r = client(&ca, addr, Some(&stranger))
        .get(url(addr, &identity_path("GW-LINE1-2", gw)))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("station-9.factory"), "{body}");

    // Signed by an unknown CA: the handshake fails.
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = rogue_ca.leaf(
        "station-1.factory",
        false,
        12,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let e = client(&ca, addr, Some(&rogue))
        .get(url(addr, "/healthz"))
        .send()
        .await;
    assert!(e.is_err(), "{e:?}");

    // No certificate, no token: 401 as before.
    let r = client(&ca, addr, None)
        .get(url(addr, "/v3/enrollment-ids"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    drop(server);
}

#[tokio::test]
async fn sighup_rotates_the_certificate_without_failing_a_request() {
    let ca = TestCa::new("pep test CA");
    let (server, addr) = start_tls(&ca, "").await;
    // A new connection (and handshake) per request, so the loop crosses the swap.
    let looping = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loop_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut done = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = looping.get(url(addr, "/healthz")).send().await;
                match r {
                    Ok(r) if r.status() == 200 => done += 1,
                    other => panic!("request {done} failed during rotation: {other:?}"),
                }
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_server_cert(&ca, server.dir.path(), 2);
    server.signal("HUP");
    // Wait until a fresh connection sees the new certificate (the reload is asynchronous).
    let mut serial = Vec::new();
    for _ in 0..100 {
        let r = client(&ca, addr, None)
            .get(url(addr, "/healthz"))
            .send()
            .await
            .unwrap();
        serial = served_serial(&r);
        if serial == [2] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        serial,
        [2],
        "the new certificate is not served after SIGHUP"
    );

    // A broken new file keeps the old pair in service and is logged by name.
    std::fs::write(server.dir.path().join("server.pem"), "not a certificate").unwrap();
    server.signal("HUP");
    let mut logged = false;
    for _ in 0..100 {
        if server.log().contains("not reloaded") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "{}", server.log());
    assert!(server.log().contains("server.pem"), "{}", server.log());
    let r = client(&ca, addr, None)
        .get(url(addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served_serial(&r), [2]);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = loop_task.await.unwrap();
    assert!(done > 0);
    drop(server);
}

/// Runs `pep-server` on `config` (in `dir`) expecting it to refuse to start: its exit code and
/// stderr.
fn run_refused(dir: &Path, config: &str) -> (Option<i32>, String) {
    std::fs::write(dir.join("pep.toml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("--config")
        .arg(dir.join("pep.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn plain_http_beyond_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let base = config_toml(dir.path(), &Options::default());
    let wide = base.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    assert_ne!(wide, base);
    let (code, out) = run_refused(dir.path(), &wide);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("listen") && out.contains("allow_plain_http"),
        "{out}"
    );
    assert!(out.contains("[tls]"), "{out}");
    // check-config says the same.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(["check-config", "--config"])
        .arg(dir.path().join("pep.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("allow_plain_http"), "{text}");
    // With allow_plain_http the check passes (the test token is fine beyond loopback).
    std::fs::write(
        dir.path().join("pep.toml"),
        format!("allow_plain_http = true\n{wide}"),
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(["check-config", "--config"])
        .arg(dir.path().join("pep.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(!text.contains("allow_plain_http"), "{text}");
}

#[test]
fn bad_tls_files_are_refused_at_start_naming_them() {
    let ca = TestCa::new("pep test CA");
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(&ca, dir.path(), 1);
    let base = config_toml(dir.path(), &Options::default());
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    for (c, k, field, needle) in [
        (&missing, &key, "tls.cert", missing.display().to_string()),
        (&cert, &missing, "tls.key", missing.display().to_string()),
        (&cert, &garbage, "tls.key", garbage.display().to_string()),
        (
            &cert,
            &other_key,
            "tls.key",
            other_key.display().to_string(),
        ),
    ] {
        let config = format!(
            "{base}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        );
        let (code, out) = run_refused(dir.path(), &config);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains(field) && out.contains(&needle),
            "{field}: {out}"
        );
    }
}

/// The floor session cookie is `Secure` when the server itself serves TLS (and not over plain
/// HTTP, where the browser would drop it).
#[tokio::test]
async fn the_floor_session_cookie_is_secure_under_tls() {
    let ca = TestCa::new("pep test CA");
    let (_server, addr) = start_tls(&ca, "").await;
    let no_redirect = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let session_cookie = |r: &reqwest::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| !c.starts_with("pep_login="))
            .unwrap_or_else(|| panic!("no session cookie in {:?}", r.headers()))
    };
    let base = format!("https://localhost:{}", addr.port());
    let r = http_support::floor_login(&no_redirect, &base, BOTH).await;
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&r);
    assert!(cookie.contains("; Secure"), "{cookie}");

    // The same login over plain HTTP: no Secure flag.
    let plain = Server::start(Options::default()).await;
    let plain_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http_support::floor_login(&plain_client, &plain.base, BOTH).await;
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&r);
    assert!(!cookie.contains("Secure"), "{cookie}");
}

/// `check-config`'s summary names the https scheme and counts the certificate stations.
#[test]
fn check_config_summary_shows_https_and_the_stations() {
    let ca = TestCa::new("pep test CA");
    let stations = TestCa::new("station CA");
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(&ca, dir.path(), 1);
    let client_ca = dir.path().join("stations.pem");
    std::fs::write(&client_ca, stations.pem()).unwrap();
    let config = format!(
        "{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n[[stations]]\nsubject = \"station-1.factory\"\nroles = [\"provision\"]\n\n[[stations]]\nsubject = \"reader.factory\"\nroles = [\"read\"]\n",
        config_toml(dir.path(), &Options::default()),
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display(),
        client_ca.display(),
    );
    std::fs::write(dir.path().join("pep.toml"), config).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(["check-config", "--config"])
        .arg(dir.path().join("pep.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{text}");
    let listen = text
        .lines()
        .find(|l| l.starts_with("listen:"))
        .unwrap_or_else(|| panic!("no listen line in {text}"));
    assert!(listen.contains("https://127.0.0.1:"), "{listen}");
    let stations = text
        .lines()
        .find(|l| l.starts_with("stations:"))
        .unwrap_or_else(|| panic!("no stations line in {text}"));
    assert!(
        stations.ends_with(", 2 by client certificate"),
        "{stations}"
    );
}
