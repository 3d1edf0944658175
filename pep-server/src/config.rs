//! The server configuration, `pep.toml`.
//!
//! One file describes everything: where to listen, the database, the factory CA, the certificate profile,
//! what goes into the FCC bundle (bootstrap server, device information, time, firmware-update items), the
//! FCC timeouts and concurrency, and who may call the API. Every field has a default except the CA and
//! bootstrap paths; unknown fields are rejected so that a typo cannot silently fall back to a default.
//!
//! Relative paths (CA, bootstrap CA, update-auth certificate, token file) are resolved against the
//! process's working directory, like the default database URL; [`Config::resolve_relative_to`] rebases
//! them on another directory (for instance the directory of the config file).
//!
//! [`Config::check`] validates the whole file (files readable, certificates parse as P-256, URI and
//! first-to-claim rules, UUIDs, UTC offset, timeouts, tokens) and reports every problem with the field
//! it concerns. `docs/configuration.md` documents every field; `pep-server/pep.example.toml` is a
//! complete, commented, valid example.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Default listen address of the HTTP API (the old server's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5151";
/// Default database URL: a SQLite file under `./pep-data`, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://pep-data/pep.sqlite";
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
/// Minimum length of an API token. 12 admits the README's demo token (`pep-demo-token`, demo only);
/// production tokens should be long random strings.
pub const MIN_TOKEN_LEN: usize = 12;

/// The whole `pep.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address, `IP:PORT`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Database URL; `sqlite://PATH` (relative to the working directory), `sqlite::memory:`, or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` for one database shared by several servers.
    #[serde(default = "default_database_url")]
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
    #[serde(default = "default_request_deadline_ms")]
    pub request_deadline_ms: u64,
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
}

/// Where device keys are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// pep generates the key pair and injects the private key (one message).
    #[default]
    ByTool,
    /// The device generates the key and returns a CSR (two messages, §7.2); the key never leaves it.
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
}

/// One API token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret bearer token (at least [`MIN_TOKEN_LEN`] characters).
    pub token: String,
    /// The roles it grants.
    pub roles: Vec<Role>,
    /// An optional name used in logs and the audit trail instead of the secret.
    #[serde(default)]
    pub name: Option<String>,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: never print it.
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("roles", &self.roles)
            .field("name", &self.name)
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

/// The factory CA files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// CA certificate, PEM.
    pub cert: PathBuf,
    /// CA private key, PEM (SEC1 or PKCS#8, P-256).
    pub key: PathBuf,
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
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Validity in days (default 7300 = 20 years; FCC warns below 10 years).
    #[serde(default = "default_lifetime_days")]
    pub lifetime_days: u32,
    /// Subject O.
    #[serde(default)]
    pub organization: Option<String>,
    /// Subject OU (leave empty in bootstrap mode; the cloud assigns the account).
    #[serde(default)]
    pub organizational_unit: Option<String>,
    /// Subject L.
    #[serde(default)]
    pub locality: Option<String>,
    /// Subject ST.
    #[serde(default)]
    pub state: Option<String>,
    /// Subject C (two letters).
    #[serde(default)]
    pub country: Option<String>,
    /// `shorten` (default) or `refuse` when the lifetime reaches past the CA's notAfter.
    #[serde(default)]
    pub on_ca_expiry: CaExpiry,
}

impl Default for CertificateConfig {
    fn default() -> Self {
        Self {
            lifetime_days: default_lifetime_days(),
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
    /// `coaps://host:port` (no `aid=` with first-to-claim).
    pub uri: String,
    /// The bootstrap server's CA certificate, PEM or DER, P-256.
    pub ca_cert: PathBuf,
    /// First-to-claim (default on): the gateway is claimed by the account that uploads its enrollment ID.
    #[serde(default = "default_true")]
    pub first_to_claim: bool,
}

/// Device information items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `mbed.Manufacturer`.
    #[serde(default = "default_manufacturer")]
    pub manufacturer: String,
    /// `mbed.ModelNumber`.
    #[serde(default = "default_model_number")]
    pub model_number: String,
    /// `mbed.DeviceType`.
    #[serde(default = "default_device_type")]
    pub device_type: String,
    /// Default `mbed.HardwareVersion` / `hardwareVersion` when the request has none.
    #[serde(default = "default_hardware_version")]
    pub hardware_version: String,
    /// `mbed.MemoryTotalKB`.
    #[serde(default = "default_memory_total_kb")]
    pub memory_total_kb: u32,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            manufacturer: default_manufacturer(),
            model_number: default_model_number(),
            device_type: default_device_type(),
            hardware_version: default_hardware_version(),
            memory_total_kb: default_memory_total_kb(),
        }
    }
}

