//! The outbox of the event webhooks (`[[hooks.events]]`, issue #17): what the store writes in the
//! transaction of a state change, and what the delivery task (`crate::hooks`) claims and settles.
//!
//! An event ([`NewEvent`]) becomes one `hook_deliveries` row per receiver subscribed to it
//! ([`EventRoutes`]), written by the same transaction as the state change, so a committed change
//! always has its events and a rolled-back one never does. Without receivers nothing is written.
//! The row holds the JSON payload as it will be POSTed: the event ID (the receivers'
//! de-duplication key, the same for every receiver of one event), the event, the serial, the
//! enrollment ID, the gateway, the time and, for `failed`, FCC's status and the error — never a
//! secret or a private key.

use std::collections::BTreeSet;
use std::fmt;

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::sqlite_writer::OutboxWrite;
use super::{SortOrder, Store, StoreError, UnknownName, q, sql};

/// An event a webhook receiver may subscribe to (`events = [...]` of `[[hooks.events]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// A gateway holds its identity: the attempt's outcome was recorded `deployed`.
    Deployed,
    /// An attempt failed (retryable); the payload carries FCC's status and the error.
    Failed,
    /// An identity was revoked (issue #16; its transaction calls the enqueue functions).
    Revoked,
}

text_enum!(HookEvent, "hook event", {
    Deployed => "deployed",
    Failed => "failed",
    Revoked => "revoked",
});

impl HookEvent {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [HookEvent; 3] = [HookEvent::Deployed, HookEvent::Failed, HookEvent::Revoked];
}

/// Where an outbox row is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not tried yet.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Tried and not delivered yet: retried with exponential backoff until the receiver's maximum
    /// age.
    Failing,
    /// Not delivered within the receiver's maximum age: given up (visible, never deleted).
    Dead,
}

text_enum!(DeliveryState, "delivery state", {
    Pending => "pending",
    Delivered => "delivered",
    Failing => "failing",
    Dead => "dead",
});

impl DeliveryState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failing,
        DeliveryState::Dead,
    ];
}

/// One configured receiver as the store sees it: its name (the `receiver` column) and the events
/// it subscribed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRoute {
    /// The receiver's name (`name` of `[[hooks.events]]`, by default its URL without query).
    pub receiver: String,
    /// The events it receives.
    pub events: BTreeSet<HookEvent>,
}

/// Every configured receiver ([`super::StoreOptions::event_routes`]). Empty (the default): no
/// outbox row is ever written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRoutes {
    /// The receivers.
    pub routes: Vec<EventRoute>,
}

impl EventRoutes {
    /// The receivers subscribed to `event`.
    pub fn receivers_of(&self, event: HookEvent) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .filter(move |r| r.events.contains(&event))
            .map(|r| r.receiver.as_str())
    }

    /// True when no receiver is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// An event to put into the outbox (deployed, failed, revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub event: HookEvent,
    /// The serial.
    pub serial: String,
    /// The enrollment ID, when the identity has one.
    pub enrollment_id: Option<String>,
    /// `ip:port` of the gateway.
    pub gateway: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// FCC's ReturnStatus (`failed`, when FCC answered).
    pub fcc_status: Option<u32>,
    /// What went wrong (`failed`), or the reason (`revoked`).
    pub detail: Option<String>,
}

impl NewEvent {
    /// The `revoked` event of a revocation: its enrollment ID, the gateway of its latest attempt
    /// and the RFC 5280 reason name (the payload's `reason`).
    pub(crate) fn revoked(
        keys: &super::AuditKeys,
        revoked: &super::RevokedIdentity,
        reason: pep_ca::RevocationReason,
        at_ms: i64,
    ) -> NewEvent {
        NewEvent {
            event: HookEvent::Revoked,
            serial: keys.serial.clone(),
            enrollment_id: revoked.enrollment_id.clone(),
            gateway: keys.gateway.clone(),
            at_ms,
            fcc_status: None,
            detail: Some(reason.as_str().to_owned()),
        }
    }
}

/// A new event ID: a random (version 4) UUID, the receivers' de-duplication key.
fn new_event_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// `at_ms` as RFC 3339 UTC with milliseconds.
fn rfc3339(at_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_else(|_| at_ms.to_string())
}

/// The outbox rows of one event (`sql::INSERT_DELIVERY`, both backends): one per receiver, with
/// one event ID and one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRows<'r> {
    pub(crate) event_id: String,
    pub(crate) payload: String,
    pub(crate) receivers: Vec<&'r str>,
}

