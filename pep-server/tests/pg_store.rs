//! PostgreSQL store acceptance on the real server of this machine: reservations decided by the
//! database under races between servers, failed-then-retry, keyset paging, recovery of a server's
//! own interrupted attempts only, the lease, concurrent migrations, and connection errors.

use crate::pg_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl, RequestKey};
use pep_server::store::{
    DeployedOutcome, Durability, FailedOutcome, IdentityState, NewAttempt, Reservation, Resolution,
    SortOrder, Store, StoreError, StoreOptions, WriteAhead, now_ms,
};
use pg_support::TestDb;

fn attempt(serial: &str) -> NewAttempt {
    let text = |s: &str| FieldText::new(s.to_owned()).unwrap();
    let url = |s: &str| HttpUrl::new(s.to_owned()).unwrap();
    NewAttempt {
        params: GatewayParams {
            serial_number: serial.parse().unwrap(),
            gateway: "127.0.0.1:40000".parse().unwrap(),
            api_address: url("https://api.example"),
            gateway_services_address: url("https://gw.example"),
            hardware_version: text("hw"),
            radio_config: text("00"),
            led_config: text("01"),
            category: Category::Production,
            verification_key: Some(text("vk-1")),
            defaulted: Default::default(),
        },
        requester: "test".to_owned(),
        now_ms: now_ms(),
        request_key: None,
        order: None,
    }
}

fn enrollment(i: usize) -> String {
    let bytes: Vec<String> = (0..32).map(|k| format!("{:02X}", (i + k) % 256)).collect();
    format!("A-{}", bytes.join(":"))
}

fn deployed(i: usize) -> (String, DeployedOutcome<'static>) {
    (
        enrollment(i),
        DeployedOutcome {
            enrollment_id: "",
            cert_serial: "01ab",
            cert_not_after: 2_000_000_000,
            fcc_warnings: &[],
            duration_ms: 1,
        },
    )
}

async fn deploy(store: &Store, serial: &str, i: usize) -> i64 {
    let Reservation::Reserved { id } = store.reserve(&attempt(serial)).await.unwrap() else {
        panic!("{serial} not reserved");
    };
    let (eid, mut outcome) = deployed(i);
    outcome.enrollment_id = &eid;
    store.mark_deployed(id, &outcome).await.unwrap();
    id
}

fn failed(error: &str) -> FailedOutcome<'_> {
    FailedOutcome {
        fcc_status: Some(9),
        fcc_info: None,
        fcc_warnings: &[],
        error,
        duration_ms: 5,
    }
}

