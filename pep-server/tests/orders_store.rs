//! The work-order store (issue #17) on both backends: a real SQLite file and a real PostgreSQL
//! database (127.0.0.1:5432), the same scenario each.

use crate::pg_support;

use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl};
use pep_server::orders::{NewOrder, OrderId, OrderRequest, OrderState};
use pep_server::store::orders::{CloseOutcome, OrderError};
use pep_server::store::{DeployedOutcome, NewAttempt, Reservation, Store, now_ms};
use pg_support::TestDb;
use serde_json::json;

fn order(body: serde_json::Value) -> NewOrder {
    NewOrder::from_request(serde_json::from_value::<OrderRequest>(body).unwrap()).unwrap()
}

fn id(text: &str) -> OrderId {
    OrderId::new(text.to_owned()).unwrap()
}

fn serials(from: usize, n: usize) -> Vec<(i64, pep_ca::EndpointName)> {
    (from..from + n)
        .map(|i| (i as i64 + 1, format!("GW-UP-{i:05}").parse().unwrap()))
        .collect()
}

fn attempt(serial: &str, order: Option<OrderId>) -> NewAttempt {
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
        requester: "test".to_owned(),
        now_ms: now_ms(),
        request_key: None,
        order,
    }
}

async fn scenario(store: &Store) {
    let wo = order(json!({
        "orderId": "WO-S-1",
        "product": {"hardwareVersion": "rev-b", "category": "development"},
        "serials": ["GW-LIST-1", "GW-LIST-2"],
        "ranges": [{"prefix": "GW-R-", "from": 1, "to": 1000, "width": 4}],
    }));
    store.create_order(&wo, "planner").await.unwrap();
    let m = store.order_of("GW-LIST-2").await.unwrap().unwrap();
    assert_eq!((m.order_id.as_str(), m.state), ("WO-S-1", OrderState::Open));
    assert_eq!(m.product.category, Some(Category::Development));
    assert_eq!(m.product.hardware_version.unwrap().as_str(), "rev-b");
    assert!(store.order_of("GW-R-0999").await.unwrap().is_some());
    for out in ["GW-R-1001", "GW-R-999", "GW-LIST-3", "GW-R-"] {
        assert!(store.order_of(out).await.unwrap().is_none(), "{out}");
    }

    // Refusals leave nothing behind.
    assert!(matches!(
        store.create_order(&wo, "planner").await,
        Err(OrderError::Exists(_))
    ));
    let taken = order(json!({"orderId": "WO-S-2", "serials": ["GW-NEW-1", "GW-LIST-1"]}));
    match store.create_order(&taken, "planner").await {
        Err(OrderError::SerialTaken { at, serial, .. }) => {
            assert_eq!((at.as_str(), serial.as_str()), ("serials[1]", "GW-LIST-1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(store.order(&id("WO-S-2")).await.unwrap().is_none());
    assert!(store.order_of("GW-NEW-1").await.unwrap().is_none());
    let overlap = order(json!({"orderId": "WO-S-3", "ranges": [
        {"prefix": "GW-X-", "from": 1, "to": 5},
        {"prefix": "GW-R-", "from": 1000, "to": 2000, "width": 4}]}));
    assert!(matches!(
        store.create_order(&overlap, "planner").await,
        Err(OrderError::RangeOverlap { index: 1, .. })
    ));
    assert!(store.order(&id("WO-S-3")).await.unwrap().is_none());

    // An upload counts once finished, and all of it.
    let big = id("WO-S-1");
    let up = store.begin_upload(&big, 0).await.unwrap();
    store
        .upload_batch(&big, up, &serials(0, 1000))
        .await
        .unwrap();
    store
        .upload_batch(&big, up, &serials(1000, 500))
        .await
        .unwrap();
    assert!(store.order_of("GW-UP-00042").await.unwrap().is_none());
    assert_eq!(store.order(&big).await.unwrap().unwrap().expected, 1002);
    store.finish_upload(&big, up, 1500).await.unwrap();
    assert_eq!(
        store
            .order_of("GW-UP-01499")
            .await
            .unwrap()
            .unwrap()
            .order_id,
        big
    );
    assert_eq!(store.order(&big).await.unwrap().unwrap().expected, 2502);

    // A failing upload: the held serial is named with its line, and aborting removes its rows.
    store
        .create_order(&order(json!({"orderId": "WO-S-4"})), "planner")
        .await
        .unwrap();
    let other = id("WO-S-4");
    let up = store.begin_upload(&other, 0).await.unwrap();
    store
        .upload_batch(&other, up, &serials(5000, 10))
        .await
        .unwrap();
    let mut clash = serials(6000, 3);
    clash.push((4, "GW-LIST-1".parse().unwrap()));
    match store.upload_batch(&other, up, &clash).await {
        Err(OrderError::SerialTaken { line, held, .. }) => {
            assert_eq!(line, 4);
            assert!(held.contains("WO-S-1"), "{held}");
        }
        other => panic!("{other:?}"),
    }
    store.abort_upload(up).await.unwrap();
    // The same serials upload again (nothing of the failed upload is left).
    let up = store.begin_upload(&other, 0).await.unwrap();
    store
        .upload_batch(&other, up, &serials(5000, 10))
        .await
        .unwrap();
    let mut repeat = serials(6000, 2);
    repeat.push((3, "GW-UP-05000".parse().unwrap()));
    match store.upload_batch(&other, up, &repeat).await {
        Err(OrderError::SerialTaken { held, .. }) => assert_eq!(held, "repeats line 5001"),
        other => panic!("{other:?}"),
    }
    // Left loading (a server stopped): the next upload started after it is stale deletes it.
    let up = store.begin_upload(&other, now_ms() + 1).await.unwrap();
    store
        .upload_batch(&other, up, &serials(5000, 10))
        .await
        .unwrap();
    store.finish_upload(&other, up, 10).await.unwrap();
    assert_eq!(store.order(&other).await.unwrap().unwrap().expected, 10);

    // Progress: identities carry their order.
    let Reservation::Reserved { id: row } = store
        .reserve(&attempt("GW-R-0007", Some(big.clone())))
        .await
        .unwrap()
    else {
        panic!("not reserved");
    };
    assert_eq!(store.order(&big).await.unwrap().unwrap().in_progress, 1);
    let eid = format!("A-{}", vec!["AB"; 32].join(":"));
    store
        .mark_deployed(
            row,
            &DeployedOutcome {
                enrollment_id: &eid,
                cert_serial: "01",
                cert_not_after: 2_000_000_000,
                fcc_warnings: &[],
                duration_ms: 1,
            },
        )
        .await
        .unwrap();
    let s = store.order(&big).await.unwrap().unwrap();
    assert_eq!((s.deployed, s.in_progress, s.failed), (1, 0, 0));
    assert_eq!(s.created_by, "planner");
    assert_eq!(s.ranges.len(), 1);

    // Closing.
    assert_eq!(store.close_order(&big).await.unwrap(), CloseOutcome::Closed);
    assert_eq!(
        store.close_order(&big).await.unwrap(),
        CloseOutcome::AlreadyClosed
    );
    assert_eq!(
        store.close_order(&id("WO-NONE")).await.unwrap(),
        CloseOutcome::Unknown
    );
    assert_eq!(
        store.order_of("GW-LIST-1").await.unwrap().unwrap().state,
        OrderState::Closed
    );
    assert!(matches!(
        store.begin_upload(&big, 0).await,
        Err(OrderError::Closed(_))
    ));
    let open: Vec<_> = store
        .open_orders(10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_id.to_string())
        .collect();
    assert_eq!(open, ["WO-S-4"]);
    assert_eq!(store.orders().await.unwrap().len(), 2);
}

#[tokio::test]
async fn orders_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("pep.sqlite").display()
    ))
    .await
    .unwrap();
    scenario(&store).await;
    store.close().await;
}

#[tokio::test]
async fn orders_in_postgres() {
    let db = TestDb::create().await;
    let store = Store::open(&db.url).await.unwrap();
    scenario(&store).await;
    store.close().await;
}

/// `migrate-store` (SQLite → PostgreSQL) carries the orders, their ranges, uploaded serials and
/// progress along; an upload still loading is left behind.
#[tokio::test]
async fn orders_survive_migrate_store() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("pep.sqlite").display()
    ))
    .await
    .unwrap();
    scenario(&source).await;
    let loading = source.begin_upload(&id("WO-S-4"), 0).await.unwrap();
    source
        .upload_batch(&id("WO-S-4"), loading, &serials(7000, 5))
        .await
        .unwrap();
    let db = TestDb::create().await;
    let target = Store::open(&db.url).await.unwrap();
    pep_server::store::migrate_store(&source, &target)
        .await
        .unwrap();
    let before = source.orders().await.unwrap();
    let after = target.orders().await.unwrap();
    assert_eq!(before, after);
    assert_eq!(
        after
            .iter()
            .find(|o| o.order_id.as_str() == "WO-S-1")
            .unwrap()
            .deployed,
        1
    );
    for serial in ["GW-UP-01499", "GW-LIST-2", "GW-R-0500", "GW-UP-05009"] {
        assert_eq!(
            source.order_of(serial).await.unwrap(),
            target.order_of(serial).await.unwrap(),
            "{serial}"
        );
    }
    assert!(target.order_of("GW-UP-07000").await.unwrap().is_none());
    // The target's own ids continue above the copied ones.
    target
        .create_order(
            &order(json!({"orderId": "WO-T-1", "serials": ["GW-T-1"]})),
            "p",
        )
        .await
        .unwrap();
    source.close().await;
    target.close().await;
}
