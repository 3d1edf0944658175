//! Codec benchmarks: framing + encoding a typical tool-generated bundle (§7.1 sizes), and
//! decoding a typical response frame.
// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use fcc_proto::frame::{self, DeviceCodec, ResponseFrame, ToolCodec};
use fcc_proto::{Bundle, CertificateItem, ConfigParam, KeyItem, Response, names};
use tokio_util::codec::{Decoder, Encoder};
use zeroize::Zeroizing;

/// A by-tool bundle shaped like docs/protocol.md §7.1: a 121-byte SEC1 key, two ~400-byte
/// certificates and 12 config params (about 1.6 KB of CBOR).
fn by_tool_bundle() -> Bundle {
    let cert = |n: usize, fill: u8| {
        let mut v = vec![0x30, 0x82, 0x01, 0x8c];
        v.resize(n, fill);
        v
    };
    Bundle {
        sid: Some("fcu-session-0001".into()),
        keys: vec![KeyItem::private(
            names::BOOTSTRAP_DEVICE_PRIVATE_KEY,
            Zeroizing::new(vec![0x5a; 121]),
        )],
        certificates: vec![
            CertificateItem {
                name: names::BOOTSTRAP_DEVICE_CERT.into(),
                der: cert(400, 0x11),
                private_key_name: None,
            },
            CertificateItem {
                name: names::BOOTSTRAP_SERVER_CA_CERT.into(),
                der: cert(398, 0x22),
                private_key_name: None,
            },
        ],
        config_params: vec![
            ConfigParam::uint(names::USE_BOOTSTRAP, 1),
            ConfigParam::text(names::ENDPOINT_NAME, "0123456789abcdef0123456789abcdef"),
            ConfigParam::text(
                names::BOOTSTRAP_SERVER_URI,
                "coaps://bootstrap.example.com:5684?aid=016f1234567890abcdef000000000000",
            ),
            ConfigParam::text(names::MANUFACTURER, "Acme"),
            ConfigParam::text(names::MODEL_NUMBER, "M-1"),
            ConfigParam::text(names::DEVICE_TYPE, "sensor"),
            ConfigParam::text(names::HARDWARE_VERSION, "1.0"),
            ConfigParam::uint(names::MEMORY_TOTAL_KB, 512),
            ConfigParam::text(names::SERIAL_NUMBER, "SN-0001"),
            ConfigParam::uint(names::CURRENT_TIME, 1_735_689_600),
            ConfigParam::text(names::TIMEZONE, "Europe/London"),
            ConfigParam::text(names::UTC_OFFSET, "+00:00"),
        ],
        ..Bundle::default()
    }
}

/// The §7.1 success response with three warnings (201-byte body).
fn typical_response() -> Response {
    let mut r = Response::success(Some("fcu-session-0001".into()));
    r.warnings = vec![
        "Item not set:mbed.UpdateAuthCert".into(),
        "Item not set:mbed.ClassId".into(),
        "Item not set:mbed.VendorId".into(),
    ];
    r
}

fn benches(c: &mut Criterion) {
    let bundle = by_tool_bundle();
    let body = bundle.encode().expect("bundle encodes");
    eprintln!("by_tool bundle: {} bytes of CBOR", body.len());

    c.bench_function("encode_and_frame_by_tool_bundle", |b| {
        let mut codec = ToolCodec::new();
        let mut dst = BytesMut::with_capacity(4096);
        b.iter(|| {
            dst.clear();
            let body = Zeroizing::new(black_box(&bundle).encode().expect("encodes"));
            codec.encode(&body[..], &mut dst).expect("frames");
            black_box(dst.len())
        })
    });

    let req_frame = frame::encode_request(&body);
    c.bench_function("device_decode_request_frame", |b| {
        let mut codec = DeviceCodec::new();
        b.iter(|| {
            let mut src = BytesMut::from(black_box(&req_frame[..]));
            black_box(codec.decode(&mut src).expect("decodes").expect("complete"))
        })
    });

    let resp = typical_response();
    let resp_frame = frame::encode_response(&ResponseFrame::Body(Bytes::from(resp.encode())));
    eprintln!("typical response frame: {} bytes", resp_frame.len());
    c.bench_function("decode_response_frame", |b| {
        let mut codec = ToolCodec::new();
        b.iter(|| {
            let mut src = BytesMut::from(black_box(&resp_frame[..]));
            let Some(ResponseFrame::Body(body)) = codec.decode(&mut src).expect("decodes") else {
                panic!("expected a body frame")
            };
            black_box(Response::decode(&body).expect("valid response"))
        })
    });

    c.bench_function("encode_response_frame", |b| {
        b.iter(|| {
            let body = black_box(&resp).encode();
            black_box(frame::encode_response(&ResponseFrame::Body(Bytes::from(
                body,
            ))))
        })
    });
}

criterion_group!(codec, benches);
criterion_main!(codec);
