//! The response body (docs/protocol.md §3): typed model, byte-exact encoder, tolerant decoder.
//!
//! The encoder reproduces the genuine FCC layout (§3.1): an indefinite top map (`0xbf … 0xff`)
//! with definite text keys in the order `Csrs`, `SchemeVersion`, `SID`, `ReturnStatus`,
//! `InfoMessage`, `WarningInfo`, shortest-form integers, and `Csrs` as a definite array of
//! indefinite `{PrKN, Data}` maps. The decoder accepts definite or indefinite maps and any key
//! order, ignores unknown keys, and requires `SchemeVersion`, `ReturnStatus` and `InfoMessage`.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::bundle::keys;
use crate::cbor::{Kind, Reader, Writer};
use crate::error::FccError;
use crate::status::FccStatus;

/// InfoMessage of every successful response (§3.2), with its trailing newline.
pub const SUCCESS_MESSAGE: &str = "The Factory process succeeded\n";

/// A CSR produced by the device for one `CsrReqs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrResponse {
    /// The name under which the device stored the generated private key (`PrKN`).
    pub private_key_name: String,
    /// The DER PKCS#10 request (`Data`).
    pub der: Vec<u8>,
}

/// A decoded (or to-be-encoded) response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `Csrs`, present only after successful CSR processing.
    pub csrs: Vec<CsrResponse>,
    /// `SchemeVersion`, always `"0.0.1"` from the genuine FCC.
    pub scheme_version: String,
    /// `SID`, echoed if the request's `SID` was parsed.
    pub sid: Option<String>,
    /// `ReturnStatus`.
    pub return_status: FccStatus,
    /// `InfoMessage`: [`SUCCESS_MESSAGE`] or `<prefix><item name>` of the first error.
    pub info_message: String,
    /// `WarningInfo` split into lines, without their `"\n"`.
    pub warnings: Vec<String>,
}

impl Response {
    /// A success response (`ReturnStatus` 0, [`SUCCESS_MESSAGE`]) with scheme `"0.0.1"`.
    pub fn success(sid: Option<String>) -> Self {
        Response {
            csrs: Vec::new(),
            scheme_version: keys::SCHEME_VERSION.to_owned(),
            sid,
            return_status: FccStatus::Success,
            info_message: SUCCESS_MESSAGE.to_owned(),
            warnings: Vec::new(),
        }
    }

    /// An error response with scheme `"0.0.1"` and the given status and InfoMessage.
    pub fn error(sid: Option<String>, status: FccStatus, info_message: impl Into<String>) -> Self {
        Response {
            csrs: Vec::new(),
            scheme_version: keys::SCHEME_VERSION.to_owned(),
            sid,
            return_status: status,
            info_message: info_message.into(),
            warnings: Vec::new(),
        }
    }

    /// True when `ReturnStatus` is 0.
    pub fn is_success(&self) -> bool {
        self.return_status == FccStatus::Success
    }

    /// The `WarningInfo` text: every warning followed by `"\n"`, concatenated.
    pub fn warning_info(&self) -> String {
        let mut out = String::with_capacity(self.warnings.iter().map(|w| w.len() + 1).sum());
        for w in &self.warnings {
            out.push_str(w);
            out.push('\n');
        }
        out
    }

