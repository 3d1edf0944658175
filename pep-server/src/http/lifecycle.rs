//! The end of an identity (issue #16): `POST /v3/identities/{serial}/revoke` (role `revoke`),
//! `GET /v3/identities/{serial}` (the current identity and every earlier one) and the CA's CRL at
//! `GET /v3/crl`. Handlers translate only: the revocation and the CRL are the provisioning core's
//! ([`crate::provision::Provisioner::revoke`], [`crate::provision::Provisioner::crl`]).

use std::str::FromStr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pep_ca::{EndpointName, RevocationReason};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Caller;
use super::body::known_fields;
use super::error::ApiError;
use super::query::QueryParams;
use super::read::ListingRow;
use crate::model::FieldText;
use crate::store::{PastIdentity, Revocation, RevokeOutcome};

/// The parsed body of a revocation.
struct RevokeBody {
    reason: RevocationReason,
    note: Option<FieldText>,
}

/// `{"reason": "keyCompromise", "note": "..."}`: `reason` required, `note` optional, nothing else.
fn revoke_body(body: &[u8]) -> Result<RevokeBody, ApiError> {
    let map = known_fields(
        body,
        "the body must be a JSON object {\"reason\": \"keyCompromise\", \"note\": \"...\"}",
        &["reason", "note"],
    )?;
    let reason = match map.get("reason") {
        None => return Err(ApiError::missing_param("reason")),
        Some(Value::String(s)) => {
            RevocationReason::from_str(s).map_err(|e| ApiError::bad_param("reason", e.why))?
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "reason",
                format!("must be a string, one of {}", RevocationReason::names()),
            ));
        }
    };
    let note = match map.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(FieldText::new(s.clone()).map_err(|e| ApiError::bad_param("note", e))?)
        }
        Some(_) => return Err(ApiError::bad_param("note", "must be a string")),
    };
    Ok(RevokeBody { reason, note })
}

fn revocation_json(r: &Revocation) -> Value {
    json!({
        "revokedAt": r.at_ms,
        "reason": r.reason.as_str(),
        "reasonCode": r.reason.code(),
        "note": r.note,
        "revokedBy": r.by,
    })
}

fn past_json(p: &PastIdentity) -> Value {
    json!({
        "state": p.state.as_str(),
        "enrollmentID": p.enrollment_id,
        "certificateSerial": p.cert_serial,
        "certificateNotAfter": p.cert_not_after,
        "gateway": p.gateway,
        "requester": p.requester,
        "createdAt": p.created_at_ms,
        "revocation": p.revocation.as_ref().map(revocation_json),
        "replacedAt": p.archived_at_ms,
    })
}

/// The serial of the path, checked like a request's.
pub(super) fn path_serial(serial: &str) -> Result<EndpointName, ApiError> {
    EndpointName::from_str(serial).map_err(|e| {
        ApiError::bad_param("serialNumber", format!("is not a valid endpoint name: {e}"))
    })
}

/// `POST /v3/identities/{serial}/revoke`: an operator revokes a deployed (or in-doubt) identity.
#[utoipa::path(
    post,
    path = "/v3/identities/{serial}/revoke",
    tag = "provisioning",
    operation_id = "revokeIdentity",
    summary = "Revoke a deployed identity",
    description = "For a serial in state deployed (or in_doubt: the identity may be on the gateway). The identity becomes revoked, durably and audited (event revoked, with the reason, note, who and when), before the answer: its certificate serial joins the CRL (GET /v3/crl) with the reason code, and its enrollment ID the bulk-delete CSV (GET /v3/enrollment-ids.csv?state=revoked) that frees the cloud claim. The serial may then be provisioned again: a new key, certificate and enrollment ID; the old certificate stays revoked and the old identity is kept in the serial's history (GET /v3/identities/{serial}). reason: an RFC 5280 CRLReason name (unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, aACompromise); certificateHold is refused, a revocation here is final. note: optional, 1 to 256 characters, no control characters. Needs the revoke role; a token's serial_prefixes limit it as they limit provisioning.",
    params(("serial" = String, Path, description = "The serial number.")),
    request_body(content = inline(super::openapi::RevokeBody), content_type = "application/json"),
    responses(
        (status = 200, description = "Revoked: {\"serialNumber\", \"state\": \"revoked\", \"reason\", \"reasonCode\", \"note\", \"revokedAt\", \"revokedBy\", \"certificateSerial\", \"enrollmentID\"}.", body = inline(Object), content_type = "application/json"),
        super::openapi::CallerErrors,
        (status = 404, description = "No identity has that serial number.", body = super::openapi::ErrorBody),
        (status = 409, description = "The identity is not deployed or in doubt (already revoked, failed or in flight; its state is given): nothing changed.", body = super::openapi::ErrorBody),
    ),
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let serial = path_serial(&serial)?;
    let RevokeBody { reason, note } = revoke_body(&body)?;
    caller.check_scope(serial.as_str(), "act only on")?;
    let who = caller.requester();
    match state
        .provisioner
        .revoke(&serial, reason, note.as_ref(), &who)
        .await
    {
        Ok(RevokeOutcome::Revoked(r)) => Ok(Json(json!({
            "serialNumber": serial.as_str(),
            "state": "revoked",
            "reason": reason.as_str(),
            "reasonCode": reason.code(),
            "note": note.as_ref().map(FieldText::as_str),
            "revokedAt": r.revoked_at_ms,
            "revokedBy": who,
            "certificateSerial": r.cert_serial,
            "enrollmentID": r.enrollment_id,
        }))
        .into_response()),
        Ok(RevokeOutcome::Unknown) => Err(ApiError::no_identity(serial.as_str())),
        Ok(RevokeOutcome::NotRevocable { state }) => Err(ApiError::wrong_state(
            serial.as_str(),
            state,
            format!(
                "serial number {serial} is {state}: only a deployed or in_doubt identity can be \
                 revoked; nothing changed"
            ),
        )),
        Err(e) => Err(ApiError::internal("revoking failed", &e)),
    }
}

