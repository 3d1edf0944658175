//! Thin helpers over `cbor4ii`'s low-level `core::enc` / `core::dec` API.
//!
//! The protocol needs control over the exact bytes (definite vs indefinite maps, shortest-form
//! integers, key order), which a serde-style mapping hides; so both directions are written by
//! hand against these helpers. All decoding is over an in-memory slice and never panics: every
//! malformed input becomes an [`FccError::UndecodableCbor`].
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::convert::Infallible;

use cbor4ii::core::dec::{self, Decode, Read as _};
use cbor4ii::core::enc::{self, Encode};
use cbor4ii::core::{major, types};
use zeroize::Zeroize;

use crate::error::FccError;

/// Maximum container nesting accepted while decoding (the schema needs 4).
const MAX_DEPTH: usize = 16;

/// Slice reader with a depth limit.
pub(crate) struct Reader<'de> {
    buf: &'de [u8],
    depth: usize,
}

impl<'de> dec::Read<'de> for Reader<'de> {
    type Error = Infallible;

    fn fill<'short>(
        &'short mut self,
        want: usize,
    ) -> Result<dec::Reference<'de, 'short>, Infallible> {
        let (head, _) = self.buf.split_at(want.min(self.buf.len()));
        Ok(dec::Reference::Long(head))
    }

    fn advance(&mut self, n: usize) {
        self.buf = self.buf.get(n..).unwrap_or_default();
    }

    fn step_in(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        self.depth += 1;
        true
    }

    fn step_out(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// The kind of the next data item, by its major type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Uint,
    Negative,
    Bytes,
    Text,
    Array,
    Map,
    Tag,
    Simple,
}

/// Turns a cbor4ii decode error into words, prefixed with what was being read.
fn describe(ctx: &str, err: dec::Error<Infallible>) -> FccError {
    let what = match err {
        dec::Error::Mismatch { name, found } => {
            format!("expected {}, found initial byte 0x{found:02x}", name)
        }
        dec::Error::Unsupported { name, found } => {
            format!(
                "unsupported initial byte 0x{found:02x} while reading {}",
                name
            )
        }
        dec::Error::Eof { name, .. } => format!("unexpected end of data while reading {}", name),
        dec::Error::RequireLength { name, .. } | dec::Error::RequireBorrowed { name } => {
            format!("truncated or indefinite-length {}", name)
        }
        dec::Error::RequireUtf8 { .. } => "text string is not valid UTF-8".to_owned(),
        dec::Error::LengthOverflow { name, .. } | dec::Error::CastOverflow { name } => {
            format!("value too large for {}", name)
        }
        dec::Error::DepthOverflow { .. } => "containers nested too deeply".to_owned(),
        other => format!("{other:?}"),
    };
    FccError::UndecodableCbor(format!("{ctx}: {what}"))
}

impl<'de> Reader<'de> {
    /// A reader over `buf`.
    pub(crate) fn new(buf: &'de [u8]) -> Self {
        Reader { buf, depth: 0 }
    }

    /// The kind of the next item, or an error at the end of the data.
    pub(crate) fn peek_kind(&self, ctx: &str) -> Result<Kind, FccError> {
        let byte =
            self.buf.first().copied().ok_or_else(|| {
                FccError::UndecodableCbor(format!("{ctx}: unexpected end of data"))
            })?;
        Ok(match dec::if_major(byte) {
            major::UNSIGNED => Kind::Uint,
            major::NEGATIVE => Kind::Negative,
            major::BYTES => Kind::Bytes,
            major::STRING => Kind::Text,
            major::ARRAY => Kind::Array,
            major::MAP => Kind::Map,
            major::TAG => Kind::Tag,
            _ => Kind::Simple,
        })
    }

    /// Goes one container deeper (bounded by `MAX_DEPTH`, so hostile nesting cannot exhaust the
    /// stack) and iterates over its `len` entries.
    fn enter(&mut self, len: Option<usize>, ctx: &str) -> Result<MapIter, FccError> {
        if !self.step_in() {
            return Err(FccError::UndecodableCbor(format!(
                "{ctx}: containers nested too deeply"
            )));
        }
        Ok(MapIter { remaining: len })
    }

    /// Reads a map header: `Some(n)` for a definite map of `n` pairs, `None` for an indefinite one.
    pub(crate) fn map_start(&mut self, ctx: &str) -> Result<MapIter, FccError> {
        let len = types::Map::len(self).map_err(|e| describe(ctx, e))?;
        self.enter(len, ctx)
    }

    /// Reads an array header (definite or indefinite).
    pub(crate) fn array_start(&mut self, ctx: &str) -> Result<MapIter, FccError> {
        let len = types::Array::len(self).map_err(|e| describe(ctx, e))?;
        self.enter(len, ctx)
    }

