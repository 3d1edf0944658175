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
    /// The tamper-evident audit trail: verify its hash chains and signed checkpoints, export it.
    /// Reads the database only (a running server may keep writing).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Set up the factory CA: a new key and CA certificate (or a request for an external root),
    /// in files or in a PKCS#11 token. Does not read the config.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Claims of deployed gateways in the device-management cloud (`[cloud]`). With SQLite, stop
    /// the server first (one process per database file).
    #[command(subcommand)]
    Cloud(CloudCommand),
    #[command(flatten)]
    Docs(completions::DocsCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk every audit chain (or an export) and check each row's hash, its link to the row before,
    /// and the CA's signed checkpoints. Prints the first broken link of each chain (row id, what
    /// changed). Exit 0 only if everything is intact, 1 if not, 2 if it could not be checked.
    Verify {
        /// The database URL (`sqlite://PATH` or `postgres://...`).
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        database: Option<String>,
        /// An `audit export` file (JSON Lines) to check without the database.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// The factory CA certificate that signed the checkpoints [default: `[ca] cert` of the
        /// --config file].
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Write the audit chains as JSON Lines with their hashes and signed checkpoints: in each
    /// chain, the first row at or after --since and every row after it.
    Export {
        /// The database URL (`sqlite://PATH` or `postgres://...`).
        #[arg(long, value_name = "URL")]
        database: String,
        /// RFC 3339 time (2026-12-07T08:00:00Z) or ms since the epoch.
        #[arg(long, value_name = "TIME")]
        since: String,
        /// The file to write (replaced only once complete) [default: stdout].
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Write a new P-256 CA into DIR: CA_private.pem (mode 0600) and CA_cert.pem (self-signed,
    /// basicConstraints CA:TRUE pathlen 0, keyUsage keyCertSign + cRLSign), or with --csr
    /// CA_private.pem and CA_csr.pem for an external root to sign. Never overwrites a file.
    Init {
        /// The directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        new_ca: NewCaArgs,
    },
    /// Generate a non-extractable P-256 key in a PKCS#11 token and write the CA certificate
    /// (self-signed in the token) or, with --csr, a request for an external root into DIR. The
    /// user PIN comes from --pin-file or the PEP_PKCS11_PIN environment variable.
    #[command(name = "generate-pkcs11")]
    GeneratePkcs11 {
        /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long, value_name = "FILE")]
        module: PathBuf,
        /// The token's label.
        #[arg(long)]
        token: String,
        /// The label of the new key.
        #[arg(long)]
        label: String,
        #[command(flatten)]
        new_ca: NewCaArgs,
        /// The directory for CA_cert.pem or CA_csr.pem (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// A file holding the user PIN (PEP_PKCS11_PIN overrides it).
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CloudCommand {
    /// Send the due claims (and claim deletions) now, until none is due; with --dry-run, print
    /// what would be sent and change nothing.
    Sync {
        /// Print the requests (or bulk files) that would be sent; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Queue again every claim in STATE (after fixing the API key: `--state rejected`); the
    /// server sends them at once.
    Retry {
        /// The state to re-queue: rejected, already_claimed or retrying.
        #[arg(long, value_name = "STATE")]
        state: String,
    },
}

/// What both `ca` commands make: the CA's name, and a self-signed certificate or a request.
#[derive(Debug, clap::Args)]
struct NewCaArgs {
    /// The CA's common name, e.g. "ACME Factory CA 2027".
    #[arg(long)]
    name: String,
    /// Days the self-signed certificate is valid.
    #[arg(long, default_value_t = pep_ca::setup::DEFAULT_CA_DAYS)]
    days: u32,
    /// Write a certificate request for an external root instead of a self-signed certificate.
    #[arg(long)]
    csr: bool,
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
        Command::Audit(command) => audit_command(command, cli.config),
        Command::Ca(command) => match ca_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("pep-server: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Cloud(command) => match load_config(cli.config) {
            Ok((_, config)) => cloud_command(&config, command),
            Err(message) => {
                eprintln!("pep-server: {message}");
                ExitCode::FAILURE
            }
        },
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
    let (report, summary) = config.check_with_summary();
    print!("{report}");
    if let Some(summary) = summary.filter(|_| report.is_ok()) {
        print!("{summary}");
        ExitCode::SUCCESS
    } else if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `ca init` and `ca generate-pkcs11`.
fn ca_command(command: CaCommand) -> Result<(), String> {
    use pep_ca::setup::{self, CaRequest};
    let request = |csr: bool, days: u32| {
        if csr {
            CaRequest::Csr
        } else {
            CaRequest::SelfSigned { days }
        }
    };
    let output_name = |csr: bool| if csr { "CA_csr.pem" } else { "CA_cert.pem" };
    match command {
        CaCommand::Init {
            out,
            new_ca: NewCaArgs { name, days, csr },
        } => {
            let made = setup::new_file_ca(&name, request(csr, days)).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let key_path = out.join("CA_private.pem");
            let output_path = out.join(output_name(csr));
            // Both names are checked before anything is written: no half-made CA.
            for path in [&key_path, &output_path] {
                if path.exists() {
                    return Err(format!(
                        "{} exists already: choose another --out",
                        path.display()
                    ));
                }
            }
            write_new(&key_path, made.key_pem.as_bytes(), 0o600)?;
            write_new(&output_path, made.output_pem.as_bytes(), 0o644)?;
            println!("wrote {} (mode 0600)", key_path.display());
            println!("wrote {}", output_path.display());
            if csr {
                println!(
                    "have your root sign {} (as a CA: basicConstraints CA:TRUE, pathlen 0; keyUsage keyCertSign, cRLSign), \
                     then put the certificate in CA_cert.pem",
                    output_path.display()
                );
            }
            println!(
                "[ca]\ncert = \"{}\"\nkey = \"{}\"",
                out.join("CA_cert.pem").display(),
                key_path.display()
            );
            Ok(())
        }
        CaCommand::GeneratePkcs11 {
            module,
            token,
            label,
            new_ca: NewCaArgs { name, days, csr },
            out,
            pin_file,
        } => {
            let pin = cli_pin(pin_file.as_deref())?;
            let output_path = out.join(output_name(csr));
            if output_path.exists() {
                return Err(format!(
                    "{} exists already: choose another --out",
                    output_path.display()
                ));
            }
            std::fs::create_dir_all(&out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let made =
                setup::new_token_ca(&module, &token, &label, &pin, &name, request(csr, days))
                    .map_err(|e| e.to_string())?;
            drop(pin);
            write_new(&output_path, made.output_pem.as_bytes(), 0o644)?;
            println!(
                "generated a non-extractable P-256 key \"{label}\" (id {}) in token \"{token}\"",
                made.id_hex
            );
            println!("wrote {}", output_path.display());
            println!(
                "[ca]\ncert = \"{}\"\nkey = \"{}\"\npkcs11_module = \"{}\"\npin_file = \"...\"  # or PEP_PKCS11_PIN",
                out.join("CA_cert.pem").display(),
                made.uri,
                module.display()
            );
            Ok(())
        }
    }
}

/// The PIN of `ca generate-pkcs11`: `PEP_PKCS11_PIN`, else the first line of `--pin-file`.
fn cli_pin(pin_file: Option<&Path>) -> Result<zeroize::Zeroizing<String>, String> {
    use zeroize::Zeroizing;
    if let Some(pin) = std::env::var_os(pep_server::config::PKCS11_PIN_ENV) {
        let pin = Zeroizing::new(pin.into_string().unwrap_or_default());
        if !pin.is_empty() {
            return Ok(pin);
        }
    }
    let Some(path) = pin_file else {
        return Err(format!(
            "no PIN: give --pin-file FILE or set {}",
            pep_server::config::PKCS11_PIN_ENV
        ));
    };
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let pin = Zeroizing::new(text.lines().next().unwrap_or_default().trim().to_owned());
    if pin.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(pin)
}

/// Writes a file that must not exist yet, with `mode` from the start (a key is never readable
/// by others, not even for an instant).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The runtime of a one-shot command (one thread); `None`, said on stderr, if it cannot start.
fn command_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("pep-server: cannot start the async runtime: {e}"))
        .ok()
}

/// `migrate-store`: copies the store at `from` into the empty store at `to`; a summary on stdout,
/// exit 1 (and nothing written to the target) on any error.
fn migrate_store(from: &str, to: &str) -> ExitCode {
    use pep_server::store::{StoreOptions, default_server_id};
    init_tracing(LogFormat::Text);
    let Some(runtime) = command_runtime() else {
        return ExitCode::FAILURE;
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
                "copied {} identities ({} deployed, {} failed, {} in doubt; {} were in flight and are now failed or in doubt) and {} audit rows",
                r.identities(),
                r.deployed,
                r.failed,
                r.in_doubt,
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

/// `audit verify` and `audit export`.
fn audit_command(command: AuditCommand, config: Option<PathBuf>) -> ExitCode {
    init_tracing(LogFormat::Text);
    let Some(runtime) = command_runtime() else {
        return ExitCode::from(2);
    };
    match command {
        AuditCommand::Verify {
            database,
            file,
            ca_cert,
        } => runtime.block_on(audit_verify(database, file, ca_cert, config)),
        AuditCommand::Export {
            database,
            since,
            output,
        } => match runtime.block_on(audit_export(&database, &since, output.as_deref())) {
            Ok(summary) => {
                eprintln!(
                    "exported {} audit row(s) of {} chain(s) and {} checkpoint(s)",
                    summary.rows, summary.chains, summary.checkpoints
                );
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("pep-server: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `audit verify`: the report on stdout; exit 0 intact, 1 not intact, 2 not checked.
async fn audit_verify(
    database: Option<String>,
    file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    config: Option<PathBuf>,
) -> ExitCode {
    use pep_server::audit::export::{verify_database, verify_file};
    let ca_path = match (ca_cert, config) {
        (Some(path), _) => path,
        (None, Some(config)) => match pep_server::config::Config::load(&config) {
            Ok(config) => config.ca.cert,
            Err(e) => {
                eprintln!("pep-server: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!(
                "pep-server: audit verify checks the checkpoints' signatures with the CA \
                 certificate: give --ca-cert FILE or --config FILE"
            );
            return ExitCode::from(2);
        }
    };
    let ca = match pep_ca::pem::read_p256_certificate(&ca_path) {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("pep-server: the CA certificate: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match (database, file) {
        (_, Some(file)) => verify_file(&file, &ca),
        (Some(url), None) => match pep_server::store::AuditSource::open(&url).await {
            Ok(source) => {
                let report = verify_database(&source, &ca).await;
                source.close().await;
                report
            }
            Err(e) => Err(e.into()),
        },
        (None, None) => {
            eprintln!("pep-server: give --database URL or --file FILE");
            return ExitCode::from(2);
        }
    };
    match report {
        Ok(report) => {
            print!("{report}");
            if report.intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("pep-server: audit not verified: {e}");
            ExitCode::from(2)
        }
    }
}

/// `audit export`: to `output` (written beside it, renamed into place once complete) or stdout.
async fn audit_export(
    database: &str,
    since: &str,
    output: Option<&Path>,
) -> Result<pep_server::audit::export::ExportSummary, String> {
    use pep_server::audit::export::{export, parse_since};
    use std::io::Write as _;
    let since_ms = parse_since(since).map_err(|e| e.to_string())?;
    let source = pep_server::store::AuditSource::open(database)
        .await
        .map_err(|e| e.to_string())?;
    let result = match output {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            export(&source, since_ms, &mut out, Path::new("<stdout>")).await
        }
        Some(path) => {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let written = async {
                let file = std::fs::File::create(&partial).map_err(|source| {
                    pep_server::audit::AuditError::Io {
                        path: partial.clone(),
                        source,
                    }
                })?;
                let mut out = std::io::BufWriter::new(file);
                let summary = export(&source, since_ms, &mut out, &partial).await?;
                out.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|mut f| f.flush().and_then(|()| f.sync_all()))
                    .and_then(|()| std::fs::rename(&partial, path))
                    .map_err(|source| pep_server::audit::AuditError::Io {
                        path: path.to_owned(),
                        source,
                    })?;
                Ok::<_, pep_server::audit::AuditError>(summary)
            }
            .await;
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            written
        }
    };
    source.close().await;
    result.map_err(|e| format!("audit export failed, nothing written: {e}"))
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
    // Loaded once more here (the check already read the files): what is served is what was read
    // last, and a file changed in between is reported by its own error.
    let tls = match &config.tls {
        Some(tls) => Some(http::ServerTls::new(tls).map_err(|e| format!("tls: {e}"))?),
        None => None,
    };
    let limits = Limits {
        request_deadline: config.request_deadline() + HTTP_DEADLINE_GRACE,
    };

    // Checked above; read again here so that what is served is what was read last.
    let receivers = config.hooks.receivers()?;
    let delivery = pep_server::hooks::DeliverySettings {
        concurrency: config.hooks.delivery.concurrency,
        poll: std::time::Duration::from_millis(config.hooks.delivery.poll_ms),
    };
    let server_id = config.server_id();

    // The server id marks this server's attempts in a shared (PostgreSQL) database.
    let store = Store::open_with(&config.database_url, config.store_options())
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    // The webhook outbox is sent by one task beside the server; provisioning never waits for it.
    let (stop_hooks, hooks_stopped) = tokio::sync::watch::channel(false);
    let deliverer = if receivers.is_empty() {
        None
    } else {
        tracing::info!(receivers = receivers.len(), "webhooks: delivering events");
        let deliverer =
            pep_server::hooks::Deliverer::new(store.clone(), receivers, delivery, server_id)
                .map_err(|e| e.to_string())?;
        Some(tokio::spawn(deliverer.run(hooks_stopped)))
    };
    let checkpoint_interval = config.audit.checkpoint_interval();
    // After the store (its leases) and before the first request: claims queued by a previous
    // run are sent again at once; provisioning never waits for it.
    let sender = pep_server::cloud::Sender::start(&config, store.clone())
        .await
        .map_err(|e| format!("cannot start the cloud claim sender: {e}"))?;
    let provisioner = Provisioner::new(Arc::new(config), store)
        .map_err(|e| format!("cannot start the provisioner: {e}"))?;
    // The audit chain heads are signed now (covering the recovery rows of the open), before the
    // first request; then periodically, and once more at shutdown below.
    let (checkpoint_store, checkpoint_ca) = (provisioner.store().clone(), provisioner.ca());
    if let Err(e) =
        pep_server::audit::checkpoint::checkpoint(&checkpoint_store, &checkpoint_ca).await
    {
        tracing::warn!(error = %e, "no audit checkpoint at start");
    }
    let checkpoints = tokio::spawn(pep_server::audit::checkpoint::run(
        checkpoint_store.clone(),
        Arc::clone(&checkpoint_ca),
        checkpoint_interval,
    ));

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %bound, scheme, "listening");
    // On stdout too, for scripts and tests that started the server on port 0.
    println!("listening on {bound}");
    if let Some(tls) = &tls {
        tokio::spawn(reload_on_hangup(tls.certs.clone()));
    }

    let state = AppState {
        provisioner: Arc::new(provisioner),
        auth: Arc::new(auth),
        metrics: Arc::new(Metrics::new()),
        limits,
    };
    let options = http::ServeOptions {
        max_connections: config_max_connections,
        tls,
    };
    let served = http::serve_with(listener, http::router(state), shutdown_signal(), options).await;
    // After the last request: its events are in the outbox; the POSTs under way end, the rest
    // wait in the outbox for the next start.
    let _ = stop_hooks.send(true);
    if let Some(deliverer) = deliverer {
        let _ = deliverer.await;
    }
    if let Some(sender) = sender {
        // Requests in flight to the cloud finish and are settled; the rest waits in the outbox.
        sender.stop(CLOUD_STOP_GRACE).await;
    }
    checkpoints.abort();
    if let Err(e) =
        pep_server::audit::checkpoint::checkpoint(&checkpoint_store, &checkpoint_ca).await
    {
        tracing::error!(error = %e, "no audit checkpoint at shutdown");
    }
    served.map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// How long a stopping server waits for the claims in flight to the cloud (each request has its
/// own 30 s timeout).
const CLOUD_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(35);

/// `cloud sync [--dry-run]` and `cloud retry --state`.
fn cloud_command(config: &Config, command: CloudCommand) -> ExitCode {
    init_tracing(LogFormat::Text);
    let Some(runtime) = command_runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(cloud_command_async(config, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pep-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn cloud_command_async(config: &Config, command: CloudCommand) -> Result<(), String> {
    use pep_server::cloud::{SenderOptions, Worker};
    use pep_server::config::CloudMode;
    use pep_server::store::ClaimState;
    let state = match &command {
        CloudCommand::Retry { state } => Some(
            state
                .parse::<ClaimState>()
                .ok()
                .filter(|s| {
                    matches!(
                        s,
                        ClaimState::Rejected | ClaimState::AlreadyClaimed | ClaimState::Retrying
                    )
                })
                .ok_or_else(|| {
                    format!("--state `{state}`: must be rejected, already_claimed or retrying")
                })?,
        ),
        CloudCommand::Sync { .. } => None,
    };
    // Its own server id: on a shared database, opening never recovers a live server's attempts.
    let mut options = config.store_options();
    options.server_id = format!("{}/cloud-cli", options.server_id);
    let store = Store::open_with(&config.database_url, options)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let result = async {
        match command {
            CloudCommand::Retry { .. } => {
                let Some(state) = state else {
                    return Ok(());
                };
                let n = store
                    .retry_claims(state)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("re-queued {n} {state} claims: the server sends them now");
                Ok(())
            }
            CloudCommand::Sync { dry_run: true } => cloud_dry_run(config, &store).await,
            CloudCommand::Sync { dry_run: false } => {
                if config.cloud.mode == CloudMode::Off {
                    return Err(
                        "cloud.mode is \"off\": set it to \"each\" or \"bulk\" to send claims"
                            .to_owned(),
                    );
                }
                let key = config.cloud.load_api_key().map_err(|e| format!("cloud.api_key_file: {e}"))?;
                let client = pep_server::cloud::CloudClient::new(
                    config.cloud.api_base(&config.defaults.api_address),
                    key,
                )
                .map_err(|e| e.to_string())?;
                let server = config.server_id();
                store.release_claim_leases(&server).await.map_err(|e| e.to_string())?;
                let mut worker = Worker::new(store.clone(), client, SenderOptions::of(config));
                let mut sent = 0;
                loop {
                    let round = worker.round().await.map_err(|e| e.to_string())?;
                    sent += round.sent;
                    if round.taken == 0 || worker.auth_refused() {
                        break;
                    }
                }
                let stats = store.claim_stats().await.map_err(|e| e.to_string())?;
                println!("sent {sent} requests");
                for s in ClaimState::ALL {
                    println!("{:<16} {}", s.as_str(), stats.claims_in(s));
                }
                if worker.auth_refused() {
                    return Err("the cloud refused the API key (401/403): fix cloud.api_key_file, then `pep-server cloud retry --state rejected`".to_owned());
                }
                Ok(())
            }
        }
    }
    .await;
    store.close().await;
    result
}

/// `cloud sync --dry-run`: every due claim and deletion as the sender would send it.
async fn cloud_dry_run(config: &Config, store: &Store) -> Result<(), String> {
    use pep_server::config::CloudMode;
    use pep_server::store::{ClaimAction, ClaimRow, ClaimState, SortOrder};
    let base = config.cloud.api_base(&config.defaults.api_address);
    let mut rows: Vec<ClaimRow> = Vec::new();
    for state in [ClaimState::Pending, ClaimState::Retrying] {
        let mut after = None;
        loop {
            let page = store
                .list_claims(Some(state), 1000, SortOrder::Asc, after)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            rows.extend(page);
        }
    }
    rows.sort_by_key(|r| r.id);
    let (claims, deletes): (Vec<&ClaimRow>, Vec<&ClaimRow>) =
        rows.iter().partition(|r| r.action == ClaimAction::Claim);
    let mode = config.cloud.mode;
    if mode == CloudMode::Bulk {
        let ids: Vec<String> = claims.iter().map(|r| r.enrollment_id.clone()).collect();
        let files = pep_server::cloud::split_files(&ids, config.cloud.bulk_max_file_bytes);
        for (i, file) in files.iter().enumerate() {
            println!(
                "POST {base}/v3/device-enrollments-bulk-uploads  file {} of {}: {} IDs, {} bytes",
                i + 1,
                files.len(),
                file.len(),
                pep_server::cloud::csv_file(file).len()
            );
            for id in file {
                println!("  {id}");
            }
        }
    } else {
        for r in &claims {
            println!(
                "POST {base}/v3/device-enrollments {{\"enrollment_identity\":\"{}\"}}  # {} {} (attempts {})",
                r.enrollment_id, r.serial, r.state, r.attempts
            );
        }
    }
    for r in &deletes {
        match &r.cloud_id {
            Some(id) => println!(
                "DELETE {base}/v3/device-enrollments/{id}  # {} {}",
                r.serial, r.enrollment_id
            ),
            None => println!(
                "POST {base}/v3/device-enrollments-bulk-deletes  # {} {}",
                r.serial, r.enrollment_id
            ),
        }
    }
    println!(
        "{} claims and {} deletions would be sent (mode {}{}); nothing was sent",
        claims.len(),
        deletes.len(),
        mode.as_str(),
        if mode == CloudMode::Off {
            ": the server sends nothing while cloud.mode is off"
        } else {
            ""
        }
    );
    Ok(())
}

/// Reloads the TLS certificate and key at each SIGHUP (rotation without downtime: open connections
/// keep their session, new handshakes get the new pair). A pair that does not load is logged with
/// the file at fault, and the one in service stays.
async fn reload_on_hangup(certs: Arc<http::tls::CertStore>) {
    #[cfg(unix)]
    {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: no certificate reload");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            match certs.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded, the previous one stays in service"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = certs;
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
