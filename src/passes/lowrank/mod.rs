//! Low-rank factorization of Linear layers: each selected `MatMul(x, W)` (+ bias `Add`) becomes
//! `MatMul(MatMul(x, A), B)` (+ the same bias), A = [in, k] and B = [k, out] new initializers
//! (a Gemm keeps its node and attributes and reads `x·A` with B in its own layout).
//!
//! Two ways to choose the factors:
//! - weight SVD, the reference's method (`../shared/docs/seed-facts.md`), optionally after its
//!   random-matrix-theory denoising ([`denoise`]); the rank comes from an energy share, a ratio
//!   of the full rank or a fixed value, clamped to [k_min, k_max];
//! - activation-aware ([`aware`], with calibration data): the SVD of the weight whitened by the
//!   Cholesky-like square root of its input's second moments, so that truncation minimizes the
//!   layer's *output* error on the calibration tokens, with ranks allocated across layers
//!   against a parameter budget.
//!
//! A layer whose rank would be at or above break-even (k ≥ m·n/(m+n): the factors would hold as
//! many parameters as the weight) is left dense unless `force`.

use std::time::Instant;

use faer::Mat;
use serde::Serialize;

mod aware;
mod denoise;

pub use aware::{allocate_ranks, lowrank_calibrated};
pub use denoise::{denoise, lower_median, mp_support, shrink_values, Shrink, SOFT_TAU};

use super::{round_half_even, PassError};
use crate::onnx::{build, tensor, GraphIndex, ModelProto, Patch};
use crate::options::{Named, OptionError};
use crate::structure::{self, Linear, Qkv, Transformer};

/// Which Linear layers to factorize (the reference's `apply_to`, mapped from its module names
/// to the roles discovery finds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTo {
    /// Every Linear: Q, K, V, attention output, FFN up and down, pooler, classifier.
    AllLinear,
    /// The BERT body's Linears: encoder projections and the pooler (not the classifier).
    BertLinearOnly,
    /// Everything except the classifier (the reference's default).
    ExcludeClassifier,
    /// FFN up and down projections.
    FfnOnly,
    /// FFN up and down, and the attention output projection.
    FfnPlusAttnOutput,
    /// Query, key and value projections.
    QkvOnly,
}

impl crate::options::Named for ApplyTo {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            ApplyTo::AllLinear,
            "all_linear",
            "every Linear: Q, K, V, attention output, FFN up and down, pooler, classifier",
        ),
        (
            ApplyTo::BertLinearOnly,
            "bert_linear_only",
            "the BERT body's Linears: encoder projections and the pooler (not the classifier)",
        ),
        (
            ApplyTo::ExcludeClassifier,
            "exclude_classifier",
            "everything except the classifier (the reference's default)",
        ),
        (ApplyTo::FfnOnly, "ffn_only", "FFN up and down projections"),
        (
            ApplyTo::FfnPlusAttnOutput,
            "ffn_plus_attn_output",
            "FFN up and down, and the attention output projection",
        ),
        (ApplyTo::QkvOnly, "qkv_only", "query, key and value projections"),
    ];
}

/// What a Linear layer is in the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Query,
    Key,
    Value,
    /// One stacked Q/K/V projection (ModernBERT's Wqkv).
    QueryKeyValue,
    AttentionOutput,
    FfnUp,
    FfnDown,
    Pooler,
    Classifier,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Query => "query",
            Role::Key => "key",
            Role::Value => "value",
            Role::QueryKeyValue => "qkv",
            Role::AttentionOutput => "attn_output",
            Role::FfnUp => "ffn_up",
            Role::FfnDown => "ffn_down",
            Role::Pooler => "pooler",
            Role::Classifier => "classifier",
        }
    }
}

impl ApplyTo {
    /// Whether this set contains a layer of role `r` (the reference's name tests, by role).
    pub fn selects(self, r: Role) -> bool {
        use Role::*;
        match self {
            ApplyTo::AllLinear => true,
            ApplyTo::BertLinearOnly => r != Classifier,
            ApplyTo::ExcludeClassifier => r != Classifier,
            ApplyTo::FfnOnly => matches!(r, FfnUp | FfnDown),
            ApplyTo::FfnPlusAttnOutput => matches!(r, FfnUp | FfnDown | AttentionOutput),
            ApplyTo::QkvOnly => matches!(r, Query | Key | Value | QueryKeyValue),
        }
    }
}

