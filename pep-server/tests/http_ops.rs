//! Operations: the generated OpenAPI document covers exactly the router's routes, the docs page
//! is self-contained and renders offline in a browser without scrolling sideways, /metrics parses and agrees with what happened, /healthz, `auth = "none"`,
//! SIGTERM, and the `check-config` subcommand's exit codes and output.

use crate::floor_support;
use crate::http_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::FccStatus;
use floor_support::Browser;
use http_support::*;
use pep_server::http::{OPENAPI_JSON, OPENAPI_YAML, ROUTES};
use serde_json::{Value, json};

/// (method, path) pairs the OpenAPI document describes; every key of a path item must be an
/// operation the server could have.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for key in item.as_object().expect("a path item is an object").keys() {
            assert!(
                ["get", "post", "put", "delete", "patch"].contains(&key.as_str()),
                "unexpected key under {path}: {key}"
            );
            assert!(ops.insert((key.to_uppercase(), path.clone())));
        }
    }
    ops
}

/// Every `$ref` in `value`, as (where, target).
fn refs<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push((at.to_owned(), v.as_str().unwrap()));
                } else {
                    refs(v, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| refs(v, &format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// Every (method, path) the router answers: each route of the table at each of its paths.
fn routed_operations() -> BTreeSet<(String, String)> {
    let mut routed = BTreeSet::new();
    for route in ROUTES {
        for path in route.paths() {
            assert!(
                routed.insert((route.method.to_owned(), path.to_owned())),
                "{} {path} is declared twice",
                route.method
            );
        }
    }
    routed
}

#[tokio::test]
async fn openapi_describes_exactly_the_routes_and_the_router_serves_them() {
    let doc: Value = serde_json::from_str(&OPENAPI_JSON).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let documented = documented_operations(&doc);
    let routed = routed_operations();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document: {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "the OpenAPI document describes routes that do not exist: {phantom:?}"
    );

    // The old API's paths answer with and without /v3, and are documented both ways.
    for path in [
        "/v3/identity",
        "/identity",
        "/v3/enrollment-ids.csv",
        "/enrollment-ids.csv",
    ] {
        assert!(
            routed.iter().any(|(_, p)| p == path),
            "{path} is not routed"
        );
    }
    assert_eq!(
        doc["paths"]["/identity"]["get"]["summary"],
        doc["paths"]["/v3/identity"]["get"]["summary"]
    );
    assert!(!routed.contains(&("GET".to_owned(), "/events".to_owned())));

    // Every operation: an ID (unique), a summary, responses with status codes; every reference
    // resolves; the descriptions carried over from the hand-kept file are there.
    let mut ids = BTreeSet::new();
    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_lowercase()];
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no ID"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(op["summary"].is_string(), "{method} {path}: no summary");
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        assert!(
            responses
                .keys()
                .all(|s| s.len() == 3 && s.parse::<u16>().is_ok()),
            "{method} {path}: {responses:?}"
        );
    }
    let mut all_refs = Vec::new();
    refs(&doc, "", &mut all_refs);
    assert!(all_refs.len() > 50, "{}", all_refs.len());
    for (at, target) in all_refs {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {target} at {at}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{target} (at {at}) does not resolve"
        );
    }
    let get_identity = &doc["paths"]["/v3/identity"]["get"];
    let params: Vec<&str> = get_identity["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "serialNumber",
            "ip",
            "port",
            "apiAddress",
            "gatewayServicesAddress",
            "hardwareVersion",
            "radioConfig",
            "ledConfig",
            "category",
            "verificationKey",
            "requestId",
            "Idempotency-Key"
        ]
    );
    let key = &get_identity["parameters"][11];
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    assert_eq!(get_identity["parameters"][10]["schema"]["maxLength"], 128);
    let port = &get_identity["parameters"][2];
    assert_eq!(port["in"], "query");
    assert_eq!(port["required"], false);
    assert_eq!(
        (
            &port["schema"]["minimum"],
            &port["schema"]["maximum"],
            &port["schema"]["default"]
        ),
        (&json!(1), &json!(65535), &json!(7777))
    );
    let serial = &get_identity["parameters"][0];
    assert_eq!(serial["required"], true);
    assert_eq!(
        (
            &serial["schema"]["minLength"],
            &serial["schema"]["maxLength"]
        ),
        (&json!(1), &json!(64))
    );
    assert!(
        serial["description"]
            .as_str()
            .unwrap()
            .contains("certificate CN")
    );
    assert_eq!(
        get_identity["responses"]["502"]["$ref"],
        "#/components/responses/GatewayRejected"
    );
    assert_eq!(
        get_identity["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Identity"
    );
    let post = &doc["paths"]["/v3/identities"]["post"];
    assert!(post["requestBody"]["content"]["application/json"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["IdentityRequest"]["additionalProperties"],
        false
    );
    let page = &doc["paths"]["/v3/enrollment-ids"]["get"]["responses"]["200"]["content"];
    assert!(page["application/hal+json"].is_object(), "{page}");
    let page = &doc["components"]["schemas"]["EnrollmentPage"]["properties"];
    for field in ["_links", "total_count", "limit", "order", "results"] {
        assert!(page[field].is_object(), "EnrollmentPage.{field}: {page}");
    }
    assert!(
        doc["paths"]["/v3/enrollment-ids.csv"]["get"]["description"]
            .as_str()
            .unwrap()
            .contains("\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\"")
    );
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["floorSession"]["in"],
        "cookie"
    );
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    for schema in [
        "Error",
        "Identity",
        "EnrollmentEntry",
        "AuditPage",
        "FloorSnapshot",
        "FloorAttempt",
        "FloorLive",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }

    // Every route of the table exists in the running router at each of its paths (neither 404
    // nor 405); a path parameter is given a value that exists.
    let server = Server::start(Options::default()).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in &routed {
        let path = path.replace("{file}", "swagger-ui.css");
        let r = no_redirects
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", server.base),
            )
            .bearer_auth(BOTH)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            status != 404 && status != 405,
            "{method} {path} answered {status}"
        );
    }

    // The served documents are the generated ones, JSON and YAML.
    let r = server.get("/docs/openapi.json", None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap(), doc);
    let r = server.get("/docs/openapi.yaml", None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/yaml");
    let yaml = r.text().await.unwrap();
    assert_eq!(yaml, *OPENAPI_YAML);
    assert!(yaml.starts_with("openapi: 3.1."), "{}", &yaml[..40]);
    assert!(yaml.contains("\n  /v3/identity:\n") && yaml.contains("\n  /identity:\n"));
}

