//! Acceptance check 1: the golden wire vectors of docs/protocol.md §1.7 are reproduced byte-exactly
//! and decode back to the same values.

use bytes::{Bytes, BytesMut};
use fcc_proto::frame::{self, DeviceCodec, ResponseFrame, ToolCodec};
use fcc_proto::{Bundle, FccStatus, Response, SUCCESS_MESSAGE, WireStatus};
use tokio_util::codec::{Decoder, Encoder};

fn vector(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text.trim()).expect("vector files are hex")
}

fn ping_request() -> Bundle {
    Bundle {
        verify: Some(false),
        keep_alive: Some(true),
        ..Bundle::default()
    }
}

fn ping_response() -> Response {
    Response {
        csrs: Vec::new(),
        scheme_version: "0.0.1".into(),
        sid: None,
        return_status: FccStatus::Success,
        info_message: SUCCESS_MESSAGE.into(),
        warnings: Vec::new(),
    }
}

#[test]
fn ping_request_body_and_frame_are_byte_exact() {
    let body = vector(include_str!("../../fixtures/vectors/ping_request_body.hex"));
    let frame_bytes = vector(include_str!(
        "../../fixtures/vectors/ping_request_frame.hex"
    ));
    assert_eq!(body.len(), 40);
    assert_eq!(frame_bytes.len(), 84);

    let encoded = ping_request().encode().unwrap();
    assert_eq!(hex::encode(&encoded), hex::encode(&body));
    assert_eq!(frame::encode_request(&encoded), frame_bytes);

    let mut dst = BytesMut::new();
    ToolCodec::new().encode(&encoded[..], &mut dst).unwrap();
    assert_eq!(&dst[..], &frame_bytes[..]);

    // Device side decodes the frame back to the body, and the body to the bundle.
    let mut src = BytesMut::from(&frame_bytes[..]);
    let got = DeviceCodec::new().decode(&mut src).unwrap().unwrap();
    assert_eq!(got, Bytes::from(body.clone()));
    assert!(src.is_empty());
    assert_eq!(Bundle::decode(&got).unwrap(), ping_request());
}

#[test]
fn ping_response_body_and_frame_are_byte_exact() {
    let body = vector(include_str!(
        "../../fixtures/vectors/ping_response_body.hex"
    ));
    let frame_bytes = vector(include_str!(
        "../../fixtures/vectors/ping_response_frame.hex"
    ));
    assert_eq!(body.len(), 80);
    assert_eq!(frame_bytes.len(), 128);

    let encoded = ping_response().encode();
    assert_eq!(hex::encode(&encoded), hex::encode(&body));
    let frame = ResponseFrame::Body(Bytes::from(encoded));
    assert_eq!(frame::encode_response(&frame), frame_bytes);
    let mut dst = BytesMut::new();
    DeviceCodec::new().encode(frame.clone(), &mut dst).unwrap();
    assert_eq!(&dst[..], &frame_bytes[..]);

    let mut src = BytesMut::from(&frame_bytes[..]);
    let got = ToolCodec::new().decode(&mut src).unwrap().unwrap();
    assert_eq!(got, frame);
    let ResponseFrame::Body(got_body) = got else {
        panic!("expected a body frame")
    };
    let resp = Response::decode(&got_body).unwrap();
    assert_eq!(resp, ping_response());
    assert!(resp.is_success());
}

#[test]
fn wrong_scheme_request_and_response_are_byte_exact() {
    let req = vector(include_str!(
        "../../fixtures/vectors/wrong_scheme_request_body.hex"
    ));
    let body = vector(include_str!(
        "../../fixtures/vectors/wrong_scheme_response_body.hex"
    ));

    let bundle = Bundle {
        scheme_version: "0.0.2".into(),
        ..Bundle::default()
    };
    assert_eq!(bundle.encode().unwrap(), req);
    assert_eq!(Bundle::decode(&req).unwrap(), bundle);

    let resp = Response::error(None, FccStatus::BundleInvalidScheme, "General error:");
    assert_eq!(hex::encode(resp.encode()), hex::encode(&body));
    let back = Response::decode(&body).unwrap();
    assert_eq!(back, resp);
    assert_eq!(back.return_status.as_u32(), 24);
    assert!(!back.is_success());
}

#[test]
fn status9_frame_is_byte_exact() {
    let frame_bytes = vector(include_str!(
        "../../fixtures/vectors/status9_response_frame.hex"
    ));
    assert_eq!(frame_bytes.len(), 12);
    let frame = ResponseFrame::Status(WireStatus::FailedToProcessData);
    assert_eq!(frame::encode_response(&frame), frame_bytes);

    let mut src = BytesMut::from(&frame_bytes[..]);
    assert_eq!(ToolCodec::new().decode(&mut src).unwrap(), Some(frame));
    assert!(src.is_empty());
}
