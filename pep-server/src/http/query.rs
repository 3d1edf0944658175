//! Query-string decoding with errors that name the parameter.
//!
//! Written by hand instead of `serde_urlencoded` because the old API's clients need lenient *and*
//! precise handling at once: unknown parameters are ignored (old scripts send extra ones), while a
//! known parameter that is present but invalid — including bytes that are not UTF-8 after
//! percent-decoding, or the same parameter twice — is a 400 that names it.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use super::error::ApiError;
use crate::model::GatewayFields;

/// The decoded `name=value` pairs of one query string, in order.
#[derive(Debug, Default)]
pub(super) struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes `raw` (the part after `?`, not including it) as `application/x-www-form-urlencoded`.
    pub(super) fn parse(raw: Option<&str>) -> Result<QueryParams, ApiError> {
        let mut pairs = Vec::new();
        let Some(raw) = raw else {
            return Ok(QueryParams { pairs });
        };
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode_component(raw_name).map_err(|reason| {
                ApiError::bad_request(format!("a query parameter name is invalid: {reason}"))
            })?;
            let value =
                decode_component(raw_value).map_err(|reason| ApiError::bad_param(&name, reason))?;
            pairs.push((name, value));
        }
        Ok(QueryParams { pairs })
    }

    /// Already-decoded pairs (from a JSON body), validated by the same lookups.
    pub(super) fn from_pairs(pairs: Vec<(String, String)>) -> QueryParams {
        QueryParams { pairs }
    }

    /// The value of `name`, `None` if absent. A parameter given twice is an error: which of the two
    /// was meant cannot be guessed, and silently taking one hides a client bug.
    pub(super) fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self.pairs.iter().filter(|(n, _)| n == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::bad_param(name, "is given more than once"));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// The gateway request fields, through serde. Each known field given twice is refused first,
    /// by name (serde would report it in its own words); unknown names are ignored.
    pub(super) fn gateway_fields(self) -> Result<GatewayFields, ApiError> {
        for name in GatewayFields::NAMES {
            self.get(name)?;
        }
        GatewayFields::from_pairs(self.pairs).map_err(|e| ApiError::bad_param(e.field, e.reason))
    }

    /// Like [`get`](Self::get), but an empty value counts as absent: old clients send `name=` for
    /// options they leave at the default.
    pub(super) fn get_non_empty(&self, name: &str) -> Result<Option<&str>, ApiError> {
        Ok(self.get(name)?.filter(|v| !v.is_empty()))
    }
}

/// Percent-decodes one component (`+` is a space) and checks the bytes are UTF-8.
fn decode_component(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => {
                        return Err(
                            "has a malformed percent-escape (expected % and two hex digits)",
                        );
                    }
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "is not valid UTF-8 after percent-decoding")
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_escapes() {
        let q = QueryParams::parse(Some("serialNumber=GW%2D1+a&x=%C3%A9")).unwrap();
        assert_eq!(q.get("serialNumber").unwrap(), Some("GW-1 a"));
        assert_eq!(q.get("x").unwrap(), Some("é"));
        assert_eq!(q.get("absent").unwrap(), None);
    }

    #[test]
    fn rejects_non_utf8_naming_the_parameter() {
        let err = QueryParams::parse(Some("serialNumber=%FF%FE")).unwrap_err();
        assert_eq!(err.parameter(), Some("serialNumber"));
    }

    #[test]
    fn rejects_bad_escape_and_duplicates() {
        assert!(QueryParams::parse(Some("port=%G1")).is_err());
        assert!(QueryParams::parse(Some("port=%1")).is_err());
        let q = QueryParams::parse(Some("port=1&port=2")).unwrap();
        assert_eq!(q.get("port").unwrap_err().parameter(), Some("port"));
    }

    #[test]
    fn gateway_fields_refuse_duplicates_by_name_and_ignore_unknown_names() {
        let q = QueryParams::parse(Some("serialNumber=A&x=1&x=2&ledConfig=%2B")).unwrap();
        let f = q.gateway_fields().unwrap();
        assert_eq!(f.serial_number.as_deref(), Some("A"));
        assert_eq!(f.led_config.as_deref(), Some("+"));
        assert_eq!(f.port, None);
        let q = QueryParams::parse(Some("serialNumber=A&ip=1.2.3.4&ip=1.2.3.4")).unwrap();
        let e = q.gateway_fields().unwrap_err();
        assert_eq!(e.parameter(), Some("ip"));
        assert_eq!(e.message(), "parameter `ip` is given more than once");
    }

    #[test]
    fn empty_value_is_absent_for_optional_lookups() {
        let q = QueryParams::parse(Some("apiAddress=&&flag")).unwrap();
        assert_eq!(q.get("apiAddress").unwrap(), Some(""));
        assert_eq!(q.get_non_empty("apiAddress").unwrap(), None);
        assert_eq!(q.get("flag").unwrap(), Some(""));
    }
}
