//! One provisioning, start to finish — usable as a library, without the HTTP server.
//!
//! ```text
//! validate request ─▶ reserve serial (store) ─▶ wait for an injection slot ─▶ issue (pep-ca)
//!        │                  │ 409 if deployed/in flight        by_tool: key + certificate
//!        ▼                  ▼                                  by_device: CSR session (2 messages)
//!       400            audit "attempt"           ─▶ inject bundle (fcc-proto) ─▶ mark deployed / failed
//! ```
//!
//! A [`Provisioner`] loads and checks everything once ([`Config::check`] must pass: the CA, the
//! bootstrap CA and the update-authority certificate are read then), and is cheap to clone and share.
//! [`Provisioner::provision`] runs the attempt in its own task, so a caller that gives up (a client
//! that disconnects) cannot leave the serial half-recorded: the attempt always ends with the serial
//! marked deployed or failed. Attempts left in flight by a crash are recovered by
//! [`Store::open`](crate::store::Store::open).
//!
//! Device private keys exist only in memory, as `pep_ca::DevicePrivateKey` and the bundle's
//! zeroizing key item; both are dropped (zeroized) right after the injection, and are never stored,
//! logged or returned.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcc_proto::bundle::{Bundle, CertificateItem, ConfigParam, CsrRequest, KeyItem};
use fcc_proto::{FccClient, FccError, FccStatus, Response, Timeouts, names};
use pep_ca::{CaError, CertProfile, EndpointName, EnrollmentId, FactoryCa, IssuedCertificate};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, broadcast};

use crate::activity::{
    AttemptFinished, AttemptOutcome, AttemptStarted, EVENT_CAPACITY, ProvisionEvent,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, EntropyMode, KeyMode};
use crate::hook::{HookQuestion, HookVerdict, PreProvisionHook};
pub use crate::model::MAX_FIELD_LEN;
pub use crate::model::RequestKey;
use crate::model::{
    Category, FieldText, GatewayDefaults, GatewayFields, GatewayParams, HttpUrl, InvalidField,
    as_text,
};
use crate::orders::OrderMatch;
use crate::store::{
    DeployedOutcome, FailedOutcome, IdentityState, NewAttempt, Reservation, Store, StoreError,
    WriteAhead,
};

/// One provisioning request: a valid gateway and who asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// The gateway and its parameters (see [`Provisioner::gateway_params`]).
    pub params: GatewayParams,
    /// Who asks (token name and address), for the audit trail; cut to [`MAX_FIELD_LEN`].
    pub requester: String,
    /// The client's request key: the same key for the same serial answers the stored identity
    /// again instead of issuing a second certificate (a retry after a lost answer).
    pub request_key: Option<RequestKey>,
}

/// A deployed gateway identity; serializes to the `identity.json` of the original tool, plus
/// `apiServerAddress` (the field the gateway's config agent actually reads).
#[derive(utoipa::ToSchema)]
#[schema(as = Identity)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Serial number.
    #[schema(value_type = String)]
    #[serde(rename = "serialNumber", serialize_with = "as_text::serialize")]
    pub serial_number: EndpointName,
    /// Account OU: unknown at the factory, empty.
    #[serde(rename = "OU")]
    pub ou: String,
    /// Device ID: assigned at first connection, empty.
    #[serde(rename = "deviceID")]
    pub device_id: String,
    /// Always true.
    pub deployed: bool,
    /// Hardware version.
    #[schema(value_type = String)]
    #[serde(rename = "hardwareVersion")]
    pub hardware_version: FieldText,
    /// Radio configuration.
    #[schema(value_type = String)]
    #[serde(rename = "radioConfig")]
    pub radio_config: FieldText,
    /// LED configuration.
    #[schema(value_type = String)]
    #[serde(rename = "ledConfig")]
    pub led_config: FieldText,
    /// `production` or `development`.
    pub category: Category,
    /// = gateway services address.
    #[schema(value_type = String)]
    #[serde(rename = "cloudAddress")]
    pub cloud_address: HttpUrl,
    /// API address.
    #[schema(value_type = String)]
    #[serde(rename = "apiAddress")]
    pub api_address: HttpUrl,
    /// = API address (the name the gateway reads).
    #[schema(value_type = String)]
    #[serde(rename = "apiServerAddress")]
    pub api_server_address: HttpUrl,
    /// Gateway services address.
    #[schema(value_type = String)]
    #[serde(rename = "gatewayServicesAddress")]
    pub gateway_services_address: HttpUrl,
    /// `A-` + SHA-256 of the device certificate.
    #[schema(value_type = String)]
    #[serde(rename = "enrollmentID", serialize_with = "as_text::serialize")]
    pub enrollment_id: EnrollmentId,
    /// ms since the epoch.
    #[serde(rename = "createdAt")]
    pub created_at: i64,
    /// The device certificate (public).
    #[serde(skip)]
    pub certificate_der: CertificateDer<'static>,
    /// Certificate serial, hex.
    #[serde(skip)]
    pub certificate_serial: String,
    /// Certificate notAfter.
    #[serde(skip)]
    pub certificate_not_after: OffsetDateTime,
    /// Warnings FCC answered with (normally none).
    #[serde(skip)]
    pub fcc_warnings: Vec<String>,
    /// The gateway's FCC address.
    #[serde(skip)]
    pub gateway: SocketAddr,
    /// True when this is the stored identity answered again for a repeated request key (no
    /// certificate was issued, nothing was injected).
    #[serde(skip)]
    pub replayed: bool,
}

