//! The dataplane's side of controller → dataplane sync (`docs/sync.md`).

pub mod applier;
pub mod client;
pub mod protocol;

pub use applier::{Applier, StateDir};
