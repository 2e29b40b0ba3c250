//! Quantization: INT8 with calibrated static ranges (QDQ), INT8 with ranges found at run time
//! (dynamic), and float16.
//!
//! The MatMuls to quantize are found from the graph itself, not from structure discovery: every
//! `MatMul` whose second input is a 2-D float32 constant (after `Identity`) and whose first input
//! is computed. That covers pruned models and low-rank ones (MatMul→MatMul chains where both
//! factors are initializers). Weights are stored as int8 (symmetric, per output column or per
//! tensor); the embedding tables read by a `Gather` are stored int8 and dequantized after the
//! `Gather` (`DequantizeLinear`, or `Cast` + `Mul` with per-channel scales).
//!
//! - `static`: `QuantizeLinear → DequantizeLinear` on each quantized MatMul's activation, with
//!   scale and zero point from calibration ([`calibrate`]), and `DequantizeLinear` on the int8
//!   weight. ONNX Runtime fuses the pattern into integer kernels (`MatMulIntegerToFloat`).
//!   [`StaticForm::Ort`] writes that fused form directly, with the bias `Add`s folded in.
//! - `dynamic`: one `com.microsoft` `DynamicQuantizeMatMul` per MatMul (activation range found per
//!   call, u8 × s8 integer GEMM), the node ONNX Runtime itself fuses `quantize_dynamic`'s output
//!   into.
//!
//! In both int8 modes ONNX Runtime's fused `Attention` becomes `QAttention` ([`attention`]), its
//! input quantized at run time (dynamic) or at its calibrated range (static), and its fused
//! `EmbedLayerNormalization` becomes `QEmbedLayerNormalization` with uint8 tables ([`embed`]).
//! - `fp16`: see [`fp16`].
//!
//! Before either int8 rewrite, [`split`] (on by default) runs each layer's FFN (and in dynamic
//! mode its Q/K/V projections) on the first token apart from the others, so that token's outlier
//! activations get int8 ranges of their own.

mod attention;
pub mod attention_op;
pub mod calibrate;
mod embed;
pub mod fp16;
mod groups;
pub mod keys;
mod pack;
mod qdq;
mod query;
pub mod split;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::{Calibrator, PassError};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{ModelProto, TensorProto};
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::options::{Named, OptionError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// INT8 with activation ranges calibrated on data (QDQ pairs); needs calibration data.
    Static,
    /// INT8 with activation ranges found at run time (DynamicQuantizeMatMul).
    Dynamic,
    /// float16 weights and activations, float32 where numerics need it.
    Fp16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibMethod {
    /// The smallest and largest value seen.
    Minmax,
    /// Clip the outer (100 − p)% of values, half on each side (`--percentile p`).
    Percentile,
    /// The clipping threshold that minimizes the KL divergence between the histogram of |x| and
    /// its 128-level quantization (TensorRT's method).
    Entropy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationType {
    /// uint8, asymmetric (zero point from the range): the type ONNX Runtime's VNNI kernels prefer.
    U8,
    /// int8, symmetric (zero point 0).
    S8,
}

/// How static mode writes its int8 MatMuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StaticForm {
    /// Standard ONNX `QuantizeLinear → DequantizeLinear` pairs before each float MatMul: portable
    /// to any QDQ-aware runtime; ONNX Runtime fuses them into integer kernels itself.
    Qdq,
    /// ONNX Runtime's fused form written directly: `QuantizeLinear` with the calibrated scale, then
    /// `MatMulIntegerToFloat` with the bias `Add` folded in (as dynamic mode does). Faster on ONNX
    /// Runtime's CPU provider: the fusion it makes from QDQ leaves each bias as a separate `Add`
    /// (the FFN one as a `BiasGelu`, 1.6x slower than `Gelu`).
    Ort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
    /// int8, symmetric in [−127, 127].
    S8,
    /// The same values stored as uint8 + 128 (zero point 128): ONNX Runtime then runs u8 × u8
    /// kernels, exact on every CPU, where u8 × s8 without VNNI (AVX2) adds pairs of products in 16
    /// bits and saturates; slower there.
    U8,
}

/// fp16 mode: what stays float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fp16Float32 {
    /// LayerNorm and softmax (their statistics) and the logits: exact enough on any provider.
    Norms,
    /// Only the nodes that produce the graph's outputs (and a decomposed LayerNorm's reductions,
    /// and ONNX Runtime's fused ops that have no float16 CPU kernel): LayerNorm and softmax run
    /// in float16, whose ONNX Runtime kernels keep their sums in float32; two `Cast`s fewer for
    /// each.
    Outputs,
}