/// Why an attempt on a reachable gateway failed below FCC's own status (502).
#[derive(Debug, thiserror::Error)]
pub enum GatewayFailure {
    /// A transport or framing error: closed without reply, wire status 9, bad frame.
    #[error(transparent)]
    Fcc(FccError),
    /// FCC's answer does not fit the exchange (e.g. no CSR where one was asked for).
    #[error("{0}")]
    Protocol(String),
    /// The gateway's CSR does not pass the CA's checks.
    #[error("the gateway's CSR was refused: {0}")]
    CsrRefused(#[source] CaError),
}

/// Which timeout expired (504).
#[derive(Debug, thiserror::Error)]
pub enum GatewayTimeoutCause {
    /// A connect, write or read timeout of the FCC client.
    #[error(transparent)]
    Fcc(FccError),
    /// The whole request took longer than `request_deadline`.
    #[error("the request deadline of {} ms expired", .0.as_millis())]
    Deadline(Duration),
}

impl GatewayTimeoutCause {
    /// True for the request deadline (rather than one exchange's timeout).
    pub fn is_deadline(&self) -> bool {
        matches!(self, GatewayTimeoutCause::Deadline(_))
    }
}

/// Why a provisioning failed. [`ProvisionError::http_status`] gives the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A request field is invalid (400).
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The request field (API parameter name).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The serial is deployed, being provisioned, or in doubt (409).
    #[error("{}", conflict_message(serial, *state))]
    Conflict {
        /// The serial.
        serial: String,
        /// The state of its row.
        state: IdentityState,
    },
    /// The request key was used for another serial (422).
    #[error(
        "the request key was already used for another serial number than {serial}; a request key \
         names one serial: send a new one"
    )]
    KeyUsed {
        /// The serial of this request.
        serial: String,
    },
    /// FCC answered with a non-zero ReturnStatus (502). The serial can be retried.
    #[error(
        "FCC at {gateway} rejected the identity with status {} ({}): {info}",
        status.as_u32(),
        status.name()
    )]
    GatewayRejected {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// FCC's ReturnStatus.
        status: FccStatus,
        /// FCC's InfoMessage (trimmed).
        info: String,
    },
    /// A protocol-level failure: closed without reply, wire status 9, bad frame, bad CSR (502).
    #[error("FCC at {gateway} failed: {error}; check the FCC process on the gateway")]
    GatewayFailed {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// What happened.
        #[source]
        error: GatewayFailure,
    },
    /// Nothing listens at the address, or no route (504).
    #[error(
        "cannot reach FCC at {gateway}: {error}; check that FCC runs on the gateway and listens on that IP and port"
    )]
    GatewayUnreachable {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// What happened.
        #[source]
        error: FccError,
    },
    /// A connect/write/read timeout or the request deadline expired (504).
    #[error("FCC at {gateway} timed out: {error}")]
    GatewayTimeout {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// Which timeout.
        #[source]
        error: GatewayTimeoutCause,
    },
    /// Refused by a rule before anything was reserved (403): a work-order rule (`[orders]`)
    /// or the pre-provisioning hook's no. Audited `refused`.
    #[error("{message}")]
    Refused {
        /// The serial.
        serial: String,
        /// The rule's name: `orders.required`, `order_closed`, `hooks.pre_provision`.
        rule: &'static str,
        /// What refused it, in words (for the hook: its reason, sanitized and bounded).
        message: String,
    },
    /// The pre-provisioning hook gave no usable answer and `failure_policy` is `fail_closed`
    /// (503): nothing was reserved; the same request may succeed once the hook answers.
    #[error(
        "{0}; provisioning needs its approval (hooks.failure_policy = \"fail_closed\"), try again"
    )]
    HookUnavailable(#[source] crate::hook::HookFailure),
    /// The configuration is not usable (the check report) (500).
    #[error("invalid configuration:\n{0}")]
    InvalidConfig(String),
    /// The store failed (500).
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The CA refused to issue a certificate (500).
    #[error("internal error: the CA could not issue a certificate: {0}")]
    Ca(#[source] CaError),
    /// The CA key's token is away (unplugged, HSM unreachable): nothing was sent to the gateway;
    /// the serial can be retried once the token is back, without a restart (503).
    #[error("{0}; try again")]
    CaUnavailable(#[source] CaError),
    /// Anything else (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<InvalidField> for ProvisionError {
    fn from(e: InvalidField) -> Self {
        ProvisionError::InvalidRequest {
            field: e.field.to_owned(),
            reason: e.reason,
        }
    }
}

impl ProvisionError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ProvisionError::InvalidRequest { .. } => 400,
            ProvisionError::Conflict { .. } => 409,
            ProvisionError::KeyUsed { .. } => 422,
            ProvisionError::GatewayRejected { .. } | ProvisionError::GatewayFailed { .. } => 502,
            ProvisionError::GatewayUnreachable { .. } | ProvisionError::GatewayTimeout { .. } => {
                504
            }
            ProvisionError::CaUnavailable(_) | ProvisionError::HookUnavailable(_) => 503,
            ProvisionError::Refused { .. } => 403,
            ProvisionError::InvalidConfig(_)
            | ProvisionError::Store(_)
            | ProvisionError::Ca(_)
            | ProvisionError::Internal(_) => 500,
        }
    }

    /// True when provisioning the same serial again may succeed (the serial was left retryable).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProvisionError::GatewayRejected { .. }
                | ProvisionError::GatewayFailed { .. }
                | ProvisionError::GatewayUnreachable { .. }
                | ProvisionError::GatewayTimeout { .. }
                | ProvisionError::CaUnavailable(_)
                | ProvisionError::HookUnavailable(_)
        )
    }
}

/// The message of a 409: what the serial's state means and what to do.
fn conflict_message(serial: &str, state: IdentityState) -> String {
    match state {
        IdentityState::InDoubt => format!(
            "serial number {serial} is in doubt: a server stopped while injecting its identity, \
             which may be on the gateway; an operator checks the gateway and resolves it with \
             POST /v3/identities/{serial}/resolve and {{\"state\": \"deployed\"}} or \
             {{\"state\": \"failed\"}}"
        ),
        _ => format!("serial number {serial} is already deployed or being provisioned"),
    }
}

