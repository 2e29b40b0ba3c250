//! What a label cell means: a GLUE task's label, one of the model's classes (by index or by name),
//! or a score; and where the model's class names come from (`--labels`, the names `convert` and
//! every pass embed, or the Hugging Face `config.json` beside the model).

use std::path::Path;

use serde::Serialize;

use super::table::Cell;
use crate::glue::{Label, Task};
use crate::onnx::ModelProto;

/// How labels are read and scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Labels {
    /// A GLUE task's labels and metrics.
    Glue(Task),
    /// The model's classes: a label is a class index, or a name when the names are known.
    Classes {
        names: Option<Vec<String>>,
        /// Where the names came from (or why there are none), for messages and reports.
        source: String,
    },
    /// A model with one output: a label is a number (regression).
    Scores,
}

/// The model's class names and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLabels {
    pub names: Vec<String>,
    pub source: String,
}

impl Labels {
    /// Number of classes when known (`None` for scores, or unnamed classes).
    pub fn class_count(&self) -> Option<usize> {
        match self {
            Labels::Glue(t) if !t.is_regression() => Some(t.num_labels()),
            Labels::Classes { names: Some(n), .. } => Some(n.len()),
            _ => None,
        }
    }

    pub fn names(&self) -> Option<&[String]> {
        match self {
            Labels::Classes { names: Some(n), .. } => Some(n),
            _ => None,
        }
    }

    pub fn is_regression(&self) -> bool {
        match self {
            Labels::Glue(t) => t.is_regression(),
            Labels::Classes { .. } => false,
            Labels::Scores => true,
        }
    }

    /// What valid labels look like, for messages.
    pub fn expectation(&self) -> String {
        self.expectation_in(None)
    }

    /// [`Labels::expectation`], saying what to do in the words of where the columns are named
    /// (`data::Columns::named_in`): `pass --labels …` on the command line, `set data.labels: …`
    /// in a recipe.
    pub fn expectation_in(&self, named_in: Option<&str>) -> String {
        let name = match named_in {
            Some(_) => "set data.labels: NAME0,NAME1,...",
            None => "pass --labels NAME0,NAME1,...",
        };
        match self {
            Labels::Glue(t) => t.label_expectation(),
            Labels::Scores => "the model has one output (a score): labels are numbers".into(),
            Labels::Classes { names: Some(n), source } => format!(
                "the model's labels are {} (class indexes 0–{}), from {source}; {name} to name them otherwise",
                few_names(n),
                n.len().saturating_sub(1)
            ),
            Labels::Classes { names: None, source } => format!(
                "labels must be class indexes 0, 1, ... since no names are known ({source}); {name} in class order"
            ),
        }
    }

    /// Reads one label cell; the error is [`Labels::expectation`] (or why the cell is unusable).
    pub fn parse(&self, cell: &Cell) -> Result<Label, String> {
        self.parse_in(cell, None)
    }

