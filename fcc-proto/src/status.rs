//! The status tables of the protocol (docs/protocol.md §1.8, §4.1, §4.3): one place for every code,
//! its C name, its InfoMessage prefix and a description in words.

use std::fmt;

/// Defines a `u32`-backed status enum with an `Unknown(u32)` catch-all, from one table.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $ty:ident, unknown_name = $unknown_name:literal;
        $( $variant:ident = $value:literal, $cname:literal, $words:literal; )*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $(
                #[doc = concat!("`", $cname, "` (", stringify!($value), "): ", $words, ".")]
                $variant,
            )*
            /// A value outside the known table.
            Unknown(u32),
        }

        impl $ty {
            /// Every known value, in numeric order.
            pub const ALL: &'static [$ty] = &[ $( $ty::$variant, )* ];

            /// The status for a numeric value; values outside the table give `Unknown`.
            pub fn from_u32(value: u32) -> Self {
                match value {
                    $( $value => $ty::$variant, )*
                    other => $ty::Unknown(other),
                }
            }

            /// The numeric value as sent on the wire.
            pub fn as_u32(self) -> u32 {
                match self {
                    $( $ty::$variant => $value, )*
                    $ty::Unknown(other) => other,
                }
            }

            /// The C enumerator name, e.g. `FCC_STATUS_BUNDLE_ERROR`.
            pub fn name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $cname, )*
                    $ty::Unknown(_) => $unknown_name,
                }
            }

            /// What the status means, in words.
            pub fn description(self) -> &'static str {
                match self {
                    $( $ty::$variant => $words, )*
                    $ty::Unknown(_) => "unknown status code",
                }
            }
        }

        impl From<u32> for $ty {
            fn from(value: u32) -> Self {
                $ty::from_u32(value)
            }
        }

        impl From<$ty> for u32 {
            fn from(status: $ty) -> u32 {
                status.as_u32()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} ({} {})", self.description(), self.name(), self.as_u32())
            }
        }
    };
}

