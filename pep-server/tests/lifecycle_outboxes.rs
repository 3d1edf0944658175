//! A revocation's deliveries (issues #16, #17, #18): in the transaction that revokes an identity,
//! the webhook outbox gets a `revoked` event for every receiver subscribed to it, and the cloud
//! claim of its enrollment ID — when one was queued — gets its deletion queued. An identity whose
//! claim was never queued (the operator uploads the CSV) queues no deletion. On SQLite (the writer
//! thread's transaction) and on PostgreSQL.

use crate::pg_support;

use std::collections::BTreeSet;

use pep_ca::RevocationReason;
use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl};
use pep_server::store::{
    ClaimAction, DeployedOutcome, EventRoute, EventRoutes, HookEvent, NewAttempt, Reservation,
    RevokeOutcome, SortOrder, Store, StoreOptions, now_ms,
};

/// A deployed identity `serial` with enrollment ID `eid`, written as the provisioning writes it.
async fn deploy(store: &Store, serial: &str, eid: &str) {
    let text = |s: &str| FieldText::new(s.to_owned()).unwrap();
    let link = |s: &str| HttpUrl::new(s.to_owned()).unwrap();
    let attempt = NewAttempt {
        params: GatewayParams {
            serial_number: serial.parse().unwrap(),
            gateway: "127.0.0.1:40000".parse().unwrap(),
            api_address: link("https://api.example"),
            gateway_services_address: link("https://gw.example"),
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
        order: None,
    };
    let Reservation::Reserved { id } = store.reserve(&attempt).await.unwrap() else {
        panic!("{serial} not reserved");
    };
    let outcome = DeployedOutcome {
        enrollment_id: eid,
        cert_serial: "0A",
        cert_not_after: 2_000_000_000,
        fcc_warnings: &[],
        duration_ms: 1,
    };
    store.mark_deployed(id, &outcome).await.unwrap();
}

fn eid(i: u8) -> String {
    let pairs: Vec<String> = (0..32u8).map(|k| format!("{:02X}", k ^ i)).collect();
    format!("A-{}", pairs.join(":"))
}

fn options(claims: bool) -> StoreOptions {
    StoreOptions {
        claims,
        event_routes: EventRoutes {
            routes: vec![EventRoute {
                receiver: "mes".to_owned(),
                events: BTreeSet::from([HookEvent::Deployed, HookEvent::Revoked]),
            }],
        },
        ..StoreOptions::default()
    }
}

/// The deletions queued for `eid`.
async fn deletions(store: &Store, eid: &str) -> usize {
    store
        .list_claims(None, 1000, SortOrder::Asc, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.enrollment_id == eid && c.action == ClaimAction::Delete)
        .count()
}

async fn revoke_queues_its_event_and_its_claim_deletion(claiming: Store, not_claiming: Store) {
    // Claims on: the deployment queued the claim, the revocation queues its deletion.
    deploy(&claiming, "RV-1", &eid(1)).await;
    let RevokeOutcome::Revoked(revoked) = claiming
        .revoke(
            "RV-1",
            RevocationReason::KeyCompromise,
            Some("leaked"),
            "op",
        )
        .await
        .unwrap()
    else {
        panic!("RV-1 not revoked");
    };
    assert_eq!(revoked.enrollment_id.as_deref(), Some(eid(1).as_str()));
    let events: Vec<HookEvent> = claiming
        .deliveries_for("RV-1")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    assert_eq!(events, [HookEvent::Deployed, HookEvent::Revoked]);
    let revoked_event = claiming
        .deliveries_for("RV-1")
        .await
        .unwrap()
        .pop()
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&revoked_event.payload).unwrap();
    assert_eq!(payload["event"], "revoked", "{payload}");
    assert_eq!(payload["enrollmentID"], eid(1).as_str(), "{payload}");
    assert_eq!(payload["reason"], "keyCompromise", "{payload}");
    assert_eq!(deletions(&claiming, &eid(1)).await, 1);

    // A revocation refused (already revoked) writes neither.
    let again = claiming
        .revoke("RV-1", RevocationReason::KeyCompromise, None, "op")
        .await
        .unwrap();
    assert!(
        matches!(again, RevokeOutcome::NotRevocable { .. }),
        "{again:?}"
    );
    assert_eq!(claiming.deliveries_for("RV-1").await.unwrap().len(), 2);
    assert_eq!(deletions(&claiming, &eid(1)).await, 1);

    // Claims off when it deployed: no claim row, so nothing to delete in the cloud (the operator
    // uses the bulk-delete CSV); the webhook event is still written.
    deploy(&not_claiming, "RV-2", &eid(2)).await;
    let outcome = not_claiming
        .revoke("RV-2", RevocationReason::Superseded, None, "op")
        .await
        .unwrap();
    assert!(matches!(outcome, RevokeOutcome::Revoked(_)), "{outcome:?}");
    assert_eq!(deletions(&not_claiming, &eid(2)).await, 0);
    let events: Vec<HookEvent> = not_claiming
        .deliveries_for("RV-2")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    assert_eq!(events, [HookEvent::Deployed, HookEvent::Revoked]);
}

#[tokio::test]
async fn sqlite_revocation_writes_its_event_and_claim_deletion_in_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let claiming = Store::open_with(&url("a.sqlite"), options(true))
        .await
        .unwrap();
    let not_claiming = Store::open_with(&url("b.sqlite"), options(false))
        .await
        .unwrap();
    revoke_queues_its_event_and_its_claim_deletion(claiming, not_claiming).await;
}

#[tokio::test]
async fn postgres_revocation_writes_its_event_and_claim_deletion_in_its_transaction() {
    let a = pg_support::TestDb::create().await;
    let b = pg_support::TestDb::create().await;
    let claiming = Store::open_with(&a.url, options(true)).await.unwrap();
    let not_claiming = Store::open_with(&b.url, options(false)).await.unwrap();
    revoke_queues_its_event_and_its_claim_deletion(claiming, not_claiming).await;
}
