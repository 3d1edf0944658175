//! `[hooks]`: the event webhooks (`[[hooks.events]]`, issue #17) and how they are delivered
//! (`[hooks.delivery]`). The receivers' checks (URL, events, secret file) are here too: the same
//! function ([`EventHookConfig::receiver`]) makes the running receiver and reports what is wrong,
//! so `check-config` and the daemon agree.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::CheckReport;
use super::path_for_people;
use crate::hooks::{Receiver, Secret};
use crate::store::{EventRoute, EventRoutes, HookEvent};

/// Default time a receiver has to answer one POST, ms.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 10_000;
/// Default age after which an undelivered event is given up (`dead`): 24 h.
pub const DEFAULT_HOOK_MAX_AGE_S: u64 = 24 * 60 * 60;
/// Default first retry delay, ms (doubled per attempt, with jitter).
pub const DEFAULT_HOOK_RETRY_INITIAL_MS: u64 = 1_000;
/// Default longest retry delay, ms.
pub const DEFAULT_HOOK_RETRY_MAX_MS: u64 = 10 * 60 * 1_000;
/// Shortest accepted secret: 16 bytes (128 bits when random).
pub const MIN_HOOK_SECRET_BYTES: usize = 16;

pub use super::preprovision::{
    DEFAULT_PRE_PROVISION_TIMEOUT_MS, FailurePolicy, HookSecretError, MIN_HOOK_SECRET_LEN,
    check_hook_url, read_ca_file,
};

/// `[hooks]`: the pre-provisioning hook (its fields first; checked in `config/preprovision.rs`)
/// and the event webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The URL pep POSTs to before it generates a key (`https://`, or `http://` to a loopback
    /// address only). Unset (default): no hook. Parsed when the file is loaded.
    #[serde(with = "super::preprovision::optional_url")]
    pub pre_provision: Option<url::Url>,
    /// The file holding the pre-provisioning hook's shared HMAC-SHA256 secret (its first line; at
    /// least [`MIN_HOOK_SECRET_LEN`] bytes; mode 0600). Required with a hook.
    pub secret_file: Option<PathBuf>,
    /// How long the pre-provisioning hook may take, ms (default
    /// [`DEFAULT_PRE_PROVISION_TIMEOUT_MS`]).
    pub timeout_ms: u64,
    /// `fail_closed` (default) or `fail_open`: when the pre-provisioning hook gives no answer.
    pub failure_policy: FailurePolicy,
    /// A PEM file of CA certificates trusted for the pre-provisioning hook's `https://` besides
    /// the public roots (a factory's own CA).
    pub ca_file: Option<PathBuf>,
    /// `[[hooks.events]]`: the receivers of the event webhooks. None (default): no event is
    /// written to the outbox and no delivery task runs.
    pub events: Vec<EventHookConfig>,
    /// `[hooks.delivery]`: the delivery task.
    pub delivery: HookDeliveryConfig,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            pre_provision: None,
            secret_file: None,
            timeout_ms: DEFAULT_PRE_PROVISION_TIMEOUT_MS,
            failure_policy: FailurePolicy::default(),
            ca_file: None,
            events: Vec::new(),
            delivery: HookDeliveryConfig::default(),
        }
    }
}

/// One `[[hooks.events]]` receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHookConfig {
    /// Where the events are POSTed: `https://…` (`http://` only to a loopback address, or with a
    /// warning).
    pub url: String,
    /// The events it receives: `deployed`, `failed`, `revoked`.
    pub events: Vec<HookEvent>,
    /// The file holding the shared HMAC-SHA256 secret (its first line; at least 16 bytes).
    pub secret_file: PathBuf,
    /// The receiver's name in the outbox, the API and the log (default: the URL without its
    /// query). Keep it when the URL changes, so undelivered events follow.
    #[serde(default)]
    pub name: Option<String>,
    /// Time the receiver has to answer one POST, ms.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// An event not delivered this long after it happened is given up (`dead`), seconds.
    #[serde(default = "defaults::max_age_s")]
    pub max_age_s: u64,
    /// First retry delay, ms; doubled per failed attempt (with jitter) up to `retry_max_ms`.
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, ms.
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
}

/// `[hooks.delivery]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookDeliveryConfig {
    /// POSTs in flight at once, over every receiver (default 16).
    pub concurrency: usize,
    /// How often the outbox is looked at when there is nothing to send, ms (default 500).
    pub poll_ms: u64,
}

impl Default for HookDeliveryConfig {
    fn default() -> Self {
        HookDeliveryConfig {
            concurrency: 16,
            poll_ms: 500,
        }
    }
}

mod defaults {
    pub(super) fn timeout_ms() -> u64 {
        super::DEFAULT_HOOK_TIMEOUT_MS
    }
    pub(super) fn max_age_s() -> u64 {
        super::DEFAULT_HOOK_MAX_AGE_S
    }
    pub(super) fn retry_initial_ms() -> u64 {
        super::DEFAULT_HOOK_RETRY_INITIAL_MS
    }
    pub(super) fn retry_max_ms() -> u64 {
        super::DEFAULT_HOOK_RETRY_MAX_MS
    }
}

/// What is wrong with one receiver: the field (`url`, `secret_file`, …) and the words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HookConfigIssue {
    /// The field of the `[[hooks.events]]` entry.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn issue(field: &'static str, message: impl Into<String>) -> HookConfigIssue {
    HookConfigIssue {
        field,
        message: message.into(),
    }
}

