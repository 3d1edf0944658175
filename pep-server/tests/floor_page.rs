//! The factory-floor page in a real headless Chromium, against the real `pep-server` binary and
//! `fake-fcc` gateways: counters equal the database's, a provision made after the page loaded
//! appears without a reload, the search box shows a gateway's history, and without a token the page
//! is a 401 login form with no data.
//!
//! `cargo test -p pep-server --test suite -- --ignored floor_page::screenshot` rewrites `docs/floor.png`
//! (200 provisions across 15 gateways, 10 of them failed).

use crate::floor_support;
use crate::http_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::FccStatus;
use floor_support::{Browser, READ_COUNTERS_JS, db_counters};
use http_support::{BOTH, Options, PROV, READ, Server, dead_port, floor_login, gateway};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn db_path(server: &Server) -> std::path::PathBuf {
    server.dir.path().join("pep.sqlite")
}

/// Logs the browser in through the page's own form (the script fills it and submits it).
async fn log_in(browser: &Browser, server: &Server, token: &str) {
    browser.goto(&format!("{}/floor/", server.base)).await;
    let title = browser.exec("return document.title;", json!([])).await;
    assert_eq!(title, "pep · factory floor · log in");
    browser
        .exec(
            "document.getElementById('token').value = arguments[0]; \
             document.querySelector('form').submit(); return true;",
            json!([token]),
        )
        .await;
    browser
        .wait_for(
            "the page after logging in",
            "return document.getElementById('c-deployed-today') !== null;",
            json!([]),
            WAIT,
        )
        .await;
    assert!(browser.url().await.ends_with("/floor/"));
}

fn row_js() -> &'static str {
    "var r = document.querySelector('#attempts tbody tr[data-serial=\"' + arguments[0] + '\"]'); \
     if (!r || r.getAttribute('data-result') !== arguments[1]) { return null; } \
     var fcc = r.cells[4]; \
     return [r.cells[0].textContent, r.cells[1].textContent, r.cells[2].textContent, \
       r.cells[3].textContent, fcc.querySelector('.st').textContent, \
       fcc.querySelector('.msg').textContent, r.cells[5].textContent];"
}

