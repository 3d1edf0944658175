//! Running the gateway's Factory Configurator Client (FCC) as a child process.
//!
//! FCC on Linux listens on a random port and tells it only on stdout (`docs/protocol.md`, "Finding
//! FCC"): a blank line, ` Client IP Address and Port :  A.B.C.D:PORT`, another blank line. An IPv6
//! address is accepted in its bracketed form (`[::1]:PORT`, what `fake-fcc --bind ::1` prints). We read stdout
//! until that line, then keep draining it (FCC's stdout is unbuffered and a full pipe would block it
//! in the middle of a session). The child runs in its own process group, so that killing it also
//! kills whatever a wrapper script started.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::error::CliError;

/// The longest output line kept; longer lines are cut (FCC's own lines are short, this only bounds
/// memory if the child prints garbage without newlines).
const MAX_LINE: usize = 4096;
/// How many of the last output lines are kept for error messages.
const TAIL_LINES: usize = 20;

fn address_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // The line's fixed text, at least one blank, then the address token (checked by the
        // standard parser below). A constant, so it always compiles.
        Regex::new(r"Client IP Address and Port :\s+(\S+)")
            .unwrap_or_else(|_| unreachable!("constant regex"))
    })
}

/// Parses FCC's address line: `IPv4:PORT` or `[IPv6]:PORT`. `None` for any other line, an
/// out-of-range address or port, or an unbracketed IPv6 address (its port would be ambiguous).
pub fn parse_address_line(line: &str) -> Option<SocketAddr> {
    let caps = address_regex().captures(line)?;
    let token = caps.get(1)?.as_str();
    // Digits only: the standard parser would also take a sign (`+5`), which FCC never prints.
    let (_, port) = token.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Splits a byte stream into lines (without the `\n`, `\r` stripped), cutting overlong lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Feeds bytes; returns the lines completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(self.take_line());
            } else if self.buf.len() < MAX_LINE {
                self.buf.push(b);
            } else {
                self.overlong = true;
            }
        }
        lines
    }

    /// The unterminated last line at end of stream, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if std::mem::take(&mut self.overlong) {
            line.push_str(" [...]");
        }
        self.buf.clear();
        line
    }
}

/// The last lines the child printed, for error messages.
#[derive(Debug, Clone, Default)]
pub struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    fn push(&self, line: String) {
        if let Ok(mut tail) = self.0.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }

    /// The kept lines, oldest first, blank lines left out.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|t| t.iter().filter(|l| !l.trim().is_empty()).cloned().collect())
            .unwrap_or_default()
    }
}

/// Reads `stream` to its end, logging every line, remembering the tail, and sending the first
/// address line through `found`.
async fn drain<R: AsyncRead + Unpin>(
    mut stream: R,
    stream_name: &'static str,
    mut found: Option<oneshot::Sender<SocketAddr>>,
    tail: OutputTail,
) {
    let mut splitter = LineSplitter::default();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in splitter.push(&chunk[..n]) {
            handle_line(line, stream_name, &mut found, &tail);
        }
    }
    if let Some(line) = splitter.finish() {
        handle_line(line, stream_name, &mut found, &tail);
    }
}

fn handle_line(
    line: String,
    stream_name: &'static str,
    found: &mut Option<oneshot::Sender<SocketAddr>>,
    tail: &OutputTail,
) {
    tracing::debug!(target: "pep_client::fcc", "fcc {stream_name}: {line}");
    if found.is_some()
        && let Some(addr) = parse_address_line(&line)
        && let Some(tx) = found.take()
    {
        // The receiver may be gone (timed out); then nobody needs the address any more.
        let _ = tx.send(addr);
    }
    tail.push(line);
}

/// A running FCC child. Dropping it kills the child's whole process group.
#[derive(Debug)]
pub struct FccChild {
    child: Child,
    pgid: Option<rustix::process::Pid>,
    address: Option<oneshot::Receiver<SocketAddr>>,
    tail: OutputTail,
    program: PathBuf,
    exited: bool,
}