/// Time items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// Send `mbed.CurrentTime` (this server's clock, epoch seconds). Without it FCC cannot check validity.
    #[serde(default = "default_true")]
    pub sync: bool,
    /// `mbed.Timezone`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `mbed.UTCOffset`, exactly `[+-]HH:MM`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

impl Default for TimeConfig {
    fn default() -> Self {
        Self {
            sync: true,
            timezone: default_timezone(),
            utc_offset: default_utc_offset(),
        }
    }
}

/// Firmware-update items. Each missing one makes FCC answer with an `Item not set` warning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// `mbed.UpdateAuthCert`, PEM or DER.
    #[serde(default)]
    pub auth_cert: Option<PathBuf>,
    /// `mbed.VendorId` as a UUID string (sent as 16 raw bytes).
    #[serde(default)]
    pub vendor_id: Option<String>,
    /// `mbed.ClassId` as a UUID string (sent as 16 raw bytes).
    #[serde(default)]
    pub class_id: Option<String>,
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
#[serde(deny_unknown_fields)]
pub struct FccConfig {
    /// TCP connect timeout, ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Write timeout per message, ms.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Read timeout per response, ms (FCC verifies and stores before answering).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Injections running at once; the rest wait for a slot.
    #[serde(default = "default_max_concurrent_injections")]
    pub max_concurrent_injections: usize,
    /// `none` (default) or `random`: inject `Entropy` and `ROT`.
    #[serde(default)]
    pub entropy_rot: EntropyMode,
}

impl Default for FccConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: default_connect_timeout_ms(),
            write_timeout_ms: default_write_timeout_ms(),
            read_timeout_ms: default_read_timeout_ms(),
            max_concurrent_injections: default_max_concurrent_injections(),
            entropy_rot: EntropyMode::default(),
        }
    }
}

/// Defaults of the optional request parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDefaults {
    /// `apiAddress`.
    #[serde(default = "default_api_address")]
    pub api_address: String,
    /// `gatewayServicesAddress` (also `cloudAddress`).
    #[serde(default = "default_gateway_services_address")]
    pub gateway_services_address: String,
    /// `radioConfig`.
    #[serde(default = "default_radio_config")]
    pub radio_config: String,
    /// `ledConfig`.
    #[serde(default = "default_led_config")]
    pub led_config: String,
    /// `category`: `production` or `development`.
    #[serde(default = "default_category")]
    pub category: String,
}

