//! Never lose an identity (issue #13), through the real `pep-server` binary and real fake-fcc
//! gateways: a crash mid-injection leaves the serial `in_doubt` with the enrollment ID of the
//! certificate the gateway stored, which an operator lists and resolves; request keys make a
//! retry after a lost answer safe (the same identity, one certificate).

use crate::http_support;

use std::net::SocketAddr;
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::names;
use http_support::*;
use pep_ca::EnrollmentId;
use serde_json::{Value, json};

/// The audit events of `serial`, oldest first.
async fn events(server: &Server, serial: &str) -> Vec<String> {
    let (status, body) = server
        .get_json(&format!("/v3/audit?serialPrefix={serial}"), Some(READ))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut rows: Vec<(i64, String)> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["serial"] == serial)
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, e)| e).collect()
}

/// The audit rows of `serial` (newest first, as the API answers).
async fn audit(server: &Server, serial: &str) -> Vec<Value> {
    let (_, body) = server
        .get_json(&format!("/v3/audit?serialPrefix={serial}"), Some(READ))
        .await;
    body["entries"].as_array().unwrap().clone()
}

/// One page of `GET /v3/identities?state=`.
async fn listed(server: &Server, state: &str) -> Vec<Value> {
    let (status, body) = server
        .get_json(
            &format!("/v3/identities?state={state}&limit=1000"),
            Some(READ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], state);
    body["results"].as_array().unwrap().clone()
}

fn keyed(serial: &str, gw: SocketAddr, key: &str) -> String {
    format!("{}&requestId={}", identity_path(serial, gw), encode(key))
}

