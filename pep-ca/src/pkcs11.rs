//! The CA key in an HSM or token, through its PKCS#11 module (the `cryptoki` crate: the module's C
//! API, no OpenSSL engine, no shelling out).
//!
//! * [`Pkcs11Uri`] is the RFC 7512 URI of the key (`pkcs11:token=pep-factory;object=ca-key`).
//! * `Pkcs11Key` (behind [`crate::FactoryCa::load_pkcs11`]) opens the token, logs in, finds the
//!   key and signs with it through a small pool of sessions (an HSM serialises the operations of
//!   one session). When the token goes away
//!   (a USB token unplugged, a network HSM unreachable) signing fails at once with
//!   [`CaError::TokenUnavailable`]; the next attempt re-opens the module from scratch
//!   (`C_Finalize`/`C_Initialize`, so a token that comes back is seen again), at most once per
//!   [`REOPEN_INTERVAL`], so no restart is needed and no attempt waits for the token.
//! * [`generate_key`] creates a non-extractable P-256 key pair in a token (`pep-server ca
//!   generate-pkcs11`).
//!
//! Every call into the module blocks the calling thread: async callers run them on a blocking
//! thread (pep-server does).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::CaError;

/// DER of the P-256 (prime256v1) named-curve OID: `CKA_EC_PARAMS` of a P-256 key.
const P256_EC_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// How often a token that went away is looked for again (the attempts in between fail at once).
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// How long a signature waits for a free session when all are busy.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// Sessions opened by default: enough to keep a software token's cores busy, few enough for a
/// USB token (which serialises everything anyway).
pub const DEFAULT_SESSIONS: usize = 4;

/// An RFC 7512 PKCS#11 URI naming a token and a key in it, e.g.
/// `pkcs11:token=pep-factory;object=ca-key`.
///
/// Understood path attributes: `token`, `object`, `id`, `serial`, `manufacturer`, `model`,
/// `type` (must be `private` when given). A PIN in the URI (`pin-value`, `pin-source`) is refused:
/// the PIN comes from a file or the environment, never from the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    text: String,
    /// The token label (`token=`).
    pub token: Option<String>,
    /// The key label (`object=`).
    pub object: Option<String>,
    /// The key's `CKA_ID` (`id=`, percent-encoded bytes).
    pub id: Option<Vec<u8>>,
    /// The token serial number (`serial=`).
    pub serial: Option<String>,
    /// The token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// The token model (`model=`).
    pub model: Option<String>,
}