/// `GET /v3/identities/{serial}`: the serial's current identity and every earlier one.
#[utoipa::path(
    get,
    path = "/v3/identities/{serial}",
    tag = "read",
    operation_id = "getIdentityHistory",
    summary = "One serial: its current identity and its history",
    description = "The current identity (as GET /v3/identities lists it, with its revocation when revoked) and, in history, every identity the serial had before (oldest first): each with its enrollment ID, certificate serial, state and revocation (reason, note, who, when). Public data only: never a private key or verification key. Needs the read role.",
    params(("serial" = String, Path, description = "The serial number.")),
    responses(
        (status = 200, description = "{\"serialNumber\", \"current\": {...}, \"history\": [...]}", body = inline(Object), content_type = "application/json"),
        super::openapi::CallerErrors,
        (status = 404, description = "No identity has that serial number.", body = super::openapi::ErrorBody),
    ),
)]
pub(super) async fn identity(
    State(state): State<AppState>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let serial = path_serial(&serial)?;
    let store = state.provisioner.store();
    let read = |e: crate::store::StoreError| ApiError::store_read(&e);
    let Some(current) = store.identity(serial.as_str()).await.map_err(read)? else {
        return Err(ApiError::no_identity(serial.as_str()));
    };
    let history = store.history(serial.as_str()).await.map_err(read)?;
    let mut current_json = current.entry();
    if let Value::Object(map) = &mut current_json {
        map.insert(
            "revocation".to_owned(),
            current
                .revocation
                .as_ref()
                .map_or(Value::Null, revocation_json),
        );
    }
    let mut body = Map::new();
    body.insert("serialNumber".to_owned(), serial.as_str().into());
    body.insert("current".to_owned(), current_json);
    body.insert(
        "history".to_owned(),
        Value::Array(history.iter().map(past_json).collect()),
    );
    Ok(Json(Value::Object(body)).into_response())
}

/// `GET /v3/crl`: the CA's certificate revocation list.
#[utoipa::path(
    get,
    path = "/v3/crl",
    tag = "read",
    operation_id = "getCrl",
    summary = "The factory CA's certificate revocation list (X.509 v2 CRL)",
    description = "Signed by the factory CA (also when its key is in a PKCS#11 token): every revoked certificate's serial number, revocation date and reason code (none for unspecified), the CRL number (grows with every new CRL, across restarts), the authority key identifier, thisUpdate and nextUpdate ([crl] validity_hours, default 24). A new CRL is signed when the revoked set changes or half of the validity has passed. DER (application/pkix-crl) by default, PEM with format=pem. Open (no token): relying parties fetch it from the certificates' CRL distribution point ([crl] distribution_url).",
    security(()),
    params(super::openapi::CrlQuery),
    responses(
        (status = 200, description = "The CRL.", body = Vec<u8>, content_type = "application/pkix-crl"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 503, response = super::openapi::CaUnavailable),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(super) async fn crl(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let pem = match params.get("format")? {
        None | Some("der") => false,
        Some("pem") => true,
        Some(_) => return Err(ApiError::bad_param("format", "must be der or pem")),
    };
    let crl = state.provisioner.crl().await.map_err(|e| match e {
        crate::crl::CrlError::Ca(ca) if ca.is_unavailable() => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the CA key is unavailable, no CRL can be signed now: {ca}"),
        ),
        e => ApiError::internal("signing the CRL failed", &e),
    })?;
    let (content_type, body) = if pem {
        (
            "application/x-pem-file",
            pem_block("X509 CRL", &crl.der).into_bytes(),
        )
    } else {
        ("application/pkix-crl", crl.der.clone())
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(number) = HeaderValue::from_str(&crl.number.to_string()) {
        headers.insert("x-crl-number", number);
    }
    Ok(response)
}

/// `der` as a PEM block (RFC 7468: base64 lines of 64 characters).
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII: every 64-byte chunk is a whole line of text.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
