//! Issue #17, event webhooks: the real `pep-server` binary provisions real `fake-fcc` gateways and
//! POSTs its events, signed, from the durable outbox to real HTTP receivers (axum on 127.0.0.1,
//! random ports) that check each signature with the reference verification
//! (`pep_server::hooks::verify`). A receiver that is down, answers 500, answers too slowly or
//! answers garbage gets every event later, in order per serial; a server killed with SIGKILL
//! between the commit and the delivery delivers after its restart; config mistakes are clear
//! errors. One test runs two delivery tasks on one PostgreSQL outbox.

use crate::http_support;
use crate::pg_support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use fake_fcc::{FaultKind, Sessions};
use fcc_proto::FccStatus;
use http_support::{Options, READ, Server, config_toml, dead_port, gateway};
use pep_server::hooks::{self, Deliverer, DeliverySettings, Receiver as HookReceiver, Secret};
use pep_server::store::{
    Claim, DeliveryState, EventRoute, EventRoutes, HookEvent, NewEvent, Settle, Settlement, Store,
    StoreOptions,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The receivers' shared secret (what `secret_file` holds).
const SECRET: &str = "hook-secret-0123456789abcdef";
/// Upper bound of every wait: a failure, never a timing assert.
const WAIT: Duration = Duration::from_secs(60);

/// How the test receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200, after the reference verification (a bad signature is 401).
    Accept,
    /// This status, without recording.
    Status(u16),
    /// Sleeps this long before answering 200 (longer than pep's timeout), without recording.
    Slow(Duration),
}

/// One event the receiver accepted.
#[derive(Debug, Clone)]
struct Got {
    /// `Pep-Event-Id`.
    event_id: String,
    /// `Pep-Event`.
    event: String,
    /// The JSON body.
    body: Value,
}

#[derive(Debug)]
struct Inbox {
    mode: Mode,
    secret: Vec<u8>,
    got: Vec<Got>,
    /// Requests refused by the signature check, with the reason.
    refused: Vec<String>,
    /// Requests being answered now, and the most at once.
    open: usize,
    max_open: usize,
}

/// A webhook receiver on 127.0.0.1: axum, the reference verification, an inbox in arrival order.
#[derive(Clone)]
struct TestReceiver {
    inbox: Arc<Mutex<Inbox>>,
    addr: SocketAddr,
}

impl TestReceiver {
    /// Starts on `port` (0: any).
    async fn start(port: u16, secret: &str) -> TestReceiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Mutex::new(Inbox {
            mode: Mode::Accept,
            secret: secret.as_bytes().to_vec(),
            got: Vec::new(),
            refused: Vec::new(),
            open: 0,
            max_open: 0,
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&inbox));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestReceiver { inbox, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        self.inbox.lock().unwrap().mode = mode;
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.lock().unwrap().got.clone()
    }

    fn refused(&self) -> Vec<String> {
        self.inbox.lock().unwrap().refused.clone()
    }

    /// The most requests it was answering at once.
    fn max_open(&self) -> usize {
        self.inbox.lock().unwrap().max_open
    }
}

/// Counts a request as open while it lives.
struct Open(Arc<Mutex<Inbox>>);

impl Open {
    fn new(inbox: &Arc<Mutex<Inbox>>) -> Open {
        let mut i = inbox.lock().unwrap();
        i.open += 1;
        i.max_open = i.max_open.max(i.open);
        Open(Arc::clone(inbox))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().unwrap().open -= 1;
    }
}