impl EventHookConfig {
    /// The receiver's name: `name`, or the URL without its query and fragment (which may hold
    /// a credential: the name is stored and shown).
    pub fn receiver_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }

    /// The running receiver: the URL checked, the secret read. Every problem names its field;
    /// the secret never appears in one.
    pub fn receiver(&self) -> Result<Receiver, HookConfigIssue> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| issue("url", format!("`{}` is not a URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(issue(
                "url",
                format!("`{}`: the scheme must be https (or http)", self.url),
            ));
        }
        if url.host().is_none() {
            return Err(issue("url", format!("`{}` has no host", self.url)));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(issue(
                "url",
                "holds a user name or password: the receiver authenticates pep by the signature \
                 (secret_file), and the URL is shown in the API",
            ));
        }
        if self.events.is_empty() {
            return Err(issue(
                "events",
                "is empty: name at least one of deployed, failed, revoked",
            ));
        }
        let name = self.receiver_name();
        if name.trim().is_empty()
            || name.chars().count() > 200
            || name.chars().any(char::is_control)
        {
            return Err(issue(
                "name",
                "must be 1 to 200 characters without control characters",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(issue("timeout_ms", "must be greater than 0"));
        }
        if self.max_age_s == 0 {
            return Err(issue("max_age_s", "must be greater than 0"));
        }
        if self.retry_initial_ms == 0 {
            return Err(issue("retry_initial_ms", "must be greater than 0"));
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(issue("retry_max_ms", "must be at least retry_initial_ms"));
        }
        let secret = read_secret(&self.secret_file)?;
        Ok(Receiver {
            name,
            url,
            events: self.events.iter().copied().collect(),
            secret,
            timeout: Duration::from_millis(self.timeout_ms),
            max_age: Duration::from_secs(self.max_age_s),
            retry_initial: Duration::from_millis(self.retry_initial_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
        })
    }
}

/// The first line of `path`, without surrounding white space; never in a message.
fn read_secret(path: &std::path::Path) -> Result<Secret, HookConfigIssue> {
    let bytes = super::secret_file::read(path).map_err(|e| issue("secret_file", e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        issue(
            "secret_file",
            format!("{} is not UTF-8 text", path_for_people(path)),
        )
    })?;
    let line = text.lines().next().unwrap_or_default().trim();
    if line.len() < MIN_HOOK_SECRET_BYTES {
        return Err(issue(
            "secret_file",
            format!(
                "the secret in {} is {} (at least {MIN_HOOK_SECRET_BYTES} bytes needed)",
                path_for_people(path),
                if line.is_empty() {
                    "empty".to_owned()
                } else {
                    "too short".to_owned()
                }
            ),
        ));
    }
    Ok(Secret::new(line.as_bytes()))
}

impl HooksConfig {
    /// The receivers as the store sees them (names and events).
    pub fn event_routes(&self) -> EventRoutes {
        EventRoutes {
            routes: self
                .events
                .iter()
                .map(|h| EventRoute {
                    receiver: h.receiver_name(),
                    events: h.events.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// Every receiver, ready to send; the first problem, with its `hooks.events[i].field`.
    pub fn receivers(&self) -> Result<Vec<Receiver>, String> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, h)| {
                h.receiver()
                    .map_err(|e| format!("hooks.events[{i}].{}: {}", e.field, e.message))
            })
            .collect()
    }

    /// Rebases the secret files on `base`.
    pub(super) fn resolve_relative_to(&mut self, base: &std::path::Path) {
        for h in &mut self.events {
            if h.secret_file.is_relative() {
                h.secret_file = base.join(&h.secret_file);
            }
        }
    }

    /// Reports every problem of `[hooks]` with its field.
    pub(super) fn check(&self, r: &mut CheckReport) {
        let mut names = std::collections::BTreeSet::new();
        for (i, h) in self.events.iter().enumerate() {
            match h.receiver() {
                Ok(receiver) => {
                    if receiver.url.scheme() == "http" && !is_loopback(&receiver.url) {
                        r.warn(
                            &format!("hooks.events[{i}].url"),
                            "is plain http beyond loopback: the events travel unencrypted (the \
                             signature still authenticates them); use https",
                        );
                    }
                    if !names.insert(receiver.name.clone()) {
                        r.error(
                            &format!("hooks.events[{i}].name"),
                            format!(
                                "`{}` names another receiver too: give each its own name",
                                receiver.name
                            ),
                        );
                    }
                    warn_secret_permissions(i, &h.secret_file, r);
                }
                Err(e) => r.error(&format!("hooks.events[{i}].{}", e.field), e.message),
            }
        }
        if self.delivery.concurrency == 0 {
            r.error("hooks.delivery.concurrency", "must be greater than 0");
        }
        if self.delivery.poll_ms == 0 {
            r.error("hooks.delivery.poll_ms", "must be greater than 0");
        }
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(unix)]
fn warn_secret_permissions(i: usize, path: &std::path::Path, r: &mut CheckReport) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        r.warn(
            &format!("hooks.events[{i}].secret_file"),
            format!(
                "{} is accessible by group or others (mode {:o}); chmod 600 it",
                path_for_people(path),
                meta.permissions().mode() & 0o777
            ),
        );
    }
}

#[cfg(not(unix))]
fn warn_secret_permissions(_: usize, _: &std::path::Path, _: &mut CheckReport) {}
