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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

    /// The file could not be read.
    #[error("cannot read {}: {cause}", .path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// The file is not valid UTF-8.
    #[error("{file} is not valid UTF-8 (first invalid byte on line {line})")]
    NotUtf8 { file: String, line: usize },

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

fn quote_list(items: &[String]) -> String {
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
fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head}...")
    }
}

/// One of the nine GLUE tasks.
///
/// Serialized as its lowercase name (`"sst2"`, `"stsb"`, ...); displayed as its GLUE name
/// (`SST-2`, `STS-B`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Sst2,
    Mrpc,
    Qqp,
    Cola,
    Qnli,
    Rte,
    Mnli,
    StsB,
    Wnli,
}

/// Where a task's columns are, by header name (`None` for header-less CoLA).
struct ColumnNames {
    text_a: &'static str,
    text_b: Option<&'static str>,
    label: &'static str,
}

impl Task {
    /// All tasks, in the order GLUE lists them.
    pub const ALL: [Task; 9] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::StsB,
        Task::Qqp,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
        Task::Wnli,
    ];

    /// Parses a task name: `sst2`, `sst-2`, `mrpc`, `qqp`, `cola`, `qnli`, `rte`, `mnli`,
    /// `stsb`, `sts-b`, `wnli` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Task, GlueError> {
        let task = match name.to_ascii_lowercase().as_str() {
            "sst2" | "sst-2" => Task::Sst2,
            "mrpc" => Task::Mrpc,
            "qqp" => Task::Qqp,
            "cola" => Task::Cola,
            "qnli" => Task::Qnli,
            "rte" => Task::Rte,
            "mnli" => Task::Mnli,
            "stsb" | "sts-b" => Task::StsB,
            "wnli" => Task::Wnli,
            _ => return Err(GlueError::UnknownTask { name: name.to_string() }),
        };
        Ok(task)
    }

    fn known_names() -> String {
        Task::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
    }

    /// The lowercase name (`sst2`, `stsb`, ...), as accepted by [`Task::from_name`].
    pub fn name(&self) -> &'static str {
        match self {
            Task::Sst2 => "sst2",
            Task::Mrpc => "mrpc",
            Task::Qqp => "qqp",
            Task::Cola => "cola",
            Task::Qnli => "qnli",
            Task::Rte => "rte",
            Task::Mnli => "mnli",
            Task::StsB => "stsb",
            Task::Wnli => "wnli",
        }
    }

    /// The folder name in the GLUE download (`SST-2`, `CoLA`, `STS-B`, ...).
    pub fn dir_name(&self) -> &'static str {
        match self {
            Task::Sst2 => "SST-2",
            Task::Mrpc => "MRPC",
            Task::Qqp => "QQP",
            Task::Cola => "CoLA",
            Task::Qnli => "QNLI",
            Task::Rte => "RTE",
            Task::Mnli => "MNLI",
            Task::StsB => "STS-B",
            Task::Wnli => "WNLI",
        }
    }

    /// Whether examples are sentence pairs (everything except SST-2 and CoLA).
    pub fn is_pair(&self) -> bool {
        !matches!(self, Task::Sst2 | Task::Cola)
    }

    /// Number of model outputs: 3 for MNLI, 1 for STS-B (regression), 2 otherwise.
    pub fn num_labels(&self) -> usize {
        match self {
            Task::Mnli => 3,
            Task::StsB => 1,
            _ => 2,
        }
    }

    /// Whether the task is a regression (STS-B) rather than a classification.
    pub fn is_regression(&self) -> bool {
        matches!(self, Task::StsB)
    }

    /// Default evaluation batch size: 24 for MRPC, 32 otherwise.
    pub fn default_batch_size(&self) -> usize {
        match self {
            Task::Mrpc => 24,
            _ => 32,
        }
    }

    /// Finds the TSV file of `split` (`train`, `dev`, ...) under `data_dir`.
    ///
    /// Tries `<data_dir>/<name>/<split>.tsv` (e.g. `sst2/dev.tsv`), then
    /// `<data_dir>/<GLUE dir name>/<split>.tsv` (e.g. `SST-2/dev.tsv`), then the lowercased GLUE
    /// dir name (e.g. `sst-2/dev.tsv`). For MNLI the split `dev` means `dev_matched`.
    /// The error lists every path tried.
    pub fn data_file(&self, data_dir: &Path, split: &str) -> Result<PathBuf, GlueError> {
        let split_file = if *self == Task::Mnli && split == "dev" {
            "dev_matched".to_string()
        } else {
            split.to_string()
        };
        let file_name = format!("{split_file}.tsv");

        let mut dirs = vec![self.name().to_string(), self.dir_name().to_string()];
        let lower_dir = self.dir_name().to_ascii_lowercase();
        if !dirs.contains(&lower_dir) {
            dirs.push(lower_dir);
        }

        let tried: Vec<PathBuf> = dirs.iter().map(|dir| data_dir.join(dir).join(&file_name)).collect();
        match tried.iter().find(|p| p.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(GlueError::DataFileNotFound {
                task: *self,
                split: split.to_string(),
                tried,
            }),
        }
    }

    /// Guesses the task from the first line of a GLUE TSV file (a leading BOM and line end
    /// are ignored).
    ///
    /// Recognised: SST-2 (`sentence`, `label` exactly), MRPC (`Quality`, `#1 String`,
    /// `#2 String`), QQP (`question1`, `question2`, `is_duplicate`), QNLI (`question`,
    /// `sentence`, `label`), STS-B (`sentence1`, `sentence2`, `score`), MNLI (`sentence1`,
    /// `sentence2`, `gold_label`), and CoLA, which has no header: a first line of four fields
    /// whose second is `0` or `1` and whose first and third contain no spaces.
    ///
    /// RTE and WNLI share the header `index  sentence1  sentence2  label`; for it (and for
    /// anything else) this returns `None`, since the header alone cannot tell them apart.
    pub fn infer_from_header(header: &str) -> Option<Task> {
        let header = header.strip_prefix('\u{feff}').unwrap_or(header);
        let header = header.lines().next().unwrap_or("");
        let fields: Vec<&str> = header.split('\t').map(str::trim).collect();
        let has_all = |names: &[&str]| names.iter().all(|n| fields.contains(n));

        if has_all(&["Quality", "#1 String", "#2 String"]) {
            Some(Task::Mrpc)
        } else if has_all(&["question1", "question2", "is_duplicate"]) {
            Some(Task::Qqp)
        } else if has_all(&["sentence1", "sentence2", "gold_label"]) {
            Some(Task::Mnli)
        } else if has_all(&["sentence1", "sentence2", "score"]) {
            Some(Task::StsB)
        } else if has_all(&["question", "sentence", "label"]) {
            Some(Task::Qnli)
        } else if fields == ["sentence", "label"] {
            Some(Task::Sst2)
        } else if looks_like_cola_row(&fields) {
            Some(Task::Cola)
        } else {
            None
        }
    }

    /// Header names of the text and label columns (`None` for CoLA, which has no header).
    fn column_names(&self) -> Option<ColumnNames> {
        let (text_a, text_b, label) = match self {
            Task::Cola => return None,
            Task::Sst2 => ("sentence", None, "label"),
            Task::Mrpc => ("#1 String", Some("#2 String"), "Quality"),
            Task::Qqp => ("question1", Some("question2"), "is_duplicate"),
            Task::Qnli => ("question", Some("sentence"), "label"),
            Task::Rte | Task::Wnli => ("sentence1", Some("sentence2"), "label"),
            Task::Mnli => ("sentence1", Some("sentence2"), "gold_label"),
            Task::StsB => ("sentence1", Some("sentence2"), "score"),
        };
        Some(ColumnNames { text_a, text_b, label })
    }

    /// Parses a label field (already trimmed); `None` if it is not valid for the task.
    fn parse_label(&self, raw: &str) -> Option<Label> {
        let class = match self {
            Task::Sst2 | Task::Mrpc | Task::Qqp | Task::Cola | Task::Wnli => match raw {
                "0" => 0,
                "1" => 1,
                _ => return None,
            },
            Task::Qnli | Task::Rte => match raw {
                "entailment" => 0,
                "not_entailment" => 1,
                _ => return None,
            },
            Task::Mnli => match raw {
                "entailment" => 0,
                "neutral" => 1,
                "contradiction" => 2,
                _ => return None,
            },
            Task::StsB => {
                let score: f32 = raw.parse().ok()?;
                return (0.0..=5.0).contains(&score).then_some(Label::Score(score));
            }
        };
        Some(Label::Class(class))
    }

    /// What a valid label looks like, for error messages.
    fn label_expectation(&self) -> String {
        let rule = match self {
            Task::Sst2 | Task::Mrpc | Task::Qqp | Task::Cola | Task::Wnli => "labels are 0 or 1",
            Task::Qnli | Task::Rte => "labels are entailment or not_entailment",
            Task::Mnli => "gold labels are entailment, neutral or contradiction",
            Task::StsB => "scores are numbers from 0 to 5",
        };
        format!("{self} {rule}")
    }
}