/// The provisioning core. Clone it freely (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("key_mode", &self.inner.config.key_mode)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Arc<Config>,
    store: Store,
    ca: Arc<FactoryCa>,
    profile: CertProfile,
    bootstrap_ca_der: Vec<u8>,
    update_auth_cert_der: Option<Vec<u8>>,
    vendor_id: Option<[u8; 16]>,
    class_id: Option<[u8; 16]>,
    timeouts: Timeouts,
    slots: Semaphore,
    /// Live activity (see [`crate::activity`]); sending never blocks.
    events: broadcast::Sender<ProvisionEvent>,
    /// What a request leaves out, from the configuration.
    defaults: GatewayDefaults,
    /// The time of `created_at`, `mbed.CurrentTime` and the certificates.
    clock: Arc<dyn Clock>,
    /// The pre-provisioning hook, when `[hooks] pre_provision` is set.
    hook: Option<PreProvisionHook>,
    /// Whether any work order exists, as last asked ([`Inner::orders_exist`]).
    orders_known: OrdersKnown,
    /// The latest CRL signed.
    crl: crate::crl::CrlCache,
}

/// How long "no work order exists" is believed without asking the store again: a server that
/// never had orders pays no lookup per provisioning, and an order another server (PostgreSQL)
/// creates applies within this time. This server's own new orders apply at once
/// ([`Provisioner::orders_changed`]).
const ORDERS_RECHECK_MS: i64 = 1_000;

/// The cached answer of "does any work order exist", with when it was asked (ms).
#[derive(Default)]
struct OrdersKnown {
    /// ms since the epoch of the last answer (0: never asked, or forgotten).
    asked_at: std::sync::atomic::AtomicI64,
    /// The last answer.
    exist: std::sync::atomic::AtomicBool,
}

/// What went wrong inside one attempt (before mapping to [`ProvisionError`]).
enum AttemptError {
    Fcc(FccError),
    Rejected {
        response: Box<Response>,
    },
    Failure(GatewayFailure),
    Ca(CaError),
    Internal(String),
    Deadline(Duration),
    /// The write-ahead failed: nothing was sent to FCC.
    Store(StoreError),
}

impl From<FccError> for AttemptError {
    fn from(e: FccError) -> Self {
        AttemptError::Fcc(e)
    }
}

impl AttemptError {
    fn into_error(self, gateway: SocketAddr) -> ProvisionError {
        match self {
            AttemptError::Fcc(e) if e.is_unreachable() => {
                ProvisionError::GatewayUnreachable { gateway, error: e }
            }
            AttemptError::Fcc(e) if e.is_timeout() => ProvisionError::GatewayTimeout {
                gateway,
                error: GatewayTimeoutCause::Fcc(e),
            },
            AttemptError::Fcc(e) => ProvisionError::GatewayFailed {
                gateway,
                error: GatewayFailure::Fcc(e),
            },
            AttemptError::Rejected { response } => ProvisionError::GatewayRejected {
                gateway,
                status: response.return_status,
                info: response.info_message.trim_end().to_owned(),
            },
            AttemptError::Failure(error) => ProvisionError::GatewayFailed { gateway, error },
            AttemptError::Ca(e) if e.is_unavailable() => ProvisionError::CaUnavailable(e),
            AttemptError::Ca(e) => ProvisionError::Ca(e),
            AttemptError::Internal(e) => ProvisionError::Internal(e),
            AttemptError::Store(e) => ProvisionError::Store(e),
            AttemptError::Deadline(d) => ProvisionError::GatewayTimeout {
                gateway,
                error: GatewayTimeoutCause::Deadline(d),
            },
        }
    }
}

/// The result of a successful injection.
struct Injected {
    certificate: IssuedCertificate,
    warnings: Vec<String>,
}

impl Provisioner {
    /// Checks the configuration ([`Config::check`]; any error refuses to start), loads the CA and
    /// the certificates once, and sets up the injection slots. Times come from the wall clock.
    pub fn new(config: Arc<Config>, store: Store) -> Result<Provisioner, ProvisionError> {
        Provisioner::with_clock(config, store, Arc::new(SystemClock))
    }

