//! Issue #13, "Lost answer": the real `pep-cli provision` against the real `pep-server` and the real
//! `fake-fcc`, with a TCP proxy in between that forwards the identity request but drops the
//! connection instead of passing the server's answer on. The server has committed by then (it sends
//! no answer before its row is durable), so the gateway holds an identity pep-cli never saw.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use pep_client::exit;
use serde_json::Value;

/// What the proxy does after it dropped the first answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Forward every later connection both ways: the server is reachable again.
    Forward,
    /// Stop listening: every later connection is refused (the server is out of reach).
    Refuse,
}

/// A proxy on 127.0.0.1 in front of `upstream`. The first connection's request goes through; the
/// moment the server's answer starts, both connections are closed and the answer is thrown away.
struct DroppingProxy {
    addr: SocketAddr,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
}

impl DroppingProxy {
    fn start(upstream: SocketAddr, then: Then) -> DroppingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let server = TcpStream::connect(upstream).unwrap();
            pump(client.try_clone().unwrap(), server.try_clone().unwrap());
            // Blocks until the server answers: by then the row is committed.
            let mut first = [0u8; 1];
            let n = (&server).read(&mut first).unwrap();
            assert_eq!(n, 1, "the server closed without answering");
            if then == Then::Refuse {
                // Before the client sees the close, so that every new try is refused.
                drop(listener);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        DroppingProxy { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies `from` to `to` in a thread until `from` ends, then ends `to`'s writing half.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The enrollment ID of the certificate FCC stored in `pal`.
fn stored_enrollment_id(pal: &Path) -> String {
    let der = std::fs::read(pal.join("Cert_mbed.BootstrapDeviceCert")).unwrap();
    pep_ca::EnrollmentId::of_certificate(&der).to_string()
}

fn server_enrollment_id(server: &Server, serial: &str) -> String {
    let (status, body) = server.get(&format!("/v3/enrollment-id?serialNumber={serial}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body).unwrap().trim().to_owned()
}

/// The `event` of every audit row of `serial`.
fn audit_events(server: &Server, serial: &str) -> Vec<String> {
    let (status, body) = server.get(&format!("/v3/audit?serialPrefix={serial}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["serial"] == serial)
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

/// `pep-cli provision --install` of `serial` through `url`, results under `dest`.
fn provision(url: &str, dest: &Path, serial: &str, extra: &[&str]) -> std::process::Output {
    let cwd = tempfile::tempdir().unwrap();
    run(cli(url, cwd.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args(["--serial", serial, "--install", "--pal-dest"])
        .arg(dest.join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.join("edge_gw_config"))
        .args(extra))
}

/// The FCC working directories (`.pep-fcc-*`) left in `dir`.
fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".pep-fcc-"))
        })
        .collect()
}

#[test]
fn a_lost_answer_is_asked_for_again_and_the_identity_installed_once() {
    let server = Server::start();
    let proxy = DroppingProxy::start(server.addr, Then::Forward);
    let dest = tempfile::tempdir().unwrap();
    let serial = "GW-LOST-1";
    let out = provision(
        &proxy.url(),
        dest.path(),
        serial,
        &["--answer-retry-delay", "50"],
    );
    assert_code(&out, 0);
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 2,
        "the first answer was dropped, so a second request came"
    );
    let err = stderr(&out);
    assert!(
        err.contains("asking again") && err.contains(serial),
        "the loss is reported: {err}"
    );

    // The identity the server recorded is the one FCC stored and pep-cli installed.
    let eid = server_enrollment_id(&server, serial);
    let text = stdout(&out);
    assert!(text.contains(&format!("Enrollment ID: {eid}")), "{text}");
    let pal = dest.path().join("mcc_config");
    assert_eq!(stored_enrollment_id(&pal), eid);
    let identity: Value = serde_json::from_slice(
        &std::fs::read(dest.path().join("edge_gw_config/identity.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(identity["enrollmentID"], eid.as_str());
    assert_eq!(identity["serialNumber"], serial);
    // Installed, so nothing is kept.
    assert!(
        staging_dirs(dest.path()).is_empty(),
        "{:?}",
        tree(dest.path())
    );

    // One certificate: one attempt, one deployment; the second request was an audited replay.
    let events = audit_events(&server, serial);
    assert!(events.iter().any(|e| e == "replay"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| *e == "attempt").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "deployed").count(),
        1,
        "{events:?}"
    );
    let (_, csv) = server.get("/v3/enrollment-ids.csv");
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.matches(serial).count(), 1, "{csv}");
}

#[test]
fn a_lost_answer_with_the_server_gone_keeps_the_staging_directory_and_exits_answer_lost() {
    let server = Server::start();
    let proxy = DroppingProxy::start(server.addr, Then::Refuse);
    let dest = tempfile::tempdir().unwrap();
    let serial = "GW-LOST-2";
    let out = provision(
        &proxy.url(),
        dest.path(),
        serial,
        &["--answer-retries", "3", "--answer-retry-delay", "20"],
    );
    assert_code(&out, i32::from(exit::ANSWER_LOST));
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);

    // Nothing installed; FCC's results kept, with the identity the server recorded.
    assert!(!dest.path().join("mcc_config").exists());
    assert!(!dest.path().join("edge_gw_config").exists());
    let kept = staging_dirs(dest.path());
    assert_eq!(kept.len(), 1, "{:?}", tree(dest.path()));
    let staging = &kept[0];
    assert_eq!(
        stored_enrollment_id(&staging.join("pal")),
        server_enrollment_id(&server, serial)
    );
    let note = std::fs::read_to_string(staging.join("pep-cli-lost-answer.txt")).unwrap();
    assert!(note.contains(serial), "{note}");

    // The message says where, what and which key, and what to do.
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("pep-cli: error: provision GW-LOST-2: "),
        "{err}"
    );
    for part in [
        staging.to_str().unwrap(),
        "request key",
        "try 3 of 3",
        "FCC exited with status 0",
        "resolve serial GW-LOST-2 on the server",
    ] {
        assert!(last.contains(part), "{part:?} missing: {err}");
    }
    let key = note
        .lines()
        .find_map(|l| l.strip_prefix("request key: "))
        .unwrap();
    assert_eq!(key.len(), 32, "{note}");
    assert!(last.contains(key), "{err}");

    // The operator's way back (docs/pep-cli.md, "Lost answers"): with the server reachable, the same
    // key gives the stored identity, the one in the kept pal/; FCC is not contacted (port 1).
    let work = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        serial,
        "-i",
        "127.0.0.1",
        "-p",
        "1",
        "--request-id",
        key,
    ]));
    assert_code(&out, 0);
    let identity: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("identity.json")).unwrap()).unwrap();
    assert_eq!(
        identity["enrollmentID"],
        stored_enrollment_id(&staging.join("pal")).as_str()
    );
    let events = audit_events(&server, serial);
    assert_eq!(
        events.iter().filter(|e| *e == "attempt").count(),
        1,
        "{events:?}"
    );
    // Without the key, the serial is taken.
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        serial,
        "-i",
        "127.0.0.1",
        "-p",
        "1",
    ]));
    assert_code(&out, i32::from(exit::CONFLICT));
}

