//! The server configuration, `pep.toml`.
//!
//! One file describes everything: where to listen, the database, the factory CA, the certificate profile,
//! what goes into the FCC bundle (bootstrap server, device information, time, firmware-update items), the
//! FCC timeouts and concurrency, who may call the API and how the log is written. Every field has a
//! default except the CA and bootstrap settings; unknown fields are rejected so that a typo cannot
//! silently fall back to a default.
//!
//! This module is the schema: the serde structs, each section's defaults in its `Default` impl (one
//! place for each default), and the typed values ([`values`]) parsed when the file is loaded, so a
//! malformed address, URI, UUID, offset or category is a load error naming its field
//! (`time.utc_offset: ...`) and no other module parses them again. `check` holds what needs more
//! than one field or the files the config points at: [`Config::check`] reads the CA and the
//! certificates and reports every problem with the field it concerns.
//!
//! Relative paths (CA, bootstrap CA, update-auth certificate, token file, the default database) are
//! resolved against the process's working directory; [`Config::resolve_relative_to`] rebases them
//! on another directory (for instance the directory of the config file). `docs/configuration.md`
//! documents every field; `pep-server/pep.example.toml` is a complete, commented, valid example.

mod check;
pub mod cloud;
pub mod hooks;
pub mod preprovision;
pub mod secret_file;
pub mod security;
pub mod values;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::category::Category;
pub use check::{CheckIssue, CheckReport, CheckSummary};
pub use cloud::{ApiKey, CloudConfig, CloudMode};
pub use hooks::{FailurePolicy, HooksConfig};
pub use preprovision::OrdersConfig;
pub use values::{BootstrapUri, UtcOffset};

/// Default listen address of the HTTP API (the old server's port).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5151));
/// Default database URL: a SQLite file under `./pep-data`, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://pep-data/pep.sqlite";
/// Default provisioning request deadline, ms.
pub const DEFAULT_REQUEST_DEADLINE_MS: u64 = 120_000;
/// Default cloud API address given to gateways (`apiAddress`).
pub const DEFAULT_API_ADDRESS: &str = "https://api.us-east-1.mbedcloud.com";
/// Default gateway services address (`gatewayServicesAddress`, also stored as `cloudAddress`).
pub const DEFAULT_GATEWAY_SERVICES_ADDRESS: &str = "https://gateways.us-east-1.mbedcloud.com";
/// Default hardware version (the old CLI's default).
pub const DEFAULT_HARDWARE_VERSION: &str = "arm-pelion-edge-gateway";
/// Default radio configuration.
pub const DEFAULT_RADIO_CONFIG: &str = "00";
/// Default status-LED configuration.
pub const DEFAULT_LED_CONFIG: &str = "01";
/// Minimum length of an API token. Tokens also need [`security::MIN_TOKEN_BITS`] of estimated
/// entropy; the README's demo token (`pep-demo-token`) is accepted on loopback only.
pub const MIN_TOKEN_LEN: usize = 12;

