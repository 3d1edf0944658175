//! End to end: the real `pep-cli` against the real `pep-server` and the real `fake-fcc`.
//! See `common/mod.rs` for how the binaries are found (a one-time `cargo build` of the other two).

use crate::common;

use std::path::Path;

use common::*;
use pep_client::exit;
use serde_json::Value;

const IDENTITY_FIELDS: [&str; 14] = [
    "serialNumber",
    "OU",
    "deviceID",
    "deployed",
    "hardwareVersion",
    "radioConfig",
    "ledConfig",
    "category",
    "cloudAddress",
    "apiAddress",
    "apiServerAddress",
    "gatewayServicesAddress",
    "enrollmentID",
    "createdAt",
];

fn code(c: u8) -> i32 {
    i32::from(c)
}

/// The enrollment ID of the certificate FCC stored.
fn stored_enrollment_id(pal: &Path) -> String {
    let der = std::fs::read(pal.join("Cert_mbed.BootstrapDeviceCert")).unwrap();
    pep_ca::EnrollmentId::of_certificate(&der).to_string()
}

/// Provisions `serial` through `pep-cli provision` (results left in a throwaway directory).
fn provision_quietly(server: &Server, serial: &str) {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), cwd.path()).args([
        "provision",
        "--fcc",
        fake_fcc_bin().to_str().unwrap(),
        "--serial",
        serial,
    ]));
    assert_code(&out, 0);
}

fn server_enrollment_id(server: &Server, serial: &str) -> Option<String> {
    let (status, body) = server.get(&format!("/v3/enrollment-id?serialNumber={serial}"));
    (status == 200).then(|| String::from_utf8(body).unwrap().trim().to_owned())
}