impl Named for Fp16Float32 {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            Fp16Float32::Norms,
            "norms",
            "LayerNorm, softmax and the logits stay float32 (exact enough anywhere)",
        ),
        (
            Fp16Float32::Outputs,
            "outputs",
            "LayerNorm and softmax in float16 too (their kernels sum in float32): fewer Casts",
        ),
    ];
}

impl Named for Mode {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            Mode::Static,
            "static",
            "int8 with activation ranges calibrated on data (needs calibration data)",
        ),
        (
            Mode::Dynamic,
            "dynamic",
            "int8 with activation ranges found at run time",
        ),
        (
            Mode::Fp16,
            "fp16",
            "float16 weights and activations, float32 where numerics need it",
        ),
    ];
}

impl Named for CalibMethod {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (CalibMethod::Minmax, "minmax", "the smallest and largest value seen"),
        (
            CalibMethod::Percentile,
            "percentile",
            "clip the outer (100 − p)% of values, half on each side",
        ),
        (
            CalibMethod::Entropy,
            "entropy",
            "the clipping threshold that minimizes the KL divergence of the 128-level histogram (TensorRT's method)",
        ),
    ];
}

impl Named for ActivationType {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            ActivationType::U8,
            "u8",
            "uint8, asymmetric (zero point from the range)",
        ),
        (ActivationType::S8, "s8", "int8, symmetric (zero point 0)"),
    ];
}

impl Named for StaticForm {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            StaticForm::Qdq,
            "qdq",
            "standard QuantizeLinear/DequantizeLinear pairs (portable)",
        ),
        (
            StaticForm::Ort,
            "ort",
            "ONNX Runtime's MatMulIntegerToFloat with biases folded (faster there)",
        ),
    ];
}

impl Named for WeightType {
    const ALL: &'static [(Self, &'static str, &'static str)] =
        &[
            (WeightType::S8, "s8", "int8, symmetric in [−127, 127]"),
            (
                WeightType::U8,
                "u8",
                "the same values as uint8 + 128: exact u8×u8 kernels on CPUs without VNNI, where u8×s8 saturates (slower there)",
            ),
        ];
}

#[derive(Debug, Clone, Serialize)]
pub struct QuantizeOptions {
    pub mode: Mode,
    /// One scale per output column of each weight (and per hidden channel of embedding tables);
    /// false: one scale per tensor.
    pub per_channel: bool,
    pub weight_type: WeightType,
    pub activation_type: ActivationType,
    pub calib_method: CalibMethod,
    /// For `percentile`: the share of values kept, in (0, 100].
    pub percentile: f64,
    /// Node (or weight) name patterns kept in float: `*` and `?` wildcards, otherwise a substring.
    pub exclude: Vec<String>,
    /// Store embedding tables as int8 (int8 modes) or float16 (fp16).
    pub embeddings: bool,
    /// Static mode's graph form.
    pub static_form: StaticForm,
    /// int8 modes: compute the first token's FFN (dynamic: and Q/K/V projections) apart from the
    /// other tokens' (see [`split`]), so its outlier activations do not set the other tokens' int8
    /// ranges.
    pub split_first_token: bool,
    /// int8 modes, with the split: the encoder runs on the real tokens only, by `attention_mask`:
    /// packed rows where the graph allows (see [`pack`]), else the other tokens' half of each
    /// split block (see [`split`]).
    pub unpad: bool,
    /// ONNX Runtime's int8 forms (dynamic, static `ort`, with the split): each attention core as
    /// one ONNX `Attention` op, the opset raised to 23 (see [`attention_op`]); false: the cores
    /// stay separate ops in the model's opset, for runtimes without opset 23.
    #[serde(skip_serializing_if = "is_true")]
    pub attention_op: bool,
    /// fp16: what stays float32.
    pub fp16_float32: Fp16Float32,
}

fn is_true(v: &bool) -> bool {
    *v
}

impl QuantizeOptions {
    /// Whether the int8 graph is written in ONNX Runtime's forms of this tool's methods (dynamic,
    /// or static `ort`, with the first-token split): the forms whose attention cores run as one
    /// op (`attention_op`) or read their keys transposed.
    pub fn ort_forms(&self) -> bool {
        self.split_first_token
            && (self.mode == Mode::Dynamic || (self.mode == Mode::Static && self.static_form == StaticForm::Ort))
    }
}

