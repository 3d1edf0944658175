//! The `mbed.*` item names FCC knows (docs/protocol.md §5.1). One place for each name; the
//! `const`s are named after the item in SCREAMING_SNAKE case.

/// Config param: 1 = bootstrap mode, 0 = LwM2M mode (uint, stored as 4 bytes).
pub const USE_BOOTSTRAP: &str = "mbed.UseBootstrap";
/// Config param: the endpoint name; must equal the device certificate's CN.
pub const ENDPOINT_NAME: &str = "mbed.EndpointName";
/// Config param: manufacturer (must exist, may be empty).
pub const MANUFACTURER: &str = "mbed.Manufacturer";
/// Config param: model number (must exist).
pub const MODEL_NUMBER: &str = "mbed.ModelNumber";
/// Config param: device type (must exist).
pub const DEVICE_TYPE: &str = "mbed.DeviceType";
/// Config param: hardware version (must exist).
pub const HARDWARE_VERSION: &str = "mbed.HardwareVersion";
/// Config param: total memory in KiB (uint, stored as 4 bytes; must exist).
pub const MEMORY_TOTAL_KB: &str = "mbed.MemoryTotalKB";
/// Config param: serial number (must exist).
pub const SERIAL_NUMBER: &str = "mbed.SerialNumber";
/// Sets the device clock (uint, seconds since the epoch, ≥ 1483264800); not stored.
pub const CURRENT_TIME: &str = "mbed.CurrentTime";
/// Config param: time zone name (optional, warning if missing).
pub const TIMEZONE: &str = "mbed.Timezone";
/// Config param: UTC offset `[+-]HH:MM` (optional, warning if missing).
pub const UTC_OFFSET: &str = "mbed.UTCOffset";
/// Config param: 1 = first-to-claim (uint, stored as 4 bytes; optional).
pub const FIRST_TO_CLAIM: &str = "mbed.FirstToClaim";
/// Certificate: the bootstrap server's CA (bootstrap mode, mandatory).
pub const BOOTSTRAP_SERVER_CA_CERT: &str = "mbed.BootstrapServerCACert";
/// Config param: the bootstrap server URI (bootstrap mode, mandatory).
pub const BOOTSTRAP_SERVER_URI: &str = "mbed.BootstrapServerURI";
/// Certificate (or chain): the device certificate in bootstrap mode.
pub const BOOTSTRAP_DEVICE_CERT: &str = "mbed.BootstrapDeviceCert";
/// Private key: the device key in bootstrap mode.
pub const BOOTSTRAP_DEVICE_PRIVATE_KEY: &str = "mbed.BootstrapDevicePrivateKey";
/// Certificate: the LwM2M server's CA (LwM2M mode, mandatory).
pub const LWM2M_SERVER_CA_CERT: &str = "mbed.LwM2MServerCACert";
/// Config param: the LwM2M server URI (LwM2M mode, mandatory).
pub const LWM2M_SERVER_URI: &str = "mbed.LwM2MServerURI";
/// Certificate (or chain): the device certificate in LwM2M mode.
pub const LWM2M_DEVICE_CERT: &str = "mbed.LwM2MDeviceCert";
/// Private key: the device key in LwM2M mode.
pub const LWM2M_DEVICE_PRIVATE_KEY: &str = "mbed.LwM2MDevicePrivateKey";
/// Certificate (or chain): the firmware update authority's certificate (optional, warning).
pub const UPDATE_AUTH_CERT: &str = "mbed.UpdateAuthCert";
/// Config param: the update class id, exactly 16 raw bytes (optional, warning).
pub const CLASS_ID: &str = "mbed.ClassId";
/// Config param: the update vendor id, exactly 16 raw bytes (optional, warning).
pub const VENDOR_ID: &str = "mbed.VendorId";
/// Defined by FCC, never checked.
pub const BOOTSTRAP_SERVER_CRL: &str = "mbed.BootstrapServerCRL";
/// Defined by FCC, never checked.
pub const LWM2M_SERVER_CRL: &str = "mbed.LwM2MServerCRL";
/// Config param: the account id (defined, not checked by FCC).
pub const ACCOUNT_ID: &str = "mbed.AccountID";
/// Config param: only used in the developer flow (bootstrap feature disabled).
pub const INTERNAL_ENDPOINT: &str = "mbed.InternalEndpoint";

/// Every name of §5.1, in the reference's table order.
pub const ALL: &[&str] = &[
    USE_BOOTSTRAP,
    ENDPOINT_NAME,
    MANUFACTURER,
    MODEL_NUMBER,
    DEVICE_TYPE,
    HARDWARE_VERSION,
    MEMORY_TOTAL_KB,
    SERIAL_NUMBER,
    CURRENT_TIME,
    TIMEZONE,
    UTC_OFFSET,
    FIRST_TO_CLAIM,
    BOOTSTRAP_SERVER_CA_CERT,
    BOOTSTRAP_SERVER_URI,
    BOOTSTRAP_DEVICE_CERT,
    BOOTSTRAP_DEVICE_PRIVATE_KEY,
    LWM2M_SERVER_CA_CERT,
    LWM2M_SERVER_URI,
    LWM2M_DEVICE_CERT,
    LWM2M_DEVICE_PRIVATE_KEY,
    UPDATE_AUTH_CERT,
    CLASS_ID,
    VENDOR_ID,
    BOOTSTRAP_SERVER_CRL,
    LWM2M_SERVER_CRL,
    ACCOUNT_ID,
    INTERNAL_ENDPOINT,
];

/// The config params whose value FCC forces to 4 bytes: send them as CBOR unsigned integers.
pub const FOUR_BYTE_UINT_PARAMS: &[&str] = &[USE_BOOTSTRAP, MEMORY_TOTAL_KB, FIRST_TO_CLAIM];

/// Minimum value FCC accepts for [`CURRENT_TIME`] (`PAL_MIN_SEC_FROM_EPOCH`, 2017-01-01 10:00 UTC).
pub const MIN_CURRENT_TIME: u64 = 1_483_264_800;

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = std::collections::BTreeSet::new();
        for n in super::ALL {
            assert!(n.starts_with("mbed."), "{n}");
            assert!(seen.insert(*n), "duplicate {n}");
        }
    }
}
