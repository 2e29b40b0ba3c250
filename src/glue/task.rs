//! The nine GLUE tasks: names, label sets, where their files are, their columns.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{GlueError, Label};

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
pub(crate) struct ColumnNames {
    pub(crate) text_a: &'static str,
    pub(crate) text_b: Option<&'static str>,
    pub(crate) label: &'static str,
}

/// A split as named, or by its file (`--split dev.tsv`): the split (`dev`).
pub fn split_name(split: &str) -> &str {
    split.strip_suffix(".tsv").unwrap_or(split)
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

    pub(super) fn known_names() -> String {
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

    /// The default batch size of a task, or of the user's own data (`None`: 32).
    pub fn batch_size_of(task: Option<Task>) -> usize {
        task.map_or(32, |t| t.default_batch_size())
    }

    /// Finds the TSV file of `split` (`train`, `dev`, ...) under `data_dir`.
    ///
    /// Tries `<data_dir>/<name>/<split>.tsv` (e.g. `sst2/dev.tsv`), then
    /// `<data_dir>/<GLUE dir name>/<split>.tsv` (e.g. `SST-2/dev.tsv`), then the lowercased GLUE
    /// dir name (e.g. `sst-2/dev.tsv`), then, where `data_dir` is the task's own folder
    /// (`glue/sst2`), `<data_dir>/<split>.tsv`. For MNLI the split `dev` means `dev_matched`.
    /// The error lists every path tried.
    pub fn data_file(&self, data_dir: &Path, given: &str) -> Result<PathBuf, GlueError> {
        let split = split_name(given);
        if split.trim().is_empty() || split.contains(['/', '\\']) {
            return Err(GlueError::BadSplit {
                task: *self,
                split: given.to_string(),
            });
        }
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

        let mut tried: Vec<PathBuf> = dirs.iter().map(|dir| data_dir.join(dir).join(&file_name)).collect();
        // The task's own folder given for the GLUE folder (`--data glue/sst2`).
        let named = data_dir.file_name().and_then(|n| n.to_str());
        if named.is_some_and(|n| dirs.iter().any(|d| d.eq_ignore_ascii_case(n))) {
            tried.push(data_dir.join(&file_name));
        }
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
    pub(crate) fn column_names(&self) -> Option<ColumnNames> {
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
    pub(crate) fn parse_label(&self, raw: &str) -> Option<Label> {
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

    /// The class names Hugging Face's `glue` dataset gives the task's labels (its `ClassLabel`
    /// names, in class order); `None` for STS-B's scores.
    pub fn class_names(&self) -> Option<&'static [&'static str]> {
        Some(match self {
            Task::Sst2 => &["negative", "positive"],
            Task::Mrpc => &["not_equivalent", "equivalent"],
            Task::Qqp => &["not_duplicate", "duplicate"],
            Task::Cola => &["unacceptable", "acceptable"],
            Task::Wnli => &["not_entailment", "entailment"],
            Task::Qnli | Task::Rte => &["entailment", "not_entailment"],
            Task::Mnli => &["entailment", "neutral", "contradiction"],
            Task::StsB => return None,
        })
    }

    /// A label of a file that follows the task's layout, not only GLUE's own: GLUE's label,
    /// else a name of [`Task::class_names`] (any case), else a class index ("1", also "1.0").
    pub(crate) fn parse_label_loose(&self, raw: &str) -> Option<Label> {
        if let Some(l) = self.parse_label(raw) {
            return Some(l);
        }
        let names = self.class_names()?;
        if let Some(c) = names.iter().position(|n| n.eq_ignore_ascii_case(raw)) {
            return Some(Label::Class(c));
        }
        let x: f64 = raw.parse().ok()?;
        (x.fract() == 0.0 && x >= 0.0 && (x as usize) < names.len()).then_some(Label::Class(x as usize))
    }

    /// Why `raw` is not a label of the task: missing (empty, NaN), a fraction, or not one of
    /// the labels [`Task::parse_label_loose`] reads.
    pub(crate) fn label_problem(&self, raw: &str) -> String {
        if raw.is_empty() || raw.eq_ignore_ascii_case("nan") {
            return format!(
                "the label is missing ({})",
                if raw.is_empty() { "empty" } else { "NaN" }
            );
        }
        match raw.parse::<f64>() {
            Ok(x) if !self.is_regression() && x.is_finite() && x.fract() != 0.0 => {
                format!("{raw} is not a whole number: class labels are indexes (0, 1, ...) or names")
            }
            _ => self.label_expectation_loose(),
        }
    }

    /// [`Task::label_expectation`] with the other ways [`Task::parse_label_loose`] reads.
    pub(crate) fn label_expectation_loose(&self) -> String {
        match self.class_names() {
            // GLUE's labels are the indexes: the names are the other way.
            Some(names) if self.parse_label("0").is_some() => {
                format!("{} (or {})", self.label_expectation(), names.join(", "))
            }
            // GLUE's labels are the names: the indexes are the other way.
            Some(names) => format!("{} (or a class index 0–{})", self.label_expectation(), names.len() - 1),
            None => self.label_expectation(),
        }
    }

    /// What a valid label looks like, for error messages.
    pub(crate) fn label_expectation(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            Task::Sst2.data_file(dir.path(), "dev.tsv").unwrap(),
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
        // An empty split (or ".tsv") and a path are not file names of the folder: said so, not
        // looked up as ".tsv" or outside it.
        for bad in ["", " ", ".tsv", "../sst2/dev", "sst2\\dev"] {
            let msg = Task::Sst2.data_file(dir.path(), bad).unwrap_err().to_string();
            assert!(msg.contains("is not a file name of the SST-2 folder"), "{bad:?}: {msg}");
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
}