/// How the rank of each layer is chosen (weight SVD, or activation-aware without a budget).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankRule {
    /// Smallest k whose share of Σs² reaches E, in (0, 1].
    Energy(f64),
    /// k = round(full rank × R) (halves to even, as Python), R in (0, 1].
    Ratio(f64),
    /// k = K (at least 1, at most the full rank of every selected layer).
    Fixed(usize),
}

/// Recorded (history, reports) without `rank` under `target_params`, which allocates the ranks
/// and leaves the rule unused ([`Recorded`]).
#[derive(Debug, Clone)]
pub struct LowrankOptions {
    pub rank: RankRule,
    pub k_min: Option<usize>,
    pub k_max: Option<usize>,
    pub apply_to: ApplyTo,
    /// Encoder layers to touch (`None`: all). The pooler and classifier have no layer index and
    /// are not filtered by it, as in the reference.
    pub layers: Option<Vec<usize>>,
    /// Denoise before the SVD with this shrinkage rule (weight SVD only).
    pub denoise: Option<Shrink>,
    /// Factorize even at or above break-even.
    pub force: bool,
    /// Activation-aware only: keep this fraction of the selected layers' weight parameters,
    /// ranks allocated across layers (replaces the rank rule).
    pub target_params: Option<f64>,
    /// Sequence length for the MAC counts in the report.
    pub seq_len: usize,
    /// Activation-aware (whitened by calibration statistics) instead of the weight SVD: needs
    /// calibration data. Not recorded: the history says so by its calibration keys.
    pub activation_aware: bool,
}

/// [`LowrankOptions`] as recorded.
#[derive(Serialize)]
struct Recorded<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<&'a RankRule>,
    k_min: &'a Option<usize>,
    k_max: &'a Option<usize>,
    apply_to: &'a ApplyTo,
    layers: &'a Option<Vec<usize>>,
    denoise: &'a Option<Shrink>,
    force: bool,
    target_params: &'a Option<f64>,
    seq_len: usize,
}

impl Serialize for LowrankOptions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Recorded {
            rank: self.target_params.is_none().then_some(&self.rank),
            k_min: &self.k_min,
            k_max: &self.k_max,
            apply_to: &self.apply_to,
            layers: &self.layers,
            denoise: &self.denoise,
            force: self.force,
            target_params: &self.target_params,
            seq_len: self.seq_len,
        }
        .serialize(s)
    }
}

impl Default for LowrankOptions {
    fn default() -> Self {
        LowrankOptions {
            rank: RankRule::Energy(0.99),
            k_min: None,
            k_max: None,
            apply_to: ApplyTo::ExcludeClassifier,
            layers: None,
            denoise: None,
            force: false,
            target_params: None,
            seq_len: 128,
            activation_aware: false,
        }
    }
}

/// One selected layer in the report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// e.g. "layer 4 ffn_up", "pooler".
    pub name: String,
    pub layer: Option<usize>,
    pub role: Role,
    pub node: String,
    pub weight: String,
    pub in_features: usize,
    pub out_features: usize,
    /// min(in, out).
    pub full_rank: usize,
    /// The rank chosen (for a skipped layer: the rank that was rejected, 0 if none was chosen;
    /// null in the JSON, as the text's `-`).
    #[serde(serialize_with = "none_if_zero")]
    pub rank: usize,
    /// m·n/(m+n): factors at this rank or above hold at least as many parameters as W.
    pub break_even: f64,
    /// Share of Σs² kept: of the (denoised) weight's spectrum, or, activation-aware, of the
    /// whitened weight's (= the output energy on the calibration tokens).
    pub energy_kept: f64,
    /// Weight and bias elements before and after.
    pub params_before: usize,
    pub params_after: usize,
    pub factorized: bool,
    /// Why the layer stayed as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Kept dense because its rank reached break-even: a lower rank (or `force`) would
    /// factorize it, unlike a layer kept for what it is (already factorized, shared, not
    /// calibrated).
    #[serde(skip)]
    pub at_break_even: bool,
}