#[tokio::test]
async fn page_shows_the_database_and_follows_new_provisions_live() {
    let server = Server::start(Options {
        connect_timeout_ms: 1_000,
        ..Options::default()
    })
    .await;
    let (ok_gw, _ok) = gateway(Sessions::Forever, &[]).await;
    let (bad_gw, _bad) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::ExpiredCertificate)],
    )
    .await;
    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port());
    for i in 0..6 {
        let (status, body) = server.identity(&format!("FLOOR-OK-{i:02}"), ok_gw).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server.identity("FLOOR-BAD-01", bad_gw).await;
    assert_eq!(status, 502);
    let (status, _) = server.identity("FLOOR-DEAD-01", dead).await;
    assert_eq!(status, 504);

    // Without JavaScript: the server-rendered snapshot already holds the counters and rows.
    let (status, html) = server.get_text("/floor/", Some(READ)).await;
    assert_eq!(status, 200);
    let expected = db_counters(&db_path(&server)).await;
    assert_eq!(expected.deployed_total, 6);
    assert_eq!(expected.failed_today, 2);
    assert!(
        html.contains(&format!(
            "id=\"c-deployed-today\">{}<",
            expected.deployed_today
        )),
        "{html}"
    );
    assert!(html.contains(&format!("id=\"c-failed-today\">{}<", expected.failed_today)));
    assert!(html.contains("data-serial=\"FLOOR-BAD-01\" data-result=\"failed\""));

    let browser = Browser::start(1280, 720).await;
    log_in(&browser, &server, READ).await;
    // Live: the event stream delivered its snapshot.
    browser
        .wait_for(
            "the live indicator",
            "return document.getElementById('live').classList.contains('on');",
            json!([]),
            WAIT,
        )
        .await;
    let shown = browser.exec(READ_COUNTERS_JS, json!([])).await;
    assert_eq!(shown, expected.as_json(), "page counters vs database");
    let rows = browser
        .exec(
            "return document.querySelectorAll('#attempts tbody tr').length;",
            json!([]),
        )
        .await;
    assert_eq!(rows, 8);
    // The failure is highlighted and says why in FCC's words (not colour alone: a word too).
    let bad = browser
        .exec(row_js(), json!(["FLOOR-BAD-01", "failed"]))
        .await;
    let bad: Vec<String> = serde_json::from_value(bad).unwrap();
    assert_eq!(bad[2], bad_gw.to_string());
    assert_eq!(bad[3], "✖ Failed");
    assert_eq!(bad[4], "13 EXPIRED_CERTIFICATE");
    assert!(!bad[5].is_empty() && !bad[5].contains("FCC at"), "{bad:?}");

    // Provisions made after the page loaded appear without a reload.
    browser
        .exec("window.__sameDocument = 'yes'; return true;", json!([]))
        .await;
    let (status, body) = server.identity("FLOOR-LIVE-OK", ok_gw).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.identity("FLOOR-LIVE-BAD", bad_gw).await;
    assert_eq!(status, 502);
    let live_ok = browser
        .wait_for(
            "the new deployed row",
            row_js(),
            json!(["FLOOR-LIVE-OK", "deployed"]),
            WAIT,
        )
        .await;
    assert_eq!(live_ok[2], ok_gw.to_string());
    assert_eq!(live_ok[3], "✔ Deployed");
    let live_bad = browser
        .wait_for(
            "the new failed row",
            row_js(),
            json!(["FLOOR-LIVE-BAD", "failed"]),
            WAIT,
        )
        .await;
    assert_eq!(live_bad[3], "✖ Failed");
    assert_eq!(
        live_bad[5], bad[5],
        "same FCC words live as in the snapshot"
    );
    let top = browser
        .exec(
            "return document.querySelector('#attempts tbody tr').getAttribute('data-serial');",
            json!([]),
        )
        .await;
    assert_eq!(top, "FLOOR-LIVE-BAD", "newest on top");
    // The counters follow, and equal the database again.
    let expected = db_counters(&db_path(&server)).await;
    assert_eq!(expected.deployed_total, 7);
    browser
        .wait_for(
            "the counters to follow",
            &format!("var c = (function () {{ {READ_COUNTERS_JS} }})(); return JSON.stringify(c) === arguments[0];"),
            json!([expected.as_json().to_string()]),
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .exec("return window.__sameDocument || null;", json!([]))
            .await,
        "yes",
        "the page was reloaded"
    );

    // The search box: a prefix finds the gateway's history in the audit trail.
    browser
        .exec(
            "document.getElementById('serial').value = 'FLOOR-LIVE-B'; \
             document.querySelector('#search button').click(); return true;",
            json!([]),
        )
        .await;
    let history = browser
        .wait_for(
            "the search result",
            "var rows = document.querySelectorAll('#history tbody tr'); \
             if (!rows.length) { return null; } \
             return Array.prototype.map.call(rows, function (r) { \
               return r.getAttribute('data-serial') + ' ' + r.querySelector('.badge').textContent; });",
            json!([]),
            WAIT,
        )
        .await;
    assert_eq!(
        history,
        json!(["FLOOR-LIVE-BAD ✖ Failed", "FLOOR-LIVE-BAD → Attempt"])
    );
    let words = browser
        .exec(
            "return document.querySelector('#history tbody tr .msg').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(words, bad[5], "the history shows FCC's words too");
    browser.quit().await;
}

#[tokio::test]
async fn the_page_reconnects_by_itself_after_a_server_restart() {
    // A fixed port, so the restarted server is where the page expects it; `auth = "none"`
    // because a restart ends browser sessions (see docs/floor.md), which is not what is tested here.
    let dir = tempfile::tempdir().unwrap();
    let port = dead_port();
    let options = Options {
        auth_none: true,
        ..Options::default()
    };
    let toml = http_support::config_toml(dir.path(), &options).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(dir.path().join("pep.toml"), toml).unwrap();
    let server = Server::start_in(dir).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let (status, _) = server.identity("RECONNECT-0", gw).await;
    assert_eq!(status, 200);

    let browser = Browser::start(1280, 720).await;
    browser.goto(&format!("{}/floor/", server.base)).await;
    let live = "return document.getElementById('live').classList.contains(arguments[0]);";
    browser
        .wait_for("the page to go live", live, json!(["on"]), WAIT)
        .await;
    browser
        .exec("window.__sameDocument = 'yes'; return true;", json!([]))
        .await;

    // Power cut of the server: the page says so, and keeps the last data on screen.
    let dir = server.kill9().await;
    browser
        .wait_for("the page to notice", live, json!(["off"]), WAIT)
        .await;
    let text = browser
        .exec(
            "return document.getElementById('live-text').textContent;",
            json!([]),
        )
        .await;
    assert!(text.as_str().unwrap().contains("reconnecting"), "{text}");
    assert!(
        browser
            .exec(row_js(), json!(["RECONNECT-0", "deployed"]))
            .await
            .is_array()
    );

    // Back on the same port: the page reconnects by itself and follows new provisions.
    let server = Server::start_in(dir).await;
    browser
        .wait_for("the page to reconnect", live, json!(["on"]), WAIT)
        .await;
    let (status, _) = server.identity("RECONNECT-1", gw).await;
    assert_eq!(status, 200);
    browser
        .wait_for(
            "the row provisioned after the restart",
            row_js(),
            json!(["RECONNECT-1", "deployed"]),
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .exec("return window.__sameDocument || null;", json!([]))
            .await,
        "yes",
        "the page was reloaded"
    );
    browser.quit().await;
}

#[tokio::test]
async fn with_javascript_off_the_page_is_a_complete_snapshot() {
    let server = Server::start(Options::default()).await;
    let (ok_gw, _ok) = gateway(Sessions::Forever, &[]).await;
    let (bad_gw, _bad) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::ExpiredCertificate)],
    )
    .await;
    for i in 0..3 {
        let (status, _) = server.identity(&format!("NOJS-OK-{i}"), ok_gw).await;
        assert_eq!(status, 200);
    }
    let (status, _) = server.identity("NOJS-BAD-0", bad_gw).await;
    assert_eq!(status, 502);
    let expected = db_counters(&db_path(&server)).await;

    let browser = Browser::start_with(1280, 720, false).await;
    // Logging in, searching: plain forms, clicked like a person would.
    browser.goto(&format!("{}/", server.base)).await;
    browser.type_into("#token", READ).await;
    browser.click("form button").await;
    // The click returns before the login's redirect has always been followed: wait for the page.
    for _ in 0..100 {
        if browser.source().await.contains("id=\"serial\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser.type_into("#serial", "NOJS-BAD").await;
    browser.click("#search button").await;
    // The click returns before the form's navigation has always finished: wait for the new URL.
    let mut url = browser.url().await;
    for _ in 0..100 {
        if url.ends_with("/floor/?serial=NOJS-BAD") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        url = browser.url().await;
    }
    assert!(url.ends_with("/floor/?serial=NOJS-BAD"), "{url}");
    let dom = browser.source().await;
    for (id, value) in [
        ("c-deployed-today", expected.deployed_today),
        ("c-deployed-total", expected.deployed_total),
        ("c-failed-today", expected.failed_today),
        ("c-in-flight", expected.in_flight),
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\">{value}<")),
            "{id} should be {value}: {dom}"
        );
    }
    assert_eq!(
        dom.matches("<tr class=\"r-deployed\" data-serial=\"NOJS-OK-")
            .count(),
        3
    );
    assert!(dom.contains("data-serial=\"NOJS-BAD-0\" data-result=\"failed\""));
    // The search was answered in the page itself.
    assert!(dom.contains("<tr class=\"r-failed\" data-serial=\"NOJS-BAD-0\"><td class=\"t\">"));
    // No script ran: the indicator still says it is a snapshot.
    assert!(dom.contains("Snapshot of"), "{dom}");
    browser.quit().await;
}