/// Whether the first-token split is on when neither asked for nor refused: in the int8 modes with
/// per-channel weights. Per-tensor weights reproduce ONNX Runtime's `quantize_dynamic`, which does
/// not split; fp16 has no int8 range to protect.
pub fn split_by_default(mode: Mode, per_channel: bool) -> bool {
    mode != Mode::Fp16 && per_channel
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            mode: Mode::Dynamic,
            per_channel: true,
            weight_type: WeightType::S8,
            activation_type: ActivationType::U8,
            calib_method: CalibMethod::Minmax,
            percentile: 99.999,
            exclude: vec![],
            embeddings: true,
            static_form: StaticForm::Qdq,
            split_first_token: true,
            unpad: false,
            attention_op: true,
            fp16_float32: Fp16Float32::Norms,
        }
    }
}

/// One quantized MatMul.
#[derive(Debug, Clone, Serialize)]
pub struct MatMulReport {
    pub node: String,
    /// The node's operator: `MatMul`, or `Attention` (ONNX Runtime's fused attention, whose packed
    /// Q/K/V weight is quantized).
    pub op: String,
    pub weight: String,
    pub in_features: usize,
    pub out_features: usize,
    /// Largest |dequantized − original| over the weight, and the largest scale/2 (its bound).
    pub max_weight_error: f32,
    pub max_half_scale: f32,
}

/// The calibrated range of one activation (static mode).
#[derive(Debug, Clone, Serialize)]
pub struct ActivationReport {
    pub value: String,
    /// The MatMul nodes that read it.
    pub nodes: Vec<String>,
    pub min: f32,
    pub max: f32,
    pub scale: f32,
    pub zero_point: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingReport {
    pub table: String,
    pub rows: usize,
    pub cols: usize,
    /// How it is stored: `int8` (read by a `Gather`), `uint8` (fused `QEmbedLayerNormalization`).
    pub stored: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    /// In the JSON, as the history records them: those that apply to the mode.
    #[serde(serialize_with = "options_as_recorded")]
    pub options: QuantizeOptions,
    pub matmuls: Vec<MatMulReport>,
    pub activations: Vec<ActivationReport>,
    pub embeddings: Vec<EmbeddingReport>,
    /// MatMuls with a constant weight left in float because --exclude matched them.
    pub excluded: Vec<String>,
    /// Values converted to or kept in float32 (fp16 mode): node names.
    pub kept_float32: Vec<String>,
    /// Encoder layers whose FFN runs the first token apart (`split_first_token`).
    pub first_token_split_layers: Vec<usize>,
    /// Encoder layers whose split blocks run the other tokens on the real tokens only (`unpad`).
    pub unpadded_layers: Vec<usize>,
    /// `unpad`: the whole residual stream runs on the real tokens as packed rows, padded again
    /// only for each attention's scores (every layer is then in `unpadded_layers`).
    pub tokens_packed: bool,
    /// Encoder layers whose Q/K/V projections run the first token apart.
    pub first_token_split_qkv_layers: Vec<usize>,
    /// The last layer, when its FFN runs on the first token only (the model reads nothing else
    /// of that layer's output).
    pub first_token_only_ffn_layer: Option<usize>,
    /// The last layer, when its attention runs for the first token's query only too (its keys
    /// and values still read every token).
    pub first_token_only_attention_layer: Option<usize>,
    /// Attention score products that read their keys transposed (`FusedMatMul` with `transB`)
    /// instead of through a [0,2,3,1] transpose (those not in one `Attention` op).
    pub keys_read_transposed: usize,
    /// Attention cores (head transposes, score product, scale, mask, softmax, weighted sum) run
    /// as one ONNX `Attention` op (opset 23).
    pub attention_ops: usize,
    /// Of those, the ones run in two length groups per batch (packed tokens, `groups.rs`).
    pub attention_length_groups: usize,
    /// Where a fallback was taken (a constant activation, an all-zero weight column, ...).
    pub warnings: Vec<String>,
    /// Bytes of tensor data (initializers and Constant nodes) before and after.
    pub weight_bytes_before: usize,
    pub weight_bytes_after: usize,
    /// Seconds of the pass, its calibration runs included (as prune's and lowrank's), and of
    /// the calibration runs.
    pub seconds: f64,
    pub calibration_seconds: f64,
    pub calibration_examples: usize,
    pub calibration_tokens: usize,
}

/// The options as a history entry records them: only those that apply to the mode (dynamic has
/// no calibration method or static form; fp16 no int8 settings; `percentile` only with the
/// percentile method).
pub fn history_options(opts: &QuantizeOptions) -> Result<serde_json::Value, PassError> {
    let mut v = serde_json::to_value(opts).map_err(|e| PassError::Internal(format!("options as JSON: {e}")))?;
    let drop: &[&str] = match opts.mode {
        Mode::Dynamic => &[
            "activation_type",
            "calib_method",
            "percentile",
            "static_form",
            "fp16_float32",
        ],
        Mode::Static if opts.calib_method != CalibMethod::Percentile => &["percentile", "fp16_float32"],
        Mode::Static => &["fp16_float32"],
        Mode::Fp16 => &[
            "per_channel",
            "weight_type",
            "activation_type",
            "calib_method",
            "percentile",
            "static_form",
            "split_first_token",
            "unpad",
        ],
    };
    if let Some(o) = v.as_object_mut() {
        for k in drop {
            o.remove(*k);
        }
    }
    Ok(v)
}

fn options_as_recorded<S: serde::Serializer>(opts: &QuantizeOptions, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    history_options(opts).map_err(serde::ser::Error::custom)?.serialize(s)
}

/// Checks the options on their own (before any file is read).
pub fn validate(opts: &QuantizeOptions) -> Result<(), PassError> {
    if !(opts.percentile > 0.0 && opts.percentile <= 100.0) {
        return Err(PassError::Options(OptionError::new(
            "percentile",
            format!(
                "`percentile` {}: the share of values kept must be in (0, 100]",
                opts.percentile
            ),
        )));
    }
    if opts.weight_type == WeightType::U8 && opts.mode == Mode::Static && opts.activation_type == ActivationType::S8 {
        return Err(PassError::Options(OptionError::new(
            "weight_type",
            "`weight_type` u8 needs u8 activations: drop `activation_type` s8 (or keep s8 weights)",
        )));
    }
    if opts.unpad && (opts.mode == Mode::Fp16 || !opts.split_first_token) {
        return Err(PassError::Options(OptionError::new(
            "unpad",
            "`unpad` runs the first-token split's other-tokens half on the real tokens: it needs an int8 mode with the split on: set `split_first_token`",
        )));
    }
    // Off, it changes nothing elsewhere: refused there rather than recorded as a setting.
    if !opts.attention_op && !opts.ort_forms() {
        return Err(PassError::Options(OptionError::new(
            "attention_op",
            "`attention_op` off: no Attention op would be written anyway; only ONNX Runtime's int8 forms (dynamic, or static in the ort form) with `split_first_token` write one",
        )));
    }
    for p in &opts.exclude {
        if p.is_empty() {
            return Err(PassError::Options(OptionError::new(
                "exclude",
                "`exclude`: empty pattern",
            )));
        }
    }
    Ok(())
}

/// Refuses models that are quantized (or float16) already: quantizing twice would compound the
/// error and the rewrites below assume float32 weights.
pub fn ensure_not_quantized(model: &ModelProto) -> Result<(), PassError> {
    let g = crate::passes::graph(model)?;
    match crate::structure::quantized_evidence(g) {
        Some(why) => Err(PassError::Unsupported(format!(
            "the model is quantized already ({why}); quantize the float32 model instead"
        ))),
        None => Ok(()),
    }
}

/// A MatMul with a constant float32 weight: what the int8 modes rewrite.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub node: usize,
    pub name: String,
    /// The computed input (the activation).
    pub input: String,
    /// The name under which the weight is stored (initializer or Constant output).
    pub weight: String,
    pub rows: usize,
    pub cols: usize,
}

