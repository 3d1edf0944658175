//! The `embed_provisioner` example runs: it provisions one in-process fake-fcc gateway through the
//! library core, and the enrollment ID it prints is the one its SQLite store kept.

use std::process::Command;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The text after `marker` on the line starting with it.
fn after<'a>(out: &'a str, marker: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in:\n{out}"))
}

#[test]
fn embed_provisioner_provisions_and_reads_back() {
    let example = workspace_bins::example(
        "pep-server",
        "embed_provisioner",
        &["pep-server", "pep-ca", "fcc-proto", "fake-fcc"],
    );
    let out = Command::new(example).output().expect("run the example");
    let said = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{said}{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(after(&said, "provisioned "), "GW-EMBED-1", "{said}");
    let issued = after(&said, "enrollment ID: ");
    // "A-" and the certificate's SHA-256 as colon-separated upper-case hex.
    let hex = issued.strip_prefix("A-").unwrap_or("");
    assert!(
        hex.len() == 95
            && hex
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit())),
        "not an enrollment ID: {issued:?}"
    );
    assert_eq!(after(&said, "stored enrollment ID: "), issued, "{said}");
    // The simulated gateway verified the identity like the genuine FCC.
    assert_eq!(after(&said, "gateway answered success: "), "true", "{said}");
}