    /// [`Provisioner::new`] with the clock the core reads for `created_at`, `mbed.CurrentTime`
    /// and the certificates' validity.
    pub fn with_clock(
        config: Arc<Config>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Provisioner, ProvisionError> {
        let (report, prepared) = config.prepare();
        let Some(prepared) = prepared.filter(|_| report.is_ok()) else {
            return Err(ProvisionError::InvalidConfig(report.to_string()));
        };
        for w in &report.warnings {
            tracing::warn!(field = %w.field, "config: {}", w.message);
        }
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.fcc.connect_timeout_ms),
            write: Duration::from_millis(config.fcc.write_timeout_ms),
            read: Duration::from_millis(config.fcc.read_timeout_ms),
        };
        let defaults = GatewayDefaults::from_config(&config)
            .map_err(|e| ProvisionError::InvalidConfig(format!("{}: {}", e.field, e.reason)))?;
        let hook = PreProvisionHook::from_config(&config.hooks)
            .map_err(|e| ProvisionError::InvalidConfig(e.to_string()))?;
        let inner = Inner {
            defaults,
            hook,
            orders_known: OrdersKnown::default(),
            clock,
            profile: config.cert_profile(),
            ca: prepared.ca,
            bootstrap_ca_der: prepared.bootstrap_ca_der,
            update_auth_cert_der: prepared.update_auth_cert_der,
            vendor_id: prepared.vendor_id,
            class_id: prepared.class_id,
            timeouts,
            slots: Semaphore::new(config.fcc.max_concurrent_injections),
            events: broadcast::channel(EVENT_CAPACITY).0,
            crl: crate::crl::CrlCache::new(Duration::from_secs(
                u64::from(config.crl.validity_hours) * 3600,
            )),
            config,
            store,
        };
        Ok(Provisioner {
            inner: Arc::new(inner),
        })
    }

    /// True unless the CA key's token is away (see [`FactoryCa::probe`]); asks the token, on a
    /// blocking thread, when the key is in one.
    pub async fn ca_available(&self) -> bool {
        if !self.inner.ca.key_in_token() {
            return true;
        }
        let ca = self.inner.ca.clone();
        tokio::task::spawn_blocking(move || ca.probe())
            .await
            .unwrap_or(false)
    }

    /// The factory CA, to sign what the server signs besides certificates (the audit
    /// checkpoints).
    pub fn ca(&self) -> Arc<FactoryCa> {
        Arc::clone(&self.inner.ca)
    }

    /// Where the CA key is, for people (file or PKCS#11 token).
    pub fn ca_key_location(&self) -> &str {
        self.inner.ca.key_location()
    }

    /// The store (for the read API).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Subscribes to the live activity: every attempt's start and end from now on (see
    /// [`crate::activity`]). A receiver more than [`EVENT_CAPACITY`] events behind gets
    /// `RecvError::Lagged` and should resynchronise from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<ProvisionEvent> {
        self.inner.events.subscribe()
    }

    /// Injection slots free right now (for metrics).
    pub fn free_injection_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// Checks the fields of a request and fills in the configured defaults: the one place a
    /// request becomes [`GatewayParams`]. `peer` is the requester's address (the gateway's when
    /// `ip` is absent).
    pub fn gateway_params(
        &self,
        fields: GatewayFields,
        peer: Option<IpAddr>,
    ) -> Result<GatewayParams, InvalidField> {
        fields.into_params(peer, &self.inner.defaults)
    }

    /// Forgets whether work orders exist: the next provisioning asks the store (called when an
    /// order is created through this server).
    pub fn orders_changed(&self) {
        self.inner
            .orders_known
            .asked_at
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The defaults a request's absent fields get.
    pub fn gateway_defaults(&self) -> &GatewayDefaults {
        &self.inner.defaults
    }

    /// Revokes the deployed or in-doubt identity of `serial` ([`Store::revoke`]): durable and
    /// audited before this returns. The next [`Provisioner::crl`] lists its certificate.
    pub async fn revoke(
        &self,
        serial: &pep_ca::EndpointName,
        reason: pep_ca::RevocationReason,
        note: Option<&crate::model::FieldText>,
        who: &str,
    ) -> Result<crate::store::RevokeOutcome, StoreError> {
        let outcome = self
            .inner
            .store
            .revoke(serial.as_str(), reason, note.map(|n| n.as_str()), who)
            .await?;
        if let crate::store::RevokeOutcome::Revoked(r) = &outcome {
            tracing::warn!(
                serial = %serial,
                %reason,
                certificate = %r.cert_serial,
                who,
                "identity revoked"
            );
        }
        Ok(outcome)
    }

    /// The CA's current CRL (see [`crate::crl`]): signed again when the revoked set changed or
    /// half of its validity has passed.
    pub async fn crl(&self) -> Result<Arc<crate::crl::SignedCrl>, crate::crl::CrlError> {
        let now = self.inner.clock.now();
        self.inner
            .crl
            .current(&self.inner.store, &self.inner.ca, now)
            .await
    }

    /// Provisions one gateway: reserve the serial, issue, inject, record.
    ///
    /// Runs in its own task: dropping the returned future does not abort the attempt, which always
    /// ends recorded as deployed or failed.
    pub async fn provision(&self, request: ProvisionRequest) -> Result<Identity, ProvisionError> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.run(request).await })
            .await
            .map_err(|e| ProvisionError::Internal(format!("the provisioning task failed: {e}")))?
    }
}

impl Inner {
    async fn run(&self, request: ProvisionRequest) -> Result<Identity, ProvisionError> {
        let started = Instant::now();
        let ProvisionRequest {
            params: mut job,
            mut requester,
            request_key,
        } = request;
        if let Some((cut, _)) = requester.char_indices().nth(MAX_FIELD_LEN) {
            requester.truncate(cut);
        }
        let order = self.admit(&mut job, &requester).await?;
        self.approve(&mut job, order.as_ref(), &requester).await?;
        let attempt = NewAttempt {
            params: job,
            requester,
            now_ms: self.clock.now_ms(),
            request_key,
            order: order.map(|o| o.order_id),
        };
        let reservation = self.store.reserve(&attempt).await?;
        let job = &attempt.params;
        let serial = job.serial_number.as_str();
        let id = match reservation {
            Reservation::Reserved { id } => {
                // No subscriber is not an error: the event is simply not seen.
                let _ = self.events.send(ProvisionEvent::Started(AttemptStarted {
                    id,
                    serial: serial.to_owned(),
                    gateway: job.gateway,
                    at_ms: self.clock.now_ms(),
                }));
                id
            }
            Reservation::Conflict { state, same_key } => {
                tracing::info!(serial, %state, same_key, "serial conflict");
                return Err(ProvisionError::Conflict {
                    serial: serial.to_owned(),
                    state,
                });
            }
            Reservation::Replay { id } => {
                tracing::info!(
                    serial,
                    id,
                    "request key repeated: answering the stored identity"
                );
                return self.stored_identity(serial).await;
            }
            Reservation::KeyUsed => {
                tracing::info!(serial, "request key used for another serial");
                return Err(ProvisionError::KeyUsed {
                    serial: serial.to_owned(),
                });
            }
        };
        tracing::debug!(serial, gateway = %job.gateway, id, "serial reserved");

        let deadline = self.config.request_deadline();
        let outcome = match tokio::time::timeout(deadline, self.attempt(job, id)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AttemptError::Deadline(deadline)),
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);

