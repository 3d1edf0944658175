//! The typed values of `pep.toml` that are more than a number or a free text: each is parsed and
//! validated once, when the file is loaded, so no other module re-parses it and a bad value is a
//! load error naming its field (the path is added by [`super::Config::load`]).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `time.utc_offset`: the factory clock's offset from UTC, exactly `[+-]HH:MM` with HH ≤ 14 and
/// MM < 60 (FCC takes the text as written, 6 characters).
///
/// Keeps the text as written (`-00:00` stays `-00:00` on the wire) next to its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtcOffset {
    text: String,
    seconds: i32,
}

/// Why a text is not a `[+-]HH:MM` UTC offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` {reason}")]
pub struct InvalidUtcOffset {
    text: String,
    reason: &'static str,
}

impl UtcOffset {
    /// The offset as written in the config, `[+-]HH:MM` (the value of `mbed.UTCOffset`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The offset in seconds east of UTC (negative west of it).
    pub fn seconds(&self) -> i32 {
        self.seconds
    }

    /// The offset in minutes east of UTC (negative west of it), for the times the floor page shows.
    pub fn minutes(&self) -> i32 {
        self.seconds / 60
    }
}

impl Default for UtcOffset {
    fn default() -> Self {
        UtcOffset {
            text: "+00:00".to_owned(),
            seconds: 0,
        }
    }
}

impl FromStr for UtcOffset {
    type Err = InvalidUtcOffset;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| InvalidUtcOffset {
            text: s.chars().take(32).collect(),
            reason,
        };
        // ASCII only, so that bytes are characters (`+0é:0` is 6 bytes, 5 characters).
        let (true, &[sign, h1, h2, colon, m1, m2]) = (s.is_ascii(), s.as_bytes()) else {
            return Err(err("is not exactly 6 characters ([+-]HH:MM)"));
        };
        let sign = match sign {
            b'+' => 1,
            b'-' => -1,
            _ => return Err(err("does not start with + or -")),
        };
        if colon != b':' {
            return Err(err("has no ':' between hours and minutes"));
        }
        if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit) {
            return Err(err("has non-digit hours or minutes"));
        }
        let hours = i32::from(h1 - b'0') * 10 + i32::from(h2 - b'0');
        let minutes = i32::from(m1 - b'0') * 10 + i32::from(m2 - b'0');
        if hours > 14 {
            return Err(err("has hours over 14"));
        }
        if minutes >= 60 {
            return Err(err("has minutes of 60 or more"));
        }
        Ok(UtcOffset {
            text: s.to_owned(),
            seconds: sign * (hours * 3600 + minutes * 60),
        })
    }
}

/// `bootstrap.uri`: the bootstrap server, a `coaps://` (or, unencrypted, `coap://`) URI with a
/// host, at most 255 characters, no control characters.
///
/// Keeps the text as written, which is what FCC receives (`url` would normalise it), next to the
/// parsed URL. Whether it may carry `aid=` depends on `bootstrap.first_to_claim`: that rule is
/// checked by [`super::Config::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapUri {
    text: String,
    url: url::Url,
}

/// Why a text is not a bootstrap server URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBootstrapUri {
    /// Longer than FCC accepts.
    #[error("is longer than 255 characters")]
    TooLong,
    /// Holds a control character.
    #[error("contains control characters")]
    ControlCharacter,
    /// Not a URI at all.
    #[error("`{text}` is not a URI: {source}")]
    NotUri {
        /// The text.
        text: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },
    /// Not `coap://` or `coaps://`.
    #[error("scheme `{0}` is not coap:// or coaps://")]
    Scheme(String),
    /// No host.
    #[error("has no host")]
    NoHost,
}

impl BootstrapUri {
    /// The URI as written in the config (the value of `mbed.LwM2MBootstrapServerURI`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URI.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// True for `coap://` (no DTLS).
    pub fn is_unencrypted(&self) -> bool {
        self.url.scheme() == "coap"
    }

    /// True when the query holds an account ID (`aid=`), which first-to-claim forbids.
    pub fn has_aid(&self) -> bool {
        self.url
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("aid=")))
    }
}

impl FromStr for BootstrapUri {
    type Err = InvalidBootstrapUri;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.chars().count() > 255 {
            return Err(InvalidBootstrapUri::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidBootstrapUri::ControlCharacter);
        }
        let url = url::Url::parse(s).map_err(|source| InvalidBootstrapUri::NotUri {
            text: s.to_owned(),
            source,
        })?;
        if url.scheme() != "coaps" && url.scheme() != "coap" {
            return Err(InvalidBootstrapUri::Scheme(url.scheme().to_owned()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidBootstrapUri::NoHost);
        }
        Ok(BootstrapUri {
            text: s.to_owned(),
            url,
        })
    }
}

/// The text-backed values (a `text` field kept as written): shown and serialized as their text,
/// read through `FromStr` so the message is the type's own.
macro_rules! text_serde {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.text
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
text_serde!(UtcOffset, BootstrapUri);

/// `listen`: an `IP:PORT` socket address, with a message that says what was expected.
pub(super) fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP:PORT address such as 127.0.0.1:5151 or [::1]:5151 ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offsets() {
        for (ok, seconds) in [
            ("+00:00", 0),
            ("-00:00", 0),
            ("-14:00", -50_400),
            ("+05:30", 19_800),
            ("+14:59", 53_940),
        ] {
            let o: UtcOffset = ok.parse().unwrap();
            assert_eq!(
                (o.as_str(), o.seconds(), o.minutes()),
                (ok, seconds, seconds / 60)
            );
        }
        for (bad, reason) in [
            ("+0:00", "exactly 6"),
            ("00:00", "exactly 6"),
            ("+15:00", "hours over 14"),
            ("+01:60", "minutes of 60"),
            ("+01-00", "no ':'"),
            ("+0a:00", "non-digit"),
            ("x00:00", "start with"),
            ("+00:000", "exactly 6"),
            ("+0é:0", "exactly 6"),
            ("", "exactly 6"),
        ] {
            let e = bad.parse::<UtcOffset>().unwrap_err().to_string();
            assert!(
                e.contains(reason) && e.starts_with(&format!("`{bad}`")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bootstrap_uris() {
        let u: BootstrapUri = "coaps://bootstrap.example.com:5684?aid=0123"
            .parse()
            .unwrap();
        assert_eq!(u.as_str(), "coaps://bootstrap.example.com:5684?aid=0123");
        assert!(u.has_aid() && !u.is_unencrypted());
        let u: BootstrapUri = "coap://bs.example.com:5683".parse().unwrap();
        assert!(!u.has_aid() && u.is_unencrypted());
        for (bad, needle) in [
            ("https://bootstrap.example.com", "scheme `https`"),
            ("/no/scheme", "not a URI"),
            ("coaps://", "no host"),
            ("coaps://a\n.example.com", "control characters"),
        ] {
            let e = bad.parse::<BootstrapUri>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let long = format!("coaps://{}.example.com", "a".repeat(250));
        assert_eq!(
            long.parse::<BootstrapUri>(),
            Err(InvalidBootstrapUri::TooLong)
        );
    }
}
