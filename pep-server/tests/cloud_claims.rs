//! Issue #18: every deployed gateway claimed in the device-management cloud, exactly once, through
//! the real `pep-server` binary, the fleet (`pep-loadgen`) and the cloud stand-in
//! (`cloud-standin`, written from the API document) on 127.0.0.1.
//!
//! * `each` and `bulk` (several files under a small size limit): 2,000 gateways → 2,000 claims,
//!   each accepted by the stand-in exactly once, each `claimed` in `/v3/claims` and `/metrics`.
//! * the cloud down for the first half of the run: nothing lost;
//! * `429` + `Retry-After`: no request before the pause is over (the stand-in's request log);
//! * a wrong key: `rejected`, visible, no retry storm; fixed key + `cloud retry` → claimed;
//! * `kill -9` while claims are in flight: after the restart every claim is sent, none accepted
//!   twice;
//! * `HTTP_PROXY` is honoured; deletions go out by id or as a bulk delete;
//! * config errors (missing key file, bad mode, inline key, readable key) are clear errors.
//!
//! The tests run one at a time (a lock): each runs a fleet, and the machine is shared.

use crate::http_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use cloud_standin::{Standin, StandinOptions};
use http_support::*;
use pep_loadgen::{FleetOptions, FleetReport, PortRange};

/// One test at a time: every test runs a fleet and a server.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KEY: &str = "ak_test_cloud_key_0123456789abcdef";