/// The receiver's handler: what the operations guide's reference receiver does.
async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let _open = Open::new(&inbox);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (mode, secret) = {
        let inbox = inbox.lock().unwrap();
        (inbox.mode, inbox.secret.clone())
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = hooks::verify(
        &secret,
        header(hooks::sign::TIMESTAMP_HEADER),
        header(hooks::sign::SIGNATURE_HEADER),
        &body,
        now,
        300,
    ) {
        inbox.lock().unwrap().refused.push(e.to_string());
        return (StatusCode::UNAUTHORIZED, format!("refused: {e}"));
    }
    match mode {
        Mode::Status(s) => {
            return (
                StatusCode::from_u16(s).unwrap(),
                "receiver trouble\nsecond line".into(),
            );
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            return (StatusCode::OK, String::new());
        }
        Mode::Accept => {}
    }
    let got = Got {
        event_id: header(hooks::sign::EVENT_ID_HEADER)
            .unwrap_or_default()
            .to_owned(),
        event: header(hooks::sign::EVENT_HEADER)
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap(),
    };
    inbox.lock().unwrap().got.push(got);
    (StatusCode::OK, String::new())
}

/// A "receiver" that answers any request with bytes that are not HTTP.
async fn garbage_receiver() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"\x00\x01garbage, not HTTP\r\n\r\n").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// One `[[hooks.events]]` of the test config.
struct Hook {
    name: &'static str,
    url: String,
    events: &'static str,
    /// More lines of the entry.
    extra: &'static str,
}

/// The test config of `dir` with `hooks` (secret in `dir/hook.secret`, mode 0600) and short
/// retry delays.
fn write_config(dir: &Path, hooks: &[Hook]) {
    let secret = dir.join("hook.secret");
    write_secret(&secret, SECRET);
    let mut text = config_toml(dir, &Options::default());
    for h in hooks {
        text.push_str(&format!(
            "\n[[hooks.events]]\nname = \"{}\"\nurl = \"{}\"\nevents = {}\nsecret_file = \"{}\"\n\
             timeout_ms = 500\nretry_initial_ms = 100\nretry_max_ms = 300\n{}\n",
            h.name,
            h.url,
            h.events,
            secret.display(),
            h.extra
        ));
    }
    text.push_str("\n[hooks.delivery]\nconcurrency = 4\npoll_ms = 50\n");
    std::fs::write(dir.join("pep.toml"), text).unwrap();
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

async fn start_with_hooks(hooks: &[Hook]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), hooks);
    Server::start_in(dir).await
}

/// Polls `check` every 50 ms until it is true; panics with `what` after [`WAIT`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every delivery in `state` (walking the HAL pages of `/v3/hooks/deliveries`).
async fn deliveries(server: &Server, state: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = format!("/v3/hooks/deliveries?state={state}&limit=2&order=ASC");
    loop {
        let (status, page) = server.get_json(&path, Some(READ)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["state"], state);
        let results = page["results"].as_array().unwrap().clone();
        if results.is_empty() {
            return all;
        }
        path = page["_links"]["next"]["href"].as_str().unwrap().to_owned();
        all.extend(results);
    }
}

async fn hook_metric(server: &Server, state: &str) -> f64 {
    server
        .metric(&format!("pep_hook_deliveries{{state=\"{state}\"}}"))
        .await
}

/// The events of `serial` the receiver got, in arrival order.
fn events_of(got: &[Got], serial: &str) -> Vec<String> {
    got.iter()
        .filter(|g| g.body["serialNumber"] == serial)
        .map(|g| g.event.clone())
        .collect()
}

