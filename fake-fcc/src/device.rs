//! The pure device pipeline: one CBOR bundle in, one [`Outcome`] out (docs/protocol.md §2.1).
//!
//! Every rule here follows the genuine FCC's processing order, because the order decides which
//! error wins, which items stay stored, and whether `SID` is echoed.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::time::Instant;

use fcc_proto::frame::ResponseFrame;
use fcc_proto::response::{CsrResponse, Response, SUCCESS_MESSAGE};
use fcc_proto::status::{FccStatus, GENERAL_ERROR_PREFIX, KcmStatus, WireStatus};

use crate::cbor::{self, Item, c_str};
use crate::csr::{self, CsrParams};
use crate::storage::{ItemKind, Storage, StorageWrite};
use crate::x509;

/// Response buffer of a message without (started) CSR processing.
pub const MAX_RESPONSE_WITHOUT_CSRS: usize = 512;
/// Response buffer once CSR processing started (512 × 5).
pub const MAX_RESPONSE_WITH_CSRS: usize = 512 * 5;
/// `KCM_MAX_FILENAME_SIZE`: the longest item name.
pub const MAX_NAME_LEN: usize = 100;
pub use fcc_proto::bundle::keys::{
    ENTROPY_LEN as ENTROPY_SIZE, MAX_CHAIN_LEN, MAX_CSR_REQUESTS,
    MAX_TOP_LEVEL_PAIRS as MAX_KEYS_IN_MAP, ROT_LEN as ROT_SIZE, SCHEME_VERSION,
};

/// Field and group names: the bundle keys come from `fcc_proto::bundle::keys`; the few the tool
/// never sends are spelled here exactly as the genuine `fcc_bundle_fields.h` has them.
pub(crate) mod field {
    pub(crate) use fcc_proto::bundle::keys::{
        CERTIFICATE_CHAINS_KEY as CERTIFICATE_CHAINS, CERTIFICATES_KEY as CERTIFICATES,
        CONFIG_PARAMS_KEY as CONFIG_PARAMS, CSR_REQUESTS_KEY as CSR_REQUESTS,
        DATA_ARRAY_KEY as DATA_ARRAY, DATA_KEY as DATA, DER_FORMAT as DER, DISABLE_KEY as DISABLE,
        ECC_PRIVATE_TYPE as ECC_PRIVATE, ECC_PUBLIC_TYPE as ECC_PUBLIC, ENTROPY_KEY as ENTROPY,
        EXT_KEY_USAGE_KEY as CSR_EKU, EXTENSIONS_KEY as CSR_EXTENSIONS, FORMAT_KEY as FORMAT,
        KEEP_ALIVE_KEY as KEEP_ALIVE, KEY_USAGE_KEY as CSR_KU, KEYS_KEY as KEYS, MD_KEY as CSR_MD,
        NAME_KEY as NAME, PRIVATE_KEY_NAME_KEY as PRIVATE_KEY_NAME, ROT_KEY as ROT,
        SCHEME_VERSION_KEY as SCHEME_VERSION, SID_KEY as SID,
        STORAGE_MEDIUM_KEY as CSR_STORAGE_MEDIUM, SUBJECT_KEY as CSR_SUBJECT, TYPE_KEY as TYPE,
        VERIFY_KEY as VERIFY,
    };
    /// Storage-medium map keys and values of a CSR request.
    pub(crate) const SM_PRIVATE: &str = "Prv";
    pub(crate) const SM_PUBLIC: &str = "Pub";
    pub(crate) const SM_SECURE_ELEMENT: &str = "SE";
    pub(crate) const SM_DEVICE: &str = "Device";
    /// Item names of the write-once SOTP values, used in their error messages.
    pub(crate) const RBP_ENTROPY: &str = "entropy";
    pub(crate) const RBP_ROT: &str = "rot";
    pub(crate) const RBP_FACTORY_DONE: &str = "factory_done";
}

/// How a [`Device`] behaves.
#[derive(Debug, Clone, Default)]
pub struct DeviceOptions {
    /// Reject what the genuine FCC tolerates (see the crate docs).
    pub strict: bool,
    /// List in each [`Outcome::writes`] what the message changes in the item files of a storage
    /// directory, for the caller to apply ([`DiskStore::apply`](crate::DiskStore::apply)).
    /// `false` (memory only): the list stays empty and costs nothing.
    pub storage_writes: bool,
}

/// The result of handling one valid frame body.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What goes on the wire: a response body (wire status 0) or the 12-byte status-9 frame.
    pub reply: ResponseFrame,
    /// The response sent (`None` when the reply is wire status 9).
    pub response: Option<Response>,
    /// Whether the session is finished after this message (the process would exit).
    pub session_finished: bool,
    /// The status the bundle handler returned: the response's `ReturnStatus`, or
    /// `BundleResponseError` when the response could not be built (the 512-byte overflow).
    pub status: FccStatus,
    /// Whether this message wiped the storage (the first valid frame of the session).
    pub storage_erased: bool,
    /// The changes to the item files, in order, when [`DeviceOptions::storage_writes`] is set
    /// (else empty). The device does no I/O: whoever drives it applies them before sending the
    /// reply, as the genuine device has written its storage by then.
    pub writes: Vec<StorageWrite>,
}

impl Outcome {
    /// Whether the message succeeded at wire level (wire status 0).
    pub fn wire_success(&self) -> bool {
        matches!(self.reply, ResponseFrame::Body(_))
    }
}

/// Write-once values the genuine device keeps in SOTP (wiped with the storage).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sotp {
    pub entropy: bool,
    pub rot: bool,
    pub factory_done: bool,
    pub time_srv_id: Option<Vec<u8>>,
}

