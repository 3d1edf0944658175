//! The floor page's view model: what the page shows, computed from the store (the snapshot, the
//! counters and chart) and from the core's live events (one attempts-table row per event). The
//! same values are rendered as HTML ([`super::html`]) and sent as JSON by `GET /v3/events`.

use fcc_proto::FccStatus;
use serde::Serialize;

use crate::activity::{AttemptOutcome, ProvisionEvent};
use crate::store::{AuditEntry, Store, StoreError, now_ms};

/// Attempts shown in the table.
pub const RECENT_ATTEMPTS: u32 = 50;
/// Minutes in the rate chart.
pub const CHART_MINUTES: usize = 60;

/// The counters at the top of the page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[derive(utoipa::ToSchema)]
pub struct Counters {
    /// Gateways deployed since midnight (in the configured `time.utc_offset`).
    pub deployed_today: u64,
    /// Gateways deployed, all time.
    pub deployed_total: u64,
    /// Failed attempts since midnight.
    pub failed_today: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Identities in doubt (a server stopped mid-injection): an operator must resolve them.
    pub in_doubt: u64,
    /// Deployments per minute over the last minute.
    pub rate1: f64,
    /// Deployments per minute over the last 5 minutes.
    pub rate5: f64,
    /// Deployments per minute over the last 15 minutes.
    pub rate15: f64,
}

/// One bar of the chart.
#[derive(utoipa::ToSchema)]
#[schema(as = FloorMinute)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MinuteBar {
    /// Deployments in that minute.
    pub deployed: u64,
    /// Failed attempts in that minute.
    pub failed: u64,
}

/// Counters and chart (the `counters` event).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorLive)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    /// When it was computed, ms since the epoch.
    pub now: i64,
    /// The counters.
    pub counters: Counters,
    /// Start of the first chart minute, ms since the epoch.
    pub chart_start: i64,
    /// The last [`CHART_MINUTES`] minutes, oldest first (the last one is the current minute).
    pub minutes: Vec<MinuteBar>,
    /// The cloud claims (`[cloud]`, issue #18).
    pub cloud: CloudTile,
}

/// The "Cloud" counter: the claim outbox by state and its latest error (never the API key).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorCloud)]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudTile {
    /// Whether this server claims deployed gateways (`[cloud] mode` not `off`) or the outbox
    /// holds rows.
    pub enabled: bool,
    /// Enrollment IDs claimed.
    pub claimed: u64,
    /// Waiting to be sent or retried.
    pub waiting: u64,
    /// Answered `409`: claimed already.
    pub already_claimed: u64,
    /// Refused (`400`/`401`/`403`): re-queue with `pep-server cloud retry` once fixed.
    pub rejected: u64,
    /// The latest error: serial and what the cloud (or the network) answered.
    pub last_error: Option<String>,
}

/// The cloud tile from the store.
async fn cloud_tile(store: &Store) -> Result<CloudTile, StoreError> {
    use crate::store::ClaimState;
    let stats = store.claim_stats().await?;
    let total: u64 = stats.claims.iter().sum();
    let last_error = store
        .last_claim_error()
        .await?
        .map(|e| format!("{}: {}", e.serial, e.last_error));
    Ok(CloudTile {
        enabled: store.queues_claims() || total > 0,
        claimed: stats.claims_in(ClaimState::Claimed),
        waiting: stats.claims_in(ClaimState::Pending) + stats.claims_in(ClaimState::Retrying),
        already_claimed: stats.claims_in(ClaimState::AlreadyClaimed),
        rejected: stats.claims_in(ClaimState::Rejected),
        last_error,
    })
}

/// One row of the attempts table (the `attempt` event, and the rows of `snapshot`).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorAttempt)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    /// When the attempt started (in progress) or ended, ms since the epoch.
    pub at: i64,
    /// The serial.
    pub serial: String,
    /// The gateway's FCC `ip:port`.
    pub gateway: String,
    /// `deployed`, `failed`, `interrupted`, `in_doubt`, `resolved` or `in_progress`.
    pub result: &'static str,
    /// FCC's ReturnStatus, when FCC answered with one.
    pub fcc_status: Option<u32>,
    /// Its name (`FCC_STATUS_…`).
    pub fcc_status_name: Option<&'static str>,
    /// Why it failed, in FCC's own words when FCC answered (its InfoMessage); empty otherwise.
    pub message: String,
    /// The complete recorded error (shown on hover).
    pub detail: String,
    /// Duration, ms (finished attempts).
    pub duration_ms: Option<i64>,
}

