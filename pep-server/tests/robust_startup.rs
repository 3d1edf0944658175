//! Bad input at start: the real `pep-server` daemon is started on malformed configs, CA files,
//! token settings and database files (empty, truncated, binary garbage, a directory, the wrong PEM
//! in a slot, a half-written database). Each one must end the process promptly with exit status 1,
//! an error naming the field or file, no panic, no secret in the output, and no port left
//! listening. (The field-by-field config checks are `core_config.rs`; this is the process level.)

mod http_support;

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
