//! The HTTP API of the daemon (axum on hyper).
//!
//! Handlers only translate: query/JSON → [`ProvisionRequest`](crate::provision::ProvisionRequest),
//! [`ProvisionError`](crate::provision::ProvisionError) → status + JSON, store records → HAL JSON /
//! CSV. Every route is declared once in [`ROUTES`]; the router is built from that table, so the
//! OpenAPI test can check that the document ([`openapi`], generated from the handlers) describes
//! exactly the routes that exist.
//!
//! Layers, outermost first: tracing span per request → query-string limit (414) → body limit (413)
//! → per-request deadline (504) → per-route authentication (401/403) → handler.

mod auth;
mod backoff;
mod body;
mod claims;
mod error;
pub mod events;
pub mod floor;
mod hooks;
mod identity;
mod lifecycle;
pub mod limits;
pub mod openapi;
mod ops;
pub mod orders;
mod query;
mod read;
mod resolve;
mod sessions;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use auth::{Auth, Principal, Role, Station, Token};
pub use error::ApiError;
pub use identity::parse_identity_query;
pub use limits::ServeOptions;
pub use tls::{ServerTls, TlsError};

use crate::metrics::Metrics;
use crate::provision::Provisioner;

/// Largest accepted request body (larger → 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted query string (longer → 414).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed to produce the response head. Must exceed the sum of the FCC timeouts so an
    /// identity request ends with the gateway's real outcome, not with this deadline.
    pub request_deadline: Duration,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The provisioning core (and, through it, the store).
    pub provisioner: Arc<Provisioner>,
    /// The authentication policy.
    pub auth: Arc<Auth>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Request limits.
    pub limits: Limits,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication (health check, API documentation).
    Open,
    /// A bearer token with this role.
    Needs(Role),
    /// The factory-floor page: the `read` role by bearer token or session cookie, checked by the
    /// handler, which answers 401 with a login form (HTML, no data) instead of JSON.
    Page,
}

