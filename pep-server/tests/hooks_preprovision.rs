//! The pre-provisioning hook (issue #17) end to end: the real `pep-server` binary, real
//! `fake-fcc` gateways, and real HTTP receivers (axum on 127.0.0.1, a random port) that allow,
//! deny, stall, fail, answer nonsense, or verify the signature as the docs' reference receiver
//! does.

use crate::http_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_support::{Options, READ, Server, config_toml, gateway};
use pep_server::hook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use serde_json::{Value, json};

const SECRET: &str = "hook-secret-0123456789abcdef0123456789";

/// What the receiver answers.
#[derive(Debug, Clone)]
enum Mode {
    Allow,
    AllowWith(Value),
    Deny(&'static str),
    Stall(Duration),
    Status(u16),
    Body(&'static str),
    /// The reference receiver: allow only a valid, fresh signature (else 401 and nothing).
    Verify,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    /// Every request: its JSON body, and whether its signature verified with [`SECRET`].
    seen: Arc<Mutex<Vec<(Value, bool)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let good = verify(
        SECRET.as_bytes(),
        &header(TIMESTAMP_HEADER),
        &body,
        &header(SIGNATURE_HEADER),
        now,
    );
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.seen.lock().unwrap().push((json, good));
    let mode = r.mode.lock().unwrap().clone();
    match mode {
        Mode::Allow => axum::Json(json!({"allow": true})).into_response(),
        Mode::AllowWith(identity) => {
            axum::Json(json!({"allow": true, "identity": identity})).into_response()
        }
        Mode::Deny(reason) => axum::Json(json!({"allow": false, "reason": reason})).into_response(),
        Mode::Stall(d) => {
            tokio::time::sleep(d).await;
            axum::Json(json!({"allow": true})).into_response()
        }
        Mode::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::Body(text) => (StatusCode::OK, text).into_response(),
        Mode::Verify if good => axum::Json(json!({"allow": true})).into_response(),
        Mode::Verify => (StatusCode::UNAUTHORIZED, "bad signature").into_response(),
    }
}

async fn receiver(mode: Mode) -> (SocketAddr, Receiver) {
    let r = Receiver {
        mode: Arc::new(Mutex::new(mode)),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/pep/approve", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, r)
}

/// A server whose hook is `hook` with `secret` (0600), a 500 ms timeout and `policy`.
async fn server(hook: SocketAddr, secret: &str, policy: &str) -> Server {
    server_with(hook, secret, policy, "").await
}

/// [`server`] with `extra` TOML (tables) appended.
async fn server_with(hook: SocketAddr, secret: &str, policy: &str, extra: &str) -> Server {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut toml = config_toml(dir.path(), &Options::default());
    toml.push_str(&format!(
        "\n[hooks]\npre_provision = \"http://{hook}/pep/approve\"\nsecret_file = \"{}\"\n\
         timeout_ms = 500\nfailure_policy = \"{policy}\"\n{extra}",
        secret_file.display()
    ));
    std::fs::write(dir.path().join("pep.toml"), toml).unwrap();
    Server::start_in(dir).await
}

fn set(r: &Receiver, mode: Mode) {
    *r.mode.lock().unwrap() = mode;
}

/// The serial was not reserved: no row in any state, no enrollment ID.
async fn nothing_reserved(s: &Server, serial: &str) {
    for state in ["failed", "in_flight", "deployed", "in_doubt"] {
        let (_, page) = s
            .get_json(&format!("/v3/identities?state={state}"), Some(READ))
            .await;
        assert!(
            !page["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["serialNumber"] == serial),
            "{serial} has a {state} row: {page}"
        );
    }
}

#[tokio::test]
async fn allow_deny_and_the_question_asked() {
    let (hook, r) = receiver(Mode::Allow).await;
    let s = server(hook, SECRET, "fail_closed").await;
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;

    let (status, id) = s.identity("GW-HOOK-1", gw).await;
    assert_eq!(status, 200, "{id}");
    {
        let seen = r.seen.lock().unwrap();
        let (question, signed) = seen.last().unwrap();
        assert!(signed, "the signature verifies with the shared secret");
        assert_eq!(question["serial"], "GW-HOOK-1");
        assert_eq!(question["ip"], gw.ip().to_string());
        assert_eq!(question["port"], gw.port());
        assert_eq!(question["order"], Value::Null);
        assert!(
            question["requester"]
                .as_str()
                .unwrap()
                .starts_with("both@127.0.0.1:"),
            "{question}"
        );
    }

    // The hook sets identity fields (checked like request fields): they are the identity's.
    set(
        &r,
        Mode::AllowWith(json!({"hardwareVersion": "mes-rev-c", "category": "development"})),
    );
    let (status, id) = s.identity("GW-HOOK-2", gw).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(
        (&id["hardwareVersion"], &id["category"]),
        (&json!("mes-rev-c"), &json!("development"))
    );

    // A no: 403 with the hook's words (control characters removed), audited, nothing reserved.
    set(
        &r,
        Mode::Deny("not on line 3 today\u{1b}[31m\nforged: line"),
    );
    let (status, body) = s.identity("GW-HOOK-3", gw).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "hooks.pre_provision");
    let text = body["error"].as_str().unwrap();
    assert!(
        text.contains("not on line 3 today[31mforged: line"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\n'), "{text}");
    nothing_reserved(&s, "GW-HOOK-3").await;
    let (_, audit) = s
        .get_json("/v3/audit?serialPrefix=GW-HOOK-3", Some(READ))
        .await;
    assert_eq!(audit["entries"][0]["event"], "refused", "{audit}");
    // A no's long reason is bounded.
    set(&r, Mode::Deny(Box::leak("n".repeat(5000).into_boxed_str())));
    let (status, body) = s.identity("GW-HOOK-4", gw).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().len() < 1024, "{body}");
    // The secret is nowhere in the server's log.
    assert!(!s.log().contains(SECRET));
}

#[tokio::test]
async fn fail_closed_refuses_when_the_hook_cannot_answer() {
    let (hook, r) = receiver(Mode::Stall(Duration::from_secs(3))).await;
    let s = server(hook, SECRET, "fail_closed").await;
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    for (i, (mode, needle)) in [
        (
            Mode::Stall(Duration::from_secs(3)),
            "did not answer within 500 ms",
        ),
        (Mode::Status(500), "answered HTTP 500"),
        (Mode::Status(302), "answered HTTP 302"),
        (Mode::Body("<html>ok</html>"), "not valid"),
        (Mode::Body("{\"allowed\": true}"), "not valid"),
        (
            Mode::AllowWith(json!({"apiAddress": "ftp://x"})),
            "identity.apiAddress",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        set(&r, mode);
        let serial = format!("GW-CLOSED-{i}");
        let (status, body) = s.identity(&serial, gw).await;
        assert_eq!(status, 503, "{needle}: {body}");
        assert_eq!(body["retryable"], true);
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
        nothing_reserved(&s, &serial).await;
    }
    // The hook back: the same serial provisions.
    set(&r, Mode::Allow);
    let (status, body) = s.identity("GW-CLOSED-0", gw).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn fail_open_provisions_when_the_hook_cannot_answer_but_not_when_it_says_no() {
    let (hook, r) = receiver(Mode::Status(500)).await;
    let s = server(hook, SECRET, "fail_open").await;
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    let (status, body) = s.identity("GW-OPEN-1", gw).await;
    assert_eq!(status, 200, "{body}");
    set(&r, Mode::Stall(Duration::from_secs(3)));
    let (status, body) = s.identity("GW-OPEN-2", gw).await;
    assert_eq!(status, 200, "{body}");
    set(&r, Mode::Body("nonsense"));
    let (status, body) = s.identity("GW-OPEN-3", gw).await;
    assert_eq!(status, 200, "{body}");
    set(&r, Mode::Deny("scrapped"));
    let (status, body) = s.identity("GW-OPEN-4", gw).await;
    assert_eq!(status, 403, "{body}");
    assert!(s.log().contains("fail_open"));
}

/// The reference receiver (signature and timestamp checked as docs/operations.md shows) allows
/// the server with the shared secret and refuses one with another secret, and a tampered or
/// replayed request.
#[tokio::test]
async fn the_reference_receiver_refuses_a_bad_signature() {
    let (hook, r) = receiver(Mode::Verify).await;
    let good = server(hook, SECRET, "fail_closed").await;
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    let (status, body) = good.identity("GW-SIG-1", gw).await;
    assert_eq!(status, 200, "{body}");

    let wrong = server(hook, "another-secret-0123456789abcdef", "fail_closed").await;
    let (status, body) = wrong.identity("GW-SIG-2", gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("HTTP 401"),
        "{body}"
    );
    assert!(!r.seen.lock().unwrap().last().unwrap().1);

    // By hand: a signed request verifies; the same with its body changed, or its timestamp
    // moved out of the window, does not.
    let client = reqwest::Client::new();
    let url = format!("http://{hook}/pep/approve");
    let body = br#"{"serial":"GW-SIG-3","ip":"10.0.0.1","port":1,"order":null,"requester":"x"}"#;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (ts, sent, ok) in [
        (now, &body[..], true),
        (now, &br#"{"serial":"GW-SIG-4"}"#[..], false),
        (now - 3600, &body[..], false),
    ] {
        // Signed at `ts` over `body`: a tampered body, or a valid but old signature (a replay),
        // is refused.
        let signature = pep_server::hook::signature(SECRET.as_bytes(), ts, body);
        let r = client
            .post(&url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(sent.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().is_success(),
            ok,
            "{ts} {}",
            String::from_utf8_lossy(sent)
        );
    }
}

/// Bad hook settings stop the server at start, naming the field.
#[tokio::test]
async fn bad_hook_settings_are_refused_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let good = dir.path().join("good.secret");
    std::fs::write(&good, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = config_toml(dir.path(), &Options::default());
    for (hooks, field, needle) in [
        (
            format!(
                "pre_provision = \"http://127.0.0.1:9/x\"\nsecret_file = \"{}\"",
                secret.display()
            ),
            "hooks.secret_file",
            "chmod 600",
        ),
        (
            "pre_provision = \"http://mes.example/x\"".to_owned(),
            "hooks.pre_provision",
            "loopback",
        ),
        (
            "pre_provision = \"http://127.0.0.1:9/x\"".to_owned(),
            "hooks.secret_file",
            "is required",
        ),
        (
            "pre_provision = \"not a url\"".to_owned(),
            "hooks.pre_provision",
            "not a URL",
        ),
        (
            "failure_policy = \"maybe\"".to_owned(),
            "hooks.failure_policy",
            "maybe",
        ),
        (
            format!(
                "pre_provision = \"https://127.0.0.1:9/x\"\nsecret_file = \"{}\"\nca_file = \"{}\"",
                good.display(),
                dir.path().join("no-such-ca.pem").display()
            ),
            "hooks.ca_file",
            "cannot read",
        ),
        (
            format!(
                "pre_provision = \"https://127.0.0.1:9/x\"\nsecret_file = \"{}\"\ntimeout_ms = 0",
                good.display()
            ),
            "hooks.timeout_ms",
            "greater than 0",
        ),
    ] {
        std::fs::write(
            dir.path().join("pep.toml"),
            format!("{base}\n[hooks]\n{hooks}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
            .arg("check-config")
            .arg("--config")
            .arg(dir.path().join("pep.toml"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{hooks}: {text}");
        assert!(
            text.contains(field) && text.contains(needle),
            "{hooks}: {text}"
        );
        assert!(!text.contains(SECRET));
    }
}

/// The hook sees the serial's work order.
#[tokio::test]
async fn the_hook_is_told_the_order() {
    const PLAN: &str = "test-token-plan-0123456789";
    let (hook, r) = receiver(Mode::Allow).await;
    let extra =
        format!("\n[[tokens]]\nname = \"planner\"\ntoken = \"{PLAN}\"\nroles = [\"plan\"]\n");
    let s = server_with(hook, SECRET, "fail_closed", &extra).await;
    let created = s
        .client
        .post(format!("{}/v3/orders", s.base))
        .bearer_auth(PLAN)
        .json(&json!({"orderId": "WO-H", "serials": ["GW-ORD-1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    let (status, body) = s.identity("GW-ORD-1", gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(r.seen.lock().unwrap().last().unwrap().0["order"], "WO-H");
}

/// The Python reference receiver of docs/operations.md, run as written (its secret file and port
/// substituted): it allows a signed request for a planned serial, refuses another serial with
/// its reason, and refuses a server with another secret and a tampered request (401).
#[tokio::test]
async fn the_documented_python_receiver_verifies_signatures() {
    use std::os::unix::fs::PermissionsExt as _;
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let code = docs
        .split("clock (a recorded request cannot be replayed later). In Python:\n\n```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the reference receiver in docs/operations.md");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("mes.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = http_support::dead_port();
    let code = code
        .replace("/etc/mes/pep-hook.secret", &secret.display().to_string())
        .replace("(\"127.0.0.1\", 8080)", &format!("(\"127.0.0.1\", {port})"));
    assert!(code.contains(&format!("{port}")), "{code}");
    let script = dir.path().join("receiver.py");
    std::fs::write(&script, code).unwrap();
    let _receiver = tokio::process::Command::new("python3")
        .arg(&script)
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let hook: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Up once it accepts connections.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(hook).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = server(hook, SECRET, "fail_closed").await;
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    let (status, body) = s.identity("GW-2612-000001", gw).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.identity("GW-9999-000001", gw).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not planned"),
        "{body}"
    );

    let wrong = server(hook, "another-secret-0123456789abcdef", "fail_closed").await;
    let (status, body) = wrong.identity("GW-2612-000002", gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("HTTP 401"),
        "{body}"
    );

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body =
        br#"{"serial":"GW-2612-000003","ip":"10.0.0.1","port":1,"order":null,"requester":"x"}"#;
    let client = reqwest::Client::new();
    // Signed at `ts` over `body`; sent with `sent`: as is, tampered, and validly signed but old
    // (a replay).
    for (sent, ts, ok) in [
        (&body[..], now, true),
        (&br#"{"serial":"GW-2612-000004","ip":"10.0.0.1","port":1,"order":null,"requester":"x"}"#[..], now, false),
        (&body[..], now - 600, false),
    ] {
        let signature = pep_server::hook::signature(SECRET.as_bytes(), ts, body);
        let r = client
            .post(format!("http://{hook}/pep/approve"))
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(sent.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().is_success(), ok, "{}", String::from_utf8_lossy(sent));
    }
}
