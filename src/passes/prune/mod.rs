//! Structured pruning of attention heads and FFN neurons: the graph is really sliced (Q/K/V
//! columns and biases, output-projection rows, FFN columns/rows, every shape constant carrying
//! the head count or width, un-shared where layers share it). A layer may lose every head or
//! neuron: the block then reduces to its output bias.
//!
//! Scores: `l1` and `random` reproduce the reference experiment (`round(n × amount)` removed per
//! layer, at least one kept). Calibrated strategies plug in through [`Plan`] with optional
//! refitted output weights. Units may also be named ([`Removal`]: the reference's
//! `heads_to_remove`, `layer_idx` + `neurons_to_remove`).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

mod calibrated;

pub use calibrated::{block_costs, check_fractions, few_tokens_note, prune_calibrated, units_asked, BlockCost};

use super::{round_half_even, PassError};
use crate::onnx::{tensor, GraphIndex, GraphProto, ModelProto, Patch};
use crate::options::OptionError;
use crate::structure::{self, EncoderLayer, Linear, Qkv, ShapeRole, Transformer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The reference's L1 weight magnitude scores.
    L1,
    /// A seeded random choice.
    Random,
    /// Calibrated: optimal-brain-surgeon removal with least-squares refit of the output
    /// projections, on calibration data (needs --calib-data).
    Obs,
}

/// Recorded (history, reports) with only the options that apply: `seed` for random scores,
/// `per_layer` for calibrated pruning, `max_ffn_fraction` where calibrated pruning places the
/// neurons across layers (a MAC budget, or model-wide counts).
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Fraction of heads to remove per layer, in [0, 1).
    pub heads: f64,
    /// Fraction of FFN neurons to remove per layer, in [0, 1).
    pub ffn: f64,
    pub strategy: Strategy,
    pub seed: u64,
    /// Sequence length for the MAC counts in the report and for the MAC budget.
    pub seq_len: usize,
    /// Fraction of encoder MACs to keep, in (0, 1): chooses per-layer counts (calibrated only).
    pub target_macs: Option<f64>,
    /// With `target_macs`: the largest share of a layer's FFN neurons the allocation may remove,
    /// in (0, 1). Deep budgets do better with more: the front ends' default is
    /// [`default_max_ffn_fraction`] of the target.
    pub max_ffn_fraction: f64,
    /// Calibrated only: remove the same fraction in every layer (as `l1`/`random` always do)
    /// instead of placing the model-wide count where the calibration data says it costs least.
    pub per_layer: bool,
    /// Round each layer's kept FFN neurons to the nearest multiple of this (at least one
    /// multiple; 1: no rounding). GPUs run matrix widths that are multiples of 8 (or 64) on their
    /// fast kernels: an FFN of 1843 made BERT-base slower on an H200, not faster.
    pub ffn_multiple_of: usize,
    /// These heads instead of a fraction (`heads` must then be 0): the reference's
    /// `heads_to_remove`.
    pub remove_heads: Option<Removal>,
    /// These FFN neurons instead of a fraction (`ffn` must then be 0): the reference's
    /// `layer_idx` + `neurons_to_remove`.
    pub remove_neurons: Option<Removal>,
}

/// Units named by index rather than chosen by score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// The encoder layer (0-based); `None`: the same indices in every layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// 0-based indices among the layer's heads (or neurons), in any order, no repeats.
    pub indices: Vec<usize>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            heads: 0.0,
            ffn: 0.0,
            strategy: Strategy::L1,
            seed: 0,
            seq_len: 128,
            target_macs: None,
            max_ffn_fraction: DEFAULT_MAX_FFN_FRACTION,
            per_layer: false,
            ffn_multiple_of: 1,
            remove_heads: None,
            remove_neurons: None,
        }
    }
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

/// What [`PruneOptions`] records: the options that apply to its strategy and budget.
#[derive(Serialize)]
struct Recorded<'a> {
    heads: f64,
    ffn: f64,
    strategy: Strategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    seq_len: usize,
    target_macs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ffn_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_layer: Option<bool>,
    #[serde(skip_serializing_if = "is_one")]
    ffn_multiple_of: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    remove_heads: &'a Option<Removal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remove_neurons: &'a Option<Removal>,
}

impl Serialize for PruneOptions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Recorded {
            heads: self.heads,
            ffn: self.ffn,
            strategy: self.strategy,
            seed: (self.strategy == Strategy::Random).then_some(self.seed),
            seq_len: self.seq_len,
            target_macs: self.target_macs,
            max_ffn_fraction: (self.strategy == Strategy::Obs && (self.target_macs.is_some() || !self.per_layer))
                .then_some(self.max_ffn_fraction),
            per_layer: (self.strategy == Strategy::Obs).then_some(self.per_layer),
            ffn_multiple_of: self.ffn_multiple_of,
            remove_heads: &self.remove_heads,
            remove_neurons: &self.remove_neurons,
        }
        .serialize(s)
    }
}

/// How many of `width` units to remove instead of `remove` so that the kept count is the nearest
/// multiple of `multiple` (halves round up, at least one multiple kept, never more than `width`).
/// A layer narrower than one multiple, or nothing removed, stays as asked.
pub fn aligned_removal(width: usize, remove: usize, multiple: usize) -> usize {
    if multiple <= 1 || remove == 0 || width < multiple {
        return remove;
    }
    let kept = width - remove;
    let rounded = ((kept + multiple / 2) / multiple * multiple).clamp(multiple, width);
    width - rounded
}

/// [`PruneOptions::max_ffn_fraction`]'s default, and the front ends' above half the MACs.
pub const DEFAULT_MAX_FFN_FRACTION: f64 = 0.9;

/// The share of one layer's FFN neurons a MAC budget of `target_macs` may take when none is
/// given (the CLI's, the recipes' and `auto`'s default): 0.98 at half the MACs and below, where
/// the 0.9 floor ran MiniLM's upper layers into it and cost a point or more, else 0.9
/// (bench/RESULTS.md, "Depth": closer to FP32 on held-out training data at every depth tried).
pub fn default_max_ffn_fraction(target_macs: f64) -> f64 {
    if target_macs <= 0.5 {
        0.98
    } else {
        DEFAULT_MAX_FFN_FRACTION
    }
}

/// Calibration examples a calibrated pruning to `target_macs` draws when none are asked for:
/// 1024 below half the MACs (where more data brought MiniLM's deep budgets 12-22% closer to FP32
/// on held-out data, for twice the time), else 512.
pub fn default_calib_samples(target_macs: Option<f64>) -> usize {
    match target_macs {
        Some(t) if t < 0.5 => 1024,
        _ => 512,
    }
}

impl crate::options::Named for Strategy {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Strategy::L1, "l1", "the reference's L1 weight magnitude scores"),
        (Strategy::Random, "random", "a seeded random choice"),
        (
            Strategy::Obs,
            "obs",
            "calibrated: least-squares optimal removal and refit of the output projections (needs calibration data)",
        ),
    ];
}

/// A refitted linear layer: weight in the graph's own layout after slicing, and bias.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refit {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// What to keep in one layer (indices into the current heads and neurons, ascending).
#[derive(Debug, Clone, Default)]
pub struct LayerPlan {
    pub keep_heads: Vec<usize>,
    pub keep_neurons: Vec<usize>,
    /// New attention-output projection (rows = kept heads × head size), replacing the sliced one.
    pub output_refit: Option<Refit>,
    /// New FFN down projection (rows = kept neurons), replacing the sliced one.
    pub down_refit: Option<Refit>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub layers: Vec<LayerPlan>,
}