impl LayerReport {
    fn at_break_even(self) -> Self {
        LayerReport {
            at_break_even: true,
            ..self
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LowrankReport {
    pub options: LowrankOptions,
    /// "svd", "denoise (gavish_donoho) + svd" or "activation-aware (whitened svd)".
    pub method: String,
    pub layers: Vec<LayerReport>,
    pub factorized: usize,
    pub skipped: usize,
    /// Parameters of the selected layers (weights and biases).
    pub selected_params_before: usize,
    pub selected_params_after: usize,
    /// Parameters of every encoder Linear (Q, K, V, attention output, FFN up and down).
    pub encoder_linear_params_before: usize,
    pub encoder_linear_params_after: usize,
    /// Under `target_params`: the weights its budget is a fraction of (the calibrated layers'
    /// weight matrices, no biases; a shared weight once), before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_weights_before: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_weights_after: Option<usize>,
    /// Every float parameter of the model.
    pub params_before: usize,
    pub params_after: usize,
    pub encoder_macs_before: u64,
    pub encoder_macs_after: u64,
    pub seq_len: usize,
    pub seconds: f64,
    /// Seconds running the model on calibration data (0 without calibration).
    pub calibration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_examples: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_tokens: Option<usize>,
}

/// A selected layer.
#[derive(Debug, Clone)]
pub struct Target {
    pub layer: Option<usize>,
    pub role: Role,
    pub linear: Linear,
    /// Why the layer stays dense whatever its rank: its weight has a reader the factors would
    /// not replace (a layer sharing it that the selection leaves out, or a node outside the
    /// Linear layers), so the dense weight stays and factors beside it would grow the model.
    pub shared_with: Option<String>,
}

impl Target {
    pub fn name(&self) -> String {
        match self.layer {
            Some(l) => format!("layer {l} {}", self.role.name()),
            None => self.role.name().to_string(),
        }
    }

    /// The "no factorization" row of the report.
    fn kept(&self, reason: String, rank: usize, energy_kept: f64) -> LayerReport {
        let l = &self.linear;
        LayerReport {
            name: self.name(),
            layer: self.layer,
            role: self.role,
            node: l.node_name.clone(),
            weight: l.weight.clone(),
            in_features: l.in_features,
            out_features: l.out_features,
            full_rank: l.in_features.min(l.out_features),
            rank,
            break_even: break_even(l.in_features, l.out_features),
            energy_kept,
            params_before: l.params(),
            params_after: l.params(),
            factorized: false,
            skipped: Some(reason),
            at_break_even: false,
        }
    }

    fn done(&self, rank: usize, energy_kept: f64) -> LayerReport {
        let l = &self.linear;
        let bias = if l.bias.is_some() { l.out_features } else { 0 };
        LayerReport {
            params_after: rank * (l.in_features + l.out_features) + bias,
            factorized: true,
            skipped: None,
            ..self.kept(String::new(), rank, energy_kept)
        }
    }
}

/// 0 (no rank chosen) as null.
fn none_if_zero<S: serde::Serializer>(rank: &usize, s: S) -> Result<S::Ok, S::Error> {
    match rank {
        0 => s.serialize_none(),
        r => s.serialize_some(r),
    }
}

/// m·n/(m+n).
pub fn break_even(m: usize, n: usize) -> f64 {
    (m * n) as f64 / (m + n) as f64
}

/// Whether rank k saves nothing on an m × n weight: k(m+n) ≥ m·n.
pub fn at_break_even(k: usize, m: usize, n: usize) -> bool {
    k * (m + n) >= m * n
}

/// Checks the options that do not depend on the model.
pub fn validate(opts: &LowrankOptions) -> Result<(), PassError> {
    let bad = |field, s: String| Err(PassError::Options(OptionError::new(field, s)));
    match opts.rank {
        RankRule::Energy(e) if !(e > 0.0 && e <= 1.0) => {
            return bad(
                "energy",
                format!("`energy` {e}: the share of spectral energy to keep must be in (0, 1]"),
            )
        }
        RankRule::Ratio(r) if !(r > 0.0 && r <= 1.0) => {
            return bad(
                "ratio",
                format!("`ratio` {r}: the fraction of the full rank to keep must be in (0, 1]"),
            )
        }
        RankRule::Fixed(0) => return bad("rank", "`rank` 0: the rank must be at least 1".into()),
        _ => {}
    }
    if opts.k_max == Some(0) {
        return bad("k_max", "`k_max` 0: the rank must be at least 1".into());
    }
    if let (Some(lo), Some(hi)) = (opts.k_min, opts.k_max) {
        if lo > hi {
            return bad("k_min", format!("`k_min` {lo} is above `k_max` {hi}"));
        }
    }
    if let Some(f) = opts.target_params {
        if !(f > 0.0 && f < 1.0) {
            return bad(
                "target_params",
                format!(
                    "`target_params` {f}: the fraction of the selected layers' parameters to keep must be in (0, 1)"
                ),
            );
        }
        if opts.k_min.is_some() || opts.k_max.is_some() {
            return bad(
                "target_params",
                "`target_params` allocates the ranks itself: drop `k_min` and `k_max`".into(),
            );
        }
        if opts.denoise.is_some() {
            return bad(
                "denoise",
                "`denoise` belongs to the weight-only method: drop it with `target_params`".into(),
            );
        }
    }
    if opts.seq_len == 0 {
        return bad("seq_len", "`seq_len` must be at least 1".into());
    }
    Ok(())
}

/// The layers `opts` selects, in graph order: an error when `--layers` names a layer the model
/// does not have or nothing matches.
pub fn select(model: &ModelProto, t: &Transformer, opts: &LowrankOptions) -> Result<Vec<Target>, PassError> {
    if let Some(ls) = &opts.layers {
        if ls.is_empty() {
            return Err(PassError::Options(OptionError::new(
                "layers",
                "`layers`: give at least one layer index",
            )));
        }
        let bad: Vec<String> = ls
            .iter()
            .filter(|&&l| l >= t.layers.len())
            .map(|l| l.to_string())
            .collect();
        if !bad.is_empty() {
            return Err(PassError::Options(OptionError::new(
                "layers",
                format!(
                    "`layers` {}: the model has {} encoder layers (0 to {})",
                    bad.join(", "),
                    t.layers.len(),
                    t.layers.len().saturating_sub(1)
                ),
            )));
        }
    }
    let mut all: Vec<Target> = Vec::new();
    for l in &t.layers {
        let mut push = |role, lin: &Linear| {
            all.push(Target {
                layer: Some(l.index),
                role,
                linear: lin.clone(),
                shared_with: None,
            })
        };
        if let Some(a) = &l.attention {
            match &a.qkv {
                Qkv::Separate { q, k, v } => {
                    push(Role::Query, q);
                    push(Role::Key, k);
                    push(Role::Value, v);
                }
                Qkv::Stacked { qkv } => push(Role::QueryKeyValue, qkv),
                Qkv::Packed { .. } => {}
            }
            push(Role::AttentionOutput, &a.output);
        }
        if let Some(f) = &l.ffn {
            push(Role::FfnUp, &f.up);
            push(Role::FfnDown, &f.down);
        }
    }
    if let Some(h) = &t.head {
        if let Some(p) = &h.pooler {
            all.push(Target {
                layer: None,
                role: Role::Pooler,
                linear: p.clone(),
                shared_with: None,
            });
        }
        all.push(Target {
            layer: None,
            role: Role::Classifier,
            linear: h.classifier.clone(),
            shared_with: None,
        });
    }
    let mapped: Vec<(usize, String)> = all.iter().map(|tg| (tg.linear.node, tg.name())).collect();
    let mut chosen: Vec<Target> = all
        .into_iter()
        .filter(|tg| opts.apply_to.selects(tg.role))
        .filter(|tg| match (tg.layer, &opts.layers) {
            (Some(l), Some(ls)) => ls.contains(&l),
            _ => true,
        })
        .collect();
    if chosen.is_empty() {
        let apply = serde_json::to_value(opts.apply_to)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let layers = opts
            .layers
            .as_ref()
            .map(|ls| {
                format!(
                    " `layers` {}",
                    ls.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")
                )
            })
            .unwrap_or_default();
        return Err(PassError::Options(OptionError::new(
            "apply_to",
            format!(
                "no Linear layer matches `apply_to` {apply}{layers} (the graph has {} encoder layers{}; fused \
                 QKV projections are not factorized)",
                t.layers.len(),
                if t.head.is_some() {
                    " and a classification head"
                } else {
                    ""
                }
            ),
        )));
    }
    mark_shared(model, &mut chosen, &mapped)?;
    Ok(chosen)
}

/// Sets [`Target::shared_with`] where a chosen dense layer's weight is read by a node that no
/// chosen layer with that weight is (through `Identity` aliases); `mapped`: every Linear's node
/// and name, selected or not.
fn mark_shared(model: &ModelProto, chosen: &mut [Target], mapped: &[(usize, String)]) -> Result<(), PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    for i in 0..chosen.len() {
        if chosen[i].linear.factor.is_some() {
            continue;
        }
        let weight = chosen[i].linear.weight.clone();
        let covered: Vec<usize> = chosen
            .iter()
            .filter(|c| c.linear.weight == weight && c.linear.factor.is_none())
            .map(|c| c.linear.node)
            .collect();
        let mut values = vec![weight.clone()];
        let mut outside: Vec<usize> = Vec::new();
        while let Some(v) = values.pop() {
            for &n in ix.consumers(&v) {
                if ix.is_op(n, "Identity") {
                    values.extend(ix.node(n).output.iter().cloned());
                } else if !covered.contains(&n) && !outside.contains(&n) {
                    outside.push(n);
                }
            }
        }
        let layer_of = |n: &usize| mapped.iter().find(|(m, _)| m == n).map(|(_, name)| name.clone());
        chosen[i].shared_with = match outside.iter().find(|n| layer_of(n).is_none()) {
            Some(&n) => Some(format!(
                "its weight '{weight}' is also read by {}, outside the Linear layers: the dense weight stays, so factors beside it would grow the model",
                ix.node_label(n)
            )),
            None if !outside.is_empty() => {
                let names: Vec<String> = outside.iter().filter_map(layer_of).collect();
                let listed = match names.len() {
                    1..=3 => names.join(", "),
                    n => format!("{} and {} more", names[..2].join(", "), n - 2),
                };
                Some(format!(
                    "its weight '{weight}' is shared with {listed}, which the selection leaves out: select every layer sharing it, or none (factors beside the dense weight would grow the model)"
                ))
            }
            None => None,
        };
    }
    Ok(())
}

/// The rank of a spectrum `s` (non-increasing) by the reference's rule, then clamped to
/// [k_min, k_max] and to the full rank.
pub fn choose_rank(s: &[f64], rule: RankRule, k_min: Option<usize>, k_max: Option<usize>) -> usize {
    let r = s.len();
    let mut k = if r <= 1 {
        1
    } else {
        match rule {
            RankRule::Fixed(k) => k.clamp(1, r),
            RankRule::Ratio(x) => (round_half_even(r as f64 * x).max(1) as usize).min(r),
            RankRule::Energy(e) => {
                let e2: Vec<f64> = s.iter().map(|v| v * v).collect();
                let total = e2.iter().sum::<f64>().max(1e-12);
                let mut acc = 0.0;
                let mut k = r;
                for (i, v) in e2.iter().enumerate() {
                    acc += v;
                    if acc / total >= e {
                        k = i + 1;
                        break;
                    }
                }
                k.clamp(1, r)
            }
        }
    };
    if let Some(lo) = k_min {
        k = k.max(lo);
    }
    if let Some(hi) = k_max {
        k = k.min(hi);
    }
    k.min(r.max(1))
}

/// Share of Σs² in the first k values.
pub fn energy_share(s: &[f64], k: usize) -> f64 {
    let total: f64 = s.iter().map(|v| v * v).sum();
    if total <= 0.0 {
        return 1.0;
    }
    s.iter().take(k).map(|v| v * v).sum::<f64>() / total
}

/// A linear layer's weight in logical [in, out] layout.
pub fn weight_matrix(model: &ModelProto, lin: &Linear) -> Result<Mat<f64>, PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    let c = ix
        .constant(&lin.weight)
        .ok_or_else(|| PassError::Internal(format!("weight '{}' is not a constant", lin.weight)))?;
    let w = tensor::to_f32(c.tensor()).map_err(|e| {
        PassError::Unsupported(format!(
            "{e}: low-rank factorization works on float32 weights (factorize before quantizing)"
        ))
    })?;
    let (i, o) = (lin.in_features, lin.out_features);
    if w.len() != i * o {
        return Err(PassError::Internal(format!(
            "weight '{}' has {} values, expected {i}×{o}",
            lin.weight,
            w.len()
        )));
    }
    Ok(if lin.transposed {
        Mat::from_fn(i, o, |r, c| w[c * i + r] as f64)
    } else {
        Mat::from_fn(i, o, |r, c| w[r * o + c] as f64)
    })
}

/// A thin SVD: (U, s, V) with m = U·diag(s)·Vᵀ, s non-increasing.
pub type ThinSvd = (Mat<f64>, Vec<f64>, Mat<f64>);

/// The thin SVD of `m`.
pub fn svd(m: &Mat<f64>, what: &str) -> Result<ThinSvd, PassError> {
    let d = m
        .thin_svd()
        .map_err(|e| PassError::Internal(format!("{what}: SVD did not converge ({e:?})")))?;
    let r = m.nrows().min(m.ncols());
    let s: Vec<f64> = (0..r).map(|i| d.S().column_vector()[i]).collect();
    Ok((d.U().to_owned(), s, d.V().to_owned()))
}

/// One factorization to write into the graph.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub name: String,
    pub linear: Linear,
    pub rank: usize,
    /// Row-major [in, rank].
    pub a: Vec<f32>,
    /// Row-major [rank, out].
    pub b: Vec<f32>,
}

