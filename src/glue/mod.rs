//! GLUE benchmark data: TSV readers and evaluation metrics.
//!
//! Reads the labelled splits (`train.tsv`, `dev.tsv`, MNLI `dev_matched.tsv`, ...) of the nine
//! GLUE tasks in the layout written by `download_glue_data.py`, and computes the metrics GLUE
//! reports: accuracy, F1 of class 1, Matthews correlation (CoLA), Pearson and Spearman (STS-B).
//!
//! Quirks of the real files that the reader handles:
//! - A leading UTF-8 byte order mark (the MRPC files have one) is removed.
//! - `\n` and `\r\n` line ends are both accepted; completely empty lines (including a trailing
//!   one) are skipped. Line numbers in errors count every physical line, starting at 1.
//! - There is no quote processing at all: fields are split on TAB only. MRPC strings contain
//!   unbalanced `"` characters, which stay in the text verbatim.
//! - Text is kept exactly as in the file. Every SST-2 sentence ends in a space; that space is
//!   kept. Only label fields are trimmed of surrounding whitespace.
//! - Columns are found by header name, not by position, so extra columns (MNLI's parses, STS-B's
//!   genre and year) are ignored. CoLA files have no header and are read positionally
//!   (`source`, `label`, `original label`, `sentence`).
//! - Malformed input (short rows, unknown labels, missing columns, invalid UTF-8) gives a
//!   [`GlueError`] naming the file, the line and what was expected; the reader never panics.

mod data;
pub(crate) mod error;
mod metrics;
mod task;

pub use data::{
    read_tsv, read_tsv_rows, read_tsv_str, read_tsv_texts, tsv_lines, unlabelled_mark, Dataset, Example, Label,
    TsvTexts,
};
pub use error::GlueError;
pub use metrics::{
    accuracy, argmax, compute_metrics, compute_own_metrics, confusion, confusion_matrix, correlation_undefined,
    f1_positive, mcc, mse, pearson, spearman, ClassScores, Confusion, Metrics, Prediction,
};
pub use task::{split_name, Task};
