//! `diff`: where two models of the same task disagree — per-example agreement, the examples whose
//! prediction flips (with both models' margins), the distribution of the change in margin, and how
//! far apart their hidden states drift, layer by layer. Both models run on the same batches in one
//! process; the examples, labels and tokenizer are read as `eval` reads them (for model A).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::data::Labels;
use crate::eval::{self, EvalOptions, Prepared};
use crate::onnx::{self, ModelProto};
use crate::runtime::{self, Probe};

#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The examples and how they are batched (timing fields are ignored).
    pub eval: EvalOptions,
    /// Relative error of a layer's hidden states past which it is reported as the first divergent.
    pub threshold: f64,
    /// How many flipped examples the report lists (all of them are counted).
    pub show: usize,
}

/// One example as the two models see it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// 0-based, in file order.
    pub index: usize,
    /// Where it is in the data file (`line 12`, `row 3`).
    pub at: String,
    /// The gold class, when the label is one.
    pub label: Option<usize>,
    /// The gold score, when the label is one (a regression).
    pub score: Option<f32>,
    /// Classes: A's and B's predicted class (`None` for a regression).
    pub pred_a: Option<usize>,
    pub pred_b: Option<usize>,
    /// Classes: each model's margin for its own prediction (top logit minus the runner-up);
    /// a regression: each model's score.
    pub margin_a: f32,
    pub margin_b: f32,
    /// Classes: B's margin for A's predicted class minus A's (negative: B is less sure of A's
    /// answer; below −margin_a it flips); a regression: score B − score A.
    pub change: f32,
    /// The gold class's and each prediction's name, where the model's classes are named (as the
    /// text report shows them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred_a_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred_b_name: Option<String>,
}

/// A flipped example, with its text.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    #[serde(flatten)]
    pub row: Row,
    pub text: String,
    pub text_pair: Option<String>,
}

/// Quantiles of a sample (numpy's linear interpolation).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub p5: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub p95: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| eval::percentile(&v, p);
        Some(Spread {
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
            min: *v.first()?,
            p5: q(5.0)?,
            p25: q(25.0)?,
            median: q(50.0)?,
            p75: q(75.0)?,
            p95: q(95.0)?,
            max: *v.last()?,
        })
    }
}

/// How far B's hidden states are from A's at one point of the encoder.
#[derive(Debug, Clone, Serialize)]
pub struct LayerDrift {
    /// `embeddings` (the first layer's input) or `layer N` (its output, 0-based).
    pub at: String,
    pub value_a: String,
    pub value_b: String,
    /// ‖h_B − h_A‖ / ‖h_A‖ over every real token of every example (Frobenius norms).
    pub relative_error: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub task: Option<crate::glue::Task>,
    pub model_a: PathBuf,
    pub model_b: PathBuf,
    pub data_file: PathBuf,
    pub split: Option<String>,
    pub labels: Labels,
    /// A model whose outputs are read by their class names: in the task's class order (under a
    /// task, as `eval` reads them), or B's in A's order (the same names in another order).
    pub class_order_a: Option<eval::ClassOrder>,
    pub class_order_b: Option<eval::ClassOrder>,
    /// Whether the data file has labels (accuracy is reported where it has class labels).
    pub labelled: bool,
    pub examples: usize,
    /// Classes: the share of examples both models put in the same class (`None` for a regression).
    pub agreement: Option<f64>,
    /// Classes: how many examples the two models put in different classes (`None` for a
    /// regression: it has no classes to flip).
    pub flips: Option<usize>,
    /// With gold class labels: examples A gets right and B wrong, and the other way round.
    pub a_right_b_wrong: Option<usize>,
    pub a_wrong_b_right: Option<usize>,
    pub accuracy_a: Option<f64>,
    pub accuracy_b: Option<f64>,
    /// A regression with gold scores: each model's Pearson and Spearman correlation with them.
    pub pearson_a: Option<f64>,
    pub pearson_b: Option<f64>,
    pub spearman_a: Option<f64>,
    pub spearman_b: Option<f64>,
    /// Why a model's correlations are undefined (read 0), as eval says it: "A: ...", "B: ...".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub correlation_undefined: Vec<String>,
    /// The distribution of [`Row::change`] over all examples.
    pub change: Option<Spread>,
    /// The largest absolute difference of any logit (score) between the two models.
    pub max_abs_logit_diff: f64,
    /// Per point of the encoder, in order; empty when neither model's layers could be mapped
    /// (see `layers_note`).
    pub layers: Vec<LayerDrift>,
    pub threshold: f64,
    /// The first point whose relative error exceeds the threshold.
    pub first_past_threshold: Option<String>,
    pub layers_note: Option<String>,
    /// The first `show` flips in file order.
    pub shown_flips: Vec<Flip>,
    /// Every example.
    pub rows: Vec<Row>,
    pub tokenizer: String,
    pub wall_seconds: f64,
}

