//! The tamper-evident audit trail on SQLite (issue #16), through the real `pep-server` binary: a
//! server provisions gateways (deployed, failed, conflicting), stops (signing a checkpoint), and
//! `pep-server audit verify` passes; then each single change made with the `sqlite3` CLI — an
//! edited row, a deleted row, two rows' ids swapped, the tail cut off, a forged checkpoint, a row
//! inserted outside the chain — makes it fail, naming the row. An export verifies offline, also
//! when it starts mid-chain, and a tampered export line fails. Rows written before the chain
//! existed are chained at the next start, and a server killed with SIGKILL mid-provisioning leaves
//! a chain that still verifies after its restart.

use crate::http_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_fcc::{FaultKind, Sessions};
use fcc_proto::FccStatus;
use http_support::*;

/// The test CA's certificate (the one `config_toml` configures).
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

/// `audit verify --database sqlite://DB --ca-cert CA`.
async fn verify_db(db: &Path) -> (i32, String, String) {
    let url = format!("sqlite://{}", db.display());
    let ca = ca_cert();
    pep(&[
        "audit",
        "verify",
        "--database",
        &url,
        "--ca-cert",
        ca.to_str().unwrap(),
    ])
    .await
}

/// Runs `sql` on `db` with the `sqlite3` command-line shell.
fn sqlite3(db: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 command-line shell (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A standalone copy of the database `db` (WAL folded in) at `to`.
fn copy_db(db: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    sqlite3(db, &format!("VACUUM INTO '{}'", to.display()));
}

/// The audit row ids, in id order.
fn audit_ids(db: &Path) -> Vec<i64> {
    sqlite3(db, "SELECT id FROM audit ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Provisions `serials` at `gw`, all at once; returns the statuses.
async fn provision_all(server: &Arc<Server>, serials: &[String], gw: SocketAddr) -> Vec<u16> {
    let tasks: Vec<_> = serials
        .iter()
        .map(|serial| {
            let (server, serial) = (Arc::clone(server), serial.clone());
            tokio::spawn(async move { server.identity(&serial, gw).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// A server that provisioned 8 gateways (one twice: a conflict) and failed one, then stopped
/// with SIGTERM (the shutdown checkpoint). Returns its directory (config, database, log).
async fn provisioned_and_stopped() -> tempfile::TempDir {
    let server = Arc::new(Server::start(Options::default()).await);
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let serials: Vec<String> = (0..8).map(|i| format!("AUDIT-{i:02}")).collect();
    let statuses = provision_all(&server, &serials, gw).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (status, body) = server.identity("AUDIT-00", gw).await;
    assert_eq!(status, 409, "{body}");
    let (bad, _b) = gateway(
        Sessions::Forever,
        &[FaultKind::ReturnStatus(FccStatus::from_u32(13))],
    )
    .await;
    let (status, body) = server.identity("AUDIT-BAD", bad).await;
    assert_eq!(status, 502, "{body}");
    let server = Arc::into_inner(server).unwrap();
    let (status, log, dir) = server.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("audit checkpoint signed"),
        "no checkpoint logged at shutdown:\n{log}"
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_every_single_row_change_made_with_sqlite3() {
    let dir = provisioned_and_stopped().await;
    let db = dir.path().join("pep.sqlite");
    let (code, out, err) = verify_db(&db).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit trail intact"), "{out}");
    assert!(out.contains("1 checkpoint(s) matched"), "{out}");
    // 8 attempts + 8 deployed + 1 conflict + 1 attempt + 1 failed.
    let ids = audit_ids(&db);
    assert_eq!(ids.len(), 19, "{ids:?}");
    let m = ids[ids.len() / 2];
    let case = |name: &str| dir.path().join(format!("{name}.sqlite"));

    // An edited row: its hash no longer matches its contents.
    let edited = case("edited");
    copy_db(&db, &edited);
    sqlite3(
        &edited,
        &format!("UPDATE audit SET requester = 'nobody' WHERE id = {m}"),
    );
    let (code, out, _) = verify_db(&edited).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {m} "))
            && out.contains("hash mismatch of the row contents"),
        "{out}"
    );

    // Every hashed column counts, the event and the FCC status too.
    for change in [
        "event = 'x' || event",
        "at_ms = at_ms + 1",
        "fcc_status = 99",
        "detail = 'x'",
        "serial = 'AUDIT-99'",
    ] {
        let edited = case("edited-column");
        copy_db(&db, &edited);
        sqlite3(
            &edited,
            &format!("UPDATE audit SET {change} WHERE id = {m}"),
        );
        let (code, out, _) = verify_db(&edited).await;
        assert_eq!(code, 1, "{change}: {out}");
        assert!(out.contains(&format!("audit row {m} ")), "{change}: {out}");
    }

    // A deleted row: the row after it is not the next position.
    let deleted = case("deleted");
    copy_db(&db, &deleted);
    sqlite3(&deleted, &format!("DELETE FROM audit WHERE id = {m}"));
    let (code, out, _) = verify_db(&deleted).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row missing before it")
            && out.contains(&format!("(after row {})", m - 1))
            && out.contains(&format!("audit row {} ", m + 1)),
        "{out}"
    );

    // Two rows' ids swapped: the chain order and the id order disagree.
    let swapped = case("swapped");
    copy_db(&db, &swapped);
    sqlite3(
        &swapped,
        &format!(
            "UPDATE audit SET id = -1 WHERE id = {m}; UPDATE audit SET id = {m} WHERE id = {n}; \
             UPDATE audit SET id = {n} WHERE id = -1;",
            n = m + 1
        ),
    );
    let (code, out, _) = verify_db(&swapped).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {m} ")) && out.contains("rows reordered"),
        "{out}"
    );

    // A row moved elsewhere in the chain with its position rewritten (and re-linked by hand
    // would need the hash of every later row): the link breaks.
    let relinked = case("relinked");
    copy_db(&db, &relinked);
    sqlite3(
        &relinked,
        &format!(
            "UPDATE audit SET prev_hash = (SELECT prev_hash FROM audit WHERE id = {}) WHERE id = {m}",
            ids[1]
        ),
    );
    let (code, out, _) = verify_db(&relinked).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("audit row {m} ")), "{out}");

    // The tail cut off: the chain itself is consistent, the signed checkpoint is not.
    let truncated = case("truncated");
    copy_db(&db, &truncated);
    let last = ids[ids.len() - 1];
    sqlite3(
        &truncated,
        &format!("DELETE FROM audit WHERE id >= {}", last - 1),
    );
    let (code, out, _) = verify_db(&truncated).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("signed audit row {last} ")) && out.contains("deleted from the tail"),
        "{out}"
    );

    // A checkpoint altered: its signature no longer verifies.
    let forged = case("forged");
    copy_db(&db, &forged);
    sqlite3(&forged, "UPDATE audit_checkpoints SET at_ms = at_ms + 1");
    let (code, out, _) = verify_db(&forged).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");

    // A row inserted outside pep-server: in no chain.
    let inserted = case("inserted");
    copy_db(&db, &inserted);
    sqlite3(
        &inserted,
        "INSERT INTO audit (at_ms, serial, gateway, requester, event) \
         VALUES (1, 'AUDIT-X', '127.0.0.1:1', 'me', 'deployed')",
    );
    let (code, out, _) = verify_db(&inserted).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {}: in no chain", last + 1)),
        "{out}"
    );

    // With another CA's certificate, the checkpoint does not verify.
    let other_ca = tempfile::tempdir().unwrap();
    let (code, _, err) = pep(&[
        "ca",
        "init",
        "--out",
        other_ca.path().to_str().unwrap(),
        "--name",
        "Another CA",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let url = format!("sqlite://{}", db.display());
    let other = other_ca.path().join("CA_cert.pem");
    let (code, out, _) = pep(&[
        "audit",
        "verify",
        "--database",
        &url,
        "--ca-cert",
        other.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");

    // The pristine database still verifies: every case worked on a copy.
    let (code, out, _) = verify_db(&db).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_and_a_tampered_line_fails() {
    let dir = provisioned_and_stopped().await;
    let db = dir.path().join("pep.sqlite");
    let url = format!("sqlite://{}", db.display());
    let ca = ca_cert();
    let ca = ca.to_str().unwrap();
    let file = dir.path().join("audit.jsonl");
    let file_arg = file.to_str().unwrap();

    let (code, _, err) = pep(&[
        "audit",
        "export",
        "--database",
        &url,
        "--since",
        "0",
        "--output",
        file_arg,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("exported 19 audit row(s) of 1 chain(s) and 1 checkpoint(s)"),
        "{err}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert!(lines[..19].iter().all(|l| l["type"] == "row"));
    assert_eq!(lines[19]["type"], "checkpoint");
    assert_eq!(lines[0]["prev_hash"], "0".repeat(64));
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
    let (code, out, err) = pep(&["audit", "verify", "--file", file_arg, "--ca-cert", ca]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit trail intact"), "{out}");

    // From the middle of the chain (RFC 3339 --since): verifies from its first row's prev_hash.
    // The conflict row: every row before it was written by earlier requests.
    let mid = &lines[16];
    let at_ms = mid["at_ms"].as_i64().unwrap();
    let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let part = dir.path().join("part.jsonl");
    let (code, _, err) = pep(&[
        "audit",
        "export",
        "--database",
        &url,
        "--since",
        &since,
        "--output",
        part.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let part_text = std::fs::read_to_string(&part).unwrap();
    let first: serde_json::Value = serde_json::from_str(part_text.lines().next().unwrap()).unwrap();
    assert!(first["seq"].as_i64().unwrap() > 1, "{first}");
    assert!(first["at_ms"].as_i64().unwrap() >= at_ms, "{first}");
    assert!(part_text.lines().count() < 20);
    let (code, out, err) = pep(&[
        "audit",
        "verify",
        "--file",
        part.to_str().unwrap(),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // One field of one line changed: that row fails.
    let mut tampered = lines.clone();
    let id = tampered[5]["id"].as_i64().unwrap();
    tampered[5]["detail"] = serde_json::json!("nothing happened");
    let bad = dir.path().join("bad.jsonl");
    let body: String = tampered.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&bad, body).unwrap();
    let (code, out, _) = pep(&[
        "audit",
        "verify",
        "--file",
        bad.to_str().unwrap(),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit row {id} ")) && out.contains("hash mismatch"),
        "{out}"
    );

    // A line dropped from the middle of the export.
    let mut dropped = lines.clone();
    let gone = dropped.remove(7);
    let body: String = dropped.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&bad, body).unwrap();
    let (code, out, _) = pep(&[
        "audit",
        "verify",
        "--file",
        bad.to_str().unwrap(),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("(after row {})", gone["id"].as_i64().unwrap() - 1)),
        "{out}"
    );

    // The export's tail cut off: its checkpoint names a row the file no longer has.
    let body: String = lines[..15]
        .iter()
        .chain(&lines[19..])
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&bad, body).unwrap();
    let (code, out, _) = pep(&[
        "audit",
        "verify",
        "--file",
        bad.to_str().unwrap(),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deleted from the tail"), "{out}");

    // Not an export line: named with its line number; not checked is exit 2.
    std::fs::write(
        &bad,
        format!("{}\nnot json\n", text.lines().next().unwrap()),
    )
    .unwrap();
    let (code, out, err) = pep(&[
        "audit",
        "verify",
        "--file",
        bad.to_str().unwrap(),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("line 2: not an audit export line"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_audit_command_input_is_refused_with_a_clear_error() {
    let dir = provisioned_and_stopped().await;
    let db = dir.path().join("pep.sqlite");
    let url = format!("sqlite://{}", db.display());
    let ca = ca_cert();
    let ca = ca.to_str().unwrap();

    // No CA certificate: the checkpoints cannot be checked.
    let (code, _, err) = pep(&["audit", "verify", "--database", &url]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("give --ca-cert FILE or --config FILE"),
        "{err}"
    );
    // The CA certificate from the config.
    let config = dir.path().join("pep.toml");
    std::fs::write(&config, config_toml(dir.path(), &Options::default())).unwrap();
    let (code, out, err) = pep(&[
        "--config",
        config.to_str().unwrap(),
        "audit",
        "verify",
        "--database",
        &url,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // A CA certificate that is not one.
    let (code, _, err) = pep(&[
        "audit",
        "verify",
        "--database",
        &url,
        "--ca-cert",
        config.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the CA certificate"), "{err}");
    // A database that does not exist is not created.
    let missing = dir.path().join("missing.sqlite");
    let (code, _, err) = pep(&[
        "audit",
        "verify",
        "--database",
        &format!("sqlite://{}", missing.display()),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot open database"), "{err}");
    assert!(!missing.exists());
    // Both or neither of --database and --file.
    let (code, _, _) = pep(&["audit", "verify", "--ca-cert", ca]).await;
    assert_ne!(code, 0);
    // A bad --since, and an output directory that does not exist: nothing written.
    let out = dir.path().join("out.jsonl");
    let (code, _, err) = pep(&[
        "audit",
        "export",
        "--database",
        &url,
        "--since",
        "yesterday",
        "--output",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--since `yesterday`"), "{err}");
    assert!(!out.exists());
    let nowhere = dir.path().join("no/such/dir/out.jsonl");
    let (code, _, err) = pep(&[
        "audit",
        "export",
        "--database",
        &url,
        "--since",
        "0",
        "--output",
        nowhere.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing written"), "{err}");
    // A database without the chain (never opened by this version): said so.
    let old = dir.path().join("old.sqlite");
    sqlite3(
        &old,
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, at_ms INTEGER)",
    );
    let (code, _, err) = pep(&[
        "audit",
        "verify",
        "--database",
        &format!("sqlite://{}", old.display()),
        "--ca-cert",
        ca,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no audit hash chain"), "{err}");
    // `[audit] checkpoint_interval_s = 0` is a config error.
    let text =
        config_toml(dir.path(), &Options::default()) + "\n[audit]\ncheckpoint_interval_s = 0\n";
    std::fs::write(&config, text).unwrap();
    let (code, out, _) = pep(&["--config", config.to_str().unwrap(), "check-config"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit.checkpoint_interval_s"), "{out}");
}

/// Rows written before the hash chain existed (a store at schema v4) are chained by the next
/// start, and verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_the_chain_are_chained_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pep.sqlite");
    {
        // The store as the previous version left it: migrations up to v4, three audit rows.
        let mut migrator = sqlx::migrate::Migrator::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"),
        )
        .await
        .unwrap();
        migrator.migrations = migrator
            .migrations
            .iter()
            .filter(|m| m.version <= 4)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for (i, event) in ["attempt", "failed", "attempt"].iter().enumerate() {
            sqlx::query(
                "INSERT INTO audit (at_ms, serial, gateway, requester, event, detail) \
                 VALUES ($1, 'OLD-1', '127.0.0.1:9', 'line', $2, 'before v6')",
            )
            .bind(1_700_000_000_000_i64 + i as i64)
            .bind(*event)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    std::fs::write(
        dir.path().join("pep.toml"),
        config_toml(dir.path(), &Options::default()),
    )
    .unwrap();
    let server = Server::start_in(dir).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("NEW-1", gw).await;
    assert_eq!(status, 200, "{body}");
    let (status, log, dir) = server.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("chained the audit rows written before the hash chain existed"),
        "{log}"
    );
    let db = dir.path().join("pep.sqlite");
    // The old rows are the first links of the chain, the new ones follow.
    assert_eq!(
        sqlite3(
            &db,
            "SELECT group_concat(seq) FROM (SELECT seq FROM audit ORDER BY id)"
        ),
        "1,2,3,4,5"
    );
    let (code, out, err) = verify_db(&db).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 row(s)"), "{out}");
    // Chained once: the marker is gone, a row inserted by hand later is not adopted.
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM audit_legacy"), "0");
}

/// SIGKILL in the middle of provisioning, restart (which records the interrupted attempts in the
/// chain), more provisioning, stop: the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_survives_kill_9_and_restart() {
    let server = Arc::new(Server::start(Options::default()).await);
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    // Gateways that stall: their attempts are in flight when the kill comes.
    let (stalled, _s) = gateway(
        Sessions::Forever,
        &[FaultKind::Stall(Duration::from_secs(30))],
    )
    .await;
    let serials: Vec<String> = (0..20).map(|i| format!("KILL-{i:02}")).collect();
    assert!(
        provision_all(&server, &serials, gw)
            .await
            .iter()
            .all(|s| *s == 200)
    );
    let stuck: Vec<String> = (0..5).map(|i| format!("STUCK-{i:02}")).collect();
    let waiting: Vec<_> = stuck
        .iter()
        .map(|serial| {
            let (server, serial) = (Arc::clone(&server), serial.clone());
            tokio::spawn(async move {
                let _ = server.identity(&serial, stalled).await;
            })
        })
        .collect();
    // The stalled attempts are in flight (counted by the server) before the kill.
    for _ in 0..200 {
        if server.metric("pep_provisions_in_flight").await >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.metric("pep_provisions_in_flight").await, 5.0);
    for w in waiting {
        w.abort();
        let _ = w.await;
    }
    let server = Arc::into_inner(server).unwrap();
    let dir = server.kill9().await;
    let server = Arc::new(Server::start_in(dir).await);
    let more: Vec<String> = (20..30).map(|i| format!("KILL-{i:02}")).collect();
    assert!(
        provision_all(&server, &more, gw)
            .await
            .iter()
            .all(|s| *s == 200)
    );
    let server = Arc::into_inner(server).unwrap();
    let (status, log, dir) = server.stop().await;
    assert!(status.success(), "{log}");
    let db = dir.path().join("pep.sqlite");
    // The restart recorded the five stalled attempts (interrupted, or in doubt once their
    // identity was on its way), in the chain.
    assert_eq!(
        sqlite3(
            &db,
            "SELECT count(*) FROM audit WHERE event IN ('interrupted', 'in_doubt') \
             AND seq IS NOT NULL"
        ),
        "5"
    );
    let (code, out, err) = verify_db(&db).await;
    assert_eq!(code, 0, "{out}{err}");
    // Checkpoints of both runs (start, shutdown) matched their rows.
    assert!(out.contains("audit trail intact"), "{out}");
}

/// `[audit] checkpoint_interval_s`: while the server runs, the moved head is signed again at the
/// next interval (not only at start and shutdown); an unmoved head is not signed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_periodically_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        config_toml(dir.path(), &Options::default()) + "\n[audit]\ncheckpoint_interval_s = 1\n";
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    let server = Server::start_in(dir).await;
    let (gw, _h) = gateway(Sessions::Forever, &[]).await;
    let (status, body) = server.identity("TICK-1", gw).await;
    assert_eq!(status, 200, "{body}");
    // The head moved (2 rows): a checkpoint of seq 2 comes at the next tick (polled, no timing
    // assert).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.log().contains("seq=2 ") {
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic checkpoint: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, log, dir) = server.stop().await;
    assert!(status.success(), "{log}");
    // Start (empty chain: nothing), one periodic one, and none at shutdown: the head did not move.
    assert_eq!(log.matches("audit checkpoint signed").count(), 1, "{log}");
    let db = dir.path().join("pep.sqlite");
    assert_eq!(sqlite3(&db, "SELECT seq FROM audit_checkpoints"), "2");
    let (code, out, err) = verify_db(&db).await;
    assert_eq!(code, 0, "{out}{err}");
}
