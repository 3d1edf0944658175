//! Store acceptance: keyset paging, reservations under races, crash recovery — on a real SQLite file.

use std::collections::HashSet;

use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl, RequestKey};
use pep_server::store::{
    DeployedOutcome, FailedOutcome, IdentityState, NewAttempt, Reservation, Resolution, SortOrder,
    Store, WriteAhead, now_ms,
};

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
    // A syntactically valid enrollment ID derived from i.
    let bytes: Vec<String> = (0..32).map(|k| format!("{:02X}", (i + k) % 256)).collect();
    format!("A-{}", bytes.join(":"))
}

async fn deploy(store: &Store, serial: &str, i: usize) -> i64 {
    let Reservation::Reserved { id } = store.reserve(&attempt(serial)).await.unwrap() else {
        panic!("{serial} not reserved");
    };
    store
        .mark_deployed(
            id,
            &DeployedOutcome {
                enrollment_id: &enrollment(i),
                cert_serial: "01ab",
                cert_not_after: 2_000_000_000,
                fcc_warnings: &[],
                duration_ms: 1,
            },
        )
        .await
        .unwrap();
    id
}

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/sub/dir/pep.sqlite", dir.path().display())
}

#[tokio::test]
async fn store_creates_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    assert!(dir.path().join("sub/dir/pep.sqlite").exists());
    assert_eq!(store.stats().await.unwrap().deployed, 0);
    store.close().await;
    // Re-opening runs the (already applied) migrations again without error.
    let store = Store::open(&url(&dir)).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn paging_2500_deployed_rows_in_both_orders_gives_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    let mut expected = HashSet::new();
    for i in 0..2500 {
        let serial = format!("SN-{i:05}");
        deploy(&store, &serial, i).await;
        expected.insert(serial);
        // Some failed rows in between must not show up.
        if i % 500 == 0 {
            let f = format!("FAIL-{i}");
            let Reservation::Reserved { id } = store.reserve(&attempt(&f)).await.unwrap() else {
                panic!()
            };
            store
                .mark_failed(
                    id,
                    &FailedOutcome {
                        fcc_status: Some(13),
                        fcc_info: None,
                        fcc_warnings: &[],
                        error: "x",
                        duration_ms: 1,
                    },
                )
                .await
                .unwrap();
        }
    }
    for order in [SortOrder::Asc, SortOrder::Desc] {
        let mut seen = HashSet::new();
        let mut last = None;
        let mut pages = 0;
        let mut prev_id: Option<i64> = None;
        loop {
            let page = store.list_deployed(1000, order, last).await.unwrap();
            if page.is_empty() {
                break;
            }
            pages += 1;
            for r in &page {
                assert!(r.deployed);
                assert!(
                    seen.insert(r.serial_number.clone()),
                    "{} twice",
                    r.serial_number
                );
                if let Some(p) = prev_id {
                    match order {
                        SortOrder::Asc => assert!(r.id > p),
                        SortOrder::Desc => assert!(r.id < p),
                    }
                }
                prev_id = Some(r.id);
            }
            last = page.last().map(|r| r.id);
        }
        assert_eq!(pages, 3, "{order:?}");
        assert_eq!(seen, expected, "{order:?}");
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.deployed, stats.failed, stats.in_flight),
        (2500, 5, 0)
    );
    assert_eq!(
        store.enrollment_id("SN-00007").await.unwrap(),
        Some(enrollment(7))
    );
    assert_eq!(
        store.verification_key("SN-00007").await.unwrap().as_deref(),
        Some("vk-1")
    );
    assert_eq!(store.enrollment_id("FAIL-0").await.unwrap(), None);
    assert_eq!(store.enrollment_id("nope").await.unwrap(), None);
}

#[tokio::test]
async fn reservation_conflicts_and_failed_serials_are_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    let Reservation::Reserved { id } = store.reserve(&attempt("A1")).await.unwrap() else {
        panic!()
    };
    // In flight → conflict.
    assert_eq!(
        store.reserve(&attempt("A1")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::InFlight,
            same_key: false,
        }
    );
    store
        .mark_failed(
            id,
            &FailedOutcome {
                fcc_status: None,
                fcc_info: None,
                fcc_warnings: &[],
                error: "gateway 127.0.0.1:1 refused",
                duration_ms: 3,
            },
        )
        .await
        .unwrap();
    // Failed → retryable, same row id.
    assert_eq!(
        store.reserve(&attempt("A1")).await.unwrap(),
        Reservation::Reserved { id }
    );
    let detail = store.identity("A1").await.unwrap().unwrap();
    assert_eq!(detail.state, IdentityState::InFlight);
    assert_eq!(detail.attempts, 2);
    assert_eq!(detail.last_error, None);
    store
        .mark_deployed(
            id,
            &DeployedOutcome {
                enrollment_id: &enrollment(1),
                cert_serial: "ab",
                cert_not_after: 1,
                fcc_warnings: &[],
                duration_ms: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.reserve(&attempt("A1")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::Deployed,
            same_key: false,
        }
    );
    let events: Vec<String> = store
        .audit_for("A1")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.event.to_string())
        .collect();
    assert_eq!(
        events,
        [
            "attempt", "conflict", "failed", "attempt", "deployed", "conflict"
        ]
    );
}

