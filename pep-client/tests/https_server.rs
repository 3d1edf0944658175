//! `pep-cli` against the real `pep-server` over HTTPS (issue #14 §1): `[tls]` with a CA and
//! certificates made at test time, station certificates through `[tls] client_ca`.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::pki::{Pki, make_pki};

/// A `pep-server` serving HTTPS with `server`'s certificate, asking for station certificates
/// signed by `stations`' CA; the station `station-1` may read.
fn https_server(server: &Pki, stations: &Pki) -> common::Server {
    common::Server::start_with(&format!(
        r#"
[tls]
cert = "{}"
key = "{}"
client_ca = "{}"

[[stations]]
subject = "station-1"
roles = ["read"]
"#,
        server.cert_pem.display(),
        server.key_pem.display(),
        stations.ca_pem.display(),
    ))
}

/// `pep-cli get-enrollment-id -s GW-1` at `url` with `args`; with the test token unless `token`
/// is false.
fn get_enrollment_id(url: &str, token: bool, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::cli(url, dir.path());
    for var in [
        "PEP_CA_CERT",
        "PEP_CA_CERT_ONLY",
        "PEP_CLIENT_CERT",
        "PEP_CLIENT_KEY",
    ] {
        cmd.env_remove(var);
    }
    if !token {
        cmd.env_remove("PEP_API_TOKEN");
    }
    cmd.args(["get-enrollment-id", "-s", "GW-1"]).args(args);
    common::run(&mut cmd)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        common::stdout(out),
        common::stderr(out)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pep_cli_reaches_pep_server_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let station = make_pki(dir.path(), "station-1", &["station-1"]);
    let other = make_pki(dir.path(), "other", &["localhost"]);
    let server = https_server(&pki, &station);
    let url = format!("https://{}", server.addr);

    // With the CA: the server answers (404: GW-1 was never provisioned), so TLS and the token
    // both went through.
    let ok = get_enrollment_id(&url, true, &["--ca-cert", path(&pki.ca_pem)]);
    assert_eq!(ok.status.code(), Some(7), "{}", text(&ok));
    assert!(common::stderr(&ok).contains("HTTP 404"), "{}", text(&ok));
    let pinned = get_enrollment_id(
        &url,
        true,
        &["--ca-cert", path(&pki.ca_pem), "--ca-cert-only"],
    );
    assert_eq!(pinned.status.code(), Some(7), "{}", text(&pinned));

    // Without it, or pinned to another CA: a TLS failure that says what to do.
    let no_ca = get_enrollment_id(&url, true, &[]);
    assert_eq!(no_ca.status.code(), Some(3), "{}", text(&no_ca));
    assert!(
        common::stderr(&no_ca).contains("--ca-cert"),
        "{}",
        text(&no_ca)
    );
    let wrong = get_enrollment_id(
        &url,
        true,
        &["--ca-cert", path(&other.ca_pem), "--ca-cert-only"],
    );
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong));

    // Plain HTTP to the TLS port fails too (no silent downgrade).
    let plain = get_enrollment_id(&format!("http://{}", server.addr), true, &[]);
    assert_ne!(plain.status.code(), Some(0), "{}", text(&plain));
}

#[test]
fn a_station_certificate_authenticates_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let station = make_pki(dir.path(), "station-1", &["station-1"]);
    let server = https_server(&pki, &station);
    let url = format!("https://{}", server.addr);

    // No token, no certificate: 401.
    let anonymous = get_enrollment_id(&url, false, &["--ca-cert", path(&pki.ca_pem)]);
    assert_eq!(anonymous.status.code(), Some(4), "{}", text(&anonymous));
    // No token, the station's certificate: the station's read role is enough (404 for GW-1).
    let station_ok = get_enrollment_id(
        &url,
        false,
        &[
            "--ca-cert",
            path(&pki.ca_pem),
            "--client-cert",
            path(&station.cert_pem),
            "--client-key",
            path(&station.key_pem),
        ],
    );
    assert_eq!(station_ok.status.code(), Some(7), "{}", text(&station_ok));
}
