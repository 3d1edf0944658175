//! The CA key in a PKCS#11 token (SoftHSM2): issuing and CSR signing through the token, with the
//! certificates checked by `openssl verify`; the key generated non-extractable; a wrong PIN, a
//! missing key and a key that is not the certificate's named at load; the token going away and
//! coming back.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised, and a test may not set its own
//! environment (no `unsafe`): each test makes its token, then runs itself again as a child process
//! with the token's environment, and the child does the PKCS#11 part.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::openssl;
use pep_ca::pkcs11::{Pkcs11Config, Pkcs11Uri};
use pep_ca::setup::{CaRequest, new_token_ca};
use pep_ca::{CaError, CertProfile, EndpointName, FactoryCa};
use workspace_bins::softhsm::{MODULE, PIN, SoftToken};
use zeroize::Zeroizing;

/// Set in the child: the directory where the parent made the token.
const CHILD_DIR: &str = "PEP_PKCS11_TEST_DIR";

/// In the parent: makes a token labelled `pep-factory`, runs `test` again in a child with it, and
/// returns after the child passed. In the child: returns the directory.
fn in_child_with_token(test: &str, prepare: impl FnOnce(&SoftToken, &Path)) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        return Some(PathBuf::from(dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let token = SoftToken::new(dir.path(), "pep-factory");
    prepare(&token, dir.path());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            &in_this_module(test),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .envs(token.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    None
}

/// The libtest name of this file's test `test` (`pkcs11::test`: the integration tests are modules
/// of one binary, tests/suite.rs).
fn in_this_module(test: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{test}")
}

fn config(object: &str, pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: MODULE.into(),
        uri: format!("pkcs11:token=pep-factory;object={object}")
            .parse()
            .unwrap(),
        pin: Zeroizing::new(pin.to_owned()),
        sessions: 2,
    }
}

/// Makes the CA in the token (`ca-key`) and writes its certificate to `dir/ca.pem`.
fn make_ca(dir: &Path) -> PathBuf {
    let made = new_token_ca(
        Path::new(MODULE),
        "pep-factory",
        "ca-key",
        PIN,
        "Test HSM Factory CA",
        CaRequest::SelfSigned { days: 3650 },
    )
    .unwrap();
    assert_eq!(made.uri, "pkcs11:token=pep-factory;object=ca-key");
    let path = dir.join("ca.pem");
    std::fs::write(&path, &made.output_pem).unwrap();
    path
}

#[test]
fn issue_and_sign_csr_through_the_token() {
    let Some(dir) = in_child_with_token("issue_and_sign_csr_through_the_token", |_, _| {}) else {
        // The parent checks what the child left: the key never leaves the token.
        return;
    };
    let ca_path = make_ca(&dir);
    let loaded = FactoryCa::load_pkcs11(&ca_path, config("ca-key", PIN)).unwrap();
    let ca = loaded.ca;
    assert!(ca.key_in_token());
    assert!(ca.is_available());
    assert!(
        ca.key_location().contains("object \"ca-key\""),
        "{}",
        ca.key_location()
    );
    assert_eq!(ca.subject(), "CN=Test HSM Factory CA");

    // The CA certificate itself: self-signed, CA:TRUE pathlen 0, keyCertSign + cRLSign.
    let text = openssl(&dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("Subject Key Identifier"), "{text}");
    openssl(&dir, &["verify", "-CAfile", "ca.pem", "ca.pem"]);

    let profile = CertProfile::default();
    let endpoint = EndpointName::new("GW-HSM-0001").unwrap();
    let issued = ca.issue(&endpoint, &profile).unwrap();
    std::fs::write(dir.join("issued.der"), &issued.certificate.der).unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "issued.der",
            "-out",
            "issued.pem",
        ],
    );
    let ok = openssl(&dir, &["verify", "-CAfile", "ca.pem", "issued.pem"]);
    assert!(ok.contains("issued.pem: OK"), "{ok}");

    // by_device: a CSR made by openssl, signed in the token.
    openssl(
        &dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "dev.key",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "dev.key",
            "-subj",
            "/CN=GW-HSM-0002",
            "-outform",
            "DER",
            "-out",
            "dev.csr",
        ],
    );
    let csr = std::fs::read(dir.join("dev.csr")).unwrap();
    let endpoint = EndpointName::new("GW-HSM-0002").unwrap();
    let signed = ca.sign_csr(&csr, &endpoint, &profile).unwrap();
    std::fs::write(dir.join("signed.der"), &signed.der).unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-out",
            "signed.pem",
        ],
    );
    let ok = openssl(&dir, &["verify", "-CAfile", "ca.pem", "signed.pem"]);
    assert!(ok.contains("signed.pem: OK"), "{ok}");

    // Many signatures at once through the pool of two sessions.
    std::thread::scope(|s| {
        for t in 0..4 {
            let ca = &ca;
            let profile = &profile;
            s.spawn(move || {
                for i in 0..10 {
                    let name = EndpointName::new(&format!("GW-T{t}-{i}")).unwrap();
                    ca.issue(&name, profile).unwrap();
                }
            });
        }
    });
}