impl Pkcs11Uri {
    /// True when `text` is meant as a PKCS#11 URI (rather than a file path).
    pub fn is_pkcs11(text: &str) -> bool {
        text.get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("pkcs11:"))
    }

    /// The URI as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `token "pep-factory", object "ca-key"`: the key's place for people.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token \"{t}\""));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object \"{o}\""));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id {}", hex_lower(id)));
        }
        parts.join(", ")
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pkcs11Uri").field(&self.text).finish()
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Pkcs11Uri {
    type Err = CaError;

    fn from_str(text: &str) -> Result<Self, CaError> {
        // The error does not repeat the URI: it may hold a PIN.
        let bad = |reason: String| CaError::Pkcs11Uri { reason };
        if !Self::is_pkcs11(text) {
            return Err(bad("it does not start with `pkcs11:`".to_owned()));
        }
        let rest = text.get(7..).unwrap_or_default();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri {
            text: text.to_owned(),
            token: None,
            object: None,
            id: None,
            serial: None,
            manufacturer: None,
            model: None,
        };
        // Query attributes only ever name a PIN or a module, which come from elsewhere.
        if let Some(attr) = query.into_iter().flat_map(|q| q.split('&')).next() {
            let name = attr.split_once('=').map_or(attr, |(n, _)| n);
            return Err(bad(match name {
                "pin-value" | "pin-source" => format!(
                    "it holds `{name}`: the PIN never goes into the configuration; use pin_file \
                     or the PEP_PKCS11_PIN environment variable"
                ),
                "module-path" | "module-name" => {
                    format!("it holds `{name}`: name the module with pkcs11_module")
                }
                other => format!("it has an unknown query attribute `{other}`"),
            }));
        }
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let Some((name, value)) = attr.split_once('=') else {
                return Err(bad(format!("`{attr}` is not name=value")));
            };
            let bytes = percent_decode(value)
                .ok_or_else(|| bad(format!("the value of `{name}` has a bad percent-encoding")))?;
            let text_value = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| bad(format!("the value of `{name}` is not UTF-8")))
            };
            let slot = match name {
                "token" => &mut uri.token,
                "object" => &mut uri.object,
                "serial" => &mut uri.serial,
                "manufacturer" => &mut uri.manufacturer,
                "model" => &mut uri.model,
                "id" => {
                    if uri.id.replace(bytes.clone()).is_some() {
                        return Err(bad("`id` is given twice".to_owned()));
                    }
                    continue;
                }
                "type" => {
                    if value != "private" {
                        return Err(bad(format!(
                            "type={value}: the CA key is a private key (type=private)"
                        )));
                    }
                    continue;
                }
                "pin-value" | "pin-source" => {
                    return Err(bad(format!(
                        "it holds `{name}`: the PIN never goes into the configuration; use pin_file \
                         or the PEP_PKCS11_PIN environment variable"
                    )));
                }
                // RFC 7512 attributes that select nothing pep needs to tell apart.
                "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-id"
                | "slot-manufacturer" => continue,
                other => return Err(bad(format!("it has an unknown attribute `{other}`"))),
            };
            if slot.replace(text_value()?).is_some() {
                return Err(bad(format!("`{name}` is given twice")));
            }
        }
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(bad(
                "it names no token (add token=LABEL, or serial=...)".to_owned()
            ));
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad(
                "it names no key (add object=LABEL, or id=...)".to_owned()
            ));
        }
        Ok(uri)
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the CA key is and how to log in.
pub struct Pkcs11Config {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The key.
    pub uri: Pkcs11Uri,
    /// The user PIN. Kept (zeroized on drop) to log in again after the token comes back.
    pub pin: Zeroizing<String>,
    /// At most this many sessions are opened (>= 1).
    pub sessions: usize,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("uri", &self.uri)
            .field("pin", &"<redacted>")
            .field("sessions", &self.sessions)
            .finish()
    }
}

/// An open module with the token found and logged in.
struct Live {
    /// Kept so the module stays initialised while sessions exist; dropping the last clone
    /// (the sessions hold clones) calls `C_Finalize`.
    _ctx: Pkcs11,
    slot: Slot,
    key: ObjectHandle,
    /// The first session, kept open for the login's lifetime (a login is per token and
    /// application, and ends with the last session).
    opened: usize,
}

struct State {
    live: Option<Live>,
    /// Sessions of the current `live`, not in use.
    idle: Vec<Session>,
    /// Sessions handed out (of any generation).
    busy: usize,
    /// Bumped whenever `live` is dropped: a session of an older generation is closed when it
    /// comes back.
    generation: u64,
    /// Why the token is unavailable (for the next attempts' errors).
    last_error: Option<String>,
    last_attempt: Option<Instant>,
}

/// The CA key in a token, with its pool of sessions. `Send + Sync`.
pub(crate) struct Pkcs11Key {
    module: PathBuf,
    uri: Pkcs11Uri,
    pin: Zeroizing<String>,
    max_sessions: usize,
    state: Mutex<State>,
    returned: Condvar,
    available: AtomicBool,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("module", &self.module)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// A session checked out of the pool.
struct Lease {
    session: Session,
    key: ObjectHandle,
    generation: u64,
}

impl Pkcs11Key {
    /// Opens the module and the token, logs in and finds the key; checks it is an EC P-256
    /// signing key. Errors name what failed (module, token, PIN, key).
    pub(crate) fn open(config: Pkcs11Config) -> Result<Self, CaError> {
        let key = Pkcs11Key {
            module: config.module,
            uri: config.uri,
            pin: config.pin,
            max_sessions: config.sessions.max(1),
            state: Mutex::new(State {
                live: None,
                idle: Vec::new(),
                busy: 0,
                generation: 0,
                last_error: None,
                last_attempt: None,
            }),
            returned: Condvar::new(),
            available: AtomicBool::new(false),
        };
        {
            let mut state = key.lock();
            let (live, session) = key.connect()?;
            state.live = Some(live);
            state.idle.push(session);
        }
        key.available.store(true, Ordering::Relaxed);
        Ok(key)
    }

    /// The key's URI.
    pub(crate) fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The module's path.
    pub(crate) fn module(&self) -> &Path {
        &self.module
    }