/// Writes `key` into `dir/cloud.key` with mode 0600; returns its path.
fn key_file(dir: &Path, key: &str) -> std::path::PathBuf {
    let path = dir.join("cloud.key");
    std::fs::write(&path, format!("{key}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// A config directory whose `[cloud]` section points at `api_url` with `key`, `mode` and `extra`
/// lines.
fn cloud_dir(api_url: &str, key: &str, mode: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key_path = key_file(dir.path(), key);
    let toml = format!(
        "{}\n[cloud]\napi_url = \"{api_url}\"\napi_key_file = \"{}\"\nmode = \"{mode}\"\n\
         backoff_max_s = 2\n{extra}\n",
        config_toml(dir.path(), &Options::default()),
        key_path.display()
    );
    std::fs::write(dir.path().join("pep.toml"), toml).unwrap();
    dir
}

async fn start(standin: &Standin, key: &str, mode: &str, extra: &str) -> Server {
    Server::start_in(cloud_dir(&standin.url(), key, mode, extra)).await
}

/// Provisions `gateways` through `server` with the fleet (no faults); every one must deploy.
async fn fleet(server: &Server, gateways: u64, prefix: &str, ports: u16) -> FleetReport {
    let options = FleetOptions {
        gateways,
        concurrency: 32,
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
            first: ports,
            last: ports + 1999,
        },
    };
    let report = pep_loadgen::run(options).await.unwrap();
    assert_eq!(report.succeeded, gateways, "{report}");
    report
}

/// Polls `check` until it is true; fails with `what` after `limit` (a bound against hanging, not a
/// timing assertion).
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every row of `GET /v3/claims` (in `state`, or all), walked page by page.
async fn claims(server: &Server, state: Option<&str>) -> Vec<serde_json::Value> {
    let filter = state.map_or_else(String::new, |s| format!("state={s}&"));
    let mut path = format!("/v3/claims?{filter}limit=1000&order=ASC");
    let mut all = Vec::new();
    loop {
        let (status, page) = server.get_json(&path, Some(READ)).await;
        assert_eq!(status, 200, "{page}");
        let results = page["results"].as_array().unwrap().clone();
        if results.is_empty() {
            return all;
        }
        all.extend(results);
        path = page["_links"]["next"]["href"].as_str().unwrap().to_owned();
    }
}

async fn claimed_metric(server: &Server) -> u64 {
    server.metric("pep_cloud_claims{state=\"claimed\"}").await as u64
}

/// The enrollment IDs of every deployed gateway, from the server's listing.
async fn deployed_ids(server: &Server) -> BTreeSet<String> {
    server
        .walk(1000, "ASC")
        .await
        .iter()
        .map(|e| e["enrollmentID"].as_str().unwrap().to_owned())
        .collect()
}

/// Every deployed gateway accepted exactly once by the stand-in, and nothing else.
fn assert_exactly_once(standin: &Standin, deployed: &BTreeSet<String>) {
    let counts = standin.claim_counts();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    let claimed: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(
        &claimed, deployed,
        "the stand-in's claims are the deployed gateways"
    );
}

fn posts(standin: &Standin, path: &str) -> usize {
    standin
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_mode_claims_2000_gateways_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    let server = start(&standin, KEY, "each", "max_in_flight = 8").await;
    fleet(&server, 2000, "each-", 16384).await;
    wait_until("2000 claims", Duration::from_secs(300), || async {
        claimed_metric(&server).await == 2000
    })
    .await;
    let deployed = deployed_ids(&server).await;
    assert_eq!(deployed.len(), 2000);
    assert_exactly_once(&standin, &deployed);
    // One request per ID: nothing failed, nothing was sent twice.
    assert_eq!(posts(&standin, "/v3/device-enrollments"), 2000);
    let rows = claims(&server, Some("claimed")).await;
    assert_eq!(rows.len(), 2000);
    for r in &rows {
        assert_eq!(r["action"], "claim");
        assert_eq!(r["attempts"], 1, "{r}");
        assert!(r["cloudId"].is_string(), "{r}");
        assert!(r["lastError"].is_null(), "{r}");
    }
    // The listing shows each gateway's claim state (what `pep-cli list-enrollment-ids` prints).
    let listed = server.walk(1000, "ASC").await;
    assert!(listed.iter().all(|e| e["claimState"] == "claimed"));
    assert_eq!(
        server.metric("pep_cloud_claims{state=\"pending\"}").await,
        0.0
    );
    let log = server.log();
    assert!(!log.contains(KEY), "the API key is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_mode_uploads_several_small_files_and_settles_each_id() {
    let _one = ONE_AT_A_TIME.lock().await;
    let limit = 40_000; // about 400 IDs per file
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        max_upload_bytes: limit,
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    let server = start(
        &standin,
        KEY,
        "bulk",
        &format!("bulk_interval_s = 1\nbulk_max_file_bytes = {limit}"),
    )
    .await;
    fleet(&server, 2000, "bulk-", 18384).await;
    wait_until("2000 bulk claims", Duration::from_secs(300), || async {
        claimed_metric(&server).await == 2000
    })
    .await;
    let deployed = deployed_ids(&server).await;
    assert_exactly_once(&standin, &deployed);
    let uploads = standin.uploads();
    assert!(
        uploads.len() >= 5,
        "2000 IDs in files of 40 kB: {uploads:?}"
    );
    assert!(uploads.iter().all(|u| u.bytes <= limit), "{uploads:?}");
    assert_eq!(uploads.iter().map(|u| u.ids).sum::<usize>(), 2000);
    assert_eq!(posts(&standin, "/v3/device-enrollments"), 0, "bulk only");
    // Each task was polled to `completed` (new in the upload answer, then processing, completed).
    let polls = standin
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v3/device-enrollments-bulk-uploads/"))
        .count();
    assert!(
        polls >= uploads.len() * 2,
        "{polls} polls for {} uploads",
        uploads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_errors_report_settles_already_claimed_and_rejected_ids() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    standin.set_down(true);
    let server = start(&standin, KEY, "bulk", "bulk_interval_s = 1").await;
    let report = fleet(&server, 20, "bulk409-", 20384).await;
    // Someone claimed one of them first: the bulk task reports it.
    let taken = report
        .stored_enrollment_ids
        .values()
        .next()
        .unwrap()
        .clone();
    standin.preclaim(&taken);
    standin.set_down(false);
    wait_until("19 claimed", Duration::from_secs(120), || async {
        claimed_metric(&server).await == 19
    })
    .await;
    wait_until("1 already claimed", Duration::from_secs(60), || async {
        server
            .metric("pep_cloud_claims{state=\"already_claimed\"}")
            .await
            == 1.0
    })
    .await;
    let already = claims(&server, Some("already_claimed")).await;
    assert_eq!(already.len(), 1);
    assert_eq!(already[0]["enrollmentID"], taken.as_str());
    assert!(
        already[0]["lastError"]
            .as_str()
            .unwrap()
            .contains("already"),
        "{}",
        already[0]
    );
    assert!(!standin.claim_counts().contains_key(&taken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloud_down_for_the_first_half_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    standin.set_down(true);
    let server = start(&standin, KEY, "each", "max_in_flight = 8").await;
    let half = async {
        wait_until("half of the fleet", Duration::from_secs(300), || async {
            server
                .metric("pep_store_identities{state=\"deployed\"}")
                .await
                >= 1000.0
        })
        .await;
        // Claims were tried and failed while the cloud was down.
        let retrying = server.metric("pep_cloud_claims{state=\"retrying\"}").await;
        standin.set_down(false);
        retrying
    };
    let (_, retrying) = tokio::join!(fleet(&server, 2000, "down-", 22384), half);
    assert!(
        retrying > 0.0,
        "no claim was retried while the cloud was down"
    );
    wait_until(
        "2000 claims after the outage",
        Duration::from_secs(300),
        || async { claimed_metric(&server).await == 2000 },
    )
    .await;
    let deployed = deployed_ids(&server).await;
    assert_exactly_once(&standin, &deployed);
    let retried = claims(&server, Some("claimed"))
        .await
        .iter()
        .filter(|r| r["attempts"].as_i64().unwrap() > 1)
        .count();
    assert!(retried > 0, "some claims needed more than one attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_is_honoured_no_request_before_retry_after() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    standin.set_down(true);
    // One request at a time: the log orders them strictly.
    let server = start(&standin, KEY, "each", "max_in_flight = 1").await;
    fleet(&server, 30, "rate-", 24384).await;
    standin.rate_limit_next(2, 2);
    standin.set_down(false);
    wait_until("30 claims", Duration::from_secs(120), || async {
        claimed_metric(&server).await == 30
    })
    .await;
    let log = standin.requests();
    let limited: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 2, "{log:?}");
    for r in &limited {
        let until = r.at + Duration::from_secs(r.retry_after_s.unwrap());
        let early: Vec<_> = log
            .iter()
            .filter(|other| other.at > r.at && other.at < until)
            .collect();
        assert!(early.is_empty(), "requests before Retry-After: {early:?}");
    }
    assert_exactly_once(&standin, &deployed_ids(&server).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_key_is_rejected_visibly_without_a_retry_storm_then_repaired() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    let wrong = "ak_wrong_key_fedcba9876543210";
    let server = start(&standin, wrong, "each", "max_in_flight = 4").await;
    fleet(&server, 50, "key-", 26384).await;
    wait_until("a rejected claim", Duration::from_secs(60), || async {
        !claims(&server, Some("rejected")).await.is_empty()
    })
    .await;
    // Give a storm the chance to happen: a few more sender rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = standin.requests().len();
    assert!(
        (1..=4).contains(&requests),
        "{requests} requests: at most one round of max_in_flight after a 401"
    );
    let rejected = claims(&server, Some("rejected")).await;
    for r in &rejected {
        let error = r["lastError"].as_str().unwrap();
        assert!(error.starts_with("401"), "{error}");
        assert!(!error.contains(wrong));
    }
    // The rest waits, not lost.
    let pending = claims(&server, Some("pending")).await.len();
    assert_eq!(pending + rejected.len(), 50);
    // Visible on the floor page (the last error) and in the metrics.
    assert_eq!(
        server.metric("pep_cloud_claims{state=\"rejected\"}").await as usize,
        rejected.len()
    );
    let (status, page) = server.get_text("/floor/", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("c-cloud-error") && page.contains("401"),
        "{page}"
    );
    assert!(!page.contains(wrong));
    let (status, metrics) = server.get_text("/metrics", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(!metrics.contains(wrong));

    // The operator fixes the key, re-queues the rejected claims and restarts.
    let dir = server.kill9().await;
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains(wrong), "the API key is in the log");
    assert!(log.contains("refused the API key"), "{log}");
    key_file(dir.path(), KEY);
    let config = dir.path().join("pep.toml");
    let dry = pep_server_cmd(&config, &["cloud", "sync", "--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains(&format!(
            "{pending} claims and 0 deletions would be sent (mode each)"
        )),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("POST ") && l.contains("/v3/device-enrollments "))
            .count(),
        pending
    );
    assert_eq!(
        standin.requests().len(),
        requests,
        "a dry run sends nothing"
    );
    let bad = pep_server_cmd(&config, &["cloud", "retry", "--state", "claimed"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--state `claimed`: must be rejected"),
        "{bad:?}"
    );
    let retry = pep_server_cmd(&config, &["cloud", "retry", "--state", "rejected"]);
    assert!(retry.status.success(), "{retry:?}");
    assert!(
        String::from_utf8_lossy(&retry.stdout)
            .contains(&format!("re-queued {} rejected claims", rejected.len())),
        "{retry:?}"
    );
    let server = Server::start_in(dir).await;
    wait_until(
        "50 claims with the right key",
        Duration::from_secs(120),
        || async { claimed_metric(&server).await == 50 },
    )
    .await;
    assert_exactly_once(&standin, &deployed_ids(&server).await);
}

/// Runs `pep-server --config CONFIG ARGS…` to its end.
fn pep_server_cmd(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_claims_are_in_flight_resends_every_claim_none_accepted_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    // Slow enough that claims are still in flight when the server dies.
    standin.set_slow(Some(Duration::from_millis(20)));
    let server = start(&standin, KEY, "each", "max_in_flight = 8").await;
    fleet(&server, 2000, "kill-", 28384).await;
    let deployed = deployed_ids(&server).await;
    wait_until("some claims", Duration::from_secs(120), || async {
        standin.claim_counts().len() >= 300
    })
    .await;
    let dir = server.kill9().await;
    let before = standin.claim_counts().len();
    assert!(before < 2000, "the kill came after every claim");
    standin.set_slow(None);
    let server = Server::start_in(dir).await;
    wait_until("2000 settled claims", Duration::from_secs(300), || async {
        let claimed = claimed_metric(&server).await;
        let already = server
            .metric("pep_cloud_claims{state=\"already_claimed\"}")
            .await as u64;
        claimed + already == 2000
    })
    .await;
    assert_exactly_once(&standin, &deployed);
    // A claim the cloud accepted just before the kill, whose answer was lost, is sent once more
    // and answered 409: `already_claimed`, never accepted twice. At most one round of them.
    let already = claims(&server, Some("already_claimed")).await;
    assert!(already.len() <= 32, "{} already claimed", already.len());
    let total_posts = posts(&standin, "/v3/device-enrollments");
    assert_eq!(total_posts, 2000 + already.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_go_through_the_standard_http_proxy_variable() {
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    // A host that does not resolve: only the proxy (the stand-in, which routes on the path of
    // the absolute request URI) can answer.
    let dir = cloud_dir("http://cloud.invalid", KEY, "each", "");
    let proxy = standin.url();
    let server = Server::start_in_with_env(
        dir,
        &[
            ("HTTP_PROXY", std::ffi::OsStr::new(&proxy)),
            ("http_proxy", std::ffi::OsStr::new(&proxy)),
            ("NO_PROXY", std::ffi::OsStr::new("")),
            ("no_proxy", std::ffi::OsStr::new("")),
        ],
    )
    .await;
    fleet(&server, 10, "proxy-", 30384).await;
    wait_until(
        "10 claims through the proxy",
        Duration::from_secs(60),
        || async { claimed_metric(&server).await == 10 },
    )
    .await;
    assert_exactly_once(&standin, &deployed_ids(&server).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletions_go_out_by_cloud_id_or_as_a_bulk_delete() {
    use pep_server::cloud::{CloudClient, SenderOptions, Worker};
    use pep_server::config::{CloudConfig, CloudMode};
    use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl};
    use pep_server::store::{
        ClaimAction, ClaimState, DeployedOutcome, NewAttempt, Reservation, SortOrder, Store,
        StoreOptions, now_ms,
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let standin = Standin::spawn(StandinOptions {
        api_key: KEY.to_owned(),
        ..StandinOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pep.sqlite").display());
    let store = Store::open_with(
        &url,
        StoreOptions {
            claims: true,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let eid = |i: u8| {
        let pairs: Vec<String> = (0..32u8).map(|k| format!("{:02X}", k ^ i)).collect();
        format!("A-{}", pairs.join(":"))
    };
    for (i, serial) in [(1u8, "DEL-1"), (2, "DEL-2")] {
        let text = |s: &str| FieldText::new(s.to_owned()).unwrap();
        let link = |s: &str| HttpUrl::new(s.to_owned()).unwrap();
        let attempt = NewAttempt {
            params: GatewayParams {
                serial_number: serial.parse().unwrap(),
                gateway: "127.0.0.1:40000".parse().unwrap(),
                api_address: link("https://api.example"),
                gateway_services_address: link("https://gw.example"),
                hardware_version: text("hw"),
                radio_config: text("00"),
                led_config: text("01"),
                category: Category::Production,
                verification_key: None,
                defaulted: Default::default(),
            },
            requester: "test".to_owned(),
            now_ms: now_ms(),
            request_key: None,
            order: None,
        };
        let Reservation::Reserved { id } = store.reserve(&attempt).await.unwrap() else {
            panic!("not reserved");
        };
        let e = eid(i);
        let outcome = DeployedOutcome {
            enrollment_id: &e,
            cert_serial: "01",
            cert_not_after: 2_000_000_000,
            fcc_warnings: &[],
            duration_ms: 1,
        };
        store.mark_deployed(id, &outcome).await.unwrap();
    }
    // DEL-2 was claimed by someone else: 409, no cloud id of ours.
    standin.preclaim(&eid(2));
    let cloud = CloudConfig {
        api_key_file: Some(key_file(dir.path(), KEY)),
        mode: CloudMode::Each,
        ..CloudConfig::default()
    };
    let client = CloudClient::new(standin.url(), cloud.load_api_key().unwrap()).unwrap();
    let mut worker = Worker::new(
        store.clone(),
        client,
        SenderOptions {
            mode: CloudMode::Each,
            max_in_flight: 4,
            bulk_interval: Duration::from_secs(1),
            bulk_max_file_bytes: 10 * 1024 * 1024,
            backoff_max: Duration::from_secs(2),
            server_id: "test".to_owned(),
        },
    );
    assert_eq!(worker.round().await.unwrap().sent, 2);
    let rows = store
        .list_claims(None, 10, SortOrder::Asc, None)
        .await
        .unwrap();
    assert_eq!(rows[0].state, ClaimState::Claimed);
    assert!(rows[0].cloud_id.is_some());
    assert_eq!(rows[1].state, ClaimState::AlreadyClaimed);
    assert_eq!(rows[1].cloud_id, None);

    store.enqueue_claim_delete(&eid(1), "DEL-1").await.unwrap();
    store.enqueue_claim_delete(&eid(2), "DEL-2").await.unwrap();
    assert_eq!(worker.round().await.unwrap().sent, 2);
    let deletes: Vec<_> = store
        .list_claims(Some(ClaimState::Deleted), 10, SortOrder::Asc, None)
        .await
        .unwrap();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(deletes.iter().all(|d| d.action == ClaimAction::Delete));
    let counts = standin.delete_counts();
    assert_eq!(counts.get(&eid(1)), Some(&1));
    assert_eq!(counts.get(&eid(2)), Some(&1));
    let log = standin.requests();
    assert!(log.iter().any(|r| r.method == "DELETE"
        && r.path
            == format!(
                "/v3/device-enrollments/{}",
                rows[0].cloud_id.as_deref().unwrap()
            )));
    assert!(
        log.iter()
            .any(|r| r.method == "POST" && r.path == "/v3/device-enrollments-bulk-deletes")
    );
    assert!(standin.claimed().is_empty());
    // Nothing more is due.
    assert_eq!(worker.round().await.unwrap().taken, 0);
    store.close().await;
}

/// `check-config` on a config whose `[cloud]` section is `cloud`; a `cloud.key` (0600) exists.
fn check_cloud(cloud: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path(), KEY);
    let toml = format!(
        "{}\n[cloud]\n{}\n",
        config_toml(dir.path(), &Options::default()),
        cloud.replace("DIR", &dir.path().display().to_string())
    );
    let config = dir.path().join("pep.toml");
    std::fs::write(&config, toml).unwrap();
    let out = pep_server_cmd(&config, &["check-config"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn cloud_config_errors_are_clear() {
    let (ok, text) = check_cloud(
        "mode = \"each\"\napi_url = \"https://api.example.com\"\napi_key_file = \"DIR/cloud.key\"",
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("cloud claims:   each to https://api.example.com (key from"),
        "{text}"
    );
    assert!(!text.contains(KEY));

    let (ok, text) = check_cloud("mode = \"each\"\napi_key_file = \"DIR/missing.key\"");
    assert!(!ok);
    assert!(
        text.contains("cloud.api_key_file: cannot read") && text.contains("missing.key"),
        "{text}"
    );

    let (ok, text) = check_cloud("mode = \"each\"");
    assert!(!ok);
    assert!(text.contains("cloud.api_key_file: is not set"), "{text}");

    let (ok, text) = check_cloud("mode = \"sometimes\"\napi_key_file = \"DIR/cloud.key\"");
    assert!(!ok);
    assert!(
        text.contains("cloud.mode") && text.contains("sometimes"),
        "{text}"
    );

    let (ok, text) = check_cloud("mode = \"each\"\napi_key = \"ak_inline_secret_key_1234\"");
    assert!(!ok);
    assert!(
        text.contains("cloud.api_key: an API key is never written in the configuration"),
        "{text}"
    );
    assert!(!text.contains("ak_inline_secret_key_1234"), "{text}");

    let (ok, text) =
        check_cloud("mode = \"each\"\napi_key_file = \"DIR/cloud.key\"\nmax_in_flight = 0");
    assert!(!ok);
    assert!(
        text.contains("cloud.max_in_flight: must be at least 1"),
        "{text}"
    );

    let (ok, text) = check_cloud(
        "mode = \"bulk\"\napi_key_file = \"DIR/cloud.key\"\nbulk_max_file_bytes = 20000000",
    );
    assert!(!ok);
    assert!(text.contains("cloud.bulk_max_file_bytes"), "{text}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path(), KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let toml = format!(
            "{}\n[cloud]\nmode = \"each\"\napi_key_file = \"{}\"\n",
            config_toml(dir.path(), &Options::default()),
            key.display()
        );
        let config = dir.path().join("pep.toml");
        std::fs::write(&config, toml).unwrap();
        let out = pep_server_cmd(&config, &["check-config"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success());
        assert!(
            text.contains("cloud.api_key_file") && text.contains("chmod 600"),
            "{text}"
        );
        assert!(!text.contains(KEY));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_doubt_identity_resolved_deployed_queues_its_claim() {
    use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl};
    use pep_server::store::{
        ClaimState, IdentityState, NewAttempt, Reservation, SortOrder, Store, StoreOptions,
        WriteAhead, now_ms,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pep.sqlite").display());
    let options = StoreOptions {
        claims: true,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, options.clone()).await.unwrap();
    let text = |s: &str| FieldText::new(s.to_owned()).unwrap();
    let link = |s: &str| HttpUrl::new(s.to_owned()).unwrap();
    let attempt = NewAttempt {
        params: GatewayParams {
            serial_number: "DOUBT-1".parse().unwrap(),
            gateway: "127.0.0.1:40000".parse().unwrap(),
            api_address: link("https://api.example"),
            gateway_services_address: link("https://gw.example"),
            hardware_version: text("hw"),
            radio_config: text("00"),
            led_config: text("01"),
            category: Category::Production,
            verification_key: None,
            defaulted: Default::default(),
        },
        requester: "test".to_owned(),
        now_ms: now_ms(),
        request_key: None,
        order: None,
    };
    let Reservation::Reserved { id } = store.reserve(&attempt).await.unwrap() else {
        panic!("not reserved");
    };
    let eid = format!("A-{}", ["5A"; 32].join(":"));
    store
        .write_ahead(
            id,
            WriteAhead {
                enrollment_id: eid.clone(),
                cert_serial: "01".to_owned(),
                cert_not_after: 2_000_000_000,
                cert_der: vec![0x30, 0x00],
                now_ms: now_ms(),
            },
        )
        .await
        .unwrap();
    // The server stops mid-injection: in doubt, and no claim (not deployed).
    store.close().await;
    let store = Store::open_with(&url, options).await.unwrap();
    assert_eq!(
        store.identity("DOUBT-1").await.unwrap().unwrap().state,
        IdentityState::InDoubt
    );
    let none = store
        .list_claims(None, 10, SortOrder::Asc, None)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    // The operator finds it on the gateway: deployed, and its claim is queued with it.
    store
        .resolve("DOUBT-1", IdentityState::Deployed, "operator")
        .await
        .unwrap();
    let rows = store
        .list_claims(None, 10, SortOrder::Asc, None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].enrollment_id, eid);
    assert_eq!(rows[0].state, ClaimState::Pending);
    store.close().await;
}
