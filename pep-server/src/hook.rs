//! The pre-provisioning hook (`[hooks] pre_provision`, issue #17): before a key is generated, pep
//! asks the factory's MES whether this serial may be provisioned now.
//!
//! ```text
//! POST <pre_provision>            {"serial","ip","port","order","requester"}
//!   X-Pep-Timestamp: <unix s>     X-Pep-Signature: sha256=<hex HMAC-SHA256(secret, ts + "." + body)>
//! ← 2xx {"allow": true, "identity": {...}?}   provision (with these identity fields, if any)
//! ← 2xx {"allow": false, "reason": "..."}     403 with the reason (sanitized, bounded)
//! ← anything else, a timeout, no connection   `failure_policy`: fail_closed → 503, fail_open → go
//! ```
//!
//! The signature covers the timestamp and the body, so a receiver that checks it and refuses a
//! timestamp far from its clock cannot be fed a recorded request later. The secret is read once
//! from `secret_file`, kept zeroized, and never logged, stored or answered. One `reqwest` client
//! is shared by every request (its connection pool keeps the hook's connection warm).

use std::time::Duration;

use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{FailurePolicy, HooksConfig};
use crate::hooks::sign::{timestamped_mac, timestamped_mac_matches};
use crate::model::{Defaulted, FieldText, GatewayParams};
use crate::orders::{Product, ProductFields};

/// The header carrying the signature, `sha256=` + lower-case hex.
pub const SIGNATURE_HEADER: &str = "X-Pep-Signature";
/// The header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Pep-Timestamp";
/// Largest answer read from the hook, bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How far a receiver should accept the timestamp from its clock (the docs' reference receiver).
pub const REPLAY_WINDOW_S: i64 = 300;

/// HMAC-SHA256 of `timestamp` + `.` + `body` with `secret`, as the signature header carries it
/// (`sha256=` + hex). The MAC is the event webhooks' (`hooks::sign::timestamped_mac`).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        hex::encode(timestamped_mac(&key, timestamp, body).as_ref())
    )
}

/// Checks a signature header as a receiver does: the right MAC (compared in constant time) and a
/// timestamp within [`REPLAY_WINDOW_S`] of `now`. The Rust twin of the docs' Python receiver.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str, now: i64) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > REPLAY_WINDOW_S {
        return false;
    }
    let Some(hex_mac) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    timestamped_mac_matches(&key, ts, body, &given)
}

/// What pep asks the hook (the JSON body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookQuestion {
    /// The serial.
    pub serial: String,
    /// The gateway's FCC address.
    pub ip: String,
    /// The gateway's FCC port.
    pub port: u16,
    /// The work order the serial belongs to, if any.
    pub order: Option<String>,
    /// Who asks (token name @ address).
    pub requester: String,
}

/// The hook's answer, as sent.
#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    identity: Option<IdentityFields>,
}

/// Identity fields the hook may set, as text, checked like the request fields of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdentityFields {
    hardware_version: Option<String>,
    radio_config: Option<String>,
    led_config: Option<String>,
    category: Option<String>,
    api_address: Option<String>,
    gateway_services_address: Option<String>,
    verification_key: Option<String>,
}

/// Identity fields the hook set, checked: they replace the request's (the MES decides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookIdentity {
    product: Product,
    verification_key: Option<FieldText>,
}

impl IdentityFields {
    fn check(self) -> Result<HookIdentity, HookFailure> {
        let bad = |name: &str, e: &dyn std::fmt::Display| {
            HookFailure::BadAnswer(format!("identity.{name} {e}"))
        };
        let product = ProductFields {
            hardware_version: self.hardware_version,
            radio_config: self.radio_config,
            led_config: self.led_config,
            category: self.category,
            api_address: self.api_address,
            gateway_services_address: self.gateway_services_address,
        }
        .check(|name, e| bad(name.api, e))?;
        let verification_key = self
            .verification_key
            .map(FieldText::new)
            .transpose()
            .map_err(|e| bad("verificationKey", &e))?;
        Ok(HookIdentity {
            product,
            verification_key,
        })
    }
}

impl HookIdentity {
    /// Sets the fields the hook gave on `params`.
    pub fn apply(self, params: &mut GatewayParams) {
        self.product.fill_where(Defaulted::ALL, params);
        if self.verification_key.is_some() {
            params.verification_key = self.verification_key;
        }
    }
}

/// Why the hook gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// It did not answer within the timeout.
    #[error("the pre-provisioning hook did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No connection, or the exchange broke.
    #[error("the pre-provisioning hook could not be reached: {0}")]
    Unreachable(String),
    /// A status other than 2xx.
    #[error("the pre-provisioning hook answered HTTP {0}")]
    Status(u16),
    /// A 2xx whose body is not the expected JSON.
    #[error("the pre-provisioning hook's answer is not valid: {0}")]
    BadAnswer(String),
}

/// The hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    /// Provision, with these identity fields set (if any).
    Allow(HookIdentity),
    /// Refused, with the hook's reason (sanitized and bounded).
    Deny(String),
    /// No usable answer; the caller applies the failure policy.
    Failed(HookFailure),
}

