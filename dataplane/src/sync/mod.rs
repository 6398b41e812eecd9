//! The dataplane's side of controller → dataplane sync (`docs/sync.md`).

pub mod applier;
pub mod client;
pub use portcullis_contract::protocol;

pub use applier::{Applier, StateDir};
