//! Inject a bundle into a running FCC and print its answer: what a custom station tool does.
//!
//! Start an FCC (the genuine one on a gateway, or the simulator) and pass the address it prints:
//!
//! ```sh
//! cargo run -p fake-fcc -- --storage /tmp/pal    # " Client IP Address and Port :  127.0.0.1:40123"
//! cargo run -p fcc-proto --example inject_bundle -- 127.0.0.1:40123 GW-EXAMPLE-1
//! ```
//!
//! `fcc-proto/tests/examples.rs` runs it against `fake-fcc`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fcc_proto::{Bundle, ConfigParam, FccClient, Timeouts, names};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(address), serial) = (args.next(), args.next()) else {
        eprintln!("usage: inject_bundle IP:PORT [SERIAL]");
        return ExitCode::from(2);
    };
    let address: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("inject_bundle: {address:?} is not IP:PORT: {e}");
            return ExitCode::from(2);
        }
    };
    let serial = serial.unwrap_or_else(|| "GW-EXAMPLE-1".to_owned());

    // A bundle carries keys, certificates and config params. This one only writes two config
    // params: FCC then reports the mandatory items still missing (a complete identity is what
    // pep-server sends), with its warnings — exactly what a tool must show its operator.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let bundle = Bundle {
        config_params: vec![
            ConfigParam::text(names::ENDPOINT_NAME, serial.as_str()),
            ConfigParam::uint(names::CURRENT_TIME, now),
        ],
        // More messages follow: FCC stores the items and keeps the factory flow open.
        keep_alive: Some(true),
        ..Bundle::default()
    };

    // One connection, one request, one response. Transport and framing failures are errors;
    // a response with a non-zero ReturnStatus is a normal answer.
    let result = async {
        let mut client =
            FccClient::connect(address, Timeouts::all(Duration::from_secs(10))).await?;
        let response = client.send(&bundle).await?;
        client.close().await?;
        Ok::<_, fcc_proto::FccError>(response)
    }
    .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inject_bundle: {address}: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!("status: {}", response.return_status);
    if !response.info_message.is_empty() {
        println!("info: {}", response.info_message);
    }
    // Warnings (e.g. "mbed.Timezone not set") do not fail the injection; a tool shows them.
    for warning in &response.warnings {
        println!("warning: {warning}");
    }
    // FCC answered: the exchange worked, whatever the status (`response.is_success()`).
    ExitCode::SUCCESS
}