impl Plan {
    /// A plan that keeps every head and neuron (note: `LayerPlan::default()` keeps nothing).
    pub fn keep_all(t: &Transformer) -> Plan {
        Plan {
            layers: t
                .layers
                .iter()
                .map(|l| LayerPlan {
                    keep_heads: (0..l.heads()).collect(),
                    keep_neurons: (0..l.ffn_width()).collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub layer: usize,
    pub heads_before: usize,
    pub heads_after: usize,
    pub neurons_before: usize,
    pub neurons_after: usize,
    /// Counted once, in the first layer that reads them: 0 in a layer sharing them.
    pub params_before: usize,
    pub params_after: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    /// The first earlier layer whose weights, attention and FFN alike, this one reads (ALBERT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares_weights_of: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub options: PruneOptions,
    pub layers: Vec<LayerReport>,
    pub params_before: usize,
    pub params_after: usize,
    pub encoder_macs_before: u64,
    pub encoder_macs_after: u64,
    pub seq_len: usize,
    pub seconds: f64,
    /// Seconds spent running the model on calibration data (0 without calibration).
    pub calibration_seconds: f64,
}

fn weight_f32(ix: &GraphIndex, name: &str) -> Result<Vec<f32>, PassError> {
    let c = ix
        .constant(name)
        .ok_or_else(|| PassError::Internal(format!("weight '{name}' is not a constant")))?;
    tensor::to_f32(c.tensor()).map_err(|e| {
        PassError::Unsupported(format!(
            "{e}: pruning works on float32 weights (prune before quantizing)"
        ))
    })
}

/// Scores per layer: (per head, per neuron); lower goes first.
pub type Scores = (Vec<Vec<f64>>, Vec<Vec<f64>>);

/// Sum of |w| over the given columns (graph layout [in, out] unless transposed).
fn l1_cols(w: &[f32], lin: &Linear, cols: std::ops::Range<usize>) -> f64 {
    let (rows, ncols) = (lin.in_features, lin.out_features);
    let mut s = 0.0f64;
    for r in 0..rows {
        for c in cols.clone() {
            let v = if lin.transposed {
                w[c * rows + r]
            } else {
                w[r * ncols + c]
            };
            s += v.abs() as f64;
        }
    }
    s
}

/// Sum of |w| over the given input rows.
fn l1_rows(w: &[f32], lin: &Linear, rows: std::ops::Range<usize>) -> f64 {
    let (nrows, cols) = (lin.in_features, lin.out_features);
    let mut s = 0.0f64;
    for r in rows {
        for c in 0..cols {
            let v = if lin.transposed {
                w[c * nrows + r]
            } else {
                w[r * cols + c]
            };
            s += v.abs() as f64;
        }
    }
    s
}

/// The reference's L1 scores: per head, |W| over its Q, K, V output columns and its rows of the
/// attention output projection; per neuron, |W| over its up-projection column, its
/// down-projection row, and |its up bias|.
pub fn l1_scores(model: &ModelProto, t: &Transformer) -> Result<Scores, PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    let mut heads = Vec::new();
    let mut neurons = Vec::new();
    for l in &t.layers {
        let mut hs = Vec::new();
        if let Some(a) = &l.attention {
            let Qkv::Separate { q, k, v } = &a.qkv else {
                heads.push(stacked_l1(&ix, a)?);
                neurons.push(ffn_l1(&ix, l)?);
                continue;
            };
            let ws: Vec<(Vec<f32>, &Linear)> = [q, k, v]
                .into_iter()
                .map(|lin| Ok((weight_f32(&ix, &lin.weight)?, lin)))
                .collect::<Result<_, PassError>>()?;
            let wo = weight_f32(&ix, &a.output.weight)?;
            let d = a.head_size;
            for h in 0..a.num_heads {
                let r = h * d..(h + 1) * d;
                let mut s: f64 = ws.iter().map(|(w, lin)| l1_cols(w, lin, r.clone())).sum();
                s += l1_rows(&wo, &a.output, r);
                hs.push(s);
            }
        }
        heads.push(hs);
        neurons.push(ffn_l1(&ix, l)?);
    }
    Ok((heads, neurons))
}

/// The one Linear [hidden, 3·all heads] computing Q, K and V (their columns side by side): a
/// stacked projection's, or the packed QKV weight of a fused `Attention` node (`node` is then
/// the Attention node).
fn stacked_linear(a: &structure::Attention) -> Option<Linear> {
    let (node, node_name, weight, bias) = match &a.qkv {
        Qkv::Separate { .. } => return None,
        Qkv::Stacked { qkv } => return Some(qkv.clone()),
        Qkv::Packed {
            node,
            node_name,
            weight,
            bias,
        } => (node, node_name, weight, bias),
    };
    let lin = Linear {
        node: *node,
        node_name: node_name.clone(),
        weight: weight.clone(),
        bias: bias.clone(),
        bias_node: None,
        in_features: a.output.out_features,
        out_features: 3 * a.all_heads(),
        transposed: false,
        output: String::new(),
        factor: None,
    };
    Some(lin)
}

/// The stacked or packed weight's columns of heads `keep`: each head's Q, K and V columns.
fn packed_columns(keep: &[usize], a: &structure::Attention) -> Vec<usize> {
    let cols = head_columns(keep, a.head_size);
    (0..3)
        .flat_map(|part| cols.iter().map(move |&c| part * a.all_heads() + c))
        .collect()
}

/// L1 scores of the heads of a stacked or fused attention: each head's Q, K and V columns of the
/// one weight and its rows of the output projection (what [`l1_scores`] sums for separate
/// projections).
fn stacked_l1(ix: &GraphIndex, a: &structure::Attention) -> Result<Vec<f64>, PassError> {
    let lin = stacked_linear(a).ok_or_else(|| PassError::Internal("not stacked".into()))?;
    let w = weight_f32(ix, &lin.weight)?;
    let wo = weight_f32(ix, &a.output.weight)?;
    let d = a.head_size;
    Ok((0..a.num_heads)
        .map(|h| {
            let packed: f64 = (0..3)
                .map(|part| {
                    let start = part * a.all_heads() + h * d;
                    l1_cols(&w, &lin, start..start + d)
                })
                .sum();
            packed + l1_rows(&wo, &a.output, h * d..(h + 1) * d)
        })
        .collect())
}

/// Per-neuron L1 scores of a layer's FFN (empty when it has none).
fn ffn_l1(ix: &GraphIndex, l: &EncoderLayer) -> Result<Vec<f64>, PassError> {
    let mut ns = Vec::new();
    if let Some(f) = &l.ffn {
        let up = weight_f32(ix, &f.up.weight)?;
        let down = weight_f32(ix, &f.down.weight)?;
        let bias = match &f.up.bias {
            Some(b) => weight_f32(ix, b)?,
            None => vec![0.0; f.up.out_features],
        };
        for j in 0..f.width {
            let up_part: f64 = f
                .up_columns(&[j])
                .into_iter()
                .map(|c| l1_cols(&up, &f.up, c..c + 1) + bias[c].abs() as f64)
                .sum();
            ns.push(up_part + l1_rows(&down, &f.down, j..j + 1));
        }
    }
    Ok(ns)
}

/// SplitMix64, for seeded permutations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Random scores from a seeded generator: lowest go first, like any other score.
pub fn random_scores(t: &Transformer, seed: u64) -> Scores {
    let mut rng = SplitMix(seed);
    let heads = t
        .layers
        .iter()
        .map(|l| (0..l.heads()).map(|_| rng.next() as f64).collect())
        .collect();
    let neurons = t
        .layers
        .iter()
        .map(|l| (0..l.ffn_width()).map(|_| rng.next() as f64).collect())
        .collect();
    (heads, neurons)
}

/// Indices kept when removing `round(n × amount)` of the lowest-scored (at least one kept).
pub fn keep_uniform(scores: &[f64], amount: f64) -> Vec<usize> {
    keep_uniform_aligned(scores, amount, 1)
}

/// [`keep_uniform`] with the kept count rounded to a multiple (see [`aligned_removal`]).
pub fn keep_uniform_aligned(scores: &[f64], amount: f64, multiple: usize) -> Vec<usize> {
    let n = scores.len();
    if n == 0 {
        return vec![];
    }
    let remove = (round_half_even(n as f64 * amount).max(0) as usize).min(n - 1);
    let remove = aligned_removal(n, remove, multiple);
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal scores keep their order, the lower index goes first (as torch's sort).
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut keep: Vec<usize> = order[remove..].to_vec();
    keep.sort_unstable();
    keep
}

pub fn validate(opts: &PruneOptions) -> Result<(), PassError> {
    let bad = |field, message: String| Err(PassError::Options(OptionError::new(field, message)));
    for (field, v) in [("heads", opts.heads), ("ffn", opts.ffn)] {
        if !(0.0..1.0).contains(&v) || v.is_nan() {
            return bad(
                field,
                format!("`{field}` {v}: the fraction to remove must be in [0, 1)"),
            );
        }
    }
    if let Some(t) = opts.target_macs {
        if !(t > 0.0 && t < 1.0) {
            return bad(
                "target_macs",
                format!("`target_macs` {t}: the fraction of encoder MACs to keep must be in (0, 1) (1 keeps them all: nothing to prune)"),
            );
        }
        if opts.strategy != Strategy::Obs {
            return bad(
                "target_macs",
                "`target_macs` needs calibration: give `calib_data` (strategy obs)".into(),
            );
        }
        if opts.heads > 0.0 || opts.ffn > 0.0 || opts.per_layer {
            return bad(
                "target_macs",
                "`target_macs` chooses the head and neuron counts itself: drop `heads`, `ffn` and `per_layer`".into(),
            );
        }
    }
    if opts.per_layer && opts.strategy != Strategy::Obs {
        return bad(
            "per_layer",
            "`per_layer` applies to calibrated pruning (strategy obs): l1 and random already remove the fraction from every layer".into(),
        );
    }
    let m = opts.max_ffn_fraction;
    if !(m > 0.0 && m < 1.0) {
        return bad(
            "max_ffn_fraction",
            format!("`max_ffn_fraction` {m}: the share of a layer's FFN neurons to remove at most must be in (0, 1)"),
        );
    }
    if m != DEFAULT_MAX_FFN_FRACTION && opts.target_macs.is_none() {
        return bad(
            "max_ffn_fraction",
            "`max_ffn_fraction` bounds the allocation of `target_macs`: give `target_macs` too".into(),
        );
    }
    for (field, removal, fraction, fraction_field) in [
        ("remove_heads", &opts.remove_heads, opts.heads, "heads"),
        ("remove_neurons", &opts.remove_neurons, opts.ffn, "ffn"),
    ] {
        let Some(r) = removal else { continue };
        if r.indices.is_empty() {
            return bad(field, format!("`{field}`: name at least one index"));
        }
        let mut seen = r.indices.clone();
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return bad(field, format!("`{field}`: index {} is given twice", w[0]));
        }
        if fraction > 0.0 {
            return bad(
                field,
                format!("`{field}` and `{fraction_field}` both choose what to remove: give one of them"),
            );
        }
        if opts.strategy == Strategy::Obs || opts.target_macs.is_some() {
            return bad(
                field,
                format!("`{field}` names the units itself: it takes no calibrated `strategy` or `target_macs`"),
            );
        }
    }
    if opts.seq_len == 0 {
        return bad("seq_len", "`seq_len` must be at least 1".into());
    }
    if opts.ffn_multiple_of == 0 {
        return bad("ffn_multiple_of", "`ffn_multiple_of` must be at least 1".into());
    }
    if opts.ffn_multiple_of > 1 && opts.ffn == 0.0 && opts.target_macs.is_none() && opts.remove_neurons.is_none() {
        return bad(
            "ffn_multiple_of",
            "`ffn_multiple_of` rounds the FFN counts that `ffn` or `target_macs` choose: give one of them".into(),
        );
    }
    if opts.ffn_multiple_of > 1 && opts.remove_neurons.is_some() {
        return bad(
            "ffn_multiple_of",
            "`ffn_multiple_of` rounds counts chosen by a fraction or a MAC budget; `remove_neurons` names the neurons itself".into(),
        );
    }
    Ok(())
}

/// The indices kept in each layer when `removal` names units to remove, each layer having
/// `counts[layer]` units (`what`: "heads" or "neurons"); `None` when no removal is given. An
/// index or layer the model does not have is an error naming `field`.
fn keep_named(
    removal: Option<&Removal>,
    counts: &[usize],
    field: &'static str,
    what: &str,
) -> Result<Option<Vec<Vec<usize>>>, PassError> {
    let Some(r) = removal else { return Ok(None) };
    let bad = |message: String| PassError::Options(OptionError::new(field, message));
    if let Some(l) = r.layer.filter(|&l| l >= counts.len()) {
        return Err(bad(format!(
            "`{field}` layer {l}: the model has {} encoder layers (0 to {})",
            counts.len(),
            counts.len().saturating_sub(1)
        )));
    }
    let mut keep = Vec::with_capacity(counts.len());
    for (layer, &n) in counts.iter().enumerate() {
        if r.layer.is_some_and(|l| l != layer) {
            keep.push((0..n).collect());
            continue;
        }
        if let Some(&i) = r.indices.iter().find(|&&i| i >= n) {
            return Err(bad(format!(
                "`{field}` {i}: layer {layer} has {n} {what} (0 to {})",
                n.saturating_sub(1)
            )));
        }
        keep.push((0..n).filter(|i| !r.indices.contains(i)).collect());
    }
    Ok(Some(keep))
}

/// A multiple wider than a layer's FFN: its kept neurons cannot be rounded to it (they were
/// left unrounded without a word).
pub fn refuse_wide_multiple(t: &Transformer, opts: &PruneOptions) -> Result<(), PassError> {
    let m = opts.ffn_multiple_of;
    match t.layers.iter().find(|l| l.ffn.is_some() && l.ffn_width() < m) {
        Some(l) if m > 1 => Err(PassError::Options(OptionError::new(
            "ffn_multiple_of",
            format!(
                "`ffn_multiple_of` {m} is more than the {} FFN neurons of layer {}: no multiple of it fits; give {} or less",
                l.ffn_width(),
                l.index,
                l.ffn_width()
            ),
        ))),
        _ => Ok(()),
    }
}

/// Refuses to prune a model whose encoder projections were factorized by `lowrank`: scoring
/// and slicing heads or neurons would have to work through the factors, which this pass does
/// not do.
pub fn refuse_factorized(t: &Transformer) -> Result<(), PassError> {
    match factorized(t) {
        Some(what) => Err(PassError::Unsupported(format!(
            "{what}: pruning a low-rank model is not supported; prune first, then run lowrank"
        ))),
        None => Ok(()),
    }
}

/// The first encoder projection `lowrank` factorized, in words (`layer 5 FFN up projection (node
/// '…') is factorized at rank 64 by lowrank`); `None` when there is none.
pub fn factorized(t: &Transformer) -> Option<String> {
    for l in &t.layers {
        let mut parts: Vec<(&str, &Linear)> = Vec::new();
        if let Some(a) = &l.attention {
            if let Qkv::Separate { q, k, v } = &a.qkv {
                parts.extend([("query", q), ("key", k), ("value", v)]);
            }
            parts.push(("attention output", &a.output));
        }
        if let Some(f) = &l.ffn {
            parts.extend([("FFN up", &f.up), ("FFN down", &f.down)]);
        }
        if let Some((what, lin)) = parts.iter().find(|(_, lin)| lin.factor.is_some()) {
            let rank = lin.factor.as_ref().map_or(0, |f| f.rank);
            return Some(format!(
                "layer {} {what} projection (node '{}') is factorized at rank {rank} by lowrank",
                l.index, lin.node_name
            ));
        }
    }
    None
}

/// Prunes with a data-free strategy (`l1` or `random`), uniformly per layer, or the units
/// `remove_heads` / `remove_neurons` name.
pub fn prune(model: &ModelProto, opts: &PruneOptions) -> Result<(ModelProto, PruneReport), PassError> {
    validate(opts)?;
    super::ensure_known_opsets(model)?;
    let start = Instant::now();
    let t = structure::discover(model)?;
    refuse_factorized(&t)?;
    refuse_wide_multiple(&t, opts)?;
    let (hs, ns) = match opts.strategy {
        Strategy::L1 => l1_scores(model, &t)?,
        Strategy::Random => {
            // Layers that share weights draw alike (l1 scores of one weight are alike anyway).
            let (mut hs, mut ns) = random_scores(&t, opts.seed);
            for (i, (a, f)) in t.shared_weights().into_iter().enumerate() {
                if let Some(j) = a {
                    hs[i] = hs[j].clone();
                }
                if let Some(j) = f {
                    ns[i] = ns[j].clone();
                }
            }
            (hs, ns)
        }
        Strategy::Obs => {
            return Err(PassError::Options(OptionError::new(
                "strategy",
                "`strategy` obs needs calibration data (`calib_data` FILE)",
            )))
        }
    };
    let head_counts: Vec<usize> = t.layers.iter().map(|l| l.heads()).collect();
    let neuron_counts: Vec<usize> = t.layers.iter().map(|l| l.ffn_width()).collect();
    let named_heads = keep_named(opts.remove_heads.as_ref(), &head_counts, "remove_heads", "heads")?;
    let named_neurons = keep_named(
        opts.remove_neurons.as_ref(),
        &neuron_counts,
        "remove_neurons",
        "neurons",
    )?;
    let plan = Plan {
        layers: hs
            .iter()
            .zip(&ns)
            .enumerate()
            .map(|(i, (h, n))| LayerPlan {
                keep_heads: match &named_heads {
                    Some(k) => k[i].clone(),
                    None => keep_uniform(h, opts.heads),
                },
                keep_neurons: match &named_neurons {
                    Some(k) => k[i].clone(),
                    None => keep_uniform_aligned(n, opts.ffn, opts.ffn_multiple_of),
                },
                ..Default::default()
            })
            .collect(),
    };
    let out = apply_plan(model, &t, &plan)?;
    let report = report(model, &t, &out, opts, start.elapsed().as_secs_f64(), 0.0)?;
    Ok((out, report))
}

/// Per layer: true when the layer left without heads still maps (BERT's layouts: the attention
/// goes and the layer is found by its FFN); false where it does not (DeBERTa's first layer,
/// ModernBERT's layers), so that layer keeps a head. Tried on each layer in turn, with the
/// layers sharing its weights (which take its answer).
pub fn layers_map_without_heads(model: &ModelProto, t: &Transformer) -> Vec<bool> {
    let shared = t.shared_weights();
    let mut ok = vec![true; t.layers.len()];
    for lead in (0..t.layers.len()).filter(|&i| shared[i].0.is_none()) {
        let members: Vec<usize> = (0..t.layers.len())
            .filter(|&i| i == lead || shared[i].0 == Some(lead))
            .collect();
        let mut plan = Plan::keep_all(t);
        for &i in &members {
            plan.layers[i].keep_heads.clear();
        }
        let maps = apply_plan(model, t, &plan)
            .ok()
            .and_then(|m| structure::discover(&m).ok())
            .is_some_and(|p| p.layers.len() == t.layers.len());
        for i in members {
            ok[i] = maps;
        }
    }
    ok
}

/// Builds the report by mapping the pruned model again.
pub fn report(
    before: &ModelProto,
    t: &Transformer,
    after: &ModelProto,
    opts: &PruneOptions,
    seconds: f64,
    calibration_seconds: f64,
) -> Result<PruneReport, PassError> {
    let t2 = structure::discover(after)?;
    // A layer the pruned graph no longer maps (one left without heads, on a layout that finds
    // its layers by their attention) would drop out of the report and of every later pass.
    if t2.layers.len() != t.layers.len() {
        return Err(PassError::Internal(format!(
            "the pruned graph maps {} of the {} layers",
            t2.layers.len(),
            t.layers.len()
        )));
    }
    let p1 = structure::parameter_counts(before, t);
    let p2 = structure::parameter_counts(after, &t2);
    let s = opts.seq_len;
    let shared = t.shared_weights();
    let layers = t
        .layers
        .iter()
        .zip(&t2.layers)
        .enumerate()
        .map(|(i, (a, b))| LayerReport {
            layer: i,
            heads_before: a.heads(),
            heads_after: b.heads(),
            neurons_before: a.ffn_width(),
            neurons_after: b.ffn_width(),
            params_before: p1.attention[i] + p1.ffn[i],
            params_after: p2.attention[i] + p2.ffn[i],
            macs_before: structure::stats_layer_macs(a, s),
            macs_after: structure::stats_layer_macs(b, s),
            shares_weights_of: shared[i].0.filter(|&j| shared[i].1 == Some(j)),
        })
        .collect();
    Ok(PruneReport {
        options: opts.clone(),
        layers,
        params_before: p1.total,
        params_after: p2.total,
        encoder_macs_before: structure::macs_per_sequence(t, s).0,
        encoder_macs_after: structure::macs_per_sequence(&t2, s).0,
        seq_len: s,
        seconds,
        calibration_seconds,
    })
}

/// Keeps the listed columns of a [rows, cols] matrix.
pub fn take_cols(w: &[f32], rows: usize, cols: usize, keep: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * keep.len());
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        out.extend(keep.iter().map(|&c| row[c]));
    }
    out
}

/// Keeps the listed rows of a [rows, cols] matrix.
pub fn take_rows(w: &[f32], cols: usize, keep: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(keep.len() * cols);
    for &r in keep {
        out.extend_from_slice(&w[r * cols..(r + 1) * cols]);
    }
    out
}

/// Head indices → the columns they occupy.
pub fn head_columns(keep_heads: &[usize], head_size: usize) -> Vec<usize> {
    keep_heads
        .iter()
        .flat_map(|&h| h * head_size..(h + 1) * head_size)
        .collect()
}

/// The pruning of one model: every change is recorded in one patch of the source graph.
struct Editor<'m> {
    patch: Patch,
    source: &'m ModelProto,
    graph: &'m GraphProto,
    /// Slices of shared constants already written: (constant, dims, data) → the new name, so
    /// that layers sharing a weight (ALBERT) and pruned alike share its slice too.
    slices: Vec<(String, Vec<usize>, Vec<f32>, String)>,
}