    /// [`Labels::parse`], its error in the words of [`Labels::expectation_in`].
    pub fn parse_in(&self, cell: &Cell, named_in: Option<&str>) -> Result<Label, String> {
        let bad = || Err(self.expectation_in(named_in));
        let index = |i: i64| -> Result<Label, String> {
            match usize::try_from(i) {
                Ok(c) if self.class_count().is_none_or(|n| c < n) => Ok(Label::Class(c)),
                _ => Err(self.expectation_in(named_in)),
            }
        };
        // A whole float as an index: one past i64 (1e23) is no class, not i64::MAX echoed back.
        let index_of = |x: f64| match whole(x) {
            Some(i) => index(i),
            None => bad(),
        };
        // A class label that is a number but not a whole one: say so, not how to name classes.
        let fraction = |x: f64| -> Result<Label, String> {
            Err(format!(
                "{x} is not a whole number: class labels are indexes (0, 1, ...) or names{}",
                if matches!(self, Labels::Glue(_)) {
                    String::new()
                } else {
                    "; a model with one output (a regression) reads numbers".into()
                }
            ))
        };
        match (self, cell) {
            (_, Cell::Null) => Err("the label is missing (null)".into()),
            (_, Cell::Float(x)) if x.is_nan() => {
                Err("the label is missing (NaN: how pandas writes a missing value)".into())
            }
            (_, Cell::Str(s)) if s.trim().is_empty() => Err("the label is missing (empty)".into()),
            (_, Cell::Str(s)) if s.trim().eq_ignore_ascii_case("nan") => Err("the label is missing (NaN)".into()),
            // Names that are numbers other than their indexes ("1".."5" for star ratings, or
            // --labels 1,0): a number is read as a name, in every format alike (a CSV's "1" was
            // the name, a JSON 1 the index).
            (Labels::Classes { names: Some(n), .. }, _) if numbered(n) && number(cell).is_some() => {
                let x = number(cell).expect("checked");
                n.iter()
                    .position(|name| name.trim().parse::<f64>().ok() == Some(x))
                    .map(Label::Class)
                    .ok_or_else(|| {
                        let indexes: Vec<String> = (0..n.len()).map(|i| i.to_string()).collect();
                        let flag = match named_in {
                            Some(_) => format!("set data.labels: {}", indexes.join(",")),
                            None => format!("pass --labels {}", indexes.join(",")),
                        };
                        format!(
                            "{}; these names are numbers other than their indexes, so a number is read as a name ({flag} to read labels as class indexes)",
                            self.expectation_in(named_in)
                        )
                    })
            }
            (Labels::Scores, Cell::Int(i)) => Ok(Label::Score(*i as f32)),
            (Labels::Scores, Cell::Float(x)) if x.is_finite() => Ok(Label::Score(*x as f32)),
            (Labels::Scores, Cell::Str(s)) => match s.trim().parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(Label::Score(x)),
                _ => bad(),
            },
            // A file of one's own may name the classes as Hugging Face's glue dataset does, or
            // write their indexes as text (a CSV of MNLI's 0 / 1 / 2).
            (Labels::Glue(t), Cell::Str(s)) => t.parse_label_loose(s.trim()).ok_or_else(|| t.label_problem(s.trim())),
            (Labels::Glue(t), Cell::Int(i)) if !t.is_regression() => index(*i),
            (Labels::Glue(t), Cell::Float(x)) if !t.is_regression() && x.fract() == 0.0 => index_of(*x),
            (Labels::Glue(t), Cell::Float(x)) if !t.is_regression() && x.is_finite() => fraction(*x),
            (Labels::Glue(t), Cell::Int(_) | Cell::Float(_)) => {
                t.parse_label(&cell.show()).ok_or_else(|| t.label_expectation())
            }
            (Labels::Classes { .. }, Cell::Int(i)) => index(*i),
            (Labels::Classes { .. }, Cell::Float(x)) if x.fract() == 0.0 && x.is_finite() => index_of(*x),
            (Labels::Classes { .. }, Cell::Float(x)) if x.is_finite() => fraction(*x),
            (Labels::Classes { names, .. }, Cell::Str(_) | Cell::Bool(_)) => {
                let shown = match cell {
                    Cell::Str(s) => s.clone(),
                    c => c.show(),
                };
                let s = shown.trim();
                if let Some(n) = names {
                    if let Some(c) = n.iter().position(|name| name == s) {
                        return Ok(Label::Class(c));
                    }
                    let folded: Vec<usize> = (0..n.len()).filter(|&c| n[c].eq_ignore_ascii_case(s)).collect();
                    if let [c] = folded[..] {
                        return Ok(Label::Class(c));
                    }
                }
                // A class index, also as a whole float ("1.0": pandas writes an integer column
                // with a gap so); a boolean is a name ("true", "false") or, with no names, 0 / 1.
                // pandas writes a boolean column to CSV as True / False.
                let text_bool = match cell {
                    Cell::Str(_) if s.eq_ignore_ascii_case("true") => Some(true),
                    Cell::Str(_) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                };
                match (cell, s.parse::<i64>(), s.parse::<f64>()) {
                    (Cell::Bool(b), ..) if names.is_none() => index(i64::from(*b)),
                    (Cell::Str(_), ..) if names.is_none() && text_bool.is_some() => {
                        index(i64::from(text_bool.expect("checked")))
                    }
                    (Cell::Bool(_), ..) => bad(),
                    (_, Ok(i), _) => index(i),
                    (_, _, Ok(x)) if x.is_finite() && x.fract() == 0.0 => index_of(x),
                    (_, _, Ok(x)) if x.is_finite() => fraction(x),
                    _ => bad(),
                }
            }
            _ => bad(),
        }
    }
}

