//! Portcullis dataplane: routes, authenticates and proxies HTTP requests and WebSocket
//! handshakes over a route table that can be swapped without touching live connections.
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod decision;
pub mod duration;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod request;
pub mod runtime;
pub mod sync;
pub mod table;
pub mod table_file;
pub mod tls;
