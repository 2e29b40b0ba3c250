//! The user's own data: examples from TSV, CSV, JSON Lines and Parquet files (Hugging Face
//! datasets' own files included), with the text, text-pair and label columns named by flags, by
//! a GLUE task's preset, or found by their usual names.
//!
//! - [`read_table`] reads any of the formats into named columns of typed cells
//!   ([`table`](self::table) has the format rules: TSV without quoting as GLUE needs, CSV with
//!   RFC 4180 quoting, one JSON object per line, Parquet's own types).
//! - [`read_texts`] picks the text columns (calibration needs no labels); [`read_labelled`] also
//!   the label column and maps each label through [`Labels`]: a GLUE task's label set, the
//!   model's classes (named by `--labels` or its `config.json`'s `id2label`), or scores.
//! - A GLUE task's `.tsv` with no column flags is read by [`crate::glue::read_tsv`], exactly as
//!   before, so the reference's numbers cannot move; its Parquet/CSV/JSONL copies go through the
//!   same preset (GLUE's and Hugging Face's column names, labels as names or class indexes).
//!
//! Bad data is refused, never skipped: a missing column (the error lists the columns there are),
//! an empty file, a record with the wrong number of fields, a null or non-text text, a label the
//! label set does not have, a column mixing strings and numbers: each names the file and the
//! line (or the Parquet row).

mod error;
pub mod labels;
mod table;

use std::path::PathBuf;

use serde::Serialize;

pub use error::{DataError, Loc};
pub use labels::{model_labels, Labels, ModelLabels};
pub(crate) use table::{cr_line_ends, not_utf8, unquote, CR_LINE_ENDS};
pub use table::{read_table, read_table_rows, read_text, Cell, Format, Record, Table};

use crate::glue::{self, Example, Label, Task};

/// Column names given by the user (`--text-column`, `--text-pair-column`, `--label-column`).
/// Two are equal when they name the same columns, wherever they were given.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Columns {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Where the names are given, for messages: `None` on the command line (`--text-column`),
    /// `Some(section)` in a recipe's section (`data.text_column`).
    #[serde(skip)]
    pub named_in: Option<&'static str>,
}

impl PartialEq for Columns {
    fn eq(&self, other: &Columns) -> bool {
        (&self.text, &self.pair, &self.label) == (&other.text, &other.pair, &other.label)
    }
}

impl Columns {
    pub fn is_empty(&self) -> bool {
        self.text.is_none() && self.pair.is_none() && self.label.is_none()
    }

    /// Where the column of `role` ("text", "text-pair" or "label") is named: the flag
    /// (`--text-column`) or the recipe key (`data.text_column`).
    pub fn setting(&self, role: &str) -> String {
        let key = match role {
            "text" => "text_column",
            "text-pair" => "text_pair_column",
            _ => "label_column",
        };
        match self.named_in {
            Some(section) => format!("{section}.{key}"),
            None => format!("--{}", key.replace('_', "-")),
        }
    }

    /// What to do to name the column of `role`: "pass --text-column NAME" or "set data.text_column".
    pub fn ask(&self, role: &str) -> String {
        match self.named_in {
            Some(_) => format!("set {}", self.setting(role)),
            None => format!("pass {} NAME", self.setting(role)),
        }
    }

    /// What to do to read the file as GLUE's `task`: "pass --task mrpc" or "set data.task: mrpc".
    pub fn ask_task(&self, task: Task) -> String {
        match self.named_in {
            Some(_) => format!("set data.task: {}", task.name()),
            None => format!("pass --task {}", task.name()),
        }
    }
}

/// A data file and how to read it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    /// `None`: by the file's extension.
    pub format: Option<Format>,
    pub columns: Columns,
    /// A GLUE task whose preset names the columns and labels.
    pub task: Option<Task>,
}

impl Source {
    pub fn format(&self) -> Result<Format, DataError> {
        if let Some(f) = self.format {
            return Ok(f);
        }
        Format::of_path(&self.path).ok_or_else(|| DataError::Format {
            file: self.path.display().to_string(),
            message: format!(
                "cannot tell the format from the extension (.tsv, .csv, .jsonl, .parquet); pass --format {{{}}}",
                Format::names("|")
            ),
        })
    }

    /// Whether this is a GLUE task's own TSV, read by the GLUE reader unchanged: a TSV of the
    /// task, no column named, and a header without Hugging Face's names for the texts in place of
    /// GLUE's (MRPC's `sentence1` for `#1 String`: such a file is read by the table reader with
    /// the preset).
    fn is_glue_tsv(&self) -> Result<Option<Task>, DataError> {
        let Some(t) = self.task else { return Ok(None) };
        if !self.columns.is_empty() || self.format()? != Format::Tsv {
            return Ok(None);
        }
        let header = first_line(&self.path).map_err(|cause| DataError::Io {
            path: self.path.clone(),
            cause,
        })?;
        let fields: Vec<&str> = header.split('\t').map(str::trim).collect();
        let Some(names) = t.column_names() else {
            // CoLA's files have no header and four fields: one field is a file of texts alone.
            return Ok((fields.len() != 1).then_some(t));
        };
        let has = |a: &str, b: Option<&str>| fields.contains(&a) && b.is_none_or(|b| fields.contains(&b));
        let (hf_text, hf_pair, _) = hf_names(t);
        // Neither layout: GLUE's reader names the columns GLUE's file has.
        let hugging_face = !has(names.text_a, names.text_b) && has(hf_text, hf_pair);
        // One column of another name (texts alone, for calibration): the table reader reads it,
        // as it reads such a file without a task (and says a pair task needs two).
        let one_column = fields.len() == 1 && !has(names.text_a, None);
        Ok((!hugging_face && !one_column).then_some(t))
    }
}

