//! The query parsing of `GET /v3/identity` (`pep_server::http::parse_identity_query`: percent
//! decoding, duplicate and type checks, IPv4 rules): never a panic; an accepted query names a valid
//! endpoint and a non-zero port, and a refusal is a 4xx.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use pep_ca::EndpointName;
use pep_server::http::parse_identity_query;

fuzz_target!(|data: &[u8]| {
    // axum hands the handler the raw query as a String: only UTF-8 reaches the parser.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let peer = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 40000));
    match parse_identity_query(Some(raw), peer, None) {
        Ok(request) => {
            assert!(EndpointName::from_str(&request.serial_number).is_ok());
            assert_ne!(request.port, 0);
            assert!(request.ip.is_ipv4());
        }
        Err(e) => {
            let status = e.status().as_u16();
            assert!((400..500).contains(&status), "status {status}");
        }
    }
});
