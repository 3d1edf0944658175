//! `[cloud]`: claiming every deployed gateway's enrollment ID in the device-management cloud
//! (issue #18). The schema, its defaults, the API key file and the section's checks.
//!
//! The API key is read from `api_key_file` only (never written in the configuration), checked
//! like the CA key (group/others must not read it), kept in [`ApiKey`] (zeroized, `Debug`
//! redacted) and only ever put into an `Authorization` header.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::secret_file::{self, SecretReadError};
use super::{CheckReport, path_for_people};

/// The cloud's own limit on one bulk-upload file.
pub const MAX_BULK_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Default seconds between two bulk uploads.
pub const DEFAULT_BULK_INTERVAL_S: u64 = 60;
/// Default requests to the cloud at once (`mode = "each"`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Default longest pause between two attempts of a failing claim, seconds.
pub const DEFAULT_BACKOFF_MAX_S: u64 = 300;

/// How deployed gateways are claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudMode {
    /// Not at all: the operator uploads the enrollment-ID CSV by hand (the default).
    #[default]
    Off,
    /// One `POST /v3/device-enrollments` per ID, soon after its deployment.
    Each,
    /// The bulk-upload endpoint, one CSV file (under 10 MB) every `bulk_interval_s`.
    Bulk,
}

impl CloudMode {
    /// The `mode` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudMode::Off => "off",
            CloudMode::Each => "each",
            CloudMode::Bulk => "bulk",
        }
    }
}

/// `[cloud]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// The cloud's API base URL. Default: the identities' `apiAddress` (`defaults.api_address`).
    pub api_url: Option<String>,
    /// A file whose first line is the API key (mode 0600). Required unless `mode = "off"`.
    pub api_key_file: Option<PathBuf>,
    /// `off` (default), `each` or `bulk`.
    pub mode: CloudMode,
    /// Seconds between two bulk uploads (`mode = "bulk"`).
    pub bulk_interval_s: u64,
    /// Requests to the cloud at once (`mode = "each"`).
    pub max_in_flight: usize,
    /// The largest bulk CSV file pep uploads, bytes (at most the cloud's 10 MB; more IDs go into
    /// further files).
    pub bulk_max_file_bytes: usize,
    /// The longest pause between two attempts of a claim that fails with a 5xx or a network error
    /// (the pause doubles from 1 s, with jitter), seconds.
    pub backoff_max_s: u64,
    /// Refused: an API key written in the configuration. Present only to say so clearly (the key
    /// itself is not kept).
    #[serde(skip_serializing)]
    pub api_key: Option<InlineKey>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            api_url: None,
            api_key_file: None,
            mode: CloudMode::Off,
            bulk_interval_s: DEFAULT_BULK_INTERVAL_S,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            bulk_max_file_bytes: MAX_BULK_FILE_BYTES,
            backoff_max_s: DEFAULT_BACKOFF_MAX_S,
            api_key: None,
        }
    }
}

/// An `api_key = …` in the configuration: whatever was written is dropped at once, so the key
/// is neither kept nor printed; [`crate::config::Config::check`] refuses the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineKey;

impl fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InlineKey(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for InlineKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| InlineKey)
    }
}

