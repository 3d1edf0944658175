//! The query parsing of `GET /v3/identity` (`pep_server::http::parse_identity_query`: percent
//! decoding, duplicate and type checks, the unicast-address rule): never a panic; an accepted query names a valid
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
            // a non-zero port and a unicast IPv4 or IPv6 address, an IPv4-mapped one given as IPv4.
            let gateway = request.params.gateway;
            assert_ne!(gateway.port(), 0);
            let ip = gateway.ip();
            assert_eq!(ip, ip.to_canonical());
            assert!(!ip.is_unspecified() && !ip.is_multicast());
            if let std::net::IpAddr::V4(v4) = ip {
                assert!(!v4.is_broadcast());
            }
        }
        Err(e) => {
            let status = e.status().as_u16();
            assert!((400..500).contains(&status), "status {status}");
        }
    }
});
