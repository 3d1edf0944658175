//! The tool-side response decoder (`ToolCodec`, what pep-server runs on a gateway's reply):
//! arbitrary bytes in arbitrary chunk sizes never panic, never allocate past the frame limit, and a
//! decoded frame re-encodes to bytes that decode to the same frame.
#![no_main]

use bytes::BytesMut;
use fcc_proto::WireStatus;
use fcc_proto::frame::{ResponseFrame, ToolCodec, encode_response};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut codec = ToolCodec::with_max_frame_len(MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    'feed: for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                // The tool drops the connection on the first error, as pep-server does.
                Err(_) => break 'feed,
            }
        }
        // The codec reserves at most one frame: a hostile length cannot make it allocate more.
        assert!(
            buf.capacity() <= 4 * (MAX + 76 + data.len()),
            "capacity {}",
            buf.capacity()
        );
    }
    for frame in frames {
        match &frame {
            ResponseFrame::Body(body) => assert!(body.len() <= MAX),
            ResponseFrame::Status(status) => assert_ne!(*status, WireStatus::Success),
        }
        let mut again = BytesMut::from(&encode_response(&frame)[..]);
        let decoded = ToolCodec::with_max_frame_len(MAX)
            .decode(&mut again)
            .expect("re-encoded frame decodes");
        assert_eq!(decoded.as_ref(), Some(&frame));
    }
});