impl Default for RequestDefaults {
    fn default() -> Self {
        Self {
            api_address: default_api_address(),
            gateway_services_address: default_gateway_services_address(),
            radio_config: default_radio_config(),
            led_config: default_led_config(),
            category: default_category(),
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}
fn default_database_url() -> String {
    DEFAULT_DATABASE_URL.to_owned()
}
fn default_request_deadline_ms() -> u64 {
    120_000
}
fn default_lifetime_days() -> u32 {
    7300
}
fn default_true() -> bool {
    true
}
fn default_manufacturer() -> String {
    "Arm".to_owned()
}
fn default_model_number() -> String {
    "pelion-edge".to_owned()
}
fn default_device_type() -> String {
    "edge-gateway".to_owned()
}
fn default_hardware_version() -> String {
    DEFAULT_HARDWARE_VERSION.to_owned()
}
fn default_memory_total_kb() -> u32 {
    1_048_576
}
fn default_timezone() -> String {
    "UTC".to_owned()
}
fn default_utc_offset() -> String {
    "+00:00".to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_write_timeout_ms() -> u64 {
    10_000
}
fn default_read_timeout_ms() -> u64 {
    60_000
}
fn default_max_concurrent_injections() -> usize {
    64
}
fn default_api_address() -> String {
    DEFAULT_API_ADDRESS.to_owned()
}
fn default_gateway_services_address() -> String {
    DEFAULT_GATEWAY_SERVICES_ADDRESS.to_owned()
}
fn default_radio_config() -> String {
    DEFAULT_RADIO_CONFIG.to_owned()
}
fn default_led_config() -> String {
    DEFAULT_LED_CONFIG.to_owned()
}
fn default_category() -> String {
    "production".to_owned()
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file (or `<string>`).
        path: PathBuf,
        /// The parser's message (names the line and key).
        message: String,
    },
    /// The token file could not be read or parsed.
    #[error("token_file: {message}")]
    TokenFile {
        /// What was wrong.
        message: String,
    },
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// One finding of [`Config::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIssue {
    /// Dotted name of the field, e.g. `bootstrap.uri`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for CheckIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The result of [`Config::check`]: errors prevent start-up, warnings do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems that make the configuration unusable.
    pub errors: Vec<CheckIssue>,
    /// Problems worth fixing (e.g. FCC will answer with warnings, authentication disabled).
    pub warnings: Vec<CheckIssue>,
}

impl CheckReport {
    /// True when there is no error (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(CheckIssue {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push(CheckIssue {
            field: field.to_owned(),
            message: message.into(),
        });
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.errors.is_empty() && self.warnings.is_empty() {
            writeln!(f, "configuration OK")?;
        }
        Ok(())
    }
}

/// Files and values [`Config::check`] loaded and validated, reused by the provisioner so that the
/// files are read once and what was checked is what is used.
pub(crate) struct Prepared {
    pub(crate) ca: Arc<pep_ca::FactoryCa>,
    pub(crate) bootstrap_ca_der: Vec<u8>,
    pub(crate) update_auth_cert_der: Option<Vec<u8>>,
    pub(crate) vendor_id: Option<[u8; 16]>,
    pub(crate) class_id: Option<[u8; 16]>,
}

