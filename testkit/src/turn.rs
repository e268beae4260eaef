//! Taking turns: the cluster, API and chaos tests and the benchmarks measure timing on a small
//! machine, and nextest runs tests in parallel processes, so they hold an exclusive lock on a
//! shared file while a cluster runs.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long this process has waited for its turn (finished waits, and since when it waits
/// now), which [`crate::bounded`] does not count against a test's time limit.
static WAITED: std::sync::Mutex<(Duration, Option<Instant>)> =
    std::sync::Mutex::new((Duration::ZERO, None));

/// How long this process has waited for turns so far, the wait going on included.
pub fn waited() -> Duration {
    let w = WAITED.lock().unwrap_or_else(|e| e.into_inner());
    w.0 + w.1.map_or(Duration::ZERO, |since| since.elapsed())
}

fn waiting(now: bool) {
    let mut w = WAITED.lock().unwrap_or_else(|e| e.into_inner());
    match (now, w.1.take()) {
        (true, _) => w.1 = Some(Instant::now()),
        (false, Some(since)) => w.0 += since.elapsed(),
        (false, None) => {}
    }
}

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
        waiting(true);
        // SAFETY: as above.
        let locked = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0;
        waiting(false);
        if !locked {
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