status_enum! {
    /// `fcc_status_e`: the `ReturnStatus` of a response (docs/protocol.md §4.1).
    FccStatus, unknown_name = "FCC_STATUS_UNKNOWN";
    Success = 0, "FCC_STATUS_SUCCESS", "the factory process succeeded";
    Error = 1, "FCC_STATUS_ERROR", "general error (e.g. an invalid mbed.CurrentTime)";
    MemoryOut = 2, "FCC_STATUS_MEMORY_OUT", "the device ran out of memory";
    InvalidParameter = 3, "FCC_STATUS_INVALID_PARAMETER", "invalid parameter (e.g. wrong Entropy or ROT size)";
    StoreError = 4, "FCC_STATUS_STORE_ERROR", "internal storage error";
    InternalItemAlreadyExist = 5, "FCC_STATUS_INTERNAL_ITEM_ALREADY_EXIST", "internal item already exists";
    CaError = 6, "FCC_STATUS_CA_ERROR", "CA identifier error";
    RotError = 7, "FCC_STATUS_ROT_ERROR", "root of trust error (already set or invalid)";
    EntropyError = 8, "FCC_STATUS_ENTROPY_ERROR", "entropy error (already set)";
    FactoryDisabledError = 9, "FCC_STATUS_FACTORY_DISABLED_ERROR", "the factory flow is disabled on this device";
    InvalidCertificate = 10, "FCC_STATUS_INVALID_CERTIFICATE", "invalid certificate (e.g. EKU without clientAuth)";
    InvalidCertAttribute = 11, "FCC_STATUS_INVALID_CERT_ATTRIBUTE", "invalid certificate attribute";
    InvalidCaCertSignature = 12, "FCC_STATUS_INVALID_CA_CERT_SIGNATURE", "validation of the CA certificate failed";
    ExpiredCertificate = 13, "FCC_STATUS_EXPIRED_CERTIFICATE", "a certificate has expired";
    InvalidLwm2mCnAttr = 14, "FCC_STATUS_INVALID_LWM2M_CN_ATTR", "the certificate CN does not equal mbed.EndpointName";
    KcmError = 15, "FCC_STATUS_KCM_ERROR", "key/config manager error (e.g. unparsable key)";
    KcmStorageError = 16, "FCC_STATUS_KCM_STORAGE_ERROR", "key/config manager storage error (e.g. invalid item name)";
    KcmFileExistError = 17, "FCC_STATUS_KCM_FILE_EXIST_ERROR", "an item with that name already exists";
    KcmCryptoError = 18, "FCC_STATUS_KCM_CRYPTO_ERROR", "key/config manager crypto error (parse or validation failure)";
    NotInitialized = 19, "FCC_STATUS_NOT_INITIALIZED", "FCC is not initialised";
    BundleError = 20, "FCC_STATUS_BUNDLE_ERROR", "the bundle is malformed";
    BundleResponseError = 21, "FCC_STATUS_BUNDLE_RESPONSE_ERROR", "the response could not be built";
    BundleUnsupportedGroup = 22, "FCC_STATUS_BUNDLE_UNSUPPORTED_GROUP", "unsupported bundle group";
    BundleInvalidGroup = 23, "FCC_STATUS_BUNDLE_INVALID_GROUP", "unknown top-level group in the bundle";
    BundleInvalidScheme = 24, "FCC_STATUS_BUNDLE_INVALID_SCHEME", "missing or unsupported SchemeVersion";
    ItemNotExist = 25, "FCC_STATUS_ITEM_NOT_EXIST", "a mandatory item is missing";
    EmptyItem = 26, "FCC_STATUS_EMPTY_ITEM", "a mandatory item is empty";
    WrongItemDataSize = 27, "FCC_STATUS_WRONG_ITEM_DATA_SIZE", "an item has the wrong size";
    UriWrongFormat = 28, "FCC_STATUS_URI_WRONG_FORMAT", "the server URI has the wrong format";
    FirstToClaimNotAllowed = 29, "FCC_STATUS_FIRST_TO_CLAIM_NOT_ALLOWED", "first-to-claim is not allowed in this mode";
    BootstrapModeError = 30, "FCC_STATUS_BOOTSTRAP_MODE_ERROR", "mbed.UseBootstrap has an incorrect value";
    OutputInfoError = 31, "FCC_STATUS_OUTPUT_INFO_ERROR", "output info error";
    WarningCreateError = 32, "FCC_STATUS_WARNING_CREATE_ERROR", "a warning could not be recorded";
    UtcOffsetWrongFormat = 33, "FCC_STATUS_UTC_OFFSET_WRONG_FORMAT", "mbed.UTCOffset has the wrong format";
    CertificatePublicKeyCorrelationError = 34, "FCC_STATUS_CERTIFICATE_PUBLIC_KEY_CORRELATION_ERROR", "the certificate does not match its private key";
    BundleInvalidKeepAliveSessionStatus = 35, "FCC_STATUS_BUNDLE_INVALID_KEEP_ALIVE_SESSION_STATUS", "invalid keep-alive session flag (or Disable with KpAlvSess)";
    TooManyCsrRequests = 36, "FCC_STATUS_TOO_MANY_CSR_REQUESTS", "more than 5 CSR requests";
    NotSupported = 37, "FCC_STATUS_NOT_SUPPORTED", "unsupported field or value (e.g. ACL, or a Format other than der)";
}

/// The InfoMessage text for [`FccStatus::TooManyCsrRequests`]: the genuine build prints the macro
/// name, and there is no item name after it.
pub const TOO_MANY_CSR_REQUESTS_MESSAGE: &str =
    "Too many CSR requests. Maximum CSR requests supported is CSR_MAX_NUMBER_OF_CSRS";

/// The fallback InfoMessage prefix when no specific error text was recorded.
pub const GENERAL_ERROR_PREFIX: &str = "General error:";

