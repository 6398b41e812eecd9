//! The fuzz harnesses, in one place: each target is a `fn(&[u8])` that must not panic for any
//! input, and most check a property on top (the same answer whatever way the bytes are split,
//! two parsers agreeing). libFuzzer runs them from `fuzz/libfuzzer`; `tests/corpus.rs` replays
//! every committed corpus file through them in the normal `cargo test`, so a crash found once
//! stays a regression test. docs/reliability.md says how to run and reproduce.
#![deny(rust_2018_idioms)]

pub mod frames;
pub mod jwt;
pub mod manifests;
pub mod proxy_protocol;
pub mod request_head;
pub mod sync_table;
pub mod upstream_response;

mod input;

/// A harness: any bytes in, a panic only for a bug.
pub type Harness = fn(&[u8]);

/// Every target by the name of its corpus directory (`fuzz/corpus/<name>/`) and its libFuzzer
/// binary.
pub const TARGETS: &[(&str, Harness)] = &[
    ("request_head", request_head::run),
    ("upstream_response", upstream_response::run),
    ("frames", frames::run),
    ("proxy_protocol", proxy_protocol::run),
    ("jwt", jwt::run),
    ("sync_table", sync_table::run),
    ("manifests", manifests::run),
];

thread_local! {
    /// One runtime per thread for the targets that drive async code: building one per input
    /// would cost more than most inputs take. No I/O or timer driver: everything is in memory.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime without drivers builds");
}

/// Runs `f` to completion on this thread's runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}