/// Why the hook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookSetupError {
    /// The secret file.
    #[error("hooks.secret_file: {0}")]
    Secret(#[from] crate::config::hooks::HookSecretError),
    /// The CA file.
    #[error("hooks.ca_file: {0}")]
    CaFile(String),
    /// The HTTP client.
    #[error("hooks: cannot build the HTTP client: {0}")]
    Client(String),
}

/// The configured hook: its URL, secret, client and policy. Cheap to share behind an `Arc`.
pub struct PreProvisionHook {
    url: url::Url,
    secret: Zeroizing<Vec<u8>>,
    client: reqwest::Client,
    timeout: Duration,
    policy: FailurePolicy,
}

impl std::fmt::Debug for PreProvisionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreProvisionHook")
            .field("url", &self.url.as_str())
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

impl PreProvisionHook {
    /// The hook of `[hooks]`, or none when `pre_provision` is unset. Reads the secret file.
    pub fn from_config(config: &HooksConfig) -> Result<Option<PreProvisionHook>, HookSetupError> {
        let Some(url) = config.pre_provision.clone() else {
            return Ok(None);
        };
        let secret = config.read_secret()?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // A redirect would send the signed body somewhere the config does not name.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout())
            .connect_timeout(config.timeout())
            .pool_max_idle_per_host(64);
        if let Some(path) = &config.ca_file {
            for cert in crate::config::hooks::read_ca_file(path).map_err(HookSetupError::CaFile)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| HookSetupError::Client(e.to_string()))?;
        Ok(Some(PreProvisionHook {
            url,
            secret,
            client,
            timeout: config.timeout(),
            policy: config.failure_policy,
        }))
    }

    /// The failure policy.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// The URL (for logs: it holds no secret).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Asks the hook about `question`.
    pub async fn ask(&self, question: &HookQuestion) -> HookVerdict {
        match self.exchange(question).await {
            Ok(verdict) => verdict,
            Err(failure) => HookVerdict::Failed(failure),
        }
    }

    async fn exchange(&self, question: &HookQuestion) -> Result<HookVerdict, HookFailure> {
        let body = serde_json::to_vec(question)
            .map_err(|e| HookFailure::BadAnswer(format!("cannot encode the question: {e}")))?;
        let timestamp = crate::store::now_ms() / 1000;
        let request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(&self.secret, timestamp, &body))
            .body(body);
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                HookFailure::Timeout(self.timeout)
            } else {
                // Without the URL's query: reqwest's text names the URL.
                HookFailure::Unreachable(crate::provision::fcc_text(&e.without_url().to_string()))
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(HookFailure::Status(status.as_u16()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HookFailure::BadAnswer(format!(
                    "it is longer than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        let answer: Answer = serde_json::from_slice(&answer).map_err(|e| {
            HookFailure::BadAnswer(format!(
                "expected {{\"allow\": true|false, ...}}: {}",
                crate::provision::fcc_text(&e.to_string())
            ))
        })?;
        if !answer.allow {
            let reason = answer
                .reason
                .as_deref()
                .map(crate::provision::fcc_text)
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "no reason given".to_owned());
            return Ok(HookVerdict::Deny(reason));
        }
        let identity = answer.identity.unwrap_or_default().check()?;
        Ok(HookVerdict::Allow(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Category;

    #[test]
    fn signatures_verify_and_refuse_changes() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let body = br#"{"serial":"GW-1"}"#;
        let sig = signature(secret, 1_700_000_000, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify(secret, "1700000000", body, &sig, 1_700_000_010));
        // Another body, secret, timestamp, or a replay outside the window: refused.
        assert!(!verify(secret, "1700000000", b"{}", &sig, 1_700_000_010));
        assert!(!verify(
            b"another-secret-of-enough-length",
            "1700000000",
            body,
            &sig,
            1_700_000_010
        ));
        assert!(!verify(secret, "1700000001", body, &sig, 1_700_000_010));
        assert!(!verify(
            secret,
            "1700000000",
            body,
            &sig,
            1_700_000_000 + REPLAY_WINDOW_S + 1
        ));
        assert!(!verify(secret, "x", body, &sig, 0));
        assert!(!verify(secret, "1700000000", body, "md5=00", 1_700_000_000));
    }

    /// RFC 4231 test case 2 ("Jefe"), through the same HMAC: the construction is the standard one.
    #[test]
    fn hmac_is_rfc_4231() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let mac = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn identity_fields_are_checked_like_request_fields() {
        let f: IdentityFields =
            serde_json::from_str(r#"{"hardwareVersion":"rev-b","category":"development"}"#)
                .unwrap();
        let id = f.check().unwrap();
        assert_eq!(id.product.category, Some(Category::Development));
        let f: IdentityFields = serde_json::from_str(r#"{"apiAddress":"ftp://x"}"#).unwrap();
        let e = f.check().unwrap_err().to_string();
        assert!(
            e.contains("identity.apiAddress") && e.contains("ftp"),
            "{e}"
        );
        assert!(serde_json::from_str::<IdentityFields>(r#"{"serialNumber":"x"}"#).is_err());
    }
}
