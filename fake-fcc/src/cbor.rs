//! A raw CBOR walker over the request bytes.
//!
//! The genuine FCC parses bundles with tinycbor and inherits its quirks: only the first chunk of an
//! indefinite-length string is read, tags are not skipped where a plain type is expected, and
//! integers and strings keep their exact major type. A typed (serde) decoder would hide all of
//! that, so this module validates the whole buffer the way `cbor_value_validate_basic` does and
//! then exposes the items as a tree that keeps those details.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

/// Deepest nesting accepted. tinycbor allows 1024 levels (`CBOR_PARSER_MAX_RECURSIONS`); this
/// recursive walker stops at 256 so it fits a 2 MiB thread stack. Real bundles nest four levels
/// deep, and anything nested deeper than 256 in a bundle is rejected by the FCC for its type
/// anyway (status 20) unless it sits in a value the device ignores.
pub const MAX_DEPTH: usize = 256;

/// Why a buffer is not one well-formed CBOR item (every variant is answered with status 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CborError {
    /// The buffer ends inside an item.
    Truncated,
    /// An additional-information value 28..=30, or an indefinite length where none is allowed.
    Reserved,
    /// A `break` byte outside an indefinite-length container.
    UnexpectedBreak,
    /// A chunk of an indefinite string is not a definite string of the same major type.
    BadChunk,
    /// A one-byte simple value below 32.
    IllegalSimple,
    /// An indefinite map holds an odd number of items.
    OddMap,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Bytes after the first complete item.
    TrailingBytes,
}

impl std::fmt::Display for CborError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            CborError::Truncated => "the CBOR data ends inside an item",
            CborError::Reserved => "reserved additional-information value",
            CborError::UnexpectedBreak => "break byte outside an indefinite container",
            CborError::BadChunk => "invalid chunk in an indefinite-length string",
            CborError::IllegalSimple => "illegal one-byte simple value",
            CborError::OddMap => "indefinite map with an odd number of items",
            CborError::TooDeep => "CBOR nesting too deep",
            CborError::TrailingBytes => "bytes after the CBOR item",
        };
        f.write_str(text)
    }
}

/// A text or byte string as tinycbor's "get chunk" call sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a> {
    /// All chunks (one for a definite string; possibly none for an indefinite one).
    pub chunks: Vec<&'a [u8]>,
    /// Offset in the whole buffer where the first chunk's bytes start (for the FCC's 4-byte
    /// over-read of short config values).
    pub offset: usize,
    /// Whether the string was encoded with indefinite length.
    pub indefinite: bool,
}

impl<'a> Str<'a> {
    /// The bytes the FCC uses: the first chunk only (empty when there is none).
    pub fn first(&self) -> &'a [u8] {
        self.chunks.first().copied().unwrap_or(&[])
    }

    /// All chunks concatenated (what `cbor_value_map_find_value` compares).
    pub fn full(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// One CBOR data item, keeping the distinctions tinycbor makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// Major type 0.
    Uint(u64),
    /// Major type 1, holding the raw argument `n` (the value is `-1 - n`).
    Nint(u64),
    /// Major type 2.
    Bytes(Str<'a>),
    /// Major type 3 (UTF-8 is not checked, like tinycbor's basic validation).
    Text(Str<'a>),
    /// Major type 4.
    Array {
        /// The elements.
        items: Vec<Item<'a>>,
        /// Whether the array had a definite length.
        definite: bool,
    },
    /// Major type 5.
    Map {
        /// Key/value pairs in encoding order.
        pairs: Vec<(Item<'a>, Item<'a>)>,
        /// Whether the map had a definite length.
        definite: bool,
    },
    /// Major type 6.
    Tag(u64, Box<Item<'a>>),
    /// Major type 7 simple values, including false (20), true (21), null (22), undefined (23).
    Simple(u8),
    /// Major type 7 floats (half, single, double), kept as raw bits.
    Float(u64),
}

impl<'a> Item<'a> {
    /// The first chunk of a text string (no tag allowed), like `fcc_bundle_get_text_string`.
    pub fn text(&self) -> Option<&'a [u8]> {
        match self {
            Item::Text(s) => Some(s.first()),
            _ => None,
        }
    }

    /// The first chunk of a byte string (no tag allowed), like `fcc_bundle_get_byte_string`.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Item::Bytes(s) => Some(s.first()),
            _ => None,
        }
    }

    /// `cbor_value_get_int` on an integer item: the raw argument truncated to a C `int`, negated
    /// for major type 1. `None` for anything that is not an untagged integer.
    pub fn c_int(&self) -> Option<i32> {
        match self {
            Item::Uint(v) => Some(*v as i32),
            Item::Nint(n) => Some((-1i32).wrapping_sub(*n as i32)),
            _ => None,
        }
    }

    /// A short description of the item's type, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Uint(_) => "unsigned integer",
            Item::Nint(_) => "negative integer",
            Item::Bytes(_) => "byte string",
            Item::Text(_) => "text string",
            Item::Array { .. } => "array",
            Item::Map { .. } => "map",
            Item::Tag(..) => "tag",
            Item::Simple(20 | 21) => "boolean",
            Item::Simple(_) => "simple value",
            Item::Float(_) => "float",
        }
    }
}

