//! `pep.toml` for a shared PostgreSQL store: `postgres://` URLs pass the check, broken ones and a
//! bad `server_id` are rejected naming the field, and the store options follow the config.

use std::path::Path;
use std::time::Duration;

use pep_server::config::Config;

fn example_with(from: &str, to: &str) -> Config {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(manifest.join("pep.example.toml")).unwrap();
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once");
    let mut c = Config::from_toml_str(&text.replacen(from, to, 1)).unwrap();
    c.resolve_relative_to(manifest.parent().unwrap());
    // The repository's test CA: git checks its key out readable by all.
    c.ca.allow_insecure_key_permissions = true;
    c
}

const SQLITE: &str = "database_url = \"sqlite://pep-data/pep.sqlite\"";

fn errors_of(c: &Config) -> Vec<String> {
    c.check().errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn postgres_urls_pass_the_check() {
    for url in [
        "postgres://pep@db.factory.example/pep",
        "postgresql://pep:secret@127.0.0.1:5432/pep?sslmode=require",
    ] {
        let c = example_with(SQLITE, &format!("database_url = \"{url}\""));
        let report = c.check();
        assert!(report.is_ok(), "{url}: {report}");
    }
}

#[test]
fn broken_postgres_url_and_server_id_are_rejected_naming_the_field() {
    let c = example_with(SQLITE, "database_url = \"postgres://\"");
    let errors = errors_of(&c);
    assert!(
        errors.iter().any(|e| e.starts_with("database_url")),
        "{errors:?}"
    );

    let c = example_with(
        SQLITE,
        "database_url = \"postgres://pep:hunter2-pw@[::1/pep\"",
    );
    let errors = errors_of(&c);
    assert!(
        errors.iter().any(|e| e.starts_with("database_url")),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| !e.contains("hunter2-pw")),
        "password in an error: {errors:?}"
    );

    for (value, needle) in [
        ("", "empty"),
        ("   ", "empty"),
        ("line\\u0007one", "control"),
        (&"x".repeat(129), "128"),
    ] {
        let c = example_with(SQLITE, &format!("{SQLITE}\nserver_id = \"{value}\""));
        let errors = errors_of(&c);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("server_id") && e.contains(needle)),
            "{value:?}: {errors:?}"
        );
    }
}

#[test]
fn store_options_follow_the_config() {
    let c = example_with(SQLITE, &format!("{SQLITE}\nserver_id = \"line-2\""));
    let o = c.store_options();
    assert_eq!(o.server_id, "line-2");
    let longest = c.request_deadline().max(Duration::from_millis(
        c.fcc.connect_timeout_ms + c.fcc.write_timeout_ms + c.fcc.read_timeout_ms,
    ));
    assert_eq!(o.in_flight_lease, longest * 10);

    // Without server_id: host name + listen address, so two servers on one host differ.
    let c = example_with(SQLITE, SQLITE);
    let id = c.server_id();
    assert!(id.ends_with(&format!("/{}", c.listen)), "{id}");
    assert!(id.len() > c.listen.to_string().len() + 1, "{id}");
}
