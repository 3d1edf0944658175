//! The `issue_identity` example runs: with the repository's test CA it issues an identity, signs a
//! CSR and prints both enrollment IDs; with a bad CA it fails with the loader's message.

use std::process::{Command, Output};

fn run_example(args: &[&str]) -> Output {
    Command::new(workspace_bins::example(
        "pep-ca",
        "issue_identity",
        &["pep-ca"],
    ))
    .args(args)
    .output()
    .expect("run the example")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The enrollment ID after `marker` on one line of `out`.
fn enrollment_id_after<'a>(out: &'a str, marker: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{out}"));
    // "A-" and the certificate's SHA-256 as colon-separated upper-case hex.
    let id = line.rsplit(' ').next().unwrap();
    let hex = id.strip_prefix("A-").unwrap_or("");
    assert!(
        hex.len() == 95
            && hex
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit())),
        "not an enrollment ID: {id:?}"
    );
    id
}

#[test]
fn issue_identity_with_the_test_ca() {
    let out = run_example(&[]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("issued GW-EXAMPLE-1 (serial "), "{said}");
    let issued = enrollment_id_after(&said, "enrollment ID: ");
    let signed = enrollment_id_after(&said, "signed CSR of GW-EXAMPLE-1: enrollment ID ");
    // Two certificates, two keys: two different enrollment IDs.
    assert_ne!(issued, signed);
}

#[test]
fn issue_identity_reports_a_bad_ca_and_a_bad_serial() {
    let repo = workspace_bins::repo_root();
    let cert = repo.join("fixtures/ca/CA_cert.pem");
    let key = repo.join("fixtures/ca/CA_private.pem");
    // The certificate given as the key.
    let out = run_example(&[cert.to_str().unwrap(), cert.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("issue_identity: "), "{err}");
    assert!(err.contains("CA_cert.pem"), "{err}");

    // An empty serial is not an endpoint name.
    let out = run_example(&[cert.to_str().unwrap(), key.to_str().unwrap(), ""]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).starts_with("issue_identity: "));
}
