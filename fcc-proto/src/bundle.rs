//! The request bundle (docs/protocol.md §2): typed model, encoder following the tool checklist (§8),
//! strict decoder.
//!
//! Encoding choices, all from §8 / §0.1:
//! * the top map is definite-length and has at most 12 pairs;
//! * group order is `SchemeVersion`, `SID`, `Entropy`, `ROT`, `Keys`, `Certificates`,
//!   `CertificateChains`, `ConfigParams`, `CsrReqs`, `Verify`, `Disable`, `KpAlvSess` — FCC
//!   applies groups in encoding order, so keys are stored before a certificate's `PrKN` refers
//!   to them, and `SID` is echoed even when a later group fails; empty groups are omitted;
//! * all strings and containers are definite-length, integers shortest-form;
//! * flags are CBOR integers 0/1, never CBOR booleans (FCC rejects `true`);
//! * keys and certificates carry `Format: "der"`; config params never carry `Format`; no item
//!   ever carries `ACL` (both give status 37).
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt;

use zeroize::Zeroizing;

use crate::cbor::{Kind, Reader, Writer};
use crate::error::FccError;

/// The bundle's group and field keys, and the fixed string values of the schema.
pub mod keys {
    /// The only scheme version FCC accepts.
    pub const SCHEME_VERSION: &str = "0.0.1";

    /// Top-level: scheme version (text, mandatory).
    pub const SCHEME_VERSION_KEY: &str = "SchemeVersion";
    /// Top-level: FCU session id (text), echoed in the response.
    pub const SID_KEY: &str = "SID";
    /// Top-level: array of key items.
    pub const KEYS_KEY: &str = "Keys";
    /// Top-level: array of certificate items.
    pub const CERTIFICATES_KEY: &str = "Certificates";
    /// Top-level: array of certificate chain items.
    pub const CERTIFICATE_CHAINS_KEY: &str = "CertificateChains";
    /// Top-level: array of config param items.
    pub const CONFIG_PARAMS_KEY: &str = "ConfigParams";
    /// Top-level: 48 bytes of entropy.
    pub const ENTROPY_KEY: &str = "Entropy";
    /// Top-level: 16-byte root of trust.
    pub const ROT_KEY: &str = "ROT";
    /// Top-level flag: run device verification (default 1).
    pub const VERIFY_KEY: &str = "Verify";
    /// Top-level flag: disable the factory flow after success (default 0).
    pub const DISABLE_KEY: &str = "Disable";
    /// Top-level flag: keep the session open after this message (default 0).
    pub const KEEP_ALIVE_KEY: &str = "KpAlvSess";
    /// Top-level: array of CSR requests.
    pub const CSR_REQUESTS_KEY: &str = "CsrReqs";

    /// Item field: item name.
    pub const NAME_KEY: &str = "Name";
    /// Key item field: key type.
    pub const TYPE_KEY: &str = "Type";
    /// Key/certificate item field: data format (always [`DER_FORMAT`]).
    pub const FORMAT_KEY: &str = "Format";
    /// Item field: data (bytes, or a variant for config params).
    pub const DATA_KEY: &str = "Data";
    /// Chain item field: array of DER certificates, leaf first.
    pub const DATA_ARRAY_KEY: &str = "DataArray";
    /// Certificate / CSR field: private key name.
    pub const PRIVATE_KEY_NAME_KEY: &str = "PrKN";
    /// Item field FCC rejects with status 37; never sent.
    pub const ACL_KEY: &str = "ACL";
    /// CSR request field: mbedTLS subject string.
    pub const SUBJECT_KEY: &str = "Subj";
    /// CSR request field: message digest (1 = SHA-256).
    pub const MD_KEY: &str = "MD";
    /// CSR request field: extensions map.
    pub const EXTENSIONS_KEY: &str = "Ext";
    /// CSR extension field: key usage bitmask.
    pub const KEY_USAGE_KEY: &str = "KU";
    /// CSR extension field: extended key usage bitmask.
    pub const EXT_KEY_USAGE_KEY: &str = "EKU";
    /// CSR extension field FCC ignores.
    pub const TRUST_KEY: &str = "Trust";
    /// CSR request field: storage medium map.
    pub const STORAGE_MEDIUM_KEY: &str = "SM";

    /// Response: array of generated CSRs.
    pub const CSRS_KEY: &str = "Csrs";
    /// Response: `fcc_status_e` value.
    pub const RETURN_STATUS_KEY: &str = "ReturnStatus";
    /// Response: success text or first error.
    pub const INFO_MESSAGE_KEY: &str = "InfoMessage";
    /// Response: warnings, each followed by `"\n"`.
    pub const WARNING_INFO_KEY: &str = "WarningInfo";