/// CoLA files have no header; their first line is a row like `gj04  1    Our friends ...`.
fn looks_like_cola_row(fields: &[&str]) -> bool {
    fields.len() == 4
        && (fields[1] == "0" || fields[1] == "1")
        && !fields[0].is_empty()
        && !fields[0].contains(' ')
        && !fields[2].contains(' ')
        && !fields[3].is_empty()
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

impl FromStr for Task {
    type Err = GlueError;

    fn from_str(s: &str) -> Result<Task, GlueError> {
        Task::from_name(s)
    }
}

/// The gold label of an example.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Label {
    /// Class index (for example 0 = negative, 1 = positive).
    Class(usize),
    /// Similarity score (STS-B, 0 to 5).
    Score(f32),
}

impl Label {
    /// The class index, if this is a class label.
    pub fn class(&self) -> Option<usize> {
        match self {
            Label::Class(c) => Some(*c),
            Label::Score(_) => None,
        }
    }

    /// The score, if this is a regression label.
    pub fn score(&self) -> Option<f32> {
        match self {
            Label::Score(s) => Some(*s),
            Label::Class(_) => None,
        }
    }
}

/// One labelled example: a sentence or a sentence pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text_a: String,
    /// The second sentence of pair tasks; `None` for SST-2 and CoLA.
    pub text_b: Option<String>,
    pub label: Label,
}

/// The examples of one GLUE file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub task: Task,
    pub path: PathBuf,
    pub examples: Vec<Example>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples (never true for a dataset returned by the readers).
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

/// Reads a GLUE TSV file of `task` (see the module docs for the format and its quirks).
pub fn read_tsv(task: Task, path: &Path) -> Result<Dataset, GlueError> {
    let bytes = std::fs::read(path).map_err(|cause| GlueError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let file = path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        GlueError::NotUtf8 {
            file: file.clone(),
            line,
        }
    })?;
    let mut dataset = read_tsv_str(task, &file, &text)?;
    dataset.path = path.to_path_buf();
    Ok(dataset)
}

/// Reads GLUE TSV text of `task`; `name` is used for [`Dataset::path`] and in error messages.
pub fn read_tsv_str(task: Task, name: &str, text: &str) -> Result<Dataset, GlueError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.is_empty());

    let layout = match task.column_names() {
        None => Layout::cola(),
        Some(names) => match lines.next() {
            Some((line_no, header)) => Layout::from_header(task, names, name, line_no, header)?,
            None => return Err(GlueError::NoExamples { file: name.to_string() }),
        },
    };

    let mut examples = Vec::new();
    for (line_no, line) in lines {
        examples.push(layout.parse_row(task, name, line_no, line)?);
    }
    if examples.is_empty() {
        return Err(GlueError::NoExamples { file: name.to_string() });
    }
    Ok(Dataset {
        task,
        path: PathBuf::from(name),
        examples,
    })
}