/// The handler behind a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v3/identity`.
    IdentityGet,
    /// `POST /v3/identities`.
    IdentitiesPost,
    /// `GET /v3/enrollment-id`.
    EnrollmentId,
    /// `GET /v3/verification-key`.
    VerificationKey,
    /// `GET /v3/enrollment-ids`.
    EnrollmentIds,
    /// `GET /v3/enrollment-ids.csv`.
    EnrollmentIdsCsv,
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /docs/openapi.json`.
    OpenApiJson,
    /// `GET /docs/openapi.yaml`.
    OpenApiYaml,
    /// `GET /docs/`.
    DocsPage,
    /// `GET /docs/{file}`: the documentation page's scripts and stylesheets.
    DocsAsset,
    /// `GET /docs` (redirects to `/docs/`).
    DocsRedirect,
    /// `GET /floor/`: the factory-floor page.
    FloorPage,
    /// `GET /` and `GET /floor` (redirect to `/floor/`).
    FloorRedirect,
    /// `POST /floor/login`.
    FloorLogin,
    /// `POST /floor/logout`.
    FloorLogout,
    /// `GET /v3/events` (Server-Sent Events).
    Events,
    /// `GET /v3/audit`.
    Audit,
    /// `GET /v3/inventory.json`.
    Inventory,
    /// `GET /v3/identities?state=`.
    IdentitiesList,
    /// `POST /v3/identities/{serial}/resolve`.
    Resolve,
    /// `GET /v3/hooks/deliveries?state=`.
    HookDeliveries,
    /// `GET /v3/claims?state=`.
    Claims,
    /// `POST /v3/orders`.
    OrderCreate,
    /// `GET /v3/orders`.
    OrderList,
    /// `GET /v3/orders/{orderId}`.
    Order,
    /// `POST /v3/orders/{orderId}/serials` (text/csv).
    OrderSerials,
    /// `POST /v3/orders/{orderId}/close`.
    OrderClose,
    /// `POST /v3/identities/{serial}/revoke`.
    Revoke,
    /// `GET /v3/identities/{serial}`.
    IdentityHistory,
    /// `GET /v3/crl`.
    Crl,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What answers it.
    pub endpoint: Endpoint,
    /// Whether the route also answers, identically, at its path without the `/v3` prefix.
    pub unversioned_alias: bool,
}

impl RouteSpec {
    /// The path without `/v3` at which this route also answers, if it does.
    pub fn alias(&self) -> Option<&'static str> {
        self.unversioned_alias
            .then(|| self.path.strip_prefix("/v3"))
            .flatten()
    }

    /// Every path this route answers at: its own, then its alias.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.path).chain(self.alias())
    }
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    endpoint: Endpoint,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        endpoint,
        unversioned_alias: false,
    }
}

/// A route of the old API: declared at `/v3/...`, and also answering, identically, at the same
/// path without `/v3` (the old server did the same and scripts use both).
const fn api(spec: RouteSpec) -> RouteSpec {
    RouteSpec {
        unversioned_alias: true,
        ..spec
    }
}

const PROVISION: Access = Access::Needs(Role::Provision);
const READ: Access = Access::Needs(Role::Read);
const PLAN: Access = Access::Needs(Role::Plan);
const REVOKE: Access = Access::Needs(Role::Revoke);

/// Every route the server answers, each once; `api(…)` routes also answer without `/v3`
/// ([`RouteSpec::paths`]).
pub const ROUTES: &[RouteSpec] = &[
    api(route(
        "GET",
        "/v3/identity",
        PROVISION,
        Endpoint::IdentityGet,
    )),
    api(route(
        "POST",
        "/v3/identities",
        PROVISION,
        Endpoint::IdentitiesPost,
    )),
    api(route(
        "GET",
        "/v3/enrollment-id",
        READ,
        Endpoint::EnrollmentId,
    )),
    api(route(
        "GET",
        "/v3/verification-key",
        READ,
        Endpoint::VerificationKey,
    )),
    api(route(
        "GET",
        "/v3/enrollment-ids",
        READ,
        Endpoint::EnrollmentIds,
    )),
    api(route(
        "GET",
        "/v3/enrollment-ids.csv",
        READ,
        Endpoint::EnrollmentIdsCsv,
    )),
    route("GET", "/healthz", Access::Open, Endpoint::Healthz),
    route("GET", "/metrics", READ, Endpoint::Metrics),
    route(
        "GET",
        "/docs/openapi.json",
        Access::Open,
        Endpoint::OpenApiJson,
    ),
    route(
        "GET",
        "/docs/openapi.yaml",
        Access::Open,
        Endpoint::OpenApiYaml,
    ),
    route("GET", "/docs/", Access::Open, Endpoint::DocsPage),
    route("GET", "/docs/{file}", Access::Open, Endpoint::DocsAsset),
    route("GET", "/docs", Access::Open, Endpoint::DocsRedirect),
    route("GET", "/", Access::Open, Endpoint::FloorRedirect),
    route("GET", "/floor", Access::Open, Endpoint::FloorRedirect),
    route("GET", "/floor/", Access::Page, Endpoint::FloorPage),
    route("POST", "/floor/login", Access::Open, Endpoint::FloorLogin),
    route("POST", "/floor/logout", Access::Open, Endpoint::FloorLogout),
    route("GET", "/v3/events", READ, Endpoint::Events),
    route("GET", "/v3/audit", READ, Endpoint::Audit),
    route("GET", "/v3/inventory.json", READ, Endpoint::Inventory),
    route("GET", "/v3/identities", READ, Endpoint::IdentitiesList),
    route(
        "POST",
        "/v3/identities/{serial}/resolve",
        PROVISION,
        Endpoint::Resolve,
    ),
    route(
        "GET",
        "/v3/hooks/deliveries",
        READ,
        Endpoint::HookDeliveries,
    ),
    route("GET", "/v3/claims", READ, Endpoint::Claims),
    route("POST", "/v3/orders", PLAN, Endpoint::OrderCreate),
    route("GET", "/v3/orders", READ, Endpoint::OrderList),
    route("GET", "/v3/orders/{orderId}", READ, Endpoint::Order),
    route(
        "POST",
        "/v3/orders/{orderId}/serials",
        PLAN,
        Endpoint::OrderSerials,
    ),
    route(
        "POST",
        "/v3/orders/{orderId}/close",
        PLAN,
        Endpoint::OrderClose,
    ),
    route(
        "POST",
        "/v3/identities/{serial}/revoke",
        REVOKE,
        Endpoint::Revoke,
    ),
    route(
        "GET",
        "/v3/identities/{serial}",
        READ,
        Endpoint::IdentityHistory,
    ),
    // Open: relying parties fetch the CRL from the certificates' distribution point.
    route("GET", "/v3/crl", Access::Open, Endpoint::Crl),
];

pub use openapi::{OPENAPI_JSON, OPENAPI_YAML};

fn method_router(spec: &RouteSpec) -> MethodRouter<AppState> {
    let method = match spec.method {
        "POST" => axum::routing::MethodFilter::POST,
        _ => axum::routing::MethodFilter::GET,
    };
    match spec.endpoint {
        Endpoint::IdentityGet => on(method, identity::get_identity),
        Endpoint::IdentitiesPost => on(method, identity::post_identities),
        Endpoint::EnrollmentId => on(method, read::enrollment_id),
        Endpoint::VerificationKey => on(method, read::verification_key),
        Endpoint::EnrollmentIds => on(method, read::enrollment_ids),
        Endpoint::EnrollmentIdsCsv => on(method, read::enrollment_ids_csv),
        Endpoint::Healthz => on(method, ops::healthz),
        Endpoint::Metrics => on(method, ops::metrics),
        Endpoint::OpenApiJson => on(method, ops::openapi_json),
        Endpoint::OpenApiYaml => on(method, ops::openapi_yaml),
        Endpoint::DocsPage => on(method, ops::docs_page),
        Endpoint::DocsAsset => on(method, ops::docs_asset),
        Endpoint::DocsRedirect => on(method, ops::docs_redirect),
        Endpoint::FloorPage => on(method, floor::page),
        Endpoint::FloorRedirect => on(method, floor::to_floor),
        Endpoint::FloorLogin => on(method, auth::login),
        Endpoint::FloorLogout => on(method, auth::logout),
        Endpoint::Events => on(method, events::events),
        Endpoint::Audit => on(method, read::audit),
        Endpoint::Inventory => on(method, read::inventory),
        Endpoint::IdentitiesList => on(method, resolve::identities),
        Endpoint::Resolve => on(method, resolve::resolve),
        Endpoint::HookDeliveries => on(method, hooks::deliveries),
        Endpoint::Claims => on(method, claims::claims),
        // Up to 10,000 serials in JSON: more than the API's 64 KiB.
        Endpoint::OrderCreate => on(method, orders::create).layer(
            axum::extract::DefaultBodyLimit::max(orders::MAX_ORDER_BODY_BYTES),
        ),
        Endpoint::OrderList => on(method, orders::list),
        Endpoint::Order => on(method, orders::get),
        // Streamed line by line (the handler bounds lines and serials, not bytes).
        Endpoint::OrderSerials => on(method, orders::upload),
        Endpoint::OrderClose => on(method, orders::close),
        Endpoint::Revoke => on(method, lifecycle::revoke),
        Endpoint::IdentityHistory => on(method, lifecycle::identity),
        Endpoint::Crl => on(method, lifecycle::crl),
    }
}

/// Builds the application: every route of [`ROUTES`] with its authentication, and the limits.
pub fn router(state: AppState) -> Router {
    let mut app: Router<AppState> = Router::new();
    for spec in ROUTES {
        let mut handler = method_router(spec);
        if let Access::Needs(role) = spec.access {
            let required = auth::RequireRole {
                auth: state.auth.clone(),
                role,
            };
            handler =
                handler.route_layer(middleware::from_fn_with_state(required, auth::require_role));
        }
        for path in spec.paths() {
            app = app.route(path, handler.clone());
        }
    }
    let deadline = state.limits.request_deadline;
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(deadline, enforce_deadline))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(limit_query))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    // The path only: query strings may carry a verification key.
                    let peer = request
                        .extensions()
                        .get::<axum::extract::ConnectInfo<SocketAddr>>()
                        .map_or_else(|| "-".to_owned(), |c| c.0.to_string());
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        peer = %peer,
                        status = tracing::field::Empty,
                        latency_ms = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16());
                    span.record("latency_ms", latency.as_millis() as u64);
                    if response.extensions().get::<OutcomeLogged>().is_some() {
                        tracing::debug!("answered");
                    } else {
                        tracing::info!("answered");
                    }
                })
                .on_failure(()),
        )
        .with_state(state)
}

/// Marks a response whose outcome the provisioning core has already logged at `info` or above
/// (deployed, failed, conflict, with serial and gateway): its request line is logged at `debug`,
/// so a provisioning costs one log line, not two.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutcomeLogged;

/// How long a client may take to send a complete request head, counted from the connection's
/// first byte wait (a new connection, or the end of the previous request on a kept-alive one).
/// Slower clients (slowloris) and connections left idle are closed: each holds a task and a file
/// descriptor, and without this bound enough of them would exhaust the server.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then finishes the requests in progress
/// (event streams are told to end, see [`events::Shutdown`]).
///
/// The accept loop is hyper's HTTP/1 server rather than `axum::serve`, because `axum::serve`
/// gives hyper no timer, which silently disables the header read timeout
/// ([`HEADER_READ_TIMEOUT`]): a client sending its head one byte at a time, or just connecting,
/// held its connection forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServeOptions::default()).await
}

/// [`serve`] with the connection bounds of `[http]` (see [`limits`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = app.layer(axum::Extension(events::Shutdown(stopped))).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(limits::BODY_READ_TIMEOUT),
    );
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning; the
                    // connections being served still finish and free theirs.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            limits::refuse_connection(stream, remote, options.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = options.tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let service = connection_service(app, remote, None);
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    // The handshake is bounded like a request head: a client that connects and
                    // stays silent must not hold its slot.
                    let stream = match tokio::time::timeout(
                        HEADER_READ_TIMEOUT,
                        tls.acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| tls::ClientCertificate::from_der(leaf).unwrap_or_default());
                    let service = connection_service(app, remote, Some(client));
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// The hyper service of one connection: the app, with what axum's `ConnectInfo` would hold and,
/// over TLS ([`tls::ServedOverTls`]), the verified client certificate if one was sent.
fn connection_service(
    app: Router,
    remote: SocketAddr,
    tls: Option<Option<tls::ClientCertificate>>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    use tower::ServiceExt;
    hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let extensions = request.extensions_mut();
        extensions.insert(axum::extract::ConnectInfo(remote));
        if let Some(client) = &tls {
            extensions.insert(tls::ServedOverTls);
            if let Some(client) = client {
                extensions.insert(client.clone());
            }
        }
        app.clone().oneshot(request.map(axum::body::Body::new))
    })
}

async fn limit_query(request: Request, next: Next) -> Response {
    let len = request.uri().query().map_or(0, str::len);
    if len > MAX_QUERY_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the query string is {len} bytes; at most {MAX_QUERY_BYTES} are accepted"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn enforce_deadline(
    State(deadline): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request did not complete within the server's deadline of {} s",
                deadline.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alias is its route's path without `/v3`, and only the old API's routes have one.
    #[test]
    fn aliases_are_the_old_api_paths_without_v3() {
        let mut aliases = Vec::new();
        for spec in ROUTES {
            match spec.alias() {
                Some(alias) => {
                    assert_eq!(format!("/v3{alias}"), spec.path);
                    aliases.push(alias);
                }
                None => assert!(!spec.unversioned_alias, "{} has no /v3 prefix", spec.path),
            }
        }
        assert_eq!(
            aliases,
            [
                "/identity",
                "/identities",
                "/enrollment-id",
                "/verification-key",
                "/enrollment-ids",
                "/enrollment-ids.csv"
            ]
        );
        let events = ROUTES.iter().find(|r| r.path == "/v3/events").unwrap();
        assert_eq!(events.paths().collect::<Vec<_>>(), ["/v3/events"]);
    }
}