impl Editor<'_> {
    /// Writes `data` as the weight read by `node` at input `slot` (whose constant is `name`):
    /// the slice already written for another reader of `name` when it is the same (a weight read
    /// by two nodes, sliced alike: ALBERT's shared layers, a DeBERTa dynamo export's Q/K read by
    /// the content and the relative position projections), else in place when only that node
    /// reads it, else as a new, un-shared initializer.
    fn set_weight(&mut self, node: usize, slot: usize, name: &str, dims: &[usize], data: &[f32]) {
        let g = self.graph;
        let written = self
            .slices
            .iter()
            .find(|(n, d, v, _)| n == name && d == dims && v == data)
            .map(|s| s.3.clone());
        let direct = self.patch.input(g, node, slot) == Some(name);
        let only_user = self.patch.use_count(g, name) == 1;
        let is_init = self.patch.has_initializer(g, name);
        if written.is_none() && direct && only_user && is_init {
            self.patch.replace_initializer(name, tensor::from_f32(name, dims, data));
        } else {
            let new = written.unwrap_or_else(|| {
                let new = self.patch.fresh_name(&format!("{name}.pruned"));
                self.patch.add_initializer(tensor::from_f32(&new, dims, data));
                self.slices
                    .push((name.to_string(), dims.to_vec(), data.to_vec(), new.clone()));
                new
            });
            self.patch.rewire(node, slot, &new);
        }
    }

    fn add_initializer(&mut self, base: &str, t: crate::onnx::TensorProto) -> String {
        let name = self.patch.fresh_name(base);
        let mut t = t;
        t.name = Some(name.clone());
        self.patch.add_initializer(t);
        name
    }
}

