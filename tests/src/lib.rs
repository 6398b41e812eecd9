//! Shared harness for the end-to-end tests: start the real binaries on 127.0.0.1 with ports
//! from the OS, fixtures for tables and certificates, raw HTTP helpers. Deadlines, not sleeps.
//!
//! By concern: [`processes`] (our binaries as child processes, their logs, deadlines),
//! [`cluster`] (the Kubernetes API test server set up as the controller's tests need it),
//! [`gateway`] (a dataplane, a controller, the echo upstream), [`clients`] (raw HTTP,
//! WebSockets, `curl`, Python), [`pki`] (certificates), [`fixtures`] (tables and manifests),
//! [`netns`] (a network namespace of the test's own). Everything is re-exported here, so tests
//! `use portcullis_tests::*`.
#![deny(rust_2018_idioms)]

pub mod clients;
pub mod cluster;
pub mod fixtures;
pub mod gateway;
pub mod netns;
pub mod pki;
pub mod processes;

pub use clients::*;
pub use cluster::*;
pub use fixtures::*;
pub use gateway::*;
pub use netns::*;
pub use pki::*;
pub use processes::*;

/// The Kubernetes API test server (crate `kube-test-apiserver`, `tests/kube-api/`).
pub use kube_test_apiserver as kube_api;
pub use portcullis_dataplane::table::*;
