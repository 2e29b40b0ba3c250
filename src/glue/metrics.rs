//! Predictions from logits, and the metrics GLUE reports: accuracy, F1 of class 1, Matthews
//! correlation, Pearson and Spearman correlations.

use std::collections::HashMap;

use serde::Serialize;

use super::{Example, GlueError, Label, Task};

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
    /// The GLUE task whose metrics these are; `None` for the user's own labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
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
    /// Own labels: the unweighted mean F1 over the classes that occur (in the labels or the
    /// predictions), as scikit-learn's `f1_score(average="macro")`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// Own labels: precision, recall, F1 and support of every class of the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_class: Option<Vec<ClassScores>>,
    /// Own labels: `confusion_matrix[gold][predicted]` counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<usize>>>,
    /// Regression on own labels: mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Why the correlations read 0: they are undefined (fewer than two examples, or the
    /// predictions or the gold scores all equal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_undefined: Option<String>,
}

/// One class's scores; 0.0 where undefined (no predictions of it, or no examples of it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    pub class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples of this class.
    pub support: usize,
}

impl Metrics {
    fn empty(task: Option<Task>, n: usize) -> Metrics {
        Metrics {
            task,
            n,
            accuracy: None,
            f1: None,
            mcc: None,
            pearson: None,
            spearman: None,
            confusion: None,
            macro_f1: None,
            per_class: None,
            confusion_matrix: None,
            mse: None,
            correlation_undefined: None,
        }
    }
}

/// Metrics of the user's own labels: accuracy, macro-F1, per-class precision/recall/F1 and the
/// confusion matrix over `classes` classes (named by `names` when known); or, with
/// `classes == None`, a regression's Pearson, Spearman and mean squared error. Predictions and
/// labels must be of the matching kind.
pub fn compute_own_metrics(
    classes: Option<usize>,
    names: Option<&[String]>,
    examples: &[Example],
    predictions: &[Prediction],
) -> Result<Metrics, GlueError> {
    if examples.len() != predictions.len() {
        return Err(GlueError::LengthMismatch {
            examples: examples.len(),
            predictions: predictions.len(),
        });
    }
    let mut m = Metrics::empty(None, examples.len());
    match classes {
        None => {
            let mut gold = Vec::with_capacity(examples.len());
            let mut pred = Vec::with_capacity(examples.len());
            for (i, (e, p)) in examples.iter().zip(predictions).enumerate() {
                match (e.label, p) {
                    (Label::Score(g), Prediction::Score(s)) if s.is_finite() => {
                        gold.push(f64::from(g));
                        pred.push(f64::from(*s));
                    }
                    (_, Prediction::Score(s)) if !s.is_finite() => {
                        return Err(GlueError::NonFinitePrediction { index: i, value: *s })
                    }
                    _ => return Err(GlueError::OwnKindMismatch { index: i }),
                }
            }
            m.pearson = Some(pearson(&pred, &gold));
            m.spearman = Some(spearman(&pred, &gold));
            m.mse = Some(mse(&pred, &gold));
            m.correlation_undefined = correlation_undefined(&pred, &gold);
        }
        Some(k) => {
            let mut gold = Vec::with_capacity(examples.len());
            let mut pred = Vec::with_capacity(examples.len());
            for (i, (e, p)) in examples.iter().zip(predictions).enumerate() {
                match (e.label, p) {
                    (Label::Class(g), Prediction::Class(c)) if g < k && *c < k => {
                        gold.push(g);
                        pred.push(*c);
                    }
                    _ => return Err(GlueError::OwnKindMismatch { index: i }),
                }
            }
            let matrix = confusion_matrix(&pred, &gold, k);
            let per_class = class_scores(&matrix, names);
            let occurring: Vec<&ClassScores> = per_class
                .iter()
                .filter(|c| c.support > 0 || matrix.iter().any(|row| row[c.class] > 0))
                .collect();
            m.accuracy = Some(accuracy(&pred, &gold));
            m.macro_f1 = Some(if occurring.is_empty() {
                0.0
            } else {
                occurring.iter().map(|c| c.f1).sum::<f64>() / occurring.len() as f64
            });
            if k == 2 {
                m.f1 = Some(f1_positive(&pred, &gold));
            }
            m.per_class = Some(per_class);
            m.confusion_matrix = Some(matrix);
        }
    }
    Ok(m)
}

/// `k × k` counts, `[gold][predicted]`.
pub fn confusion_matrix(preds: &[usize], labels: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; k]; k];
    for (&p, &l) in preds.iter().zip(labels) {
        if p < k && l < k {
            m[l][p] += 1;
        }
    }
    m
}

fn class_scores(matrix: &[Vec<usize>], names: Option<&[String]>) -> Vec<ClassScores> {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (0..matrix.len())
        .map(|c| {
            let tp = matrix[c][c];
            let predicted: usize = matrix.iter().map(|row| row[c]).sum();
            let support: usize = matrix[c].iter().sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassScores {
                class: c,
                name: names.and_then(|n| n.get(c).cloned()),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect()
}

/// Mean squared error; 0.0 for empty input.
pub fn mse(preds: &[f64], labels: &[f64]) -> f64 {
    let n = preds.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    preds.iter().zip(labels).map(|(p, l)| (p - l) * (p - l)).sum::<f64>() / n as f64
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
    let mut metrics = Metrics::empty(Some(task), examples.len());
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
        metrics.correlation_undefined = correlation_undefined(&pred, &gold);
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

/// Why [`pearson`] and [`spearman`] of these scores are undefined (and read 0), if they are.
pub fn correlation_undefined(preds: &[f64], gold: &[f64]) -> Option<String> {
    let constant = |v: &[f64]| v.windows(2).all(|w| w[0] == w[1]);
    let why = if preds.len().min(gold.len()) < 2 {
        "fewer than two examples"
    } else if constant(preds) {
        "the predictions are all equal"
    } else if constant(gold) {
        "the gold scores are all equal"
    } else {
        return None;
    };
    Some(format!("Pearson and Spearman are undefined ({why}): shown as 0"))
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

    fn class(c: usize) -> Label {
        Label::Class(c)
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
        for logits in [
            [f32::NAN, f32::NAN],
            [f32::NAN, -1.0],
            [f32::INFINITY, 0.0],
            [0.0, f32::NEG_INFINITY],
        ] {
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
        // Said where they read 0 for being undefined, not for being uncorrelated.
        assert!(correlation_undefined(&x, &[1.0; 5])
            .unwrap()
            .contains("the gold scores are all equal"));
        assert!(correlation_undefined(&[2.0; 5], &x)
            .unwrap()
            .contains("the predictions are all equal"));
        assert!(correlation_undefined(&[1.0], &[2.0])
            .unwrap()
            .contains("fewer than two"));
        assert_eq!(correlation_undefined(&x, &[1.0, 3.0, 2.0, 5.0, 4.0]), None);
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
