//! Bearer-token authentication with three roles (`provision`, `read`, `plan`).
//!
//! Tokens come from the config (`Authorization: Bearer <token>` only; never a query parameter, which
//! would end up in access logs and shell histories). The presented token is compared with *every*
//! configured token in constant time, so neither the content nor the position of a match leaks
//! through timing. Tokens are never logged: the log names the token's configured `name` instead.
//!
//! The factory-floor page (a browser cannot send a bearer header on navigation) logs in once with a
//! `read` token and then carries a session cookie ([`SESSION_COOKIE`], HttpOnly, SameSite=Strict):
//! its value is a random session ID held server-side ([`super::sessions`]) with an absolute expiry
//! of 12 hours, never the token itself. A session grants the `read` role only, never `provision`,
//! is replaced at each login, revoked at logout, and ends when the server restarts. The login form
//! posts to [`login`]; [`logout`] ends the session.
//!
//! Both posts are same-origin only (CSRF, §4): a cross-origin `Origin` (or `Sec-Fetch-Site`) is
//! refused, the login needs the one-use token of a form this server rendered together with the
//! pre-session cookie [`LOGIN_COOKIE`] set with that form, and the logout needs the token of the
//! session's page. A refusal is 403 and changes nothing.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::AppState;
use super::backoff::BACKOFF;
use super::error::ApiError;
use super::floor;
use super::sessions::{LOGIN_FORM_LIFETIME, LOGIN_FORMS, SESSION_LIFETIME, SESSIONS, session_csrf};
use super::tls::{ClientCertificate, ServedOverTls};

pub use crate::config::Role;

/// The name of a role as written in the config and in error messages.
pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Provision => "provision",
        Role::Read => "read",
        Role::Plan => "plan",
        Role::Revoke => "revoke",
    }
}

/// One configured token.
pub struct Token {
    name: String,
    /// SHA-256 of the secret: the server never needs the token itself (`token_sha256` configs
    /// do not even have it), and a presented token is hashed once and compared in constant time.
    digest: Zeroizing<[u8; 32]>,
    provision: bool,
    read: bool,
    plan: bool,
    revoke: bool,
    scope: SerialScope,
}

/// The serials a caller may provision: the `serial_prefixes` of its token (issue #14 §3). Empty
/// means every serial. Reading is not scoped (it stays role-based).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SerialScope(std::sync::Arc<[String]>);

impl SerialScope {
    /// The scope of these prefixes (none: every serial).
    pub fn new(prefixes: Vec<String>) -> SerialScope {
        SerialScope(prefixes.into())
    }

    /// True when `serial` starts with one of the prefixes, or there is none.
    pub fn allows(&self, serial: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| serial.starts_with(p.as_str()))
    }

    /// The prefixes, for messages.
    pub fn prefixes(&self) -> &[String] {
        &self.0
    }
}

impl Token {
    /// A token named `name` (for logs) with secret `secret` and the given roles.
    pub fn new(name: impl Into<String>, secret: &str, roles: &[Role]) -> Token {
        Token::from_digest(
            name,
            crate::config::security::token_digest(secret.as_bytes()),
            roles,
        )
    }

    /// A token given by the SHA-256 of its secret (`token_sha256`).
    pub fn from_digest(name: impl Into<String>, digest: [u8; 32], roles: &[Role]) -> Token {
        Token {
            name: name.into(),
            digest: Zeroizing::new(digest),
            provision: roles.contains(&Role::Provision),
            read: roles.contains(&Role::Read),
            plan: roles.contains(&Role::Plan),
            revoke: roles.contains(&Role::Revoke),
            scope: SerialScope::default(),
        }
    }

    /// This token limited to the serials starting with one of `prefixes` (none: every serial).
    pub fn with_serial_prefixes(mut self, prefixes: Vec<String>) -> Token {
        self.scope = SerialScope::new(prefixes);
        self
    }