/// The error text and warnings recorded for the current message (`fcc_output_info_handler`).
#[derive(Debug, Clone, Default)]
pub(crate) struct OutputInfo {
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

impl OutputInfo {
    pub(crate) fn clear(&mut self) {
        self.error = None;
        self.warnings.clear();
    }
}

/// Config `Data` as `fcc_bundle_get_variant` reads it.
enum Variant<'a> {
    /// No `Data` field: a NULL pointer.
    Missing,
    /// A text or byte string (first chunk) and where it starts in the whole body.
    Bytes(&'a [u8], usize),
    /// An integer, stored as 8 host-order (little-endian) bytes.
    Int(u64),
}

/// Data handed to the store: a NULL pointer with a size, or bytes.
enum Data<'a> {
    Null(usize),
    Bytes(&'a [u8]),
}

/// One message's parse state (what the genuine handler keeps in locals).
struct Message<'a> {
    sid: Option<&'a [u8]>,
    verify: bool,
    disable: bool,
    keep_alive: bool,
    csr_requests: Option<&'a Item<'a>>,
    csrs: Vec<CsrResponse>,
    buffer: usize,
    /// The factory is disabled: the handler builds no response at all.
    no_response: bool,
}

/// A simulated FCC device: the storage of one factory session and the bundle handler.
pub struct Device {
    pub(crate) opts: DeviceOptions,
    pub(crate) storage: Storage,
    /// The item-file changes of the current message (only with `opts.storage_writes`).
    writes: Vec<StorageWrite>,
    wiped: bool,
    session_finished: bool,
    pub(crate) sotp: Sotp,
    clock: Option<(u64, Instant)>,
    pub(crate) info: OutputInfo,
    /// Certificates already parsed and key pairs already checked.
    pub(crate) memo: x509::CertMemo,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("strict", &self.opts.strict)
            .field("storage", &self.storage)
            .field("session_finished", &self.session_finished)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device with empty storage, in the initial "session finished" state.
    pub fn new(opts: DeviceOptions) -> Device {
        Device {
            opts,
            storage: Storage::default(),
            writes: Vec::new(),
            wiped: false,
            session_finished: true,
            sotp: Sotp::default(),
            clock: None,
            info: OutputInfo::default(),
            memo: x509::CertMemo::default(),
        }
    }

    /// The items stored so far.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// `fcc_is_session_finished()`: true initially and after a message without `KpAlvSess: 1`
    /// that got through the group loop.
    pub fn session_finished(&self) -> bool {
        self.session_finished
    }

    /// The device time in seconds since the epoch, `None` ("0") when never set.
    pub fn device_time(&self) -> Option<u64> {
        self.clock
            .map(|(base, at)| base.saturating_add(at.elapsed().as_secs()))
    }

    /// Handles one frame body that passed the hash check (`fcc_bundle_handler` plus the example's
    /// wire-status mapping). The first call wipes the storage.
    pub fn handle(&mut self, body: &[u8]) -> Outcome {
        let storage_erased = !self.wiped;
        if storage_erased {
            self.wipe();
        }
        self.info.clear();
        let mut msg = Message {
            sid: None,
            verify: true,
            disable: false,
            keep_alive: false,
            csr_requests: None,
            csrs: Vec::new(),
            buffer: MAX_RESPONSE_WITHOUT_CSRS,
            no_response: false,
        };
        let parsed = cbor::parse(body);
        let status = match &parsed {
            Ok(top) => self.process(body, top, &mut msg),
            Err(e) => {
                tracing::debug!(error = %e, "bundle is not well-formed CBOR");
                FccStatus::BundleError
            }
        };
        self.finish(status, msg, storage_erased)
    }

    fn wipe(&mut self) {
        self.wiped = true;
        self.storage = Storage::default();
        self.memo.forget_pairs();
        self.sotp = Sotp::default();
        self.clock = None;
        if self.opts.storage_writes {
            self.writes.push(StorageWrite::Wipe);
        }
    }

    fn finish(&mut self, status: FccStatus, msg: Message<'_>, storage_erased: bool) -> Outcome {
        if msg.no_response {
            return Outcome {
                reply: ResponseFrame::Status(WireStatus::FailedToProcessData),
                response: None,
                session_finished: self.session_finished,
                status,
                storage_erased,
                writes: std::mem::take(&mut self.writes),
            };
        }
        let info_message = if status == FccStatus::Success {
            SUCCESS_MESSAGE.to_owned()
        } else {
            self.info
                .error
                .clone()
                .unwrap_or_else(|| GENERAL_ERROR_PREFIX.to_owned())
        };
        let response = Response {
            csrs: if status == FccStatus::Success {
                msg.csrs
            } else {
                Vec::new()
            },
            scheme_version: SCHEME_VERSION.to_owned(),
            sid: msg.sid.map(|s| String::from_utf8_lossy(s).into_owned()),
            return_status: status,
            info_message,
            warnings: self.info.warnings.clone(),
        };
        let encoded = response.encode();
        let (reply, response, status) =
            if status == FccStatus::BundleResponseError || encoded.len() > msg.buffer {
                tracing::debug!(
                    len = encoded.len(),
                    limit = msg.buffer,
                    "response does not fit the device's buffer"
                );
                (
                    ResponseFrame::Status(WireStatus::FailedToProcessData),
                    None,
                    FccStatus::BundleResponseError,
                )
            } else {
                (ResponseFrame::Body(encoded.into()), Some(response), status)
            };
        Outcome {
            reply,
            response,
            session_finished: self.session_finished,
            status,
            storage_erased,
            writes: std::mem::take(&mut self.writes),
        }
    }

    // ----- output info -------------------------------------------------------------------

    /// `fcc_store_error_info`: the first error of a message wins; a present but empty item name
    /// is rejected by the genuine code, so nothing is recorded then.
    pub(crate) fn record_error(&mut self, name: Option<&[u8]>, status: FccStatus) {
        self.record_text(name, status.info_prefix());
    }