/// The whole `pep.toml`.
///
/// `[ca]` and `[bootstrap]` have no default, so the struct has no `Default` and the three
/// top-level values with a default name their constant (a struct-level `#[serde(default)]` would
/// turn a missing `[ca]` into a confusing check error instead of "missing field `ca`").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address, `IP:PORT`.
    #[serde(default = "defaults::listen", deserialize_with = "values::listen")]
    pub listen: SocketAddr,
    /// Database URL; `sqlite://PATH` (relative to the working directory), `sqlite::memory:`, or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` for one database shared by several servers.
    #[serde(default = "defaults::database_url")]
    pub database_url: String,
    /// This server's name in a shared (PostgreSQL) database. Each in-flight attempt carries it, and a
    /// starting server recovers only its own interrupted attempts, never those another live server is
    /// running. Stable across restarts, unique among the servers of one database. Default: host name
    /// + `/` + `listen`. Ignored by SQLite.
    #[serde(default)]
    pub server_id: Option<String>,
    /// Where the device key is generated: by this tool (`by_tool`) or on the device via a CSR (`by_device`).
    #[serde(default)]
    pub key_mode: KeyMode,
    /// Upper bound for one provisioning request, from arrival to answer (queueing included), in ms.
    #[serde(default = "defaults::request_deadline_ms")]
    pub request_deadline_ms: u64,
    /// How the daemon writes its log on stderr: `text` (default) or `json` (one object per line).
    #[serde(default)]
    pub log_format: LogFormat,
    /// API authentication: `tokens` (bearer tokens with roles) or `none` (development only).
    #[serde(default)]
    pub auth: AuthMode,
    /// Inline API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Optional TOML file holding more `[[tokens]]` entries (keeps secrets out of the main file).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The factory CA.
    pub ca: CaConfig,
    /// The device certificate profile.
    #[serde(default)]
    pub certificate: CertificateConfig,
    /// The bootstrap server the gateway connects to first.
    pub bootstrap: BootstrapConfig,
    /// Device information written into FCC.
    #[serde(default)]
    pub device: DeviceConfig,
    /// Time items written into FCC.
    #[serde(default)]
    pub time: TimeConfig,
    /// Firmware-update items written into FCC.
    #[serde(default)]
    pub update: UpdateConfig,
    /// FCC connection settings.
    #[serde(default)]
    pub fcc: FccConfig,
    /// Defaults for optional request parameters.
    #[serde(default)]
    pub defaults: RequestDefaults,
    /// The identity store's guarantees.
    #[serde(default)]
    pub store: StoreConfig,
    /// HTTP connection bounds.
    #[serde(default)]
    pub http: HttpConfig,
    /// The tamper-evident audit trail: how often its chain heads are signed.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The certificate revocation list (`GET /v3/crl`) and where device certificates point to it.
    #[serde(default)]
    pub crl: CrlConfig,
    /// HTTPS: the server's certificate and key, and optionally the CA of station (client)
    /// certificates. Without it the API is plain HTTP, refused beyond loopback unless
    /// `allow_plain_http`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP on a listen address that is not loopback (behind a TLS proxy, or on a
    /// network where everyone may read the tokens). Default false: such a config is refused.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Stations authenticated by a client certificate (`[tls] client_ca`): subject → roles.
    #[serde(default)]
    pub stations: Vec<StationConfig>,
    /// Work orders: whether a serial must belong to an open one.
    #[serde(default)]
    pub orders: OrdersConfig,
    /// `[hooks]`: the pre-provisioning hook, the event webhooks (`[[hooks.events]]`) and their
    /// delivery.
    #[serde(default)]
    pub hooks: HooksConfig,
    /// Claiming deployed gateways in the device-management cloud (default: off).
    #[serde(default)]
    pub cloud: CloudConfig,
    /// The file this config was loaded from (set by [`Config::load`]), for the permission checks
    /// of the secrets it holds.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[store]`: how the identity store commits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `full` (default: power-loss safe, every acknowledged identity is on disk) or `normal`
    /// (survives a crash of the process, not a power cut; labs only, `check` warns).
    pub durability: crate::store::Durability,
}

/// `[audit]`: the signed checkpoints of the audit hash chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Seconds between two checkpoints (default 3600: hourly): the head of each audit chain this
    /// server writes is signed by the CA key, stored and logged; also at start and at shutdown.
    /// Rows after the latest checkpoint are what a truncation of the tail could remove unseen.
    pub checkpoint_interval_s: u64,
}

/// Default `[audit] checkpoint_interval_s`: hourly.
pub const DEFAULT_CHECKPOINT_INTERVAL_S: u64 = 3600;
/// Largest `[audit] checkpoint_interval_s`: a day.
pub const MAX_CHECKPOINT_INTERVAL_S: u64 = 86_400;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval_s: DEFAULT_CHECKPOINT_INTERVAL_S,
        }
    }
}

