//! Framing (docs/protocol.md §1.2–§1.4): `mbedprov` frames with a little-endian length and a SHA-256
//! trailer, for both ends of the connection.
//!
//! The framing is plain code over byte buffers ([`ToolCodec::decode_response`],
//! [`DeviceCodec::decode_request`], [`encode_request`], …), usable without an async runtime; with
//! the default `tokio` feature the two codecs also implement `tokio-util`'s `Decoder`/`Encoder`,
//! delegating to those functions.
//!
//! Request (tool → device): `TOKEN`, LE u32 length N > 0, N CBOR bytes, SHA-256 of those bytes.
//! Response (device → tool): `TOKEN`, LE u32 wire status; for status 0 then LE u32 length M,
//! M CBOR bytes and their SHA-256; for any other status the frame ends after 12 bytes.
//!
//! Lengths are checked against the configured maximum *before* any buffer is reserved, so a
//! hostile length field cannot make either side allocate.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use bytes::{Buf, BufMut, Bytes, BytesMut};
#[cfg(feature = "tokio")]
use tokio_util::codec::{Decoder, Encoder};

use crate::error::FccError;
use crate::status::WireStatus;

/// `tokio-util`'s `Decoder` for a codec: exactly its inherent framing functions (one adapter for
/// both ends, so the trait and the plain functions cannot drift apart).
#[cfg(feature = "tokio")]
macro_rules! decoder_via {
    ($codec:ty => $item:ty, $decode:ident, $decode_eof:ident) => {
        impl Decoder for $codec {
            type Item = $item;
            type Error = FccError;

            fn decode(&mut self, src: &mut BytesMut) -> Result<Option<$item>, FccError> {
                self.$decode(src)
            }

            fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<$item>, FccError> {
                self.$decode_eof(src)
            }
        }
    };
}

/// The frame token, ASCII `mbedprov`.
pub const TOKEN: [u8; 8] = *b"mbedprov";
/// Length of the SHA-256 trailer.
pub const HASH_LEN: usize = 32;
/// Default maximum body length accepted or sent (1 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

const TOKEN_LEN: usize = TOKEN.len();
const U32_LEN: usize = 4;
/// Token + status: the whole frame when the status is not 0.
const STATUS_FRAME_LEN: usize = TOKEN_LEN + U32_LEN;
/// Token + status + length: the header of a status-0 response.
const BODY_RESPONSE_HEADER_LEN: usize = TOKEN_LEN + 2 * U32_LEN;

/// A response frame as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFrame {
    /// Wire status 0 with a CBOR body whose hash was verified (decode) or will be computed
    /// (encode).
    Body(Bytes),
    /// The 12-byte form: a non-zero wire status, no body. Encoding `Status(WireStatus::Success)`
    /// writes a status-0 frame with an empty body (length 0), since a 12-byte status-0 frame
    /// cannot be told apart from the start of a body frame.
    Status(WireStatus),
}

/// SHA-256 with ring's assembly (AVX2/SHA extensions where the CPU has them): on a CPU without
/// SHA extensions it is about twice as fast as the portable `sha2`, and every frame is hashed on
/// both ends (4 % of the server's CPU per provisioning, profiled).
fn sha256(data: &[u8]) -> [u8; HASH_LEN] {
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    hash
}

/// The little-endian u32 at `at`, `None` while `bytes` is too short to hold it.
fn le_u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..)?
        .first_chunk::<U32_LEN>()
        .map(|b| u32::from_le_bytes(*b))
}

/// Body length as the wire's u32. Bodies over 4 GiB cannot be framed; callers limit bodies to
/// `max_frame_len` first, so saturating here only matters for direct helper misuse.
fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn check_len(len: usize, max: usize) -> Result<(), FccError> {
    if len == 0 {
        return Err(FccError::ZeroLength);
    }
    if len > max {
        return Err(FccError::Oversize {
            len: len as u64,
            max,
        });
    }
    Ok(())
}

/// Appends a request frame for `body` to `dst`.
fn put_request(body: &[u8], dst: &mut BytesMut) {
    dst.reserve(TOKEN_LEN + U32_LEN + body.len() + HASH_LEN);
    dst.put_slice(&TOKEN);
    dst.put_u32_le(wire_len(body.len()));
    dst.put_slice(body);
    dst.put_slice(&sha256(body));
}