/// The first non-empty line of a text file (without a byte-order mark), read as far as it goes.
fn first_line(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut line: Vec<u8> = Vec::new();
    while line.iter().all(|b| b.is_ascii_whitespace()) {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// The columns read, as chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chosen {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Texts to run through a model (calibration): one `(text, pair)` per record, in file order.
#[derive(Debug, Clone)]
pub struct Texts {
    pub path: PathBuf,
    pub columns: Chosen,
    pub texts: Vec<(String, Option<String>)>,
    /// Where each text is in the file.
    pub locs: Vec<Loc>,
}

/// Labelled examples, in file order.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub path: PathBuf,
    pub columns: Chosen,
    pub examples: Vec<Example>,
    /// Where each example is in the file (for errors found later, such as a class the model
    /// does not have).
    pub locs: Vec<Loc>,
}

/// Examples with their labels where the file has a label column, else texts alone: `diff`
/// compares two models' predictions and needs no labels (it reports accuracy where there are).
#[derive(Debug, Clone)]
pub enum Examples {
    Labelled(Labelled),
    Unlabelled(Texts),
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Examples::Labelled(d) => d.examples.len(),
            Examples::Unlabelled(t) => t.texts.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i`'s text and pair.
    pub fn text(&self, i: usize) -> (&str, Option<&str>) {
        match self {
            Examples::Labelled(d) => (&d.examples[i].text_a, d.examples[i].text_b.as_deref()),
            Examples::Unlabelled(t) => (&t.texts[i].0, t.texts[i].1.as_deref()),
        }
    }

    /// Example `i`'s label, where the file has labels.
    pub fn label(&self, i: usize) -> Option<Label> {
        match self {
            Examples::Labelled(d) => Some(d.examples[i].label),
            Examples::Unlabelled(_) => None,
        }
    }

    /// Where each example is in the file.
    pub fn locs(&self) -> &[Loc] {
        match self {
            Examples::Labelled(d) => &d.locs,
            Examples::Unlabelled(t) => &t.locs,
        }
    }
}

/// Whether a file's label column is read, and its labels' meaning.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want<'a> {
    /// Texts alone.
    Texts,
    /// The label column named by a flag, the task's preset or a usual name, when there is one.
    LabelsIfPresent(&'a Labels),
    /// Needed: a missing one is an error.
    Labels(&'a Labels),
}

/// Hugging Face `glue` column names of a task (text, pair, label), beside GLUE's own TSV names.
fn hf_names(task: Task) -> (&'static str, Option<&'static str>, &'static str) {
    match task {
        Task::Sst2 | Task::Cola => ("sentence", None, "label"),
        Task::Mrpc | Task::Rte | Task::Wnli | Task::StsB => ("sentence1", Some("sentence2"), "label"),
        Task::Qqp => ("question1", Some("question2"), "label"),
        Task::Qnli => ("question", Some("sentence"), "label"),
        Task::Mnli => ("premise", Some("hypothesis"), "label"),
    }
}

/// Text columns tried, in order, when none is named: (text, its pair).
const USUAL_TEXT: [(&str, Option<&str>); 7] = [
    ("text", Some("text_pair")),
    ("sentence1", Some("sentence2")),
    ("question1", Some("question2")),
    ("premise", Some("hypothesis")),
    ("sentence", None),
    ("question", None),
    ("content", None),
];
/// Label columns tried, in order, when none is named.
const USUAL_LABEL: [&str; 5] = ["label", "labels", "gold_label", "score", "target"];

fn choose(table: &Table, src: &Source, want: Want) -> Result<(Chosen, [Option<usize>; 3]), DataError> {
    let named = |role: &'static str, name: &str| {
        table.column(name).ok_or_else(|| DataError::MissingColumn {
            file: table.file.clone(),
            role,
            names: vec![name.to_string()],
            found: table.columns.clone(),
            hint: format!(" (set by {})", src.columns.setting(role)),
        })
    };
    let preset = src.task.map(|t| {
        let (text, pair, label) = hf_names(t);
        let glue = t.column_names();
        (
            [glue.as_ref().map(|g| g.text_a), Some(text)],
            [glue.as_ref().and_then(|g| g.text_b), pair],
            [glue.as_ref().map(|g| g.label), Some(label)],
        )
    });
    let first_of = |names: &[Option<&'static str>]| names.iter().flatten().find_map(|n| table.column(n));

    // The pair under a task: the one named, else a pair task's second text from its names, else
    // asked for (the first text alone would run a pair model on half of each example).
    let task_pair = || -> Result<Option<usize>, DataError> {
        match (&src.columns.pair, &preset, src.task) {
            // A second text for a one-text task's model would be read as part of the example.
            (Some(p), _, Some(task)) if !task.is_pair() => Err(DataError::Format {
                file: table.file.clone(),
                message: format!(
                    "{} {p:?} names a second text, but {task} reads one text per example; leave it out (or leave out the task to read pairs for your own model)",
                    src.columns.setting("text-pair")
                ),
            }),
            (Some(p), _, _) => Ok(Some(named("text-pair", p)?)),
            (None, Some((_, pairs, _)), Some(task)) if task.is_pair() => match first_of(pairs) {
                Some(p) => Ok(Some(p)),
                None => Err(DataError::MissingColumn {
                    file: table.file.clone(),
                    role: "text-pair",
                    names: dedup(pairs),
                    found: table.columns.clone(),
                    hint: format!(" ({task} is a sentence-pair task; {})", src.columns.ask("text-pair")),
                }),
            },
            _ => Ok(None),
        }
    };

    // Text and pair.
    let (text, pair) = match (&src.columns.text, &preset) {
        (Some(t), _) => {
            let pair = task_pair()?;
            (named("text", t)?, pair)
        }
        (None, Some((texts, _, _))) => {
            let task = src.task.expect("preset implies a task");
            // A file of one column, read for its texts alone (calibration), holds them there,
            // whatever its name, as without a task; a pair task needs two.
            let one_column = want == Want::Texts && table.columns.len() == 1;
            let Some(t) = first_of(texts).or((one_column && !task.is_pair()).then_some(0)) else {
                let pairs = if one_column {
                    format!("; a file of one column holds one text per example, and {task} reads pairs")
                } else {
                    String::new()
                };
                return Err(DataError::MissingColumn {
                    file: table.file.clone(),
                    role: "text",
                    names: dedup(texts),
                    found: table.columns.clone(),
                    hint: format!(" ({task}'s names; {}{pairs})", src.columns.ask("text")),
                });
            };
            (t, task_pair()?)
        }
        (None, None) => {
            let usual = USUAL_TEXT
                .iter()
                .find_map(|(t, p)| table.column(t).map(|i| (i, p.and_then(|p| table.column(p)))));
            // A file of one column, read for its texts alone (calibration), holds them there.
            let only = (want == Want::Texts && table.columns.len() == 1).then_some((0, None));
            let Some((t, p)) = usual.or(only) else {
                // A GLUE file read without its task (MRPC's `#1 String`): naming the task reads
                // both sentences and the label, where a text column would read one sentence.
                let ask = match Task::infer_from_header(&table.columns.join("\t")) {
                    Some(task) => format!(
                        "it is laid out as GLUE's {task} file: {} (its sentences and labels are then read as GLUE's), or {}",
                        src.columns.ask_task(task),
                        src.columns.ask("text")
                    ),
                    None => src.columns.ask("text"),
                };
                return Err(DataError::ChooseColumn {
                    file: table.file.clone(),
                    role: "text",
                    ask,
                    found: table.columns.clone(),
                });
            };
            let p = match &src.columns.pair {
                Some(name) => Some(named("text-pair", name)?),
                None => p,
            };
            (t, p)
        }
    };

    // Label.
    let optional = matches!(want, Want::LabelsIfPresent(_));
    let label = if want == Want::Texts {
        None
    } else if let Some(l) = &src.columns.label {
        Some(named("label", l)?)
    } else if let Some((_, _, labels)) = &preset {
        let task = src.task.expect("preset implies a task");
        match first_of(labels) {
            Some(l) => Some(l),
            None if optional => None,
            None => {
                return Err(DataError::MissingColumn {
                    file: table.file.clone(),
                    role: "label",
                    names: dedup(labels),
                    found: table.columns.clone(),
                    hint: format!(" ({task}'s names; {})", src.columns.ask("label")),
                })
            }
        }
    } else {
        match USUAL_LABEL.iter().find_map(|l| table.column(l)) {
            Some(l) => Some(l),
            None if optional => None,
            // Nothing else to name: the file holds texts alone.
            None if table.columns.len() == 1 + usize::from(pair.is_some()) => {
                return Err(DataError::Format {
                    file: table.file.clone(),
                    message: format!(
                        "no labels: its only {} [{}] {} the texts; add a label column (comparing two models, `diff`, needs none)",
                        if pair.is_some() { "columns" } else { "column" },
                        crate::glue::error::quote_list(&table.columns),
                        if pair.is_some() { "hold" } else { "holds" },
                    ),
                })
            }
            None => {
                return Err(DataError::ChooseColumn {
                    file: table.file.clone(),
                    role: "label",
                    ask: src.columns.ask("label"),
                    found: table.columns.clone(),
                })
            }
        }
    };
    // A chosen column whose name the header holds twice: which one is meant is not known.
    for (role, i) in [("text", Some(text)), ("text-pair", pair), ("label", label)] {
        let Some(i) = i else { continue };
        let twice: Vec<usize> = (0..table.columns.len())
            .filter(|&j| table.columns[j] == table.columns[i])
            .collect();
        if twice.len() > 1 {
            return Err(DataError::DuplicateColumn {
                file: table.file.clone(),
                role,
                name: table.columns[i].clone(),
                at: twice.iter().map(|j| j + 1).collect(),
            });
        }
    }
    // One column read for two roles: the text would be its own label, or its own pair.
    let roles = [("text", Some(text)), ("text-pair", pair), ("label", label)];
    for (k, (first, a)) in roles.iter().enumerate() {
        if let Some((second, _)) = roles[k + 1..].iter().find(|(_, b)| a.is_some() && b == a) {
            return Err(DataError::Format {
                file: table.file.clone(),
                message: format!(
                    "the column \"{}\" is read as both the {first} and the {second}; name another column for one of them ({} or {})",
                    table.columns[a.unwrap_or(0)],
                    src.columns.setting(first),
                    src.columns.setting(second)
                ),
            });
        }
    }
    let name = |i: usize| table.columns[i].clone();
    Ok((
        Chosen {
            text: name(text),
            pair: pair.map(name),
            label: label.map(name),
        },
        [Some(text), pair, label],
    ))
}

