//! Acceptance 5: keyset paging over 2,500 deployed gateways in both orders, and the CSV export
//! checked against the cloud's bulk-upload rules (the bulk upload reads the first column of every line after the header).

use crate::http_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use fake_fcc::Sessions;
use futures_util::StreamExt;
use http_support::*;

const HEADER: &str = "\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\",\"apiAddress\",\"hardwareVersion\",\"radioConfig\",\"ledConfig\",\"category\",\"deployed\",\"createdAt\"";

/// Splits one CSV record (without its line ending) into fields, RFC 4180: every field here must be
/// quoted, `""` is a quote inside a field.
fn parse_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        if chars.next() != Some('"') {
            return Err(format!("field {} is not quoted: {line}", fields.len()));
        }
        let mut field = String::new();
        loop {
            match chars.next() {
                Some('"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                Some('"') => break,
                Some(c) => field.push(c),
                None => return Err(format!("unterminated field: {line}")),
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            None => return Ok(fields),
            Some(c) => return Err(format!("unexpected {c:?} after a field: {line}")),
        }
    }
}

/// The bulk-upload rules: header first (ignored), then one ID per line as the first value, values
/// may be quoted, UTF-8, at most 10 MB. Returns the enrollment IDs.
fn bulk_upload_ids(bytes: &[u8]) -> Vec<String> {
    assert!(
        bytes.len() < 10 * 1024 * 1024,
        "CSV is {} bytes",
        bytes.len()
    );
    let text = std::str::from_utf8(bytes).expect("the CSV is UTF-8");
    assert!(text.ends_with("\r\n"), "the last line ends with CRLF");
    let body = text.strip_suffix("\r\n").unwrap();
    assert!(!body.contains("\n\n"));
    let mut lines = body.split("\r\n");
    assert_eq!(lines.next(), Some(HEADER));
    lines
        .map(|line| {
            assert!(
                !line.contains('\n') && !line.contains('\r'),
                "bare line break: {line:?}"
            );
            let first = line.split(',').next().unwrap();
            let id = first.trim_matches('"');
            assert!(
                id.len() == 97
                    && id.starts_with("A-")
                    && id[2..]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == ':'),
                "first value is not an enrollment ID: {line}"
            );
            let fields = parse_record(line).unwrap();
            assert_eq!(fields.len(), 10, "{line}");
            assert_eq!(fields[8], "true");
            id.to_owned()
        })
        .collect()
}

#[tokio::test]
async fn paging_2500_both_orders_and_csv_export() {
    const N: usize = 2_500;
    let server = Server::start(Options::default()).await;
    // A few sequential gateways (FCC serves one connection at a time) so both cores are busy.
    let mut gateways = Vec::new();
    for _ in 0..4 {
        gateways.push(gateway(Sessions::Forever, &[]).await);
    }
    let addrs: Vec<_> = gateways.iter().map(|(a, _)| *a).collect();
    let started = Instant::now();
    let results: Vec<(u16, serde_json::Value)> = futures_util::stream::iter(0..N)
        .map(|i| {
            let server = &server;
            let gw = addrs[i % addrs.len()];
            async move { server.identity(&format!("GW-P{i:05}"), gw).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    eprintln!(
        "provisioned {N} gateways over HTTP in {:?}",
        started.elapsed()
    );
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    let provisioned: BTreeMap<String, String> = results
        .iter()
        .map(|(_, b)| {
            (
                b["serialNumber"].as_str().unwrap().to_owned(),
                b["enrollmentID"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(provisioned.len(), N);

    // Page sizes: 1000, 1000, 500, then an empty page without `next`.
    let (_, first) = server
        .get_json("/v3/enrollment-ids?limit=1000&order=asc", Some(READ))
        .await;
    assert_eq!(first["total_count"], 1000);
    assert_eq!(first["limit"], 1000);
    assert_eq!(first["order"], "ASC");

    let asc = server.walk(1000, "ASC").await;
    let desc = server.walk(1000, "desc").await;
    for (order, list) in [("ASC", &asc), ("DESC", &desc)] {
        assert_eq!(list.len(), N, "{order}");
        let ids: Vec<i64> = list
            .iter()
            .map(|r| r["_id"].as_str().unwrap().parse().unwrap())
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), N, "{order}: an entry is listed twice");
        let sorted = ids.windows(2).all(|w| {
            if order == "ASC" {
                w[0] < w[1]
            } else {
                w[0] > w[1]
            }
        });
        assert!(sorted, "{order} is not in order");
        for r in list.iter() {
            let serial = r["serialNumber"].as_str().unwrap();
            assert_eq!(r["enrollmentID"], provisioned[serial].as_str());
            assert_eq!(r["deployed"], true);
        }
    }
    let reversed: Vec<_> = desc.iter().rev().map(|r| r["_id"].clone()).collect();
    let forward: Vec<_> = asc.iter().map(|r| r["_id"].clone()).collect();
    assert_eq!(reversed, forward);

    // The CSV export: header + one line per gateway, passing the bulk-upload rules.
    let r = server.get("/v3/enrollment-ids.csv", Some(READ)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let bytes = r.bytes().await.unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(text.lines().count(), N + 1);
    let ids = bulk_upload_ids(&bytes);
    let ids: BTreeSet<String> = ids.into_iter().collect();
    let expected: BTreeSet<String> = provisioned.values().cloned().collect();
    assert_eq!(ids, expected);

    // The unversioned path serves the same file.
    let (status, again) = server.get_text("/enrollment-ids.csv", Some(READ)).await;
    assert_eq!(status, 200);
    assert_eq!(again.as_bytes(), &bytes[..]);
}

/// Values with quotes and commas survive the CSV quoting (RFC 4180) unchanged.
#[tokio::test]
async fn csv_quotes_values_with_quotes_and_commas() {
    let server = Server::start(Options::default()).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let hw = "rev \"B\", 2";
    let path = format!(
        "{}&hardwareVersion={}",
        identity_path("GW-Q1", gw),
        encode(hw)
    );
    let (status, id) = server.get_json(&path, Some(BOTH)).await;
    assert_eq!(status, 200, "{id}");
    let (status, csv) = server.get_text("/v3/enrollment-ids.csv", Some(READ)).await;
    assert_eq!(status, 200);
    let ids = bulk_upload_ids(csv.as_bytes());
    assert_eq!(ids, [id["enrollmentID"].as_str().unwrap()]);
    let row = csv.split("\r\n").nth(1).unwrap();
    let fields = parse_record(row).unwrap();
    assert_eq!(fields[1], "GW-Q1");
    assert_eq!(fields[4], hw);
    assert!(row.contains("\"rev \"\"B\"\", 2\""), "{row}");
    assert_eq!(fields[9], id["createdAt"].to_string());
}