impl Replacement {
    /// From logical factors a = [in, k] and b = [k, out]; an error naming the layer when a value
    /// is not finite.
    pub fn new(target: &Target, a: &Mat<f64>, b: &Mat<f64>) -> Result<Replacement, PassError> {
        let k = a.ncols();
        let (i, o) = (target.linear.in_features, target.linear.out_features);
        if a.nrows() != i || b.nrows() != k || b.ncols() != o {
            return Err(PassError::Internal(format!(
                "{}: factors of shapes {}×{} and {}×{} for a {i}×{o} weight",
                target.name(),
                a.nrows(),
                a.ncols(),
                b.nrows(),
                b.ncols()
            )));
        }
        let av: Vec<f32> = (0..i).flat_map(|r| (0..k).map(move |c| a[(r, c)] as f32)).collect();
        let bv: Vec<f32> = (0..k).flat_map(|r| (0..o).map(move |c| b[(r, c)] as f32)).collect();
        if av.iter().chain(&bv).any(|v| !v.is_finite()) {
            return Err(PassError::Calibration(format!(
                "{} (weight '{}'): the factors are not finite",
                target.name(),
                target.linear.weight
            )));
        }
        Ok(Replacement {
            name: target.name(),
            linear: target.linear.clone(),
            rank: k,
            a: av,
            b: bv,
        })
    }
}