    /// `Type` value of a private key item.
    pub const ECC_PRIVATE_TYPE: &str = "ECCPrivate";
    /// `Type` value of a public key item.
    pub const ECC_PUBLIC_TYPE: &str = "ECCPublic";
    /// The only `Format` value FCC accepts (lower case).
    pub const DER_FORMAT: &str = "der";

    /// FCC's limit on top-level pairs (`FCC_MAX_KEYS_IN_MAP`).
    pub const MAX_TOP_LEVEL_PAIRS: usize = 12;
    /// FCC's limit on CSR requests per message (`CSR_MAX_NUMBER_OF_CSRS`).
    pub const MAX_CSR_REQUESTS: usize = 5;
    /// FCC's limit on certificates per chain.
    pub const MAX_CHAIN_LEN: usize = 5;
    /// Exact `Entropy` size.
    pub const ENTROPY_LEN: usize = 48;
    /// Exact `ROT` size.
    pub const ROT_LEN: usize = 16;
}

/// The type of a key item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `ECCPrivate`: a P-256 private key (SEC1 or PKCS#8 DER).
    EccPrivate,
    /// `ECCPublic`: a P-256 public key (SubjectPublicKeyInfo DER).
    EccPublic,
}

impl KeyType {
    /// The `Type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EccPrivate => keys::ECC_PRIVATE_TYPE,
            KeyType::EccPublic => keys::ECC_PUBLIC_TYPE,
        }
    }
}

/// A `Keys` item. The key bytes are zeroized on drop and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyItem {
    /// Item name, e.g. [`crate::names::BOOTSTRAP_DEVICE_PRIVATE_KEY`].
    pub name: String,
    /// Private or public.
    pub key_type: KeyType,
    /// DER bytes.
    pub data: Zeroizing<Vec<u8>>,
}

impl KeyItem {
    /// A private key item.
    pub fn private(name: impl Into<String>, der: Zeroizing<Vec<u8>>) -> Self {
        KeyItem {
            name: name.into(),
            key_type: KeyType::EccPrivate,
            data: der,
        }
    }
}

impl fmt::Debug for KeyItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyItem")
            .field("name", &self.name)
            .field("key_type", &self.key_type)
            .field(
                "data",
                &format_args!("<{} bytes redacted>", self.data.len()),
            )
            .finish()
    }
}

/// A `Certificates` item: one DER certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateItem {
    /// Item name.
    pub name: String,
    /// The DER certificate.
    pub der: Vec<u8>,
    /// `PrKN`: a stored private key the certificate must match.
    pub private_key_name: Option<String>,
}

/// A `CertificateChains` item: 1–5 DER certificates, leaf first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateChainItem {
    /// Item name.
    pub name: String,
    /// The DER certificates, leaf first.
    pub ders: Vec<Vec<u8>>,
    /// `PrKN`: a stored private key the leaf must match.
    pub private_key_name: Option<String>,
}

/// The `Data` of a config param.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// Text string (stored as raw UTF-8).
    Text(String),
    /// Byte string (stored raw), e.g. the 16-byte class and vendor ids.
    Bytes(Vec<u8>),
    /// Unsigned integer (stored as 8 bytes LE, or 4 for the special names).
    Uint(u64),
    /// Signed integer. Non-negative values are encoded as CBOR unsigned integers (CBOR has no
    /// other form), so they decode back as [`ConfigValue::Uint`].
    Int(i64),
}

/// A `ConfigParams` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigParam {
    /// Item name, e.g. [`crate::names::ENDPOINT_NAME`].
    pub name: String,
    /// The value.
    pub value: ConfigValue,
}

impl ConfigParam {
    /// A text param.
    pub fn text(name: impl Into<String>, value: impl Into<String>) -> Self {
        ConfigParam {
            name: name.into(),
            value: ConfigValue::Text(value.into()),
        }
    }

    /// An unsigned integer param.
    pub fn uint(name: impl Into<String>, value: u64) -> Self {
        ConfigParam {
            name: name.into(),
            value: ConfigValue::Uint(value),
        }
    }

    /// A signed integer param.
    pub fn int(name: impl Into<String>, value: i64) -> Self {
        ConfigParam {
            name: name.into(),
            value: ConfigValue::Int(value),
        }
    }

    /// A byte-string param.
    pub fn bytes(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        ConfigParam {
            name: name.into(),
            value: ConfigValue::Bytes(value.into()),
        }
    }
}