async fn open_as(db: &TestDb, server_id: &str) -> Store {
    Store::open_with(
        &db.url,
        StoreOptions {
            server_id: server_id.to_owned(),
            in_flight_lease: Duration::from_secs(3600),
            // Small pools: the tests of this file run in parallel on one PostgreSQL server.
            max_connections: 4,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_fifty_concurrent_reservations_of_one_serial_one_wins() {
    let db = TestDb::create().await;
    // Two servers (two pools) racing, as behind a load balancer.
    let a = open_as(&db, "line-a").await;
    let b = open_as(&db, "line-b").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.reserve(&attempt("GW-RACE")).await.unwrap()
        }));
    }
    let mut won = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Reservation::Reserved { id } => won.push(id),
            Reservation::Conflict { state, .. } => {
                assert_eq!(state, IdentityState::InFlight);
                conflicts += 1;
            }
            other => panic!("no request key, yet {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one reservation wins: {won:?}");
    assert_eq!(conflicts, 49);
    let audit = a.audit_for("GW-RACE").await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.event == "attempt").count(), 1);
    assert_eq!(audit.iter().filter(|e| e.event == "conflict").count(), 49);
    let stats = b.stats().await.unwrap();
    assert_eq!((stats.in_flight, stats.deployed, stats.failed), (1, 0, 0));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_racing_retries_of_a_failed_serial_one_wins() {
    let db = TestDb::create().await;
    let a = open_as(&db, "line-a").await;
    let b = open_as(&db, "line-b").await;
    let Reservation::Reserved { id } = a.reserve(&attempt("GW-F")).await.unwrap() else {
        panic!("not reserved")
    };
    a.mark_failed(id, &failed("closed without reply"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.reserve(&attempt("GW-F")).await.unwrap()
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Reservation::Reserved { id } = t.await.unwrap() {
            won.push(id);
        }
    }
    assert_eq!(
        won,
        vec![id],
        "the failed row is revived once, keeping its id"
    );
    let detail = b.identity("GW-F").await.unwrap().unwrap();
    assert_eq!(detail.state, IdentityState::InFlight);
    assert_eq!(detail.attempts, 2);
    assert_eq!(detail.last_error, None);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn pg_failed_then_retried_then_deployed_then_conflict() {
    let db = TestDb::create().await;
    let store = open_as(&db, "s").await;
    let Reservation::Reserved { id } = store.reserve(&attempt("GW-1")).await.unwrap() else {
        panic!("not reserved")
    };
    store
        .mark_failed(id, &failed("gateway 127.0.0.1:1 answered wire status 9"))
        .await
        .unwrap();
    let d = store.identity("GW-1").await.unwrap().unwrap();
    assert_eq!(d.state, IdentityState::Failed);
    assert_eq!(d.fcc.status, Some(9));
    assert_eq!(store.enrollment_id("GW-1").await.unwrap(), None);
    // Finishing a row that is no longer in flight is refused.
    let (eid, mut outcome) = deployed(1);
    outcome.enrollment_id = &eid;
    assert!(matches!(
        store.mark_deployed(id, &outcome).await,
        Err(StoreError::NotInFlight { id: i }) if i == id
    ));
    let again = deploy(&store, "GW-1", 1).await;
    assert_eq!(again, id);
    assert_eq!(
        store.enrollment_id("GW-1").await.unwrap().as_deref(),
        Some(eid.as_str())
    );
    assert_eq!(
        store.verification_key("GW-1").await.unwrap().as_deref(),
        Some("vk-1")
    );
    assert_eq!(
        store.reserve(&attempt("GW-1")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::Deployed,
            same_key: false,
        }
    );
    let d = store.identity("GW-1").await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.attempts, d.fcc.status),
        (IdentityState::Deployed, 2, Some(0))
    );
    let events: Vec<String> = store
        .audit_for("GW-1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.to_string())
        .collect();
    assert_eq!(
        events,
        ["attempt", "failed", "attempt", "deployed", "conflict"]
    );
    assert!(store.identity("nope").await.unwrap().is_none());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_paging_2500_both_orders() {
    let db = TestDb::create().await;
    let store = open_as(&db, "s").await;
    // 2,500 deployed, interleaved with failed rows that must never be listed.
    let store_arc = Arc::new(store.clone());
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let s = Arc::clone(&store_arc);
        tasks.push(tokio::spawn(async move {
            for i in (chunk * 250)..((chunk + 1) * 250) {
                deploy(&s, &format!("GW-{i:05}"), i).await;
                if i % 50 == 0 {
                    let serial = format!("BAD-{i:05}");
                    let Reservation::Reserved { id } = s.reserve(&attempt(&serial)).await.unwrap()
                    else {
                        panic!("not reserved")
                    };
                    s.mark_failed(id, &failed("refused")).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.deployed, stats.failed, stats.in_flight),
        (2500, 50, 0)
    );

    for order in [SortOrder::Asc, SortOrder::Desc] {
        for limit in [1000u32, 7] {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = store.list_deployed(limit, order, after).await.unwrap();
                assert!(page.len() <= limit as usize);
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                all.extend(page);
            }
            assert_eq!(all.len(), 2500, "{order:?} limit {limit}");
            let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if order == SortOrder::Desc {
                sorted.reverse();
            }
            assert_eq!(ids, sorted, "{order:?} pages are in id order");
            let serials: HashSet<&str> = all.iter().map(|r| r.serial_number.as_str()).collect();
            assert_eq!(serials.len(), 2500);
            assert!(all.iter().all(|r| r.serial_number.starts_with("GW-")
                && r.deployed
                && r.enrollment_id.starts_with("A-")));
        }
    }
    store.close().await;
}

#[tokio::test]
async fn pg_restart_recovers_only_its_own_in_flight_rows() {
    let db = TestDb::create().await;
    let a = open_as(&db, "line-a").await;
    let b = open_as(&db, "line-b").await;
    let Reservation::Reserved { id: a_id } = a.reserve(&attempt("GW-A")).await.unwrap() else {
        panic!("not reserved")
    };
    let Reservation::Reserved { id: b_id } = b.reserve(&attempt("GW-B")).await.unwrap() else {
        panic!("not reserved")
    };
    // Server A "dies" (its pool goes away with its attempt in flight) and starts again.
    drop(a);
    let a2 = open_as(&db, "line-a").await;
    let ra = a2.identity("GW-A").await.unwrap().unwrap();
    assert_eq!(ra.state, IdentityState::Failed);
    assert!(ra.last_error.unwrap().starts_with("interrupted"));
    let audit = a2.audit_for("GW-A").await.unwrap();
    assert_eq!(audit.last().unwrap().event, "interrupted");
    // B's attempt is still running and B can finish it.
    assert_eq!(
        a2.identity("GW-B").await.unwrap().unwrap().state,
        IdentityState::InFlight
    );
    // A third server starting leaves both alone.
    let c = open_as(&db, "line-c").await;
    assert_eq!(c.stats().await.unwrap().in_flight, 1);
    let (eid, mut outcome) = deployed(2);
    outcome.enrollment_id = &eid;
    b.mark_deployed(b_id, &outcome).await.unwrap();
    // A's old attempt cannot be finished any more: the serial must be provisioned again.
    assert!(matches!(
        a2.mark_failed(a_id, &failed("late")).await,
        Err(StoreError::NotInFlight { .. })
    ));
    // recover_interrupted on a running server touches only its own rows.
    let Reservation::Reserved { .. } = c.reserve(&attempt("GW-C")).await.unwrap() else {
        panic!("not reserved")
    };
    assert_eq!(a2.recover_interrupted().await.unwrap(), 0);
    assert_eq!(c.stats().await.unwrap().in_flight, 1);
    for s in [a2, b, c] {
        s.close().await;
    }
}

#[tokio::test]
async fn pg_expired_attempts_of_a_vanished_server_are_recovered() {
    let db = TestDb::create().await;
    let gone = open_as(&db, "gone").await;
    let Reservation::Reserved { id } = gone.reserve(&attempt("GW-G")).await.unwrap() else {
        panic!("not reserved")
    };
    let live = Store::open_with(
        &db.url,
        StoreOptions {
            server_id: "live".to_owned(),
            in_flight_lease: Duration::from_secs(2),
            max_connections: 4,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    // A fresh attempt is within the lease: untouched at open.
    assert_eq!(live.stats().await.unwrap().in_flight, 1);
    // The background sweep expires it once the lease has passed (polled, no timing assert).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if live.stats().await.unwrap().in_flight == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease sweep never expired the attempt"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = live.identity("GW-G").await.unwrap().unwrap();
    assert_eq!(d.state, IdentityState::Failed);
    assert!(d.last_error.unwrap().contains("lease"));
    assert!(matches!(
        gone.mark_failed(id, &failed("late")).await,
        Err(StoreError::NotInFlight { .. })
    ));
    // The serial can be provisioned again.
    assert!(matches!(
        live.reserve(&attempt("GW-G")).await.unwrap(),
        Reservation::Reserved { .. }
    ));
    gone.close().await;
    live.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_servers_starting_together_migrate_once() {
    let db = TestDb::create().await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            Store::open_with(
                &url,
                StoreOptions {
                    server_id: format!("s{i}"),
                    max_connections: 2,
                    ..StoreOptions::default()
                },
            )
            .await
        }));
    }
    for t in tasks {
        let store = t.await.unwrap().unwrap();
        assert_eq!(store.stats().await.unwrap(), Default::default());
        store.close().await;
    }
}

#[tokio::test]
async fn pg_unreachable_server_is_a_clear_error_without_the_password() {
    let err = Store::open("postgres://pep:s3cret-pw@127.0.0.1:1/pep")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret-pw"), "password leaked: {text}");

    // PostgreSQL's own reason comes through.
    let err = Store::open("postgres://postgres@127.0.0.1:5432/pep_no_such_database_x")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{text}");
    assert!(text.contains("pep_no_such_database_x"), "{text}");
    assert!(text.contains("does not exist"), "{text}");

    let err = Store::open("mysql://root@127.0.0.1/pep").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
    assert!(err.to_string().contains("postgres://"), "{err}");
}

#[tokio::test]
async fn pg_tls_is_used_when_the_url_asks_for_it() {
    use sqlx::Connection;
    let db = TestDb::create().await;
    let store = Store::open(&format!("{}?sslmode=require", db.url))
        .await
        .unwrap();
    assert!(matches!(
        store.reserve(&attempt("GW-TLS")).await.unwrap(),
        Reservation::Reserved { .. }
    ));
    // The server sees this store's connections encrypted.
    let mut admin = sqlx::postgres::PgConnection::connect(pg_support::ADMIN_URL)
        .await
        .unwrap();
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = $1 AND application_name = 'pep-server' AND ssl",
    )
    .bind(&db.name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(encrypted >= 1, "no TLS connection from the store");
    store.close().await;
    let _ = admin.close().await;

    // verify-full checks the server certificate against the web PKI roots: the local server's
    // self-signed certificate is refused, with an error naming the database URL.
    let err = Store::open(&format!("{}?sslmode=verify-full", db.url))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

/// `durability = "full"` (the default) never runs with `synchronous_commit = off`, even where the
/// database sets it so (the test databases do, for speed); `normal` keeps the server's setting.
#[tokio::test]
async fn pg_full_durability_turns_synchronous_commit_back_on() {
    let db = TestDb::create().await;
    for (durability, expected) in [(Durability::Full, "on"), (Durability::Normal, "off")] {
        let store = Store::open_with(
            &db.url,
            StoreOptions {
                server_id: format!("sync-{}", durability.as_str()),
                max_connections: 2,
                durability,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let Store::Postgres(pg) = &store else {
            panic!("a postgres:// URL opens the PostgreSQL store");
        };
        assert_eq!(
            pg.synchronous_commit().await.unwrap(),
            expected,
            "{durability:?}"
        );
        store.close().await;
    }
}

fn ahead(i: usize) -> WriteAhead {
    WriteAhead {
        enrollment_id: enrollment(i),
        cert_serial: format!("{i:04x}"),
        cert_not_after: 2_000_000_000,
        cert_der: vec![0x30, 0x03, 0x02, 0x01, i as u8],
        now_ms: now_ms(),
    }
}

/// #13: the lease sweep of a dead server's attempts marks those whose certificate was written
/// ahead (FCC may have been reached) `in_doubt`, the others `failed`; only an operator's
/// resolution ends `in_doubt`.
#[tokio::test]
async fn pg_lease_sweep_marks_attempts_that_reached_fcc_in_doubt() {
    let db = TestDb::create().await;
    let gone = open_as(&db, "gone-doubt").await;
    let reserve = |serial: &'static str| {
        let gone = gone.clone();
        async move {
            match gone.reserve(&attempt(serial)).await.unwrap() {
                Reservation::Reserved { id } => id,
                other => panic!("{serial}: {other:?}"),
            }
        }
    };
    let _before = reserve("GW-BEFORE").await;
    let reached = reserve("GW-REACHED").await;
    gone.write_ahead(reached, ahead(7)).await.unwrap();
    let live = Store::open_with(
        &db.url,
        StoreOptions {
            server_id: "live-doubt".to_owned(),
            in_flight_lease: Duration::from_secs(2),
            max_connections: 4,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while live.stats().await.unwrap().in_flight > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease sweep never expired the attempts"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = live.stats().await.unwrap();
    assert_eq!((stats.failed, stats.in_doubt), (1, 1));
    assert_eq!(
        live.identity("GW-BEFORE").await.unwrap().unwrap().state,
        IdentityState::Failed
    );
    let d = live.identity("GW-REACHED").await.unwrap().unwrap();
    assert_eq!(d.state, IdentityState::InDoubt);
    assert_eq!(d.enrollment_id, Some(enrollment(7)));
    assert_eq!(d.cert_der, Some(vec![0x30, 0x03, 0x02, 0x01, 7]));
    let events: Vec<_> = live
        .audit_for("GW-REACHED")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(events, ["attempt", "in_doubt"]);
    let listed = live
        .list_by_state(IdentityState::InDoubt, 10, SortOrder::Asc, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].serial_number, "GW-REACHED");

    // No new attempt on any server while in doubt; the late outcome of the dead server is refused.
    for store in [&gone, &live] {
        assert!(matches!(
            store.reserve(&attempt("GW-REACHED")).await.unwrap(),
            Reservation::Conflict {
                state: IdentityState::InDoubt,
                ..
            }
        ));
    }
    assert!(matches!(
        gone.mark_failed(reached, &failed("late")).await,
        Err(StoreError::NotInFlight { .. })
    ));
    // The operator: deployed (its written-ahead enrollment ID joins the list), once.
    assert_eq!(
        live.resolve("GW-REACHED", IdentityState::Deployed, "op@test")
            .await
            .unwrap(),
        Resolution::Resolved
    );
    assert_eq!(
        gone.resolve("GW-REACHED", IdentityState::Failed, "op@test")
            .await
            .unwrap(),
        Resolution::NotInDoubt {
            state: IdentityState::Deployed
        }
    );
    assert_eq!(
        live.resolve("GW-NONE", IdentityState::Failed, "op@test")
            .await
            .unwrap(),
        Resolution::Unknown
    );
    assert_eq!(
        live.enrollment_id("GW-REACHED").await.unwrap(),
        Some(enrollment(7))
    );
    gone.close().await;
    live.close().await;
}

/// #13: request keys across two servers: a key names one serial (422 material), the same key
/// is a conflict while in flight and a replay once deployed.
#[tokio::test]
async fn pg_request_keys_hold_across_servers() {
    let db = TestDb::create().await;
    let a = open_as(&db, "keys-a").await;
    let b = open_as(&db, "keys-b").await;
    let keyed = |serial: &str, key: &str| NewAttempt {
        request_key: Some(RequestKey::new(key.to_owned()).unwrap()),
        ..attempt(serial)
    };
    let Reservation::Reserved { id } = a.reserve(&keyed("GW-K1", "pg-key-0001")).await.unwrap()
    else {
        panic!("not reserved")
    };
    assert_eq!(
        b.reserve(&keyed("GW-K2", "pg-key-0001")).await.unwrap(),
        Reservation::KeyUsed
    );
    assert_eq!(
        b.reserve(&keyed("GW-K1", "pg-key-0001")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::InFlight,
            same_key: true
        }
    );
    let (eid, mut outcome) = deployed(3);
    outcome.enrollment_id = &eid;
    a.mark_deployed(id, &outcome).await.unwrap();
    assert_eq!(
        b.reserve(&keyed("GW-K1", "pg-key-0001")).await.unwrap(),
        Reservation::Replay { id }
    );
    assert_eq!(
        b.reserve(&keyed("GW-K1", "pg-key-0002")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::Deployed,
            same_key: false
        }
    );
    // Racing claims of one fresh key for two serials: exactly one serial gets it.
    let (r1, r2) = (keyed("GW-R1", "pg-race-key"), keyed("GW-R2", "pg-race-key"));
    let (ra, rb) = tokio::join!(a.reserve(&r1), b.reserve(&r2));
    let outcomes = [ra.unwrap(), rb.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|r| matches!(r, Reservation::Reserved { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&Reservation::KeyUsed), "{outcomes:?}");
    let events: Vec<_> = a
        .audit_for("GW-K1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        events,
        ["attempt", "conflict", "deployed", "replay", "conflict"]
    );
    a.close().await;
    b.close().await;
}

/// #14 §2: a refused gateway address is one `refused` audit row (who, serial, address, rule) and
/// no identity row, on PostgreSQL as on SQLite (`http_security.rs` covers SQLite end to end).
#[tokio::test]
async fn pg_refused_gateway_is_audited_without_an_identity_row() {
    let db = TestDb::create().await;
    let store = open_as(&db, "s").await;
    store
        .audit_refused(
            "GW-REFUSED-1",
            "169.254.169.254:80",
            "line1",
            "fcc.allowed_networks: link-local",
        )
        .await
        .unwrap();
    let rows = store.audit_for("GW-REFUSED-1").await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].event, "refused");
    assert_eq!(rows[0].gateway, "169.254.169.254:80");
    assert_eq!(rows[0].requester, "line1");
    assert_eq!(
        rows[0].detail.as_deref(),
        Some("fcc.allowed_networks: link-local")
    );
    assert!(store.identity("GW-REFUSED-1").await.unwrap().is_none());
    assert_eq!(store.stats().await.unwrap(), Default::default());
    // The search of the floor page finds it like any other row.
    let found = store.audit_by_prefix("GW-REFUSED", 10).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
}
