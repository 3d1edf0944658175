//! The store queries behind the factory-floor page, on SQLite and on the real PostgreSQL server:
//! outcome counts since a time and per minute, the latest outcomes, and the audit search by serial
//! prefix (whose boundaries must be exact: `GW-1` finds `GW-1`, `GW-10`, never `GW-2` or `GW-`).

use crate::pg_support;

use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl};
use pep_server::store::{DeployedOutcome, FailedOutcome, NewAttempt, Reservation, Store, now_ms};

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
            verification_key: None,
            defaulted: Default::default(),
        },
        requester: "floor-test".to_owned(),
        now_ms: now_ms(),
        request_key: None,
        order: None,
    }
}

async fn reserve(store: &Store, serial: &str) -> i64 {
    match store.reserve(&attempt(serial)).await.unwrap() {
        Reservation::Reserved { id } => id,
        other => panic!("{serial}: {other:?}"),
    }
}

async fn deploy(store: &Store, serial: &str) {
    let id = reserve(store, serial).await;
    let eid = format!("A-{serial}");
    store
        .mark_deployed(
            id,
            &DeployedOutcome {
                enrollment_id: &eid,
                cert_serial: "01",
                cert_not_after: 0,
                fcc_warnings: &[],
                duration_ms: 12,
            },
        )
        .await
        .unwrap();
}

async fn fail(store: &Store, serial: &str, status: Option<u32>) {
    let id = reserve(store, serial).await;
    store
        .mark_failed(
            id,
            &FailedOutcome {
                fcc_status: status,
                fcc_info: None,
                fcc_warnings: &[],
                error: "FCC said no",
                duration_ms: 7,
            },
        )
        .await
        .unwrap();
}

async fn check(store: Store) {
    let before = now_ms();
    for s in ["GW-1", "GW-10", "GW-11", "GW-2", "GW-", "HX-1"] {
        deploy(&store, s).await;
    }
    fail(&store, "GW-12", Some(13)).await;
    fail(&store, "GW-12", None).await; // retried, failed again
    let _in_flight = reserve(&store, "GW-13").await;

    let all = store.outcome_counts(0).await.unwrap();
    assert_eq!((all.deployed, all.failed), (6, 2));
    let since = store.outcome_counts(before).await.unwrap();
    assert_eq!((since.deployed, since.failed), (6, 2));
    let future = store.outcome_counts(now_ms() + 3_600_000).await.unwrap();
    assert_eq!((future.deployed, future.failed), (0, 0));

    let minutes = store.outcomes_per_minute(before - 60_000).await.unwrap();
    assert!(!minutes.is_empty() && minutes.len() <= 2, "{minutes:?}");
    assert!(minutes.windows(2).all(|w| w[0].minute < w[1].minute));
    let deployed: u64 = minutes.iter().map(|m| m.counts.deployed).sum();
    let failed: u64 = minutes.iter().map(|m| m.counts.failed).sum();
    assert_eq!((deployed, failed), (6, 2));
    assert!(minutes[0].minute >= before / 60_000);

    let recent = store.recent_outcomes(3).await.unwrap();
    let got: Vec<(&str, &str)> = recent
        .iter()
        .map(|e| (e.serial.as_str(), e.event.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("GW-12", "failed"),
            ("GW-12", "failed"),
            ("HX-1", "deployed")
        ]
    );
    assert_eq!(recent[1].fcc.status, Some(13));
    assert_eq!(recent[0].fcc.status, None);
    assert_eq!(recent[0].duration_ms, Some(7));

    let serials = |entries: Vec<pep_server::store::AuditEntry>| {
        let mut s: Vec<String> = entries.into_iter().map(|e| e.serial).collect();
        s.dedup();
        s
    };
    assert_eq!(
        serials(store.audit_by_prefix("GW-1", 100).await.unwrap()),
        ["GW-13", "GW-12", "GW-11", "GW-10", "GW-1"],
        "newest first, only serials starting with GW-1"
    );
    let exact = store.audit_by_prefix("GW-2", 100).await.unwrap();
    assert_eq!(exact.len(), 2);
    assert_eq!(exact[0].event, "deployed");
    assert_eq!(exact[1].event, "attempt");
    assert_eq!(store.audit_by_prefix("GW-12", 100).await.unwrap().len(), 4);
    assert_eq!(store.audit_by_prefix("GW-12", 3).await.unwrap().len(), 3);
    assert!(store.audit_by_prefix("ZZ", 100).await.unwrap().is_empty());
    assert!(store.audit_by_prefix("gw-1", 100).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn floor_queries_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pep.sqlite").display());
    check(Store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn floor_queries_on_postgres() {
    let db = pg_support::TestDb::create().await;
    check(Store::open(&db.url).await.unwrap()).await;
}
