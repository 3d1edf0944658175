//! What operators install besides the binary: the systemd unit passes `systemd-analyze verify`
//! (and its `security` exposure stays low), and `pep-server completions`/`pep-server man` produce
//! scripts and pages that the shell and groff accept. The real tools run; none is optional (CI
//! installs the `systemd` package).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pep-server");

/// The subcommands every generated file must name.
const SUBCOMMANDS: [&str; 8] = [
    "serve",
    "check-config",
    "migrate-store",
    "audit",
    "cloud",
    "ca",
    "completions",
    "man",
];

/// The subcommands of `ca`, which get their own pages (`pep-server-ca-init.1`).
const CA_SUBCOMMANDS: [&str; 2] = ["init", "generate-pkcs11"];
/// The subcommands of `cloud` (`pep-server-cloud-sync.1`).
const CLOUD_SUBCOMMANDS: [&str; 2] = ["sync", "retry"];

/// The subcommands of `audit` (`pep-server-audit-verify.1`).
const AUDIT_SUBCOMMANDS: [&str; 2] = ["verify", "export"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)")
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The unit as shipped, with `ExecStart`'s binary replaced by the freshly built one (verify checks
/// that it exists and is executable).
fn shipped_unit() -> String {
    let unit = std::fs::read_to_string(repo().join("deploy/pep-server.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/pep-server "));
    unit.replace(
        "ExecStart=/usr/local/bin/pep-server ",
        &format!("ExecStart={BIN} "),
    )
}

/// `systemd-analyze verify` on `unit` saved as `pep-server.service`: `Err` with its output when it
/// fails or has anything to say (it only warns, exit 0, on unknown keys and unparsable values).
fn verify(unit: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pep-server.service");
    std::fs::write(&path, unit).unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {said}", out.status))
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if let Err(e) = verify(&shipped_unit()) {
        panic!("deploy/pep-server.service: systemd-analyze verify: {e}");
    }
}

#[test]
fn systemd_analyze_verify_rejects_broken_units() {
    let unit = shipped_unit();
    assert!(unit.contains("ProtectSystem=strict\n"));
    for (what, broken) in [
        (
            "a misspelled value",
            unit.replace("ProtectSystem=strict\n", "ProtectSystem=stirct\n"),
        ),
        (
            "an unknown directive",
            unit.replace("NoNewPrivileges=yes\n", "NoNewPrivilege=yes\n"),
        ),
        (
            "a missing binary",
            unit.replace(BIN, "/nonexistent/pep-server"),
        ),
        (
            "a directive in the wrong section",
            unit.replace("[Install]\n", "[Install]\nUser=pep\n"),
        ),
    ] {
        assert_ne!(broken, unit, "{what}: the test did not change the unit");
        assert!(
            verify(&broken).is_err(),
            "systemd-analyze verify accepted {what}"
        );
    }
}

#[test]
fn systemd_unit_exposure_stays_low() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pep-server.service");
    std::fs::write(&path, shipped_unit()).unwrap();
    // Exposure 0.0 (locked down) to 10.0 (unprotected); the threshold is ten times it. The unit
    // scores 1.4 today: 2.0 catches a lost group of directives.
    let security = |p: &Path| {
        run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(p))
    };
    let out = security(&path);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Without its hardening block the same check fails.
    let bare: String = shipped_unit()
        .lines()
        .take_while(|l| !l.starts_with("# Hardening"))
        .chain(["", "[Install]", "WantedBy=multi-user.target"])
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, bare).unwrap();
    assert!(!security(&path).status.success());
}

fn pep_server(args: &[&str]) -> Output {
    run(Command::new(BIN).args(args).env_remove("PEP_CONFIG"))
}

#[test]
fn completions_name_every_subcommand_and_parse() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = pep_server(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        // fish spells a long option `-l config`.
        let option = if shell == "fish" {
            "-l config"
        } else {
            "--config"
        };
        assert!(script.contains(option), "{shell}: lacks {option}");
    }
    // bash itself parses the bash script (`-n`: read, do not run).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pep-server.bash");
    std::fs::write(&path, pep_server(&["completions", "bash"]).stdout).unwrap();
    let out = run(Command::new("bash").arg("-n").arg(&path));
    assert!(out.status.success(), "bash -n: {}", text(&out.stderr));
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error() {
    let out = pep_server(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

/// groff formats `page` (UTF-8, `-k`) as plain text with every warning enabled; `Err` with what it said.
fn groff(page: &Path) -> Result<String, String> {
    let out = run(Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(page));
    let err = text(&out.stderr);
    if out.status.success() && err.trim().is_empty() {
        Ok(text(&out.stdout))
    } else {
        Err(err)
    }
}

#[test]
fn man_page_renders_and_names_every_subcommand() {
    let out = pep_server(&["man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let roff = text(&out.stdout);
    assert!(roff.starts_with(".ie") || roff.contains("\n.TH "), "{roff}");
    assert!(roff.contains(".TH pep-server 1"), "{roff}");

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("pep-server.1");
    std::fs::write(&page, &roff).unwrap();
    let rendered = groff(&page).unwrap_or_else(|e| panic!("groff: {e}"));
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS"] {
        assert!(rendered.contains(section), "no {section}:\n{rendered}");
    }
    for sub in SUBCOMMANDS {
        assert!(rendered.contains(sub), "man page lacks {sub}");
    }
    // The check can fail: groff complains about a broken request.
    std::fs::write(&page, format!("{roff}\n.SH\n.bogus-request x\n")).unwrap();
    assert!(groff(&page).is_err());
}

#[test]
fn man_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = pep_server(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = std::iter::once("pep-server.1".to_owned())
        .chain(SUBCOMMANDS.iter().map(|s| format!("pep-server-{s}.1")))
        .chain(
            CA_SUBCOMMANDS
                .iter()
                .map(|s| format!("pep-server-ca-{s}.1")),
        )
        .chain(
            AUDIT_SUBCOMMANDS
                .iter()
                .map(|s| format!("pep-server-audit-{s}.1")),
        )
        .chain(
            CLOUD_SUBCOMMANDS
                .iter()
                .map(|s| format!("pep-server-cloud-{s}.1")),
        )
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    for page in &pages {
        groff(&dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
    }

    // A directory that does not exist: one clear error, exit 1.
    let missing = dir.path().join("no-such-dir");
    let out = pep_server(&["man", "--out", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-dir") && err.contains("not a directory"),
        "{err}"
    );
}
