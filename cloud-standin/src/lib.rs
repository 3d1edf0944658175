//! A stand-in of the device-management cloud's enrollment API, for tests and bench scripts only.
//!
//! The real cloud is not reachable from the factory or from CI, so pep's claim sender is exercised
//! against this server on 127.0.0.1. It is written from the API facts in
//! `cloud-enrollment-api.md` (shared docs), not from pep's client:
//!
//! * `POST /v3/device-enrollments` (JSON `{"enrollment_identity": …}`) → `201` with an
//!   *EnrollmentIdentity* object; `400` for an ID that is not `^A-[A-Za-z0-9:]{95}$`, `409` for
//!   an ID claimed already; `GET /v3/device-enrollments?limit=&order=&after=` lists the claims,
//!   `GET`/`DELETE /v3/device-enrollments/{id}` read and free one.
//! * `POST /v3/device-enrollments-bulk-uploads` (`multipart/form-data`, file field
//!   `enrollment_identities`: a CSV of at most [`StandinOptions::max_upload_bytes`], 10 MB by
//!   default; header line, then one ID per line as the first value) → `201` with a bulk task;
//!   `GET /v3/device-enrollments-bulk-uploads/{id}` moves it `new` → `processing` → `completed`
//!   one poll at a time; its `errors_report_file` and `full_report_file` are CSV downloads (per
//!   line the ID and its outcome). `…-bulk-deletes` likewise frees the listed claims.
//! * Every call checks `Authorization: Bearer <key>` (`401` otherwise); errors are the JSON
//!   error object of the API.
//!
//! Fault switches ([`Standin::set_down`], [`Standin::set_slow`], [`Standin::fail_next`],
//! [`Standin::rate_limit_next`]) and counters ([`Standin::claim_counts`],
//! [`Standin::requests`]) let tests assert exactly-once delivery and honoured `Retry-After`.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

mod multipart;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

/// The cloud's own limit on a bulk-upload file.
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

/// How the stand-in is set up.
#[derive(Debug, Clone)]
pub struct StandinOptions {
    /// The API key every call must carry as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// The largest bulk CSV accepted (bytes of the file field); larger → `413`.
    pub max_upload_bytes: usize,
    /// The account every claim is made for.
    pub account_id: String,
    /// Keep connections alive between requests, as the real cloud does (the bench sets it: a new
    /// TCP connection per claim would be the stand-in's cost, not pep's). Off by default: every
    /// answer then closes its connection, so [`Standin::set_down`] reaches a client at once.
    pub keep_alive: bool,
}

impl Default for StandinOptions {
    fn default() -> Self {
        StandinOptions {
            api_key: "ak_standin_0123456789abcdef".to_owned(),
            max_upload_bytes: MAX_UPLOAD_BYTES,
            account_id: "0171a1b2c3d4e5f6a7b8c9d0e1f20000".to_owned(),
            keep_alive: false,
        }
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// When it arrived.
    pub at: SystemTime,
    /// `POST`, `GET`, `DELETE`.
    pub method: String,
    /// The path (no query).
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The `Retry-After` answered with a `429`, seconds.
    pub retry_after_s: Option<u64>,
}

/// A bulk file as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Bytes of the CSV file field.
    pub bytes: usize,
    /// Enrollment IDs it listed.
    pub ids: usize,
}

#[derive(Debug, Clone)]
struct Enrollment {
    id: String,
    identity: String,
    created_at: String,
}

