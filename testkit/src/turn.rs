//! Taking turns: the cluster, API and chaos tests and the benchmarks measure timing on a small
//! machine, and nextest runs tests in parallel processes, so they hold an exclusive lock on a
//! shared file while a cluster runs.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The file the node's cluster tests, the gateway's API tests and the benchmarks take turns
/// with: `target/tmp/bongsu-cluster-tests.lock`.
pub fn cluster_lock() -> Result<PathBuf> {
    Ok(crate::process::target_tmp()?.join("bongsu-cluster-tests.lock"))
}

/// Waits (blocking) for the exclusive lock on `path`, saying who waits when another holder
/// has it. The lock is held until the returned file is dropped.
pub fn lock(path: &Path, who: &str) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "{who}: waiting for {} (another run holds it)",
            path.display()
        );
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(f)
}

/// [`lock`] on [`cluster_lock`], from async code.
pub async fn take_turn(who: &str) -> Result<File> {
    let (path, who) = (cluster_lock()?, who.to_string());
    tokio::task::spawn_blocking(move || lock(&path, &who)).await?
}
