//! Versions, so that releases can change what they store and send, and a cluster can be
//! upgraded one node at a time (ARCHITECTURE.md invariant 11).
//!
//! - Every stored value starts with its format ([`VALUE_FORMAT`], see [`crate::codec`]); a
//!   value from a newer release is refused by name, never misread.
//! - The store records its own format ([`STORE_FORMAT`]); a store of release 1 (values without
//!   a format) is rewritten once when a newer release opens it.
//! - Snapshot files ([`crate::snapshot`]) and transport frames carry a format.
//! - The *cluster version* is what the cluster as a whole may do. It lives in the meta group
//!   and only rises, by `SetClusterVersion`, which the meta leader proposes once every node
//!   says it runs a binary of that version. A command a release adds, or a changed apply rule,
//!   is used only once the cluster version has it ([`crate::Command::min_cluster_version`]),
//!   so an older node never meets a command it cannot read. A binary refuses to start in a
//!   cluster whose version is above its own [`BINARY_VERSION`].

/// The first byte of every value this release writes.
pub const VALUE_FORMAT: u8 = 1;

/// The store's format: 2 since values carry [`VALUE_FORMAT`]; 1 (never written, the absence
/// of a record) for the release before.
pub const STORE_FORMAT: u32 = 2;

/// Transport frames this release sends; it reads this and the unversioned frames of release 1.
pub const FRAME_FORMAT: u32 = 2;

/// Release 1: no versions anywhere.
pub const CLUSTER_V1: u32 = 1;
/// Versioned values, snapshots and frames; the commands `SetClusterVersion` and `Prune`.
pub const CLUSTER_V2: u32 = 2;

/// The highest cluster version this binary runs.
pub const BINARY_VERSION: u32 = CLUSTER_V2;
/// The lowest cluster version this binary runs in: it upgrades a cluster of that release.
pub const MIN_CLUSTER_VERSION: u32 = CLUSTER_V1;