pub(crate) fn source_weight(src: &ModelProto, name: &str) -> Result<Vec<f32>, PassError> {
    let g = crate::passes::graph(src)?;
    weight_f32(&GraphIndex::new(g), name)
}

/// Slots of `node` that read `name` (directly or through an Identity alias).
fn slots_reading(src_ix: &GraphIndex, node: usize, name: &str) -> Vec<usize> {
    src_ix
        .node(node)
        .input
        .iter()
        .enumerate()
        .filter(|(_, v)| {
            src_ix.constant_name(v).as_deref() == Some(name)
                // A shape piece computed from constants ([`GraphIndex::folded_name`]).
                || (src_ix.resolve(v) == name && src_ix.fold_i64(v).is_some())
        })
        .map(|(i, _)| i)
        .collect()
}

/// Rewrites a linear layer's weight (sliced by `keep_in` rows and/or `keep_out` columns, in
/// the logical [in, out] sense) and bias.
fn slice_linear(
    ed: &mut Editor,
    ix: &GraphIndex,
    lin: &Linear,
    keep_in: Option<&[usize]>,
    keep_out: Option<&[usize]>,
    refit: Option<&Refit>,
) -> Result<(), PassError> {
    let w = source_weight(ed.source, &lin.weight)?;
    let (inf, outf) = (lin.in_features, lin.out_features);
    let all_in: Vec<usize> = (0..inf).collect();
    let all_out: Vec<usize> = (0..outf).collect();
    let ki = keep_in.unwrap_or(&all_in);
    let ko = keep_out.unwrap_or(&all_out);
    let (data, dims) = if let Some(r) = refit {
        (
            r.weight.clone(),
            if lin.transposed {
                vec![ko.len(), ki.len()]
            } else {
                vec![ki.len(), ko.len()]
            },
        )
    } else if lin.transposed {
        // Stored [out, in].
        let rows = take_rows(&w, inf, ko);
        (take_cols(&rows, ko.len(), inf, ki), vec![ko.len(), ki.len()])
    } else {
        let rows = take_rows(&w, outf, ki);
        (take_cols(&rows, ki.len(), outf, ko), vec![ki.len(), ko.len()])
    };
    for slot in slots_reading(ix, lin.node, &lin.weight) {
        ed.set_weight(lin.node, slot, &lin.weight, &dims, &data);
    }
    if let Some(b) = &lin.bias {
        let bias = match refit {
            Some(r) => r.bias.clone(),
            None => {
                let bv = source_weight(ed.source, b)?;
                ko.iter().map(|&c| bv[c]).collect()
            }
        };
        let node = lin.bias_node.unwrap_or(lin.node);
        for slot in slots_reading(ix, node, b) {
            ed.set_weight(node, slot, b, &[bias.len()], &bias);
        }
    }
    Ok(())
}

