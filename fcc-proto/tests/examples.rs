//! The `inject_bundle` example runs against a real `fake-fcc` process: its output shows the FCC's
//! answer, and the simulated gateway stored what it sent.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example() -> PathBuf {
    workspace_bins::example("fcc-proto", "inject_bundle", &["fcc-proto"])
}

/// Kills the child if the test fails before it exits.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_example(args: &[&str]) -> Output {
    Command::new(example())
        .args(args)
        .output()
        .expect("run the example")
}

#[test]
fn inject_bundle_into_fake_fcc() {
    let bins = workspace_bins::binaries_dir(
        &workspace_bins::current_profile_dir().join("fcc-proto-tests"),
        &["fake-fcc"],
        &["fake-fcc", "fcc-proto"],
    );
    let storage = tempfile::tempdir().unwrap();
    let mut fcc = Reap(
        Command::new(bins.join("fake-fcc"))
            .arg("--storage")
            .arg(storage.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-fcc"),
    );
    // FCC prints " Client IP Address and Port :  IP:PORT" once it listens.
    let stdout = fcc.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, address)) = line.split_once("Client IP Address and Port :") {
                let _ = tx.send(address.trim().to_owned());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("fake-fcc printed its address");

    let out = run_example(&[&address, "GW-EXAMPLE-42"]);
    let said = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{said}{}",
        out.status,
        text(&out.stderr)
    );
    assert!(said.contains("status: "), "{said}");
    // fake-fcc answers like the genuine FCC: the mandatory identity items are missing.
    assert!(said.contains("(FCC_STATUS_ITEM_NOT_EXIST 25)"), "{said}");
    assert!(
        said.contains("\nwarning: Item not set:mbed.Timezone\n"),
        "{said}"
    );
}

#[test]
fn inject_bundle_reports_bad_arguments_and_unreachable_fccs() {
    let out = run_example(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("usage: inject_bundle IP:PORT"));

    let out = run_example(&["localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"localhost\" is not IP:PORT"));

    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_example(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}
