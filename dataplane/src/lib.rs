//! Portcullis dataplane: routes, authenticates and proxies HTTP requests and WebSocket
//! handshakes over a route table that can be swapped without touching live connections.
#![deny(rust_2018_idioms)]

pub mod auth;
pub mod request;
pub mod table;