/// Appends a response frame to `dst`.
fn put_response(frame: &ResponseFrame, dst: &mut BytesMut) {
    match frame {
        ResponseFrame::Status(status) if *status != WireStatus::Success => {
            dst.reserve(STATUS_FRAME_LEN);
            dst.put_slice(&TOKEN);
            dst.put_u32_le(status.as_u32());
        }
        ResponseFrame::Status(_) => put_body_response(&[], dst),
        ResponseFrame::Body(body) => put_body_response(body, dst),
    }
}

fn put_body_response(body: &[u8], dst: &mut BytesMut) {
    dst.reserve(BODY_RESPONSE_HEADER_LEN + body.len() + HASH_LEN);
    dst.put_slice(&TOKEN);
    dst.put_u32_le(0);
    dst.put_u32_le(wire_len(body.len()));
    dst.put_slice(body);
    dst.put_slice(&sha256(body));
}

/// Encodes a complete request frame for a CBOR `body` (no length checks: an empty body gives the
/// zero-length frame the device rejects, which is useful in tests).
pub fn encode_request(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOKEN_LEN + U32_LEN + body.len() + HASH_LEN);
    out.extend_from_slice(&TOKEN);
    out.extend_from_slice(&wire_len(body.len()).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&sha256(body));
    out
}

/// Encodes a complete response frame.
pub fn encode_response(frame: &ResponseFrame) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_response(frame, &mut out);
    out.to_vec()
}

/// The tool side: encodes request frames, decodes response frames.
///
/// The decoder is strict like the reference tool: the first 8 bytes must be the token, else
/// [`FccError::BadToken`].
#[derive(Debug, Clone)]
pub struct ToolCodec {
    max_frame_len: usize,
}