impl FccStatus {
    /// The InfoMessage prefix recorded with this status (§4.1). For `Success` this is the success
    /// text without its trailing newline; for `TooManyCsrRequests` it is the complete message.
    pub fn info_prefix(self) -> &'static str {
        use FccStatus::*;
        match self {
            Success => "The Factory process succeeded",
            StoreError => "Internal storage error:",
            CaError => "CA error:",
            RotError => "Root of trust error:",
            EntropyError => "Entropy error:",
            FactoryDisabledError => "Factory disabled error:",
            InvalidCertificate => "Certificate invalid:",
            InvalidCaCertSignature => "Validation of CA certificate failed:",
            ExpiredCertificate => "Certificate expired:",
            InvalidLwm2mCnAttr => "Certificate CN attribute invalid:",
            KcmCryptoError => "KCM crypto error:",
            ItemNotExist => "Item does not exist:",
            EmptyItem => "Item empty:",
            WrongItemDataSize => "Item size is wrong:",
            UriWrongFormat => "URI format incorrect:",
            FirstToClaimNotAllowed => "first to claim not allowed:",
            BootstrapModeError => "Bootstrap mode value incorrect:",
            UtcOffsetWrongFormat => "UTC offset incorrect:",
            CertificatePublicKeyCorrelationError => "Certificate public key validation failed:",
            TooManyCsrRequests => TOO_MANY_CSR_REQUESTS_MESSAGE,
            Error
            | MemoryOut
            | InvalidParameter
            | InternalItemAlreadyExist
            | InvalidCertAttribute
            | KcmError
            | KcmStorageError
            | KcmFileExistError
            | NotInitialized
            | BundleError
            | BundleResponseError
            | BundleUnsupportedGroup
            | BundleInvalidGroup
            | BundleInvalidScheme
            | OutputInfoError
            | WarningCreateError
            | BundleInvalidKeepAliveSessionStatus
            | NotSupported
            | Unknown(_) => GENERAL_ERROR_PREFIX,
        }
    }

    /// True for [`FccStatus::Success`].
    pub fn is_success(self) -> bool {
        self == FccStatus::Success
    }
}

status_enum! {
    /// `ftcd_comm_status_e`: the status field of a response frame (docs/protocol.md §1.8). Over TCP the
    /// genuine FCC only ever sends 0 (with a body) and 9 (12-byte frame).
    WireStatus, unknown_name = "FTCD_COMM_STATUS_UNKNOWN";
    Success = 0, "FTCD_COMM_STATUS_SUCCESS", "success";
    Error = 1, "FTCD_COMM_STATUS_ERROR", "general communication error";
    InvalidParameter = 2, "FTCD_COMM_INVALID_PARAMETER", "invalid parameter";
    MemoryOut = 3, "FTCD_COMM_MEMORY_OUT", "the device ran out of memory for the message";
    FailedToReadMessageSize = 4, "FTCD_COMM_FAILED_TO_READ_MESSAGE_SIZE", "failed to read the message size (or it was zero)";
    FailedToReadMessageBytes = 5, "FTCD_COMM_FAILED_TO_READ_MESSAGE_BYTES", "failed to read the message bytes";
    FailedToReadMessageSignature = 6, "FTCD_COMM_FAILED_TO_READ_MESSAGE_SIGNATURE", "failed to read the message hash";
    FailedToCalculateMessageSignature = 7, "FTCD_COMM_FAILED_TO_CALCULATE_MESSAGE_SIGNATURE", "failed to calculate the message hash";
    InconsistentMessageSignature = 8, "FTCD_COMM_INCONSISTENT_MESSAGE_SIGNATURE", "the message hash does not match";
    FailedToProcessData = 9, "FTCD_COMM_FAILED_TO_PROCESS_DATA", "the device failed to process the bundle and built no response";
    FailedToProcessMessage = 10, "FTCD_COMM_FAILED_TO_PROCESS_MESSAGE", "failed to process the message";
    FailedToSendValidResponse = 11, "FTCD_COMM_FAILED_TO_SEND_VALID_RESPONSE", "failed to send a valid response";
    NetworkTimeout = 12, "FTCD_COMM_NETWORK_TIMEOUT", "network timeout";
    NetworkConnectionError = 13, "FTCD_COMM_NETWORK_CONNECTION_ERROR", "network connection error";
    NetworkConnectionClosed = 14, "FTCD_COMM_NETWORK_CONNECTION_CLOSED", "the network connection was closed";
    InternalError = 15, "FTCD_COMM_INTERNAL_ERROR", "internal error (response hash failure)";
}