/// Field indexes of the columns a task needs.
struct Layout {
    text_a: usize,
    text_b: Option<usize>,
    label: usize,
    /// Description of the needed columns, for short-row errors.
    expected: String,
}

impl Layout {
    /// CoLA: `source  label  original label  sentence`, no header.
    fn cola() -> Layout {
        Layout {
            text_a: 3,
            text_b: None,
            label: 1,
            expected: "source, label, original label, sentence; GLUE CoLA files have no header".to_string(),
        }
    }

    fn from_header(task: Task, names: ColumnNames, file: &str, line: usize, header: &str) -> Result<Layout, GlueError> {
        let found: Vec<&str> = header.split('\t').collect();
        let position = |name: &str| found.iter().position(|f| f.trim() == name);

        let mut needed = vec![names.text_a];
        needed.extend(names.text_b);
        needed.push(names.label);
        let missing: Vec<String> = needed
            .iter()
            .filter(|n| position(n).is_none())
            .map(|n| n.to_string())
            .collect();

        match (position(names.text_a), position(names.label)) {
            (Some(text_a), Some(label)) if missing.is_empty() => Ok(Layout {
                text_a,
                text_b: names.text_b.and_then(position),
                label,
                expected: needed.join(", "),
            }),
            _ => Err(GlueError::MissingColumns {
                file: file.to_string(),
                line,
                task,
                found: found.iter().map(|s| s.to_string()).collect(),
                needed: needed.iter().map(|s| s.to_string()).collect(),
                missing,
                looks_like: Task::infer_from_header(header).filter(|t| *t != task),
            }),
        }
    }

    fn parse_row(&self, task: Task, file: &str, line: usize, row: &str) -> Result<Example, GlueError> {
        let fields: Vec<&str> = row.split('\t').collect();
        let field = |index: usize| {
            fields.get(index).copied().ok_or_else(|| {
                let needed = 1 + self.text_a.max(self.label).max(self.text_b.unwrap_or(0));
                GlueError::ShortRow {
                    file: file.to_string(),
                    line,
                    task,
                    found: fields.len(),
                    needed,
                    expected: self.expected.clone(),
                }
            })
        };

        let text_a = field(self.text_a)?.to_string();
        let text_b = match self.text_b {
            Some(index) => Some(field(index)?.to_string()),
            None => None,
        };
        let raw_label = field(self.label)?.trim();
        let label = task.parse_label(raw_label).ok_or_else(|| GlueError::BadLabel {
            file: file.to_string(),
            line,
            value: shorten(raw_label),
            expected: task.label_expectation(),
        })?;
        Ok(Example { text_a, text_b, label })
    }
}

/// A model's prediction for one example.
///
/// Build it from the logits with [`Prediction::from_logits`]: the argmax class for
/// classification tasks, the single output as the score for STS-B.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Prediction {
    Class(usize),
    Score(f32),
}

impl Prediction {
    /// Turns one example's logits into a prediction for `task`.
    ///
    /// Classification tasks need `task.num_labels()` logits and predict their argmax (ties go
    /// to the lowest index); STS-B needs exactly one logit, used as the score. A NaN or infinite
    /// logit is an error: a broken model must not be scored as if it predicted class 0.
    pub fn from_logits(task: Task, logits: &[f32]) -> Result<Prediction, GlueError> {
        if logits.len() != task.num_labels() {
            return Err(GlueError::LogitCount {
                task,
                expected: task.num_labels(),
                got: logits.len(),
            });
        }
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(GlueError::NonFiniteLogits {
                logits: logits.to_vec(),
            });
        }
        if task.is_regression() {
            Ok(Prediction::Score(logits[0]))
        } else {
            let class = argmax(logits).ok_or(GlueError::LogitCount {
                task,
                expected: task.num_labels(),
                got: 0,
            })?;
            Ok(Prediction::Class(class))
        }
    }
}

/// Index of the largest value; ties go to the lowest index and NaN values are ignored.
/// `None` if `values` is empty or all NaN.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Binary confusion counts, class 1 positive and every other class negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
}

/// Evaluation results. Metrics that do not apply to the task are `None` and left out of the
/// JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub task: Task,
    /// Number of examples evaluated.
    pub n: usize,
    /// Classification tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Binary tasks: F1 of class 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// CoLA: Matthews correlation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcc: Option<f64>,
    /// STS-B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
    /// STS-B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman: Option<f64>,
    /// Binary tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Confusion>,
}