#[derive(Debug, Clone)]
struct BulkTask {
    id: String,
    kind: BulkKind,
    polls: u32,
    total: usize,
    /// (enrollment identity, outcome): `None` = done, `Some(message)` = error.
    outcomes: Vec<(String, Option<String>)>,
    created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkKind {
    Upload,
    Delete,
}

#[derive(Debug, Default)]
struct Inner {
    /// Current claims by their own id, and the id of each claimed identity.
    enrollments: BTreeMap<String, Enrollment>,
    by_identity: HashMap<String, String>,
    /// Every accepted claim of each identity, ever (exactly-once: all 1).
    claim_counts: HashMap<String, u32>,
    /// Every freed claim of each identity, ever.
    delete_counts: HashMap<String, u32>,
    tasks: HashMap<String, BulkTask>,
    uploads: Vec<Upload>,
    requests: Vec<LoggedRequest>,
    next_id: u64,
    /// The next this many requests answer `503`.
    fail_next: u32,
    /// The next this many requests answer `429` with this `Retry-After`.
    rate_limit_next: u32,
    retry_after_s: u64,
    slow: Option<Duration>,
}

#[derive(Debug)]
struct Shared {
    options: StandinOptions,
    down: AtomicBool,
    inner: Mutex<Inner>,
    base: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread poisons nothing the stand-in relies on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running stand-in. Dropping it stops the server.
#[derive(Debug)]
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Standin {
    /// Starts the stand-in on an OS-chosen port of 127.0.0.1.
    pub async fn spawn(options: StandinOptions) -> std::io::Result<Standin> {
        Standin::spawn_on(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Starts the stand-in on `addr`.
    pub async fn spawn_on(addr: SocketAddr, options: StandinOptions) -> std::io::Result<Standin> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            down: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            base: format!("http://{addr}"),
        });
        let app = router(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = DownSwitch {
            listener,
            shared: Arc::clone(&shared),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Standin {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`, the base URL (`api_url`) to give pep.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Down: every new connection is closed at once, without an answer (a network error for the
    /// client). Unless `keep_alive` is set, every answer closes its connection, so no kept-alive
    /// connection outlives it.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Delays every answer by `delay` (`None`: answer at once).
    pub fn set_slow(&self, delay: Option<Duration>) {
        self.shared.lock().slow = delay;
    }

    /// The next `n` requests answer `503 Service Unavailable`.
    pub fn fail_next(&self, n: u32) {
        self.shared.lock().fail_next = n;
    }

    /// The next `n` requests answer `429 Too Many Requests` with `Retry-After: retry_after_s`.
    pub fn rate_limit_next(&self, n: u32, retry_after_s: u64) {
        let mut inner = self.shared.lock();
        inner.rate_limit_next = n;
        inner.retry_after_s = retry_after_s;
    }

    /// Claims `identity` as if another party had (a later claim of it is `409`); not counted in
    /// [`Standin::claim_counts`].
    pub fn preclaim(&self, identity: &str) {
        insert_enrollment(&mut self.shared.lock(), identity);
    }

    /// Accepted claims per enrollment identity, ever (single and bulk). Exactly-once delivery:
    /// every count is 1.
    pub fn claim_counts(&self) -> HashMap<String, u32> {
        self.shared.lock().claim_counts.clone()
    }

    /// Freed claims per enrollment identity, ever (single and bulk deletes).
    pub fn delete_counts(&self) -> HashMap<String, u32> {
        self.shared.lock().delete_counts.clone()
    }

    /// The identities claimed now.
    pub fn claimed(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.lock().by_identity.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every bulk file accepted so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.lock().uploads.clone()
    }
}

/// The listener of [`Standin::set_down`]: while down, accepted connections are dropped unanswered.
struct DownSwitch {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for DownSwitch {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((io, addr)) => {
                    if self.shared.down.load(Ordering::SeqCst) {
                        drop(io);
                        continue;
                    }
                    return (io, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let single = Router::new()
        .route(
            "/v3/device-enrollments",
            post(claim_one).get(list_enrollments),
        )
        .route(
            "/v3/device-enrollments/{id}",
            get(get_enrollment).delete(delete_enrollment),
        );
    // The bulk uploads and the bulk deletes: the same two routes, one kind each.
    [(BulkKind::Upload, "uploads"), (BulkKind::Delete, "deletes")]
        .into_iter()
        .fold(single, |router, (kind, path)| {
            router
                .route(
                    &format!("/v3/device-enrollments-bulk-{path}"),
                    post(move |s: State<Arc<Shared>>, h: HeaderMap, b: Bytes| bulk(s, h, b, kind)),
                )
                .route(
                    &format!("/v3/device-enrollments-bulk-{path}/{{id}}"),
                    get(move |s: State<Arc<Shared>>, p: Path<String>| poll(s, p, kind)),
                )
        })
        .route("/downloads/{task}/{report}", get(report))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            gatekeeper,
        ))
        // Sizes are checked by the handlers (413 with the API's error object).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared)
}

/// The API's error object.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "code": status.as_u16(),
        "type": kind,
        "message": message.into(),
        "object": "error",
        "request_id": format!("{:016x}", rand_id()),
    });
    (status, axum::Json(body)).into_response()
}

fn rand_id() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Before every handler: the request log, the fault switches, the bearer key, `Connection: close`
/// (unless `keep_alive`).
async fn gatekeeper(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let at = SystemTime::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (fault, slow) = {
        let mut inner = shared.lock();
        let fault = if inner.rate_limit_next > 0 {
            inner.rate_limit_next -= 1;
            Some((StatusCode::TOO_MANY_REQUESTS, Some(inner.retry_after_s)))
        } else if inner.fail_next > 0 {
            inner.fail_next -= 1;
            Some((StatusCode::SERVICE_UNAVAILABLE, None))
        } else {
            None
        };
        (fault, inner.slow)
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key == shared.options.api_key);
    let mut response = match fault {
        Some((status, Some(retry_after))) => {
            let mut r = error(status, "too_many_requests", "rate limited: retry later");
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Some((status, None)) => error(status, "service_unavailable", "try again later"),
        None if !authorized => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is missing or not valid",
        ),
        None => next.run(request).await,
    };
    if !shared.options.keep_alive {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    shared.lock().requests.push(LoggedRequest {
        at,
        method,
        path,
        status: response.status().as_u16(),
        retry_after_s: fault.and_then(|(_, r)| r),
    });
    response
}

/// The cloud's pattern of an enrollment identity.
fn valid_identity(id: &str) -> bool {
    id.strip_prefix("A-").is_some_and(|rest| {
        rest.len() == 95 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':')
    })
}

fn insert_enrollment(inner: &mut Inner, identity: &str) -> Enrollment {
    inner.next_id += 1;
    let enrollment = Enrollment {
        id: format!("0171{:028x}", inner.next_id),
        identity: identity.to_owned(),
        created_at: now_rfc3339(),
    };
    inner
        .by_identity
        .insert(identity.to_owned(), enrollment.id.clone());
    inner
        .enrollments
        .insert(enrollment.id.clone(), enrollment.clone());
    enrollment
}

fn enrollment_json(shared: &Shared, e: &Enrollment) -> Value {
    json!({
        "id": e.id,
        "enrollment_identity": e.identity,
        "account_id": shared.options.account_id,
        "created_at": e.created_at,
        "claimed_at": e.created_at,
        "expires_at": null,
        "enrolled_device_id": null,
        "object": "enrollment",
    })
}

/// The outcome of claiming one identity: the new enrollment, or the error (status, message).
fn claim(inner: &mut Inner, identity: &str) -> Result<Enrollment, (StatusCode, String)> {
    if !valid_identity(identity) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("enrollment_identity `{identity}` does not match ^A-[A-Za-z0-9:]{{95}}$"),
        ));
    }
    if inner.by_identity.contains_key(identity) {
        return Err((
            StatusCode::CONFLICT,
            "the enrollment identity is already claimed".to_owned(),
        ));
    }
    let e = insert_enrollment(inner, identity);
    *inner.claim_counts.entry(identity.to_owned()).or_default() += 1;
    Ok(e)
}

#[derive(Deserialize)]
struct ClaimBody {
    enrollment_identity: String,
}

async fn claim_one(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "Content-Type must be application/json",
        );
    }
    let body: ClaimBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "validation_error", e.to_string()),
    };
    let mut inner = shared.lock();
    match claim(&mut inner, &body.enrollment_identity) {
        Ok(e) => (
            StatusCode::CREATED,
            axum::Json(enrollment_json(&shared, &e)),
        )
            .into_response(),
        Err((status, message)) => {
            let kind = if status == StatusCode::CONFLICT {
                "conflict"
            } else {
                "validation_error"
            };
            error(status, kind, message)
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    order: Option<String>,
    after: Option<String>,
}

async fn list_enrollments(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(2, 1000);
    let desc = q
        .order
        .as_deref()
        .is_some_and(|o| o.eq_ignore_ascii_case("DESC"));
    let inner = shared.lock();
    let mut all: Vec<&Enrollment> = inner.enrollments.values().collect();
    if desc {
        all.reverse();
    }
    let start = match &q.after {
        Some(after) => all.iter().position(|e| &e.id == after).map_or(0, |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|e| enrollment_json(&shared, e))
        .collect();
    let has_more = start + page.len() < all.len();
    axum::Json(json!({
        "object": "list",
        "limit": limit,
        "order": if desc { "DESC" } else { "ASC" },
        "after": q.after,
        "has_more": has_more,
        "total_count": all.len(),
        "data": page,
    }))
    .into_response()
}

async fn get_enrollment(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let inner = shared.lock();
    match inner.enrollments.get(&id) {
        Some(e) => axum::Json(enrollment_json(&shared, e)).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such enrollment"),
    }
}

fn free(inner: &mut Inner, id: &str) -> Option<Enrollment> {
    let e = inner.enrollments.remove(id)?;
    inner.by_identity.remove(&e.identity);
    *inner.delete_counts.entry(e.identity.clone()).or_default() += 1;
    Some(e)
}

async fn delete_enrollment(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match free(&mut shared.lock(), &id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such enrollment"),
    }
}

/// The IDs of a bulk CSV: the header line is skipped (not validated), then the first value of each
/// non-empty line (quotes allowed, everything after the first comma ignored).
fn csv_ids(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line = line.trim_start();
            if let Some(quoted) = line.strip_prefix('"') {
                // "" inside quotes is a quote.
                let mut value = String::new();
                let mut chars = quoted.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            value.push('"');
                            chars.next();
                        } else {
                            break;
                        }
                    } else {
                        value.push(c);
                    }
                }
                value
            } else {
                line.split(',').next().unwrap_or_default().trim().to_owned()
            }
        })
        .collect()
}

async fn bulk(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
    kind: BulkKind,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let file = match multipart::file_field(content_type, &body, "enrollment_identities") {
        Ok(file) => file,
        Err(message) => return error(StatusCode::BAD_REQUEST, "validation_error", message),
    };
    if file.len() > shared.options.max_upload_bytes {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the CSV is {} bytes; at most {} are accepted",
                file.len(),
                shared.options.max_upload_bytes
            ),
        );
    }
    let Ok(text) = std::str::from_utf8(file) else {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "the CSV is not UTF-8",
        );
    };
    let ids = csv_ids(text);
    let mut inner = shared.lock();
    let outcomes: Vec<(String, Option<String>)> = ids
        .iter()
        .map(|id| {
            let outcome = match kind {
                BulkKind::Upload => claim(&mut inner, id)
                    .map(drop)
                    .map_err(|(status, message)| format!("{} {message}", status.as_u16())),
                BulkKind::Delete => match inner.by_identity.get(id).cloned() {
                    Some(eid) => {
                        free(&mut inner, &eid);
                        Ok(())
                    }
                    None => Err("404 no such enrollment".to_owned()),
                },
            };
            (id.clone(), outcome.err())
        })
        .collect();
    if kind == BulkKind::Upload {
        inner.uploads.push(Upload {
            bytes: file.len(),
            ids: ids.len(),
        });
    }
    inner.next_id += 1;
    let task = BulkTask {
        id: format!("0172{:028x}", inner.next_id),
        kind,
        polls: 0,
        total: ids.len(),
        outcomes,
        created_at: now_rfc3339(),
    };
    let answer = task_json(&shared, &task);
    inner.tasks.insert(task.id.clone(), task);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

fn task_json(shared: &Shared, t: &BulkTask) -> Value {
    // The work is done at upload; the task shows it one poll at a time, as the cloud's queue does.
    let (status, processed) = match t.polls {
        0 => ("new", 0),
        1 => ("processing", t.total / 2),
        _ => ("completed", t.total),
    };
    let errors = if status == "completed" {
        t.outcomes.iter().filter(|(_, e)| e.is_some()).count()
    } else {
        0
    };
    let report = |name: &str| {
        (status == "completed").then(|| format!("{}/downloads/{}/{name}", shared.base, t.id))
    };
    json!({
        "id": t.id,
        "object": match t.kind {
            BulkKind::Upload => "enrollment-identity-bulk-uploads",
            BulkKind::Delete => "enrollment-identity-bulk-deletes",
        },
        "status": status,
        "total_count": t.total,
        "processed_count": processed,
        "errors_count": errors,
        "full_report_file": report("full_report.csv"),
        "errors_report_file": report("errors_report.csv"),
        "created_at": t.created_at,
        "completed_at": (status == "completed").then(now_rfc3339),
        "account_id": shared.options.account_id,
    })
}

async fn poll(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    kind: BulkKind,
) -> Response {
    let mut inner = shared.lock();
    match inner.tasks.get_mut(&id).filter(|t| t.kind == kind) {
        Some(task) => {
            task.polls = task.polls.saturating_add(1);
            let task = task.clone();
            axum::Json(task_json(&shared, &task)).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "no such bulk task"),
    }
}

/// The CSV reports of a completed task: `errors_report.csv` (failed lines only) and
/// `full_report.csv` (every line).
async fn report(
    State(shared): State<Arc<Shared>>,
    Path((task, name)): Path<(String, String)>,
) -> Response {
    let inner = shared.lock();
    let Some(task) = inner.tasks.get(&task).filter(|t| t.polls >= 2) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such report");
    };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut csv = String::from("enrollment_identity,status,message\r\n");
    for (id, outcome) in &task.outcomes {
        match (name.as_str(), outcome) {
            (_, Some(message)) => {
                csv.push_str(&format!("{},error,{}\r\n", quote(id), quote(message)));
            }
            ("full_report.csv", None) => csv.push_str(&format!("{},success,\r\n", quote(id))),
            ("errors_report.csv", None) => {}
            _ => return error(StatusCode::NOT_FOUND, "not_found", "no such report"),
        }
    }
    ([(header::CONTENT_TYPE, "text/csv")], csv).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_first_values() {
        let text = "enrollment_identity,serial\r\nA-1,x\r\n\"A-2\",y\r\n\r\n\"A-\"\"3\"\n  A-4  \n";
        assert_eq!(csv_ids(text), ["A-1", "A-2", "A-\"3", "A-4"]);
    }

    #[test]
    fn identity_pattern() {
        let good = format!("A-{}", ["AB"; 32].join(":"));
        assert!(valid_identity(&good));
        assert!(!valid_identity(&good[..90]));
        assert!(!valid_identity(&good.replace("A-", "B-")));
    }
}
