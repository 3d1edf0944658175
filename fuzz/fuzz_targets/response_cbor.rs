//! The response CBOR decoder (`Response::decode`, what pep-server reads from FCC): never panics;
//! whatever it accepts re-encodes (genuine layout) to bytes it accepts again, and encoding is
//! then stable.
#![no_main]

use fcc_proto::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = Response::decode(data) else {
        return;
    };
    let _ = response.is_success();
    let encoded = response.encode();
    let again = Response::decode(&encoded).expect("an encoded response decodes");
    assert_eq!(again.encode(), encoded, "encoding is not stable");
    assert_eq!(again.return_status, response.return_status);
    assert_eq!(again.csrs, response.csrs);
    assert_eq!(again.sid, response.sid);
});