/// A scripted HTTP peer on 127.0.0.1: connection N gets `answers[N]` after its request head
/// (`None`: closed without an answer). Returns its URL.
fn scripted_server(answers: Vec<Option<String>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for answer in answers {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if let Some(body) = answer {
                let status = if body.contains("in_doubt") {
                    "409 Conflict"
                } else {
                    "502 Bad Gateway"
                };
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            let _ = conn.shutdown(Shutdown::Both);
        }
    });
    url
}

#[test]
fn in_doubt_stops_the_retries_and_keeps_the_staging_directory() {
    // Lost (closed), then a proxy's 502 page (ask again), then the server's 409 in_doubt (stop).
    let in_doubt = r#"{"error":"serial number GW-DOUBT is in doubt: resolve it","status":409,"serialNumber":"GW-DOUBT","state":"in_doubt"}"#;
    let url = scripted_server(vec![
        None,
        Some("<html>bad gateway</html>".to_owned()),
        Some(in_doubt.to_owned()),
    ]);
    let dest = tempfile::tempdir().unwrap();
    let out = provision(
        &url,
        dest.path(),
        "GW-DOUBT",
        &["--answer-retry-delay", "10", "--fcc-exit-timeout", "1"],
    );
    assert_code(&out, i32::from(exit::ANSWER_LOST));
    let err = stderr(&out);
    assert!(
        err.contains("try 2 of 6") && err.contains("in doubt: resolve it"),
        "stopped at the in_doubt answer: {err}"
    );
    // Nobody injected, so FCC never exited by itself: it was stopped, and its directory kept.
    assert!(err.contains("did not exit within 1 s"), "{err}");
    let kept = staging_dirs(dest.path());
    assert_eq!(kept.len(), 1, "{:?}", tree(dest.path()));
    assert!(err.contains(kept[0].to_str().unwrap()), "{err}");
    assert!(kept[0].join("pep-cli-lost-answer.txt").is_file());
}

#[test]
fn no_new_try_when_retries_are_off_and_a_refused_first_request_keeps_nothing() {
    let server = Server::start();
    let proxy = DroppingProxy::start(server.addr, Then::Forward);
    let dest = tempfile::tempdir().unwrap();
    let out = provision(
        &proxy.url(),
        dest.path(),
        "GW-LOST-3",
        &["--answer-retries", "0"],
    );
    assert_code(&out, i32::from(exit::ANSWER_LOST));
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
    assert!(
        stderr(&out).contains("no new try was made"),
        "{}",
        stderr(&out)
    );
    assert_eq!(staging_dirs(dest.path()).len(), 1);

    // A server that was never reached cannot have provisioned anything: nothing is kept.
    let dest = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = provision(&url, dest.path(), "GW-LOST-4", &[]);
    assert_code(&out, i32::from(exit::UNREACHABLE));
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
}

#[test]
fn a_bad_request_key_is_a_usage_error_before_any_request() {
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = run(cli(&url, work.path()).args([
        "get-one-identity",
        "-s",
        "GW-1",
        "-i",
        "127.0.0.1",
        "-p",
        "1",
        "--request-id",
        "short",
    ]));
    assert_code(&out, i32::from(exit::USAGE));
    assert!(stderr(&out).contains("request key"), "{}", stderr(&out));
    assert!(tree(work.path()).is_empty());
}