/// Rewrites every replacement into a copy of `model`: a new `MatMul(x, A)` before the layer's
/// node, which then reads `x·A` and B. Weights nothing reads any more are removed.
pub fn factorize_graph(model: &ModelProto, reps: &[Replacement]) -> Result<ModelProto, PassError> {
    let mut out = model.clone();
    let g = crate::passes::graph_mut(&mut out)?;
    let mut patch = Patch::new(g);
    patch.reserve_node_names(g);
    // Factors already written, by the weight they replace: layers that share a weight (ALBERT)
    // and get the same factors share them too.
    let mut written: Vec<(&str, &Replacement, String, String)> = Vec::new();
    for r in reps {
        let lin = &r.linear;
        if lin.factor.is_some() {
            return Err(PassError::Internal(format!("{}: already factorized", r.name)));
        }
        let node = g
            .node
            .get(lin.node)
            .ok_or_else(|| PassError::Internal(format!("{}: node {} is gone", r.name, lin.node)))?;
        let x = patch
            .input(g, lin.node, 0)
            .map(str::to_string)
            .ok_or_else(|| PassError::Internal(format!("{}: node without input", r.name)))?;
        let is_gemm = crate::structure::is_gemm(node);
        let base = if lin.node_name.is_empty() {
            lin.weight.clone()
        } else {
            lin.node_name.clone()
        };
        let mid = patch.fresh_name(&format!("{base}/lowrank_xa"));
        let first = patch.fresh_name(&format!("{base}/lowrank_MatMul"));
        let same = written.iter().find(|(w, o, _, _)| {
            *w == lin.weight && o.rank == r.rank && o.a == r.a && o.b == r.b && o.linear.transposed == lin.transposed
        });
        if let Some((_, _, a_name, b_name)) = same {
            patch.insert_before(lin.node, build::node("MatMul", &first, &[&x, a_name], &[&mid]));
            patch.rewire(lin.node, 0, &mid);
            patch.rewire(lin.node, 1, b_name);
            continue;
        }
        let a_name = patch.fresh_name(&format!("{}.lowrank_a", lin.weight));
        let b_name = patch.fresh_name(&format!("{}.lowrank_b", lin.weight));
        written.push((&lin.weight, r, a_name.clone(), b_name.clone()));
        let (i, o, k) = (lin.in_features, lin.out_features, r.rank);
        patch.add_initializer(tensor::from_f32(&a_name, &[i, k], &r.a));
        let b = if is_gemm && lin.transposed {
            // Gemm with transB=1 reads B as [out, k].
            let mut t = vec![0f32; k * o];
            for row in 0..k {
                for col in 0..o {
                    t[col * k + row] = r.b[row * o + col];
                }
            }
            tensor::from_f32(&b_name, &[o, k], &t)
        } else {
            tensor::from_f32(&b_name, &[k, o], &r.b)
        };
        patch.add_initializer(b);
        patch.insert_before(lin.node, build::node("MatMul", &first, &[&x, &a_name], &[&mid]));
        patch.rewire(lin.node, 0, &mid);
        patch.rewire(lin.node, 1, &b_name);
    }
    patch.remove_unused();
    patch.apply(g)?;
    Ok(out)
}

