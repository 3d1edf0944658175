//! The checks of secrets at rest (issue #14 §6): token strength, hashed tokens, who can read the
//! files holding secrets, and the repository's well-known demo token and test CA, which must never
//! reach a server listening beyond loopback.
//!
//! Called by [`super::Config::check`]; kept apart so the rules and their reasons are in one place.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::CheckReport;
use super::{Config, MIN_TOKEN_LEN, TokenConfig};

/// The README's demo token: public, so accepted only on a loopback listen address.
pub const DEMO_TOKEN: &str = "pep-demo-token";

/// SHA-256 of the DER of the repository's test CA certificate (`fixtures/ca/CA_cert.pem`): its
/// private key is in the repository, so a server using it beyond loopback would mint identities
/// anyone can forge.
pub const TEST_CA_SHA256: &str = "3d95caedc47f4b99d33f60628a3aac3058b26e704e7f4e17ea49d485c76e6f9a";

/// Minimum estimated entropy of a token, in bits.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// How to make a good token, said in every token-strength message.
const HOW_TO_MAKE_ONE: &str = "make one with `openssl rand -hex 32`";

/// The SHA-256 of a token's secret: what the server keeps and compares (plaintext tokens are
/// hashed at load, `token_sha256` is taken as is).
pub fn token_digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The digest a token entry stands for: `token_sha256` decoded, or the hash of `token`. `None`
/// when neither is usable (the check reports why).
pub(crate) fn entry_digest(t: &TokenConfig) -> Option<[u8; 32]> {
    match (&t.token, &t.token_sha256) {
        (Some(token), None) => Some(token_digest(token.as_bytes())),
        (None, Some(hex_digest)) => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut out).ok()?;
            Some(out)
        }
        _ => None,
    }
}

/// An estimate of a token's entropy in bits: its length times the bits per character of the
/// smallest usual alphabet it fits (hex, digits, letters, letters and digits, printable ASCII).
/// Generous for random strings and honest for the weak ones people type (`aaaaaaaaaaaa`: 56 bits;
/// 32 hex characters: 128).
pub fn estimated_bits(token: &str) -> f64 {
    let len = token.chars().count() as f64;
    let distinct = token
        .chars()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let alphabet: f64 = if token.chars().all(|c| c.is_ascii_hexdigit()) {
        // Hex in one case (as `openssl rand -hex` prints); mixed case is still 16 symbols.
        16.0
    } else if token.chars().all(|c| c.is_ascii_digit()) {
        10.0
    } else {
        let lower = token.chars().any(|c| c.is_ascii_lowercase());
        let upper = token.chars().any(|c| c.is_ascii_uppercase());
        let digit = token.chars().any(|c| c.is_ascii_digit());
        let other = token.chars().any(|c| !c.is_ascii_alphanumeric());
        let mut n = 0.0;
        if lower {
            n += 26.0;
        }
        if upper {
            n += 26.0;
        }
        if digit {
            n += 10.0;
        }
        if other {
            n += 33.0;
        }
        n
    };
    // A string of few distinct characters is a pattern, not a random draw from the alphabet.
    let per_char = alphabet.min((distinct.max(1) as f64) * 2.0).log2();
    len * per_char
}

