//! The dataplane's side of controller → dataplane sync (DESIGN.md §3, `docs/sync.md`).

pub mod applier;
pub mod client;
pub mod protocol;

pub use applier::{Applier, StateDir};
