//! The chaos run: the fleet (`pep-loadgen`, behind `pep-fleet`) provisions a fleet through
//! the real `pep-server` binary while 20% of the gateways misbehave in every way a factory line
//! does (close without reply, corrupted hash, a stall past the server's read timeout, wire status
//! 9, a non-zero ReturnStatus, a refused connection), the server is killed with SIGKILL at random
//! moments and restarted from the same config, and every failed gateway is retried without faults.
//! Then nothing may be lost:
//!
//! * every gateway is deployed, each serial exactly once (one identity row, one `deployed` event);
//! * each stored enrollment ID is the SHA-256 of the certificate that gateway stored;
//! * the audit table has one `attempt` row per attempt, each followed by exactly one outcome
//!   (`deployed`, `failed`, `interrupted`, or `in_doubt` when the kill came after the certificate
//!   was written ahead), and the attempts counter of each identity agrees; none is lost;
//! * every `in_doubt` row is listed by `GET /v3/identities?state=in_doubt` after the restart and
//!   resolved by the operator (here: `failed`, so the retries provision it again), audited once;
//! * `/metrics` (store gauges and the counters of the last server process) agrees with the
//!   database;
//! * the SQLite file passes `PRAGMA integrity_check` after every kill and at the end;
//! * the audit hash chain passes `pep-server audit verify` at the end (issue #16).
//!
//! Defaults are sized for CI (2,000 gateways, one kill). The documented run (docs/robustness.md,
//! `bench/chaos.sh`) uses the same test with `PEP_CHAOS_GATEWAYS=20000 PEP_CHAOS_KILLS=3` in a
//! release build.

use crate::http_support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use fake_fcc::FaultKind;
use fcc_proto::FccStatus;
use http_support::*;
use pep_loadgen::{FleetOptions, FleetReport};
use rand::Rng;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The server's read timeout; the stalling gateways stall longer than this.
const READ_TIMEOUT_MS: u64 = 1_000;

/// Every fault kind of the issue, drawn uniformly by the faulty gateways.
fn fault_kinds() -> Vec<FaultKind> {
    vec![
        FaultKind::CloseWithoutReply,
        FaultKind::CorruptHash,
        FaultKind::Stall(Duration::from_millis(READ_TIMEOUT_MS + 500)),
        FaultKind::WireStatus9,
        FaultKind::ReturnStatus(FccStatus::from_u32(17)),
        FaultKind::Refused,
    ]
}

async fn open_db(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

/// `PRAGMA integrity_check` on the database file (opening it replays the WAL, as a restart would).
async fn integrity_check(path: &Path) -> String {
    let mut conn = open_db(path).await;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.join("; ")
}

/// Starts the server on a config whose listen port is fixed, so a restart serves the same URL.
async fn start_server(gateways: u64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        connect_timeout_ms: 1_000,
        write_timeout_ms: 2_000,
        read_timeout_ms: READ_TIMEOUT_MS,
        request_deadline_ms: 20_000,
        max_concurrent_injections: 64,
        auth_none: false,
    };
    let port = dead_port();
    let toml = config_toml(dir.path(), &options).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    assert!(toml.contains(&format!("127.0.0.1:{port}")));
    std::fs::write(dir.path().join("pep.toml"), toml).unwrap();
    let server = Server::start_in(dir).await;
    println!(
        "chaos: {gateways} gateways, server at {}, database {}",
        server.base,
        server.dir.path().join("pep.sqlite").display()
    );
    server
}

