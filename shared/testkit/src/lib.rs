//! Real, throwaway PostgreSQL and Redis servers for tests.
//!
//! Each server gets its own temporary directory and its own port on 127.0.0.1, and is killed
//! and removed when dropped. A missing binary is an [`Error::MissingBinary`] that says how to
//! install it: tests `.expect()` it and fail loudly instead of being skipped.

mod error;
mod postgres;
mod process;
mod redis;
mod resp;
mod tls;

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

pub use error::Error;
pub use postgres::Postgres;
pub use redis::Redis;
pub use tls::TlsFiles;

/// The testkit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Finds `name` in `PATH`, then in `extra_dirs`; `hint` says how to install it if it is missing.
///
/// A `name` containing a `/` is taken as a path and only checked for being executable.
pub fn find_binary(name: &str, extra_dirs: &[PathBuf], hint: &str) -> Result<PathBuf> {
    let missing = || Error::MissingBinary {
        name: name.to_owned(),
        hint: hint.to_owned(),
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(missing())
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(missing)
}

/// The root of the tickmesh cargo workspace (the directory holding the workspace `Cargo.toml`).
///
/// Found at run time from the `CARGO_MANIFEST_DIR` that `cargo test` sets for the running test
/// (the nearest directory above it with a `Cargo.lock`), not from the path this crate was compiled
/// at: a target directory shared between clones (`.ci/run` keeps one outside the clone) hands a
/// compiled testkit to another clone, which must then read its own files.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", start.display()))
        .to_path_buf()
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not handed out before.
pub fn free_port() -> u16 {
    // Ephemeral ports are not handed out twice in a row in practice, but two servers started by
    // parallel tests of one binary must never race for the same one, so remember what we gave.
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("binding 127.0.0.1:0 must work on a machine that runs tests")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let err = find_binary(
            "tickmesh-no-such-binary",
            &[PathBuf::from("/nonexistent")],
            "install it with `apt-get install tickmesh-no-such-binary`",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tickmesh-no-such-binary not found: install it with \
             `apt-get install tickmesh-no-such-binary` (or run scripts/test.sh, \
             which installs everything the tests need)"
        );
    }

    #[test]
    fn sh_is_found_in_path() {
        let sh = find_binary("sh", &[], "it is always there").unwrap();
        assert!(sh.is_absolute() || sh.starts_with("."), "{sh:?}");
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }
}