/// Everything the page shows (the `snapshot` event).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorSnapshot)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Counters and chart.
    #[serde(flatten)]
    pub live: Live,
    /// Offset of the factory's clock from UTC, minutes (`time.utc_offset`), for the times shown.
    pub offset_minutes: i32,
    /// The latest attempts, newest first.
    pub attempts: Vec<AttemptRow>,
    /// The open work orders' progress, oldest first (none without orders).
    pub orders: Vec<OrderProgress>,
}

/// Open work orders the page shows at most.
pub const SHOWN_ORDERS: u32 = 20;

/// One open work order's progress.
#[derive(utoipa::ToSchema)]
#[schema(as = FloorOrder)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderProgress {
    /// The order's ID.
    pub order_id: String,
    /// Serials expected.
    pub expected: u64,
    /// Deployed.
    pub deployed: u64,
    /// Failed (retryable).
    pub failed: u64,
    /// In progress now.
    pub in_progress: u64,
    /// In doubt.
    pub in_doubt: u64,
}

impl OrderProgress {
    /// Deployed as a whole percentage of expected (0 when nothing is expected).
    pub fn percent(&self) -> u64 {
        (self.deployed.saturating_mul(100))
            .checked_div(self.expected)
            .unwrap_or(0)
            .min(100)
    }
}

/// Midnight (ms since the epoch) of the day holding `now_ms`, in a clock `offset_min` from UTC.
pub fn day_start_ms(now_ms: i64, offset_min: i32) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let offset_ms = i64::from(offset_min) * 60_000;
    (now_ms + offset_ms).div_euclid(DAY_MS) * DAY_MS - offset_ms
}

fn rate(count: u64, minutes: u32) -> f64 {
    // Counts are far below 2^53: the conversion is exact.
    count as f64 / f64::from(minutes)
}

/// Computes the counters and the chart from the store.
pub async fn live(store: &Store, offset_min: i32) -> Result<Live, StoreError> {
    let now = now_ms();
    let stats = store.stats().await?;
    let today = store.outcome_counts(day_start_ms(now, offset_min)).await?;
    let last1 = store.outcome_counts(now - 60_000).await?;
    let last5 = store.outcome_counts(now - 5 * 60_000).await?;
    let last15 = store.outcome_counts(now - 15 * 60_000).await?;
    let current_minute = now.div_euclid(60_000);
    let first_minute = current_minute - (CHART_MINUTES as i64 - 1);
    let mut minutes = vec![MinuteBar::default(); CHART_MINUTES];
    for m in store.outcomes_per_minute(first_minute * 60_000).await? {
        if let Some(bar) = usize::try_from(m.minute - first_minute)
            .ok()
            .and_then(|i| minutes.get_mut(i))
        {
            *bar = MinuteBar {
                deployed: m.counts.deployed,
                failed: m.counts.failed,
            };
        }
    }
    Ok(Live {
        now,
        counters: Counters {
            deployed_today: today.deployed,
            deployed_total: stats.deployed,
            failed_today: today.failed,
            in_flight: stats.in_flight,
            in_doubt: stats.in_doubt,
            rate1: rate(last1.deployed, 1),
            rate5: rate(last5.deployed, 5),
            rate15: rate(last15.deployed, 15),
        },
        chart_start: first_minute * 60_000,
        minutes,
        cloud: cloud_tile(store).await?,
    })
}

/// The full snapshot: [`live`] plus the latest attempts.
pub async fn snapshot(store: &Store, offset_min: i32) -> Result<Snapshot, StoreError> {
    let live = live(store, offset_min).await?;
    let attempts = store
        .recent_outcomes(RECENT_ATTEMPTS)
        .await?
        .iter()
        .map(row_of_audit)
        .collect();
    let orders = store
        .open_orders(SHOWN_ORDERS)
        .await?
        .into_iter()
        .map(|o| OrderProgress {
            order_id: o.order_id.to_string(),
            expected: o.expected,
            deployed: o.deployed,
            failed: o.failed,
            in_progress: o.in_progress,
            in_doubt: o.in_doubt,
        })
        .collect();
    Ok(Snapshot {
        live,
        offset_minutes: offset_min,
        attempts,
        orders,
    })
}

