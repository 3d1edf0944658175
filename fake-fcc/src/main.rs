//! The `fake-fcc` binary: a simulated FCC gateway on the command line. Everything testable lives
//! in the library; this file only parses arguments and wires them up.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fake_fcc::{Fault, Faults, GatewayConfig, Sessions, server::random_fcc_port};

/// A gateway simulator that behaves like the genuine Factory Configurator Client (FCC) on the wire.
///
/// `fake-fcc [OPTIONS]` runs one simulated device. Like the genuine
/// factory-configurator-client-example on Linux it prints
///
///     (blank line)
///      Client IP Address and Port :  IP:PORT
///     (blank line)
///      Client is waiting for incoming connection...
///
/// then `Factory flow begins...`, and serves ONE factory session: the storage is wiped on the
/// first valid frame (`Storage is erased`), every frame is answered (`Successfully processed comm
/// message`, or `Failed to process data` for a wire-status-9 reply), and the process exits after
/// the first message without `KpAlvSess: 1` — exit code 0 when that message succeeded at wire
/// level (`Successfully completed factory flow`), else 1. A receive error (bad hash, zero length,
/// truncated or oversize frame) gets no reply; with the session finished the process exits 1,
/// with a kept-alive session it waits for a new connection.
///
/// Stored items are written to one readable file each under --storage (default ./pal):
/// PrvKey_<name> (mode 0600), PubKey_<name>, Cert_<name>, Crt1_<name>..Crt4_<name> (chain
/// elements 1..4), CfgParam_<name>; raw bytes (DER for keys and certificates).
#[derive(Debug, Parser)]
#[command(
    name = "fake-fcc",
    version,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Subcommands (running the device is the default when none is given).
#[derive(Debug, Subcommand)]
enum Command {
    /// Run one simulated device (the same as giving no subcommand).
    Run(RunArgs),
    /// Provision many simulated gateways through a pep-server and report rate, latency and
    /// failures (load and chaos runs): runs the `pep-fleet` binary next to this one with the
    /// same arguments (`fake-fcc fleet --help` shows them).
    #[command(disable_help_flag = true)]
    Fleet {
        /// The arguments of `pep-fleet`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// IP address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// TCP port (default: random in [1024, 65534] like FCC on Linux, retried if taken).
    #[arg(long)]
    port: Option<u16>,

    /// Directory for the item files; wiped of item files on the first valid frame.
    #[arg(long, default_value = "./pal")]
    storage: PathBuf,

    /// Factory sessions to serve in a row, each with fresh storage: a number or "forever".
    #[arg(long, default_value = "1", value_parser = parse_sessions)]
    sessions: Sessions,

    /// Reject what the genuine FCC tolerates: exact key matching instead of the prefix quirk,
    /// no 4-byte over-read of short numeric params, UTCOffset exactly 6 characters.
    #[arg(long)]
    strict: bool,

    /// Inject a fault, KIND[=ARG][:PROBABILITY] (repeatable). Kinds: close (process, then close
    /// without replying), corrupt-hash, stall=MS (wait before replying), wire9 (answer the
    /// 12-byte wire-status-9 frame), return-status=N (answer ReturnStatus N), never-read (accept
    /// a connection and never read). Example: --fault close:0.1 --fault stall=2000:0.05
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<Fault>,

    /// Seed for the fault generator (repeatable runs).
    #[arg(long)]
    seed: Option<u64>,

    /// Largest accepted request body in bytes; longer frames are dropped without a reply.
    #[arg(long, default_value_t = fcc_proto::frame::DEFAULT_MAX_FRAME_LEN)]
    max_frame_len: usize,
}

fn parse_sessions(s: &str) -> Result<Sessions, String> {
    s.parse()
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse::<Fault>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        Some(Command::Fleet { args }) => return fleet(args),
        None => cli.run,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-fcc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

/// `fake-fcc fleet ARGS`: runs `pep-fleet ARGS` from the directory of this executable. The fleet
/// lives in its own crate (`pep-loadgen`), which depends on this one, so this binary cannot link
/// it; the spelling `fake-fcc fleet` is kept for scripts and users. On Unix the process is
/// replaced (same pid, signals, exit code and CPU accounting as running `pep-fleet` itself).
fn fleet(args: Vec<OsString>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("fake-fcc: cannot find this executable's directory to run pep-fleet: {e}");
            return ExitCode::from(2);
        }
    };
    let fleet = exe.with_file_name(format!("pep-fleet{}", std::env::consts::EXE_SUFFIX));
    if !fleet.is_file() {
        eprintln!(
            "fake-fcc: `fake-fcc fleet` runs the pep-fleet binary, which is not at {}: \
             build it next to fake-fcc (`cargo build -p pep-loadgen`, with the same profile) \
             or run pep-fleet directly",
            fleet.display()
        );
        return ExitCode::from(2);
    }
    let mut command = std::process::Command::new(&fleet);
    command.args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Only returns on failure.
        let e = command.exec();
        eprintln!("fake-fcc: cannot run {}: {e}", fleet.display());
        ExitCode::from(2)
    }
    #[cfg(not(unix))]
    match command.status() {
        Ok(status) => ExitCode::from(
            status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(2),
        ),
        Err(e) => {
            eprintln!("fake-fcc: cannot run {}: {e}", fleet.display());
            ExitCode::from(2)
        }
    }
}

fn print(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn run(args: RunArgs) -> ExitCode {
    // Like `mcc_platform_storage_init()`, the storage directory exists before anything else.
    if let Err(e) = std::fs::create_dir_all(&args.storage) {
        eprintln!(
            "fake-fcc: cannot create the storage directory {}: {e}",
            args.storage.display()
        );
        return ExitCode::FAILURE;
    }
    let base = GatewayConfig {
        bind: args.bind,
        port: 0,
        storage_dir: Some(args.storage.clone()),
        sessions: args.sessions,
        strict: args.strict,
        faults: Faults {
            faults: args.faults.clone(),
            seed: args.seed,
        },
        max_frame_len: args.max_frame_len,
        print_progress: true,
    };
    // Like FCC: up to five attempts; a fixed --port is tried once.
    let attempts = if args.port.is_some() { 1 } else { 5 };
    let mut spawned = None;
    let mut last_error = None;
    for _ in 0..attempts {
        let config = GatewayConfig {
            port: args.port.unwrap_or_else(random_fcc_port),
            ..base.clone()
        };
        match fake_fcc::spawn(config).await {
            Ok(s) => {
                spawned = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some((addr, mut handle)) = spawned else {
        if let Some(e) = last_error {
            eprintln!("fake-fcc: {e}");
        }
        print(" FCC did not succeed receive network interface !!!!!!");
        return ExitCode::FAILURE;
    };
    print("");
    print(&format!(" Client IP Address and Port :  {addr}"));
    print("");
    print(" Client is waiting for incoming connection...");
    print("Factory flow begins...");

    let mut last_ok = false;
    loop {
        tokio::select! {
            report = handle.next_report() => match report {
                Some(report) => {
                    if let Some(error) = &report.error {
                        tracing::info!(%error, "session ended");
                    }
                    last_ok = report.wire_success;
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => {
                handle.shutdown();
                return ExitCode::FAILURE;
            }
        }
    }
    if last_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