    /// `fcc_bundle_store_kcm_error_info`.
    pub(crate) fn record_kcm_error(&mut self, name: Option<&[u8]>, kcm: KcmStatus) {
        self.record_text(name, kcm.info_prefix());
    }

    fn record_text(&mut self, name: Option<&[u8]>, prefix: &str) {
        if self.info.error.is_some() || name.is_some_and(<[u8]>::is_empty) {
            return;
        }
        let mut text = prefix.as_bytes().to_vec();
        if let Some(name) = name {
            text.extend_from_slice(name);
        }
        // The genuine text is a C string: it ends at the first NUL.
        self.info.error = Some(String::from_utf8_lossy(c_str(&text)).into_owned());
    }

    /// `fcc_store_warning_info`.
    pub(crate) fn warn(&mut self, prefix: &str, name: &str) {
        self.info.warnings.push(format!("{prefix}{name}"));
    }

    fn key_is(&self, known: &str, received: &[u8]) -> bool {
        cbor::key_matches(known, received, self.opts.strict)
    }

    // ----- the handler ------------------------------------------------------------------

    fn process<'a>(
        &mut self,
        body: &'a [u8],
        top: &'a Item<'a>,
        msg: &mut Message<'a>,
    ) -> FccStatus {
        let Item::Map { pairs, definite } = top else {
            return FccStatus::BundleError;
        };
        if !definite || pairs.len() > MAX_KEYS_IN_MAP {
            return FccStatus::BundleError;
        }
        if !self.scheme_version_ok(pairs) {
            return FccStatus::BundleInvalidScheme;
        }
        for (key, rbp) in [
            (field::ENTROPY, field::RBP_ENTROPY),
            (field::ROT, field::RBP_ROT),
        ] {
            let status = self.process_rbp(pairs, key, rbp);
            if status != FccStatus::Success {
                return status;
            }
        }

        // The factory-disabled flag (set by an earlier `Disable: 1`): no response at all.
        if self.sotp.factory_done {
            msg.no_response = true;
            return FccStatus::FactoryDisabledError;
        }

        for (key, value) in pairs {
            let Some(key) = key.text() else {
                return FccStatus::BundleError;
            };
            let status = self.process_group(body, key, value, msg);
            if status != FccStatus::Success {
                return status;
            }
        }

        self.session_finished = !msg.keep_alive;
        if msg.disable && msg.keep_alive {
            return FccStatus::BundleInvalidKeepAliveSessionStatus;
        }
        if let Some(requests) = msg.csr_requests {
            if msg.sid.is_none() || msg.verify || msg.disable {
                return FccStatus::BundleError;
            }
            msg.buffer = MAX_RESPONSE_WITH_CSRS;
            match self.process_csr_requests(requests) {
                Ok(csrs) => msg.csrs = csrs,
                Err(status) => return status,
            }
        }
        if self.session_finished {
            let status = self.trust_ca_step();
            if status != FccStatus::Success && status != FccStatus::CaError {
                return status;
            }
            if status == FccStatus::CaError && !msg.verify && !msg.disable {
                return status;
            }
        }
        if msg.verify {
            let status = self.verify();
            if status != FccStatus::Success {
                return status;
            }
        }
        if msg.disable {
            if self.sotp.factory_done {
                self.record_error(
                    Some(field::RBP_FACTORY_DONE.as_bytes()),
                    FccStatus::FactoryDisabledError,
                );
                return FccStatus::FactoryDisabledError;
            }
            self.sotp.factory_done = true;
        }
        FccStatus::Success
    }

    /// `check_scheme_version`: exact key match (tags on keys skipped, all chunks compared); the
    /// value must be an untagged text or byte string whose first chunk is "0.0.1".
    fn scheme_version_ok(&self, pairs: &[(Item<'_>, Item<'_>)]) -> bool {
        match find_value(pairs, field::SCHEME_VERSION) {
            Some(Item::Text(s)) | Some(Item::Bytes(s)) => s.first() == SCHEME_VERSION.as_bytes(),
            _ => false,
        }
    }

    /// `fcc_bundle_process_rbp_buffer` for Entropy and ROT (exact key match).
    fn process_rbp(
        &mut self,
        pairs: &[(Item<'_>, Item<'_>)],
        key: &str,
        rbp_name: &str,
    ) -> FccStatus {
        let Some(value) = find_value(pairs, key) else {
            return FccStatus::Success;
        };
        let status = match value.bytes() {
            None => FccStatus::BundleError,
            Some(buf) => {
                // Both are write-once SOTP items of a fixed size; only the size, the flag and the
                // "already written" status differ.
                let (size, written, taken) = if key == field::ENTROPY {
                    (
                        ENTROPY_SIZE,
                        &mut self.sotp.entropy,
                        FccStatus::EntropyError,
                    )
                } else {
                    (ROT_SIZE, &mut self.sotp.rot, FccStatus::RotError)
                };
                if buf.len() != size {
                    FccStatus::InvalidParameter
                } else if *written {
                    taken
                } else {
                    *written = true;
                    FccStatus::Success
                }
            }
        };
        if status != FccStatus::Success {
            self.record_error(Some(rbp_name.as_bytes()), status);
        }
        status
    }

    fn process_group<'a>(
        &mut self,
        body: &'a [u8],
        key: &[u8],
        value: &'a Item<'a>,
        msg: &mut Message<'a>,
    ) -> FccStatus {
        if self.key_is(field::SCHEME_VERSION, key)
            || self.key_is(field::ENTROPY, key)
            || self.key_is(field::ROT, key)
        {
            FccStatus::Success
        } else if self.key_is(field::KEYS, key) {
            self.for_each_map(value, |dev, map| dev.process_key(map))
        } else if self.key_is(field::CERTIFICATES, key) {
            self.for_each_map(value, |dev, map| dev.process_certificate(map, false))
        } else if self.key_is(field::CERTIFICATE_CHAINS, key) {
            self.for_each_map(value, |dev, map| dev.process_certificate(map, true))
        } else if self.key_is(field::CONFIG_PARAMS, key) {
            self.for_each_map(value, |dev, map| dev.process_config_param(body, map))
        } else if self.key_is(field::VERIFY, key) {
            self.flag(
                value,
                field::VERIFY,
                &mut msg.verify,
                FccStatus::BundleError,
            )
        } else if self.key_is(field::DISABLE, key) {
            self.flag(
                value,
                field::DISABLE,
                &mut msg.disable,
                FccStatus::BundleError,
            )
        } else if self.key_is(field::KEEP_ALIVE, key) {
            self.flag(
                value,
                field::KEEP_ALIVE,
                &mut msg.keep_alive,
                FccStatus::BundleInvalidKeepAliveSessionStatus,
            )
        } else if self.key_is(field::SID, key) {
            match value.text() {
                Some(sid) => {
                    msg.sid = Some(sid);
                    FccStatus::Success
                }
                None => {
                    self.record_error(Some(field::SID.as_bytes()), FccStatus::BundleError);
                    FccStatus::BundleError
                }
            }
        } else if self.key_is(field::CSR_REQUESTS, key) {
            msg.csr_requests = Some(value);
            FccStatus::Success
        } else {
            FccStatus::BundleInvalidGroup
        }
    }

    /// `fcc_bundle_get_bool`: an untagged integer whose C `int` value is 0 or 1.
    fn flag(
        &mut self,
        value: &Item<'_>,
        name: &str,
        out: &mut bool,
        failure: FccStatus,
    ) -> FccStatus {
        match value.c_int() {
            Some(v @ (0 | 1)) => {
                *out = v == 1;
                FccStatus::Success
            }
            _ => {
                self.record_error(Some(name.as_bytes()), FccStatus::BundleError);
                failure
            }
        }
    }

    /// `fcc_bundle_process_maps_in_arr`: an array (definite or not) of maps, processed in order;
    /// the first failure stops the group.
    fn for_each_map<'a>(
        &mut self,
        value: &'a Item<'a>,
        mut f: impl FnMut(&mut Device, &'a [(Item<'a>, Item<'a>)]) -> Result<(), FccStatus>,
    ) -> FccStatus {
        let Item::Array { items, .. } = value else {
            return FccStatus::BundleError;
        };
        for item in items {
            let Item::Map { pairs, .. } = item else {
                return FccStatus::BundleError;
            };
            if let Err(status) = f(self, pairs) {
                return status;
            }
        }
        FccStatus::Success
    }

    // ----- Keys -------------------------------------------------------------------------

    fn process_key(&mut self, map: &[(Item<'_>, Item<'_>)]) -> Result<(), FccStatus> {
        let mut key_type = None;
        let mut format = None;
        let mut data = None;
        let name = walk_named(map, self.opts.strict, |k, v, _| {
            let slot = if self.key_is(field::TYPE, k) {
                &mut key_type
            } else if self.key_is(field::FORMAT, k) {
                &mut format
            } else if self.key_is(field::DATA, k) {
                data = Some(v.bytes().ok_or(FccStatus::BundleError)?);
                return Ok(());
            } else {
                return Err(FccStatus::NotSupported);
            };
            *slot = Some(v.text().ok_or(FccStatus::BundleError)?);
            Ok(())
        })?;
        let key_type = key_type.ok_or(FccStatus::BundleError)?;
        let kind = if self.key_is(field::ECC_PRIVATE, key_type) {
            ItemKind::PrivateKey
        } else if self.key_is(field::ECC_PUBLIC, key_type) {
            ItemKind::PublicKey
        } else {
            return Err(FccStatus::NotSupported);
        };
        if !self.format_ok(format) {
            return Err(FccStatus::NotSupported);
        }
        let data = match data {
            Some(b) => Data::Bytes(b),
            None => Data::Null(0),
        };
        self.store_item(kind, name, data)
            .map_err(|kcm| self.kcm_failure(name, kcm))
    }

    /// `strncmp("der", format, len) == 0`: an absent Format compares zero bytes and passes.
    fn format_ok(&self, format: Option<&[u8]>) -> bool {
        match format {
            None => true,
            Some(f) => self.key_is(field::DER, f),
        }
    }

    // ----- Certificates and CertificateChains --------------------------------------------

    fn process_certificate(
        &mut self,
        map: &[(Item<'_>, Item<'_>)],
        is_chain: bool,
    ) -> Result<(), FccStatus> {
        let mut prkn: Option<&[u8]> = None;
        let mut format: Option<&[u8]> = None;
        let mut ders: Vec<&[u8]> = Vec::new();
        let mut chain_len = 0usize;
        let name = walk_named(map, self.opts.strict, |k, v, name| {
            if self.key_is(field::PRIVATE_KEY_NAME, k) {
                prkn = Some(self.after_name(name, v.text())?);
            } else if self.key_is(field::FORMAT, k) {
                format = Some(self.after_name(name, v.text())?);
            } else if !is_chain && self.key_is(field::DATA, k) {
                let b = self.after_name(name, v.bytes())?;
                match ders.first_mut() {
                    Some(first) => *first = b,
                    None => ders.push(b),
                }
                chain_len = 1;
            } else if is_chain && self.key_is(field::DATA_ARRAY, k) {
                let Item::Array { items, definite } = v else {
                    return Err(FccStatus::BundleError);
                };
                // An indefinite array has no length: the chain length keeps its previous value.
                if *definite {
                    chain_len = items.len();
                }
                if chain_len == 0 || chain_len > MAX_CHAIN_LEN {
                    return Err(FccStatus::BundleError);
                }
                for element in items {
                    let b = self.after_name(name, element.bytes())?;
                    // The genuine code keeps appending across repeated DataArray fields; past five
                    // elements it would overrun its array, which is refused here instead.
                    if ders.len() >= MAX_CHAIN_LEN {
                        return Err(FccStatus::BundleError);
                    }
                    ders.push(b);
                }
                chain_len = ders.len();
            } else {
                return Err(FccStatus::NotSupported);
            }
            Ok(())
        })?;
        if chain_len == 0 {
            return Err(FccStatus::BundleError);
        }
        if !self.format_ok(format) {
            return Err(FccStatus::NotSupported);
        }
        let leaf: &[u8] = ders.first().copied().unwrap_or(&[]);

        if let Some(prkn) = prkn
            && let Err(kcm) = self.verify_certificate_with_private_key(leaf, prkn)
        {
            let failed = if kcm == KcmStatus::ItemNotFound {
                prkn
            } else {
                name
            };
            self.record_kcm_error(Some(failed), kcm);
            return Err(FccStatus::CertificatePublicKeyCorrelationError);
        }

        let result = if is_chain {
            self.store_chain(name, ders.get(..chain_len).unwrap_or(&ders))
        } else {
            self.store_item(ItemKind::Certificate, name, Data::Bytes(leaf))
                .map_err(|kcm| (kcm, kcm.fcc_status()))
        };
        result.map_err(|(kcm, status)| {
            self.record_kcm_error(Some(name), kcm);
            status
        })
    }

    /// A field of the wrong type once `Name` may have been parsed: 20 `General error:<Name>`.
    fn field_error(&mut self, name: Option<&[u8]>) -> FccStatus {
        if let Some(name) = name {
            self.record_error(Some(name), FccStatus::BundleError);
        }
        FccStatus::BundleError
    }

    /// A kcm failure storing item `name`: recorded (`<prefix><name>`), answered with its FCC status.
    fn kcm_failure(&mut self, name: &[u8], kcm: KcmStatus) -> FccStatus {
        self.record_kcm_error(Some(name), kcm);
        kcm.fcc_status()
    }

    /// A field read after `Name` may have been: its value, or [`Device::field_error`] when it has
    /// the wrong type (`value` is `None`).
    fn after_name<T>(&mut self, name: Option<&[u8]>, value: Option<T>) -> Result<T, FccStatus> {
        value.ok_or_else(|| self.field_error(name))
    }

    /// `kcm_certificate_verify_with_private_key`.
    fn verify_certificate_with_private_key(
        &self,
        cert: &[u8],
        key_name: &[u8],
    ) -> Result<(), KcmStatus> {
        if cert.is_empty() || key_name.is_empty() {
            return Err(KcmStatus::InvalidParameter);
        }
        let parsed = self.memo.parse(cert)?;
        let key_name = check_name(key_name)?;
        let key = self
            .storage
            .private_keys
            .get(&key_name)
            .ok_or(KcmStatus::ItemNotFound)?;
        let key = x509::parse_private_key(key)?;
        if !self.memo.pair_matches(&key_name, &key, cert, &parsed) {
            return Err(KcmStatus::SelfGeneratedCertificateVerificationError);
        }
        Ok(())
    }

    /// `kcm_cert_chain_create` / `_add_next` / `_close`: a failure in the create step is always
    /// FCC 15; a failed chain is deleted again (the genuine close of an incomplete chain).
    fn store_chain(&mut self, name: &[u8], ders: &[&[u8]]) -> Result<(), (KcmStatus, FccStatus)> {
        let create = |kcm: KcmStatus| (kcm, FccStatus::KcmError);
        if name.is_empty() {
            return Err(create(KcmStatus::InvalidParameter));
        }
        if ders.is_empty() || ders.len() > MAX_CHAIN_LEN {
            return Err(create(KcmStatus::InvalidNumOfCertInChain));
        }
        let name = check_name(name).map_err(create)?;
        if self.storage.certificates.contains_key(&name) {
            return Err(create(KcmStatus::FileExist));
        }
        // The chain's first file is created here, before any certificate is checked.
        self.created_item_file();
        let mut previous: Option<std::sync::Arc<x509::ParsedCert>> = None;
        for der in ders {
            let step = |kcm: KcmStatus| (kcm, kcm.fcc_status());
            if der.is_empty() {
                return Err(step(KcmStatus::InvalidParameter));
            }
            let cert = self.memo.parse(der).map_err(step)?;
            if let Some(child) = &previous
                && !child.is_signed_by(&cert.public_key)
            {
                return Err(step(KcmStatus::CertificateChainVerificationFailed));
            }
            previous = Some(cert);
        }
        let chain: Vec<Vec<u8>> = ders.iter().map(|d| d.to_vec()).collect();
        for (i, der) in chain.iter().enumerate() {
            self.persist(ItemKind::Certificate, &name, i, der);
        }
        self.storage.certificates.insert(name, chain);
        Ok(())
    }

    // ----- ConfigParams ------------------------------------------------------------------

    fn process_config_param(
        &mut self,
        body: &[u8],
        map: &[(Item<'_>, Item<'_>)],
    ) -> Result<(), FccStatus> {
        let mut data = Variant::Missing;
        let name = walk_named(map, self.opts.strict, |k, v, name| {
            if !self.key_is(field::DATA, k) {
                return Err(FccStatus::NotSupported);
            }
            data = self.after_name(name, variant(v))?;
            Ok(())
        })?;

        if self.key_is(fcc_proto::names::CURRENT_TIME, name) {
            // `pal_osSetTime`: 0 resets the clock to "not set"; other values must be at least
            // 2017-01-01 10:00. Only an integer Data sets the value; anything else leaves it
            // uninitialised, which the genuine device rejected (1) when tried with text.
            return match data {
                Variant::Int(0) => {
                    self.clock = None;
                    Ok(())
                }
                Variant::Int(time) if time >= fcc_proto::names::MIN_CURRENT_TIME => {
                    self.clock = Some((time, Instant::now()));
                    Ok(())
                }
                _ => Err(FccStatus::Error),
            };
        }

        let four_bytes = fcc_proto::names::FOUR_BYTE_UINT_PARAMS
            .iter()
            .any(|n| self.key_is(n, name));
        let int_bytes;
        let over_read;
        let stored: Data<'_> = match (&data, four_bytes) {
            (Variant::Missing, true) => Data::Null(4),
            (Variant::Missing, false) => Data::Null(0),
            (Variant::Int(v), true) => {
                int_bytes = v.to_le_bytes();
                Data::Bytes(&int_bytes[..4])
            }
            (Variant::Int(v), false) => {
                int_bytes = v.to_le_bytes();
                Data::Bytes(&int_bytes[..])
            }
            (Variant::Bytes(b, _), true) if b.len() >= 4 => Data::Bytes(b.split_at(4).0),
            (Variant::Bytes(_, offset), true) => {
                if self.opts.strict {
                    self.record_error(Some(name), FccStatus::BundleError);
                    return Err(FccStatus::BundleError);
                }
                // The genuine code reads 4 bytes from where the short string starts: the
                // following bytes of the message (zeros past its end).
                over_read = (0..4)
                    .map(|i| body.get(offset + i).copied().unwrap_or(0))
                    .collect::<Vec<u8>>();
                Data::Bytes(&over_read[..])
            }
            (Variant::Bytes(b, _), false) => Data::Bytes(b),
        };
        self.store_item(ItemKind::ConfigParam, name, stored)
            .map_err(|kcm| self.kcm_failure(name, kcm))
    }

    // ----- the key/config manager --------------------------------------------------------

    /// `kcm_item_store`: data checks, content check, then the name and the "already exists"
    /// check of the storage layer.
    fn store_item(&mut self, kind: ItemKind, name: &[u8], data: Data<'_>) -> Result<(), KcmStatus> {
        let bytes = match data {
            Data::Null(size) if size > 0 => return Err(KcmStatus::InvalidParameter),
            Data::Null(_) => &[][..],
            Data::Bytes(b) => b,
        };
        if kind != ItemKind::ConfigParam && bytes.is_empty() {
            return Err(KcmStatus::ItemIsEmpty);
        }
        match kind {
            ItemKind::PrivateKey => {
                x509::parse_private_key(bytes)?;
            }
            ItemKind::PublicKey => {
                x509::parse_public_key(bytes)?;
            }
            ItemKind::Certificate => {
                self.memo.parse(bytes)?;
            }
            ItemKind::ConfigParam => {}
        }
        let name = check_name(name)?;
        if self.storage.contains(kind, &name) {
            return Err(KcmStatus::FileExist);
        }
        self.insert(kind, name, bytes.to_vec());
        Ok(())
    }

    /// Stores an item that passed all checks (memory, and the file write if listed).
    pub(crate) fn insert(&mut self, kind: ItemKind, name: String, bytes: Vec<u8>) {
        self.created_item_file();
        self.persist(kind, &name, 0, &bytes);
        if kind == ItemKind::PrivateKey {
            self.memo.forget_pairs();
        }
        match kind {
            ItemKind::PrivateKey => self.storage.private_keys.insert(name, bytes),
            ItemKind::PublicKey => self.storage.public_keys.insert(name, bytes),
            ItemKind::ConfigParam => self.storage.config_params.insert(name, bytes),
            ItemKind::Certificate => self
                .storage
                .certificates
                .insert(name, vec![bytes])
                .map(|mut v| v.remove(0)),
        };
    }

    /// Creating an item file needs the storage keys derived from the root of trust; without an
    /// injected `ROT` the genuine PAL generates one on the fly at that moment, so a `ROT` sent in
    /// a later message of the session is refused (7).
    fn created_item_file(&mut self) {
        self.sotp.rot = true;
    }

    /// Removes an item (a CSR key whose CSR failed).
    pub(crate) fn remove(&mut self, kind: ItemKind, name: &str) {
        if kind == ItemKind::PrivateKey {
            self.memo.forget_pairs();
        }
        match kind {
            ItemKind::PrivateKey => drop(self.storage.private_keys.remove(name)),
            ItemKind::PublicKey => drop(self.storage.public_keys.remove(name)),
            ItemKind::ConfigParam => drop(self.storage.config_params.remove(name)),
            ItemKind::Certificate => drop(self.storage.certificates.remove(name)),
        }
        self.unpersist(kind, name, 0);
    }

    /// Lists the file write of an item (chain element `index`) when writes are listed.
    fn persist(&mut self, kind: ItemKind, name: &str, index: usize, bytes: &[u8]) {
        if self.opts.storage_writes {
            self.writes.push(StorageWrite::Put {
                kind,
                name: name.to_owned(),
                index,
                data: zeroize::Zeroizing::new(bytes.to_vec()),
            });
        }
    }

    fn unpersist(&mut self, kind: ItemKind, name: &str, index: usize) {
        if self.opts.storage_writes {
            self.writes.push(StorageWrite::Remove {
                kind,
                name: name.to_owned(),
                index,
            });
        }
    }

    // ----- CsrReqs ----------------------------------------------------------------------

    /// `fcc_bundle_process_csr_reqs`.
    fn process_csr_requests(&mut self, value: &Item<'_>) -> Result<Vec<CsrResponse>, FccStatus> {
        let result = self.csr_requests_inner(value);
        if let Err(status) = result {
            // Recorded without an item name; for 36 the "prefix" is the complete message.
            self.record_error(None, status);
        }
        result
    }

    fn csr_requests_inner(&mut self, value: &Item<'_>) -> Result<Vec<CsrResponse>, FccStatus> {
        let Item::Array { items, definite } = value else {
            return Err(FccStatus::BundleError);
        };
        if !definite {
            return Err(FccStatus::BundleResponseError);
        }
        if items.len() > MAX_CSR_REQUESTS {
            return Err(FccStatus::TooManyCsrRequests);
        }
        let mut csrs = Vec::with_capacity(items.len());
        for item in items {
            let Item::Map { pairs, .. } = item else {
                return Err(FccStatus::BundleError);
            };
            csrs.push(self.process_csr_request(pairs)?);
        }
        Ok(csrs)
    }

    fn process_csr_request(
        &mut self,
        map: &[(Item<'_>, Item<'_>)],
    ) -> Result<CsrResponse, FccStatus> {
        let mut key_name: Option<&[u8]> = None;
        let mut subject: Option<&[u8]> = None;
        let mut params = CsrParams::default();
        let mut gen_public = false;
        walk_fields(map, |k, v| {
            if self.key_is(field::PRIVATE_KEY_NAME, k) {
                key_name = Some(v.text().ok_or(FccStatus::BundleError)?);
            } else if self.key_is(field::CSR_EXTENSIONS, k) {
                self.parse_csr_extensions(v, &mut params)?;
            } else if self.key_is(field::CSR_SUBJECT, k) {
                subject = Some(v.text().ok_or(FccStatus::BundleError)?);
            } else if self.key_is(field::CSR_MD, k) {
                let Item::Uint(md) = v else {
                    return Err(FccStatus::BundleError);
                };
                // Stored into a C enum: only the low 32 bits count.
                params.md = *md as u32;
            } else if self.key_is(field::CSR_STORAGE_MEDIUM, k) {
                gen_public = self.parse_storage_medium(v)?;
            } else {
                return Err(FccStatus::NotSupported);
            }
            Ok(())
        })?;
        let (Some(key_name), Some(subject)) = (key_name, subject) else {
            return Err(FccStatus::BundleError);
        };
        if params.md == 0 {
            return Err(FccStatus::BundleError);
        }
        params.subject = c_str(subject).to_vec();
        match self.generate_key_and_csr(key_name, &params, gen_public) {
            Ok(der) => Ok(CsrResponse {
                private_key_name: String::from_utf8_lossy(key_name).into_owned(),
                der,
            }),
            Err(kcm) => {
                self.record_kcm_error(None, kcm);
                Err(kcm.fcc_status())
            }
        }
    }

    /// `parse_csr_extensions`: a map; `KU` and `EKU` must be unsigned integers (low 32 bits
    /// used); every other key (including `Trust`) is ignored.
    fn parse_csr_extensions(
        &self,
        value: &Item<'_>,
        params: &mut CsrParams,
    ) -> Result<(), FccStatus> {
        let Item::Map { pairs, .. } = value else {
            return Err(FccStatus::BundleError);
        };
        walk_fields(pairs, |k, v| {
            if self.key_is(field::CSR_KU, k) {
                let Item::Uint(ku) = v else {
                    return Err(FccStatus::BundleError);
                };
                params.key_usage = *ku as u32;
            } else if self.key_is(field::CSR_EKU, k) {
                let Item::Uint(eku) = v else {
                    return Err(FccStatus::BundleError);
                };
                params.ext_key_usage = *eku as u32;
            }
            Ok(())
        })
    }

    /// `parse_csr_storage_medium`: a definite map of 1 or 2 entries, `Prv`/`Pub` = `Device` or
    /// `SE` (no secure element here: 37). Returns whether `Pub` asked for the public key to be
    /// stored too; `Pub` alone is refused (20).
    fn parse_storage_medium(&self, value: &Item<'_>) -> Result<bool, FccStatus> {
        let Item::Map { pairs, definite } = value else {
            return Err(FccStatus::BundleError);
        };
        if !definite || !(1..=2).contains(&pairs.len()) {
            return Err(FccStatus::BundleError);
        }
        let mut gen_public = false;
        walk_fields(pairs, |k, v| {
            let public = if self.key_is(field::SM_PRIVATE, k) {
                false
            } else if self.key_is(field::SM_PUBLIC, k) {
                true
            } else {
                return Err(FccStatus::BundleError);
            };
            let medium = v.text().ok_or(FccStatus::BundleError)?;
            if self.key_is(field::SM_SECURE_ELEMENT, medium) {
                return Err(FccStatus::NotSupported);
            } else if !self.key_is(field::SM_DEVICE, medium) {
                return Err(FccStatus::BundleError);
            }
            gen_public |= public;
            Ok(())
        })?;
        if pairs.len() == 1 && gen_public {
            return Err(FccStatus::BundleError);
        }
        Ok(gen_public)
    }

    /// `kcm_generate_keys_and_csr`: generate and store the key (and its public key under the same
    /// name when `SM.Pub` asked for it), then the CSR; the keys are deleted again when the CSR
    /// cannot be built.
    fn generate_key_and_csr(
        &mut self,
        key_name: &[u8],
        params: &CsrParams,
        gen_public: bool,
    ) -> Result<Vec<u8>, KcmStatus> {
        if key_name.is_empty() {
            return Err(KcmStatus::InvalidParameter);
        }
        let name = check_name(key_name)?;
        if self.storage.private_keys.contains_key(&name) {
            return Err(KcmStatus::KeyExist);
        }
        if gen_public && self.storage.public_keys.contains_key(&name) {
            return Err(KcmStatus::KeyExist);
        }
        // ring, not pure-Rust p256: several times faster, and the fleet simulates thousands of
        // devices a second on the cores of the server it measures. The stored bytes are the same.
        let key = csr::DeviceKey::generate().map_err(|e| e.kcm_status())?;
        let key_der = key.private_key_der();
        self.insert(ItemKind::PrivateKey, name.clone(), key_der.to_vec());
        if gen_public {
            self.insert(ItemKind::PublicKey, name.clone(), key.public_key_der());
        }
        match csr::build_csr(&key, params) {
            Ok(der) => Ok(der),
            Err(kcm) => {
                self.remove(ItemKind::PrivateKey, &name);
                if gen_public {
                    self.remove(ItemKind::PublicKey, &name);
                }
                Err(kcm)
            }
        }
    }
}

