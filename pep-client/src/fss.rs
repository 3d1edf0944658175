//! journald Forward-Secure-Sealing key generation (`get-one-identity -k`).
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::process::Stdio;

use crate::error::CliError;

/// The environment variable that replaces the `journalctl` program (tests point it at a script).
pub const JOURNALCTL_ENV: &str = "PEP_JOURNALCTL";

/// The FSS interval when `-e` is not given.
pub const DEFAULT_INTERVAL: &str = "10s";

/// The program to run: `$PEP_JOURNALCTL`, else `journalctl` from `PATH`.
pub fn journalctl_program() -> String {
    std::env::var(JOURNALCTL_ENV)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "journalctl".to_owned())
}

/// Runs `journalctl --setup-keys --force --interval=INTERVAL` and returns the first line of its
/// stdout, the verification key. Any failure (cannot start, non-zero exit, no output) is an error,
/// so the server is never contacted with a missing key.
pub async fn generate_verification_key(program: &str, interval: &str) -> Result<String, CliError> {
    let fail = |reason: String| CliError::KeyGeneration {
        program: program.to_owned(),
        reason,
    };
    if interval.is_empty()
        || interval
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CliError::Usage(format!(
            "invalid FSS interval {interval:?} (-e), e.g. 10s or 15min"
        )));
    }
    let args = [
        "--setup-keys".to_owned(),
        "--force".to_owned(),
        format!("--interval={interval}"),
    ];
    tracing::debug!(%program, ?args, "generating the FSS verification key");
    let out = tokio::process::Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(fail(format!(
            "it exited with {}{}{}",
            out.status,
            if first.is_empty() { "" } else { ": " },
            crate::error::one_line(first)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().next().map(str::trim) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => Err(fail("it printed no verification key".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("journalctl");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn first_line_is_the_key_and_args_are_the_old_tools() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let prog = script(
            dir.path(),
            &format!(
                "echo \"$@\" > {}; echo ' 1a2b3c-4d5e6f/1c2d3e-35a4e900 '; echo second",
                args.display()
            ),
        );
        let key = generate_verification_key(prog.to_str().unwrap(), "15min")
            .await
            .unwrap();
        assert_eq!(key, "1a2b3c-4d5e6f/1c2d3e-35a4e900");
        assert_eq!(
            std::fs::read_to_string(args).unwrap(),
            "--setup-keys --force --interval=15min\n"
        );
    }

    #[tokio::test]
    async fn failures_are_key_generation_errors() {
        let dir = tempfile::tempdir().unwrap();
        let prog = script(
            dir.path(),
            "echo 'Failed to open /var/log/journal: Permission denied' >&2; exit 1",
        );
        let err = generate_verification_key(prog.to_str().unwrap(), "10s")
            .await
            .unwrap_err();
        assert!(matches!(err, CliError::KeyGeneration { .. }));
        assert!(err.to_string().contains("Permission denied"), "{err}");

        let prog = script(dir.path(), "exit 0");
        let err = generate_verification_key(prog.to_str().unwrap(), "10s")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no verification key"), "{err}");

        let missing = dir.path().join("missing");
        let err = generate_verification_key(missing.to_str().unwrap(), "10s")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot run"), "{err}");

        let err = generate_verification_key("true", "10 s").await.unwrap_err();
        assert!(matches!(err, CliError::Usage(_)));
    }
}
