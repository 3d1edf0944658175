//! Reading the files that hold secrets (the cloud API key, the hooks' HMAC secrets): one read and
//! one permission check; each caller keeps its own rule for the line it takes and its messages.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::path_for_people;

/// A secret file that cannot be read. Never holds the secret.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path_for_people(.path))]
pub struct SecretReadError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl SecretReadError {
    fn of(path: &Path) -> impl FnOnce(std::io::Error) -> SecretReadError + '_ {
        move |source| SecretReadError {
            path: path.to_owned(),
            source,
        }
    }
}

/// The bytes of the secret file `path`, wiped when dropped.
pub(crate) fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretReadError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(SecretReadError::of(path))
}

/// The permission bits of `path` when group or others may access it, `None` when only its owner
/// may (and always off Unix, where there are no such bits).
pub(crate) fn loose_mode(path: &Path) -> Result<Option<u32>, SecretReadError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(SecretReadError::of(path))?
            .permissions()
            .mode();
        Ok((mode & 0o077 != 0).then_some(mode & 0o777))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}
