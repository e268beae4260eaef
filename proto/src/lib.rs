//! bongsu's wire formats: the `.proto` files, the code `tonic`/`prost` generate from them, and
//! the validated model types the rest of the workspace uses instead of raw protobuf.
//!
//! Everything that arrives from the network passes through a `TryFrom` in [`model`] before any
//! other crate sees it, so validation happens in exactly one place. This crate must not depend
//! on storage or on the Raft implementation.

pub mod errors;
pub mod model;
#[cfg(feature = "tls")]
pub mod tls;

/// Code generated from the `.proto` files, nested by package as prost expects.
pub mod pb {
    pub mod bongsu {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            include!(concat!(env!("OUT_DIR"), "/bongsu.v1.rs"));
        }
        pub mod internal {
            pub mod v1 {
                #![allow(clippy::all, missing_docs)]
                include!(concat!(env!("OUT_DIR"), "/bongsu.internal.v1.rs"));
            }
        }
    }
}

/// Internal APIs between nodes, and between gateways, tools and nodes (`bongsu.internal.v1`).
pub use pb::bongsu::internal::v1 as internal;
/// The public API (`bongsu.v1`).
pub use pb::bongsu::v1;

pub use errors::{ModelError, Result};
pub use model::ErrorCode;
