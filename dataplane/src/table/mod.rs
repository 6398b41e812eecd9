//! The route table: plain data ([`model`]) and its validated, indexed form ([`CompiledTable`]).

mod compiled;
pub mod expr;
pub mod model;
mod router;

pub use compiled::{
    CompiledBackend, CompiledNode, CompiledRoute, CompiledTable, CompiledUpstream, TableError,
    check_route, scheme_name, validate_host,
};
pub use model::*;

#[cfg(test)]
pub(crate) mod tests;