impl FccChild {
    /// Starts `program args...` in `workdir` with stdout and stderr piped and drained.
    pub fn spawn(program: &Path, args: &[String], workdir: &Path) -> Result<Self, CliError> {
        // A relative program path means relative to where pep-cli was started, not to the workdir.
        let program_path = if program.components().count() > 1 && program.is_relative() {
            std::env::current_dir()
                .map_err(|e| CliError::io("cannot determine the current directory", e))?
                .join(program)
        } else {
            program.to_path_buf()
        };
        let mut cmd = Command::new(&program_path);
        cmd.args(args)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(program, &program_path, &e))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        tracing::debug!(program = %program.display(), ?args, workdir = %workdir.display(), pid = ?child.id(), "started FCC");
        let tail = OutputTail::default();
        let (tx, rx) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(drain(stdout, "stdout", Some(tx), tail.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain(stderr, "stderr", None, tail.clone()));
        }
        Ok(Self {
            child,
            pgid,
            address: Some(rx),
            tail,
            program: program.to_path_buf(),
            exited: false,
        })
    }

    /// The last lines the child printed.
    pub fn tail(&self) -> &OutputTail {
        &self.tail
    }

    /// An FCC error with the child's last output line appended, which usually says why.
    fn fail(&self, msg: String) -> CliError {
        match self.tail.lines().last() {
            Some(last) => CliError::Fcc(format!(
                "{msg} (its last output: {:?})",
                crate::error::one_line(last)
            )),
            None => CliError::Fcc(msg),
        }
    }

    /// Waits up to `timeout` for the address line. Fails if the child exits or closes its stdout
    /// first, or the time runs out.
    pub async fn address(&mut self, timeout: Duration) -> Result<SocketAddr, CliError> {
        let mut rx = self
            .address
            .take()
            .ok_or_else(|| CliError::Fcc("address was already read".to_owned()))?;
        let program = self.program.display().to_string();
        enum First {
            Address(Option<SocketAddr>),
            Exited(Option<ExitStatus>),
        }
        let child = &mut self.child;
        let first = tokio::time::timeout(timeout, async {
            tokio::select! {
                biased;
                addr = &mut rx => First::Address(addr.ok()),
                status = child.wait() => First::Exited(status.ok()),
            }
        })
        .await;
        // A child that prints the line and exits at once may be seen exiting first: give the
        // drain task a moment to deliver the line (it ends at EOF, which closes the channel).
        let first = match first {
            Ok(First::Exited(status)) => {
                self.exited = true;
                match tokio::time::timeout(Duration::from_millis(500), rx).await {
                    Ok(Ok(addr)) => Ok(First::Address(Some(addr))),
                    _ => Ok(First::Exited(status)),
                }
            }
            other => other,
        };
        match first {
            Ok(First::Address(Some(addr))) => {
                tracing::debug!(%addr, "FCC printed its address");
                Ok(addr)
            }
            Ok(First::Address(None)) => {
                // Closing stdout usually means the child is exiting: wait a moment for its status
                // so the message can say how it ended.
                let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
                    Ok(Ok(status)) => {
                        self.exited = true;
                        format!("; it exited ({})", describe_status(Some(status)))
                    }
                    _ => String::new(),
                };
                Err(self.fail(format!(
                    "{program} closed its output before printing its address line{status}"
                )))
            }
            Ok(First::Exited(status)) => {
                Err(self.fail(format!(
                    "{program} exited ({}) before printing its address line",
                    describe_status(status)
                )))
            }
            Err(_) => Err(self.fail(format!(
                "{program} did not print its address line (\"Client IP Address and Port : IP:PORT\") within {} s",
                timeout.as_secs_f64()
            ))),
        }
    }

    /// Waits up to `timeout` for the child to exit and requires exit status 0.
    pub async fn wait_success(&mut self, timeout: Duration) -> Result<(), CliError> {
        let program = self.program.display().to_string();
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Err(_) => Err(CliError::Fcc(format!(
                "{program} did not exit within {} s after the injection",
                timeout.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(CliError::Fcc(format!("{program}: cannot wait for it: {e}"))),
            Ok(Ok(status)) => {
                self.exited = true;
                if status.success() {
                    tracing::debug!("FCC exited with status 0");
                    Ok(())
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(self.fail(format!(
                        "{program} exited ({}) after the injection",
                        describe_status(Some(status))
                    )))
                }
            }
        }
    }

    /// Kills the child's process group and waits (up to 5 s) until the child is gone.
    pub async fn shutdown(&mut self) {
        self.kill();
        if !self.exited {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
            self.exited = true;
        }
    }

    /// Kills the child's process group now (also done on drop).
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The group may already be gone; nothing to do then.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            if !self.exited {
                tracing::debug!("killed the FCC process group");
            }
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for FccChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why FCC could not be started, in the words a station operator acts on.
fn spawn_error(program: &Path, resolved: &Path, e: &std::io::Error) -> CliError {
    let shown = program.display();
    let bare_name = program.components().count() == 1 && program.is_relative();
    let reason = match e.kind() {
        // A bare name is looked up in PATH (as a shell does); a path names one file.
        std::io::ErrorKind::NotFound if bare_name => format!(
            "`{shown}` not found in PATH (give its path, e.g. --fcc ./{shown}, or add its directory to PATH)"
        ),
        std::io::ErrorKind::NotFound => format!("{} does not exist", resolved.display()),
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} is not executable (permission denied)")
        }
        _ => format!("{shown} could not be started: {e}"),
    };
    CliError::Fcc(reason)
}

