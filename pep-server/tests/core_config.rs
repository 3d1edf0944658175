//! `Config::check` acceptance: the example is valid; each broken variant is rejected with an error
//! naming the field; the provisioner refuses to start on an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pep_server::config::Config;
use pep_server::provision::{ProvisionError, Provisioner};
use pep_server::store::Store;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workspace() -> PathBuf {
    manifest().parent().unwrap().to_owned()
}

fn example_text() -> String {
    std::fs::read_to_string(manifest().join("pep.example.toml")).unwrap()
}

fn parse(text: &str) -> Config {
    let mut c = Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    c.resolve_relative_to(&workspace());
    // git checks the fixture key out 0644 (or 0600 under umask 077): the permission rule has
    // tests of its own, on copies with a known mode.
    c.ca.allow_insecure_key_permissions = true;
    c
}

/// Replaces exactly one occurrence of `from` in the example.
fn edit(from: &str, to: &str) -> String {
    let text = example_text();
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in the example"
    );
    text.replacen(from, to, 1)
}

#[test]
fn example_passes_the_check() {
    let report = parse(&example_text()).check();
    assert!(report.is_ok(), "{report}");
    // A fresh git checkout leaves the fixture key 0644 (git keeps no permissions): pep-ca's
    // key-permission warning is the only one allowed.
    let warnings: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| !(w.field == "ca" && w.message.contains("accessible by group or others")))
        .collect();
    assert!(warnings.is_empty(), "{report}");
}

