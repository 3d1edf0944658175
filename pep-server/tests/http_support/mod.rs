//! Shared harness of the `http_*` tests: the real `pep-server` binary on 127.0.0.1 with a config
//! and a SQLite file in a temporary directory, and real `fake-fcc` gateways.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fake_fcc::{Fault, FaultKind, Faults, GatewayConfig, GatewayHandle, Sessions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Token with both roles.
pub(crate) const BOTH: &str = "test-token-both-0123456789";
/// Token with the `read` role only.
pub(crate) const READ: &str = "test-token-read-0123456789";
/// Token with the `provision` role only.
pub(crate) const PROV: &str = "test-token-prov-0123456789";

/// The repository's `fixtures/` directory.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Knobs of the test config.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub connect_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub request_deadline_ms: u64,
    pub max_concurrent_injections: usize,
    pub auth_none: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout_ms: 2_000,
            write_timeout_ms: 5_000,
            read_timeout_ms: 20_000,
            request_deadline_ms: 60_000,
            max_concurrent_injections: 64,
            auth_none: false,
        }
    }
}

/// A complete, valid config for `dir` (SQLite file inside it, listen on an OS-chosen port).
pub(crate) fn config_toml(dir: &Path, o: &Options) -> String {
    let f = fixtures();
    let auth = if o.auth_none { "none" } else { "tokens" };
    format!(
        r#"listen = "127.0.0.1:0"
database_url = "sqlite://{db}"
request_deadline_ms = {deadline}
auth = "{auth}"

[[tokens]]
name = "both"
token = "{BOTH}"
roles = ["provision", "read"]

[[tokens]]
name = "reader"
token = "{READ}"
roles = ["read"]

[[tokens]]
name = "line"
token = "{PROV}"
roles = ["provision"]

[ca]
cert = "{ca_cert}"
key = "{ca_key}"
# The repository's test CA: git leaves its key 0644.
allow_insecure_key_permissions = true

[bootstrap]
uri = "coaps://bootstrap.example.com:5684"
ca_cert = "{bs}"

[update]
auth_cert = "{ua}"
vendor_id = "5355424d-4152-5320-4f46-204c4f564552"
class_id = "4d4f4e44-4159-204d-4f52-4e494e472e2e"

[fcc]
connect_timeout_ms = {ct}
write_timeout_ms = {wt}
read_timeout_ms = {rt}
max_concurrent_injections = {mc}
# The fake gateways of the tests listen on loopback, which the default allowlist refuses.
allowed_networks = ["127.0.0.0/8", "::1"]
"#,
        db = dir.join("pep.sqlite").display(),
        deadline = o.request_deadline_ms,
        ca_cert = f.join("ca/CA_cert.pem").display(),
        ca_key = f.join("ca/CA_private.pem").display(),
        bs = f.join("bootstrap/bootstrap_ca.pem").display(),
        ua = f.join("bootstrap/update_auth_cert.pem").display(),
        ct = o.connect_timeout_ms,
        wt = o.write_timeout_ms,
        rt = o.read_timeout_ms,
        mc = o.max_concurrent_injections,
    )
}

