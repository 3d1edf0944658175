//! The factory-floor page's layout and update order in a real headless Chromium at 1280×720,
//! against the real `pep-server` binary and `fake-fcc` gateways:
//! - a 64-character serial (the longest endpoint name) stays inside its column, cut with an
//!   ellipsis, with the full value as the cell's tooltip — for a server-rendered row and for a row
//!   the script adds live;
//! - a failed row with FCC's longest words (a wire-status-9 answer) keeps its message to two lines,
//!   with the full text as the cell's tooltip;
//! - a new row never shows before the counters that count it: at the moment the row is inserted
//!   (a `MutationObserver` records the counters then), the counters already equal the database's.

use crate::floor_support;
use crate::http_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use floor_support::{Browser, READ_COUNTERS_JS, db_counters};
use http_support::{Options, READ, Server, dead_port, gateway};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn db_path(server: &Server) -> std::path::PathBuf {
    server.dir.path().join("pep.sqlite")
}

/// A valid endpoint name of exactly 64 characters (the maximum), of wide letters.
fn long_serial(prefix: &str) -> String {
    let serial = format!("{prefix}{}", "W".repeat(64 - prefix.len()));
    assert_eq!(serial.len(), 64);
    serial
}

/// Logs the browser in through the page's own form and waits until the live stream is on.
async fn open_floor(browser: &Browser, server: &Server) {
    browser.goto(&format!("{}/floor/", server.base)).await;
    browser
        .exec(
            "document.getElementById('token').value = arguments[0]; \
             document.querySelector('form').submit(); return true;",
            json!([READ]),
        )
        .await;
    browser
        .wait_for(
            "the live indicator",
            "var e = document.getElementById('live'); return !!e && e.classList.contains('on');",
            json!([]),
            WAIT,
        )
        .await;
}

/// The geometry of the serial cell of `serial`'s row, as the browser laid it out; `null` while the
/// row is not there.
const SERIAL_CELL_JS: &str = "\
    var tr = document.querySelector('#attempts tbody tr[data-serial=\"' + arguments[0] + '\"]'); \
    if (!tr) { return null; } \
    var td = tr.querySelector('td.serial'); \
    var cell = td.getBoundingClientRect(); \
    var next = td.nextElementSibling.getBoundingClientRect(); \
    var range = document.createRange(); range.selectNodeContents(td); \
    var text = range.getBoundingClientRect(); \
    var cs = getComputedStyle(td); \
    var clips = cs.overflowX !== 'visible'; \
    return { \
      cellRight: cell.right, nextLeft: next.left, textRight: text.right, \
      paintedRight: clips ? Math.min(text.right, cell.right) : text.right, \
      textOverflow: cs.textOverflow, title: td.title, text: td.textContent, \
      scrollWidth: td.scrollWidth, clientWidth: td.clientWidth, \
      rowHeight: tr.getBoundingClientRect().height, \
      lineHeight: parseFloat(cs.lineHeight) \
    };";

fn f(v: &Value, name: &str) -> f64 {
    v[name].as_f64().unwrap_or_else(|| panic!("{name} in {v}"))
}

/// Asserts that the 64-character serial's row keeps it inside its column.
fn assert_serial_inside_its_cell(serial: &str, g: &Value) {
    // The test means something: laid out in one line, the text is wider than the column.
    assert!(
        f(g, "textRight") > f(g, "cellRight") + 1.0,
        "the serial fits anyway; the test needs a longer one: {g}"
    );
    assert!(
        f(g, "scrollWidth") > f(g, "clientWidth"),
        "the serial is cut: {g}"
    );
    // What is painted ends inside the cell, before the gateway column starts.
    assert!(
        f(g, "paintedRight") <= f(g, "cellRight") + 0.5,
        "the serial runs out of its cell: {g}"
    );
    assert!(
        f(g, "paintedRight") <= f(g, "nextLeft") + 0.5,
        "the serial runs into the gateway column: {g}"
    );
    assert_eq!(g["textOverflow"], "ellipsis", "{g}");
    // The full value stays in the DOM and is the tooltip.
    assert_eq!(g["text"], serial);
    assert_eq!(g["title"], serial);
    // One line, not a wrapped block.
    assert!(
        f(g, "rowHeight") < 2.0 * f(g, "lineHeight") + 16.0,
        "the row wraps: {g}"
    );
}

#[tokio::test]
async fn a_64_character_serial_stays_inside_its_column() {
    let server = Server::start(Options::default()).await;
    let (gw, _gw) = gateway(Sessions::Forever, &[]).await;
    // Rendered by the server, before the page loads.
    let before = long_serial("GW-FLOOR-LATE-");
    let (status, body) = server.identity(&before, gw).await;
    assert_eq!(status, 200, "{body}");

    let browser = Browser::start(1280, 720).await;
    open_floor(&browser, &server).await;
    let g = browser
        .wait_for(
            "the server-rendered row",
            SERIAL_CELL_JS,
            json!([before]),
            WAIT,
        )
        .await;
    assert_serial_inside_its_cell(&before, &g);

    // Added by the script while the page is open.
    let live = long_serial("GW-FLOOR-LIVE-");
    let (status, body) = server.identity(&live, gw).await;
    assert_eq!(status, 200, "{body}");
    let g = browser
        .wait_for(
            "the live row",
            &format!(
                "var tr = document.querySelector('#attempts tbody tr[data-serial=\"' + arguments[0] + '\"]'); \
                 if (!tr || tr.getAttribute('data-result') !== 'deployed') {{ return null; }} {SERIAL_CELL_JS}"
            ),
            json!([live]),
            WAIT,
        )
        .await;
    assert_serial_inside_its_cell(&live, &g);
    browser.quit().await;
}

