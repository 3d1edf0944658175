//! The event webhooks (`[[hooks.events]]`, issue #17): the delivery task that sends the outbox.
//!
//! The store writes each event into the outbox (`hook_deliveries`) in the transaction of the state
//! change ([`crate::store::outbox`]); provisioning never waits for a receiver. This task leases
//! due rows ([`Store::claim_deliveries`]: the oldest open row of each receiver and serial, so the
//! events of one serial arrive in order), POSTs each as signed JSON ([`sign`]), and records the
//! outcome: a 2xx is `delivered`; anything else (another status, a timeout, a refused connection,
//! an answer that is not HTTP) is `failing`, retried after an exponential backoff with jitter,
//! until the event is older than the receiver's `max_age_s` (then `dead`). Delivery is
//! at-least-once: a receiver de-duplicates by the event ID.
//!
//! At most `[hooks.delivery] concurrency` POSTs run at once. At shutdown the task stops leasing
//! and lets the POSTs under way finish (each is bounded by its receiver's timeout). A server
//! killed while sending leaves leased rows: at its next start it gives its own leases up, and any
//! other server takes them once the lease has expired (PostgreSQL, `FOR UPDATE SKIP LOCKED`).

pub mod sign;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use sign::{Secret, VerifyError, verify};

use crate::store::{Claim, Delivery, DeliveryState, HookEvent, Settle, Settlement, Store, now_ms};

/// Most characters of a receiver's answer kept in `last_error`.
const ERROR_ANSWER_CHARS: usize = 200;
/// Lease beyond a receiver's timeout: time to record the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// After a lease that took every due row, the next waits this long, so that under load each
/// lease (and each record of outcomes) is one write for a batch of events, not one per event.
const GATHER: Duration = Duration::from_millis(20);

/// One configured receiver, ready to send (made by
/// [`EventHookConfig::receiver`](crate::config::hooks::EventHookConfig::receiver)).
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Its name (the outbox's `receiver` column).
    pub name: String,
    /// Where to POST.
    pub url: url::Url,
    /// The events it receives.
    pub events: BTreeSet<HookEvent>,
    /// The shared secret of the signature.
    pub secret: Secret,
    /// Time it has to answer one POST.
    pub timeout: Duration,
    /// An event older than this is given up.
    pub max_age: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Receiver {
    /// The delay before retry number `attempts` (1 = after the first failure): `retry_initial`
    /// doubled per attempt up to `retry_max`, then a random point in its upper half, so that
    /// many events that failed together do not come back together.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .retry_initial
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max);
        let half = full / 2;
        half + full
            .saturating_sub(half)
            .mul_f64(rand::thread_rng().r#gen::<f64>())
    }
}

/// `[hooks.delivery]` as the task runs it.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// POSTs at once.
    pub concurrency: usize,
    /// How often the outbox is looked at when idle.
    pub poll: Duration,
}

/// Errors starting the delivery task.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The HTTP client could not be built (TLS roots).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The delivery task.
pub struct Deliverer {
    store: Store,
    receivers: Arc<HashMap<String, Receiver>>,
    settings: DeliverySettings,
    owner: String,
    client: reqwest::Client,
}