status_enum! {
    /// `kcm_status_e`: the key/config manager's status (docs/protocol.md §4.3). Never sent on the wire;
    /// it surfaces as an [`FccStatus`] ([`KcmStatus::fcc_status`]) and an InfoMessage prefix
    /// ([`KcmStatus::info_prefix`]).
    KcmStatus, unknown_name = "KCM_STATUS_UNKNOWN";
    Success = 0, "KCM_STATUS_SUCCESS", "success";
    Error = 1, "KCM_STATUS_ERROR", "general error";
    InvalidParameter = 2, "KCM_STATUS_INVALID_PARAMETER", "invalid parameter";
    InsufficientBuffer = 3, "KCM_STATUS_INSUFFICIENT_BUFFER", "insufficient buffer";
    OutOfMemory = 4, "KCM_STATUS_OUT_OF_MEMORY", "out of memory";
    ItemNotFound = 5, "KCM_STATUS_ITEM_NOT_FOUND", "item not found";
    MetaDataNotFound = 6, "KCM_STATUS_META_DATA_NOT_FOUND", "meta data not found";
    MetaDataSizeError = 7, "KCM_STATUS_META_DATA_SIZE_ERROR", "meta data size error";
    FileExist = 8, "KCM_STATUS_FILE_EXIST", "an item with that name already exists";
    KeyExist = 9, "KCM_STATUS_KEY_EXIST", "the key to generate already exists";
    NotPermitted = 10, "KCM_STATUS_NOT_PERMITTED", "operation not permitted";
    StorageError = 11, "KCM_STATUS_STORAGE_ERROR", "storage error";
    ItemIsEmpty = 12, "KCM_STATUS_ITEM_IS_EMPTY", "item data is empty";
    InvalidFileVersion = 13, "KCM_STATUS_INVALID_FILE_VERSION", "invalid file version";
    FileCorrupted = 14, "KCM_STATUS_FILE_CORRUPTED", "file data corrupted";
    FileNameCorrupted = 15, "KCM_STATUS_FILE_NAME_CORRUPTED", "file name corrupted";
    InvalidFileAccessMode = 16, "KCM_STATUS_INVALID_FILE_ACCESS_MODE", "invalid file access mode";
    UnknownStorageError = 17, "KCM_STATUS_UNKNOWN_STORAGE_ERROR", "unknown storage error";
    NotInitialized = 18, "KCM_STATUS_NOT_INITIALIZED", "KCM not initialised";
    CloseIncompleteChain = 19, "KCM_STATUS_CLOSE_INCOMPLETE_CHAIN", "closing an incomplete certificate chain";
    CorruptedChainFile = 20, "KCM_STATUS_CORRUPTED_CHAIN_FILE", "corrupted certificate chain file";
    InvalidNumOfCertInChain = 21, "KCM_STATUS_INVALID_NUM_OF_CERT_IN_CHAIN", "invalid number of certificates in the chain";
    CertificateChainVerificationFailed = 22, "KCM_STATUS_CERTIFICATE_CHAIN_VERIFICATION_FAILED", "certificate chain validation failed";
    FileNameTooLong = 23, "KCM_STATUS_FILE_NAME_TOO_LONG", "item name too long";
    InvalidExpectedLocation = 24, "KCM_STATUS_INVALID_EXPECTED_LOCATION", "invalid expected location";
    UnsupportedHashMode = 25, "KCM_CRYPTO_STATUS_UNSUPPORTED_HASH_MODE", "unsupported hash mode";
    ParsingDerPrivateKey = 26, "KCM_CRYPTO_STATUS_PARSING_DER_PRIVATE_KEY", "private key parse failed";
    ParsingDerPublicKey = 27, "KCM_CRYPTO_STATUS_PARSING_DER_PUBLIC_KEY", "public key parse failed";
    PkKeyInvalidFormat = 28, "KCM_CRYPTO_STATUS_PK_KEY_INVALID_FORMAT", "public key format invalid";
    InvalidPkPubkey = 29, "KCM_CRYPTO_STATUS_INVALID_PK_PUBKEY", "public key invalid";
    EcpInvalidKey = 30, "KCM_CRYPTO_STATUS_ECP_INVALID_KEY", "EC key invalid";
    PkKeyInvalidVersion = 31, "KCM_CRYPTO_STATUS_PK_KEY_INVALID_VERSION", "key version invalid";
    PkPasswordRequired = 32, "KCM_CRYPTO_STATUS_PK_PASSWORD_REQUIRED", "key password required";
    PrivateKeyVerificationFailed = 33, "KCM_CRYPTO_STATUS_PRIVATE_KEY_VERIFICATION_FAILED", "private key verification failed";
    PublicKeyVerificationFailed = 34, "KCM_CRYPTO_STATUS_PUBLIC_KEY_VERIFICATION_FAILED", "public key verification failed";
    PkUnknownPkAlg = 35, "KCM_CRYPTO_STATUS_PK_UNKNOWN_PK_ALG", "unknown public key algorithm";
    UnsupportedCurve = 36, "KCM_CRYPTO_STATUS_UNSUPPORTED_CURVE", "unsupported curve (only P-256 is accepted)";
    ParsingDerCert = 37, "KCM_CRYPTO_STATUS_PARSING_DER_CERT", "certificate parse failed";
    CertExpired = 38, "KCM_CRYPTO_STATUS_CERT_EXPIRED", "certificate expired";
    CertFuture = 39, "KCM_CRYPTO_STATUS_CERT_FUTURE", "certificate not yet valid";
    CertMdAlg = 40, "KCM_CRYPTO_STATUS_CERT_MD_ALG", "certificate digest algorithm error";
    CertPubKeyType = 41, "KCM_CRYPTO_STATUS_CERT_PUB_KEY_TYPE", "certificate public key type error";
    CertPubKey = 42, "KCM_CRYPTO_STATUS_CERT_PUB_KEY", "certificate public key error";
    CertNotTrusted = 43, "KCM_CRYPTO_STATUS_CERT_NOT_TRUSTED", "certificate not trusted";
    InvalidX509Attr = 44, "KCM_CRYPTO_STATUS_INVALID_X509_ATTR", "invalid X.509 attribute";
    VerifySignatureFailed = 45, "KCM_CRYPTO_STATUS_VERIFY_SIGNATURE_FAILED", "signature verification failed";
    InvalidMdType = 46, "KCM_CRYPTO_STATUS_INVALID_MD_TYPE", "invalid digest type";
    FailedToWriteSignature = 47, "KCM_CRYPTO_STATUS_FAILED_TO_WRITE_SIGNATURE", "failed to write a signature";
    FailedToWritePrivateKey = 48, "KCM_CRYPTO_STATUS_FAILED_TO_WRITE_PRIVATE_KEY", "failed to write a private key";
    FailedToWritePublicKey = 49, "KCM_CRYPTO_STATUS_FAILED_TO_WRITE_PUBLIC_KEY", "failed to write a public key";
    FailedToWriteCsr = 50, "KCM_CRYPTO_STATUS_FAILED_TO_WRITE_CSR", "failed to write a CSR";
    InvalidOid = 51, "KCM_CRYPTO_STATUS_INVALID_OID", "invalid OID";
    InvalidNameFormat = 52, "KCM_CRYPTO_STATUS_INVALID_NAME_FORMAT", "invalid subject name format";
    EntropyMissing = 53, "KCM_CRYPTO_STATUS_ENTROPY_MISSING", "entropy missing";
    SelfGeneratedCertificateVerificationError = 54, "KCM_STATUS_SELF_GENERATED_CERTIFICATE_VERIFICATION_ERROR", "the certificate does not match the device-generated key";
    SetExtensionFailed = 55, "KCM_CRYPTO_STATUS_SET_EXTENSION_FAILED", "failed to set an X.509 extension";
    RbpError = 56, "KCM_STATUS_RBP_ERROR", "roll-back protected storage error";
    FileNameInvalid = 57, "KCM_STATUS_FILE_NAME_INVALID", "item name has an invalid character";
    InvalidPkPrivkey = 58, "KCM_CRYPTO_STATUS_INVALID_PK_PRIVKEY", "private key invalid";
}

