//! Portcullis controller: providers feed a [`snapshot::Snapshot`] of cluster objects; the pure
//! [`translate::translate`] turns it into one route table and the `Accepted` status of every
//! object; the [`sync`] hub distributes the table to dataplanes.
#![deny(rust_2018_idioms)]

pub mod cluster;
pub mod files;
pub mod provider;
pub mod snapshot;
pub mod standalone;
pub mod status;
pub mod sync;
pub mod translate;

pub use portcullis_contract::table::RouteTable;
