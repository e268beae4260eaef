//! Failpoints in the write path, for chaos tests. They are compiled into every build but can
//! be switched on only in a process that armed them first: `bongsu-node-chaos` does at start;
//! `bongsu-node` never does, so no admin call can turn them on there. Disarmed, every hook is
//! one relaxed atomic load.
//!
//! - `log_before_fsync`: the group commit's write (with fsync) fails. The writer is poisoned and
//!   the node must fail-stop.
//! - `log_slow_fsync`: every synced write takes 200 ms longer, as on a dying disk.
//! - `outbox_slow_delivery`: every outbox delivery waits [`OUTBOX_DELAY`] before it is sent,
//!   as when the users' shards are slow to commit. The node's outbox pump asks
//!   [`outbox_delay`] and waits without blocking a thread; tests use it to hold a membership
//!   change back from the user's shard while the conversation's shard goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chaos_rs::__failpoint_internal::{disable_failpoint, enable_failpoint, is_failpoint_enabled};

/// The failpoints this crate knows, by name.
pub const NAMES: [&str; 3] = ["log_before_fsync", "log_slow_fsync", "outbox_slow_delivery"];

/// How much longer every synced write takes under `log_slow_fsync`.
const SLOW_FSYNC: Duration = Duration::from_millis(200);

/// How long `outbox_slow_delivery` holds each delivery back.
pub const OUTBOX_DELAY: Duration = Duration::from_secs(1);

static ARMED: AtomicBool = AtomicBool::new(false);

/// Lets [`set`] switch failpoints on in this process, for good. Only chaos builds call it.
pub fn arm() {
    ARMED.store(true, Ordering::Relaxed);
}

/// Whether this process armed its failpoints (and the node's fault rules).
#[inline]
pub fn armed() -> bool {
    ARMED.load(Ordering::Relaxed)
}

/// How long the caller is to wait before an outbox delivery: `None` unless
/// `outbox_slow_delivery` is on.
#[inline]
pub fn outbox_delay() -> Option<Duration> {
    (armed() && is_failpoint_enabled("outbox_slow_delivery")).then_some(OUTBOX_DELAY)
}

/// Runs just before a synced batch is written.
#[inline]
pub(crate) fn log_before_fsync() -> Result<(), String> {
    if !armed() {
        return Ok(());
    }
    // chaos-rs's own macros compile to nothing unless the calling crate has a `chaos`
    // feature; its registry is used directly. This runs on the group commit's writer thread,
    // so a blocking sleep is the slow disk it stands for.
    if is_failpoint_enabled("log_slow_fsync") {
        std::thread::sleep(SLOW_FSYNC);
    }
    if is_failpoint_enabled("log_before_fsync") {
        return Err("failpoint log_before_fsync: injected fsync failure".to_string());
    }
    Ok(())
}

/// Switches a failpoint on or off; `Err` for an unknown name or in a process that did not
/// [`arm`] them.
pub fn set(name: &str, enabled: bool) -> Result<(), String> {
    if !armed() {
        return Err(format!(
            "failpoint {name:?}: failpoints are off in this binary (only bongsu-node-chaos has them)"
        ));
    }
    let Some(tag) = NAMES.iter().find(|n| **n == name) else {
        return Err(format!(
            "unknown failpoint {name:?}; known: {}",
            NAMES.join(", ")
        ));
    };
    if enabled {
        enable_failpoint(tag);
    } else {
        disable_failpoint(tag);
    }
    Ok(())
}