    fn has(&self, role: Role) -> bool {
        match role {
            Role::Provision => self.provision,
            Role::Read => self.read,
            Role::Plan => self.plan,
            Role::Revoke => self.revoke,
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("provision", &self.provision)
            .field("read", &self.read)
            .field("plan", &self.plan)
            .field("revoke", &self.revoke)
            .field("scope", &self.scope)
            .finish()
    }
}

/// One `[[stations]]` entry: a client certificate subject (CN or SAN DNS name) and its roles.
#[derive(Debug, Clone)]
pub struct Station {
    subject: String,
    roles: Vec<Role>,
    scope: SerialScope,
}

impl Station {
    /// The station of certificates whose CN or a SAN DNS name is `subject`.
    pub fn new(subject: impl Into<String>, roles: &[Role], prefixes: Vec<String>) -> Station {
        Station {
            subject: subject.into(),
            roles: roles.to_vec(),
            scope: SerialScope::new(prefixes),
        }
    }
}

/// The authentication policy of the server.
#[derive(Debug)]
pub enum Auth {
    /// Every request is allowed with every role (lab use only; the daemon warns at each start).
    Disabled,
    /// `Authorization: Bearer <token>` required, matched against these tokens; or, without a
    /// bearer token, a client certificate (`[tls] client_ca`) whose subject is one of these
    /// stations.
    Bearer(Vec<Token>, Vec<Station>),
}

impl Auth {
    /// The policy of `config`: its `auth` mode and its tokens (inline and from `token_file`).
    pub fn from_config(config: &crate::config::Config) -> Result<Auth, crate::config::ConfigError> {
        match config.auth {
            crate::config::AuthMode::None => Ok(Auth::Disabled),
            crate::config::AuthMode::Tokens => {
                // An entry without a usable secret was refused by the check; it grants nothing.
                let tokens = config
                    .load_tokens()?
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| {
                        let digest = crate::config::security::entry_digest(t)?;
                        let name = t
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("token #{}", i + 1));
                        Some(
                            Token::from_digest(name, digest, &t.roles)
                                .with_serial_prefixes(t.serial_prefixes.clone()),
                        )
                    })
                    .collect();
                let stations = config
                    .stations
                    .iter()
                    .map(|s| Station::new(&s.subject, &s.roles, s.serial_prefixes.clone()))
                    .collect();
                Ok(Auth::Bearer(tokens, stations))
            }
        }
    }
}

/// The name of the floor page's session cookie.
pub(super) const SESSION_COOKIE: &str = "pep_session";
/// Session cookie lifetime: the server-side expiry ([`SESSION_LIFETIME`]), so the browser drops
/// the cookie when the server stops accepting it.
const SESSION_MAX_AGE_S: u64 = SESSION_LIFETIME.as_secs();

/// The name of the login form's pre-session cookie: the form's CSRF token, which the post must
/// repeat in its `csrf` field.
pub(super) const LOGIN_COOKIE: &str = "pep_login";

/// The session cookie value sent by the browser, if the `Cookie` headers carry one.
pub(super) fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `wanted`, if the `Cookie` headers carry one.
fn cookie<'h>(headers: &'h axum::http::HeaderMap, wanted: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (name, value) = pair.split_at_checked(wanted.len())?;
            (name == wanted.as_bytes())
                .then(|| value.strip_prefix(b"="))
                .flatten()
        })
}

/// The CSRF token for the logout form of a page shown to this request: the session's, when it
/// came with a session cookie.
pub(super) fn logout_csrf(headers: &HeaderMap) -> Option<String> {
    session_cookie(headers).map(session_csrf)
}

/// A fresh login form's CSRF token and the `Set-Cookie` value that goes with it.
pub(super) fn new_login_form(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let token = LOGIN_FORMS.issue(std::time::Instant::now());
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/floor/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LOGIN_FORM_LIFETIME.as_secs(),
        if forwarded_https(headers) {
            "; Secure"
        } else {
            ""
        }
    );
    (token, HeaderValue::from_str(&cookie).ok())
}

