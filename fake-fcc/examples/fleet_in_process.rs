//! Ten simulated gateways in one process, for an integration test of your own station tool:
//! spawn them, drive each with `fcc_proto::FccClient`, print every gateway's address and answer.
//!
//! ```sh
//! cargo run -p fake-fcc --example fleet_in_process
//! ```
//!
//! `fake-fcc/tests/examples.rs` runs it.

use std::time::Duration;

use fake_fcc::GatewayConfig;
use fcc_proto::{Bundle, ConfigParam, FccClient, Timeouts, names};

const GATEWAYS: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Each gateway binds 127.0.0.1 on a port the OS picks, keeps its items in memory only, and
    // serves one factory session, like the genuine FCC process (`sessions` sets more).
    let mut fleet = Vec::with_capacity(GATEWAYS);
    for _ in 0..GATEWAYS {
        fleet.push(fake_fcc::spawn(GatewayConfig::default()).await?);
    }

    // Your tool would run here against the addresses; this one sends each gateway a small bundle
    // concurrently (two config params, no identity): the gateway answers that mandatory items
    // are missing, the answer a tool must report to its operator.
    let mut answers = tokio::task::JoinSet::new();
    for (i, (address, _)) in fleet.iter().enumerate() {
        let address = *address;
        let bundle = Bundle {
            config_params: vec![
                ConfigParam::text(names::ENDPOINT_NAME, format!("GW-FLEET-{i}")),
                ConfigParam::uint(names::CURRENT_TIME, 1_700_000_000),
            ],
            ..Bundle::default()
        };
        answers.spawn(async move {
            let mut client =
                FccClient::connect(address, Timeouts::all(Duration::from_secs(10))).await?;
            let response = client.send(&bundle).await?;
            client.close().await?;
            Ok::<_, fcc_proto::FccError>((address, response))
        });
    }
    while let Some(answer) = answers.join_next().await {
        // A task panic or a transport error ends the example with an error (exit status 1).
        let (address, response) = answer??;
        println!("{address}: {}", response.return_status);
    }

    // Dropping a handle also stops its gateway; explicit here for the reader.
    for (_, handle) in &fleet {
        handle.shutdown();
    }
    Ok(())
}
