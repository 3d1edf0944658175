//! Acceptance of the fleet: the real `pep-fleet` binary provisions 2,000 simulated gateways,
//! 64 at a time, through the real `pep-server` binary started from the README's demo config, with
//! no failure; the server's CSV export then holds exactly those 2,000 gateways. Correctness only:
//! the figures of the run are printed, never asserted. `fake-fcc fleet` runs the same binary.
//!
//! `pep-server` and `fake-fcc` are other packages' binaries, which cargo cannot hand to this test
//! on stable, so `workspace-bins` builds them when missing or stale into the same target directory
//! and profile as this test's `pep-fleet` (`PEP_TEST_BIN_DIR` overrides where they are taken from).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const DEMO_TOKEN: &str = "pep-demo-token";

fn repo_root() -> PathBuf {
    workspace_bins::repo_root()
}

const PEP_FLEET: &str = env!("CARGO_BIN_EXE_pep-fleet");

/// The `pep-server` binary next to this test's `pep-fleet`, built if missing or stale.
fn pep_server_bin() -> PathBuf {
    workspace_bins::binaries_dir(
        Path::new(PEP_FLEET),
        &["pep-server"],
        &["fcc-proto", "pep-ca", "pep-server"],
    )
    .join("pep-server")
}

/// The `fake-fcc` binary next to this test's `pep-fleet` (so `fake-fcc fleet` finds it), built
/// if missing or stale.
fn fake_fcc_bin() -> PathBuf {
    workspace_bins::binaries_dir(
        Path::new(PEP_FLEET),
        &["fake-fcc"],
        &["fcc-proto", "fake-fcc"],
    )
    .join("fake-fcc")
}

/// The demo config with its relative paths made absolute, its database in `dir` and a free port.
fn demo_config(dir: &Path) -> PathBuf {
    let root = repo_root();
    let demo = std::fs::read_to_string(root.join("fixtures/demo/pep.toml")).unwrap();
    let mut config = demo.clone();
    for (from, to) in [
        (
            "listen = \"127.0.0.1:5151\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "database_url = \"sqlite://pep-data/pep.sqlite\"".to_owned(),
            format!(
                "database_url = \"sqlite://{}\"",
                dir.join("pep.sqlite").display()
            ),
        ),
        (
            "\"fixtures/".to_owned(),
            format!("\"{}/fixtures/", root.display()),
        ),
    ] {
        assert!(
            config.contains(&from),
            "the demo config no longer has {from}; update this test"
        );
        config = config.replace(&from, &to);
    }
    let path = dir.join("pep.toml");
    std::fs::write(&path, config).unwrap();
    path
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(config: &Path, dir: &Path) -> Server {
    let mut child = Command::new(pep_server_bin())
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pep-server");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "pep-server exited before listening");
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break a.parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    Server { child, addr }
}

fn csv_export(addr: SocketAddr) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{addr}/v3/enrollment-ids.csv"))
            .bearer_auth(DEMO_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.unwrap()
    })
}

