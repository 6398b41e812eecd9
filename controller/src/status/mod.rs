//! Status of every object (docs/behaviour.md §5): the [`StatusBoard`] says which conditions each
//! object should have; in standalone mode they are logged and served at `GET /status`; in a
//! cluster the leader hands them to the [`writer`] task, which applies them to the status
//! subresource without ever holding up table publishing.

mod board;
mod events;
pub mod live;
pub mod writer;

#[cfg(test)]
mod tests;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

pub use board::StatusBoard;

use crate::translate::Kind;

/// The condition types Portcullis writes.
pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";

/// A condition's `status` for `value`.
pub fn condition_status(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Now, to the second: what the API server keeps of a condition's time (RFC 3339 with
/// seconds), so a time read back compares equal to the one written.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// One object and the conditions it should have.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub conditions: Vec<Condition>,
    /// The first table generation carrying the object's current content (what `Programmed`
    /// counts acknowledgements of).
    #[serde(skip)]
    pub table_generation: u64,
}

impl Resource {
    /// The condition of this type, if the object has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