/// `POST path` with a JSON body and the `both` token → (status, body).
async fn post_json(server: &Server, path: &str, body: &Value, token: &str) -> (u16, Value) {
    let r = server
        .client
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Acceptance: the server is killed while a gateway stalls after storing the items; after the
/// restart the row is `in_doubt` with the enrollment ID of the certificate the gateway stored, it
/// answers 409 in_doubt (with or without the key) and issues nothing until an operator resolves
/// it; resolving it `deployed` puts it in the enrollment-ID list and CSV.
#[tokio::test]
async fn crash_mid_injection_leaves_the_identity_in_doubt_until_resolved() {
    let server = Server::start(Options::default()).await;
    // Long enough that the kill comes before the reply; the report arrives when it ends.
    let (gw, mut handle) =
        gateway(Sessions::One, &[FaultKind::Stall(Duration::from_secs(6))]).await;
    let key = "crash-key-0001";
    let url = format!("{}{}", server.base, keyed("GW-DOUBT", gw, key));
    let client = server.client.clone();
    let request = tokio::spawn(async move { client.get(url).bearer_auth(BOTH).send().await });

    // Wait until the certificate is written ahead (the in-flight row has its serial number).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = listed(&server, "in_flight").await;
        if rows.iter().any(|r| r["certificateSerial"].is_string()) {
            assert_eq!(rows[0]["requestId"], key);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never written ahead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = server.kill9().await;
    assert!(
        request.await.unwrap().is_err(),
        "the killed server answered"
    );

    // What the gateway stored before the kill.
    let report = tokio::time::timeout(Duration::from_secs(60), handle.next_report())
        .await
        .expect("the gateway's session never ended")
        .unwrap();
    let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
    let stored = EnrollmentId::of_certificate(cert).to_string();

    let server = Server::start_in(dir).await;
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_doubt\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_flight\"}")
            .await,
        0.0
    );
    let rows = listed(&server, "in_doubt").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["serialNumber"], "GW-DOUBT");
    assert_eq!(
        rows[0]["enrollmentID"],
        stored.as_str(),
        "the gateway's certificate"
    );
    assert_eq!(rows[0]["attempts"], 1);
    assert!(rows[0]["lastError"].as_str().unwrap().contains("resolve"));
    assert!(rows[0].get("privateKey").is_none());
    assert!(server.walk(50, "ASC").await.is_empty(), "not deployed yet");

    // No second certificate without a resolution: 409 in_doubt, with the key and without.
    let (good, _g) = gateway(Sessions::Forever, &[]).await;
    for path in [
        identity_path("GW-DOUBT", good),
        keyed("GW-DOUBT", good, key),
    ] {
        let (status, body) = server.get_json(&path, Some(BOTH)).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["state"], "in_doubt", "{body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("POST /v3/identities/GW-DOUBT/resolve"),
            "{message}"
        );
    }
    assert_eq!(listed(&server, "in_doubt").await[0]["attempts"], 1);

    // The resolution's refusals.
    let (status, body) = server.resolve("GW-DOUBT", "deployed", READ).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.resolve("GW-NOBODY", "deployed", PROV).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.resolve("GW-DOUBT", "maybe", PROV).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("state")),
        "{body}"
    );
    let path = "/v3/identities/GW-DOUBT/resolve";
    let (status, body) = post_json(&server, path, &json!({}), PROV).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("state")),
        "{body}"
    );
    let (status, body) = post_json(&server, path, &json!({"state": "failed", "x": 1}), PROV).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("x")),
        "{body}"
    );
    let (status, body) = post_json(&server, path, &json!(["deployed"]), PROV).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        listed(&server, "in_doubt").await.len(),
        1,
        "nothing changed"
    );

    // The operator saw the certificate on the gateway: deployed.
    let (status, body) = server.resolve("GW-DOUBT", "deployed", PROV).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "deployed");
    assert_eq!(body["enrollmentID"], stored.as_str());
    let (status, text) = server
        .get_text("/v3/enrollment-id?serialNumber=GW-DOUBT", Some(READ))
        .await;
    assert_eq!((status, text.as_str()), (200, stored.as_str()));
    let (status, csv) = server.get_text("/v3/enrollment-ids.csv", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(csv.contains(&format!("\"{stored}\",\"GW-DOUBT\"")), "{csv}");
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_doubt\"}")
            .await,
        0.0
    );
    // Once: a second resolution is refused, and the serial is deployed (409).
    let (status, body) = server.resolve("GW-DOUBT", "failed", PROV).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (409, Some("deployed")),
        "{body}"
    );
    let (status, body) = server.identity("GW-DOUBT", good).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (409, Some("deployed")),
        "{body}"
    );

    // Audited: the attempt, in doubt, resolved by the provision token.
    let trail = events(&server, "GW-DOUBT").await;
    assert_eq!(
        trail,
        [
            "attempt", "in_doubt", "conflict", "conflict", "resolved", "conflict"
        ],
        "{trail:?}"
    );
    let resolved = audit(&server, "GW-DOUBT")
        .await
        .into_iter()
        .find(|r| r["event"] == "resolved")
        .unwrap();
    assert!(
        resolved["requester"].as_str().unwrap().starts_with("line@"),
        "{resolved}"
    );
    assert_eq!(
        resolved["detail"],
        "in_doubt resolved deployed by ".to_owned() + resolved["requester"].as_str().unwrap()
    );
}

/// An in-doubt serial resolved `failed` may be provisioned again: a new certificate, only then.
#[tokio::test]
async fn resolving_failed_frees_the_serial_for_a_new_certificate() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::One, &[FaultKind::Stall(Duration::from_secs(6))]).await;
    let url = format!("{}{}", server.base, identity_path("GW-AGAIN", gw));
    let client = server.client.clone();
    let request = tokio::spawn(async move { client.get(url).bearer_auth(BOTH).send().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !listed(&server, "in_flight")
        .await
        .iter()
        .any(|r| r["certificateSerial"].is_string())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never written ahead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = server.kill9().await;
    let _ = request.await;
    let server = Server::start_in(dir).await;
    let first = listed(&server, "in_doubt").await[0]["enrollmentID"].clone();
    assert!(first.is_string());

    let (status, body) = server.resolve("GW-AGAIN", "failed", BOTH).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("failed")),
        "{body}"
    );
    let (good, mut handle) = gateway(Sessions::One, &[]).await;
    let (status, body) = server.identity("GW-AGAIN", good).await;
    assert_eq!(status, 200, "{body}");
    let report = handle.next_report().await.unwrap();
    let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
    assert_eq!(
        body["enrollmentID"],
        EnrollmentId::of_certificate(cert).to_string().as_str()
    );
    assert_ne!(body["enrollmentID"], first, "a new certificate");
    assert_eq!(
        events(&server, "GW-AGAIN").await,
        ["attempt", "in_doubt", "resolved", "attempt", "deployed"]
    );
}

