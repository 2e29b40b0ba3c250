//! The selection part of the user's training file: examples disjoint from the calibration draw,
//! tokenized once, on which every choice of `auto` is made. Scoring runs a model on them in two
//! rungs (the first quarter, then the rest), so that a candidate far out of the budget is dropped
//! after the first.

use std::path::Path;

use anyhow::{bail, Result};
use tokenizers::Tokenizer;

use crate::data::{self, Labels};
use crate::eval::{make_batch, pad_id, tokenize};
use crate::glue::{argmax, Task};
use crate::runtime::{self, Batch, SessionOptions};

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

/// Splits `n` examples as calibration draws them with `seed` ([`crate::calib::draw_order`]).
pub fn split(n: usize, calib: usize, selection: usize, seed: u64, file: &Path) -> Result<Split> {
    if calib + selection > n {
        bail!(
            "--calib-data {}: {n} examples, fewer than --calib-samples {calib} + --selection {selection}; lower one of them",
            file.display()
        );
    }
    let order = crate::calib::draw_order(n, seed);
    Ok(Split {
        calibration: order[..calib].to_vec(),
        selection: order[calib..calib + selection].to_vec(),
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
    /// The class of each selection example (in draw order).
    pub labels: Vec<usize>,
    /// Examples in the first rung (the first ones drawn).
    pub rung: usize,
    /// Batches of the first rung, then of the rest; with the selection indexes of their rows.
    batches: Vec<(Batch, Vec<usize>)>,
    /// How many of `batches` belong to the first rung.
    rung_batches: usize,
    /// Batches in draw order (not by length), for timing: what a file-order evaluation sees.
    pub timing: Vec<Batch>,
}

impl Selection {
    /// Reads the labelled file (`task`'s preset), takes the `indexes`, tokenizes them.
    pub fn new(
        path: &Path,
        task: Task,
        indexes: &[usize],
        tokenizer: &mut Tokenizer,
        max_length: usize,
        batch_size: usize,
    ) -> Result<Selection> {
        let source = data::Source {
            path: path.to_path_buf(),
            format: None,
            columns: Default::default(),
            task: Some(task),
        };
        let labelled = data::read_labelled(&source, &Labels::Glue(task))?;
        let mut labels = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let Some(c) = labelled.examples.get(i).and_then(|e| e.label.class()) else {
                bail!(
                    "--calib-data {}: example {} has no class label ({} is scored by classes)",
                    path.display(),
                    i + 1,
                    task.name()
                );
            };
            labels.push(c);
        }
        let texts = indexes.iter().map(|&i| {
            let e = &labelled.examples[i];
            (e.text_a.as_str(), e.text_b.as_deref())
        });
        let enc = tokenize(tokenizer, texts, path, max_length)?;
        let pad = pad_id(tokenizer)?;
        let rung = rung_size(indexes.len());
        let mut batches = vec![];
        let mut rung_batches = 0;
        for (range, first) in [(0..rung, true), (rung..indexes.len(), false)] {
            let mut rows: Vec<usize> = range.collect();
            rows.sort_by_key(|&r| enc.ids[r].len());
            for chunk in rows.chunks(batch_size.max(1)) {
                batches.push((make_batch(&enc, chunk, pad), chunk.to_vec()));
                if first {
                    rung_batches += 1;
                }
            }
        }
        let all: Vec<usize> = (0..indexes.len()).collect();
        let timing = all
            .chunks(batch_size.max(1))
            .map(|c| make_batch(&enc, c, pad))
            .collect();
        Ok(Selection {
            labels,
            rung,
            batches,
            rung_batches,
            timing,
        })
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
    pub right: Vec<Option<bool>>,
}

impl Scorer {
    pub fn open(path: &Path, session: &SessionOptions, sel: &Selection) -> Result<Scorer> {
        Ok(Scorer {
            model: runtime::open(path, session)?,
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
            crate::eval::check_finite(&logits, labels, rows)?;
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

/// Whether a candidate whose answers are `cand` is out of a budget of `max_drop` points beyond
/// doubt, against the baseline's `base` on the same examples: its drop minus two standard errors
/// of the paired difference still exceeds the budget.
pub fn out_of_budget(base: &[Option<bool>], cand: &[Option<bool>], max_drop: f64) -> bool {
    let diffs: Vec<f64> = base
        .iter()
        .zip(cand)
        .filter_map(|(b, c)| Some(f64::from(u8::from((*b)?)) - f64::from(u8::from((*c)?))))
        .collect();
    let n = diffs.len() as f64;
    if n < 2.0 {
        return false;
    }
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let se = (var / n).sqrt();
    (mean - 2.0 * se) * 100.0 > max_drop
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = split(10, 8, 8, 0, Path::new("t.tsv")).unwrap_err().to_string();
        assert!(e.contains("10 examples") && e.contains("--selection 8"), "{e}");
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
}