/// Parses `buf` as exactly one well-formed CBOR item (tinycbor's basic validation plus the FCC's
/// "no trailing bytes" rule).
pub fn parse(buf: &[u8]) -> Result<Item<'_>, CborError> {
    let mut parser = Parser { buf, pos: 0 };
    let item = parser.item(0)?;
    if parser.pos != buf.len() {
        return Err(CborError::TrailingBytes);
    }
    Ok(item)
}

/// The outcome of reading an initial byte: either an item header or a `break`.
enum Head {
    Break,
    Item {
        major: u8,
        info: u8,
        arg: Option<u64>,
    },
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], CborError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(CborError::Truncated);
        }
        // `len <= remaining <= usize::MAX`, so the cast is lossless.
        let start = self.pos;
        let bytes = self
            .buf
            .get(start..start + len as usize)
            .ok_or(CborError::Truncated)?;
        self.pos += len as usize;
        Ok(bytes)
    }

    /// Reads an initial byte and its argument; `arg` is `None` for indefinite length (info 31).
    fn head(&mut self) -> Result<Head, CborError> {
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if initial == 0xff {
            return Ok(Head::Break);
        }
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let n = 1usize << (info - 24);
                let bytes = self.take(n as u64)?;
                Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
            }
            28..=30 => return Err(CborError::Reserved),
            _ => None,
        };
        Ok(Head::Item { major, info, arg })
    }

    fn item(&mut self, depth: usize) -> Result<Item<'a>, CborError> {
        match self.head()? {
            Head::Break => Err(CborError::UnexpectedBreak),
            Head::Item { major, info, arg } => self.item_body(major, info, arg, depth),
        }
    }

    fn item_body(
        &mut self,
        major: u8,
        info: u8,
        arg: Option<u64>,
        depth: usize,
    ) -> Result<Item<'a>, CborError> {
        if depth >= MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        match major {
            0 => arg.map(Item::Uint).ok_or(CborError::Reserved),
            1 => arg.map(Item::Nint).ok_or(CborError::Reserved),
            2 | 3 => {
                let s = self.string(major, arg)?;
                Ok(if major == 2 {
                    Item::Bytes(s)
                } else {
                    Item::Text(s)
                })
            }
            4 => {
                let mut items = Vec::new();
                match arg {
                    Some(n) => {
                        for _ in 0..n {
                            items.push(self.item(depth + 1)?);
                        }
                        Ok(Item::Array {
                            items,
                            definite: true,
                        })
                    }
                    None => loop {
                        match self.head()? {
                            Head::Break => {
                                return Ok(Item::Array {
                                    items,
                                    definite: false,
                                });
                            }
                            Head::Item { major, info, arg } => {
                                items.push(self.item_body(major, info, arg, depth + 1)?)
                            }
                        }
                    },
                }
            }
            5 => {
                let mut pairs = Vec::new();
                match arg {
                    Some(n) => {
                        for _ in 0..n {
                            let k = self.item(depth + 1)?;
                            let v = self.item(depth + 1)?;
                            pairs.push((k, v));
                        }
                        Ok(Item::Map {
                            pairs,
                            definite: true,
                        })
                    }
                    None => loop {
                        let key = match self.head()? {
                            Head::Break => {
                                return Ok(Item::Map {
                                    pairs,
                                    definite: false,
                                });
                            }
                            Head::Item { major, info, arg } => {
                                self.item_body(major, info, arg, depth + 1)?
                            }
                        };
                        let value = match self.head()? {
                            Head::Break => return Err(CborError::OddMap),
                            Head::Item { major, info, arg } => {
                                self.item_body(major, info, arg, depth + 1)?
                            }
                        };
                        pairs.push((key, value));
                    },
                }
            }
            6 => {
                let tag = arg.ok_or(CborError::Reserved)?;
                let inner = self.item(depth + 1)?;
                Ok(Item::Tag(tag, Box::new(inner)))
            }
            _ => match (info, arg) {
                (0..=23, Some(v)) => Ok(Item::Simple(v as u8)),
                (24, Some(v)) if v < 32 => Err(CborError::IllegalSimple),
                (24, Some(v)) => Ok(Item::Simple(v as u8)),
                (25..=27, Some(v)) => Ok(Item::Float(v)),
                _ => Err(CborError::Reserved),
            },
        }
    }

    fn string(&mut self, major: u8, arg: Option<u64>) -> Result<Str<'a>, CborError> {
        match arg {
            Some(len) => {
                let offset = self.pos;
                let data = self.take(len)?;
                Ok(Str {
                    chunks: vec![data],
                    offset,
                    indefinite: false,
                })
            }
            None => {
                let mut chunks = Vec::new();
                let mut offset = None;
                loop {
                    match self.head()? {
                        Head::Break => break,
                        Head::Item {
                            major: m,
                            arg: Some(len),
                            ..
                        } if m == major => {
                            offset.get_or_insert(self.pos);
                            chunks.push(self.take(len)?);
                        }
                        Head::Item { .. } => return Err(CborError::BadChunk),
                    }
                }
                Ok(Str {
                    chunks,
                    offset: offset.unwrap_or(self.pos),
                    indefinite: true,
                })
            }
        }
    }
}

