//! The checks of a loaded [`Config`]: what needs more than one field, or the files the config
//! names (the CA, the certificates, the token file). [`Config::check`] reports every problem with
//! the field it concerns; [`Config::prepare`] also keeps what it loaded, so the provisioner uses
//! exactly what was checked and reads each file once. Single values were already parsed to their
//! types when the file was loaded (see [`super::values`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::Digest as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{AuthMode, CaExpiry, Config, path_for_people};

/// Ten years, in seconds: FCC warns about a certificate that ends sooner.
const TEN_YEARS_S: i64 = 315_360_000;

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

    pub(super) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(CheckIssue {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, field: &str, message: impl Into<String>) {
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

/// What `check-config` prints when the configuration is OK: what the server will run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    /// The CA certificate's subject (RFC 4514).
    pub ca_subject: String,
    /// SHA-256 of the CA certificate's DER, colon-separated upper-case hex (as `openssl x509
    /// -fingerprint -sha256` prints it).
    pub ca_fingerprint: String,
    /// The CA certificate's notAfter.
    pub ca_not_after: OffsetDateTime,
    /// Where the CA key is (file or token).
    pub ca_key: String,
    /// `http://ADDRESS:PORT`.
    pub listen: String,
    /// The database URL, any password replaced by `***`.
    pub database: String,
    /// API tokens (inline and from token_file).
    pub tokens: usize,
    /// Of them, the stations: tokens with the `provision` role.
    pub stations: usize,
    /// `[[stations]]`: client certificate subjects mapped to roles (mTLS).
    pub certificate_stations: usize,
    /// `[cloud]`: the mode, and where claims go (never the key).
    pub cloud: String,
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expiry = self
            .ca_not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.ca_not_after.to_string());
        writeln!(f, "CA subject:     {}", self.ca_subject)?;
        writeln!(f, "CA SHA-256:     {}", self.ca_fingerprint)?;
        writeln!(f, "CA expires:     {expiry}")?;
        writeln!(f, "CA key:         {}", self.ca_key)?;
        writeln!(f, "listen:         {}", self.listen)?;
        writeln!(f, "database:       {}", self.database)?;
        writeln!(f, "tokens:         {}", self.tokens)?;
        writeln!(
            f,
            "stations:       {} (tokens with the provision role), {} by client certificate",
            self.stations, self.certificate_stations
        )?;
        writeln!(f, "cloud claims:   {}", self.cloud)
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
    /// Validates everything; every issue names its field. Reads the CA, certificates and token file.
    pub fn check(&self) -> CheckReport {
        self.prepare().0
    }

    /// [`Config::check`], with the summary `check-config` prints when there is no error.
    pub fn check_with_summary(&self) -> (CheckReport, Option<CheckSummary>) {
        let (report, prepared) = self.prepare();
        let summary = prepared.filter(|_| report.is_ok()).map(|p| {
            let tokens = self.load_tokens().unwrap_or_default();
            let fingerprint = sha2::Sha256::digest(p.ca.certificate_der())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
            CheckSummary {
                ca_subject: p.ca.subject().to_owned(),
                ca_fingerprint: fingerprint,
                ca_not_after: p.ca.not_after(),
                ca_key: p.ca.key_location().to_owned(),
                listen: format!(
                    "{}://{}",
                    if self.tls.is_some() { "https" } else { "http" },
                    self.listen
                ),
                database: redacted_database_url(&self.database_url),
                stations: tokens
                    .iter()
                    .filter(|t| t.roles.contains(&super::Role::Provision))
                    .count(),
                tokens: tokens.len(),
                certificate_stations: self.stations.len(),
                cloud: match self.cloud.mode {
                    super::CloudMode::Off => "off".to_owned(),
                    mode => format!(
                        "{} to {} (key from {})",
                        mode.as_str(),
                        self.cloud.api_base(&self.defaults.api_address),
                        self.cloud
                            .api_key_file
                            .as_deref()
                            .map(super::path_for_people)
                            .unwrap_or_default()
                    ),
                },
            }
        });
        (report, summary)
    }

    /// [`Config::check`], also returning what was loaded when there is no error.
    pub(crate) fn prepare(&self) -> (CheckReport, Option<Prepared>) {
        let mut r = CheckReport::default();

        check_database_url(&self.database_url, &mut r);
        if self.store.durability == crate::store::Durability::Normal {
            r.warn(
                "store.durability",
                "is `normal`: a power cut or kernel crash can lose identities the server already \
                 acknowledged (the gateway has them, the store does not); use `full` on the line",
            );
        }
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
        self.check_tls(&mut r);
        if self.audit.checkpoint_interval_s == 0 {
            r.error(
                "audit.checkpoint_interval_s",
                "must be at least 1 (seconds between two signed audit checkpoints)",
            );
        } else if self.audit.checkpoint_interval_s > super::MAX_CHECKPOINT_INTERVAL_S {
            r.error(
                "audit.checkpoint_interval_s",
                format!(
                    "must be at most {} (a day): rows after the latest checkpoint can be cut off \
                     unseen",
                    super::MAX_CHECKPOINT_INTERVAL_S
                ),
            );
        }
        if self.http.max_connections == 0 {
            r.error("http.max_connections", "must be greater than 0");
        } else if self.http.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            r.error("http.max_connections", "is too large");
        }

        let ca = self.check_ca(&mut r);
        self.check_crl(&mut r);
        self.check_certificate(ca.as_ref().map(|ca| ca.not_after()), &mut r);

        let bootstrap_ca_der = self.check_bootstrap(&mut r);
        self.check_device(&mut r);
        self.check_time(&mut r);
        let update_auth_cert_der = self.check_update(&mut r);
        self.check_fcc(&mut r);
        self.check_defaults(&mut r);
        self.hooks.check(&mut r);
        self.check_hooks(&mut r);
        self.cloud.check(&self.defaults.api_address, &mut r);

        let prepared = match (r.is_ok(), ca, bootstrap_ca_der) {
            (true, Some(ca), Some(bootstrap_ca_der)) => Some(Prepared {
                ca,
                bootstrap_ca_der,
                update_auth_cert_der,
                vendor_id: self.update.vendor_id.map(|id| *id.as_bytes()),
                class_id: self.update.class_id.map(|id| *id.as_bytes()),
            }),
            _ => None,
        };
        (r, prepared)
    }

    /// `[tls]`: its files load; and plain HTTP beyond loopback only with `allow_plain_http`.
    fn check_tls(&self, r: &mut CheckReport) {
        match &self.tls {
            Some(tls) => {
                if let Err(e) = crate::http::ServerTls::new(tls) {
                    // The field of the file at fault: the error names its path.
                    let field = match e.path() {
                        Some(p) if p == tls.cert => "tls.cert",
                        Some(p) if p == tls.key => "tls.key",
                        Some(_) => "tls.client_ca",
                        None => "tls",
                    };
                    r.error(field, e.to_string());
                }
                if let Some(mode) = super::security::shared_mode(&tls.key) {
                    r.warn(
                        "tls.key",
                        format!(
                            "{} is readable by group or others (mode {mode:04o}): chmod 600 it",
                            tls.key.display()
                        ),
                    );
                }
            }
            None if !self.listen.ip().is_loopback() && !self.allow_plain_http => r.error(
                "listen",
                format!(
                    "is {}, beyond loopback, without [tls]: bearer tokens and identities would \
                     cross the network in clear text, for anyone on it to read. Add [tls] cert \
                     and key, or set allow_plain_http = true (behind a TLS proxy, or a network \
                     you trust)",
                    self.listen
                ),
            ),
            None => {}
        }
        if !self.stations.is_empty() && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            r.warn(
                "stations",
                "[[stations]] are set but [tls] client_ca is not: no client certificate is \
                 requested, so no station can authenticate",
            );
        }
        for (i, s) in self.stations.iter().enumerate() {
            if s.subject.trim().is_empty() {
                r.error(&format!("stations[{i}].subject"), "is empty");
            }
            if s.roles.is_empty() {
                r.error(
                    &format!("stations[{i}].roles"),
                    "is empty: give `provision` and/or `read`",
                );
            }
            check_serial_prefixes(&format!("stations[{i}]"), &s.serial_prefixes, r);
        }
    }

    fn check_auth(&self, r: &mut CheckReport) {
        let (tokens, token_file_ok) = match self.load_tokens() {
            Ok(t) => (t, true),
            Err(e) => {
                // The message without its own `token_file:` prefix: the report adds the field.
                r.error("token_file", e.detail());
                (self.tokens.clone(), false)
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
                // When the token file did not load, its error says why there is no token; a
                // second "no [[tokens]] entry" error would send the reader to the wrong place.
                if tokens.is_empty() && token_file_ok {
                    r.error(
                        "tokens",
                        "auth = \"tokens\" but no [[tokens]] entry (inline or in token_file)",
                    );
                }
            }
        }
        self.check_token_secrets(&tokens, r);
        for (i, t) in tokens.iter().enumerate() {
            check_serial_prefixes(&format!("tokens[{i}]"), &t.serial_prefixes, r);
            if t.roles.is_empty() {
                r.error(
                    &format!("tokens[{i}].roles"),
                    "is empty (use \"provision\" and/or \"read\")",
                );
            }
        }
    }

    /// Checks the CA with `pep-ca` (the code that will use it) and keeps the loaded CA: the files,
    /// or the certificate file and the key in a PKCS#11 token (module, PIN, token, key, that the
    /// key is P-256 and the certificate's, and that it signs).
    fn check_ca(&self, r: &mut CheckReport) -> Option<Arc<pep_ca::FactoryCa>> {
        if let Some(uri) = self.ca.key_uri() {
            return self.check_ca_pkcs11(uri, r);
        }
        for (field, set) in [
            ("ca.pkcs11_module", self.ca.pkcs11_module.is_some()),
            ("ca.pin_file", self.ca.pin_file.is_some()),
        ] {
            if set {
                r.warn(field, "is ignored: ca.key is a file, not a pkcs11: URI");
            }
        }
        let mut readable = true;
        for (field, path) in [("ca.cert", &self.ca.cert), ("ca.key", &self.ca.key)] {
            if let Err(e) = std::fs::File::open(path) {
                r.error(field, format!("cannot read {}: {e}", path_for_people(path)));
                readable = false;
            }
        }
        if !readable {
            return None;
        }
        self.loaded_ca(pep_ca::FactoryCa::load(&self.ca.cert, &self.ca.key), r)
    }

    /// The CA `pep-ca` loaded (its warnings and the secrets rules reported), or its error.
    fn loaded_ca(
        &self,
        loaded: Result<pep_ca::LoadedCa, pep_ca::CaError>,
        r: &mut CheckReport,
    ) -> Option<Arc<pep_ca::FactoryCa>> {
        match loaded {
            Ok(loaded) => {
                self.check_ca_secrets(Some(&loaded.ca), &loaded.warnings, r);
                Some(Arc::new(loaded.ca))
            }
            Err(e) => {
                r.error("ca", e.to_string());
                None
            }
        }
    }

    fn check_ca_pkcs11(&self, uri: &str, r: &mut CheckReport) -> Option<Arc<pep_ca::FactoryCa>> {
        let uri = match uri.parse::<pep_ca::pkcs11::Pkcs11Uri>() {
            Ok(uri) => Some(uri),
            Err(e) => {
                r.error("ca.key", e.to_string());
                None
            }
        };
        let module = match &self.ca.pkcs11_module {
            None => {
                r.error(
                    "ca.pkcs11_module",
                    "is required when ca.key is a pkcs11: URI (the token's PKCS#11 module, e.g. \
                     /usr/lib/softhsm/libsofthsm2.so)",
                );
                None
            }
            Some(m) if !m.is_file() => {
                r.error(
                    "ca.pkcs11_module",
                    format!("{} is not a file", path_for_people(m)),
                );
                None
            }
            Some(m) => Some(m.clone()),
        };
        if let Err(e) = std::fs::File::open(&self.ca.cert) {
            r.error(
                "ca.cert",
                format!("cannot read {}: {e}", path_for_people(&self.ca.cert)),
            );
            return None;
        }
        let pin = self.pkcs11_pin(r);
        let (Some(uri), Some(module), Some(pin)) = (uri, module, pin) else {
            return None;
        };
        let config = pep_ca::pkcs11::Pkcs11Config {
            module,
            uri,
            pin,
            sessions: pep_ca::pkcs11::DEFAULT_SESSIONS,
        };
        self.loaded_ca(pep_ca::FactoryCa::load_pkcs11(&self.ca.cert, config), r)
    }

    /// The token's user PIN: `PEP_PKCS11_PIN`, else the first line of `ca.pin_file`. Never in
    /// a message.
    fn pkcs11_pin(&self, r: &mut CheckReport) -> Option<Zeroizing<String>> {
        if let Some(pin) = std::env::var_os(super::PKCS11_PIN_ENV) {
            let pin = Zeroizing::new(pin.into_string().unwrap_or_default());
            if pin.is_empty() {
                r.error(
                    "ca.pin_file",
                    format!("{} is set but empty or not UTF-8", super::PKCS11_PIN_ENV),
                );
                return None;
            }
            return Some(pin);
        }
        let Some(path) = &self.ca.pin_file else {
            r.error(
                "ca.pin_file",
                format!(
                    "the CA key is in a PKCS#11 token but no PIN is given: set ca.pin_file or \
                     the {} environment variable",
                    super::PKCS11_PIN_ENV
                ),
            );
            return None;
        };
        let text = match std::fs::read(path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) => {
                r.error(
                    "ca.pin_file",
                    format!("cannot read {}: {e}", path_for_people(path)),
                );
                return None;
            }
        };
        let Ok(text) = std::str::from_utf8(&text) else {
            r.error(
                "ca.pin_file",
                format!("{} is not UTF-8 text", path_for_people(path)),
            );
            return None;
        };
        let pin = Zeroizing::new(text.lines().next().unwrap_or_default().trim().to_owned());
        if pin.is_empty() {
            r.error("ca.pin_file", format!("{} is empty", path_for_people(path)));
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                r.warn(
                    "ca.pin_file",
                    format!(
                        "{} is accessible by group or others (mode {:o}); chmod 600 it",
                        path_for_people(path),
                        meta.permissions().mode() & 0o777
                    ),
                );
            }
        }
        Some(pin)
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
        let already = r
            .errors
            .iter()
            .any(|e| e.field.starts_with("certificate.") || e.field.starts_with("crl."));
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

    /// `[crl]`: the validity in range, and a distribution URL that relying parties can fetch and
    /// that fits a certificate extension (an IA5String URI).
    fn check_crl(&self, r: &mut CheckReport) {
        let c = &self.crl;
        if c.validity_hours == 0 || c.validity_hours > super::MAX_CRL_VALIDITY_HOURS {
            r.error(
                "crl.validity_hours",
                format!(
                    "is {}; must be 1 to {} (hours from a CRL's thisUpdate to its nextUpdate)",
                    c.validity_hours,
                    super::MAX_CRL_VALIDITY_HOURS
                ),
            );
        }
        let Some(url) = &c.distribution_url else {
            return;
        };
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                r.error("crl.distribution_url", format!("{url:?} is not a URL: {e}"));
                return;
            }
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            r.error(
                "crl.distribution_url",
                format!(
                    "{url:?} has scheme `{}`; relying parties fetch CRLs over http:// (or https://)",
                    parsed.scheme()
                ),
            );
        } else if parsed.host_str().is_none_or(str::is_empty) {
            r.error("crl.distribution_url", format!("{url:?} has no host"));
        } else if !parsed.username().is_empty() || parsed.password().is_some() {
            r.error(
                "crl.distribution_url",
                "must not hold credentials: it is written into every device certificate",
            );
        } else if parsed.fragment().is_some() {
            r.error("crl.distribution_url", format!("{url:?} has a #fragment"));
        } else {
            let profile = pep_ca::CertProfile {
                crl_distribution_point: Some(url.clone()),
                ..pep_ca::CertProfile::default()
            };
            if let Err(e) = profile.validate() {
                r.error("crl.distribution_url", e.to_string());
            }
        }
    }

    /// The bootstrap URI was parsed at load; what is left is the rule that ties it to
    /// `first_to_claim`, and the server's CA certificate.
    fn check_bootstrap(&self, r: &mut CheckReport) -> Option<Vec<u8>> {
        let b = &self.bootstrap;
        if b.uri.is_unencrypted() {
            r.warn(
                "bootstrap.uri",
                "coap:// is unencrypted; the cloud bootstrap server uses coaps://",
            );
        }
        if b.first_to_claim && b.uri.has_aid() {
            r.error(
                "bootstrap.uri",
                "contains aid= but first_to_claim is on (FCC answers 29): remove the ?aid=… part, \
                 or set bootstrap.first_to_claim = false",
            );
        }
        if !b.first_to_claim && !b.uri.has_aid() {
            r.error(
                "bootstrap.uri",
                "has no aid= and first_to_claim is off (FCC rejects it: URI format incorrect)",
            );
        }
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
    }

    /// The update-auth certificate; the UUIDs were parsed at load, only their absence is worth
    /// a warning.
    fn check_update(&self, r: &mut CheckReport) -> Option<Vec<u8>> {
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
        for (field, set, item) in [
            ("update.vendor_id", u.vendor_id.is_some(), "mbed.VendorId"),
            ("update.class_id", u.class_id.is_some(), "mbed.ClassId"),
        ] {
            if !set {
                r.warn(
                    field,
                    format!("not set: FCC answers with `Item not set:{item}`"),
                );
            }
        }
        cert
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
    }
}