/// Each event ID arrived exactly once.
fn assert_each_once(got: &[Got]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *seen.entry(g.event_id.as_str()).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_signed_and_in_order_and_listed() {
    let receiver = TestReceiver::start(0, SECRET).await;
    // Subscribed to revoked only: provisioning writes nothing for it.
    let revoked_only = TestReceiver::start(0, SECRET).await;
    let server = start_with_hooks(&[
        Hook {
            name: "mes",
            url: receiver.url(),
            events: r#"["deployed", "failed"]"#,
            extra: "",
        },
        Hook {
            name: "crm",
            url: revoked_only.url(),
            events: r#"["revoked"]"#,
            extra: "",
        },
    ])
    .await;
    let (ok_gw, _ok) = gateway(Sessions::Forever, &[]).await;
    let (bad_gw, _bad) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::ExpiredCertificate)],
    )
    .await;

    let (status, a) = server.identity("HOOK-A", ok_gw).await;
    assert_eq!(status, 200, "{a}");
    let (status, body) = server.identity("HOOK-B", bad_gw).await;
    assert_eq!(status, 502, "{body}");
    let (status, b) = server.identity("HOOK-B", ok_gw).await;
    assert_eq!(status, 200, "{b}");

    wait_for("three events at the receiver", || async {
        receiver.got().len() >= 3
    })
    .await;
    let got = receiver.got();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(receiver.refused().is_empty(), "{:?}", receiver.refused());
    assert_each_once(&got);
    assert_eq!(events_of(&got, "HOOK-A"), ["deployed"]);
    assert_eq!(events_of(&got, "HOOK-B"), ["failed", "deployed"]);
    for g in &got {
        assert_eq!(
            g.body["eventId"],
            g.event_id.as_str(),
            "header and field agree"
        );
        assert_eq!(g.body["event"], g.event.as_str());
        assert!(g.body["at"].as_str().unwrap().ends_with('Z'), "{}", g.body);
    }
    let deployed_a = got
        .iter()
        .find(|g| g.body["serialNumber"] == "HOOK-A")
        .unwrap();
    assert_eq!(deployed_a.body["enrollmentID"], a["enrollmentID"], "{a}");
    assert_eq!(deployed_a.body["gateway"], ok_gw.to_string());
    let failed_b = got.iter().find(|g| g.event == "failed").unwrap();
    assert_eq!(
        failed_b.body["fccStatus"],
        FccStatus::ExpiredCertificate.as_u32()
    );
    assert!(
        failed_b.body["error"]
            .as_str()
            .unwrap()
            .contains(&bad_gw.to_string()),
        "{}",
        failed_b.body
    );
    assert!(revoked_only.got().is_empty());

    // Visible, paged, with the payload; counted in /metrics.
    wait_for("three deliveries recorded delivered", || async {
        hook_metric(&server, "delivered").await == 3.0
    })
    .await;
    let delivered = deliveries(&server, "delivered").await;
    assert_eq!(delivered.len(), 3);
    for d in &delivered {
        assert_eq!(d["receiver"], "mes");
        assert_eq!(d["attempts"], 1);
        assert!(d["deliveredAt"].is_i64(), "{d}");
        assert_eq!(d["payload"]["eventId"], d["eventId"]);
    }
    assert_eq!(hook_metric(&server, "pending").await, 0.0);
    assert_eq!(hook_metric(&server, "failing").await, 0.0);
    assert_eq!(hook_metric(&server, "dead").await, 0.0);

    // Bad input: a state that is none, no state, no token, a token without the read role.
    let (status, body) = server
        .get_json("/v3/hooks/deliveries?state=lost", Some(READ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("state"), "{body}");
    let (status, _) = server.get_json("/v3/hooks/deliveries", Some(READ)).await;
    assert_eq!(status, 400);
    let (status, _) = server
        .get_text("/v3/hooks/deliveries?state=dead", None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .get_text("/v3/hooks/deliveries?state=dead", Some(http_support::PROV))
        .await;
    assert_eq!(status, 403);

    // The reference receiver refuses a request whose body was changed after signing.
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = Secret::new(SECRET.as_bytes()).sign(ts, br#"{"event":"deployed"}"#);
    let forged = reqwest::Client::new()
        .post(receiver.url())
        .header(hooks::sign::TIMESTAMP_HEADER, ts.to_string())
        .header(hooks::sign::SIGNATURE_HEADER, signature)
        .body(r#"{"event":"revoked"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(receiver.refused(), ["the signature does not match"]);
    assert_eq!(receiver.got().len(), 3);

    // The secret is nowhere: not in the database, not in the log.
    let (_, log) = server.terminate().await;
    assert!(!log.contains(SECRET), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_another_secret_refuses_and_the_event_stays_failing() {
    let receiver = TestReceiver::start(0, "the-receivers-own-secret-0000").await;
    let server = start_with_hooks(&[Hook {
        name: "mes",
        url: receiver.url(),
        events: r#"["deployed"]"#,
        extra: "",
    }])
    .await;
    let (gw, _g) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("HOOK-SIG", gw).await;
    assert_eq!(status, 200, "{body}");
    wait_for("the delivery failing with the receiver's 401", || async {
        deliveries(&server, "failing").await.iter().any(|d| {
            d["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("401") && e.contains("signature does not match"))
        })
    })
    .await;
    assert!(receiver.got().is_empty());
    assert!(!receiver.refused().is_empty());
    assert!(hook_metric(&server, "failing").await >= 1.0);

    // The receiver learns the right secret: the retry is delivered.
    receiver.inbox.lock().unwrap().secret = SECRET.as_bytes().to_vec();
    wait_for("the retry delivered", || async {
        receiver.got().len() == 1
    })
    .await;
    wait_for("recorded delivered", || async {
        hook_metric(&server, "delivered").await == 1.0
    })
    .await;
    let d = deliveries(&server, "delivered").await;
    assert!(d[0]["attempts"].as_i64().unwrap() >= 2, "{}", d[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_event_once_in_order_per_serial() {
    let port = dead_port();
    let server = start_with_hooks(&[Hook {
        name: "mes",
        url: format!("http://127.0.0.1:{port}/hook"),
        events: r#"["deployed", "failed"]"#,
        extra: "",
    }])
    .await;
    let (ok_gw, _ok) = gateway(Sessions::Forever, &[]).await;
    let (bad_gw, _bad) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::ExpiredCertificate)],
    )
    .await;
    // Per serial: some fail twice then deploy, some deploy at once.
    let mut expected: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for i in 0..6 {
        let serial = format!("HOOK-DOWN-{i}");
        let failures = i % 3;
        for _ in 0..failures {
            let (status, _) = server.identity(&serial, bad_gw).await;
            assert_eq!(status, 502);
            expected.entry(serial.clone()).or_default().push("failed");
        }
        let (status, body) = server.identity(&serial, ok_gw).await;
        assert_eq!(status, 200, "{body}");
        expected.entry(serial).or_default().push("deployed");
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(total, 12);

    // Down: the first event of each serial is failing (the later ones wait behind it).
    wait_for("every serial's first event failing", || async {
        deliveries(&server, "failing").await.len() == 6
    })
    .await;
    let failing = deliveries(&server, "failing").await;
    for d in &failing {
        let e = d["lastError"].as_str().unwrap();
        assert!(e.contains("cannot connect"), "{d}");
    }
    assert_eq!(hook_metric(&server, "failing").await, 6.0);
    assert_eq!(hook_metric(&server, "pending").await, 6.0);

    // Up, on the same port.
    let receiver = TestReceiver::start(port, SECRET).await;
    wait_for("every event delivered", || async {
        hook_metric(&server, "delivered").await == total as f64
    })
    .await;
    let got = receiver.got();
    assert_eq!(got.len(), total, "{got:?}");
    assert_each_once(&got);
    for (serial, events) in &expected {
        assert_eq!(&events_of(&got, serial), events, "{serial}");
    }
    // `[hooks.delivery] concurrency = 4` bounds the POSTs at once.
    assert!(receiver.max_open() <= 4, "{} at once", receiver.max_open());
    assert_eq!(hook_metric(&server, "failing").await, 0.0);
    assert_eq!(hook_metric(&server, "pending").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_receivers_are_retried_and_shown_failing() {
    let receiver = TestReceiver::start(0, SECRET).await;
    receiver.set_mode(Mode::Status(500));
    let garbage = garbage_receiver().await;
    let server = start_with_hooks(&[
        Hook {
            name: "mes",
            url: receiver.url(),
            events: r#"["deployed"]"#,
            extra: "",
        },
        Hook {
            name: "garbage",
            url: format!("http://{garbage}/hook"),
            events: r#"["deployed"]"#,
            extra: "",
        },
    ])
    .await;
    let (gw, _g) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("HOOK-500", gw).await;
    assert_eq!(status, 200, "{body}");

    let last_error = |receiver: &'static str| {
        let server = &server;
        async move {
            deliveries(server, "failing")
                .await
                .into_iter()
                .find(|d| d["receiver"] == receiver)
                .and_then(|d| d["lastError"].as_str().map(str::to_owned))
                .unwrap_or_default()
        }
    };
    wait_for("500 shown as failing", || async {
        last_error("mes").await.contains("500")
    })
    .await;
    let e = last_error("mes").await;
    assert!(e.contains("receiver trouble second line"), "{e}");
    wait_for("garbage shown as failing", || async {
        last_error("garbage").await.contains("not HTTP")
    })
    .await;
    assert_eq!(hook_metric(&server, "failing").await, 2.0);

    receiver.set_mode(Mode::Slow(Duration::from_secs(3)));
    wait_for("a slow answer shown as failing", || async {
        last_error("mes").await.contains("no answer within 500 ms")
    })
    .await;
    assert!(receiver.got().is_empty());

    receiver.set_mode(Mode::Accept);
    wait_for("delivered once the receiver answers", || async {
        receiver.got().len() == 1
    })
    .await;
    wait_for("recorded delivered", || async {
        hook_metric(&server, "delivered").await == 1.0
    })
    .await;
    let d = &deliveries(&server, "delivered").await[0];
    assert!(d["attempts"].as_i64().unwrap() >= 3, "{d}");
    // The garbage receiver never counts as delivered.
    assert_eq!(hook_metric(&server, "failing").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_before_a_kill_9_are_delivered_after_the_restart() {
    let port = dead_port();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &[Hook {
            name: "mes",
            url: format!("http://127.0.0.1:{port}/hook"),
            events: r#"["deployed"]"#,
            extra: "",
        }],
    );
    let server = Server::start_in(dir).await;
    let (gw, _g) = gateway(Sessions::Forever, &[]).await;
    for i in 0..3 {
        let (status, body) = server.identity(&format!("HOOK-KILL-{i}"), gw).await;
        assert_eq!(status, 200, "{body}");
    }
    wait_for("three events in the outbox", || async {
        hook_metric(&server, "failing").await + hook_metric(&server, "pending").await == 3.0
    })
    .await;
    let dir = server.kill9().await;

    let receiver = TestReceiver::start(port, SECRET).await;
    let server = Server::start_in(dir).await;
    wait_for("every event delivered after the restart", || async {
        receiver.got().len() == 3
    })
    .await;
    let got = receiver.got();
    assert_each_once(&got);
    let mut serials: Vec<_> = got
        .iter()
        .map(|g| g.body["serialNumber"].as_str().unwrap().to_owned())
        .collect();
    serials.sort();
    assert_eq!(serials, ["HOOK-KILL-0", "HOOK-KILL-1", "HOOK-KILL-2"]);
    wait_for("recorded delivered", || async {
        hook_metric(&server, "delivered").await == 3.0
    })
    .await;
    // The secret is not in the database file.
    let db = std::fs::read(server.dir.path().join("pep.sqlite")).unwrap();
    let wal = std::fs::read(server.dir.path().join("pep.sqlite-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in the database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_max_age_is_given_up_as_dead() {
    let server = start_with_hooks(&[Hook {
        name: "gone",
        url: format!("http://127.0.0.1:{}/hook", dead_port()),
        events: r#"["deployed"]"#,
        extra: "max_age_s = 1",
    }])
    .await;
    let (gw, _g) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("HOOK-DEAD", gw).await;
    assert_eq!(status, 200, "{body}");
    wait_for("the delivery dead", || async {
        hook_metric(&server, "dead").await == 1.0
    })
    .await;
    let dead = deliveries(&server, "dead").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["serialNumber"], "HOOK-DEAD");
    assert!(
        dead[0]["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{}",
        dead[0]
    );
    assert_eq!(hook_metric(&server, "failing").await, 0.0);
    // Provisioning never waited for it: a second gateway is served as usual.
    let (status, body) = server.identity("HOOK-DEAD-2", gw).await;
    assert_eq!(status, 200, "{body}");
}

/// An identity left `in_doubt` by a kill is no event; the operator's resolution is (`deployed`,
/// with the written-ahead enrollment ID), written with the resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_doubt_identity_resolved_deployed_is_a_deployed_event() {
    let receiver = TestReceiver::start(0, SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &[Hook {
            name: "mes",
            url: receiver.url(),
            events: r#"["deployed", "failed"]"#,
            extra: "",
        }],
    );
    let server = Server::start_in(dir).await;
    let (gw, _g) = gateway(Sessions::One, &[FaultKind::Stall(Duration::from_secs(6))]).await;
    let url = format!(
        "{}{}",
        server.base,
        http_support::identity_path("HOOK-DOUBT", gw)
    );
    let client = server.client.clone();
    let request =
        tokio::spawn(async move { client.get(url).bearer_auth(http_support::BOTH).send().await });
    wait_for("the certificate written ahead", || async {
        let (_, page) = server
            .get_json("/v3/identities?state=in_flight", Some(READ))
            .await;
        page["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["certificateSerial"].is_string()))
    })
    .await;
    let dir = server.kill9().await;
    assert!(
        request.await.unwrap().is_err(),
        "the killed server answered"
    );

    let server = Server::start_in(dir).await;
    let (status, body) = server
        .get_json("/v3/identities?state=in_doubt", Some(READ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["serialNumber"], "HOOK-DOUBT", "{body}");
    assert_eq!(
        hook_metric(&server, "pending").await,
        0.0,
        "in doubt is no event"
    );

    let (status, resolved) = server
        .resolve("HOOK-DOUBT", "deployed", http_support::BOTH)
        .await;
    assert_eq!(status, 200, "{resolved}");
    wait_for("the resolution's event", || async {
        receiver.got().len() == 1
    })
    .await;
    let got = &receiver.got()[0];
    assert_eq!(got.event, "deployed");
    assert_eq!(got.body["serialNumber"], "HOOK-DOUBT");
    assert_eq!(got.body["enrollmentID"], resolved["enrollmentID"]);
    assert!(got.body["enrollmentID"].is_string(), "{}", got.body);
}

/// `check-config` on `dir/pep.toml`: (exit code, stdout).
fn check_config(dir: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("--config")
        .arg(dir.join("pep.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn config_mistakes_are_clear_errors() {
    let good = Hook {
        name: "mes",
        url: "https://mes.example/pep/events".to_owned(),
        events: r#"["deployed", "failed", "revoked"]"#,
        extra: "",
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &[good]);
    let (code, out) = check_config(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(SECRET), "{out}");

    let secret = dir.path().join("hook.secret");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("url = \"ftp://mes.example/x\"\nevents = [\"deployed\"]\nsecret_file = \"{}\"", secret.display()),
            "hooks.events[0].url: `ftp://mes.example/x`: the scheme must be https",
        ),
        (
            format!("url = \"not a url\"\nevents = [\"deployed\"]\nsecret_file = \"{}\"", secret.display()),
            "hooks.events[0].url: `not a url` is not a URL",
        ),
        (
            format!("url = \"https://user:pw@mes.example/x\"\nevents = [\"deployed\"]\nsecret_file = \"{}\"", secret.display()),
            "hooks.events[0].url: holds a user name or password",
        ),
        (
            format!("url = \"https://mes.example/x\"\nevents = [\"deployed\", \"deploy\"]\nsecret_file = \"{}\"", secret.display()),
            "unknown variant `deploy`, expected one of `deployed`, `failed`, `revoked`",
        ),
        (
            format!("url = \"https://mes.example/x\"\nevents = []\nsecret_file = \"{}\"", secret.display()),
            "hooks.events[0].events: is empty",
        ),
        (
            "url = \"https://mes.example/x\"\nevents = [\"deployed\"]\nsecret_file = \"/nonexistent/hook.secret\"".to_owned(),
            "hooks.events[0].secret_file: cannot read /nonexistent/hook.secret",
        ),
        (
            format!("url = \"https://mes.example/x\"\nevents = [\"deployed\"]\nsecret_file = \"{}\"\nretry_initial_ms = 0", secret.display()),
            "hooks.events[0].retry_initial_ms: must be greater than 0",
        ),
    ];
    let base = config_toml(dir.path(), &Options::default());
    for (hook, needle) in cases {
        std::fs::write(
            dir.path().join("pep.toml"),
            format!("{base}\n[[hooks.events]]\n{hook}\n"),
        )
        .unwrap();
        let (code, out) = check_config(dir.path());
        assert_eq!(code, 1, "{hook}: {out}");
        assert!(out.contains(needle), "expected `{needle}` in:\n{out}");
        assert!(
            out.contains("hooks.events[0]."),
            "the field is named:\n{out}"
        );
        assert!(!out.contains(SECRET), "{out}");
    }

    // A short secret; the server refuses to start on it, naming the field, never the secret.
    let short = dir.path().join("short.secret");
    write_secret(&short, "tooshort");
    std::fs::write(
        dir.path().join("pep.toml"),
        format!(
            "{base}\n[[hooks.events]]\nurl = \"https://mes.example/x\"\nevents = [\"deployed\"]\nsecret_file = \"{}\"\n",
            short.display()
        ),
    )
    .unwrap();
    let (code, out) = check_config(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hooks.events[0].secret_file: the secret in") && out.contains("too short"),
        "{out}"
    );
    assert!(!out.contains("tooshort"), "{out}");
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("--config")
        .arg(dir.path().join("pep.toml"))
        .output()
        .unwrap();
    assert!(!serve.status.success());
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(err.contains("hooks.events[0].secret_file"), "{err}");
    assert!(!err.contains("tooshort"), "{err}");

    // Two receivers with one name.
    std::fs::write(
        dir.path().join("pep.toml"),
        format!(
            "{base}\n[[hooks.events]]\nname = \"mes\"\nurl = \"https://a.example/x\"\nevents = [\"deployed\"]\nsecret_file = \"{s}\"\n\
             [[hooks.events]]\nname = \"mes\"\nurl = \"https://b.example/x\"\nevents = [\"failed\"]\nsecret_file = \"{s}\"\n",
            s = secret.display()
        ),
    )
    .unwrap();
    let (code, out) = check_config(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hooks.events[1].name: `mes` names another receiver"),
        "{out}"
    );
}

/// PostgreSQL, two servers' delivery tasks on one outbox: claims never overlap
/// (`FOR UPDATE SKIP LOCKED` + lease), the events of one serial leave in order, and every event
/// — revocations put in by the store-level enqueue the revocation calls — is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_delivery_tasks_share_the_outbox_and_send_each_event_once() {
    let db = pg_support::TestDb::create().await;
    let routes = EventRoutes {
        routes: vec![EventRoute {
            receiver: "mes".into(),
            events: HookEvent::ALL.into_iter().collect(),
        }],
    };
    let open = |id: &str| {
        let url = db.url.clone();
        let options = StoreOptions {
            server_id: id.to_owned(),
            max_connections: 4,
            event_routes: routes.clone(),
            ..StoreOptions::default()
        };
        async move { Store::open_with(&url, options).await.unwrap() }
    };
    let (a, b) = (open("server-a").await, open("server-b").await);

    // 8 serials × 3 events each, interleaved, from both servers.
    let kinds = [HookEvent::Deployed, HookEvent::Revoked, HookEvent::Failed];
    let mut expected: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for kind in kinds {
        for i in 0..8 {
            let serial = format!("PG-HOOK-{i}");
            let store = if i % 2 == 0 { &a } else { &b };
            let n = store
                .enqueue_event(&NewEvent {
                    event: kind,
                    serial: serial.clone(),
                    enrollment_id: Some(format!("A-{i:064}")),
                    gateway: "10.0.0.1:7777".into(),
                    at_ms: pep_server::store::now_ms(),
                    fcc_status: None,
                    detail: (kind == HookEvent::Revoked).then(|| "key compromise".to_owned()),
                })
                .await
                .unwrap();
            assert_eq!(n, 1);
            expected.entry(serial).or_default().push(kind.as_str());
        }
    }

    // Concurrent claims: disjoint, and only the first open event of each serial.
    let claim = |owner: &str| Claim {
        owner: owner.to_owned(),
        now_ms: pep_server::store::now_ms(),
        lease_until_ms: pep_server::store::now_ms() + 60_000,
        receivers: vec!["mes".into()],
        limit: 100,
    };
    let (claim_a, claim_b) = (claim("server-a"), claim("server-b"));
    let (ca, cb) = tokio::join!(a.claim_deliveries(&claim_a), b.claim_deliveries(&claim_b));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.len() + cb.len(), 8, "one per serial: {ca:?} {cb:?}");
    let mut ids: Vec<i64> = ca.iter().chain(&cb).map(|d| d.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "no row claimed twice");
    assert!(ca.iter().chain(&cb).all(|d| d.event == HookEvent::Deployed));
    // Leased: nothing more to claim while the first events are out.
    assert!(
        a.claim_deliveries(&claim("server-a"))
            .await
            .unwrap()
            .is_empty()
    );
    // A settle by the wrong owner writes nothing.
    let row = ca.first().or(cb.first()).unwrap();
    let stolen = Settle {
        id: row.id,
        owner: "server-c".into(),
        now_ms: pep_server::store::now_ms(),
        outcome: Settlement::Delivered,
    };
    assert!(!a.settle_delivery(&stolen).await.unwrap());
    // Both servers "restart": their leases go, the delivery tasks take over.
    a.release_delivery_leases("server-a").await.unwrap();
    b.release_delivery_leases("server-b").await.unwrap();

    let receiver = TestReceiver::start(0, SECRET).await;
    let hook = |store: &Store, owner: &str| {
        Deliverer::new(
            store.clone(),
            vec![HookReceiver {
                name: "mes".into(),
                url: url::Url::parse(&receiver.url()).unwrap(),
                events: HookEvent::ALL.into_iter().collect(),
                secret: Secret::new(SECRET.as_bytes()),
                timeout: Duration::from_secs(5),
                max_age: Duration::from_secs(3600),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_millis(300),
            }],
            DeliverySettings {
                concurrency: 3,
                poll: Duration::from_millis(50),
            },
            owner.to_owned(),
        )
        .unwrap()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ta = tokio::spawn(hook(&a, "server-a").run(stopped.clone()));
    let tb = tokio::spawn(hook(&b, "server-b").run(stopped));
    wait_for("24 events delivered", || async {
        a.delivery_counts().await.unwrap().delivered == 24
    })
    .await;
    stop.send(true).unwrap();
    ta.await.unwrap();
    tb.await.unwrap();

    let got = receiver.got();
    assert_eq!(got.len(), 24, "{got:?}");
    assert!(receiver.refused().is_empty());
    assert_each_once(&got);
    for (serial, events) in &expected {
        assert_eq!(&events_of(&got, serial), events, "{serial}");
    }
    let revoked = got.iter().find(|g| g.event == "revoked").unwrap();
    assert_eq!(revoked.body["reason"], "key compromise");
    let counts = b.delivery_counts().await.unwrap();
    assert_eq!(
        (
            counts.pending,
            counts.failing,
            counts.dead,
            counts.delivered
        ),
        (0, 0, 0, 24)
    );
    assert!(
        b.list_deliveries(DeliveryState::Delivered, 100, Default::default(), None)
            .await
            .unwrap()
            .iter()
            .all(|d| d.attempts == 1)
    );
    a.close().await;
    b.close().await;
}
