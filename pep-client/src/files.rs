//! Writing results: atomic file writes, and the all-or-nothing install of `pal/` and `identity.json`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::error::CliError;

/// The file name the gateway's config agent reads.
pub const IDENTITY_FILE: &str = "identity.json";

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path`. Readers see the old file or the new one, never a mix; on failure
/// `path` is untouched and the temporary file is removed. The file gets mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let tmp = temp_file_with(parent_of(path), path, bytes)?;
    tmp.persist(path)
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e.error))?;
    Ok(())
}

/// A flushed temporary file with `bytes`, mode 0644, in `dir` (removed when dropped unpersisted).
fn temp_file_with(
    dir: &Path,
    target: &Path,
    bytes: &[u8],
) -> Result<tempfile::NamedTempFile, CliError> {
    let ctx = || format!("cannot write {}", target.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".pep-tmp-")
        .tempfile_in(dir)
        .map_err(|e| CliError::io(ctx(), e))?;
    tmp.write_all(bytes).map_err(|e| CliError::io(ctx(), e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| CliError::io(ctx(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| CliError::io(ctx(), e))?;
    Ok(tmp)
}

/// Where `provision` puts its results.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// The directory FCC's `pal/` becomes (must not exist unless `force`).
    pub pal_dest: PathBuf,
    /// The directory that receives `identity.json` (created if missing).
    pub identity_dir: PathBuf,
    /// Move existing destinations aside (suffix `.YYYYMMDDTHHMMSSZ`) instead of refusing.
    pub force: bool,
}

/// What [`InstallPlan::install`] did.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Where `pal/` went.
    pub pal: PathBuf,
    /// Where `identity.json` went.
    pub identity: PathBuf,
    /// Destinations that existed and were moved aside (`--force`): (original, new name).
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
}

/// One step to undo on failure.
#[derive(Debug)]
enum Undo {
    /// Rename `from` back to `to`.
    Rename { from: PathBuf, to: PathBuf },
    /// Remove a file we created.
    RemoveFile(PathBuf),
    /// Remove a directory tree we created.
    RemoveTree(PathBuf),
}

impl InstallPlan {
    /// The full path of the installed `identity.json`.
    pub fn identity_path(&self) -> PathBuf {
        self.identity_dir.join(IDENTITY_FILE)
    }

    /// The directory the FCC working directory is created in: next to `pal_dest`, so that moving
    /// `pal/` into place is a rename on one filesystem.
    pub fn staging_dir(&self) -> &Path {
        parent_of(&self.pal_dest)
    }

    /// Checks, before anything is started, that the install can happen: the parent of `pal_dest`
    /// exists, and (without `force`) neither destination exists.
    pub fn preflight(&self) -> Result<(), CliError> {
        let parent = self.staging_dir();
        if !parent.is_dir() {
            return Err(CliError::Usage(format!(
                "the parent directory of --pal-dest ({}) does not exist",
                parent.display()
            )));
        }
        if self.identity_dir.exists() && !self.identity_dir.is_dir() {
            return Err(CliError::Usage(format!(
                "--identity-dest {} is not a directory",
                self.identity_dir.display()
            )));
        }
        if !self.force {
            for path in [self.pal_dest.clone(), self.identity_path()] {
                if exists(&path) {
                    return Err(CliError::DestinationExists { path });
                }
            }
        }
        Ok(())
    }

    /// Moves `staged_pal` to `pal_dest` and writes `identity` to `identity_dir/identity.json`,
    /// all or nothing: on any failure every step already taken is undone.
    pub fn install(&self, staged_pal: &Path, identity: &[u8]) -> Result<Installed, CliError> {
        self.install_inner(staged_pal, identity, OffsetDateTime::now_utc(), None)
    }

    fn install_inner(
        &self,
        staged_pal: &Path,
        identity: &[u8],
        now: OffsetDateTime,
        fail_before_step: Option<usize>,
    ) -> Result<Installed, CliError> {
        let mut undo = Vec::new();
        let result = self.steps(staged_pal, identity, now, fail_before_step, &mut undo);
        match result {
            Ok(done) => Ok(done),
            Err(e) => {
                let problems = rollback(undo);
                let mut msg = e.to_string();
                if !problems.is_empty() {
                    msg = format!("{msg}; ROLLBACK INCOMPLETE: {}", problems.join("; "));
                }
                Err(match e {
                    CliError::DestinationExists { .. } | CliError::Fcc(_) => e,
                    _ => CliError::Install(msg),
                })
            }
        }
    }

    fn steps(
        &self,
        staged_pal: &Path,
        identity: &[u8],
        now: OffsetDateTime,
        fail_before_step: Option<usize>,
        undo: &mut Vec<Undo>,
    ) -> Result<Installed, CliError> {
        let fault = |step: usize| -> Result<(), CliError> {
            if fail_before_step == Some(step) {
                return Err(CliError::io(
                    format!("injected failure before step {step}"),
                    std::io::Error::other("test"),
                ));
            }
            Ok(())
        };
        if !staged_pal.is_dir() {
            return Err(CliError::Fcc(format!(
                "exited with status 0 but left no {} directory",
                staged_pal.display()
            )));
        }
        let identity_path = self.identity_path();

        // 1. The identity directory, if missing (we remove what we created on failure).
        fault(1)?;
        if !self.identity_dir.exists() {
            let mut first_missing = self.identity_dir.clone();
            while let Some(parent) = first_missing.parent() {
                if parent.as_os_str().is_empty() || parent.exists() {
                    break;
                }
                first_missing = parent.to_path_buf();
            }
            std::fs::create_dir_all(&self.identity_dir).map_err(|e| {
                CliError::io(format!("cannot create {}", self.identity_dir.display()), e)
            })?;
            undo.push(Undo::RemoveTree(first_missing));
        }

        // 2. identity.json under a temporary name next to its destination.
        fault(2)?;
        let tmp = temp_file_with(&self.identity_dir, &identity_path, identity)?;

        // 3. Existing destinations: refuse, or move aside with --force.
        fault(3)?;
        let mut moved_aside = Vec::new();
        for dest in [&self.pal_dest, &identity_path] {
            if !exists(dest) {
                continue;
            }
            if !self.force {
                return Err(CliError::DestinationExists { path: dest.clone() });
            }
            let aside = aside_name(dest, now);
            std::fs::rename(dest, &aside).map_err(|e| {
                CliError::io(
                    format!(
                        "cannot move {} aside to {}",
                        dest.display(),
                        aside.display()
                    ),
                    e,
                )
            })?;
            undo.push(Undo::Rename {
                from: aside.clone(),
                to: dest.clone(),
            });
            moved_aside.push((dest.clone(), aside));
        }

        // 4. pal/ into place (a rename: the staging dir is on the same filesystem). It holds the
        // device's private key: owner-only before it appears at its destination.
        fault(4)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(staged_pal, std::fs::Permissions::from_mode(0o700)).map_err(
                |e| {
                    CliError::io(
                        format!("cannot restrict {} to 0700", staged_pal.display()),
                        e,
                    )
                },
            )?;
        }
        std::fs::rename(staged_pal, &self.pal_dest).map_err(|e| {
            CliError::io(
                format!(
                    "cannot move {} to {}",
                    staged_pal.display(),
                    self.pal_dest.display()
                ),
                e,
            )
        })?;
        undo.push(Undo::Rename {
            from: self.pal_dest.clone(),
            to: staged_pal.to_path_buf(),
        });

        // 5. identity.json into place, never over an existing file.
        fault(5)?;
        tmp.persist_noclobber(&identity_path).map_err(|e| {
            CliError::io(format!("cannot write {}", identity_path.display()), e.error)
        })?;
        undo.push(Undo::RemoveFile(identity_path.clone()));

        fault(6)?;
        Ok(Installed {
            pal: self.pal_dest.clone(),
            identity: identity_path,
            moved_aside,
        })
    }
}

/// Undoes `steps` in reverse order; returns what could not be undone.
fn rollback(steps: Vec<Undo>) -> Vec<String> {
    let mut problems = Vec::new();
    for step in steps.into_iter().rev() {
        tracing::debug!(?step, "rolling back");
        let r = match &step {
            Undo::Rename { from, to } => std::fs::rename(from, to),
            Undo::RemoveFile(p) => std::fs::remove_file(p),
            Undo::RemoveTree(p) => std::fs::remove_dir_all(p),
        };
        if let Err(e) = r {
            problems.push(format!("{step:?}: {e}"));
        }
    }
    problems
}

/// `path` exists (as anything, including a dangling symlink).
fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// `dest.YYYYMMDDTHHMMSSZ`, with `-N` added if that name is taken too.
fn aside_name(dest: &Path, now: OffsetDateTime) -> PathBuf {
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let base = format!("{}.{stamp}", dest.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while exists(&candidate) {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path) -> PathBuf {
        let pal = dir.join("work").join("pal");
        std::fs::create_dir_all(&pal).unwrap();
        std::fs::write(pal.join("Cert_mbed.BootstrapDeviceCert"), b"cert").unwrap();
        pal
    }

    fn plan_in(dir: &Path, force: bool) -> InstallPlan {
        InstallPlan {
            pal_dest: dir.join("mcc_config"),
            identity_dir: dir.join("edge_gw_config"),
            force,
        }
    }

    /// Every path under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(tree(dir.path()), vec!["identity.json"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn atomic_write_to_missing_directory_fails_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("identity.json");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("nope/identity.json"), "{err}");
    }

    #[test]
    fn install_moves_pal_and_writes_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pal = staged(dir.path());
        let plan = plan_in(dir.path(), false);
        plan.preflight().unwrap();
        let done = plan.install(&pal, b"{}").unwrap();
        assert_eq!(done.pal, dir.path().join("mcc_config"));
        assert_eq!(std::fs::read(done.identity).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(dir.path().join("mcc_config/Cert_mbed.BootstrapDeviceCert")).unwrap(),
            b"cert"
        );
        assert!(!pal.exists());
        assert!(done.moved_aside.is_empty());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&done.pal).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    #[test]
    fn existing_destinations_are_refused_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let pal = staged(dir.path());
        std::fs::create_dir(dir.path().join("mcc_config")).unwrap();
        let plan = plan_in(dir.path(), false);
        assert!(matches!(
            plan.preflight(),
            Err(CliError::DestinationExists { .. })
        ));
        let before = tree(dir.path());
        let err = plan.install(&pal, b"{}").unwrap_err();
        assert!(matches!(err, CliError::DestinationExists { .. }), "{err}");
        assert_eq!(tree(dir.path()), before);

        let dir = tempfile::tempdir().unwrap();
        let pal = staged(dir.path());
        std::fs::create_dir(dir.path().join("edge_gw_config")).unwrap();
        std::fs::write(dir.path().join("edge_gw_config/identity.json"), b"old").unwrap();
        let plan = plan_in(dir.path(), false);
        let err = plan.preflight().unwrap_err().to_string();
        assert!(
            err.contains("identity.json") && err.contains("--force"),
            "{err}"
        );
        let before = tree(dir.path());
        assert!(plan.install(&pal, b"{}").is_err());
        assert_eq!(tree(dir.path()), before);
    }

    #[test]
    fn force_moves_existing_destinations_aside_with_a_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let pal = staged(dir.path());
        std::fs::create_dir(dir.path().join("mcc_config")).unwrap();
        std::fs::create_dir(dir.path().join("edge_gw_config")).unwrap();
        std::fs::write(dir.path().join("edge_gw_config/identity.json"), b"old").unwrap();
        let plan = plan_in(dir.path(), true);
        plan.preflight().unwrap();
        let now = time::macros::datetime!(2026-11-28 18:30:05 UTC);
        let done = plan.install_inner(&pal, b"new", now, None).unwrap();
        assert_eq!(done.moved_aside.len(), 2);
        assert!(dir.path().join("mcc_config.20261128T183005Z").is_dir());
        assert_eq!(
            std::fs::read(
                dir.path()
                    .join("edge_gw_config/identity.json.20261128T183005Z")
            )
            .unwrap(),
            b"old"
        );
        assert_eq!(
            std::fs::read(dir.path().join("edge_gw_config/identity.json")).unwrap(),
            b"new"
        );
    }

    #[test]
    fn failure_at_any_step_rolls_everything_back() {
        for force in [false, true] {
            for step in 1..=6 {
                let dir = tempfile::tempdir().unwrap();
                let pal = staged(dir.path());
                if force {
                    std::fs::create_dir(dir.path().join("mcc_config")).unwrap();
                    std::fs::write(dir.path().join("mcc_config/old"), b"old").unwrap();
                }
                let before = tree(dir.path());
                let plan = plan_in(dir.path(), force);
                let err = plan
                    .install_inner(&pal, b"{}", OffsetDateTime::now_utc(), Some(step))
                    .unwrap_err();
                assert!(matches!(err, CliError::Install(_)), "step {step}: {err}");
                assert!(!err.to_string().contains("ROLLBACK INCOMPLETE"), "{err}");
                assert_eq!(tree(dir.path()), before, "step {step}, force {force}");
            }
        }
    }

    #[test]
    fn missing_pal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_in(dir.path(), false);
        let err = plan
            .install(&dir.path().join("work/pal"), b"{}")
            .unwrap_err();
        assert!(err.to_string().contains("left no"), "{err}");
        assert!(!dir.path().join("edge_gw_config").exists());
    }
}
