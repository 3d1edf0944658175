//! Issue #14, "Lock the doors": each attack on the API as someone on the factory LAN would try it,
//! against the real `pep-server` binary. docs/robustness.md lists each attack with its test here.

use crate::http_support;

use std::net::{SocketAddr, TcpListener};

use fake_fcc::Sessions;
use http_support::*;

/// The test config with `allowed_networks` replaced by `networks` (a TOML line, or "" for the
/// default) and `extra` appended to `[fcc]`.
fn fcc_config(dir: &std::path::Path, networks: &str, extra: &str) -> String {
    let text = config_toml(dir, &Options::default());
    let line = "allowed_networks = [\"127.0.0.0/8\", \"::1\"]\n";
    assert!(text.contains(line), "the harness config changed");
    text.replace(line, &format!("{networks}\n{extra}\n"))
}

async fn start_with(networks: &str, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pep.toml"),
        fcc_config(dir.path(), networks, extra),
    )
    .unwrap();
    Server::start_in(dir).await
}

/// A listening socket that must see no connection: after the answer, a non-blocking accept finds
/// nothing in its backlog (a connect would have completed there before the server answered).
fn trap(ip: &str) -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn assert_untouched(l: &TcpListener) {
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the server connected to the refused target (from {from})"),
        Err(e) => panic!("accept: {e}"),
    }
}