/// True behind a TLS proxy that says so: over plain HTTP the browser would drop a Secure cookie.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// Refuses a post that a browser says comes from another site: an `Origin` whose host is not the
/// `Host` the request was sent to, or `Sec-Fetch-Site` other than same-origin/none. Without those
/// headers (scripts, old browsers) the CSRF token alone decides. `Origin: null` is what browsers
/// send from our own pages under their `Referrer-Policy: no-referrer`, so it proves nothing either
/// way and is left to `Sec-Fetch-Site` and the token.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        ApiError::forbidden(
            "this form posts from the pep server's own page only (cross-origin request refused)",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(refused());
    }
    let Some(origin) = headers
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
    else {
        return Ok(());
    };
    let host = headers.get(header::HOST).map(|h| h.as_bytes());
    let origin_host = origin
        .as_bytes()
        .split_at_checked(
            origin
                .as_bytes()
                .windows(3)
                .position(|w| w == b"://")
                .map_or(usize::MAX, |i| i + 3),
        )
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if !o.is_empty() && o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(refused()),
    }
}

/// 403 for a post without the right CSRF token.
fn csrf_refused(what: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{what}: the form's CSRF token is missing, wrong, used or expired; \
         reload the page and try again"
    ))
}

/// Checks a request for `role`: the bearer token of the `Authorization` header; else the verified
/// client certificate (`client`, over mTLS); else, for the `read` role, the floor page's session
/// cookie.
pub(super) fn authorize_headers(
    auth: &Auth,
    headers: &HeaderMap,
    client: Option<&ClientCertificate>,
    role: Role,
) -> Result<Principal, ApiError> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match (header, client, session_cookie(headers)) {
        (None, Some(client), _) => auth.authorize_station(client, role),
        (None, None, Some(session)) if role == Role::Read => auth.authorize_session(session, role),
        _ => auth.authorize(header, role),
    }
}

/// Who makes a request to an operation that records it: the token's [`Principal`] (none when
/// authentication is disabled) and the peer address.
pub(super) struct Caller {
    pub(super) principal: Option<Principal>,
    pub(super) peer: SocketAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ExtensionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ExtensionRejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await?;
        // Put there by the authentication middleware; absent when authentication is disabled.
        let principal = parts.extensions.get::<Principal>().cloned();
        Ok(Caller { principal, peer })
    }
}

impl Caller {
    /// The requester as identities and the audit trail record it ([`Principal::requester`]).
    pub(super) fn requester(&self) -> String {
        Principal::requester(self.principal.as_ref(), self.peer)
    }

    /// 403 unless the token's scope covers `serial` ([`Principal::check_scope`]); anyone may act
    /// on any serial when authentication is disabled.
    pub(super) fn check_scope(&self, serial: &str, may: &str) -> Result<(), ApiError> {
        self.principal
            .as_ref()
            .map_or(Ok(()), |p| p.check_scope(serial, may))
    }
}

/// Who made a request: the configured name of the token (or `anonymous` when auth is disabled),
/// and the serials it may provision.
#[derive(Debug, Clone)]
pub struct Principal(pub String, pub SerialScope);

impl Principal {
    /// Anyone, when authentication is disabled: every serial.
    fn anonymous() -> Principal {
        Principal("anonymous".into(), SerialScope::default())
    }

    /// `name@peer`: the requester as identities and the audit trail record it (`anonymous@peer`
    /// without a principal).
    pub(crate) fn requester(principal: Option<&Principal>, peer: std::net::SocketAddr) -> String {
        let name = principal.map_or("anonymous", |p| p.0.as_str());
        format!("{name}@{peer}")
    }