/// Default `[crl] validity_hours`: a CRL's nextUpdate is a day after its thisUpdate.
pub const DEFAULT_CRL_VALIDITY_HOURS: u32 = 24;
/// Longest `[crl] validity_hours` accepted: a year.
pub const MAX_CRL_VALIDITY_HOURS: u32 = 24 * 366;

/// `[crl]`: the CA's certificate revocation list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrlConfig {
    /// Hours from a CRL's thisUpdate to its nextUpdate (default 24). The server signs a new CRL
    /// when the revoked set changes, and when half of this has passed.
    pub validity_hours: u32,
    /// Where relying parties fetch the CRL (`http://` or `https://`, e.g.
    /// `http://pki.factory.example/v3/crl`). Set: every device certificate issued from now on
    /// carries it as a cRLDistributionPoints extension. Unset (default): no extension.
    pub distribution_url: Option<String>,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            validity_hours: DEFAULT_CRL_VALIDITY_HOURS,
            distribution_url: None,
        }
    }
}

impl AuditConfig {
    /// The checkpoint period.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_interval_s)
    }
}

/// `[http]`: connection bounds of the API server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once (default 1024); more are answered 503 and closed at once.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: crate::http::limits::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[tls]`: HTTPS on the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM (leaf first). Reloaded on SIGHUP.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, SEC1 or PKCS#1; P-256, P-384, RSA or Ed25519).
    /// Reloaded on SIGHUP.
    pub key: PathBuf,
    /// The CA of station certificates, PEM. When set, clients are asked for a certificate (not
    /// required: bearer tokens keep working); one signed by this CA authenticates its station
    /// (`[[stations]]`). Unset: no client certificate is requested.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// One `[[stations]]` entry: a client certificate subject and what it may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// The certificate's subject CN or one of its SAN DNS names.
    pub subject: String,
    /// The roles it grants.
    pub roles: Vec<Role>,
    /// The serials it may provision, as for tokens (empty: every serial).
    #[serde(default)]
    pub serial_prefixes: Vec<String>,
}

/// The defaults of the fields whose struct cannot have a `Default` (it holds required fields).
mod defaults {
    use std::net::SocketAddr;

    pub(super) fn listen() -> SocketAddr {
        super::DEFAULT_LISTEN
    }
    pub(super) fn database_url() -> String {
        super::DEFAULT_DATABASE_URL.to_owned()
    }
    pub(super) fn request_deadline_ms() -> u64 {
        super::DEFAULT_REQUEST_DEADLINE_MS
    }
    /// `bootstrap.first_to_claim`.
    pub(super) fn first_to_claim() -> bool {
        true
    }
}

/// How the daemon writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event (tracing's default format).
    #[default]
    Text,
    /// One JSON object per line with the same fields, for log shippers.
    Json,
}

/// Where device keys are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// pep generates the key pair and injects the private key (one message).
    #[default]
    ByTool,
    /// The device generates the key and returns a CSR (two messages, docs/protocol.md §7.2); the key never leaves it.
    ByDevice,
}

/// API authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every request needs `Authorization: Bearer <token>` with a role allowing the call.
    #[default]
    Tokens,
    /// No authentication (development only; `check` warns).
    None,
}

/// A role an API token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May create identities (`GET /v3/identity`).
    Provision,
    /// May read enrollment IDs, verification keys and lists.
    Read,
    /// May create, list and close work orders (`/v3/orders`).
    Plan,
    /// May revoke identities (`POST /v3/identities/{serial}/revoke`).
    Revoke,
}