        match outcome {
            Ok(injected) => {
                let cert = &injected.certificate;
                let enrollment_id = &cert.enrollment_id;
                let recorded = self
                    .store
                    .mark_deployed(
                        id,
                        &DeployedOutcome {
                            enrollment_id: enrollment_id.as_str(),
                            cert_serial: &cert.serial_hex,
                            cert_not_after: cert.not_after.unix_timestamp(),
                            fcc_warnings: &injected.warnings,
                            duration_ms,
                        },
                    )
                    .await;
                let created_at = match recorded {
                    Ok(created_at) => created_at,
                    Err(e) => {
                        // The gateway holds the identity but the store could not record it: say
                        // loudly what to do; the row (its certificate written ahead) is recovered
                        // `in_doubt` at the next start.
                        tracing::error!(serial, gateway = %job.gateway, %enrollment_id, error = %e,
                            "gateway provisioned but the store could not record it");
                        return Err(e.into());
                    }
                };
                if !injected.warnings.is_empty() {
                    tracing::warn!(serial, gateway = %job.gateway, warnings = ?injected.warnings,
                        "FCC accepted the identity with warnings");
                }
                tracing::info!(serial, gateway = %job.gateway, %enrollment_id, duration_ms, "deployed");
                self.finished(
                    id,
                    job,
                    duration_ms,
                    AttemptOutcome::Deployed {
                        enrollment_id: enrollment_id.to_string(),
                    },
                );
                let GatewayParams {
                    serial_number,
                    gateway,
                    api_address,
                    gateway_services_address,
                    hardware_version,
                    radio_config,
                    led_config,
                    category,
                    verification_key: _,
                    defaulted: _,
                } = attempt.params;
                let certificate = injected.certificate;
                Ok(Identity {
                    serial_number,
                    ou: String::new(),
                    device_id: String::new(),
                    deployed: true,
                    hardware_version,
                    radio_config,
                    led_config,
                    category,
                    cloud_address: gateway_services_address.clone(),
                    api_server_address: api_address.clone(),
                    api_address,
                    gateway_services_address,
                    enrollment_id: certificate.enrollment_id,
                    created_at,
                    certificate_der: CertificateDer::from(certificate.der),
                    certificate_serial: certificate.serial_hex,
                    certificate_not_after: certificate.not_after,
                    fcc_warnings: injected.warnings,
                    gateway,
                    replayed: false,
                })
            }
            Err(failure) => {
                let (fcc_status, warnings) = match &failure {
                    AttemptError::Rejected { response } => (
                        Some(response.return_status.as_u32()),
                        response.warnings.clone(),
                    ),
                    _ => (None, Vec::new()),
                };
                let error = failure.into_error(job.gateway);
                let message = error.to_string();
                let fcc_info = match &error {
                    ProvisionError::GatewayRejected { info, .. } => Some(info.clone()),
                    _ => None,
                };
                tracing::warn!(serial, gateway = %job.gateway, error = %message, "provisioning failed");
                self.store
                    .mark_failed(
                        id,
                        &FailedOutcome {
                            fcc_status,
                            fcc_info: fcc_info.as_deref(),
                            fcc_warnings: &warnings,
                            error: &message,
                            duration_ms,
                        },
                    )
                    .await?;
                self.finished(
                    id,
                    job,
                    duration_ms,
                    AttemptOutcome::Failed {
                        fcc_status: fcc_status.map(FccStatus::from_u32),
                        message,
                        fcc_info,
                    },
                );
                Err(error)
            }
        }
    }

    /// The work-order rules (`[orders]`): the serial's open order, whose product fills the
    /// fields the request left to `[defaults]`; none when orders are not required; or a
    /// refusal (403, audited `refused`), before anything is reserved.
    async fn admit(
        &self,
        job: &mut GatewayParams,
        requester: &str,
    ) -> Result<Option<OrderMatch>, ProvisionError> {
        let serial = job.serial_number.as_str();
        let required = self.config.orders.required;
        let found = if required || self.orders_exist().await? {
            self.store.order_of(serial).await?
        } else {
            None
        };
        match crate::orders::admit(serial, found, required) {
            Ok(Some(order)) => {
                order.product.fill(job);
                Ok(Some(order))
            }
            Ok(None) => Ok(None),
            Err(refusal) => {
                let message = refusal.to_string();
                Err(self.refused(job, requester, refusal.rule(), message).await)
            }
        }
    }

    /// Whether any work order exists: asked at most every [`ORDERS_RECHECK_MS`].
    async fn orders_exist(&self) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        // Wall time, not the core's clock (a test clock may stand still): this is a cache age.
        let now = crate::store::now_ms();
        let known = &self.orders_known;
        if now.saturating_sub(known.asked_at.load(Relaxed)) < ORDERS_RECHECK_MS {
            return Ok(known.exist.load(Relaxed));
        }
        let exist = self.store.any_order().await?;
        known.exist.store(exist, Relaxed);
        known.asked_at.store(now, Relaxed);
        Ok(exist)
    }

    /// The pre-provisioning hook, if configured: its yes (with the identity fields it sets), its
    /// no (403 with its reason, audited `refused`), or no answer (`failure_policy`).
    async fn approve(
        &self,
        job: &mut GatewayParams,
        order: Option<&OrderMatch>,
        requester: &str,
    ) -> Result<(), ProvisionError> {
        let Some(hook) = &self.hook else {
            return Ok(());
        };
        let question = HookQuestion {
            serial: job.serial_number.as_str().to_owned(),
            ip: job.gateway.ip().to_string(),
            port: job.gateway.port(),
            order: order.map(|o| o.order_id.as_str().to_owned()),
            requester: requester.to_owned(),
        };
        match hook.ask(&question).await {
            HookVerdict::Allow(identity) => {
                identity.apply(job);
                Ok(())
            }
            HookVerdict::Deny(reason) => {
                let message = format!(
                    "the pre-provisioning hook refused serial number {}: {reason}",
                    job.serial_number.as_str()
                );
                Err(self
                    .refused(job, requester, "hooks.pre_provision", message)
                    .await)
            }
            HookVerdict::Failed(failure) => match hook.policy() {
                crate::config::FailurePolicy::FailClosed => {
                    tracing::warn!(serial = job.serial_number.as_str(), hook = hook.url(),
                        error = %failure, "pre-provisioning hook failed: refusing (fail_closed)");
                    Err(ProvisionError::HookUnavailable(failure))
                }
                crate::config::FailurePolicy::FailOpen => {
                    tracing::warn!(serial = job.serial_number.as_str(), hook = hook.url(),
                        error = %failure, "pre-provisioning hook failed: provisioning anyway (fail_open)");
                    Ok(())
                }
            },
        }
    }

    /// A refusal by `rule`: logged, audited `refused` (no identity row), and the error.
    async fn refused(
        &self,
        job: &GatewayParams,
        requester: &str,
        rule: &'static str,
        message: String,
    ) -> ProvisionError {
        let serial = job.serial_number.as_str();
        tracing::warn!(target: "pep::audit", event = "refused", serial, gateway = %job.gateway,
            requester, rule, "{message}");
        let detail = format!("{rule}: {message}");
        if let Err(e) = self
            .store
            .audit_refused(serial, &job.gateway.to_string(), requester, &detail)
            .await
        {
            tracing::error!(error = %e, "auditing a refusal failed");
        }
        ProvisionError::Refused {
            serial: serial.to_owned(),
            rule,
            message,
        }
    }

    /// Tells the subscribers (the floor page) that attempt `id` of `job` ended.
    fn finished(&self, id: i64, job: &GatewayParams, duration_ms: i64, outcome: AttemptOutcome) {
        // No subscriber is not an error: the event is simply not seen.
        let _ = self.events.send(ProvisionEvent::Finished(AttemptFinished {
            id,
            serial: job.serial_number.as_str().to_owned(),
            gateway: job.gateway,
            at_ms: self.clock.now_ms(),
            duration_ms,
            outcome,
        }));
    }

    /// The identity of a deployed serial as its first answer had it, from the store (a repeated
    /// request key): same JSON, same enrollment ID, nothing issued.
    async fn stored_identity(&self, serial: &str) -> Result<Identity, ProvisionError> {
        let detail = self.store.identity(serial).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("the replayed serial `{serial}` has no row"))
        })?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            ProvisionError::Store(StoreError::Corrupt(format!(
                "stored {what} of `{serial}`: {e}"
            )))
        };
        let text = |what, v: String| FieldText::new(v).map_err(|e| corrupt(what, &e));
        let url = |what, v: String| HttpUrl::new(v).map_err(|e| corrupt(what, &e));
        let enrollment_id = detail
            .enrollment_id
            .as_deref()
            .ok_or_else(|| corrupt("enrollment ID", &"absent"))?;
        let api_address = url("API address", detail.api_address)?;
        let gateway_services_address =
            url("gateway services address", detail.gateway_services_address)?;
        Ok(Identity {
            serial_number: EndpointName::from_str(&detail.serial_number)
                .map_err(|e| corrupt("serial", &e))?,
            ou: detail.ou,
            device_id: detail.device_id,
            deployed: true,
            hardware_version: text("hardware version", detail.hardware_version)?,
            radio_config: text("radio config", detail.radio_config)?,
            led_config: text("LED config", detail.led_config)?,
            category: Category::from_str(&detail.category).map_err(|e| corrupt("category", &e))?,
            cloud_address: url("cloud address", detail.cloud_address)?,
            api_server_address: api_address.clone(),
            api_address,
            gateway_services_address,
            enrollment_id: EnrollmentId::from_str(enrollment_id)
                .map_err(|e| corrupt("enrollment ID", &e))?,
            created_at: detail.created_at_ms,
            certificate_der: CertificateDer::from(detail.cert_der.unwrap_or_default()),
            certificate_serial: detail.cert_serial.unwrap_or_default(),
            certificate_not_after: detail
                .cert_not_after
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            fcc_warnings: detail.fcc.warnings,
            gateway: detail.gateway.parse().map_err(|e| corrupt("gateway", &e))?,
            replayed: true,
        })
    }

    /// Waits for an injection slot, then issues and injects.
    async fn attempt(&self, job: &GatewayParams, id: i64) -> Result<Injected, AttemptError> {
        let _slot =
            self.slots.acquire().await.map_err(|_| {
                AttemptError::Internal("the injection slots were closed".to_owned())
            })?;
        // A short SID keeps FCC's response well under its 512-byte buffer.
        let sid = format!("pep-{id}");
        match self.config.key_mode {
            KeyMode::ByTool => self.inject_by_tool(job, id, sid).await,
            KeyMode::ByDevice => self.inject_by_device(job, id, sid).await,
        }
    }

    /// Records the certificate of attempt `id` before its first byte goes to FCC (issue #13): a
    /// crash from here on leaves the row `in_doubt` with this enrollment ID, not `failed`.
    async fn write_ahead(&self, id: i64, cert: &IssuedCertificate) -> Result<(), AttemptError> {
        self.store
            .write_ahead(
                id,
                WriteAhead {
                    enrollment_id: cert.enrollment_id.to_string(),
                    cert_serial: cert.serial_hex.clone(),
                    cert_not_after: cert.not_after.unix_timestamp(),
                    cert_der: cert.der.clone(),
                    now_ms: self.clock.now_ms(),
                },
            )
            .await
            .map_err(AttemptError::Store)
    }

    async fn inject_by_tool(
        &self,
        job: &GatewayParams,
        id: i64,
        sid: String,
    ) -> Result<Injected, AttemptError> {
        let (serial, profile, now) = (
            job.serial_number.clone(),
            self.profile.clone(),
            self.clock.now(),
        );
        let issued = self
            .with_ca(move |ca| ca.issue_at(&serial, &profile, now))
            .await
            .map_err(AttemptError::Ca)?;
        let mut bundle = Wiped(self.final_bundle(job, sid, &issued.certificate));
        bundle.keys.push(KeyItem::private(
            names::BOOTSTRAP_DEVICE_PRIVATE_KEY,
            issued.private_key.to_der(),
        ));
        bundle.entropy_and_rot(self.config.fcc.entropy_rot);
        let certificate = issued.certificate;
        // The key (in `issued.private_key`, already moved out, and in the bundle) is zeroized when
        // `bundle` drops at the end of this scope, right after the exchange.
        drop(issued.private_key);
        let mut client = FccClient::connect(job.gateway, self.timeouts).await?;
        // After the connect (an unreachable gateway costs no write), before the first byte.
        self.write_ahead(id, &certificate).await?;
        let response = client.send(&bundle).await;
        drop(bundle);
        drop(client);
        let response = response?;
        accept(response).map(|warnings| Injected {
            certificate,
            warnings,
        })
    }

    async fn inject_by_device(
        &self,
        job: &GatewayParams,
        id: i64,
        sid: String,
    ) -> Result<Injected, AttemptError> {
        let mut client = FccClient::connect(job.gateway, self.timeouts).await?;
        // Message 1 (keep-alive): the device generates the key and answers with a CSR.
        let mut first = Wiped(Bundle {
            sid: Some(sid.clone()),
            csr_requests: vec![CsrRequest {
                private_key_name: names::BOOTSTRAP_DEVICE_PRIVATE_KEY.to_owned(),
                subject: format!("CN={}", escape_subject_value(job.serial_number.as_str())),
                md: 1,
                key_usage: Some(1),     // digitalSignature
                ext_key_usage: Some(4), // clientAuth
            }],
            verify: Some(false),
            keep_alive: Some(true),
            ..Bundle::default()
        });
        first.entropy_and_rot(self.config.fcc.entropy_rot);
        let response = sanitized(client.send(&first).await?);
        drop(first);
        if !response.is_success() {
            return Err(AttemptError::Rejected {
                response: Box::new(response),
            });
        }
        let csr = response
            .csrs
            .iter()
            .find(|c| c.private_key_name == names::BOOTSTRAP_DEVICE_PRIVATE_KEY)
            .ok_or_else(|| {
                AttemptError::Failure(GatewayFailure::Protocol(format!(
                    "the CSR response has no CSR for {}",
                    names::BOOTSTRAP_DEVICE_PRIVATE_KEY
                )))
            })?;
        let (csr_der, serial, profile, now) = (
            csr.der.clone(),
            job.serial_number.clone(),
            self.profile.clone(),
            self.clock.now(),
        );
        let certificate = self
            .with_ca(move |ca| ca.sign_csr_at(&csr_der, &serial, &profile, now))
            .await
            .map_err(|e| match e {
                e if e.is_unavailable() => AttemptError::Ca(e),
                e => AttemptError::Failure(GatewayFailure::CsrRefused(e)),
            })?;
        // Message 1 left a key on the device but no identity; from the final message on the
        // certificate may be there.
        self.write_ahead(id, &certificate).await?;
        // Message 2 (final, verified): everything but the key, which stays on the device.
        let second = self.final_bundle(job, sid, &certificate);
        let response = client.send(&second).await?;
        drop(client);
        accept(response).map(|warnings| Injected {
            certificate,
            warnings,
        })
    }

    /// Runs `f` with the CA. A key in memory signs inline on the runtime thread: it costs ~34 µs
    /// of CPU in a release build (pep-ca's criterion benchmark, docs/performance.md), about what
    /// one poll of a busy task may take, while an injection waits milliseconds on the network
    /// anyway; `spawn_blocking` would add a thread hand-off of a similar order. A key in a
    /// PKCS#11 token signs on a blocking thread: each signature is a call into the module that
    /// waits for the token (and a misbehaving token must not stall a runtime worker).
    async fn with_ca<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FactoryCa) -> Result<T, CaError> + Send + 'static,
    ) -> Result<T, CaError> {
        if !self.ca.key_in_token() {
            return f(&self.ca);
        }
        let ca = self.ca.clone();
        tokio::task::spawn_blocking(move || f(&ca))
            .await
            .map_err(|_| CaError::Crypto {
                operation: "signing on a blocking thread (the thread failed)",
            })?
    }

    /// The final, verified message: device certificate (bound to the key by `PrKN`), bootstrap CA,
    /// update-authority certificate and every config param, so that FCC answers with no warning.
    fn final_bundle(&self, job: &GatewayParams, sid: String, cert: &IssuedCertificate) -> Bundle {
        let c = &self.config;
        let mut certificates = vec![
            CertificateItem {
                name: names::BOOTSTRAP_DEVICE_CERT.to_owned(),
                der: cert.der.clone(),
                private_key_name: Some(names::BOOTSTRAP_DEVICE_PRIVATE_KEY.to_owned()),
            },
            CertificateItem {
                name: names::BOOTSTRAP_SERVER_CA_CERT.to_owned(),
                der: self.bootstrap_ca_der.clone(),
                private_key_name: None,
            },
        ];
        if let Some(der) = &self.update_auth_cert_der {
            certificates.push(CertificateItem {
                name: names::UPDATE_AUTH_CERT.to_owned(),
                der: der.clone(),
                private_key_name: None,
            });
        }
        let serial = job.serial_number.as_str();
        let mut params = vec![
            ConfigParam::uint(names::USE_BOOTSTRAP, 1),
            ConfigParam::text(names::ENDPOINT_NAME, serial),
            ConfigParam::text(names::BOOTSTRAP_SERVER_URI, c.bootstrap.uri.clone()),
            ConfigParam::text(names::MANUFACTURER, c.device.manufacturer.clone()),
            ConfigParam::text(names::MODEL_NUMBER, c.device.model_number.clone()),
            ConfigParam::text(names::DEVICE_TYPE, c.device.device_type.clone()),
            ConfigParam::text(names::HARDWARE_VERSION, job.hardware_version.as_str()),
            ConfigParam::uint(names::MEMORY_TOTAL_KB, u64::from(c.device.memory_total_kb)),
            ConfigParam::text(names::SERIAL_NUMBER, serial),
        ];
        if c.bootstrap.first_to_claim {
            params.push(ConfigParam::uint(names::FIRST_TO_CLAIM, 1));
        }
        if c.time.sync {
            // Seconds: milliseconds would put the device far in the future (certificates "expired").
            let now = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0);
            params.push(ConfigParam::uint(names::CURRENT_TIME, now));
        }
        params.push(ConfigParam::text(names::TIMEZONE, c.time.timezone.clone()));
        params.push(ConfigParam::text(
            names::UTC_OFFSET,
            c.time.utc_offset.clone(),
        ));
        if let Some(id) = self.vendor_id {
            params.push(ConfigParam::bytes(names::VENDOR_ID, id.to_vec()));
        }
        if let Some(id) = self.class_id {
            params.push(ConfigParam::bytes(names::CLASS_ID, id.to_vec()));
        }
        Bundle {
            sid: Some(sid),
            certificates,
            config_params: params,
            verify: Some(true),
            ..Bundle::default()
        }
    }
}