/// The name (`FCC_STATUS_…`) of FCC's ReturnStatus.
pub fn status_name(status: Option<u32>) -> Option<&'static str> {
    status.map(|s| FccStatus::from_u32(s).name())
}

/// The text of an audit row's event (`attempt`, `deployed`, `failed`, `conflict`,
/// `interrupted`): every look at the event goes through here.
pub fn event_text(e: &AuditEntry) -> &str {
    e.event.as_str()
}

/// What to show of an audit row's detail: FCC's own words (its InfoMessage, stored in its own
/// column) when FCC answered, else the whole detail; `None` without either.
pub fn audit_message(e: &AuditEntry) -> Option<String> {
    shown_words(e.fcc.info.as_deref(), e.detail.as_deref())
}

/// FCC's InfoMessage when it gave one, else the error text.
fn shown_words(fcc_info: Option<&str>, detail: Option<&str>) -> Option<String> {
    fcc_info
        .filter(|info| !info.is_empty())
        .or(detail)
        .map(str::to_owned)
}

/// The result (the attempts table's `data-result`) of an audit event.
pub(super) fn result_of_event(event: &str) -> &'static str {
    match event {
        "deployed" => "deployed",
        "failed" => "failed",
        "interrupted" => "interrupted",
        "in_doubt" => "in_doubt",
        "resolved" => "resolved",
        "attempt" => "in_progress",
        "conflict" => "conflict",
        "refused" => "refused",
        "revoked" => "revoked",
        _ => "other",
    }
}

/// A table row from an outcome row of the audit trail.
pub fn row_of_audit(e: &AuditEntry) -> AttemptRow {
    let result = result_of_event(event_text(e));
    // A deployment needs no explanation (its detail is the enrollment ID).
    let (message, detail) = if result == "deployed" {
        (String::new(), String::new())
    } else {
        (
            audit_message(e).unwrap_or_default(),
            e.detail.clone().unwrap_or_default(),
        )
    };
    AttemptRow {
        at: e.at_ms,
        serial: e.serial.clone(),
        gateway: e.gateway.clone(),
        result,
        fcc_status: e.fcc.status,
        fcc_status_name: status_name(e.fcc.status),
        message,
        detail,
        duration_ms: e.duration_ms,
    }
}