impl Config {
    /// Reads and parses `path` (no semantic checks; see [`Config::check`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Parses a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })
    }

    /// Rebases every relative file path (CA, bootstrap CA, update-auth certificate, token file and a
    /// relative `sqlite://` database path) on `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        fn rebase(p: &mut PathBuf, base: &Path) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        rebase(&mut self.ca.cert, base);
        rebase(&mut self.ca.key, base);
        rebase(&mut self.bootstrap.ca_cert, base);
        if let Some(p) = self.update.auth_cert.as_mut() {
            rebase(p, base);
        }
        if let Some(p) = self.token_file.as_mut() {
            rebase(p, base);
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

    /// The listen address as a socket address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            field: "listen".to_owned(),
            message: format!("`{}` is not an IP:PORT address: {e}", self.listen),
        })
    }

    /// All API tokens: the inline `[[tokens]]` followed by those of `token_file`.
    pub fn load_tokens(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        let mut all = self.tokens.clone();
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::TokenFile {
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            let file: TokenFile = toml::from_str(&text).map_err(|e| ConfigError::TokenFile {
                message: format!("invalid {}: {e}", path.display()),
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
            ..crate::store::StoreOptions::default()
        }
    }

    /// Validates everything; every issue names its field. Reads the CA, certificates and token file.
    pub fn check(&self) -> CheckReport {
        self.prepare().0
    }

    /// [`Config::check`], also returning what was loaded when there is no error.
    pub(crate) fn prepare(&self) -> (CheckReport, Option<Prepared>) {
        let mut r = CheckReport::default();

        if let Err(e) = self.listen_addr() {
            r.error(
                "listen",
                format!("`{}` does not parse as IP:PORT ({e})", self.listen),
            );
        }
        check_database_url(&self.database_url, &mut r);
        if let Some(id) = &self.server_id {
            if id.trim().is_empty() {
                r.error(
                    "server_id",
                    "is empty (remove it to use host name + listen address)",
                );
            } else if id.chars().count() > 128 {
                r.error("server_id", "is longer than 128 characters");
            } else if id.chars().any(char::is_control) {
                r.error("server_id", "contains control characters");
            }
        }
        if self.request_deadline_ms == 0 {
            r.error("request_deadline_ms", "must be greater than 0");
        }
        self.check_auth(&mut r);

        let ca = self.check_ca(&mut r);
        self.check_certificate(ca.as_ref().map(|ca| ca.not_after()), &mut r);

        let bootstrap_ca_der = self.check_bootstrap(&mut r);
        self.check_device(&mut r);
        self.check_time(&mut r);
        let (update_auth_cert_der, vendor_id, class_id) = self.check_update(&mut r);
        self.check_fcc(&mut r);
        self.check_defaults(&mut r);

        let prepared = match (r.is_ok(), ca, bootstrap_ca_der) {
            (true, Some(ca), Some(bootstrap_ca_der)) => Some(Prepared {
                ca,
                bootstrap_ca_der,
                update_auth_cert_der,
                vendor_id,
                class_id,
            }),
            _ => None,
        };
        (r, prepared)
    }

    fn check_auth(&self, r: &mut CheckReport) {
        let tokens = match self.load_tokens() {
            Ok(t) => t,
            Err(e) => {
                r.error("token_file", e.to_string());
                self.tokens.clone()
            }
        };
        match self.auth {
            AuthMode::None => {
                r.warn(
                    "auth",
                    "authentication is off: anyone who reaches the API can mint identities",
                );
            }
            AuthMode::Tokens => {
                if tokens.is_empty() {
                    r.error(
                        "tokens",
                        "auth = \"tokens\" but no [[tokens]] entry (inline or in token_file)",
                    );
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, t) in tokens.iter().enumerate() {
            let field = format!("tokens[{i}].token");
            if t.token.trim().is_empty() {
                r.error(&field, "is empty");
            } else if t.token.chars().count() < MIN_TOKEN_LEN {
                r.error(
                    &field,
                    format!("is shorter than {MIN_TOKEN_LEN} characters"),
                );
            } else if t.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                r.error(&field, "contains whitespace or control characters");
            }
            if !seen.insert(t.token.as_str()) {
                r.error(&field, "is the same token as an earlier entry");
            }
            if t.roles.is_empty() {
                r.error(
                    &format!("tokens[{i}].roles"),
                    "is empty (use \"provision\" and/or \"read\")",
                );
            }
        }
    }

    /// Checks the CA files with `pep-ca` (the code that will use them) and keeps the loaded CA.
    fn check_ca(&self, r: &mut CheckReport) -> Option<Arc<pep_ca::FactoryCa>> {
        let mut readable = true;
        for (field, path) in [("ca.cert", &self.ca.cert), ("ca.key", &self.ca.key)] {
            if let Err(e) = std::fs::File::open(path) {
                r.error(field, format!("cannot read {}: {e}", path.display()));
                readable = false;
            }
        }
        if !readable {
            return None;
        }
        match pep_ca::FactoryCa::load(&self.ca.cert, &self.ca.key) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    r.warn("ca", w.to_string());
                }
                Some(Arc::new(loaded.ca))
            }
            Err(e) => {
                r.error("ca", e.to_string());
                None
            }
        }
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
        }
    }

    fn check_certificate(&self, ca_not_after: Option<OffsetDateTime>, r: &mut CheckReport) {
        let c = &self.certificate;
        if c.lifetime_days == 0 {
            r.error("certificate.lifetime_days", "must be greater than 0");
        } else if u64::from(c.lifetime_days) < 3650 {
            r.warn(
                "certificate.lifetime_days",
                "is under 10 years: FCC answers with a `Certificate validity is less than 10 years` warning",
            );
        }
        if let Some(ca_not_after) = ca_not_after {
            let end = OffsetDateTime::now_utc() + time::Duration::days(i64::from(c.lifetime_days));
            if end > ca_not_after {
                match c.on_ca_expiry {
                    CaExpiry::Refuse => r.error(
                        "certificate.lifetime_days",
                        format!(
                            "certificates would end after the CA ({}) and on_ca_expiry = \"refuse\"",
                            ca_not_after
                        ),
                    ),
                    CaExpiry::Shorten => r.warn(
                        "certificate.lifetime_days",
                        format!("certificates will be shortened to end with the CA ({})", ca_not_after),
                    ),
                }
            }
        }
        if let Some(country) = &c.country
            && (country.len() != 2 || !country.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            r.error(
                "certificate.country",
                format!("`{country}` is not a two-letter upper-case country code"),
            );
        }
        for (field, v) in [
            ("certificate.organization", &c.organization),
            ("certificate.organizational_unit", &c.organizational_unit),
            ("certificate.locality", &c.locality),
            ("certificate.state", &c.state),
        ] {
            if let Some(v) = v {
                check_text(field, v, 64, r);
            }
        }
        let already = r.errors.iter().any(|e| e.field.starts_with("certificate."));
        if !already && let Err(e) = self.cert_profile().validate() {
            r.error("certificate", e.to_string());
        }
        if c.organizational_unit.is_some() {
            r.warn(
                "certificate.organizational_unit",
                "an OU is not needed in bootstrap mode (the cloud assigns the account)",
            );
        }
    }

    fn check_bootstrap(&self, r: &mut CheckReport) -> Option<Vec<u8>> {
        let b = &self.bootstrap;
        match url::Url::parse(&b.uri) {
            Err(e) => r.error("bootstrap.uri", format!("`{}` is not a URI: {e}", b.uri)),
            Ok(u) => {
                if u.scheme() != "coaps" && u.scheme() != "coap" {
                    r.error(
                        "bootstrap.uri",
                        format!("scheme `{}` is not coap:// or coaps://", u.scheme()),
                    );
                } else if u.scheme() == "coap" {
                    r.warn(
                        "bootstrap.uri",
                        "coap:// is unencrypted; the cloud bootstrap server uses coaps://",
                    );
                }
                if u.host_str().is_none_or(str::is_empty) {
                    r.error("bootstrap.uri", "has no host");
                }
                let has_aid = u
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("aid=")));
                if b.first_to_claim && has_aid {
                    r.error("bootstrap.uri", "contains aid= but first_to_claim is on");
                }
                if !b.first_to_claim && !has_aid {
                    r.error(
                        "bootstrap.uri",
                        "has no aid= and first_to_claim is off (FCC rejects it: URI format incorrect)",
                    );
                }
            }
        }
        check_text("bootstrap.uri", &b.uri, 255, r);
        read_p256_certificate("bootstrap.ca_cert", &b.ca_cert, r)
    }

    fn check_device(&self, r: &mut CheckReport) {
        let d = &self.device;
        for (field, v) in [
            ("device.manufacturer", &d.manufacturer),
            ("device.model_number", &d.model_number),
            ("device.device_type", &d.device_type),
            ("device.hardware_version", &d.hardware_version),
        ] {
            if v.is_empty() {
                r.error(field, "is empty (FCC requires it)");
            }
            check_text(field, v, 256, r);
        }
        if d.memory_total_kb == 0 {
            r.error("device.memory_total_kb", "must be greater than 0");
        }
    }

    fn check_time(&self, r: &mut CheckReport) {
        let t = &self.time;
        if !t.sync {
            r.warn(
                "time.sync",
                "is off: FCC cannot check certificate validity and answers with warnings",
            );
        }
        if t.timezone.is_empty() {
            r.error("time.timezone", "is empty");
        }
        check_text("time.timezone", &t.timezone, 64, r);
        if let Err(reason) = parse_utc_offset(&t.utc_offset) {
            r.error("time.utc_offset", format!("`{}` {reason}", t.utc_offset));
        }
    }

    #[allow(clippy::type_complexity)]
    fn check_update(
        &self,
        r: &mut CheckReport,
    ) -> (Option<Vec<u8>>, Option<[u8; 16]>, Option<[u8; 16]>) {
        let u = &self.update;
        let cert = match &u.auth_cert {
            Some(p) => read_p256_certificate("update.auth_cert", p, r),
            None => {
                r.warn(
                    "update.auth_cert",
                    "not set: FCC answers with `Item not set:mbed.UpdateAuthCert`",
                );
                None
            }
        };
        let mut uuid = |field: &str, v: &Option<String>, item: &str| match v {
            None => {
                r.warn(
                    field,
                    format!("not set: FCC answers with `Item not set:{item}`"),
                );
                None
            }
            Some(s) => match uuid::Uuid::parse_str(s) {
                Ok(id) => Some(*id.as_bytes()),
                Err(e) => {
                    r.error(field, format!("`{s}` is not a UUID: {e}"));
                    None
                }
            },
        };
        let vendor = uuid("update.vendor_id", &u.vendor_id, "mbed.VendorId");
        let class = uuid("update.class_id", &u.class_id, "mbed.ClassId");
        (cert, vendor, class)
    }

    fn check_fcc(&self, r: &mut CheckReport) {
        let f = &self.fcc;
        for (field, v) in [
            ("fcc.connect_timeout_ms", f.connect_timeout_ms),
            ("fcc.write_timeout_ms", f.write_timeout_ms),
            ("fcc.read_timeout_ms", f.read_timeout_ms),
        ] {
            if v == 0 {
                r.error(field, "must be greater than 0");
            }
        }
        if f.max_concurrent_injections == 0 {
            r.error("fcc.max_concurrent_injections", "must be greater than 0");
        } else if f.max_concurrent_injections > tokio::sync::Semaphore::MAX_PERMITS {
            r.error("fcc.max_concurrent_injections", "is too large");
        }
        let one_attempt = f
            .connect_timeout_ms
            .saturating_add(f.write_timeout_ms)
            .saturating_add(f.read_timeout_ms);
        if self.request_deadline_ms > 0 && self.request_deadline_ms < f.connect_timeout_ms {
            r.warn(
                "request_deadline_ms",
                format!(
                    "is shorter than fcc.connect_timeout_ms ({} ms)",
                    f.connect_timeout_ms
                ),
            );
        } else if self.request_deadline_ms > 0 && self.request_deadline_ms < one_attempt {
            r.warn(
                "request_deadline_ms",
                format!("is shorter than connect + write + read timeouts ({one_attempt} ms)"),
            );
        }
    }

    fn check_defaults(&self, r: &mut CheckReport) {
        let d = &self.defaults;
        for (field, v) in [
            ("defaults.api_address", &d.api_address),
            (
                "defaults.gateway_services_address",
                &d.gateway_services_address,
            ),
        ] {
            match url::Url::parse(v) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                Ok(u) => r.error(field, format!("scheme `{}` is not http(s)", u.scheme())),
                Err(e) => r.error(field, format!("`{v}` is not a URL: {e}")),
            }
            check_text(field, v, 256, r);
        }
        check_text("defaults.radio_config", &d.radio_config, 256, r);
        check_text("defaults.led_config", &d.led_config, 256, r);
        if d.category != "production" && d.category != "development" {
            r.error(
                "defaults.category",
                format!("`{}` is not `production` or `development`", d.category),
            );
        }
    }
}