    /// False from a failure that looked like the token going away until it is re-opened.
    pub(crate) fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Signs `digest` (a SHA-256) with `CKM_ECDSA`; returns `r || s` (64 bytes).
    /// Signs `message` (ECDSA P-256 with SHA-256, hashed here) and returns the signature as
    /// X.509 wants it: the DER SEQUENCE of r and s (`CKM_ECDSA` answers r || s).
    pub(crate) fn sign_der(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        let raw = self.sign_digest(digest.as_ref())?;
        p256::ecdsa::Signature::from_slice(&raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| CaError::Crypto {
                operation: "reading the token's signature",
            })
    }

    pub(crate) fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, CaError> {
        let lease = self.checkout()?;
        match lease.session.sign(&Mechanism::Ecdsa, lease.key, digest) {
            Ok(signature) => {
                self.checkin(lease);
                Ok(signature)
            }
            Err(e) => {
                // Whatever the module says (device removed, session handle invalid, general
                // error...), the sessions are suspect: drop them all and re-open next time.
                let detail = format!("signing failed: {e}");
                self.invalidate(lease, detail.clone());
                Err(self.unavailable(detail))
            }
        }
    }

    /// While the token is known to be away, tries to re-open it (at most once per
    /// [`REOPEN_INTERVAL`]) without signing; returns whether it is available. A token believed
    /// present is not asked (a health check must not wait for a busy session): its absence is
    /// noticed by the next signature.
    pub(crate) fn probe(&self) -> bool {
        if self.is_available() {
            return true;
        }
        let Ok(lease) = self.checkout() else {
            return false;
        };
        match lease.session.get_session_info() {
            Ok(_) => {
                self.checkin(lease);
                true
            }
            Err(e) => {
                self.invalidate(lease, format!("the session failed: {e}"));
                false
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done worth refusing to sign for.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unavailable(&self, detail: String) -> CaError {
        CaError::TokenUnavailable {
            key: self.uri.describe(),
            detail,
        }
    }

    fn checkout(&self) -> Result<Lease, CaError> {
        let deadline = Instant::now() + SESSION_WAIT;
        let mut state = self.lock();
        loop {
            if state.live.is_none() {
                self.reopen(&mut state)?;
            }
            let generation = state.generation;
            if let Some(session) = state.idle.pop()
                && let Some(live) = &state.live
            {
                let key = live.key;
                state.busy += 1;
                return Ok(Lease {
                    session,
                    key,
                    generation,
                });
            }
            if let Some(live) = state.live.as_mut()
                && live.opened < self.max_sessions
            {
                let slot = live.slot;
                let key = live.key;
                match live._ctx.open_ro_session(slot) {
                    Ok(session) => {
                        live.opened += 1;
                        state.busy += 1;
                        return Ok(Lease {
                            session,
                            key,
                            generation,
                        });
                    }
                    Err(e) => {
                        let detail = format!("cannot open a session: {e}");
                        self.drop_live(&mut state, detail.clone());
                        return Err(self.unavailable(detail));
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.unavailable(format!(
                    "all {} sessions stayed busy for {} s",
                    self.max_sessions,
                    SESSION_WAIT.as_secs()
                )));
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn checkin(&self, lease: Lease) {
        let mut state = self.lock();
        state.busy = state.busy.saturating_sub(1);
        if lease.generation == state.generation && state.live.is_some() {
            state.idle.push(lease.session);
        } else {
            drop(lease.session);
        }
        drop(state);
        self.returned.notify_one();
    }

    fn invalidate(&self, lease: Lease, detail: String) {
        let mut state = self.lock();
        state.busy = state.busy.saturating_sub(1);
        drop(lease.session);
        if lease.generation == state.generation {
            self.drop_live(&mut state, detail);
        }
        drop(state);
        self.returned.notify_all();
    }

    fn drop_live(&self, state: &mut State, detail: String) {
        tracing::warn!(key = %self.uri.describe(), "PKCS#11 token unavailable: {detail}");
        state.idle.clear();
        state.live = None;
        state.generation += 1;
        state.last_error = Some(detail);
        state.last_attempt = Some(Instant::now());
        self.available.store(false, Ordering::Relaxed);
    }

    /// Tries to open the token again (at most once per [`REOPEN_INTERVAL`]).
    fn reopen(&self, state: &mut State) -> Result<(), CaError> {
        let last = state.last_error.clone().unwrap_or_default();
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < REOPEN_INTERVAL)
        {
            return Err(self.unavailable(last));
        }
        if state.busy > 0 {
            // A session of the old module instance is still signing: the module can only be
            // initialised again once the old instance is finalised (its last session closed).
            return Err(
                self.unavailable(format!("{last}; re-opening once in-flight signatures end"))
            );
        }
        state.last_attempt = Some(Instant::now());
        match self.connect() {
            Ok((live, session)) => {
                tracing::info!(key = %self.uri.describe(), "PKCS#11 token available again");
                state.live = Some(live);
                state.idle.push(session);
                state.last_error = None;
                self.available.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let detail = e.to_string();
                state.last_error = Some(detail.clone());
                Err(self.unavailable(detail))
            }
        }
    }

    /// Loads and initialises the module, finds the token, logs in, finds and checks the key.
    fn connect(&self) -> Result<(Live, Session), CaError> {
        let ctx = load_module(&self.module)?;
        let slot = find_token(&ctx, &self.uri)?;
        let session = logged_in_session(&ctx, slot, &self.uri, &self.pin, false)?;
        let key = find_private_key(&session, &self.uri)?;
        Ok((
            Live {
                _ctx: ctx,
                slot,
                key,
                opened: 1,
            },
            session,
        ))
    }
}

/// The slot whose token matches the URI.
fn find_token(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, CaError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|source| CaError::Pkcs11 {
            operation: "listing the slots",
            source,
        })?;
    let mut labels = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_owned();
        let matches = uri.token.as_deref().is_none_or(|t| t == label)
            && uri
                .serial
                .as_deref()
                .is_none_or(|s| s == info.serial_number().trim_end())
            && uri
                .manufacturer
                .as_deref()
                .is_none_or(|m| m == info.manufacturer_id().trim_end())
            && uri
                .model
                .as_deref()
                .is_none_or(|m| m == info.model().trim_end());
        if matches {
            return Ok(slot);
        }
        labels.push(format!("\"{label}\""));
    }
    Err(CaError::TokenNotFound {
        key: uri.describe(),
        present: if labels.is_empty() {
            "none".to_owned()
        } else {
            labels.join(", ")
        },
    })
}

fn login(session: &Session, uri: &Pkcs11Uri, pin: &str) -> Result<(), CaError> {
    // `AuthPin` is a `secrecy` string: zeroized when dropped, right after the login.
    let auth = AuthPin::from(pin.to_owned());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(CaError::PinIncorrect {
                token: uri.describe(),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(CaError::PinLocked {
            token: uri.describe(),
        }),
        Err(source) => Err(CaError::Pkcs11 {
            operation: "logging in",
            source,
        }),
    }
}

/// Finds the private key named by the URI and checks it is an EC P-256 key that may sign.
fn find_private_key(session: &Session, uri: &Pkcs11Uri) -> Result<ObjectHandle, CaError> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(|source| CaError::Pkcs11 {
            operation: "looking for the key",
            source,
        })?;
    let key = match found.as_slice() {
        [] => {
            return Err(CaError::KeyNotFound {
                key: uri.describe(),
            });
        }
        [key] => *key,
        more => {
            return Err(CaError::KeyAmbiguous {
                key: uri.describe(),
                count: more.len(),
            });
        }
    };
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Sign,
            ],
        )
        .map_err(|source| CaError::Pkcs11 {
            operation: "reading the key's attributes",
            source,
        })?;
    let not_p256 = |detail: String| CaError::TokenKeyNotP256 {
        key: uri.describe(),
        detail,
    };
    let mut ec = false;
    let mut p256 = false;
    let mut sign = false;
    for a in attributes {
        match a {
            Attribute::KeyType(t) => ec = t == KeyType::EC,
            Attribute::EcParams(p) => p256 = p == P256_EC_PARAMS,
            Attribute::Sign(s) => sign = s,
            _ => {}
        }
    }
    if !ec {
        return Err(not_p256("it is not an EC key".to_owned()));
    }
    if !p256 {
        return Err(not_p256("its curve is not P-256 (prime256v1)".to_owned()));
    }
    if !sign {
        return Err(not_p256("it may not sign (CKA_SIGN is false)".to_owned()));
    }
    Ok(key)
}

/// What [`generate_key`] made.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The public key, uncompressed SEC1 point (65 bytes).
    pub public_point: [u8; 65],
    /// The `CKA_ID` given to both halves.
    pub id: Vec<u8>,
}

/// A session on the token in `slot`, logged in as the user: read-only for signing, read-write
/// for generating a key.
fn logged_in_session(
    ctx: &Pkcs11,
    slot: Slot,
    uri: &Pkcs11Uri,
    pin: &str,
    read_write: bool,
) -> Result<Session, CaError> {
    let session = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|source| CaError::Pkcs11 {
        operation: if read_write {
            "opening a read-write session"
        } else {
            "opening a session"
        },
        source,
    })?;
    login(&session, uri, pin)?;
    Ok(session)
}

/// Loads the PKCS#11 module at `path` and initialises it (thread-safe, OS locking). A module
/// that this process already initialised (another CA or the key generator) is used as it is.
fn load_module(path: &Path) -> Result<Pkcs11, CaError> {
    let module_error = |e: CkError| CaError::Pkcs11Module {
        module: path.display().to_string(),
        detail: e.to_string(),
    };
    let ctx = Pkcs11::new(path).map_err(module_error)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(module_error(e)),
    }
}