/// The most of FCC's `InfoMessage` and of each `WarningInfo` that is kept, in bytes.
pub const MAX_FCC_TEXT: usize = 512;

/// FCC's words as the server keeps them: control characters removed (a gateway must not be able to
/// forge log lines, terminal escapes or page content) and cut to [`MAX_FCC_TEXT`] bytes at a
/// character boundary, before they are stored, logged, returned or rendered.
pub fn fcc_text(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).collect();
    if out.len() > MAX_FCC_TEXT {
        let mut cut = MAX_FCC_TEXT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// `response` with its `InfoMessage` and warnings passed through [`fcc_text`].
fn sanitized(mut response: Response) -> Response {
    response.info_message = fcc_text(&response.info_message);
    for w in &mut response.warnings {
        *w = fcc_text(w);
    }
    response
}

/// ReturnStatus 0 → the warnings; anything else → rejected. FCC's texts are sanitized first.
fn accept(response: Response) -> Result<Vec<String>, AttemptError> {
    let response = sanitized(response);
    if response.is_success() {
        Ok(response.warnings)
    } else {
        Err(AttemptError::Rejected {
            response: Box::new(response),
        })
    }
}

/// mbedTLS subject strings separate attributes with `,`; a literal comma is written `\,`.
fn escape_subject_value(v: &str) -> String {
    v.replace(',', "\\,")
}

/// A bundle whose entropy and root of trust are zeroized when it drops, on every path (sent,
/// refused, or never sent because the connection failed): they seed the device's secrets.
struct Wiped(Bundle);

impl std::ops::Deref for Wiped {
    type Target = Bundle;
    fn deref(&self) -> &Bundle {
        &self.0
    }
}

impl std::ops::DerefMut for Wiped {
    fn deref_mut(&mut self) -> &mut Bundle {
        &mut self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe_entropy_and_rot(&mut self.0);
    }
}

fn wipe_entropy_and_rot(bundle: &mut Bundle) {
    use zeroize::Zeroize as _;
    if let Some(e) = bundle.entropy.as_mut() {
        e.zeroize();
    }
    if let Some(r) = bundle.rot.as_mut() {
        r.zeroize();
    }
}

/// Entropy and root of trust for the first message of a session.
trait EntropyAndRot {
    fn entropy_and_rot(&mut self, mode: EntropyMode);
}

impl EntropyAndRot for Bundle {
    fn entropy_and_rot(&mut self, mode: EntropyMode) {
        if mode == EntropyMode::Random {
            use rand::RngCore;
            // Drawn straight into the bundle: no stack copy is left behind.
            let entropy = self.entropy.insert([0u8; 48]);
            rand::rngs::OsRng.fill_bytes(entropy);
            let rot = self.rot.insert([0u8; 16]);
            rand::rngs::OsRng.fill_bytes(rot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        let gw: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            ProvisionError::Conflict {
                serial: "x".into(),
                state: IdentityState::Deployed
            }
            .http_status(),
            409
        );
        let e = ProvisionError::GatewayRejected {
            gateway: gw,
            status: FccStatus::from_u32(13),
            info: "Certificate expired:mbed.BootstrapDeviceCert".into(),
        };
        assert_eq!(e.http_status(), 502);
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("Certificate expired"),
            "{text}"
        );
        assert_eq!(
            ProvisionError::GatewayTimeout {
                gateway: gw,
                error: GatewayTimeoutCause::Deadline(Duration::from_millis(5))
            }
            .http_status(),
            504
        );
    }

    #[test]
    fn errors_keep_their_sources_and_their_texts() {
        use std::error::Error as _;
        let gw: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = ProvisionError::GatewayTimeout {
            gateway: gw,
            error: GatewayTimeoutCause::Deadline(Duration::from_millis(1500)),
        };
        assert_eq!(
            e.to_string(),
            "FCC at 127.0.0.1:1 timed out: the request deadline of 1500 ms expired"
        );
        assert!(e.source().is_some());
        let e = ProvisionError::GatewayFailed {
            gateway: gw,
            error: GatewayFailure::Protocol("no CSR".into()),
        };
        assert_eq!(
            e.to_string(),
            "FCC at 127.0.0.1:1 failed: no CSR; check the FCC process on the gateway"
        );
    }

    #[test]
    fn entropy_and_rot_are_zeroized_on_drop() {
        let mut b = Bundle::default();
        b.entropy_and_rot(EntropyMode::Random);
        assert!(b.entropy.is_some_and(|e| e != [0; 48]));
        assert!(b.rot.is_some_and(|r| r != [0; 16]));
        // What `Wiped`'s Drop runs.
        wipe_entropy_and_rot(&mut b);
        assert_eq!(b.entropy, Some([0; 48]));
        assert_eq!(b.rot, Some([0; 16]));
    }

    #[test]
    fn fcc_texts_are_stripped_and_bounded() {
        assert_eq!(
            fcc_text("bad\u{1b}[31m red\r\nforged: line\0"),
            "bad[31m redforged: line"
        );
        let long = "é".repeat(400); // 800 bytes
        let cut = fcc_text(&long);
        assert!(
            cut.len() <= MAX_FCC_TEXT && cut.len() >= MAX_FCC_TEXT - 1,
            "{}",
            cut.len()
        );
        assert!(cut.chars().all(|c| c == 'é'));
        let mut r = Response::error(None, FccStatus::from_u32(13), "x".repeat(2000));
        r.warnings = vec!["w\n".repeat(600)];
        let r = sanitized(r);
        assert_eq!(r.info_message.len(), MAX_FCC_TEXT);
        assert_eq!(r.warnings[0].len(), MAX_FCC_TEXT);
        assert!(!r.warnings[0].contains('\n'));
    }

    #[test]
    fn subject_commas_are_escaped() {
        assert_eq!(escape_subject_value("a,b"), "a\\,b");
    }
}
