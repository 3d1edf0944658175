//! The floor page's HTML, rendered with `maud`: every value is escaped by construction, and only
//! the embedded style sheet and script are inserted as they are. The element ids, classes and data
//! attributes are what the page's script and style sheet (and the tests) look for.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use maud::{Markup, PreEscaped, html};
use sha2::{Digest, Sha256};

use super::view::{
    AttemptRow, CHART_MINUTES, CloudTile, GatewayIdentity, IdentityLine, Live, OrderProgress,
    Snapshot, result_of_event,
};
use crate::http::error::ApiError;
use crate::http::read::AuditRow;

/// The page's style sheet.
pub const FLOOR_CSS: &str = include_str!("../../../assets/floor/floor.css");
/// The page's script.
pub const FLOOR_JS: &str = include_str!("../../../assets/floor/floor.js");

/// Written as it was before `maud` (`maud::DOCTYPE` spells it in capitals).
const DOCTYPE: PreEscaped<&str> = PreEscaped("<!doctype html>\n");

fn sha256_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Only the embedded style and script may apply; the script may only talk to this server.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        sha256_source(FLOOR_CSS),
        sha256_source(FLOOR_JS)
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// An HTML answer with the page's security headers.
pub(super) fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut body = page.into_string();
    body.push('\n');
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `HH:MM:SS` of `ms` in a clock `offset_min` from UTC.
pub fn clock(ms: i64, offset_min: i32) -> String {
    let local_s = (ms + i64::from(offset_min) * 60_000).div_euclid(1000);
    let day_s = local_s.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        day_s / 3600,
        day_s / 60 % 60,
        day_s % 60
    )
}

/// `850 ms`, `1.2 s`, `1 min 05 s`.
pub fn duration_text(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60)
    }
}

/// Badge text of a result: a symbol and a word, so status never relies on colour alone.
pub fn result_label(result: &str) -> &'static str {
    match result {
        "deployed" => "✔ Deployed",
        "failed" => "✖ Failed",
        "interrupted" => "✖ Interrupted",
        "in_doubt" => "⚠ In doubt",
        "resolved" => "✔ Resolved",
        "in_progress" => "⟳ In progress",
        "attempt" => "→ Attempt",
        "conflict" => "⚠ Conflict",
        "refused" => "⛔ Refused address",
        "revoked" => "⛔ Revoked",
        _ => "• Other",
    }
}

fn status_text(status: Option<u32>, name: Option<&str>) -> String {
    match (status, name) {
        (Some(s), Some(n)) => format!("{s} {}", n.trim_start_matches("FCC_STATUS_")),
        (Some(s), None) => s.to_string(),
        _ => "—".to_owned(),
    }
}

/// One row of the attempts table.
fn attempt_row(r: &AttemptRow, offset: i32) -> Markup {
    html! {
        tr class={ "r-" (r.result) } data-serial=(r.serial) data-result=(r.result) {
            td class="t" { (clock(r.at, offset)) }
            td class="serial" { (r.serial) }
            td class="gw" { (r.gateway) }
            td { span class={ "badge " (r.result) } { (result_label(r.result)) } }
            td class="fcc" title=(r.detail) {
                span class="st" { (status_text(r.fcc_status, r.fcc_status_name)) }
                span class="msg" { (r.message) }
            }
            td class="dur" { (r.duration_ms.map(duration_text).unwrap_or_default()) }
        }
    }
}