    /// 403 naming `serial` unless the token's scope covers it (issue #14 §3); `may` says what the
    /// token may do (`provision only`, `act only on`) to the serials of its prefixes.
    pub(crate) fn check_scope(&self, serial: &str, may: &str) -> Result<(), ApiError> {
        let Principal(name, scope) = self;
        if scope.allows(serial) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "token `{name}` may {may} serials starting with {}",
            scope
                .prefixes()
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with("serialNumber", serial))
    }
}

impl Auth {
    /// Checks the `Authorization` header value for `role`: 401 without a valid token, 403 with a
    /// valid token lacking the role.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        role: Role,
    ) -> Result<Principal, ApiError> {
        let tokens = match self {
            Auth::Disabled => return Ok(Principal::anonymous()),
            Auth::Bearer(tokens, _) => tokens,
        };
        let Some(value) = authorization else {
            return Err(ApiError::unauthorized(
                "authentication required: send `Authorization: Bearer <token>`",
            ));
        };
        let presented = strip_bearer(value).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
        let presented = crate::config::security::token_digest(presented);
        let token = find_token(tokens, |t| t.digest.as_slice().ct_eq(&presented))
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))?;
        check_role(token, role)
    }

    /// The floor page's login form: checks `token` like a bearer token for `role`, and returns the
    /// value of the session cookie to set. `Ok(None)` when authentication is disabled.
    pub fn login(&self, token: &[u8], role: Role) -> Result<(Principal, Option<String>), ApiError> {
        let tokens = match self {
            Auth::Disabled => return Ok((Principal::anonymous(), None)),
            Auth::Bearer(tokens, _) => tokens,
        };
        let token = token.trim_ascii();
        let digest = Zeroizing::new(crate::config::security::token_digest(token));
        let found = find_token(tokens, |t| t.digest.as_slice().ct_eq(digest.as_slice()))
            .ok_or_else(|| ApiError::unauthorized("the token is not valid"))?;
        let principal = check_role(found, role)?;
        let id = SESSIONS.create(principal.clone(), std::time::Instant::now());
        Ok((principal, Some(id)))
    }

    /// Checks a verified client certificate for `role`: the first `[[stations]]` entry whose
    /// subject is the certificate's CN or one of its SAN DNS names. A certificate that maps to no
    /// station gets no role (403: the CA vouched for it, but this server gives it nothing).
    pub fn authorize_station(
        &self,
        client: &ClientCertificate,
        role: Role,
    ) -> Result<Principal, ApiError> {
        let stations = match self {
            Auth::Disabled => return Ok(Principal::anonymous()),
            Auth::Bearer(_, stations) => stations,
        };
        let Some(station) = stations.iter().find(|s| client.names.contains(&s.subject)) else {
            return Err(ApiError::forbidden(format!(
                "the client certificate ({}) matches no [[stations]] subject: it grants no role; \
                 send `Authorization: Bearer <token>`",
                client.names.join(", ")
            )));
        };
        if !station.roles.contains(&role) {
            return Err(ApiError::forbidden(format!(
                "station `{}` lacks the `{}` role needed here",
                station.subject,
                role_name(role)
            )));
        }
        Ok(Principal(
            format!("station {}", station.subject),
            station.scope.clone(),
        ))
    }

    /// Checks a session cookie value (from [`Auth::login`]) for `role`. Sessions carry the `read`
    /// role only: asking for `provision` is refused whatever the token could do.
    pub fn authorize_session(&self, session: &[u8], role: Role) -> Result<Principal, ApiError> {
        if matches!(self, Auth::Disabled) {
            return Ok(Principal::anonymous());
        }
        if role != Role::Read {
            return Err(ApiError::unauthorized(
                "a browser session only reads: send `Authorization: Bearer <token>`",
            ));
        }
        // Sessions are created only for tokens holding the read role (see `login`); the table
        // lookup is by the SHA-256 of the ID, so its timing tells nothing about stored IDs.
        SESSIONS
            .get(session, std::time::Instant::now())
            .ok_or_else(|| {
                ApiError::unauthorized("the session is not valid or has expired; log in again")
            })
    }
}