#[test]
fn broken_configs_are_rejected_naming_the_field() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "aid= with first-to-claim",
            edit(
                "uri = \"coaps://bootstrap.us-east-1.mbedcloud.com:5684\"",
                "uri = \"coaps://bootstrap.us-east-1.mbedcloud.com:5684?aid=0123456789abcdef\"",
            ),
            "bootstrap.uri: contains aid= but first_to_claim is on",
        ),
        (
            "no aid= without first-to-claim",
            edit("first_to_claim = true", "first_to_claim = false"),
            "bootstrap.uri",
        ),
        (
            "http bootstrap URI",
            edit(
                "uri = \"coaps://bootstrap.us-east-1.mbedcloud.com:5684\"",
                "uri = \"https://bootstrap.example.com\"",
            ),
            "bootstrap.uri",
        ),
        (
            "bootstrap CA missing",
            edit(
                "fixtures/bootstrap/bootstrap_ca.pem",
                "fixtures/bootstrap/nope.pem",
            ),
            "bootstrap.ca_cert",
        ),
        (
            "bootstrap CA is a key",
            edit(
                "fixtures/bootstrap/bootstrap_ca.pem",
                "fixtures/ca/CA_private.pem",
            ),
            "bootstrap.ca_cert",
        ),
        (
            "CA certificate missing",
            edit(
                "cert = \"fixtures/ca/CA_cert.pem\"",
                "cert = \"fixtures/ca/missing.pem\"",
            ),
            "ca.cert",
        ),
        (
            "CA key is not the certificate's key",
            edit(
                "key = \"fixtures/ca/CA_private.pem\"",
                "key = \"fixtures/bootstrap/update_auth_cert.pem\"",
            ),
            "ca:",
        ),
        (
            "update-auth certificate is a key",
            edit(
                "auth_cert = \"fixtures/bootstrap/update_auth_cert.pem\"",
                "auth_cert = \"fixtures/ca/CA_private.pem\"",
            ),
            "update.auth_cert",
        ),
        (
            "vendor id not a UUID",
            edit("5355424d-4152-5320-4f46-204c4f564552", "not-a-uuid"),
            "update.vendor_id",
        ),
        (
            "class id not a UUID",
            edit(
                "4d4f4e44-4159-204d-4f52-4e494e472e2e",
                "4d4f4e44-4159-204d-4f52",
            ),
            "update.class_id",
        ),
        (
            "UTC offset too short",
            edit("utc_offset = \"+00:00\"", "utc_offset = \"+0:00\""),
            "time.utc_offset",
        ),
        (
            "UTC offset hours over 14",
            edit("utc_offset = \"+00:00\"", "utc_offset = \"+15:00\""),
            "time.utc_offset",
        ),
        (
            "UTC offset minutes 60",
            edit("utc_offset = \"+00:00\"", "utc_offset = \"-01:60\""),
            "time.utc_offset",
        ),
        (
            "zero lifetime",
            edit("lifetime_days = 7300", "lifetime_days = 0"),
            "certificate.lifetime_days",
        ),
        (
            "lifetime past the CA with refuse",
            edit("lifetime_days = 7300", "lifetime_days = 36500").replacen(
                "on_ca_expiry = \"shorten\"",
                "on_ca_expiry = \"refuse\"",
                1,
            ),
            "certificate.lifetime_days",
        ),
        (
            "zero read timeout",
            edit("read_timeout_ms = 60000", "read_timeout_ms = 0"),
            "fcc.read_timeout_ms",
        ),
        (
            "zero connect timeout",
            edit("connect_timeout_ms = 5000", "connect_timeout_ms = 0"),
            "fcc.connect_timeout_ms",
        ),
        (
            "zero concurrency",
            edit(
                "max_concurrent_injections = 64",
                "max_concurrent_injections = 0",
            ),
            "fcc.max_concurrent_injections",
        ),
        (
            "short token",
            edit(
                "token = \"example-token-change-me-0123456789\"",
                "token = \"short\"",
            ),
            "tokens[0].token",
        ),
        (
            "token without roles",
            edit("roles = [\"provision\", \"read\"]", "roles = []"),
            "tokens[0].roles",
        ),
        (
            "tokens auth without tokens",
            edit(
                "[[tokens]]\ntoken = \"example-token-change-me-0123456789\"\nroles = [\"provision\", \"read\"]\nname = \"factory-line-1\"\n",
                "",
            ),
            "tokens:",
        ),
        (
            "token file missing",
            edit(
                "# token_file = \"/etc/pep/tokens.toml\"",
                "token_file = \"/nonexistent/tokens.toml\"",
            ),
            "token_file",
        ),
        (
            "listen address without port",
            edit("listen = \"127.0.0.1:5151\"", "listen = \"localhost\""),
            "listen",
        ),
        (
            "empty manufacturer",
            edit("manufacturer = \"Arm\"", "manufacturer = \"\""),
            "device.manufacturer",
        ),
        (
            "unknown category",
            edit("category = \"production\"", "category = \"staging\""),
            "defaults.category",
        ),
        (
            "unsupported database",
            edit(
                "database_url = \"sqlite://pep-data/pep.sqlite\"",
                "database_url = \"mysql://localhost/pep\"",
            ),
            "database_url",
        ),
        (
            "zero memory",
            edit("memory_total_kb = 1048576", "memory_total_kb = 0"),
            "device.memory_total_kb",
        ),
    ];
    assert!(cases.len() >= 12);
    for (name, text, needle) in cases {
        // A malformed single value (address, URI, UUID, offset, category) is refused when the
        // file is loaded; everything else by the check. Either way the error names the field.
        let errors: Vec<String> = match Config::from_toml_str(&text) {
            Err(e) => vec![e.to_string()],
            Ok(mut c) => {
                c.resolve_relative_to(&workspace());
                let report = c.check();
                assert!(!report.is_ok(), "{name}: accepted\n{report}");
                report.errors.iter().map(ToString::to_string).collect()
            }
        };
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{name}: no error naming `{needle}` in {errors:#?}"
        );
    }
}

#[test]
fn schema_errors_name_the_key() {
    for (text, needle) in [
        (edit("listen = ", "listn = "), "listn"),
        (
            edit("roles = [\"provision\", \"read\"]", "roles = [\"admin\"]"),
            "admin",
        ),
        (
            edit("key_mode = \"by_tool\"", "key_mode = \"by_magic\""),
            "by_magic",
        ),
        (
            edit("memory_total_kb = 1048576", "memory_total_kb = \"lots\""),
            "memory_total_kb",
        ),
    ] {
        let e = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "`{needle}` not in {e}");
    }
}

#[tokio::test]
async fn provisioner_refuses_to_start_on_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = parse(&edit("read_timeout_ms = 60000", "read_timeout_ms = 0"));
    config.database_url = format!("sqlite://{}/pep.sqlite", dir.path().display());
    let store = Store::open(&config.database_url).await.unwrap();
    let err = Provisioner::new(Arc::new(config), store).unwrap_err();
    assert!(matches!(err, ProvisionError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("fcc.read_timeout_ms"), "{err}");
}