    /// Encodes the body exactly as the genuine FCC lays it out (§3.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(128 + self.csrs.iter().map(|c| c.der.len() + 48).sum::<usize>());
        w.map_indefinite();
        if !self.csrs.is_empty() {
            w.text(keys::CSRS_KEY);
            w.array(self.csrs.len());
            for csr in &self.csrs {
                w.map_indefinite();
                w.text(keys::PRIVATE_KEY_NAME_KEY);
                w.text(&csr.private_key_name);
                w.text(keys::DATA_KEY);
                w.bytes(&csr.der);
                w.end();
            }
        }
        w.text(keys::SCHEME_VERSION_KEY);
        w.text(&self.scheme_version);
        if let Some(sid) = &self.sid {
            w.text(keys::SID_KEY);
            w.text(sid);
        }
        w.text(keys::RETURN_STATUS_KEY);
        w.uint(u64::from(self.return_status.as_u32()));
        w.text(keys::INFO_MESSAGE_KEY);
        w.text(&self.info_message);
        if !self.warnings.is_empty() {
            w.text(keys::WARNING_INFO_KEY);
            w.text(&self.warning_info());
        }
        w.end();
        w.into_inner()
    }

    /// Decodes a response body. Definite and indefinite maps are both accepted; unknown keys are
    /// skipped; a duplicate known key is an error.
    pub fn decode(body: &[u8]) -> Result<Response, FccError> {
        let mut r = Reader::new(body);
        expect(&r, Kind::Map, "response", || {
            FccError::UndecodableCbor("response: top-level item is not a map".into())
        })?;
        let mut it = r.map_start("response")?;
        let mut csrs = None;
        let mut scheme_version = None;
        let mut sid = None;
        let mut return_status = None;
        let mut info_message = None;
        let mut warning_info: Option<&str> = None;
        while r.next_entry(&mut it, "response")? {
            expect(&r, Kind::Text, "response key", || {
                FccError::InvalidResponse("a top-level key is not a text string".into())
            })?;
            let key = r.text("response key")?;
            match key {
                keys::CSRS_KEY => set_once(&mut csrs, decode_csrs(&mut r)?, key)?,
                keys::SCHEME_VERSION_KEY => {
                    set_once(&mut scheme_version, r.text(key)?.to_owned(), key)?
                }
                keys::SID_KEY => set_once(&mut sid, r.text(key)?.to_owned(), key)?,
                keys::RETURN_STATUS_KEY => {
                    let v = r.uint(key)?;
                    let v = u32::try_from(v).map_err(|_| {
                        FccError::InvalidResponse(format!("ReturnStatus {v} does not fit 32 bits"))
                    })?;
                    set_once(&mut return_status, FccStatus::from_u32(v), key)?
                }
                keys::INFO_MESSAGE_KEY => {
                    set_once(&mut info_message, r.text(key)?.to_owned(), key)?
                }
                keys::WARNING_INFO_KEY => set_once(&mut warning_info, r.text(key)?, key)?,
                _ => r.skip("unknown response field")?,
            }
        }
        r.finish("response")?;
        let missing = |k: &str| FccError::InvalidResponse(format!("missing {k}"));
        Ok(Response {
            csrs: csrs.unwrap_or_default(),
            scheme_version: scheme_version.ok_or_else(|| missing(keys::SCHEME_VERSION_KEY))?,
            sid,
            return_status: return_status.ok_or_else(|| missing(keys::RETURN_STATUS_KEY))?,
            info_message: info_message.ok_or_else(|| missing(keys::INFO_MESSAGE_KEY))?,
            warnings: warning_info.map(split_warnings).unwrap_or_default(),
        })
    }
}

/// Splits `WarningInfo` into lines; each warning ends with `"\n"`.
fn split_warnings(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n').map(str::to_owned).collect()
}