/// One API token: `token` (plaintext) or `token_sha256` (its SHA-256, hex), not both.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret bearer token (at least [`MIN_TOKEN_LEN`] characters and
    /// [`security::MIN_TOKEN_BITS`] of estimated entropy).
    #[serde(default)]
    pub token: Option<String>,
    /// Instead of `token`: the SHA-256 of the token, 64 hex characters
    /// (`printf %s "$t" | sha256sum`), so the file holds no usable secret.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The roles it grants.
    pub roles: Vec<Role>,
    /// An optional name used in logs and the audit trail instead of the secret.
    #[serde(default)]
    pub name: Option<String>,
    /// The serials this token may provision: those starting with one of these prefixes (403
    /// otherwise). Empty (default): every serial. Reading is not limited.
    #[serde(default)]
    pub serial_prefixes: Vec<String>,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: never print it.
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("token_sha256", &self.token_sha256.as_ref().map(|_| "<set>"))
            .field("roles", &self.roles)
            .field("name", &self.name)
            .field("serial_prefixes", &self.serial_prefixes)
            .finish()
    }
}

/// The file format of `token_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenConfig>,
}

/// The factory CA: its certificate and where its key is (a file, or a PKCS#11 token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// CA certificate, PEM.
    pub cert: PathBuf,
    /// CA private key: a PEM file (SEC1 or PKCS#8, P-256), or an RFC 7512 PKCS#11 URI
    /// (`pkcs11:token=pep-factory;object=ca-key`) for a key in an HSM or token.
    pub key: PathBuf,
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`) when `key` is a `pkcs11:` URI.
    #[serde(default)]
    pub pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN (one line); the environment variable
    /// [`PKCS11_PIN_ENV`] overrides it. The PIN is never written in the configuration itself.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Accept a key file that group or others can read (test CAs only; otherwise an error).
    #[serde(default)]
    pub allow_insecure_key_permissions: bool,
}

/// The environment variable holding the PKCS#11 user PIN (overrides `ca.pin_file`).
pub const PKCS11_PIN_ENV: &str = "PEP_PKCS11_PIN";

impl CaConfig {
    /// The key's PKCS#11 URI text when `key` is one (rather than a file).
    pub fn key_uri(&self) -> Option<&str> {
        self.key
            .to_str()
            .filter(|k| pep_ca::pkcs11::Pkcs11Uri::is_pkcs11(k))
    }
}

/// What to do when a certificate would outlive the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaExpiry {
    /// Shorten the device certificate to end with the CA.
    #[default]
    Shorten,
    /// Refuse to issue.
    Refuse,
}

/// The device certificate profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateConfig {
    /// Validity in days (default 7300 = 20 years; FCC warns below 10 years).
    pub lifetime_days: u32,
    /// Subject O.
    pub organization: Option<String>,
    /// Subject OU (leave empty in bootstrap mode; the cloud assigns the account).
    pub organizational_unit: Option<String>,
    /// Subject L.
    pub locality: Option<String>,
    /// Subject ST.
    pub state: Option<String>,
    /// Subject C (two letters).
    pub country: Option<String>,
    /// `shorten` (default) or `refuse` when the lifetime reaches past the CA's notAfter.
    pub on_ca_expiry: CaExpiry,
}

impl Default for CertificateConfig {
    fn default() -> Self {
        Self {
            lifetime_days: 7300,
            organization: None,
            organizational_unit: None,
            locality: None,
            state: None,
            country: None,
            on_ca_expiry: CaExpiry::default(),
        }
    }
}

/// The bootstrap server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// `coaps://host:port` (no `aid=` with first-to-claim), checked when the file is loaded.
    pub uri: BootstrapUri,
    /// The bootstrap server's CA certificate, PEM or DER, P-256.
    pub ca_cert: PathBuf,
    /// First-to-claim (default on): the gateway is claimed by the account that uploads its enrollment ID.
    #[serde(default = "defaults::first_to_claim")]
    pub first_to_claim: bool,
}

/// Device information items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// `mbed.Manufacturer`.
    pub manufacturer: String,
    /// `mbed.ModelNumber`.
    pub model_number: String,
    /// `mbed.DeviceType`.
    pub device_type: String,
    /// Default `mbed.HardwareVersion` / `hardwareVersion` when the request has none.
    pub hardware_version: String,
    /// `mbed.MemoryTotalKB`.
    pub memory_total_kb: u32,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            manufacturer: "Arm".to_owned(),
            model_number: "pelion-edge".to_owned(),
            device_type: "edge-gateway".to_owned(),
            hardware_version: DEFAULT_HARDWARE_VERSION.to_owned(),
            memory_total_kb: 1_048_576,
        }
    }
}