/// The token for which `matches` holds, looking at every token (no early exit) and selecting the
/// index branch-free, so timing tells nothing about which token, if any, matched.
fn find_token(tokens: &[Token], matches: impl Fn(&Token) -> subtle::Choice) -> Option<&Token> {
    let mut found = subtle::Choice::from(0u8);
    let mut index = 0u32;
    for (i, token) in tokens.iter().enumerate() {
        let eq = matches(token);
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        index = u32::conditional_select(&index, &i, eq);
        found |= eq;
    }
    if !bool::from(found) {
        return None;
    }
    usize::try_from(index).ok().and_then(|i| tokens.get(i))
}

/// 403 unless `token` has `role`.
fn check_role(token: &Token, role: Role) -> Result<Principal, ApiError> {
    if !token.has(role) {
        return Err(ApiError::forbidden(format!(
            "token `{}` lacks the `{}` role needed here",
            token.name,
            role_name(role)
        )));
    }
    Ok(Principal(token.name.clone(), token.scope.clone()))
}

/// The token of `Bearer <token>` (scheme case-insensitive, per RFC 7235).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// State of the auth middleware on one route: the policy and the role the route needs.
#[derive(Clone)]
pub(super) struct RequireRole {
    /// The server's policy.
    pub auth: std::sync::Arc<Auth>,
    /// The role needed.
    pub role: Role,
}

/// Middleware: rejects the request unless it carries a token with the route's role; on success the
/// [`Principal`] is put into the request's extensions for the handler.
pub(super) async fn require_role(
    State(required): State<RequireRole>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let now = std::time::Instant::now();
    if let Some(ip) = client
        && let Err(wait) = BACKOFF.check(ip, now)
    {
        return too_many_failures(wait);
    }
    let client_cert = request.extensions().get::<ClientCertificate>();
    match authorize_headers(
        &required.auth,
        request.headers(),
        client_cert,
        required.role,
    ) {
        Ok(principal) => {
            if let Some(ip) = client {
                BACKOFF.succeeded(ip);
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            if let Some(ip) = client
                && e.status() == axum::http::StatusCode::UNAUTHORIZED
            {
                BACKOFF.failed(ip, now);
            }
            e.into_response()
        }
    }
}

/// 429 for a client backing off after repeated authentication failures.
fn too_many_failures(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut response = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many failed authentications from this address; retry in {secs} s with a valid token"
        ),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The login form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    /// The form's CSRF token (also the `pep_login` cookie).
    #[serde(default)]
    csrf: String,
}

/// The logout form's fields.
#[derive(Deserialize)]
pub(super) struct LogoutForm {
    /// The session page's CSRF token.
    #[serde(default)]
    csrf: String,
}

/// Checks the login post's CSRF token: same origin, the form field equal to the pre-session
/// cookie, and a form this server rendered, not used before and not expired (used up here).
fn check_login_csrf(headers: &HeaderMap, form_token: &str) -> Result<(), ApiError> {
    same_origin(headers)?;
    let from_cookie = cookie(headers, LOGIN_COOKIE).unwrap_or_default();
    let form_token = form_token.as_bytes();
    let matches = !form_token.is_empty() && bool::from(form_token.ct_eq(from_cookie));
    // Used up even when the cookie does not match: a token seen once is never good again.
    let known = LOGIN_FORMS.take(form_token, std::time::Instant::now());
    if matches && known {
        Ok(())
    } else {
        Err(csrf_refused("login refused"))
    }
}