/// A table row from a live event.
pub fn row_of_event(event: &ProvisionEvent) -> AttemptRow {
    match event {
        ProvisionEvent::Started(s) => AttemptRow {
            at: s.at_ms,
            serial: s.serial.clone(),
            gateway: s.gateway.to_string(),
            result: "in_progress",
            fcc_status: None,
            fcc_status_name: None,
            message: String::new(),
            detail: String::new(),
            duration_ms: None,
        },
        ProvisionEvent::Finished(f) => {
            let (result, fcc_status, message, detail) = match &f.outcome {
                AttemptOutcome::Deployed { .. } => {
                    ("deployed", Some(0), String::new(), String::new())
                }
                AttemptOutcome::Failed {
                    fcc_status,
                    message,
                    fcc_info,
                } => (
                    "failed",
                    fcc_status.map(FccStatus::as_u32),
                    shown_words(fcc_info.as_deref(), Some(message)).unwrap_or_default(),
                    message.clone(),
                ),
            };
            AttemptRow {
                at: f.at_ms,
                serial: f.serial.clone(),
                gateway: f.gateway.to_string(),
                result,
                fcc_status,
                fcc_status_name: status_name(fcc_status),
                message,
                detail,
                duration_ms: Some(f.duration_ms),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditEvent;

    #[test]
    fn offsets_and_midnight() {
        // 2026-11-28T18:00:00Z
        let t = 1_795_888_800_000;
        assert_eq!(day_start_ms(t, 0), 1_795_824_000_000);
        // At +08:00 it is already 02:00 on the 29th.
        assert_eq!(
            day_start_ms(t, 480),
            1_795_824_000_000 + 86_400_000 - 480 * 60_000
        );
    }

    #[test]
    fn fcc_words_are_the_info_message_column() {
        assert_eq!(
            shown_words(
                Some("Certificate expired:mbed.BootstrapDeviceCert"),
                Some("FCC at …")
            ),
            Some("Certificate expired:mbed.BootstrapDeviceCert".to_owned())
        );
        assert_eq!(
            shown_words(None, Some("closed without reply")),
            Some("closed without reply".to_owned())
        );
        assert_eq!(shown_words(Some(""), Some("x")), Some("x".to_owned()));
    }

    fn entry(event: AuditEvent, fcc_status: Option<u32>, detail: Option<&str>) -> AuditEntry {
        AuditEntry {
            id: 1,
            at_ms: 1_795_888_800_000,
            serial: "GW-1".into(),
            gateway: "127.0.0.1:4000".into(),
            requester: "line1".into(),
            event,
            fcc: crate::store::FccAnswer {
                status: fcc_status,
                info: detail
                    .and_then(|d| d.split_once("): "))
                    .map(|(_, info)| info.to_owned()),
                warnings: Vec::new(),
            },
            detail: detail.map(str::to_owned),
            duration_ms: Some(850),
        }
    }

    #[test]
    fn audit_rows_show_fccs_words_and_deployments_no_detail() {
        let failed = entry(
            AuditEvent::Failed,
            Some(13),
            Some("FCC rejected it with status 13 (FCC_STATUS_EXPIRED_CERTIFICATE): expired"),
        );
        assert_eq!(audit_message(&failed).as_deref(), Some("expired"));
        let row = row_of_audit(&failed);
        assert_eq!((row.result, row.message.as_str()), ("failed", "expired"));
        assert!(row.detail.starts_with("FCC rejected"));
        let deployed = row_of_audit(&entry(AuditEvent::Deployed, Some(0), Some("A-0123")));
        assert_eq!(deployed.result, "deployed");
        assert!(deployed.message.is_empty() && deployed.detail.is_empty());
        assert_eq!(
            row_of_audit(&entry(AuditEvent::Attempt, None, None)).result,
            "in_progress"
        );
        assert_eq!(audit_message(&entry(AuditEvent::Attempt, None, None)), None);
    }
}

/// One identity of a gateway as the search panel shows it (current or past).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLine {
    /// `deployed`, `revoked`, … (the store's state name).
    pub state: &'static str,
    /// Its enrollment ID.
    pub enrollment_id: Option<String>,
    /// Its certificate serial.
    pub cert_serial: Option<String>,
    /// Start of the attempt that provisioned it, ms since the epoch.
    pub created_at: i64,
    /// `keyCompromise by line-1@…: note`, when revoked.
    pub revoked: Option<(i64, String)>,
}

/// What the search panel shows of the gateway whose serial was searched exactly: its current
/// identity and every earlier one (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    /// The serial.
    pub serial: String,
    /// The current identity.
    pub current: IdentityLine,
    /// The earlier identities, newest first.
    pub past: Vec<IdentityLine>,
}

fn revoked_text(r: &crate::store::Revocation) -> (i64, String) {
    let mut text = format!("{} by {}", r.reason, r.by);
    if let Some(note) = &r.note {
        text.push_str(": ");
        text.push_str(note);
    }
    (r.at_ms, text)
}

/// The identity and history of `serial`, if the store has it.
pub async fn gateway_identity(
    store: &Store,
    serial: &str,
) -> Result<Option<GatewayIdentity>, StoreError> {
    let Some(current) = store.identity(serial).await? else {
        return Ok(None);
    };
    let past = store.history(serial).await?;
    Ok(Some(GatewayIdentity {
        serial: current.serial_number.clone(),
        current: IdentityLine {
            state: current.state.as_str(),
            enrollment_id: current.enrollment_id.clone(),
            cert_serial: current.cert_serial.clone(),
            created_at: current.created_at_ms,
            revoked: current.revocation.as_ref().map(revoked_text),
        },
        past: past
            .iter()
            .rev()
            .map(|p| IdentityLine {
                state: p.state.as_str(),
                enrollment_id: p.enrollment_id.clone(),
                cert_serial: Some(p.cert_serial.clone()),
                created_at: p.created_at_ms,
                revoked: p.revocation.as_ref().map(revoked_text),
            })
            .collect(),
    }))
}
