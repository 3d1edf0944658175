//! `migrate-store`: SQLite → PostgreSQL (library and the real binary) and back; ids, states,
//! details and audit trails survive; in-flight rows arrive failed (in doubt when written ahead);
//! request keys come along; a non-empty target is refused.

use crate::pg_support;

use std::process::Command;

use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl, RequestKey};
use pep_server::store::{
    DeployedOutcome, FailedOutcome, IdentityState, MigrationReport, NewAttempt, Reservation,
    SortOrder, Store, StoreError, WriteAhead, migrate_store, now_ms,
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
            hardware_version: text("hw-2"),
            radio_config: text("00"),
            led_config: text("01"),
            category: Category::Development,
            verification_key: Some(text("vk")),
            defaulted: Default::default(),
        },
        requester: "line-1".to_owned(),
        now_ms: now_ms(),
        request_key: None,
        order: None,
    }
}

fn enrollment(i: usize) -> String {
    let bytes: Vec<String> = (0..32)
        .map(|k| format!("{:02X}", (i * 7 + k) % 256))
        .collect();
    format!("A-{}", bytes.join(":"))
}

async fn reserve(store: &Store, serial: &str) -> i64 {
    match store.reserve(&attempt(serial)).await.unwrap() {
        Reservation::Reserved { id } => id,
        other => panic!("{serial}: {other:?}"),
    }
}

async fn fail(store: &Store, id: i64) {
    store
        .mark_failed(
            id,
            &FailedOutcome {
                fcc_status: Some(13),
                fcc_info: Some("Certificate expired:mbed.BootstrapDeviceCert"),
                fcc_warnings: &["w1".to_owned()],
                error: "gateway rejected the bundle",
                duration_ms: 3,
            },
        )
        .await
        .unwrap();
}

async fn deploy(store: &Store, id: i64, i: usize) {
    let warnings = if i.is_multiple_of(10) {
        vec!["a warning".to_owned()]
    } else {
        vec![]
    };
    store
        .mark_deployed(
            id,
            &DeployedOutcome {
                enrollment_id: &enrollment(i),
                cert_serial: &format!("{i:04x}"),
                cert_not_after: 2_000_000_000 + i as i64,
                fcc_warnings: &warnings,
                duration_ms: 7,
            },
        )
        .await
        .unwrap();
}

/// 40 deployed, 1 deployed on retry, 5 failed, 3 in flight.
async fn fill(store: &Store) -> Vec<String> {
    let mut serials = Vec::new();
    for i in 0..40 {
        let serial = format!("GW-{i:03}");
        let id = reserve(store, &serial).await;
        deploy(store, id, i).await;
        serials.push(serial);
        if i.is_multiple_of(8) {
            let bad = format!("BAD-{i:03}");
            let id = reserve(store, &bad).await;
            fail(store, id).await;
            serials.push(bad);
        }
    }
    let id = reserve(store, "RETRIED").await;
    fail(store, id).await;
    let id = reserve(store, "RETRIED").await;
    deploy(store, id, 99).await;
    serials.push("RETRIED".to_owned());
    for i in 0..3 {
        let serial = format!("FLYING-{i}");
        reserve(store, &serial).await;
        serials.push(serial);
    }
    serials
}

async fn all_deployed(store: &Store, order: SortOrder) -> Vec<pep_server::store::IdentityRecord> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_deployed(9, order, after).await.unwrap();
        let Some(last) = page.last() else { return all };
        after = Some(last.id);
        all.extend(page);
    }
}

#[tokio::test]
async fn sqlite_to_postgres_keeps_everything_and_fails_in_flight_rows() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(&format!("sqlite://{}/pep.sqlite", dir.path().display()))
        .await
        .unwrap();
    let serials = fill(&source).await;
    let db = TestDb::create().await;
    let target = Store::open(&db.url).await.unwrap();

    let report = migrate_store(&source, &target).await.unwrap();
    let mut source_audit = 0;
    for s in &serials {
        source_audit += source.audit_for(s).await.unwrap().len() as u64;
    }
    assert_eq!(
        report,
        MigrationReport {
            deployed: 41,
            failed: 8,
            interrupted: 3,
            in_doubt: 0,
            audit: source_audit,
            revoked: 0,
            history: 0,
        }
    );
    assert_eq!(report.identities(), 49);
    let stats = target.stats().await.unwrap();
    assert_eq!((stats.deployed, stats.failed, stats.in_flight), (41, 8, 0));

    for order in [SortOrder::Asc, SortOrder::Desc] {
        assert_eq!(
            all_deployed(&source, order).await,
            all_deployed(&target, order).await
        );
    }
    for s in &serials {
        let before = source.identity(s).await.unwrap().unwrap();
        let after = target.identity(s).await.unwrap().unwrap();
        let audit_before = source.audit_for(s).await.unwrap();
        let audit_after = target.audit_for(s).await.unwrap();
        if before.state == IdentityState::InFlight {
            assert_eq!(after.state, IdentityState::Failed, "{s}");
            assert!(after.last_error.as_deref().unwrap().contains("migrated"));
            assert_eq!(
                (after.id, &after.serial_number),
                (before.id, &before.serial_number)
            );
            assert_eq!(&audit_after[..audit_before.len()], &audit_before[..]);
            let extra = &audit_after[audit_before.len()..];
            assert_eq!(extra.len(), 1, "{s}");
            assert_eq!(extra[0].event, "interrupted");
        } else {
            assert_eq!(before, after, "{s}");
            assert_eq!(audit_before, audit_after, "{s}");
        }
    }
    assert_eq!(
        target.verification_key("GW-005").await.unwrap().as_deref(),
        Some("vk")
    );

    // A second run is refused and changes nothing.
    let err = migrate_store(&source, &target).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TargetNotEmpty { identities: 49, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("empty store only"), "{err}");
    assert_eq!(target.stats().await.unwrap(), stats);

    // The target continues: new ids above the copied ones, failed and interrupted serials retry.
    let max_id = all_deployed(&target, SortOrder::Desc).await[0].id;
    let new_id = reserve(&target, "NEW-1").await;
    assert!(new_id > max_id, "{new_id} <= {max_id}");
    let audit_new = target.audit_for("NEW-1").await.unwrap();
    let max_audit = target
        .audit_for("FLYING-2")
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    assert!(audit_new[0].id > max_audit);
    let flying = target.identity("FLYING-0").await.unwrap().unwrap().id;
    assert_eq!(reserve(&target, "FLYING-0").await, flying);
    let bad = target.identity("BAD-008").await.unwrap().unwrap().id;
    assert_eq!(reserve(&target, "BAD-008").await, bad);
    assert_eq!(
        target.reserve(&attempt("GW-001")).await.unwrap(),
        Reservation::Conflict {
            state: IdentityState::Deployed,
            same_key: false,
        }
    );
    source.close().await;
    target.close().await;
}