/// Replaces a fully pruned block by its output bias: every reader of the block's output reads
/// the bias instead (a zero bias is created when there is none). When the bias sits in the
/// `SkipLayerNormalization` after the block (ONNX Runtime's fused form, `norm`), that node, which
/// needs a full-size input, becomes `Add(residual, bias)` and a `LayerNormalization`.
fn remove_block(
    ed: &mut Editor,
    out_lin: &Linear,
    hidden: usize,
    refit: Option<&Refit>,
    norm: &structure::Norm,
) -> Result<(), PassError> {
    let skip_bias = match &norm.skip_bias {
        Some(b) if out_lin.bias.is_none() => Some(source_weight(ed.source, b)?),
        _ => None,
    };
    let bias: Vec<f32> = match (refit, &out_lin.bias) {
        (Some(r), _) => r.bias.clone(),
        (None, Some(b)) => source_weight(ed.source, b)?,
        (None, None) => skip_bias.unwrap_or_else(|| vec![0.0; hidden]),
    };
    if norm.kind == "SkipLayerNormalization" {
        return unfuse_skip_norm(ed, out_lin, norm, &bias);
    }
    let base = out_lin
        .bias
        .clone()
        .unwrap_or_else(|| format!("{}.bias", out_lin.weight));
    let name = ed.add_initializer(&format!("{base}.only"), tensor::from_f32("", &[hidden], &bias));
    ed.patch.replace_uses(ed.graph, &out_lin.output, &name);
    Ok(())
}

