//! Bad input at start: the real `pep-server` daemon is started on malformed configs, CA files,
//! token settings and database files (empty, truncated, binary garbage, a directory, the wrong PEM
//! in a slot, a half-written database). Each one must end the process promptly with exit status 1,
//! an error naming the field or file, no panic, no secret in the output, and no port left
//! listening. (The field-by-field config checks are `core_config.rs`; this is the process level.)

use crate::http_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_support::*;

/// What one broken start must print (any of these substrings, case-sensitive).
struct Case {
    name: &'static str,
    expect: &'static [&'static str],
}

/// Starts the daemon on `dir/pep.toml`; waits at most 60 s. Returns (exit code, stderr, stdout).
fn start(dir: &Path, name: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .arg("--config")
        .arg(dir.join("pep.toml"))
        .env_remove("PEP_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name}: pep-server still running 30 s after a broken start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn good_config(dir: &Path) -> String {
    config_toml(dir, &Options::default())
}

/// The base64 body of the fixture CA key: must never appear in any output.
fn ca_key_body() -> Vec<String> {
    let pem = std::fs::read_to_string(fixtures().join("ca/CA_private.pem")).unwrap();
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_owned)
        .collect()
}

/// Writes `content` to `dir/name` and returns its path as a string for the config.
fn file(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

#[test]
fn broken_configs_ca_files_tokens_and_databases_refuse_to_start() {
    let fx = fixtures();
    let ca_cert = fx.join("ca/CA_cert.pem").display().to_string();
    let ca_key = fx.join("ca/CA_private.pem").display().to_string();
    let cert_pem = std::fs::read(&ca_cert).unwrap();
    let key_pem = std::fs::read(&ca_key).unwrap();
    let secrets = ca_key_body();

    // (case, how to break the directory's config/files)
    type Breaker = Box<dyn Fn(&Path) -> String>;
    let cases: Vec<(Case, Breaker)> = vec![
        (
            Case {
                name: "empty config",
                expect: &["listen", "missing field"],
            },
            Box::new(|_d: &Path| String::new()),
        ),
        (
            Case {
                name: "binary garbage config",
                expect: &["pep.toml"],
            },
            Box::new(|_d: &Path| "\u{0}\u{1}\u{2}\u{fffd}[[[=\u{7f}".repeat(50)),
        ),
        (
            Case {
                name: "truncated config (power cut mid-write)",
                expect: &["pep.toml"],
            },
            Box::new(|d: &Path| {
                let text = good_config(d);
                let cut = text.find("[[tokens]]").unwrap() + 14;
                text[..cut].to_owned()
            }),
        ),
        (
            Case {
                name: "config is a directory",
                expect: &["pep.toml"],
            },
            Box::new(|d: &Path| {
                std::fs::create_dir(d.join("pep.toml.dir")).unwrap();
                "@dir".to_owned()
            }),
        ),
        (
            Case {
                name: "CA certificate: garbage",
                expect: &["ca.cert", "garbage.pem"],
            },
            Box::new(move |d: &Path| {
                let p = file(d, "garbage.pem", b"\x00\xffnot a certificate at all\n");
                good_config(d).replace(&ca_cert_path(), &p)
            }),
        ),
        (
            Case {
                name: "CA certificate: truncated PEM (half-flashed)",
                expect: &["ca.cert", "half.pem"],
            },
            Box::new({
                let cert_pem = cert_pem.clone();
                move |d: &Path| {
                    let p = file(d, "half.pem", &cert_pem[..cert_pem.len() / 2]);
                    good_config(d).replace(&ca_cert_path(), &p)
                }
            }),
        ),
        (
            Case {
                name: "CA certificate: empty file",
                expect: &["ca.cert", "empty.pem"],
            },
            Box::new(|d: &Path| {
                let p = file(d, "empty.pem", b"");
                good_config(d).replace(&ca_cert_path(), &p)
            }),
        ),
        (
            Case {
                name: "CA certificate slot holds the private key",
                expect: &["ca.cert", "key-as-cert.pem"],
            },
            Box::new({
                let key_pem = key_pem.clone();
                move |d: &Path| {
                    let p = file(d, "key-as-cert.pem", &key_pem);
                    good_config(d).replace(&ca_cert_path(), &p)
                }
            }),
        ),
        (
            Case {
                name: "CA key: truncated",
                expect: &["ca.key", "half-key.pem"],
            },
            Box::new({
                let key_pem = key_pem.clone();
                move |d: &Path| {
                    let p = file(d, "half-key.pem", &key_pem[..key_pem.len() / 2]);
                    good_config(d).replace(&ca_key_path(), &p)
                }
            }),
        ),
        (
            Case {
                name: "CA key slot holds the certificate",
                expect: &["ca.key", "cert-as-key.pem"],
            },
            Box::new({
                let cert_pem = cert_pem.clone();
                move |d: &Path| {
                    let p = file(d, "cert-as-key.pem", &cert_pem);
                    good_config(d).replace(&ca_key_path(), &p)
                }
            }),
        ),
        (
            Case {
                name: "CA key: missing file",
                expect: &["ca.key", "no-such-key.pem"],
            },
            Box::new(|d: &Path| {
                good_config(d).replace(
                    &ca_key_path(),
                    &d.join("no-such-key.pem").display().to_string(),
                )
            }),
        ),
        (
            Case {
                name: "bootstrap CA: binary garbage",
                expect: &["bootstrap.ca_cert", "bs.pem"],
            },
            Box::new(|d: &Path| {
                let p = file(d, "bs.pem", &[0xde, 0xad, 0xbe, 0xef].repeat(64));
                let bs = fixtures()
                    .join("bootstrap/bootstrap_ca.pem")
                    .display()
                    .to_string();
                good_config(d).replace(&bs, &p)
            }),
        ),
        (
            Case {
                name: "token too short",
                expect: &["tokens[0].token"],
            },
            Box::new(|d: &Path| good_config(d).replace(BOTH, "short")),
        ),
        (
            Case {
                name: "token with a space",
                expect: &["tokens[0].token"],
            },
            Box::new(|d: &Path| good_config(d).replace(BOTH, "has a space in it 0123")),
        ),
        (
            Case {
                name: "the same token twice",
                expect: &["tokens[1].token"],
            },
            Box::new(|d: &Path| good_config(d).replace(READ, BOTH)),
        ),
        (
            Case {
                name: "unknown role",
                expect: &["roles", "admin"],
            },
            Box::new(|d: &Path| {
                good_config(d).replacen("roles = [\"read\"]", "roles = [\"admin\"]", 1)
            }),
        ),
        (
            Case {
                name: "token file missing",
                expect: &["token_file", "no-tokens.toml"],
            },
            Box::new(|d: &Path| {
                format!(
                    "token_file = \"{}\"\n{}",
                    d.join("no-tokens.toml").display(),
                    good_config(d)
                )
            }),
        ),
        (
            Case {
                name: "token file garbage",
                expect: &["token_file", "tokens.toml"],
            },
            Box::new(|d: &Path| {
                let p = file(d, "tokens.toml", b"\xff\xfe[[tokens]\n token = ");
                format!("token_file = \"{p}\"\n{}", good_config(d))
            }),
        ),
        (
            Case {
                name: "database file is garbage (half-written)",
                expect: &["pep.sqlite"],
            },
            Box::new(|d: &Path| {
                std::fs::write(
                    d.join("pep.sqlite"),
                    b"SQLite format 3\x00"
                        .iter()
                        .chain([0xa5u8; 8192].iter())
                        .copied()
                        .collect::<Vec<u8>>(),
                )
                .unwrap();
                good_config(d)
            }),
        ),
        (
            Case {
                name: "database path is a directory",
                expect: &["pep.sqlite"],
            },
            Box::new(|d: &Path| {
                std::fs::create_dir(d.join("pep.sqlite")).unwrap();
                good_config(d)
            }),
        ),
    ];

    let mut figures = Vec::new();
    for (case, breaker) in &cases {
        let dir = tempfile::tempdir().unwrap();
        let text = breaker(dir.path());
        if text == "@dir" {
            std::fs::remove_dir(dir.path().join("pep.toml.dir")).unwrap();
            std::fs::create_dir(dir.path().join("pep.toml")).unwrap();
        } else {
            std::fs::write(dir.path().join("pep.toml"), &text).unwrap();
        }
        let started = Instant::now();
        let (code, stderr, stdout) = start(dir.path(), case.name);
        let took = started.elapsed();
        let all = format!("{stderr}{stdout}");
        assert_eq!(code, Some(1), "{}: exit {code:?}\n{all}", case.name);
        assert!(
            !stdout.contains("listening on"),
            "{}: it listened\n{all}",
            case.name
        );
        assert!(!all.contains("panicked"), "{}: panic\n{all}", case.name);
        assert!(
            case.expect.iter().any(|e| all.contains(e)),
            "{}: the error names none of {:?}:\n{all}",
            case.name,
            case.expect
        );
        for s in &secrets {
            assert!(
                !all.contains(s.as_str()),
                "{}: CA key material printed",
                case.name
            );
        }
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("")
            .to_owned();
        figures.push(format!(
            "{}: exit 1 after {} ms: {first}",
            case.name,
            took.as_millis()
        ));
    }
    for f in figures {
        println!("startup: {f}");
    }
}

fn ca_cert_path() -> String {
    fixtures().join("ca/CA_cert.pem").display().to_string()
}

fn ca_key_path() -> String {
    fixtures().join("ca/CA_private.pem").display().to_string()
}

/// Runs `pep-server args` in `cwd` without PEP_CONFIG; at most 60 s. Returns (exit code, stderr,
/// stdout).
fn run_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pep-server"))
        .args(args)
        .current_dir(cwd)
        .env_remove("PEP_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// No `--config`, no `PEP_CONFIG` and no `pep.toml`: one message (not two) that says how to give
/// a config, naming `--config`, the demo and the example.
#[test]
fn no_config_at_all_is_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, stdout) = run_in(dir.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one message, printed once:\n{stderr}");
    assert_eq!(stderr.matches("no configuration").count(), 1, "{stderr}");
    for needle in [
        "--config",
        "fixtures/demo/pep.toml",
        "pep-server/pep.example.toml",
        &format!(
            "pep.toml (relative to the working directory {})",
            dir.path().display()
        ),
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    // check-config says the same, once, on stdout (its report's stream).
    let (code, stderr, stdout) = run_in(dir.path(), &["check-config"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout.matches("no configuration").count(), 1, "{stdout}");
    assert!(stdout.contains("fixtures/demo/pep.toml"), "{stdout}");
}

/// Each start-up error is printed once and names its field once: a malformed `listen`, a role
/// typo in the main file, a role typo in the token file (no second "no tokens" error), a missing
/// token file (no doubled `token_file: token_file:`), and a missing relative CA path (which says
/// what directory it is relative to).
#[test]
fn start_up_errors_are_printed_once_naming_the_field_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = good_config(d);
    let without_tokens = {
        let start = good.find("[[tokens]]").unwrap();
        let end = good.find("[ca]").unwrap();
        format!("{}{}", &good[..start], &good[end..])
    };
    std::fs::write(
        d.join("tokens.toml"),
        "[[tokens]]\ntoken = \"from-the-token-file-0123\"\nroles = [\"raed\"]\n",
    )
    .unwrap();
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "listen without a port",
            good.replacen("listen = \"127.0.0.1:0\"", "listen = \"localhost\"", 1),
            "listen:",
            &["`localhost` is not an IP:PORT address"],
        ),
        (
            "role typo in pep.toml",
            good.replacen("roles = [\"read\"]", "roles = [\"raed\"]", 1),
            "unknown variant",
            &["unknown variant `raed`, expected one of `provision`, `read`, `plan`, `revoke`"],
        ),
        (
            "role typo in the token file",
            format!("token_file = \"tokens.toml\"\n{without_tokens}"),
            "token_file:",
            &["tokens[0].roles", "raed", "refusing to start"],
        ),
        (
            "token file missing",
            format!("token_file = \"no-tokens.toml\"\n{without_tokens}"),
            "token_file:",
            &["no-tokens.toml (relative to the working directory"],
        ),
        (
            "relative CA path missing",
            good.replace(&ca_cert_path(), "ca/CA_cert.pem"),
            "ca.cert:",
            &["ca/CA_cert.pem (relative to the working directory"],
        ),
    ];
    for (name, text, field, expect) in cases {
        std::fs::write(d.join("pep.toml"), &text).unwrap();
        let (code, stderr, stdout) = run_in(d, &["--config", "pep.toml"]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(!stdout.contains("listening on"), "{name}: it listened");
        for e in expect {
            assert!(stderr.contains(e), "{name}: {e:?} not in\n{stderr}");
        }
        assert!(
            stderr.contains(&d.display().to_string()) || !name.contains("relative"),
            "{name}: the working directory is not named\n{stderr}"
        );
        // Printed once, the field named once (the TOML snippet of a parse error shows the line as
        // written, `listen = ...`, which is no second naming), and no second error about tokens.
        assert_eq!(stderr.matches(field).count(), 1, "{name}:\n{stderr}");
        assert!(!stderr.contains("no [[tokens]] entry"), "{name}:\n{stderr}");
        assert!(
            !stderr.contains("token_file: token_file"),
            "{name}:\n{stderr}"
        );
        for error in stderr.lines().filter(|l| l.contains("error")) {
            assert_eq!(
                stderr.matches(error).count(),
                1,
                "{name}: printed twice:\n{stderr}"
            );
        }
    }
}

/// With `log_format = "json"`, a refused start is logged as JSON too: every stderr line parses,
/// each config error is one object naming its field.
#[test]
fn json_log_format_refused_start_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = format!(
        "log_format = \"json\"\n{}",
        good_config(d).replace(BOTH, "short")
    );
    std::fs::write(d.join("pep.toml"), text).unwrap();
    let (code, stderr, _) = run_in(d, &["--config", "pep.toml"]);
    assert_eq!(code, Some(1), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "ERROR"
            && e["fields"]["field"] == "tokens[0].token"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("shorter than 12"))),
        "{stderr}"
    );
    assert!(
        events.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refusing to start"))),
        "{stderr}"
    );
}
