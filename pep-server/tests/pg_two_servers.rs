//! Two real `pep-server` processes sharing one PostgreSQL database, as behind a load balancer:
//! 400 provisions spread over both — 50 serials requested on both servers at once, 20 gateways
//! that fail and are retried through the other server — end with every serial deployed exactly
//! once, every duplicate answered 409, and identical paging and CSV export from either server.

use crate::http_support;
use crate::pg_support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::FccStatus;
use http_support::{BOTH, Options, READ, Server, config_toml, gateway, identity_path};
use pep_server::store::{IdentityState, Store, StoreOptions};
use pg_support::TestDb;

/// Starts `pep-server` on the shared database as server `server_id`.
async fn start(db: &TestDb, server_id: &str) -> Server {
    start_with(db, server_id, &Options::default()).await
}

async fn start_with(db: &TestDb, server_id: &str, options: &Options) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(dir.path(), options);
    let sqlite = text
        .lines()
        .find(|l| l.starts_with("database_url"))
        .unwrap()
        .to_owned();
    let text = text.replacen(
        &sqlite,
        &format!("database_url = \"{}\"\nserver_id = \"{server_id}\"", db.url),
        1,
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    Server::start_in(dir).await
}

/// One planned request: which server, which serial, which gateway.
struct Call {
    server: usize,
    serial: String,
    gw: SocketAddr,
}

