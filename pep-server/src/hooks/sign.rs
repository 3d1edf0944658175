//! The signature of a webhook POST, and its reference verification.
//!
//! The receiver shares a secret with pep (`secret_file`). Each POST carries
//! [`TIMESTAMP_HEADER`] (unix seconds when it was sent) and [`SIGNATURE_HEADER`] = `v1=` + the hex
//! HMAC-SHA256, under the secret, of the timestamp, a `.`, and the exact body bytes. Signing the
//! timestamp with the body lets a receiver refuse a replayed old request ([`verify`]'s
//! tolerance); [`EVENT_ID_HEADER`] (also `eventId` in the body) lets it drop a repeated delivery.

use ring::hmac;

/// `Pep-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "pep-signature";
/// `Pep-Timestamp: <unix seconds>` of the attempt (each retry is signed anew).
pub const TIMESTAMP_HEADER: &str = "pep-timestamp";
/// `Pep-Event-Id: <uuid>`: the event's ID, the same in every retry (de-duplication).
pub const EVENT_ID_HEADER: &str = "pep-event-id";
/// `Pep-Event: deployed | failed | revoked`.
pub const EVENT_HEADER: &str = "pep-event";
/// The signature scheme's prefix in [`SIGNATURE_HEADER`].
const VERSION: &str = "v1=";

/// A receiver's shared secret, as an HMAC key. Its bytes are not kept, and it never prints.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// The key of the secret `bytes`.
    pub fn new(bytes: &[u8]) -> Secret {
        Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The [`SIGNATURE_HEADER`] value of `body` sent at `timestamp` (unix seconds).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        format!(
            "{VERSION}{}",
            hex::encode(timestamped_mac(&self.key, timestamp, body).as_ref())
        )
    }
}

/// HMAC-SHA256 under `key` of the timestamp's digits, a `.`, and the exact body bytes: the MAC
/// of both of pep's signatures (this module's `v1=` of the event webhooks, and `sha256=` of the
/// pre-provisioning hook, [`crate::hook::signature`]), whose header formats stay their own.
pub(crate) fn timestamped_mac(key: &hmac::Key, timestamp: i64, body: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
}

/// Whether `mac` is [`timestamped_mac`] of `timestamp` and `body` under `key` (constant-time).
pub(crate) fn timestamped_mac_matches(
    key: &hmac::Key,
    timestamp: i64,
    body: &[u8],
    mac: &[u8],
) -> bool {
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(key, &message, mac).is_ok()
}

/// Why [`verify`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No or no numeric timestamp header.
    #[error("the {TIMESTAMP_HEADER} header is missing or not unix seconds")]
    Timestamp,
    /// The timestamp is further from now than the tolerance (a replay, or a wrong clock).
    #[error("the request was signed {age_s} s away from now (tolerance {tolerance_s} s)")]
    Stale {
        /// |now − timestamp|, seconds.
        age_s: i64,
        /// The tolerance.
        tolerance_s: i64,
    },
    /// No signature header, or not `v1=<hex>`.
    #[error("the {SIGNATURE_HEADER} header is missing or not v1=<hex>")]
    Malformed,
    /// The signature does not match the body and timestamp under the secret.
    #[error("the signature does not match")]
    Mismatch,
}

/// The reference verification a receiver runs: `timestamp` and `signature` are the header
/// values (`None` when absent), `body` the exact bytes received, `now_s` the receiver's clock,
/// `tolerance_s` how far the timestamp may be from it (300 s is usual). Constant-time compare.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(VerifyError::Timestamp)?;
    let age_s = now_s.saturating_sub(timestamp).saturating_abs();
    if age_s > tolerance_s {
        return Err(VerifyError::Stale { age_s, tolerance_s });
    }
    let mac = signature
        .and_then(|s| s.trim().strip_prefix(VERSION))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    if timestamped_mac_matches(&key, timestamp, body, &mac) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("Jefe"), as a check that the MAC is plain HMAC-SHA256 over
    /// `timestamp.body` (message "what do ya want " + "." + "for nothing?" would differ, so the
    /// vector is rebuilt from its parts: timestamp digits are part of the message).
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let secret = Secret::new(b"Jefe");
        let sig = secret.sign(1_700_000_000, b"{\"a\":1}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let expected = hmac::sign(&key, b"1700000000.{\"a\":1}");
        assert_eq!(sig, format!("v1={}", hex::encode(expected.as_ref())));
        // RFC 4231 case 2 through the same primitive.
        let rfc = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(rfc.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }

    #[test]
    fn verify_accepts_the_signed_request_and_refuses_any_change() {
        let secret = b"0123456789abcdef-secret";
        let body = b"{\"event\":\"deployed\"}";
        let sig = Secret::new(secret).sign(1000, body);
        let ok = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now: i64| {
            verify(secret, ts, sig, body, now, 300)
        };
        assert_eq!(ok(Some("1000"), Some(&sig), body, 1010), Ok(()));
        assert_eq!(
            ok(Some("1000"), Some(&sig), b"{\"event\":\"failed\"}", 1010),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            ok(Some("1001"), Some(&sig), body, 1010),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another-secret-0000",
                Some("1000"),
                Some(&sig),
                body,
                1010,
                300
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            ok(Some("1000"), Some(&sig), body, 2000),
            Err(VerifyError::Stale {
                age_s: 1000,
                tolerance_s: 300
            })
        );
        assert_eq!(
            ok(None, Some(&sig), body, 1010),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            ok(Some("x"), Some(&sig), body, 1010),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            ok(Some("1000"), None, body, 1010),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            ok(Some("1000"), Some("v2=00"), body, 1010),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            ok(Some("1000"), Some("v1=zz"), body, 1010),
            Err(VerifyError::Malformed)
        );
    }
}
