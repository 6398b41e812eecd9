//! Portcullis dataplane: routes, authenticates and proxies HTTP requests and WebSocket
//! handshakes over a route table that can be swapped without touching live connections.
#![deny(rust_2018_idioms)]

// The contract, re-exported under the paths the dataplane has always used.
pub use portcullis_contract::{auth, decision, duration, model, plugins, request, table};

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod sync;
pub mod table_file;