/// Acceptance: the same request key twice → the same identity, one certificate, audit rows saying
/// so; on both endpoints, as parameter, JSON member or header.
#[tokio::test]
async fn the_same_request_key_answers_the_same_identity_once_issued() {
    let server = Server::start(Options::default()).await;
    // One session only: a second injection would find nobody listening.
    let (gw, mut handle) = gateway(Sessions::One, &[]).await;
    let key = "Key_0001-~!abc";
    let (status, first) = server.get_json(&keyed("GW-KEY", gw, key), Some(BOTH)).await;
    assert_eq!(status, 200, "{first}");
    let report = handle.next_report().await.unwrap();
    let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
    assert_eq!(
        first["enrollmentID"],
        EnrollmentId::of_certificate(cert).to_string().as_str()
    );

    // The query parameter again.
    let (status, again) = server.get_json(&keyed("GW-KEY", gw, key), Some(BOTH)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the same JSON as the first answer");
    // The header.
    let r = server
        .client
        .get(format!("{}{}", server.base, identity_path("GW-KEY", gw)))
        .bearer_auth(BOTH)
        .header("Idempotency-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    // The JSON member of POST: 200, not 201 (nothing was created).
    let body = json!({
        "serialNumber": "GW-KEY",
        "ip": gw.ip().to_string(),
        "port": gw.port(),
        "requestId": key,
    });
    let (status, posted) = post_json(&server, "/v3/identities", &body, BOTH).await;
    assert_eq!(status, 200, "{posted}");
    assert_eq!(posted, first);

    // One certificate: one attempt, one deployment, three replays saying so.
    let trail = events(&server, "GW-KEY").await;
    assert_eq!(trail, ["attempt", "deployed", "replay", "replay", "replay"]);
    for r in audit(&server, "GW-KEY").await {
        if r["event"] == "replay" {
            let detail = r["detail"].as_str().unwrap();
            assert!(
                detail.contains(key) && detail.contains("no new certificate"),
                "{detail}"
            );
            assert!(
                detail.contains(first["enrollmentID"].as_str().unwrap()),
                "{detail}"
            );
        }
    }
    assert_eq!(
        server
            .metric("pep_provisions_total{result=\"replayed\"}")
            .await,
        3.0
    );
    assert_eq!(server.walk(50, "ASC").await.len(), 1);

    // Without the key, or with another: today's rule (deployed → 409).
    let (status, body) = server.identity("GW-KEY", gw).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (409, Some("deployed")),
        "{body}"
    );
    let (status, body) = server
        .get_json(&keyed("GW-KEY", gw, "another-key-1"), Some(BOTH))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (409, Some("deployed")),
        "{body}"
    );

    // The key of GW-KEY for another serial: 422, nothing reserved.
    let (status, body) = server
        .get_json(&keyed("GW-OTHER", gw, key), Some(BOTH))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["parameter"], "requestId");
    assert_eq!(events(&server, "GW-OTHER").await, ["conflict"]);
    let (status, _) = server
        .get_text("/v3/enrollment-id?serialNumber=GW-OTHER", Some(READ))
        .await;
    assert_eq!(status, 404);
}

