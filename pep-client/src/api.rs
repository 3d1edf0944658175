//! The pep server's HTTP API, as `pep-cli` uses it.
//!
//! One `reqwest` client (rustls, no OpenSSL). Every request carries `Authorization: Bearer <token>`
//! when a token is configured; traces (`-v`, `DEBUG=*`) show method, URL and status, never the token
//! and never the FSS verification key.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use crate::error::{CliError, one_line};

/// The server URL when `PEP_SERVER_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "http://localhost:5151";

/// An API token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token; `None` if it is empty after trimming.
    pub fn new(value: &str) -> Option<Self> {
        let t = value.trim();
        (!t.is_empty()).then(|| Self(t.to_owned()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Everything `GET /v3/identity` takes. The optional fields are sent only when set: the server's
/// configuration (`[device]`, `[defaults]`) decides what the caller leaves out.
#[derive(Debug, Clone)]
pub struct IdentityRequest {
    /// Gateway serial number (endpoint name).
    pub serial_number: String,
    /// IP address where FCC listens (IPv4 or IPv6).
    pub ip: IpAddr,
    /// FCC's TCP port.
    pub port: u16,
    /// Cloud API address.
    pub api_address: Option<String>,
    /// Gateway services address.
    pub gateway_services_address: Option<String>,
    /// Hardware version.
    pub hardware_version: Option<String>,
    /// Radio configuration.
    pub radio_config: Option<String>,
    /// Status LED configuration.
    pub led_config: Option<String>,
    /// `production` or `development`.
    pub category: Option<String>,
    /// journald FSS verification key (`-k`).
    pub verification_key: Option<String>,
    /// The request key (`requestId`): asking again with it returns the first answer instead of
    /// provisioning the serial twice.
    pub request_id: Option<RequestKey>,
}

/// A request key (`requestId`, 8–128 printable ASCII characters): the server stores it with the
/// attempt, and the same serial asked again with the same key gets the stored identity back (or
/// 409 with the attempt's `state`) instead of a second certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey(String);

impl RequestKey {
    /// The shortest key the server accepts.
    pub const MIN_LEN: usize = 8;
    /// The longest key the server accepts.
    pub const MAX_LEN: usize = 128;

    /// A fresh random key: 128 bits from the operating system, as 32 hex digits. Random (not
    /// derived from the serial) so that a key never names another station's attempt.
    pub fn random() -> Result<Self, CliError> {
        use rand::RngCore as _;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
            CliError::io(
                "cannot draw a random request key",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RequestKey {
    type Err = String;

    /// Checks the server's rule here, so that a bad `--request-id` fails before any request.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.len();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(format!(
                "a request key has {}–{} characters, not {len}",
                Self::MIN_LEN,
                Self::MAX_LEN
            ));
        }
        if let Some(c) = s.chars().find(|c| !matches!(c, '\x21'..='\x7e')) {
            return Err(format!(
                "a request key has printable ASCII characters only (no blank), not {c:?}"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IdentityRequest {
    /// The query pairs of `GET /v3/identity`, in the old tool's order, optional ones only when set.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("serialNumber", self.serial_number.clone()),
            ("ip", self.ip.to_string()),
            ("port", self.port.to_string()),
        ];
        let optional = [
            ("apiAddress", &self.api_address),
            ("gatewayServicesAddress", &self.gateway_services_address),
            ("hardwareVersion", &self.hardware_version),
            ("radioConfig", &self.radio_config),
            ("ledConfig", &self.led_config),
            ("category", &self.category),
            ("verificationKey", &self.verification_key),
        ];
        pairs.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.as_ref().map(|v| (name, v.clone()))),
        );
        if let Some(key) = &self.request_id {
            pairs.push(("requestId", key.as_str().to_owned()));
        }
        pairs
    }
}

/// A successful identity answer: the exact bytes (written to `identity.json` unchanged) and the
/// fields `pep-cli` itself needs.
#[derive(Debug, Clone)]
pub struct IdentityAnswer {
    /// The body as the server sent it.
    pub body: Vec<u8>,
    /// The `enrollmentID` field.
    pub enrollment_id: String,
}

/// Sort order of `GET /v3/enrollment-ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the server's default).
    Desc,
}

impl Order {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
    }
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("asc") {
            Ok(Self::Asc)
        } else if s.eq_ignore_ascii_case("desc") {
            Ok(Self::Desc)
        } else {
            Err(format!("order must be ASC or DESC, not {s:?}"))
        }
    }
}

