//! Provisioning through the HTTP API of the real `pep-server` binary, against real fake-fcc
//! gateways: success, duplicates and races, gateway failures, and a crash of the server.

use crate::http_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::{FccStatus, names};
use http_support::*;
use pep_ca::EnrollmentId;

/// Acceptance 1: 200, the enrollment ID is the SHA-256 of the certificate FCC stored, FCC said 0.
#[tokio::test]
async fn identity_is_injected_and_enrollment_id_matches_the_stored_certificate() {
    let server = Server::start(Options::default()).await;
    let (gw, mut handle) = gateway(Sessions::One, &[]).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let path = format!(
        "{}&hardwareVersion=hw-b&radioConfig=05&ledConfig=02&category=development&apiAddress={}",
        identity_path("GW-0001", gw),
        encode("https://api.example.com")
    );
    let (status, id) = server.get_json(&path, Some(PROV)).await;
    assert_eq!(status, 200, "{id}");

    let report = handle.next_report().await.unwrap();
    assert_eq!(report.last_status, Some(FccStatus::Success), "{report:?}");
    assert!(report.wire_success);
    let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
    let expected = EnrollmentId::of_certificate(cert).to_string();
    assert_eq!(id["enrollmentID"], expected.as_str());

    assert_eq!(id["serialNumber"], "GW-0001");
    assert_eq!(id["deployed"], true);
    assert_eq!(id["OU"], "");
    assert_eq!(id["deviceID"], "");
    assert_eq!(id["hardwareVersion"], "hw-b");
    assert_eq!(id["radioConfig"], "05");
    assert_eq!(id["ledConfig"], "02");
    assert_eq!(id["category"], "development");
    assert_eq!(id["apiAddress"], "https://api.example.com");
    assert_eq!(id["apiServerAddress"], "https://api.example.com");
    assert_eq!(id["cloudAddress"], id["gatewayServicesAddress"]);
    assert!(id.get("verificationKey").is_none());
    let created = id["createdAt"].as_i64().unwrap();
    assert!(
        created >= before - 1000,
        "createdAt {created} is not this request's time"
    );

    // The read API agrees, with and without /v3.
    for prefix in ["/v3", ""] {
        let (status, text) = server
            .get_text(
                &format!("{prefix}/enrollment-id?serialNumber=GW-0001"),
                Some(READ),
            )
            .await;
        assert_eq!((status, text.as_str()), (200, expected.as_str()));
    }
}

/// The unversioned path and the JSON endpoint provision too (201 for POST); the verification key
/// is stored and served, and not echoed in the identity.
#[tokio::test]
async fn unversioned_path_and_post_identities() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;

    let path = format!(
        "/identity?serialNumber=GW-U1&ip=127.0.0.1&port={}&verificationKey=abc-def%2F123",
        gw.port()
    );
    let (status, id) = server.get_json(&path, Some(BOTH)).await;
    assert_eq!(status, 200, "{id}");
    assert!(id.get("verificationKey").is_none());
    let (status, key) = server
        .get_text("/verification-key?serialNumber=GW-U1", Some(READ))
        .await;
    assert_eq!((status, key.as_str()), (200, "abc-def/123"));

    let body = serde_json::json!({
        "serialNumber": "GW-P1", "ip": "127.0.0.1", "port": gw.port(), "ledConfig": "07",
    });
    let r = server
        .client
        .post(format!("{}/v3/identities", server.base))
        .bearer_auth(PROV)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id: serde_json::Value = r.json().await.unwrap();
    assert_eq!(id["serialNumber"], "GW-P1");
    assert_eq!(id["ledConfig"], "07");
    let (status, text) = server
        .get_text("/v3/enrollment-id?serialNumber=GW-P1", Some(READ))
        .await;
    assert_eq!(
        (status, text.as_str()),
        (200, id["enrollmentID"].as_str().unwrap())
    );
    // GW-P1 has no verification key.
    let (status, _) = server
        .get_text("/v3/verification-key?serialNumber=GW-P1", Some(READ))
        .await;
    assert_eq!(status, 404);

    // Old clients: `ip` defaults to the requester's address (127.0.0.1 here), unknown parameters
    // are ignored, and an empty optional parameter means its default.
    let path = format!(
        "/v3/identity?serialNumber=GW-OLD&port={}&apiAddress=&debug=1&x-legacy=yes",
        gw.port()
    );
    let (status, id) = server.get_json(&path, Some(BOTH)).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["apiAddress"], "https://api.us-east-1.mbedcloud.com");
}

