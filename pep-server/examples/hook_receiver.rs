//! A reference pre-provisioning hook receiver (`[hooks] pre_provision`, docs/operations.md): it
//! verifies the signature and the timestamp of each request with the shared secret and allows
//! every serial whose request is genuine (401 otherwise). `bench/baselines.sh` runs it with
//! `HOOK=1` to measure the rate with the hook on.
//!
//! ```text
//! cargo run --release -p pep-server --example hook_receiver -- SECRET_FILE [LISTEN]
//! ```
//! Prints `listening on IP:PORT` once it accepts connections (LISTEN defaults to 127.0.0.1:0).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pep_server::hook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};

async fn approve(
    State(secret): State<std::sync::Arc<Vec<u8>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if verify(
        &secret,
        header(TIMESTAMP_HEADER),
        &body,
        header(SIGNATURE_HEADER),
        now,
    ) {
        axum::Json(serde_json::json!({"allow": true})).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "bad signature").into_response()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let secret_file = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: hook_receiver SECRET_FILE [LISTEN]"))?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let text = std::fs::read(&secret_file)?;
    let secret = text
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    let app = axum::Router::new()
        .route("/pep/approve", axum::routing::post(approve))
        .with_state(std::sync::Arc::new(secret));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
