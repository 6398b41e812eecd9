//! The route table: plain data ([`model`]) and its validated, indexed form ([`CompiledTable`]).

mod compiled;
pub mod expr;
mod router;
pub mod tls;

pub use crate::model::*;
pub use compiled::{
    CompiledBackend, CompiledNode, CompiledRoute, CompiledTable, CompiledUpstream, TableError,
    check_route, scheme_name, validate_host,
};

#[cfg(test)]
pub(crate) mod tests;
