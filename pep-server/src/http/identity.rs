//! `GET /v3/identity` (the old API) and `POST /v3/identities` (JSON body): create, inject and return
//! one gateway identity.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::auth::Caller;
use super::body::json_object;
use super::error::ApiError;
use super::query::QueryParams;
use super::{AppState, Principal};
use crate::metrics::ProvisionResult;

use crate::model::{GatewayDefaults, GatewayFields, RequestKey};
use crate::provision::{ProvisionError, ProvisionRequest};
use crate::store::IdentityState;
use fcc_proto::FccStatus;

/// `GET /v3/identity?serialNumber=...`: 200 with the identity JSON.
#[utoipa::path(
    get,
    path = "/v3/identity",
    tag = "provisioning",
    operation_id = "getIdentity",
    summary = "Create, inject and return one gateway identity",
    description = "Issues a device key and certificate for serialNumber, injects them into FCC at ip:port, and on FCC success records the gateway as deployed. A failed injection leaves nothing recorded: the serial can be retried. Needs the provision role.",
    params(super::openapi::IdentityRequest, super::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "The gateway is provisioned (or, for a repeated request key, was provisioned by the first request with it); the body is its identity.json.", body = crate::provision::Identity),
        super::openapi::CallerErrors,
        super::openapi::ProvisionErrors,
        (status = 414, response = super::openapi::UriTooLong),
    ),
)]
pub(super) async fn get_identity(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = match QueryParams::parse(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return invalid(&state, e),
    };
    let defaults = state.provisioner.gateway_defaults();
    match build_request(params, &headers, &caller, defaults)
        .and_then(|request| allowed_target(&state, request, caller.peer))
    {
        Ok(request) => provision(&state, request, StatusCode::OK).await,
        Err(e) => invalid(&state, e),
    }
}

/// `POST /v3/identities` with a JSON object body of the same fields: 201 with the identity JSON.
#[utoipa::path(
    post,
    path = "/v3/identities",
    tag = "provisioning",
    operation_id = "postIdentities",
    summary = "Create, inject and return one gateway identity (JSON body)",
    description = "The same as GET /v3/identity with the parameters as a JSON object. Unknown fields are refused. Needs the provision role.",
    request_body = super::openapi::IdentityRequest,
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "A repeated request key: the identity the first request with it provisioned (nothing issued).", body = crate::provision::Identity),
        (status = 201, description = "The gateway is provisioned; the body is its identity.json.", body = crate::provision::Identity),
        super::openapi::CallerErrors,
        super::openapi::ProvisionErrors,
        (status = 413, description = "The body is larger than 64 KiB.", body = super::openapi::ErrorBody),
        (status = 415, description = "The body is not application/json.", body = super::openapi::ErrorBody),
    ),
)]
pub(super) async fn post_identities(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = check_json_content_type(&headers)
        .and_then(|()| body.map_err(ApiError::from))
        .and_then(|body| params_from_json(&body))
        .and_then(|params| {
            let defaults = state.provisioner.gateway_defaults();
            build_request(params, &headers, &caller, defaults)
        })
        .and_then(|request| allowed_target(&state, request, caller.peer));
    match parsed {
        Ok(request) => provision(&state, request, StatusCode::CREATED).await,
        Err(e) => invalid(&state, e),
    }
}

/// The pure part of `GET /v3/identity`: decodes the raw query string (the part after `?`) and
/// validates it into the core's request, exactly as the handler does, without axum or a server.
/// `peer` is the requester's address (the default gateway `ip` and the audit's requester);
/// `defaults` are the provisioner's ([`Provisioner::gateway_defaults`](crate::provision::Provisioner::gateway_defaults)).
/// Public so the query parsing can be fuzzed and tested on its own.
pub fn parse_identity_query(
    raw: Option<&str>,
    peer: SocketAddr,
    principal: Option<Principal>,
    defaults: &GatewayDefaults,
) -> Result<ProvisionRequest, ApiError> {
    let params = QueryParams::parse(raw)?;
    build_request(
        params,
        &HeaderMap::new(),
        &Caller { principal, peer },
        defaults,
    )
}