#[tokio::test]
async fn racing_reservations_of_one_serial_give_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.reserve(&attempt("RACE")).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if let Reservation::Reserved { .. } = t.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn attempts_left_in_flight_are_failed_and_audited_on_open_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    store.reserve(&attempt("CRASH-1")).await.unwrap();
    store.reserve(&attempt("CRASH-2")).await.unwrap();
    deploy(&store, "OK-1", 1).await;
    // Simulate a crash: the process goes away with the attempts in flight.
    store.close().await;
    drop(store);

    let store = Store::open(&url(&dir)).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.deployed, stats.failed, stats.in_flight), (1, 2, 0));
    for serial in ["CRASH-1", "CRASH-2"] {
        let d = store.identity(serial).await.unwrap().unwrap();
        assert_eq!(d.state, IdentityState::Failed);
        assert!(d.last_error.unwrap().contains("interrupted"));
        let audit = store.audit_for(serial).await.unwrap();
        assert_eq!(audit.last().unwrap().event, "interrupted");
        assert!(matches!(
            store.reserve(&attempt(serial)).await.unwrap(),
            Reservation::Reserved { .. }
        ));
    }
    assert_eq!(
        store.identity("OK-1").await.unwrap().unwrap().state,
        IdentityState::Deployed
    );
}

/// #13 on SQLite: an attempt whose certificate was written ahead is `in_doubt` after a crash (the
/// others `failed`), keeps its enrollment ID, refuses new attempts until resolved, and a resolution
/// happens once; a request key names one serial and replays its deployed attempt.
#[tokio::test]
async fn written_ahead_attempts_are_in_doubt_after_a_crash_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    let Reservation::Reserved { id } = store.reserve(&attempt("AHEAD-1")).await.unwrap() else {
        panic!("not reserved")
    };
    let ahead = WriteAhead {
        enrollment_id: "A-01".to_owned(),
        cert_serial: "0a".to_owned(),
        cert_not_after: 2_000_000_000,
        cert_der: vec![0x30, 0x00],
        now_ms: now_ms(),
    };
    store.write_ahead(id, ahead.clone()).await.unwrap();
    store.reserve(&attempt("BEFORE-1")).await.unwrap();
    store.close().await;
    drop(store);

    let store = Store::open(&url(&dir)).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.failed, stats.in_doubt, stats.in_flight), (1, 1, 0));
    let d = store.identity("AHEAD-1").await.unwrap().unwrap();
    assert_eq!(d.state, IdentityState::InDoubt);
    assert_eq!(
        (d.enrollment_id.as_deref(), d.cert_der.as_deref()),
        (Some("A-01"), Some(&[0x30u8, 0x00][..]))
    );
    let events: Vec<_> = store
        .audit_for("AHEAD-1")
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(events, ["attempt", "in_doubt"]);
    assert_eq!(
        store.reserve(&attempt("AHEAD-1")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::InDoubt,
            same_key: false
        }
    );
    // A write-ahead of a row that is no longer in flight is refused.
    assert!(store.write_ahead(id, ahead).await.is_err());
    assert_eq!(
        store
            .resolve("AHEAD-1", IdentityState::Deployed, "op")
            .await
            .unwrap(),
        Resolution::Resolved
    );
    assert_eq!(
        store
            .resolve("AHEAD-1", IdentityState::Failed, "op")
            .await
            .unwrap(),
        Resolution::NotInDoubt {
            state: IdentityState::Deployed
        }
    );
    assert_eq!(
        store
            .resolve("NOBODY", IdentityState::Failed, "op")
            .await
            .unwrap(),
        Resolution::Unknown
    );
    assert!(
        store
            .resolve("AHEAD-1", IdentityState::InFlight, "op")
            .await
            .is_err()
    );
    assert_eq!(
        store.enrollment_id("AHEAD-1").await.unwrap().as_deref(),
        Some("A-01")
    );

    // Request keys.
    let keyed = |serial: &str, key: &str| NewAttempt {
        request_key: Some(RequestKey::new(key.to_owned()).unwrap()),
        ..attempt(serial)
    };
    let Reservation::Reserved { id } = store
        .reserve(&keyed("KEY-1", "sqlite-key-1"))
        .await
        .unwrap()
    else {
        panic!("not reserved")
    };
    assert_eq!(
        store
            .reserve(&keyed("KEY-1", "sqlite-key-1"))
            .await
            .unwrap(),
        Reservation::Conflict {
            state: IdentityState::InFlight,
            same_key: true
        }
    );
    assert_eq!(
        store
            .reserve(&keyed("KEY-2", "sqlite-key-1"))
            .await
            .unwrap(),
        Reservation::KeyUsed
    );
    store
        .mark_deployed(
            id,
            &DeployedOutcome {
                enrollment_id: "A-02",
                cert_serial: "0b",
                cert_not_after: 2_000_000_000,
                fcc_warnings: &[],
                duration_ms: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .reserve(&keyed("KEY-1", "sqlite-key-1"))
            .await
            .unwrap(),
        Reservation::Replay { id }
    );
    assert_eq!(
        store
            .identity("KEY-1")
            .await
            .unwrap()
            .unwrap()
            .request_id
            .as_deref(),
        Some("sqlite-key-1")
    );
    assert!(store.identity("KEY-2").await.unwrap().is_none());
}

