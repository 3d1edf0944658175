//! One whole provisioning in process: `Provisioner::provision` with the SQLite store in a temporary
//! directory and one in-process `fake-fcc` gateway serving sessions forever. No HTTP. Each
//! iteration reserves a new serial, issues a key and certificate, injects the by-tool bundle over
//! loopback TCP (the gateway parses, stores and verifies it), and records the deployment.
//!
//! `cargo bench -p pep-server --bench provision`
// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use fake_fcc::{GatewayConfig, Sessions};
use pep_server::config::Config;
use pep_server::model::GatewayFields;
use pep_server::provision::{ProvisionRequest, Provisioner};
use pep_server::store::Store;

fn provisioning(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::load(manifest.join("pep.example.toml")).expect("example config");
    config.resolve_relative_to(manifest.parent().expect("workspace root"));
    // The repository's test CA: git checks its key out readable by all.
    config.ca.allow_insecure_key_permissions = true;
    config.database_url = format!("sqlite://{}", dir.path().join("pep.sqlite").display());
    let (provisioner, gateway, _handle) = runtime.block_on(async move {
        let store = Store::open(&config.database_url).await.expect("store");
        let provisioner = Provisioner::new(Arc::new(config), store).expect("provisioner");
        let (gateway, handle) = fake_fcc::spawn(GatewayConfig {
            sessions: Sessions::Forever,
            ..GatewayConfig::default()
        })
        .await
        .expect("gateway");
        (provisioner, gateway, handle)
    });
    let next = AtomicU64::new(0);
    let request = || {
        let fields = GatewayFields {
            serial_number: Some(format!("bench-{:08}", next.fetch_add(1, Ordering::Relaxed))),
            ip: Some(gateway.ip().to_string()),
            port: Some(gateway.port().to_string()),
            ..GatewayFields::default()
        };
        ProvisionRequest {
            params: provisioner.gateway_params(fields, None).expect("valid"),
            requester: "bench".to_owned(),
            request_key: None,
        }
    };
    c.bench_function(
        "provision by_tool in process (core + SQLite + fake-fcc)",
        |b| {
            b.iter(|| {
                runtime
                    .block_on(provisioner.provision(request()))
                    .expect("provisioned")
            })
        },
    );
}

criterion_group!(benches, provisioning);
criterion_main!(benches);
