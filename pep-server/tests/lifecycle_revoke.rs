//! Issue #16, revocation: the real `pep-server` binary with a SQLite file, real fake-fcc
//! gateways, the openssl CLI. Revoke → the CSVs and the CRL follow; the serial is provisioned
//! again; its history shows both identities; the CRL number grows across a restart; every bad
//! request is refused naming what was wrong.

use crate::http_support;

use der::{Decode, Encode};
use fake_fcc::Sessions;
use http_support::*;
use p256::ecdsa::signature::Verifier;
use serde_json::{Value, json};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;

/// A token with the `revoke` role (and `read`).
const REVOKER: &str = "test-token-revoke-0123456789";
/// The distribution point written into the device certificates.
const CRL_URL: &str = "http://pki.factory.example/v3/crl";

/// The harness's config plus a revoke token and `[crl]`.
fn start_config(dir: &std::path::Path) {
    let toml = format!(
        "{}\n[[tokens]]\nname = \"revoker\"\ntoken = \"{REVOKER}\"\nroles = [\"revoke\", \"read\"]\n\n\
         [crl]\nvalidity_hours = 2\ndistribution_url = \"{CRL_URL}\"\n",
        config_toml(dir, &Options::default())
    );
    std::fs::write(dir.join("pep.toml"), toml).unwrap();
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    start_config(dir.path());
    Server::start_in(dir).await
}