/// The last hour as an SVG bar chart, and its text for screen readers.
fn chart(live: &Live, offset: i32) -> Markup {
    // viewBox units: one bar slot is 10 wide; the tallest bar is 100 high.
    let peak = live
        .minutes
        .iter()
        .map(|m| m.deployed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let deployed: u64 = live.minutes.iter().map(|m| m.deployed).sum();
    let failed: u64 = live.minutes.iter().map(|m| m.failed).sum();
    html! {
        svg id="chart" viewBox={ "0 0 " (CHART_MINUTES * 10) " 100" } preserveAspectRatio="none"
            role="img" aria-labelledby="chart-text" {
            @for (i, m) in live.minutes.iter().enumerate() {
                @let x = i * 10 + 1;
                @let ok_h = m.deployed * 100 / peak;
                @let bad_h = m.failed * 100 / peak;
                @let minute_at = live.chart_start + i as i64 * 60_000;
                g {
                    title {
                        (clock(minute_at, offset).get(..5).unwrap_or_default()) " — "
                        (m.deployed) " deployed, " (m.failed) " failed"
                    }
                    @if ok_h > 0 {
                        rect class="ok" x=(x) y=(100 - ok_h) width="8" height=(ok_h) {}
                    }
                    @if bad_h > 0 {
                        rect class="bad" x=(x) y=(100 - ok_h - bad_h) width="8" height=(bad_h) {}
                    }
                }
            }
        }
        p class="sub" id="chart-text" {
            "Last hour: " (deployed) " deployed, " (failed) " failed; peak " (peak) "/min"
        }
    }
}

/// The search result: every audit row of the matching gateways.
fn history(rows: &[AuditRow], offset: i32) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="empty" { "No attempt recorded for this serial." }
        } @else {
            // Two columns only: the panel is narrow, so each row stacks event, serial, status and
            // detail.
            table class="history" {
                (column_heads(&["Time", "Event"]))
                tbody {
                    @for r in rows {
                        @let kind = match result_of_event(&r.event) {
                            "in_progress" => "attempt",
                            other => other,
                        };
                        tr class={ "r-" (kind) } data-serial=(r.serial) {
                            td class="t" { (clock(r.at, offset)) }
                            td {
                                span class={ "badge " (kind) } { (result_label(kind)) }
                                " "
                                span class="serial" { (r.serial) }
                                span class="st" {
                                    @if r.fcc_status.is_some() {
                                        (status_text(r.fcc_status, r.fcc_status_name))
                                    }
                                }
                                span class="msg" title=(r.detail.as_deref().unwrap_or("")) {
                                    (r.message.as_deref().unwrap_or(""))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The searched gateway's identities: the current one first, then the earlier ones.
fn identities(g: &GatewayIdentity, offset: i32) -> Markup {
    let line = |l: &IdentityLine, which: &str| {
        html! {
            tr class={ "r-" (l.state) } {
                td class="t" { (which) }
                td {
                    span class={ "badge " (l.state) } { (result_label(l.state)) }
                    " "
                    span class="serial" { (l.enrollment_id.as_deref().unwrap_or("-")) }
                    span class="st" {
                        "certificate " (l.cert_serial.as_deref().unwrap_or("-"))
                        ", provisioned " (clock(l.created_at, offset))
                    }
                    @if let Some((at, text)) = &l.revoked {
                        span class="msg" { "revoked " (clock(*at, offset)) " (" (text) ")" }
                    }
                }
            }
        }
    };
    html! {
        table class="history identities" data-serial=(g.serial) {
            caption { "Identities of " (g.serial) }
            (column_heads(&["Identity", "State"]))
            tbody {
                (line(&g.current, "current"))
                @for p in &g.past {
                    (line(p, "earlier"))
                }
            }
        }
    }
}

/// The `head` of both pages: `title`, the embedded style sheet and, for a page that shows data,
/// a refresh every 30 s when scripts are off (with them, the event stream keeps it current).
/// The "Cloud" tile: claimed, waiting, refused, and the latest error.
fn cloud_tile(c: &CloudTile) -> Markup {
    let class = if c.rejected > 0 { "tile bad" } else { "tile" };
    tile(
        class,
        "Cloud",
        "c-cloud-claimed",
        c.claimed,
        html! {
            "claimed · waiting " span id="c-cloud-waiting" { (c.waiting) }
            " · already " span id="c-cloud-already" { (c.already_claimed) }
            " · rejected " span id="c-cloud-rejected" { (c.rejected) }
            @if let Some(error) = &c.last_error {
                br;
                span id="c-cloud-error" class="sub" title=(error) { "last error: " (error) }
            }
        },
    )
}

/// The head of a table: one column header (`th scope="col"`) per name, in order.
fn column_heads(names: &[&str]) -> Markup {
    html! {
        thead { tr { @for name in names { th scope="col" { (name) } } } }
    }
}

/// One counter tile: its title, the big number (`id` for the live update) and a line below.
fn tile(class: &str, title: &str, id: &str, value: impl maud::Render, sub: Markup) -> Markup {
    html! {
        div class=(class) {
            h2 { (title) }
            p class="big" id=(id) { (value) }
            p class="sub" { (sub) }
        }
    }
}

fn head(title: &str, refresh_without_script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) }
            @if refresh_without_script {
                noscript { meta http-equiv="refresh" content="30"; }
            }
            style { (PreEscaped(FLOOR_CSS)) }
        }
    }
}

/// The open work orders' progress: deployed of expected, with a bar.
fn orders(orders: &[OrderProgress]) -> Markup {
    html! {
        section class="orders" id="orders" aria-labelledby="orders-h" {
            h2 id="orders-h" { "Open work orders" }
            table {
                (column_heads(&[
                    "Order",
                    "Deployed",
                    "Expected",
                    "Failed",
                    "In progress",
                    "In doubt",
                    "Progress",
                ]))
                tbody {
                    @for o in orders {
                        tr data-order=(o.order_id) {
                            td { (o.order_id) }
                            td class="num" { (o.deployed) }
                            td class="num" { (o.expected) }
                            td class="num" { (o.failed) }
                            td class="num" { (o.in_progress) }
                            td class="num" { (o.in_doubt) }
                            td {
                                progress max="100" value=(o.percent()) { (o.percent()) "%" }
                                " " (o.percent()) "%"
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The whole page for `snap`, with the search box holding `wanted` and its result.
pub fn page(
    snap: &Snapshot,
    wanted: Option<&str>,
    search_result: Option<&Result<Vec<AuditRow>, ApiError>>,
    gateway: Option<&GatewayIdentity>,
    ca_unavailable: Option<&str>,
    logout_csrf: Option<&str>,
) -> Markup {
    let live = &snap.live;
    let c = &live.counters;
    let offset = snap.offset_minutes;
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("pep · factory floor", true))
            body data-offset-minutes=(offset) data-now=(live.now) {
                header class="bar" {
                    h1 { "pep " span { "factory floor" } }
                    p id="live" class="live snapshot" role="status" {
                        span class="dot" aria-hidden="true" {}
                        span id="live-text" {
                            "Snapshot of " (clock(live.now, offset)) " (refreshes every 30 s)"
                        }
                    }
                    nav {
                        a class="btn" href="/v3/enrollment-ids.csv" download {
                            "⬇ Enrollment IDs (CSV)"
                        }
                        a class="btn" href="/v3/inventory.json" download { "⬇ Inventory (JSON)" }
                        form method="post" action="/floor/logout" {
                            input type="hidden" name="csrf" value=(logout_csrf.unwrap_or(""));
                            button type="submit" class="btn quiet" { "Log out" }
                        }
                    }
                }
                @if let Some(problem) = ca_unavailable {
                    // The CA key's token is away: the line cannot provision until it is back.
                    p id="ca-unavailable" class="problem" role="alert" {
                        "CA unavailable: " (problem)
                    }
                }
                main {
                    section class="counters" aria-label="Counters" {
                        (tile("tile good", "Deployed today", "c-deployed-today", c.deployed_today,
                            html! { "total " span id="c-deployed-total" { (c.deployed_total) } }))
                        (tile("tile bad", "Failed today", "c-failed-today", c.failed_today,
                            html! { "attempts, retryable" }))
                        (tile("tile busy", "In flight", "c-in-flight", c.in_flight,
                            html! { "injecting now" }))
                        (tile("tile bad", "In doubt", "c-in-doubt", c.in_doubt,
                            html! { "may be on the gateway: resolve" }))
                        (tile("tile", "Per minute", "c-rate1", format!("{:.1}", c.rate1), html! {
                            "5 min " span id="c-rate5" { (format!("{:.1}", c.rate5)) }
                            " · 15 min " span id="c-rate15" { (format!("{:.1}", c.rate15)) }
                        }))
                        @if live.cloud.enabled {
                            (cloud_tile(&live.cloud))
                        }
                        div class="tile chart" {
                            h2 { "Last hour, per minute" }
                            (chart(live, offset))
                        }
                    }
                    @if !snap.orders.is_empty() {
                        (orders(&snap.orders))
                    }
                    div class="cols" {
                        section class="attempts" aria-labelledby="attempts-h" {
                            h2 id="attempts-h" { "Latest attempts " span class="sub" { "newest first" } }
                            div class="scroll" {
                                table id="attempts" {
                                    (column_heads(&[
                                        "Time",
                                        "Serial",
                                        "Gateway",
                                        "Result",
                                        "FCC status and message",
                                        "Took",
                                    ]))
                                    tbody {
                                        @for r in &snap.attempts { (attempt_row(r, offset)) }
                                    }
                                }
                                @if snap.attempts.is_empty() {
                                    p class="empty" id="no-attempts" { "No attempt yet." }
                                }
                            }
                        }
                        section class="search" aria-labelledby="search-h" {
                            h2 id="search-h" { "Find a gateway" }
                            form id="search" method="get" action="/floor/" role="search" {
                                label for="serial" { "Serial number or its beginning" }
                                div class="row" {
                                    input id="serial" name="serial" value=(wanted.unwrap_or(""))
                                        autocomplete="off" spellcheck="false";
                                    button type="submit" class="btn" { "Search" }
                                }
                            }
                            @if let Some(g) = gateway {
                                div id="identity" { (identities(g, offset)) }
                            }
                            div id="history" aria-live="polite" {
                                @match search_result {
                                    None => p class="hint" {
                                        "Shows every attempt of the matching gateways from the audit trail."
                                    },
                                    Some(Err(e)) => p class="problem" { (e.message()) },
                                    Some(Ok(rows)) => (history(rows, offset)),
                                }
                            }
                        }
                    }
                }
                script { (PreEscaped(FLOOR_JS)) }
            }
        }
    }
}

/// The login page (401/403): a form with its CSRF token and, maybe, why the last try failed. No
/// data at all.
pub fn login(problem: Option<&str>, csrf: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("pep · factory floor · log in", false))
            body class="login" {
                main {
                    h1 { "pep " span { "factory floor" } }
                    form method="post" action="/floor/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        label for="token" { "Access token (read role)" }
                        input id="token" name="token" type="password"
                            autocomplete="current-password" required autofocus;
                        button type="submit" { "Log in" }
                    }
                    @if let Some(problem) = problem {
                        p class="problem" role="alert" {
                            span aria-hidden="true" { "✖ " }
                            (problem)
                        }
                    }
                    p class="hint" {
                        "Ask the pep administrator for a token with the read role. Scripts send "
                        code { "Authorization: Bearer <token>" }
                        " instead."
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::floor::view::{Counters, MinuteBar};

    #[test]
    fn clock_and_durations() {
        // 2026-11-28T18:00:00Z
        let t = 1_795_888_800_000;
        assert_eq!(clock(t, 0), "18:00:00");
        assert_eq!(clock(t, 330), "23:30:00");
        assert_eq!(clock(t, -840), "04:00:00");
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(1250), "1.2 s");
        assert_eq!(duration_text(65_000), "1 min 05 s");
    }

    fn snapshot(attempts: Vec<AttemptRow>) -> Snapshot {
        Snapshot {
            live: Live {
                now: 1_795_888_800_000,
                counters: Counters {
                    deployed_today: 3,
                    deployed_total: 7,
                    failed_today: 1,
                    in_flight: 0,
                    in_doubt: 0,
                    rate1: 1.0,
                    rate5: 0.4,
                    rate15: 0.25,
                },
                chart_start: 1_795_888_800_000 - 59 * 60_000,
                minutes: vec![
                    MinuteBar {
                        deployed: 2,
                        failed: 1
                    };
                    CHART_MINUTES
                ],
                cloud: CloudTile {
                    enabled: true,
                    claimed: 5,
                    waiting: 2,
                    already_claimed: 0,
                    rejected: 1,
                    last_error: Some(HOSTILE.to_owned()),
                },
            },
            offset_minutes: 0,
            attempts,
            orders: Vec::new(),
        }
    }

    const HOSTILE: &str = "<script>alert(\"x\")</script>&'";

    #[test]
    fn values_are_escaped_embedded_assets_are_not() {
        let row = AttemptRow {
            at: 1_795_888_800_000,
            serial: HOSTILE.into(),
            gateway: HOSTILE.into(),
            result: "failed",
            fcc_status: Some(13),
            fcc_status_name: Some("FCC_STATUS_EXPIRED_CERTIFICATE"),
            message: HOSTILE.into(),
            detail: HOSTILE.into(),
            duration_ms: Some(1250),
        };
        let search = Ok(vec![AuditRow {
            id: 1,
            at: 1_795_888_800_000,
            serial: HOSTILE.into(),
            gateway: HOSTILE.into(),
            requester: HOSTILE.into(),
            event: "failed".into(),
            fcc_status: None,
            fcc_status_name: None,
            detail: Some(HOSTILE.into()),
            message: Some(HOSTILE.into()),
            duration_ms: None,
        }]);
        let html = page(
            &snapshot(vec![row]),
            Some(HOSTILE),
            Some(&search),
            None,
            None,
            None,
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;'"));
        assert!(html.contains(
            "<tr class=\"r-failed\" data-serial=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;'\" data-result=\"failed\"><td class=\"t\">18:00:00</td>"
        ));
        assert!(html.contains("<span class=\"st\">13 EXPIRED_CERTIFICATE</span>"));
        // The assets go in as they are: their hashes are what the CSP allows.
        assert!(html.contains(&format!("<style>{FLOOR_CSS}</style>")));
        assert!(html.contains(&format!("<script>{FLOOR_JS}</script>")));
        assert!(
            html.starts_with("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        );

        let login = login(Some(HOSTILE), "00").into_string();
        assert!(login.contains("✖ </span>&lt;script&gt;"), "{login}");
        assert!(login.contains("<code>Authorization: Bearer &lt;token&gt;</code>"));
    }

    #[test]
    fn chart_bars_and_text() {
        let html = chart(&snapshot(Vec::new()).live, 0).into_string();
        assert_eq!(html.matches("<rect class=\"ok\"").count(), CHART_MINUTES);
        assert_eq!(html.matches("<rect class=\"bad\"").count(), CHART_MINUTES);
        // Peak 3 per minute: 2 deployed are 66 high from y=34, 1 failed is 33 high on top of them.
        assert!(html.contains(
            "<g><title>17:01 — 2 deployed, 1 failed</title><rect class=\"ok\" x=\"1\" y=\"34\" width=\"8\" height=\"66\"></rect><rect class=\"bad\" x=\"1\" y=\"1\" width=\"8\" height=\"33\"></rect></g>"
        ), "{html}");
        assert!(html.ends_with(
            "<p class=\"sub\" id=\"chart-text\">Last hour: 120 deployed, 60 failed; peak 3/min</p>"
        ));
    }
}