/// Computes the GLUE metrics of `task` for `predictions`, one per example, in order.
///
/// Classification tasks get accuracy; binary ones also F1 of class 1 and the confusion counts;
/// CoLA also the Matthews correlation. STS-B gets Pearson and Spearman correlations.
/// Errors if the counts differ, a label or prediction is of the wrong kind for the task, or a
/// score is NaN or infinite.
pub fn compute_metrics(task: Task, examples: &[Example], predictions: &[Prediction]) -> Result<Metrics, GlueError> {
    if examples.len() != predictions.len() {
        return Err(GlueError::LengthMismatch {
            examples: examples.len(),
            predictions: predictions.len(),
        });
    }
    let mut metrics = Metrics {
        task,
        n: examples.len(),
        accuracy: None,
        f1: None,
        mcc: None,
        pearson: None,
        spearman: None,
        confusion: None,
    };
    let kind_error = |what, index, found| GlueError::KindMismatch {
        task,
        what,
        index,
        found,
        wanted: if task.is_regression() { "score" } else { "class" },
    };

    if task.is_regression() {
        let mut gold = Vec::with_capacity(examples.len());
        let mut pred = Vec::with_capacity(predictions.len());
        for (i, (example, prediction)) in examples.iter().zip(predictions).enumerate() {
            match example.label {
                Label::Score(s) => gold.push(f64::from(s)),
                Label::Class(_) => return Err(kind_error("example", i, "class")),
            }
            match prediction {
                Prediction::Score(s) if !s.is_finite() => {
                    return Err(GlueError::NonFinitePrediction { index: i, value: *s })
                }
                Prediction::Score(s) => pred.push(f64::from(*s)),
                Prediction::Class(_) => return Err(kind_error("prediction", i, "class")),
            }
        }
        metrics.pearson = Some(pearson(&pred, &gold));
        metrics.spearman = Some(spearman(&pred, &gold));
    } else {
        let mut gold = Vec::with_capacity(examples.len());
        let mut pred = Vec::with_capacity(predictions.len());
        for (i, (example, prediction)) in examples.iter().zip(predictions).enumerate() {
            match example.label {
                Label::Class(c) => gold.push(c),
                Label::Score(_) => return Err(kind_error("example", i, "score")),
            }
            match prediction {
                Prediction::Class(c) => pred.push(*c),
                Prediction::Score(_) => return Err(kind_error("prediction", i, "score")),
            }
        }
        metrics.accuracy = Some(accuracy(&pred, &gold));
        if task.num_labels() == 2 {
            metrics.f1 = Some(f1_positive(&pred, &gold));
            metrics.confusion = Some(confusion(&pred, &gold));
        }
        if task == Task::Cola {
            metrics.mcc = Some(mcc(&pred, &gold));
        }
    }
    Ok(metrics)
}

// The metric functions below pair `preds[i]` with `labels[i]`; the slices should have the same
// length (if not, only the common prefix is used). Undefined values (empty input, a zero
// denominator) are reported as 0.0, as scikit-learn does for F1 and MCC. A NaN or infinite
// input is not "undefined": the correlations return NaN for it, never a plausible 0.0.

/// Fraction of predictions equal to the label; 0.0 for empty input.
pub fn accuracy(preds: &[usize], labels: &[usize]) -> f64 {
    let n = preds.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    let correct = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f64 / n as f64
}

/// Binary confusion counts with class 1 as the positive class (any other class is negative).
pub fn confusion(preds: &[usize], labels: &[usize]) -> Confusion {
    let mut c = Confusion::default();
    for (&p, &l) in preds.iter().zip(labels) {
        match (p == 1, l == 1) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, true) => c.fn_ += 1,
            (false, false) => c.tn += 1,
        }
    }
    c
}

/// F1 score of class 1: `2 tp / (2 tp + fp + fn)`; 0.0 when there are no positives at all.
pub fn f1_positive(preds: &[usize], labels: &[usize]) -> f64 {
    let c = confusion(preds, labels);
    let denominator = 2 * c.tp + c.fp + c.fn_;
    if denominator == 0 {
        0.0
    } else {
        (2 * c.tp) as f64 / denominator as f64
    }
}

/// Matthews correlation coefficient, in its multiclass form (which equals
/// `(tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))` for two classes);
/// 0.0 when undefined (for example, all predictions or all labels the same class).
pub fn mcc(preds: &[usize], labels: &[usize]) -> f64 {
    let mut predicted: HashMap<usize, f64> = HashMap::new();
    let mut actual: HashMap<usize, f64> = HashMap::new();
    let mut correct = 0.0;
    let mut n = 0.0;
    for (&p, &l) in preds.iter().zip(labels) {
        *predicted.entry(p).or_insert(0.0) += 1.0;
        *actual.entry(l).or_insert(0.0) += 1.0;
        if p == l {
            correct += 1.0;
        }
        n += 1.0;
    }
    let cross: f64 = predicted
        .iter()
        .map(|(class, p)| p * actual.get(class).copied().unwrap_or(0.0))
        .sum();
    let sum_sq = |counts: &HashMap<usize, f64>| counts.values().map(|c| c * c).sum::<f64>();
    // Counts only: the denominator is finite, and zero exactly when one side has a single class.
    let denominator = ((n * n - sum_sq(&predicted)) * (n * n - sum_sq(&actual))).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (correct * n - cross) / denominator
    }
}

/// Pearson correlation; 0.0 when undefined (fewer than two pairs, or either side constant);
/// NaN when any value is NaN or infinite.
pub fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    let (xs, ys) = (&xs[..n], &ys[..n]);
    if !all_finite(xs) || !all_finite(ys) {
        return f64::NAN;
    }
    if n < 2 {
        return 0.0;
    }
    let mean_x = xs.iter().sum::<f64>() / n as f64;
    let mean_y = ys.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        let (dx, dy) = (x - mean_x, y - mean_y);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let denominator = (sxx * syy).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        sxy / denominator
    }
}

fn all_finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// Spearman rank correlation: Pearson of the ranks, tied values getting their average rank;
/// 0.0 when undefined; NaN when any value is NaN or infinite (ranks would hide it).
pub fn spearman(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if !all_finite(&xs[..n]) || !all_finite(&ys[..n]) {
        return f64::NAN;
    }
    pearson(&ranks(&xs[..n]), &ranks(&ys[..n]))
}