/// A malformed value never reaches the provisioner: the file does not load, and the error names
/// the field once, the value and what was wrong.
#[test]
fn malformed_values_are_refused_at_load_naming_the_field_once() {
    for (from, to, field, what) in [
        (
            "utc_offset = \"+00:00\"",
            "utc_offset = \"0\"",
            "time.utc_offset",
            "`0` is not exactly 6 characters",
        ),
        (
            "listen = \"127.0.0.1:5151\"",
            "listen = \"localhost\"",
            "listen",
            "`localhost` is not an IP:PORT address",
        ),
        (
            "5355424d-4152-5320-4f46-204c4f564552",
            "not-a-uuid",
            "update.vendor_id",
            "UUID",
        ),
        (
            "category = \"production\"",
            "category = \"staging\"",
            "defaults.category",
            "staging",
        ),
        (
            "uri = \"coaps://bootstrap.us-east-1.mbedcloud.com:5684\"",
            "uri = \"https://bootstrap.example.com\"",
            "bootstrap.uri",
            "scheme `https` is not coap:// or coaps://",
        ),
        (
            "durability = \"full\"",
            "durability = \"fast\"",
            "store.durability",
            "unknown variant `fast`, expected `full` or `normal`",
        ),
    ] {
        let e = Config::from_toml_str(&edit(from, to))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{field}: ")), "{field} not named: {e}");
        // Once as the field; the TOML snippet below it shows the line as written.
        assert_eq!(
            e.matches(&format!("{field}:")).count(),
            1,
            "{field} named twice: {e}"
        );
        assert!(e.contains(what), "{what:?} not in {e}");
    }
}

/// The token file's errors name `token_file` once, and a token file that does not load adds no
/// second error about missing tokens (its own error is the reason).
#[test]
fn token_file_errors_are_single_and_name_the_field_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        "[[tokens]]\ntoken = \"from-the-token-file-0123456789abc\"\nroles = [\"raed\"]\n",
    )
    .unwrap();
    // Only the token file's tokens: the inline one removed.
    let mut config = parse(&edit(
        "[[tokens]]\ntoken = \"example-token-change-me-0123456789\"\nroles = [\"provision\", \"read\"]\nname = \"factory-line-1\"\n",
        "",
    ));
    config.token_file = Some(file.clone());
    let report = config.check();
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("token_file: invalid "), "{errors:#?}");
    assert_eq!(errors[0].matches("token_file").count(), 1, "{errors:#?}");
    assert!(errors[0].contains("tokens[0].roles"), "{errors:#?}");
    assert!(errors[0].contains("raed"), "{errors:#?}");

    config.token_file = Some("no/such/tokens.toml".into());
    let report = config.check();
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let cwd = std::env::current_dir().unwrap();
    assert!(
        errors[0].starts_with(&format!(
            "token_file: cannot read no/such/tokens.toml (relative to the working directory {})",
            cwd.display()
        )),
        "{errors:#?}"
    );
}

/// A file that cannot be read is named with the directory a relative path is relative to.
#[test]
fn unreadable_relative_paths_name_the_working_directory() {
    let config = Config::from_toml_str(&edit(
        "fixtures/bootstrap/bootstrap_ca.pem",
        "no/such/bootstrap_ca.pem",
    ))
    .unwrap();
    let report = config.check();
    let cwd = std::env::current_dir().unwrap();
    let expected = format!(
        "bootstrap.ca_cert: cannot read no/such/bootstrap_ca.pem (relative to the working directory {}): ",
        cwd.display()
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.to_string().starts_with(&expected)),
        "{report}"
    );
}

#[test]
fn token_file_tokens_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        "[[tokens]]\ntoken = \"from-the-token-file-0123456789abc\"\nroles = [\"read\"]\n",
    )
    .unwrap();
    let mut config = parse(&example_text());
    config.token_file = Some(file);
    assert!(config.check().is_ok());
    let tokens = config.load_tokens().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[1].token.as_deref(),
        Some("from-the-token-file-0123456789abc")
    );
}

#[test]
fn normal_durability_is_accepted_with_a_warning_naming_the_risk() {
    let report = parse(&edit("durability = \"full\"", "durability = \"normal\"")).check();
    assert!(report.is_ok(), "{report}");
    let warning = report
        .warnings
        .iter()
        .find(|w| w.field == "store.durability")
        .unwrap_or_else(|| panic!("no store.durability warning: {report}"));
    assert!(warning.message.contains("power cut"), "{warning}");
    // The default is the safe one.
    let default = parse(&example_text().replace("durability = \"full\"", ""));
    assert_eq!(
        default.store.durability,
        pep_server::store::Durability::Full
    );
}
