//! `GET /v3/claims?state=`: the cloud claim outbox (issue #18), one page at a time.

use axum::extract::{RawQuery, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::query::QueryParams;
use super::read::{page_params, rows_page, state_filter};
use crate::store::{ClaimRow, ClaimState};

/// The states `GET /v3/claims` lists.
const STATES: &str = "pending, retrying, claimed, already_claimed, rejected or deleted";

fn claim_json(r: &ClaimRow) -> Value {
    json!({
        "_id": r.id.to_string(),
        "enrollmentID": r.enrollment_id,
        "serialNumber": r.serial,
        "action": r.action.as_str(),
        "state": r.state.as_str(),
        "attempts": r.attempts,
        "nextAttemptAt": r.next_attempt_at,
        "lastError": r.last_error,
        "claimedBy": r.claimed_by,
        "bulkTask": r.bulk_task,
        "cloudId": r.cloud_id,
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
    })
}

/// `GET /v3/claims?state=&limit=&order=&last=`: one page of the claim outbox.
#[utoipa::path(
    get,
    path = "/v3/claims",
    tag = "read",
    operation_id = "listClaims",
    summary = "Cloud claims of deployed gateways, one page (HAL JSON)",
    description = "The outbox of enrollment-ID claims (and claim deletions) in the device-management cloud ([cloud] mode each or bulk). state filters: pending, retrying, claimed, already_claimed (the cloud answered 409), rejected (400/401/403; re-queue with `pep-server cloud retry --state rejected`) or deleted; without it every row is listed. Keyset paging as /v3/enrollment-ids. Needs the read role.",
    params(super::openapi::ClaimStateQuery, super::openapi::PageQuery),
    responses(
        (status = 200, description = "One page.", body = super::openapi::ClaimPage, content_type = "application/hal+json"),
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn claims(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let wanted: Option<ClaimState> = params
        .get_non_empty("state")?
        .map(|text| state_filter(text, STATES))
        .transpose()?;
    let page = page_params(&params)?;
    let rows = state
        .provisioner
        .store()
        .list_claims(wanted, page.limit, page.order, page.last)
        .await
        .map_err(|e| ApiError::store_read(&e))?;
    Ok(rows_page(
        &uri,
        wanted.map(ClaimState::as_str),
        &page,
        &rows,
        |r| r.id,
        claim_json,
    ))
}
