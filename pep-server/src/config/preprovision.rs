//! `[orders]` and the pre-provisioning part of `[hooks]` (issue #17): its defaults, the secret,
//! the URL rule and the checks. The fields are `HooksConfig`'s (`config/hooks.rs`), beside the
//! event webhooks (`[[hooks.events]]`): both share the `[hooks]` table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::hooks::HooksConfig;
use super::secret_file::{self, SecretReadError};
use super::{CheckReport, Config, path_for_people};

/// Default time the pre-provisioning hook may take to answer, ms.
pub const DEFAULT_PRE_PROVISION_TIMEOUT_MS: u64 = 2_000;
/// Shortest accepted HMAC secret, bytes (HMAC-SHA256 gains nothing above 64, loses below 16).
pub const MIN_HOOK_SECRET_LEN: usize = 16;

/// `[orders]`: work orders of expected serials.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersConfig {
    /// A serial must belong to an open work order (403 otherwise). Default false: any serial
    /// that passes the endpoint-name rule may be provisioned, as before orders existed.
    pub required: bool,
}

/// What the server does when the pre-provisioning hook cannot give an answer (timeout, no
/// connection, a non-2xx status, a body that is not the expected JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Refuse the provisioning (503, retryable): nothing is issued without the hook's yes.
    #[default]
    FailClosed,
    /// Provision as if the hook had allowed it (logged and audited as such).
    FailOpen,
}

impl FailurePolicy {
    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail_closed",
            FailurePolicy::FailOpen => "fail_open",
        }
    }
}

/// Why the hook secret cannot be used. Never holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum HookSecretError {
    /// No `secret_file` although a hook is set.
    #[error("is required when hooks.pre_provision is set (a file holding the shared HMAC secret)")]
    Missing,
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] SecretReadError),
    /// Group or others may read it.
    #[error("{} is readable by group or others (mode {mode:04o}): chmod 600 it", .path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Shorter than [`MIN_HOOK_SECRET_LEN`].
    #[error(
        "the secret in {} has {len} bytes; at least {MIN_HOOK_SECRET_LEN} are needed (make one \
         with `openssl rand -hex 32`)",
        .path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// The secret's length.
        len: usize,
    },
}

impl HooksConfig {
    /// The shared secret: the first line of `secret_file`, without its line end. The file must
    /// not be readable by group or others.
    pub fn read_secret(&self) -> Result<Zeroizing<Vec<u8>>, HookSecretError> {
        let path = self.secret_file.as_ref().ok_or(HookSecretError::Missing)?;
        if let Some(mode) = secret_file::loose_mode(path)? {
            return Err(HookSecretError::Permissions {
                path: path.clone(),
                mode,
            });
        }
        let bytes = secret_file::read(path)?;
        let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() < MIN_HOOK_SECRET_LEN {
            return Err(HookSecretError::TooShort {
                path: path.clone(),
                len: line.len(),
            });
        }
        Ok(Zeroizing::new(line.to_vec()))
    }

    /// The hook's timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

/// An optional URL as its text (the `url` crate's serde feature is not enabled).
pub(super) mod optional_url {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::config) fn serialize<S: Serializer>(
        u: &Option<url::Url>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match u {
            Some(u) => s.serialize_some(u.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<url::Url>, D::Error> {
        let text = String::deserialize(d)?;
        url::Url::parse(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a URL: {e}")))
    }
}

/// Why a hook URL is refused: `https://`, or `http://` to a loopback address (the body names
/// serials and requesters, and the signature does not hide it).
pub fn check_hook_url(url: &url::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            _ => Err(format!(
                "`{url}`: http:// is accepted only to a loopback address (127.0.0.1, [::1]); use \
                 https:// for another host"
            )),
        },
        other => Err(format!(
            "`{url}`: scheme `{other}` is not https:// (or http:// to loopback)"
        )),
    }
}

impl Config {
    /// `[hooks]` (the pre-provisioning part): the URL's scheme, the secret file, the timeout and
    /// the CA file.
    pub(super) fn check_hooks(&self, r: &mut CheckReport) {
        let h = &self.hooks;
        let Some(url) = &h.pre_provision else {
            return;
        };
        if let Err(e) = check_hook_url(url) {
            r.error("hooks.pre_provision", e);
        }
        if let Err(e) = h.read_secret() {
            r.error("hooks.secret_file", e.to_string());
        }
        if h.timeout_ms == 0 {
            r.error("hooks.timeout_ms", "must be greater than 0");
        } else if h.timeout_ms >= self.request_deadline_ms {
            r.error(
                "hooks.timeout_ms",
                format!(
                    "must be shorter than request_deadline_ms ({} ms)",
                    self.request_deadline_ms
                ),
            );
        }
        if let Some(ca) = &h.ca_file
            && let Err(e) = read_ca_file(ca)
        {
            r.error("hooks.ca_file", e);
        }
        if h.failure_policy == FailurePolicy::FailOpen {
            r.warn(
                "hooks.failure_policy",
                "is fail_open: when the hook cannot answer, gateways are provisioned without its approval",
            );
        }
    }
}

/// The certificates of a PEM CA file, as reqwest takes them.
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path_for_people(path)))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_urls() {
        for ok in [
            "https://mes.local/pep/approve",
            "http://127.0.0.1:8080/x",
            "http://[::1]:8080/x",
        ] {
            assert!(check_hook_url(&ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("http://mes.local/x", "loopback"),
            ("http://10.0.0.1/x", "loopback"),
            ("ftp://127.0.0.1/x", "scheme `ftp`"),
        ] {
            let e = check_hook_url(&bad.parse().unwrap()).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_are_permission_checked_and_long_enough() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let mut h = HooksConfig {
            secret_file: Some(path.clone()),
            ..HooksConfig::default()
        };
        assert!(matches!(h.read_secret(), Err(HookSecretError::Read(_))));
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = h.read_secret().unwrap_err();
        assert!(
            matches!(e, HookSecretError::Permissions { mode: 0o644, .. }),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&h.read_secret().unwrap()[..], b"0123456789abcdef0123");
        std::fs::write(&path, "short\n").unwrap();
        let e = h.read_secret().unwrap_err().to_string();
        assert!(e.contains("5 bytes") && !e.contains("short"), "{e}");
        h.secret_file = None;
        assert!(matches!(h.read_secret(), Err(HookSecretError::Missing)));
    }
}