/// B's outputs in the order of A's class `names`, where B names the same classes (each once,
/// [`eval::same_class_name`]) in another order; `None` where its names are A's in A's order, or are other names.
fn by_names(names: &[String], b: crate::data::ModelLabels) -> Option<eval::ClassOrder> {
    let same = |x: &String, y: &String| eval::same_class_name(x, y);
    if b.names.len() != names.len() || b.names.iter().zip(names).all(|(x, y)| same(x, y)) {
        return None;
    }
    let outputs: Option<Vec<usize>> = names
        .iter()
        .map(|n| {
            let mut at = b.names.iter().enumerate().filter(|(_, m)| same(m, n)).map(|(i, _)| i);
            at.next().filter(|_| at.next().is_none())
        })
        .collect();
    outputs.map(|outputs| eval::ClassOrder {
        outputs,
        names: b.names,
        source: b.source,
    })
}

/// A point of the encoder where hidden states are compared, and its value in each model.
struct Point {
    at: String,
    a: String,
    b: String,
}

/// The hidden values compared: the encoder's input and each layer's output, named in A and in B.
/// Taken from both models when both map; else from the one that maps, where the other computes
/// values of the same names (passes keep them). Returns the points and, when some could not be
/// compared, why.
fn hidden_points(a: &ModelProto, b: &ModelProto) -> (Vec<Point>, Option<String>) {
    let points = |t: &crate::structure::Transformer| -> Vec<(String, String)> {
        let mut v = Vec::new();
        if let Some(first) = t.layers.first() {
            v.push(("embeddings".to_string(), first.input.clone()));
        }
        for l in &t.layers {
            v.push((format!("layer {}", l.index), l.output_norm.output.clone()));
        }
        v
    };
    let produced = |m: &ModelProto| -> std::collections::HashSet<String> {
        m.graph
            .iter()
            .flat_map(|g| g.node.iter().flat_map(|n| n.output.iter().cloned()))
            .collect()
    };
    let (ta, tb) = (crate::structure::discover(a), crate::structure::discover(b));
    match (&ta, &tb) {
        (Ok(ta), Ok(tb)) => {
            let (pa, pb) = (points(ta), points(tb));
            let note = (pa.len() != pb.len()).then(|| {
                format!(
                    "A has {} layers and B {}: the first {} are compared",
                    ta.layers.len(),
                    tb.layers.len(),
                    ta.layers.len().min(tb.layers.len())
                )
            });
            let rows = pa.into_iter().zip(pb).map(|((at, a), (_, b))| Point { at, a, b });
            (rows.collect(), note)
        }
        (Ok(t), Err(e)) | (Err(e), Ok(t)) => {
            let (mapped, other) = if ta.is_ok() { ("A", b) } else { ("B", a) };
            let have = produced(other);
            let all = points(t);
            let kept: Vec<Point> = all
                .iter()
                .filter(|(_, v)| have.contains(v))
                .map(|(at, v)| Point {
                    at: at.clone(),
                    a: v.clone(),
                    b: v.clone(),
                })
                .collect();
            let missing: Vec<String> = all
                .iter()
                .filter(|(_, v)| !have.contains(v))
                .map(|(at, v)| format!("{at} ('{v}')"))
                .collect();
            let note = (!missing.is_empty()).then(|| {
                format!(
                    "not compared: {}; model {} is not mapped ({}) and computes no value of that name",
                    missing.join(", "),
                    if mapped == "A" { "B" } else { "A" },
                    if crate::passes::quantize::ensure_not_quantized(other).is_err() {
                        "quantized".to_string()
                    } else {
                        crate::glue::error::shorten(&e.to_string())
                    }
                )
            });
            (kept, note)
        }
        (Err(e), Err(_)) => (
            vec![],
            Some(format!("hidden states not compared: neither model is mapped ({e})")),
        ),
    }
}

/// Top value minus the largest other one, for class `c`.
fn margin(z: &[f32], c: usize) -> f32 {
    let other = z
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != c)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    z[c] - other
}