/// Sum of the parameters of every encoder Linear.
pub fn encoder_linear_params(t: &Transformer) -> usize {
    // A weight several layers share (ALBERT) is counted once, as the model stores it.
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for l in &t.layers {
        let mut linears: Vec<&crate::structure::Linear> = vec![];
        if let Some(a) = &l.attention {
            linears.push(&a.output);
            match &a.qkv {
                Qkv::Separate { q, k, v } => linears.extend([q, k, v]),
                Qkv::Stacked { qkv } => linears.push(qkv),
                Qkv::Packed { .. } => {}
            }
        }
        if let Some(f) = &l.ffn {
            linears.extend([&f.up, &f.down]);
        }
        for linear in linears {
            if seen.insert(linear.weight.as_str()) {
                total += linear.params();
            }
        }
    }
    total
}

/// A note when the calibration data's `tokens` are fewer than the inputs of the widest encoder
/// layer the sets `apply_to` factorize (an FFN's down projection where one selects it):
/// activation-aware low rank weighs a layer by the directions its inputs take on these tokens,
/// at most `tokens` of them, and keeps ranks too small.
pub fn few_tokens_note(model: &ModelProto, tokens: usize, apply_to: &[ApplyTo]) -> Option<String> {
    let t = structure::discover(model).ok()?;
    // Every Linear reads the hidden size but the FFN's down projection, which reads the FFN.
    let ffn = apply_to.iter().any(|a| a.selects(Role::FfnDown));
    let width = t
        .layers
        .iter()
        .map(|l| if ffn { l.ffn_width().max(t.hidden) } else { t.hidden })
        .max()?;
    (tokens < width).then(|| {
        format!(
            "the calibration data gives {tokens} tokens, fewer than the {width} inputs of the widest layer it factorizes: activation-aware low rank sees at most {tokens} directions of them and keeps ranks too small; give more calibration examples (--calib-samples; calibration.samples in a recipe)"
        )
    })
}