/// `*`/`?` glob when the pattern has a wildcard, else a substring test.
///
/// The glob matches the whole name: `*` any run of characters (also none), `?` exactly one
/// character, anything else itself. Matching takes at most (name length × pattern length) steps,
/// whatever the pattern: `a*a*a*…b` against a long run of `a`s answers at once.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return name.contains(pattern);
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    // Two pointers; on a mismatch, the last `*` seen takes one more character and matching
    // resumes after it. Earlier stars never need to take more: the last one can absorb it.
    let (mut pi, mut si) = (0, 0);
    // (pattern index just after the last `*`, name index where its match ends)
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                pi += 1;
                star = Some((pi, si));
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((after, end)) => {
                    pi = after;
                    si = end + 1;
                    star = Some((after, end + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The MatMuls to quantize and those --exclude keeps in float (names). A pattern is matched
/// against a node's name, its weight's, and (`origin`) the name of the node it is a copy of.
pub(crate) fn find_targets(
    ix: &GraphIndex,
    exclude: &[String],
    origin: Option<&HashMap<String, String>>,
) -> Result<(Vec<Target>, Vec<String>), PassError> {
    let mut targets = vec![];
    let mut excluded = vec![];
    let mut used_patterns = vec![false; exclude.len()];
    // Values computed from the graph's inputs (nodes are in topological order): a MatMul of
    // values computed from constants alone (DeBERTa's projected relative position embeddings)
    // has no activation to quantize.
    let mut live: HashSet<&str> = ix.graph.input.iter().map(|v| v.name()).collect();
    for n in &ix.graph.node {
        if n.input.iter().any(|v| live.contains(v.as_str())) {
            live.extend(n.output.iter().map(String::as_str));
        }
    }
    for (i, n) in ix.graph.node.iter().enumerate() {
        if n.op_type() != "MatMul" || !n.domain().is_empty() || n.input.len() != 2 {
            continue;
        }
        if ix.constant(&n.input[0]).is_some() || !live.contains(n.input[0].as_str()) {
            continue;
        }
        let Some(c) = ix.constant(&n.input[1]) else { continue };
        let t = c.tensor();
        if t.data_type() != DataType::Float as i32 || t.dims.len() != 2 || t.dims.iter().any(|&d| d <= 0) {
            continue;
        }
        let weight = ix.constant_name(&n.input[1]).unwrap_or_else(|| n.input[1].clone());
        let label = if n.name().is_empty() {
            format!("#{i}")
        } else {
            n.name().to_string()
        };
        let mut hit = false;
        for (k, p) in exclude.iter().enumerate() {
            if pattern_matches(p, n.name())
                || pattern_matches(p, &weight)
                || origin
                    .and_then(|o| o.get(n.name()))
                    .is_some_and(|o| pattern_matches(p, o))
            {
                used_patterns[k] = true;
                hit = true;
            }
        }
        if hit {
            excluded.push(label);
            continue;
        }
        targets.push(Target {
            node: i,
            name: label,
            input: n.input[0].clone(),
            weight,
            rows: t.dims[0] as usize,
            cols: t.dims[1] as usize,
        });
    }
    if let Some(k) = used_patterns.iter().position(|u| !u) {
        let gemms: Vec<&str> = ix
            .graph
            .node
            .iter()
            .filter(|n| n.op_type() == "Gemm")
            .filter(|n| {
                pattern_matches(&exclude[k], n.name())
                    || n.input.get(1).is_some_and(|w| pattern_matches(&exclude[k], w))
            })
            .map(|n| n.name())
            .collect();
        let pattern = &exclude[k];
        let why = if gemms.is_empty() {
            // A pattern with a wildcard matches whole names: 'layer.5/*' no name that starts
            // '/bert/encoder/layer.5/'.
            let example = ix.graph.node.iter().find(|n| n.op_type() == "MatMul").map(|n| n.name());
            match example {
                Some(name) if pattern.contains(['*', '?']) && !pattern.starts_with('*') => format!(
                    "; a pattern with * or ? matches whole names (such as '{name}'): '*{pattern}' matches names that contain it"
                ),
                _ => String::new(),
            }
        } else {
            format!(
                "; it matches only Gemm nodes ({}), which int8 modes keep in float32 anyway (the pooler and \
                 classifier): drop the pattern",
                gemms.join(", ")
            )
        };
        return Err(PassError::Options(OptionError::new(
            "exclude",
            format!(
                "`exclude` '{}' matches no MatMul with a constant weight (by node or weight name){why}",
                exclude[k]
            ),
        )));
    }
    Ok((targets, excluded))
}

/// Symmetric int8 quantization of a row-major [rows, cols] weight: per column (`per_channel`)
/// or per tensor. Returns (int8 values, scales, fallback columns). A column (or tensor) of zeros
/// gets scale 1, so its values quantize to 0 exactly and no scale is ever 0.
pub fn quantize_weight(w: &[f32], rows: usize, cols: usize, per_channel: bool) -> (Vec<i8>, Vec<f32>, usize) {
    let mut amax = vec![0f32; if per_channel { cols } else { 1 }];
    for r in 0..rows {
        for c in 0..cols {
            let a = &mut amax[if per_channel { c } else { 0 }];
            *a = a.max(w[r * cols + c].abs());
        }
    }
    let mut zero = 0;
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| {
            let s = a / 127.0;
            if s > 0.0 && s.is_finite() && s.is_normal() {
                s
            } else {
                zero += 1;
                1.0
            }
        })
        .collect();
    let mut q = vec![0i8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[if per_channel { c } else { 0 }];
            q[r * cols + c] = (w[r * cols + c] / s).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, scales, zero)
}

/// The initializers of one int8 weight: values, scales and zero points.
pub(super) struct QuantizedWeight {
    pub q: String,
    pub scale: String,
    pub zero_point: String,
}

/// `model` with `patch` applied (unused initializers removed), or unchanged when the rewrite
/// that built the patch replaced nothing.
pub(super) fn patched(model: &ModelProto, mut patch: Patch, rewritten: usize) -> Result<ModelProto, PassError> {
    let mut m = model.clone();
    if rewritten == 0 {
        return Ok(m);
    }
    let g = crate::passes::graph_mut(&mut m)?;
    patch.remove_unused();
    patch.apply(g)?;
    Ok(m)
}

/// Quantizes the [rows, cols] float weight `w` (named `weight`, read by `node`, an `op`), adds its
/// int8 values (stored as `opts.weight_type` says), scales and zero points to `patch` under fresh
/// names, and reports it: its largest rounding error against half its largest scale, and a
/// warning for all-zero columns.
pub(super) fn add_quantized_weight(
    patch: &mut Patch,
    weight: &str,
    (node, op): (&str, &str),
    w: &[f32],
    (rows, cols): (usize, usize),
    opts: &QuantizeOptions,
    report: &mut QuantizeReport,
) -> QuantizedWeight {
    let per_channel = opts.per_channel;
    let (q, scales, zero) = quantize_weight(w, rows, cols, per_channel);
    if zero > 0 {
        report.warnings.push(format!(
            "weight '{weight}' of '{node}': {zero} all-zero column(s) got scale 1 (stored as exact zeros)"
        ));
    }
    let (mut max_err, mut max_half) = (0f32, 0f32);
    for (k, (&qv, &wv)) in q.iter().zip(w).enumerate() {
        let s = scales[if per_channel { k % cols } else { 0 }];
        max_err = max_err.max((qv as f32 * s - wv).abs());
        max_half = max_half.max(s / 2.0);
    }
    report.matmuls.push(MatMulReport {
        node: node.to_string(),
        op: op.to_string(),
        weight: weight.to_string(),
        in_features: rows,
        out_features: cols,
        max_weight_error: max_err,
        max_half_scale: max_half,
    });
    let names = QuantizedWeight {
        q: patch.fresh_name(&format!("{weight}_quantized")),
        scale: patch.fresh_name(&format!("{weight}_scale")),
        zero_point: patch.fresh_name(&format!("{weight}_zero_point")),
    };
    let sd: Vec<usize> = if per_channel { vec![cols] } else { vec![] };
    match opts.weight_type {
        WeightType::S8 => {
            patch.add_initializer(from_i8(&names.q, &[rows, cols], &q));
            patch.add_initializer(from_i8(&names.zero_point, &sd, &vec![0; scales.len()]));
        }
        WeightType::U8 => {
            let shifted: Vec<u8> = q.iter().map(|&v| (v as i16 + 128) as u8).collect();
            patch.add_initializer(from_u8(&names.q, &[rows, cols], &shifted));
            patch.add_initializer(from_u8(&names.zero_point, &sd, &vec![128; scales.len()]));
        }
    }
    patch.add_initializer(tensor::from_f32(&names.scale, &sd, &scales));
    names
}

pub(crate) fn from_i8(name: &str, dims: &[usize], v: &[i8]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(v.iter().map(|&x| x as u8).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

pub(crate) fn from_u8(name: &str, dims: &[usize], v: &[u8]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(v.to_vec().into()),
        ..Default::default()
    }
}

/// Bytes of tensor data in initializers and Constant nodes.
pub(crate) fn weight_bytes(model: &ModelProto) -> usize {
    let Some(g) = model.graph.as_ref() else { return 0 };
    g.initializer.iter().map(tensor::payload_bytes).sum::<usize>()
        + g.node
            .iter()
            .flat_map(|n| n.attribute.iter())
            .filter_map(|a| a.t.as_ref())
            .map(tensor::payload_bytes)
            .sum::<usize>()
}

/// Adds an opset import for `domain` when the model has none.
pub(crate) fn ensure_opset(model: &mut ModelProto, domain: &str, version: i64) {
    if !model.opset_import.iter().any(|o| o.domain() == domain) {
        model.opset_import.push(crate::onnx::proto::OperatorSetIdProto {
            domain: Some(domain.into()),
            version: Some(version),
        });
    }
}

pub(crate) fn default_opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .and_then(|o| o.version)
        .unwrap_or(0)
}

/// Every scale the pass wrote must be finite and positive: checked once more at the end.
pub(crate) fn check_scales(model: &ModelProto) -> Result<(), PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    for n in &g.node {
        let slot = match n.op_type() {
            "QuantizeLinear" | "DequantizeLinear" => 1,
            "DynamicQuantizeMatMul" => 2,
            _ => continue,
        };
        let Some(name) = n.input.get(slot) else { continue };
        let s = ix
            .const_f32(name)
            .ok_or_else(|| PassError::Internal(format!("node '{}': scale '{name}' is not a constant", n.name())))?;
        if let Some(bad) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(PassError::Internal(format!(
                "node '{}': scale '{name}' holds {bad}, not a finite positive number",
                n.name()
            )));
        }
    }
    Ok(())
}