#[test]
fn get_one_identity_with_old_flags_writes_identity_json_and_prints_it() {
    let server = Server::start();
    let mut gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        "GW-DROP-1",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-w",
        "hw-rev-2",
        "-c",
        "development",
        "-v",
    ]));
    assert_code(&out, 0);
    let body = std::fs::read(work.path().join("identity.json")).unwrap();
    assert_eq!(out.stdout, body, "prints identity.json as written");
    assert_eq!(
        tree(work.path()),
        vec!["identity.json"],
        "no temporary files left"
    );

    let v: Value = serde_json::from_slice(&body).unwrap();
    for field in IDENTITY_FIELDS {
        assert!(v.get(field).is_some(), "identity.json lacks {field}: {v}");
    }
    assert_eq!(v["serialNumber"], "GW-DROP-1");
    assert_eq!(v["hardwareVersion"], "hw-rev-2");
    assert_eq!(v["category"], "development");
    assert_eq!(v["radioConfig"], "00");
    assert_eq!(v["ledConfig"], "01");
    assert_eq!(v["apiAddress"], "https://api.us-east-1.mbedcloud.com");
    assert_eq!(v["apiServerAddress"], "https://api.us-east-1.mbedcloud.com");
    assert_eq!(
        v["gatewayServicesAddress"],
        "https://gateways.us-east-1.mbedcloud.com"
    );

    // -v traces the request on stderr, never the token.
    let err = stderr(&out);
    assert!(
        err.contains("GET ") && err.contains("/v3/identity"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "token leaked: {err}");

    // FCC got exactly this identity.
    assert_eq!(gw.wait(), Some(0));
    let eid = v["enrollmentID"].as_str().unwrap().to_owned();
    assert_eq!(stored_enrollment_id(&gw.pal()), eid);
    assert_eq!(
        std::fs::read(gw.pal().join("CfgParam_mbed.EndpointName")).unwrap(),
        b"GW-DROP-1"
    );

    // get-enrollment-id prints it; DEBUG=* traces like -v, and --token-file works.
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let out = run(cli(&server.url(), work.path())
        .env_remove("PEP_API_TOKEN")
        .env("DEBUG", "*")
        .args(["get-enrollment-id", "-s", "GW-DROP-1", "--token-file"])
        .arg(&token_file));
    assert_code(&out, 0);
    assert_eq!(stdout(&out), format!("{eid}\n"));
    assert!(
        stderr(&out).contains("/v3/enrollment-id"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(TOKEN));

    // Unknown serial: 404 → its own code, the server's text on one line.
    let out = run(cli(&server.url(), work.path()).args(["get-enrollment-id", "-s", "GW-NOPE"]));
    assert_code(&out, code(exit::NOT_FOUND));
    let err = stderr(&out);
    assert!(err.contains("404") && err.contains("GW-NOPE"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn fss_key_from_journalctl_is_sent_and_read_back() {
    let server = Server::start();
    let mut gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let args_file = work.path().join("journalctl-args");
    let journalctl = script(
        work.path(),
        "journalctl",
        &format!(
            "echo \"$@\" > '{}'\necho 'b1c2d3-e4f5a6-b7c8d9-e0f1a2/1bd2a7-35a4e900'\necho 'second line ignored'",
            args_file.display()
        ),
    );
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path())
        .env("PEP_JOURNALCTL", &journalctl)
        .args([
            "get-one-identity",
            "-s",
            "GW-FSS-1",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-k",
            "-e",
            "1h",
        ])
        .arg("-v"));
    assert_code(&out, 0);
    assert!(
        !stderr(&out).contains("b1c2d3"),
        "the key is not traced: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        "--setup-keys --force --interval=1h\n"
    );
    assert_eq!(gw.wait(), Some(0));

    let out = run(cli(&server.url(), work.path()).args(["get-verification-key", "-s", "GW-FSS-1"]));
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "b1c2d3-e4f5a6-b7c8d9-e0f1a2/1bd2a7-35a4e900\n"
    );
}

#[test]
fn list_enrollment_ids_writes_the_old_files_and_all_equals_the_servers_csv() {
    let server = Server::start();
    for serial in ["GW-L1", "GW 'L2', rev.b", "GW-L3"] {
        provision_quietly(&server, serial);
    }
    let work = tempfile::tempdir().unwrap();

    // Default: one page, newest first, enrollment_ids_list.json = the server's page as sent.
    let out = run(cli(&server.url(), work.path()).arg("list-enrollment-ids"));
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "JSON output saved successfully at enrollment_ids_list.json\n"
    );
    let (_, page) = server.get("/v3/enrollment-ids?limit=50&order=DESC");
    assert_eq!(
        std::fs::read(work.path().join("enrollment_ids_list.json")).unwrap(),
        page
    );

    // Old flags: -l -o -t -e csv -f.
    let v: Value = serde_json::from_slice(&page).unwrap();
    let newest_id = v["results"][0]["_id"].as_str().unwrap().to_owned();
    let out = run(cli(&server.url(), work.path()).args([
        "list-enrollment-ids",
        "-l",
        "2",
        "-o",
        "DESC",
        "-t",
        &newest_id,
        "-e",
        "csv",
        "-f",
        "out",
    ]));
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "JSON output saved successfully at out.json\nCSV output saved successfully at out.csv\n"
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("out.json")).unwrap()).unwrap();
    let serials: Vec<&str> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["serialNumber"].as_str().unwrap())
        .collect();
    assert_eq!(serials, vec!["GW 'L2', rev.b", "GW-L1"]);
    let csv = std::fs::read_to_string(work.path().join("out.csv")).unwrap();
    let (_, server_csv) = server.get("/v3/enrollment-ids.csv");
    let server_csv = String::from_utf8(server_csv).unwrap();
    let server_lines: Vec<&str> = server_csv.split_inclusive('\n').collect();
    assert_eq!(server_lines.len(), 4);
    let lines: Vec<&str> = csv.split_inclusive('\n').collect();
    assert_eq!(
        lines[0],
        "\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\",\"apiAddress\",\"hardwareVersion\",\"radioConfig\",\"ledConfig\",\"category\",\"deployed\",\"createdAt\"\r\n"
    );
    // Same rows, same quoting (the server's export is oldest first).
    assert_eq!(
        lines,
        vec![server_lines[0], server_lines[2], server_lines[1]]
    );
    assert!(csv.contains(",\"GW 'L2', rev.b\","), "{csv}");

    // --all: every page, oldest first, byte-equal to the server's own CSV export.
    let out = run(cli(&server.url(), work.path()).args([
        "list-enrollment-ids",
        "--all",
        "-l",
        "1",
        "-e",
        "csv",
        "-f",
        "all",
    ]));
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(work.path().join("all.csv")).unwrap(),
        server_csv
    );
    assert!(
        stderr(&out).is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        stderr(&out)
    );
    let all: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("all.json")).unwrap()).unwrap();
    assert_eq!(all["total_count"], 3);

    // On a terminal (util-linux `script` gives it a pty) the progress spinner is drawn.
    if Path::new("/usr/bin/script").exists() {
        let command = format!(
            "'{}' list-enrollment-ids --all -l 1 -f tty",
            pep_cli().display()
        );
        let out = run(std::process::Command::new("/usr/bin/script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(work.path())
            .env("PEP_SERVER_URL", server.url())
            .env("PEP_API_TOKEN", TOKEN)
            .stdin(std::process::Stdio::null()));
        assert_code(&out, 0);
        let text = stdout(&out);
        assert!(
            text.contains("gateways exported"),
            "no progress on a terminal: {text:?}"
        );
    }
}

