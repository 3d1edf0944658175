//! Embed the provisioning core in your own tool: no HTTP, a SQLite store in a temporary
//! directory, one simulated gateway (fake-fcc, in-process) provisioned and read back.
//!
//! ```sh
//! cargo run -p pep-server --example embed_provisioner
//! ```
//!
//! It uses the repository's TEST-ONLY CA (through `fixtures/demo/pep.toml`): never for real
//! gateways. `pep-server/tests/examples.rs` runs it.

use std::path::Path;
use std::sync::Arc;

use pep_server::config::Config;
use pep_server::model::GatewayFields;
use pep_server::provision::{ProvisionRequest, Provisioner};
use pep_server::store::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The demo configuration, its relative paths (CA, bootstrap stand-ins) taken from the
    // repository root, and its database moved to a directory removed on exit.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("pep-server has no parent directory"))?;
    let mut config = Config::load(repo.join("fixtures/demo/pep.toml"))?;
    config.resolve_relative_to(repo);
    let dir = tempfile::tempdir()?;
    config.database_url = format!("sqlite://{}", dir.path().join("pep.sqlite").display());

    // The store (creates and migrates the database) and the provisioner: what the daemon's HTTP
    // layer calls, usable on its own.
    let store = Store::open(&config.database_url).await?;
    let provisioner = Provisioner::new(Arc::new(config), store)?;

    // One simulated gateway on 127.0.0.1, an ephemeral port; it verifies what it receives like
    // the genuine FCC.
    let (gateway, mut handle) = fake_fcc::spawn(fake_fcc::GatewayConfig::default()).await?;
    println!("gateway listens on {gateway}");

    // The request fields as the HTTP API takes them (text, validated once here); absent fields
    // get the configuration's defaults. The demo config enables first-to-claim, which uses
    // the FSS verification key.
    let fields = GatewayFields {
        serial_number: Some("GW-EMBED-1".to_owned()),
        ip: Some(gateway.ip().to_string()),
        port: Some(gateway.port().to_string()),
        verification_key: Some("a1b2c3-d4e5f6/1a2b3c-35a4e900".to_owned()),
        ..GatewayFields::default()
    };
    let request = ProvisionRequest {
        params: provisioner.gateway_params(fields, None)?,
        // Who asks, for the audit trail.
        requester: "embed_provisioner example".to_owned(),
        // No request key: a repeated request is refused (409), not answered again.
        request_key: None,
    };

    // Issue the identity, inject it, record it: one call.
    let identity = provisioner.provision(request).await?;
    println!("provisioned {}", identity.serial_number.as_str());
    println!("enrollment ID: {}", identity.enrollment_id.as_str());

    // What the store kept for that serial.
    let stored = provisioner
        .store()
        .enrollment_id(identity.serial_number.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the store has no identity for GW-EMBED-1"))?;
    println!("stored enrollment ID: {stored}");

    // The gateway's side of the session: did the genuine checks pass?
    if let Some(report) = handle.next_report().await {
        println!("gateway answered success: {}", report.wire_success);
    }
    handle.shutdown();
    provisioner.store().close().await;
    Ok(())
}
