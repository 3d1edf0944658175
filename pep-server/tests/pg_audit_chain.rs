//! The tamper-evident audit trail on PostgreSQL (issue #16): two real `pep-server` processes on
//! one database each write their own chain; `audit verify` checks both chains and their signed
//! checkpoints; a row edited, deleted or two rows' ids swapped with `psql`, or a chain's tail cut
//! off, makes it fail naming the row. A SQLite store copied by `migrate-store` verifies in
//! PostgreSQL.

use crate::http_support;
use crate::pg_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::FccStatus;
use http_support::{Options, Server, config_toml, fixtures, gateway};
use pg_support::{ADMIN_URL, TestDb};
use sqlx::Connection;

fn ca_cert() -> PathBuf {
    fixtures().join("ca/CA_cert.pem")
}

/// `pep-server ARGS` → (exit code, stdout, stderr).
async fn pep(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(args)
        .env_remove("PEP_CONFIG")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn verify(url: &str) -> (i32, String, String) {
    let ca = ca_cert();
    pep(&[
        "audit",
        "verify",
        "--database",
        url,
        "--ca-cert",
        ca.to_str().unwrap(),
    ])
    .await
}

/// Runs `sql` with the `psql` command-line client; returns its unaligned output.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("the psql client");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A copy of `db` (`CREATE DATABASE … TEMPLATE`), dropped with its guard.
async fn copy_of(db: &TestDb, tag: &str) -> TestDb {
    let name = format!("{}_{tag}", db.name);
    let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {}", db.name))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    TestDb {
        url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
        name,
    }
}

/// Starts `pep-server` on the shared database as server `server_id`.
async fn start(db: &TestDb, server_id: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
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
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    Server::start_in(dir).await
}

async fn provision_all(server: &Arc<Server>, prefix: &str, n: usize, gw: SocketAddr) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let server = Arc::clone(server);
            let serial = format!("{prefix}-{i:02}");
            tokio::spawn(async move { server.identity(&serial, gw).await })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// The ids of chain `server_id`, in chain order.