/// The mode bits of `path` that give group or others access, if any (Unix only).
pub fn shared_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then_some(mode & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl Config {
    /// The token rules: exactly one of `token`/`token_sha256`, strength, uniqueness, the demo token
    /// on loopback only, and files holding plaintext tokens readable by group or others.
    pub(super) fn check_token_secrets(&self, tokens: &[TokenConfig], r: &mut CheckReport) {
        let loopback = self.listen.ip().is_loopback();
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in tokens.iter().enumerate() {
            let field = format!("tokens[{i}].token");
            match (&t.token, &t.token_sha256) {
                (Some(_), Some(_)) => {
                    r.error(&field, "and token_sha256 are both set: give one of them");
                    continue;
                }
                (None, None) => {
                    r.error(
                        &field,
                        "is missing: give `token` or `token_sha256` (printf %s \"$t\" | sha256sum)",
                    );
                    continue;
                }
                (None, Some(digest)) => {
                    let digest = digest.trim();
                    if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                        r.error(
                            &format!("tokens[{i}].token_sha256"),
                            "is not 64 hex characters (printf %s \"$t\" | sha256sum)",
                        );
                    }
                }
                (Some(token), None) => check_plaintext(&field, token, loopback, r),
            }
            if let Some(d) = entry_digest(t)
                && !seen.insert(d)
            {
                r.error(&field, "is the same token as an earlier entry");
            }
        }
        // Plaintext tokens in a file others can read are as good as published.
        let plaintext_inline = self.tokens.iter().any(|t| t.token.is_some());
        if plaintext_inline
            && let Some(source) = &self.source
            && let Some(mode) = shared_mode(source)
        {
            r.warn(
                "tokens",
                format!(
                    "plaintext tokens in {} which group or others can read (mode {mode:04o}): \
                     chmod 600 it, move them to token_file, or use token_sha256",
                    source.display()
                ),
            );
        }
        if let Some(path) = &self.token_file
            && let Some(mode) = shared_mode(path)
        {
            r.warn(
                "token_file",
                format!(
                    "{} is readable by group or others (mode {mode:04o}): chmod 600 it",
                    path.display()
                ),
            );
        }
    }

    /// The CA key's permissions (an error unless `ca.allow_insecure_key_permissions`), and the
    /// repository's test CA beyond loopback.
    pub(super) fn check_ca_secrets(
        &self,
        ca: Option<&pep_ca::FactoryCa>,
        warnings: &[pep_ca::CaWarning],
        r: &mut CheckReport,
    ) {
        for w in warnings {
            match w {
                pep_ca::CaWarning::KeyFileAccessible { .. }
                    if !self.ca.allow_insecure_key_permissions =>
                {
                    r.error(
                        "ca.key",
                        format!(
                            "{w}; a CA key others can read lets them mint gateway identities \
                             (set ca.allow_insecure_key_permissions = true only for a test CA)"
                        ),
                    );
                }
                _ => r.warn("ca", w.to_string()),
            }
        }
        if let Some(ca) = ca
            && hex::encode(Sha256::digest(ca.certificate_der())) == TEST_CA_SHA256
            && !self.listen.ip().is_loopback()
        {
            r.error(
                "ca.cert",
                format!(
                    "is the repository's TEST CA (fixtures/ca), whose private key is public: \
                     refused on listen = {} (beyond loopback); use your factory CA",
                    self.listen
                ),
            );
        }
    }
}

/// The rules of one plaintext token.
fn check_plaintext(field: &str, token: &str, loopback: bool, r: &mut CheckReport) {
    if token.trim().is_empty() {
        r.error(field, "is empty");
        return;
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        r.error(field, "contains whitespace or control characters");
        return;
    }
    if token == DEMO_TOKEN {
        if loopback {
            r.warn(
                field,
                "is the README's well-known demo token: fine on loopback, refused on any other \
                 listen address",
            );
        } else {
            r.error(
                field,
                format!(
                    "is the README's well-known demo token, refused beyond loopback; {HOW_TO_MAKE_ONE}"
                ),
            );
        }
        return;
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        r.error(
            field,
            format!("is shorter than {MIN_TOKEN_LEN} characters; {HOW_TO_MAKE_ONE}"),
        );
        return;
    }
    let bits = estimated_bits(token);
    if bits < MIN_TOKEN_BITS {
        r.error(
            field,
            format!(
                "is too guessable (about {bits:.0} bits, at least {MIN_TOKEN_BITS:.0} needed, e.g. 32 \
                 random hex characters); {HOW_TO_MAKE_ONE}"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_estimates() {
        assert!(estimated_bits("aaaaaaaaaaaa") < 20.0);
        assert!(
            estimated_bits("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                < 128.0
        );
        assert!(estimated_bits("0123456789abcdef0123456789abcdef") >= 128.0);
        assert!(estimated_bits("0123456789abcdef0123456789abcde") < 128.0);
        assert!(estimated_bits("test-token-both-0123456789") >= 128.0);
        assert!(estimated_bits(DEMO_TOKEN) < 128.0);
    }

    #[test]
    fn digests_match_sha256sum() {
        // printf %s secret | sha256sum
        assert_eq!(
            hex::encode(token_digest(b"secret")),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