async fn revoke(server: &Server, serial: &str, body: &str, token: &str) -> (u16, Value) {
    let r = server
        .client
        .post(format!(
            "{}/v3/identities/{}/revoke",
            server.base,
            encode(serial)
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}"));
    (status, json)
}

/// The CRL as DER, with its number header.
async fn crl(server: &Server) -> (Vec<u8>, u64) {
    let r = server.get("/v3/crl", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pkix-crl");
    let number = r.headers()["x-crl-number"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (r.bytes().await.unwrap().to_vec(), number)
}

/// Parses `der` with x509-cert, checks its signature with the fixture CA's key and its number
/// extension, and returns the listed serial numbers (upper-case hex) with their reason codes.
fn parse_crl(der: &[u8], number: u64) -> Vec<(String, Option<u8>)> {
    let crl = CertificateList::from_der(der).expect("the CRL parses");
    let ca_pem = std::fs::read_to_string(fixtures().join("ca/CA_cert.pem")).unwrap();
    let (_, ca_der) = der::pem::decode_vec(ca_pem.as_bytes()).unwrap();
    let ca = Certificate::from_der(&ca_der).unwrap();
    assert_eq!(crl.tbs_cert_list.issuer, ca.tbs_certificate.subject);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(
        ca.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let signature = p256::ecdsa::Signature::from_der(crl.signature.raw_bytes()).unwrap();
    key.verify(&crl.tbs_cert_list.to_der().unwrap(), &signature)
        .expect("the CRL's signature verifies with the CA key");
    let exts = crl.tbs_cert_list.crl_extensions.as_ref().unwrap();
    let n = exts
        .iter()
        .find(|e| e.extn_id == der::oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .unwrap();
    let n = der::asn1::Uint::from_der(n.extn_value.as_bytes()).unwrap();
    let n = n
        .as_bytes()
        .iter()
        .fold(0u64, |a, b| a << 8 | u64::from(*b));
    assert_eq!(n, number, "the header names the CRL's number");
    let this = crl.tbs_cert_list.this_update.to_unix_duration();
    let next = crl.tbs_cert_list.next_update.unwrap().to_unix_duration();
    assert_eq!(
        (next - this).as_secs(),
        2 * 3600,
        "[crl] validity_hours = 2"
    );
    crl.tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let serial = hex::encode_upper(e.serial_number.as_bytes());
            let reason = e.crl_entry_extensions.as_ref().map(|exts| {
                assert_eq!(exts[0].extn_id, der::oid::db::rfc5280::ID_CE_CRL_REASONS);
                // ENUMERATED, one content byte.
                exts[0].extn_value.as_bytes()[2]
            });
            (serial, reason)
        })
        .collect()
}

/// `openssl crl -verify` against the fixture CA.
fn openssl_verifies(dir: &std::path::Path, der: &[u8]) {
    std::fs::write(dir.join("crl.der"), der).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in"])
        .arg(dir.join("crl.der"))
        .arg("-CAfile")
        .arg(fixtures().join("ca/CA_cert.pem"))
        .args(["-noout", "-verify"])
        .output()
        .expect("the openssl CLI is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("verify OK"), "{text}");
}

async fn csv(server: &Server, query: &str) -> String {
    let (status, text) = server
        .get_text(&format!("/v3/enrollment-ids.csv{query}"), Some(READ))
        .await;
    assert_eq!(status, 200, "{text}");
    text
}

async fn history(server: &Server, serial: &str) -> Value {
    let (status, body) = server
        .get_json(&format!("/v3/identities/{}", encode(serial)), Some(READ))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn revoke_lists_the_certificate_in_the_crl_and_the_serial_is_provisioned_again() {
    let server = start().await;
    let (gw, _gw) = gateway(Sessions::Forever, &[]).await;
    let (status, first) = server.identity("GW-RV-1", gw).await;
    assert_eq!(status, 200, "{first}");
    let (status, other) = server.identity("GW-RV-2", gw).await;
    assert_eq!(status, 200, "{other}");
    let first_id = first["enrollmentID"].as_str().unwrap().to_owned();
    let other_id = other["enrollmentID"].as_str().unwrap().to_owned();
    let before = history(&server, "GW-RV-1").await;
    let first_cert = before["current"]["certificateSerial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(before["history"].as_array().unwrap().is_empty());

    // The device certificate points at the configured CRL.
    let der = base64_decode(before["current"]["certificate"].as_str().unwrap());
    let cert = Certificate::from_der(&der).unwrap();
    let dp = cert
        .tbs_certificate
        .extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id == der::oid::db::rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS)
        .expect("a CRL distribution point");
    assert!(
        String::from_utf8_lossy(dp.extn_value.as_bytes()).contains(CRL_URL),
        "{dp:?}"
    );

    // Nothing revoked yet: an empty CRL that verifies.
    let dir = tempfile::tempdir().unwrap();
    let (der, n0) = crl(&server).await;
    openssl_verifies(dir.path(), &der);
    assert!(parse_crl(&der, n0).is_empty());

    let (status, answer) = revoke(
        &server,
        "GW-RV-1",
        r#"{"reason": "keyCompromise", "note": "RMA 4711: board stolen"}"#,
        REVOKER,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "revoked");
    assert_eq!(answer["reason"], "keyCompromise");
    assert_eq!(answer["reasonCode"], 1);
    assert_eq!(answer["certificateSerial"], first_cert.as_str());
    assert_eq!(answer["enrollmentID"], first_id.as_str());
    assert!(
        answer["revokedBy"]
            .as_str()
            .unwrap()
            .starts_with("revoker@127.0.0.1:")
    );

    // Already revoked: 409 with the state, nothing changed.
    let (status, e) = revoke(&server, "GW-RV-1", r#"{"reason": "superseded"}"#, REVOKER).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["state"], "revoked");

    // The deployed CSV no longer lists it; the bulk-delete CSV does, in the same format.
    let deployed = csv(&server, "").await;
    assert!(
        !deployed.contains(&first_id) && deployed.contains(&other_id),
        "{deployed}"
    );
    assert_eq!(deployed, csv(&server, "?state=deployed").await);
    let revoked = csv(&server, "?state=revoked").await;
    let header = deployed.lines().next().unwrap();
    assert_eq!(revoked.lines().next().unwrap(), header);
    assert!(
        revoked.contains(&first_id) && !revoked.contains(&other_id),
        "{revoked}"
    );
    assert!(revoked.contains("\"GW-RV-1\""), "{revoked}");
    assert!(revoked.ends_with("\r\n"));

    // The CRL lists its certificate, with the reason code, under a greater number.
    let (der, n1) = crl(&server).await;
    assert!(n1 > n0, "{n1} > {n0}");
    openssl_verifies(dir.path(), &der);
    assert_eq!(parse_crl(&der, n1), vec![(first_cert.clone(), Some(1))]);
    // Unchanged set: the same CRL again.
    assert_eq!(crl(&server).await, (der.clone(), n1));
    // PEM on request.
    let (status, pem) = server.get_text("/v3/crl?format=pem", None).await;
    assert_eq!(status, 200);
    let (label, pem_der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    assert_eq!((label, pem_der), ("X509 CRL", der.clone()));

    // The same serial again, on a gateway: a new identity; the old certificate stays revoked.
    let (status, again) = server.identity("GW-RV-1", gw).await;
    assert_eq!(status, 200, "{again}");
    let new_id = again["enrollmentID"].as_str().unwrap().to_owned();
    assert_ne!(new_id, first_id);
    let after = history(&server, "GW-RV-1").await;
    assert_eq!(after["current"]["state"], "deployed");
    assert_eq!(after["current"]["enrollmentID"], new_id.as_str());
    assert!(after["current"]["revocation"].is_null());
    let new_cert = after["current"]["certificateSerial"].as_str().unwrap();
    assert_ne!(new_cert, first_cert);
    let past = after["history"].as_array().unwrap();
    assert_eq!(past.len(), 1, "{after}");
    assert_eq!(past[0]["state"], "revoked");
    assert_eq!(past[0]["enrollmentID"], first_id.as_str());
    assert_eq!(past[0]["certificateSerial"], first_cert.as_str());
    assert_eq!(past[0]["revocation"]["reason"], "keyCompromise");
    assert_eq!(past[0]["revocation"]["note"], "RMA 4711: board stolen");
    assert!(!after.to_string().contains("PRIVATE"), "{after}");

    let (der, n2) = crl(&server).await;
    assert_eq!(parse_crl(&der, n2), vec![(first_cert.clone(), Some(1))]);
    let deployed = csv(&server, "").await;
    assert!(deployed.contains(&new_id) && !deployed.contains(&first_id));
    assert!(csv(&server, "?state=revoked").await.contains(&first_id));

    // The new identity is revoked too (unspecified: no reason code): both in the CRL.
    let (status, body) = revoke(&server, "GW-RV-1", r#"{"reason": "unspecified"}"#, REVOKER).await;
    assert_eq!(status, 200, "{body}");
    let (der, n3) = crl(&server).await;
    assert!(n3 > n2);
    let listed = parse_crl(&der, n3);
    assert_eq!(
        listed,
        vec![(first_cert.clone(), Some(1)), (new_cert.to_owned(), None)]
    );
    let revoked = csv(&server, "?state=revoked").await;
    assert!(
        revoked.contains(&first_id) && revoked.contains(&new_id),
        "{revoked}"
    );

    // The audit trail and the floor page's search show it.
    let (status, audit) = server
        .get_json("/v3/audit?serialPrefix=GW-RV-1", Some(READ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "revoked")
            .count(),
        2,
        "{audit}"
    );
    let (status, page) = server.get_text("/floor/?serial=GW-RV-1", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(page.contains("Identities of GW-RV-1"), "{page}");
    assert!(page.contains(&first_id) && page.contains(&new_id), "{page}");
    assert!(page.contains("keyCompromise by revoker@"), "{page}");
    assert!(page.contains("⛔ Revoked"), "{page}");

    // The metrics count it.
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"revoked\"}")
            .await,
        1.0
    );

    // The number only grows across a restart (kill -9: the number was committed before the CRL
    // was served), and the restarted server lists the same certificates.
    let dir = server.kill9().await;
    let server = Server::start_in(dir).await;
    let (der, n4) = crl(&server).await;
    assert!(n4 > n3, "after the restart: {n4} > {n3}");
    assert_eq!(parse_crl(&der, n4), listed);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn bad_revocations_are_refused_naming_what_was_wrong_and_change_nothing() {
    let server = start().await;
    let (gw, _gw) = gateway(Sessions::Forever, &[]).await;
    let (status, id) = server.identity("GW-RV-BAD", gw).await;
    assert_eq!(status, 200, "{id}");
    let good = r#"{"reason": "keyCompromise"}"#;

    // Without the revoke role: 403 (provision and read tokens alike); without a token: 401.
    for token in [PROV, READ, BOTH] {
        let (status, e) = revoke(&server, "GW-RV-BAD", good, token).await;
        assert_eq!(status, 403, "{e}");
        assert!(
            e["error"].as_str().unwrap().contains("`revoke` role"),
            "{e}"
        );
    }
    let r = server
        .client
        .post(format!("{}/v3/identities/GW-RV-BAD/revoke", server.base))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Unknown serial: 404.
    let (status, e) = revoke(&server, "GW-NOBODY", good, REVOKER).await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["serialNumber"], "GW-NOBODY");

    // Bodies: each refused with 400 naming the field.
    for (body, field) in [
        (r#"{"reason": "certificateHold"}"#, Some("reason")),
        (r#"{"reason": "KeyCompromise"}"#, Some("reason")),
        (r#"{"reason": 1}"#, Some("reason")),
        (r#"{"note": "no reason"}"#, Some("reason")),
        (r#"{"reason": "keyCompromise", "why": "x"}"#, Some("why")),
        (
            r#"{"reason": "keyCompromise", "note": "two\nlines"}"#,
            Some("note"),
        ),
        (r#"{"reason": "keyCompromise", "note": ""}"#, Some("note")),
        (r#"{"reason": "keyCompromise", "note": 5}"#, Some("note")),
        ("{\"reason\": \"keyCompromise\"", None),
        ("[]", None),
    ] {
        let (status, e) = revoke(&server, "GW-RV-BAD", body, REVOKER).await;
        assert_eq!(status, 400, "{body}: {e}");
        match field {
            Some(f) => assert_eq!(e["parameter"], f, "{body}: {e}"),
            None => assert!(e["error"].as_str().unwrap().contains("JSON"), "{body}: {e}"),
        }
    }
    let long = json!({"reason": "superseded", "note": "n".repeat(257)}).to_string();
    let (status, e) = revoke(&server, "GW-RV-BAD", &long, REVOKER).await;
    assert_eq!(
        (status, e["parameter"].as_str()),
        (400, Some("note")),
        "{e}"
    );
    // A serial that cannot exist.
    let (status, e) = revoke(&server, "GW bad\u{1}", good, REVOKER).await;
    assert_eq!(
        (status, e["parameter"].as_str()),
        (400, Some("serialNumber")),
        "{e}"
    );

    // Nothing of it changed the identity, the CSV or the CRL.
    let now = history(&server, "GW-RV-BAD").await;
    assert_eq!(now["current"]["state"], "deployed");
    assert!(
        csv(&server, "")
            .await
            .contains(id["enrollmentID"].as_str().unwrap())
    );
    assert_eq!(csv(&server, "?state=revoked").await.lines().count(), 1);
    let (der, n) = crl(&server).await;
    assert!(parse_crl(&der, n).is_empty());

    // Bad query parameters of the reads.
    let (status, e) = server.get_json("/v3/crl?format=txt", None).await;
    assert_eq!(
        (status, e["parameter"].as_str()),
        (400, Some("format")),
        "{e}"
    );
    let (status, e) = server
        .get_json("/v3/enrollment-ids.csv?state=failed", Some(READ))
        .await;
    assert_eq!(
        (status, e["parameter"].as_str()),
        (400, Some("state")),
        "{e}"
    );
    let (status, e) = server
        .get_json("/v3/identities/GW-NOBODY", Some(READ))
        .await;
    assert_eq!(status, 404, "{e}");
    let (status, _) = server
        .get_json("/v3/identities/GW-RV-BAD", Some(PROV))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_bad_crl_section_is_refused_by_check_config_naming_the_field() {
    for (crl, field) in [
        ("validity_hours = 0", "crl.validity_hours"),
        (
            "distribution_url = \"ftp://pki.example/crl\"",
            "crl.distribution_url",
        ),
        ("distribution_url = \"not a url\"", "crl.distribution_url"),
        (
            "distribution_url = \"http://user:pw@pki.example/crl\"",
            "crl.distribution_url",
        ),
        (
            "distribution_url = \"http://pki.example/a b\"",
            "crl.distribution_url",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "{}\n[crl]\n{crl}\n",
            config_toml(dir.path(), &Options::default())
        );
        std::fs::write(dir.path().join("pep.toml"), toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
            .arg("check-config")
            .arg("--config")
            .arg(dir.path().join("pep.toml"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{crl}: {text}");
        assert!(text.contains(field), "{crl}: {text}");
    }
}
