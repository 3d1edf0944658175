//! The gateway model: the ten request fields, once, typed, validated where they are built.
//!
//! ```text
//! query string / JSON body ──pairs──▶ GatewayFields (text, through serde)
//!                                         │ into_params(peer, defaults): every check, once
//!                                         ▼
//!                                    GatewayParams (typed) ──▶ provisioning core ──▶ store, bundle
//! ```
//!
//! [`GatewayFields`] is what a client sent, as text (absent or empty = "use the default");
//! [`GatewayParams`] is a gateway request that is known to be valid: an [`EndpointName`] serial, a
//! unicast FCC address (IPv4 or IPv6), http(s) URLs, bounded free text and a [`Category`]. The error texts are
//! the API's (`parameter `X` …` answers name the field and say what was wrong).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use pep_ca::EndpointName;
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::category::{Category, UnknownCategory};

/// Longest accepted text field (every request field except the serial, which has its own rule).
pub const MAX_FIELD_LEN: usize = 256;

/// FCC's port when the request names none. Kept for compatibility with the old server, although it
/// is wrong on Linux, where FCC listens on a random port it prints at start (a defect of the old tool
/// that clients work around by always sending `port`).
pub const DEFAULT_FCC_PORT: u16 = 7777;

/// A request field that is not acceptable: which field (its API name) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    /// The API name of the field (`serialNumber`, `ip`, …).
    pub field: &'static str,
    /// What is wrong, phrased to follow "parameter `field`".
    pub reason: String,
}