/// Fails with `wrong()` unless the next item is a `kind` (each place names its own error).
fn expect(
    r: &Reader<'_>,
    kind: Kind,
    ctx: &str,
    wrong: impl FnOnce() -> FccError,
) -> Result<(), FccError> {
    if r.peek_kind(ctx)? != kind {
        return Err(wrong());
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), FccError> {
    if slot.is_some() {
        return Err(FccError::InvalidResponse(format!("duplicate key {key}")));
    }
    *slot = Some(value);
    Ok(())
}

fn decode_csrs(r: &mut Reader<'_>) -> Result<Vec<CsrResponse>, FccError> {
    expect(r, Kind::Array, "Csrs", || {
        FccError::InvalidResponse("Csrs is not an array".into())
    })?;
    let mut it = r.array_start("Csrs")?;
    let mut out = Vec::new();
    while r.next_entry(&mut it, "Csrs")? {
        expect(r, Kind::Map, "Csrs entry", || {
            FccError::InvalidResponse("a Csrs entry is not a map".into())
        })?;
        let mut m = r.map_start("Csrs entry")?;
        let mut name = None;
        let mut der = None;
        while r.next_entry(&mut m, "Csrs entry")? {
            let key = r.text("Csrs entry key")?;
            match key {
                keys::PRIVATE_KEY_NAME_KEY => set_once(&mut name, r.text(key)?.to_owned(), key)?,
                keys::DATA_KEY => set_once(&mut der, r.bytes(key)?.to_vec(), key)?,
                _ => r.skip("unknown Csrs entry field")?,
            }
        }
        out.push(CsrResponse {
            private_key_name: name
                .ok_or_else(|| FccError::InvalidResponse("Csrs entry without PrKN".into()))?,
            der: der.ok_or_else(|| FccError::InvalidResponse("Csrs entry without Data".into()))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_split_and_join() {
        let mut resp = Response::success(Some("s".into()));
        resp.warnings = vec![
            "Item not set:mbed.ClassId".into(),
            "Item not set:mbed.VendorId".into(),
        ];
        assert_eq!(
            resp.warning_info(),
            "Item not set:mbed.ClassId\nItem not set:mbed.VendorId\n"
        );
        let back = Response::decode(&resp.encode()).unwrap();
        assert_eq!(back, resp);
        assert_eq!(split_warnings(""), Vec::<String>::new());
        assert_eq!(split_warnings("\n"), vec![String::new()]);
        assert_eq!(split_warnings("a"), vec!["a".to_owned()]);
    }

    #[test]
    fn csrs_round_trip_and_layout() {
        let mut resp = Response::success(Some("s-42".into()));
        resp.csrs = vec![CsrResponse {
            private_key_name: "k".into(),
            der: vec![0x30, 0x00],
        }];
        let enc = resp.encode();
        // {_ "Csrs": [ {_ "PrKN": "k", "Data": h'3000' } ], ...
        assert!(enc.starts_with(b"\xbf\x64Csrs\x81\xbf\x64PrKN\x61k\x64Data\x42\x30\x00\xff"));
        assert_eq!(*enc.last().unwrap(), 0xff);
        assert_eq!(Response::decode(&enc).unwrap(), resp);
    }

    #[test]
    fn decode_accepts_definite_maps_and_unknown_keys() {
        // {"ReturnStatus": 20, "X": [1], "InfoMessage": "General error:", "SchemeVersion": "0.0.1"}
        let mut w = Writer::new(64);
        w.map(4);
        w.text("ReturnStatus");
        w.uint(20);
        w.text("X");
        w.array(1);
        w.uint(1);
        w.text("InfoMessage");
        w.text("General error:");
        w.text("SchemeVersion");
        w.text("0.0.1");
        let resp = Response::decode(&w.into_inner()).unwrap();
        assert_eq!(resp.return_status, FccStatus::BundleError);
        assert!(!resp.is_success());
        assert_eq!(resp.info_message, "General error:");
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let err = Response::decode(b"\xbf\x6cReturnStatus\x00\xff").unwrap_err();
        assert!(err.to_string().contains("missing SchemeVersion"), "{err}");
        let err = Response::decode(b"\x80").unwrap_err();
        assert!(matches!(err, FccError::UndecodableCbor(_)), "{err}");
        let err = Response::decode(b"\xbf\x6cReturnStatus").unwrap_err();
        assert!(matches!(err, FccError::UndecodableCbor(_)), "{err}");
        let err = Response::decode(b"\xa1\x6cReturnStatus\x61x").unwrap_err();
        assert!(matches!(err, FccError::UndecodableCbor(_)), "{err}");
        let err = Response::decode(b"\xa0\x00").unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        let err = Response::decode(b"").unwrap_err();
        assert!(matches!(err, FccError::UndecodableCbor(_)), "{err}");
        let err = Response::decode(b"\xa1\x01\x02").unwrap_err();
        assert!(matches!(err, FccError::InvalidResponse(_)), "{err}");
    }
}