/// Acceptance 2: duplicates are 409, a race gives exactly one 200, 64 concurrent serials all deploy.
#[tokio::test]
async fn duplicates_races_and_64_concurrent_serials() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;

    let (status, _) = server.identity("GW-DUP", gw).await;
    assert_eq!(status, 200);
    let (status, body) = server.identity("GW-DUP", gw).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["serialNumber"], "GW-DUP");
    assert!(body["error"].as_str().unwrap().contains("GW-DUP"));

    // Two concurrent requests for one serial.
    let (a, b) = tokio::join!(
        server.identity("GW-RACE", gw),
        server.identity("GW-RACE", gw)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");

    // 64 distinct serials at once, each to its own gateway.
    let mut gateways = Vec::new();
    for _ in 0..64 {
        gateways.push(gateway(Sessions::One, &[]).await);
    }
    let requests = gateways.iter().enumerate().map(|(i, (gw, _))| {
        let serial = format!("GW-C{i:02}");
        let server = &server;
        async move { (serial.clone(), server.identity(&serial, *gw).await) }
    });
    let results = futures_util::future::join_all(requests).await;
    for (serial, (status, body)) in &results {
        assert_eq!(*status, 200, "{serial}: {body}");
    }
    for (i, (_, handle)) in gateways.iter_mut().enumerate() {
        let report = handle.next_report().await.unwrap();
        assert_eq!(report.last_status, Some(FccStatus::Success));
        let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
        let expected = EnrollmentId::of_certificate(cert).to_string();
        assert_eq!(
            results[i].1.1["enrollmentID"],
            expected.as_str(),
            "GW-C{i:02}"
        );
    }
    let listed = server.walk(1000, "ASC").await;
    let mut serials: Vec<&str> = listed
        .iter()
        .map(|r| r["serialNumber"].as_str().unwrap())
        .collect();
    assert_eq!(serials.len(), 66);
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 66, "a serial is listed twice");
}

/// Acceptance 3: unreachable → 504, FCC fault → 502 with FCC's message, stall → 504 after the FCC
/// timeout; nothing is deployed and every serial provisions on retry.
#[tokio::test]
async fn gateway_failures_map_to_502_and_504_and_stay_retryable() {
    let server = Server::start(Options {
        read_timeout_ms: 1_500,
        ..Options::default()
    })
    .await;
    let (good, _good) = gateway(Sessions::Forever, &[]).await;

    // Nothing listening.
    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port());
    let (status, body) = server.identity("GW-DEAD", dead).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["gateway"], dead.to_string());
    assert_eq!(body["retryable"], true);

    // FCC answers a non-zero ReturnStatus.
    let (faulty, _h) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::from_u32(13))],
    )
    .await;
    let (status, body) = server.identity("GW-FAULT", faulty).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fccStatus"], 13);
    assert_eq!(body["fccStatusName"], FccStatus::from_u32(13).name());
    let info = body["fccInfo"].as_str().unwrap();
    assert!(!info.is_empty(), "{body}");
    assert!(body["error"].as_str().unwrap().contains(info), "{body}");
    assert_eq!(body["retryable"], true);

    // FCC stalls longer than the read timeout.
    let (stalled, _s) = gateway(
        Sessions::Forever,
        &[FaultKind::Stall(Duration::from_secs(30))],
    )
    .await;
    let (status, body) = server.identity("GW-STALL", stalled).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["retryable"], true);

    for serial in ["GW-DEAD", "GW-FAULT", "GW-STALL"] {
        let (status, _) = server
            .get_text(
                &format!("/v3/enrollment-id?serialNumber={serial}"),
                Some(READ),
            )
            .await;
        assert_eq!(status, 404, "{serial} must not be deployed");
    }
    assert!(server.walk(50, "DESC").await.is_empty());

    for serial in ["GW-DEAD", "GW-FAULT", "GW-STALL"] {
        let (status, body) = server.identity(serial, good).await;
        assert_eq!(status, 200, "{serial} retry: {body}");
    }
    assert_eq!(server.walk(50, "DESC").await.len(), 3);
}

/// Acceptance 7: SIGKILL with injections in flight; after a restart nothing stays in flight. The
/// gateways had received their identities (written ahead), so the serials are `in_doubt` (409)
/// until an operator resolves them `failed`; then they provision on retry.
#[tokio::test]
async fn kill_9_with_injections_in_flight_then_restart_and_retry() {
    let server = Server::start(Options::default()).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(gateway(Sessions::One, &[FaultKind::Stall(Duration::from_secs(60))]).await);
    }
    let base = server.base.clone();
    let mut inflight = Vec::new();
    for (i, (gw, _)) in stalled.iter().enumerate() {
        let url = format!("{base}{}", identity_path(&format!("GW-K{i}"), *gw));
        let client = server.client.clone();
        inflight.push(tokio::spawn(async move {
            client.get(url).bearer_auth(BOTH).send().await
        }));
    }
    // Wait until the four attempts are recorded in flight (the gateways stall them).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if server
            .metric("pep_store_identities{state=\"in_flight\"}")
            .await
            == 4.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "attempts never got in flight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dir = server.kill9().await;
    for request in inflight {
        assert!(
            request.await.unwrap().is_err(),
            "the killed server answered"
        );
    }

    let server = Server::start_in(dir).await;
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_flight\"}")
            .await,
        0.0
    );
    assert!(server.walk(50, "ASC").await.is_empty());
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_doubt\"}")
            .await,
        4.0
    );
    let (good, _g) = gateway(Sessions::Forever, &[]).await;
    for i in 0..4 {
        let serial = format!("GW-K{i}");
        let (status, body) = server.identity(&serial, good).await;
        assert_eq!(status, 409, "{serial} after restart: {body}");
        assert_eq!(body["state"], "in_doubt", "{body}");
        let (status, body) = server.resolve(&serial, "failed", BOTH).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = server.identity(&serial, good).await;
        assert_eq!(status, 200, "{serial} after resolving it failed: {body}");
    }
    assert_eq!(server.walk(50, "ASC").await.len(), 4);
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_flight\"}")
            .await,
        0.0
    );
}