#[tokio::test]
async fn docs_page_is_self_contained() {
    let server = Server::start(Options::default()).await;
    // `/docs` redirects to `/docs/` (reqwest follows it).
    let r = server.get("/docs", None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.url().path(), "/docs/");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("connect-src 'self'")
            && csp.contains("script-src 'self';"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("https://") && !html.contains("http://") && !html.contains("//"),
        "no network references: {html}"
    );
    // Every file the page refers to is served by this server, with the same policy.
    let mut referenced = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            referenced.push(piece.split('"').next().unwrap().to_owned());
        }
    }
    assert!(referenced.len() >= 5, "{referenced:?}");
    for file in &referenced {
        assert!(!file.contains(':') && !file.starts_with('/'), "{file}");
        let r = server.get(&format!("/docs/{file}"), None).await;
        assert_eq!(r.status().as_u16(), 200, "{file}");
        assert_eq!(
            r.headers()["content-security-policy"].to_str().unwrap(),
            csp
        );
    }
    let (status, init) = server.get_text("/docs/swagger-initializer.js", None).await;
    assert_eq!(status, 200);
    assert!(init.contains("\"openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    let r = server.get("/docs/no-such-file.js", None).await;
    assert_eq!(r.status().as_u16(), 404);
}

/// The documentation page in a real browser at 1280×720, with the network limited to this
/// machine: it renders every operation from the generated document, does not scroll sideways
/// (issue 21: the CSV header line in a description widened the page), and asks nothing of any
/// other host.
#[tokio::test]
async fn docs_page_renders_offline_in_a_browser_without_sideways_scrolling() {
    let server = Server::start(Options::default()).await;
    let browser = Browser::start(1280, 720).await;
    browser.goto(&format!("{}/docs/", server.base)).await;
    let doc: Value = serde_json::from_str(&OPENAPI_JSON).unwrap();
    let operations = documented_operations(&doc).len();
    let shown = browser
        .wait_for(
            "Swagger UI to render the operations",
            "var n = document.querySelectorAll('.opblock').length; return n >= arguments[0] ? n : null;",
            json!([operations]),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(shown, json!(operations));
    // Open every operation, so that every description and parameter table is laid out.
    browser
        .exec(
            "document.querySelectorAll('.opblock-summary-control').forEach(function (b) { b.click(); });",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the operations to open",
            "return document.querySelectorAll('.opblock-body').length >= arguments[0];",
            json!([operations]),
            Duration::from_secs(30),
        )
        .await;
    let text = browser
        .exec("return document.body.innerText;", json!([]))
        .await;
    let text = text.as_str().unwrap();
    for needle in [
        "/v3/identity",
        "/enrollment-ids.csv",
        "Create, inject and return one gateway identity",
        "\"enrollmentID\",\"serialNumber\"",
    ] {
        assert!(text.contains(needle), "the page does not show {needle}");
    }
    let widths = browser
        .exec(
            "var e = document.documentElement; return [e.scrollWidth, e.clientWidth, \
             Array.from(document.querySelectorAll('body *')).filter(function (x) { \
             return x.getBoundingClientRect().right > e.clientWidth + 1; }).slice(0, 5) \
             .map(function (x) { return x.tagName + '.' + x.className + ': ' + x.textContent.slice(0, 80); })];",
            json!([]),
        )
        .await;
    assert_eq!(widths[1], json!(1280), "{widths}");
    assert!(
        widths[0].as_u64().unwrap() <= widths[1].as_u64().unwrap(),
        "the page scrolls sideways: {widths}"
    );
    let urls = browser.requested_urls().await;
    assert!(
        urls.iter().any(|u| u.ends_with("/docs/openapi.json")),
        "{urls:?}"
    );
    // The browser's own pages (its start page, `chrome://...`) are not the page's requests.
    let outside: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with("chrome://") && !u.starts_with("about:"))
        .filter(|u| !u.starts_with("http://127.0.0.1:") && !u.starts_with("data:"))
        .collect();
    assert!(outside.is_empty(), "requests to other hosts: {outside:?}");
    browser.quit().await;
}

/// Parses a Prometheus text exposition strictly enough to catch format errors: every sample line
/// is `name{labels} value` or `name value` with a float value, and belongs to a declared family.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut families = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.trim().is_empty(), "empty line in the exposition");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "sample without # TYPE: {line}");
        samples.push((series.to_owned(), value));
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_agree_with_what_happened() {
    let server = Server::start(Options::default()).await;
    let (good, _g) = gateway(Sessions::Forever, &[]).await;
    let (bad, _b) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::from_u32(13))],
    )
    .await;
    assert_eq!(server.identity("GW-M1", good).await.0, 200);
    assert_eq!(server.identity("GW-M2", good).await.0, 200);
    assert_eq!(server.identity("GW-M1", good).await.0, 409);
    assert_eq!(server.identity("GW-M3", bad).await.0, 502);
    let dead = format!(
        "/v3/identity?serialNumber=GW-M4&ip=127.0.0.1&port={}",
        dead_port()
    );
    assert_eq!(server.get_json(&dead, Some(BOTH)).await.0, 504);
    // Refused by the HTTP layer (counted, not timed) and by the core (counted and timed).
    let bad_port = "/v3/identity?serialNumber=GW-M5&ip=127.0.0.1&port=0";
    assert_eq!(server.get_json(bad_port, Some(BOTH)).await.0, 400);
    let bad_category = format!(
        "/v3/identity?serialNumber=GW-M6&ip=127.0.0.1&port={}&category=x",
        good.port()
    );
    assert_eq!(server.get_json(&bad_category, Some(BOTH)).await.0, 400);

    let r = server.get("/metrics", Some(READ)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let samples = parse_exposition(&text);
    let get = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(get("pep_provisions_total{result=\"deployed\"}"), 2.0);
    assert_eq!(get("pep_provisions_total{result=\"conflict\"}"), 1.0);
    assert_eq!(
        get("pep_provisions_total{result=\"gateway_rejected\"}"),
        1.0
    );
    assert_eq!(
        get("pep_provisions_total{result=\"gateway_unreachable\"}"),
        1.0
    );
    assert_eq!(get("pep_provisions_total{result=\"invalid\"}"), 2.0);
    assert_eq!(get("pep_provisions_total{result=\"gateway_timeout\"}"), 0.0);
    assert_eq!(get("pep_provisions_total{result=\"internal\"}"), 0.0);
    let success = format!(
        "pep_fcc_status_total{{code=\"0\",status=\"{}\"}}",
        FccStatus::Success.name()
    );
    assert_eq!(get(&success), 2.0);
    let rejected = format!(
        "pep_fcc_status_total{{code=\"13\",status=\"{}\"}}",
        FccStatus::from_u32(13).name()
    );
    assert_eq!(get(&rejected), 1.0);
    assert_eq!(get("pep_provisions_in_flight"), 0.0);
    // Timed: everything that reached the core (2 deployed, conflict, rejected, unreachable). Both
    // invalid requests (the bad category too) are refused where the request is built, before the
    // core, since every field is checked once there (model::GatewayFields::into_params).
    assert_eq!(get("pep_provision_duration_seconds_count"), 5.0);
    assert_eq!(
        get("pep_provision_duration_seconds_bucket{le=\"+Inf\"}"),
        5.0
    );
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(s, _)| s.starts_with("pep_provision_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "buckets are cumulative"
    );
    assert!(get("pep_provision_duration_seconds_sum") > 0.0);
    assert_eq!(get("pep_store_identities{state=\"deployed\"}"), 2.0);
    assert_eq!(get("pep_store_identities{state=\"failed\"}"), 2.0);
    assert_eq!(get("pep_store_identities{state=\"in_flight\"}"), 0.0);
}