async fn run(servers: &[Arc<Server>; 2], calls: Vec<Call>) -> Vec<(Call, u16, serde_json::Value)> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let server = Arc::clone(&servers[call.server]);
            tokio::spawn(async move {
                let (status, body) = server.identity(&call.serial, call.gw).await;
                (call, status, body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_one_database_400_provisions() {
    let db = TestDb::create().await;
    let a = Arc::new(start(&db, "line-a").await);
    let b = Arc::new(start(&db, "line-b").await);
    let servers = [Arc::clone(&a), Arc::clone(&b)];

    // 260 serials requested once, alternating servers; one gateway each (like a factory line).
    let mut calls = Vec::new();
    let mut handles = Vec::new();
    for i in 0..260 {
        let (gw, h) = gateway(Sessions::One, &[]).await;
        handles.push(h);
        calls.push(Call {
            server: i % 2,
            serial: format!("GW-ONCE-{i:04}"),
            gw,
        });
    }
    // 50 serials requested on both servers at once, at the same gateway.
    for i in 0..50 {
        let (gw, h) = gateway(Sessions::One, &[]).await;
        handles.push(h);
        for server in [0, 1] {
            calls.push(Call {
                server,
                serial: format!("GW-BOTH-{i:04}"),
                gw,
            });
        }
    }
    // 20 gateways whose FCC rejects the bundle.
    let mut faulty = Vec::new();
    for i in 0..20 {
        let (gw, h) = gateway(
            Sessions::Forever,
            &[FaultKind::ReturnStatus(FccStatus::from_u32(13))],
        )
        .await;
        faulty.push(h);
        calls.push(Call {
            server: i % 2,
            serial: format!("GW-RETRY-{i:04}"),
            gw,
        });
    }
    assert_eq!(calls.len(), 380);
    let results = run(&servers, calls).await;

    let mut by_serial: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for (call, status, body) in &results {
        by_serial
            .entry(call.serial.clone())
            .or_default()
            .push(*status);
        if call.serial.starts_with("GW-RETRY") {
            assert_eq!(status, &502, "{}: {body}", call.serial);
            assert_eq!(body["retryable"], true, "{body}");
        } else if *status == 200 {
            assert_eq!(body["serialNumber"], call.serial.as_str(), "{body}");
        } else {
            assert_eq!(status, &409, "{}: {body}", call.serial);
        }
    }
    for (serial, statuses) in &by_serial {
        let mut sorted = statuses.clone();
        sorted.sort_unstable();
        let expected: &[u16] = if serial.starts_with("GW-ONCE") {
            &[200]
        } else if serial.starts_with("GW-BOTH") {
            &[200, 409]
        } else {
            &[502]
        };
        assert_eq!(sorted, expected, "{serial}");
    }

    // The 20 failed serials, retried through the other server at a working gateway: 20 more, 400.
    let mut retries = Vec::new();
    for i in 0..20 {
        let (gw, h) = gateway(Sessions::One, &[]).await;
        handles.push(h);
        retries.push(Call {
            server: (i + 1) % 2,
            serial: format!("GW-RETRY-{i:04}"),
            gw,
        });
    }
    for (call, status, body) in run(&servers, retries).await {
        assert_eq!(status, 200, "retry of {}: {body}", call.serial);
    }
    // A duplicate of a deployed serial is 409 on either server.
    let (spare, _spare) = gateway(Sessions::Forever, &[]).await;
    for server in [&a, &b] {
        let (status, body) = server.identity("GW-ONCE-0000", spare).await;
        assert_eq!(status, 409, "{body}");
    }

    // Every gateway that was meant to succeed ran exactly one successful session.
    for mut h in handles {
        let report = h.next_report().await.unwrap();
        assert!(report.wire_success, "{:?}", report.error);
        h.shutdown();
    }
    for h in faulty {
        h.shutdown();
    }

    // The same 330 gateways, in the same pages, from either server.
    let expected: HashSet<String> = by_serial.keys().cloned().collect();
    assert_eq!(expected.len(), 330);
    for (limit, order) in [(50, "ASC"), (77, "DESC")] {
        let from_a = a.walk(limit, order).await;
        let from_b = b.walk(limit, order).await;
        assert_eq!(from_a, from_b, "{order} pages differ between the servers");
        let serials: Vec<String> = from_a
            .iter()
            .map(|r| r["serialNumber"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(serials.len(), 330, "{order}: deployed exactly once");
        assert_eq!(serials.iter().cloned().collect::<HashSet<_>>(), expected);
    }
    let (status_a, csv_a) = a.get_text("/v3/enrollment-ids.csv", Some(READ)).await;
    let (status_b, csv_b) = b.get_text("/v3/enrollment-ids.csv", Some(READ)).await;
    assert_eq!((status_a, status_b), (200, 200));
    assert_eq!(csv_a, csv_b, "CSV export differs between the servers");
    assert_eq!(csv_a.lines().filter(|l| !l.trim().is_empty()).count(), 331);
    for serial in ["GW-ONCE-0007", "GW-BOTH-0003", "GW-RETRY-0011"] {
        let path = format!("/v3/enrollment-id?serialNumber={serial}");
        let (sa, ea) = a.get_text(&path, Some(READ)).await;
        let (sb, eb) = b.get_text(&path, Some(READ)).await;
        assert_eq!((sa, sb), (200, 200), "{serial}: {ea} / {eb}");
        assert_eq!(ea, eb, "{serial}");
    }

    // The shared store agrees: one row per serial, nothing in flight, retries counted.
    let store = Store::open_with(
        &db.url,
        StoreOptions {
            server_id: "checker".to_owned(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.deployed, stats.failed, stats.in_flight), (330, 0, 0));
    let d = store.identity("GW-RETRY-0005").await.unwrap().unwrap();
    assert_eq!((d.state, d.attempts), (IdentityState::Deployed, 2));
    let events: Vec<String> = store
        .audit_for("GW-BOTH-0010")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.to_string())
        .collect();
    let mut sorted = events.clone();
    sorted.sort();
    assert_eq!(sorted, ["attempt", "conflict", "deployed"], "{events:?}");
    store.close().await;
}

/// Waits until `serial` is in flight in the shared store (the request reached its gateway).
async fn until_in_flight(store: &Store, serial: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(d) = store.identity(serial).await.unwrap()
            && d.state == IdentityState::InFlight
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{serial} never went in flight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(store: &Store, serial: &str) -> Vec<String> {
    store
        .audit_for(serial)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.to_string())
        .collect()
}

/// kill -9 of one server while both have an injection in flight: the restarted server recovers its
/// own attempt only — `in_doubt`, since its certificate was written ahead and sent — and the other
/// server's attempt runs on and ends normally (no `interrupted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_of_one_server_leaves_the_other_servers_attempts_alone() {
    let db = TestDb::create().await;
    let a = start(&db, "line-a").await;
    let b = Arc::new(
        start_with(
            &db,
            "line-b",
            &Options {
                read_timeout_ms: 8_000,
                ..Options::default()
            },
        )
        .await,
    );
    let checker = Store::open_with(
        &db.url,
        StoreOptions {
            server_id: "checker".to_owned(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let (stall_a, _ha) = gateway(
        Sessions::Forever,
        &[FaultKind::Stall(Duration::from_secs(120))],
    )
    .await;
    let (stall_b, _hb) = gateway(
        Sessions::Forever,
        &[FaultKind::Stall(Duration::from_secs(120))],
    )
    .await;

    // A's request dies with A; B's request runs into B's read timeout (504) later.
    let a_request = {
        let url = format!("{}{}", a.base, identity_path("GW-KILLED", stall_a));
        let client = a.client.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(BOTH).send().await })
    };
    let b_request = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.identity("GW-RUNNING", stall_b).await })
    };
    until_in_flight(&checker, "GW-KILLED").await;
    until_in_flight(&checker, "GW-RUNNING").await;
    // The kill comes after the write-ahead (the stalling gateway holds the bundle by then).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while checker
        .identity("GW-KILLED")
        .await
        .unwrap()
        .and_then(|d| d.cert_serial)
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never written ahead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let dir = a.kill9().await;
    assert!(
        a_request.await.unwrap().is_err(),
        "A was killed mid-request"
    );
    let a = Server::start_in(dir).await;

    // A recovered its own attempt, and only that one.
    let killed = checker.identity("GW-KILLED").await.unwrap().unwrap();
    assert_eq!(killed.state, IdentityState::InDoubt);
    assert!(killed.enrollment_id.is_some());
    assert_eq!(events(&checker, "GW-KILLED").await, ["attempt", "in_doubt"]);
    let running = checker.identity("GW-RUNNING").await.unwrap().unwrap();
    assert_eq!(
        running.state,
        IdentityState::InFlight,
        "a restarting server must not touch another live server's attempt"
    );

    // B's attempt ends on its own terms: FCC read timeout → 504, recorded as failed by B.
    let (status, body) = b_request.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(events(&checker, "GW-RUNNING").await, ["attempt", "failed"]);

    // Both serials are retryable, through either server (the in-doubt one once an operator
    // resolved it `failed`, on the other server).
    let (status, body) = b.resolve("GW-KILLED", "failed", BOTH).await;
    assert_eq!(status, 200, "{body}");
    let (good1, _g1) = gateway(Sessions::One, &[]).await;
    let (good2, _g2) = gateway(Sessions::One, &[]).await;
    let (status, body) = b.identity("GW-KILLED", good1).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.identity("GW-RUNNING", good2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(checker.stats().await.unwrap().deployed, 2);
    checker.close().await;
}
