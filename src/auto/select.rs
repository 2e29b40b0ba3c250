//! The selection part of the user's training file: examples disjoint from the calibration draw,
//! tokenized once, on which every choice of `auto` is made. Scoring runs a model on them in two
//! rungs (the first quarter, then the rest), so that a candidate far out of the budget is dropped
//! after the first.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

use crate::data::{self, Labels};
use crate::eval::{make_batch, model_pad_id, tokenize};
use crate::glue::argmax;
use crate::runtime::{self, Batch, SessionOptions};

/// How many of the task's default batches of the selection are timed (`--objective speed`).
pub const TIMED_BATCHES: usize = 8;

/// The first `calib` examples of the calibration draw and the `selection` after them (or drawn
/// from a file of their own).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub calibration: Vec<usize>,
    pub selection: Vec<usize>,
    pub total: usize,
    /// Examples in the file the selection is drawn from.
    pub selection_total: usize,
}

/// Splits `n` examples as calibration draws them with `seed` ([`crate::calib::draw_order`]): the
/// first `calib` calibrate, up to `selection` of the rest choose (all of the rest when fewer, but
/// at least 16).
pub fn split(n: usize, calib: usize, selection: usize, seed: u64, file: &Path) -> Result<Split> {
    let left = n.saturating_sub(calib);
    if left < 16 {
        bail!(
            "--calib-data {}: {n} examples leave {left} for the selection after --calib-samples {calib}; at least 16 are needed: lower --calib-samples",
            file.display()
        );
    }
    let order = crate::calib::draw_order(n, seed);
    Ok(Split {
        calibration: order[..calib].to_vec(),
        selection: order[calib..calib + selection.min(left)].to_vec(),
        total: n,
        selection_total: n,
    })
}

/// Calibration's draw from the training file (`n` examples) and a selection drawn from a file of
/// its own (`m` examples; all of them when it has fewer than `selection`, but at least 16).
pub fn split_apart(n: usize, calib: usize, m: usize, selection: usize, seed: u64, file: &Path) -> Result<Split> {
    if m < 16 {
        bail!(
            "--selection-data {}: {m} examples; at least 16 are needed",
            file.display()
        );
    }
    Ok(Split {
        calibration: crate::calib::draw_order(n, seed)[..calib.min(n)].to_vec(),
        selection: crate::calib::draw_order(m, seed)[..selection.min(m)].to_vec(),
        total: n,
        selection_total: m,
    })
}

/// Tokenized, labelled selection examples, batched by length within each rung.
pub struct Selection {
    /// The class of each selection example (in draw order), as the model's output for it.
    pub labels: Vec<usize>,
    /// Where each selection example (in draw order) is: `line 12 of train.tsv`.
    places: Vec<String>,
    /// Examples in the first rung (the first ones drawn).
    pub rung: usize,
    /// Batches of the first rung, then of the rest; with the selection indexes of their rows.
    batches: Vec<(Batch, Vec<usize>)>,
    /// How many of `batches` belong to the first rung.
    rung_batches: usize,
    /// Batches in draw order (not by length), for timing: what a file-order evaluation sees.
    /// The first `timed` examples, in batches of `batch_size`.
    pub timing: Vec<Batch>,
}

