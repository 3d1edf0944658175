//! What the simulated device has stored, in memory and (optionally) as one readable file per item.
//!
//! On-disk layout (`--storage DIR`, default `./pal`): one file per item, named by the FCC's
//! logical item name, holding the raw item bytes (DER for keys and certificates, the exact stored
//! bytes for config params):
//!
//! | File | Content |
//! |---|---|
//! | `DIR/PrvKey_<name>` | private key DER (mode 0600) |
//! | `DIR/PubKey_<name>` | public key DER (SubjectPublicKeyInfo) |
//! | `DIR/Cert_<name>` | certificate DER, or element 0 (the leaf) of a chain |
//! | `DIR/Crt1_<name>` .. `DIR/Crt4_<name>` | chain elements 1..4 |
//! | `DIR/CfgParam_<name>` | config param bytes (e.g. 4 LE bytes for `mbed.UseBootstrap`) |
//!
//! Unlike the genuine ESFS storage nothing is encrypted or hashed into file names: the point is
//! that tests and installers can inspect what was injected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::FakeFccError;

/// The four item namespaces of the key/config manager (the same name may exist once per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// `Keys` with `ECCPrivate`, and keys generated for `CsrReqs`.
    PrivateKey,
    /// `Keys` with `ECCPublic`.
    PublicKey,
    /// `Certificates` and `CertificateChains`.
    Certificate,
    /// `ConfigParams`.
    ConfigParam,
}

impl ItemKind {
    /// The logical-name prefix the FCC uses for this kind (and the on-disk file prefix).
    pub fn prefix(self) -> &'static str {
        match self {
            ItemKind::PrivateKey => "PrvKey_",
            ItemKind::PublicKey => "PubKey_",
            ItemKind::Certificate => "Cert_",
            ItemKind::ConfigParam => "CfgParam_",
        }
    }
}

/// Everything stored in one factory session. Private key bytes are wiped from memory on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// Private keys by name (DER as received, or SEC1 DER for device-generated keys).
    pub private_keys: BTreeMap<String, Vec<u8>>,
    /// Public keys by name (SubjectPublicKeyInfo DER).
    pub public_keys: BTreeMap<String, Vec<u8>>,
    /// Certificates by name: the chain, leaf first; a single certificate is a chain of one.
    pub certificates: BTreeMap<String, Vec<Vec<u8>>>,
    /// Config params by name, exactly the bytes the FCC stores.
    pub config_params: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bytes never appear in Debug output; names and sizes are enough to debug a test.
        let sizes = |m: &BTreeMap<String, Vec<u8>>| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect::<Vec<_>>()
        };
        f.debug_struct("Storage")
            .field(
                "private_keys",
                &self.private_keys.keys().collect::<Vec<_>>(),
            )
            .field("public_keys", &sizes(&self.public_keys))
            .field(
                "certificates",
                &self
                    .certificates
                    .iter()
                    .map(|(k, v)| (k, v.len()))
                    .collect::<Vec<_>>(),
            )
            .field("config_params", &self.config_params)
            .finish()
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for key in self.private_keys.values_mut() {
            key.zeroize();
        }
    }
}

impl Storage {
    /// Whether an item of `kind` named `name` exists.
    pub fn contains(&self, kind: ItemKind, name: &str) -> bool {
        match kind {
            ItemKind::PrivateKey => self.private_keys.contains_key(name),
            ItemKind::PublicKey => self.public_keys.contains_key(name),
            ItemKind::Certificate => self.certificates.contains_key(name),
            ItemKind::ConfigParam => self.config_params.contains_key(name),
        }
    }