/// Time items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeConfig {
    /// Send `mbed.CurrentTime` (this server's clock, epoch seconds). Without it FCC cannot check validity.
    pub sync: bool,
    /// `mbed.Timezone`.
    pub timezone: String,
    /// `mbed.UTCOffset`, exactly `[+-]HH:MM`; also the offset of the times the floor page shows.
    pub utc_offset: UtcOffset,
}

impl Default for TimeConfig {
    fn default() -> Self {
        Self {
            sync: true,
            timezone: "UTC".to_owned(),
            utc_offset: UtcOffset::default(),
        }
    }
}

/// Firmware-update items. Each missing one makes FCC answer with an `Item not set` warning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    /// `mbed.UpdateAuthCert`, PEM or DER.
    pub auth_cert: Option<PathBuf>,
    /// `mbed.VendorId`, a UUID (sent as its 16 bytes).
    pub vendor_id: Option<uuid::Uuid>,
    /// `mbed.ClassId`, a UUID (sent as its 16 bytes).
    pub class_id: Option<uuid::Uuid>,
}

/// Whether to inject entropy and a root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntropyMode {
    /// Send neither (the Linux FCC creates its own).
    #[default]
    None,
    /// Send 48 random bytes of `Entropy` and 16 of `ROT` from the OS RNG.
    Random,
}

/// FCC connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FccConfig {
    /// TCP connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Write timeout per message, ms.
    pub write_timeout_ms: u64,
    /// Read timeout per response, ms (FCC verifies and stores before answering).
    pub read_timeout_ms: u64,
    /// Injections running at once; the rest wait for a slot.
    pub max_concurrent_injections: usize,
    /// `none` (default) or `random`: inject `Entropy` and `ROT`.
    pub entropy_rot: EntropyMode,
    /// The networks the server may connect to for an injection (CIDR or single addresses).
    /// Default: RFC 1918 and ULA. Loopback, link-local and the server's own addresses need an
    /// entry of their own (see [`crate::netpolicy`]).
    pub allowed_networks: Vec<crate::netpolicy::Network>,
    /// The gateway `ip` must be the requester's own address (the gateway asks for itself).
    pub require_peer_ip: bool,
}

impl Default for FccConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            write_timeout_ms: 10_000,
            read_timeout_ms: 60_000,
            max_concurrent_injections: 64,
            entropy_rot: EntropyMode::default(),
            allowed_networks: crate::netpolicy::default_allowed_networks(),
            require_peer_ip: false,
        }
    }
}

/// Defaults of the optional request parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestDefaults {
    /// `apiAddress`.
    pub api_address: String,
    /// `gatewayServicesAddress` (also `cloudAddress`).
    pub gateway_services_address: String,
    /// `radioConfig`.
    pub radio_config: String,
    /// `ledConfig`.
    pub led_config: String,
    /// `category`: `production` (default) or `development`.
    pub category: Category,
}