/// While the attempt of a key runs, the same key answers 409 in_progress; afterwards, the identity.
#[tokio::test]
async fn the_same_request_key_while_its_attempt_runs_is_409_in_progress() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::One, &[FaultKind::Stall(Duration::from_secs(2))]).await;
    let path = keyed("GW-SLOW", gw, "slow-key-0001");
    let url = format!("{}{path}", server.base);
    let client = server.client.clone();
    let first = tokio::spawn(async move { client.get(url).bearer_auth(BOTH).send().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while listed(&server, "in_flight").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = server.get_json(&path, Some(BOTH)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["state"], "in_progress", "{body}");
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let first: Value = first.json().await.unwrap();
    let (status, again) = server.get_json(&path, Some(BOTH)).await;
    assert_eq!((status, &again), (200, &first));
}

/// Every malformed key is a 400 naming `requestId`, before anything is reserved.
#[tokio::test]
async fn malformed_request_keys_are_400_naming_request_id() {
    let server = Server::start(Options::default()).await;
    let gw: SocketAddr = format!("127.0.0.1:{}", dead_port()).parse().unwrap();
    let long = "k".repeat(129);
    for (key, why) in [
        ("short", "8 to 128"),
        ("has space", "printable ASCII"),
        ("tab\there1", "printable ASCII"),
        ("ünïcode-key", "printable ASCII"),
        (long.as_str(), "8 to 128"),
        ("", "8 to 128"),
    ] {
        let (status, body) = server.get_json(&keyed("GW-BAD", gw, key), Some(BOTH)).await;
        assert_eq!(status, 400, "{key:?}: {body}");
        assert_eq!(body["parameter"], "requestId", "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
    // Twice as a parameter; parameter and header that differ; the header twice.
    let twice = format!("{}&requestId=aaaaaaaa", keyed("GW-BAD", gw, "aaaaaaaa"));
    let (status, body) = server.get_json(&twice, Some(BOTH)).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("requestId")),
        "{body}"
    );
    let r = server
        .client
        .get(format!(
            "{}{}",
            server.base,
            keyed("GW-BAD", gw, "aaaaaaaa")
        ))
        .bearer_auth(BOTH)
        .header("Idempotency-Key", "bbbbbbbb")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["parameter"], "requestId");
    assert!(
        body["error"].as_str().unwrap().contains("differs"),
        "{body}"
    );
    let r = server
        .client
        .get(format!("{}{}", server.base, identity_path("GW-BAD", gw)))
        .bearer_auth(BOTH)
        .header("Idempotency-Key", "short")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A JSON member that is not a string.
    let body = json!({"serialNumber": "GW-BAD", "ip": "127.0.0.1", "port": gw.port(), "requestId": 12345678});
    let (status, body) = post_json(&server, "/v3/identities", &body, BOTH).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("requestId")),
        "{body}"
    );
    // Nothing was reserved or audited.
    assert!(events(&server, "GW-BAD").await.is_empty());
}

/// `GET /v3/identities` needs a known state and the read role.
#[tokio::test]
async fn the_state_listing_refuses_bad_parameters() {
    let server = Server::start(Options::default()).await;
    let (status, body) = server.get_json("/v3/identities", Some(READ)).await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("state")),
        "{body}"
    );
    let (status, body) = server
        .get_json("/v3/identities?state=lost", Some(READ))
        .await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("state")),
        "{body}"
    );
    let (status, body) = server
        .get_json("/v3/identities?state=in_doubt&limit=0", Some(READ))
        .await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("limit")),
        "{body}"
    );
    let (status, _) = server.get_text("/v3/identities?state=in_doubt", None).await;
    assert_eq!(status, 401);
    let (status, _) = server
        .get_text("/v3/identities?state=in_doubt", Some(PROV))
        .await;
    assert_eq!(status, 403);
    assert!(listed(&server, "in_doubt").await.is_empty());
}
