//! Work orders (issue #17) end to end: the real `pep-server` binary on 127.0.0.1 with a SQLite
//! file, real `fake-fcc` gateways, and the order API (`/v3/orders`, JSON and streamed CSV).

use crate::http_support;

use std::net::SocketAddr;

use http_support::{BOTH, Options, PROV, READ, Server, config_toml, gateway, identity_path};
use serde_json::{Value, json};

/// Token with the `plan` role only.
const PLAN: &str = "test-token-plan-0123456789";

/// A server whose config adds a `plan` token and `[orders] required = {required}`.
async fn server(required: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = config_toml(dir.path(), &Options::default());
    toml.push_str(&format!(
        "\n[[tokens]]\nname = \"planner\"\ntoken = \"{PLAN}\"\nroles = [\"plan\"]\n\n\
         [orders]\nrequired = {required}\n"
    ));
    std::fs::write(dir.path().join("pep.toml"), toml).unwrap();
    Server::start_in(dir).await
}

async fn post_json(s: &Server, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = s
        .client
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {e}: {text}")),
    )
}

async fn upload(s: &Server, order: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = s
        .client
        .post(format!("{}/v3/orders/{order}/serials", s.base))
        .bearer_auth(PLAN)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {e}: {text}")),
    )
}

async fn order(s: &Server, id: &str) -> Value {
    let (status, body) = s.get_json(&format!("/v3/orders/{id}"), Some(READ)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The stored row of `serial` (deployed), as `GET /v3/identities?state=deployed` lists it.
async fn deployed_row(s: &Server, serial: &str) -> Value {
    let (status, page) = s
        .get_json("/v3/identities?state=deployed&limit=1000", Some(READ))
        .await;
    assert_eq!(status, 200, "{page}");
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["serialNumber"] == serial)
        .unwrap_or_else(|| panic!("{serial} is not deployed: {page}"))
        .clone()
}

async fn provision(s: &Server, serial: &str, gw: SocketAddr) -> (u16, Value) {
    s.identity(serial, gw).await
}

fn wo_1() -> Value {
    json!({
        "orderId": "WO-2612-01",
        "product": {"hardwareVersion": "rev-b", "category": "development", "radioConfig": "07"},
        "serials": ["GW-LISTED-1", "GW-LISTED-2"],
        "ranges": [{"prefix": "GW-R-", "from": 1, "to": 50, "width": 4}],
    })
}

#[tokio::test]
async fn roles_guard_the_order_routes() {
    let s = server(false).await;
    for token in [READ, PROV] {
        let (status, body) = post_json(&s, "/v3/orders", token, &wo_1()).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, _) = post_json(&s, "/v3/orders", PLAN, &wo_1()).await;
    assert_eq!(status, 201);
    // Reading needs `read`; closing and uploading need `plan`.
    let (status, _) = s.get_text("/v3/orders", Some(PLAN)).await;
    assert_eq!(status, 403);
    let r = s
        .client
        .post(format!("{}/v3/orders/WO-2612-01/close", s.base))
        .bearer_auth(BOTH)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = s
        .client
        .post(format!("{}/v3/orders/WO-2612-01/serials", s.base))
        .bearer_auth(READ)
        .header("content-type", "text/csv")
        .body("GW-X-1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, _) = s.get_text("/v3/orders", None).await;
    assert_eq!(status, 401);
    // The routes are in the OpenAPI document.
    let (_, doc) = s.get_json("/docs/openapi.json", None).await;
    for path in [
        "/v3/orders",
        "/v3/orders/{orderId}",
        "/v3/orders/{orderId}/serials",
        "/v3/orders/{orderId}/close",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not documented");
    }
}

#[tokio::test]
async fn required_orders_admit_their_serials_with_the_order_product() {
    let s = server(true).await;
    let (status, created) = post_json(&s, "/v3/orders", PLAN, &wo_1()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["expected"], 52);
    assert_eq!(created["state"], "open");
    assert_eq!(created["createdBy"], "planner");
    assert_eq!(created["product"]["hardwareVersion"], "rev-b");
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;

    // A serial in no order: 403 naming the rule, audited, nothing reserved.
    let (status, body) = provision(&s, "GW-UNKNOWN-1", gw).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "orders.required");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no open work order"),
        "{body}"
    );
    let (_, audit) = s
        .get_json("/v3/audit?serialPrefix=GW-UNKNOWN-1", Some(READ))
        .await;
    assert_eq!(audit["entries"][0]["event"], "refused", "{audit}");
    let (status, _) = s
        .get_text("/v3/enrollment-id?serialNumber=GW-UNKNOWN-1", Some(READ))
        .await;
    assert_eq!(status, 404);

    // A listed serial: the order's product; a field of the request still wins.
    let (status, id) = provision(&s, "GW-LISTED-1", gw).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["hardwareVersion"], "rev-b");
    assert_eq!(id["category"], "development");
    assert_eq!(id["radioConfig"], "07");
    assert_eq!(
        id["ledConfig"], "01",
        "[defaults] fills what the order leaves"
    );
    let row = deployed_row(&s, "GW-LISTED-1").await;
    assert_eq!(
        (
            &row["hardwareVersion"],
            &row["category"],
            &row["radioConfig"]
        ),
        (&json!("rev-b"), &json!("development"), &json!("07"))
    );
    let path = format!("{}&radioConfig=09", identity_path("GW-LISTED-2", gw));
    let (status, id) = s.get_json(&path, Some(BOTH)).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(
        (&id["radioConfig"], &id["hardwareVersion"]),
        (&json!("09"), &json!("rev-b"))
    );
    assert_eq!(deployed_row(&s, "GW-LISTED-2").await["radioConfig"], "09");

    // Ranges: the prefix, the width, the bounds.
    let (status, id) = provision(&s, "GW-R-0001", gw).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["hardwareVersion"], "rev-b");
    for out in [
        "GW-R-0051",
        "GW-R-0000",
        "GW-R-01",
        "GW-R-00002",
        "GW-R-000A",
    ] {
        let (status, body) = provision(&s, out, gw).await;
        assert_eq!(
            (status, &body["rule"]),
            (403, &json!("orders.required")),
            "{out}: {body}"
        );
    }

    // The order's progress counts its identities (the order ID is on their rows).
    let o = order(&s, "WO-2612-01").await;
    assert_eq!(
        (&o["expected"], &o["deployed"], &o["failed"]),
        (&json!(52), &json!(3), &json!(0))
    );

    // Closed: its serials are refused.
    let r = s
        .client
        .post(format!("{}/v3/orders/WO-2612-01/close", s.base))
        .bearer_auth(PLAN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let closed: Value = r.json().await.unwrap();
    assert_eq!(closed["state"], "closed");
    assert!(closed["closedAt"].is_i64(), "{closed}");
    let (status, body) = provision(&s, "GW-R-0002", gw).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "order_closed");
    assert!(
        body["error"].as_str().unwrap().contains("WO-2612-01"),
        "{body}"
    );
    // No upload to a closed order.
    let (status, body) = upload(&s, "WO-2612-01", "GW-LATE-1\n").await;
    assert_eq!(status, 409, "{body}");

    let (status, list) = s.get_json("/v3/orders", Some(READ)).await;
    assert_eq!(status, 200);
    assert_eq!(list["orders"][0]["orderId"], "WO-2612-01");
    assert_eq!(list["orders"][0]["deployed"], 3);
}

