//! Issue #18 on PostgreSQL: two `pep-server` processes on one database, both claiming in the
//! cloud stand-in. Each claim row is taken by exactly one server (`FOR UPDATE SKIP LOCKED` and a
//! lease), so each enrollment ID is sent once: as many claim requests as gateways, none twice.

use crate::http_support;
use crate::pg_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cloud_standin::{Standin, StandinOptions};
use http_support::{BOTH, Options, READ, Server, config_toml};
use pep_loadgen::{FleetOptions, PortRange};
use pg_support::TestDb;

const KEY: &str = "ak_test_cloud_key_pg_0123456789";

async fn start(db: &TestDb, server_id: &str, standin: &Standin) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cloud.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = config_toml(dir.path(), &Options::default());
    let sqlite = text
        .lines()
        .find(|l| l.starts_with("database_url"))
        .unwrap()
        .to_owned();
    let text = text.replacen(
        &sqlite,
        &format!("database_url = \"{}\"\nserver_id = \"{server_id}\"", db.url),
        1,
    );
    let text = format!(
        "{text}\n[cloud]\napi_url = \"{}\"\napi_key_file = \"{}\"\nmode = \"each\"\n\
         max_in_flight = 8\nbackoff_max_s = 2\n",
        standin.url(),
        key.display()
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    Server::start_in(dir).await
}

fn fleet(server: &Server, prefix: &str, first_port: u16) -> FleetOptions {
    FleetOptions {
        gateways: 1000,
        concurrency: 16,
        server: server.base.clone(),
        ca_cert: None,
        token: Some(BOTH.to_owned()),
        fault_rate: 0.0,
        seed: 18,
        fault_kinds: Vec::new(),
        serial_prefix: prefix.to_owned(),
        request_timeout: Duration::from_secs(60),
        retry_rounds: 0,
        ports: PortRange {
            first: first_port,
            last: first_port + 999,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_send_each_claim_once() {
    let db = TestDb::create().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    // A little slow: both senders are busy at once and compete for the same rows.
    standin.set_slow(Some(Duration::from_millis(5)));
    let a = start(&db, "line-a", &standin).await;
    let b = start(&db, "line-b", &standin).await;
    let (ra, rb) = tokio::join!(
        pep_loadgen::run(fleet(&a, "pga-", 16384)),
        pep_loadgen::run(fleet(&b, "pgb-", 18384)),
    );
    assert_eq!(ra.unwrap().succeeded, 1000);
    assert_eq!(rb.unwrap().succeeded, 1000);
    let start = Instant::now();
    loop {
        let claimed = a.metric("pep_cloud_claims{state=\"claimed\"}").await;
        if claimed == 2000.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "gave up waiting: {claimed} claimed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = standin.claim_counts();
    assert_eq!(counts.len(), 2000);
    assert!(counts.values().all(|n| *n == 1));
    let posts = standin
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v3/device-enrollments")
        .count();
    assert_eq!(posts, 2000, "an enrollment ID was sent twice");
    // The deployed gateways of both servers are the claimed ones.
    let deployed: BTreeSet<String> = a
        .walk(1000, "ASC")
        .await
        .iter()
        .map(|e| e["enrollmentID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deployed, counts.keys().cloned().collect());
    // Who sent what (both servers see the same outbox).
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut path = "/v3/claims?state=claimed&limit=1000&order=ASC".to_owned();
    loop {
        let (status, page) = b.get_json(&path, Some(READ)).await;
        assert_eq!(status, 200);
        let results = page["results"].as_array().unwrap();
        if results.is_empty() {
            break;
        }
        for r in results {
            *by.entry(r["claimedBy"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        path = page["_links"]["next"]["href"].as_str().unwrap().to_owned();
    }
    println!("claims sent per server: {by:?}");
    assert_eq!(by.values().sum::<usize>(), 2000);
    assert!(by.keys().all(|k| k == "line-a" || k == "line-b"), "{by:?}");
}
