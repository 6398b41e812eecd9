//! What both Portcullis binaries run at their edges besides their own work: TLS material read
//! from files that may be rotated, the admin listener (`/healthz`, `/readyz`, `/metrics`),
//! logging set-up and one-line exits, and retry backoff. The controller links this crate, not
//! the proxy, for these.
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod backoff;
pub mod logging;
pub mod tls;