/// [`remove_block`] before a `SkipLayerNormalization`: `Add(residual, bias)` then
/// `LayerNormalization` with its scale, bias and epsilon, writing its outputs (the normalized
/// value, and the sum where the graph names it).
fn unfuse_skip_norm(ed: &mut Editor, out_lin: &Linear, norm: &structure::Norm, bias: &[f32]) -> Result<(), PassError> {
    use crate::onnx::build::{attr_float, attr_int, node, with_attrs};
    let opset = ed
        .source
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .and_then(|o| o.version)
        .unwrap_or(0);
    if opset < 17 {
        return Err(PassError::Unsupported(format!(
            "removing every unit of a block before {} needs LayerNormalization (opset 17), the model has \
             opset {opset}: keep at least one head and neuron per layer",
            norm.node_name
        )));
    }
    let sln = &ed.graph.node[norm.node];
    let residual = sln
        .input
        .iter()
        .take(2)
        .find(|v| **v != out_lin.output)
        .cloned()
        .ok_or_else(|| PassError::Internal(format!("{}: no residual input", norm.node_name)))?;
    let b = ed.add_initializer(
        &format!("{}.bias.only", norm.node_name),
        tensor::from_f32("", &[bias.len()], bias),
    );
    let sum = match sln.output.get(3).filter(|o| !o.is_empty()) {
        Some(o) => o.clone(),
        None => ed.patch.fresh_name(&format!("{}.sum", norm.node_name)),
    };
    let eps = sln
        .attribute
        .iter()
        .find(|a| a.name() == "epsilon")
        .and_then(|a| a.f)
        .unwrap_or(1e-12);
    let add = node("Add", &format!("{}/Add", norm.node_name), &[&residual, &b], &[&sum]);
    let inputs = [
        sum.as_str(),
        sln.input[2].as_str(),
        sln.input.get(3).map_or("", |s| s.as_str()),
    ];
    let ln = with_attrs(
        node(
            "LayerNormalization",
            &format!("{}/LayerNormalization", norm.node_name),
            &inputs,
            &[&norm.output],
        ),
        vec![attr_int("axis", -1), attr_float("epsilon", eps)],
    );
    ed.patch.replace_node(norm.node, vec![add, ln]);
    Ok(())
}

/// A refitted output bias goes where the graph adds the projection's bias: when the projection
/// has none of its own and the `SkipLayerNormalization` after it carries one (`norm`), there;
/// when neither has one (ModernBERT's projections have no biases), into an `Add` placed after
/// the projection.
fn refit_skip_bias(ed: &mut Editor, out_lin: &Linear, norm: &structure::Norm, refit: Option<&Refit>) {
    match (refit, &out_lin.bias, &norm.skip_bias) {
        (Some(r), None, Some(b)) => ed.set_weight(norm.node, 4, b, &[r.bias.len()], &r.bias),
        (Some(r), None, None) => {
            let b = ed.add_initializer(
                &format!("{}.bias", out_lin.weight),
                tensor::from_f32("", &[r.bias.len()], &r.bias),
            );
            let biased = ed.patch.fresh_name(&format!("{}.biased", out_lin.output));
            ed.patch.replace_uses(ed.graph, &out_lin.output, &biased);
            let add = crate::onnx::build::node(
                "Add",
                &format!("{}/RefitBias", out_lin.node_name),
                &[&out_lin.output, &b],
                &[&biased],
            );
            let last = out_lin.factor.as_ref().map_or(out_lin.node, |f| f.node);
            ed.patch.insert_before(last + 1, add);
        }
        _ => {}
    }
}

/// Applies a plan: slices every layer, rewrites shape constants, removes what is no longer used.
pub fn apply_plan(model: &ModelProto, t: &Transformer, plan: &Plan) -> Result<ModelProto, PassError> {
    let g = crate::passes::graph(model)?;
    if plan.layers.len() != t.layers.len() {
        return Err(PassError::Internal(format!(
            "plan for {} layers, model has {}",
            plan.layers.len(),
            t.layers.len()
        )));
    }
    check_shared(t, plan)?;
    let ix = GraphIndex::new(g);
    let mut ed = Editor {
        patch: Patch::new(g),
        source: model,
        graph: g,
        slices: Vec::new(),
    };
    for (l, p) in t.layers.iter().zip(&plan.layers) {
        prune_attention(&mut ed, &ix, l, p)?;
        prune_ffn(&mut ed, &ix, l, p)?;
    }
    mask_heads_to_one(&mut ed, &ix, t, plan)?;
    ed.patch.remove_unused();
    let mut out = model.clone();
    let g = out.graph.get_or_insert_with(Default::default);
    ed.patch.apply(g)?;
    // Shapes recorded for intermediate values may no longer hold; they are optional hints.
    g.value_info.clear();
    // Check what was produced: the structure must map with exactly the planned sizes.
    let t2 =
        structure::discover(&out).map_err(|e| PassError::Internal(format!("the pruned graph does not map: {e}")))?;
    for (i, (l, p)) in t2.layers.iter().zip(&plan.layers).enumerate() {
        let want_heads = if t.layers[i].attention.is_some() {
            p.keep_heads.len()
        } else {
            0
        };
        let want_ffn = if t.layers[i].ffn.is_some() {
            p.keep_neurons.len()
        } else {
            0
        };
        if l.heads() != want_heads || l.ffn_width() != want_ffn {
            return Err(PassError::Internal(format!(
                "layer {i}: planned {want_heads} heads / {want_ffn} neurons, the graph has {} / {}",
                l.heads(),
                l.ffn_width()
            )));
        }
    }
    Ok(out)
}

/// A mask expanded once to [batch, heads, query, key] for every layer (transformers 4's
/// DistilBERT under the dynamo exporter) gets 1 on its head axis, once for the whole model, when
/// any layer's head count changes: it then broadcasts over every layer's heads.
fn mask_heads_to_one(ed: &mut Editor, ix: &GraphIndex, t: &Transformer, plan: &Plan) -> Result<(), PassError> {
    let sliced = t.layers.iter().zip(&plan.layers).any(|(l, p)| {
        l.attention
            .as_ref()
            .is_some_and(|a| !p.keep_heads.is_empty() && p.keep_heads.len() != a.num_heads)
    });
    if !sliced {
        return Ok(());
    }
    let mut groups: BTreeMap<(String, usize), Vec<(usize, i64)>> = BTreeMap::new();
    for c in t
        .layers
        .iter()
        .filter_map(|l| l.attention.as_ref())
        .flat_map(|a| &a.shape_consts)
    {
        if c.role == ShapeRole::MaskHeads {
            let changes = groups.entry((c.constant.clone(), c.used_by_node)).or_default();
            if !changes.contains(&(c.element, 1)) {
                changes.push((c.element, 1));
            }
        }
    }
    for ((constant, node), changes) in groups {
        let name = changed_constant(ed, ix, &constant, &changes, "mask")?;
        for slot in slots_reading(ix, node, &constant) {
            ed.patch.rewire(node, slot, &name);
        }
    }
    Ok(())
}

/// A new initializer `{constant}.{suffix}`: the integer constant `constant` with elements changed
/// as `changes` (element, value) says. Returns its name.
fn changed_constant(
    ed: &mut Editor,
    ix: &GraphIndex,
    constant: &str,
    changes: &[(usize, i64)],
    suffix: &str,
) -> Result<String, PassError> {
    let (mut values, dims) = match (ix.const_i64(constant), ix.constant(constant)) {
        (Some(v), Some(c)) => (v, c.tensor().dims.clone()),
        // Computed from constants: replaced by a constant of the same value and shape.
        _ => ix
            .fold_i64(constant)
            .ok_or_else(|| PassError::Internal(format!("shape constant '{constant}' is not an integer constant")))?,
    };
    for &(e, v) in changes {
        values[e] = v;
    }
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    Ok(ed.add_initializer(&format!("{constant}.{suffix}"), tensor::from_i64("", &dims, &values)))
}

