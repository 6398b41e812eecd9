//! Portcullis controller: providers, snapshot, translation, sync server.
//!
//! Translation and the providers arrive with their own issues; the crate exists now so the
//! workspace has its final shape and the dependency on the dataplane's table types is real.
#![deny(rust_2018_idioms)]

pub use portcullis_dataplane::table::RouteTable;
