//! Standalone manifests (`controller::snapshot::Snapshot::add_yaml`, what `controller::files`
//! reads from each file) and the CRD → table translation (`controller::translate`), then the
//! dataplane's compilation of the table.
//!
//! Property: a translated table always loads in a dataplane (translation reports what it cannot
//! use in the objects' status and leaves it out or makes it a placeholder; it never hands a
//! dataplane a table that is refused whole).

use portcullis_contract::table::CompiledTable;
use portcullis_controller::snapshot::{Mode, Snapshot};
use portcullis_controller::translate::translate;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut snapshot = Snapshot {
        mode: Mode::Standalone,
        now: 1_800_000_000,
        ..Snapshot::default()
    };
    let _ = snapshot.add_yaml(&text);
    let translation = translate(&snapshot, 1);
    let table = translation.table.clone();
    if let Err(error) = CompiledTable::compile(table) {
        panic!(
            "the dataplane refuses a translated table: {error}\nstatuses: {:?}",
            translation.statuses
        );
    }
}