impl InvalidField {
    fn new(field: &'static str, reason: impl Into<String>) -> InvalidField {
        InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// A client's request key (`requestId` / `Idempotency-Key`): 8–128 printable ASCII characters
/// (0x21–0x7E). The same key for the same serial makes a retry after a lost answer safe: the
/// stored identity is answered again instead of a second certificate being issued.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestKey(String);

impl RequestKey {
    /// Shortest accepted key.
    pub const MIN_LEN: usize = 8;
    /// Longest accepted key.
    pub const MAX_LEN: usize = 128;

    /// Checks `key`; the reason of a refusal follows "parameter `requestId`".
    pub fn new(key: String) -> Result<RequestKey, InvalidField> {
        let n = key.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&n) {
            return Err(InvalidField::new(
                "requestId",
                format!(
                    "has {n} characters; a request key has {} to {}",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        if let Some(c) = key.chars().find(|c| !('\u{21}'..='\u{7e}').contains(c)) {
            return Err(InvalidField::new(
                "requestId",
                format!(
                    "contains {}; a request key is printable ASCII without spaces (0x21-0x7E)",
                    c.escape_default()
                ),
            ));
        }
        Ok(RequestKey(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a text is not a [`FieldText`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Longer than [`MAX_FIELD_LEN`] characters.
    #[error("has {0} characters, at most {MAX_FIELD_LEN} are allowed")]
    TooLong(usize),
    /// A control character (newline, NUL, …): these texts end up in logs, CSV and the gateway.
    #[error("must not contain control characters")]
    Control,
    /// Empty.
    #[error("must not be empty")]
    Empty,
}

/// A free-text request field: 1 to [`MAX_FIELD_LEN`] characters, no control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldText(String);

impl FieldText {
    /// Checks `text`.
    pub fn new(text: String) -> Result<FieldText, TextError> {
        let len = text.chars().count();
        if len > MAX_FIELD_LEN {
            return Err(TextError::TooLong(len));
        }
        if text.chars().any(char::is_control) {
            return Err(TextError::Control);
        }
        if text.is_empty() {
            return Err(TextError::Empty);
        }
        Ok(FieldText(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a text is not an [`HttpUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a field text.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Does not parse as a URL.
    #[error("is not a URL: {0}")]
    NotUrl(#[from] url::ParseError),
    /// Another scheme than http or https.
    #[error("scheme `{0}` is not http(s)")]
    Scheme(String),
}

/// An http(s) URL, kept exactly as written: it is sent to the gateway and answered verbatim, and
/// `url::Url` would normalize it (`https://a.example` becomes `https://a.example/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(FieldText);

impl HttpUrl {
    /// Checks `text`: a field text that parses as an http or https URL.
    pub fn new(text: String) -> Result<HttpUrl, UrlError> {
        let text = FieldText::new(text)?;
        let url = url::Url::parse(text.as_str())?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        Ok(HttpUrl(text))
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The conversions of a checked text type: `TryFrom<String>` through its `new`, back to
/// `String`, `AsRef<str>`, `Display` and comparison with `str`, all by its `as_str`.
macro_rules! text_newtype {
    ($($t:ty => $err:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = $err;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                <$t>::new(text)
            }
        }
        impl From<$t> for String {
            fn from(t: $t) -> String {
                t.as_str().to_owned()
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )*};
}
text_newtype!(FieldText => TextError, HttpUrl => UrlError, RequestKey => InvalidField);
pub(crate) use text_newtype;

/// Serde for the `pep-ca` text types (which have no serde of their own): as their text.
pub(crate) mod as_text {
    use std::fmt::Display;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `v` as its text.
    pub(crate) fn serialize<T: AsRef<str>, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_ref())
    }

    /// Deserializes a text and checks it with `T::try_from`.
    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: TryFrom<String>,
        T::Error: Display,
        D: Deserializer<'de>,
    {
        T::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One gateway's provisioning parameters, every default filled in and every rule checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParams {
    /// Gateway serial = endpoint name = certificate CN.
    #[serde(with = "as_text")]
    pub serial_number: EndpointName,
    /// The gateway's FCC: a unicast address (IPv4 or IPv6) and a non-zero port.
    pub gateway: SocketAddr,
    /// `apiAddress`.
    pub api_address: HttpUrl,
    /// `gatewayServicesAddress`, also `cloudAddress`.
    pub gateway_services_address: HttpUrl,
    /// `hardwareVersion`, also `mbed.HardwareVersion`.
    pub hardware_version: FieldText,
    /// `radioConfig`.
    pub radio_config: FieldText,
    /// `ledConfig`.
    pub led_config: FieldText,
    /// `category`.
    pub category: Category,
    /// journald FSS verification key (stored, not injected).
    pub verification_key: Option<FieldText>,
    /// Which of the fields above the request left to the defaults: a work order's product
    /// replaces exactly these (the request's own fields win).
    #[serde(skip)]
    pub defaulted: Defaulted,
}

/// The product fields of a request that were absent (or empty) and took `[defaults]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaulted {
    /// `apiAddress`.
    pub api_address: bool,
    /// `gatewayServicesAddress`.
    pub gateway_services_address: bool,
    /// `hardwareVersion`.
    pub hardware_version: bool,
    /// `radioConfig`.
    pub radio_config: bool,
    /// `ledConfig`.
    pub led_config: bool,
    /// `category`.
    pub category: bool,
}

impl Defaulted {
    /// Every product field (a pre-provisioning hook's answer replaces any of them).
    pub const ALL: Defaulted = Defaulted {
        api_address: true,
        gateway_services_address: true,
        hardware_version: true,
        radio_config: true,
        led_config: true,
        category: true,
    };
}

/// What a request leaves out: `[defaults]` and `device.hardware_version` of the configuration,
/// checked once when the provisioner starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayDefaults {
    /// `defaults.api_address`.
    pub api_address: HttpUrl,
    /// `defaults.gateway_services_address`.
    pub gateway_services_address: HttpUrl,
    /// `device.hardware_version`.
    pub hardware_version: FieldText,
    /// `defaults.radio_config`.
    pub radio_config: FieldText,
    /// `defaults.led_config`.
    pub led_config: FieldText,
    /// `defaults.category`.
    pub category: Category,
}

impl GatewayDefaults {
    /// The defaults of `config` (which [`Config::check`](crate::config::Config::check) has
    /// accepted; a value it let through that is still not valid here is named as its config key).
    pub fn from_config(config: &crate::config::Config) -> Result<GatewayDefaults, InvalidField> {
        let d = &config.defaults;
        // Through their text, whatever type the configuration gives them.
        let url =
            |field, v: String| HttpUrl::new(v).map_err(|e| InvalidField::new(field, e.to_string()));
        let text = |field, v: String| {
            FieldText::new(v).map_err(|e| InvalidField::new(field, e.to_string()))
        };
        Ok(GatewayDefaults {
            api_address: url("defaults.api_address", d.api_address.to_string())?,
            gateway_services_address: url(
                "defaults.gateway_services_address",
                d.gateway_services_address.to_string(),
            )?,
            hardware_version: text(
                "device.hardware_version",
                config.device.hardware_version.to_string(),
            )?,
            radio_config: text("defaults.radio_config", d.radio_config.to_string())?,
            led_config: text("defaults.led_config", d.led_config.to_string())?,
            // Typed when the configuration was loaded.
            category: d.category,
        })
    }
}

/// The value of a present name/value pair. serde's own string deserializer cannot fill an `Option`
/// field (it has no `Some`), so this one answers `deserialize_option` with `Some(text)`: every
/// optional field of [`GatewayFields`] reads a pair without an adapter of its own.
struct PresentValue(String);

impl<'de> serde::de::IntoDeserializer<'de, serde::de::value::Error> for PresentValue {
    type Deserializer = PresentValue;
    fn into_deserializer(self) -> PresentValue {
        self
    }
}

impl<'de> Deserializer<'de> for PresentValue {
    type Error = serde::de::value::Error;
    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_string(self.0)
    }
    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The request fields as sent (`GET /v3/identity` query, `POST /v3/identities` body): text,
/// `None` when absent. Built from name/value pairs through serde; unknown names are ignored here
/// (the JSON endpoint refuses them before).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayFields {
    /// `serialNumber` (required).
    pub serial_number: Option<String>,
    /// `ip` (default: the requester's address).
    pub ip: Option<String>,
    /// `port` (default [`DEFAULT_FCC_PORT`]).
    pub port: Option<String>,
    /// `apiAddress`.
    pub api_address: Option<String>,
    /// `gatewayServicesAddress`.
    pub gateway_services_address: Option<String>,
    /// `hardwareVersion`.
    pub hardware_version: Option<String>,
    /// `radioConfig`.
    pub radio_config: Option<String>,
    /// `ledConfig`.
    pub led_config: Option<String>,
    /// `category`.
    pub category: Option<String>,
    /// `verificationKey`.
    pub verification_key: Option<String>,
}

impl GatewayFields {
    /// The API names of the fields, in API order.
    pub const NAMES: [&'static str; 10] = [
        "serialNumber",
        "ip",
        "port",
        "apiAddress",
        "gatewayServicesAddress",
        "hardwareVersion",
        "radioConfig",
        "ledConfig",
        "category",
        "verificationKey",
    ];

    /// Reads the fields from decoded name/value pairs through serde. Duplicates must have been
    /// refused before (serde would name them differently).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<GatewayFields, InvalidField> {
        let known = pairs
            .into_iter()
            .filter(|(name, _)| Self::NAMES.contains(&name.as_str()))
            .map(|(name, value)| (name, PresentValue(value)));
        let map = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(known);
        // Every known field is an optional string and every value a string: nothing can fail here
        // but a defect, reported on the serial.
        GatewayFields::deserialize(map)
            .map_err(|e| InvalidField::new("serialNumber", format!("cannot be read: {e}")))
    }

    /// Checks every field, fills in `defaults`, and builds the parameters. `peer` is the
    /// requester's address, the gateway's when `ip` is absent.
    pub fn into_params(
        self,
        peer: Option<IpAddr>,
        defaults: &GatewayDefaults,
    ) -> Result<GatewayParams, InvalidField> {
        let serial = self
            .serial_number
            .ok_or_else(|| InvalidField::new("serialNumber", "is required"))?;
        if serial.is_empty() {
            return Err(InvalidField::new("serialNumber", "must not be empty"));
        }
        let serial_number = EndpointName::from_str(&serial).map_err(|e| {
            InvalidField::new("serialNumber", format!("is not a valid endpoint name: {e}"))
        })?;

        let absent = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        let defaulted = Defaulted {
            api_address: absent(&self.api_address),
            gateway_services_address: absent(&self.gateway_services_address),
            hardware_version: absent(&self.hardware_version),
            radio_config: absent(&self.radio_config),
            led_config: absent(&self.led_config),
            category: absent(&self.category),
        };
        let ip = match non_empty(self.ip) {
            Some(text) => gateway_ip(&text)?,
            None => {
                let Some(peer) = peer else {
                    return Err(InvalidField::new("ip", "is required"));
                };
                gateway_ip(&peer.to_canonical().to_string()).map_err(|_| {
                    InvalidField::new(
                        "ip",
                        format!(
                            "is required: the requester's address {peer} cannot be a gateway's FCC address"
                        ),
                    )
                })?
            }
        };
        let port = match non_empty(self.port) {
            Some(text) => match text.parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => p as u16,
                _ => {
                    return Err(InvalidField::new(
                        "port",
                        format!(
                            "must be a TCP port number in 1..=65535, not `{}`",
                            truncate(&text)
                        ),
                    ));
                }
            },
            None => DEFAULT_FCC_PORT,
        };

        let url = |field, v: Option<String>, default: &HttpUrl| match non_empty(v) {
            Some(v) => HttpUrl::new(v).map_err(|e| InvalidField::new(field, e.to_string())),
            None => Ok(default.clone()),
        };
        let text = |field, v: Option<String>, default: &FieldText| match non_empty(v) {
            Some(v) => FieldText::new(v).map_err(|e| InvalidField::new(field, e.to_string())),
            None => Ok(default.clone()),
        };
        let category = match non_empty(self.category) {
            Some(v) => {
                let v =
                    FieldText::new(v).map_err(|e| InvalidField::new("category", e.to_string()))?;
                Category::from_str(v.as_str())
                    .map_err(|e| InvalidField::new("category", e.to_string()))?
            }
            None => defaults.category,
        };
        let verification_key = non_empty(self.verification_key)
            .map(FieldText::new)
            .transpose()
            .map_err(|e| InvalidField::new("verificationKey", e.to_string()))?;
        Ok(GatewayParams {
            serial_number,
            gateway: SocketAddr::new(ip, port),
            api_address: url("apiAddress", self.api_address, &defaults.api_address)?,
            gateway_services_address: url(
                "gatewayServicesAddress",
                self.gateway_services_address,
                &defaults.gateway_services_address,
            )?,
            hardware_version: text(
                "hardwareVersion",
                self.hardware_version,
                &defaults.hardware_version,
            )?,
            radio_config: text("radioConfig", self.radio_config, &defaults.radio_config)?,
            led_config: text("ledConfig", self.led_config, &defaults.led_config)?,
            category,
            verification_key,
            defaulted,
        })
    }
}

/// Empty counts as absent: old clients send `name=` for options they leave at the default.
fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

/// A gateway address must be a unicast address, IPv4 or IPv6 (the genuine FCC listens on IPv4,
/// but a simulator or another build may listen on IPv6); an IPv4-mapped IPv6 address is its IPv4
/// address, so `::ffff:10.0.0.2` and `10.0.0.2` are the same gateway.
fn gateway_ip(text: &str) -> Result<IpAddr, InvalidField> {
    let ip = IpAddr::from_str(text).map_err(|_| {
        InvalidField::new(
            "ip",
            format!("must be an IPv4 or IPv6 address, not `{}`", truncate(text)),
        )
    })?;
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => Err(
            InvalidField::new("ip", format!("must be a unicast address, not {v4}")),
        ),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Err(InvalidField::new(
            "ip",
            format!("must be a unicast address, not {v6}"),
        )),
        ip => Ok(ip),
    }
}

/// Echoes at most 64 characters of a rejected value.
fn truncate(text: &str) -> String {
    let mut t: String = text.chars().take(64).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> GatewayDefaults {
        GatewayDefaults {
            api_address: HttpUrl::new("https://api.example".into()).unwrap(),
            gateway_services_address: HttpUrl::new("https://gw.example".into()).unwrap(),
            hardware_version: FieldText::new("hw".into()).unwrap(),
            radio_config: FieldText::new("00".into()).unwrap(),
            led_config: FieldText::new("01".into()).unwrap(),
            category: Category::Production,
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> GatewayFields {
        GatewayFields::from_pairs(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn pairs_through_serde_with_defaults_once() {
        let f = fields(&[
            ("serialNumber", "GW-1"),
            ("ip", "10.0.0.7"),
            ("port", "4000"),
            ("ledConfig", ""),
            ("category", "development"),
            ("unknown", "ignored"),
        ]);
        let p = f.into_params(None, &defaults()).unwrap();
        assert_eq!(p.serial_number.as_str(), "GW-1");
        assert_eq!(p.gateway, "10.0.0.7:4000".parse().unwrap());
        assert_eq!(p.led_config, "01");
        assert_eq!(p.category, Category::Development);
        assert_eq!(p.api_address, "https://api.example");
        assert_eq!(p.verification_key, None);
        // Round trip through JSON.
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"serialNumber\":\"GW-1\""), "{json}");
        // Which fields took a default is not part of the JSON.
        let mut back = serde_json::from_str::<GatewayParams>(&json).unwrap();
        assert_eq!(back.defaulted, Defaulted::default());
        back.defaulted = p.defaulted;
        assert_eq!(back, p);
        assert!(p.defaulted.led_config && p.defaulted.api_address && !p.defaulted.category);
    }

    #[test]
    fn each_rule_names_its_field_with_the_api_text() {
        let peer = Some("127.0.0.1".parse().unwrap());
        let err = |pairs: &[(&str, &str)]| {
            let mut all = vec![("serialNumber", "GW-1")];
            all.extend_from_slice(pairs);
            let e = fields(&all).into_params(peer, &defaults()).unwrap_err();
            (e.field, e.reason)
        };
        assert_eq!(
            err(&[("ip", "224.0.0.1")]),
            ("ip", "must be a unicast address, not 224.0.0.1".into())
        );
        assert_eq!(
            err(&[("port", "0")]),
            (
                "port",
                "must be a TCP port number in 1..=65535, not `0`".into()
            )
        );
        assert_eq!(
            err(&[("radioConfig", "a\u{0}b")]),
            ("radioConfig", "must not contain control characters".into())
        );
        assert_eq!(
            err(&[("hardwareVersion", &"x".repeat(257))]),
            (
                "hardwareVersion",
                "has 257 characters, at most 256 are allowed".into()
            )
        );
        assert_eq!(
            err(&[("apiAddress", "ftp://x")]),
            ("apiAddress", "scheme `ftp` is not http(s)".into())
        );
        assert_eq!(
            err(&[("category", "staging")]),
            (
                "category",
                "`staging` is not `production` or `development`".into()
            )
        );
        let e = fields(&[("serialNumber", "")])
            .into_params(peer, &defaults())
            .unwrap_err();
        assert_eq!(
            (e.field, e.reason.as_str()),
            ("serialNumber", "must not be empty")
        );
        let e = fields(&[]).into_params(peer, &defaults()).unwrap_err();
        assert_eq!(
            (e.field, e.reason.as_str()),
            ("serialNumber", "is required")
        );
        // IPv6 gateways behave like IPv4 ones: the requester's address, or an explicit `ip`.
        let v6 = Some("fd00::7".parse().unwrap());
        let p = fields(&[("serialNumber", "GW-1")])
            .into_params(v6, &defaults())
            .unwrap();
        assert_eq!(p.gateway.ip(), "fd00::7".parse::<IpAddr>().unwrap());
        let p = fields(&[("serialNumber", "GW-1"), ("ip", "::1")])
            .into_params(peer, &defaults())
            .unwrap();
        assert_eq!(p.gateway.ip(), "::1".parse::<IpAddr>().unwrap());
        let p = fields(&[("serialNumber", "GW-1"), ("ip", "::ffff:10.0.0.2")])
            .into_params(peer, &defaults())
            .unwrap();
        assert_eq!(p.gateway.ip(), "10.0.0.2".parse::<IpAddr>().unwrap());
        for bad in ["::", "ff02::1"] {
            let e = fields(&[("serialNumber", "GW-1"), ("ip", bad)])
                .into_params(peer, &defaults())
                .unwrap_err();
            assert_eq!(e.field, "ip", "{bad}");
            assert!(e.reason.starts_with("must be a unicast address"), "{e}");
        }
    }

    #[test]
    fn request_keys_are_8_to_128_printable_ascii() {
        assert_eq!(
            RequestKey::new("abcdefgh".into()).unwrap().as_str(),
            "abcdefgh"
        );
        assert!(RequestKey::new("~".repeat(128)).is_ok());
        for bad in ["short", "has space", "tab\there", "é-accented", ""] {
            let e = RequestKey::new(bad.into()).unwrap_err();
            assert_eq!(e.field, "requestId", "{bad}");
        }
        let e = RequestKey::new("x".repeat(129)).unwrap_err();
        assert_eq!(e.reason, "has 129 characters; a request key has 8 to 128");
        let e = RequestKey::new("abcd efgh".into()).unwrap_err();
        assert!(
            e.reason.starts_with("contains  ;") || e.reason.contains("0x21"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn urls_are_kept_as_written() {
        let u = HttpUrl::new("https://a.example".into()).unwrap();
        assert_eq!(u.as_str(), "https://a.example");
        assert!(matches!(
            HttpUrl::new("not a url".into()),
            Err(UrlError::NotUrl(_))
        ));
    }
}