impl Selection {
    /// Reads the labelled file as `source` says (a task's preset or the user's columns) with its
    /// labels read as `label_set` says (a task's, or the model's `outputs` classes), takes the
    /// `indexes`, tokenizes them: scoring batches of `batch_size` (by length: what a model that
    /// finds its int8 ranges per batch answers depends on the batch; with `one_length`, each of
    /// one length: a model without an attention mask), and the first `timed`
    /// examples in timing batches of `batch_size` (draw order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: &data::Source,
        label_set: &Labels,
        outputs: Option<usize>,
        indexes: &[usize],
        tokenizer: &mut Tokenizer,
        tokenizer_source: &str,
        max_length: usize,
        vocabulary: Option<usize>,
        timed: usize,
        batch_size: usize,
        one_length: bool,
    ) -> Result<Selection> {
        let path = source.path.as_path();
        if label_set.is_regression() {
            bail!(
                "{}: the model has one output (scores); `auto` budgets accuracy (a classifier)",
                path.display()
            );
        }
        let labelled = data::read_labelled(source, label_set)?;
        let classes = label_set.class_count().or(outputs);
        let mut labels = Vec::with_capacity(indexes.len());
        let mut places = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let label = labelled.examples.get(i).and_then(|e| e.label.class());
            let at = labelled
                .locs
                .get(i)
                .map_or_else(|| format!("example {}", i + 1), |l| l.to_string());
            match (label, classes) {
                (None, _) => bail!("{}: {at} has no class label (`auto` scores classes)", path.display()),
                (Some(c), Some(n)) if c >= n => bail!(
                    "{}: {at} has label {c}, but the model's classes are 0–{}",
                    path.display(),
                    n - 1
                ),
                (Some(c), _) => labels.push(c),
            }
            places.push(format!("{at} of {}", path.display()));
        }
        let texts = indexes.iter().map(|&i| {
            let e = &labelled.examples[i];
            (e.text_a.as_str(), e.text_b.as_deref())
        });
        let enc = tokenize(tokenizer, texts, path, max_length, vocabulary)
            .with_context(|| format!("tokenizer {tokenizer_source}"))?;
        let pad = model_pad_id(tokenizer, vocabulary).with_context(|| format!("tokenizer {tokenizer_source}"))?;
        let rung = rung_size(indexes.len());
        let mut batches = vec![];
        let mut rung_batches = 0;
        for (range, first) in [(0..rung, true), (rung..indexes.len(), false)] {
            let mut rows: Vec<usize> = range.collect();
            rows.sort_by_key(|&r| enc.ids[r].len());
            // A model without an attention mask is never padded (it would read the padding).
            let chunks: Vec<&[usize]> = if one_length {
                crate::eval::one_length_chunks(&rows, &enc, batch_size)
            } else {
                rows.chunks(batch_size.max(1)).collect()
            };
            for chunk in chunks {
                batches.push((make_batch(&enc, chunk, pad), chunk.to_vec()));
                if first {
                    rung_batches += 1;
                }
            }
        }
        let timed: Vec<usize> = (0..indexes.len().min(timed)).collect();
        let timing = timed
            .chunks(batch_size.max(1))
            .map(|c| make_batch(&enc, c, pad))
            .collect();
        Ok(Selection {
            labels,
            places,
            rung,
            batches,
            rung_batches,
            timing,
        })
    }

    /// Reads each label (a task's class) as the model's output `order` names it by.
    pub fn labels_to_outputs(&mut self, order: &crate::eval::ClassOrder) {
        for l in &mut self.labels {
            *l = order.outputs[*l];
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The first rung: a quarter of the selection, at least 64 examples (all of a smaller selection).
pub fn rung_size(n: usize) -> usize {
    (n / 4).max(64).min(n)
}

/// A model's answers on the selection: whether each example (in draw order) is right; `None` for
/// those not scored yet.
pub struct Scorer {
    model: runtime::Model,
    path: PathBuf,
    pub right: Vec<Option<bool>>,
}

impl Scorer {
    pub fn open(path: &Path, session: &SessionOptions, sel: &Selection) -> Result<Scorer> {
        Ok(Scorer {
            model: runtime::open(path, session)?,
            path: path.to_path_buf(),
            right: vec![None; sel.len()],
        })
    }

    /// Scores the first rung (`full`: and the rest), skipping batches already scored.
    pub fn score(&mut self, sel: &Selection, full: bool) -> Result<()> {
        let upto = if full { sel.batches.len() } else { sel.rung_batches };
        for (batch, rows) in &sel.batches[..upto] {
            if rows.iter().all(|&r| self.right[r].is_some()) {
                continue;
            }
            let (logits, labels) = self.model.run(batch)?;
            if let Some((k, what)) = crate::eval::non_finite(&logits, labels, rows) {
                bail!(
                    "{}: selection example {} ({}): {what}; a model that computes no number for an input is broken (an overflow, a NaN weight)",
                    self.path.display(),
                    rows[k],
                    sel.places[rows[k]]
                );
            }
            for (k, &r) in rows.iter().enumerate() {
                let class = argmax(&logits[k * labels..(k + 1) * labels]);
                self.right[r] = Some(class == Some(sel.labels[r]));
            }
        }
        Ok(())
    }

    /// Examples scored and how many are right.
    pub fn counts(&self) -> (usize, usize) {
        let scored = self.right.iter().filter(|r| r.is_some()).count();
        let right = self.right.iter().filter(|r| **r == Some(true)).count();
        (scored, right)
    }
}

/// Of the examples both have answered: (scored, the baseline right and the candidate wrong, the
/// reverse).
pub fn discordant(base: &[Option<bool>], cand: &[Option<bool>]) -> (usize, usize, usize) {
    let (mut n, mut lost, mut gained) = (0, 0, 0);
    for (b, c) in base.iter().zip(cand) {
        if let (Some(b), Some(c)) = (b, c) {
            n += 1;
            lost += usize::from(*b && !*c);
            gained += usize::from(!*b && *c);
        }
    }
    (n, lost, gained)
}

/// The accuracy drop (points) over `n` paired examples and its standard error: each example
/// differs by +1 (`lost`), −1 (`gained`) or 0. The error is the Wald one of the paired table with
/// half an example added to each of its four cells (Agresti and Min, 2005): where few examples
/// or none flip, the plain one reads a handful of agreements as certainty (60 examples, none
/// flipped: 0 ± 0) and lets a candidate through on no evidence; here it is 0 ± 1.6 points.
pub fn paired_drop(n: usize, lost: usize, gained: usize) -> (f64, f64) {
    if n < 2 {
        return (0.0, 0.0);
    }
    let drop = (lost as f64 - gained as f64) / n as f64;
    let (b, c, m) = (lost as f64 + 0.5, gained as f64 + 0.5, n as f64 + 2.0);
    let var = (b + c - (b - c) * (b - c) / m).max(0.0);
    (drop * 100.0, var.sqrt() / m * 100.0)
}

/// Whether a candidate whose answers are `cand` is out of a budget of `max_drop` points beyond
/// doubt, against the baseline's `base` on the same examples: its drop minus two standard errors
/// of the paired difference still exceeds the budget.
pub fn out_of_budget(base: &[Option<bool>], cand: &[Option<bool>], max_drop: f64) -> bool {
    let (n, lost, gained) = discordant(base, cand);
    let (drop, se) = paired_drop(n, lost, gained);
    n >= 2 && drop - 2.0 * se > max_drop
}

/// The standard normal quantile of `p` in (0, 1): the z of a one-sided confidence level (0.9 →
/// 1.2816). Bisection on the complementary error function (within 1e-7).
pub fn normal_quantile(p: f64) -> f64 {
    let cdf = |z: f64| 0.5 * erfc(-z / std::f64::consts::SQRT_2);
    let (mut lo, mut hi) = (-9.0, 9.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glue::Task;

    #[test]
    fn the_split_is_disjoint_and_calibration_is_calibrations_own_draw() {
        let s = split(100, 30, 50, 7, Path::new("t.tsv")).unwrap();
        assert_eq!(s.calibration.len(), 30);
        assert_eq!(s.selection.len(), 50);
        let mut all: Vec<usize> = s.calibration.iter().chain(&s.selection).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 80);
        let draw = crate::calib::draw_order(100, 7);
        assert_eq!(s.calibration, draw[..30]);
        // Fewer left than asked: all of them.
        let s = split(100, 30, 500, 7, Path::new("t.tsv")).unwrap();
        assert_eq!(s.selection, crate::calib::draw_order(100, 7)[30..]);
        let e = split(20, 8, 64, 0, Path::new("t.tsv")).unwrap_err().to_string();
        assert!(
            e.contains("20 examples leave 12") && e.contains("--calib-samples 8"),
            "{e}"
        );
    }

    #[test]
    fn the_selection_is_scored_and_timed_in_batches_of_the_batch_size() {
        use crate::testkit::shared::require;
        let what = "auto's selection batches";
        let (Some(tok), Some(train)) = (
            require("models/minilm-l6-sst2/tokenizer.json", what),
            require("data/glue/sst2/train.tsv", what),
        ) else {
            return;
        };
        let tokenizer = Tokenizer::from_file(tok).unwrap();
        let indexes: Vec<usize> = (0..100).collect();
        let source = glue_source(&train);
        let labels = Labels::Glue(Task::Sst2);
        let sel = |timed, batch| {
            Selection::new(
                &source,
                &labels,
                None,
                &indexes,
                &mut tokenizer.clone(),
                "tokenizer.json",
                128,
                None,
                timed,
                batch,
                false,
            )
            .unwrap()
        };
        // The task's 32: 100 examples in rungs of 64 and 36, by length; the first 64 timed.
        let s = sel(64, 32);
        let sizes: Vec<usize> = s.batches.iter().map(|(_, rows)| rows.len()).collect();
        assert_eq!((sizes, s.rung_batches, s.timing.len()), (vec![32, 32, 32, 4], 2, 2));
        // One sequence at a time: every example scored alone, the same 64 timed one by one.
        let s = sel(64, 1);
        assert!(s.batches.iter().all(|(_, rows)| rows.len() == 1));
        assert_eq!((s.batches.len(), s.rung_batches, s.timing.len()), (100, 64, 64));
        // A model naming SST-2's classes the other way round is scored on its outputs by name.
        let mut s = sel(64, 32);
        let before = s.labels.clone();
        s.labels_to_outputs(&crate::eval::ClassOrder {
            outputs: vec![1, 0],
            names: vec!["positive".into(), "negative".into()],
            source: "test".into(),
        });
        assert!(before.contains(&0) && before.contains(&1));
        assert_eq!(s.labels, before.iter().map(|&c| 1 - c).collect::<Vec<_>>());
    }

    fn glue_source(path: &Path) -> data::Source {
        data::Source {
            path: path.to_path_buf(),
            format: None,
            columns: Default::default(),
            task: Some(Task::Sst2),
        }
    }

    #[test]
    fn the_users_own_columns_and_label_names_select_what_the_task_preset_does() {
        use crate::testkit::shared::require;
        let what = "auto's selection of the user's own file";
        let (Some(tok), Some(train)) = (
            require("models/minilm-l6-sst2/tokenizer.json", what),
            require("data/glue/sst2/train.tsv", what),
        ) else {
            return;
        };
        let tokenizer = Tokenizer::from_file(tok).unwrap();
        // The first 200 examples of SST-2's train split as the user's CSV: other column names,
        // the label as a name, the columns in another order.
        let glue = crate::glue::read_tsv(Task::Sst2, &train).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("reviews.csv");
        let mut text = String::from("sentiment,review\n");
        for e in &glue.examples[..200] {
            let name = ["negative", "positive"][e.label.class().unwrap()];
            text += &format!("{name},\"{}\"\n", e.text_a.replace('"', "\"\""));
        }
        std::fs::write(&csv, text).unwrap();
        let own = data::Source {
            path: csv.clone(),
            format: None,
            columns: data::Columns {
                text: Some("review".into()),
                pair: None,
                label: Some("sentiment".into()),
                named_in: None,
            },
            task: None,
        };
        let names = Labels::Classes {
            names: Some(vec!["negative".into(), "positive".into()]),
            source: "--labels".into(),
        };
        let indexes = crate::calib::draw_order(200, 3)[..120].to_vec();
        let a = Selection::new(
            &glue_source(&train),
            &Labels::Glue(Task::Sst2),
            None,
            &indexes,
            &mut tokenizer.clone(),
            "tokenizer.json",
            128,
            None,
            64,
            32,
            false,
        )
        .unwrap();
        let b = Selection::new(
            &own,
            &names,
            Some(2),
            &indexes,
            &mut tokenizer.clone(),
            "tokenizer.json",
            128,
            None,
            64,
            32,
            false,
        )
        .unwrap();
        assert_eq!(a.labels, b.labels);
        let rows = |s: &Selection| s.batches.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
        assert_eq!(rows(&a), rows(&b));
        let ids = |s: &Selection| s.batches.iter().map(|(b, _)| b.input_ids.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));

        // Class indexes beyond the model's outputs are refused, naming the line.
        let idx = dir.path().join("idx.csv");
        std::fs::write(&idx, "text,label\na,0\nb,1\nc,2\n").unwrap();
        let unnamed = Labels::Classes {
            names: None,
            source: "none".into(),
        };
        let e = Selection::new(
            &data::Source {
                path: idx.clone(),
                format: None,
                columns: Default::default(),
                task: None,
            },
            &unnamed,
            Some(2),
            &[0, 1, 2],
            &mut tokenizer.clone(),
            "tokenizer.json",
            128,
            None,
            3,
            32,
            false,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("idx.csv: line 4 has label 2") && e.contains("0–1"), "{e}");
        // A model with one output is a regression: refused.
        let e = Selection::new(
            &own,
            &Labels::Scores,
            Some(1),
            &indexes,
            &mut tokenizer.clone(),
            "tokenizer.json",
            128,
            None,
            64,
            32,
            false,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("one output"), "{e}");
    }

    #[test]
    fn only_a_clear_loss_is_out_of_budget() {
        let yes = |n: usize| vec![Some(true); n];
        // 64 examples, 2 more wrong: a 3-point drop, but within two standard errors of 0.5.
        let mut c = yes(64);
        c[0] = Some(false);
        c[1] = Some(false);
        assert!(!out_of_budget(&yes(64), &c, 0.5));
        // 20 of 64 wrong: out beyond doubt.
        let mut c = yes(64);
        for x in c.iter_mut().take(20) {
            *x = Some(false);
        }
        assert!(out_of_budget(&yes(64), &c, 0.5));
        // Unscored examples do not count.
        assert!(!out_of_budget(&[None; 64], &c, 0.5));
        assert_eq!(rung_size(512), 128);
        assert_eq!(rung_size(100), 64);
        assert_eq!(rung_size(40), 40);
    }

    #[test]
    fn the_paired_standard_error_is_agresti_and_mins() {
        // 100 examples: 6 lost, 2 gained; with half an example in each cell, 6.5 and 2.5 of 102.
        let (drop, se) = paired_drop(100, 6, 2);
        assert!((drop - 4.0).abs() < 1e-12);
        let want = (9.0f64 - 16.0 / 102.0).sqrt() / 102.0 * 100.0;
        assert!((se - want).abs() < 1e-9, "{se}");
        // Many flips: within 1% of the plain sample error of the differences.
        let (_, se) = paired_drop(4096, 40, 15);
        let mean = 25.0 / 4096.0;
        let plain = ((55.0 - 4096.0 * mean * mean) / 4095.0 / 4096.0f64).sqrt() * 100.0;
        assert!((se / plain - 1.0).abs() < 0.01, "{se} vs {plain}");
        // None flipped among 60: not certainty. The bound at 90% is past a 1-point budget.
        let (drop, se) = paired_drop(60, 0, 0);
        assert_eq!(drop, 0.0);
        assert!(drop + normal_quantile(0.9) * se > 2.0, "{se}");
        let b = [Some(true), Some(false), Some(true), None];
        let c = [Some(false), Some(true), Some(true), Some(false)];
        assert_eq!(discordant(&b, &c), (3, 1, 1));
        assert_eq!(paired_drop(1, 1, 0), (0.0, 0.0));
    }

    #[test]
    fn normal_quantiles_match_the_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.8, 0.841_621),
            (0.9, 1.281_552),
            (0.95, 1.644_854),
            (0.99, 2.326_348),
        ] {
            assert!((normal_quantile(p) - z).abs() < 1e-5, "{p}: {}", normal_quantile(p));
        }
    }
}