/// Walks the pairs of an item map in order, as the genuine parsers do: a key that is not a text
/// string is a 20 (BundleError); `field` sees every other pair and stops the walk with its status.
fn walk_fields<'m, 'a>(
    pairs: &'m [(Item<'a>, Item<'a>)],
    mut field: impl FnMut(&'a [u8], &'m Item<'a>) -> Result<(), FccStatus>,
) -> Result<(), FccStatus> {
    for (k, v) in pairs {
        let k = k.text().ok_or(FccStatus::BundleError)?;
        field(k, v)?;
    }
    Ok(())
}

/// [`walk_fields`] over the map of a Keys, Certificates, CertificateChains or ConfigParams entry:
/// `Name` must be a text string (else 20), `other` sees every other pair with the `Name` read so
/// far (a later type error names it), and an entry without `Name` is a 20. Returns the `Name`.
fn walk_named<'m, 'a>(
    pairs: &'m [(Item<'a>, Item<'a>)],
    strict: bool,
    mut other: impl FnMut(&'a [u8], &'m Item<'a>, Option<&'a [u8]>) -> Result<(), FccStatus>,
) -> Result<&'a [u8], FccStatus> {
    let mut name = None;
    walk_fields(pairs, |k, v| {
        if cbor::key_matches(field::NAME, k, strict) {
            name = Some(v.text().ok_or(FccStatus::BundleError)?);
            Ok(())
        } else {
            other(k, v, name)
        }
    })?;
    name.ok_or(FccStatus::BundleError)
}