fn dedup(names: &[Option<&str>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().flatten() {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// The first record whose cell in `column` is of another kind than the first non-null one.
fn check_one_kind(table: &Table, column: usize) -> Result<(), DataError> {
    let mut first: Option<(&'static str, Loc)> = None;
    for r in &table.records {
        let cell = &r.cells[column];
        if matches!(cell, Cell::Null) {
            continue;
        }
        match first {
            None => first = Some((cell.kind(), r.at)),
            Some((kind, at)) if kind != cell.kind() => {
                return Err(DataError::Record {
                    file: table.file.clone(),
                    at: r.at,
                    message: format!(
                        "column {:?} holds a {} here but a {kind} on {at}; a column must hold one type",
                        table.columns[column],
                        cell.kind()
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn text_cell(table: &Table, record: &Record, column: usize) -> Result<String, DataError> {
    match &record.cells[column] {
        Cell::Str(s) => Ok(s.clone()),
        other => Err(DataError::Record {
            file: table.file.clone(),
            at: record.at,
            message: format!(
                "text column {:?} holds {}, not text",
                table.columns[column],
                match other {
                    Cell::Null => "a null".to_string(),
                    _ => format!("the {} {}", other.kind(), other.show()),
                }
            ),
        }),
    }
}

/// One record read: its text, pair, label (when labels were asked for) and where it is.
struct Item {
    text_a: String,
    text_b: Option<String>,
    label: Option<Label>,
    at: Loc,
}

/// The records of `src`: a GLUE task's TSV through the GLUE reader, any other file through
/// [`read_table`] and the chosen columns; labels, where `want` reads them, mapped through its
/// label set.
/// Only the first `rows` records are read.
fn read_items(src: &Source, want: Want, rows: usize) -> Result<(Chosen, Vec<Item>), DataError> {
    // What is not a file is said so before its name's extension is asked about.
    let not_file = |message: &str| DataError::Format {
        file: src.path.display().to_string(),
        message: message.into(),
    };
    match std::fs::metadata(&src.path) {
        Ok(m) if m.is_dir() => {
            return Err(not_file(
                "a folder; name a data file in it (.tsv, .csv, .jsonl or .parquet)",
            ))
        }
        // A pipe would be waited on for ever, a device read as no examples.
        Ok(m) if !m.is_file() => return Err(not_file("not a file (a device, a pipe or a socket); name a data file")),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_file("no such file")),
        Err(cause) => {
            return Err(DataError::Io {
                path: src.path.clone(),
                cause,
            })
        }
    }
    if let Some(task) = src.is_glue_tsv()? {
        let (text, pair, label) = glue_tsv_names(task);
        // A GLUE TSV's labels are read only where needed: calibration needs none (a label GLUE's
        // reader refuses, "maybe" in an SST-2 file, refused the file), and GLUE's test files
        // have no label column.
        let texts = (!matches!(want, Want::Labels(_)))
            .then(|| glue::read_tsv_texts(task, &src.path, rows))
            .transpose()?;
        if let Some(t) = texts.filter(|t| want == Want::Texts || !t.labelled) {
            let items = t
                .texts
                .into_iter()
                .zip(t.lines)
                .map(|((text_a, text_b), line)| Item {
                    text_a,
                    text_b,
                    label: None,
                    at: Loc::Line(line),
                })
                .collect();
            return Ok((
                Chosen {
                    text,
                    pair,
                    label: None,
                },
                items,
            ));
        }
        let d = glue::read_tsv_rows(task, &src.path, rows)?;
        let items = d
            .examples
            .into_iter()
            .zip(d.lines)
            .map(|(e, line)| Item {
                text_a: e.text_a,
                text_b: e.text_b,
                label: Some(e.label),
                at: Loc::Line(line),
            })
            .collect();
        return Ok((Chosen { text, pair, label }, items));
    }
    let table = read_table_rows(&src.path, src.format()?, rows)?;
    let (mut columns, [text, pair, mut label]) = choose(&table, src, want)?;
    let text = text.expect("text is always chosen");
    // Labels of -1 alone: a file without labels (Hugging Face's test splits), where they may be.
    if matches!(want, Want::LabelsIfPresent(_)) && label.is_some_and(|l| all_unlabelled(&table, l)) {
        label = None;
        columns.label = None;
    }
    if let Some(l) = label {
        check_one_kind(&table, l)?;
    }
    let mut items = Vec::with_capacity(table.records.len());
    for r in &table.records {
        let text_a = text_cell(&table, r, text)?;
        let text_b = pair.map(|p| text_cell(&table, r, p)).transpose()?;
        let label = match (label, want) {
            (Some(l), Want::Labels(labels) | Want::LabelsIfPresent(labels)) => Some(
                labels
                    .parse_in(&r.cells[l], src.columns.named_in)
                    .map_err(|expected| DataError::Label {
                        file: table.file.clone(),
                        at: r.at,
                        value: r.cells[l].show(),
                        expected: if is_unlabelled(&r.cells[l]) {
                            format!("{expected}; -1 marks an example without a label (Hugging Face's test splits): evaluate on a labelled split (diff compares models on this one)")
                        } else {
                            expected
                        },
                    })?,
            ),
            _ => None,
        };
        items.push(Item {
            text_a,
            text_b,
            label,
            at: r.at,
        });
    }
    Ok((columns, items))
}

/// Hugging Face's mark of an example without a label: -1.
fn is_unlabelled(cell: &Cell) -> bool {
    match cell {
        Cell::Int(i) => *i == -1,
        Cell::Float(x) => *x == -1.0,
        Cell::Str(s) => glue::unlabelled_mark(s),
        _ => false,
    }
}

/// Whether every label of `column` is -1.
fn all_unlabelled(table: &Table, column: usize) -> bool {
    table.records.iter().all(|r| is_unlabelled(&r.cells[column]))
}

fn glue_tsv_names(task: Task) -> (String, Option<String>, Option<String>) {
    match task.column_names() {
        Some(c) => (c.text_a.into(), c.text_b.map(String::from), Some(c.label.into())),
        None => ("sentence (4th field)".into(), None, Some("label (2nd field)".into())),
    }
}

/// The texts of `src` (no label needed): for calibration.
pub fn read_texts(src: &Source) -> Result<Texts, DataError> {
    let (columns, items) = read_items(src, Want::Texts, usize::MAX)?;
    Ok(texts_of(src, columns, items))
}

fn texts_of(src: &Source, columns: Chosen, items: Vec<Item>) -> Texts {
    let (texts, locs) = items.into_iter().map(|i| ((i.text_a, i.text_b), i.at)).unzip();
    Texts {
        path: src.path.clone(),
        columns,
        texts,
        locs,
    }
}

/// The labelled examples of `src`, each label mapped through `labels`.
pub fn read_labelled(src: &Source, labels: &Labels) -> Result<Labelled, DataError> {
    let (columns, items) = read_items(src, Want::Labels(labels), usize::MAX)?;
    Ok(labelled_of(src, columns, items))
}

fn labelled_of(src: &Source, columns: Chosen, items: Vec<Item>) -> Labelled {
    let (examples, locs) = items
        .into_iter()
        .map(|i| {
            let example = Example {
                text_a: i.text_a,
                text_b: i.text_b,
                label: i.label.expect("labels were read"),
            };
            (example, i.at)
        })
        .unzip();
    Labelled {
        path: src.path.clone(),
        columns,
        examples,
        locs,
    }
}

/// The examples of `src`, labelled (through `labels`) where the file has a label column (one a
/// flag names must be there), else texts alone.
pub fn read_examples(src: &Source, labels: &Labels) -> Result<Examples, DataError> {
    read_first(src, labels, false, None)
}

/// The first `rows` examples of `src` (all where `None`: `--limit`), labelled where
/// `need_labels` or, otherwise, where the file has a label column; the records after them are
/// neither parsed nor checked.
pub fn read_first(
    src: &Source,
    labels: &Labels,
    need_labels: bool,
    rows: Option<usize>,
) -> Result<Examples, DataError> {
    let rows = rows.unwrap_or(usize::MAX);
    if need_labels {
        let (columns, items) = read_items(src, Want::Labels(labels), rows)?;
        return Ok(Examples::Labelled(labelled_of(src, columns, items)));
    }
    let (columns, items) = read_items(src, Want::LabelsIfPresent(labels), rows)?;
    Ok(if columns.label.is_some() {
        Examples::Labelled(labelled_of(src, columns, items))
    } else {
        Examples::Unlabelled(texts_of(src, columns, items))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn src(path: PathBuf) -> Source {
        Source {
            path,
            format: None,
            columns: Columns::default(),
            task: None,
        }
    }

    fn classes(names: &[&str]) -> Labels {
        Labels::Classes {
            names: Some(names.iter().map(|s| s.to_string()).collect()),
            source: "test".into(),
        }
    }

    #[test]
    fn a_chosen_column_named_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let l = classes(&["neg", "pos"]);
        let p = write(dir.path(), "d.csv", "text,label,label\na,pos,neg\n");
        let e = read_labelled(&src(p), &l).unwrap_err().to_string();
        assert!(
            e.contains("the label column \"label\" appears 2 times in the header (columns 2, 3)"),
            "{e}"
        );
        // Usual names in another case, and a flag's name spelled with the header's spaces.
        let p = write(dir.path(), "c.csv", "Text, Label \na,pos\n");
        assert_eq!(read_labelled(&src(p.clone()), &l).unwrap().examples.len(), 1);
        let mut named = src(p);
        named.columns.label = Some(" Label ".into());
        assert_eq!(read_labelled(&named, &l).unwrap().examples.len(), 1);
        // A column named twice that is not read is no matter.
        let p = write(dir.path(), "e.csv", "text,label,note,note\na,pos,x,y\n");
        assert_eq!(read_labelled(&src(p), &l).unwrap().examples.len(), 1);
    }

    #[test]
    fn usual_names_and_string_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.csv",
            "id,text,label\n1,good film,pos\n2,\"bad, bad\",neg\n",
        );
        let d = read_labelled(&src(p), &classes(&["neg", "pos"])).unwrap();
        assert_eq!(d.columns.text, "text");
        assert_eq!(d.columns.label.as_deref(), Some("label"));
        assert_eq!(d.examples[1].text_a, "bad, bad");
        assert_eq!(d.examples[0].label, Label::Class(1));
        assert_eq!(d.locs[1], Loc::Line(3));

        let e = read_labelled(&src(dir.path().join("d.csv")), &classes(&["negative", "positive"])).unwrap_err();
        assert!(e.to_string().starts_with("label \"pos\" on line 2 of"), "{e}");
        assert!(e.to_string().contains("negative, positive"), "{e}");
    }

    #[test]
    fn named_columns_pairs_and_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.jsonl",
            "{\"q\": \"a?\", \"d\": \"b.\", \"y\": 1}\n{\"q\": \"c?\", \"d\": \"d.\", \"y\": 0}\n",
        );
        let mut s = src(p);
        s.columns = Columns {
            text: Some("q".into()),
            pair: Some("d".into()),
            label: Some("y".into()),
            named_in: None,
        };
        let d = read_labelled(
            &s,
            &Labels::Classes {
                names: None,
                source: "test".into(),
            },
        )
        .unwrap();
        assert_eq!(d.examples[0].text_b.as_deref(), Some("b."));
        assert_eq!(d.examples[1].label, Label::Class(0));

        s.columns.label = Some("gold".into());
        let e = read_labelled(&s, &classes(&["a", "b"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: no label column \"gold\"; the file has columns [\"d\", \"q\", \"y\"] (set by --label-column)",
                s.path.display()
            )
        );
        s.columns = Columns::default();
        let e = read_texts(&s).unwrap_err();
        assert!(e.to_string().contains("which column holds the text?"), "{e}");
        assert!(e.to_string().contains("--text-column NAME"), "{e}");
        assert!(!e.to_string().contains("GLUE"), "{e}");
        // A GLUE file read without its task: the task is named, as the way to read both texts.
        let p = write(
            dir.path(),
            "dev.tsv",
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA b.\tC d.\n",
        );
        let e = read_texts(&src(p.clone())).unwrap_err().to_string();
        assert!(e.contains("laid out as GLUE's MRPC file: pass --task mrpc"), "{e}");
        let mut s = src(p);
        s.columns.named_in = Some("data");
        let e = read_texts(&s).unwrap_err().to_string();
        assert!(
            e.contains("set data.task: mrpc") && e.contains("or set data.text_column"),
            "{e}"
        );
    }

    #[test]
    fn mixed_types_and_null_text_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.jsonl",
            "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": \"pos\"}\n",
        );
        let e = read_labelled(&src(p), &classes(&["neg", "pos"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "line 2 of {}: column \"label\" holds a string here but a number on line 1; a column must hold one type",
                dir.path().join("d.jsonl").display()
            )
        );
        let p = write(dir.path(), "n.jsonl", "{\"text\": \"a\"}\n{\"text\": null}\n");
        let e = read_texts(&src(p)).unwrap_err();
        assert!(
            e.to_string().contains("line 2 of") && e.to_string().contains("null, not text"),
            "{e}"
        );
    }

    #[test]
    fn glue_presets_read_hf_column_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "v.jsonl",
            "{\"sentence1\": \"A.\", \"sentence2\": \"B.\", \"label\": 1, \"idx\": 0}\n",
        );
        let mut s = src(p);
        s.task = Some(Task::Mrpc);
        let d = read_labelled(&s, &Labels::Glue(Task::Mrpc)).unwrap();
        assert_eq!(d.columns.text, "sentence1");
        assert_eq!(d.columns.pair.as_deref(), Some("sentence2"));
        assert_eq!(d.examples[0].label, Label::Class(1));

        s.task = Some(Task::Qqp);
        let e = read_labelled(&s, &Labels::Glue(Task::Qqp)).unwrap_err();
        assert!(e.to_string().contains("no text column \"question1\""), "{e}");

        // A pair task with the first text's column named: the second comes from the task's names,
        // and where the file has none of them it is asked for, not left out.
        s.task = Some(Task::Mrpc);
        s.columns.text = Some("sentence1".into());
        let d = read_labelled(&s, &Labels::Glue(Task::Mrpc)).unwrap();
        assert_eq!(d.columns.pair.as_deref(), Some("sentence2"));
        let p = write(dir.path(), "a.csv", "a,b,label\nA.,B.,1\n");
        let mut s = src(p);
        s.task = Some(Task::Mrpc);
        s.columns.text = Some("a".into());
        let e = read_labelled(&s, &Labels::Glue(Task::Mrpc)).unwrap_err().to_string();
        assert!(
            e.contains("MRPC is a sentence-pair task; pass --text-pair-column NAME"),
            "{e}"
        );
        s.columns.pair = Some("b".into());
        assert_eq!(
            read_labelled(&s, &Labels::Glue(Task::Mrpc))
                .unwrap()
                .columns
                .pair
                .as_deref(),
            Some("b")
        );
    }

    #[test]
    fn glue_tsv_goes_through_the_glue_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "dev.tsv", "\u{feff}sentence\tlabel\nfine \t1\n");
        let mut s = src(p);
        s.task = Some(Task::Sst2);
        let d = read_labelled(&s, &Labels::Glue(Task::Sst2)).unwrap();
        assert_eq!(d.examples[0].text_a, "fine ");
        // The same file without the preset is read by the generic reader.
        s.task = None;
        let d = read_labelled(&s, &classes(&["0", "1"])).unwrap();
        assert_eq!(d.examples[0].label, Label::Class(1));
        assert_eq!(d.columns.text, "sentence");
    }

    #[test]
    fn examples_are_labelled_where_the_file_has_labels() {
        let dir = tempfile::tempdir().unwrap();
        let l = classes(&["neg", "pos"]);
        // A usual label column is read (and its labels checked); none is texts alone.
        let p = write(dir.path(), "a.csv", "text,label\nfine,pos\nbad,neg\n");
        let Examples::Labelled(d) = read_examples(&src(p), &l).unwrap() else {
            panic!("a label column is read")
        };
        assert_eq!(d.examples[1].label, Label::Class(0));
        let p = write(dir.path(), "b.csv", "text,label\nfine,maybe\n");
        assert!(read_examples(&src(p), &l).unwrap_err().to_string().contains("maybe"));
        let p = write(dir.path(), "c.csv", "text\nfine\n\"bad\"\n");
        let e = read_examples(&src(p), &l).unwrap();
        assert!(matches!(e, Examples::Unlabelled(_)));
        assert_eq!((e.len(), e.text(1), e.label(1)), (2, ("bad", None), None));
        assert_eq!(e.locs()[1].to_string(), "line 3");
        // A label column a flag names must be there.
        let mut named = src(dir.path().join("c.csv"));
        named.columns.label = Some("label".into());
        assert!(read_examples(&named, &l).is_err());
        // A GLUE TSV: labelled with the label column, texts alone without it (GLUE's test files).
        let mut s = src(write(dir.path(), "dev.tsv", "sentence\tlabel\nfine \t1\n"));
        s.task = Some(Task::Sst2);
        assert!(matches!(
            read_examples(&s, &Labels::Glue(Task::Sst2)).unwrap(),
            Examples::Labelled(_)
        ));
        let mut s = src(write(dir.path(), "test.tsv", "index\tsentence\n0\tfine \n1\tbad \n"));
        s.task = Some(Task::Sst2);
        let e = read_examples(&s, &Labels::Glue(Task::Sst2)).unwrap();
        assert!(matches!(e, Examples::Unlabelled(_)));
        assert_eq!(
            (e.text(0), e.locs()[1].to_string()),
            (("fine ", None), "line 3".to_string())
        );
        assert!(read_labelled(&s, &Labels::Glue(Task::Sst2)).is_err());
        // Labels of -1 alone (Hugging Face's test splits) are no labels; evaluation says why.
        let p = write(
            dir.path(),
            "test.jsonl",
            "{\"sentence\": \"fine\", \"label\": -1}\n{\"sentence\": \"bad\", \"label\": -1}\n",
        );
        let mut s = src(p);
        s.task = Some(Task::Sst2);
        assert!(matches!(
            read_examples(&s, &Labels::Glue(Task::Sst2)).unwrap(),
            Examples::Unlabelled(_)
        ));
        let e = read_labelled(&s, &Labels::Glue(Task::Sst2)).unwrap_err().to_string();
        assert!(e.contains("-1 marks an example without a label"), "{e}");
        let p = write(dir.path(), "mixed.csv", "text,label\nfine,1\nbad,-1\n");
        assert!(read_examples(&src(p), &classes(&["neg", "pos"])).is_err());
        // The same in GLUE's own layout: an HF test split saved as TSV, and CoLA's test file.
        for (task, name, body, text) in [
            (
                Task::Sst2,
                "hf.tsv",
                "sentence\tlabel\tidx\nfine \t-1\t0\nbad \t-1\t1\n",
                "fine ",
            ),
            (
                Task::Cola,
                "cola.tsv",
                "index\tsentence\n0\tThe book was read.\n",
                "The book was read.",
            ),
        ] {
            let mut s = src(write(dir.path(), name, body));
            s.task = Some(task);
            let e = read_examples(&s, &Labels::Glue(task)).unwrap();
            assert!(matches!(e, Examples::Unlabelled(_)), "{name}");
            assert_eq!(e.text(0), (text, None), "{name}");
        }
    }

    /// A column named for two roles, or a second text for a one-text task, is refused naming
    /// the column and the flags.
    #[test]
    fn a_column_read_twice_or_a_pair_for_one_text_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "d.csv", "text,y,label\na,b,1\nc,d,0\n");
        let named = |text: Option<&str>, pair: Option<&str>, label: Option<&str>, task: Option<Task>| {
            let mut s = src(file.clone());
            s.columns = Columns {
                text: text.map(String::from),
                pair: pair.map(String::from),
                label: label.map(String::from),
                named_in: None,
            };
            s.task = task;
            let l = task.map_or(classes(&["neg", "pos"]), Labels::Glue);
            read_labelled(&s, &l).map(|_| ()).map_err(|e| e.to_string())
        };
        let e = named(Some("y"), None, Some("y"), None).unwrap_err();
        assert!(
            e.contains("d.csv: the column \"y\" is read as both the text and the label")
                && e.contains("(--text-column or --label-column)"),
            "{e}"
        );
        let e = named(None, Some("text"), None, None).unwrap_err();
        assert!(e.contains("both the text and the text-pair"), "{e}");
        let e = named(Some("text"), Some("y"), Some("y"), Some(Task::Mrpc)).unwrap_err();
        assert!(
            e.contains("the column \"y\" is read as both the text-pair and the label"),
            "{e}"
        );
        let e = named(Some("text"), Some("y"), None, Some(Task::Sst2)).unwrap_err();
        assert!(
            e.contains("--text-pair-column \"y\" names a second text, but SST-2 reads one text per example"),
            "{e}"
        );
        // A file of texts alone has no label to name.
        for (name, body, says) in [
            (
                "texts.csv",
                "text\na\n",
                "no labels: its only column [\"text\"] holds the texts",
            ),
            (
                "pairs.csv",
                "text,text_pair\na,b\n",
                "no labels: its only columns [\"text\", \"text_pair\"] hold the texts",
            ),
        ] {
            let e = read_labelled(&src(write(dir.path(), name, body)), &classes(&["neg", "pos"])).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        // Each role its own column: read.
        named(Some("text"), Some("y"), None, None).unwrap();
        named(Some("text"), Some("y"), None, Some(Task::Mrpc)).unwrap();
    }

    /// `--limit N` reads N records: a broken record after them (a label outside the set, a
    /// short row, a line that is not JSON, a quote never closed) does not fail the run, as it
    /// does without the limit.
    #[test]
    fn only_the_first_rows_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let l = classes(&["neg", "pos"]);
        for (name, body, task) in [
            (
                "bad-label.csv",
                "text,label
a,pos
b,neg
c,maybe
",
                None,
            ),
            ("short.tsv", "text\tlabel\na\tpos\nb\tneg\nc\n", None),
            (
                "quote.csv",
                "text,label
a,pos
b,neg
\"c,pos\nd,neg\n",
                None,
            ),
            (
                "bad.jsonl",
                "{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":\"neg\"}\n{oops\n",
                None,
            ),
            ("glue.tsv", "sentence\tlabel\na \t1\nb \t0\nc \t7\n", Some(Task::Sst2)),
            ("glue-short.tsv", "sentence\tlabel\na \t1\nb \t0\nc\n", Some(Task::Sst2)),
        ] {
            let mut s = src(write(dir.path(), name, body));
            s.task = task;
            let l = task.map_or(l.clone(), Labels::Glue);
            assert!(
                read_first(&s, &l, true, None).is_err(),
                "{name}: the whole file is refused"
            );
            for need_labels in [true, false] {
                let e = read_first(&s, &l, need_labels, Some(2)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(e.len(), 2, "{name}");
                assert_eq!(e.text(1).0.trim(), "b", "{name}");
                assert!(matches!(e, Examples::Labelled(_)), "{name}");
            }
            // A broken record among the first N is still named.
            assert!(read_first(&s, &l, true, Some(3)).is_err(), "{name}");
        }
        // A quote never closed after the first N records is not looked for; one inside them is
        // named, and it is not blamed for another record's error before it.
        let s = src(write(dir.path(), "texts.csv", "text\na\n\"b\nc\nd\n"));
        assert_eq!(read_first(&s, &l, false, Some(1)).unwrap().len(), 1);
        let e = read_first(&s, &l, false, Some(2)).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("never closed"), "{e}");
        let s = src(write(
            dir.path(),
            "short.csv",
            "text,label\na,pos\nb,x,neg\nc,pos\n\"d,neg\n",
        ));
        let e = read_first(&s, &l, true, Some(3)).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("3 comma-separated field(s)"), "{e}");
    }

    /// Calibration under a task preset reads a file of one column as its texts, whatever the
    /// column's name, as it does without a task; a pair task says it needs two; evaluation still
    /// needs the task's columns.
    #[test]
    fn a_one_column_file_is_calibration_text_under_a_task() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("one.tsv", "whatever\na fine film\nbad plot\n"),
            ("one.csv", "whatever\na fine film\nbad plot\n"),
            ("one.jsonl", "{\"text\": \"a fine film\"}\n{\"text\": \"bad plot\"}\n"),
        ] {
            let mut s = src(write(dir.path(), name, body));
            s.task = Some(Task::Sst2);
            let t = read_texts(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                t.texts,
                [("a fine film".to_string(), None), ("bad plot".to_string(), None)],
                "{name}"
            );
            let e = read_labelled(&s, &Labels::Glue(Task::Sst2)).unwrap_err().to_string();
            assert!(e.contains("\"sentence\""), "{name}: {e}");
            s.task = Some(Task::Cola);
            assert_eq!(read_texts(&s).unwrap().texts.len(), 2, "{name}: CoLA");
            s.task = Some(Task::Mrpc);
            let e = read_texts(&s).unwrap_err().to_string();
            assert!(
                e.contains("a file of one column holds one text per example, and MRPC reads pairs"),
                "{name}: {e}"
            );
        }
    }
}