fn describe_status(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "status unknown".to_owned(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "status unknown".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_line_of_genuine_fcc() {
        assert_eq!(
            parse_address_line(" Client IP Address and Port :  192.168.1.23:40123"),
            Some("192.168.1.23:40123".parse().unwrap())
        );
        assert_eq!(
            parse_address_line("Client IP Address and Port : 127.0.0.1:1024\r"),
            Some("127.0.0.1:1024".parse().unwrap())
        );
    }

    #[test]
    fn other_lines_are_not_address_lines() {
        assert_eq!(parse_address_line(""), None);
        assert_eq!(parse_address_line(" Trying receive interface ..."), None);
        assert_eq!(
            parse_address_line(" Client is waiting for incoming connection..."),
            None
        );
        assert_eq!(
            parse_address_line("Client IP Address and Port :192.168.1.2:5"),
            None
        );
        // Unbracketed IPv6: the port is ambiguous.
        assert_eq!(
            parse_address_line("Client IP Address and Port :  fe80::1:5"),
            None
        );
        assert_eq!(
            parse_address_line("Client IP Address and Port :  [::1]"),
            None
        );
        assert_eq!(
            parse_address_line("Client IP Address and Port :  10.0.0.1:+5"),
            None
        );
    }

    #[test]
    fn bracketed_ipv6_address_lines_parse() {
        assert_eq!(
            parse_address_line(" Client IP Address and Port :  [::1]:40123"),
            Some("[::1]:40123".parse().unwrap())
        );
        assert_eq!(
            parse_address_line(" Client IP Address and Port :  [fd00::2]:7"),
            Some("[fd00::2]:7".parse().unwrap())
        );
    }

    #[test]
    fn out_of_range_addresses_are_rejected() {
        assert_eq!(
            parse_address_line("Client IP Address and Port :  256.1.1.1:80"),
            None
        );
        assert_eq!(
            parse_address_line("Client IP Address and Port :  10.0.0.1:65536"),
            None
        );
    }

    #[test]
    fn splitter_handles_partial_crlf_and_overlong_lines() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"\n Client IP Add").len() == 1);
        let lines = s.push(b"ress and Port :  10.0.0.2:7777\r\n\nrest");
        assert_eq!(
            lines,
            vec![" Client IP Address and Port :  10.0.0.2:7777", ""]
        );
        assert_eq!(s.finish().as_deref(), Some("rest"));
        assert_eq!(s.finish(), None);

        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(s.push(&long).is_empty());
        let lines = s.push(b"\nok\n");
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" [...]"));
        assert_eq!(lines[0].len(), MAX_LINE + 6);
        assert_eq!(lines[1], "ok");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let tail = OutputTail::default();
        for i in 0..30 {
            tail.push(format!("line {i}"));
        }
        tail.push(String::new());
        let lines = tail.lines();
        assert_eq!(lines.len(), TAIL_LINES - 1);
        assert_eq!(lines.last().map(String::as_str), Some("line 29"));
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fcc.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Starts a script this test has just written. Another test's thread may fork while the
    /// script's write handle is open, and the forked child holds it until it execs: exec then
    /// fails with ETXTBSY for a moment (a Linux race of multi-threaded test binaries, not of
    /// pep-cli, which never writes the program it starts). Retry briefly.
    async fn spawn_script(fcc: &Path, dir: &Path) -> FccChild {
        let mut tries = 0;
        loop {
            match FccChild::spawn(fcc, &[], dir) {
                Err(CliError::Fcc(reason)) if reason.contains("Text file busy") && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other.unwrap(),
            }
        }
    }

    #[tokio::test]
    async fn child_address_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let fcc = script(
            dir.path(),
            "echo; echo ' Client IP Address and Port :  127.0.0.1:4242'; echo; read x < /dev/null; exit 0",
        );
        let mut child = spawn_script(&fcc, dir.path()).await;
        let addr = child.address(Duration::from_secs(20)).await.unwrap();
        assert_eq!(addr, "127.0.0.1:4242".parse().unwrap());
        child.wait_success(Duration::from_secs(20)).await.unwrap();
    }

    #[tokio::test]
    async fn child_exiting_early_or_non_zero_is_an_fcc_error() {
        let dir = tempfile::tempdir().unwrap();
        let fcc = script(dir.path(), "echo starting; exit 3");
        let mut child = spawn_script(&fcc, dir.path()).await;
        let err = child.address(Duration::from_secs(20)).await.unwrap_err();
        assert!(matches!(err, CliError::Fcc(_)));
        let msg = err.to_string();
        assert!(
            msg.contains("before printing") && msg.contains('3'),
            "{msg}"
        );

        let fcc = script(
            dir.path(),
            "echo ' Client IP Address and Port :  127.0.0.1:1'; exit 7",
        );
        let mut child = spawn_script(&fcc, dir.path()).await;
        child.address(Duration::from_secs(20)).await.unwrap();
        let msg = child
            .wait_success(Duration::from_secs(20))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("exit code 7"), "{msg}");
    }

    #[tokio::test]
    async fn silent_child_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let fcc = script(dir.path(), "echo hello; exec sleep 600");
        let mut child = spawn_script(&fcc, dir.path()).await;
        let msg = child
            .address(Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("did not print its address line"), "{msg}");
        child.kill();
        let status = tokio::time::timeout(Duration::from_secs(20), child.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success());
    }

    #[tokio::test]
    async fn missing_program_is_an_fcc_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = FccChild::spawn(&missing, &[], dir.path()).unwrap_err();
        assert!(matches!(err, CliError::Fcc(_)));
        assert_eq!(
            err.to_string(),
            format!("FCC {} does not exist", missing.display())
        );
        // A bare name is looked up in PATH, and the message says so.
        let err = FccChild::spawn(Path::new("no-such-fcc-program-xyz"), &[], dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`no-such-fcc-program-xyz` not found in PATH"),
            "{err}"
        );
        // A file that is not executable.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not a program").unwrap();
        let err = FccChild::spawn(&plain, &[], dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not executable"), "{err}");
    }
}
