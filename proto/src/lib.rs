//! bongsu's wire formats: the `.proto` files, the code `tonic`/`prost` generate from them, and
//! the validated model types the rest of the workspace uses instead of raw protobuf.
//!
//! Everything that arrives from the network passes through a `TryFrom` in [`model`] before any
//! other crate sees it, so validation happens in exactly one place. This crate must not depend
//! on storage or on the Raft implementation.

pub mod errors;
pub mod model;

/// Code generated from `proto/bongsu/v1/*.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/bongsu.v1.rs"));
}

pub use errors::{ModelError, Result};
pub use model::ErrorCode;