/// The examples, prepared with the tokenizer (`tokenizer` says which: model A's or --tokenizer), must fit model B's
/// tables too: its word embeddings and its positions (ONNX Runtime's own error is "indices
/// element out of data bounds").
fn fits_b(b: &Path, proto_b: &onnx::ModelProto, batches: &eval::Batches, tokenizer: &str) -> Result<()> {
    let limits = eval::input_limits(proto_b);
    if let Some(rows) = limits.vocabulary {
        if let Some(id) = batches.largest_id().filter(|&id| id >= rows as i64) {
            bail!(
                "{}: the tokenizer ({tokenizer}) gives token id {id}, past the {rows} rows of MODEL_B's word embeddings: the two models do not share a vocabulary (diff compares models of one tokenizer)",
                b.display()
            );
        }
    }
    if let Some(rows) = limits.positions {
        let longest = batches.widest();
        if longest > rows {
            bail!(
                "{}: examples of {longest} tokens, past MODEL_B's {rows} positions; pass --max-length {rows}",
                b.display()
            );
        }
    }
    Ok(())
}

/// Compares the models at `a` and `b` on the examples of `opts`.
pub fn diff(a: &Path, b: &Path, opts: &DiffOptions, progress: eval::Progress) -> Result<DiffReport> {
    let wall = Instant::now();
    if !(opts.threshold.is_finite() && opts.threshold > 0.0) {
        bail!("--threshold {}: must be a positive number", opts.threshold);
    }
    let proto_a = onnx::load(a)?;
    let proto_b = onnx::load(b)?;
    for (path, proto) in [(a, &proto_a), (b, &proto_b)] {
        eval::refuse_headless(path, proto, "diff (which compares predictions)")?;
    }
    let Prepared {
        data_file,
        split,
        data,
        labels,
        order: order_a,
        batches,
        tokenizer,
        ..
    } = eval::prepare_to_compare(a, &proto_a, &opts.eval)?;
    fits_b(b, &proto_b, &batches, &tokenizer)?;
    // Under a task, each model's outputs in the task's class order (B may name them otherwise);
    // without one, B's in A's where both name the same classes in another order.
    let order_b = match opts.eval.task {
        Some(t) => eval::task_order(b, &proto_b, t, opts.eval.labels.as_deref(), opts.eval.words)?,
        None if opts.eval.labels.is_none() => match labels.names() {
            // B's names unreadable are refused as A's are (eval refuses both).
            Some(names) => crate::data::model_labels(b, &proto_b, None, "--labels")
                .map_err(anyhow::Error::msg)?
                .and_then(|own| by_names(names, own)),
            None => None,
        },
        None => None,
    };
    let in_order = |order: &Option<eval::ClassOrder>, row: &[f32]| match order {
        Some(o) if o.outputs.len() == row.len() => o.apply(row),
        _ => row.to_vec(),
    };
    let (points, mut layers_note) = hidden_points(&proto_a, &proto_b);
    let names_a: Vec<String> = points.iter().map(|p| p.a.clone()).collect();
    let names_b: Vec<String> = points.iter().map(|p| p.b.clone()).collect();
    let output = |m: &ModelProto, path: &Path| -> Result<String> {
        m.graph
            .as_ref()
            .and_then(onnx::graph::prediction_value)
            .map(|o| o.name().to_string())
            .ok_or_else(|| anyhow!("{}: the model has no outputs", path.display()))
    };
    let (out_a, out_b) = (output(&proto_a, a)?, output(&proto_b, b)?);
    runtime::init(None)?;
    let open = |m: &ModelProto, names: &[String], out: String, path: &Path| -> Result<Probe> {
        let mut all = names.to_vec();
        all.push(out);
        Probe::open(m, &all, &path.display().to_string(), &opts.eval.session)
    };
    let mut probe_a = open(&proto_a, &names_a, out_a, a)?;
    let mut probe_b = open(&proto_b, &names_b, out_b, b)?;
    drop((proto_a, proto_b));

    let n = data.len();
    let mut logits: Vec<Option<(Vec<f32>, Vec<f32>)>> = vec![None; n];
    // Per point: Σ‖h_B − h_A‖², Σ‖h_A‖², or why it could not be compared.
    let mut sums = vec![(0.0f64, 0.0f64); points.len()];
    let mut bad_point: Option<String> = None;
    let mut width = None;
    for (bi, (rows, batch)) in batches.iter().enumerate() {
        let va = probe_a
            .run(&batch)
            .with_context(|| format!("{}: batch {bi}", a.display()))?;
        let vb = probe_b
            .run(&batch)
            .with_context(|| format!("{}: batch {bi}", b.display()))?;
        let (la, lb) = (&va[points.len()], &vb[points.len()]);
        let w = la.1.len() / rows.len().max(1);
        if lb.1.len() != la.1.len() || w == 0 || la.1.len() != w * rows.len() {
            bail!(
                "the models' outputs differ in shape: {} gives {:?}, {} gives {:?}",
                a.display(),
                la.0,
                b.display(),
                lb.0
            );
        }
        width = Some(w);
        for (k, &r) in rows.iter().enumerate() {
            logits[r] = Some((
                in_order(&order_a, &la.1[k * w..(k + 1) * w]),
                in_order(&order_b, &lb.1[k * w..(k + 1) * w]),
            ));
        }
        let tokens = batch.token_rows();
        for (p, ((sa, da), (sb, db))) in va.iter().zip(&vb).take(points.len()).enumerate() {
            if sa != sb || sa.len() != 3 {
                bad_point.get_or_insert_with(|| {
                    format!(
                        "{}: shapes {sa:?} and {sb:?} differ (hidden states not compared)",
                        points[p].at
                    )
                });
                continue;
            }
            let h = sa[2];
            for &t in &tokens {
                for (x, y) in da[t * h..(t + 1) * h].iter().zip(&db[t * h..(t + 1) * h]) {
                    sums[p].0 += ((y - x) as f64).powi(2);
                    sums[p].1 += (*x as f64).powi(2);
                }
            }
        }
        progress(bi + 1, batches.len());
    }
    let width = width.ok_or_else(|| anyhow!("no examples to compare"))?;
    let layers: Vec<LayerDrift> = if let Some(why) = bad_point {
        layers_note = Some(why);
        vec![]
    } else {
        points
            .iter()
            .zip(&sums)
            .map(|(p, &(d, e))| LayerDrift {
                at: p.at.clone(),
                value_a: p.a.clone(),
                value_b: p.b.clone(),
                relative_error: if e > 0.0 { (d / e).sqrt() } else { d.sqrt() },
            })
            .collect()
    };
    let first_past_threshold = layers
        .iter()
        .find(|l| l.relative_error > opts.threshold)
        .map(|l| l.at.clone());

    let regression = width == 1;
    // The classes' names: under a task, the task's (both models' logits are in its order);
    // otherwise the model's or --labels'.
    let task_names = match &labels {
        crate::data::Labels::Glue(t) => t.class_names(),
        _ => None,
    };
    let name = |c: Option<usize>| {
        c.and_then(|c| match labels.names() {
            Some(names) => names.get(c).cloned(),
            None => task_names.and_then(|n| n.get(c)).map(|n| n.to_string()),
        })
    };
    let mut rows = Vec::with_capacity(n);
    let mut max_abs = 0.0f64;
    for (i, l) in logits.into_iter().enumerate() {
        let (za, zb) = l.ok_or_else(|| anyhow!("internal error: example {i} was not run"))?;
        for (x, y) in za.iter().zip(&zb) {
            max_abs = max_abs.max((x - y).abs() as f64);
        }
        let gold = data.label(i);
        let (label, score) = (gold.and_then(|l| l.class()), gold.and_then(|l| l.score()));
        let at = data.locs().get(i).map(|l| l.to_string()).unwrap_or_default();
        let row = if regression {
            Row {
                index: i,
                at,
                label,
                score,
                pred_a: None,
                pred_b: None,
                margin_a: za[0],
                margin_b: zb[0],
                change: zb[0] - za[0],
                label_name: None,
                pred_a_name: None,
                pred_b_name: None,
            }
        } else {
            let pa = crate::glue::argmax(&za).ok_or_else(|| anyhow!("{}: example {i} gave NaN logits", a.display()))?;
            let pb = crate::glue::argmax(&zb).ok_or_else(|| anyhow!("{}: example {i} gave NaN logits", b.display()))?;
            Row {
                index: i,
                at,
                label,
                score,
                pred_a: Some(pa),
                pred_b: Some(pb),
                margin_a: margin(&za, pa),
                margin_b: margin(&zb, pb),
                change: margin(&zb, pa) - margin(&za, pa),
                label_name: name(label),
                pred_a_name: name(Some(pa)),
                pred_b_name: name(Some(pb)),
            }
        };
        rows.push(row);
    }
    let flipped: Vec<&Row> = rows.iter().filter(|r| r.pred_a != r.pred_b).collect();
    let agreement = (!regression).then(|| 1.0 - flipped.len() as f64 / n as f64);
    let labelled = matches!(data, crate::data::Examples::Labelled(_));
    let gold = !regression && labelled && rows.iter().all(|r| r.label.is_some());
    let right = |p: Option<usize>, r: &Row| p == r.label;
    let count = |f: &dyn Fn(&Row) -> bool| gold.then(|| rows.iter().filter(|r| f(r)).count());
    let accuracy = |f: &dyn Fn(&Row) -> bool| count(f).map(|c| c as f64 / n as f64);
    let shown_flips = flipped
        .iter()
        .take(opts.show)
        .map(|r| {
            let (text, pair) = data.text(r.index);
            Flip {
                row: (*r).clone(),
                text: text.to_string(),
                text_pair: pair.map(str::to_string),
            }
        })
        .collect();
    let changes: Vec<f64> = rows.iter().map(|r| r.change as f64).collect();
    // A regression's quality: each model's correlation with the gold scores, as eval reports it.
    let scores: Option<Vec<f64>> = regression
        .then(|| rows.iter().map(|r| r.score.map(f64::from)).collect())
        .flatten();
    let predicted = |b: bool| -> Vec<f64> {
        rows.iter()
            .map(|r| f64::from(if b { r.margin_b } else { r.margin_a }))
            .collect()
    };
    let correlation = |f: fn(&[f64], &[f64]) -> f64, b: bool| scores.as_ref().map(|gold| f(&predicted(b), gold));
    let undefined = |b: bool| {
        scores
            .as_ref()
            .and_then(|gold| crate::glue::correlation_undefined(&predicted(b), gold))
    };
    let correlation_undefined = match (undefined(false), undefined(true)) {
        (Some(a), Some(b)) if a == b => vec![format!("A and B: {a}")],
        (a, b) => a
            .map(|a| format!("A: {a}"))
            .into_iter()
            .chain(b.map(|b| format!("B: {b}")))
            .collect(),
    };
    Ok(DiffReport {
        task: opts.eval.task,
        model_a: a.to_path_buf(),
        model_b: b.to_path_buf(),
        data_file,
        split,
        labels,
        class_order_a: order_a,
        class_order_b: order_b,
        labelled,
        examples: n,
        agreement,
        flips: (!regression).then_some(flipped.len()),
        a_right_b_wrong: count(&|r| right(r.pred_a, r) && !right(r.pred_b, r)),
        a_wrong_b_right: count(&|r| !right(r.pred_a, r) && right(r.pred_b, r)),
        accuracy_a: accuracy(&|r| right(r.pred_a, r)),
        accuracy_b: accuracy(&|r| right(r.pred_b, r)),
        pearson_a: correlation(crate::glue::pearson, false),
        pearson_b: correlation(crate::glue::pearson, true),
        spearman_a: correlation(crate::glue::spearman, false),
        spearman_b: correlation(crate::glue::spearman, true),
        correlation_undefined,
        change: Spread::of(&changes),
        max_abs_logit_diff: max_abs,
        layers,
        threshold: opts.threshold,
        first_past_threshold,
        layers_note,
        shown_flips,
        rows,
        tokenizer,
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

/// The per-example rows as CSV (`label`: the gold class, or a regression's gold score; the
/// classes' names where they are named).
pub fn rows_csv(r: &DiffReport) -> String {
    let opt = |v: Option<usize>| v.map(|x| x.to_string()).unwrap_or_default();
    let name = |v: &Option<String>| v.as_deref().map(crate::report::csv_field).unwrap_or_default();
    let mut s =
        String::from("index,at,label,pred_a,pred_b,margin_a,margin_b,change,label_name,pred_a_name,pred_b_name\n");
    for row in &r.rows {
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            row.index,
            crate::report::csv_field(&row.at),
            row.score.map_or_else(|| opt(row.label), |y| y.to_string()),
            opt(row.pred_a),
            opt(row.pred_b),
            row.margin_a,
            row.margin_b,
            row.change,
            name(&row.label_name),
            name(&row.pred_a_name),
            name(&row.pred_b_name)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_the_gap_to_the_runner_up_for_the_given_class() {
        let z = [1.0, 3.0, 2.5];
        assert_eq!(margin(&z, 1), 0.5);
        assert_eq!(margin(&z, 0), -2.0);
        assert_eq!(margin(&[0.25, -0.75], 0), 1.0);
    }

    #[test]
    fn spread_matches_numpy_percentiles() {
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.max, s.median, s.mean), (1.0, 4.0, 2.5, 2.5));
        assert!((s.p95 - 3.85).abs() < 1e-12);
        assert!(Spread::of(&[]).is_none());
    }
}
