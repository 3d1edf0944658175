//! The bundle decoder of fake-fcc (`Device::handle`: the tinycbor-like parser, the group loop,
//! verification) plus fake-fcc's raw CBOR parser and fcc-proto's strict `Bundle::decode`: any body
//! that passed the frame hash check gives an answer, never a panic.
#![no_main]

use fake_fcc::{Device, DeviceOptions};
use fcc_proto::frame::ResponseFrame;
use fcc_proto::{Bundle, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fake_fcc::cbor::parse(data);

    let mut device = Device::new(DeviceOptions::default());
    let outcome = device.handle(data);
    // A body reply is always a response the tool side can decode.
    if let ResponseFrame::Body(body) = &outcome.reply {
        let response = Response::decode(body).expect("the device's reply decodes");
        assert_eq!(Some(&response), outcome.response.as_ref());
    }
    // A second message in the same session (keep-alive) must not panic either.
    let _ = device.handle(data);

    let mut strict = Device::new(DeviceOptions {
        strict: true,
        storage_writes: true,
    });
    let _ = strict.handle(data);

    if let Ok(bundle) = Bundle::decode(data) {
        // What the strict decoder accepts must survive an encode/decode round trip when it is
        // encodable at all (encode refuses, e.g., more than 12 top-level pairs).
        if let Ok(encoded) = bundle.encode() {
            let again = Bundle::decode(&encoded).expect("an encoded bundle decodes");
            assert!(again == bundle, "bundle round trip differs");
        }
    }
});
