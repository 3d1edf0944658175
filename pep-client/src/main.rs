//! `pep-cli`: argument parsing, logging set-up and exit codes; the work is in the library.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use pep_client::cli::Cli;
use pep_client::error::{CliError, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help prints to stdout and succeeds; every other parse error is a usage error.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.version {
        println!("Version: {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::from(exit::OK);
    }
    let Some(command) = cli.command else {
        let _ = Cli::command().write_help(&mut std::io::stderr());
        return ExitCode::from(exit::USAGE);
    };
    init_tracing(cli.global.verbose);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&CliError::io("cannot start the async runtime", e)),
    };
    let result = runtime.block_on(async {
        // Handlers first, so that no signal can arrive between starting FCC and listening for it.
        let shutdown = shutdown_signal();
        tokio::select! {
            r = pep_client::commands::run(&cli.global, command) => r,
            () = shutdown => Err(CliError::Interrupted),
        }
    });
    // Dropping the runtime drops any FCC child, which kills its process group.
    drop(runtime);
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => report(&e),
    }
}

/// Prints the one-line error message and returns its exit code.
fn report(e: &CliError) -> ExitCode {
    eprintln!("pep-cli: error: {e}");
    ExitCode::from(e.exit_code())
}

/// Traces on stderr with `-v` or `DEBUG` set (as the old tool's `DEBUG=*`); `RUST_LOG` also works.
fn init_tracing(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let debug_env = std::env::var_os("DEBUG").is_some_and(|v| !v.is_empty());
    let filter = if verbose || debug_env {
        EnvFilter::new("pep_client=debug")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

/// Registers SIGINT and SIGTERM handlers now; the returned future resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let int_recv = async {
            match int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let term_recv = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = int_recv => {}
            () = term_recv => {}
        }
    }
}
