//! Durable before visible (issue #13): the real `pep-server` runs under `strace`, provisions 50
//! gateways, and the syscall trace must show, for every `200` answer, that the write-ahead log
//! page holding that gateway's row was synced (`fsync`/`fdatasync` of the `-wal` file completed)
//! after it was written and before the answer went out. With `[store] durability = "normal"` the
//! same analysis finds answers sent before their row was synced, so the check can fail.
//!
//! Also one process per SQLite file: a second server (or `migrate-store`) on a live database
//! exits 1 before listening, naming the lock file.
//!
//! `strace` is Debian's package (`.ci/run` installs it); ptrace of a child needs no privileges.

use crate::http_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fake_fcc::Sessions;
use http_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const GATEWAYS: usize = 10;
const PER_GATEWAY: usize = 5;

/// Runs the server under strace on a fresh SQLite file with `store_section` appended to the
/// config, provisions `GATEWAYS * PER_GATEWAY` serials (one stream per gateway, all gateways at
/// once, so group commits batch several answers), stops it, and returns the trace.
async fn traced_provisioning(store_section: &str, prefix: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{store_section}",
        config_toml(dir.path(), &Options::default())
    );
    std::fs::write(dir.path().join("pep.toml"), config).unwrap();
    let trace = dir.path().join("strace.out");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "65536", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=fsync,fdatasync,write,writev,pwrite64,sendto,sendmsg",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_pep-server"))
        .arg("--config")
        .arg(dir.path().join("pep.toml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("strace runs (Debian package `strace`)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.trim().to_owned();
            }
        }
        panic!("pep-server under strace exited before listening");
    })
    .await
    .expect("pep-server under strace did not listen within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let client = reqwest::Client::new();
    let mut streams = tokio::task::JoinSet::new();
    for g in 0..GATEWAYS {
        let (client, base, prefix) = (client.clone(), format!("http://{addr}"), prefix.to_owned());
        streams.spawn(async move {
            let (gw, _handle) = gateway(Sessions::Forever, &[]).await;
            for k in 0..PER_GATEWAY {
                let serial = format!("{prefix}-{g:02}-{k}");
                let response = client
                    .get(format!("{base}{}", identity_path(&serial, gw)))
                    .bearer_auth(BOTH)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    200,
                    "{serial}: {:?}",
                    response.text().await
                );
            }
        });
    }
    while let Some(done) = streams.join_next().await {
        done.unwrap();
    }
    // SIGTERM to the server (strace's child; strace's own command line starts with `strace`),
    // then strace exits with it.
    let server_cmdline = format!(
        "^{} --config {}",
        env!("CARGO_BIN_EXE_pep-server"),
        dir.path().join("pep.toml").display()
    );
    let _ = std::process::Command::new("pkill")
        .args(["-TERM", "-f", &server_cmdline])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let text = std::fs::read_to_string(&trace).unwrap();
    if let Ok(keep) = std::env::var("PEP_KEEP_TRACE") {
        std::fs::write(keep, &text).unwrap();
    }
    text
}

/// What the trace says of each serial: `(index of the first WAL write of its row as deployed,
/// index of its 200 answer)`, and the indexes at which a sync of the WAL completed.
struct Trace {
    answers: HashMap<String, (Option<usize>, usize)>,
    wal_syncs: Vec<usize>,
}

/// Reads strace's `-f -y` output in completion order. A call split by another thread shows as
/// `… <unfinished ...>` and later `<... NAME resumed>`: a write counts where it starts (its
/// bytes are printed there), a sync where it returns.
fn analyse(trace: &str, serials: &[String]) -> Trace {
    let mut deployed_write: HashMap<&str, usize> = HashMap::new();
    let mut answers = HashMap::new();
    let mut wal_syncs = Vec::new();
    let mut pending_sync: HashMap<&str, bool> = HashMap::new();
    for (i, line) in trace.lines().enumerate() {
        let pid = line.split_whitespace().next().unwrap_or("");
        let call = line.get(pid.len()..).unwrap_or("").trim_start();
        let is_sync = call.starts_with("fsync(") || call.starts_with("fdatasync(");
        if is_sync {
            let wal = call.contains("-wal>");
            if call.contains("<unfinished ...>") {
                pending_sync.insert(pid, wal);
            } else if wal && call.trim_end().ends_with("= 0") {
                wal_syncs.push(i);
            }
            continue;
        }
        if call.starts_with("<... fsync resumed>") || call.starts_with("<... fdatasync resumed>") {
            if pending_sync.remove(pid) == Some(true) && call.trim_end().ends_with("= 0") {
                wal_syncs.push(i);
            }
            continue;
        }
        if (call.starts_with("pwrite64(") || call.starts_with("write(")) && call.contains("-wal>") {
            // A WAL frame is a whole page, written again by later commits of rows beside this
            // one: what counts is the first frame holding the row as deployed (its record: the
            // serial's bytes followed by the state's).
            for s in serials {
                if !deployed_write.contains_key(s.as_str())
                    && call.contains(&format!("{s}deployed"))
                {
                    deployed_write.insert(s.as_str(), i);
                }
            }
            continue;
        }
        let is_send = ["write(", "writev(", "sendto(", "sendmsg("]
            .iter()
            .any(|c| call.starts_with(c));
        if is_send && call.contains("HTTP/1.1 200") {
            for s in serials {
                if call.contains(&format!("\\\"serialNumber\\\":\\\"{s}\\\""))
                    || call.contains(&format!("\"serialNumber\":\"{s}\""))
                {
                    answers.insert(s.clone(), (deployed_write.get(s.as_str()).copied(), i));
                }
            }
        }
    }
    Trace { answers, wal_syncs }
}