/// Checks `[+-]HH:MM` with HH ≤ 14 and MM < 60 (exactly 6 characters, as FCC requires).
pub fn parse_utc_offset(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() != 6 {
        return Err("is not exactly 6 characters ([+-]HH:MM)");
    }
    if b[0] != b'+' && b[0] != b'-' {
        return Err("does not start with + or -");
    }
    if b[3] != b':' {
        return Err("has no ':' between hours and minutes");
    }
    let digits = [b[1], b[2], b[4], b[5]];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err("has non-digit hours or minutes");
    }
    let hh = (b[1] - b'0') * 10 + (b[2] - b'0');
    let mm = (b[4] - b'0') * 10 + (b[5] - b'0');
    if hh > 14 {
        return Err("has hours over 14");
    }
    if mm >= 60 {
        return Err("has minutes of 60 or more");
    }
    Ok(())
}

fn check_text(field: &str, v: &str, max: usize, r: &mut CheckReport) {
    if v.chars().count() > max {
        r.error(field, format!("is longer than {max} characters"));
    }
    if v.chars().any(char::is_control) {
        r.error(field, "contains control characters");
    }
}

fn check_database_url(url: &str, r: &mut CheckReport) {
    if url.starts_with("sqlite:") {
        if url == "sqlite:" || url == "sqlite://" {
            r.error("database_url", "has no file path");
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url::Url::parse(url) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
            Ok(_) => r.error("database_url", "the postgres:// URL has no host"),
            // The URL may hold a password: name the problem, not the URL.
            Err(e) => r.error(
                "database_url",
                format!("is not a valid postgres:// URL ({e})"),
            ),
        }
    } else {
        r.error(
            "database_url",
            format!("`{url}` is not a sqlite:// or postgres:// URL"),
        );
    }
}

