//! `GET /v3/events`: the live activity as Server-Sent Events, for the factory-floor page.
//!
//! Each connection gets, in order:
//! - `snapshot` (with `retry: 3000`): the whole page's data ([`floor::Snapshot`]), so a page that
//!   connects or reconnects starts from the store's truth;
//! - `attempt`: one row per attempt start (`in_progress`) and end (`deployed` / `failed`);
//! - `counters`: counters and chart ([`floor::Live`]), at most once a second after activity and at
//!   least every [`COUNTERS_EVERY`] (the rates move with time, and other servers sharing a
//!   PostgreSQL database provision too);
//! - `: keep-alive` comments every [`KEEP_ALIVE`], so proxies and the browser keep the stream open.
//!
//! Memory per client is bounded: the core's broadcast channel keeps [`EVENT_CAPACITY`] events and
//! the connection's queue `QUEUE`; a client too slow to keep up misses events, and is sent a fresh
//! `snapshot` (a resync) instead. Streams end when the server shuts down ([`Shutdown`]), so a
//! screen left open does not hold up a graceful stop.
//!
//! [`EVENT_CAPACITY`]: crate::activity::EVENT_CAPACITY

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::sync::{broadcast, mpsc, watch};

use super::AppState;
use super::floor;
use crate::activity::ProvisionEvent;

/// How long the browser waits before reconnecting.
pub const RETRY: Duration = Duration::from_secs(3);
/// Interval of the keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest interval between two `counters` events.
pub const COUNTERS_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for a client to take an event.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Events queued per connection before the sender waits (and the core's channel lags instead).
const QUEUE: usize = 64;

/// Becomes `true` when the server shuts down; put into the requests' extensions by
/// [`super::serve`].
#[derive(Clone, Debug)]
pub struct Shutdown(pub watch::Receiver<bool>);

/// `GET /v3/events` (`read` role).
#[utoipa::path(
    get,
    path = "/v3/events",
    tag = "floor",
    operation_id = "events",
    summary = "Live provisioning activity (Server-Sent Events), for the factory-floor page",
    description = "text/event-stream. First a snapshot event (with retry: 3000) carrying the whole page's data; then one attempt event per attempt start (result in_progress) and end (deployed or failed); counters events at most once a second after activity and at least every 10 s; \": keep-alive\" comments every 15 s. A client too slow to keep up is sent a fresh snapshot instead of the events it missed. The stream ends when the server shuts down (EventSource reconnects). Needs the read role, by bearer token or by the floor page's session cookie.",
    security(("bearer" = []), ("floorSession" = [])),
    responses(
        (status = 200, description = "The event stream. Event data are JSON: snapshot = FloorSnapshot, attempt = FloorAttempt, counters = FloorLive.", body = String, content_type = "text/event-stream"),
        super::openapi::AuthErrors,
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    shutdown: Option<Extension<Shutdown>>,
) -> Response {
    // Subscribe before reading the snapshot: an attempt ending in between is then sent twice at
    // worst (the page replaces rows by serial), never lost.
    let activity = state.provisioner.subscribe();
    let (tx, rx) = mpsc::channel::<Event>(QUEUE);
    let shutdown = shutdown.map(|Extension(s)| s.0);
    tokio::spawn(feed(state, activity, tx, shutdown));
    let stream = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Tell buffering proxies (nginx) to pass events through at once.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

fn json_event(name: &'static str, data: &impl serde::Serialize) -> Option<Event> {
    match Event::default().event(name).json_data(data) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::error!(error = %e, event = name, "events: cannot encode an event");
            None
        }
    }
}

/// Builds a `snapshot` event from the store; `None` (logged) if the store does not answer.
async fn snapshot_event(state: &AppState, offset: i32) -> Option<Event> {
    match floor::snapshot(state.provisioner.store(), offset).await {
        Ok(snap) => json_event("snapshot", &snap).map(|e| e.retry(RETRY)),
        Err(e) => {
            tracing::warn!(error = %e, "events: cannot read the snapshot");
            None
        }
    }
}

async fn counters_event(state: &AppState, offset: i32) -> Option<Event> {
    match floor::live(state.provisioner.store(), offset).await {
        Ok(live) => json_event("counters", &live),
        Err(e) => {
            tracing::warn!(error = %e, "events: cannot read the counters");
            None
        }
    }
}

/// Feeds one connection until the client goes away or the server stops.
async fn feed(
    state: AppState,
    mut activity: broadcast::Receiver<ProvisionEvent>,
    tx: mpsc::Sender<Event>,
    mut shutdown: Option<watch::Receiver<bool>>,
) {
    let offset = state.provisioner.config().time.utc_offset.minutes();
    let first = snapshot_event(&state, offset)
        .await
        .unwrap_or_else(|| Event::default().retry(RETRY).comment("store unavailable"));
    if tx.send(first).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    let mut last_counters = tokio::time::Instant::now();
    loop {
        let stopping = async {
            match shutdown.as_mut() {
                Some(rx) => {
                    // Ends on `true` or when the sender is gone (server stopped).
                    let _ = rx.wait_for(|stop| *stop).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let next = tokio::select! {
            () = stopping => break,
            () = tx.closed() => break,
            received = activity.recv() => match received {
                Ok(event) => {
                    dirty = true;
                    json_event("attempt", &floor::row_of_event(&event))
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "events: a client fell behind; sending a fresh snapshot");
                    dirty = false;
                    last_counters = tokio::time::Instant::now();
                    snapshot_event(&state, offset).await
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                if dirty || last_counters.elapsed() >= COUNTERS_EVERY {
                    dirty = false;
                    last_counters = tokio::time::Instant::now();
                    counters_event(&state, offset).await
                } else {
                    None
                }
            }
        };
        if let Some(event) = next {
            // A client that has not read for this long is gone or hopeless: drop it (its browser
            // reconnects and starts again from a snapshot) rather than queue for it.
            match tokio::time::timeout(SEND_TIMEOUT, tx.send(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
}
