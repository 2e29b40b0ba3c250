//! Reading GLUE TSV files (see the [module docs](super) for the quirks handled): labelled
//! examples in file order.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::shorten;
use super::task::ColumnNames;
use super::{GlueError, Task};
use crate::data::unquote;

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
    /// The line of the file each example is on (from 1).
    pub lines: Vec<usize>,
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
    read_tsv_rows(task, path, usize::MAX)
}

/// The first `rows` examples of a GLUE TSV file of `task` (`--limit`): the lines after them are
/// neither parsed nor checked.
pub fn read_tsv_rows(task: Task, path: &Path, rows: usize) -> Result<Dataset, GlueError> {
    let text = read_utf8(path)?;
    let mut dataset = parse_tsv(task, &path.display().to_string(), &text, rows)?;
    dataset.path = path.to_path_buf();
    Ok(dataset)
}

/// The texts of a GLUE TSV file, read without its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TsvTexts {
    /// Each example's text and pair, in file order.
    pub texts: Vec<(String, Option<String>)>,
    /// The line of the file each is on (from 1).
    pub lines: Vec<usize>,
    /// Whether the file has labels: the header names the task's label column (GLUE's test
    /// files have none; CoLA's headerless files always have one) and not every label is -1
    /// (Hugging Face's mark of an example without one).
    pub labelled: bool,
}

/// The texts (and pairs) of the first `rows` examples of a GLUE TSV file of `task`, in file
/// order; the label column is neither needed nor read (calibration reads texts alone; `diff`
/// compares models on a file without labels).
pub fn read_tsv_texts(task: Task, path: &Path, rows: usize) -> Result<TsvTexts, GlueError> {
    let text = read_utf8(path)?;
    let name = path.display().to_string();
    let mut lines = tsv_lines(&text).peekable();
    // The label column's index, where the file has one.
    let (layout, label_at) = match task.column_names() {
        // CoLA's test file has a header and no labels: `index  sentence`.
        None if lines
            .peek()
            .is_some_and(|(_, h)| h.split('\t').map(str::trim).eq(["index", "sentence"])) =>
        {
            lines.next();
            let layout = Layout {
                text_a: 1,
                text_b: None,
                label: None,
                expected: "index, sentence (CoLA's test file)".to_string(),
            };
            (layout, None)
        }
        None => (Layout::cola(), Some(1)),
        Some(names) => match lines.next() {
            Some((line_no, header)) => {
                let label_at = header.split('\t').position(|f| f.trim() == names.label);
                (
                    Layout::from_header(task, names, &name, line_no, header, false)?,
                    label_at,
                )
            }
            None => return Err(GlueError::NoExamples { file: name }),
        },
    };
    let (mut texts, mut numbers) = (Vec::new(), Vec::new());
    // Labels of -1 alone are no labels (Hugging Face's test splits written as TSV).
    let mut all_unlabelled = true;
    for (line_no, line) in lines.take(rows) {
        let (a, b, _) = layout.fields(task, &name, line_no, line)?;
        texts.push((unquote(a), b.map(unquote)));
        numbers.push(line_no);
        if let Some(i) = label_at {
            all_unlabelled &= line.split('\t').nth(i).is_some_and(unlabelled_mark);
        }
    }
    if texts.is_empty() {
        return Err(GlueError::NoExamples { file: name });
    }
    Ok(TsvTexts {
        texts,
        lines: numbers,
        labelled: label_at.is_some() && !all_unlabelled,
    })
}

/// Hugging Face's label for an example without one: -1.
pub fn unlabelled_mark(label: &str) -> bool {
    label.trim() == "-1"
}

fn read_utf8(path: &Path) -> Result<String, GlueError> {
    let bytes = std::fs::read(path).map_err(|cause| GlueError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        GlueError::NotUtf8 {
            file: path.display().to_string(),
            line,
            why: crate::data::not_utf8(err.as_bytes()),
        }
    })?;
    if crate::data::cr_line_ends(&text) {
        return Err(GlueError::LineEnds {
            file: path.display().to_string(),
        });
    }
    Ok(text)
}

/// Reads GLUE TSV text of `task`; `name` is used for [`Dataset::path`] and in error messages.
pub fn read_tsv_str(task: Task, name: &str, text: &str) -> Result<Dataset, GlueError> {
    parse_tsv(task, name, text, usize::MAX)
}

fn parse_tsv(task: Task, name: &str, text: &str, rows: usize) -> Result<Dataset, GlueError> {
    let mut lines = tsv_lines(text);

    let layout = match task.column_names() {
        None => Layout::cola(),
        Some(names) => match lines.next() {
            Some((line_no, header)) => Layout::from_header(task, names, name, line_no, header, true)?,
            None => return Err(GlueError::NoExamples { file: name.to_string() }),
        },
    };

    let (mut examples, mut numbers) = (Vec::new(), Vec::new());
    for (line_no, line) in lines.take(rows) {
        examples.push(layout.parse_row(task, name, line_no, line)?);
        numbers.push(line_no);
    }
    if examples.is_empty() {
        return Err(GlueError::NoExamples { file: name.to_string() });
    }
    Ok(Dataset {
        task,
        path: PathBuf::from(name),
        examples,
        lines: numbers,
    })
}

/// The non-empty lines of TSV text with their line numbers (from 1): a leading byte order mark
/// removed, `\n` or `\r\n` line ends. Every TSV this tool reads, GLUE's or not, is split here.
pub fn tsv_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.is_empty())
}

