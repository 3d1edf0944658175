//! `pep-cli` over HTTPS (issue #14 §1) against a test-only rustls server, with a CA and
//! certificates made at test time; and `_links.next` never taking the token to another origin.

use crate::common;

use common::pki::{Pki, make_pki};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use tokio_rustls::rustls;

const ENROLLMENT_ID: &str = "A-35:7f:83:36:9b:b2:9a:7f:e7:49:ee:ea:28:01:5c:72:8d:6f:97:8b:cf:91:83:62:2a:45:e1:35:95:3a:a1:be";

/// A test-only HTTPS server on 127.0.0.1: answers every request with the enrollment ID, and
/// requires a client certificate signed by `client_ca` when given.
fn https_server(server: &Pki, client_ca: Option<&Pki>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.ca_der.clone().into()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(
            vec![server.cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server.key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake is what some tests want: the client reports it.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ENROLLMENT_ID}",
                        ENROLLMENT_ID.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    url
}

/// `pep-cli get-enrollment-id GW-1` against `url` with `args`, nothing from the environment.
fn get_enrollment_id(url: &str, args: &[&Path], flags: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::cli(url, dir.path());
    clean_env(&mut cmd);
    cmd.args(["get-enrollment-id", "-s", "GW-1"]);
    for (flag, path) in flags.iter().zip(args) {
        cmd.arg(flag).arg(path);
    }
    for flag in flags.iter().skip(args.len()) {
        cmd.arg(flag);
    }
    common::run(&mut cmd)
}

fn clean_env(cmd: &mut Command) {
    for var in [
        "PEP_CA_CERT",
        "PEP_CA_CERT_ONLY",
        "PEP_CLIENT_CERT",
        "PEP_CLIENT_KEY",
    ] {
        cmd.env_remove(var);
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        common::stdout(out),
        common::stderr(out)
    )
}

#[test]
fn https_with_the_servers_ca_works_and_without_it_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = make_pki(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let other = make_pki(dir.path(), "other", &["localhost"]);
    let url = https_server(&server, None);

    let ok = get_enrollment_id(&url, &[&server.ca_pem], &["--ca-cert"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(common::stdout(&ok).trim(), ENROLLMENT_ID);

    // Without the CA: the Mozilla roots do not know it; the message says what to do.
    let no_ca = get_enrollment_id(&url, &[], &[]);
    assert_eq!(no_ca.status.code(), Some(3), "{}", text(&no_ca));
    let err = common::stderr(&no_ca);
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "{err}"
    );

    // Pinned to the right CA: works; pinned to another CA: refused.
    let pinned = get_enrollment_id(&url, &[&server.ca_pem], &["--ca-cert", "--ca-cert-only"]);
    assert_eq!(pinned.status.code(), Some(0), "{}", text(&pinned));
    let wrong = get_enrollment_id(&url, &[&other.ca_pem], &["--ca-cert", "--ca-cert-only"]);
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong));
    assert!(
        common::stderr(&wrong).contains("--ca-cert"),
        "{}",
        text(&wrong)
    );

    // The environment does the same as the flags (CI images).
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = common::cli(&url, tmp.path());
    clean_env(&mut cmd);
    cmd.env("PEP_CA_CERT", &server.ca_pem)
        .env("PEP_CA_CERT_ONLY", "1")
        .args(["get-enrollment-id", "-s", "GW-1"]);
    let env = common::run(&mut cmd);
    assert_eq!(env.status.code(), Some(0), "{}", text(&env));
}

