//! `pep-fleet`: provisions many simulated gateways through a running pep-server and reports rate,
//! latency and failures (load and chaos runs). `fake-fcc fleet ARGS` runs this binary.
//!
//! Exit code 0 when every healthy gateway was provisioned and checked (with `--retry-rounds`:
//! every gateway ended deployed), 1 when any was not, 2 when the run could not start.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

use std::process::ExitCode;

use clap::Parser;
use pep_loadgen::FleetArgs;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = FleetArgs::parse();
    let options = args.options();
    if let Err(e) = options.validate() {
        eprintln!("pep-fleet: {e}");
        return ExitCode::from(2);
    }
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pep-fleet: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(pep_loadgen::run(options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pep-fleet: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{report}");
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("pep-fleet: cannot encode the JSON report: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("pep-fleet: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
