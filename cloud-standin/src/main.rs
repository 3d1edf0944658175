//! `cloud-standin`: the enrollment API stand-in as a process, for bench scripts (never shipped).
//! Prints `listening on ADDR` on stdout, serves until SIGINT/SIGTERM, then prints how many
//! identities were claimed and whether each exactly once.
#![deny(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use cloud_standin::{Standin, StandinOptions};

/// A stand-in of the device-management cloud's enrollment API (tests and benchmarks only).
#[derive(Debug, Parser)]
#[command(name = "cloud-standin", version, about)]
struct Cli {
    /// The address to listen on (127.0.0.1 only makes sense).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A file whose first line is the API key clients must send as a bearer token.
    #[arg(long, value_name = "FILE")]
    api_key_file: std::path::PathBuf,
    /// The largest bulk CSV accepted, bytes.
    #[arg(long, default_value_t = cloud_standin::MAX_UPLOAD_BYTES)]
    max_upload_bytes: usize,
    /// Keep connections alive between requests, as the real cloud does (benchmarks); without it
    /// every answer closes its connection.
    #[arg(long)]
    keep_alive: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let key = match std::fs::read_to_string(&cli.api_key_file) {
        Ok(text) => text.lines().next().unwrap_or_default().trim().to_owned(),
        Err(e) => {
            eprintln!(
                "cloud-standin: cannot read {}: {e}",
                cli.api_key_file.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if key.is_empty() {
        eprintln!("cloud-standin: {} is empty", cli.api_key_file.display());
        return ExitCode::FAILURE;
    }
    // One thread: the stand-in shares the bench machine's cores with the server it stands in
    // for (the real cloud's CPU is not the factory's), and one thread answers a request with
    // less CPU than a work-stealing pool that wakes its other worker for each connection.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloud-standin: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let options = StandinOptions {
            api_key: key,
            max_upload_bytes: cli.max_upload_bytes,
            keep_alive: cli.keep_alive,
            ..StandinOptions::default()
        };
        let standin = match Standin::spawn_on(cli.listen, options).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cloud-standin: cannot listen on {}: {e}", cli.listen);
                return ExitCode::FAILURE;
            }
        };
        println!("listening on {}", standin.addr());
        stop_signal().await;
        let counts = standin.claim_counts();
        let twice = counts.values().filter(|n| **n > 1).count();
        println!(
            "claimed {} identities, {twice} more than once, in {} requests",
            counts.len(),
            standin.requests().len()
        );
        ExitCode::SUCCESS
    })
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