/// The serials answered before a WAL sync covered their last WAL write.
fn unsynced_answers(t: &Trace) -> Vec<String> {
    let mut out: Vec<String> = t
        .answers
        .iter()
        .filter(|(_, (written, answered))| {
            let Some(written) = written else {
                return true;
            };
            !t.wal_syncs.iter().any(|s| s > written && s < answered)
        })
        .map(|(s, _)| s.clone())
        .collect();
    out.sort();
    out
}

fn serials(prefix: &str) -> Vec<String> {
    (0..GATEWAYS)
        .flat_map(|g| (0..PER_GATEWAY).map(move |k| format!("{prefix}-{g:02}-{k}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_200_follows_a_sync_of_the_wal_page_holding_its_row() {
    let prefix = "DURFULL";
    let trace = traced_provisioning("", prefix).await;
    let serials = serials(prefix);
    let t = analyse(&trace, &serials);
    assert_eq!(
        t.answers.len(),
        serials.len(),
        "every 200 answer is in the trace ({} WAL syncs seen)",
        t.wal_syncs.len()
    );
    for (serial, (written, _)) in &t.answers {
        assert!(
            written.is_some(),
            "{serial}: no WAL write of its row before its answer"
        );
    }
    assert_eq!(unsynced_answers(&t), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_normal_durability_answers_go_out_before_their_row_is_synced() {
    let prefix = "DURNORM";
    let trace = traced_provisioning("\n[store]\ndurability = \"normal\"\n", prefix).await;
    let serials = serials(prefix);
    let t = analyse(&trace, &serials);
    assert_eq!(t.answers.len(), serials.len());
    // NORMAL syncs the WAL only at checkpoints: the analysis must see the difference.
    assert!(
        !unsynced_answers(&t).is_empty(),
        "normal durability synced every answer's row ({} WAL syncs): the check cannot tell",
        t.wal_syncs.len()
    );
}

/// Runs `pep-server ARGS`, expecting it to end by itself; returns (exit code, stderr).
async fn run_to_end(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_pep-server"))
            .args(args)
            .env_remove("PEP_CONFIG")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("pep-server ended within 60 s")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lock_of(dir: &Path) -> String {
    dir.join("pep.sqlite.lock").display().to_string()
}

#[tokio::test]
async fn a_second_server_or_migrate_store_on_a_live_database_is_refused_naming_the_lock() {
    let first = Server::start(Options::default()).await;
    let dir = first.dir.path().to_owned();
    let (gw, _handle) = gateway(Sessions::One, &[]).await;
    let (status, _) = first.identity("LOCK-1", gw).await;
    assert_eq!(status, 200);

    // The same config again: same database file.
    let config = dir.join("pep.toml");
    let (code, stderr) = run_to_end(&["--config".as_ref(), config.as_os_str()]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&lock_of(&dir)), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");

    // migrate-store with the live file as source, and as target.
    let live = format!("sqlite://{}", dir.join("pep.sqlite").display());
    let other_dir = tempfile::tempdir().unwrap();
    let other = format!(
        "sqlite://{}",
        other_dir.path().join("copy.sqlite").display()
    );
    for (from, to) in [(&live, &other), (&other, &live)] {
        let (code, stderr) = run_to_end(&[
            "migrate-store".as_ref(),
            "--from".as_ref(),
            from.as_ref(),
            "--to".as_ref(),
            to.as_ref(),
        ])
        .await;
        assert_eq!(code, Some(1), "{from} -> {to}: {stderr}");
        assert!(stderr.contains(&lock_of(&dir)), "{stderr}");
    }

    // The first server still serves, its row intact; once it stops, the file opens again.
    let (status, enrollment_id) = first
        .get_text("/v3/enrollment-id?serialNumber=LOCK-1", Some(BOTH))
        .await;
    assert_eq!(status, 200, "{enrollment_id}");
    assert!(enrollment_id.starts_with("A-"), "{enrollment_id}");
    // A crash (SIGKILL) releases the lock with the process: the file opens again at once.
    let dir = first.kill9().await;
    let again = Server::start_in(dir).await;
    let (status, after_restart) = again
        .get_text("/v3/enrollment-id?serialNumber=LOCK-1", Some(BOTH))
        .await;
    assert_eq!((status, after_restart), (200, enrollment_id));
}