/// Writes are committed in batches (group commit): a write that fails inside a batch is undone
/// alone, the others of the same batch are kept, and nothing of the failed one is half-written.
#[tokio::test]
async fn a_failing_write_in_a_batch_is_undone_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    // 300 reservations and 100 finishes of rows that do not exist, all queued at once so that the
    // writer thread takes many of them into one transaction.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400usize {
        let store = store.clone();
        tasks.spawn(async move {
            if i % 4 == 3 {
                let missing = 1_000_000 + i as i64;
                let e = store
                    .mark_deployed(
                        missing,
                        &DeployedOutcome {
                            enrollment_id: &enrollment(i),
                            cert_serial: "01",
                            cert_not_after: 1,
                            fcc_warnings: &[],
                            duration_ms: 1,
                        },
                    )
                    .await
                    .unwrap_err();
                assert!(e.to_string().contains(&missing.to_string()), "{e}");
                None
            } else {
                let serial = format!("BATCH-{i:03}");
                match store.reserve(&attempt(&serial)).await.unwrap() {
                    Reservation::Reserved { id } => Some((serial, id)),
                    other => panic!("{serial}: {other:?}"),
                }
            }
        });
    }
    let mut reserved = Vec::new();
    while let Some(done) = tasks.join_next().await {
        reserved.extend(done.unwrap());
    }
    assert_eq!(reserved.len(), 300);
    // Half of them deployed, half failed, again all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for (k, (serial, id)) in reserved.iter().cloned().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            if k % 2 == 0 {
                store
                    .mark_deployed(
                        id,
                        &DeployedOutcome {
                            enrollment_id: &enrollment(k),
                            cert_serial: "02",
                            cert_not_after: 2_000_000_000,
                            fcc_warnings: &[],
                            duration_ms: 3,
                        },
                    )
                    .await
                    .unwrap();
            } else {
                store
                    .mark_failed(
                        id,
                        &FailedOutcome {
                            fcc_status: Some(17),
                            fcc_info: None,
                            fcc_warnings: &[],
                            error: "rejected",
                            duration_ms: 3,
                        },
                    )
                    .await
                    .unwrap();
            }
            serial
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    store.close().await;

    // Everything answered is on disk, exactly once, with its audit rows and nothing more.
    let store = Store::open(&url(&dir)).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.deployed, stats.failed, stats.in_flight),
        (150, 150, 0)
    );
    for (k, (serial, _)) in reserved.iter().enumerate() {
        let events: Vec<String> = store
            .audit_for(serial)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.event.to_string())
            .collect();
        let outcome = if k % 2 == 0 { "deployed" } else { "failed" };
        assert_eq!(events.len(), 2, "{serial}: {events:?}");
        assert!(
            events.contains(&"attempt".to_owned()) && events.contains(&outcome.to_owned()),
            "{serial}: {events:?}"
        );
    }
    store.close().await;
}

#[tokio::test]
async fn a_closed_store_refuses_writes_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir)).await.unwrap();
    deploy(&store, "BEFORE-CLOSE", 1).await;
    store.close().await;
    let e = store.reserve(&attempt("AFTER-CLOSE")).await.unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    // What was written before the close is there.
    let store = Store::open(&url(&dir)).await.unwrap();
    assert_eq!(
        store.enrollment_id("BEFORE-CLOSE").await.unwrap(),
        Some(enrollment(1))
    );
    assert_eq!(store.identity("AFTER-CLOSE").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn memory_databases_are_separate_and_work_like_files() {
    let one = Store::open("sqlite::memory:").await.unwrap();
    let two = Store::open("sqlite::memory:").await.unwrap();
    deploy(&one, "MEM-1", 1).await;
    assert_eq!(
        one.enrollment_id("MEM-1").await.unwrap(),
        Some(enrollment(1))
    );
    assert_eq!(two.enrollment_id("MEM-1").await.unwrap(), None);
    assert_eq!(
        one.reserve(&attempt("MEM-1")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::Deployed,
            same_key: false,
        }
    );
    one.close().await;
    two.close().await;
}