/// Reads a PEM or DER certificate and checks it is an X.509 certificate with a P-256 key that has not
/// expired. Returns its DER.
fn read_p256_certificate(field: &str, path: &Path, r: &mut CheckReport) -> Option<Vec<u8>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            r.error(field, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let der = match certificate_der(&bytes) {
        Ok(d) => d,
        Err(e) => {
            r.error(field, format!("{}: {e}", path.display()));
            return None;
        }
    };
    use der::Decode;
    let cert = match x509_cert::Certificate::from_der(&der) {
        Ok(c) => c,
        Err(e) => {
            r.error(
                field,
                format!("{} is not an X.509 certificate: {e}", path.display()),
            );
            return None;
        }
    };
    let spki = &cert.tbs_certificate.subject_public_key_info;
    const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const SECP256R1: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
    if spki.algorithm.oid != EC_PUBLIC_KEY || curve != Some(SECP256R1) {
        r.error(
            field,
            format!(
                "{} does not hold a P-256 (secp256r1) EC public key",
                path.display()
            ),
        );
        return None;
    }
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let not_after_s = i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX);
    if not_after_s < now {
        r.error(field, format!("{} has expired", path.display()));
        return None;
    }
    if not_after_s - now < 315_360_000 {
        r.warn(
            field,
            format!(
                "{} expires within 10 years: FCC answers with a `Certificate validity is less than 10 years` warning",
                path.display()
            ),
        );
    }
    Some(der)
}