/// Generates a P-256 key pair in the token labelled `token`, both halves labelled `label`,
/// the private key `CKA_SENSITIVE = true`, `CKA_EXTRACTABLE = false` (it never leaves the
/// token). Refuses when a key with that label exists already.
pub fn generate_key(
    module: &Path,
    token: &str,
    label: &str,
    pin: &str,
) -> Result<GeneratedKey, CaError> {
    let uri = Pkcs11Uri {
        text: String::new(),
        token: Some(token.to_owned()),
        object: Some(label.to_owned()),
        id: None,
        serial: None,
        manufacturer: None,
        model: None,
    };
    let ctx = load_module(module)?;
    let session = logged_in_session(&ctx, find_token(&ctx, &uri)?, &uri, pin, true)?;
    let existing = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|source| CaError::Pkcs11 {
            operation: "looking for existing keys",
            source,
        })?;
    if !existing.is_empty() {
        return Err(CaError::KeyExists {
            key: uri.describe(),
        });
    }
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let (public, _private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(|source| CaError::Pkcs11 {
            operation: "generating the key pair",
            source,
        })?;
    let point = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|source| CaError::Pkcs11 {
            operation: "reading the public key",
            source,
        })?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .and_then(|p| ec_point(&p))
        .ok_or(CaError::Crypto {
            operation: "reading the generated public key",
        })?;
    Ok(GeneratedKey {
        public_point: point,
        id: id.to_vec(),
    })
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (some modules give the bare point).
fn ec_point(value: &[u8]) -> Option<[u8; 65]> {
    match value {
        [0x04, 65, rest @ ..] if rest.len() == 65 => rest.try_into().ok(),
        bare if bare.len() == 65 => bare.try_into().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parses_token_object_and_id() {
        let uri: Pkcs11Uri = "pkcs11:token=pep%20factory;object=ca-key;id=%01%02;type=private"
            .parse()
            .unwrap();
        assert_eq!(uri.token.as_deref(), Some("pep factory"));
        assert_eq!(uri.object.as_deref(), Some("ca-key"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            uri.describe(),
            "token \"pep factory\", object \"ca-key\", id 0102"
        );
    }

    #[test]
    fn uri_refuses_pins_and_incomplete_names() {
        for (text, needle) in [
            ("pkcs11:token=t;object=k?pin-value=1234", "PIN"),
            ("pkcs11:token=t;object=k;pin-value=1234", "PIN"),
            ("pkcs11:object=k", "it names no token"),
            ("pkcs11:token=t", "names no key"),
            ("pkcs11:token=t;object=k;type=public", "type=public"),
            (
                "pkcs11:token=t;object=k;colour=red",
                "unknown attribute `colour`",
            ),
            ("pkcs11:token=%zz;object=k", "percent-encoding"),
            ("/etc/pep/ca.key", "does not start with"),
        ] {
            let e = text.parse::<Pkcs11Uri>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains("1234"), "{e}");
        }
    }

    #[test]
    fn ec_point_accepts_wrapped_and_bare() {
        let mut wrapped = vec![0x04, 65, 0x04];
        wrapped.extend([7u8; 64]);
        assert_eq!(ec_point(&wrapped).unwrap()[1], 7);
        assert_eq!(ec_point(&wrapped[2..]).unwrap()[0], 4);
        assert!(ec_point(&[0x04, 3, 1, 2, 3]).is_none());
    }
}