/// Layers that share weights (ALBERT) must be pruned alike: the same heads and neurons kept, and
/// the same refit or none (one weight cannot take two; calibrated pruning fits one to all the
/// sharing layers). Otherwise pruning would give each layer its own copy and write a bigger model
/// than it read.
fn check_shared(t: &Transformer, plan: &Plan) -> Result<(), PassError> {
    // Head counts computed once for all layers (a dynamo DeBERTa export's position indices).
    let alike: Vec<(usize, &str)> = t
        .layers
        .iter()
        .filter_map(|l| {
            let why = l.attention.as_ref()?.heads_alike.as_deref()?;
            Some((l.index, why))
        })
        .collect();
    // The layers reading it are not told: every layer with attention must keep that count.
    if let Some(&(first, why)) = alike.first() {
        let count = plan.layers[first].keep_heads.len();
        let differs = t
            .layers
            .iter()
            .filter(|l| l.attention.is_some())
            .find(|l| plan.layers[l.index].keep_heads.len() != count);
        if let Some(other) = differs.map(|l| l.index) {
            return Err(PassError::Unsupported(format!(
                "layers {first} and {other} must keep as many heads as each other ({why}: computed once for \
                 all layers); prune the same fraction of heads in every layer (l1 or random heads, or calibrated \
                 with --per-layer, prune.per_layer in a recipe), or the FFN only"
            )));
        }
    }
    for (i, (a, f)) in t.shared_weights().into_iter().enumerate() {
        let p = &plan.layers[i];
        let differs = |j: usize, part: &str| {
            PassError::Unsupported(format!(
                "layers {j} and {i} share their {part} weights (as ALBERT's layers do): pruning must keep the same \
                 {part} units in both and refit them alike, which this plan does not (l1, random and calibrated \
                 pruning prune shared layers alike)"
            ))
        };
        if let Some(j) = a {
            let q = &plan.layers[j];
            if p.keep_heads != q.keep_heads || p.output_refit != q.output_refit {
                return Err(differs(j, "attention"));
            }
        }
        if let Some(j) = f {
            let q = &plan.layers[j];
            if p.keep_neurons != q.keep_neurons || p.down_refit != q.down_refit {
                return Err(differs(j, "FFN"));
            }
        }
    }
    Ok(())
}

/// Refuses pruning layer `l`'s heads (`heads`) or its FFN neurons (not `heads`) where they are
/// fixed (the attention's `heads_fixed`, the FFN's `neurons_fixed`), saying why and what can still
/// be pruned: the other part, unless it is fixed too, or, by a MAC budget, the blocks that can be.
pub(crate) fn refuse_fixed(l: &EncoderLayer, heads: bool) -> Result<(), PassError> {
    let heads_why = l.attention.as_ref().and_then(|a| a.heads_fixed.as_deref());
    let neurons_why = l.ffn.as_ref().and_then(|f| f.neurons_fixed.as_deref());
    let (why, other_why) = if heads {
        (heads_why, neurons_why)
    } else {
        (neurons_why, heads_why)
    };
    let Some(why) = why else { return Ok(()) };
    let (these, other, other_flag, its_other) = if heads {
        ("heads", "FFN", "--ffn; a recipe's mlp_neurons", "FFN neurons")
    } else {
        ("neurons", "heads", "--heads; a recipe's attention_heads", "heads")
    };
    let budget = "give a MAC budget (--target-macs; prune.target_macs)";
    let advice = match other_why {
        None => format!("prune the {other} only ({other_flag}), or {budget}, which leaves these {these} alone"),
        Some(other_why) => format!(
            "its {its_other} are fixed too ({other_why}); {budget}, which prunes the blocks that can be and \
             leaves this layer's alone"
        ),
    };
    Err(PassError::Unsupported(format!("layer {}: {why}; {advice}", l.index)))
}

/// Refuses removing or pruning layer `l`'s attention (`heads`) or FFN where a graph output is
/// computed inside it ([`structure::exposed_output`]; discovery marks such heads or neurons as
/// fixed, but a whole block may still be asked to go).
fn refuse_exposed(ix: &GraphIndex, l: &EncoderLayer, heads: bool) -> Result<(), PassError> {
    match structure::exposed_output(ix, l, heads) {
        Some(v) => Err(PassError::Unsupported(format!(
            "layer {}: the model outputs '{v}', computed inside its {}, which pruning would change or remove; \
             remove that output from the model, or prune the other blocks",
            l.index,
            if heads { "attention" } else { "FFN" }
        ))),
        None => Ok(()),
    }
}

fn prune_attention(ed: &mut Editor, ix: &GraphIndex, l: &EncoderLayer, p: &LayerPlan) -> Result<(), PassError> {
    let Some(a) = &l.attention else { return Ok(()) };
    if p.keep_heads.iter().any(|&h| h >= a.num_heads) || p.keep_heads.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PassError::Internal(format!(
            "layer {}: bad head list {:?}",
            l.index, p.keep_heads
        )));
    }
    if p.keep_heads.len() == a.num_heads && p.output_refit.is_none() {
        return Ok(());
    }
    if !p.keep_heads.is_empty() {
        refuse_fixed(l, true)?;
    }
    if p.keep_heads.len() < a.num_heads {
        refuse_exposed(ix, l, true)?;
    }
    let hidden = a.output.out_features;
    if p.keep_heads.is_empty() {
        return remove_block(ed, &a.output, hidden, p.output_refit.as_ref(), &l.attention_norm);
    }
    let cols = head_columns(&p.keep_heads, a.head_size);
    match &a.qkv {
        Qkv::Separate { q, k, v } => {
            for lin in [q, k, v] {
                slice_linear(ed, ix, lin, None, Some(&cols), None)?;
            }
        }
        Qkv::Stacked { qkv } => slice_linear(ed, ix, qkv, None, Some(&packed_columns(&p.keep_heads, a)), None)?,
        Qkv::Packed { .. } => prune_packed(ed, a, &p.keep_heads)?,
    }
    // The score terms' own per-head projections (DeBERTa's projected relative positions).
    for lin in &a.score_projections {
        slice_linear(ed, ix, lin, None, Some(&cols), None)?;
    }
    // Their folded forms, [heads, span, size] constants: this layer reads its kept heads'.
    for table in &a.score_tables {
        let t = ix
            .constant(table)
            .ok_or_else(|| PassError::Internal(format!("score table '{table}' is not a constant")))?
            .tensor();
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let values = tensor::to_f32(t).map_err(|e| PassError::Internal(format!("score table '{table}': {e}")))?;
        let per_head = dims[1] * dims[2];
        let kept: Vec<f32> = p
            .keep_heads
            .iter()
            .flat_map(|&h| values[h * per_head..(h + 1) * per_head].iter().copied())
            .collect();
        let name = ed.add_initializer(
            &format!("{table}.l{}", l.index),
            tensor::from_f32("", &[p.keep_heads.len(), dims[1], dims[2]], &kept),
        );
        for &reader in ix.consumers(table) {
            for slot in slots_reading(ix, reader, table) {
                ed.patch.rewire(reader, slot, &name);
            }
        }
    }
    slice_linear(ed, ix, &a.output, Some(&cols), None, p.output_refit.as_ref())?;
    refit_skip_bias(ed, &a.output, &l.attention_norm, p.output_refit.as_ref());
    // Per-head score biases (a relative position bias, often one for all layers): this layer
    // reads its kept heads' slices, gathered on the head axis of [batch, heads, query, key].
    for hb in &a.head_biases {
        let bias = ed
            .patch
            .input(ed.graph, hb.add_node, hb.slot)
            .ok_or_else(|| PassError::Internal(format!("layer {}: no score bias input", l.index)))?
            .to_string();
        let kept: Vec<i64> = p.keep_heads.iter().map(|&h| h as i64).collect();
        let idx = ed.add_initializer(
            &format!("{}.heads.l{}", hb.table, l.index),
            tensor::from_i64("", &[kept.len()], &kept),
        );
        let out = ed.patch.fresh_name(&format!("{bias}.l{}.heads", l.index));
        let gather = crate::onnx::build::with_attrs(
            crate::onnx::build::node("Gather", &out, &[&bias, &idx], &[&out]),
            vec![crate::onnx::build::attr_int("axis", -3)],
        );
        ed.patch.insert_before(hb.add_node, gather);
        ed.patch.rewire(hb.add_node, hb.slot, &out);
    }
    // Shape constants: the head count and the all-heads width, per (constant, node) pair.
    let heads = p.keep_heads.len() as i64;
    let mut groups: BTreeMap<(String, usize), Vec<(usize, i64)>> = BTreeMap::new();
    for c in &a.shape_consts {
        let value = match c.role {
            ShapeRole::Heads => heads,
            ShapeRole::AllHeads => heads * a.head_size as i64,
            // Written once for all layers (`mask_heads_to_one`).
            ShapeRole::MaskHeads | ShapeRole::HeadSize => continue,
        };
        groups
            .entry((c.constant.clone(), c.used_by_node))
            .or_default()
            .push((c.element, value));
    }
    // A node other layers read too gets a copy for this attention's readers, with every one of
    // its changed inputs.
    let mut copies: BTreeMap<usize, crate::onnx::NodeProto> = BTreeMap::new();
    for ((constant, node), changes) in groups {
        let name = changed_constant(ed, ix, &constant, &changes, &format!("l{}", l.index))?;
        let shared = a
            .shape_consts
            .iter()
            .any(|c| c.used_by_node == node && !c.readers.is_empty());
        for slot in slots_reading(ix, node, &constant) {
            if shared {
                let copy = copies.entry(node).or_insert_with(|| ed.graph.node[node].clone());
                copy.input[slot] = name.clone();
            } else {
                ed.patch.rewire(node, slot, &name);
            }
        }
    }
    for (node, mut copy) in copies {
        let out = ed.patch.fresh_name(&format!("{}.l{}", copy.output[0], l.index));
        copy.output = vec![out.clone()];
        copy.name = Some(format!("{}.l{}", copy.name(), l.index));
        let readers: Vec<usize> = a
            .shape_consts
            .iter()
            .filter(|c| c.used_by_node == node)
            .flat_map(|c| c.readers.iter().copied())
            .collect();
        ed.patch.insert_before(node + 1, copy);
        for r in readers {
            ed.patch.rewire(r, 1, &out);
        }
    }
    Ok(())
}

