//! The endpoint name: the device certificate's CN and the gateway's `mbed.EndpointName`.

use std::fmt;
use std::str::FromStr;

use crate::error::{CaError, clip};

/// A validated endpoint name (the gateway serial number).
///
/// The cloud's endpoint-name rule: 1–64 characters from `a-z A-Z 0-9`, space and
/// `' ( ) + , - . ? : / =`. That set is exactly ASN.1 PrintableString, so the name can go into a
/// certificate subject unchanged; the device compares the CN byte for byte with
/// `mbed.EndpointName` (docs/protocol.md §5.2, step 5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointName(String);

impl EndpointName {
    /// The longest name the cloud accepts.
    pub const MAX_LEN: usize = 64;

    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, CaError> {
        Self::check(name)?;
        Ok(Self(name.to_owned()))
    }

    fn check(name: &str) -> Result<(), CaError> {
        let fail = |reason: String| CaError::InvalidEndpointName {
            name: clip(name),
            reason,
        };
        if name.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        let len = name.chars().count();
        if len > Self::MAX_LEN {
            return Err(fail(format!(
                "it has {len} characters, at most {} are allowed",
                Self::MAX_LEN
            )));
        }
        if let Some((pos, c)) = name.chars().enumerate().find(|&(_, c)| !allowed(c)) {
            return Err(fail(format!(
                "character {c:?} (U+{:04X}) at position {} is not allowed \
                 (allowed: a-z A-Z 0-9 space ' ( ) + , - . ? : / =)",
                u32::from(c),
                pos + 1
            )));
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The cloud's endpoint-name alphabet.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            ' ' | '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '?' | ':' | '/' | '='
        )
}

impl FromStr for EndpointName {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for EndpointName {
    type Error = CaError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::check(&s)?;
        Ok(Self(s))
    }
}

impl TryFrom<&str> for EndpointName {
    type Error = CaError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for EndpointName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_alphabet() {
        for ok in [
            "a",
            "GW-0001",
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "it's (a) +,-.?:/= name",
            &"x".repeat(64),
        ] {
            let name: EndpointName = ok.parse().unwrap();
            assert_eq!(name.as_str(), ok);
            assert_eq!(name.to_string(), ok);
        }
        assert!(EndpointName::try_from("GW 1".to_owned()).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        let err = EndpointName::new("").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = EndpointName::new(&"x".repeat(65)).unwrap_err().to_string();
        assert!(err.contains("65 characters"), "{err}");
        for bad in [
            "GW_1",
            "GW;1",
            "GW\n1",
            "GW\u{e9}",
            "a\"b",
            "GW*",
            "GW@x",
            "tab\there",
            "GW#",
        ] {
            let err = EndpointName::new(bad).unwrap_err().to_string();
            assert!(err.contains("is not allowed"), "{bad:?}: {err}");
        }
        assert!(EndpointName::try_from("a_b".to_owned()).is_err());
    }
}
