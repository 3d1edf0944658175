//! Shared harness of the end-to-end tests: the real `pep-cli`, `pep-server` and `fake-fcc` binaries.
//!
//! `pep-server` and `fake-fcc` come from `workspace_bins` (next to `pep-cli`, rebuilt when stale).

pub(crate) mod pki;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The API token of every test server (it has both roles).
pub(crate) const TOKEN: &str = "pep-test-token-0123456789";

/// The `pep-cli` under test.
pub(crate) fn pep_cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pep-cli"))
}

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    workspace_bins::repo_root()
}

/// The directory holding `pep-server` and `fake-fcc` (fresh; see `workspace_bins`), once per test
/// process.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        workspace_bins::binaries_dir(
            &pep_cli(),
            &["pep-server", "fake-fcc"],
            &["fcc-proto", "pep-ca", "pep-server", "fake-fcc"],
        )
    })
}

/// The `pep-server` binary.
pub(crate) fn pep_server_bin() -> PathBuf {
    bin_dir().join("pep-server")
}

/// The `fake-fcc` binary.
pub(crate) fn fake_fcc_bin() -> PathBuf {
    bin_dir().join("fake-fcc")
}

/// Reads `child`'s stdout until a line for which `find` returns something, then drains the rest in
/// a thread (so the child never blocks on a full pipe). Panics if the output ends first.
fn read_until<T>(child: &mut Child, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "{what}: output ended before the expected line");
        if let Some(found) = find(&line) {
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
            });
            return found;
        }
    }
}

/// A running `pep-server` on a free port with its own SQLite database; killed on drop.
pub(crate) struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its directory (config, database), kept until the server is dropped.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server with the test CA and the test token.
    pub(crate) fn start() -> Server {
        Server::start_with("")
    }

    /// [`Server::start`] with `extra` appended to its config (whole TOML tables, e.g. `[device]`).
    pub(crate) fn start_with(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let config = format!(
            r#"
listen = "127.0.0.1:0"
database_url = "sqlite://{db}"
key_mode = "by_tool"
auth = "tokens"

[[tokens]]
name = "test"
token = "{TOKEN}"
roles = ["provision", "read"]

[ca]
cert = "{root}/fixtures/ca/CA_cert.pem"
key = "{root}/fixtures/ca/CA_private.pem"
# The repository's test CA: git leaves its key 0644.
allow_insecure_key_permissions = true

[bootstrap]
uri = "coaps://bootstrap.us-east-1.mbedcloud.com:5684"
ca_cert = "{root}/fixtures/bootstrap/bootstrap_ca.pem"
first_to_claim = true

[update]
auth_cert = "{root}/fixtures/bootstrap/update_auth_cert.pem"
vendor_id = "5355424d-4152-5320-4f46-204c4f564552"
class_id = "4d4f4e44-4159-204d-4f52-4e494e472e2e"

[fcc]
connect_timeout_ms = 5000
write_timeout_ms = 10000
read_timeout_ms = 30000
# The fake gateways listen on loopback, which the default allowlist refuses.
allowed_networks = ["127.0.0.0/8", "::1"]

{extra}
"#,
            db = dir.path().join("pep.sqlite").display(),
            root = root.display(),
        );
        let config_path = dir.path().join("pep.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(pep_server_bin())
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pep-server");
        let addr = read_until(&mut child, "pep-server", |line| {
            line.trim()
                .strip_prefix("listening on ")
                .map(|a| a.parse().unwrap())
        });
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    /// `http://IP:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` with the test token; (status, body).
    pub(crate) fn get(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        let url = format!("{}{path_and_query}", self.url());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap().to_vec())
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `fake-fcc` (one session unless told otherwise); killed on drop.
pub(crate) struct Gateway {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its working directory; storage is `dir/pal`.
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// The value FCC stored for the config parameter `name` (e.g. `mbed.HardwareVersion`).
    pub(crate) fn config_param(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.pal().join(format!("CfgParam_{name}"))).unwrap()
    }

    /// Starts `fake-fcc` with `args` in a fresh directory.
    pub(crate) fn start(args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(fake_fcc_bin())
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-fcc");
        let addr = read_until(&mut child, "fake-fcc", |line| {
            pep_client::fcc::parse_address_line(line)
        });
        Gateway { child, addr, dir }
    }

    /// The storage directory.
    pub(crate) fn pal(&self) -> PathBuf {
        self.dir.path().join("pal")
    }

    /// Waits (up to 60 s) for the process to exit; its exit code.
    pub(crate) fn wait(&mut self) -> Option<i32> {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("fake-fcc did not exit");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `pep-cli` command for `server` (token in the environment), run in `cwd`.
pub(crate) fn cli(server_url: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(pep_cli());
    cmd.current_dir(cwd)
        .env("PEP_SERVER_URL", server_url)
        .env("PEP_API_TOKEN", TOKEN)
        .env_remove("DEBUG")
        .env_remove("RUST_LOG")
        .env_remove("PEP_JOURNALCTL")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd`, returning its output (never hangs on the FCC children: they are killed by pep-cli).
pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run pep-cli")
}

/// stdout as text.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing the output on failure.
#[track_caller]
pub(crate) fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// An executable shell script `name` in `dir`.
pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Every path under `dir`, relative, sorted.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A closed TCP port on 127.0.0.1 (bound, then released).
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