#[test]
fn provision_installs_end_to_end() {
    let server = Server::start();
    let dest = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let pal_dest = dest.path().join("mcc_config");
    let id_dest = dest.path().join("edge_gw_config");
    let provision = |serial: &str, force: bool| {
        let mut cmd = cli(&server.url(), cwd.path());
        cmd.args(["provision", "--fcc"])
            .arg(fake_fcc_bin())
            .args(["--serial", serial, "--install", "--pal-dest"])
            .arg(&pal_dest)
            .arg("--identity-dest")
            .arg(&id_dest);
        if force {
            cmd.arg("--force");
        }
        run(&mut cmd)
    };

    let out = provision("GW-1", false);
    assert_code(&out, 0);
    let text = stdout(&out);
    let printed = text
        .lines()
        .find_map(|l| l.strip_prefix("Enrollment ID: "))
        .unwrap_or_else(|| panic!("no enrollment ID in {text}"))
        .to_owned();
    assert_eq!(Some(printed.clone()), server_enrollment_id(&server, "GW-1"));

    // pal/ holds the injected items, identity.json the identity, nothing else is left around.
    assert_eq!(stored_enrollment_id(&pal_dest), printed);
    assert_eq!(
        std::fs::read(pal_dest.join("CfgParam_mbed.EndpointName")).unwrap(),
        b"GW-1"
    );
    assert!(
        pal_dest
            .join("PrvKey_mbed.BootstrapDevicePrivateKey")
            .is_file()
    );
    assert!(pal_dest.join("Cert_mbed.BootstrapServerCACert").is_file());
    let identity: Value =
        serde_json::from_slice(&std::fs::read(id_dest.join("identity.json")).unwrap()).unwrap();
    assert_eq!(identity["serialNumber"], "GW-1");
    assert_eq!(identity["enrollmentID"], printed.as_str());
    let top: Vec<String> = tree(dest.path())
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(top, vec!["edge_gw_config", "mcc_config"]);
    assert_eq!(tree(&id_dest), vec!["identity.json"]);
    assert!(tree(cwd.path()).is_empty());

    // Destination exists: refused before FCC or the server are involved.
    let before = tree(dest.path());
    let out = provision("GW-2", false);
    assert_code(&out, code(exit::INSTALL));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(tree(dest.path()), before);
    assert_eq!(
        server_enrollment_id(&server, "GW-2"),
        None,
        "the server was not asked"
    );

    // --force: the old ones are moved aside with a timestamp suffix.
    let out = provision("GW-2", true);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("moved aside"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(pal_dest.join("CfgParam_mbed.EndpointName")).unwrap(),
        b"GW-2"
    );
    let names = tree(dest.path());
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("mcc_config.") && n.ends_with('Z')),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("edge_gw_config/identity.json.")),
        "{names:?}"
    );
}