/// The report's totals, from the model before and after (the latter must still map).
fn finish(
    model: &ModelProto,
    out: &ModelProto,
    opts: &LowrankOptions,
    method: String,
    layers: Vec<LayerReport>,
    seconds: f64,
) -> Result<LowrankReport, PassError> {
    let t0 = structure::discover(model)?;
    let t1 =
        structure::discover(out).map_err(|e| PassError::Internal(format!("the factorized graph does not map: {e}")))?;
    let factorized = layers.iter().filter(|l| l.factorized).count();
    Ok(LowrankReport {
        options: opts.clone(),
        method,
        factorized,
        skipped: layers.len() - factorized,
        selected_params_before: once_per_weight(&layers, |l| l.params_before),
        selected_params_after: once_per_weight(&layers, |l| l.params_after),
        encoder_linear_params_before: encoder_linear_params(&t0),
        encoder_linear_params_after: encoder_linear_params(&t1),
        budget_weights_before: None,
        budget_weights_after: None,
        params_before: structure::parameter_counts(model, &t0).total,
        params_after: structure::parameter_counts(out, &t1).total,
        encoder_macs_before: structure::macs_per_sequence(&t0, opts.seq_len).0,
        encoder_macs_after: structure::macs_per_sequence(&t1, opts.seq_len).0,
        seq_len: opts.seq_len,
        seconds,
        calibration_seconds: 0.0,
        calibration_examples: None,
        calibration_tokens: None,
        layers,
    })
}

/// The sum of `f` over the rows, a weight several layers share (ALBERT) counted once, as the
/// model stores it (and its factors, which they share too).
fn once_per_weight(rows: &[LayerReport], f: impl Fn(&LayerReport) -> usize) -> usize {
    let mut seen = std::collections::HashSet::new();
    rows.iter().filter(|l| seen.insert(l.weight.as_str())).map(f).sum()
}

