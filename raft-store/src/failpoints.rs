//! Failpoints in the write path, compiled only with the `chaos` feature and switched on at run
//! time (the node's admin API does it for chaos tests). Without the feature every hook is an
//! empty inline function.
//!
//! - `log_before_fsync`: the group commit's write (with fsync) fails. The writer is poisoned and
//!   the node must fail-stop.
//! - `log_slow_fsync`: every synced write takes 200 ms longer, as on a dying disk.
//! - `outbox_slow_delivery`: every outbox delivery waits [`OUTBOX_DELAY`] before it is sent,
//!   as when the users' shards are slow to commit. The node's outbox pump asks
//!   [`outbox_delay`] and waits without blocking a thread; tests use it to hold a membership
//!   change back from the user's shard while the conversation's shard goes on.

use std::time::Duration;

/// The failpoints this crate knows, by name.
pub const NAMES: [&str; 3] = ["log_before_fsync", "log_slow_fsync", "outbox_slow_delivery"];

/// How long `outbox_slow_delivery` holds each delivery back.
pub const OUTBOX_DELAY: Duration = Duration::from_secs(1);

/// How long the caller is to wait before an outbox delivery: `None` unless
/// `outbox_slow_delivery` is on.
#[inline]
pub fn outbox_delay() -> Option<Duration> {
    chaos_rs_hooks::outbox_slow().then_some(OUTBOX_DELAY)
}

/// Runs just before a synced batch is written.
#[inline]
pub(crate) fn log_before_fsync() -> Result<(), String> {
    chaos_rs_hooks::before_fsync()
}

/// Switches a failpoint on or off; `Err` for an unknown name or a build without `chaos`.
pub fn set(name: &str, enabled: bool) -> Result<(), String> {
    chaos_rs_hooks::set(name, enabled)
}

/// Whether this build has failpoints at all.
pub const ENABLED: bool = cfg!(feature = "chaos");

#[cfg(feature = "chaos")]
mod chaos_rs_hooks {
    use chaos_rs::__failpoint_internal::{disable_failpoint, enable_failpoint};

    pub fn before_fsync() -> Result<(), String> {
        chaos_rs::maybe_sleep!("log_slow_fsync", 200);
        chaos_rs::maybe_fail!(
            "log_before_fsync",
            "failpoint log_before_fsync: injected fsync failure".to_string()
        );
        Ok(())
    }

    pub fn outbox_slow() -> bool {
        chaos_rs::__failpoint_internal::is_failpoint_enabled("outbox_slow_delivery")
    }

    pub fn set(name: &str, enabled: bool) -> Result<(), String> {
        let Some(tag) = super::NAMES.iter().find(|n| **n == name) else {
            return Err(format!(
                "unknown failpoint {name:?}; known: {}",
                super::NAMES.join(", ")
            ));
        };
        if enabled {
            enable_failpoint(tag);
        } else {
            disable_failpoint(tag);
        }
        Ok(())
    }
}

#[cfg(not(feature = "chaos"))]
mod chaos_rs_hooks {
    #[inline]
    pub fn before_fsync() -> Result<(), String> {
        Ok(())
    }

    #[inline]
    pub fn outbox_slow() -> bool {
        false
    }

    pub fn set(name: &str, _enabled: bool) -> Result<(), String> {
        Err(format!(
            "failpoint {name:?}: this build has no failpoints (build with the `chaos` feature)"
        ))
    }
}
