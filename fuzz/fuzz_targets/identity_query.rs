//! The query parsing of `GET /v3/identity` (`pep_server::http::parse_identity_query`: percent
//! decoding, duplicate and type checks, IPv4 rules): never a panic; an accepted query names a valid
//! endpoint and a non-zero port, and a refusal is a 4xx.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use pep_server::http::parse_identity_query;
use pep_server::model::{Category, FieldText, GatewayDefaults, HttpUrl};

fuzz_target!(|data: &[u8]| {
    // axum hands the handler the raw query as a String: only UTF-8 reaches the parser.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let peer = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 40000));
    let text = |s: &str| FieldText::new(s.to_owned()).unwrap();
    let url = |s: &str| HttpUrl::new(s.to_owned()).unwrap();
    let defaults = GatewayDefaults {
        api_address: url("https://api.example"),
        gateway_services_address: url("https://gw.example"),
        hardware_version: text("hw"),
        radio_config: text("00"),
        led_config: text("01"),
        category: Category::Production,
    };
    match parse_identity_query(Some(raw), peer, None, &defaults) {
        Ok(request) => {
            // The types hold the rules (a valid endpoint name, bounded texts); the address too:
            let gateway = request.params.gateway;
            assert_ne!(gateway.port(), 0);
            assert!(gateway.ip().is_ipv4());
        }
        Err(e) => {
            let status = e.status().as_u16();
            assert!((400..500).contains(&status), "status {status}");
        }
    }
});