#[test]
fn provision_without_install_leaves_pal_and_identity_in_the_current_directory() {
    let server = Server::start();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("serial.txt"), "GW-FILE-7\n").unwrap();
    let out = run(cli(&server.url(), cwd.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args([
            "--fcc-arg",
            "--sessions",
            "--fcc-arg",
            "1",
            "--serial-from",
            "file:serial.txt",
        ]));
    assert_code(&out, 0);
    let identity: Value =
        serde_json::from_slice(&std::fs::read(cwd.path().join("identity.json")).unwrap()).unwrap();
    assert_eq!(identity["serialNumber"], "GW-FILE-7");
    assert_eq!(
        stored_enrollment_id(&cwd.path().join("pal")),
        identity["enrollmentID"].as_str().unwrap()
    );
    let top: Vec<String> = tree(cwd.path())
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(top, vec!["identity.json", "pal", "serial.txt"]);
}

#[test]
fn server_down_exits_unreachable_and_writes_nothing() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let port = gw.addr.port().to_string();
    let out = run(cli(&url, work.path()).args([
        "get-one-identity",
        "-s",
        "GW-D1",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
    ]));
    assert_code(&out, code(exit::UNREACHABLE));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the pep server"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(tree(work.path()).is_empty(), "no identity.json");
    drop(gw);

    let dest = tempfile::tempdir().unwrap();
    let out = run(cli(&url, work.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args(["--serial", "GW-D2", "--install", "--pal-dest"])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config")));
    assert_code(&out, code(exit::UNREACHABLE));
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
    assert!(tree(work.path()).is_empty());
}

#[test]
fn wrong_or_missing_token_exits_auth() {
    let server = Server::start();
    let gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let port = gw.addr.port().to_string();
    let args = [
        "get-one-identity",
        "-s",
        "GW-T1",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
    ];
    let out = run(cli(&server.url(), work.path())
        .env("PEP_API_TOKEN", "wrong-token-0123456789")
        .args(args));
    assert_code(&out, code(exit::AUTH));
    let err = stderr(&out);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong-token"), "{err}");
    // The message says where the token comes from.
    assert!(
        err.contains("refused the API token")
            && err.contains("PEP_API_TOKEN")
            && err.contains("--token-file"),
        "{err}"
    );
    let out = run(cli(&server.url(), work.path())
        .env_remove("PEP_API_TOKEN")
        .args(args));
    assert_code(&out, code(exit::AUTH));
    let err = stderr(&out);
    assert!(
        err.contains("no API token was sent: set PEP_API_TOKEN or pass --token-file PATH"),
        "{err}"
    );
    let empty = work.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let out = run(cli(&server.url(), work.path())
        .args(args)
        .arg("--token-file")
        .arg(&empty));
    assert_code(&out, code(exit::AUTH));
    std::fs::remove_file(&empty).unwrap();
    assert!(tree(work.path()).is_empty(), "no identity.json");

    let dest = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), work.path())
        .env("PEP_API_TOKEN", "wrong-token-0123456789")
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args(["--serial", "GW-T2", "--install", "--pal-dest"])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config")));
    assert_code(&out, code(exit::AUTH));
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
}

#[test]
fn duplicate_serial_exits_conflict() {
    let server = Server::start();
    provision_quietly(&server, "GW-DUP");
    let gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        "GW-DUP",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
    ]));
    assert_code(&out, code(exit::CONFLICT));
    let err = stderr(&out);
    assert!(err.contains("409"), "{err}");
    assert!(
        tree(work.path()).is_empty(),
        "the error body is not written to identity.json"
    );

    let dest = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), work.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args(["--serial", "GW-DUP", "--install", "--pal-dest"])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config")));
    assert_code(&out, code(exit::CONFLICT));
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
}

