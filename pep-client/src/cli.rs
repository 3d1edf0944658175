//! The command line: the old bash tool's commands and flag spellings, plus `provision`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::api::{DEFAULT_SERVER_URL, Order};
use crate::serial::SerialSource;

/// Default output base name of `list-enrollment-ids` (`-f`).
pub const DEFAULT_LIST_OUTPUT: &str = "enrollment_ids_list";

/// pep-cli - the gateway-side client of the pep provisioning server.
#[derive(Debug, Parser)]
#[command(
    name = "pep-cli",
    disable_version_flag = true,
    after_help = "Environment: PEP_SERVER_URL (default http://localhost:5151), PEP_API_TOKEN, \
                  PEP_CA_CERT, PEP_CA_CERT_ONLY, PEP_CLIENT_CERT, PEP_CLIENT_KEY, PEP_JOURNALCTL, DEBUG. Exit codes: see docs/pep-cli.md."
)]
pub struct Cli {
    /// Output the version number.
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Verbose: trace requests on stderr (the token is never printed). `DEBUG=<anything>` does the same.
    #[arg(short = 'v', long = "verbose", global = true)]
    pub verbose: bool,

    /// The pep server.
    #[arg(long = "server", global = true, env = "PEP_SERVER_URL", default_value = DEFAULT_SERVER_URL, value_name = "URL")]
    pub server: String,

    /// Read the API token from this file instead of PEP_API_TOKEN.
    #[arg(long = "token-file", global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Trust this PEM CA certificate (bundle) for an https:// server, besides the built-in Mozilla
    /// roots (repeatable).
    #[arg(
        long = "ca-cert",
        global = true,
        env = "PEP_CA_CERT",
        value_name = "PEM",
        action = clap::ArgAction::Append
    )]
    pub ca_cert: Vec<PathBuf>,

    /// Trust only the --ca-cert CA(s), not the built-in roots (pinning the factory CA).
    #[arg(
        long = "ca-cert-only",
        global = true,
        env = "PEP_CA_CERT_ONLY",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub ca_cert_only: bool,

    /// The station's PEM certificate (chain) for mutual TLS; needs --client-key.
    #[arg(
        long = "client-cert",
        global = true,
        env = "PEP_CLIENT_CERT",
        value_name = "PEM"
    )]
    pub client_cert: Option<PathBuf>,

    /// The PEM private key of --client-cert.
    #[arg(
        long = "client-key",
        global = true,
        env = "PEP_CLIENT_KEY",
        value_name = "PEM"
    )]
    pub client_key: Option<PathBuf>,

    /// Give up on a request after this many seconds (an injection can take a while).
    #[arg(long = "http-timeout", global = true, default_value_t = 130, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_timeout: u64,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Get a gateway identity: the server injects it into FCC at IP:PORT; writes ./identity.json and prints it.
    GetOneIdentity(GetOneIdentity),
    /// Print the enrollment ID of a provisioned gateway.
    GetEnrollmentId(SerialArg),
    /// Print the FSS verification key stored for a provisioned gateway.
    GetVerificationKey(SerialArg),
    /// Save the provisioned gateways as OUTPUT.json (and OUTPUT.csv with -e csv).
    ListEnrollmentIds(ListEnrollmentIds),
    /// Run FCC, get the identity injected into it, and install pal/ and identity.json.
    Provision(Provision),
    /// Revoke a gateway's identity (its certificate joins the CA's CRL; the serial may be provisioned again).
    Revoke(Revoke),
    /// `completions SHELL` and `man`: shell completions and man pages.
    #[command(flatten)]
    Docs(crate::completions::DocsCommand),
}

/// The identity options shared by `get-one-identity` and `pep-cli provision`.
///
/// Only what the user gives is sent: a value left out is decided by the server's configuration
/// (`[device] hardware_version`, `[defaults]`), so one server-side setting governs every station.
#[derive(Debug, Clone, Args)]
pub struct IdentityOptions {
    /// Cloud API URL [default: the server's `[defaults] api_address`].
    #[arg(short = 'a', value_name = "API_URL")]
    pub api_url: Option<String>,
    /// Cloud gateway services address [default: the server's `[defaults] gateway_services_address`].
    #[arg(short = 'g', value_name = "GW_URL")]
    pub gw_url: Option<String>,
    /// Hardware version of the gateway [default: the server's `[device] hardware_version`].
    #[arg(short = 'w', value_name = "HW_VERSION")]
    pub hardware_version: Option<String>,
    /// Radio configuration of the gateway [default: the server's `[defaults] radio_config`].
    #[arg(short = 'r', value_name = "RADIO")]
    pub radio_config: Option<String>,
    /// Status LED configuration of the gateway [default: the server's `[defaults] led_config`].
    #[arg(short = 'l', value_name = "LED")]
    pub led_config: Option<String>,
    /// production or development [default: the server's `[defaults] category`].
    #[arg(short = 'c', value_name = "CATEGORY")]
    pub category: Option<String>,
    /// Set up journald Forward-Secure Sealing (journalctl --setup-keys) and send the verification key.
    #[arg(short = 'k')]
    pub setup_fss: bool,
    /// FSS sealing interval for -k.
    #[arg(short = 'e', value_name = "FSS_INTERVAL", default_value = crate::fss::DEFAULT_INTERVAL)]
    pub fss_interval: String,
}