#[test]
fn ca_cert_only_without_a_ca_is_a_usage_error() {
    let out = get_enrollment_id("https://127.0.0.1:1", &[], &["--ca-cert-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(common::stderr(&out).contains("--ca-cert"), "{}", text(&out));
}

#[test]
fn mutual_tls_accepts_the_station_certificate_and_refuses_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = make_pki(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let station = make_pki(dir.path(), "station-1", &["station-1"]);
    let stranger = make_pki(dir.path(), "stranger", &["stranger"]);
    let url = https_server(&server, Some(&station));

    let ok = get_enrollment_id(
        &url,
        &[&server.ca_pem, &station.cert_pem, &station.key_pem],
        &["--ca-cert", "--client-cert", "--client-key"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(common::stdout(&ok).trim(), ENROLLMENT_ID);

    let none = get_enrollment_id(&url, &[&server.ca_pem], &["--ca-cert"]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none));
    let foreign = get_enrollment_id(
        &url,
        &[&server.ca_pem, &stranger.cert_pem, &stranger.key_pem],
        &["--ca-cert", "--client-cert", "--client-key"],
    );
    assert_eq!(foreign.status.code(), Some(3), "{}", text(&foreign));
}

#[test]
fn client_certificate_flags_are_checked_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let station = make_pki(dir.path(), "station-1", &["station-1"]);
    // No server listens there: each failure must come before any connection.
    let url = "https://127.0.0.1:1";

    let no_key = get_enrollment_id(url, &[&station.cert_pem], &["--client-cert"]);
    assert_eq!(no_key.status.code(), Some(2), "{}", text(&no_key));
    assert!(
        common::stderr(&no_key).contains("--client-key"),
        "{}",
        text(&no_key)
    );

    let no_cert = get_enrollment_id(url, &[&station.key_pem], &["--client-key"]);
    assert_eq!(no_cert.status.code(), Some(2), "{}", text(&no_cert));
    assert!(
        common::stderr(&no_cert).contains("--client-cert"),
        "{}",
        text(&no_cert)
    );

    let junk = dir.path().join("junk.key");
    std::fs::write(
        &junk,
        "-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n",
    )
    .unwrap();
    let bad_key = get_enrollment_id(
        url,
        &[&station.cert_pem, &junk],
        &["--client-cert", "--client-key"],
    );
    assert_eq!(bad_key.status.code(), Some(2), "{}", text(&bad_key));
    assert!(
        common::stderr(&bad_key).contains("junk.key"),
        "{}",
        text(&bad_key)
    );

    let missing = dir.path().join("missing.pem");
    let unreadable = get_enrollment_id(
        url,
        &[&missing, &station.key_pem],
        &["--client-cert", "--client-key"],
    );
    assert_eq!(unreadable.status.code(), Some(2), "{}", text(&unreadable));
    assert!(
        common::stderr(&unreadable).contains("missing.pem"),
        "{}",
        text(&unreadable)
    );
}

/// What a plain HTTP test server saw: the request heads, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// Serves `answer(head)` to every request on 127.0.0.1, one request per connection.
fn http_server(answer: impl Fn(&str) -> String + Send + 'static) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let head = read_head(&mut conn);
            log.lock().unwrap().push(head.clone());
            let body = answer(&head);
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn a_next_link_to_another_origin_is_refused_and_gets_no_token() {
    // The other origin: another port of 127.0.0.1, which records every request it gets.
    let (other_port, other_seen) = http_server(|_| r#"{"results":[]}"#.to_owned());
    let (port, seen) = http_server(move |head| {
        // Page 1 links to the other origin (http on another port); a same-origin page 2 exists
        // to show that following links works at all.
        let next = if head.contains("page=2") {
            format!("http://127.0.0.1:{other_port}/v3/enrollment-ids?page=3")
        } else {
            "/v3/enrollment-ids?page=2".to_owned()
        };
        format!(
            r#"{{"results":[{{"enrollmentID":"{ENROLLMENT_ID}","serialNumber":"GW-1"}}],"_links":{{"next":{{"href":"{next}"}}}}}}"#
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::cli(&format!("http://127.0.0.1:{port}"), dir.path());
    clean_env(&mut cmd);
    cmd.args(["list-enrollment-ids", "--all"])
        .stdout(Stdio::piped());
    let out = common::run(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("not followed") && err.contains(&format!("127.0.0.1:{other_port}")),
        "{err}"
    );
    assert!(!err.contains(common::TOKEN), "{err}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|h| h.to_ascii_lowercase().contains("authorization: bearer")),
        "the server itself gets the token: {seen:?}"
    );
    // pep-cli has exited: a request to the other origin would have been logged by now.
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "the other origin was asked: {:?}",
        other_seen.lock().unwrap()
    );
}

#[test]
fn a_redirect_to_another_origin_is_followed_without_the_token() {
    let (other_port, other_seen) = http_server(|_| ENROLLMENT_ID.to_owned());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            log.lock().unwrap().push(read_head(&mut conn));
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{other_port}/v3/enrollment-id?serialNumber=GW-1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::cli(&format!("http://127.0.0.1:{port}"), dir.path());
    clean_env(&mut cmd);
    cmd.args(["get-enrollment-id", "-s", "GW-1"]);
    let out = common::run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() == 1
            && seen[0]
                .to_ascii_lowercase()
                .contains("authorization: bearer"),
        "{seen:?}"
    );
    let other = other_seen.lock().unwrap();
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(
        !other[0].to_ascii_lowercase().contains("authorization"),
        "the token went to another origin: {other:?}"
    );
}