/// `--rank K` beyond a selected layer's full rank is an error naming that layer.
fn check_fixed_rank<'t>(targets: impl IntoIterator<Item = &'t Target>, rule: RankRule) -> Result<(), PassError> {
    if let RankRule::Fixed(k) = rule {
        if let Some(t) = targets.into_iter().find(|t| {
            t.linear.factor.is_none() && t.shared_with.is_none() && k > t.linear.in_features.min(t.linear.out_features)
        }) {
            return Err(PassError::Options(OptionError::new(
                "rank",
                format!(
                    "`rank` {k} is beyond {} ({}×{}, full rank {}): choose a smaller rank or narrow `apply_to`/`layers`",
                    t.name(),
                    t.linear.in_features,
                    t.linear.out_features,
                    t.linear.in_features.min(t.linear.out_features)
                ),
            )));
        }
    }
    Ok(())
}

/// Runs `f` on every item on as many threads as the machine has; results in item order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// One layer of the weight-only method: its report row and, unless it stays dense, its factors.
fn factor_one(
    model: &ModelProto,
    opts: &LowrankOptions,
    tg: &Target,
) -> Result<(LayerReport, Option<Replacement>), PassError> {
    let lin = &tg.linear;
    if let Some(f) = &lin.factor {
        return Ok((
            tg.kept(format!("already factorized (rank {})", f.rank), f.rank, 1.0),
            None,
        ));
    }
    if let Some(why) = &tg.shared_with {
        return Ok((tg.kept(why.clone(), 0, 1.0), None));
    }
    let (m, n) = (lin.in_features, lin.out_features);
    let mut w = weight_matrix(model, lin)?;
    if let Some(shrink) = opts.denoise {
        // The reference's layout is [out, in]: denoise Wᵀ and come back.
        let wt = w.transpose().to_owned();
        let d = denoise(&wt, shrink).map_err(|e| PassError::Internal(format!("{}: {e}", tg.name())))?;
        w = d.transpose().to_owned();
    }
    let (u, s, v) = svd(&w, &tg.name())?;
    let k = choose_rank(&s, opts.rank, opts.k_min, opts.k_max);
    let kept = energy_share(&s, k);
    if at_break_even(k, m, n) && !opts.force {
        let why = format!(
            "rank {k} is at or above break-even {:.1}: factors would not be smaller (force factorizes anyway)",
            break_even(m, n)
        );
        return Ok((tg.kept(why, k, kept).at_break_even(), None));
    }
    let a = u.subcols(0, k).to_owned();
    let b = Mat::from_fn(k, n, |r, c| s[r] * v[(c, r)]);
    Ok((tg.done(k, kept), Some(Replacement::new(tg, &a, &b)?)))
}

/// The reference's method: per selected layer, optional denoising, SVD, rank by the rule,
/// factors W ≈ (U_k)(Σ_k V_kᵀ) in [in, out] layout.
pub fn lowrank(model: &ModelProto, opts: &LowrankOptions) -> Result<(ModelProto, LowrankReport), PassError> {
    validate(opts)?;
    crate::passes::ensure_known_opsets(model)?;
    if opts.target_params.is_some() {
        return Err(PassError::Options(OptionError::new(
            "target_params",
            "`target_params` allocates ranks from calibration data: add `calib_data` TRAIN.tsv",
        )));
    }
    let start = Instant::now();
    let t = structure::discover(model)?;
    let targets = select(model, &t, opts)?;
    check_fixed_rank(&targets, opts.rank)?;
    let results = par_map(&targets, |tg| factor_one(model, opts, tg));
    let mut reps = Vec::new();
    let mut rows = Vec::new();
    for r in results {
        let (row, rep) = r?;
        rows.push(row);
        reps.extend(rep);
    }
    let out = factorize_graph(model, &reps)?;
    let method = match opts.denoise {
        Some(s) => format!("denoise ({}) + svd", s.name()),
        None => "svd".into(),
    };
    let report = finish(model, &out, opts, method, rows, start.elapsed().as_secs_f64())?;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer left dense with no rank chosen reads null in the JSON (the text's `-`), not 0.
    #[test]
    fn no_rank_is_null_in_the_json() {
        let mut l = LayerReport {
            name: "layer 4 ffn_up".into(),
            layer: Some(4),
            role: Role::Query,
            node: "n".into(),
            weight: "w".into(),
            in_features: 4,
            out_features: 8,
            full_rank: 4,
            rank: 0,
            break_even: break_even(4, 8),
            energy_kept: 1.0,
            params_before: 40,
            params_after: 40,
            factorized: false,
            skipped: Some("kept dense".into()),
            at_break_even: false,
        };
        assert!(serde_json::to_value(&l).unwrap()["rank"].is_null());
        l.rank = 3;
        assert_eq!(serde_json::to_value(&l).unwrap()["rank"], 3);
    }
}