/// `get-one-identity`.
#[derive(Debug, Args)]
pub struct GetOneIdentity {
    /// Serial number of the gateway (unique; becomes the endpoint name and certificate CN).
    #[arg(short = 's', value_name = "SERIAL")]
    pub serial: String,
    /// IP address of the gateway where FCC is running.
    #[arg(short = 'i', value_name = "GATEWAY_IP")]
    pub ip: std::net::IpAddr,
    /// Port FCC listens on (FCC prints it at start-up).
    #[arg(short = 'p', value_name = "FCC_PORT")]
    pub port: u16,
    /// Request key (8-128 printable ASCII characters): asking again with the same serial and key
    /// returns the stored identity instead of a second one (see "Lost answers" in docs/pep-cli.md).
    #[arg(long = "request-id", value_name = "KEY")]
    pub request_id: Option<crate::api::RequestKey>,
    /// Identity options.
    #[command(flatten)]
    pub identity: IdentityOptions,
}

/// A command that only takes a serial number.
#[derive(Debug, Args)]
pub struct SerialArg {
    /// Serial number of the gateway.
    #[arg(short = 's', value_name = "SERIAL")]
    pub serial: String,
}

/// `revoke`.
#[derive(Debug, Args)]
pub struct Revoke {
    /// Serial number of the gateway.
    #[arg(short = 's', value_name = "SERIAL")]
    pub serial: String,
    /// Why, as an RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation, privilegeWithdrawn or aACompromise.
    #[arg(long = "reason", value_name = "REASON")]
    pub reason: pep_ca::RevocationReason,
    /// A note for the audit trail (1-256 characters, no control characters).
    #[arg(long = "note", value_name = "TEXT")]
    pub note: Option<String>,
}

/// Export formats of `list-enrollment-ids -e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// OUTPUT.csv besides OUTPUT.json, in the old tool's format.
    Csv,
}

/// `list-enrollment-ids`.
#[derive(Debug, Args)]
pub struct ListEnrollmentIds {
    /// Number of results per page (max 1000). Default 50, or 1000 with --all.
    #[arg(short = 'l', value_name = "LIMIT", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Order: ASC or DESC. Default DESC (newest first), or ASC with --all (as the server's CSV export).
    #[arg(short = 'o', value_name = "ORDER")]
    pub order: Option<Order>,
    /// The _id of the last entry of the previous page; the list starts after it.
    #[arg(short = 't', value_name = "LAST_ID")]
    pub last: Option<String>,
    /// Also export in this format (csv).
    #[arg(short = 'e', value_name = "FORMAT", value_enum)]
    pub export: Option<ExportFormat>,
    /// Output file base name: writes OUTPUT.json (and OUTPUT.csv).
    #[arg(short = 'f', value_name = "OUTPUT", default_value = DEFAULT_LIST_OUTPUT)]
    pub output: PathBuf,
    /// Follow the next links and export the whole inventory.
    #[arg(long = "all")]
    pub all: bool,
}