fn check_text(field: &str, v: &str, max: usize, r: &mut CheckReport) {
    if v.chars().count() > max {
        r.error(field, format!("is longer than {max} characters"));
    }
    if v.chars().any(char::is_control) {
        r.error(field, "contains control characters");
    }
}

/// The database URL for people: a password is replaced by `***`.
fn redacted_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
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

/// Reads a PEM or DER certificate with `pep-ca` and checks it holds a P-256 key and has not
/// expired (a warning when it ends within 10 years, as FCC warns then). Returns its DER.
fn read_p256_certificate(field: &str, path: &Path, r: &mut CheckReport) -> Option<Vec<u8>> {
    let cert = match pep_ca::pem::read_p256_certificate(path) {
        Ok(c) => c,
        Err(pep_ca::CaError::Read { source, .. }) => {
            r.error(
                field,
                format!("cannot read {}: {source}", path_for_people(path)),
            );
            return None;
        }
        Err(e) => {
            r.error(field, e.to_string());
            return None;
        }
    };
    let left = cert.not_after().unix_timestamp() - OffsetDateTime::now_utc().unix_timestamp();
    if left < 0 {
        r.error(field, format!("{} has expired", path.display()));
        return None;
    }
    if left < TEN_YEARS_S {
        r.warn(
            field,
            format!(
                "{} expires within 10 years: FCC answers with a `Certificate validity is less than 10 years` warning",
                path.display()
            ),
        );
    }
    Some(cert.into_der().to_vec())
}

/// The `serial_prefixes` of a token or station (`owner`, e.g. `tokens[0]`): none empty, each a
/// short printable text.
fn check_serial_prefixes(owner: &str, prefixes: &[String], r: &mut CheckReport) {
    for (j, prefix) in prefixes.iter().enumerate() {
        let field = format!("{owner}.serial_prefixes[{j}]");
        if prefix.is_empty() {
            r.error(
                &field,
                "is empty (remove serial_prefixes to allow every serial)",
            );
        } else {
            check_text(&field, prefix, 64, r);
        }
    }
}