/// Whether some class name is a number other than its own index: then numeric labels are names.
fn numbered(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .any(|(i, n)| n.trim().parse::<f64>().is_ok_and(|x| x != i as f64))
}

/// `x` as an integer, when it is a whole number within i64 (a cast saturates: 1e23 read as
/// 9223372036854775807).
fn whole(x: f64) -> Option<i64> {
    // -2^63 and 2^63 are exact in f64; the open bound excludes 2^63, which is past i64::MAX.
    (x.fract() == 0.0 && x >= -(2f64.powi(63)) && x < 2f64.powi(63)).then_some(x as i64)
}

/// A label cell's number, when it is one.
fn number(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(x) => Some(*x),
        Cell::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// Parses class names as `--labels` and `data.labels` give them, `neg,pos` (comma-separated, in
/// class order, each name once). The error does not name the setting: the caller does.
pub fn parse_label_list(list: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
    if names.len() < 2 || names.iter().any(String::is_empty) {
        return Err(format!(
            "{list:?}: give at least two non-empty names, comma-separated, in class order (e.g. negative,positive)"
        ));
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format!("{list:?}: {n:?} is given twice"));
        }
    }
    Ok(names)
}

/// Class names read from the model or its config: each names one class, so a label read by name
/// is one class (two classes named alike took the first's every label, silently).
fn check_names(names: &[String]) -> Result<(), String> {
    // (A name's first class, by name: a linear pass, for configs with very many names.)
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if n.trim().is_empty() {
            return Err(format!("class {i} has an empty name; name every class"));
        }
        if let Some(&j) = first.get(n.as_str()) {
            return Err(format!(
                "classes {j} and {i} are both named {n:?}, so a label {n:?} could be either; give each class its own name"
            ));
        }
        first.insert(n, i);
    }
    Ok(())
}

/// Up to the first 10 of `names`, joined, with how many more there are (a config.json may name a
/// million classes: the error was one 789 KB line).
pub fn few_names(names: &[String]) -> String {
    let shown = names.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    match names.len() {
        n if n > 10 => format!("{shown}, … {} more", n - 10),
        _ => shown,
    }
}

/// The class names of a Hugging Face `config.json`: `id2label` (keys "0", "1", ...), else
/// `label2id`, with the key they were read from. `Ok(None)` when it has neither; an error when
/// they are not a full index range.
pub fn names_from_config(json: &str) -> Result<Option<(Vec<String>, &'static str)>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    let mut pairs: Vec<(usize, String)> = Vec::new();
    let key = if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
        for (k, name) in map {
            let i = k
                .parse::<usize>()
                .map_err(|_| format!("id2label key {k:?} is not a class index"))?;
            let name = name
                .as_str()
                .ok_or_else(|| format!("id2label[{k:?}] is not a string"))?;
            pairs.push((i, name.to_string()));
        }
        "id2label"
    } else if let Some(map) = v.get("label2id").and_then(|m| m.as_object()) {
        for (name, i) in map {
            let i = i
                .as_u64()
                .ok_or_else(|| format!("label2id[{name:?}] is not a class index"))?;
            pairs.push((i as usize, name.clone()));
        }
        "label2id"
    } else {
        return Ok(None);
    };
    pairs.sort();
    if pairs.iter().enumerate().any(|(want, (i, _))| *i != want) {
        return Err(format!("the class indexes of {key} are not 0, 1, 2, ... each once"));
    }
    let names: Vec<String> = pairs.into_iter().map(|(_, n)| n).collect();
    check_names(&names).map_err(|e| format!("{key}: {e}"))?;
    Ok(Some((names, key)))
}

/// The Hugging Face `config.json` beside the model at `model_path` (where its class names and
/// `model_type` are read).
pub fn config_path(model_path: &Path) -> std::path::PathBuf {
    model_path.parent().unwrap_or(Path::new(".")).join("config.json")
}