impl Default for RequestDefaults {
    fn default() -> Self {
        Self {
            api_address: DEFAULT_API_ADDRESS.to_owned(),
            gateway_services_address: DEFAULT_GATEWAY_SERVICES_ADDRESS.to_owned(),
            radio_config: DEFAULT_RADIO_CONFIG.to_owned(),
            led_config: DEFAULT_LED_CONFIG.to_owned(),
            category: Category::default(),
        }
    }
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path_for_people(.path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema, or a value does not parse.
    #[error("invalid config file {}: {}{source}", .path.display(), field_prefix(.field))]
    Parse {
        /// The file (or `<string>`).
        path: PathBuf,
        /// Dotted name of the field whose value was wrong (`time.utc_offset`), empty when the
        /// problem is not inside one field (a TOML syntax error, a missing or unknown field).
        field: String,
        /// The parser's message (names the line, the key and what was wrong). Boxed: it is large
        /// and errors travel in every `Result` of the config.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The token file could not be read.
    #[error("token_file: cannot read {}: {source}", path_for_people(.path))]
    TokenFileRead {
        /// The token file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token file is not valid TOML `[[tokens]]` entries.
    #[error("token_file: invalid {}: {}{source}", .path.display(), field_prefix(.field))]
    TokenFileParse {
        /// The token file.
        path: PathBuf,
        /// Dotted name of the entry whose value was wrong (`tokens[0].roles[0]`), or empty.
        field: String,
        /// The parser's message.
        #[source]
        source: Box<toml::de::Error>,
    },
}

impl ConfigError {
    /// The message without the leading field name (for a report that prints the field itself).
    pub fn detail(&self) -> String {
        let text = self.to_string();
        match self {
            ConfigError::TokenFileRead { .. } | ConfigError::TokenFileParse { .. } => text
                .strip_prefix("token_file: ")
                .map_or_else(|| text.clone(), str::to_owned),
            _ => text,
        }
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// `path`, and for a relative one, the working directory it is relative to: "pep.toml (relative to
/// the working directory /srv/pep)". Said whenever a file is not found, since the directory the
/// daemon was started in is the usual surprise.
pub fn path_for_people(path: &Path) -> String {
    if path.is_absolute() {
        return path.display().to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => format!(
            "{} (relative to the working directory {})",
            path.display(),
            cwd.display()
        ),
        Err(_) => format!("{} (relative to the working directory)", path.display()),
    }
}

/// Parses TOML text into `T`, naming the field of a bad value (`time.utc_offset`).
fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (String, Box<toml::de::Error>)> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let field = e.path().to_string();
        // The root (".") is no field: the parser's message says what was missing or unknown.
        let field = if field == "." { String::new() } else { field };
        (field, Box::new(e.into_inner()))
    })
}

impl Config {
    /// Reads and parses `path`: every value is parsed to its type here (no file it names is read;
    /// see [`Config::check`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config =
            parse_toml(&text).map_err(|(field, source)| ConfigError::Parse {
                path: path.to_owned(),
                field,
                source,
            })?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        parse_toml(text).map_err(|(field, source)| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            field,
            source,
        })
    }