#[test]
fn fleet_of_2000_gateways_at_concurrency_64_has_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let server = start_server(&config, dir.path());
    let json_path = dir.path().join("fleet.json");
    let out = Command::new(PEP_FLEET)
        .args(["--gateways", "2000", "--concurrency", "64"])
        .args(["--server", &format!("http://{}", server.addr)])
        .args(["--token", DEMO_TOKEN, "--prefix", "accept-"])
        .arg("--json")
        .arg(&json_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pep-fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "fleet exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(report["gateways"], 2000);
    assert_eq!(report["concurrency"], 64);
    assert_eq!(report["succeeded"], 2000, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["failed_unexpected"], 0);
    assert_eq!(report["faulty_gateways"], 0);
    assert_eq!(report["latency"]["count"], 2000);
    let histogram_total: u64 = report["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram_total, 2000);

    let csv = csv_export(server.addr);
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    assert!(header.starts_with("\"enrollmentID\""), "{header}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2000);
    let mut serials: Vec<&str> = rows
        .iter()
        .map(|r| r.split(',').nth(1).unwrap().trim_matches('"'))
        .collect();
    serials.sort_unstable();
    serials.dedup();
    assert_eq!(serials.len(), 2000);
    assert!(serials.iter().all(|s| s.starts_with("accept-")));
}

#[test]
fn fleet_with_faults_counts_faulty_gateways_as_expected_failures() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let server = start_server(&config, dir.path());
    let json_path = dir.path().join("fleet.json");
    let out = Command::new(PEP_FLEET)
        .args(["--gateways", "200", "--concurrency", "16"])
        .args(["--server", &format!("http://{}", server.addr)])
        .args(["--token", DEMO_TOKEN, "--prefix", "chaos-"])
        .args(["--fault-rate", "0.25", "--seed", "7"])
        .arg("--json")
        .arg(&json_path)
        .env("RUST_LOG", "off")
        .output()
        .expect("run pep-fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fleet exit {:?}\n{stdout}",
        out.status
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let faulty = report["faulty_gateways"].as_u64().unwrap();
    assert!(faulty > 0 && faulty < 200, "{report:#}");
    // Every default fault makes the provisioning fail with a 502; healthy gateways all succeed.
    assert_eq!(
        report["failed_expected"].as_u64().unwrap(),
        faulty,
        "{report:#}"
    );
    assert_eq!(report["failed_unexpected"], 0, "{report:#}");
    assert_eq!(report["succeeded"].as_u64().unwrap(), 200 - faulty);
    assert_eq!(
        report["failures"]["http_502"]["expected"].as_u64().unwrap(),
        faulty
    );
    let by_fault = report["failures_by_fault"].as_object().unwrap();
    assert!(
        by_fault
            .keys()
            .all(|k| ["close", "corrupt-hash", "wire9", "return-status=17"].contains(&k.as_str()))
    );
    // The server's export holds exactly the healthy gateways.
    let csv = csv_export(server.addr);
    let rows = csv.split("\r\n").filter(|l| !l.is_empty()).count() - 1;
    assert_eq!(rows as u64, 200 - faulty);
}

/// `pep-fleet ARGS` and `fake-fcc fleet ARGS` (which runs `pep-fleet`).
fn fleet_commands() -> [Command; 2] {
    let mut alias = Command::new(fake_fcc_bin());
    alias.arg("fleet");
    [Command::new(PEP_FLEET), alias]
}

#[test]
fn fleet_bad_options_exit_2_naming_the_option() {
    for (args, option) in [
        (vec!["--gateways", "0"], "--gateways"),
        (
            vec!["--gateways", "5", "--concurrency", "0"],
            "--concurrency",
        ),
        (vec!["--gateways", "5", "--fault-rate", "2"], "--fault-rate"),
        (vec!["--gateways", "5", "--server", "ftp://x"], "--server"),
        (vec!["--gateways", "5", "--fault", "bogus"], "bogus"),
    ] {
        for mut command in fleet_commands() {
            let out = command.args(&args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{command:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(option), "{command:?}: {stderr}");
        }
    }
}

#[test]
fn fake_fcc_fleet_runs_pep_fleet_with_the_same_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let server = start_server(&config, dir.path());
    let json_path = dir.path().join("fleet.json");
    let [_, mut alias] = fleet_commands();
    let out = alias
        .args(["--gateways", "20", "--concurrency", "4"])
        .args(["--server", &format!("http://{}", server.addr)])
        .args(["--prefix", "alias-"])
        .env("PEP_TOKEN", DEMO_TOKEN)
        .arg("--json")
        .arg(&json_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fake-fcc fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fake-fcc fleet exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("fleet: 20 gateways, concurrency 4"),
        "{stdout}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(report["succeeded"], 20, "{report:#}");
    assert_eq!(report["serial_prefix"], "alias-");
    // `fake-fcc fleet --help` is pep-fleet's help, not fake-fcc's.
    let [_, mut alias] = fleet_commands();
    let help = alias.arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("pep-fleet") && help.contains("--gateways"),
        "{help}"
    );
}