fn pep_server(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_binary_sqlite_to_postgres_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/pep.sqlite", dir.path().display());
    let source = Store::open(&sqlite).await.unwrap();
    fill(&source).await;
    let expected = all_deployed(&source, SortOrder::Asc).await;
    source.close().await;
    let db = TestDb::create().await;

    let out = pep_server(&["migrate-store", "--from", &sqlite, "--to", &db.url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The SQLite source recovered its own in-flight rows when opened: they arrive failed.
    assert!(
        stdout.contains("copied 49 identities (41 deployed, 8 failed"),
        "{stdout}"
    );

    let out = pep_server(&["migrate-store", "--from", &sqlite, "--to", &db.url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already holds 49 identities"), "{stderr}");

    // And back, into a new SQLite file.
    let back = format!("sqlite://{}/back/pep.sqlite", dir.path().display());
    let out = pep_server(&["migrate-store", "--from", &db.url, "--to", &back]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pg = Store::open(&db.url).await.unwrap();
    let round = Store::open(&back).await.unwrap();
    assert_eq!(all_deployed(&pg, SortOrder::Asc).await, expected);
    assert_eq!(all_deployed(&round, SortOrder::Asc).await, expected);
    assert_eq!(
        round.stats().await.unwrap(),
        pg.stats().await.unwrap(),
        "round trip"
    );
    pg.close().await;
    round.close().await;

    // Bad URLs: a clear error, exit 1.
    let out = pep_server(&["migrate-store", "--from", "mysql://x/y", "--to", &back]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("source store") && stderr.contains("mysql://x/y"),
        "{stderr}"
    );
}

/// #13: an in-flight row whose certificate was written ahead arrives `in_doubt` (not failed), an
/// in-doubt row stays so, and the request keys come along (a key still names its serial).
#[tokio::test]
async fn written_ahead_rows_arrive_in_doubt_and_request_keys_come_along() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(&format!("sqlite://{}/pep.sqlite", dir.path().display()))
        .await
        .unwrap();
    let keyed = NewAttempt {
        request_key: Some(RequestKey::new("migrate-key-1".to_owned()).unwrap()),
        ..attempt("GW-KEYED")
    };
    let Reservation::Reserved { id } = source.reserve(&keyed).await.unwrap() else {
        panic!("not reserved")
    };
    deploy(&source, id, 1).await;
    let ahead = reserve(&source, "GW-AHEAD").await;
    source
        .write_ahead(
            ahead,
            WriteAhead {
                enrollment_id: enrollment(2),
                cert_serial: "02".to_owned(),
                cert_not_after: 2_000_000_000,
                cert_der: vec![0x30, 0x00],
                now_ms: now_ms(),
            },
        )
        .await
        .unwrap();
    reserve(&source, "GW-PLAIN").await;

    let db = TestDb::create().await;
    let target = Store::open(&db.url).await.unwrap();
    let report = migrate_store(&source, &target).await.unwrap();
    assert_eq!(
        (
            report.deployed,
            report.failed,
            report.in_doubt,
            report.interrupted
        ),
        (1, 1, 1, 2)
    );
    let d = target.identity("GW-AHEAD").await.unwrap().unwrap();
    assert_eq!(d.state, IdentityState::InDoubt);
    assert_eq!(d.enrollment_id, Some(enrollment(2)));
    assert_eq!(d.cert_der, Some(vec![0x30, 0x00]));
    assert_eq!(
        target.identity("GW-PLAIN").await.unwrap().unwrap().state,
        IdentityState::Failed
    );
    // The key of GW-KEYED: a replay there, refused for another serial.
    let again = NewAttempt {
        request_key: Some(RequestKey::new("migrate-key-1".to_owned()).unwrap()),
        ..attempt("GW-KEYED")
    };
    assert!(matches!(
        target.reserve(&again).await.unwrap(),
        Reservation::Replay { .. }
    ));
    let other = NewAttempt {
        request_key: Some(RequestKey::new("migrate-key-1".to_owned()).unwrap()),
        ..attempt("GW-OTHER")
    };
    assert_eq!(target.reserve(&other).await.unwrap(), Reservation::KeyUsed);
    source.close().await;
    target.close().await;
}
