//! Portcullis's contract: what the controller and the dataplanes agree on, with no I/O. The
//! route table ([`model`], plain data; [`table`], its validation, compilation and lookup), the
//! credentials and their checks ([`auth`]), what a request is made of ([`request`]), the
//! decision for a request ([`decision`]), the sync messages ([`protocol`]).
//!
//! Dependencies run one way: `model` ← `auth` ← `table` ← `decision`; `request` is read by
//! `auth`, `table` and `decision`.
#![deny(rust_2018_idioms)]

pub mod auth;
pub mod client_cert;
pub mod decision;
pub mod delta;
pub mod duration;
/// Fixtures for tests, here and in `portcullis-tests` (feature `fixtures`).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod frames;
pub mod model;
pub mod outcome;
pub mod plugins;
pub mod protocol;
pub mod request;
pub mod table;
