//! Acceptance check 5: property tests. Encode→decode round trips for random bundles and
//! responses; the codecs and decoders never panic on arbitrary bytes; a valid frame split at
//! arbitrary points decodes to the same body.

use bytes::{Bytes, BytesMut};
use fcc_proto::frame::{self, DeviceCodec, ResponseFrame, ToolCodec};
use fcc_proto::{
    Bundle, CertificateChainItem, CertificateItem, ConfigParam, ConfigValue, CsrRequest,
    CsrResponse, FccStatus, KeyItem, KeyType, Response,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;
use zeroize::Zeroizing;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,24}"
}

fn der(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn key_item() -> impl Strategy<Value = KeyItem> {
    (
        name(),
        prop_oneof![Just(KeyType::EccPrivate), Just(KeyType::EccPublic)],
        der(160),
    )
        .prop_map(|(name, key_type, data)| KeyItem {
            name,
            key_type,
            data: Zeroizing::new(data),
        })
}

fn cert_item() -> impl Strategy<Value = CertificateItem> {
    (name(), der(300), prop::option::of(name())).prop_map(|(name, der, private_key_name)| {
        CertificateItem {
            name,
            der,
            private_key_name,
        }
    })
}

fn chain_item() -> impl Strategy<Value = CertificateChainItem> {
    (
        name(),
        prop::collection::vec(der(100), 0..5),
        prop::option::of(name()),
    )
        .prop_map(|(name, ders, private_key_name)| CertificateChainItem {
            name,
            ders,
            private_key_name,
        })
}

fn config_value() -> impl Strategy<Value = ConfigValue> {
    prop_oneof![
        ".{0,40}".prop_map(ConfigValue::Text),
        der(40).prop_map(ConfigValue::Bytes),
        any::<u64>().prop_map(ConfigValue::Uint),
        // Non-negative Int encodes as a CBOR uint and decodes as Uint, by design.
        (i64::MIN..0i64).prop_map(ConfigValue::Int),
    ]
}

fn csr_request() -> impl Strategy<Value = CsrRequest> {
    (
        name(),
        ".{0,40}",
        any::<u64>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(private_key_name, subject, md, key_usage, ext_key_usage)| CsrRequest {
                private_key_name,
                subject,
                md,
                key_usage,
                ext_key_usage,
            },
        )
}

prop_compose! {
    fn bundle()(
        scheme_version in "[ -~]{0,8}",
        sid in prop::option::of("[ -~]{0,20}"),
        keys in prop::collection::vec(key_item(), 0..3),
        certificates in prop::collection::vec(cert_item(), 0..3),
        certificate_chains in prop::collection::vec(chain_item(), 0..2),
        config_params in prop::collection::vec(
            (name(), config_value()).prop_map(|(name, value)| ConfigParam { name, value }),
            0..14,
        ),
        entropy in prop::option::of(prop::collection::vec(any::<u8>(), 48)),
        rot in prop::option::of(prop::array::uniform16(any::<u8>())),
        csr_requests in prop::collection::vec(csr_request(), 0..3),
        verify in any::<Option<bool>>(),
        disable in any::<Option<bool>>(),
        keep_alive in any::<Option<bool>>(),
    ) -> Bundle {
        Bundle {
            scheme_version,
            sid,
            keys,
            certificates,
            certificate_chains,
            config_params,
            entropy: entropy.map(|e| {
                let mut a = [0u8; 48];
                a.copy_from_slice(&e);
                a
            }),
            rot,
            csr_requests,
            verify,
            disable,
            keep_alive,
        }
    }
}

prop_compose! {
    fn response()(
        csrs in prop::collection::vec(
            (name(), der(320)).prop_map(|(private_key_name, der)| CsrResponse { private_key_name, der }),
            0..3,
        ),
        scheme_version in "[ -~]{0,8}",
        sid in prop::option::of("[ -~]{0,20}"),
        status in 0u32..60,
        info_message in ".{0,60}",
        warnings in prop::collection::vec("[^\n]{0,40}", 0..6),
    ) -> Response {
        Response {
            csrs,
            scheme_version,
            sid,
            return_status: FccStatus::from_u32(status),
            info_message,
            warnings,
        }
    }
}

/// Feeds `input` to `codec` in the given chunk sizes, then signals EOF; collects every item and
/// the errors (as text). Stops at the first error after which nothing is left to read.
fn feed<D: Decoder>(codec: &mut D, input: &[u8], cuts: &[usize]) -> Vec<Result<D::Item, String>>
where
    D::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut pos = 0;
    let mut chunks: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    chunks.sort_unstable();
    chunks.push(input.len());
    for end in chunks {
        if end < pos {
            continue;
        }
        buf.extend_from_slice(&input[pos..end]);
        pos = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => out.push(Ok(item)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => out.push(Ok(item)),
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bundle_round_trips(b in bundle()) {
        let enc = b.encode().unwrap();
        prop_assert!(b.top_level_pairs() <= 12);
        let back = Bundle::decode(&enc).unwrap();
        prop_assert_eq!(back, b);
    }

    #[test]
    fn response_round_trips(r in response()) {
        let enc = r.encode();
        prop_assert_eq!(enc[0], 0xbf);
        prop_assert_eq!(*enc.last().unwrap(), 0xff);
        let back = Response::decode(&enc).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn request_frame_survives_arbitrary_chunking(
        b in bundle(),
        garbage in "[^m]{0,8}",
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let body = b.encode().unwrap();
        let mut input = garbage.into_bytes();
        input.extend(frame::encode_request(&body));
        input.extend(frame::encode_request(&body));
        let got = feed(&mut DeviceCodec::new(), &input, &cuts);
        let want: Vec<Result<Bytes, String>> = vec![Ok(Bytes::from(body.clone())), Ok(Bytes::from(body))];
        prop_assert_eq!(got, want);
    }

    #[test]
    fn response_frame_survives_arbitrary_chunking(
        r in response(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let body = Bytes::from(r.encode());
        let mut input = frame::encode_response(&ResponseFrame::Body(body.clone()));
        input.extend(frame::encode_response(&ResponseFrame::Status(fcc_proto::WireStatus::FailedToProcessData)));
        let got = feed(&mut ToolCodec::new(), &input, &cuts);
        let want = vec![
            Ok(ResponseFrame::Body(body)),
            Ok(ResponseFrame::Status(fcc_proto::WireStatus::FailedToProcessData)),
        ];
        prop_assert_eq!(got, want);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        with_token in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let mut input = if with_token { b"mbedprov".to_vec() } else { Vec::new() };
        input.extend(&bytes);
        let _ = feed(&mut DeviceCodec::with_max_frame_len(4096), &input, &cuts);
        let _ = feed(&mut ToolCodec::with_max_frame_len(4096), &input, &cuts);
        let _ = Bundle::decode(&bytes);
        let _ = Response::decode(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_mutated_encodings(
        b in bundle(),
        r in response(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut enc_b = b.encode().unwrap();
        let mut enc_r = r.encode();
        for (pos, v) in &flips {
            let i = pos % enc_b.len();
            enc_b[i] = *v;
            let j = pos % enc_r.len();
            enc_r[j] = *v;
        }
        let _ = Bundle::decode(&enc_b);
        let _ = Bundle::decode(&enc_b[..cut % (enc_b.len() + 1)]);
        let _ = Response::decode(&enc_r);
        let _ = Response::decode(&enc_r[..cut % (enc_r.len() + 1)]);
        let mut frame = frame::encode_request(&enc_b);
        let i = cut % frame.len();
        frame[i] ^= 0x55;
        let _ = feed(&mut DeviceCodec::new(), &frame, &[cut]);
    }
}