    /// Advances a map or array iterator: true if another entry follows. At the end the nesting
    /// level is released.
    pub(crate) fn next_entry(&mut self, it: &mut MapIter, ctx: &str) -> Result<bool, FccError> {
        let more = match &mut it.remaining {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => !dec::is_break(self).map_err(|e| describe(ctx, e))?,
        };
        if !more {
            self.step_out();
        }
        Ok(more)
    }

    /// Reads a definite-length text string.
    pub(crate) fn text(&mut self, ctx: &str) -> Result<&'de str, FccError> {
        <&'de str>::decode(self).map_err(|e| describe(ctx, e))
    }

    /// Reads a definite-length byte string.
    pub(crate) fn bytes(&mut self, ctx: &str) -> Result<&'de [u8], FccError> {
        <types::Bytes<&'de [u8]>>::decode(self)
            .map(|b| b.0)
            .map_err(|e| describe(ctx, e))
    }

    /// Reads an unsigned integer (major type 0).
    pub(crate) fn uint(&mut self, ctx: &str) -> Result<u64, FccError> {
        u64::decode(self).map_err(|e| describe(ctx, e))
    }

    /// Reads a negative integer (major type 1) as `i64`.
    pub(crate) fn negative(&mut self, ctx: &str) -> Result<i64, FccError> {
        let types::Negative(n) =
            <types::Negative<u64>>::decode(self).map_err(|e| describe(ctx, e))?;
        // CBOR negative n means -1 - n; it fits an i64 only when n <= i64::MAX.
        let n = i64::try_from(n).map_err(|_| {
            FccError::UndecodableCbor(format!("{ctx}: negative integer below i64::MIN"))
        })?;
        Ok(-1 - n)
    }

    /// Skips one data item of any type.
    pub(crate) fn skip(&mut self, ctx: &str) -> Result<(), FccError> {
        dec::IgnoredAny::decode(self)
            .map(|_| ())
            .map_err(|e| describe(ctx, e))
    }

    /// Fails unless every byte was consumed (the body must be exactly one data item).
    pub(crate) fn finish(&self, ctx: &str) -> Result<(), FccError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FccError::UndecodableCbor(format!(
                "{ctx}: {} trailing bytes after the top-level item",
                self.buf.len()
            )))
        }
    }
}

/// Position inside a definite or indefinite container.
pub(crate) struct MapIter {
    remaining: Option<usize>,
}

impl MapIter {
    /// True for a definite-length container.
    pub(crate) fn is_definite(&self) -> bool {
        self.remaining.is_some()
    }

    /// The number of entries left in a definite container (`None` if indefinite).
    pub(crate) fn len(&self) -> Option<usize> {
        self.remaining
    }
}

/// Growable output buffer. In `secret` mode every superseded allocation is zeroized before it
/// is freed, so key material never lingers in freed heap memory when the buffer grows.
pub(crate) struct Writer {
    buf: Vec<u8>,
    secret: bool,
}

impl enc::Write for Writer {
    type Error = Infallible;

    fn push(&mut self, input: &[u8]) -> Result<(), Infallible> {
        if self.secret && self.buf.capacity() - self.buf.len() < input.len() {
            let want = (self.buf.len() + input.len()).max(self.buf.capacity() * 2);
            let mut grown = Vec::with_capacity(want);
            grown.extend_from_slice(&self.buf);
            let mut old = std::mem::replace(&mut self.buf, grown);
            old.zeroize();
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }
}

// The writer cannot fail (its error type is `Infallible`), so encode results carry no
// information and are discarded in the helpers below.
impl Writer {
    /// A writer for public data.
    pub(crate) fn new(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
            secret: false,
        }
    }

    /// A writer for data that contains secrets (see the type's doc).
    pub(crate) fn secret(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
            secret: true,
        }
    }

    /// The encoded bytes.
    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn map(&mut self, pairs: usize) {
        let _ = types::Map::bounded(pairs, self);
    }

    pub(crate) fn map_indefinite(&mut self) {
        let _ = types::Map::unbounded(self);
    }

    pub(crate) fn end(&mut self) {
        let _ = types::Map::end(self);
    }

    pub(crate) fn array(&mut self, len: usize) {
        let _ = types::Array::bounded(len, self);
    }

    pub(crate) fn text(&mut self, s: &str) {
        let _ = s.encode(self);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        let _ = types::Bytes(b).encode(self);
    }

    pub(crate) fn uint(&mut self, v: u64) {
        let _ = v.encode(self);
    }

    pub(crate) fn int(&mut self, v: i64) {
        let _ = v.encode(self);
    }
}
