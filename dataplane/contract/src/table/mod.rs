//! The route table: plain data ([`model`]) and its validated, indexed form ([`CompiledTable`]).

pub mod balance;
mod compiled;
pub mod expr;
mod router;
pub mod tls;

pub use crate::model::*;
pub use compiled::{
    CompiledBackend, CompiledNode, CompiledRoute, CompiledTable, CompiledTimeouts,
    CompiledUpstream, PassiveHealth, Registries, TableError, check_route, scheme_name,
    validate_host,
};

#[cfg(test)]
pub(crate) mod tests;