/// Field indexes of the columns a task needs.
struct Layout {
    text_a: usize,
    text_b: Option<usize>,
    /// `None` where labels are not read.
    label: Option<usize>,
    /// Description of the needed columns, for short-row errors.
    expected: String,
}

impl Layout {
    /// CoLA: `source  label  original label  sentence`, no header.
    fn cola() -> Layout {
        Layout {
            text_a: 3,
            text_b: None,
            label: Some(1),
            expected: "source, label, original label, sentence; GLUE CoLA files have no header".to_string(),
        }
    }

    /// The layout a header gives; the label column is needed (and read) with `labels` only.
    fn from_header(
        task: Task,
        names: ColumnNames,
        file: &str,
        line: usize,
        header: &str,
        labels: bool,
    ) -> Result<Layout, GlueError> {
        let found: Vec<&str> = header.split('\t').collect();
        let position = |name: &str| found.iter().position(|f| f.trim() == name);

        let mut needed = vec![names.text_a];
        needed.extend(names.text_b);
        if labels {
            needed.push(names.label);
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|n| position(n).is_none())
            .map(|n| n.to_string())
            .collect();

        match (position(names.text_a), position(names.label)) {
            (Some(text_a), label) if missing.is_empty() => Ok(Layout {
                text_a,
                text_b: names.text_b.and_then(position),
                label: label.filter(|_| labels),
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
        let (text_a, text_b, raw_label) = self.fields(task, file, line, row)?;
        let raw_label = raw_label.expect("a labelled layout reads its label").trim();
        let label = task.parse_label_loose(raw_label).ok_or_else(|| GlueError::BadLabel {
            file: file.to_string(),
            line,
            value: shorten(raw_label),
            expected: task.label_problem(raw_label),
        })?;
        Ok(Example {
            text_a: unquote(text_a),
            text_b: text_b.map(unquote),
            label,
        })
    }

    /// A row's text, pair and (where the layout reads one) raw label.
    fn fields<'r>(
        &self,
        task: Task,
        file: &str,
        line: usize,
        row: &'r str,
    ) -> Result<(&'r str, Option<&'r str>, Option<&'r str>), GlueError> {
        let fields: Vec<&str> = row.split('\t').collect();
        let field = |index: usize| {
            fields.get(index).copied().ok_or_else(|| {
                let needed = 1 + self.text_a.max(self.label.unwrap_or(0)).max(self.text_b.unwrap_or(0));
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

        let text_a = field(self.text_a)?;
        let text_b = self.text_b.map(field).transpose()?;
        let label = self.label.map(field).transpose()?;
        Ok((text_a, text_b, label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glue_file_with_carriage_return_line_ends_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.tsv");
        std::fs::write(&p, "sentence\tlabel\rgood\t1\rbad\t0\r").unwrap();
        let e = read_tsv(Task::Sst2, &p).unwrap_err().to_string();
        assert!(e.contains("carriage return alone") && e.contains("dev.tsv"), "{e}");
    }

    fn read(task: Task, text: &str) -> Result<Dataset, GlueError> {
        read_tsv_str(task, "dev.tsv", text)
    }

    /// Each example's line of the file (what `diff` and `eval` point to), past blank lines.
    #[test]
    fn examples_know_their_lines() {
        let data = read(Task::Sst2, "sentence\tlabel\ngood\t1\n\nbad\t0\r\n").unwrap();
        assert_eq!(data.lines, vec![2, 4]);
    }

    fn class(c: usize) -> Label {
        Label::Class(c)
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
    fn a_missing_or_fractional_label_is_named_as_such() {
        for (label, says) in [
            ("", "the label is missing (empty)"),
            ("NaN", "the label is missing (NaN)"),
            ("1.5", "1.5 is not a whole number"),
            ("2", "SST-2 labels are 0 or 1 (or negative, positive)"),
        ] {
            let e = read(Task::Sst2, &format!("sentence\tlabel\ngood\t{label}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{label:?}: {e}");
        }
    }

    #[test]
    fn a_field_pandas_quoted_is_unquoted_and_names_read() {
        let tsv = "sentence\tlabel\n\"a \"\"b\"\" c\"\tpositive\n\"kept\"\t0\n";
        let data = read(Task::Sst2, tsv).unwrap();
        assert_eq!(data.examples[0].text_a, "a \"b\" c");
        assert_eq!(data.examples[0].label, class(1));
        assert_eq!(data.examples[1].text_a, "\"kept\"");
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
        // WNLI's labels are 0 / 1, Hugging Face's names not_entailment / entailment.
        assert_eq!(read(Task::Wnli, rte).unwrap().examples[0].label, class(1));
        let maybe = "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n";
        assert!(matches!(
            read(Task::Wnli, maybe),
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

        for bad in ["abc", "inf", "-0.5", "5.5"] {
            let err = read(Task::StsB, &format!("{header}0\tnews\tA.\tB.\t{bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("STS-B scores are numbers from 0 to 5"),
                "{err}"
            );
        }
        for missing in ["NaN", ""] {
            let err = read(Task::StsB, &format!("{header}0\tnews\tA.\tB.\t{missing}\n")).unwrap_err();
            assert!(err.to_string().contains("the label is missing"), "{err}");
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
            "label \"2\" on line 7 of dev.tsv: SST-2 labels are 0 or 1 (or negative, positive)"
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
}