/// The DER of the first certificate in `bytes` (PEM `CERTIFICATE` block or raw DER).
fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "neither PEM text nor DER".to_owned())?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text
        .find(BEGIN)
        .ok_or_else(|| "no `-----BEGIN CERTIFICATE-----` block".to_owned())?;
    let end = text[start..]
        .find(END)
        .map(|e| start + e + END.len())
        .ok_or_else(|| "unterminated PEM certificate block".to_owned())?;
    let (label, der) =
        der::pem::decode_vec(&text.as_bytes()[start..end]).map_err(|e| format!("bad PEM: {e}"))?;
    if label != "CERTIFICATE" {
        return Err(format!("PEM label is {label}, not CERTIFICATE"));
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = Config::load(dir.join("pep.example.toml")).unwrap();
        c.resolve_relative_to(dir.parent().unwrap());
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
            .filter(|w| !(w.field == "ca" && w.message.contains("accessible by group or others")))
            .collect();
        assert!(warnings.is_empty(), "{report}");
        assert_eq!(c.key_mode, KeyMode::ByTool);
        assert_eq!(c.fcc.max_concurrent_injections, 64);
    }

    #[test]
    fn utc_offsets() {
        for ok in ["+00:00", "-14:00", "+05:30", "+14:59"] {
            assert!(parse_utc_offset(ok).is_ok(), "{ok}");
        }
        for bad in [
            "+0:00", "00:00", "+15:00", "+01:60", "+01-00", "+0a:00", "+00:000", "",
        ] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = TokenConfig {
            token: "super-secret-token-value".into(),
            roles: vec![Role::Read],
            name: None,
        };
        assert!(!format!("{t:?}").contains("super-secret"));
    }
}
