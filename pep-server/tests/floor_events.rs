//! The event stream under a client that stops reading: the server does not queue events for it
//! without bound; when it reads again it gets a fresh `snapshot` (a resync) instead of everything
//! it missed.
//!
//! In-process server (library router on a listener with a small send buffer) and a raw TCP client
//! with a small receive buffer, so the kernel buffers fill after a few dozen events and the
//! provisioner's broadcast channel ([`EVENT_CAPACITY`]) overflows for this client.

use crate::http_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pep_server::activity::EVENT_CAPACITY;
use pep_server::config::Config;
use pep_server::http::{self, AppState, Auth, Limits};
use pep_server::metrics::Metrics;
use pep_server::model::GatewayFields;
use pep_server::provision::{ProvisionRequest, Provisioner};
use pep_server::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn request(provisioner: &Provisioner, serial: String, port: u16) -> ProvisionRequest {
    let fields = GatewayFields {
        serial_number: Some(serial),
        ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST).to_string()),
        port: Some(port.to_string()),
        ..GatewayFields::default()
    };
    ProvisionRequest {
        params: provisioner.gateway_params(fields, None).unwrap(),
        requester: "floor-events-test".to_owned(),
        request_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_resynchronised_not_queued_for() {
    let dir = tempfile::tempdir().unwrap();
    let options = http_support::Options {
        connect_timeout_ms: 1_000,
        ..http_support::Options::default()
    };
    std::fs::write(
        dir.path().join("pep.toml"),
        http_support::config_toml(dir.path(), &options),
    )
    .unwrap();
    let config = Config::load(dir.path().join("pep.toml")).unwrap();
    let store = Store::open(&config.database_url).await.unwrap();
    let provisioner = Arc::new(Provisioner::new(Arc::new(config), store).unwrap());
    let state = AppState {
        provisioner: provisioner.clone(),
        auth: Arc::new(Auth::Disabled),
        metrics: Arc::new(Metrics::new()),
        limits: Limits {
            request_deadline: Duration::from_secs(60),
        },
    };
    // Small socket buffers on both sides: a reader that stops blocks the server quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, http::router(state), async {
        let _ = stopped.await;
    }));

    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(4096).unwrap();
    let mut stream = client.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /v3/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Read until the first snapshot is in, then stop reading.
    while !String::from_utf8_lossy(&received).contains("event: snapshot") {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the stream ended early");
        received.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&received).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("retry: 3000"), "{head}");

    // Many more events than the channel keeps: failed attempts on a closed port are quick.
    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http_support::dead_port());
    let attempts = EVENT_CAPACITY; // two events each
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = attempts / 8;
    for t in 0..8 {
        let provisioner = provisioner.clone();
        tasks.spawn(async move {
            for i in 0..per_task {
                let r = provisioner
                    .provision(request(
                        &provisioner,
                        format!("LAG-{t}-{i:04}"),
                        dead.port(),
                    ))
                    .await;
                assert!(r.is_err());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    // Read again: a resync snapshot arrives, and not every missed attempt was queued.
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("no resync snapshot within 30 s")
            .unwrap();
        assert!(n > 0, "the stream ended");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains("event: snapshot") && text.contains("\"deployedTotal\"") {
            // Let the snapshot event complete.
            if text
                .rfind("event: snapshot")
                .is_some_and(|at| text[at..].contains("\n\n"))
            {
                break;
            }
        }
    }
    let attempts_seen =
        text.matches("event: attempt").count() + head.matches("event: attempt").count();
    assert!(
        attempts_seen < 2 * attempts,
        "{attempts_seen} attempt events were queued for a client that did not read"
    );
    let snapshot_at = text.rfind("event: snapshot").unwrap();
    let snapshot = &text[snapshot_at..];
    assert!(
        snapshot.contains(&format!("\"failedToday\":{attempts}")),
        "the resync snapshot has the store's truth: {}",
        &snapshot[..snapshot.len().min(400)]
    );
    let _ = stop.send(());
    drop(stream);
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}