/// `cbor_value_map_find_value`: the first pair whose key (tags skipped) is a text string equal to
/// `key` over all its chunks.
fn find_value<'i, 'a>(pairs: &'i [(Item<'a>, Item<'a>)], key: &str) -> Option<&'i Item<'a>> {
    pairs.iter().find_map(|(k, v)| {
        let mut k = k;
        while let Item::Tag(_, inner) = k {
            k = inner;
        }
        match k {
            Item::Text(s) if s.full() == key.as_bytes() => Some(v),
            _ => None,
        }
    })
}

/// `fcc_bundle_get_variant` with a place for integers: `None` for any other type or tag.
fn variant<'a>(item: &'a Item<'a>) -> Option<Variant<'a>> {
    // Only the first tag number is checked (positive bignum); `cbor_value_skip_tag` then skips
    // every tag in a row.
    let item = match item {
        Item::Tag(2, inner) => {
            let mut inner = inner.as_ref();
            while let Item::Tag(_, next) = inner {
                inner = next;
            }
            inner
        }
        Item::Tag(..) => return None,
        other => other,
    };
    match item {
        Item::Uint(v) => Some(Variant::Int(*v)),
        Item::Nint(n) => Some(Variant::Int((-1i64).wrapping_sub(*n as i64) as u64)),
        // An indefinite string without chunks yields a NULL pointer, like an absent Data.
        Item::Bytes(s) | Item::Text(s) if s.indefinite && s.chunks.is_empty() => {
            Some(Variant::Missing)
        }
        Item::Bytes(s) | Item::Text(s) => Some(Variant::Bytes(s.first(), s.offset)),
        _ => None,
    }
}