#[tokio::test]
async fn healthz_is_open_and_auth_none_is_warned_at_every_start() {
    let server = Server::start(Options {
        auth_none: true,
        ..Options::default()
    })
    .await;
    let (status, body) = server.get_json("/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    // Without authentication every endpoint is open.
    assert_eq!(server.get_text("/v3/enrollment-ids", None).await.0, 200);
    assert_eq!(server.get_text("/metrics", None).await.0, 200);
    let warning = "authentication is DISABLED";
    assert_eq!(server.log().matches(warning).count(), 1);
    let dir = server.kill9().await;
    let server = Server::start_in(dir).await;
    assert_eq!(
        server.log().matches(warning).count(),
        2,
        "warned again at restart"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let server = Server::start(Options::default()).await;
    assert_eq!(server.get_text("/healthz", None).await.0, 200);
    let (status, log) = server.terminate().await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}\n{log}"
    );
    assert!(log.contains("SIGTERM"), "{log}");
}

fn pep_server(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(args)
        .current_dir(cwd)
        .env_remove("PEP_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn check_config_exit_codes_and_fields() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    // The demo config (paths relative to the repository root) is valid.
    let out = pep_server(
        &["check-config", "--config", "fixtures/demo/pep.toml"],
        &root,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo config: {stdout}");
    assert!(!stdout.contains("error:"), "{stdout}");

    // A broken config: every error is printed with its field, exit status 1.
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(root.join("fixtures/demo/pep.toml")).unwrap();
    let broken = demo
        .replace(
            "coaps://bootstrap.us-east-1.mbedcloud.com:5684",
            "coaps://bootstrap.example.com:5684?aid=123",
        )
        .replace("fixtures/ca/CA_cert.pem", "fixtures/ca/missing.pem");
    assert_ne!(broken, demo);
    std::fs::write(dir.path().join("broken.toml"), &broken).unwrap();
    let out = pep_server(
        &[
            "check-config",
            "--config",
            dir.path().join("broken.toml").to_str().unwrap(),
        ],
        &root,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("error: ca.cert"), "{stdout}");
    assert!(stdout.contains("error: bootstrap.uri"), "{stdout}");

    // The daemon refuses to start on the same file, printing each error.
    let out = pep_server(
        &["--config", dir.path().join("broken.toml").to_str().unwrap()],
        &root,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: ca.cert") && stderr.contains("refusing to start"),
        "{stderr}"
    );

    // An unknown field is a parse error naming it; PEP_CONFIG selects the file.
    std::fs::write(
        dir.path().join("typo.toml"),
        format!("listne = \"127.0.0.1:1\"\n{demo}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("check-config")
        .env("PEP_CONFIG", dir.path().join("typo.toml"))
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("listne"), "{stdout}");

    // A missing file.
    let out = pep_server(
        &["check-config", "--config", "/nonexistent/pep.toml"],
        &root,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/pep.toml"));
}

/// Provisions, conflicts, refuses and fails once each on a server logging in `log_format`;
/// returns the server's whole log and the device key the first gateway received.
async fn provision_and_log(log_format: &str) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_toml(dir.path(), &Options::default());
    std::fs::write(
        dir.path().join("pep.toml"),
        format!("log_format = \"{log_format}\"\n{config}"),
    )
    .unwrap();
    let server = Server::start_in(dir).await;
    let (gw, mut handle) = gateway(Sessions::One, &[]).await;
    let (status, body) = server.identity("LOG-OK-1", gw).await;
    assert_eq!(status, 200, "{body}");
    let report = handle.next_report().await.unwrap();
    let device_key = report
        .storage
        .private_keys
        .get(fcc_proto::names::BOOTSTRAP_DEVICE_PRIVATE_KEY)
        .expect("the gateway holds the device key")
        .clone();
    // Conflict (409), invalid request (400), rejected by the gateway (502).
    assert_eq!(server.identity("LOG-OK-1", gw).await.0, 409);
    assert_eq!(
        server
            .get_text(
                "/v3/identity?serialNumber=LOG-BAD&ip=0.0.0.0&port=1",
                Some(BOTH)
            )
            .await
            .0,
        400
    );
    let (bad_gw, _bad) = gateway(
        Sessions::One,
        &[FaultKind::ReturnStatus(FccStatus::from_u32(17))],
    )
    .await;
    assert_eq!(server.identity("LOG-REJECTED", bad_gw).await.0, 502);
    let (status, log) = server.terminate().await;
    assert!(status.success(), "{log}");
    (log, device_key)
}

/// No line of `log` holds the CA key or the device key, in any encoding a log line could carry.
fn assert_no_secret(log: &str, device_key: &[u8]) {
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    let ca_key = std::fs::read_to_string(fixtures().join("ca/CA_private.pem")).unwrap();
    for line in ca_key.lines().filter(|l| !l.starts_with("-----")) {
        for piece in line.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!log.contains(piece), "CA key material in the log");
        }
    }
    let der = device_key;
    // ECPrivateKey: version 1 (02 01 01), then the 32-byte private scalar (04 20 ...).
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("an ECPrivateKey inside the device key")
        + 5;
    let scalar = &der[at..at + 32];
    for encoded in [
        hex::encode(der),
        hex::encode_upper(der),
        hex::encode(scalar),
        hex::encode_upper(scalar),
        format!("{:?}", &scalar[..8]),
    ] {
        let probe: String = encoded.chars().take(32).collect();
        assert!(!log.contains(&probe), "device key material in the log");
    }
}

/// Every line the server logs while it provisions, refuses, conflicts and fails: a provisioning is
/// one `info` line (the core's outcome), not two; a refused request keeps its request line; and no
/// line holds the CA key or the device key the gateway received, in any encoding.
#[tokio::test]
async fn the_log_has_one_line_per_provisioning_and_no_secret() {
    let (log, device_key) = provision_and_log("text").await;

    let info_lines = |needle: &str| {
        log.lines()
            .filter(|l| l.contains(" INFO ") && l.contains(needle))
            .count()
    };
    assert_eq!(
        info_lines("LOG-OK-1"),
        2,
        "deployed, then the conflict:\n{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("deployed serial=\"LOG-OK-1\""))
            .count(),
        1,
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("answered") && l.contains("status=200")),
        "a successful provisioning has no second info line:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("answered") && l.contains("status=400")),
        "a refused request keeps its request line:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("LOG-REJECTED")),
        "{log}"
    );

    // A config warning (the fixture CA key is 0644 in a checkout) is logged once, not twice.
    let ca_warnings = log.matches("accessible by group or others").count();
    assert!(ca_warnings <= 1, "{log}");

    assert_no_secret(&log, &device_key);
}