/// The geometry of the FCC cell of `serial`'s row once it has failed; `null` before.
const FCC_CELL_JS: &str = "\
    var tr = document.querySelector('#attempts tbody tr[data-serial=\"' + arguments[0] + '\"]'); \
    if (!tr || tr.getAttribute('data-result') !== 'failed') { return null; } \
    var td = tr.querySelector('td.fcc'); var msg = td.querySelector('.msg'); \
    var cs = getComputedStyle(msg); \
    return { \
      rowHeight: tr.getBoundingClientRect().height, lineHeight: parseFloat(cs.lineHeight), \
      msgHeight: msg.getBoundingClientRect().height, \
      scrollHeight: msg.scrollHeight, clientHeight: msg.clientHeight, \
      text: msg.textContent, title: td.title \
    };";

#[tokio::test]
async fn a_wire_status_9_row_keeps_its_message_to_two_lines() {
    let server = Server::start(Options::default()).await;
    let (gw, _gw) = gateway(Sessions::Forever, &[FaultKind::WireStatus9]).await;
    // Rendered by the server, before the page loads, and then added live by the script.
    let (status, body) = server.identity("GW-WIRE9-EARLY", gw).await;
    assert_eq!(status, 502, "{body}");

    let browser = Browser::start(1280, 720).await;
    open_floor(&browser, &server).await;
    let early = browser
        .wait_for(
            "the server-rendered row",
            FCC_CELL_JS,
            json!(["GW-WIRE9-EARLY"]),
            WAIT,
        )
        .await;
    let (status, body) = server.identity("GW-WIRE9-LIVE", gw).await;
    assert_eq!(status, 502, "{body}");
    let live = browser
        .wait_for("the live row", FCC_CELL_JS, json!(["GW-WIRE9-LIVE"]), WAIT)
        .await;
    browser.quit().await;

    for g in [early, live] {
        // The test means something: the whole message does not fit in two lines.
        assert!(
            f(&g, "scrollHeight") > f(&g, "clientHeight") + 1.0,
            "the message fits anyway; the test needs a longer one: {g}"
        );
        assert!(
            f(&g, "msgHeight") <= 2.0 * f(&g, "lineHeight") + 1.0,
            "the message takes more than two lines: {g}"
        );
        // Status line + two message lines + padding: not an eight-line block.
        assert!(
            f(&g, "rowHeight") <= 3.0 * f(&g, "lineHeight") + 16.0,
            "the row is too tall: {g}"
        );
        // Nothing is lost: the full text is in the DOM and the tooltip has FCC's words.
        let text = g["text"].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "{g}");
        assert!(!g["title"].as_str().unwrap_or_default().is_empty(), "{g}");
    }
}

/// Records, for every row the page inserts, the counters shown at that moment (a
/// `MutationObserver` callback runs right after the script's update, before the browser paints).
const OBSERVE_JS: &str = "\
    window.__inserted = []; \
    var read = function () { READ_COUNTERS }; \
    new MutationObserver(function (mutations) { \
      mutations.forEach(function (m) { \
        Array.prototype.forEach.call(m.addedNodes, function (n) { \
          if (n.nodeType === 1 && n.hasAttribute('data-serial')) { \
            window.__inserted.push({ serial: n.getAttribute('data-serial'), \
              result: n.getAttribute('data-result'), counters: read() }); \
          } \
        }); \
      }); \
    }).observe(document.querySelector('#attempts tbody'), { childList: true }); \
    return true;";

#[tokio::test]
async fn a_new_row_appears_with_the_counters_that_count_it() {
    let server = Server::start(Options {
        connect_timeout_ms: 1_000,
        ..Options::default()
    })
    .await;
    let (gw, _gw) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("GW-COUNT-0", gw).await;
    assert_eq!(status, 200, "{body}");

    let browser = Browser::start(1280, 720).await;
    open_floor(&browser, &server).await;
    browser
        .exec(
            &OBSERVE_JS.replace("READ_COUNTERS", READ_COUNTERS_JS),
            json!([]),
        )
        .await;

    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port());
    let cases = [
        ("GW-COUNT-1", gw, 200, "deployed"),
        ("GW-COUNT-2", dead, 504, "failed"),
        ("GW-COUNT-3", gw, 200, "deployed"),
    ];
    for (serial, target, want_status, result) in cases {
        let (status, body) = server.identity(serial, target).await;
        assert_eq!(status, want_status, "{serial}: {body}");
        // Nothing else happens meanwhile: what the database counts now is what the row's update
        // must show.
        let expected = db_counters(&db_path(&server)).await;
        let shown = browser
            .wait_for(
                &format!("the {result} row of {serial}"),
                "var serial = arguments[0], result = arguments[1]; \
                 var hit = window.__inserted.filter(function (r) { \
                   return r.serial === serial && r.result === result; }); \
                 return hit.length ? hit[0].counters : null;",
                json!([serial, result]),
                WAIT,
            )
            .await;
        assert_eq!(
            shown,
            expected.as_json(),
            "{serial}: the counters when its row appeared vs the database"
        );
    }
    browser.quit().await;
}