/// `Set-Cookie` of the session: `value` for `max_age_s` seconds.
fn set_session_cookie(response: &mut Response, value: &str, max_age_s: u64, secure: bool) {
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// `POST /floor/login`: a valid `read` token sets the session cookie and goes to the page; anything
/// else shows the form again with the reason.
#[utoipa::path(
    post,
    path = "/floor/login",
    tag = "floor",
    operation_id = "floorLogin",
    summary = "Logs the floor page in with a read token and sets the session cookie",
    description = super::openapi::LOGIN_DESCRIPTION,
    security(()),
    request_body(content = super::openapi::LoginFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged in; go to /floor/."),
        (status = 401, description = "The token is not valid (login form, HTML)."),
        (status = 403, description = "The token lacks the read role, or the CSRF check failed: cross-origin, or the form's token is missing, wrong, used or expired (login form, HTML, with a fresh token)."),
    ),
)]
pub(super) async fn login(
    State(state): State<AppState>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    served_over_tls: Option<axum::Extension<ServedOverTls>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = Zeroizing::new(form.token);
    let client = connect.map(|c| c.0.0.ip());
    let now = std::time::Instant::now();
    if let Some(ip) = client
        && let Err(wait) = BACKOFF.check(ip, now)
    {
        let secs = wait.as_secs().max(1);
        return floor::login_page(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "too many failed logins from this address; try again in {secs} s"
            )),
            &headers,
        );
    }
    if let Err(e) = check_login_csrf(&headers, &form.csrf) {
        tracing::info!("floor page: login refused by the CSRF check");
        return floor::login_page(e.status(), Some(e.message()), &headers);
    }
    let result = state.auth.login(token.as_bytes(), Role::Read);
    if let Some(ip) = client {
        match &result {
            Ok(_) => BACKOFF.succeeded(ip),
            Err(e) if e.status() == axum::http::StatusCode::UNAUTHORIZED => BACKOFF.failed(ip, now),
            Err(_) => {}
        }
    }
    match result {
        Ok((principal, session)) => {
            tracing::info!(token = %principal.0, "floor page: logged in");
            // Rotation: the session the browser had before this login (if any) ends now, so a
            // cookie planted before the login (session fixation) is worth nothing after it.
            if let Some(old) = session_cookie(&headers) {
                SESSIONS.revoke(old);
            }
            let mut response = Redirect::to("/floor/").into_response();
            if let Some(session) = session {
                // Secure whenever the browser came over TLS: served by this process, or by a TLS
                // proxy in front. Not over plain HTTP, where the browser would drop the cookie.
                let secure = served_over_tls.is_some() || forwarded_https(&headers);
                set_session_cookie(&mut response, &session, SESSION_MAX_AGE_S, secure);
            }
            response
        }
        Err(e) => {
            tracing::info!(status = e.status().as_u16(), "floor page: login refused");
            floor::login_page(e.status(), Some(e.message()), &headers)
        }
    }
}

