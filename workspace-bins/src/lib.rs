//! The binaries of the workspace's *other* packages, for integration tests that run them.
//!
//! Cargo gives a test only its own package's binaries (`CARGO_BIN_EXE_*`); artifact dependencies,
//! which would give others', are unstable. So they are taken from next to one of the test's own
//! binaries (same profile, same target directory, which respects `CARGO_TARGET_DIR`). If any is
//! missing or older than a source file it is built from (e.g. `cargo test -p pep-client` after
//! editing pep-server), they are built with one nested `cargo build` in that profile. After
//! `cargo test --workspace` they are already fresh and nothing is rebuilt: a nested build would
//! resolve features without the dev-dependencies and recompile several crates for nothing.
//! `PEP_TEST_BIN_DIR` names a directory of binaries built elsewhere instead.
//!
//! A binary is built from the package of the same name, except those in [`PACKAGE_OF`]
//! (`pep-fleet` comes from `pep-loadgen`).
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

pub mod softhsm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The repository root (the workspace's directory): the parent of the running test's package
/// directory, which cargo names at run time. The directory this crate was compiled in is only the
/// fallback: a target directory copied from another checkout keeps that checkout's path when
/// cargo finds the copied build fresh, and the nested build would then build the other checkout.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    package.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The workspace's binaries whose package has another name: (binary, package).
pub const PACKAGE_OF: [(&str, &str); 1] = [("pep-fleet", "pep-loadgen")];

/// The package that builds `binary`.
pub fn package_of(binary: &str) -> &str {
    PACKAGE_OF
        .iter()
        .find(|(bin, _)| *bin == binary)
        .map_or(binary, |(_, package)| package)
}

/// The directory holding the binaries named `binaries` (built from the package of the same name
/// or the one [`PACKAGE_OF`] gives), fresh against `Cargo.toml`, `Cargo.lock` and the crate
/// directories `sources`. `own_binary` is a binary of the calling test's package
/// (`env!("CARGO_BIN_EXE_…")`).
///
/// Panics (it is test support) when the nested build fails, naming the command.
pub fn binaries_dir(own_binary: &Path, binaries: &[&str], sources: &[&str]) -> PathBuf {
    if let Some(dir) = std::env::var_os("PEP_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let profile_dir = own_binary
        .parent()
        .expect("a test binary lives in a profile directory")
        .to_path_buf();
    if fresh(&profile_dir, binaries, sources) {
        return profile_dir;
    }
    let mut args = Vec::new();
    let mut packages: Vec<&str> = binaries.iter().map(|bin| package_of(bin)).collect();
    packages.sort_unstable();
    packages.dedup();
    for package in packages {
        args.extend(["-p", package]);
    }
    nested_build(&profile_dir, &args);
    profile_dir
}

/// Runs `cargo build --quiet <args>` in the profile and target directory of `profile_dir`.
///
/// Panics (it is test support) when the build fails, naming the command.
fn nested_build(profile_dir: &Path, args: &[&str]) {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let target_dir = profile_dir
        .parent()
        .expect("a profile directory lives in a target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet"])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}

/// The profile directory (`target/debug`, …) of the running test binary, which lives in its
/// `deps/`: for packages without a binary of their own to pass to [`binaries_dir`].
pub fn current_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in <profile>/deps")
        .to_path_buf()
}

/// The example `name` of `package`, fresh against `Cargo.toml`, `Cargo.lock` and the crate
/// directories `sources`: `cargo test -p <package>` has built it next to the test (in
/// `<profile>/examples`); otherwise (`cargo test --test …`, or edited sources) it is built with one
/// nested `cargo build --example`.
///
/// Panics (it is test support) when the nested build fails, naming the command.
pub fn example(package: &str, name: &str, sources: &[&str]) -> PathBuf {
    let profile_dir = current_profile_dir();
    let examples = profile_dir.join("examples");
    let path = examples.join(name);
    if fresh(&examples, &[name], sources) {
        return path;
    }
    nested_build(&profile_dir, &["-p", package, "--example", name]);
    path
}

/// Every binary exists and is newer than every file of the sources.
fn fresh(profile_dir: &Path, binaries: &[&str], sources: &[&str]) -> bool {
    let root = repo_root();
    let mut newest_source = SystemTime::UNIX_EPOCH;
    for path in ["Cargo.toml", "Cargo.lock"].iter().chain(sources) {
        newest(&root.join(path), &mut newest_source);
    }
    binaries.iter().all(|bin| {
        std::fs::metadata(profile_dir.join(bin))
            .and_then(|m| m.modified())
            .is_ok_and(|built| built > newest_source)
    })
}

fn newest(path: &Path, acc: &mut SystemTime) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newest(&entry.path(), acc);
        }
    } else if let Ok(modified) = meta.modified() {
        *acc = (*acc).max(modified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repo_root_is_this_checkout() {
        let root = repo_root();
        assert!(root.join("workspace-bins/src/lib.rs").is_file(), "{root:?}");
        assert!(root.join("Cargo.lock").is_file(), "{root:?}");
    }

    #[test]
    fn binaries_are_built_from_their_package() {
        assert_eq!(package_of("pep-fleet"), "pep-loadgen");
        assert_eq!(package_of("pep-server"), "pep-server");
        assert_eq!(package_of("fake-fcc"), "fake-fcc");
    }

    #[test]
    fn a_binary_older_than_its_sources_is_stale_and_a_newer_one_fresh() {
        let dir = std::env::temp_dir().join(format!("workspace-bins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("some-tool");
        // Older than any source: the epoch.
        std::fs::write(&bin, b"").unwrap();
        let file = std::fs::File::options().write(true).open(&bin).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        assert!(!fresh(&dir, &["some-tool"], &["workspace-bins"]));
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(fresh(&dir, &["some-tool"], &["workspace-bins"]));
        assert!(!fresh(&dir, &["some-tool", "missing-tool"], &[]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
