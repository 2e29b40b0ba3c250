//! [`GlueError`]: what went wrong reading a GLUE file or scoring predictions, with the file,
//! the line and what was expected.

use std::path::PathBuf;

use super::Task;

/// Longest piece of input text quoted in an error message (in characters).
const MAX_QUOTED_CHARS: usize = 60;

/// Errors from reading GLUE files or computing metrics.
#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    /// A task name that [`Task::from_name`] does not know.
    #[error("unknown GLUE task \"{name}\"; known tasks: {}", Task::known_names())]
    UnknownTask { name: String },

    /// No data file for a task and split was found under the data directory.
    #[error("no {task} {split} file found; tried: {}", join_paths(.tried))]
    DataFileNotFound {
        task: Task,
        split: String,
        tried: Vec<PathBuf>,
    },

    /// A split that is not a file name of the task folder (empty, or a path).
    #[error("split \"{split}\" is not a file name of the {task} folder: name one, e.g. dev, train or test (read as <split>.tsv); for another file, name the file itself (--data FILE, or data.file in a recipe)")]
    BadSplit { task: Task, split: String },

    /// The file could not be read.
    #[error("cannot read {}: {cause}", .path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// The file is not valid UTF-8.
    #[error("{file}: line {line}: {why}")]
    NotUtf8 { file: String, line: usize, why: String },

    /// Lines that end in a carriage return alone: the file reads as one line.
    #[error("{file}: {}", crate::data::CR_LINE_ENDS)]
    LineEnds { file: String },

    /// The header line lacks columns the task needs.
    #[error(
        "line {line} of {file}: header has no column {}; found columns [{}], {task} needs [{}]{}",
        quote_list(.missing),
        quote_list(.found),
        quote_list(.needed),
        looks_like_hint(*.looks_like)
    )]
    MissingColumns {
        file: String,
        line: usize,
        task: Task,
        found: Vec<String>,
        needed: Vec<String>,
        missing: Vec<String>,
        /// The task the header does match, if any.
        looks_like: Option<Task>,
    },

    /// A data row has fewer tab-separated fields than the columns the task needs.
    #[error("line {line} of {file} has {found} tab-separated field(s), {task} needs at least {needed} ({expected})")]
    ShortRow {
        file: String,
        line: usize,
        task: Task,
        found: usize,
        needed: usize,
        expected: String,
    },

    /// A label that is not valid for the task.
    #[error("label \"{value}\" on line {line} of {file}: {expected}")]
    BadLabel {
        file: String,
        line: usize,
        /// The label field as found (shortened if very long).
        value: String,
        expected: String,
    },

    /// The file has no data rows (it is empty or has only a header).
    #[error("{file}: no examples (the file is empty or has only a header line)")]
    NoExamples { file: String },

    /// The model produced the wrong number of logits for the task.
    #[error("{task} needs {expected} logit(s) per example, got {got}")]
    LogitCount { task: Task, expected: usize, got: usize },

    /// The model produced NaN or an infinity: no class or score can be read from it.
    #[error("logits contain NaN/Inf: {logits:?}")]
    NonFiniteLogits { logits: Vec<f32> },

    /// A score prediction that is NaN or infinite (metrics of it would be meaningless).
    #[error("prediction {index} is {value}, not a finite score")]
    NonFinitePrediction { index: usize, value: f32 },

    /// Examples and predictions differ in number.
    #[error("{examples} examples but {predictions} predictions")]
    LengthMismatch { examples: usize, predictions: usize },

    /// A label or prediction of the wrong kind (class vs. score), or a class out of range, for
    /// the user's own labels.
    #[error("example {index}: its label and the model's prediction are not of the same kind (a class of the model, or a score)")]
    OwnKindMismatch { index: usize },

    /// A label or prediction of the wrong kind (class vs. score) for the task.
    #[error("{what} {index} is a {found}, but {task} needs a {wanted}")]
    KindMismatch {
        task: Task,
        /// "example" or "prediction".
        what: &'static str,
        index: usize,
        found: &'static str,
        wanted: &'static str,
    },
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Longest list quoted in an error message (a header of a million tabs must not make a 4 MB line).
const MAX_QUOTED_ITEMS: usize = 12;

pub(crate) fn quote_list(items: &[String]) -> String {
    let mut parts: Vec<String> = items
        .iter()
        .take(MAX_QUOTED_ITEMS)
        .map(|s| format!("\"{}\"", shorten(s)))
        .collect();
    if items.len() > MAX_QUOTED_ITEMS {
        parts.push(format!("... {} more", items.len() - MAX_QUOTED_ITEMS));
    }
    parts.join(", ")
}

fn looks_like_hint(task: Option<Task>) -> String {
    match task {
        Some(t) => format!(" (the header looks like a {t} file)"),
        None => String::new(),
    }
}

/// Shortens `s` to at most [`MAX_QUOTED_CHARS`] characters for error messages.
pub(crate) fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head}...")
    }
}