/// 1-based ranks, ties sharing the average of their ranks.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold ranks start+1..=end; their average:
        let average = (start + 1 + end) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = average;
        }
        start = end;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(task: Task, text: &str) -> Result<Dataset, GlueError> {
        read_tsv_str(task, "dev.tsv", text)
    }

    fn class(c: usize) -> Label {
        Label::Class(c)
    }

    // ---- tasks ----

    #[test]
    fn task_names_round_trip() {
        for task in Task::ALL {
            assert_eq!(Task::from_name(task.name()).unwrap(), task);
            assert_eq!(Task::from_name(task.dir_name()).unwrap(), task);
            assert_eq!(task.name().parse::<Task>().unwrap(), task);
        }
        assert_eq!(Task::from_name("SST-2").unwrap(), Task::Sst2);
        assert_eq!(Task::from_name("Sts-B").unwrap(), Task::StsB);
        assert_eq!(Task::from_name("stsb").unwrap(), Task::StsB);
        assert_eq!(Task::Cola.to_string(), "CoLA");
        assert_eq!(serde_json::to_string(&Task::StsB).unwrap(), "\"stsb\"");
    }

    #[test]
    fn unknown_task_lists_known_names() {
        let msg = Task::from_name("imdb").unwrap_err().to_string();
        assert!(msg.contains("\"imdb\""), "{msg}");
        for task in Task::ALL {
            assert!(msg.contains(task.name()), "{msg}");
        }
    }

    #[test]
    fn task_properties() {
        assert_eq!(Task::StsB.num_labels(), 1);
        assert_eq!(Task::Mnli.num_labels(), 3);
        assert_eq!(Task::Sst2.num_labels(), 2);
        assert_eq!(Task::Mrpc.default_batch_size(), 24);
        assert_eq!(Task::Qqp.default_batch_size(), 32);
        assert!(!Task::Sst2.is_pair());
        assert!(!Task::Cola.is_pair());
        assert!(Task::Rte.is_pair());
        assert!(Task::StsB.is_regression());
    }

    #[test]
    fn data_file_finds_both_layouts_and_lists_tried_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sst2")).unwrap();
        std::fs::write(dir.path().join("sst2/dev.tsv"), "sentence\tlabel\n").unwrap();
        std::fs::create_dir_all(dir.path().join("MNLI")).unwrap();
        std::fs::write(dir.path().join("MNLI/dev_matched.tsv"), "").unwrap();

        assert_eq!(
            Task::Sst2.data_file(dir.path(), "dev").unwrap(),
            dir.path().join("sst2/dev.tsv")
        );
        assert_eq!(
            Task::Mnli.data_file(dir.path(), "dev").unwrap(),
            dir.path().join("MNLI/dev_matched.tsv")
        );

        let err = Task::StsB.data_file(dir.path(), "dev").unwrap_err();
        let msg = err.to_string();
        for tried in ["stsb/dev.tsv", "STS-B/dev.tsv", "sts-b/dev.tsv"] {
            assert!(msg.contains(tried), "{msg}");
        }
    }

    #[test]
    fn infer_task_from_header() {
        let cases = [
            ("\u{feff}sentence\tlabel\r\n", Some(Task::Sst2)),
            ("\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", Some(Task::Mrpc)),
            ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", Some(Task::Qqp)),
            ("index\tquestion\tsentence\tlabel", Some(Task::Qnli)),
            ("index\tsentence1\tsentence2\tlabel", None),
            (
                "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                Some(Task::StsB),
            ),
            (
                "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t\
                 sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
                Some(Task::Mnli),
            ),
            ("gj04\t1\t\tOur friends won't buy this analysis.", Some(Task::Cola)),
            ("gj04\t0\t*\tThey drank the pub.", Some(Task::Cola)),
            ("sentence\tlabel\tidx", None),
            ("", None),
        ];
        for (header, expected) in cases {
            assert_eq!(Task::infer_from_header(header), expected, "{header:?}");
        }
    }

    // ---- readers ----

    #[test]
    fn sst2_keeps_trailing_space_and_handles_bom_crlf_and_empty_lines() {
        let text = "\u{feff}sentence\tlabel\r\n\
                    it 's a charming journey . \t1\r\n\
                    \r\n\
                    unflinchingly bleak \t0\r\n\
                    \r\n";
        let data = read(Task::Sst2, text).unwrap();
        assert_eq!(data.task, Task::Sst2);
        assert_eq!(data.path, PathBuf::from("dev.tsv"));
        assert_eq!(
            data.examples,
            vec![
                Example {
                    text_a: "it 's a charming journey . ".into(),
                    text_b: None,
                    label: class(1),
                },
                Example {
                    text_a: "unflinchingly bleak ".into(),
                    text_b: None,
                    label: class(0),
                },
            ]
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        let data = read(Task::Sst2, "label\tsentence\n1\tgood \n").unwrap();
        assert_eq!(data.examples[0].text_a, "good ");
        assert_eq!(data.examples[0].label, class(1));
    }

    #[test]
    fn mrpc_keeps_unbalanced_quotes_verbatim() {
        let text = "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n\
                    1\t1\t2\tHe said the pie doesn't fit.\t\"The pie does not fit.\n\
                    0\t3\t4\tA \"quoted\" word\tan \"odd one\n";
        let data = read(Task::Mrpc, text).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.examples[0].text_a, "He said the pie doesn't fit.");
        assert_eq!(data.examples[0].text_b.as_deref(), Some("\"The pie does not fit."));
        assert_eq!(data.examples[0].label, class(1));
        assert_eq!(data.examples[1].text_a, "A \"quoted\" word");
        assert_eq!(data.examples[1].text_b.as_deref(), Some("an \"odd one"));
        assert_eq!(data.examples[1].label, class(0));
    }

    #[test]
    fn qqp_reads_and_reports_short_rows() {
        let header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n";
        let text = format!("{header}1\t1\t2\tWhy?\tWhy \"not\"?\t1\n2\t3\t4\tA\tB\t0\n");
        let data = read(Task::Qqp, &text).unwrap();
        assert_eq!(data.examples[0].text_b.as_deref(), Some("Why \"not\"?"));
        assert_eq!(data.examples[1].label, class(0));

        let text = format!("{header}1\t1\t2\tWhy?\tWhy not?\t1\n2\t3\t4\tA broken question\n");
        let err = read(Task::Qqp, &text).unwrap_err();
        assert!(matches!(
            err,
            GlueError::ShortRow {
                line: 3,
                found: 4,
                needed: 6,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("line 3 of dev.tsv"), "{msg}");
        assert!(msg.contains("question1, question2, is_duplicate"), "{msg}");
    }

    #[test]
    fn qnli_rte_wnli_labels() {
        let qnli = "index\tquestion\tsentence\tlabel\n0\tQ?\tS.\tnot_entailment\n1\tQ2?\tS2.\tentailment\n";
        let data = read(Task::Qnli, qnli).unwrap();
        assert_eq!(data.examples[0].text_a, "Q?");
        assert_eq!(data.examples[0].text_b.as_deref(), Some("S."));
        assert_eq!(data.examples[0].label, class(1));
        assert_eq!(data.examples[1].label, class(0));

        let rte = "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n";
        assert_eq!(read(Task::Rte, rte).unwrap().examples[0].label, class(0));
        assert!(matches!(
            read(Task::Wnli, rte),
            Err(GlueError::BadLabel { line: 2, .. })
        ));

        let wnli = "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t1\n";
        assert_eq!(read(Task::Wnli, wnli).unwrap().examples[0].label, class(1));
    }

    #[test]
    fn mnli_uses_gold_label() {
        let text = "index\tpromptID\tsentence1\tsentence2\tlabel1\tgold_label\n\
                    0\t1\tP.\tH.\tneutral\tcontradiction\n\
                    1\t2\tP2.\tH2.\tneutral\tneutral\n\
                    2\t3\tP3.\tH3.\tneutral\tentailment\n";
        let data = read(Task::Mnli, text).unwrap();
        let labels: Vec<Label> = data.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, vec![class(2), class(1), class(0)]);
        assert_eq!(data.examples[0].text_a, "P.");
        assert_eq!(data.examples[0].text_b.as_deref(), Some("H."));
    }

    #[test]
    fn stsb_reads_scores_and_rejects_bad_ones() {
        let header = "index\tgenre\tsentence1\tsentence2\tscore\n";
        let data = read(Task::StsB, &format!("{header}0\tnews\tA.\tB.\t3.800\n")).unwrap();
        assert_eq!(data.examples[0].label, Label::Score(3.8));
        assert_eq!(data.examples[0].label.score(), Some(3.8));

        for bad in ["abc", "NaN", "inf", "-0.5", "5.5", ""] {
            let err = read(Task::StsB, &format!("{header}0\tnews\tA.\tB.\t{bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("STS-B scores are numbers from 0 to 5"),
                "{err}"
            );
        }
    }

    #[test]
    fn cola_is_read_positionally_without_header() {
        let text = "gj04\t1\t\tOur friends won't buy this analysis.\n\
                    gj04\t0\t*\tThey drank the pub.\n";
        let data = read(Task::Cola, text).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.examples[0].text_a, "Our friends won't buy this analysis.");
        assert_eq!(data.examples[0].text_b, None);
        assert_eq!(data.examples[0].label, class(1));
        assert_eq!(data.examples[1].label, class(0));

        let err = read(Task::Cola, "sentence\tlabel\n").unwrap_err();
        assert!(err.to_string().contains("no header"), "{err}");
    }

    #[test]
    fn bad_label_names_line_file_and_rule() {
        let text = "sentence\tlabel\na \t1\nb \t0\nc \t1\nd \t0\ne \t1\nf \t2\n";
        let err = read(Task::Sst2, text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label \"2\" on line 7 of dev.tsv: SST-2 labels are 0 or 1"
        );
    }

    #[test]
    fn missing_column_lists_header_and_needed_columns() {
        let text = "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tneutral\n";
        let err = read(Task::Mnli, text).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, GlueError::MissingColumns { line: 1, .. }));
        assert!(msg.contains("no column \"gold_label\""), "{msg}");
        assert!(msg.contains("\"index\", \"sentence1\""), "{msg}");
        assert!(msg.contains("MNLI needs"), "{msg}");

        // The hint names the task the header belongs to.
        let text = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tA\tB\t0\n";
        let msg = read(Task::Mrpc, text).unwrap_err().to_string();
        assert!(msg.contains("looks like a QQP file"), "{msg}");
    }

    #[test]
    fn empty_and_header_only_files_have_no_examples() {
        for text in ["", "\n\n", "\u{feff}", "sentence\tlabel\n", "sentence\tlabel\r\n\r\n"] {
            let err = read(Task::Sst2, text).unwrap_err();
            assert!(matches!(err, GlueError::NoExamples { .. }), "{text:?}");
            assert!(err.to_string().contains("dev.tsv"));
        }
        assert!(matches!(read(Task::Cola, ""), Err(GlueError::NoExamples { .. })));
    }

    #[test]
    fn whitespace_only_line_is_a_short_row() {
        let err = read(Task::Mrpc, "Quality\t#1 String\t#2 String\n \n").unwrap_err();
        assert!(matches!(err, GlueError::ShortRow { line: 2, .. }), "{err}");
    }

    #[test]
    fn long_lines_work() {
        let long = "word ".repeat(1_000_000);
        let data = read(Task::Sst2, &format!("sentence\tlabel\n{long}\t1\n")).unwrap();
        assert_eq!(data.examples[0].text_a.len(), long.len());

        // A very long bad label is shortened in the message.
        let err = read(Task::Sst2, &format!("sentence\tlabel\na\t{long}\n")).unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn read_tsv_reads_files_and_rejects_invalid_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("dev.tsv");
        std::fs::write(&good, "sentence\tlabel\nfine \t1\n").unwrap();
        let data = read_tsv(Task::Sst2, &good).unwrap();
        assert_eq!(data.path, good);
        assert_eq!(data.examples[0].text_a, "fine ");

        let bad = dir.path().join("bad.tsv");
        std::fs::write(&bad, b"sentence\tlabel\nok \t1\nbad \xff\xfe \t0\n").unwrap();
        let err = read_tsv(Task::Sst2, &bad).unwrap_err();
        assert!(matches!(err, GlueError::NotUtf8 { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("bad.tsv"), "{err}");

        let missing = dir.path().join("missing.tsv");
        let err = read_tsv(Task::Sst2, &missing).unwrap_err();
        assert!(matches!(err, GlueError::Io { .. }));
        assert!(err.to_string().contains("missing.tsv"), "{err}");
    }

    #[test]
    fn odd_inputs_never_panic() {
        let inputs = [
            "\t",
            "\t\t\t\t",
            "\r",
            "\r\r\n",
            "\u{feff}\u{feff}",
            "sentence\tlabel\n\t",
            "a\tb\n\u{0}\t\u{0}\n",
            "Quality\t#1 String\t#2 String\n1\t\"\t\"\n",
            "sentence1\tsentence2\tscore\tgold_label\n\t\t\t\n",
            "é\t1\t\té\n",
        ];
        for task in Task::ALL {
            for input in inputs {
                let _ = read(task, input);
            }
        }
    }

    // ---- predictions ----

    #[test]
    fn predictions_from_logits() {
        assert_eq!(
            Prediction::from_logits(Task::Sst2, &[0.1, 2.0]).unwrap(),
            Prediction::Class(1)
        );
        assert_eq!(
            Prediction::from_logits(Task::Mnli, &[3.0, 3.0, -1.0]).unwrap(),
            Prediction::Class(0)
        );
        assert_eq!(
            Prediction::from_logits(Task::StsB, &[4.25]).unwrap(),
            Prediction::Score(4.25)
        );
        assert!(matches!(
            Prediction::from_logits(Task::Sst2, &[1.0, 2.0, 3.0]),
            Err(GlueError::LogitCount {
                expected: 2,
                got: 3,
                ..
            })
        ));
        assert!(Prediction::from_logits(Task::StsB, &[]).is_err());
        assert_eq!(argmax(&[f32::NAN, -1.0, -2.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn non_finite_logits_are_errors_not_class_0() {
        for logits in [[f32::NAN, f32::NAN], [f32::NAN, -1.0], [f32::INFINITY, 0.0], [0.0, f32::NEG_INFINITY]] {
            let err = Prediction::from_logits(Task::Sst2, &logits).unwrap_err();
            assert!(matches!(err, GlueError::NonFiniteLogits { .. }), "{logits:?}: {err}");
            assert!(err.to_string().contains("NaN/Inf"), "{err}");
        }
        assert!(matches!(
            Prediction::from_logits(Task::StsB, &[f32::NAN]),
            Err(GlueError::NonFiniteLogits { .. })
        ));
    }

    #[test]
    fn non_finite_scores_never_become_a_correlation_of_0() {
        let x = [1.0, 2.0, 3.0];
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(pearson(&x, &[1.0, bad, 2.0]).is_nan(), "pearson with {bad}");
            assert!(pearson(&[bad, 1.0], &[1.0, 2.0]).is_nan(), "pearson with {bad}");
            assert!(spearman(&x, &[1.0, bad, 2.0]).is_nan(), "spearman with {bad}");
        }
        // A single pair is undefined (0.0) only when it is finite.
        assert!(pearson(&[f64::NAN], &[1.0]).is_nan());

        // compute_metrics refuses a NaN score built without from_logits.
        let ex = examples(&[Label::Score(1.0), Label::Score(2.0)]);
        let err = compute_metrics(Task::StsB, &ex, &[Prediction::Score(1.0), Prediction::Score(f32::NAN)]).unwrap_err();
        assert!(matches!(err, GlueError::NonFinitePrediction { index: 1, .. }), "{err}");
    }

    // ---- metrics ----

    // preds  1 0 1 1 0
    // labels 1 0 0 1 1
    // correct at 0, 1, 3; tp = {0, 3} = 2, fp = {2} = 1, fn = {4} = 1, tn = {1} = 1.
    const PREDS: [usize; 5] = [1, 0, 1, 1, 0];
    const LABELS: [usize; 5] = [1, 0, 0, 1, 1];

    #[test]
    fn accuracy_by_hand() {
        // 3 correct of 5.
        assert!((accuracy(&PREDS, &LABELS) - 0.6).abs() < 1e-12);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn confusion_by_hand() {
        assert_eq!(
            confusion(&PREDS, &LABELS),
            Confusion {
                tp: 2,
                fp: 1,
                fn_: 1,
                tn: 1
            }
        );
        // Class 2 counts as negative.
        assert_eq!(confusion(&[2], &[1]).fn_, 1);
    }

    #[test]
    fn f1_by_hand() {
        // 2 tp / (2 tp + fp + fn) = 4 / (4 + 1 + 1) = 2/3.
        assert!((f1_positive(&PREDS, &LABELS) - 2.0 / 3.0).abs() < 1e-12);
        // No positives predicted or present: undefined, 0.0.
        assert_eq!(f1_positive(&[0, 0], &[0, 0]), 0.0);
        // All wrong: tp = 0, so 0.0.
        assert_eq!(f1_positive(&[1, 0], &[0, 1]), 0.0);
    }

    #[test]
    fn mcc_by_hand() {
        // (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))
        // = (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6.
        assert!((mcc(&PREDS, &LABELS) - 1.0 / 6.0).abs() < 1e-12);
        // Perfect and perfectly inverted.
        assert!((mcc(&[0, 1, 1], &[0, 1, 1]) - 1.0).abs() < 1e-12);
        assert!((mcc(&[1, 0, 0], &[0, 1, 1]) + 1.0).abs() < 1e-12);
        // All predictions one class: undefined, 0.0.
        assert_eq!(mcc(&[1, 1, 1], &[0, 1, 1]), 0.0);
        assert_eq!(mcc(&[], &[]), 0.0);
        // Three classes: preds 0 2 1 2, labels 0 1 2 2. correct c = 2, n = 4,
        // predicted counts p = (1, 1, 2), true counts t = (1, 1, 2), sum p t = 6,
        // (c n - sum p t) / sqrt((n^2 - sum p^2)(n^2 - sum t^2)) = (8 - 6) / sqrt(10 * 10) = 0.2.
        assert!((mcc(&[0, 2, 1, 2], &[0, 1, 2, 2]) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn pearson_by_hand() {
        // x = 1..5 (mean 3), y = 2 4 5 4 5 (mean 4); dx = -2 -1 0 1 2, dy = -2 0 1 0 1;
        // sum dx dy = 4 + 0 + 0 + 0 + 2 = 6, sum dx^2 = 10, sum dy^2 = 6; r = 6 / sqrt(60).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 5.0, 4.0, 5.0];
        assert!((pearson(&x, &y) - 6.0 / 60f64.sqrt()).abs() < 1e-12);
        assert!((pearson(&x, &x) - 1.0).abs() < 1e-12);
        // Constant side or too few pairs: undefined, 0.0.
        assert_eq!(pearson(&x, &[1.0; 5]), 0.0);
        assert_eq!(pearson(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn spearman_by_hand() {
        // Ranks of y = 2 4 5 4 5: 2 -> 1, the two 4s -> (2+3)/2 = 2.5, the two 5s -> (4+5)/2 = 4.5,
        // so ry = 1 2.5 4.5 2.5 4.5 (mean 3), rx = 1..5 (mean 3).
        // d ry = -2 -0.5 1.5 -0.5 1.5; sum dx d ry = 4 + 0.5 + 0 - 0.5 + 3 = 7;
        // sum dx^2 = 10, sum d ry^2 = 4 + 0.25 + 2.25 + 0.25 + 2.25 = 9; rho = 7 / sqrt(90).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 5.0, 4.0, 5.0];
        assert_eq!(ranks(&y), vec![1.0, 2.5, 4.5, 2.5, 4.5]);
        assert!((spearman(&x, &y) - 7.0 / 90f64.sqrt()).abs() < 1e-12);
        // Monotonic but not linear: rho = 1.
        assert!((spearman(&x, &[1.0, 8.0, 27.0, 64.0, 125.0]) - 1.0).abs() < 1e-12);
    }

    fn examples(labels: &[Label]) -> Vec<Example> {
        labels
            .iter()
            .map(|&label| Example {
                text_a: "a".into(),
                text_b: None,
                label,
            })
            .collect()
    }

    #[test]
    fn compute_metrics_binary_and_cola() {
        let labels: Vec<Label> = LABELS.iter().map(|&c| class(c)).collect();
        let preds: Vec<Prediction> = PREDS.iter().map(|&c| Prediction::Class(c)).collect();

        let m = compute_metrics(Task::Mrpc, &examples(&labels), &preds).unwrap();
        assert_eq!(m.n, 5);
        assert!((m.accuracy.unwrap() - 0.6).abs() < 1e-12);
        assert!((m.f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.mcc, None);
        assert_eq!(m.pearson, None);
        assert_eq!(m.confusion.unwrap().tp, 2);

        let m = compute_metrics(Task::Cola, &examples(&labels), &preds).unwrap();
        assert!((m.mcc.unwrap() - 1.0 / 6.0).abs() < 1e-12);

        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["task"], "cola");
        assert_eq!(json["n"], 5);
        assert_eq!(json["confusion"]["fn"], 1);
        assert!(json.get("pearson").is_none());
    }

    #[test]
    fn compute_metrics_mnli_has_no_f1() {
        let labels = [class(0), class(1), class(2), class(2)];
        let preds = [0, 1, 1, 2].map(Prediction::Class);
        let m = compute_metrics(Task::Mnli, &examples(&labels), &preds).unwrap();
        // 3 of 4 correct.
        assert!((m.accuracy.unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(m.f1, None);
        assert_eq!(m.confusion, None);
    }

    #[test]
    fn compute_metrics_stsb() {
        // Same numbers as pearson_by_hand / spearman_by_hand (all exact in f32).
        let labels = [2.0, 4.0, 5.0, 4.0, 5.0].map(Label::Score);
        let preds = [1.0, 2.0, 3.0, 4.0, 5.0].map(Prediction::Score);
        let m = compute_metrics(Task::StsB, &examples(&labels), &preds).unwrap();
        assert!((m.pearson.unwrap() - 6.0 / 60f64.sqrt()).abs() < 1e-12);
        assert!((m.spearman.unwrap() - 7.0 / 90f64.sqrt()).abs() < 1e-12);
        assert_eq!(m.accuracy, None);
        assert_eq!(m.f1, None);
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("accuracy").is_none());
    }

    #[test]
    fn compute_metrics_rejects_mismatches() {
        let ex = examples(&[class(1), class(0)]);
        assert!(matches!(
            compute_metrics(Task::Sst2, &ex, &[Prediction::Class(1)]),
            Err(GlueError::LengthMismatch {
                examples: 2,
                predictions: 1
            })
        ));
        let err = compute_metrics(Task::Sst2, &ex, &[Prediction::Class(1), Prediction::Score(0.5)]).unwrap_err();
        assert!(matches!(
            err,
            GlueError::KindMismatch {
                what: "prediction",
                index: 1,
                ..
            }
        ));
        assert!(compute_metrics(Task::StsB, &ex, &[Prediction::Score(1.0); 2]).is_err());
    }
}