/// Slices a fused `Attention` node (com.microsoft) to heads `keep`: the packed weight's and
/// bias's Q, K and V columns of those heads, and its `num_heads` (and `qkv_hidden_sizes`, when
/// set) attributes. The node is rewritten whole: its attributes change with its inputs.
fn prune_packed(ed: &mut Editor, a: &structure::Attention, keep: &[usize]) -> Result<(), PassError> {
    let lin = stacked_linear(a).ok_or_else(|| PassError::Internal("not packed".into()))?;
    let node = lin.node;
    let cols = packed_columns(keep, a);
    let w = source_weight(ed.source, &lin.weight)?;
    let data = take_cols(&w, lin.in_features, lin.out_features, &cols);
    let mut n = ed.graph.node[node].clone();
    n.input[1] = ed.add_initializer(
        &format!("{}.pruned", lin.weight),
        tensor::from_f32("", &[lin.in_features, cols.len()], &data),
    );
    if let Some(b) = &lin.bias {
        let bv = source_weight(ed.source, b)?;
        let kept: Vec<f32> = cols.iter().map(|&c| bv[c]).collect();
        n.input[2] = ed.add_initializer(&format!("{b}.pruned"), tensor::from_f32("", &[kept.len()], &kept));
    }
    let all = (keep.len() * a.head_size) as i64;
    for attr in &mut n.attribute {
        match attr.name() {
            "num_heads" => attr.i = Some(keep.len() as i64),
            "qkv_hidden_sizes" => attr.ints = vec![all; 3],
            _ => {}
        }
    }
    ed.patch.replace_node(node, vec![n]);
    Ok(())
}

fn prune_ffn(ed: &mut Editor, ix: &GraphIndex, l: &EncoderLayer, p: &LayerPlan) -> Result<(), PassError> {
    let Some(f) = &l.ffn else { return Ok(()) };
    if p.keep_neurons.iter().any(|&n| n >= f.width) || p.keep_neurons.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PassError::Internal(format!("layer {}: bad neuron list", l.index)));
    }
    if p.keep_neurons.len() == f.width && p.down_refit.is_none() {
        return Ok(());
    }
    if !p.keep_neurons.is_empty() {
        refuse_fixed(l, false)?;
    }
    if p.keep_neurons.len() < f.width {
        refuse_exposed(ix, l, false)?;
    }
    if p.keep_neurons.is_empty() {
        return remove_block(ed, &f.down, f.down.out_features, p.down_refit.as_ref(), &l.output_norm);
    }
    slice_linear(ed, ix, &f.up, None, Some(&f.up_columns(&p.keep_neurons)), None)?;
    slice_linear(ed, ix, &f.down, Some(&p.keep_neurons), None, p.down_refit.as_ref())?;
    refit_skip_bias(ed, &f.down, &l.output_norm, p.down_refit.as_ref());
    if let Some(g) = f.gate.as_ref().filter(|g| g.constant_bounds) {
        gate_bounds(ed, ix, g, p.keep_neurons.len() as i64)?;
    }
    Ok(())
}

/// Rewrites the constant bounds of a gated FFN's halves for `k` neurons: the Split's sizes
/// [k, k], or the Slices' [0, k) and [k, 2k).
fn gate_bounds(ed: &mut Editor, ix: &GraphIndex, g: &structure::Gate, k: i64) -> Result<(), PassError> {
    let bounds: Vec<(usize, usize, i64)> = match g.nodes.as_slice() {
        [split] => vec![(*split, 1, -1)],
        [lo, hi] => vec![(*lo, 2, k), (*hi, 1, k), (*hi, 2, 2 * k)],
        _ => return Err(PassError::Internal("a gate of one Split or two Slices".into())),
    };
    for (node, slot, value) in bounds {
        let input = &ix.node(node).input[slot];
        let (dims, values) = if value < 0 {
            (vec![2], vec![k, k])
        } else {
            let old = ix
                .const_i64(input)
                .ok_or_else(|| PassError::Internal(format!("gate bound '{input}' is not an integer constant")))?;
            // A bound past the end (torch writes i64::MAX) stays so.
            if slot == 2 && old.first().is_some_and(|&e| e > 2 * k && value == 2 * k) {
                continue;
            }
            (vec![1], vec![value])
        };
        let name = ed.add_initializer(&format!("{input}.pruned"), tensor::from_i64("", &dims, &values));
        ed.patch.rewire(node, slot, &name);
    }
    Ok(())
}
