//! The factory CA key in an HSM (issue #15), with a fresh SoftHSM2 token per test: `ca
//! generate-pkcs11` and `ca init`, `check-config`'s summary, the full HTTP provisioning of
//! fake-fcc gateways with the key in the token (certificates checked by `openssl verify`), start-up
//! refused with exit 1 naming the problem (wrong PIN, missing key, a key that is not the
//! certificate's, no PIN), and the token going away and coming back while the server runs.

use crate::http_support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fake_fcc::Sessions;
use fcc_proto::names;
use http_support::*;
use workspace_bins::softhsm::{MODULE, PIN, SoftToken};

const SERVER: &str = env!("CARGO_BIN_EXE_pep-server");

/// Runs `pep-server args...` with the token's environment.
fn pep_server(token: Option<&SoftToken>, args: &[&OsStr]) -> Output {
    let mut command = Command::new(SERVER);
    command.args(args).env_remove("PEP_PKCS11_PIN");
    if let Some(token) = token {
        command.envs(token.env());
    }
    command.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A token with the CA key `ca-key` made by `pep-server ca generate-pkcs11`, its certificate in
/// `dir/CA_cert.pem` and the PIN in `dir/pin` (0600).
fn token_with_ca(dir: &Path) -> SoftToken {
    let token = SoftToken::new(dir, "pep-factory");
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    set_mode(&pin_file, 0o600);
    let out = pep_server(
        Some(&token),
        &[
            "ca".as_ref(),
            "generate-pkcs11".as_ref(),
            "--module".as_ref(),
            MODULE.as_ref(),
            "--token".as_ref(),
            "pep-factory".as_ref(),
            "--label".as_ref(),
            "ca-key".as_ref(),
            "--name".as_ref(),
            "ACME HSM Factory CA".as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
            "--pin-file".as_ref(),
            pin_file.as_os_str(),
        ],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("key = \"pkcs11:token=pep-factory;object=ca-key\""),
        "{said}"
    );
    assert!(!said.contains(PIN), "the PIN was printed: {said}");
    token
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The test config with the CA key in the token (`object`), the PIN from `dir/pin`.
fn write_config(dir: &Path, object: &str) -> PathBuf {
    let base = config_toml(dir, &Options::default());
    let start = base.find("[ca]").unwrap();
    let end = base.find("[bootstrap]").unwrap();
    let ca = format!(
        "[ca]\ncert = \"{}\"\nkey = \"pkcs11:token=pep-factory;object={object}\"\npkcs11_module = \"{MODULE}\"\npin_file = \"{}\"\n\n",
        dir.join("CA_cert.pem").display(),
        dir.join("pin").display()
    );
    let config = format!("{}{ca}{}", &base[..start], &base[end..]);
    let path = dir.join("pep.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn generated_key_stays_in_the_token_and_check_config_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_with_ca(dir.path());
    // CKA_SENSITIVE = true, CKA_EXTRACTABLE = false, as OpenSC reads them.
    let listing = token.private_key_listing("ca-key");
    let access = listing
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_default();
    assert!(access.contains("sensitive"), "{listing}");
    assert!(access.contains("never extractable"), "{listing}");

    let cert = openssl(
        dir.path(),
        &["x509", "-in", "CA_cert.pem", "-noout", "-text"],
    );
    assert!(cert.contains("CA:TRUE, pathlen:0"), "{cert}");
    assert!(cert.contains("Certificate Sign, CRL Sign"), "{cert}");
    openssl(
        dir.path(),
        &["verify", "-CAfile", "CA_cert.pem", "CA_cert.pem"],
    );

    let config = write_config(dir.path(), "ca-key");
    let out = pep_server(
        Some(&token),
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let fingerprint = openssl(
        dir.path(),
        &[
            "x509",
            "-in",
            "CA_cert.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let fingerprint = fingerprint.trim().rsplit('=').next().unwrap();
    for needle in [
        "CA subject:     CN=ACME HSM Factory CA",
        &format!("CA SHA-256:     {fingerprint}"),
        "CA expires:",
        "CA key:         PKCS#11 token \"pep-factory\", object \"ca-key\"",
        "listen:         http://127.0.0.1:0",
        "database:       sqlite://",
        "tokens:         3",
        "stations:       2",
    ] {
        assert!(said.contains(needle), "no `{needle}` in:\n{said}");
    }
    assert!(!said.contains(PIN), "{said}");

    // The PIN from the environment instead of the file.
    std::fs::remove_file(dir.path().join("pin")).unwrap();
    let out = Command::new(SERVER)
        .args(["check-config", "--config"])
        .arg(&config)
        .envs(token.env())
        .env("PEP_PKCS11_PIN", PIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn start_is_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_with_ca(dir.path());
    // A key made by another tool, not the certificate's.
    token.keypairgen("other-key");
    let check = |object: &str, pin: Option<&str>, expect: &[&str]| {
        let config = write_config(dir.path(), object);
        match pin {
            Some(pin) => std::fs::write(dir.path().join("pin"), pin).unwrap(),
            None => {
                // No pin_file and no PEP_PKCS11_PIN.
                let text = std::fs::read_to_string(&config).unwrap();
                let text: String = text
                    .lines()
                    .filter(|l| !l.starts_with("pin_file"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&config, text).unwrap();
            }
        }
        for command in [&["check-config"][..], &["serve"][..]] {
            let mut args: Vec<&OsStr> = command.iter().map(OsStr::new).collect();
            args.extend([OsStr::new("--config"), config.as_os_str()]);
            let out = pep_server(Some(&token), &args);
            let said = text(&out);
            assert_eq!(out.status.code(), Some(1), "{command:?} {object}: {said}");
            for needle in expect {
                assert!(
                    said.contains(needle),
                    "{command:?} {object}: no `{needle}` in:\n{said}"
                );
            }
            if let Some(pin) = pin.filter(|p| !p.is_empty()) {
                assert!(!said.contains(pin), "the PIN was printed: {said}");
            }
            assert!(!said.contains("listening on"), "{said}");
        }
    };
    check(
        "ca-key",
        Some("0000-wrong-pin"),
        &["refused the PIN", "pin_file"],
    );
    check(
        "no-such-key",
        Some(PIN),
        &["no private key", "object \"no-such-key\""],
    );
    check(
        "other-key",
        Some(PIN),
        &["does not match the certificate", "CA_cert.pem"],
    );
    check("ca-key", None, &["ca.pin_file", "PEP_PKCS11_PIN"]);
    std::fs::remove_file(dir.path().join("pin")).unwrap();
    check("ca-key", Some(""), &["ca.pin_file", "is empty"]);
}

#[tokio::test]
async fn provisioning_through_the_token_and_the_token_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_with_ca(dir.path());
    write_config(dir.path(), "ca-key");
    let conf = token.conf();
    let token_dir = token.token_dir();
    let work = tempfile::tempdir().unwrap();
    // The server's own directory (config, database, log); the token lives on in `dir`.
    std::fs::copy(dir.path().join("pep.toml"), work.path().join("pep.toml")).unwrap();
    let server = Server::start_in_with_env(work, &[("SOFTHSM2_CONF", conf.as_os_str())]).await;
    let limit = Duration::from_secs(30);

    let (status, health) = server.get_json("/healthz", None).await;
    assert_eq!(
        (status, health["ca"].as_str()),
        (200, Some("available")),
        "{health}"
    );
    assert_eq!(server.metric("pep_ca_available").await, 1.0);

    // A small fleet, every certificate signed in the token and verified by openssl.
    let mut gateways = Vec::new();
    for i in 0..4 {
        gateways.push((format!("GW-HSM-{i:04}"), gateway(Sessions::One, &[]).await));
    }
    for (serial, (gw, handle)) in gateways.iter_mut() {
        let (status, id) = tokio::time::timeout(limit, server.identity(serial, *gw))
            .await
            .expect("a provisioning hung");
        assert_eq!(status, 200, "{id}");
        let report = handle.next_report().await.unwrap();
        let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
        std::fs::write(dir.path().join(format!("{serial}.der")), cert).unwrap();
        let pem = format!("{serial}.pem");
        openssl(
            dir.path(),
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                &format!("{serial}.der"),
                "-out",
                &pem,
            ],
        );
        let ok = openssl(dir.path(), &["verify", "-CAfile", "CA_cert.pem", &pem]);
        assert!(ok.contains(": OK"), "{ok}");
    }

    // The token goes away (its directory moved): provisioning answers 503, retryable, at once.
    let away = dir.path().join("tokens-away");
    std::fs::rename(&token_dir, &away).unwrap();
    let (gw, _handle) = gateway(Sessions::One, &[]).await;
    let mut refused = 0;
    for _ in 0..3 {
        let (status, body) = tokio::time::timeout(limit, server.identity("GW-HSM-AWAY", gw))
            .await
            .expect("a provisioning hung while the token was away");
        if status == 503 {
            assert_eq!(body["retryable"], true, "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("unavailable")
                    || body.to_string().contains("unavailable"),
                "{body}"
            );
            refused += 1;
        } else {
            panic!("provisioning without the token answered {status}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(refused, 3);
    let (status, health) = tokio::time::timeout(limit, server.get_json("/healthz", None))
        .await
        .expect("/healthz hung");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ca"], "unavailable", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(server.metric("pep_ca_available").await, 0.0);
    let (status, floor) = server.get_text("/floor/", Some(READ)).await;
    assert_eq!(status, 200);
    assert!(floor.contains("id=\"ca-unavailable\""), "{floor}");
    assert!(floor.contains("CA unavailable"), "{floor}");

    // It comes back: the same serial provisions, no restart.
    std::fs::rename(&away, &token_dir).unwrap();
    tokio::time::sleep(pep_ca::pkcs11::REOPEN_INTERVAL + Duration::from_millis(200)).await;
    let (gw, mut handle) = gateway(Sessions::One, &[]).await;
    let (status, id) = tokio::time::timeout(limit, server.identity("GW-HSM-AWAY", gw))
        .await
        .expect("a provisioning hung after the token came back");
    assert_eq!(status, 200, "{id}");
    let report = handle.next_report().await.unwrap();
    let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
    std::fs::write(dir.path().join("back.der"), cert).unwrap();
    openssl(
        dir.path(),
        &[
            "x509", "-inform", "DER", "-in", "back.der", "-out", "back.pem",
        ],
    );
    openssl(
        dir.path(),
        &["verify", "-CAfile", "CA_cert.pem", "back.pem"],
    );
    let (_, health) = server.get_json("/healthz", None).await;
    assert_eq!(health["ca"], "available", "{health}");
    assert_eq!(server.metric("pep_ca_available").await, 1.0);
    let (_, floor) = server.get_text("/floor/", Some(READ)).await;
    assert!(!floor.contains("ca-unavailable"), "{floor}");

    let log = server.log();
    assert!(log.contains("PKCS#11 token unavailable"), "{log}");
    assert!(log.contains("PKCS#11 token available again"), "{log}");
    assert!(!log.contains(PIN), "the PIN is in the log");
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

#[test]
fn ca_init_writes_a_production_ca_and_a_csr() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ca");
    let run = |args: &[&str]| {
        let mut all: Vec<&OsStr> = vec![
            "ca".as_ref(),
            "init".as_ref(),
            "--out".as_ref(),
            out_dir.as_os_str(),
        ];
        all.extend(args.iter().map(OsStr::new));
        pep_server(None, &all)
    };
    let out = run(&["--name", "ACME Factory CA 2027", "--days", "4000"]);
    assert!(out.status.success(), "{}", text(&out));
    let key = out_dir.join("CA_private.pem");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key mode {mode:o}");
    }
    let cert = openssl(&out_dir, &["x509", "-in", "CA_cert.pem", "-noout", "-text"]);
    for needle in [
        "Subject: CN = ACME Factory CA 2027",
        "Issuer: CN = ACME Factory CA 2027",
        "X509v3 Basic Constraints: critical",
        "CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical",
        "Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "ecdsa-with-SHA256",
        "prime256v1",
    ] {
        assert!(cert.contains(needle), "no `{needle}` in:\n{cert}");
    }
    openssl(
        &out_dir,
        &["verify", "-CAfile", "CA_cert.pem", "CA_cert.pem"],
    );
    // The key is the certificate's.
    let from_key = openssl(&out_dir, &["pkey", "-in", "CA_private.pem", "-pubout"]);
    let from_cert = openssl(
        &out_dir,
        &["x509", "-in", "CA_cert.pem", "-noout", "-pubkey"],
    );
    assert_eq!(from_key, from_cert);
    // The new CA is one the server accepts.
    let config = config_toml(dir.path(), &Options::default())
        .replace(
            &fixtures().join("ca/CA_cert.pem").display().to_string(),
            &out_dir.join("CA_cert.pem").display().to_string(),
        )
        .replace(
            &fixtures().join("ca/CA_private.pem").display().to_string(),
            &key.display().to_string(),
        );
    std::fs::write(dir.path().join("pep.toml"), config).unwrap();
    let out = pep_server(
        None,
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            dir.path().join("pep.toml").as_os_str(),
        ],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("CA subject:     CN=ACME Factory CA 2027"),
        "{said}"
    );
    assert!(said.contains("CA key:         file "), "{said}");

    // Never overwrites.
    let again = run(&["--name", "Other"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    // --csr: a key and a request for an external root.
    let out_dir = dir.path().join("csr");
    let out = pep_server(
        None,
        &[
            "ca".as_ref(),
            "init".as_ref(),
            "--out".as_ref(),
            out_dir.as_os_str(),
            "--name".as_ref(),
            "ACME Factory CA 2028".as_ref(),
            "--csr".as_ref(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!out_dir.join("CA_cert.pem").exists());
    let csr = openssl(
        &out_dir,
        &["req", "-in", "CA_csr.pem", "-noout", "-verify", "-text"],
    );
    assert!(csr.contains("Subject: CN = ACME Factory CA 2028"), "{csr}");
    assert!(csr.contains("CA:TRUE, pathlen:0"), "{csr}");
    // An external root signs it; the result loads as the factory CA.
    openssl(
        &out_dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "root.key",
        ],
    );
    openssl(
        &out_dir,
        &[
            "req", "-x509", "-new", "-key", "root.key", "-subj", "/CN=Root", "-days", "9000",
            "-out", "root.pem",
        ],
    );
    std::fs::write(
        out_dir.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )
    .unwrap();
    openssl(
        &out_dir,
        &[
            "x509",
            "-req",
            "-in",
            "CA_csr.pem",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "8000",
            "-extfile",
            "ext.cnf",
            "-out",
            "CA_cert.pem",
        ],
    );
    let loaded = pep_ca::FactoryCa::load(
        &out_dir.join("CA_cert.pem"),
        &out_dir.join("CA_private.pem"),
    )
    .unwrap();
    assert_eq!(loaded.ca.subject(), "CN=ACME Factory CA 2028");

    // Bad input is named.
    let out = pep_server(
        None,
        &[
            "ca".as_ref(),
            "init".as_ref(),
            "--out".as_ref(),
            dir.path().join("x").as_os_str(),
            "--name".as_ref(),
            "".as_ref(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("name"), "{}", text(&out));
}

#[test]
fn generate_pkcs11_refuses_a_taken_label_and_a_wrong_pin() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_with_ca(dir.path());
    let base = |label: &str, out: &Path| -> Vec<std::ffi::OsString> {
        [
            "ca",
            "generate-pkcs11",
            "--module",
            MODULE,
            "--token",
            "pep-factory",
            "--label",
            label,
            "--name",
            "Second",
            "--csr",
            "--out",
        ]
        .iter()
        .map(|s| s.into())
        .chain([out.as_os_str().to_owned()])
        .collect()
    };
    let run = |args: Vec<std::ffi::OsString>, pin: &str| {
        Command::new(SERVER)
            .args(args)
            .envs(token.env())
            .env("PEP_PKCS11_PIN", pin)
            .output()
            .unwrap()
    };
    let out = run(base("ca-key", &dir.path().join("again")), PIN);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("already holds an object"),
        "{}",
        text(&out)
    );
    let out = run(base("ca-key-2", &dir.path().join("wrong")), "9999-wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("refused the PIN"), "{}", text(&out));
    assert!(!text(&out).contains("9999-wrong"));
    // With --csr: a request signed in the token.
    let out = run(base("ca-key-2", &dir.path().join("csr")), PIN);
    assert!(out.status.success(), "{}", text(&out));
    let csr = openssl(
        &dir.path().join("csr"),
        &["req", "-in", "CA_csr.pem", "-noout", "-verify", "-subject"],
    );
    assert!(
        csr.contains("CN=Second") || csr.contains("CN = Second"),
        "{csr}"
    );
}

/// `by_device`: the gateway makes its key and CSR; only the CA signature happens in the token.
#[tokio::test]
async fn by_device_provisioning_signs_the_csr_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_with_ca(dir.path());
    let config = write_config(dir.path(), "ca-key");
    let text = std::fs::read_to_string(&config).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("pep.toml"),
        format!("key_mode = \"by_device\"\n{text}"),
    )
    .unwrap();
    let conf = token.conf();
    let server = Server::start_in_with_env(work, &[("SOFTHSM2_CONF", conf.as_os_str())]).await;
    for i in 0..2 {
        let serial = format!("GW-CSR-{i}");
        let (gw, mut handle) = gateway(Sessions::One, &[]).await;
        let (status, id) =
            tokio::time::timeout(Duration::from_secs(30), server.identity(&serial, gw))
                .await
                .expect("a provisioning hung");
        assert_eq!(status, 200, "{id}");
        let report = handle.next_report().await.unwrap();
        let cert = &report.storage.certificates[names::BOOTSTRAP_DEVICE_CERT][0];
        let der = format!("{serial}.der");
        let pem = format!("{serial}.pem");
        std::fs::write(dir.path().join(&der), cert).unwrap();
        openssl(
            dir.path(),
            &["x509", "-inform", "DER", "-in", &der, "-out", &pem],
        );
        let ok = openssl(dir.path(), &["verify", "-CAfile", "CA_cert.pem", &pem]);
        assert!(ok.contains(": OK"), "{ok}");
    }
    let (status, _) = server.terminate().await;
    assert!(status.success());
}
