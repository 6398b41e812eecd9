//! What both Portcullis binaries run at their edges besides their own work: TLS material read
//! from files that may be rotated, the admin listener (`/healthz`, `/readyz`, `/metrics`),
//! logging set-up and one-line exits, the shutdown signals, retry backoff, and the one certificate generator
//! (`portcullis-controller certs`, and the tests' certificates). The controller links this crate, not
//! the proxy, for these.
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod backoff;
pub mod certs;
pub mod logging;
pub mod signals;
pub mod tls;