/// `log_format = "json"`: the same run, every stderr line is one JSON object with the fields of
/// the text line (level, target, message and the event's fields), and no secret appears, neither
/// in the raw lines nor in any decoded string value.
#[tokio::test]
async fn json_log_lines_parse_and_hold_no_secret() {
    let (log, device_key) = provision_and_log("json").await;
    let mut events = Vec::new();
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(event[key].is_string(), "no {key}: {line}");
        }
        assert!(event["fields"]["message"].is_string(), "no message: {line}");
        events.push(event);
    }
    let count = |level: &str, message: &str, serial: &str| {
        events
            .iter()
            .filter(|e| {
                e["level"] == level
                    && e["fields"]["message"] == message
                    && e["fields"]["serial"] == serial
            })
            .count()
    };
    assert_eq!(count("INFO", "deployed", "LOG-OK-1"), 1, "{log}");
    assert_eq!(count("INFO", "serial conflict", "LOG-OK-1"), 1, "{log}");
    assert_eq!(
        count("WARN", "provisioning failed", "LOG-REJECTED"),
        1,
        "{log}"
    );
    assert!(
        events.iter().any(|e| e["fields"]["message"] == "listening"),
        "{log}"
    );

    assert_no_secret(&log, &device_key);
    // JSON escapes could hide a secret from a search of the raw text: search the decoded values.
    fn strings(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut decoded = String::new();
    events.iter().for_each(|e| strings(e, &mut decoded));
    assert_no_secret(&decoded, &device_key);
}