#[test]
fn generated_key_is_sensitive_and_never_extractable() {
    const TEST: &str = "generated_key_is_sensitive_and_never_extractable";
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        make_ca(Path::new(&dir));
        check_attributes_with_cryptoki();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = SoftToken::new(dir.path(), "pep-factory");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            &in_this_module(TEST),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .envs(token.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child generated `ca-key`; ask the token with OpenSC, not pep.
    let listing = token.private_key_listing("ca-key");
    assert!(listing.contains("EC"), "{listing}");
    let access = listing
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_default();
    assert!(access.contains("sensitive"), "{listing}");
    assert!(access.contains("never extractable"), "{listing}");
}

/// In the child: the key's attributes read through the module itself, and its value refused.
fn check_attributes_with_cryptoki() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == "pep-factory")
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ca-key".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attributes = session
        .get_attributes(
            keys[0],
            &[AttributeType::Extractable, AttributeType::Sensitive],
        )
        .unwrap();
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    // The private value is not given out (the module leaves a sensitive attribute out).
    let value = session
        .get_attributes(keys[0], &[AttributeType::Value])
        .unwrap_or_default();
    assert!(
        !value.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the private value was readable"
    );
}

#[test]
fn wrong_pin_missing_key_and_other_key_are_named() {
    let Some(dir) = in_child_with_token(
        "wrong_pin_missing_key_and_other_key_are_named",
        |token, _| {
            // A second key, made by another tool: not the CA certificate's.
            token.keypairgen("other-key");
        },
    ) else {
        return;
    };
    let ca_path = make_ca(&dir);
    let e = FactoryCa::load_pkcs11(&ca_path, config("ca-key", "0000-wrong")).unwrap_err();
    assert!(matches!(e, CaError::PinIncorrect { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("refused the PIN") && !text.contains("0000-wrong"),
        "{text}"
    );

    let e = FactoryCa::load_pkcs11(&ca_path, config("no-such-key", PIN)).unwrap_err();
    assert!(matches!(e, CaError::KeyNotFound { .. }), "{e}");
    assert!(e.to_string().contains("object \"no-such-key\""), "{e}");

    let e = FactoryCa::load_pkcs11(&ca_path, config("other-key", PIN)).unwrap_err();
    assert!(matches!(e, CaError::TokenKeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("ca.pem"), "{e}");

    let mut other_token = config("ca-key", PIN);
    other_token.uri = "pkcs11:token=elsewhere;object=ca-key"
        .parse::<Pkcs11Uri>()
        .unwrap();
    let e = FactoryCa::load_pkcs11(&ca_path, other_token).unwrap_err();
    assert!(matches!(e, CaError::TokenNotFound { .. }), "{e}");
    assert!(e.to_string().contains("\"pep-factory\""), "{e}");

    let mut bad_module = config("ca-key", PIN);
    bad_module.module = dir.join("no-such-module.so");
    let e = FactoryCa::load_pkcs11(&ca_path, bad_module).unwrap_err();
    assert!(matches!(e, CaError::Pkcs11Module { .. }), "{e}");
}

#[test]
fn token_going_away_and_coming_back() {
    let Some(dir) = in_child_with_token("token_going_away_and_coming_back", |_, _| {}) else {
        return;
    };
    let ca_path = make_ca(&dir);
    let ca = FactoryCa::load_pkcs11(&ca_path, config("ca-key", PIN))
        .unwrap()
        .ca;
    let profile = CertProfile::default();
    let endpoint = EndpointName::new("GW-AWAY-1").unwrap();
    ca.issue(&endpoint, &profile).unwrap();

    // The token disappears: its directory is moved away.
    let tokens = dir.join("softhsm-pep-factory/tokens");
    let away = dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    let mut failures = 0;
    // The first failure is noticed by a signature; the next attempts re-open (once a second)
    // and fail too, each at once.
    for _ in 0..3 {
        if let Err(e) = ca.issue(&endpoint, &profile) {
            assert!(e.is_unavailable(), "{e}");
            assert!(e.to_string().contains("unavailable"), "{e}");
            failures += 1;
        }
        std::thread::sleep(pep_ca::pkcs11::REOPEN_INTERVAL);
    }
    assert!(failures > 0, "signing went on without the token");
    assert!(!ca.is_available());

    // It comes back: signing resumes without reloading the CA.
    std::fs::rename(&away, &tokens).unwrap();
    std::thread::sleep(pep_ca::pkcs11::REOPEN_INTERVAL);
    let issued = ca.issue(&endpoint, &profile).unwrap();
    assert!(ca.is_available());
    std::fs::write(dir.join("back.der"), &issued.certificate.der).unwrap();
    openssl(
        &dir,
        &[
            "x509", "-inform", "DER", "-in", "back.der", "-out", "back.pem",
        ],
    );
    openssl(&dir, &["verify", "-CAfile", "ca.pem", "back.pem"]);
}
