//! An event webhook receiver (`[[hooks.events]]`, docs/operations.md) for measurements: it
//! verifies each POST's signature and timestamp with the shared secret
//! ([`pep_server::hooks::verify`]), counts the events by their ID (a repeated ID is a duplicate
//! delivery, counted once) and answers 204 (401 for a bad signature). `bench/baselines.sh` runs it
//! with `WEBHOOKS=1`: in Rust, because the receiver shares the two cores of the measurement with
//! the server and the fleet, and the Python receiver it replaces took more CPU than the server's
//! own delivery work.
//!
//! ```text
//! cargo run --release -p pep-server --example webhook_receiver -- SECRET_FILE COUNT_FILE [LISTEN]
//! ```
//! Prints `listening on IP:PORT` once it accepts connections (LISTEN defaults to 127.0.0.1:0); at
//! SIGTERM writes `events=<unique> posts=<all> refused=<n>` to COUNT_FILE and exits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use pep_server::hooks::sign::{EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use pep_server::hooks::verify;

#[derive(Default)]
struct Counts {
    events: HashSet<String>,
    posts: u64,
    refused: u64,
}

struct Receiver {
    secret: Vec<u8>,
    counts: Mutex<Counts>,
}

async fn event(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let genuine = verify(
        &receiver.secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now,
        300,
    )
    .is_ok();
    let Ok(mut counts) = receiver.counts.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    counts.posts += 1;
    if !genuine {
        counts.refused += 1;
        return StatusCode::UNAUTHORIZED;
    }
    counts
        .events
        .insert(header(EVENT_ID_HEADER).unwrap_or_default().to_owned());
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: webhook_receiver SECRET_FILE COUNT_FILE [LISTEN]";
    let secret_file = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let count_file = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let text = std::fs::read(&secret_file)?;
    let secret = text
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    let receiver = Arc::new(Receiver {
        secret,
        counts: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(event))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            term.recv().await;
        })
        .await?;
    let counts = receiver
        .counts
        .lock()
        .map_err(|_| anyhow::anyhow!("the counts' lock is poisoned"))?;
    std::fs::write(
        &count_file,
        format!(
            "events={} posts={} refused={}\n",
            counts.events.len(),
            counts.posts,
            counts.refused
        ),
    )?;
    Ok(())
}
