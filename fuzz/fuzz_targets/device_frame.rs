//! The device-side frame decoder (`DeviceCodec`, what fake-fcc runs on every byte a tool sends):
//! arbitrary bytes, fed in arbitrary chunk sizes, never panic, never yield a body over the limit,
//! and every body decoded re-frames to something the codec decodes back to the same body.
#![no_main]

use bytes::BytesMut;
use fcc_proto::frame::{DeviceCodec, encode_request};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small enough that the fuzzer reaches the oversize path, large enough for real bundles.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut codec = DeviceCodec::with_max_frame_len(MAX);
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        // Like FramedRead: decode until it asks for more bytes. Errors are per frame; the codec
        // resynchronises by scanning for the next token.
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(body)) => bodies.push(body),
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
    if let Ok(Some(body)) = codec.decode_eof(&mut buf) {
        bodies.push(body);
    }
    for body in bodies {
        assert!(
            !body.is_empty() && body.len() <= MAX,
            "body length {}",
            body.len()
        );
        let mut fresh = DeviceCodec::with_max_frame_len(MAX);
        let mut again = BytesMut::from(&encode_request(&body)[..]);
        let decoded = fresh.decode(&mut again).expect("re-framed body decodes");
        assert_eq!(decoded.as_deref(), Some(&body[..]));
        assert!(again.is_empty());
    }
});