/// The gateway network policy (`[fcc] allowed_networks`, `require_peer_ip`), decided before any
/// connection: a refused target is 403 naming the rule, a `refused` row of the audit trail and an
/// audit line in the log (who asked, for which serial and address, which rule refused). The row is
/// written by a spawned task: only refused requests pay for it, and the 403 does not wait.
fn allowed_target(
    state: &AppState,
    request: ProvisionRequest,
    peer: SocketAddr,
) -> Result<ProvisionRequest, ApiError> {
    let gateway = request.params.gateway;
    match state
        .provisioner
        .config()
        .network_policy()
        .check(gateway, Some(peer.ip()))
    {
        Ok(()) => Ok(request),
        Err(refusal) => {
            tracing::warn!(target: "pep::audit", event = "gateway_refused",
                serial = request.params.serial_number.as_str(), %gateway,
                requester = %request.requester, rule = refusal.rule,
                "gateway address refused: {}", refusal.reason);
            let store = state.provisioner.store().clone();
            let (serial, requester) = (
                request.params.serial_number.as_str().to_owned(),
                request.requester.clone(),
            );
            let detail = format!("{}: {}", refusal.rule, refusal.reason);
            tokio::spawn(async move {
                if let Err(e) = store
                    .audit_refused(&serial, &gateway.to_string(), &requester, &detail)
                    .await
                {
                    tracing::error!(error = %e, "auditing a refused gateway address failed");
                }
            });
            Err(ApiError::forbidden(refusal.to_string())
                .with("rule", refusal.rule)
                .with("gateway", gateway.to_string())
                .with("retryable", false))
        }
    }
}

/// Counts a request refused by the HTTP layer's own checks and answers it.
fn invalid(state: &AppState, e: ApiError) -> Response {
    state.metrics.count_refused(ProvisionResult::Invalid);
    e.into_response()
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        // curl -d without -H sends form encoding; a missing header is accepted as JSON.
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be application/json, not `{essence}`"),
        ))
    }
}

/// Turns a JSON object into the same name/value pairs a query string gives, so both endpoints share
/// one validation. Unknown fields are refused here (unlike the old query API, this endpoint has no
/// legacy clients, and a misspelt optional field would otherwise be silently dropped).
fn params_from_json(body: &[u8]) -> Result<QueryParams, ApiError> {
    // Unknown fields are refused field by field, in the loop: a body with several faults names
    // the first of them, whichever kind it is.
    let map = json_object(body, "the body must be a JSON object")?;
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        if !GatewayFields::NAMES.contains(&name.as_str()) && name != REQUEST_ID {
            return Err(ApiError::bad_param(&name, "is not a known field"));
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Number(n) if name == "port" => n.to_string(),
            _ if name == "port" => return Err(ApiError::bad_param(&name, "must be a number")),
            _ => return Err(ApiError::bad_param(&name, "must be a string")),
        };
        pairs.push((name, text));
    }
    Ok(QueryParams::from_pairs(pairs))
}

/// The request key's parameter (query) and member (JSON body).
const REQUEST_ID: &str = "requestId";
/// The request key's header.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request key of a request: `requestId` or the `Idempotency-Key` header (both: they must be
/// equal), checked ([`RequestKey::new`]); errors name `requestId`.
fn request_key(params: &QueryParams, headers: &HeaderMap) -> Result<Option<RequestKey>, ApiError> {
    let mut in_header = headers.get_all(IDEMPOTENCY_KEY).iter();
    let header = match (in_header.next(), in_header.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_param(
                REQUEST_ID,
                "is given more than once (the Idempotency-Key header is repeated)",
            ));
        }
        (Some(value), None) => Some(value.to_str().map_err(|_| {
            ApiError::bad_param(
                REQUEST_ID,
                "is not printable ASCII (in the Idempotency-Key header)",
            )
        })?),
    };
    let key = match (params.get(REQUEST_ID)?, header) {
        (Some(param), Some(header)) if param != header => {
            return Err(ApiError::bad_param(
                REQUEST_ID,
                "differs from the Idempotency-Key header; send the key once, or the same in both",
            ));
        }
        (Some(key), _) | (None, Some(key)) => key,
        (None, None) => return Ok(None),
    };
    RequestKey::new(key.to_owned())
        .map(Some)
        .map_err(|e| ApiError::bad_param(e.field, e.reason))
}

/// Builds the core's request: the fields through serde, then the model's one validation
/// ([`GatewayFields::into_params`]), whose messages name the parameter.
fn build_request(
    params: QueryParams,
    headers: &HeaderMap,
    caller: &Caller,
    defaults: &GatewayDefaults,
) -> Result<ProvisionRequest, ApiError> {
    let request_key = request_key(&params, headers)?;
    let params = params
        .gateway_fields()?
        .into_params(Some(caller.peer.ip()), defaults)
        .map_err(|e| ApiError::bad_param(e.field, e.reason))?;
    // Per-station scope (issue #14 §3): refused before anything is reserved or connected.
    caller.check_scope(params.serial_number.as_str(), "provision only")?;
    Ok(ProvisionRequest {
        params,
        requester: caller.requester(),
        request_key,
    })
}