/// `POST /floor/logout`: ends the session on the server and clears the cookie.
#[utoipa::path(
    post,
    path = "/floor/logout",
    tag = "floor",
    operation_id = "floorLogout",
    summary = "Ends the floor page's session and clears its cookie",
    description = super::openapi::LOGOUT_DESCRIPTION,
    security(()),
    request_body(content = super::openapi::LogoutFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged out; go to /floor/."),
        (status = 403, description = "Cross-origin, or the CSRF token of the session's page is missing or wrong: nothing changed."),
    ),
)]
pub(super) async fn logout(
    served_over_tls: Option<axum::Extension<ServedOverTls>>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let presented = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    // Revoked server-side: a copy of the cookie kept elsewhere no longer opens anything. Only a
    // live session has something to end, so only its page's token is asked for.
    if let Some(session) = session_cookie(&headers)
        && SESSIONS.get(session, std::time::Instant::now()).is_some()
    {
        let expected = session_csrf(session);
        if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            tracing::info!("floor page: logout refused by the CSRF check");
            return csrf_refused("logout refused").into_response();
        }
        SESSIONS.revoke(session);
    }
    let mut response = Redirect::to("/floor/").into_response();
    set_session_cookie(&mut response, "", 0, served_over_tls.is_some());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn auth() -> Auth {
        Auth::Bearer(
            vec![
                Token::new("line1", "secret-provision", &[Role::Provision]),
                Token::new("export", "secret-read", &[Role::Read]),
                Token::new("both", "secret-both", &[Role::Provision, Role::Read]),
            ],
            vec![Station::new(
                "station-1.factory",
                &[Role::Provision],
                vec!["GW-LINE1-".into()],
            )],
        )
    }

    #[test]
    fn stations_by_cn_or_san() {
        let a = auth();
        let cert = |names: &[&str]| ClientCertificate {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        };
        let p = a
            .authorize_station(&cert(&["x", "station-1.factory"]), Role::Provision)
            .unwrap();
        assert_eq!(p.0, "station station-1.factory");
        assert!(p.1.allows("GW-LINE1-7") && !p.1.allows("GW-LINE2-7"));
        let e = a
            .authorize_station(&cert(&["station-1.factory"]), Role::Read)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let e = a
            .authorize_station(&cert(&["station-2.factory"]), Role::Provision)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.message().contains("station-2.factory"));
        // A bearer token wins over the certificate.
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret-read".parse().unwrap());
        let p = authorize_headers(&a, &h, Some(&cert(&["station-1.factory"])), Role::Read).unwrap();
        assert_eq!(p.0, "export");
    }

    #[test]
    fn roles_are_enforced() {
        let a = auth();
        let p = a
            .authorize(Some(b"Bearer secret-provision"), Role::Provision)
            .unwrap();
        assert_eq!(p.0, "line1");
        let e = a
            .authorize(Some(b"Bearer secret-read"), Role::Provision)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            a.authorize(Some(b"bearer secret-both"), Role::Read)
                .unwrap()
                .0,
            "both"
        );
    }

    #[test]
    fn bad_tokens_are_401() {
        let a = auth();
        for header in [
            None,
            Some(&b"Bearer"[..]),
            Some(b"Bearer "),
            Some(b"Basic c2VjcmV0"),
            Some(b"Bearer secret-provisio"),
            Some(b"Bearer secret-provisionX"),
            Some(b"secret-provision"),
        ] {
            let e = a.authorize(header, Role::Read).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        }
    }

    #[test]
    fn session_cookie_is_found_among_others_and_not_by_prefix() {
        let mut h = axum::http::HeaderMap::new();
        h.append(header::COOKIE, "a=1; pep_session2=x".parse().unwrap());
        assert_eq!(session_cookie(&h), None);
        h.append(header::COOKIE, "b=2;pep_session=abc ; c=3".parse().unwrap());
        assert_eq!(session_cookie(&h), Some(&b"abc"[..]));
    }

    #[test]
    fn sessions_read_only_and_bound_to_the_token() {
        let a = auth();
        let (p, session) = a.login(b" secret-both ", Role::Read).unwrap();
        assert_eq!(p.0, "both");
        let session = session.unwrap();
        assert!(!session.contains("secret"));
        assert_eq!(
            a.authorize_session(session.as_bytes(), Role::Read)
                .unwrap()
                .0,
            "both"
        );
        let e = a
            .authorize_session(session.as_bytes(), Role::Provision)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.login(b"secret-provision", Role::Read)
                .unwrap_err()
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            a.login(b"nope", Role::Read).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        for bad in [&b""[..], b"zz", session.as_bytes().split_at(10).0] {
            assert_eq!(
                a.authorize_session(bad, Role::Read).unwrap_err().status(),
                StatusCode::UNAUTHORIZED
            );
        }
        // Another token's session is another value.
        let (_, other) = a.login(b"secret-read", Role::Read).unwrap();
        assert_ne!(other.unwrap(), session);
    }

    #[test]
    fn debug_redacts_secret() {
        let dbg = format!("{:?}", auth());
        assert!(!dbg.contains("secret-"));
    }
}