/// The [`config_path`] of `model_path` and its text; `Ok(None)` where there is none. One there
/// that is not a file is an error naming it: a folder read as no config, a pipe waited on.
pub fn config_beside(model_path: &Path) -> Result<Option<(std::path::PathBuf, String)>, String> {
    let p = config_path(model_path);
    match std::fs::metadata(&p) {
        Err(_) => Ok(None),
        Ok(m) if !m.is_file() => Err(format!(
            "{}: not a file (a folder, a device, a pipe or a socket), where the model's config.json is read from; move it away or put the model's config.json there",
            p.display()
        )),
        Ok(_) => match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Some((p, text))),
            Err(e) => Err(format!("{}: {e}", p.display())),
        },
    }
}

/// The model's class names: `explicit` (given by `setting`: `--labels`, `data.labels`), else
/// the names embedded in the model, else `config.json` beside it. `Ok(None)` when there are none.
pub fn model_labels(
    model_path: &Path,
    model: &ModelProto,
    explicit: Option<&str>,
    setting: &str,
) -> Result<Option<ModelLabels>, String> {
    if let Some(list) = explicit {
        return Ok(Some(ModelLabels {
            names: parse_label_list(list).map_err(|e| format!("{setting} {e}"))?,
            source: setting.into(),
        }));
    }
    if let Some(json) = crate::history::embedded_labels(model) {
        let names: Vec<String> = serde_json::from_str(json).map_err(|e| {
            format!(
                "{}: metadata '{}' is not a list of names: {e}",
                model_path.display(),
                crate::history::LABELS_KEY
            )
        })?;
        check_names(&names).map_err(|e| {
            format!(
                "{}: the class names embedded in the model (metadata '{}'): {e}",
                model_path.display(),
                crate::history::LABELS_KEY
            )
        })?;
        return Ok(Some(ModelLabels {
            names,
            source: "the names embedded in the model".into(),
        }));
    }
    let Some((config, text)) = config_beside(model_path)? else {
        return Ok(None);
    };
    Ok(names_from_config(&text)
        .map_err(|e| format!("{}: {e}", config.display()))?
        .map(|(names, key)| ModelLabels {
            names,
            source: format!("{key} of {}", config.display()),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_names_are_shown_as_the_first_ten_and_a_count() {
        let names: Vec<String> = (0..100_000).map(|i| format!("L{i}")).collect();
        assert_eq!(few_names(&names[..3]), "L0, L1, L2");
        assert_eq!(
            few_names(&names),
            "L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, … 99990 more"
        );
        // (checked in linear time: a quadratic check took minutes at a million names)
        assert!(check_names(&names).is_ok());
        let mut twice = names.clone();
        twice.push("L5".into());
        assert!(check_names(&twice).unwrap_err().contains("classes 5 and 100000"));
    }

    #[test]
    fn a_whole_number_past_any_integer_is_no_class_index() {
        let unnamed = Labels::Classes {
            names: None,
            source: "no names".into(),
        };
        for cell in [
            Cell::Str("99999999999999999999999".into()),
            Cell::Float(1e23),
            Cell::Float(2f64.powi(63)),
        ] {
            let e = unnamed.parse(&cell).unwrap_err();
            assert!(e.contains("labels must be class indexes"), "{cell:?}: {e}");
        }
        assert!(matches!(unnamed.parse(&Cell::Str("1.0".into())), Ok(Label::Class(1))));
        assert!(matches!(unnamed.parse(&Cell::Float(7.0)), Ok(Label::Class(7))));
        assert_eq!(whole(-(2f64.powi(63))), Some(i64::MIN));
        assert_eq!(whole(2f64.powi(63)), None);
    }

    fn named(n: &[&str]) -> Labels {
        Labels::Classes {
            names: Some(n.iter().map(|s| s.to_string()).collect()),
            source: "config.json".into(),
        }
    }

    #[test]
    fn names_that_are_numbers_read_numbers_as_names_in_every_format() {
        let stars = named(&["1", "2", "3", "4", "5"]);
        for cell in [Cell::Str("1".into()), Cell::Int(1), Cell::Float(1.0)] {
            assert_eq!(stars.parse(&cell), Ok(Label::Class(0)), "{cell:?}");
        }
        assert_eq!(stars.parse(&Cell::Int(5)), Ok(Label::Class(4)));
        let e = stars.parse(&Cell::Int(0)).unwrap_err();
        assert!(e.contains("read as a name (pass --labels 0,1,2,3,4"), "{e}");
        let swapped = named(&["1", "0"]);
        assert_eq!(swapped.parse(&Cell::Str("1".into())), Ok(Label::Class(0)));
        assert_eq!(swapped.parse(&Cell::Int(1)), Ok(Label::Class(0)));
        // Names that are their own indexes change nothing.
        assert_eq!(named(&["0", "1"]).parse(&Cell::Int(1)), Ok(Label::Class(1)));
    }

    #[test]
    fn booleans_written_as_text_are_classes_where_no_names_are_known() {
        let none = Labels::Classes {
            names: None,
            source: "test".into(),
        };
        assert_eq!(none.parse(&Cell::Str("True".into())), Ok(Label::Class(1)));
        assert_eq!(none.parse(&Cell::Str("false".into())), Ok(Label::Class(0)));
        assert_eq!(none.parse(&Cell::Bool(true)), Ok(Label::Class(1)));
        // Names known: a name "True" is that class; else refused, as a JSON boolean is.
        assert_eq!(
            named(&["False", "True"]).parse(&Cell::Str("True".into())),
            Ok(Label::Class(1))
        );
        assert!(named(&["neg", "pos"]).parse(&Cell::Str("True".into())).is_err());
    }

    #[test]
    fn fractions_and_nan_are_named_as_such() {
        let none = Labels::Classes {
            names: None,
            source: "test".into(),
        };
        for l in [&none, &named(&["a", "b"]), &Labels::Glue(Task::Sst2)] {
            let e = l.parse(&Cell::Float(1.5)).unwrap_err();
            assert!(e.contains("1.5 is not a whole number"), "{e}");
            let e = l.parse(&Cell::Float(f64::NAN)).unwrap_err();
            assert!(e.contains("missing (NaN"), "{e}");
        }
        let e = none.parse(&Cell::Str("2.5".into())).unwrap_err();
        assert!(
            e.contains("2.5 is not a whole number") && e.contains("regression"),
            "{e}"
        );
        assert_eq!(none.parse(&Cell::Str("1.0".into())), Ok(Label::Class(1)));
    }

    #[test]
    fn a_task_preset_reads_hugging_faces_class_names() {
        let sst2 = Labels::Glue(Task::Sst2);
        assert_eq!(sst2.parse(&Cell::Str("positive".into())), Ok(Label::Class(1)));
        assert_eq!(sst2.parse(&Cell::Str("Negative".into())), Ok(Label::Class(0)));
        assert_eq!(sst2.parse(&Cell::Str("1".into())), Ok(Label::Class(1)));
        let mrpc = Labels::Glue(Task::Mrpc);
        assert_eq!(mrpc.parse(&Cell::Str("not_equivalent".into())), Ok(Label::Class(0)));
        let e = mrpc.parse(&Cell::Str("same".into())).unwrap_err();
        assert!(e.contains("0 or 1 (or not_equivalent, equivalent)"), "{e}");
        let rte = Labels::Glue(Task::Rte);
        assert_eq!(rte.parse(&Cell::Str("not_entailment".into())), Ok(Label::Class(1)));
        // Indexes written as text (a CSV of Hugging Face's RTE, MNLI) read as the other formats'.
        assert_eq!(rte.parse(&Cell::Str("1".into())), Ok(Label::Class(1)));
        assert_eq!(rte.parse(&Cell::Int(1)), Ok(Label::Class(1)));
        let mnli = Labels::Glue(Task::Mnli);
        assert_eq!(mnli.parse(&Cell::Str("2".into())), Ok(Label::Class(2)));
        assert!(mnli.parse(&Cell::Str("3".into())).is_err());
        assert_eq!(sst2.parse(&Cell::Str("1.0".into())), Ok(Label::Class(1)));
        let e = sst2.parse(&Cell::Str("1.5".into())).unwrap_err();
        assert!(e.contains("1.5 is not a whole number"), "{e}");
    }

    #[test]
    fn class_labels_by_name_index_and_case() {
        let l = named(&["NEGATIVE", "POSITIVE"]);
        assert_eq!(l.parse(&Cell::Str("POSITIVE".into())), Ok(Label::Class(1)));
        assert_eq!(l.parse(&Cell::Str(" negative ".into())), Ok(Label::Class(0)));
        assert_eq!(l.parse(&Cell::Str("1".into())), Ok(Label::Class(1)));
        assert_eq!(l.parse(&Cell::Int(0)), Ok(Label::Class(0)));
        assert_eq!(l.parse(&Cell::Float(1.0)), Ok(Label::Class(1)));
        for bad in [
            Cell::Int(2),
            Cell::Int(-1),
            Cell::Str("neutral".into()),
            Cell::Bool(true),
        ] {
            let e = l.parse(&bad).unwrap_err();
            assert!(
                e.contains("NEGATIVE, POSITIVE (class indexes 0–1), from config.json"),
                "{e}"
            );
        }
        assert!(l.parse(&Cell::Null).unwrap_err().contains("missing"));
        let unnamed = Labels::Classes {
            names: None,
            source: "no config.json".into(),
        };
        assert_eq!(unnamed.parse(&Cell::Str("7".into())), Ok(Label::Class(7)));
        // "1.0" as a pandas column with a gap writes it; a boolean as 0 / 1 without names, by
        // name with them; an empty cell is missing.
        assert_eq!(unnamed.parse(&Cell::Str("1.0".into())), Ok(Label::Class(1)));
        assert!(unnamed.parse(&Cell::Str("1.5".into())).is_err());
        assert_eq!(unnamed.parse(&Cell::Bool(true)), Ok(Label::Class(1)));
        let tf = named(&["false", "true"]);
        assert_eq!(tf.parse(&Cell::Bool(false)), Ok(Label::Class(0)));
        assert_eq!(tf.parse(&Cell::Bool(true)), Ok(Label::Class(1)));
        assert_eq!(
            l.parse(&Cell::Str(" ".into())),
            Err("the label is missing (empty)".into())
        );
        assert!(unnamed
            .parse(&Cell::Str("pos".into()))
            .unwrap_err()
            .contains("--labels"));
    }

    #[test]
    fn glue_and_score_labels() {
        let g = Labels::Glue(Task::Mnli);
        assert_eq!(g.parse(&Cell::Str("neutral".into())), Ok(Label::Class(1)));
        assert_eq!(g.parse(&Cell::Int(2)), Ok(Label::Class(2)));
        assert!(g.parse(&Cell::Int(-1)).is_err());
        assert_eq!(Labels::Glue(Task::StsB).parse(&Cell::Float(3.5)), Ok(Label::Score(3.5)));
        assert_eq!(Labels::Scores.parse(&Cell::Str("0.25".into())), Ok(Label::Score(0.25)));
        assert!(Labels::Scores.parse(&Cell::Str("high".into())).is_err());
    }

    #[test]
    fn label_lists_and_configs() {
        assert_eq!(parse_label_list("neg, pos").unwrap(), ["neg", "pos"]);
        assert!(parse_label_list("pos").is_err());
        assert!(parse_label_list("a,,b").is_err());
        assert!(parse_label_list("a,b,a").unwrap_err().contains("twice"));
        for (cfg, says) in [
            (
                r#"{"id2label": {"0": "pos", "1": "pos"}}"#,
                "classes 0 and 1 are both named \"pos\"",
            ),
            (r#"{"id2label": {"0": "", "1": "pos"}}"#, "class 0 has an empty name"),
        ] {
            let e = names_from_config(cfg).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let cfg = r#"{"id2label": {"1": "POSITIVE", "0": "NEGATIVE"}, "label2id": {}}"#;
        let names = |cfg| names_from_config(cfg).unwrap().unwrap();
        assert_eq!(
            names(cfg),
            (vec!["NEGATIVE".to_string(), "POSITIVE".into()], "id2label")
        );
        // Names read from label2id are said to come from it.
        let cfg = r#"{"label2id": {"b": 1, "a": 0}}"#;
        assert_eq!(names(cfg), (vec!["a".to_string(), "b".into()], "label2id"));
        let e = names_from_config(r#"{"label2id": {"a": 0, "b": 0}}"#).unwrap_err();
        assert!(e.contains("class indexes of label2id"), "{e}");
        assert_eq!(names_from_config(r#"{"model_type": "bert"}"#).unwrap(), None);
        assert!(names_from_config(r#"{"id2label": {"0": "a", "2": "c"}}"#).is_err());
    }
}
