//! `pep-cli revoke` (issue #16) against the real `pep-server`: the identity is revoked and listed
//! in the CRL; a second revocation, an unknown serial, a token without the role and bad flags
//! each end with their exit code and change nothing.

use crate::common;

use common::*;
use pep_client::exit;
use serde_json::Value;

/// A token with the `revoke` role only.
const REVOKER: &str = "pep-test-token-revoke-0123456789";

fn code(c: u8) -> i32 {
    i32::from(c)
}

fn start() -> Server {
    Server::start_with(&format!(
        "[[tokens]]\nname = \"revoker\"\ntoken = \"{REVOKER}\"\nroles = [\"revoke\"]\n"
    ))
}

/// `pep-cli revoke ARGS` with the revoke token.
fn revoke(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    let cwd = tempfile::tempdir().unwrap();
    run(cli(&server.url(), cwd.path())
        .env("PEP_API_TOKEN", token)
        .arg("revoke")
        .args(args))
}

fn identity(server: &Server, serial: &str) -> Value {
    let (status, body) = server.get(&format!("/v3/identities/{serial}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn revoke_revokes_and_every_failure_has_its_exit_code() {
    let server = start();
    let gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        "GW-CLI-RV",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
    ]));
    assert_code(&out, 0);
    let cert = identity(&server, "GW-CLI-RV")["current"]["certificateSerial"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bad flags: usage errors, before any request.
    for args in [
        &["-s", "GW-CLI-RV", "--reason", "certificateHold"][..],
        &["-s", "GW-CLI-RV", "--reason", "lost"],
        &["-s", "GW-CLI-RV"],
        &["-s", "GW CLI\u{1}", "--reason", "keyCompromise"],
    ] {
        let out = revoke(&server, REVOKER, args);
        assert_code(&out, code(exit::USAGE));
    }
    let out = revoke(&server, REVOKER, &["-s", "GW-CLI-RV", "--reason", "lost"]);
    assert!(stderr(&out).contains("keyCompromise"), "{}", stderr(&out));
    assert_eq!(
        identity(&server, "GW-CLI-RV")["current"]["state"],
        "deployed"
    );

    // A token without the revoke role: the auth exit code, nothing revoked.
    let out = revoke(
        &server,
        TOKEN,
        &["-s", "GW-CLI-RV", "--reason", "keyCompromise"],
    );
    assert_code(&out, code(exit::AUTH));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert_eq!(
        identity(&server, "GW-CLI-RV")["current"]["state"],
        "deployed"
    );

    // Unknown serial.
    let out = revoke(
        &server,
        REVOKER,
        &["-s", "GW-NOBODY", "--reason", "keyCompromise"],
    );
    assert_code(&out, code(exit::NOT_FOUND));

    // The revocation.
    let out = revoke(
        &server,
        REVOKER,
        &[
            "-s",
            "GW-CLI-RV",
            "--reason",
            "keyCompromise",
            "--note",
            "returned, RMA 12",
        ],
    );
    assert_code(&out, 0);
    let printed = stdout(&out);
    assert!(
        printed.contains("GW-CLI-RV revoked (keyCompromise)"),
        "{printed}"
    );
    assert!(printed.contains(&cert), "{printed}");
    let now = identity(&server, "GW-CLI-RV");
    assert_eq!(now["current"]["state"], "revoked");
    assert_eq!(now["current"]["revocation"]["reason"], "keyCompromise");
    assert_eq!(now["current"]["revocation"]["note"], "returned, RMA 12");
    let (status, crl) = server.get("/v3/crl?format=pem");
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crl.pem"), &crl).unwrap();
    let text = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(dir.path().join("crl.pem"))
        .output()
        .expect("the openssl CLI is installed");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("Serial Number: {cert}")), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");

    // Again: conflict.
    let out = revoke(
        &server,
        REVOKER,
        &["-s", "GW-CLI-RV", "--reason", "superseded"],
    );
    assert_code(&out, code(exit::CONFLICT));
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
}