impl Deliverer {
    /// A task sending the outbox of `store` to `receivers`, leasing as `owner` (the server id).
    pub fn new(
        store: Store,
        receivers: Vec<Receiver>,
        settings: DeliverySettings,
        owner: String,
    ) -> Result<Deliverer, HookError> {
        let client = reqwest::Client::builder()
            // A receiver's redirect is its answer (a failure), never followed: the signature is
            // for the configured URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "pep-server/",
                env!("CARGO_PKG_VERSION"),
                " webhooks"
            ))
            .build()
            .map_err(HookError::Client)?;
        Ok(Deliverer {
            store,
            receivers: Arc::new(receivers.into_iter().map(|r| (r.name.clone(), r)).collect()),
            settings: DeliverySettings {
                concurrency: settings.concurrency.max(1),
                ..settings
            },
            owner,
            client,
        })
    }

    /// Runs until `stop` turns true (or its sender is gone), then lets the POSTs under way end.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        match self.store.release_delivery_leases(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                released = n,
                "webhooks: events this server was sending when it stopped are sent again"
            ),
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot release old leases"),
        }
        let names: Vec<String> = self.receivers.keys().cloned().collect();
        let longest = self
            .receivers
            .values()
            .map(|r| r.timeout)
            .max()
            .unwrap_or_default();
        let lease = longest + LEASE_MARGIN;
        let concurrency = self.settings.concurrency;
        // Leases are taken, and outcomes recorded, in batches: once half the slots are free (or
        // none is busy), not after every POST. Each is a write (SQLite: a turn of the writer
        // thread, between the provisionings' writes).
        let batch = concurrency.div_ceil(2);
        let mut sending: JoinSet<Option<Settle>> = JoinSet::new();
        let mut settled: Vec<Settle> = Vec::new();
        // When the next lease may be taken: after one that found nothing due, a poll interval
        // later; after one that took all that was due, `GATHER` later (a batch, not a row).
        let mut next_lease = tokio::time::Instant::now();
        let mut store_failing = false;
        loop {
            if *stop.borrow() {
                break;
            }
            let free = concurrency.saturating_sub(sending.len());
            let now_instant = tokio::time::Instant::now();
            if (sending.is_empty() || free >= batch) && now_instant >= next_lease {
                self.record(&mut settled).await;
                let now = now_ms();
                let claim = Claim {
                    owner: self.owner.clone(),
                    now_ms: now,
                    lease_until_ms: now.saturating_add(millis(lease)),
                    receivers: names.clone(),
                    limit: u32::try_from(free).unwrap_or(u32::MAX),
                };
                match self.store.claim_deliveries(&claim).await {
                    Ok(rows) => {
                        store_failing = false;
                        next_lease = if rows.is_empty() {
                            now_instant + self.settings.poll
                        } else if rows.len() < free {
                            now_instant + GATHER.min(self.settings.poll)
                        } else {
                            now_instant
                        };
                        for row in rows {
                            let send = Send {
                                receivers: Arc::clone(&self.receivers),
                                client: self.client.clone(),
                                owner: self.owner.clone(),
                            };
                            sending.spawn(send.deliver(row));
                        }
                    }
                    Err(e) => {
                        // Once per outage, not per poll.
                        if !store_failing {
                            tracing::warn!(error = %e, "webhooks: cannot read the outbox; retrying");
                        }
                        store_failing = true;
                        next_lease = now_instant + self.settings.poll;
                    }
                }
            } else if sending.is_empty() {
                // Nothing under way: what finished is recorded now, not at the next lease.
                self.record(&mut settled).await;
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(done) = sending.join_next(), if !sending.is_empty() => {
                    if let Ok(Some(settle)) = done {
                        settled.push(settle);
                    }
                }
                () = tokio::time::sleep_until(next_lease.max(tokio::time::Instant::now() + GATHER)) => {}
            }
        }
        if !sending.is_empty() {
            tracing::info!(
                sending = sending.len(),
                "webhooks: waiting for the deliveries under way"
            );
        }
        while let Some(done) = sending.join_next().await {
            if let Ok(Some(settle)) = done {
                settled.push(settle);
            }
        }
        self.record(&mut settled).await;
    }

    /// Records the outcomes gathered so far in one write, and empties `settled`. A failed write
    /// is logged: those rows are sent again after their lease (at-least-once).
    async fn record(&self, settled: &mut Vec<Settle>) {
        if settled.is_empty() {
            return;
        }
        match self.store.settle_deliveries(settled).await {
            Ok(done) => {
                for (settle, kept) in settled.iter().zip(done) {
                    if !kept {
                        tracing::warn!(
                            id = settle.id,
                            "webhooks: the lease of a delivery expired while it was sent; another attempt follows"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(rows = settled.len(), error = %e,
                "webhooks: cannot record deliveries; they are sent again after their lease"),
        }
        settled.clear();
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What one POST needs.
struct Send {
    receivers: Arc<HashMap<String, Receiver>>,
    client: reqwest::Client,
    owner: String,
}

impl Send {
    /// POSTs `row` once; the outcome, for the task to record.
    async fn deliver(self, row: Delivery) -> Option<Settle> {
        // Leased only for configured receivers.
        let receiver = self.receivers.get(&row.receiver)?;
        let outcome = match self.post(receiver, &row).await {
            Ok(()) => {
                tracing::debug!(receiver = %receiver.name, event_id = %row.event_id,
                    serial = %row.serial, event = %row.event, "webhook delivered");
                Settlement::Delivered
            }
            Err(error) => {
                let now = now_ms();
                let attempts = row.attempts.saturating_add(1);
                let dead = now.saturating_sub(row.created_at) >= millis(receiver.max_age);
                let state = if dead {
                    DeliveryState::Dead
                } else {
                    DeliveryState::Failing
                };
                if dead {
                    tracing::error!(receiver = %receiver.name, event_id = %row.event_id,
                        serial = %row.serial, event = %row.event, attempts, %error,
                        "webhook not delivered within its maximum age: given up (dead)");
                } else {
                    tracing::warn!(receiver = %receiver.name, event_id = %row.event_id,
                        serial = %row.serial, event = %row.event, attempts, %error,
                        "webhook delivery failed; retrying later");
                }
                Settlement::Failed {
                    state,
                    next_attempt_ms: now.saturating_add(millis(receiver.backoff(attempts))),
                    error,
                }
            }
        };
        Some(Settle {
            id: row.id,
            owner: self.owner,
            now_ms: now_ms(),
            outcome,
        })
    }

    /// One signed POST; `Err` says why it does not count as delivered.
    async fn post(&self, receiver: &Receiver, row: &Delivery) -> Result<(), String> {
        let timestamp = now_ms() / 1000;
        let signature = receiver.secret.sign(timestamp, row.payload.as_bytes());
        let answer = self
            .client
            .post(receiver.url.clone())
            .timeout(receiver.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::TIMESTAMP_HEADER, timestamp.to_string())
            .header(sign::SIGNATURE_HEADER, signature)
            .header(sign::EVENT_ID_HEADER, &row.event_id)
            .header(sign::EVENT_HEADER, row.event.as_str())
            .body(row.payload.clone())
            .send()
            .await
            .map_err(|e| transport_error(&e, receiver.timeout))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        let text: String = text
            .chars()
            .take(ERROR_ANSWER_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Err(format!("the receiver answered {status}: {}", text.trim()))
    }
}

/// A transport error in words, without the URL (its query may hold a credential).
fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let what = if e.is_connect() {
        "cannot connect to the receiver"
    } else {
        "the receiver's answer is not HTTP or was cut off"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(initial_ms: u64, max_ms: u64) -> Receiver {
        Receiver {
            name: "r".into(),
            url: url::Url::parse("http://127.0.0.1:1/").unwrap(),
            events: BTreeSet::new(),
            secret: Secret::new(b"0123456789abcdef"),
            timeout: Duration::from_secs(1),
            max_age: Duration::from_secs(60),
            retry_initial: Duration::from_millis(initial_ms),
            retry_max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let r = receiver(1_000, 60_000);
        for (attempts, full_ms) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (7, 60_000),
            (500, 60_000),
        ] {
            for _ in 0..50 {
                let d = r.backoff(attempts).as_millis() as u64;
                assert!(
                    d >= full_ms / 2 && d <= full_ms,
                    "attempt {attempts}: {d} ms not in [{}, {full_ms}]",
                    full_ms / 2
                );
            }
        }
    }
}