fn chain_ids(url: &str, server_id: &str) -> Vec<i64> {
    psql(
        url,
        &format!("SELECT id FROM audit WHERE server_id = '{server_id}' ORDER BY seq"),
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_chains_verify_and_psql_changes_are_caught() {
    let db = TestDb::create().await;
    let a = Arc::new(start(&db, "line-a").await);
    let b = Arc::new(start(&db, "line-b").await);
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    // Both servers at once: each appends to its own chain.
    tokio::join!(
        provision_all(&a, "PG-A", 12, gw),
        provision_all(&b, "PG-B", 12, gw)
    );
    let (bad, _bad) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::from_u32(13))],
    )
    .await;
    let (status, _) = a.identity("PG-BAD", bad).await;
    assert_eq!(status, 502);
    let (status, _) = b.identity("PG-A-00", gw).await;
    assert_eq!(status, 409);
    for server in [a, b] {
        let (status, log, _dir) = Arc::into_inner(server).unwrap().stop().await;
        assert!(status.success(), "{log}");
        assert!(log.contains("audit checkpoint signed"), "{log}");
    }

    let (code, out, err) = verify(&db.url).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("chain \"line-a\": 26 row(s)") && out.contains("chain \"line-b\": 25 row(s)"),
        "{out}"
    );
    assert!(!out.contains("0 checkpoint(s) matched"), "{out}");
    let a_ids = chain_ids(&db.url, "line-a");
    let b_ids = chain_ids(&db.url, "line-b");
    assert_eq!((a_ids.len(), b_ids.len()), (26, 25));

    // An edited row of line-b.
    let edited = copy_of(&db, "edited").await;
    let m = b_ids[10];
    psql(
        &edited.url,
        &format!("UPDATE audit SET gateway = '10.0.0.1:1' WHERE id = {m}"),
    );
    let (code, out, _) = verify(&edited.url).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {m} (chain \"line-b\"")) && out.contains("hash mismatch"),
        "{out}"
    );
    // line-a is not affected.
    let line_a = out
        .lines()
        .find(|l| l.starts_with("chain \"line-a\""))
        .unwrap();
    assert!(!line_a.contains("BROKEN"), "{out}");
    drop(edited);

    // A deleted row of line-a.
    let deleted = copy_of(&db, "deleted").await;
    let m = a_ids[5];
    psql(&deleted.url, &format!("DELETE FROM audit WHERE id = {m}"));
    let (code, out, _) = verify(&deleted.url).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {} (chain \"line-a\"", a_ids[6]))
            && out.contains(&format!("row missing before it (after row {})", a_ids[4])),
        "{out}"
    );
    drop(deleted);

    // Two consecutive rows of line-a with their ids swapped.
    let swapped = copy_of(&db, "swapped").await;
    let (x, y) = (a_ids[8], a_ids[9]);
    psql(
        &swapped.url,
        &format!(
            "BEGIN; UPDATE audit SET id = -1 WHERE id = {x}; UPDATE audit SET id = {x} WHERE id = {y}; \
             UPDATE audit SET id = {y} WHERE id = -1; COMMIT;"
        ),
    );
    let (code, out, _) = verify(&swapped.url).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {x} (chain \"line-a\"")) && out.contains("rows reordered"),
        "{out}"
    );
    drop(swapped);

    // line-a's tail cut off: only the signed checkpoint tells.
    let truncated = copy_of(&db, "truncated").await;
    let last = a_ids[a_ids.len() - 1];
    psql(
        &truncated.url,
        &format!(
            "DELETE FROM audit WHERE id IN ({}, {last})",
            a_ids[a_ids.len() - 2]
        ),
    );
    let (code, out, _) = verify(&truncated.url).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("signed audit row {last} (chain \"line-a\""))
            && out.contains("deleted from the tail"),
        "{out}"
    );
    drop(truncated);

    // An export of both chains verifies offline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let (code, _, err) = pep(&[
        "audit",
        "export",
        "--database",
        &db.url,
        "--since",
        "0",
        "--output",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("exported 51 audit row(s) of 2 chain(s)"),
        "{err}"
    );
    let ca = ca_cert();
    let (code, out, err) = pep(&[
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--ca-cert",
        ca.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // A restarted server continues its own chain from its head.
    let a = start(&db, "line-a").await;
    let (status, _) = a.identity("PG-A-LATER", gw).await;
    assert_eq!(status, 200);
    let (status, log, _dir) = a.stop().await;
    assert!(status.success(), "{log}");
    let (code, out, err) = verify(&db.url).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain \"line-a\": 28 row(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_migrated_to_postgres_still_verifies() {
    let server = Arc::new(Server::start(Options::default()).await);
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    provision_all(&server, "MIG", 6, gw).await;
    let (status, log, dir) = Arc::into_inner(server).unwrap().stop().await;
    assert!(status.success(), "{log}");
    let from = format!("sqlite://{}", dir.path().join("pep.sqlite").display());
    let target = TestDb::create().await;
    let (code, out, err) = pep(&["migrate-store", "--from", &from, "--to", &target.url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = verify(&target.url).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("chain \"\" (the default chain): 12 row(s)")
            && out.contains("1 checkpoint(s) matched"),
        "{out}"
    );
    // The source verifies the same.
    let (code, out, err) = verify(&from).await;
    assert_eq!(code, 0, "{out}{err}");
}

/// The lease sweep of a live server expires the attempt of a server that is gone: the
/// `interrupted` row goes to the chain of the server that sweeps (its writer), and every chain
/// still verifies. Library level: the sweep's timing is the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_sweeps_rows_go_to_the_sweeping_servers_chain() {
    use pep_server::model::{Category, FieldText, GatewayParams, HttpUrl};
    use pep_server::store::{NewAttempt, Reservation, Store, StoreOptions, now_ms};
    use std::time::Duration;

    let db = TestDb::create().await;
    let open = |server_id: &str, lease: Duration| {
        let url = db.url.clone();
        let options = StoreOptions {
            server_id: server_id.to_owned(),
            in_flight_lease: lease,
            max_connections: 4,
            ..StoreOptions::default()
        };
        async move { Store::open_with(&url, options).await.unwrap() }
    };
    let text = |s: &str| FieldText::new(s.to_owned()).unwrap();
    let url = |s: &str| HttpUrl::new(s.to_owned()).unwrap();
    let attempt = NewAttempt {
        params: GatewayParams {
            serial_number: "GW-GONE".parse().unwrap(),
            gateway: "127.0.0.1:40000".parse().unwrap(),
            api_address: url("https://api.example"),
            gateway_services_address: url("https://gw.example"),
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
    let gone = open("gone", Duration::from_secs(3600)).await;
    assert!(matches!(
        gone.reserve(&attempt).await.unwrap(),
        Reservation::Reserved { .. }
    ));
    gone.close().await;
    let sweeper = open("sweeper", Duration::from_secs(1)).await;
    // Polled, no timing assert: the sweep runs every second once the lease has passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sweeper.stats().await.unwrap().in_flight > 0 {
        assert!(std::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sweeper.close().await;
    assert_eq!(
        psql(
            &db.url,
            "SELECT server_id || ':' || seq || ':' || event FROM audit ORDER BY id"
        ),
        "gone:1:attempt\nsweeper:1:interrupted"
    );
    let (code, out, err) = verify(&db.url).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("chain \"gone\": 1 row(s)") && out.contains("chain \"sweeper\": 1 row(s)"),
        "{out}"
    );
}