/// The cloud API key: zeroized when dropped, never printed.
#[derive(Clone)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// The key, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why the API key file cannot be used. Never holds the key.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// `api_key_file` is not set.
    #[error("is not set: cloud claims need an API key file (mode 0600) unless mode = \"off\"")]
    Missing,
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] SecretReadError),
    /// The file is not UTF-8 or its first line is empty.
    #[error("{} holds no API key (its first line is empty or not UTF-8 text)", path_for_people(.path))]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read the file.
    #[error(
        "{} is accessible by group or others (mode {mode:o}); chmod 600 it",
        path_for_people(.path)
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl CloudConfig {
    /// The base URL claims go to: `api_url`, else `default_api_address`, without a trailing `/`.
    pub fn api_base(&self, default_api_address: &str) -> String {
        self.api_url
            .as_deref()
            .unwrap_or(default_api_address)
            .trim_end_matches('/')
            .to_owned()
    }

    /// How long the bulk sender waits between uploads.
    pub fn bulk_interval(&self) -> Duration {
        Duration::from_secs(self.bulk_interval_s)
    }

    /// The longest backoff pause.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_secs(self.backoff_max_s)
    }

    /// Reads the API key: the first line of `api_key_file`, which group and others must not be
    /// able to read.
    pub fn load_api_key(&self) -> Result<ApiKey, ApiKeyError> {
        let path = self.api_key_file.as_deref().ok_or(ApiKeyError::Missing)?;
        let bytes = secret_file::read(path)?;
        check_permissions(path)?;
        let empty = || ApiKeyError::Empty {
            path: path.to_owned(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| empty())?;
        let key = Zeroizing::new(text.lines().next().unwrap_or_default().trim().to_owned());
        if key.is_empty() {
            return Err(empty());
        }
        Ok(ApiKey(key))
    }

    /// The section's checks (every issue names its `cloud.` field).
    pub(super) fn check(&self, default_api_address: &str, r: &mut CheckReport) {
        if self.api_key.is_some() {
            r.error(
                "cloud.api_key",
                "an API key is never written in the configuration: put it in a file readable by \
                 the server only (chmod 600) and name that file with cloud.api_key_file",
            );
        }
        if self.mode == CloudMode::Off {
            return;
        }
        let base = self.api_base(default_api_address);
        let field = if self.api_url.is_some() {
            "cloud.api_url"
        } else {
            "defaults.api_address"
        };
        match url::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {
                if u.scheme() == "http" {
                    r.warn(
                        field,
                        format!(
                            "`{base}` is plain http: the API key travels unencrypted (test \
                             stand-ins only)"
                        ),
                    );
                }
            }
            Ok(_) => r.error(
                field,
                format!("`{base}` is not an http:// or https:// URL with a host"),
            ),
            Err(e) => r.error(field, format!("`{base}` is not a URL: {e}")),
        }
        if let Err(e) = self.load_api_key() {
            r.error("cloud.api_key_file", e.to_string());
        }
        if self.max_in_flight == 0 {
            r.error("cloud.max_in_flight", "must be at least 1");
        } else if self.max_in_flight > 1024 {
            r.error("cloud.max_in_flight", "must be at most 1024");
        }
        if self.mode == CloudMode::Bulk && self.bulk_interval_s == 0 {
            r.error("cloud.bulk_interval_s", "must be at least 1");
        }
        if self.bulk_max_file_bytes < 1024 || self.bulk_max_file_bytes > MAX_BULK_FILE_BYTES {
            r.error(
                "cloud.bulk_max_file_bytes",
                format!("must be in 1024..={MAX_BULK_FILE_BYTES} (the cloud takes at most 10 MB)"),
            );
        }
        if self.backoff_max_s == 0 {
            r.error("cloud.backoff_max_s", "must be at least 1");
        }
    }
}

fn check_permissions(path: &Path) -> Result<(), ApiKeyError> {
    // The key was just read: a file whose mode cannot be read now is left to the next start.
    match secret_file::loose_mode(path) {
        Ok(Some(mode)) => Err(ApiKeyError::Permissions {
            path: path.to_owned(),
            mode,
        }),
        Ok(None) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "ak_secret_value_123\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = CloudConfig {
            api_key_file: Some(path.clone()),
            mode: CloudMode::Each,
            ..CloudConfig::default()
        };
        let key = config.load_api_key().unwrap();
        assert_eq!(key.expose(), "ak_secret_value_123");
        assert!(!format!("{key:?}").contains("secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = config.load_api_key().unwrap_err().to_string();
            assert!(e.contains("chmod 600") && !e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn an_inline_key_is_refused_and_not_kept() {
        let config: CloudConfig =
            toml::from_str("mode = \"each\"\napi_key = \"ak_inline_secret\"").unwrap();
        assert!(!format!("{config:?}").contains("ak_inline_secret"));
        let mut r = CheckReport::default();
        config.check("https://api.example.com", &mut r);
        let text = r.to_string();
        assert!(text.contains("cloud.api_key:"), "{text}");
        assert!(!text.contains("ak_inline_secret"));
    }
}