/// Quantizes `model`. Static mode needs `calibrator`; the others ignore it.
pub fn quantize(
    model: &ModelProto,
    opts: &QuantizeOptions,
    calibrator: Option<&mut dyn Calibrator>,
) -> Result<(ModelProto, QuantizeReport), PassError> {
    quantize_selected(model, opts, calibrator, &|_| true)
}

/// The names of the MatMuls the int8 modes would quantize (before any `exclude`), in graph order.
pub fn quantizable_matmuls(model: &ModelProto) -> Result<Vec<String>, PassError> {
    let g = crate::passes::graph(model)?;
    Ok(find_targets(&GraphIndex::new(g), &[], None)?
        .0
        .into_iter()
        .map(|t| t.name)
        .collect())
}

/// [`quantize`] in the int8 modes only on the MatMuls whose name (as [`quantizable_matmuls`]
/// gives it) `select` accepts; the others stay float as if excluded (not listed in the report).
/// Used to measure one MatMul's quantization error at a time, with `split_first_token` off (the
/// split renames the nodes it copies).
pub fn quantize_selected(
    model: &ModelProto,
    opts: &QuantizeOptions,
    calibrator: Option<&mut dyn Calibrator>,
    select: &dyn Fn(&str) -> bool,
) -> Result<(ModelProto, QuantizeReport), PassError> {
    validate(opts)?;
    crate::passes::ensure_known_opsets(model)?;
    ensure_not_quantized(model)?;
    let start = Instant::now();
    let mut report = QuantizeReport {
        options: opts.clone(),
        matmuls: vec![],
        activations: vec![],
        embeddings: vec![],
        excluded: vec![],
        kept_float32: vec![],
        first_token_split_layers: vec![],
        unpadded_layers: vec![],
        tokens_packed: false,
        first_token_split_qkv_layers: vec![],
        first_token_only_ffn_layer: None,
        first_token_only_attention_layer: None,
        keys_read_transposed: 0,
        attention_ops: 0,
        attention_length_groups: 0,
        warnings: vec![],
        weight_bytes_before: weight_bytes(model),
        weight_bytes_after: 0,
        seconds: 0.0,
        calibration_seconds: 0.0,
        calibration_examples: 0,
        calibration_tokens: 0,
    };
    let mut packing: Option<pack::Plan> = None;
    let out = match opts.mode {
        Mode::Fp16 => fp16::convert(model, opts, &mut report)?,
        Mode::Dynamic | Mode::Static => {
            let split = if opts.split_first_token {
                // Q/K/V too in dynamic mode (MRPC, batch 32: 11 → 6 disagreements with FP32);
                // static calibration gained nothing from it (seeds 0–5: 5–7 disagreements
                // against 3–6) and lost 7% of its throughput (bench/RESULTS.md).
                let qkv = opts.mode == Mode::Dynamic;
                // `unpad`: the whole token stream packed where the graph allows (tried on the
                // float split graph here, applied to the quantized one below), else the split
                // blocks alone.
                let s = split::split_first_token(model, qkv, false)?;
                let s = if opts.unpad {
                    match pack_plan(model, &s) {
                        Ok(plan) => {
                            packing = Some(plan);
                            s
                        }
                        Err(why) => {
                            report
                                .warnings
                                .push(format!("tokens not packed: {why}; the split blocks alone run unpadded"));
                            split::split_first_token(model, qkv, true)?
                        }
                    }
                } else {
                    s
                };
                report
                    .warnings
                    .extend(s.skipped.iter().map(|w| format!("first token not split: {w}")));
                report.warnings.extend(s.unpad_skipped.iter().cloned());
                report.first_token_split_layers = s.layers.clone();
                report.first_token_split_qkv_layers = s.qkv_layers.clone();
                report.unpadded_layers = s.unpadded_layers.clone();
                report.first_token_only_ffn_layer = s.first_token_only;
                report.first_token_only_attention_layer = s.first_token_attention;
                Some(s)
            } else {
                None
            };
            let work = split.as_ref().map_or(model, |s| &s.model);
            let g = crate::passes::graph(work)?;
            let ix = GraphIndex::new(g);
            let (mut targets, excluded) = find_targets(&ix, &opts.exclude, split.as_ref().map(|s| &s.origin))?;
            if targets.is_empty() && !excluded.is_empty() {
                return Err(PassError::Options(OptionError::new(
                    "exclude",
                    format!(
                        "`exclude` keeps every MatMul with a constant weight in float ({} of them): nothing is left to quantize; narrow the pattern",
                        excluded.len()
                    ),
                )));
            }
            targets.retain(|t| select(&t.name));
            report.excluded = excluded;
            if targets.is_empty() {
                return Err(PassError::Unsupported(
                    "no MatMul with a constant 2-D float32 weight to quantize".into(),
                ));
            }
            let ranges = if opts.mode == Mode::Static {
                let calib = calibrator.ok_or_else(|| {
                    PassError::Options(OptionError::new(
                        "mode",
                        "`mode` static needs calibration data: add `calib_data` TRAIN.tsv",
                    ))
                })?;
                // The MatMuls' inputs and the fused attentions' (which become QAttention).
                let values: Vec<String> = {
                    let mut seen = HashSet::new();
                    targets
                        .iter()
                        .map(|t| t.input.clone())
                        .chain(attention::inputs(work, opts, select))
                        .filter(|v| seen.insert(v.clone()))
                        .collect()
                };
                // Measured on the input model: a value of a split FFN is a slice of one there.
                let probes: Vec<calibrate::Probe> = values
                    .iter()
                    .map(|v| {
                        split
                            .as_ref()
                            .and_then(|s| s.probes.get(v))
                            .cloned()
                            .unwrap_or(calibrate::Probe {
                                value: v.clone(),
                                tokens: calibrate::Tokens::All,
                            })
                    })
                    .collect();
                let before = calib.seconds();
                let r = calibrate::ranges(model, calib, &probes, opts.calib_method, opts.percentile)?;
                report.calibration_seconds = calib.seconds() - before;
                report.calibration_examples = calib.examples();
                report.calibration_tokens = calib.tokens();
                Some(values.into_iter().zip(r).collect::<HashMap<_, _>>())
            } else {
                None
            };
            let out = qdq::rewrite(work, opts, &targets, ranges.as_ref(), &mut report)?;
            let out = attention::quantize_fused(&out, opts, select, ranges.as_ref(), &mut report)?;
            let out = embed::quantize_fused(&out, opts, select, &mut report)?;
            let mut packed_index = None;
            let mut out = match packing.as_ref().map(|plan| (plan.layers(), pack::pack(&out, plan))) {
                Some((layers, Ok((packed, index)))) => {
                    report.tokens_packed = true;
                    report.unpadded_layers = (0..layers).collect();
                    packed_index = Some(index);
                    packed
                }
                Some((_, Err(why))) => {
                    report.warnings.push(format!(
                        "tokens not packed in the quantized graph: {why}; nothing unpadded"
                    ));
                    out
                }
                None => out,
            };
            // QDQ MatMuls on token rows kept from ONNX Runtime's float Gemm fusion (none in its
            // own forms, which write the integer kernels themselves).
            if !report.unpadded_layers.is_empty() {
                qdq::bias_sums(&mut out, report.tokens_packed)?;
            }
            // ONNX Runtime's forms of this tool's methods (the reference's stay as they wrote):
            // each attention core as one op where it can be, the keys of the rest read
            // transposed.
            if opts.ort_forms() {
                let out = if opts.attention_op {
                    let (out, n, why) = attention_op::one_op_attention(&out, &attention_op::heads_by_softmax(model))?;
                    report.attention_ops = n;
                    if let Some(why) = why {
                        report.warnings.push(format!(
                            "attention cores kept as separate ops (no one Attention op): {why}"
                        ));
                    }
                    // Packed, the ops reading the padded layout run in two length groups.
                    match &packed_index {
                        Some(index) if n > 0 => {
                            let (out, grouped) = groups::two_length_groups(&out, index)?;
                            report.attention_length_groups = grouped;
                            out
                        }
                        _ => out,
                    }
                } else {
                    out
                };
                let (out, n) = keys::read_keys_transposed(&out)?;
                report.keys_read_transposed = n;
                out
            } else {
                out
            }
        }
    };
    if opts.mode != Mode::Fp16 {
        check_scales(&out)?;
    }
    report.weight_bytes_after = weight_bytes(&out);
    report.seconds = start.elapsed().as_secs_f64();
    Ok((out, report))
}

/// The packing plan for `model` if its float split graph (`split`) packs (`pack.rs`), or why not.
fn pack_plan(model: &ModelProto, split: &split::Split) -> Result<pack::Plan, String> {
    let t = crate::structure::discover(model).map_err(|e| format!("no transformer found ({e})"))?;
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    let plan = pack::Plan::new(&t, &GraphIndex::new(g), split.first_token_attention)?;
    pack::pack(&split.model, &plan)?;
    Ok(plan)
}