#[test]
fn fcc_that_never_prints_its_address_times_out_and_is_killed() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("fcc.pid");
    let fcc = script(
        dir.path(),
        "silent-fcc",
        &format!(
            "echo $$ > '{}'\necho ' Trying receive interface ...'\nexec sleep 600",
            pid_file.display()
        ),
    );
    let dest = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), dir.path())
        .args(["provision", "--fcc"])
        .arg(&fcc)
        .args([
            "--fcc-timeout",
            "3",
            "--serial",
            "GW-SILENT",
            "--install",
            "--pal-dest",
        ])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config")));
    assert_code(&out, code(exit::GATEWAY));
    let err = stderr(&out);
    assert!(err.contains("did not print its address line"), "{err}");
    assert!(
        err.contains("Trying receive interface"),
        "the last FCC line is shown: {err}"
    );
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
    assert_eq!(server_enrollment_id(&server, "GW-SILENT"), None);

    // The FCC process (here `sleep`, exec'd by the script) is gone.
    assert_sleep_gone(&pid_file);
}

/// Polls (up to 10 s) until the process whose pid is in `pid_file` no longer runs `sleep`.
fn assert_sleep_gone(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap().trim().to_owned();
    let proc_dir = Path::new("/proc").join(&pid);
    for _ in 0..100 {
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("sleep") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("FCC (pid {pid}) is still running");
}

#[test]
fn sigterm_kills_fcc_and_installs_nothing() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("fcc.pid");
    // Prints the address of a socket that accepts (kernel backlog) but never answers: the server
    // waits for FCC's reply, pep-cli waits for the server, and then the signal comes.
    let silent_socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fcc = script(
        dir.path(),
        "stuck-fcc",
        &format!(
            "echo $$ > '{}.tmp' && mv '{0}.tmp' '{0}'\necho ' Client IP Address and Port :  127.0.0.1:{}'\nexec sleep 600",
            pid_file.display(),
            silent_socket.local_addr().unwrap().port()
        ),
    );
    let dest = tempfile::tempdir().unwrap();
    let child = cli(&server.url(), dir.path())
        .args(["provision", "--fcc"])
        .arg(&fcc)
        .args(["--serial", "GW-SIGTERM", "--install", "--pal-dest"])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if pid_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(pid_file.exists(), "FCC did not start");
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, code(exit::INTERRUPTED));
    assert_sleep_gone(&pid_file);
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
}

#[test]
fn fcc_exiting_non_zero_fails_and_installs_nothing() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // A real FCC session (the server succeeds), but the FCC process then exits 3.
    let fcc = script(
        dir.path(),
        "fcc-exit-3",
        &format!("'{}' \"$@\"\nexit 3", fake_fcc_bin().display()),
    );
    let dest = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), dir.path())
        .args(["provision", "--fcc"])
        .arg(&fcc)
        .args(["--serial", "GW-EXIT3", "--install", "--pal-dest"])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config")));
    assert_code(&out, code(exit::GATEWAY));
    let err = stderr(&out);
    assert!(
        err.contains("exit code 3") && err.contains("nothing was installed"),
        "{err}"
    );
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
    let top: Vec<String> = tree(dir.path())
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(
        top,
        vec!["fcc-exit-3"],
        "no identity.json, no FCC working directory left"
    );

    // An FCC that advertises a port nobody listens on: the server cannot inject (502/504).
    let fcc = script(
        dir.path(),
        "fcc-bad-port",
        &format!(
            "echo\necho ' Client IP Address and Port :  127.0.0.1:{}'\necho\nexec sleep 600",
            closed_port()
        ),
    );
    let out = run(cli(&server.url(), dir.path())
        .args(["provision", "--fcc"])
        .arg(&fcc)
        .args(["--serial", "GW-BADPORT", "--install", "--pal-dest"])
        .arg(dest.path().join("mcc_config"))
        .arg("--identity-dest")
        .arg(dest.path().join("edge_gw_config")));
    assert_code(&out, code(exit::GATEWAY));
    let err = stderr(&out);
    assert!(err.contains("502") || err.contains("504"), "{err}");
    assert!(tree(dest.path()).is_empty(), "{:?}", tree(dest.path()));
}