#[tokio::test]
async fn without_required_orders_any_serial_still_provisions_and_orders_apply() {
    let s = server(false).await;
    let (status, _) = post_json(&s, "/v3/orders", PLAN, &wo_1()).await;
    assert_eq!(status, 201);
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    let (status, id) = provision(&s, "GW-FREE-1", gw).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["hardwareVersion"], "arm-pelion-edge-gateway");
    let (status, id) = provision(&s, "GW-R-0007", gw).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["hardwareVersion"], "rev-b");
    assert_eq!(order(&s, "WO-2612-01").await["deployed"], 1);
}

#[tokio::test]
async fn bad_orders_are_refused_naming_what_was_wrong() {
    let s = server(false).await;
    for (body, status, needle) in [
        (json!({"orderId": "WO 1"}), 400, "orderId"),
        (
            json!({"orderId": "WO-1", "serials": ["GW-1", "bad*serial"]}),
            400,
            "serials[1]",
        ),
        (
            json!({"orderId": "WO-1", "serials": ["GW-1", "GW-1"]}),
            400,
            "repeats serials[0]",
        ),
        (
            json!({"orderId": "WO-1", "ranges": [{"prefix": "A-", "from": 1, "to": 1000, "width": 3}]}),
            400,
            "ranges[0].width",
        ),
        (
            json!({"orderId": "WO-1", "ranges": [{"prefix": "A-", "from": 5, "to": 1}]}),
            400,
            "ranges[0].from",
        ),
        (
            json!({"orderId": "WO-1", "product": {"category": "staging"}}),
            400,
            "product.category",
        ),
        (
            json!({"orderId": "WO-1", "product": {"apiAddress": "ftp://x"}}),
            400,
            "product.apiAddress",
        ),
        (
            json!({"orderId": "WO-1", "product": {"colour": "red"}}),
            400,
            "colour",
        ),
        (json!({"orderId": "WO-1", "extra": 1}), 400, "extra"),
    ] {
        let (got, answer) = post_json(&s, "/v3/orders", PLAN, &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{body}: {answer}"
        );
    }
    // More serials than JSON takes; a body over 1 MiB.
    let many: Vec<String> = (0..10_001).map(|i| format!("GW-M-{i}")).collect();
    let (status, answer) = post_json(
        &s,
        "/v3/orders",
        PLAN,
        &json!({"orderId": "WO-M", "serials": many}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("text/csv"),
        "{answer}"
    );
    let huge: Vec<String> = (0..12_000)
        .map(|i| format!("GW-{i}-{}", "x".repeat(100)))
        .collect();
    let r = s
        .client
        .post(format!("{}/v3/orders", s.base))
        .bearer_auth(PLAN)
        .json(&json!({"orderId": "WO-H", "serials": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Nothing of them was stored.
    let (_, list) = s.get_json("/v3/orders", Some(READ)).await;
    assert_eq!(list["orders"], json!([]));

    let (status, _) = post_json(&s, "/v3/orders", PLAN, &wo_1()).await;
    assert_eq!(status, 201);
    let (status, body) = post_json(&s, "/v3/orders", PLAN, &wo_1()).await;
    assert_eq!(status, 409, "{body}");
    // A serial of another order; a range overlapping an open order's: 409, nothing stored.
    let (status, body) = post_json(
        &s,
        "/v3/orders",
        PLAN,
        &json!({"orderId": "WO-2", "serials": ["GW-NEW-1", "GW-LISTED-2"]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("WO-2612-01"),
        "{body}"
    );
    let (status, body) = post_json(
        &s,
        "/v3/orders",
        PLAN,
        &json!({"orderId": "WO-3", "ranges": [{"prefix": "GW-R-", "from": 50, "to": 60, "width": 4}]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["at"], "ranges[0]");
    let (status, _) = s.get_text("/v3/orders/WO-2", Some(READ)).await;
    assert_eq!(status, 404, "the refused order was not stored");
    let (_, list) = s.get_json("/v3/orders", Some(READ)).await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_bad_csv_line_is_400_naming_it_and_nothing_is_stored() {
    let s = server(true).await;
    let (status, _) = post_json(&s, "/v3/orders", PLAN, &json!({"orderId": "WO-CSV"})).await;
    assert_eq!(status, 201);
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;

    for (csv, line, needle) in [
        (
            "serial\nGW-C-1\nGW-C-2\nnot a serial!\nGW-C-3\n",
            4,
            "line 4",
        ),
        ("GW-C-1\r\nGW-C-2\r\nGW-C-1\r\n", 3, "repeats line 1"),
        ("GW-C-1\n\"GW-C-2\n", 2, "line 2"),
    ] {
        let (status, body) = upload(&s, "WO-CSV", csv).await;
        assert_eq!(status, 400, "{csv:?}: {body}");
        assert_eq!(body["line"], line, "{body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
        assert_eq!(order(&s, "WO-CSV").await["expected"], 0);
        let (status, body) = provision(&s, "GW-C-1", gw).await;
        assert_eq!(status, 403, "nothing of the failed upload counts: {body}");
    }
    // A line longer than any serial; wrong content type; unknown order.
    let long = format!("GW-C-1\n{}\n", "x".repeat(2000));
    let (status, body) = upload(&s, "WO-CSV", long).await;
    assert_eq!((status, &body["line"]), (400, &json!(2)), "{body}");
    let r = s
        .client
        .post(format!("{}/v3/orders/WO-CSV/serials", s.base))
        .bearer_auth(PLAN)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let (status, _) = upload(&s, "WO-NONE", "GW-C-1\n").await;
    assert_eq!(status, 404);
    let (status, body) = upload(&s, "WO-CSV", "serial\n\n  \r\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no serial"),
        "{body}"
    );

    // The same serials, now correct, are stored (the failed uploads left no row behind).
    let (status, body) = upload(
        &s,
        "WO-CSV",
        "serialNumber,label\nGW-C-1,a\nGW-C-2,b\nGW-C-3",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["uploaded"], &body["expected"]),
        (&json!(3), &json!(3))
    );
    let (status, id) = provision(&s, "GW-C-3", gw).await;
    assert_eq!(status, 200, "{id}");
    // A serial of this upload is another order's no more.
    let (status, body) = post_json(&s, "/v3/orders", PLAN, &json!({"orderId": "WO-OTHER"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = upload(&s, "WO-OTHER", "GW-D-1\nGW-C-2\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("WO-CSV"), "{body}");
    assert_eq!(order(&s, "WO-OTHER").await["expected"], 0);
}

/// A million serials, streamed in chunks of text as a label printer's export would be: stored,
/// counted, and each of them admitted.
#[tokio::test]
async fn a_million_serial_csv_upload_is_streamed_stored_and_counted() {
    const N: u64 = 1_000_000;
    let s = server(true).await;
    let (status, _) = post_json(&s, "/v3/orders", PLAN, &json!({"orderId": "WO-BIG"})).await;
    assert_eq!(status, 201);
    // Generated as it is sent: 1,000 lines per chunk.
    let chunks = futures_util::stream::iter((0..N / 1000).map(|c| {
        let mut text = String::with_capacity(1000 * 16);
        for i in c * 1000..(c + 1) * 1000 {
            text.push_str(&format!("GW-BIG-{i:07}\n"));
        }
        Ok::<_, std::io::Error>(text)
    }));
    let started = std::time::Instant::now();
    let (status, body) = upload(&s, "WO-BIG", reqwest::Body::wrap_stream(chunks)).await;
    assert_eq!(status, 200, "{body}");
    eprintln!("1,000,000 serials uploaded in {:?}", started.elapsed());
    assert_eq!(
        (&body["uploaded"], &body["expected"]),
        (&json!(N), &json!(N))
    );
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    for serial in ["GW-BIG-0000000", "GW-BIG-0999999", "GW-BIG-0500000"] {
        let (status, id) = provision(&s, serial, gw).await;
        assert_eq!(status, 200, "{serial}: {id}");
    }
    let (status, body) = provision(&s, "GW-BIG-1000000", gw).await;
    assert_eq!(status, 403, "{body}");
    let o = order(&s, "WO-BIG").await;
    assert_eq!((&o["expected"], &o["deployed"]), (&json!(N), &json!(3)));
}

#[tokio::test]
async fn the_floor_page_shows_each_open_order_s_progress() {
    let s = server(false).await;
    let (status, _) = post_json(&s, "/v3/orders", PLAN, &wo_1()).await;
    assert_eq!(status, 201);
    let (status, _) = post_json(
        &s,
        "/v3/orders",
        PLAN,
        &json!({"orderId": "WO-DONE", "serials": ["GW-Z-1"]}),
    )
    .await;
    assert_eq!(status, 201);
    let r = s
        .client
        .post(format!("{}/v3/orders/WO-DONE/close", s.base))
        .bearer_auth(PLAN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (gw, _h) = gateway(fake_fcc::Sessions::Forever, &[]).await;
    assert_eq!(provision(&s, "GW-LISTED-1", gw).await.0, 200);
    let (status, html) = s.get_text("/floor/", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Open work orders"), "{html}");
    let row = html
        .split("data-order=\"WO-2612-01\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row of WO-2612-01 in {html}"));
    // Deployed 1 of 52: 1 %.
    assert!(row.contains(">1<") && row.contains(">52<"), "{row}");
    assert!(row.contains("value=\"1\""), "{row}");
    assert!(!html.contains("WO-DONE"), "a closed order is not shown");
}