    /// Rebases every relative file path (CA, bootstrap CA, update-auth certificate, token file, TLS
    /// files, webhook secret files and a relative `sqlite://` database path) on `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        fn rebase(p: &mut PathBuf, base: &Path) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        rebase(&mut self.ca.cert, base);
        // A `pkcs11:` URI is not a path.
        if self.ca.key_uri().is_none() {
            rebase(&mut self.ca.key, base);
        }
        if let Some(p) = self.ca.pkcs11_module.as_mut() {
            rebase(p, base);
        }
        if let Some(p) = self.ca.pin_file.as_mut() {
            rebase(p, base);
        }
        rebase(&mut self.bootstrap.ca_cert, base);
        if let Some(p) = self.update.auth_cert.as_mut() {
            rebase(p, base);
        }
        if let Some(p) = self.token_file.as_mut() {
            rebase(p, base);
        }
        self.hooks.resolve_relative_to(base);
        for p in [
            self.hooks.secret_file.as_mut(),
            self.hooks.ca_file.as_mut(),
            self.cloud.api_key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            rebase(p, base);
        }
        if let Some(tls) = self.tls.as_mut() {
            rebase(&mut tls.cert, base);
            rebase(&mut tls.key, base);
            if let Some(p) = tls.client_ca.as_mut() {
                rebase(p, base);
            }
        }
        if let Some(rest) = self.database_url.strip_prefix("sqlite://") {
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            if !path.is_empty() && !path.starts_with(':') && Path::new(path).is_relative() {
                let joined = base.join(path);
                let mut url = format!("sqlite://{}", joined.display());
                if let Some(q) = query {
                    url.push('?');
                    url.push_str(q);
                }
                self.database_url = url;
            }
        }
    }

    /// All API tokens: the inline `[[tokens]]` followed by those of `token_file`.
    pub fn load_tokens(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        let mut all = self.tokens.clone();
        if let Some(path) = &self.token_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFileRead {
                    path: path.clone(),
                    source,
                })?;
            let file: TokenFile =
                parse_toml(&text).map_err(|(field, source)| ConfigError::TokenFileParse {
                    path: path.clone(),
                    field,
                    source,
                })?;
            all.extend(file.tokens);
        }
        Ok(all)
    }

    /// The provisioning request deadline.
    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.request_deadline_ms)
    }

    /// `server_id`, or host name + `/` + `listen` when not set.
    pub fn server_id(&self) -> String {
        match &self.server_id {
            Some(id) => id.clone(),
            None => format!("{}/{}", crate::store::default_server_id(), self.listen),
        }
    }

    /// The store options of this server: its [`Config::server_id`] and an in-flight lease of ten
    /// times the longest an attempt can take (the request deadline or the FCC timeouts).
    pub fn store_options(&self) -> crate::store::StoreOptions {
        let fcc = &self.fcc;
        let longest_ms = self.request_deadline_ms.max(
            fcc.connect_timeout_ms
                .saturating_add(fcc.write_timeout_ms)
                .saturating_add(fcc.read_timeout_ms),
        );
        crate::store::StoreOptions {
            server_id: self.server_id(),
            in_flight_lease: Duration::from_millis(longest_ms.saturating_mul(10)),
            durability: self.store.durability,
            event_routes: self.hooks.event_routes(),
            claims: self.cloud.mode != CloudMode::Off,
            ..crate::store::StoreOptions::default()
        }
    }

    /// The gateway network policy of `[fcc]`.
    pub fn network_policy(&self) -> crate::netpolicy::NetworkPolicy {
        crate::netpolicy::NetworkPolicy::new(
            self.fcc.allowed_networks.clone(),
            self.fcc.require_peer_ip,
        )
    }

    /// The `pep-ca` certificate profile of `[certificate]`.
    pub fn cert_profile(&self) -> pep_ca::CertProfile {
        let c = &self.certificate;
        pep_ca::CertProfile {
            lifetime: time::Duration::days(i64::from(c.lifetime_days)),
            organization: c.organization.clone(),
            organizational_unit: c.organizational_unit.clone(),
            locality: c.locality.clone(),
            state: c.state.clone(),
            country: c.country.clone(),
            on_ca_expiry: match c.on_ca_expiry {
                CaExpiry::Shorten => pep_ca::CaExpiryPolicy::Shorten,
                CaExpiry::Refuse => pep_ca::CaExpiryPolicy::Refuse,
            },
            crl_distribution_point: self.crl.distribution_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = Config::load(dir.join("pep.example.toml")).unwrap();
        c.resolve_relative_to(dir.parent().unwrap());
        // The fixture key's mode depends on the checkout's umask; config/security has the tests.
        c.ca.allow_insecure_key_permissions = true;
        c
    }

    #[test]
    fn example_config_is_valid_without_warnings() {
        let c = example();
        let report = c.check();
        assert!(report.is_ok(), "{report}");
        // A fresh git checkout leaves the fixture key 0644 (git keeps no permissions): pep-ca's
        // key-permission warning is the only one allowed.
        let warnings: Vec<_> = report
            .warnings
            .iter()
            .filter(|w| {
                !(w.field == "ca" && w.message.contains("accessible by group or others")
                    || w.field == "tokens" && w.message.contains("group or others can read"))
            })
            .collect();
        assert!(warnings.is_empty(), "{report}");
        assert_eq!(c.key_mode, KeyMode::ByTool);
        assert_eq!(c.fcc.max_concurrent_injections, 64);
    }

    /// A minimal file takes every default from one place: the constants and the `Default` impls.
    #[test]
    fn defaults_of_a_minimal_file() {
        let c = Config::from_toml_str(
            "[ca]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[bootstrap]\nuri = \"coaps://b.example.com:5684\"\nca_cert = \"b.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.listen.to_string(), "127.0.0.1:5151");
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.request_deadline_ms, DEFAULT_REQUEST_DEADLINE_MS);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.bootstrap.first_to_claim);
        assert_eq!(c.certificate.lifetime_days, 7300);
        assert_eq!(c.time.utc_offset.as_str(), "+00:00");
        assert!(c.time.sync);
        assert_eq!(c.defaults.category, Category::Production);
        assert_eq!(c.device.hardware_version, DEFAULT_HARDWARE_VERSION);
        assert_eq!(c.fcc.read_timeout_ms, 60_000);
        // A section given in part keeps the defaults of the fields it omits.
        let c = Config::from_toml_str(
            "[ca]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[bootstrap]\nuri = \"coaps://b.example.com:5684\"\nca_cert = \"b.pem\"\n[fcc]\nread_timeout_ms = 1\n",
        )
        .unwrap();
        assert_eq!(
            (c.fcc.read_timeout_ms, c.fcc.connect_timeout_ms),
            (1, 5_000)
        );
    }

    #[test]
    fn typed_values_are_parsed_at_load_naming_the_field() {
        let base = "[ca]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[bootstrap]\nuri = \"coaps://b.example.com:5684\"\nca_cert = \"b.pem\"\n";
        for (extra, field, needle) in [
            (
                "listen = \"localhost\"\n",
                "listen",
                "`localhost` is not an IP:PORT address",
            ),
            ("log_format = \"xml\"\n", "log_format", "xml"),
            (
                "[time]\nutc_offset = \"+0:00\"\n",
                "time.utc_offset",
                "not exactly 6",
            ),
            (
                "[update]\nvendor_id = \"nope\"\n",
                "update.vendor_id",
                "nope",
            ),
            (
                "[defaults]\ncategory = \"staging\"\n",
                "defaults.category",
                "staging",
            ),
        ] {
            let text = if extra.starts_with('[') {
                format!("{base}{extra}")
            } else {
                format!("{extra}{base}")
            };
            let e = Config::from_toml_str(&text).unwrap_err();
            let ConfigError::Parse { field: f, .. } = &e else {
                panic!("{e}");
            };
            assert_eq!(f, field, "{e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("{field}: ")) && text.contains(needle),
                "{text}"
            );
            // The field is named once.
            assert_eq!(text.matches(&format!("{field}:")).count(), 1, "{text}");
        }
        let e = Config::from_toml_str(&base.replace("coaps://b", "https://b")).unwrap_err();
        assert!(e.to_string().contains("bootstrap.uri: "), "{e}");
        assert!(e.to_string().contains("scheme `https` is not coap"), "{e}");
    }

    #[test]
    fn typed_values_are_what_the_modules_use() {
        let c = example();
        assert_eq!(c.listen.port(), 5151);
        assert_eq!(
            c.bootstrap.uri.as_str(),
            "coaps://bootstrap.us-east-1.mbedcloud.com:5684"
        );
        assert_eq!(c.time.utc_offset.minutes(), 0);
        assert_eq!(
            c.update.vendor_id.map(|u| u.to_string()).as_deref(),
            Some("5355424d-4152-5320-4f46-204c4f564552")
        );
    }

    #[test]
    fn relative_paths_name_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        let text = path_for_people(Path::new("fixtures/x.pem"));
        assert_eq!(
            text,
            format!(
                "fixtures/x.pem (relative to the working directory {})",
                cwd.display()
            )
        );
        assert_eq!(path_for_people(Path::new("/etc/pep.toml")), "/etc/pep.toml");
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = TokenConfig {
            token: Some("super-secret-token-value".into()),
            token_sha256: None,
            roles: vec![Role::Read],
            name: None,
            serial_prefixes: Vec::new(),
        };
        assert!(!format!("{t:?}").contains("super-secret"));
    }
}