impl ToolCodec {
    /// A codec with the default maximum body length ([`DEFAULT_MAX_FRAME_LEN`]).
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses bodies longer than `max` bytes in either direction.
    pub fn with_max_frame_len(max: usize) -> Self {
        ToolCodec { max_frame_len: max }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl Default for ToolCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolCodec {
    /// Appends the request frame of `body` to `dst`, refusing an empty body or one longer than
    /// the maximum.
    pub fn encode_request(&self, body: &[u8], dst: &mut BytesMut) -> Result<(), FccError> {
        check_len(body.len(), self.max_frame_len)?;
        put_request(body, dst);
        Ok(())
    }

    /// Decodes one response frame from the front of `src`: `Ok(None)` while it is incomplete
    /// (more bytes are needed), the frame (its bytes consumed) once complete.
    pub fn decode_response(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<ResponseFrame>, FccError> {
        // Reject a wrong token as soon as its first wrong byte is visible.
        if !TOKEN.starts_with(src.get(..TOKEN_LEN).unwrap_or(src)) {
            return Err(FccError::BadToken);
        }
        let Some(status) = le_u32_at(src, TOKEN_LEN) else {
            return Ok(None);
        };
        if status != 0 {
            src.advance(STATUS_FRAME_LEN);
            return Ok(Some(ResponseFrame::Status(WireStatus::from_u32(status))));
        }
        let Some(len) = le_u32_at(src, STATUS_FRAME_LEN) else {
            return Ok(None);
        };
        let len = len as usize;
        if len > self.max_frame_len {
            return Err(FccError::Oversize {
                len: len as u64,
                max: self.max_frame_len,
            });
        }
        let total = BODY_RESPONSE_HEADER_LEN + len + HASH_LEN;
        let body_end = BODY_RESPONSE_HEADER_LEN + len;
        let (Some(body), Some(hash)) = (
            src.get(BODY_RESPONSE_HEADER_LEN..body_end),
            src.get(body_end..total),
        ) else {
            // Bounded by max_frame_len, checked above.
            src.reserve(total.saturating_sub(src.len()));
            return Ok(None);
        };
        if sha256(body).as_slice() != hash {
            return Err(FccError::HashMismatch);
        }
        src.advance(BODY_RESPONSE_HEADER_LEN);
        let body = src.split_to(len).freeze();
        src.advance(HASH_LEN);
        Ok(Some(ResponseFrame::Body(body)))
    }

    /// [`decode_response`](Self::decode_response) at the end of the input: leftover bytes of an
    /// incomplete frame are [`FccError::Truncated`].
    pub fn decode_response_eof(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<ResponseFrame>, FccError> {
        match self.decode_response(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FccError::Truncated),
        }
    }
}

#[cfg(feature = "tokio")]
impl Encoder<&[u8]> for ToolCodec {
    type Error = FccError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), FccError> {
        self.encode_request(body, dst)
    }
}

#[cfg(feature = "tokio")]
decoder_via!(ToolCodec => ResponseFrame, decode_response, decode_response_eof);

/// The device side: decodes request frames the way FCC does, encodes response frames.
///
/// Token scan (§1.4): bytes are examined one at a time against the token; a matching byte
/// advances, a mismatching byte resets the match **and is discarded** (not re-tested as a first
/// token byte). So garbage before the token is skipped, and `mbmbedprov` does not sync.
#[derive(Debug, Clone)]
pub struct DeviceCodec {
    max_frame_len: usize,
    /// How many token bytes have matched so far (8 = token complete, reading the frame).
    matched: usize,
}

impl DeviceCodec {
    /// A codec with the default maximum body length ([`DEFAULT_MAX_FRAME_LEN`]).
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses bodies longer than `max` bytes (the genuine FCC has no cap; a
    /// simulator needs one).
    pub fn with_max_frame_len(max: usize) -> Self {
        DeviceCodec {
            max_frame_len: max,
            matched: 0,
        }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// True while the codec is still looking for a token (no frame has started). A peer that
    /// closes the connection in this state has just ended the session, it did not truncate
    /// anything.
    pub fn is_scanning(&self) -> bool {
        self.matched < TOKEN_LEN
    }
}

impl Default for DeviceCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceCodec {
    /// Decodes one request frame from `src` the way FCC reads it, returning its body: `Ok(None)`
    /// while more bytes are needed (garbage before the token is consumed meanwhile).
    pub fn decode_request(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FccError> {
        // Token scan, consuming as it goes.
        let mut consumed = 0;
        while self.matched < TOKEN_LEN && consumed < src.len() {
            if src.get(consumed) == TOKEN.get(self.matched) {
                self.matched += 1;
            } else {
                self.matched = 0;
            }
            consumed += 1;
        }
        src.advance(consumed);
        if self.matched < TOKEN_LEN {
            return Ok(None);
        }
        let Some(len) = le_u32_at(src, 0) else {
            return Ok(None);
        };
        let len = len as usize;
        if let Err(e) = check_len(len, self.max_frame_len) {
            // The frame is unusable; start over with a fresh token scan.
            self.matched = 0;
            src.advance(U32_LEN);
            return Err(e);
        }
        let total = U32_LEN + len + HASH_LEN;
        let body_end = U32_LEN + len;
        let (Some(body), Some(hash)) = (src.get(U32_LEN..body_end), src.get(body_end..total))
        else {
            // Bounded by max_frame_len, checked above.
            src.reserve(total.saturating_sub(src.len()));
            return Ok(None);
        };
        let ok = sha256(body).as_slice() == hash;
        self.matched = 0;
        src.advance(U32_LEN);
        let body = src.split_to(len).freeze();
        src.advance(HASH_LEN);
        if !ok {
            return Err(FccError::HashMismatch);
        }
        Ok(Some(body))
    }

    /// [`decode_request`](Self::decode_request) at the end of the input: the end during the
    /// token scan is a normal end of session (`Ok(None)`), inside a frame
    /// [`FccError::Truncated`].
    pub fn decode_request_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FccError> {
        match self.decode_request(src)? {
            Some(body) => Ok(Some(body)),
            // EOF during the token scan is a normal end of session (§1.5).
            None if self.is_scanning() => {
                src.clear();
                Ok(None)
            }
            None => {
                self.matched = 0;
                src.clear();
                Err(FccError::Truncated)
            }
        }
    }

    /// Appends a response frame to `dst`, refusing a body longer than the maximum.
    pub fn encode_response(
        &self,
        frame: &ResponseFrame,
        dst: &mut BytesMut,
    ) -> Result<(), FccError> {
        if let ResponseFrame::Body(body) = frame
            && body.len() > self.max_frame_len
        {
            return Err(FccError::Oversize {
                len: body.len() as u64,
                max: self.max_frame_len,
            });
        }
        put_response(frame, dst);
        Ok(())
    }
}

#[cfg(feature = "tokio")]
decoder_via!(DeviceCodec => Bytes, decode_request, decode_request_eof);

#[cfg(feature = "tokio")]
impl Encoder<ResponseFrame> for DeviceCodec {
    type Error = FccError;

    fn encode(&mut self, frame: ResponseFrame, dst: &mut BytesMut) -> Result<(), FccError> {
        self.encode_response(&frame, dst)
    }
}

#[cfg(feature = "tokio")]
impl Encoder<&ResponseFrame> for DeviceCodec {
    type Error = FccError;

    fn encode(&mut self, frame: &ResponseFrame, dst: &mut BytesMut) -> Result<(), FccError> {
        self.encode_response(frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device_decode_all(input: &[u8]) -> Vec<Result<Bytes, String>> {
        let mut codec = DeviceCodec::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match codec.decode_request_eof(&mut buf) {
                Ok(Some(b)) => out.push(Ok(b)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    if buf.is_empty() {
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn device_skips_garbage_before_token() {
        let mut input = b"xx\x00garbage mbed ".to_vec();
        input.extend(encode_request(b"\xa0"));
        let got = device_decode_all(&input);
        assert_eq!(got, vec![Ok(Bytes::from_static(b"\xa0"))]);
    }

    #[test]
    fn device_does_not_resync_on_mbmbedprov() {
        // `mbmbedprov` + rest of a frame: the second `m` is discarded, so no token is found and
        // the whole input is consumed as garbage.
        let frame = encode_request(b"\xa0");
        let mut input = b"mb".to_vec();
        input.extend(&frame);
        let got = device_decode_all(&input);
        assert!(got.is_empty(), "{got:?}");
        // ...but a later complete token does sync.
        input.extend(&frame);
        let got = device_decode_all(&input);
        assert_eq!(got, vec![Ok(Bytes::from_static(b"\xa0"))]);
    }

    #[test]
    fn device_partial_input_is_none() {
        let frame = encode_request(b"\xa1\x61a\x01");
        let mut codec = DeviceCodec::new();
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.put_u8(*b);
            let r = codec.decode_request(&mut buf).unwrap();
            if i + 1 < frame.len() {
                assert!(r.is_none(), "frame completed early at {i}");
            } else {
                assert_eq!(r.unwrap(), Bytes::from_static(b"\xa1\x61a\x01"));
            }
        }
    }

    #[test]
    fn device_zero_length_is_an_error() {
        let mut buf = BytesMut::from(&b"mbedprov\0\0\0\0"[..]);
        let err = DeviceCodec::new().decode_request(&mut buf).unwrap_err();
        assert!(matches!(err, FccError::ZeroLength), "{err}");
    }

    #[test]
    fn device_oversize_is_an_error_before_reserving() {
        let mut buf = BytesMut::with_capacity(12);
        buf.put_slice(b"mbedprov");
        buf.put_u32_le(101);
        let cap = buf.capacity();
        let err = DeviceCodec::with_max_frame_len(100)
            .decode_request(&mut buf)
            .unwrap_err();
        assert!(
            matches!(err, FccError::Oversize { len: 101, max: 100 }),
            "{err}"
        );
        assert!(buf.capacity() <= cap);
        // A huge announced length with the default cap.
        let mut buf = BytesMut::with_capacity(12);
        buf.put_slice(b"mbedprov");
        buf.put_u32_le(u32::MAX);
        let err = DeviceCodec::new().decode_request(&mut buf).unwrap_err();
        assert!(matches!(err, FccError::Oversize { .. }), "{err}");
        assert!(buf.capacity() <= 12);
    }

    #[test]
    fn device_hash_mismatch_and_truncation() {
        let mut frame = encode_request(b"\xa0");
        let last = frame.len() - 1;
        frame[last] ^= 1;
        let mut buf = BytesMut::from(&frame[..]);
        let err = DeviceCodec::new().decode_request(&mut buf).unwrap_err();
        assert!(matches!(err, FccError::HashMismatch), "{err}");

        let frame = encode_request(b"\xa0");
        let mut buf = BytesMut::from(&frame[..frame.len() - 3]);
        let mut codec = DeviceCodec::new();
        assert!(codec.decode_request(&mut buf).unwrap().is_none());
        let err = codec.decode_request_eof(&mut buf).unwrap_err();
        assert!(matches!(err, FccError::Truncated), "{err}");

        // EOF in the middle of the token is a normal end of session.
        let mut buf = BytesMut::from(&b"mbed"[..]);
        assert!(
            DeviceCodec::new()
                .decode_request_eof(&mut buf)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn tool_decodes_both_forms_and_rejects_bad_input() {
        let mut codec = ToolCodec::new();
        let mut buf = BytesMut::from(&b"mbedprov\x09\0\0\0"[..]);
        assert_eq!(
            codec.decode_response(&mut buf).unwrap(),
            Some(ResponseFrame::Status(WireStatus::FailedToProcessData))
        );
        let frame = encode_response(&ResponseFrame::Body(Bytes::from_static(b"\xa0")));
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(
            codec.decode_response(&mut buf).unwrap(),
            Some(ResponseFrame::Body(Bytes::from_static(b"\xa0")))
        );
        assert!(buf.is_empty());

        let mut buf = BytesMut::from(&b"mbedpro"[..]);
        assert!(codec.decode_response(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_response_eof(&mut buf),
            Err(FccError::Truncated)
        ));

        let mut buf = BytesMut::from(&b"mbeddbap\0\0\0\0"[..]);
        assert!(matches!(
            codec.decode_response(&mut buf),
            Err(FccError::BadToken)
        ));
        let mut buf = BytesMut::from(&b"x"[..]);
        assert!(matches!(
            codec.decode_response(&mut buf),
            Err(FccError::BadToken)
        ));

        let mut buf = BytesMut::with_capacity(16);
        buf.put_slice(b"mbedprov\0\0\0\0");
        buf.put_u32_le(u32::MAX);
        let err = codec.decode_response(&mut buf).unwrap_err();
        assert!(matches!(err, FccError::Oversize { .. }), "{err}");
        assert!(buf.capacity() <= 16);

        let mut frame = encode_response(&ResponseFrame::Body(Bytes::from_static(b"\xa0")));
        frame[16] = 0xa1;
        let mut buf = BytesMut::from(&frame[..]);
        assert!(matches!(
            codec.decode_response(&mut buf),
            Err(FccError::HashMismatch)
        ));
    }

    #[test]
    fn tool_encoder_checks_length() {
        let codec = ToolCodec::with_max_frame_len(4);
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode_request(&b""[..], &mut dst),
            Err(FccError::ZeroLength)
        ));
        assert!(matches!(
            codec.encode_request(&b"12345"[..], &mut dst),
            Err(FccError::Oversize { len: 5, max: 4 })
        ));
        codec.encode_request(&b"\xa0"[..], &mut dst).unwrap();
        assert_eq!(&dst[..], &encode_request(b"\xa0")[..]);
    }

    /// The `tokio-util` trait impls are the inherent functions: same frames, same errors.
    #[cfg(feature = "tokio")]
    #[test]
    fn codec_traits_delegate_to_the_framing_functions() {
        let request = encode_request(b"\xa0");
        let mut codec = DeviceCodec::new();
        let mut buf = BytesMut::from(&request[..]);
        assert_eq!(
            Decoder::decode(&mut codec, &mut buf).unwrap(),
            Some(Bytes::from_static(b"\xa0"))
        );
        let mut buf = BytesMut::from(&b"mbedprov\0\0\0\0"[..]);
        assert!(matches!(
            Decoder::decode(&mut codec, &mut buf),
            Err(FccError::ZeroLength)
        ));
        let frame = ResponseFrame::Body(Bytes::from_static(b"\xa0"));
        let mut dst = BytesMut::new();
        Encoder::encode(&mut codec, &frame, &mut dst).unwrap();
        assert_eq!(&dst[..], &encode_response(&frame)[..]);

        let mut tool = ToolCodec::new();
        let mut dst = BytesMut::new();
        Encoder::encode(&mut tool, &b"\xa0"[..], &mut dst).unwrap();
        assert_eq!(&dst[..], &request[..]);
        let mut buf = BytesMut::from(&encode_response(&frame)[..]);
        assert_eq!(Decoder::decode(&mut tool, &mut buf).unwrap(), Some(frame));
        let mut buf = BytesMut::from(&b"mbedpro"[..]);
        assert!(matches!(
            Decoder::decode_eof(&mut tool, &mut buf),
            Err(FccError::Truncated)
        ));
    }
}