/// Kills the server with SIGKILL when the deployed count reaches each target, checks the database
/// file, and restarts it from the same directory. Returns the running server and when the last
/// process started (ms since the epoch).
async fn killer(mut server: Server, mut targets: Vec<u64>) -> (Server, i64, Vec<String>) {
    targets.sort_unstable();
    let mut last_start = 0;
    let mut log = Vec::new();
    for target in targets {
        loop {
            let deployed = server
                .metric("pep_store_identities{state=\"deployed\"}")
                .await as u64;
            if deployed >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let in_flight = server.metric("pep_provisions_in_flight").await;
        let dir = server.kill9().await;
        let db = dir.path().join("pep.sqlite");
        let check = integrity_check(&db).await;
        assert_eq!(check, "ok", "integrity_check after kill -9 at {target}");
        let down = Instant::now();
        last_start = now_ms();
        server = Server::start_in(dir).await;
        let restarted = down.elapsed().as_secs_f64();
        let in_doubt = resolve_in_doubt(&server).await;
        let line = format!(
            "kill -9 at {target} deployed ({in_flight} provisionings in flight): integrity_check ok, restarted in {restarted:.2} s, {in_doubt} in doubt resolved failed"
        );
        println!("chaos: {line}");
        log.push(line);
    }
    (server, last_start, log)
}

/// The operator after a restart: every in-doubt identity (listed by the API, page by page) is
/// resolved `failed`, so the fleet's retries provision it again. Returns how many.
async fn resolve_in_doubt(server: &Server) -> u64 {
    let mut serials = Vec::new();
    let mut path = "/v3/identities?state=in_doubt&limit=1000&order=ASC".to_owned();
    loop {
        let (status, page) = server.get_json(&path, Some(READ)).await;
        assert_eq!(status, 200, "{page}");
        let results = page["results"].as_array().unwrap();
        if results.is_empty() {
            break;
        }
        for r in results {
            assert_eq!(r["state"], "in_doubt", "{r}");
            assert!(r["enrollmentID"].is_string(), "written ahead: {r}");
            serials.push(r["serialNumber"].as_str().unwrap().to_owned());
        }
        path = page["_links"]["next"]["href"].as_str().unwrap().to_owned();
    }
    for serial in &serials {
        let (status, body) = server.resolve(serial, "failed", BOTH).await;
        assert_eq!(status, 200, "{serial}: {body}");
    }
    serials.len() as u64
}

/// The audit trail of every serial the fleet holds no stored certificate for (diagnostics).
async fn unresolved(server: &Server, report: &FleetReport) -> String {
    let mut conn = open_db(&server.dir.path().join("pep.sqlite")).await;
    let rows = sqlx::query("SELECT serial, state, attempts, last_error FROM identities")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut out = String::new();
    for row in rows {
        let serial: String = row.get(0);
        let state: String = row.get(1);
        if state == "deployed" && report.stored_enrollment_ids.contains_key(&serial) {
            continue;
        }
        let attempts: i64 = row.get(2);
        let error: Option<String> = row.get(3);
        out.push_str(&format!(
            "{serial}: {state}, {attempts} attempts, {error:?}\n"
        ));
        let trail = sqlx::query(
            "SELECT at_ms, event, gateway, detail FROM audit WHERE serial = ?1 ORDER BY id",
        )
        .bind(&serial)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for t in trail {
            let at: i64 = t.get(0);
            let event: String = t.get(1);
            let gateway: String = t.get(2);
            let detail: Option<String> = t.get(3);
            out.push_str(&format!("  {at} {event} {gateway} {detail:?}\n"));
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn scalar(conn: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap()
}

/// Checks every guarantee against the database and `/metrics`; returns figures for the log.
async fn verify(server: &Server, report: &FleetReport, gateways: u64, last_start: i64) -> String {
    let db = server.dir.path().join("pep.sqlite");
    let mut conn = open_db(&db).await;

    // Every gateway deployed, each serial exactly once.
    let identities = scalar(&mut conn, "SELECT count(*) FROM identities").await;
    let deployed = scalar(
        &mut conn,
        "SELECT count(*) FROM identities WHERE state = 'deployed'",
    )
    .await;
    assert_eq!(identities as u64, gateways, "one identity row per serial");
    assert_eq!(deployed as u64, gateways, "every gateway deployed");
    let twice = scalar(
        &mut conn,
        "SELECT count(*) FROM (SELECT serial FROM audit WHERE event = 'deployed' \
         GROUP BY serial HAVING count(*) <> 1)",
    )
    .await;
    assert_eq!(twice, 0, "a serial has more than one `deployed` event");

    // Each stored enrollment ID is the SHA-256 of the certificate that gateway stored.
    let rows = sqlx::query("SELECT serial, enrollment_id FROM identities")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(report.stored_enrollment_ids.len() as u64, gateways);
    for row in &rows {
        let serial: String = row.get(0);
        let stored: String = row.get(1);
        let held = report
            .stored_enrollment_ids
            .get(&serial)
            .unwrap_or_else(|| panic!("{serial}: no gateway stored a certificate"));
        assert_eq!(
            &stored, held,
            "{serial}: database vs the gateway's certificate"
        );
    }

    // One audit row per attempt: per serial the events are (attempt, outcome)* with the last
    // outcome `deployed`; the identity's attempts counter is the number of attempt rows.
    let events = sqlx::query(
        "SELECT serial, event FROM audit WHERE event NOT IN ('conflict', 'resolved') \
         ORDER BY serial, id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut by_serial: HashMap<String, Vec<String>> = HashMap::new();
    for row in &events {
        by_serial
            .entry(row.get::<String, _>(0))
            .or_default()
            .push(row.get(1));
    }
    let attempts: HashMap<String, i64> = sqlx::query("SELECT serial, attempts FROM identities")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut outcome_counts: BTreeMap<String, u64> = BTreeMap::new();
    for (serial, evs) in &by_serial {
        assert!(evs.len() % 2 == 0, "{serial}: {evs:?}");
        for pair in evs.chunks(2) {
            assert_eq!(pair[0], "attempt", "{serial}: {evs:?}");
            assert!(
                ["deployed", "failed", "interrupted", "in_doubt"].contains(&pair[1].as_str()),
                "{serial}: {evs:?}"
            );
            *outcome_counts.entry(pair[1].clone()).or_default() += 1;
        }
        assert_eq!(evs.last().map(String::as_str), Some("deployed"), "{serial}");
        assert_eq!(
            attempts[serial] as usize,
            evs.len() / 2,
            "{serial}: attempts counter vs attempt rows"
        );
    }
    let attempt_rows = scalar(
        &mut conn,
        "SELECT count(*) FROM audit WHERE event = 'attempt'",
    )
    .await;
    let attempts_sum = scalar(&mut conn, "SELECT sum(attempts) FROM identities").await;
    assert_eq!(attempt_rows, attempts_sum);
    // Every in-doubt outcome was resolved once, by the operator.
    let in_doubt_rows = scalar(
        &mut conn,
        "SELECT count(*) FROM audit WHERE event = 'in_doubt'",
    )
    .await;
    let resolved_rows = scalar(
        &mut conn,
        "SELECT count(*) FROM audit WHERE event = 'resolved'",
    )
    .await;
    assert_eq!(in_doubt_rows, resolved_rows, "in_doubt vs resolved rows");
    let conflicts = scalar(
        &mut conn,
        "SELECT count(*) FROM audit WHERE event = 'conflict'",
    )
    .await;
    let already: u64 = report.retries.iter().map(|r| r.already_deployed).sum();
    assert_eq!(conflicts as u64, already, "409s vs conflict rows");

    // /metrics agrees: store gauges with the tables, counters of this process with its rows.
    let (status, text) = server.get_text("/metrics", Some(READ)).await;
    assert_eq!(status, 200);
    let m = |sample: &str| metric_value(&text, sample).unwrap_or(0.0) as i64;
    assert_eq!(m("pep_store_identities{state=\"deployed\"}"), deployed);
    assert_eq!(m("pep_store_identities{state=\"failed\"}"), 0);
    assert_eq!(m("pep_store_identities{state=\"in_flight\"}"), 0);
    assert_eq!(m("pep_store_identities{state=\"in_doubt\"}"), 0);
    assert_eq!(m("pep_provisions_in_flight"), 0);
    let since = |event: &str| {
        format!("SELECT count(*) FROM audit WHERE event = '{event}' AND at_ms >= {last_start}")
    };
    assert_eq!(
        m("pep_provisions_total{result=\"deployed\"}"),
        scalar(&mut conn, &since("deployed")).await,
        "deployed counter vs rows of this process"
    );
    let failed_counter: i64 = [
        "gateway_rejected",
        "gateway_failed",
        "gateway_unreachable",
        "gateway_timeout",
        "internal",
    ]
    .iter()
    .map(|r| m(&format!("pep_provisions_total{{result=\"{r}\"}}")))
    .sum();
    assert_eq!(
        failed_counter,
        scalar(&mut conn, &since("failed")).await,
        "failure counters vs rows of this process"
    );
    assert_eq!(
        m("pep_provisions_total{result=\"conflict\"}"),
        scalar(&mut conn, &since("conflict")).await
    );
    conn.close().await.unwrap();
    format!(
        "{attempt_rows} attempts for {gateways} gateways; outcomes {outcome_counts:?}; {conflicts} conflicts (answers lost to a kill)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_fleet_with_kill_9_loses_nothing() {
    let gateways: u64 = env_or("PEP_CHAOS_GATEWAYS", 2_000);
    let kills: u32 = env_or("PEP_CHAOS_KILLS", 1);
    let concurrency: usize = env_or("PEP_CHAOS_CONCURRENCY", 32);
    let seed: u64 = env_or("PEP_CHAOS_SEED", rand::thread_rng().r#gen());
    let started = Instant::now();
    let server = start_server(gateways).await;
    let base = server.base.clone();

    // Kill moments: random points of progress, by deployed count.
    let mut rng = rand::thread_rng();
    let targets: Vec<u64> = (0..kills)
        .map(|_| rng.gen_range(gateways / 10..=gateways * 8 / 10))
        .collect();
    println!("chaos: seed {seed}, kill -9 at deployed counts {targets:?}");

    let options = FleetOptions {
        gateways,
        concurrency,
        server: base,
        ca_cert: None,
        token: Some(BOTH.to_owned()),
        fault_rate: 0.2,
        seed,
        fault_kinds: fault_kinds(),
        serial_prefix: "chaos-".to_owned(),
        request_timeout: Duration::from_secs(60),
        retry_rounds: 10,
        ports: pep_loadgen::PortRange::DEFAULT,
    };
    let fleet = tokio::spawn(pep_loadgen::run(options));
    let (server, last_start, kill_log) = killer(server, targets).await;
    let report = fleet.await.unwrap().unwrap();
    println!("{report}");

    // The first pass failed at least the faulty gateways; the retries deployed every one.
    assert!(report.faulty > 0);
    assert!(
        report.failed >= report.faulty - report.faulty_succeeded,
        "faulty gateways that did not fail: {report}"
    );
    assert_eq!(report.faulty_succeeded, 0, "{report}");
    if !report.is_clean() {
        let trail = unresolved(&server, &report).await;
        panic!(
            "not every gateway was deployed:\n{report}\n{trail}\nserver log tail:\n{}",
            tail(&server.log(), 40)
        );
    }
    assert_eq!(report.deployed_after_retries, gateways);
    for kind in fault_kinds() {
        let name = kind.to_string();
        assert!(
            report.failures_by_fault.contains_key(&name),
            "fault {name} never drawn: {report}"
        );
    }

    let figures = verify(&server, &report, gateways, last_start).await;
    let check = integrity_check(&server.dir.path().join("pep.sqlite")).await;
    assert_eq!(check, "ok", "integrity_check at the end");
    let (status, log, dir) = server.stop().await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // The audit hash chain (issue #16) survived every kill -9 and restart: it verifies, with the
    // checkpoints every start and the last shutdown signed.
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("audit")
        .arg("verify")
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("pep.sqlite").display()
        ))
        .arg("--ca-cert")
        .arg(fixtures().join("ca/CA_cert.pem"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "audit verify after the chaos run:\n{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    println!(
        "chaos: {figures}; kills: {kill_log:?}; total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
