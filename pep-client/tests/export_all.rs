//! `list-enrollment-ids --all` over a real inventory: 2,500 gateways provisioned through the real
//! `pep-server` into one long-lived `fake-fcc --sessions forever`, 16 requests at a time over HTTP;
//! then the `--all` export must equal the server's own CSV export byte for byte.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;
use serde_json::Value;

const GATEWAYS: usize = 2_500;
const CONCURRENCY: usize = 16;

#[test]
fn all_export_of_2500_gateways_equals_the_servers_csv() {
    let server = Server::start();
    let gw = Gateway::start(&["--sessions", "forever"]);
    let started = Instant::now();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let client = client.clone();
            let next = Arc::clone(&next);
            let base = server.url();
            let port = gw.addr.port();
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= GATEWAYS {
                        break;
                    }
                    let url = format!(
                        "{base}/v3/identity?serialNumber=BULK-{i:05}&ip=127.0.0.1&port={port}"
                    );
                    let resp = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
                    let status = resp.status();
                    let body = resp.text().await.unwrap();
                    assert_eq!(status, 200, "BULK-{i:05}: {body}");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    let provisioned = started.elapsed();

    let work = tempfile::tempdir().unwrap();
    let export_started = Instant::now();
    let out = run(cli(&server.url(), work.path()).args([
        "list-enrollment-ids",
        "--all",
        "-e",
        "csv",
        "-f",
        "inventory",
    ]));
    assert_code(&out, 0);
    let exported = export_started.elapsed();

    let (status, server_csv) = server.get("/v3/enrollment-ids.csv");
    assert_eq!(status, 200);
    let csv = std::fs::read(work.path().join("inventory.csv")).unwrap();
    assert_eq!(
        csv.split(|&b| b == b'\n').count(),
        GATEWAYS + 2,
        "header + rows + final empty"
    );
    assert!(
        csv == server_csv,
        "--all CSV differs from the server's export"
    );

    let json: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("inventory.json")).unwrap())
            .unwrap();
    assert_eq!(json["total_count"], GATEWAYS);
    assert_eq!(json["results"].as_array().unwrap().len(), GATEWAYS);
    let ids: Vec<i64> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no duplicates"
    );
    eprintln!(
        "provisioned {GATEWAYS} gateways in {:.1} s, --all export in {:.2} s",
        provisioned.as_secs_f64(),
        exported.as_secs_f64()
    );
}
