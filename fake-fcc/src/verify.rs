//! `fcc_verify_device_configured_4mbed_cloud()` (docs/protocol.md §5.2) and the trust-CA-id step (§5.3).
//!
//! The steps run in the genuine order; the first error stops verification, and every warning
//! recorded before it is still reported.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use fcc_proto::names;
use fcc_proto::status::{FccStatus, KcmStatus};

use std::sync::Arc;

use crate::device::Device;
use crate::x509::{self, OID_CN, OID_OU, ParsedCert};

/// Warning prefixes (`fcc_output_info_handler.c`).
pub(crate) mod warning {
    /// An optional item is missing.
    pub(crate) const ITEM_NOT_SET: &str = "Item not set:";
    /// `mbed.UseBootstrap` is 0.
    pub(crate) const BOOTSTRAP_MODE_NOT_ACTIVATED: &str = "Bootstrap mode not activated:";
    /// The device certificate's subject equals its issuer.
    pub(crate) const SELF_SIGNED: &str = "Certificate is self signed:";
    /// An item of the other mode is present.
    pub(crate) const ITEM_REDUNDANT: &str = "Item redundant:";
    /// The device time is unknown, or the certificate is not yet valid.
    pub(crate) const VALIDITY_CANNOT_BE_CHECKED: &str = "Certificate validity cannot be checked:";
    /// notAfter is less than ten years away.
    pub(crate) const VALIDITY_LESS_THAN_10_YEARS: &str =
        "Certificate validity is less than 10 years:";
    /// The bootstrap CA's id does not match the one saved at session end.
    pub(crate) const CA_IDENTIFIER: &str = "CA identifier wasn't set properly:";
}

/// `FCC_10_YEARS_IN_SECONDS`.
const TEN_YEARS: u64 = 315_360_000;
/// Grace before a not-yet-valid certificate is reported.
const NOT_BEFORE_GRACE: u64 = 60;
/// `FCC_UUID5_SIZE_IN_BYTES`.
const UUID_SIZE: usize = 16;

/// The item names that differ between bootstrap and LwM2M mode.
struct ModeNames {
    ca_cert: &'static str,
    uri: &'static str,
    key: &'static str,
    cert: &'static str,
}

const BOOTSTRAP: ModeNames = ModeNames {
    ca_cert: names::BOOTSTRAP_SERVER_CA_CERT,
    uri: names::BOOTSTRAP_SERVER_URI,
    key: names::BOOTSTRAP_DEVICE_PRIVATE_KEY,
    cert: names::BOOTSTRAP_DEVICE_CERT,
};

const LWM2M: ModeNames = ModeNames {
    ca_cert: names::LWM2M_SERVER_CA_CERT,
    uri: names::LWM2M_SERVER_URI,
    key: names::LWM2M_DEVICE_PRIVATE_KEY,
    cert: names::LWM2M_DEVICE_CERT,
};

