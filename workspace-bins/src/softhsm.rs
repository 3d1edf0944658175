//! A fresh SoftHSM2 token in a temporary directory, for the PKCS#11 tests (issue #15).
//!
//! SoftHSM2 finds its tokens through the configuration file named by `SOFTHSM2_CONF`, so each
//! [`SoftToken`] has its own file and token directory: tests do not see each other's tokens. The
//! variable is only ever given to child processes ([`SoftToken::env`]); a test that needs the token
//! in its own process runs itself again as a child with it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "pep-1234";
/// The security officer's PIN of every test token.
pub const SO_PIN: &str = "pep-so-5678";

/// A token labelled [`SoftToken::label`] in its own directory, removed on drop.
#[derive(Debug)]
pub struct SoftToken {
    dir: PathBuf,
    /// The token's label.
    pub label: String,
}

impl SoftToken {
    /// Initialises a token `label` (user PIN [`PIN`]) under a new directory in `parent`.
    ///
    /// # Panics
    /// When `softhsm2-util` is missing or fails.
    pub fn new(parent: &Path, label: &str) -> SoftToken {
        let dir = parent.join(format!("softhsm-{label}"));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("creating the token directory");
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("writing softhsm2.conf");
        let token = SoftToken {
            dir,
            label: label.to_owned(),
        };
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                PIN,
            ])
            .envs(token.env())
            .output()
            .expect("softhsm2-util is installed (Debian package softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        token
    }

    /// The configuration file.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The directory holding the token's files (move it away to make the token disappear).
    pub fn token_dir(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// The environment a process needs to see this token.
    pub fn env(&self) -> [(&'static str, PathBuf); 1] {
        [("SOFTHSM2_CONF", self.conf())]
    }

    /// Runs OpenSC's `pkcs11-tool --module MODULE args...` logged in as the user; returns stdout.
    ///
    /// # Panics
    /// When it fails.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .envs(self.env())
            .output()
            .expect("pkcs11-tool is installed (Debian package opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pkcs11-tool`'s description of the private key labelled `label` (its `Access:` line says
    /// `sensitive` and `never extractable` for a key that cannot leave the token).
    pub fn private_key_listing(&self, label: &str) -> String {
        let listing = self.pkcs11_tool(&["--list-objects", "--type", "privkey", "--label", label]);
        assert!(
            listing.contains("Private Key Object"),
            "no private key {label} in the token: {listing}"
        );
        listing
    }

    /// Generates a P-256 key pair labelled `label` with `pkcs11-tool` (an "imported" key, made
    /// by another tool than pep).
    pub fn keypairgen(&self, label: &str) {
        self.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            label,
            "--usage-sign",
        ]);
    }
}

impl Drop for SoftToken {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