/// The FCC's key comparison `strncmp(known, received, received_len) == 0`: true when `received`
/// is a prefix of `known` (so `""` matches everything), or equals `known` followed by a NUL and
/// anything (strncmp stops at the NUL).
pub fn c_prefix_match(known: &str, received: &[u8]) -> bool {
    let known = known.as_bytes();
    for (i, &r) in received.iter().enumerate() {
        let k = known.get(i).copied().unwrap_or(0);
        if k != r {
            return false;
        }
        if k == 0 {
            return true;
        }
    }
    true
}

/// Key comparison used by the device: the genuine prefix quirk, or an exact match in strict mode.
pub fn key_matches(known: &str, received: &[u8], strict: bool) -> bool {
    if strict {
        known.as_bytes() == received
    } else {
        c_prefix_match(known, received)
    }
}

/// The bytes up to (not including) the first NUL, as C string functions see them.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ping_request() {
        let body = hex::decode(
            "a36d536368656d6556657273696f6e65302e302e316656657269667900694b70416c765365737301",
        )
        .unwrap();
        let item = parse(&body).unwrap();
        let Item::Map { pairs, definite } = item else {
            panic!("not a map")
        };
        assert!(definite);
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0].0.text(), Some(&b"SchemeVersion"[..]));
        assert_eq!(pairs[2].1, Item::Uint(1));
    }

    #[test]
    fn rejects_malformed_buffers() {
        assert_eq!(parse(&[]), Err(CborError::Truncated));
        assert_eq!(parse(&[0xa1, 0x01]), Err(CborError::Truncated));
        assert_eq!(parse(&[0x01, 0x02]), Err(CborError::TrailingBytes));
        assert_eq!(parse(&[0x1c]), Err(CborError::Reserved));
        assert_eq!(parse(&[0xff]), Err(CborError::UnexpectedBreak));
        assert_eq!(parse(&[0x1f]), Err(CborError::Reserved));
        assert_eq!(parse(&[0x5f, 0x61, 0x41, 0xff]), Err(CborError::BadChunk));
        assert_eq!(parse(&[0xbf, 0x01, 0xff]), Err(CborError::OddMap));
        assert_eq!(parse(&[0xf8, 0x10]), Err(CborError::IllegalSimple));
        assert_eq!(
            parse(&[0x5a, 0xff, 0xff, 0xff, 0xff]),
            Err(CborError::Truncated)
        );
        let deep = vec![0x81; MAX_DEPTH + 1];
        assert_eq!(parse(&deep), Err(CborError::TooDeep));
    }

    #[test]
    fn indefinite_strings_keep_their_chunks() {
        let item = parse(&[0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff]).unwrap();
        let Item::Text(s) = item else { panic!() };
        assert_eq!(s.first(), b"ab");
        assert_eq!(s.full(), b"abc");
        assert_eq!(s.offset, 2);
        let empty = parse(&[0x5f, 0xff]).unwrap();
        assert_eq!(empty.bytes(), Some(&b""[..]));
    }

    #[test]
    fn c_int_truncates_like_tinycbor() {
        assert_eq!(Item::Uint(0x1_0000_0001).c_int(), Some(1));
        assert_eq!(Item::Nint(0).c_int(), Some(-1));
        assert_eq!(Item::Simple(21).c_int(), None);
    }

    #[test]
    fn prefix_matching_follows_strncmp() {
        assert!(c_prefix_match("Certificates", b"Cert"));
        assert!(c_prefix_match("Certificates", b""));
        assert!(c_prefix_match("Keys", b"Keys\0junk"));
        assert!(!c_prefix_match("Keys", b"Keysx"));
        assert!(!c_prefix_match("Certificates", b"CertificateChains"));
        assert!(key_matches("Keys", b"Keys", true));
        assert!(!key_matches("Keys", b"Key", true));
    }
}
