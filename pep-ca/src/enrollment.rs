//! The enrollment ID: what the cloud's first-to-claim enrollment list holds for a device.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use crate::error::{CaError, clip};

/// `A-` + the SHA-256 of the device certificate's DER as 32 upper-case, colon-separated hex
/// pairs: 97 characters, exactly what `openssl x509 -noout -fingerprint -sha256` prints after
/// `SHA256 Fingerprint=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnrollmentId(String);

impl EnrollmentId {
    /// Length of an enrollment ID in characters.
    pub const LEN: usize = 97;

    /// The enrollment ID of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> EnrollmentId {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut s = String::with_capacity(Self::LEN);
        s.push_str("A-");
        for (i, b) in digest.as_ref().iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        EnrollmentId(s)
    }

    /// The ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EnrollmentId {
    type Err = CaError;

    /// Validates the cloud's pattern `^A-[A-Za-z0-9:]{95}$` and normalises the hex to upper case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| CaError::InvalidEnrollmentId {
            input: clip(s),
            reason,
        };
        let Some(rest) = s.strip_prefix("A-") else {
            return Err(fail("it does not start with \"A-\""));
        };
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':') {
            return Err(fail("only A-Z, a-z, 0-9 and ':' may follow \"A-\""));
        }
        if rest.len() != Self::LEN - 2 {
            return Err(fail("it must be 97 characters long"));
        }
        let mut id = String::with_capacity(Self::LEN);
        let _ = write!(id, "A-{}", rest.to_ascii_uppercase());
        Ok(EnrollmentId(id))
    }
}

impl AsRef<str> for EnrollmentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnrollmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_certificate_is_colon_hex_sha256() {
        let id = EnrollmentId::of_certificate(b"abc");
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(
            id.as_str(),
            "A-BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        assert_eq!(id.as_str().len(), EnrollmentId::LEN);
        assert_eq!(id.as_str().parse::<EnrollmentId>().unwrap(), id);
    }

    #[test]
    fn parse_normalises_lowercase() {
        let id = EnrollmentId::of_certificate(b"x");
        let lower = format!("A-{}", id.as_str()[2..].to_ascii_lowercase());
        assert_ne!(lower, id.as_str());
        assert_eq!(lower.parse::<EnrollmentId>().unwrap(), id);
    }

    #[test]
    fn parse_refuses_bad_input() {
        let good = EnrollmentId::of_certificate(b"x").to_string();
        for (bad, why) in [
            (String::new(), "start"),
            (good[1..].to_owned(), "start"),
            (format!("a-{}", &good[2..]), "start"),
            (format!("B-{}", &good[2..]), "start"),
            (good[..96].to_owned(), "97"),
            (format!("{good}:"), "97"),
            (good.replace(':', "-"), "only"),
            (good.replacen(':', " ", 1), "only"),
            (format!("A-\u{c4}{}", &good[3..]), "only"),
        ] {
            let err = bad.parse::<EnrollmentId>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