#[tokio::test]
async fn without_a_token_the_page_is_a_401_login_form_with_no_data() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let (status, _) = server.identity("SECRET-SERIAL-0001", gw).await;
    assert_eq!(status, 200);

    let leaks = |body: &str| {
        body.contains("SECRET-SERIAL")
            || body.contains("c-deployed-today")
            || body.contains(&gw.to_string())
    };
    for path in ["/floor/", "/floor/?serial=SECRET"] {
        let r = server.get(path, None).await;
        assert_eq!(r.status(), 401, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body = r.text().await.unwrap();
        assert!(body.contains("action=\"/floor/login\""), "{body}");
        assert!(!leaks(&body), "{body}");
    }
    let (status, body) = server.get_text("/floor/", Some("not-a-token-at-all")).await;
    assert_eq!(status, 401);
    assert!(!leaks(&body));
    let (status, body) = server.get_text("/floor/", Some(PROV)).await;
    assert_eq!(status, 403, "a provision-only token cannot read");
    assert!(!leaks(&body) && body.contains("read"), "{body}");
    for path in ["/v3/events", "/v3/audit?serialPrefix=SECRET"] {
        let (status, body) = server.get_text(path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(!leaks(&body), "{body}");
    }
    // A forged or stale session cookie is refused like a wrong token.
    for cookie in [
        "pep_session=00",
        "pep_session=test-token-read-0123456789",
        "pep_session=0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = server
            .client
            .get(format!("{}/floor/", server.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{cookie}");
    }
    // `/` leads to the page.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "/floor/");
}

#[tokio::test]
async fn login_sets_a_read_only_session_cookie_that_is_not_the_token() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let (status, _) = server.identity("COOKIE-0001", gw).await;
    assert_eq!(status, 200);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &'static str| floor_login(&plain, &server.base, token);
    assert_eq!(login("wrong-token-0123456789").await.status(), 401);
    assert_eq!(login(PROV).await.status(), 403);
    let r = login(READ).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/floor/");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("pep_session="), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(READ),
        "the cookie must not hold the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let with_cookie = |path: &str| {
        plain
            .get(format!("{}{path}", server.base))
            .header("cookie", cookie.clone())
            .send()
    };
    let r = with_cookie("/floor/").await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"));
    assert!(r.text().await.unwrap().contains("COOKIE-0001"));
    let r = with_cookie("/v3/audit?serialPrefix=COOKIE").await.unwrap();
    assert_eq!(r.status(), 200);
    let audit: Value = r.json().await.unwrap();
    assert_eq!(audit["entries"][0]["event"], "deployed");
    assert_eq!(audit["entries"][1]["event"], "attempt");
    // The downloads work with the session too.
    assert_eq!(
        with_cookie("/v3/enrollment-ids.csv")
            .await
            .unwrap()
            .status(),
        200
    );
    let r = with_cookie("/v3/inventory.json").await.unwrap();
    assert_eq!(r.status(), 200);
    let inventory: Value = r.json().await.unwrap();
    assert_eq!(inventory.as_array().unwrap().len(), 1);
    assert_eq!(inventory[0]["serialNumber"], "COOKIE-0001");
    assert!(
        inventory[0]["enrollmentID"]
            .as_str()
            .unwrap()
            .starts_with("A-")
    );
    // A session reads, never provisions, even when the token could (the `both` token here).
    let r = login(BOTH).await;
    let both_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = plain
        .post(format!("{}/v3/identities", server.base))
        .header("cookie", both_cookie)
        .json(&json!({ "serialNumber": "COOKIE-0002", "ip": "127.0.0.1", "port": gw.port() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Logging out clears the cookie.
    let r = plain
        .post(format!("{}/floor/logout", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

/// Reads SSE events (name, JSON data) from a streaming response until `stop` says enough.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if data.is_empty() {
                continue; // comment (keep-alive) or retry-only block
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            let done = stop(&name, &value);
            seen.push((name, value));
            if done {
                return seen;
            }
        }
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("no event within 30 s")
            .unwrap()
            .expect("the event stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn event_stream_sends_snapshot_attempts_and_counters_and_ends_at_shutdown() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let mut response = server.get("/v3/events", Some(READ)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let first = read_events(&mut response, &mut buffer, |_, _| true).await;
    assert_eq!(first[0].0, "snapshot");
    assert!(buffer.is_empty() || !buffer.contains("data:"));
    assert_eq!(first[0].1["counters"]["deployedTotal"], 0);
    assert_eq!(first[0].1["minutes"].as_array().unwrap().len(), 60);

    let (status, _) = server.identity("SSE-0001", gw).await;
    assert_eq!(status, 200);
    let events = read_events(&mut response, &mut buffer, |name, v| {
        name == "counters" && v["counters"]["deployedTotal"] == 1
    })
    .await;
    let attempts: Vec<&str> = events
        .iter()
        .filter(|(n, v)| n == "attempt" && v["serial"] == "SSE-0001")
        .map(|(_, v)| v["result"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, ["in_progress", "deployed"]);
    let last = &events.last().unwrap().1;
    assert_eq!(last["counters"]["deployedToday"], 1);
    assert_eq!(last["counters"]["inFlight"], 0);

    // Bad search parameters name the parameter.
    for (path, param) in [
        ("/v3/audit", "serialPrefix"),
        ("/v3/audit?serialPrefix=%3Cscript%3E", "serialPrefix"),
        ("/v3/audit?serialPrefix=SSE&limit=0", "limit"),
        ("/v3/audit?serialPrefix=SSE&limit=1001", "limit"),
    ] {
        let (status, body) = server.get_json(path, Some(READ)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(param),
            "{path}: {body}"
        );
    }

    // An open stream does not hold up a graceful stop.
    let (exit, log) = server.terminate().await;
    assert!(exit.success(), "{log}");
    drop(response);
}

/// Regenerates `docs/floor.png`: 200 provisions across 15 gateways (the line's workstations), 10
/// of them failed, then a 1280×720 screenshot of the live page.
#[tokio::test]
#[ignore = "writes docs/floor.png; run on purpose"]
async fn screenshot() {
    let server = Server::start(Options {
        connect_timeout_ms: 500,
        ..Options::default()
    })
    .await;
    let mut stations = Vec::new();
    for _ in 0..15 {
        stations.push(gateway(Sessions::Forever, &[]).await);
    }
    let (expired, _e) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::ExpiredCertificate)],
    )
    .await;
    let (cn, _c) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::InvalidLwm2mCnAttr)],
    )
    .await;
    let (closed, _x) = gateway(Sessions::Forever, &[FaultKind::CloseWithoutReply]).await;
    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port());
    let failing = [expired, cn, closed, dead];
    let mut ok = 0;
    let mut failed = 0;
    // The 10 failures, spread over the run (two among the newest rows).
    const FAILS: [u32; 10] = [15, 40, 62, 88, 110, 131, 150, 171, 190, 196];
    // Paced over a few minutes so the chart has a shape: like a line, not a burst.
    let pace = Duration::from_millis(
        std::env::var("PEP_FLOOR_SCREENSHOT_PACE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_200),
    );
    // 199 now, the 200th after the page loaded (so the picture shows a live row).
    for n in 0..199u32 {
        tokio::time::sleep(pace).await;
        let (serial, gw) = if let Some(i) = FAILS.iter().position(|f| *f == n) {
            (format!("GW-2611-{n:04}"), failing[i % failing.len()])
        } else {
            (
                format!("GW-2611-{n:04}"),
                stations[n as usize % stations.len()].0,
            )
        };
        let (status, _) = server.identity(&serial, gw).await;
        if status == 200 {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    assert_eq!((ok, failed), (189, 10));
    let browser = Browser::start(1280, 720).await;
    log_in(&browser, &server, READ).await;
    browser
        .wait_for(
            "the live indicator",
            "return document.getElementById('live').classList.contains('on');",
            json!([]),
            WAIT,
        )
        .await;
    let (status, _) = server.identity("GW-2611-0199", stations[4].0).await;
    assert_eq!(status, 200);
    browser
        .wait_for(
            "the live row",
            row_js(),
            json!(["GW-2611-0199", "deployed"]),
            WAIT,
        )
        .await;
    // And a search, as a supervisor would look a failed gateway up.
    browser
        .exec(
            "document.getElementById('serial').value = 'GW-2611-0196'; \
             document.querySelector('#search button').click(); return true;",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the search result",
            "return document.querySelectorAll('#history tbody tr').length > 0;",
            json!([]),
            WAIT,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // let the highlight fade
    let png = browser.screenshot().await;
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/floor.png");
    std::fs::write(&out, png).unwrap();
    browser.quit().await;
}
