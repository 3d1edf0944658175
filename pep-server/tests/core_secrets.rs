//! Issue #14 §6, secrets at rest: what `check-config` (and therefore the server's start) says about
//! weak, well-known, hashed and exposed tokens and about the CA key and the repository's test CA.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use pep_server::config::{CheckReport, Config};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn example_text() -> String {
    std::fs::read_to_string(workspace().join("pep-server/pep.example.toml")).unwrap()
}

const EXAMPLE_TOKEN: &str = "token = \"example-token-change-me-0123456789\"";

/// The example with `from` replaced by `to`, and its CA key copied to `dir` with `mode`.
fn config(dir: &Path, edits: &[(&str, &str)], key_mode: u32) -> Config {
    let mut text = example_text();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "`{from}`");
        text = text.replacen(from, to, 1);
    }
    let key = dir.join("CA_private.pem");
    std::fs::copy(workspace().join("fixtures/ca/CA_private.pem"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    let mut c = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    c.resolve_relative_to(&workspace());
    c.ca.key = key;
    c
}

fn errors_of(r: &CheckReport, field: &str) -> Vec<String> {
    r.errors
        .iter()
        .filter(|e| e.field == field)
        .map(|e| e.message.clone())
        .collect()
}

#[test]
fn the_example_is_ok_with_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let r = config(dir.path(), &[], 0o600).check();
    assert!(r.is_ok(), "{r}");
}

#[test]
fn a_ca_key_others_can_read_stops_the_server_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let r = config(dir.path(), &[], 0o644).check();
    let e = errors_of(&r, "ca.key");
    assert_eq!(e.len(), 1, "{r}");
    assert!(
        e[0].contains("mode 0644") && e[0].contains("ca.allow_insecure_key_permissions"),
        "{r}"
    );
    let mut c = config(dir.path(), &[], 0o640);
    assert!(!c.check().is_ok());
    c.ca.allow_insecure_key_permissions = true;
    let r = c.check();
    assert!(r.is_ok(), "{r}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.field == "ca" && w.message.contains("accessible by group or others")),
        "{r}"
    );
}

#[test]
fn the_test_ca_and_the_demo_token_are_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let demo = "token = \"pep-demo-token\"";
    let local = config(dir.path(), &[(EXAMPLE_TOKEN, demo)], 0o600).check();
    assert!(local.is_ok(), "{local}");
    assert!(
        local
            .warnings
            .iter()
            .any(|w| w.field == "tokens[0].token" && w.message.contains("demo token")),
        "{local}"
    );
    let listen = "listen = \"127.0.0.1:5151\"";
    for wide in ["listen = \"0.0.0.0:5151\"", "listen = \"10.1.2.3:5151\""] {
        let r = config(dir.path(), &[(EXAMPLE_TOKEN, demo), (listen, wide)], 0o600).check();
        let ca = errors_of(&r, "ca.cert");
        assert!(
            ca.len() == 1 && ca[0].contains("TEST CA") && ca[0].contains("private key is public"),
            "{r}"
        );
        let token = errors_of(&r, "tokens[0].token");
        assert!(
            token.len() == 1
                && token[0].contains("demo token")
                && token[0].contains("openssl rand -hex 32"),
            "{r}"
        );
    }
}

#[test]
fn weak_tokens_are_refused_with_the_way_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    for weak in [
        "aaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "password1234",
    ] {
        let r = config(
            dir.path(),
            &[(EXAMPLE_TOKEN, &format!("token = \"{weak}\""))],
            0o600,
        )
        .check();
        let e = errors_of(&r, "tokens[0].token");
        assert!(
            e.len() == 1 && e[0].contains("too guessable") && e[0].contains("openssl rand -hex 32"),
            "{weak}: {r}"
        );
    }
    // 32 random hex characters are enough.
    let r = config(
        dir.path(),
        &[(
            EXAMPLE_TOKEN,
            "token = \"9f86d081884c7d659a2feaa0c55ad015\"",
        )],
        0o600,
    )
    .check();
    assert!(r.is_ok(), "{r}");
}

#[test]
fn hashed_tokens_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // printf %s test | sha256sum
    let good =
        "token_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"";
    let r = config(dir.path(), &[(EXAMPLE_TOKEN, good)], 0o600).check();
    assert!(r.is_ok(), "{r}");
    let r = config(
        dir.path(),
        &[(EXAMPLE_TOKEN, "token_sha256 = \"abc\"")],
        0o600,
    )
    .check();
    assert!(
        errors_of(&r, "tokens[0].token_sha256")
            .first()
            .is_some_and(|m| m.contains("64 hex characters")),
        "{r}"
    );
    let both = format!("{EXAMPLE_TOKEN}\n{good}");
    let r = config(dir.path(), &[(EXAMPLE_TOKEN, &both)], 0o600).check();
    assert!(
        errors_of(&r, "tokens[0].token")
            .first()
            .is_some_and(|m| m.contains("both set")),
        "{r}"
    );
}

#[test]
fn plaintext_tokens_in_readable_files_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pep.toml");
    let text = example_text().replace(
        "key = \"fixtures/ca/CA_private.pem\"",
        "key = \"fixtures/ca/CA_private.pem\"\nallow_insecure_key_permissions = true",
    );
    std::fs::write(&path, text).unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\ntoken = \"from-the-token-file-0123456789abc\"\nroles = [\"read\"]\n",
    )
    .unwrap();
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        for file in [&path, &tokens] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut c = Config::load(&path).unwrap();
        c.resolve_relative_to(&workspace());
        c.token_file = Some(tokens.clone());
        let r = c.check();
        assert!(r.is_ok(), "{r}");
        let inline = r
            .warnings
            .iter()
            .any(|w| w.field == "tokens" && w.message.contains("plaintext tokens"));
        let file = r
            .warnings
            .iter()
            .any(|w| w.field == "token_file" && w.message.contains("chmod 600"));
        assert_eq!((inline, file), (warned, warned), "mode {mode:o}: {r}");
    }
}