/// `storage_check_name_validity`: `[A-Za-z0-9._-]{1,100}`.
pub(crate) fn check_name(name: &[u8]) -> Result<String, KcmStatus> {
    if name.len() > MAX_NAME_LEN {
        return Err(KcmStatus::FileNameTooLong);
    }
    if name.is_empty() {
        return Err(KcmStatus::InvalidParameter);
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(KcmStatus::FileNameInvalid);
    }
    // All bytes are ASCII, so this is lossless.
    Ok(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for the SubjectPublicKeyInfo `spki`, signed by a throwaway CA (rcgen).
    fn cert_for(spki: &[u8]) -> Vec<u8> {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
        rcgen::CertificateParams::new(vec!["device".to_owned()])
            .unwrap()
            .signed_by(&public, &ca, &ca_key)
            .unwrap()
            .der()
            .to_vec()
    }

    /// by_device with the ring key: the stored keys are those of the CSR, a certificate for its
    /// key is accepted and one for another key gets the status it always got.
    #[test]
    fn generated_key_binds_its_certificate_and_refuses_others() {
        let mut device = Device::new(DeviceOptions::default());
        let params = CsrParams {
            subject: b"CN=dev-1".to_vec(),
            md: csr::MD_SHA256,
            key_usage: csr::ku::DIGITAL_SIGNATURE,
            ext_key_usage: 0,
        };
        device.generate_key_and_csr(b"key", &params, true).unwrap();
        let stored_public = device.storage.public_keys["key"].clone();
        let stored_private = x509::parse_private_key(&device.storage.private_keys["key"]).unwrap();
        assert_eq!(
            x509::public_key_der(&stored_private.public_key()),
            stored_public
        );

        let own = cert_for(&stored_public);
        assert_eq!(
            device.verify_certificate_with_private_key(&own, b"key"),
            Ok(())
        );

        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let foreign = cert_for(&other.public_key_der());
        assert_eq!(
            device.verify_certificate_with_private_key(&foreign, b"key"),
            Err(KcmStatus::SelfGeneratedCertificateVerificationError)
        );
    }
}
