//! Reading a route table from a file (`--table`), YAML or JSON.

use std::path::Path;

use crate::table::RouteTable;

#[derive(Debug, thiserror::Error)]
pub enum TableFileError {
    #[error("cannot read route table {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("route table {path} is not valid: {detail}")]
    Parse { path: String, detail: String },
}

/// `.json` files are parsed as JSON, everything else as YAML. Errors carry line and column.
pub fn load(path: &Path) -> Result<RouteTable, TableFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TableFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|detail| TableFileError::Parse {
        path: path.display().to_string(),
        detail,
    })
}