#[test]
fn key_generation_failure_stops_before_the_server() {
    let server = Server::start();
    let gw = Gateway::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let journalctl = script(
        work.path(),
        "journalctl",
        "echo 'Failed to open /var/log/journal: Permission denied' >&2\nexit 1",
    );
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path())
        .env("PEP_JOURNALCTL", &journalctl)
        .args([
            "get-one-identity",
            "-s",
            "GW-K1",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-k",
        ]));
    assert_code(&out, code(exit::KEY_GENERATION));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(!work.path().join("identity.json").exists());
    assert_eq!(server_enrollment_id(&server, "GW-K1"), None);
}

#[test]
fn usage_errors_exit_2_without_contacting_the_server() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let work = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "get-one-identity",
            "-s",
            "GW_BAD",
            "-i",
            "127.0.0.1",
            "-p",
            "1",
        ],
        vec!["get-one-identity", "-s", "GW-1", "-i", "127.0.0.1"],
        vec!["get-enrollment-id", "-s", ""],
        vec!["list-enrollment-ids", "-e", "xml"],
        vec!["no-such-command"],
        vec![],
    ] {
        let out = run(cli(&url, work.path()).args(&args));
        assert_code(&out, code(exit::USAGE));
    }
    assert!(tree(work.path()).is_empty());
    let out = run(cli(&url, work.path()).arg("-V"));
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        format!("Version: {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run(cli(&url, work.path()).args(["get-one-identity", "-h"]));
    assert_code(&out, 0);
    assert!(stdout(&out).contains("-k"));
}

/// The server's configuration decides every option the user leaves out: pep-cli sends only what it
/// was given (it used to send its own defaults and override `[device]`/`[defaults]`).
#[test]
fn options_left_out_are_the_servers_configuration() {
    let server = Server::start_with(
        "[device]\nhardware_version = \"acme-eg100-rev-b\"\n\n\
         [defaults]\nradio_config = \"07\"\ncategory = \"development\"\n",
    );
    let work = tempfile::tempdir().unwrap();

    // get-one-identity without -w/-r/-c: the configured values, returned and injected.
    let mut gw = Gateway::start(&[]);
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        "GW-CFG-1",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
    ]));
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hardwareVersion"], "acme-eg100-rev-b");
    assert_eq!(v["radioConfig"], "07");
    assert_eq!(v["category"], "development");
    assert_eq!(v["ledConfig"], "01", "the server's own default");
    assert_eq!(gw.wait(), Some(0));
    assert_eq!(gw.config_param("mbed.HardwareVersion"), b"acme-eg100-rev-b");

    // The user's values win.
    let mut gw = Gateway::start(&[]);
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        "GW-CFG-2",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-w",
        "user-hw-9",
        "-c",
        "production",
    ]));
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hardwareVersion"], "user-hw-9");
    assert_eq!(v["category"], "production");
    assert_eq!(v["radioConfig"], "07");
    assert_eq!(gw.wait(), Some(0));
    assert_eq!(gw.config_param("mbed.HardwareVersion"), b"user-hw-9");

    // provision: the same rule; the stored record says so too.
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), cwd.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args(["--serial", "GW-CFG-3"]));
    assert_code(&out, 0);
    let identity: Value =
        serde_json::from_slice(&std::fs::read(cwd.path().join("identity.json")).unwrap()).unwrap();
    assert_eq!(identity["hardwareVersion"], "acme-eg100-rev-b");
    let (status, page) = server.get("/v3/enrollment-ids?limit=10&order=ASC");
    assert_eq!(status, 200);
    let page: Value = serde_json::from_slice(&page).unwrap();
    let stored: Vec<(String, String)> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["serialNumber"].as_str().unwrap().to_owned(),
                r["hardwareVersion"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        vec![
            ("GW-CFG-1".to_owned(), "acme-eg100-rev-b".to_owned()),
            ("GW-CFG-2".to_owned(), "user-hw-9".to_owned()),
            ("GW-CFG-3".to_owned(), "acme-eg100-rev-b".to_owned()),
        ]
    );

    // --help no longer claims a client-side default.
    let out = run(cli(&server.url(), work.path()).args(["get-one-identity", "--help"]));
    assert_code(&out, 0);
    let help = stdout(&out);
    assert!(!help.contains("arm-pelion-edge-gateway"), "{help}");
    assert!(help.contains("[device] hardware_version"), "{help}");
}