impl KcmStatus {
    /// The FCC status this kcm status converts to (`fcc_convert_kcm_to_fcc_status`, §4.3).
    /// Values outside the table convert like `KCM_MAX_STATUS`, to `KcmCryptoError`.
    pub fn fcc_status(self) -> FccStatus {
        use KcmStatus::*;
        match self {
            Success => FccStatus::Success,
            Error | InvalidParameter | InsufficientBuffer | OutOfMemory => FccStatus::KcmError,
            ItemNotFound => FccStatus::ItemNotExist,
            FileExist | KeyExist => FccStatus::KcmFileExistError,
            MetaDataNotFound
            | MetaDataSizeError
            | NotPermitted
            | StorageError
            | ItemIsEmpty
            | InvalidFileVersion
            | FileCorrupted
            | FileNameCorrupted
            | InvalidFileAccessMode
            | UnknownStorageError
            | NotInitialized
            | CloseIncompleteChain
            | CorruptedChainFile
            | InvalidNumOfCertInChain
            | FileNameTooLong
            | InvalidExpectedLocation
            | FileNameInvalid => FccStatus::KcmStorageError,
            SelfGeneratedCertificateVerificationError => {
                FccStatus::CertificatePublicKeyCorrelationError
            }
            RbpError => FccStatus::StoreError,
            CertificateChainVerificationFailed
            | UnsupportedHashMode
            | ParsingDerPrivateKey
            | ParsingDerPublicKey
            | PkKeyInvalidFormat
            | InvalidPkPubkey
            | EcpInvalidKey
            | PkKeyInvalidVersion
            | PkPasswordRequired
            | PrivateKeyVerificationFailed
            | PublicKeyVerificationFailed
            | PkUnknownPkAlg
            | UnsupportedCurve
            | ParsingDerCert
            | CertExpired
            | CertFuture
            | CertMdAlg
            | CertPubKeyType
            | CertPubKey
            | CertNotTrusted
            | InvalidX509Attr
            | VerifySignatureFailed
            | InvalidMdType
            | FailedToWriteSignature
            | FailedToWritePrivateKey
            | FailedToWritePublicKey
            | FailedToWriteCsr
            | InvalidOid
            | InvalidNameFormat
            | EntropyMissing
            | SetExtensionFailed
            | InvalidPkPrivkey
            | Unknown(_) => FccStatus::KcmCryptoError,
        }
    }

