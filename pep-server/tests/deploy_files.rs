//! The deployment artifacts stay valid: `deploy/pep.toml` and `deploy/compose.pep.toml` pass
//! `check-config` once their file paths point at real files, the systemd unit keeps its hardening,
//! and the Docker files never put a CA key into the image.

use std::path::{Path, PathBuf};

use pep_server::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `text` with the /etc/pep paths replaced by the test fixtures and a token file in `dir`.
fn with_fixture_paths(text: &str, dir: &Path) -> String {
    let f = repo().join("fixtures");
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\ntoken = \"deploy-test-token-0123456789\"\nroles = [\"provision\"]\n",
    )
    .unwrap();
    // Secrets as the deployment keeps them: readable by their owner only.
    let key = dir.join("CA_private.pem");
    std::fs::copy(f.join("ca/CA_private.pem"), &key).unwrap();
    for file in [&tokens, &key] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut out = text.to_owned();
    for (from, to) in [
        ("/etc/pep/ca/CA_cert.pem", f.join("ca/CA_cert.pem")),
        ("/etc/pep/ca/CA_private.pem", key.clone()),
        (
            "/etc/pep/ca/bootstrap_ca.pem",
            f.join("bootstrap/bootstrap_ca.pem"),
        ),
        (
            "/etc/pep/bootstrap_ca.pem",
            f.join("bootstrap/bootstrap_ca.pem"),
        ),
        (
            "/etc/pep/ca/update_auth_cert.pem",
            f.join("bootstrap/update_auth_cert.pem"),
        ),
        (
            "/etc/pep/update_auth_cert.pem",
            f.join("bootstrap/update_auth_cert.pem"),
        ),
        ("/etc/pep/tokens.toml", tokens.clone()),
        (
            "/var/lib/pep/pep.sqlite",
            dir.join("pep.sqlite").to_path_buf(),
        ),
    ] {
        out = out.replace(from, &to.display().to_string());
    }
    out
}

#[test]
fn deploy_configs_pass_the_check() {
    for rel in ["deploy/pep.toml", "deploy/compose.pep.toml"] {
        let dir = tempfile::tempdir().unwrap();
        let text = with_fixture_paths(&read(rel), dir.path());
        assert!(
            text.lines()
                .all(|l| l.trim_start().starts_with('#') || !l.contains("/etc/pep/")),
            "{rel}: a path was not replaced"
        );
        let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let report = config.check();
        // The repository's test CA stands in for the factory CA, and is rightly refused on a
        // listen address beyond loopback: that must be the only error.
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.field == "ca.cert" && e.message.contains("TEST CA")),
            "{rel}:\n{report}"
        );
        assert_eq!(report.errors.len(), 1, "{rel}:\n{report}");
    }
}

#[test]
fn deploy_pep_toml_comments_every_field() {
    let text = read("deploy/pep.toml");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let is_field = !t.starts_with('#') && !t.starts_with('[') && t.contains(" = ");
        if is_field {
            let commented = line.contains(" # ")
                || (i > 0 && lines[i - 1].trim_start().starts_with('#'))
                || lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| !l.trim().is_empty())
                    .any(|l| l.trim_start().starts_with('#'));
            assert!(commented, "deploy/pep.toml:{}: `{t}` has no comment", i + 1);
        }
    }
    for field in [
        "listen",
        "database_url",
        "server_id",
        "key_mode",
        "request_deadline_ms",
        "log_format",
        "auth",
        "token_file",
        "lifetime_days",
        "on_ca_expiry",
        "first_to_claim",
        "memory_total_kb",
        "utc_offset",
        "class_id",
        "max_concurrent_injections",
        "entropy_rot",
        "category",
    ] {
        assert!(
            text.contains(&format!("{field} = ")),
            "deploy/pep.toml lacks {field}"
        );
    }
}

#[test]
fn systemd_unit_is_hardened() {
    let unit = read("deploy/pep-server.service");
    for directive in [
        "User=pep",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/pep",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "StateDirectory=pep",
        "ExecStart=/usr/local/bin/pep-server --config /etc/pep/pep.toml serve",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "missing {directive}"
        );
    }
    let writable: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ReadWritePaths="))
        .collect();
    assert_eq!(writable, ["ReadWritePaths=/var/lib/pep"]);
}

#[test]
fn docker_files_keep_the_ca_key_out_of_the_image() {
    let ignore = read(".dockerignore");
    for pattern in ["target/", "pep-data/", "fixtures/ca/*private*"] {
        assert!(
            ignore.lines().any(|l| l.trim() == pattern),
            ".dockerignore lacks {pattern}"
        );
    }
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("USER pep"), "non-root user");
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY")) {
        assert!(
            !line.to_lowercase().contains("private") && !line.contains("/etc/pep"),
            "Dockerfile copies a secret: {line}"
        );
    }
    let compose = read("docker-compose.yml");
    assert!(compose.contains("/etc/pep:ro"), "config mounted read-only");
    assert!(compose.contains("pep-postgres:/var/lib/postgresql/data"));
}