/// Runs one provisioning and answers with its outcome.
///
/// The core already runs each attempt in its own task (a disconnecting client cannot leave a serial
/// half-recorded); this wrapper task also keeps the metrics right in that case: the outcome is
/// counted when the attempt ends, whether or not anyone still waits for the answer.
async fn provision(state: &AppState, request: ProvisionRequest, success: StatusCode) -> Response {
    let started = Instant::now();
    let provisioner = state.provisioner.clone();
    let metrics = state.metrics.clone();
    let task = tokio::spawn(async move {
        let _in_flight = metrics.start_provision();
        let outcome = provisioner.provision(request).await;
        let result = match &outcome {
            Ok(identity) if identity.replayed => ProvisionResult::Replayed,
            Ok(_) => {
                metrics.record_fcc_status(FccStatus::Success);
                ProvisionResult::Deployed
            }
            Err(e) => {
                if let ProvisionError::GatewayRejected { status, .. } = e {
                    metrics.record_fcc_status(*status);
                }
                result_of(e)
            }
        };
        metrics.record_provision(result, started.elapsed());
        outcome
    });
    // The core logs the outcome (deployed / failed, with the gateway and the enrollment ID), so
    // the request log line of these answers goes to `debug` (one line per provisioning).
    let mut response = match task.await {
        // A replay answers 200 on both endpoints: nothing was created this time.
        Ok(Ok(identity)) if identity.replayed => (StatusCode::OK, Json(identity)).into_response(),
        Ok(Ok(identity)) => (success, Json(identity)).into_response(),
        Ok(Err(e)) => provision_error(e).into_response(),
        Err(join) => {
            return ApiError::internal("the provisioning task failed", &join).into_response();
        }
    };
    response.extensions_mut().insert(super::OutcomeLogged);
    response
}

/// The `state` of a 409: `in_progress` while an attempt runs (the contract's name), else the row's.
fn conflict_state(state: IdentityState) -> &'static str {
    match state {
        IdentityState::InFlight => "in_progress",
        other => other.as_str(),
    }
}

fn result_of(e: &ProvisionError) -> ProvisionResult {
    match e {
        ProvisionError::InvalidRequest { .. } | ProvisionError::Refused { .. } => {
            ProvisionResult::Invalid
        }
        ProvisionError::Conflict { .. } | ProvisionError::KeyUsed { .. } => {
            ProvisionResult::Conflict
        }
        ProvisionError::GatewayRejected { .. } => ProvisionResult::GatewayRejected,
        ProvisionError::GatewayFailed { .. } => ProvisionResult::GatewayFailed,
        ProvisionError::GatewayUnreachable { .. } => ProvisionResult::GatewayUnreachable,
        ProvisionError::GatewayTimeout { .. } => ProvisionResult::GatewayTimeout,
        _ => ProvisionResult::Internal,
    }
}

/// The answer for a failed provisioning: the core's status code and message, plus the fields a
/// script needs to react (which parameter, which gateway, FCC's status, whether a retry can help).
fn provision_error(e: ProvisionError) -> ApiError {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        return ApiError::internal("provisioning failed", &e);
    }
    let message = e.to_string();
    match e {
        ProvisionError::InvalidRequest { field, reason } => ApiError::bad_param(&field, reason),
        ProvisionError::Conflict { serial, state } => ApiError::new(status, message)
            .with("serialNumber", serial)
            .with("state", conflict_state(state))
            .with("retryable", false),
        ProvisionError::KeyUsed { serial } => ApiError::new(status, message)
            .with("serialNumber", serial)
            .with("parameter", REQUEST_ID)
            .with("retryable", false),
        ProvisionError::GatewayRejected {
            gateway,
            status: fcc,
            info,
        } => ApiError::new(status, message)
            .with("gateway", gateway.to_string())
            .with("fccStatus", fcc.as_u32())
            .with("fccStatusName", fcc.name())
            .with("fccInfo", info)
            .with("retryable", true),
        ProvisionError::GatewayFailed { gateway, .. }
        | ProvisionError::GatewayUnreachable { gateway, .. }
        | ProvisionError::GatewayTimeout { gateway, .. } => ApiError::new(status, message)
            .with("gateway", gateway.to_string())
            .with("retryable", true),
        // Nothing reached the gateway; the same request succeeds once the token is back.
        ProvisionError::CaUnavailable(_) => ApiError::new(status, message).with("retryable", true),
        ProvisionError::Refused { serial, rule, .. } => ApiError::new(status, message)
            .with("serialNumber", serial)
            .with("rule", rule)
            .with("retryable", false),
        // Nothing was reserved; the same request succeeds once the hook answers.
        ProvisionError::HookUnavailable(_) => ApiError::new(status, message)
            .with("rule", "hooks.pre_provision")
            .with("retryable", true),
        _ => ApiError::new(status, message),
    }
}
