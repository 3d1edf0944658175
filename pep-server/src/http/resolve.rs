//! The in-doubt identities (issue #13): `GET /v3/identities?state=` lists rows by state, and
//! `POST /v3/identities/{serial}/resolve` is the operator's decision on one in-doubt serial.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::body::known_fields;
use super::error::ApiError;
use super::lifecycle::path_serial;
use super::read::{ListingQuery, ListingRow};
use crate::store::{IdentityDetail, IdentityState, Resolution};

/// The states `GET /v3/identities` lists.
const STATES: &str = "in_doubt, in_flight, failed, deployed or revoked";

/// An identity as `GET /v3/identities` lists it (and `GET /v3/identities/{serial}` shows the
/// current one).
impl ListingRow for IdentityDetail {
    fn id(&self) -> i64 {
        self.id
    }

    fn entry(&self) -> Value {
        json!({
            "_id": self.id.to_string(),
            "serialNumber": self.serial_number,
            "state": self.state.as_str(),
            "gateway": self.gateway,
            "requester": self.requester,
            "hardwareVersion": self.hardware_version,
            "radioConfig": self.radio_config,
            "ledConfig": self.led_config,
            "category": self.category,
            "cloudAddress": self.cloud_address,
            "apiAddress": self.api_address,
            "gatewayServicesAddress": self.gateway_services_address,
            "enrollmentID": self.enrollment_id,
            "certificateSerial": self.cert_serial,
            "certificateNotAfter": self.cert_not_after,
            // Public: lets the operator compare with the certificate the gateway holds.
            "certificate": self.cert_der.as_ref().map(|der| base64::engine::general_purpose::STANDARD.encode(der)),
            "requestId": self.request_id,
            "lastError": self.last_error,
            "attempts": self.attempts,
            "createdAt": self.created_at_ms,
            "updatedAt": self.updated_at_ms,
        })
    }
}

/// `GET /v3/identities?state=in_doubt&limit=&order=&last=`: one page of identities in a state.
#[utoipa::path(
    get,
    path = "/v3/identities",
    tag = "read",
    operation_id = "listIdentities",
    summary = "Identities in one state, one page (HAL JSON)",
    description = "state=in_doubt lists the identities a server was injecting when it stopped: they may be on the gateway. Each carries the written-ahead enrollment ID and certificate (base64 DER; never a private key); check the gateway, then resolve with POST /v3/identities/{serial}/resolve. Keyset paging as /v3/enrollment-ids. Needs the read role.",
    params(super::openapi::StateQuery, super::openapi::PageQuery),
    responses(
        (status = 200, description = "One page.", body = super::openapi::IdentityPage, content_type = "application/hal+json"),
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn identities(
    State(state): State<AppState>,
    query: ListingQuery,
) -> Result<Response, ApiError> {
    let wanted: IdentityState = query.required_state(STATES)?;
    let store = state.provisioner.store();
    query
        .page(Some(wanted.as_str()), |page| {
            store.list_by_state(wanted, page.limit, page.order, page.last)
        })
        .await
}

/// The body of a resolution: `{"state": "deployed"}` or `{"state": "failed"}`, nothing else.
fn resolution_state(body: &[u8]) -> Result<IdentityState, ApiError> {
    let map = known_fields(
        body,
        "the body must be a JSON object {\"state\": \"deployed\" | \"failed\"}",
        &["state"],
    )?;
    match map.get("state") {
        None => Err(ApiError::missing_param("state")),
        Some(Value::String(s)) if s == "deployed" => Ok(IdentityState::Deployed),
        Some(Value::String(s)) if s == "failed" => Ok(IdentityState::Failed),
        Some(_) => Err(ApiError::bad_param(
            "state",
            "must be \"deployed\" or \"failed\"",
        )),
    }
}

/// `POST /v3/identities/{serial}/resolve`: an operator's decision on an in-doubt identity.
#[utoipa::path(
    post,
    path = "/v3/identities/{serial}/resolve",
    tag = "provisioning",
    operation_id = "resolveIdentity",
    summary = "Resolve an in-doubt identity",
    description = "For a serial in state in_doubt (a server stopped while injecting it). {\"state\": \"deployed\"}: the gateway holds the identity (its enrollment ID, written ahead, joins the enrollment-ID list and CSV). {\"state\": \"failed\"}: it does not; the serial may be provisioned again (a new certificate). Audited (event resolved) with who and when. Needs the provision role.",
    params(("serial" = String, Path, description = "The serial number.")),
    request_body(content = inline(super::openapi::ResolveBody), content_type = "application/json"),
    responses(
        (status = 200, description = "Resolved: {\"serialNumber\", \"state\", \"enrollmentID\"}.", body = inline(Object), content_type = "application/json"),
        super::openapi::CallerErrors,
        (status = 404, description = "No identity has that serial number.", body = super::openapi::ErrorBody),
        (status = 409, description = "The identity is not in doubt (its state is given); nothing changed.", body = super::openapi::ErrorBody),
    ),
)]
pub(super) async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let to = resolution_state(&body)?;
    path_serial(&serial)?;
    let who = caller.requester();
    let store = state.provisioner.store();
    match store.resolve(&serial, to, &who).await {
        Ok(Resolution::Resolved) => {
            tracing::warn!(serial, state = %to, who, "in-doubt identity resolved");
            let enrollment_id = store
                .identity(&serial)
                .await
                .map_err(|e| ApiError::store_read(&e))?
                .and_then(|d| d.enrollment_id);
            Ok(Json(json!({
                "serialNumber": serial,
                "state": to.as_str(),
                "enrollmentID": enrollment_id,
            }))
            .into_response())
        }
        Ok(Resolution::Unknown) => Err(ApiError::no_identity(&serial)),
        Ok(Resolution::NotInDoubt { state }) => Err(ApiError::wrong_state(
            &serial,
            state,
            format!("serial number {serial} is {state}, not in_doubt: nothing to resolve"),
        )),
        Err(e) => Err(ApiError::internal("resolving failed", &e)),
    }
}