impl NewEvent {
    /// The JSON body every receiver of this event gets, with its (new) event ID.
    pub(crate) fn payload(&self) -> (String, String) {
        let event_id = new_event_id();
        let mut body = json!({
            "eventId": event_id,
            "event": self.event.as_str(),
            "serialNumber": self.serial,
            "enrollmentID": self.enrollment_id,
            "gateway": self.gateway,
            "at": rfc3339(self.at_ms),
        });
        if let Some(map) = body.as_object_mut() {
            match self.event {
                HookEvent::Failed => {
                    map.insert("fccStatus".into(), json!(self.fcc_status));
                    map.insert("error".into(), json!(self.detail));
                }
                HookEvent::Revoked => {
                    map.insert("reason".into(), json!(self.detail));
                }
                HookEvent::Deployed => {}
            }
        }
        (event_id, body.to_string())
    }

    /// The `deployed` event of the row `keys` with `enrollment_id`, at `at_ms`.
    pub(crate) fn deployed(keys: &super::AuditKeys, enrollment_id: &str, at_ms: i64) -> NewEvent {
        NewEvent {
            event: HookEvent::Deployed,
            serial: keys.serial.clone(),
            enrollment_id: Some(enrollment_id.to_owned()),
            gateway: keys.gateway.clone(),
            at_ms,
            fcc_status: Some(0),
            detail: None,
        }
    }

    /// The `failed` event of the row `keys`: FCC's status (if it answered) and the error.
    pub(crate) fn failed(
        keys: &super::AuditKeys,
        fcc_status: Option<u32>,
        error: &str,
        at_ms: i64,
    ) -> NewEvent {
        NewEvent {
            event: HookEvent::Failed,
            serial: keys.serial.clone(),
            enrollment_id: None,
            gateway: keys.gateway.clone(),
            at_ms,
            fcc_status,
            detail: Some(error.to_owned()),
        }
    }

    /// The `failed` event of an attempt the recovery found interrupted and marked `failed`
    /// (`state`); none for one it left `in_doubt` (nothing happened yet: an operator decides,
    /// and the resolution has its event).
    pub(crate) fn interrupted(
        row: &super::AuditKeys,
        state: super::IdentityState,
        last_error: &str,
        now_ms: i64,
    ) -> Option<NewEvent> {
        (state == super::IdentityState::Failed)
            .then(|| NewEvent::failed(row, None, last_error, now_ms))
    }

    /// The outbox rows of this event for the receivers subscribed to it; `None` (not even an
    /// event ID is made) without subscribers.
    pub(crate) fn rows<'r>(&self, routes: &'r EventRoutes) -> Option<OutboxRows<'r>> {
        let receivers: Vec<&str> = routes.receivers_of(self.event).collect();
        if receivers.is_empty() {
            return None;
        }
        let (event_id, payload) = self.payload();
        Some(OutboxRows {
            event_id,
            payload,
            receivers,
        })
    }
}

/// One outbox row as read (listing, claim).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    /// Row id (the paging cursor, and the order of the events).
    pub id: i64,
    /// The event ID (`Pep-Event-Id`, `eventId`).
    pub event_id: String,
    /// The receiver's name.
    pub receiver: String,
    /// The serial.
    pub serial: String,
    /// The event.
    pub event: HookEvent,
    /// The JSON body.
    pub payload: String,
    /// Where the delivery is.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due, ms since the epoch.
    pub next_attempt_at: i64,
    /// Why the latest attempt failed (the receiver's status and the start of its answer, or the
    /// transport error).
    pub last_error: Option<String>,
    /// When the event happened (the row was written), ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
    /// When the receiver accepted it, ms since the epoch.
    pub delivered_at: Option<i64>,
}

/// What the delivery task asks of [`super::Store::claim_deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming server (the lease owner).
    pub owner: String,
    /// Now, ms since the epoch: rows due by now are taken.
    pub now_ms: i64,
    /// The lease ends then (ms since the epoch): after it, another server may send the row.
    pub lease_until_ms: i64,
    /// Only rows of these receivers (the configured ones).
    pub receivers: Vec<String>,
    /// At most this many rows.
    pub limit: u32,
}

impl Claim {
    /// The receivers as the JSON array both claim statements read.
    pub(crate) fn receivers_json(&self) -> String {
        serde_json::Value::from(self.receivers.clone()).to_string()
    }
}

