//! [`DataError`]: what went wrong reading a data file, naming the file, the line (or the Parquet
//! row) and what was expected.

use std::fmt;
use std::path::PathBuf;

use crate::glue::error::quote_list as quote;
use crate::glue::GlueError;

/// Where a record is: a physical line of a text file (from 1, the header included), or a row of a
/// Parquet file (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    Line(usize),
    Row(usize),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Line(n) => write!(f, "line {n}"),
            Loc::Row(n) => write!(f, "row {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {cause}", .path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// The format could not be chosen, or the file is not in it.
    #[error("{file}: {message}")]
    Format { file: String, message: String },

    /// A chosen column whose name the header holds more than once.
    #[error("{file}: the {role} column \"{name}\" appears {} times in the header (columns {}); rename all but one", .at.len(), .at.iter().map(|j| j.to_string()).collect::<Vec<_>>().join(", "))]
    DuplicateColumn {
        file: String,
        role: &'static str,
        name: String,
        at: Vec<usize>,
    },

    /// A record that cannot be read (wrong field count, bad JSON, a value of the wrong type).
    #[error("{at} of {file}: {message}")]
    Record { file: String, at: Loc, message: String },

    /// A column named by a flag, a recipe key or a preset is not in the file.
    #[error("{file}: no {role} column {}; the file has columns [{}]{hint}", quote(.names).replace(", ", " or "), quote(.found))]
    MissingColumn {
        file: String,
        role: &'static str,
        /// The names looked for (any one would do).
        names: Vec<String>,
        found: Vec<String>,
        hint: String,
    },

    /// No column was named and none could be chosen.
    #[error("{file}: which column holds the {role}? The file has columns [{}]; {ask}", quote(.found))]
    ChooseColumn {
        file: String,
        role: &'static str,
        /// What to do: "pass --text-column NAME", or set a recipe's key.
        ask: String,
        found: Vec<String>,
    },

    #[error("{file}: no examples (the file is empty or has only a header)")]
    Empty { file: String },

    /// A label the model's label set does not contain.
    #[error("label {value:?} on {at} of {file}: {expected}")]
    Label {
        file: String,
        at: Loc,
        value: String,
        expected: String,
    },

    #[error(transparent)]
    Glue(#[from] GlueError),
}