/// A `CsrReqs` entry: asks the device to generate a key and a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrRequest {
    /// `PrKN`: name for the generated private key.
    pub private_key_name: String,
    /// `Subj`: mbedTLS subject string, e.g. `CN=<endpoint>`.
    pub subject: String,
    /// `MD`: message digest, 1 = SHA-256.
    pub md: u64,
    /// `Ext.KU` bitmask.
    pub key_usage: Option<u64>,
    /// `Ext.EKU` bitmask.
    pub ext_key_usage: Option<u64>,
}

/// A request bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `SchemeVersion`, `"0.0.1"`.
    pub scheme_version: String,
    /// `SID`.
    pub sid: Option<String>,
    /// `Keys`.
    pub keys: Vec<KeyItem>,
    /// `Certificates`.
    pub certificates: Vec<CertificateItem>,
    /// `CertificateChains`.
    pub certificate_chains: Vec<CertificateChainItem>,
    /// `ConfigParams`.
    pub config_params: Vec<ConfigParam>,
    /// `Entropy` (write-once on the device: first message only).
    pub entropy: Option<[u8; 48]>,
    /// `ROT` (write-once on the device: first message only).
    pub rot: Option<[u8; 16]>,
    /// `CsrReqs`.
    pub csr_requests: Vec<CsrRequest>,
    /// `Verify` (device default: true).
    pub verify: Option<bool>,
    /// `Disable` (device default: false).
    pub disable: Option<bool>,
    /// `KpAlvSess` (device default: false = final message).
    pub keep_alive: Option<bool>,
}