/// One page of `GET /v3/enrollment-ids`.
#[derive(Debug, Clone)]
pub struct Page {
    /// The body as the server sent it.
    pub body: Vec<u8>,
    /// The entries, as JSON objects.
    pub results: Vec<serde_json::Value>,
    /// `_links.next.href`, resolved against the server URL.
    pub next: Option<Url>,
}

#[derive(Deserialize)]
struct PageJson {
    #[serde(default)]
    results: Vec<serde_json::Value>,
    #[serde(rename = "_links", default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    next: Option<Href>,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

/// How `pep-cli` trusts an `https://` server and, for mutual TLS, proves its station's identity.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM files of CA certificates to trust (`--ca-cert`, one or more certificates each).
    pub ca_certs: Vec<PathBuf>,
    /// Trust only `ca_certs`, not the built-in Mozilla roots (`--ca-cert-only`, pinning).
    pub ca_cert_only: bool,
    /// The station's certificate chain (PEM, `--client-cert`), for a server with `[tls] client_ca`.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM, `--client-key`).
    pub client_key: Option<PathBuf>,
}

impl TlsOptions {
    /// Adds the roots and the client identity to `builder`; every bad file is a usage error that
    /// names it (never its contents: the key file holds a secret).
    fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, CliError> {
        if self.ca_cert_only && self.ca_certs.is_empty() {
            return Err(CliError::Usage(
                "--ca-cert-only trusts only the CA given with --ca-cert FILE, and none was given"
                    .to_owned(),
            ));
        }
        for path in &self.ca_certs {
            for cert in read_certificates("--ca-cert", path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if self.ca_cert_only {
            builder = builder.tls_built_in_root_certs(false);
        }
        match (&self.client_cert, &self.client_key) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(CliError::Usage(
                    "--client-cert needs its private key: --client-key FILE is missing".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(CliError::Usage(
                    "--client-key needs its certificate: --client-cert FILE is missing".to_owned(),
                ));
            }
            (Some(cert), Some(key)) => {
                // Checked apart first, so that a bad file is named on its own.
                read_certificates("--client-cert", cert)?;
                let mut pem = read_file("--client-key", key)?;
                pem.push(b'\n');
                pem.extend(read_file("--client-cert", cert)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                    CliError::Usage(format!(
                        "--client-key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file",
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
        }
        Ok(builder)
    }

    /// The client certificate and key files, for a message about a failed set-up.
    fn client_files(&self) -> String {
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => format!(
                " with --client-cert {} and --client-key {} (does the key belong to the certificate?)",
                c.display(),
                k.display()
            ),
            _ => String::new(),
        }
    }
}

/// The bytes of a file given with `flag`.
fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {flag} {}: {e}", path.display())))
}

/// The PEM certificates of a file given with `flag`: at least one.
fn read_certificates(flag: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, CliError> {
    let pem = read_file(flag, path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        CliError::Usage(format!(
            "{flag} {}: not PEM certificates: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(CliError::Usage(format!(
            "{flag} {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// A client of one pep server.
#[derive(Debug, Clone)]
pub struct PepApi {
    http: reqwest::Client,
    base: Url,
    token: Option<Token>,
}

impl PepApi {
    /// A client for the server at `server_url` (e.g. `http://localhost:5151`).
    pub fn new(
        server_url: &str,
        token: Option<Token>,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        Self::with_tls(server_url, token, timeout, &TlsOptions::default())
    }

    /// Like [`PepApi::new`], with the HTTPS trust and client identity of `tls`.
    pub fn with_tls(
        server_url: &str,
        token: Option<Token>,
        timeout: Duration,
        tls: &TlsOptions,
    ) -> Result<Self, CliError> {
        let mut base = Url::parse(server_url.trim()).map_err(|e| {
            CliError::Usage(format!(
                "invalid server URL {server_url:?} (PEP_SERVER_URL): {e}"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(CliError::Usage(format!(
                "invalid server URL {server_url:?} (PEP_SERVER_URL): expected http://HOST[:PORT] or https://..."
            )));
        }
        // A base with a path prefix (behind a proxy) keeps it: "http://h/pep" → "http://h/pep/v3/...".
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .user_agent(concat!("pep-cli/", env!("CARGO_PKG_VERSION")));
        let builder = tls.apply(builder)?;
        let http = builder.build().map_err(|e| {
            use std::error::Error as _;
            let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
            CliError::Usage(format!(
                "cannot set up the HTTP client{}: {e}{cause}",
                tls.client_files()
            ))
        })?;
        Ok(Self { http, base, token })
    }

    /// The server URL, for messages.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn endpoint(&self, path: &str) -> Result<Url, CliError> {
        self.base
            .join(path)
            .map_err(|e| CliError::Usage(format!("cannot build the URL for {path}: {e}")))
    }

    /// Resolves a link of the server. An absolute path (`/v3/...`) is taken relative to the
    /// configured server URL, so a path prefix of a reverse proxy (`http://h/pep/`) is kept.
    fn resolve(&self, href: &str) -> Result<Url, url::ParseError> {
        match href.strip_prefix('/') {
            Some(path) if !path.starts_with('/') => self.base.join(path),
            _ => self.base.join(href),
        }
    }

    /// `GET url`: returns the body of a 2xx answer; maps everything else to a [`CliError`].
    async fn get(&self, url: Url, what: &str) -> Result<Vec<u8>, CliError> {
        let req = self.http.get(url.clone());
        self.send(req, "GET", &url, what).await
    }

    /// `POST url` with a JSON body: like [`PepApi::get`].
    async fn post_json(
        &self,
        url: Url,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<Vec<u8>, CliError> {
        let req = self.http.post(url.clone()).json(body);
        self.send(req, "POST", &url, what).await
    }

    /// Sends `req` (to `url`, for the trace) with the token: the body of a 2xx answer, or the
    /// [`CliError`] of everything else.
    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        method: &str,
        url: &Url,
        what: &str,
    ) -> Result<Vec<u8>, CliError> {
        if let Some(Token(t)) = &self.token {
            req = req.bearer_auth(t);
        }
        let shown = redact(url);
        tracing::debug!(target: "pep_client::http", "{method} {shown}");
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| {
            let maybe_sent = !e.is_connect();
            self.transport_error(e, maybe_sent)
        })?;
        let status = resp.status();
        tracing::debug!(
            target: "pep_client::http",
            "{method} {shown} -> {status} in {} ms",
            started.elapsed().as_millis()
        );
        // The status line arrived, so the request did too: a failure now loses the answer.
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(e, true))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let server_json = ServerErrorJson::parse(&body);
        let gave_up = matches!(status.as_u16(), 502..=504);
        match server_json {
            // The pep server always answers errors with its JSON body; a gateway error without
            // it comes from a reverse proxy in between, which says nothing about the server.
            None if gave_up => Err(CliError::Proxy {
                what: what.to_owned(),
                status: status.as_u16(),
                message: error_text(status, &body),
            }),
            _ => {
                let mut message = error_text(status, &body);
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    message.push_str(auth_hint(self.token.is_some()));
                }
                Err(CliError::Server {
                    what: what.to_owned(),
                    status: status.as_u16(),
                    message,
                    state: server_json.and_then(|j| j.state).map(|s| one_line(&s)),
                })
            }
        }
    }

    /// A transport failure. `maybe_sent`: the request may have reached the server (anything but
    /// a failure to connect), so the failure may have lost an answer.
    fn transport_error(&self, e: reqwest::Error, maybe_sent: bool) -> CliError {
        use std::error::Error as _;
        // Without the URL: its query may hold the FSS verification key. reqwest's top-level
        // message is generic ("error sending request"); the causes say why.
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        if e.is_timeout() {
            detail = format!("no answer in time ({detail})");
        }
        let mut url = self.base.clone();
        url.set_query(None);
        let _ = url.set_password(None);
        let url = url.as_str().trim_end_matches('/').to_owned();
        let mut detail = one_line(&detail);
        if self.base.scheme() == "https" {
            detail.push_str(tls_hint(&detail));
        }
        // A time-out is a lost answer even while connecting: the two cannot be told apart.
        if maybe_sent || e.is_timeout() {
            CliError::NoAnswer { url, detail }
        } else {
            CliError::Unreachable { url, detail }
        }
    }

    /// `GET /v3/identity`: creates, injects and returns one gateway identity. `command` names the
    /// pep-cli command in error messages (`get-one-identity` or `provision`).
    pub async fn identity(
        &self,
        req: &IdentityRequest,
        command: &str,
    ) -> Result<IdentityAnswer, CliError> {
        let mut url = self.endpoint("v3/identity")?;
        url.query_pairs_mut().extend_pairs(req.query_pairs());
        let what = format!("{command} {}", req.serial_number);
        let body = self.get(url, &what).await?;
        let enrollment_id =
            check_identity(&body, &req.serial_number).map_err(|detail| CliError::BadAnswer {
                what: what.clone(),
                detail,
            })?;
        Ok(IdentityAnswer {
            body,
            enrollment_id,
        })
    }

    /// `POST /v3/identities/{serial}/revoke`: revokes the gateway's identity (`reason`: an RFC
    /// 5280 name such as `keyCompromise`); returns the server's JSON answer.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: pep_ca::RevocationReason,
        note: Option<&str>,
    ) -> Result<serde_json::Value, CliError> {
        let mut url = self.endpoint("v3/identities/")?;
        url.path_segments_mut()
            .map_err(|()| {
                CliError::Usage(format!("the server URL {} cannot take a path", self.base))
            })?
            .pop_if_empty()
            .push(serial)
            .push("revoke");
        let what = format!("revoke {serial}");
        let mut body = serde_json::json!({ "reason": reason.as_str() });
        if let Some(note) = note {
            body["note"] = serde_json::Value::from(note);
        }
        let answer = self.post_json(url, &body, &what).await?;
        let json: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| CliError::BadAnswer {
                what: what.clone(),
                detail: format!("the answer is not JSON: {e}"),
            })?;
        if json["state"] != "revoked" || json["serialNumber"] != serial {
            return Err(CliError::BadAnswer {
                what,
                detail: format!(
                    "the answer does not confirm the revocation: {}",
                    one_line(&json.to_string())
                ),
            });
        }
        Ok(json)
    }

    /// `GET /v3/enrollment-id`: the enrollment ID of a deployed gateway.
    pub async fn enrollment_id(&self, serial: &str) -> Result<String, CliError> {
        let what = format!("get-enrollment-id {serial}");
        let text = self.get_text("v3/enrollment-id", serial, &what).await?;
        if !is_enrollment_id(&text) {
            return Err(CliError::BadAnswer {
                what,
                detail: format!("{:?} is not an enrollment ID", one_line(&text)),
            });
        }
        Ok(text)
    }

    /// `GET /v3/verification-key`: the stored FSS verification key of a deployed gateway.
    pub async fn verification_key(&self, serial: &str) -> Result<String, CliError> {
        let what = format!("get-verification-key {serial}");
        self.get_text("v3/verification-key", serial, &what).await
    }

    async fn get_text(&self, path: &str, serial: &str, what: &str) -> Result<String, CliError> {
        let mut url = self.endpoint(path)?;
        url.query_pairs_mut().append_pair("serialNumber", serial);
        let body = self.get(url, what).await?;
        let text = String::from_utf8(body).map_err(|_| CliError::BadAnswer {
            what: what.to_owned(),
            detail: "the body is not UTF-8 text".to_owned(),
        })?;
        Ok(text.trim().to_owned())
    }

    /// The URL of the first page of `GET /v3/enrollment-ids`.
    pub fn enrollment_ids_url(
        &self,
        limit: u32,
        order: Order,
        last: Option<&str>,
    ) -> Result<Url, CliError> {
        let mut url = self.endpoint("v3/enrollment-ids")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.to_string())
                .append_pair("order", order.as_str());
            if let Some(last) = last {
                q.append_pair("last", last);
            }
        }
        Ok(url)
    }

    /// Fetches one page of `GET /v3/enrollment-ids` from `url`.
    pub async fn enrollment_ids_page(&self, url: Url) -> Result<Page, CliError> {
        let what = "list-enrollment-ids";
        let body = self.get(url, what).await?;
        let parsed: PageJson = serde_json::from_slice(&body).map_err(|e| CliError::BadAnswer {
            what: what.to_owned(),
            detail: format!("not an enrollment-ids page: {e}"),
        })?;
        let next = match parsed.links.and_then(|l| l.next) {
            None => None,
            Some(Href { href }) => Some(self.resolve(&href).map_err(|e| CliError::BadAnswer {
                what: what.to_owned(),
                detail: format!("bad next link {href:?}: {e}"),
            })?),
        };
        // The token goes to the configured server only: a next link to another scheme, host or
        // port (a compromised or misconfigured server, a proxy's rewrite) is refused rather than
        // followed with the token (or silently without it, which would hide the problem).
        if let Some(next) = &next
            && next.origin() != self.base.origin()
        {
            return Err(CliError::BadAnswer {
                what: what.to_owned(),
                detail: format!(
                    "the next link {} leaves the server {}: not followed, so the API token \
                         is not sent to another origin",
                    redact(next),
                    self.base.origin().ascii_serialization()
                ),
            });
        }
        Ok(Page {
            body,
            results: parsed.results,
            next,
        })
    }

    /// `GET /v3/enrollment-ids.csv`: the server's own CSV export.
    pub async fn enrollment_ids_csv(&self) -> Result<Vec<u8>, CliError> {
        let url = self.endpoint("v3/enrollment-ids.csv")?;
        self.get(url, "enrollment-ids.csv").await
    }
}

/// The URL for traces, without the FSS verification key and without credentials.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    if url.query_pairs().any(|(k, _)| k == "verificationKey") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "verificationKey" {
                    "<redacted>".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// The pep server's JSON error body: `{"error": "...", "status": N, "state": "..."?, ...}`.
#[derive(Deserialize)]
struct ServerErrorJson {
    error: String,
    #[serde(default)]
    state: Option<String>,
}

impl ServerErrorJson {
    fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

/// The server's error text: the `error` field of its JSON body, else the start of the body, else
/// the status reason.
fn error_text(status: reqwest::StatusCode, body: &[u8]) -> String {
    if let Some(e) = ServerErrorJson::parse(body) {
        return one_line(&e.error);
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no error text")
            .to_owned()
    } else {
        one_line(&text)
    }
}

/// What to do about a failed TLS handshake, from rustls' words for it.
fn tls_hint(detail: &str) -> &'static str {
    if detail.contains("UnknownIssuer") || detail.contains("invalid peer certificate") {
        " (the server's certificate is not signed by a trusted CA: pass its CA with --ca-cert FILE \
         or PEP_CA_CERT)"
    } else if detail.contains("CertificateRequired") || detail.contains("BadCertificate") {
        " (the server wants a client certificate it trusts: --client-cert FILE --client-key FILE)"
    } else {
        ""
    }
}

/// What to do about a 401: where pep-cli takes the token from.
fn auth_hint(token_sent: bool) -> &'static str {
    if token_sent {
        " (the server refused the API token: check PEP_API_TOKEN or the --token-file PATH)"
    } else {
        " (no API token was sent: set PEP_API_TOKEN or pass --token-file PATH)"
    }
}

/// `^A-[A-Za-z0-9:]{95}$`, the enrollment ID pattern of the cloud's bulk upload.
pub fn is_enrollment_id(s: &str) -> bool {
    s.len() == 97
        && s.starts_with("A-")
        && s[2..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b':')
}

/// Checks an identity body: a JSON object for `serial` with a valid `enrollmentID`.
/// Returns the enrollment ID.
pub fn check_identity(body: &[u8], serial: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the identity is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "the identity is not a JSON object".to_owned())?;
    match obj.get("serialNumber").and_then(|s| s.as_str()) {
        Some(s) if s == serial => {}
        Some(other) => {
            return Err(format!(
                "the identity is for serial {:?}, not {serial:?}",
                one_line(other)
            ));
        }
        None => return Err("the identity has no serialNumber".to_owned()),
    }
    let eid = obj
        .get("enrollmentID")
        .and_then(|s| s.as_str())
        .ok_or_else(|| "the identity has no enrollmentID".to_owned())?;
    if !is_enrollment_id(eid) {
        return Err(format!(
            "enrollmentID {:?} is not an enrollment ID",
            one_line(eid)
        ));
    }
    Ok(eid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EID: &str = "A-35:E7:72:8A:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:95:C5";

    #[test]
    fn enrollment_id_pattern() {
        assert_eq!(EID.len(), 97);
        assert!(is_enrollment_id(EID));
        assert!(!is_enrollment_id(&EID[..96]));
        assert!(!is_enrollment_id(&EID.replace("A-", "B-")));
        assert!(!is_enrollment_id(&EID.replace(":95:", ";95:")));
    }

    #[test]
    fn identity_body_is_checked() {
        let ok = format!(r#"{{"serialNumber":"GW-1","enrollmentID":"{EID}"}}"#);
        assert_eq!(check_identity(ok.as_bytes(), "GW-1").unwrap(), EID);
        assert!(
            check_identity(ok.as_bytes(), "GW-2")
                .unwrap_err()
                .contains("GW-2")
        );
        assert!(check_identity(br#"{"error":"boom"}"#, "GW-1").is_err());
        assert!(
            check_identity(b"<html>", "GW-1")
                .unwrap_err()
                .contains("not JSON")
        );
        let bad = r#"{"serialNumber":"GW-1","enrollmentID":"A-12"}"#;
        assert!(
            check_identity(bad.as_bytes(), "GW-1")
                .unwrap_err()
                .contains("A-12")
        );
    }

    #[test]
    fn error_text_prefers_the_json_error_field() {
        let s = reqwest::StatusCode::CONFLICT;
        assert_eq!(
            error_text(s, br#"{"error":"serial GW-1\nexists"}"#),
            "serial GW-1 exists"
        );
        assert_eq!(error_text(s, b"plain text"), "plain text");
        assert_eq!(error_text(s, b""), "Conflict");
    }

    #[test]
    fn traces_hide_the_verification_key() {
        let url =
            Url::parse("http://h:1/v3/identity?serialNumber=a&verificationKey=secret%2F1&ip=x")
                .unwrap();
        let shown = redact(&url);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("serialNumber=a") && shown.contains("ip=x"),
            "{shown}"
        );
    }

    #[test]
    fn base_url_keeps_a_path_prefix() {
        let api = PepApi::new("http://h:1/pep", None, Duration::from_secs(5)).unwrap();
        assert_eq!(
            api.endpoint("v3/identity").unwrap().as_str(),
            "http://h:1/pep/v3/identity"
        );
        let api = PepApi::new("http://h:1/", None, Duration::from_secs(5)).unwrap();
        assert_eq!(
            api.endpoint("v3/identity").unwrap().as_str(),
            "http://h:1/v3/identity"
        );
        let api = PepApi::new("http://h:1/pep/", None, Duration::from_secs(5)).unwrap();
        assert_eq!(
            api.resolve("/v3/enrollment-ids?limit=2&last=9")
                .unwrap()
                .as_str(),
            "http://h:1/pep/v3/enrollment-ids?limit=2&last=9"
        );
        assert_eq!(
            api.resolve("http://o:2/x").unwrap().as_str(),
            "http://o:2/x"
        );
        assert!(PepApi::new("localhost:5151", None, Duration::from_secs(5)).is_err());
        assert!(PepApi::new("ftp://h", None, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn ca_cert_must_be_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ca/CA_cert.pem");
        let t = Duration::from_secs(5);
        let with = |ca_certs: Vec<PathBuf>| TlsOptions {
            ca_certs,
            ..TlsOptions::default()
        };
        assert!(PepApi::with_tls("https://h:1", None, t, &with(vec![ca.clone()])).is_ok());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err =
            PepApi::with_tls("https://h:1", None, t, &with(vec![ca.clone(), junk])).unwrap_err();
        assert!(err.to_string().contains("junk.pem"), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
        let missing = dir.path().join("missing.pem");
        let err = PepApi::with_tls("https://h:1", None, t, &with(vec![missing])).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn tls_options_are_checked_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ca/CA_cert.pem");
        let t = Duration::from_secs(5);
        let fails = |tls: TlsOptions| {
            let err = PepApi::with_tls("https://h:1", None, t, &tls).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit::USAGE, "{err}");
            err.to_string()
        };
        let pinned = TlsOptions {
            ca_cert_only: true,
            ..TlsOptions::default()
        };
        assert!(fails(pinned).contains("--ca-cert FILE"));
        let cert_only = TlsOptions {
            client_cert: Some(ca.clone()),
            ..TlsOptions::default()
        };
        assert!(fails(cert_only).contains("--client-key FILE is missing"));
        let key_only = TlsOptions {
            client_key: Some(ca.clone()),
            ..TlsOptions::default()
        };
        assert!(fails(key_only).contains("--client-cert FILE is missing"));
        // A "key" file holding no key is named; its contents never are.
        let key = dir.path().join("station.key");
        std::fs::write(&key, "secret-looking junk").unwrap();
        let bad_key = TlsOptions {
            client_cert: Some(ca.clone()),
            client_key: Some(key),
            ..TlsOptions::default()
        };
        let msg = fails(bad_key);
        assert!(
            msg.contains("station.key") && !msg.contains("secret-looking"),
            "{msg}"
        );
        let junk_cert = dir.path().join("station.pem");
        std::fs::write(&junk_cert, "junk").unwrap();
        let bad_cert = TlsOptions {
            client_cert: Some(junk_cert),
            client_key: Some(ca),
            ..TlsOptions::default()
        };
        assert!(fails(bad_cert).contains("--client-cert"));
    }

    #[test]
    fn request_keys_are_random_hex_and_sent_as_request_id() {
        let a = RequestKey::random().unwrap();
        let b = RequestKey::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32, "128 bits");
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            a.as_str().parse::<RequestKey>().unwrap(),
            a,
            "the server's rule"
        );
        let mut req = IdentityRequest {
            serial_number: "GW-1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            port: 1,
            api_address: None,
            gateway_services_address: None,
            hardware_version: None,
            radio_config: None,
            led_config: None,
            category: None,
            verification_key: None,
            request_id: None,
        };
        assert!(!req.query_pairs().iter().any(|(k, _)| *k == "requestId"));
        req.request_id = Some(a.clone());
        assert!(
            req.query_pairs()
                .contains(&("requestId", a.as_str().to_owned()))
        );
        assert!("1234567".parse::<RequestKey>().is_err());
        assert!("12345678".parse::<RequestKey>().is_ok());
        assert!("1234 5678".parse::<RequestKey>().is_err());
        assert!("1234\t5678".parse::<RequestKey>().is_err());
        assert!("k".repeat(129).parse::<RequestKey>().is_err());
    }

    /// Serves one connection on 127.0.0.1: reads the request head, then `answer` (or closes).
    fn one_shot_server(answer: Vec<u8>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            conn.write_all(&answer).unwrap();
        });
        url
    }

    /// A whole HTTP/1.1 answer.
    fn http(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn ask(url: &str) -> CliError {
        let api = PepApi::new(url, None, Duration::from_secs(20)).unwrap();
        api.enrollment_id("GW-1").await.unwrap_err()
    }

    #[tokio::test]
    async fn failures_say_whether_the_answer_may_have_been_lost() {
        // Closed after reading the request: the answer is lost.
        let e = ask(&one_shot_server(Vec::new())).await;
        assert!(matches!(e, CliError::NoAnswer { .. }), "{e:?}");
        // Cut in the middle of the body.
        let e = ask(&one_shot_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nA-12".to_vec(),
        ))
        .await;
        assert!(matches!(e, CliError::NoAnswer { .. }), "{e:?}");
        // A proxy's 502 page.
        let e = ask(&one_shot_server(http("502 Bad Gateway", "<html></html>"))).await;
        assert!(matches!(e, CliError::Proxy { status: 502, .. }), "{e:?}");
        // The pep server's own 504, with its JSON body, and a 409 with its state.
        let e = ask(&one_shot_server(http(
            "504 Gateway Timeout",
            r#"{"error":"FCC timeout","status":504}"#,
        )))
        .await;
        assert!(matches!(e, CliError::Server { status: 504, .. }), "{e:?}");
        let e = ask(&one_shot_server(http(
            "409 Conflict",
            r#"{"error":"resolve it","status":409,"state":"in_doubt"}"#,
        )))
        .await;
        match e {
            CliError::Server {
                status: 409,
                state: Some(state),
                message,
                ..
            } => assert_eq!(
                (state.as_str(), message.as_str()),
                ("in_doubt", "resolve it")
            ),
            other => panic!("{other:?}"),
        }
        // Nobody listens: the request never left.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = ask(&format!("http://127.0.0.1:{port}")).await;
        assert!(matches!(e, CliError::Unreachable { .. }), "{e:?}");
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new(" s3cret\n").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(Token::new("  ").is_none());
    }

    #[test]
    fn order_parses_case_insensitively() {
        assert_eq!("asc".parse::<Order>(), Ok(Order::Asc));
        assert_eq!("DESC".parse::<Order>(), Ok(Order::Desc));
        assert!("up".parse::<Order>().is_err());
    }
}