/// A failed step: the status and the item it is reported against.
type StepResult<T = ()> = Result<T, (FccStatus, &'static str)>;

impl Device {
    /// §5.3: on the final message, read the bootstrap mode and, in bootstrap mode, save the
    /// bootstrap CA's id (write-once; a second write is the tolerated `CaError`).
    pub(crate) fn trust_ca_step(&mut self) -> FccStatus {
        let use_bootstrap = match self.bootstrap_mode() {
            Ok(b) => b,
            Err(status) => return status,
        };
        if !use_bootstrap {
            return FccStatus::Success;
        }
        let name = names::BOOTSTRAP_SERVER_CA_CERT;
        let result = self.certificate_by_name(name).and_then(|cert| {
            if self.sotp.time_srv_id.is_some() {
                Err(FccStatus::CaError)
            } else {
                self.sotp.time_srv_id = Some(cert.compressed_key());
                Ok(())
            }
        });
        match result {
            Ok(()) => FccStatus::Success,
            Err(status) => {
                self.record_error(Some(name.as_bytes()), status);
                status
            }
        }
    }

    /// §5.2, step by step.
    pub(crate) fn verify(&mut self) -> FccStatus {
        self.info.clear();
        let result = self.verify_steps();
        match result {
            Ok(()) => FccStatus::Success,
            Err((status, item)) => {
                self.record_error(Some(item.as_bytes()), status);
                status
            }
        }
    }

    fn verify_steps(&mut self) -> StepResult {
        self.check_time()?;
        let use_bootstrap = self
            .bootstrap_mode()
            .map_err(|s| (s, names::USE_BOOTSTRAP))?;
        self.check_general_info()?;
        self.check_meta_data()?;
        let (mode, other) = if use_bootstrap {
            (&BOOTSTRAP, &LWM2M)
        } else {
            (&LWM2M, &BOOTSTRAP)
        };
        self.check_ca_certificate(mode, other, use_bootstrap)?;
        self.check_server_uri(mode, other, use_bootstrap)?;
        self.check_device_key_and_certificate(mode, other, use_bootstrap)?;
        self.check_firmware_update()
    }

    /// Step 1: time, time zone, UTC offset.
    fn check_time(&mut self) -> StepResult {
        if self.device_time().is_none() {
            self.warn(warning::ITEM_NOT_SET, names::CURRENT_TIME);
        }
        if self
            .storage
            .config(names::TIMEZONE)
            .is_none_or(<[u8]>::is_empty)
        {
            self.warn(warning::ITEM_NOT_SET, names::TIMEZONE);
        }
        match self.storage.config(names::UTC_OFFSET) {
            None | Some([]) => {
                self.warn(warning::ITEM_NOT_SET, names::UTC_OFFSET);
                Ok(())
            }
            Some(offset) => {
                // Bytes past a short value are past the genuine buffer; zeros never pass.
                let at = |i: usize| offset.get(i).copied().unwrap_or(0);
                let ok = matches!(at(0), b'+' | b'-')
                    && at(3) == b':'
                    && [1, 2, 4, 5].iter().all(|i| at(*i).is_ascii_digit())
                    && (!self.opts.strict || offset.len() == 6);
                if ok {
                    Ok(())
                } else {
                    Err((FccStatus::UtcOffsetWrongFormat, names::UTC_OFFSET))
                }
            }
        }
    }

    /// `fcc_get_bootstrap_mode`: errors are recorded against `mbed.UseBootstrap`.
    pub(crate) fn bootstrap_mode(&mut self) -> Result<bool, FccStatus> {
        let name = names::USE_BOOTSTRAP;
        let result = match self.storage.config(name) {
            // kcm_item_get_data with a 4-byte buffer fails for a larger item: "does not exist".
            None => Err(FccStatus::ItemNotExist),
            Some(d) if d.len() > 4 => Err(FccStatus::ItemNotExist),
            Some(d) if d.len() != 4 => Err(FccStatus::WrongItemDataSize),
            Some(d) => match le_u32(d) {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(FccStatus::BootstrapModeError),
            },
        };
        match result {
            Ok(false) => self.warn(warning::BOOTSTRAP_MODE_NOT_ACTIVATED, name),
            Ok(true) => {}
            Err(status) => self.record_error(Some(name.as_bytes()), status),
        }
        result
    }

    /// Step 3: the endpoint name exists and is not empty.
    fn check_general_info(&self) -> StepResult {
        match self.storage.config(names::ENDPOINT_NAME) {
            None => Err((FccStatus::ItemNotExist, names::ENDPOINT_NAME)),
            Some([]) => Err((FccStatus::EmptyItem, names::ENDPOINT_NAME)),
            Some(_) => Ok(()),
        }
    }

    /// Step 4: the metadata items exist (any size).
    fn check_meta_data(&self) -> StepResult {
        for name in [
            names::MANUFACTURER,
            names::MODEL_NUMBER,
            names::DEVICE_TYPE,
            names::HARDWARE_VERSION,
            names::MEMORY_TOTAL_KB,
            names::SERIAL_NUMBER,
        ] {
            if self.storage.config(name).is_none() {
                return Err((FccStatus::ItemNotExist, name));
            }
        }
        Ok(())
    }

    /// `verify_existence_and_set_warning` for an item that should be absent.
    fn warn_if_present(&mut self, exists: bool, name: &'static str) {
        if exists {
            self.warn(warning::ITEM_REDUNDANT, name);
        }
    }

    /// Step 5.1: the server CA certificate, and the CA id saved at session end.
    fn check_ca_certificate(
        &mut self,
        mode: &ModeNames,
        other: &ModeNames,
        use_bootstrap: bool,
    ) -> StepResult {
        let name = mode.ca_cert;
        if !self.storage.certificates.contains_key(name) {
            return Err((FccStatus::ItemNotExist, name));
        }
        let exists = self.storage.certificates.contains_key(other.ca_cert);
        self.warn_if_present(exists, other.ca_cert);
        if use_bootstrap {
            let cert = self.certificate_by_name(name).map_err(|s| (s, name))?;
            let id = cert.compressed_key();
            match &self.sotp.time_srv_id {
                Some(saved) if saved.len() == id.len() => {
                    if *saved != id {
                        self.warn(warning::CA_IDENTIFIER, name);
                    }
                }
                _ => self.warn(warning::CA_IDENTIFIER, name),
            }
        }
        Ok(())
    }

    /// Step 5.2: the server URI, first-to-claim and the account id rules.
    fn check_server_uri(
        &mut self,
        mode: &ModeNames,
        other: &ModeNames,
        use_bootstrap: bool,
    ) -> StepResult {
        let name = mode.uri;
        let uri = match self.storage.config(name) {
            None => return Err((FccStatus::ItemNotExist, name)),
            Some([]) => return Err((FccStatus::EmptyItem, name)),
            Some(uri) => uri.to_vec(),
        };
        let exists = self.storage.config_params.contains_key(other.uri);
        self.warn_if_present(exists, other.uri);

        let first_to_claim = match self.storage.config(names::FIRST_TO_CLAIM) {
            None => false,
            Some(d) if d.len() > 4 => return Err((FccStatus::KcmError, name)),
            Some(d) if d.len() != 4 => return Err((FccStatus::WrongItemDataSize, name)),
            Some(d) => le_u32(d) == Some(1),
        };
        if !uri.starts_with(b"coap://") && !uri.starts_with(b"coaps://") {
            return Err((FccStatus::UriWrongFormat, name));
        }
        let text = crate::cbor::c_str(&uri);
        let contains = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
        let has_aid = contains(b"?aid=") || contains(b"&aid=");
        if first_to_claim {
            let ftc_name = if use_bootstrap {
                name
            } else {
                names::FIRST_TO_CLAIM
            };
            if !use_bootstrap || has_aid {
                return Err((FccStatus::FirstToClaimNotAllowed, ftc_name));
            }
        } else if !has_aid {
            return Err((FccStatus::UriWrongFormat, name));
        }
        Ok(())
    }

    /// Step 5.3: device key, device certificate (chain), EKU, CN, OU/aid, self-signed, expiry.
    fn check_device_key_and_certificate(
        &mut self,
        mode: &ModeNames,
        other: &ModeNames,
        use_bootstrap: bool,
    ) -> StepResult {
        let key = match self.storage.private_keys.get(mode.key) {
            None => return Err((FccStatus::ItemNotExist, mode.key)),
            Some(der) => x509::parse_private_key(der).map_err(|k| (k.fcc_status(), mode.key))?,
        };
        let exists = self.storage.private_keys.contains_key(other.key);
        self.warn_if_present(exists, other.key);

        let name = mode.cert;
        let chain = self
            .storage
            .certificates
            .get(name)
            .cloned()
            .ok_or((FccStatus::ItemNotExist, name))?;
        // Parsed up front (each once per device, see `CertMemo`); failures surface in chain order.
        let parsed: Vec<_> = chain
            .iter()
            .map(|der| self.memo.parse(der).map_err(|k| (k.fcc_status(), name)))
            .collect();
        let mut certs = parsed.into_iter();
        let leaf = certs.next().ok_or((FccStatus::ItemNotExist, name))??;
        let leaf_der = chain.first().map_or(&[][..], Vec::as_slice);
        if !self.memo.pair_matches(mode.key, &key, leaf_der, &leaf) {
            return Err((FccStatus::CertificatePublicKeyCorrelationError, name));
        }
        let exists = self.storage.certificates.contains_key(other.cert);
        self.warn_if_present(exists, other.cert);
        if !leaf.allows_client_auth() {
            return Err((FccStatus::InvalidCertificate, name));
        }
        self.compare_cn_with_endpoint(&leaf)
            .map_err(|s| (s, name))?;
        if !use_bootstrap {
            self.compare_ou_with_aid(&leaf).map_err(|s| (s, name))?;
        }
        if leaf.is_self_signed() {
            self.warn(warning::SELF_SIGNED, name);
        }
        self.check_expiry(&leaf, name)?;
        for cert in certs {
            let cert = cert?;
            self.check_expiry(&cert, name)?;
        }
        Ok(())
    }

    /// `compare_cn_with_endpoint`: the first CN, byte for byte, equals `mbed.EndpointName`.
    fn compare_cn_with_endpoint(&self, cert: &ParsedCert) -> Result<(), FccStatus> {
        let cn = match cert.attribute(OID_CN) {
            Ok(Some(cn)) => cn,
            _ => return Err(FccStatus::InvalidCertAttribute),
        };
        match self.storage.config(names::ENDPOINT_NAME) {
            None => Err(FccStatus::ItemNotExist),
            Some([]) => Err(FccStatus::EmptyItem),
            Some(endpoint) if endpoint == cn => Ok(()),
            Some(_) => Err(FccStatus::InvalidLwm2mCnAttr),
        }
    }

    /// `compare_ou_with_aid_server` (LwM2M mode): the first OU, including its terminating NUL,
    /// must equal what follows `?aid=`/`&aid=` in `mbed.LwM2MServerURI` (so the aid has to end
    /// the URI).
    fn compare_ou_with_aid(&self, cert: &ParsedCert) -> Result<(), FccStatus> {
        let ou = match cert.attribute(OID_OU) {
            Ok(Some(ou)) if !ou.is_empty() => ou,
            _ => return Err(FccStatus::InvalidCertAttribute),
        };
        let uri = match self.storage.config(names::LWM2M_SERVER_URI) {
            None => return Err(FccStatus::ItemNotExist),
            Some([]) => return Err(FccStatus::EmptyItem),
            Some(uri) => crate::cbor::c_str(uri),
        };
        let find = |needle: &[u8]| uri.windows(needle.len()).position(|w| w == needle);
        let start = find(b"?aid=")
            .or_else(|| find(b"&aid="))
            .ok_or(FccStatus::UriWrongFormat)?
            + 5;
        let aid = uri.get(start..).unwrap_or_default();
        if aid.len() < ou.len() {
            return Err(FccStatus::UriWrongFormat);
        }
        // memcmp over the OU plus its NUL: the aid must be exactly the OU.
        if aid == ou {
            Ok(())
        } else {
            Err(FccStatus::InvalidLwm2mCnAttr)
        }
    }

    /// `verify_certificate_expiration`.
    fn check_expiry(&mut self, cert: &ParsedCert, name: &'static str) -> StepResult {
        match self.device_time() {
            None => self.warn(warning::VALIDITY_CANNOT_BE_CHECKED, name),
            Some(now) => {
                if now > cert.not_after {
                    return Err((FccStatus::ExpiredCertificate, name));
                }
                if now.wrapping_add(NOT_BEFORE_GRACE) < cert.not_before {
                    self.warn(warning::VALIDITY_CANNOT_BE_CHECKED, name);
                }
                if cert.not_after - now < TEN_YEARS {
                    self.warn(warning::VALIDITY_LESS_THAN_10_YEARS, name);
                }
            }
        }
        Ok(())
    }

    /// Step 6: update certificate, class id, vendor id.
    fn check_firmware_update(&mut self) -> StepResult {
        let name = names::UPDATE_AUTH_CERT;
        match self.storage.certificates.get(name).cloned() {
            None => self.warn(warning::ITEM_NOT_SET, name),
            Some(chain) => {
                for der in &chain {
                    let cert = self.memo.parse(der).map_err(|k| (k.fcc_status(), name))?;
                    self.check_expiry(&cert, name)?;
                }
            }
        }
        for name in [names::CLASS_ID, names::VENDOR_ID] {
            match self.storage.config(name) {
                None => self.warn(warning::ITEM_NOT_SET, name),
                Some(d) if d.len() != UUID_SIZE => {
                    return Err((FccStatus::WrongItemDataSize, name));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// `fcc_get_certificate_attribute_by_name` up to the parse: 25 missing, 10 unparsable.
    fn certificate_by_name(&self, name: &str) -> Result<Arc<ParsedCert>, FccStatus> {
        let chain = self
            .storage
            .certificates
            .get(name)
            .ok_or(FccStatus::ItemNotExist)?;
        let der = chain.first().ok_or(FccStatus::ItemNotExist)?;
        if der.is_empty() {
            return Err(FccStatus::EmptyItem);
        }
        self.memo
            .parse(der)
            .map_err(|_: KcmStatus| FccStatus::InvalidCertificate)
    }
}

/// A 4-byte little-endian item as KCM reads it into a `uint32_t`; `None` for any other size.
fn le_u32(data: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(data).ok().map(u32::from_le_bytes)
}
