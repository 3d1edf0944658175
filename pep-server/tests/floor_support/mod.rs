//! Harness of the `floor_*` tests: a headless Chromium driven through chromedriver (W3C WebDriver
//! over HTTP, with the `reqwest` client the tests already use), and direct read-only SQL on the
//! server's SQLite file to check what the page shows against the database.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The Chromium binary (Debian package `chromium`; `.ci/run` installs it).
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver (Debian package `chromium-driver`; `.ci/run` installs it).
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install it with `apt-get install -y {package}` (.ci/run does)"
    );
}

/// A chromedriver process and one browser session (a fresh profile in a temporary directory).
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub(crate) async fn start(width: u32, height: u32) -> Browser {
        Browser::start_with(width, height, true).await
    }

    /// [`Browser::start`] with the page's JavaScript allowed or blocked (the browser's content
    /// setting; WebDriver commands still work).
    pub(crate) async fn start_with(width: u32, height: u32, javascript: bool) -> Browser {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not become ready");
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                // Every request the page makes, for [`Browser::requested_urls`].
                "goog:loggingPrefs": { "performance": "ALL" },
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": args,
                    "prefs": {
                        "profile.managed_default_content_settings.javascript":
                            if javascript { 1 } else { 2 },
                    },
                },
            }}
        });
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_owned();
        let browser = Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        };
        // The window size includes the browser's frame; the page must get exactly this viewport.
        browser
            .command(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({
                    "cmd": "Emulation.setDeviceMetricsOverride",
                    "params": { "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false },
                })),
            )
            .await;
        browser
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut rb = self.http.request(method, url);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let r: Value = rb.send().await.unwrap().json().await.unwrap();
        if let Some(error) = r["value"].get("error") {
            panic!("WebDriver {path}: {error}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    /// Navigates to `url` and waits for the page load.
    pub(crate) async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page, returns its result.
    pub(crate) async fn exec(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`/`false`, at most `within`.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Value,
        within: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.exec(script, args.clone()).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the element matching `css`.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    pub(crate) async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub(crate) async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The URLs of the requests the browser sent (or tried to send, blocked ones included) since
    /// the previous call, from chromedriver's performance log.
    pub(crate) async fn requested_urls(&self) -> Vec<String> {
        let entries = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({ "type": "performance" })),
            )
            .await;
        let mut urls = Vec::new();
        for entry in entries.as_array().into_iter().flatten() {
            let Some(message) = entry["message"].as_str() else {
                continue;
            };
            let message: Value = serde_json::from_str(message).unwrap();
            if message["message"]["method"] == "Network.requestWillBeSent"
                && let Some(url) = message["message"]["params"]["request"]["url"].as_str()
            {
                urls.push(url.to_owned());
            }
        }
        urls
    }

    /// The current URL.
    pub(crate) async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A PNG of the viewport.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    /// Ends the session and chromedriver.
    pub(crate) async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}

/// What the floor page's counters should say, read straight from the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DbCounters {
    pub deployed_today: i64,
    pub deployed_total: i64,
    pub failed_today: i64,
    pub in_flight: i64,
}

/// Counts in the server's SQLite file (read-only; "today" is UTC, the test config's offset).
pub(crate) async fn db_counters(db: &Path) -> DbCounters {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    let options = SqliteConnectOptions::new().filename(db).read_only(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let midnight_ms = now.replace_time(time::Time::MIDNIGHT).unix_timestamp() * 1000;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(midnight_ms)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let c = DbCounters {
        deployed_today: count(
            "SELECT COUNT(*) FROM audit WHERE event = 'deployed' AND at_ms >= ?1",
        )
        .await,
        deployed_total: count(
            "SELECT COUNT(*) FROM identities WHERE state = 'deployed' AND ?1 IS NOT NULL",
        )
        .await,
        failed_today: count(
            "SELECT COUNT(*) FROM audit WHERE event IN ('failed', 'interrupted') AND at_ms >= ?1",
        )
        .await,
        in_flight: count(
            "SELECT COUNT(*) FROM identities WHERE state = 'in_flight' AND ?1 IS NOT NULL",
        )
        .await,
    };
    pool.close().await;
    c
}

/// JavaScript returning the page's counters as `[deployedToday, deployedTotal, failedToday, inFlight]`.
pub(crate) const READ_COUNTERS_JS: &str = "return ['c-deployed-today', 'c-deployed-total', \
     'c-failed-today', 'c-in-flight'].map(function (id) { \
     return Number(document.getElementById(id).textContent); });";

impl DbCounters {
    /// As [`READ_COUNTERS_JS`] returns them.
    pub(crate) fn as_json(&self) -> Value {
        json!([
            self.deployed_today,
            self.deployed_total,
            self.failed_today,
            self.in_flight
        ])
    }
}