impl Default for Bundle {
    fn default() -> Self {
        Bundle {
            scheme_version: keys::SCHEME_VERSION.to_owned(),
            sid: None,
            keys: Vec::new(),
            certificates: Vec::new(),
            certificate_chains: Vec::new(),
            config_params: Vec::new(),
            entropy: None,
            rot: None,
            csr_requests: Vec::new(),
            verify: None,
            disable: None,
            keep_alive: None,
        }
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Entropy and the root of trust are secrets like the keys.
        let redact = |present: bool| if present { Some("<redacted>") } else { None };
        f.debug_struct("Bundle")
            .field("scheme_version", &self.scheme_version)
            .field("sid", &self.sid)
            .field("keys", &self.keys)
            .field("certificates", &self.certificates)
            .field("certificate_chains", &self.certificate_chains)
            .field("config_params", &self.config_params)
            .field("entropy", &redact(self.entropy.is_some()))
            .field("rot", &redact(self.rot.is_some()))
            .field("csr_requests", &self.csr_requests)
            .field("verify", &self.verify)
            .field("disable", &self.disable)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

fn flag(v: bool) -> u64 {
    u64::from(v)
}

impl Bundle {
    /// Number of top-level pairs [`Bundle::encode`] writes.
    pub fn top_level_pairs(&self) -> usize {
        1 + usize::from(self.sid.is_some())
            + usize::from(self.entropy.is_some())
            + usize::from(self.rot.is_some())
            + usize::from(!self.keys.is_empty())
            + usize::from(!self.certificates.is_empty())
            + usize::from(!self.certificate_chains.is_empty())
            + usize::from(!self.config_params.is_empty())
            + usize::from(!self.csr_requests.is_empty())
            + usize::from(self.verify.is_some())
            + usize::from(self.disable.is_some())
            + usize::from(self.keep_alive.is_some())
    }

    /// A generous size estimate, so the secret writer rarely has to grow.
    fn size_hint(&self) -> usize {
        let items = self
            .keys
            .iter()
            .map(|k| k.data.len() + k.name.len() + 40)
            .sum::<usize>()
            + self
                .certificates
                .iter()
                .map(|c| c.der.len() + c.name.len() + 48)
                .sum::<usize>()
            + self
                .certificate_chains
                .iter()
                .map(|c| c.ders.iter().map(|d| d.len() + 5).sum::<usize>() + c.name.len() + 56)
                .sum::<usize>()
            + self
                .config_params
                .iter()
                .map(|p| {
                    p.name.len()
                        + 24
                        + match &p.value {
                            ConfigValue::Text(t) => t.len(),
                            ConfigValue::Bytes(b) => b.len(),
                            ConfigValue::Uint(_) | ConfigValue::Int(_) => 9,
                        }
                })
                .sum::<usize>()
            + self
                .csr_requests
                .iter()
                .map(|c| c.private_key_name.len() + c.subject.len() + 64)
                .sum::<usize>();
        256 + items + self.sid.as_ref().map_or(0, String::len)
    }

    /// Encodes the bundle as CBOR following §8 (see the module doc). The result contains the
    /// device private key if `keys` has one: wrap it in [`Zeroizing`] or zeroize it after use.
    pub fn encode(&self) -> Result<Vec<u8>, FccError> {
        let pairs = self.top_level_pairs();
        if pairs > keys::MAX_TOP_LEVEL_PAIRS {
            return Err(FccError::InvalidBundle(format!(
                "{pairs} top-level pairs, FCC accepts at most {}",
                keys::MAX_TOP_LEVEL_PAIRS
            )));
        }
        let mut w = Writer::secret(self.size_hint());
        w.map(pairs);
        w.text(keys::SCHEME_VERSION_KEY);
        w.text(&self.scheme_version);
        if let Some(sid) = &self.sid {
            w.text(keys::SID_KEY);
            w.text(sid);
        }
        if let Some(entropy) = &self.entropy {
            w.text(keys::ENTROPY_KEY);
            w.bytes(entropy);
        }
        if let Some(rot) = &self.rot {
            w.text(keys::ROT_KEY);
            w.bytes(rot);
        }
        put_group(&mut w, keys::KEYS_KEY, &self.keys, put_key);
        put_group(&mut w, keys::CERTIFICATES_KEY, &self.certificates, put_cert);
        put_group(
            &mut w,
            keys::CERTIFICATE_CHAINS_KEY,
            &self.certificate_chains,
            put_chain,
        );
        put_group(
            &mut w,
            keys::CONFIG_PARAMS_KEY,
            &self.config_params,
            put_param,
        );
        put_group(&mut w, keys::CSR_REQUESTS_KEY, &self.csr_requests, put_csr);
        for (key, value) in [
            (keys::VERIFY_KEY, self.verify),
            (keys::DISABLE_KEY, self.disable),
            (keys::KEEP_ALIVE_KEY, self.keep_alive),
        ] {
            if let Some(v) = value {
                w.text(key);
                w.uint(flag(v));
            }
        }
        Ok(w.into_inner())
    }

    /// Strict typed decode: a definite top map of at most 12 pairs with exact, known, unique
    /// keys and the types [`Bundle::encode`] writes. Anything else is an error naming the field.
    /// (The device itself is more lenient in places, see §2.2; this is for round trips and
    /// tests.)
    pub fn decode(body: &[u8]) -> Result<Bundle, FccError> {
        let mut r = Reader::new(body);
        expect_kind(&r, Kind::Map, "bundle")?;
        let mut it = r.map_start("bundle")?;
        match it.len() {
            None => return Err(invalid("the top-level map is indefinite-length")),
            Some(n) if n > keys::MAX_TOP_LEVEL_PAIRS => {
                return Err(invalid(format!(
                    "{n} top-level pairs: more than {} are not accepted",
                    keys::MAX_TOP_LEVEL_PAIRS
                )));
            }
            Some(_) => {}
        }
        let mut b = Bundle {
            scheme_version: String::new(),
            ..Bundle::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        while r.next_entry(&mut it, "bundle")? {
            expect_kind(&r, Kind::Text, "top-level key")?;
            let key = r.text("top-level key")?;
            if seen.contains(&key) {
                return Err(invalid(format!("duplicate top-level key {key}")));
            }
            match key {
                keys::SCHEME_VERSION_KEY => b.scheme_version = text(&mut r, key)?,
                keys::SID_KEY => b.sid = Some(text(&mut r, key)?),
                keys::ENTROPY_KEY => b.entropy = Some(fixed_bytes(&mut r, key)?),
                keys::ROT_KEY => b.rot = Some(fixed_bytes(&mut r, key)?),
                keys::KEYS_KEY => b.keys = items(&mut r, key, decode_key_item)?,
                keys::CERTIFICATES_KEY => b.certificates = items(&mut r, key, decode_cert_item)?,
                keys::CERTIFICATE_CHAINS_KEY => {
                    b.certificate_chains = items(&mut r, key, decode_chain_item)?
                }
                keys::CONFIG_PARAMS_KEY => b.config_params = items(&mut r, key, decode_param)?,
                keys::CSR_REQUESTS_KEY => b.csr_requests = items(&mut r, key, decode_csr)?,
                keys::VERIFY_KEY => b.verify = Some(decode_flag(&mut r, key)?),
                keys::DISABLE_KEY => b.disable = Some(decode_flag(&mut r, key)?),
                keys::KEEP_ALIVE_KEY => b.keep_alive = Some(decode_flag(&mut r, key)?),
                other => return Err(invalid(format!("unknown top-level group {other:?}"))),
            }
            seen.push(key);
        }
        r.finish("bundle")?;
        if !seen.contains(&keys::SCHEME_VERSION_KEY) {
            return Err(invalid("missing SchemeVersion"));
        }
        Ok(b)
    }
}

fn invalid(msg: impl Into<String>) -> FccError {
    FccError::InvalidBundle(msg.into())
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Uint => "an unsigned integer",
        Kind::Negative => "a negative integer",
        Kind::Bytes => "a byte string",
        Kind::Text => "a text string",
        Kind::Array => "an array",
        Kind::Map => "a map",
        Kind::Tag => "a tagged item",
        Kind::Simple => "a simple value or float",
    }
}

fn expect_kind(r: &Reader<'_>, want: Kind, what: &str) -> Result<(), FccError> {
    let got = r.peek_kind(what)?;
    if got != want {
        return Err(invalid(format!(
            "{what} must be {}, found {}",
            kind_name(want),
            kind_name(got)
        )));
    }
    Ok(())
}

fn text(r: &mut Reader<'_>, what: &str) -> Result<String, FccError> {
    expect_kind(r, Kind::Text, what)?;
    Ok(r.text(what)?.to_owned())
}

fn bytes(r: &mut Reader<'_>, what: &str) -> Result<Vec<u8>, FccError> {
    expect_kind(r, Kind::Bytes, what)?;
    Ok(r.bytes(what)?.to_vec())
}

fn fixed_bytes<const N: usize>(r: &mut Reader<'_>, what: &str) -> Result<[u8; N], FccError> {
    expect_kind(r, Kind::Bytes, what)?;
    let b = r.bytes(what)?;
    <[u8; N]>::try_from(b)
        .map_err(|_| invalid(format!("{what} must be exactly {N} bytes, got {}", b.len())))
}

fn uint(r: &mut Reader<'_>, what: &str) -> Result<u64, FccError> {
    expect_kind(r, Kind::Uint, what)?;
    r.uint(what)
}

fn decode_flag(r: &mut Reader<'_>, what: &str) -> Result<bool, FccError> {
    match uint(r, what)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(invalid(format!("{what} must be 0 or 1, got {v}"))),
    }
}

/// Decodes an array of maps, calling `item` once per map with the map's iterator ready.
fn items<T>(
    r: &mut Reader<'_>,
    group: &str,
    item: fn(&mut Reader<'_>, &str) -> Result<T, FccError>,
) -> Result<Vec<T>, FccError> {
    expect_kind(r, Kind::Array, group)?;
    let mut it = r.array_start(group)?;
    let mut out = Vec::new();
    while r.next_entry(&mut it, group)? {
        expect_kind(r, Kind::Map, group)?;
        out.push(item(r, group)?);
    }
    Ok(out)
}

/// Iterates the fields of an item map, rejecting duplicates and non-text keys.
fn fields<'de>(
    r: &mut Reader<'de>,
    group: &str,
    mut field: impl FnMut(&mut Reader<'de>, &'de str) -> Result<(), FccError>,
) -> Result<(), FccError> {
    let mut it = r.map_start(group)?;
    let mut seen: Vec<&str> = Vec::new();
    while r.next_entry(&mut it, group)? {
        expect_kind(r, Kind::Text, "field key")?;
        let key = r.text("field key")?;
        if seen.contains(&key) {
            return Err(invalid(format!("duplicate field {key} in a {group} item")));
        }
        seen.push(key);
        field(r, key)?;
    }
    Ok(())
}

fn unknown_field(group: &str, key: &str) -> FccError {
    invalid(format!("unknown field {key:?} in a {group} item"))
}

fn required<T>(v: Option<T>, group: &str, field: &str) -> Result<T, FccError> {
    v.ok_or_else(|| invalid(format!("a {group} item has no {field}")))
}

fn check_format(r: &mut Reader<'_>) -> Result<(), FccError> {
    let f = text(r, keys::FORMAT_KEY)?;
    if f != keys::DER_FORMAT {
        return Err(invalid(format!("Format must be \"der\", got {f:?}")));
    }
    Ok(())
}

fn decode_key_item(r: &mut Reader<'_>, group: &str) -> Result<KeyItem, FccError> {
    let (mut name, mut key_type, mut data) = (None, None, None);
    fields(r, group, |r, key| {
        match key {
            keys::NAME_KEY => name = Some(text(r, key)?),
            keys::TYPE_KEY => {
                key_type = Some(match text(r, key)?.as_str() {
                    keys::ECC_PRIVATE_TYPE => KeyType::EccPrivate,
                    keys::ECC_PUBLIC_TYPE => KeyType::EccPublic,
                    other => return Err(invalid(format!("unsupported key Type {other:?}"))),
                })
            }
            keys::FORMAT_KEY => check_format(r)?,
            keys::DATA_KEY => data = Some(Zeroizing::new(bytes(r, key)?)),
            other => return Err(unknown_field(group, other)),
        }
        Ok(())
    })?;
    Ok(KeyItem {
        name: required(name, group, keys::NAME_KEY)?,
        key_type: required(key_type, group, keys::TYPE_KEY)?,
        data: required(data, group, keys::DATA_KEY)?,
    })
}

fn decode_cert_item(r: &mut Reader<'_>, group: &str) -> Result<CertificateItem, FccError> {
    let (name, der, private_key_name) = decode_certificate_entry(r, group, keys::DATA_KEY, bytes)?;
    Ok(CertificateItem {
        name,
        der,
        private_key_name,
    })
}

fn decode_chain_item(r: &mut Reader<'_>, group: &str) -> Result<CertificateChainItem, FccError> {
    let (name, ders, private_key_name) =
        decode_certificate_entry(r, group, keys::DATA_ARRAY_KEY, |r, key| {
            expect_kind(r, Kind::Array, key)?;
            let mut it = r.array_start(key)?;
            if !it.is_definite() {
                return Err(invalid("DataArray must be a definite-length array"));
            }
            let mut list = Vec::new();
            while r.next_entry(&mut it, key)? {
                list.push(bytes(r, key)?);
            }
            Ok(list)
        })?;
    Ok(CertificateChainItem {
        name,
        ders,
        private_key_name,
    })
}

/// One `Certificates` or `CertificateChains` entry, the mirror of [`put_certificate_entry`]: Name,
/// Format, the data under `data_key` (read by `read_data`) and PrivateKeyName when given.
fn decode_certificate_entry<T>(
    r: &mut Reader<'_>,
    group: &str,
    data_key: &str,
    mut read_data: impl FnMut(&mut Reader<'_>, &str) -> Result<T, FccError>,
) -> Result<(String, T, Option<String>), FccError> {
    let (mut name, mut data, mut prkn) = (None, None, None);
    fields(r, group, |r, key| {
        match key {
            keys::NAME_KEY => name = Some(text(r, key)?),
            keys::FORMAT_KEY => check_format(r)?,
            keys::PRIVATE_KEY_NAME_KEY => prkn = Some(text(r, key)?),
            k if k == data_key => data = Some(read_data(r, key)?),
            other => return Err(unknown_field(group, other)),
        }
        Ok(())
    })?;
    Ok((
        required(name, group, keys::NAME_KEY)?,
        required(data, group, data_key)?,
        prkn,
    ))
}

fn decode_param(r: &mut Reader<'_>, group: &str) -> Result<ConfigParam, FccError> {
    let (mut name, mut value) = (None, None);
    fields(r, group, |r, key| {
        match key {
            keys::NAME_KEY => name = Some(text(r, key)?),
            keys::DATA_KEY => {
                value = Some(match r.peek_kind(key)? {
                    Kind::Text => ConfigValue::Text(r.text(key)?.to_owned()),
                    Kind::Bytes => ConfigValue::Bytes(r.bytes(key)?.to_vec()),
                    Kind::Uint => ConfigValue::Uint(r.uint(key)?),
                    Kind::Negative => ConfigValue::Int(r.negative(key)?),
                    other => {
                        return Err(invalid(format!(
                            "config param Data must be text, bytes or an integer, found {}",
                            kind_name(other)
                        )));
                    }
                })
            }
            other => return Err(unknown_field(group, other)),
        }
        Ok(())
    })?;
    Ok(ConfigParam {
        name: required(name, group, keys::NAME_KEY)?,
        // FCC stores an absent Data as an empty item.
        value: value.unwrap_or(ConfigValue::Bytes(Vec::new())),
    })
}

fn decode_csr(r: &mut Reader<'_>, group: &str) -> Result<CsrRequest, FccError> {
    let (mut prkn, mut subj, mut md) = (None, None, None);
    let (mut ku, mut eku) = (None, None);
    fields(r, group, |r, key| {
        match key {
            keys::PRIVATE_KEY_NAME_KEY => prkn = Some(text(r, key)?),
            keys::SUBJECT_KEY => subj = Some(text(r, key)?),
            keys::MD_KEY => md = Some(uint(r, key)?),
            keys::EXTENSIONS_KEY => {
                expect_kind(r, Kind::Map, key)?;
                fields(r, key, |r, ext| {
                    match ext {
                        keys::KEY_USAGE_KEY => ku = Some(uint(r, ext)?),
                        keys::EXT_KEY_USAGE_KEY => eku = Some(uint(r, ext)?),
                        other => return Err(unknown_field(keys::EXTENSIONS_KEY, other)),
                    }
                    Ok(())
                })?;
            }
            other => return Err(unknown_field(group, other)),
        }
        Ok(())
    })?;
    Ok(CsrRequest {
        private_key_name: required(prkn, group, keys::PRIVATE_KEY_NAME_KEY)?,
        subject: required(subj, group, keys::SUBJECT_KEY)?,
        md: required(md, group, keys::MD_KEY)?,
        key_usage: ku,
        ext_key_usage: eku,
    })
}

/// A top-level group (`Keys`, `Certificates`, …): its key and the array of its items, each written
/// by `put_item`; nothing when there are no items (the mirror of `items`).
fn put_group<T>(w: &mut Writer, key: &str, items: &[T], mut put_item: impl FnMut(&mut Writer, &T)) {
    if items.is_empty() {
        return;
    }
    w.text(key);
    w.array(items.len());
    for item in items {
        put_item(w, item);
    }
}

fn put_key(w: &mut Writer, k: &KeyItem) {
    w.map(4);
    w.text(keys::NAME_KEY);
    w.text(&k.name);
    w.text(keys::TYPE_KEY);
    w.text(k.key_type.as_str());
    w.text(keys::FORMAT_KEY);
    w.text(keys::DER_FORMAT);
    w.text(keys::DATA_KEY);
    w.bytes(&k.data);
}

fn put_cert(w: &mut Writer, c: &CertificateItem) {
    put_certificate_entry(w, &c.name, c.private_key_name.as_deref(), |w| {
        w.text(keys::DATA_KEY);
        w.bytes(&c.der);
    });
}

fn put_chain(w: &mut Writer, c: &CertificateChainItem) {
    put_certificate_entry(w, &c.name, c.private_key_name.as_deref(), |w| {
        w.text(keys::DATA_ARRAY_KEY);
        w.array(c.ders.len());
        for der in &c.ders {
            w.bytes(der);
        }
    });
}

fn put_param(w: &mut Writer, p: &ConfigParam) {
    w.map(2);
    w.text(keys::NAME_KEY);
    w.text(&p.name);
    w.text(keys::DATA_KEY);
    match &p.value {
        ConfigValue::Text(t) => w.text(t),
        ConfigValue::Bytes(b) => w.bytes(b),
        ConfigValue::Uint(u) => w.uint(*u),
        ConfigValue::Int(i) => w.int(*i),
    }
}

fn put_csr(w: &mut Writer, c: &CsrRequest) {
    let has_ext = c.key_usage.is_some() || c.ext_key_usage.is_some();
    w.map(3 + usize::from(has_ext));
    w.text(keys::PRIVATE_KEY_NAME_KEY);
    w.text(&c.private_key_name);
    w.text(keys::SUBJECT_KEY);
    w.text(&c.subject);
    w.text(keys::MD_KEY);
    w.uint(c.md);
    if has_ext {
        w.text(keys::EXTENSIONS_KEY);
        w.map(usize::from(c.key_usage.is_some()) + usize::from(c.ext_key_usage.is_some()));
        if let Some(ku) = c.key_usage {
            w.text(keys::KEY_USAGE_KEY);
            w.uint(ku);
        }
        if let Some(eku) = c.ext_key_usage {
            w.text(keys::EXT_KEY_USAGE_KEY);
            w.uint(eku);
        }
    }
}

/// One `Certificates` or `CertificateChains` entry: Name, Format, the data pair `put_data` writes,
/// and PrivateKeyName when given (in this order, as the genuine tool writes them).
fn put_certificate_entry(
    w: &mut Writer,
    name: &str,
    private_key_name: Option<&str>,
    put_data: impl FnOnce(&mut Writer),
) {
    w.map(3 + usize::from(private_key_name.is_some()));
    w.text(keys::NAME_KEY);
    w.text(name);
    w.text(keys::FORMAT_KEY);
    w.text(keys::DER_FORMAT);
    put_data(w);
    if let Some(prkn) = private_key_name {
        w.text(keys::PRIVATE_KEY_NAME_KEY);
        w.text(prkn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names;

    fn full_bundle() -> Bundle {
        Bundle {
            sid: Some("fcu-session-0001".into()),
            keys: vec![KeyItem::private(
                names::BOOTSTRAP_DEVICE_PRIVATE_KEY,
                Zeroizing::new(vec![0x30, 0x77, 0x02, 0x01]),
            )],
            certificates: vec![CertificateItem {
                name: names::BOOTSTRAP_DEVICE_CERT.into(),
                der: vec![0x30, 0x82, 1, 2],
                private_key_name: Some(names::BOOTSTRAP_DEVICE_PRIVATE_KEY.into()),
            }],
            certificate_chains: vec![CertificateChainItem {
                name: names::UPDATE_AUTH_CERT.into(),
                ders: vec![vec![1], vec![2, 3]],
                private_key_name: None,
            }],
            config_params: vec![
                ConfigParam::uint(names::USE_BOOTSTRAP, 1),
                ConfigParam::text(names::ENDPOINT_NAME, "ep"),
                ConfigParam::bytes(names::CLASS_ID, [7u8; 16]),
                ConfigParam::int("x", -5),
            ],
            entropy: Some([1; 48]),
            rot: Some([2; 16]),
            csr_requests: vec![CsrRequest {
                private_key_name: "k".into(),
                subject: "CN=ep".into(),
                md: 1,
                key_usage: Some(1),
                ext_key_usage: None,
            }],
            verify: Some(false),
            disable: Some(false),
            keep_alive: Some(true),
            ..Bundle::default()
        }
    }

    #[test]
    fn full_bundle_round_trips_with_twelve_pairs() {
        let b = full_bundle();
        assert_eq!(b.top_level_pairs(), 12);
        let enc = b.encode().unwrap();
        assert_eq!(enc[0], 0xac, "definite map of 12 pairs");
        assert_eq!(Bundle::decode(&enc).unwrap(), b);
    }

    #[test]
    fn encoding_follows_the_checklist() {
        let enc = full_bundle().encode().unwrap();
        let find = |needle: &[u8]| {
            enc.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
        };
        // SchemeVersion first, then SID; Keys before Certificates.
        assert_eq!(find(b"SchemeVersion"), 2);
        assert!(find(b"\x63SID") < find(b"\x67Entropy"));
        assert!(find(b"\x64Keys") < find(b"\x6cCertificates"));
        assert!(find(b"\x6cConfigParams") < find(b"\x67CsrReqs"));
        // Flags as integers, never booleans.
        find(b"\x66Verify\x00");
        find(b"\x69KpAlvSess\x01");
        // Format der on keys and certs, never ACL.
        find(b"\x66Format\x63der");
        assert!(enc.windows(3).all(|w| w != b"ACL"));
        // CSR Ext only with the set fields.
        find(b"\x63Ext\xa1\x62KU\x01");
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = format!("{:?}", full_bundle());
        assert!(s.contains("redacted"), "{s}");
        assert!(!s.contains("48, 119"), "{s}");
        assert!(!s.contains("[1, 1, 1"), "{s}");
    }

    #[test]
    fn decode_rejects_what_fcc_rejects() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xbf\xff", "indefinite"),
            (b"\xa0", "missing SchemeVersion"),
            (b"\xa1\x66Verify\xf5", "Verify must be an unsigned integer"),
            (b"\xa1\x66Verify\x02", "Verify must be 0 or 1"),
            (b"\xa1\x63Foo\x00", "unknown top-level group"),
            (b"\xa1\x63ROT\x41\x00", "ROT must be exactly 16 bytes"),
            (
                b"\xa1\x64Keys\x81\xa2\x64Name\x61k\x63ACL\x00",
                "unknown field \"ACL\"",
            ),
            (
                b"\xa1\x6cCertificates\x81\xa2\x64Name\x61c\x66Format\x63pem",
                "Format must be \"der\"",
            ),
            (b"\xa1\x6cConfigParams\x81\xa1\x64Data\x00", "has no Name"),
            (
                b"\xa2\x66Verify\x00\x66Verify\x00",
                "duplicate top-level key Verify",
            ),
        ];
        for (input, want) in cases {
            let err = Bundle::decode(input).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: got {err}");
        }
        // 13 pairs.
        let mut w = Writer::new(256);
        w.map(13);
        for i in 0..13 {
            w.text(&format!("k{i}"));
            w.uint(0);
        }
        let err = Bundle::decode(&w.into_inner()).unwrap_err();
        assert!(err.to_string().contains("more than 12"), "{err}");
        assert!(matches!(
            Bundle::decode(b"\xa1\x7f"),
            Err(FccError::UndecodableCbor(_))
        ));
    }
}