    /// The number of stored items (a chain counts once).
    pub fn len(&self) -> usize {
        self.private_keys.len()
            + self.public_keys.len()
            + self.certificates.len()
            + self.config_params.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A config param's bytes, if stored.
    pub fn config(&self, name: &str) -> Option<&[u8]> {
        self.config_params.get(name).map(Vec::as_slice)
    }

    /// A config param as text (lossy), if stored.
    pub fn config_text(&self, name: &str) -> Option<String> {
        self.config(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// One change to the item files of a storage directory, as a [`Device`](crate::Device) lists
/// it in its [`Outcome`](crate::Outcome) (the device does no I/O); [`DiskStore::apply`] makes
/// it. Private-key bytes are wiped from memory on drop and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageWrite {
    /// Remove every item file (the first valid frame of a session).
    Wipe,
    /// Write one item file: chain element `index` (0 = the item itself) of `name`.
    Put {
        /// The item's namespace.
        kind: ItemKind,
        /// The item name.
        name: String,
        /// The chain element (0 for anything but chain elements 1..4).
        index: usize,
        /// The bytes, exactly as stored.
        data: zeroize::Zeroizing<Vec<u8>>,
    },
    /// Remove one item file (a key whose CSR failed).
    Remove {
        /// The item's namespace.
        kind: ItemKind,
        /// The item name.
        name: String,
        /// The chain element.
        index: usize,
    },
}

impl std::fmt::Debug for StorageWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageWrite::Wipe => f.write_str("Wipe"),
            StorageWrite::Put {
                kind,
                name,
                index,
                data,
            } => f
                .debug_struct("Put")
                .field("kind", kind)
                .field("name", name)
                .field("index", index)
                .field("len", &data.len())
                .finish(),
            StorageWrite::Remove { kind, name, index } => f
                .debug_struct("Remove")
                .field("kind", kind)
                .field("name", name)
                .field("index", index)
                .finish(),
        }
    }
}

/// The item files under a storage directory.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
}

/// File-name prefixes of every item file (for wiping).
const FILE_PREFIXES: [&str; 8] = [
    "PrvKey_",
    "PubKey_",
    "Cert_",
    "Crt1_",
    "Crt2_",
    "Crt3_",
    "Crt4_",
    "CfgParam_",
];

impl DiskStore {
    /// A store rooted at `dir` (created on the first write or wipe).
    pub fn new(dir: impl Into<PathBuf>) -> DiskStore {
        DiskStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding chain element `index` (0 = the item itself) of `name`.
    pub fn path(&self, kind: ItemKind, name: &str, index: usize) -> PathBuf {
        let prefix = match (kind, index) {
            (ItemKind::Certificate, 1..=4) => format!("Crt{index}_"),
            _ => kind.prefix().to_owned(),
        };
        self.dir.join(format!("{prefix}{name}"))
    }

    /// Removes every item file (the FCC's `fcc_storage_delete` on the first valid frame).
    /// Files that are not item files are left alone.
    pub fn wipe(&self) -> Result<(), FakeFccError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| FakeFccError::storage(&self.dir, e))?;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| FakeFccError::storage(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FakeFccError::storage(&self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if FILE_PREFIXES.iter().any(|p| name.starts_with(p)) && entry.path().is_file() {
                std::fs::remove_file(entry.path())
                    .map_err(|e| FakeFccError::storage(&entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// Writes one item file; private keys get mode 0600 before any byte is written.
    pub fn write(
        &self,
        kind: ItemKind,
        name: &str,
        index: usize,
        data: &[u8],
    ) -> Result<(), FakeFccError> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir).map_err(|e| FakeFccError::storage(&self.dir, e))?;
        let path = self.path(kind, name, index);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if kind == ItemKind::PrivateKey {
                0o600
            } else {
                0o644
            });
        }
        let mut file = options
            .open(&path)
            .map_err(|e| FakeFccError::storage(&path, e))?;
        file.write_all(data)
            .map_err(|e| FakeFccError::storage(&path, e))?;
        Ok(())
    }

    /// Removes one item file (a CSR key deleted after a failed CSR); a missing file is fine.
    pub fn remove(&self, kind: ItemKind, name: &str, index: usize) -> Result<(), FakeFccError> {
        let path = self.path(kind, name, index);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(FakeFccError::storage(&path, e))
            }
            _ => Ok(()),
        }
    }

    /// Makes one change a device listed.
    pub fn apply(&self, write: &StorageWrite) -> Result<(), FakeFccError> {
        match write {
            StorageWrite::Wipe => self.wipe(),
            StorageWrite::Put {
                kind,
                name,
                index,
                data,
            } => self.write(*kind, name, *index, data),
            StorageWrite::Remove { kind, name, index } => self.remove(*kind, name, *index),
        }
    }
}