#[test]
fn provision_errors_name_provision_and_a_missing_fcc_is_looked_up_in_path() {
    let server = Server::start();
    provision_quietly(&server, "GW-LABEL");
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), cwd.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args(["--serial", "GW-LABEL"]));
    assert_code(&out, code(exit::CONFLICT));
    let err = stderr(&out);
    assert!(
        err.starts_with("pep-cli: error: provision GW-LABEL: server answered HTTP 409"),
        "{err}"
    );

    let out = run(cli(&server.url(), cwd.path()).args([
        "provision",
        "--fcc",
        "no-such-fcc-program",
        "--serial",
        "GW-NOFCC",
    ]));
    assert_code(&out, code(exit::GATEWAY));
    let err = stderr(&out);
    assert!(
        err.contains("`no-such-fcc-program` not found in PATH"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(tree(cwd.path()).is_empty(), "{:?}", tree(cwd.path()));
}

/// True when this machine has an IPv6 loopback (`::1` can be bound).
fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// IPv6 gateways behave like IPv4 ones: `-i ::1` and an FCC printing `[::1]:PORT`.
#[test]
fn ipv6_gateway_end_to_end() {
    if !has_ipv6_loopback() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(&["--bind", "::1"]);
    assert!(gw.addr.is_ipv6(), "{}", gw.addr);
    let port = gw.addr.port().to_string();
    let out = run(cli(&server.url(), work.path()).args([
        "get-one-identity",
        "-s",
        "GW-V6-1",
        "-i",
        "::1",
        "-p",
        &port,
    ]));
    assert_code(&out, 0);
    assert_eq!(gw.wait(), Some(0));
    assert_eq!(gw.config_param("mbed.EndpointName"), b"GW-V6-1");

    // provision reads `[::1]:PORT` from FCC's output and passes the address on.
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), cwd.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args([
            "--fcc-arg",
            "--bind",
            "--fcc-arg",
            "::1",
            "--serial",
            "GW-V6-2",
        ]));
    assert_code(&out, 0);
    let identity: Value =
        serde_json::from_slice(&std::fs::read(cwd.path().join("identity.json")).unwrap()).unwrap();
    assert_eq!(identity["serialNumber"], "GW-V6-2");
}

/// The pep-cli half of IPv6 gateways, whatever the server then answers: `provision` reads FCC's
/// bracketed `[::1]:PORT` line and sends `ip=::1` with that port.
#[test]
fn provision_reads_an_ipv6_fcc_address() {
    if !has_ipv6_loopback() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    let server = Server::start();
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cli(&server.url(), cwd.path())
        .args(["provision", "--fcc"])
        .arg(fake_fcc_bin())
        .args([
            "--fcc-arg",
            "--bind",
            "--fcc-arg",
            "::1",
            "--serial",
            "GW-V6-3",
            "-v",
        ]));
    let err = stderr(&out);
    let printed = err
        .lines()
        .find_map(|l| l.split("Client IP Address and Port :  ").nth(1))
        .unwrap_or_else(|| panic!("FCC's address line is not traced: {err}"));
    let addr: std::net::SocketAddr = printed.trim().parse().unwrap();
    assert!(addr.is_ipv6(), "{addr}");
    assert!(
        err.contains(&format!(
            "/v3/identity?serialNumber=GW-V6-3&ip=%3A%3A1&port={}",
            addr.port()
        )),
        "{err}"
    );
}