/// `provision`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("serial-source").required(true).args(["serial", "serial_from"])))]
pub struct Provision {
    /// The FCC program to run (its working directory is a fresh directory).
    #[arg(long = "fcc", value_name = "PATH")]
    pub fcc: PathBuf,
    /// An argument for FCC (repeatable, in order).
    #[arg(long = "fcc-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub fcc_args: Vec<String>,
    /// Seconds to wait for FCC's "Client IP Address and Port" line.
    #[arg(long = "fcc-timeout", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub fcc_timeout: u64,
    /// Seconds to wait for FCC to exit after the injection.
    #[arg(long = "fcc-exit-timeout", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub fcc_exit_timeout: u64,
    /// Serial number of the gateway.
    #[arg(short = 's', long = "serial", value_name = "SERIAL")]
    pub serial: Option<String>,
    /// Read the serial number from cpuinfo (/proc/cpuinfo Serial), machine-id (/etc/machine-id) or file:PATH.
    #[arg(long = "serial-from", value_name = "SOURCE")]
    pub serial_from: Option<SerialSource>,
    /// Install pal/ to --pal-dest and identity.json into --identity-dest (both required).
    #[arg(long = "install", requires_all = ["pal_dest", "identity_dest"])]
    pub install: bool,
    /// Where pal/ goes (edge-core's storage folder, e.g. /userdata/mbed/mcc_config); must not exist.
    #[arg(long = "pal-dest", value_name = "DIR", requires = "install")]
    pub pal_dest: Option<PathBuf>,
    /// The directory identity.json goes to (e.g. /userdata/edge_gw_config).
    #[arg(long = "identity-dest", value_name = "DIR", requires = "install")]
    pub identity_dest: Option<PathBuf>,
    /// Move existing destinations aside (suffix .YYYYMMDDTHHMMSSZ) instead of refusing.
    #[arg(long = "force")]
    pub force: bool,
    /// After a lost answer (time-out, reset, a proxy's 502/503/504), ask the server again this
    /// many times with the same request key before keeping FCC's results for an operator.
    #[arg(long = "answer-retries", value_name = "N", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(0..=20))]
    pub answer_retries: u32,
    /// Milliseconds before the first new try after a lost answer; each further wait doubles (at most 16 s).
    #[arg(long = "answer-retry-delay", value_name = "MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub answer_retry_delay: u64,
    /// Identity options.
    #[command(flatten)]
    pub identity: IdentityOptions,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pep-cli").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn old_get_one_identity_line_parses_with_defaults() {
        let cli = parse(&[
            "get-one-identity",
            "-s",
            "GW-1",
            "-i",
            "10.0.0.2",
            "-p",
            "40123",
            "-v",
        ])
        .unwrap();
        assert!(cli.global.verbose);
        let Some(Command::GetOneIdentity(g)) = cli.command else {
            panic!()
        };
        assert_eq!(g.serial, "GW-1");
        assert_eq!(g.port, 40123);
        // Left out: the server's configuration decides, so nothing is sent.
        assert_eq!(g.identity.api_url, None);
        assert_eq!(g.identity.gw_url, None);
        assert_eq!(g.identity.hardware_version, None);
        assert_eq!(g.identity.radio_config, None);
        assert_eq!(g.identity.led_config, None);
        assert_eq!(g.identity.category, None);
        assert!(!g.identity.setup_fss);
        assert_eq!(g.identity.fss_interval, "10s");
    }

    #[test]
    fn all_old_get_one_identity_flags() {
        let cli = parse(&[
            "get-one-identity",
            "-s",
            "S",
            "-i",
            "10.0.0.2",
            "-p",
            "1",
            "-a",
            "A",
            "-g",
            "G",
            "-w",
            "W",
            "-r",
            "R",
            "-l",
            "L",
            "-c",
            "development",
            "-k",
            "-e",
            "1h",
        ])
        .unwrap();
        let Some(Command::GetOneIdentity(g)) = cli.command else {
            panic!()
        };
        let o = g.identity;
        assert_eq!(
            (
                o.api_url.as_deref(),
                o.gw_url.as_deref(),
                o.hardware_version.as_deref(),
                o.radio_config.as_deref()
            ),
            (Some("A"), Some("G"), Some("W"), Some("R"))
        );
        assert_eq!(
            (o.led_config.as_deref(), o.category.as_deref()),
            (Some("L"), Some("development"))
        );
        assert!(o.setup_fss);
        assert_eq!(o.fss_interval, "1h");
    }

    #[test]
    fn missing_or_bad_required_values_are_usage_errors() {
        assert!(parse(&["get-one-identity", "-s", "S", "-i", "10.0.0.2"]).is_err());
        assert!(parse(&["get-one-identity", "-s", "S", "-i", "nope", "-p", "1"]).is_err());
        assert!(
            parse(&[
                "get-one-identity",
                "-s",
                "S",
                "-i",
                "10.0.0.2",
                "-p",
                "70000"
            ])
            .is_err()
        );
        assert!(parse(&["get-enrollment-id"]).is_err());
        assert!(parse(&["list-enrollment-ids", "-l", "1001"]).is_err());
        assert!(parse(&["list-enrollment-ids", "-o", "sideways"]).is_err());
        assert!(parse(&["list-enrollment-ids", "-e", "xml"]).is_err());
    }

    #[test]
    fn list_flags() {
        let cli = parse(&[
            "list-enrollment-ids",
            "-l",
            "10",
            "-o",
            "asc",
            "-t",
            "42",
            "-e",
            "csv",
            "-f",
            "out",
        ])
        .unwrap();
        let Some(Command::ListEnrollmentIds(l)) = cli.command else {
            panic!()
        };
        assert_eq!(l.limit, Some(10));
        assert_eq!(l.order, Some(Order::Asc));
        assert_eq!(l.last.as_deref(), Some("42"));
        assert_eq!(l.export, Some(ExportFormat::Csv));
        assert_eq!(l.output, PathBuf::from("out"));
        let cli = parse(&["list-enrollment-ids"]).unwrap();
        let Some(Command::ListEnrollmentIds(l)) = cli.command else {
            panic!()
        };
        assert_eq!((l.limit, l.order, l.all), (None, None, false));
        assert_eq!(l.output, PathBuf::from(DEFAULT_LIST_OUTPUT));
    }

    #[test]
    fn provision_flags() {
        let cli = parse(&[
            "provision",
            "--fcc",
            "/opt/fcc",
            "--fcc-arg",
            "--sessions",
            "--fcc-arg",
            "one",
            "--serial-from",
            "file:/etc/serial",
            "--install",
            "--pal-dest",
            "/p",
            "--identity-dest",
            "/i",
            "--force",
            "-c",
            "development",
        ])
        .unwrap();
        let Some(Command::Provision(p)) = cli.command else {
            panic!()
        };
        assert_eq!(p.fcc_args, vec!["--sessions", "one"]);
        assert_eq!(
            p.serial_from,
            Some(SerialSource::File("/etc/serial".into()))
        );
        assert!(p.install && p.force);
        assert_eq!(p.fcc_timeout, 30);
        assert_eq!((p.answer_retries, p.answer_retry_delay), (6, 500));
        assert_eq!(p.identity.category.as_deref(), Some("development"));

        // A serial source is required, and only one.
        assert!(parse(&["provision", "--fcc", "f"]).is_err());
        assert!(
            parse(&[
                "provision",
                "--fcc",
                "f",
                "--serial",
                "a",
                "--serial-from",
                "cpuinfo"
            ])
            .is_err()
        );
        // --install needs both destinations, the destinations need --install.
        assert!(
            parse(&[
                "provision",
                "--fcc",
                "f",
                "--serial",
                "a",
                "--install",
                "--pal-dest",
                "/p"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "provision",
                "--fcc",
                "f",
                "--serial",
                "a",
                "--pal-dest",
                "/p"
            ])
            .is_err()
        );
        assert!(parse(&["provision", "--fcc", "f", "--serial-from", "eeprom"]).is_err());
    }

    #[test]
    fn request_keys_and_retry_options() {
        let base = ["get-one-identity", "-s", "S", "-i", "10.0.0.2", "-p", "1"];
        let with_key = |key: &str| {
            let mut args = base.to_vec();
            args.extend(["--request-id", key]);
            parse(&args)
        };
        let Some(Command::GetOneIdentity(g)) = with_key("0123456789abcdef").unwrap().command else {
            panic!()
        };
        assert_eq!(
            g.request_id.map(|k| k.to_string()).as_deref(),
            Some("0123456789abcdef")
        );
        let Some(Command::GetOneIdentity(g)) = parse(&base).unwrap().command else {
            panic!()
        };
        assert_eq!(g.request_id, None);
        for bad in ["short", "has a blank!", &"k".repeat(129), "caf\u{e9}-key-1"] {
            let err = with_key(bad).unwrap_err().to_string();
            assert!(err.contains("request key"), "{bad:?}: {err}");
        }
        assert!(with_key(&"k".repeat(128)).is_ok());
        assert!(with_key("~!\"#$%&'").is_ok(), "8 printable characters");

        let p = |extra: &[&str]| {
            let mut args = vec!["provision", "--fcc", "f", "--serial", "a"];
            args.extend_from_slice(extra);
            parse(&args)
        };
        let Some(Command::Provision(pr)) =
            p(&["--answer-retries", "0", "--answer-retry-delay", "10"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!((pr.answer_retries, pr.answer_retry_delay), (0, 10));
        assert!(p(&["--answer-retries", "21"]).is_err());
        assert!(p(&["--answer-retries", "-1"]).is_err());
        assert!(p(&["--answer-retry-delay", "60001"]).is_err());
    }

    #[test]
    fn version_flags() {
        assert!(parse(&["-V"]).unwrap().version);
        assert!(parse(&["--version"]).unwrap().version);
    }
}