/// A running `pep-server` process.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The temporary directory holding the config, the database and the server's log.
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl Server {
    /// Writes a config into a fresh temporary directory and starts the server on it.
    pub(crate) async fn start(options: Options) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pep.toml"),
            config_toml(dir.path(), &options),
        )
        .unwrap();
        Server::start_in(dir).await
    }

    /// Starts the server on `dir/pep.toml` (an existing config and database).
    pub(crate) async fn start_in(dir: tempfile::TempDir) -> Server {
        Server::start_in_with_env(dir, &[]).await
    }

    /// [`Server::start_in`] with extra environment variables (a SoftHSM2 token's `SOFTHSM2_CONF`).
    pub(crate) async fn start_in_with_env(
        dir: tempfile::TempDir,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pep-server"))
            .arg("--config")
            .arg(dir.path().join("pep.toml"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.trim().parse().unwrap();
                }
            }
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("pep-server exited before listening; its log:\n{log}");
        })
        .await
        .expect("pep-server did not print `listening on` within 30 s");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Server {
            child,
            base: format!("http://{addr}"),
            dir,
            client,
        }
    }

    /// SIGKILL, like a power cut of the server; returns the directory for a restart.
    pub(crate) async fn kill9(mut self) -> tempfile::TempDir {
        self.child.kill().await.unwrap();
        self.dir
    }

    /// SIGTERM, then waits (at most 30 s) for the exit; returns the exit status and the log.
    pub(crate) async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().unwrap().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("pep-server did not exit within 30 s of SIGTERM")
            .unwrap();
        (status, self.log())
    }

    /// [`Server::terminate`], keeping the directory (config, database, log) for a look after the
    /// exit.
    pub(crate) async fn stop(mut self) -> (std::process::ExitStatus, String, tempfile::TempDir) {
        let pid = self.child.id().unwrap().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("pep-server did not exit within 30 s of SIGTERM")
            .unwrap();
        (status, self.log(), self.dir)
    }

    /// Sends `signal` (`HUP`, `TERM`…) to the server process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let kill = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    /// The server's log so far (stderr).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `GET path` with a bearer token (`None`: no Authorization header).
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut rb = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().await.unwrap()
    }

    /// `GET path` → (status, body as text).
    pub(crate) async fn get_text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let r = self.get(path, token).await;
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// `GET path` → (status, body as JSON).
    pub(crate) async fn get_json(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.get_text(path, token).await;
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: {status} body is not JSON ({e}): {text}"));
        (status, json)
    }

    /// Provisions `serial` at `gw` through `GET /v3/identity` with the `both` token.
    pub(crate) async fn identity(&self, serial: &str, gw: SocketAddr) -> (u16, serde_json::Value) {
        self.get_json(&identity_path(serial, gw), Some(BOTH)).await
    }

    /// `POST /v3/identities/{serial}/resolve` with `{"state": state}` → (status, body as JSON).
    pub(crate) async fn resolve(
        &self,
        serial: &str,
        state: &str,
        token: &str,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!(
                "{}/v3/identities/{}/resolve",
                self.base,
                encode(serial)
            ))
            .bearer_auth(token)
            .json(&serde_json::json!({ "state": state }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// The value of one sample of `/metrics` (`name{labels}` exactly as printed).
    pub(crate) async fn metric(&self, sample: &str) -> f64 {
        let (status, text) = self.get_text("/metrics", Some(READ)).await;
        assert_eq!(status, 200);
        metric_value(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }

    /// Every deployed gateway, walked through the HAL listing with `limit` and `order`.
    pub(crate) async fn walk(&self, limit: u32, order: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut path = format!("/v3/enrollment-ids?limit={limit}&order={order}");
        loop {
            let (status, page) = self.get_json(&path, Some(READ)).await;
            assert_eq!(status, 200, "{page}");
            let results = page["results"].as_array().unwrap().clone();
            assert_eq!(
                page["total_count"].as_u64().unwrap() as usize,
                results.len()
            );
            if results.is_empty() {
                assert!(page["_links"].get("next").is_none(), "{page}");
                return all;
            }
            assert!(results.len() <= limit as usize);
            path = page["_links"]["next"]["href"].as_str().unwrap().to_owned();
            all.extend(results);
        }
    }
}

/// The value of `sample` in a Prometheus text exposition.
pub(crate) fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `/v3/identity?serialNumber=..&ip=..&port=..` with the serial percent-encoded.
pub(crate) fn identity_path(serial: &str, gw: SocketAddr) -> String {
    format!(
        "/v3/identity?serialNumber={}&ip={}&port={}",
        encode(serial),
        gw.ip(),
        gw.port()
    )
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fake-fcc gateway on 127.0.0.1 serving `sessions`, with `faults` always firing.
pub(crate) async fn gateway(
    sessions: Sessions,
    faults: &[FaultKind],
) -> (SocketAddr, GatewayHandle) {
    let config = GatewayConfig {
        sessions,
        faults: Faults {
            faults: faults
                .iter()
                .map(|kind| Fault {
                    kind: *kind,
                    probability: 1.0,
                })
                .collect(),
            seed: Some(7),
        },
        ..GatewayConfig::default()
    };
    fake_fcc::spawn(config).await.unwrap()
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub(crate) fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The value of the hidden `csrf` field of a floor page or login form (issue #14 §4).
pub(crate) fn csrf_field(html: &str) -> String {
    let (_, rest) = html
        .split_once(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    rest.split('"').next().unwrap().to_owned()
}

/// A fresh floor login form, as a browser gets it: its CSRF token and the `pep_login=<token>`
/// cookie set with it. A login posts both.
pub(crate) async fn login_form(client: &reqwest::Client, base: &str) -> (String, String) {
    let r = client.get(format!("{base}/floor/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("pep_login="))
        .expect("the login form sets pep_login");
    let csrf = csrf_field(&r.text().await.unwrap());
    assert_eq!(cookie, format!("pep_login={csrf}"));
    (csrf, cookie)
}

/// Posts the floor login form with `token`, as a browser does after [`login_form`]; returns the
/// response (303 with the session cookie when it worked).
pub(crate) async fn floor_login(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> reqwest::Response {
    let (csrf, cookie) = login_form(client, base).await;
    client
        .post(format!("{base}/floor/login"))
        .header("cookie", cookie)
        .form(&[("token", token), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap()
}