    /// The InfoMessage prefix used when a store operation fails with this status
    /// (`fcc_get_kcm_error_string`, §4.3); empty for `Success`.
    pub fn info_prefix(self) -> &'static str {
        use KcmStatus::*;
        match self {
            Success => "",
            ItemNotFound => "Item does not exist:",
            MetaDataNotFound | MetaDataSizeError => "Meta data does not exist:",
            FileExist => "Data already exists:",
            KeyExist => "Desired generated key name already exists:",
            NotPermitted => "Operation not permitted:",
            StorageError => "File operation general error:",
            ItemIsEmpty => "Item data empty:",
            InvalidFileVersion => "File version invalid:",
            FileCorrupted => "File data corrupted:",
            FileNameCorrupted => "File name corrupted:",
            NotInitialized => "KCM not initialized:",
            CloseIncompleteChain => "Closing incomplete KCM chain:",
            CorruptedChainFile => "Corrupted certificate chain file:",
            InvalidNumOfCertInChain => {
                "Maximum chain length supported is 5. Chain length of the item is invalid:"
            }
            CertificateChainVerificationFailed => "Chain validation error:",
            FileNameTooLong => "File name too long:",
            UnsupportedHashMode => "Hash mode unsupported:",
            ParsingDerPrivateKey => "Private key parse failed:",
            ParsingDerPublicKey => "Public key parse failed:",
            PkKeyInvalidFormat => "Public key format invalid:",
            InvalidPkPubkey => "Public key invalid:",
            EcpInvalidKey => "EC key invalid:",
            PkKeyInvalidVersion => "Public key version invalid:",
            PkPasswordRequired => "Public key password required:",
            PrivateKeyVerificationFailed => "Private key verification failed:",
            PublicKeyVerificationFailed => "Public key verification failed:",
            PkUnknownPkAlg => "Public key algorithm unknown:",
            UnsupportedCurve => "Curve unsupported:",
            ParsingDerCert => "Certificate parse failed:",
            CertExpired => "Certificate expired:",
            CertFuture => "Certificate will be valid in the future:",
            CertMdAlg => "Certificate MD algorithm error:",
            CertPubKeyType => "Certificate public key type error:",
            CertPubKey => "Certificate public key error:",
            CertNotTrusted => "Certificate not trusted:",
            InvalidX509Attr | SetExtensionFailed => "X509 attribute invalid:",
            EntropyMissing => "Entropy missing error:",
            SelfGeneratedCertificateVerificationError => {
                "Self-generated certificate validation failed:"
            }
            FileNameInvalid => "File name invalid:",
            InvalidPkPrivkey => "Private key invalid:",
            Error
            | InvalidParameter
            | InsufficientBuffer
            | OutOfMemory
            | InvalidFileAccessMode
            | UnknownStorageError
            | InvalidExpectedLocation
            | VerifySignatureFailed
            | InvalidMdType
            | FailedToWriteSignature
            | FailedToWritePrivateKey
            | FailedToWritePublicKey
            | FailedToWriteCsr
            | InvalidOid
            | InvalidNameFormat
            | RbpError
            | Unknown(_) => GENERAL_ERROR_PREFIX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcc_status_table_is_complete_and_round_trips() {
        assert_eq!(FccStatus::ALL.len(), 38);
        for (i, s) in FccStatus::ALL.iter().enumerate() {
            assert_eq!(s.as_u32(), i as u32);
            assert_eq!(FccStatus::from_u32(i as u32), *s);
            assert!(s.name().starts_with("FCC_STATUS_"));
        }
        assert_eq!(FccStatus::from_u32(38), FccStatus::Unknown(38));
        assert_eq!(FccStatus::Unknown(99).as_u32(), 99);
        assert_eq!(FccStatus::BundleError.name(), "FCC_STATUS_BUNDLE_ERROR");
        assert_eq!(FccStatus::NotSupported.as_u32(), 37);
        assert_eq!(
            FccStatus::ItemNotExist.info_prefix(),
            "Item does not exist:"
        );
        assert_eq!(
            FccStatus::BundleInvalidScheme.info_prefix(),
            "General error:"
        );
        assert_eq!(
            FccStatus::TooManyCsrRequests.info_prefix(),
            TOO_MANY_CSR_REQUESTS_MESSAGE
        );
    }

    #[test]
    fn wire_and_kcm_tables() {
        assert_eq!(WireStatus::ALL.len(), 16);
        for (i, s) in WireStatus::ALL.iter().enumerate() {
            assert_eq!(s.as_u32(), i as u32);
        }
        assert_eq!(WireStatus::from_u32(9), WireStatus::FailedToProcessData);
        assert_eq!(KcmStatus::ALL.len(), 59);
        for (i, s) in KcmStatus::ALL.iter().enumerate() {
            assert_eq!(s.as_u32(), i as u32);
        }
        assert_eq!(
            KcmStatus::KeyExist.fcc_status(),
            FccStatus::KcmFileExistError
        );
        assert_eq!(
            KcmStatus::KeyExist.info_prefix(),
            "Desired generated key name already exists:"
        );
        assert_eq!(KcmStatus::RbpError.fcc_status(), FccStatus::StoreError);
        assert_eq!(
            KcmStatus::SelfGeneratedCertificateVerificationError.fcc_status(),
            FccStatus::CertificatePublicKeyCorrelationError
        );
        assert_eq!(
            KcmStatus::FileNameInvalid.fcc_status(),
            FccStatus::KcmStorageError
        );
        assert_eq!(
            KcmStatus::ParsingDerCert.fcc_status(),
            FccStatus::KcmCryptoError
        );
    }

    #[test]
    fn display_is_in_words() {
        let s = FccStatus::BundleError.to_string();
        assert!(s.contains("malformed") && s.contains("20"), "{s}");
        let w = WireStatus::FailedToProcessData.to_string();
        assert!(w.contains("failed to process"), "{w}");
        assert!(FccStatus::Unknown(77).to_string().contains("77"));
    }
}
