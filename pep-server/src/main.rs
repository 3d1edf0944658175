//! `pep-server`: the factory provisioning daemon. Thin wiring only: config → check → store →
//! provisioner → router → serve until SIGINT/SIGTERM; or `check-config` to validate a config file.
//! Every start-up failure is printed once: as a plain line before the config (and so the log
//! format) is known, through the log after.
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pep_server::config::{Config, LogFormat};
use pep_server::http::{self, AppState, Auth, Limits};
use pep_server::metrics::Metrics;
use pep_server::provision::Provisioner;
use pep_server::store::Store;
use tracing_subscriber::EnvFilter;

mod completions;

/// Grace added to the HTTP deadline over the core's own request deadline, so that the core's answer
/// (which says what timed out) wins a tie.
const HTTP_DEADLINE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The config file used when neither `--config` nor `PEP_CONFIG` names one.
const DEFAULT_CONFIG: &str = "pep.toml";

/// Factory provisioning server for edge gateways.
#[derive(Debug, Parser)]
#[command(name = "pep-server", version, about)]
struct Cli {
    /// The configuration file [default: pep.toml in the working directory].
    #[arg(long, short = 'c', global = true, env = "PEP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Validate the configuration: prints every error and warning with its field; exits 1 on any error.
    CheckConfig,
    /// Copy every identity and audit row of one store into another, empty one (for instance
    /// SQLite → PostgreSQL). Stop the servers using the source first. Does not read the config.
    MigrateStore {
        /// The source database URL (`sqlite://PATH` or `postgres://...`).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The target database URL; must hold no identity and no audit row.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    #[command(flatten)]
    Docs(completions::DocsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match load_config(cli.config) {
            Ok((_, config)) => check_config(&config),
            Err(message) => {
                println!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::MigrateStore { from, to } => migrate_store(&from, &to),
        Command::Docs(docs) => completions::run(&docs, <Cli as clap::CommandFactory>::command()),
        Command::Serve => {
            // The log format is in the config: until it is loaded, a failure is one plain line.
            let (path, config) = match load_config(cli.config) {
                Ok(loaded) => loaded,
                Err(message) => {
                    eprintln!("pep-server: {message}");
                    return ExitCode::FAILURE;
                }
            };
            init_tracing(config.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(&path, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    // Once, through the log (stderr), in the configured format.
                    tracing::error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads the config named by `--config`/`PEP_CONFIG`, or `pep.toml` in the working directory.
/// When none was named and there is no `pep.toml`, the message says how to give one.
fn load_config(given: Option<PathBuf>) -> Result<(PathBuf, Config), String> {
    let path = match given {
        Some(path) => path,
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG);
            if !path.exists() {
                return Err(format!(
                    "no configuration file: none was given and there is no {}. \
                     Give one with --config FILE (or PEP_CONFIG=FILE). To try pep, run \
                     `pep-server --config fixtures/demo/pep.toml` from the repository root (the demo); \
                     pep-server/pep.example.toml is a complete, commented example to start from.",
                    pep_server::config::path_for_people(&path)
                ));
            }
            path
        }
    };
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    Ok((path, config))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line, the event's fields (message included) under `fields`, the span's
        // fields under `span`/`spans`, never colour codes.
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// `check-config`: the report on stdout, exit 1 on any error.
fn check_config(config: &Config) -> ExitCode {
    let report = config.check();
    print!("{report}");
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `migrate-store`: copies the store at `from` into the empty store at `to`; a summary on stdout,
/// exit 1 (and nothing written to the target) on any error.
fn migrate_store(from: &str, to: &str) -> ExitCode {
    use pep_server::store::{StoreOptions, default_server_id};
    init_tracing(LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pep-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Its own server id: opening a shared source never recovers a live server's attempts.
        let options = StoreOptions {
            server_id: format!("{}/migrate-store", default_server_id()),
            ..StoreOptions::default()
        };
        let source = Store::open_with(from, options.clone())
            .await
            .map_err(|e| format!("cannot open the source store: {e}"))?;
        let target = Store::open_with(to, options)
            .await
            .map_err(|e| format!("cannot open the target store: {e}"))?;
        let report = pep_server::store::migrate_store(&source, &target)
            .await
            .map_err(|e| format!("nothing was copied: {e}"));
        source.close().await;
        target.close().await;
        report
    });
    match result {
        Ok(r) => {
            println!(
                "copied {} identities ({} deployed, {} failed, of which {} were in flight and are now failed) and {} audit rows",
                r.identities(),
                r.deployed,
                r.failed,
                r.interrupted,
                r.audit
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("pep-server: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon: refuses to start on any config error, then serves until a shutdown signal.
async fn serve(path: &Path, config: Config) -> Result<(), String> {
    // Checked here, before the database is opened, to refuse a bad config early; the warnings
    // are logged once, by `Provisioner::new` below (embedders get them the same way).
    let report = config.check();
    if !report.is_ok() {
        for error in &report.errors {
            match config.log_format {
                // The same lines `check-config` prints, for the person at the terminal.
                LogFormat::Text => eprintln!("error: {error}"),
                LogFormat::Json => {
                    tracing::error!(field = %error.field, "config: {}", error.message)
                }
            }
        }
        return Err(format!(
            "refusing to start: {} has {} error(s)",
            path.display(),
            report.errors.len()
        ));
    }
    let auth = Auth::from_config(&config).map_err(|e| e.to_string())?;
    if matches!(auth, Auth::Disabled) {
        tracing::warn!(
            "authentication is DISABLED (auth = \"none\"): anyone on the network can mint identities; lab use only"
        );
    }
    let listen = config.listen;
    let config_max_connections = config.http.max_connections;
    let limits = Limits {
        request_deadline: config.request_deadline() + HTTP_DEADLINE_GRACE,
    };

    // The server id marks this server's attempts in a shared (PostgreSQL) database.
    let store = Store::open_with(&config.database_url, config.store_options())
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let provisioner = Provisioner::new(Arc::new(config), store)
        .map_err(|e| format!("cannot start the provisioner: {e}"))?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    tracing::info!(address = %bound, "listening");
    // On stdout too, for scripts and tests that started the server on port 0.
    println!("listening on {bound}");

    let state = AppState {
        provisioner: Arc::new(provisioner),
        auth: Arc::new(auth),
        metrics: Arc::new(Metrics::new()),
        limits,
    };
    let options = http::ServeOptions {
        max_connections: config_max_connections,
    };
    http::serve_with(listener, http::router(state), shutdown_signal(), options)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes at SIGINT or SIGTERM. In-flight requests then finish before the process exits.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