/// How an attempt of a leased row ended ([`super::Store::settle_deliveries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not: retry at `next_attempt_ms`, or give up (`dead`) when the row is too old.
    Failed {
        /// `failing` or `dead`.
        state: DeliveryState,
        /// When to try again, ms since the epoch (kept as is for `dead`).
        next_attempt_ms: i64,
        /// What went wrong.
        error: String,
    },
}

/// Settles row `id` leased by `owner` at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// The row.
    pub id: i64,
    /// The lease owner.
    pub owner: String,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The outcome.
    pub outcome: Settlement,
}

impl Settle {
    /// A `Failed` outcome must name `failing` or `dead`.
    pub(crate) fn checked(&self) -> Result<(), StoreError> {
        match &self.outcome {
            Settlement::Failed { state, .. }
                if !matches!(state, DeliveryState::Failing | DeliveryState::Dead) =>
            {
                Err(StoreError::Corrupt(format!(
                    "a failed delivery is failing or dead, not {state}"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Outbox rows per state (`/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryCounts {
    /// Not tried yet.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Being retried.
    pub failing: u64,
    /// Given up.
    pub dead: u64,
}

impl DeliveryCounts {
    /// The count of `state`.
    pub fn of(&self, state: DeliveryState) -> u64 {
        match state {
            DeliveryState::Pending => self.pending,
            DeliveryState::Delivered => self.delivered,
            DeliveryState::Failing => self.failing,
            DeliveryState::Dead => self.dead,
        }
    }
}

impl super::Tally for DeliveryCounts {
    type Row = (DeliveryState, i64);

    fn count(&mut self, (state, n): Self::Row) {
        let n = super::count(n);
        match state {
            DeliveryState::Pending => self.pending = n,
            DeliveryState::Delivered => self.delivered = n,
            DeliveryState::Failing => self.failing = n,
            DeliveryState::Dead => self.dead = n,
        }
    }
}

impl super::Store {
    /// Puts `event` into the outbox, for every receiver subscribed to it, in a transaction of its
    /// own; returns the rows written (0 without subscribers). A state change writes its events in
    /// its own transaction instead (`sqlite_writer::enqueue`, `postgres::enqueue`): the revocation
    /// does so.
    pub async fn enqueue_event(&self, event: &NewEvent) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.outbox(OutboxWrite::Enqueue(event.clone())).await,
            Store::Postgres(s) => s.enqueue_event(event).await,
        }
    }

    /// Leases up to `claim.limit` due rows: the oldest open row of each (receiver, serial), so the
    /// events of one serial go out in order. PostgreSQL: `FOR UPDATE SKIP LOCKED`, one server
    /// per row.
    pub async fn claim_deliveries(&self, claim: &Claim) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_deliveries(claim.clone()).await,
            Store::Postgres(s) => sqlx::query_as(sql::CLAIM_DELIVERIES_POSTGRES)
                .bind(&claim.owner)
                .bind(claim.lease_until_ms)
                .bind(claim.now_ms)
                .bind(claim.receivers_json())
                .bind(i64::from(claim.limit))
                .fetch_all(s.pool())
                .await
                .map_err(q("claiming webhook deliveries")),
        }
    }

    /// Records how an attempt of a leased row ended; false when the lease was no longer
    /// `settle.owner`'s (nothing written).
    pub async fn settle_delivery(&self, settle: &Settle) -> Result<bool, StoreError> {
        let done = self.settle_deliveries(std::slice::from_ref(settle)).await?;
        Ok(done.first().copied().unwrap_or(false))
    }

    /// Records the outcomes of several attempts in one transaction (the delivery task settles in
    /// batches: one commit for many POSTs); per settlement, whether its lease was still the
    /// owner's.
    pub async fn settle_deliveries(&self, all: &[Settle]) -> Result<Vec<bool>, StoreError> {
        for settle in all {
            settle.checked()?;
        }
        match self {
            Store::Sqlite(s) => s.settle_deliveries(all.to_vec()).await,
            Store::Postgres(s) => {
                let mut tx = s.begin().await?;
                let mut done = Vec::with_capacity(all.len());
                for settle in all {
                    let written = settle_query(settle)
                        .execute(&mut *tx)
                        .await
                        .map_err(q("recording a webhook delivery"))?;
                    done.push(written.rows_affected() > 0);
                }
                tx.commit()
                    .await
                    .map_err(q("committing webhook deliveries"))?;
                Ok(done)
            }
        }
    }

    /// Gives up every lease of `owner` (at start: a killed server's sends are retried at once).
    pub async fn release_delivery_leases(&self, owner: &str) -> Result<u64, StoreError> {
        self.release_leases(
            sql::RELEASE_DELIVERY_LEASES,
            Some(owner),
            "releasing webhook leases",
        )
        .await
    }

    /// Outbox rows in `state`, keyset-paged on `id` like [`Store::list_deployed`].
    pub async fn list_deliveries(
        &self,
        state: DeliveryState,
        limit: u32,
        order: SortOrder,
        after_id: Option<i64>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let listing = (sql::LIST_DELIVERIES_ASC, sql::LIST_DELIVERIES_DESC);
        self.state_page(
            listing,
            state,
            limit,
            order,
            after_id,
            "listing webhook deliveries",
        )
        .await
    }

    /// The outbox rows of `serial`, oldest first.
    pub async fn deliveries_for(&self, serial: &str) -> Result<Vec<Delivery>, StoreError> {
        self.rows(sql::DELIVERIES_FOR, serial, "reading webhook deliveries")
            .await
    }

    /// Outbox rows per state.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        self.tally(sql::DELIVERY_COUNTS, None, "counting webhook deliveries")
            .await
    }
}

/// `sql::DELIVERY_DELIVERED` or `sql::DELIVERY_FAILED` with `settle` bound (PostgreSQL).
fn settle_query(
    settle: &Settle,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match &settle.outcome {
        Settlement::Delivered => sqlx::query(sql::DELIVERY_DELIVERED)
            .bind(settle.now_ms)
            .bind(settle.id)
            .bind(&settle.owner),
        Settlement::Failed {
            state,
            next_attempt_ms,
            error,
        } => sqlx::query(sql::DELIVERY_FAILED)
            .bind(*state)
            .bind(*next_attempt_ms)
            .bind(error)
            .bind(settle.now_ms)
            .bind(settle.id)
            .bind(&settle.owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> EventRoutes {
        EventRoutes {
            routes: vec![
                EventRoute {
                    receiver: "mes".into(),
                    events: [HookEvent::Deployed, HookEvent::Failed].into(),
                },
                EventRoute {
                    receiver: "erp".into(),
                    events: [HookEvent::Deployed].into(),
                },
            ],
        }
    }

    fn event(e: HookEvent) -> NewEvent {
        NewEvent {
            event: e,
            serial: "GW-1".into(),
            enrollment_id: Some("A-00".into()),
            gateway: "10.0.0.1:7777".into(),
            at_ms: 1_700_000_000_123,
            fcc_status: Some(3),
            detail: Some("FCC said no".into()),
        }
    }

    #[test]
    fn one_row_per_subscribed_receiver_with_one_event_id() {
        let routes = routes();
        let rows = event(HookEvent::Deployed).rows(&routes).unwrap();
        assert_eq!(rows.receivers, ["mes", "erp"]);
        let body: serde_json::Value = serde_json::from_str(&rows.payload).unwrap();
        assert_eq!(body["eventId"], rows.event_id.as_str());
        assert_eq!(body["event"], "deployed");
        assert_eq!(body["serialNumber"], "GW-1");
        assert_eq!(body["enrollmentID"], "A-00");
        assert_eq!(body["gateway"], "10.0.0.1:7777");
        assert_eq!(body["at"], "2023-11-14T22:13:20.123Z");
        assert!(body.get("error").is_none(), "{body}");
        // A new event, a new ID.
        let again = event(HookEvent::Deployed).rows(&routes).unwrap();
        assert_ne!(again.event_id, rows.event_id);

        let failed = event(HookEvent::Failed).rows(&routes).unwrap();
        assert_eq!(failed.receivers, ["mes"], "erp did not subscribe to failed");
        let body: serde_json::Value = serde_json::from_str(&failed.payload).unwrap();
        assert_eq!(body["fccStatus"], 3);
        assert_eq!(body["error"], "FCC said no");

        assert_eq!(event(HookEvent::Revoked).rows(&routes), None);
        assert_eq!(
            event(HookEvent::Deployed).rows(&EventRoutes::default()),
            None
        );
    }

    #[test]
    fn names_round_trip() {
        for e in HookEvent::ALL {
            assert_eq!(e.as_str().parse::<HookEvent>().unwrap(), e);
        }
        for s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>().unwrap(), s);
        }
        assert!("deploy".parse::<HookEvent>().is_err());
    }
}