/// §2: with the default allowlist (RFC 1918 + ULA) loopback, link-local and public targets are
/// 403 naming `fcc.allowed_networks`, no connection is attempted, nothing is stored, and the
/// refusal is in the audit log.
#[tokio::test]
async fn default_allowlist_refuses_loopback_link_local_and_outside_targets_without_connecting() {
    let server = start_with("", "").await;
    let (listener, addr) = trap("127.0.0.1");
    let (status, body) = server.identity("GW-NET-1", addr).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "fcc.allowed_networks", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("loopback"),
        "{body}"
    );
    assert_untouched(&listener);

    // POST takes the same path.
    let r = server
        .client
        .post(format!("{}/v3/identities", server.base))
        .bearer_auth(BOTH)
        .json(&serde_json::json!({
            "serialNumber": "GW-NET-2", "ip": "127.0.0.1", "port": addr.port()
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_untouched(&listener);

    for (ip, needle) in [
        ("169.254.169.254", "link-local"),
        ("8.8.8.8", "outside the allowed networks"),
        ("100.64.0.1", "outside the allowed networks"),
    ] {
        let gw: SocketAddr = format!("{ip}:80").parse().unwrap();
        let (status, body) = server.identity("GW-NET-3", gw).await;
        assert_eq!(status, 403, "{ip}: {body}");
        assert_eq!(body["rule"], "fcc.allowed_networks", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{ip}: {body}"
        );
    }
    // Nothing was reserved: the serials are unknown.
    let (status, _) = server
        .get_text("/v3/enrollment-id?serialNumber=GW-NET-1", Some(READ))
        .await;
    assert_eq!(status, 404);
    // Each refusal is a `refused` row of the audit trail (written off the request's path: poll),
    // shown by the floor page's search; still no identity row (the 404 above).
    let mut entries = Vec::new();
    for _ in 0..100 {
        let (status, body) = server
            .get_text("/v3/audit?serialPrefix=GW-NET-1", Some(READ))
            .await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        entries = v["entries"].as_array().unwrap().clone();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["event"], "refused");
    assert_eq!(entries[0]["gateway"], addr.to_string());
    assert!(
        entries[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("fcc.allowed_networks"),
        "{entries:?}"
    );
    let (status, page) = server.get_text("/floor/?serial=GW-NET-1", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(page.contains("Refused address"), "{page}");
    let log = server.log();
    assert!(
        log.contains("gateway address refused") && log.contains("GW-NET-1"),
        "{log}"
    );
    assert!(
        log.contains("rule=\"fcc.allowed_networks\"") || log.contains("rule=fcc.allowed_networks"),
        "{log}"
    );
}

/// §2: `require_peer_ip = true` refuses a target that is not the requester's own address (before
/// connecting), and lets the gateway ask for itself.
#[tokio::test]
async fn require_peer_ip_refuses_other_targets() {
    let server = start_with(
        "allowed_networks = [\"127.0.0.0/8\"]",
        "require_peer_ip = true",
    )
    .await;
    // The test client connects from 127.0.0.1; 127.0.0.2 is another (loopback) host.
    let (listener, addr) = trap("127.0.0.2");
    let (status, body) = server.identity("GW-PEER-1", addr).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "fcc.require_peer_ip", "{body}");
    assert_untouched(&listener);

    let (gw, _handle) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("GW-PEER-2", gw).await;
    assert_eq!(status, 200, "{body}");
}

/// §2: a bad `allowed_networks` entry stops the server at load, naming the field.
#[tokio::test]
async fn a_bad_network_is_a_load_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pep.toml");
    std::fs::write(
        &path,
        fcc_config(dir.path(), "allowed_networks = [\"10.1.2.3/8\"]", ""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("fcc.allowed_networks") && text.contains("host bits set"),
        "{text}"
    );
}

/// §3: a token with `serial_prefixes` provisions only serials starting with one of them (403,
/// before anything is reserved or connected); reading is not limited by the scope.
#[tokio::test]
async fn serial_prefixes_scope_provisioning_not_reading() {
    let dir = tempfile::tempdir().unwrap();
    let scoped = "test-token-line1-0123456789abcdef";
    let text = config_toml(dir.path(), &Options::default()).replace(
        "[ca]\n",
        &format!(
            "[[tokens]]\nname = \"line1\"\ntoken = \"{scoped}\"\nroles = [\"provision\", \"read\"]\n\
             serial_prefixes = [\"GW-LINE1-\", \"GW-SPARE-\"]\n\n[ca]\n"
        ),
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    let server = Server::start_in(dir).await;
    let (gw, _handle) = gateway(Sessions::Forever, &[]).await;

    let (status, body) = server
        .get_json(&identity_path("GW-LINE2-0001", gw), Some(scoped))
        .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("`line1`") && message.contains("`GW-LINE1-`, `GW-SPARE-`"),
        "{body}"
    );
    assert_eq!(body["serialNumber"], "GW-LINE2-0001");
    // POST is scoped the same way.
    let r = server
        .client
        .post(format!("{}/v3/identities", server.base))
        .bearer_auth(scoped)
        .json(&serde_json::json!({
            "serialNumber": "GW-LINE2-0002", "ip": gw.ip().to_string(), "port": gw.port()
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let (status, body) = server
        .get_json(&identity_path("GW-SPARE-0001", gw), Some(scoped))
        .await;
    assert_eq!(status, 200, "{body}");
    // An unscoped token provisions the other line; the scoped one still reads it.
    let (status, body) = server.identity("GW-LINE2-0001", gw).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get_text("/v3/enrollment-id?serialNumber=GW-LINE2-0001", Some(scoped))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("A-"), "{body}");
    // The refused serial was never reserved: nothing of GW-LINE2-0002 exists.
    let (status, _) = server
        .get_text("/v3/enrollment-id?serialNumber=GW-LINE2-0002", Some(READ))
        .await;
    assert_eq!(status, 404);
}

/// §6: a token given as `token_sha256` authenticates with its plaintext; the hash itself does not.
#[tokio::test]
async fn hashed_tokens_authenticate() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = "5d41402abc4b2a76b9719d911017c592aa";
    let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    let text = config_toml(dir.path(), &Options::default()).replace(
        "[ca]\n",
        &format!(
            "[[tokens]]\nname = \"hashed\"\ntoken_sha256 = \"{digest}\"\nroles = [\"read\"]\n\n[ca]\n"
        ),
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    let server = Server::start_in(dir).await;
    let (status, _) = server.get_text("/v3/enrollment-ids", Some(secret)).await;
    assert_eq!(status, 200);
    let (status, _) = server.get_text("/v3/enrollment-ids", Some(&digest)).await;
    assert_eq!(status, 401);
}

/// §5: connections over `[http] max_connections` are answered 503 at once and closed (not queued);
/// once the held connections go, requests are served again.
#[tokio::test]
async fn excess_connections_are_refused_cleanly() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[http]\nmax_connections = 4\n",
        config_toml(dir.path(), &Options::default())
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    let server = Server::start_in(dir).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Four idle connections take every slot (the header timeout would close them after 10 s).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Give the server's accept loop the time to take them (not a timing assert: the loop below
    // waits for the refusal, whatever it takes).
    let mut refused = None;
    for _ in 0..50 {
        let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut answer = String::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            extra.read_to_string(&mut answer),
        )
        .await;
        if matches!(read, Ok(Ok(_))) && answer.starts_with("HTTP/1.1 503") {
            refused = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let answer = refused.expect("no connection was refused with 503");
    assert!(
        answer.contains("connection: close") && answer.contains("limit"),
        "{answer}"
    );
    drop(held);
    // Slots come back: a normal request is served.
    let mut ok = false;
    for _ in 0..100 {
        if server
            .client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the server did not serve again after the held connections closed"
    );
    assert!(server.log().contains("too many open connections"));
}

/// §5: a client that sends its head and then stalls in the body is answered and dropped (body-read
/// timeout, 10 s) instead of holding its connection and a task forever.
#[tokio::test]
async fn a_stalled_body_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = Server::start(Options::default()).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v3/identities HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {BOTH}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"serialNumber\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    // Generous bound: the point is that it ends at all.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        s.read_to_string(&mut answer),
    )
    .await
    .expect("the server kept a stalled body's connection open for 60 s")
    .unwrap();
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!((400..500).contains(&status), "{answer}");
}

/// §5 and §4: after repeated 401s (bearer or floor login) one client address gets 429 with
/// `Retry-After`, even with a valid token, while every other address is served as usual.
#[tokio::test]
async fn repeated_401s_back_off_that_address_only() {
    let server = Server::start(Options::default()).await;
    let attacker = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let url = format!("{}/v3/enrollment-ids", server.base);
    let mut statuses = Vec::new();
    for i in 0..14 {
        let r = attacker
            .get(&url)
            .bearer_auth(format!("guess-{i:04}-0123456789abcdef"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..11].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[11..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right token waits out the backoff from that address...
    let r = attacker.get(&url).bearer_auth(READ).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // ...and the floor login from there too.
    let r = attacker
        .post(format!("{}/floor/login", server.base))
        .form(&[("token", READ)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Everyone else is served.
    let (status, _) = server.get_text("/v3/enrollment-ids", Some(READ)).await;
    assert_eq!(status, 200);
}

/// §4: a floor session is a random server-side ID: logout revokes it (the old cookie → 401), and a
/// new login rotates it (the cookie presented at login → 401 afterwards).
#[tokio::test]
async fn sessions_end_at_logout_and_rotate_at_login() {
    let server = Server::start(Options::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |cookie: Option<String>| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let (csrf, form_cookie) = login_form(&client, &base).await;
            let cookies = match cookie {
                Some(c) => format!("{form_cookie}; {c}"),
                None => form_cookie,
            };
            let r = client
                .post(format!("{base}/floor/login"))
                .header("cookie", cookies)
                .form(&[("token", READ), ("csrf", csrf.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303);
            let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
            set.split(';').next().unwrap().to_owned()
        }
    };
    let read = |cookie: String| {
        let rb = client
            .get(format!("{}/v3/enrollment-ids", server.base))
            .header("cookie", cookie);
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    let first = login(None).await;
    let value = first.trim_start_matches("pep_session=");
    assert_eq!(value.len(), 64, "{first}");
    assert_eq!(read(first.clone()).await, 200);
    // Two logins with the same token get different sessions (not a function of the token).
    let second = login(None).await;
    assert_ne!(first, second);
    // Rotation: logging in while presenting `first` ends `first`.
    let third = login(Some(first.clone())).await;
    assert_eq!(read(first.clone()).await, 401);
    assert_eq!(read(third.clone()).await, 200);
    // Logout revokes on the server: the cookie kept elsewhere is worth nothing.
    let page = client
        .get(format!("{}/floor/", server.base))
        .header("cookie", third.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_field(&page.text().await.unwrap());
    let r = client
        .post(format!("{}/floor/logout", server.base))
        .header("cookie", third.clone())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(read(third).await, 401);
    assert_eq!(read(second).await, 200);
}

/// §4 CSRF: the login needs the one-use token of a form this server rendered together with its
/// pre-session cookie, from the same origin; anything else is 403 and logs nobody in.
#[tokio::test]
async fn login_without_the_forms_csrf_token_is_refused() {
    let server = Server::start(Options::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/floor/login", server.base);
    let post = |cookie: Option<String>, fields: Vec<(&'static str, String)>| {
        let mut rb = client.post(&url).form(&fields);
        if let Some(c) = cookie {
            rb = rb.header("cookie", c);
        }
        rb
    };
    let refused = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("pep_session=")),
            "no session for a refused login"
        );
        let body = r.text().await.unwrap();
        assert!(
            body.contains("CSRF") || body.contains("cross-origin"),
            "{body}"
        );
        // The refusal renders a fresh form, so the operator can just try again.
        assert_eq!(csrf_field(&body).len(), 64);
    };
    let token = || ("token", READ.to_owned());
    // No token at all, neither field nor cookie.
    refused(post(None, vec![token()]).send().await.unwrap()).await;
    // The cookie without the field, and the field without the cookie.
    let (csrf, cookie) = login_form(&client, &server.base).await;
    refused(
        post(Some(cookie.clone()), vec![token()])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (csrf2, _) = login_form(&client, &server.base).await;
    refused(
        post(None, vec![token(), ("csrf", csrf2.clone())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A wrong token (the same in field and cookie, but never issued by this server).
    let forged = "ab".repeat(32);
    refused(
        post(
            Some(format!("pep_login={forged}")),
            vec![token(), ("csrf", forged)],
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    // Another form's token in the field: a mismatch with the cookie.
    let (_, cookie3) = login_form(&client, &server.base).await;
    refused(
        post(Some(cookie3), vec![token(), ("csrf", csrf.clone())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A cross-origin post with an otherwise perfect form.
    let (csrf4, cookie4) = login_form(&client, &server.base).await;
    refused(
        post(Some(cookie4), vec![token(), ("csrf", csrf4)])
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A same-origin post with a fresh form works...
    let (csrf5, cookie5) = login_form(&client, &server.base).await;
    let origin = server.base.clone();
    let r = post(
        Some(cookie5.clone()),
        vec![token(), ("csrf", csrf5.clone())],
    )
    .header("origin", origin)
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    // ...once: the same form and cookie again after the login are refused.
    refused(
        post(Some(cookie5), vec![token(), ("csrf", csrf5)])
            .send()
            .await
            .unwrap(),
    )
    .await;
}

/// §4 CSRF: logging out needs the session page's token and the same origin; without it the
/// answer is 403 and the session stays valid.
#[tokio::test]
async fn logout_without_the_pages_csrf_token_is_refused_and_the_session_lives() {
    let server = Server::start(Options::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = floor_login(&client, &server.base, READ).await;
    assert_eq!(r.status(), 303);
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let read = || {
        client
            .get(format!("{}/floor/", server.base))
            .header("cookie", session.clone())
            .send()
    };
    let page = read().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_field(&page.text().await.unwrap());
    assert_eq!(csrf.len(), 64);
    assert!(
        !session.contains(&csrf),
        "the page's token is not the session ID"
    );
    let logout = |fields: Vec<(&'static str, String)>| {
        client
            .post(format!("{}/floor/logout", server.base))
            .header("cookie", session.clone())
            .form(&fields)
    };
    for (what, rb) in [
        ("no token", logout(vec![])),
        ("empty token", logout(vec![("csrf", String::new())])),
        ("wrong token", logout(vec![("csrf", "00".repeat(32))])),
        (
            "cross-origin",
            logout(vec![("csrf", csrf.clone())]).header("origin", "http://evil.example"),
        ),
        (
            "cross-site fetch",
            logout(vec![("csrf", csrf.clone())]).header("sec-fetch-site", "cross-site"),
        ),
    ] {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert!(r.headers().get("set-cookie").is_none(), "{what}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("CSRF") || body.contains("cross-origin"),
            "{what}: {body}"
        );
        assert_eq!(
            read().await.unwrap().status(),
            200,
            "{what}: the session lives"
        );
    }
    // A bare body-less post (what a cross-site <form> without the field would look like).
    let r = client
        .post(format!("{}/floor/logout", server.base))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(read().await.unwrap().status(), 200);
    // The page's own form ends it.
    let r = logout(vec![("csrf", csrf)]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(read().await.unwrap().status(), 401);
}
