//! Rust types of `ApisixRoute` and `ApisixConsumer` (`apisix.apache.org/v2`).
//!
//! The CRD types, `crdgen` and the drift test arrive with the translation issue; this crate
//! exists now so the workspace has its final shape.
#![deny(rust_2018_idioms)]

/// The API group of the APISIX custom resources Portcullis reads.
pub const GROUP: &str = "apisix.apache.org";
/// The API version of the APISIX custom resources Portcullis reads.
pub const VERSION: &str = "v2";
