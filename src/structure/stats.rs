//! Parameter counts per part and multiply-accumulates per sequence.

use serde::Serialize;

use super::{Attention, EncoderLayer, Norm, Qkv, Transformer};
use crate::onnx::{tensor, GraphIndex, ModelProto};

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ParameterCounts {
    pub embeddings: usize,
    /// Per encoder layer: attention (Q, K, V, output, its LayerNorm; a per-head score bias table
    /// with the first layer reading it).
    pub attention: Vec<usize>,
    /// Per encoder layer: FFN (up, down, its LayerNorm).
    pub ffn: Vec<usize>,
    pub pooler: usize,
    pub classifier: usize,
    /// Everything else stored as a float initializer.
    pub other: usize,
    pub total: usize,
}

impl ParameterCounts {
    pub fn encoder(&self) -> usize {
        self.attention.iter().sum::<usize>() + self.ffn.iter().sum::<usize>()
    }
}

fn numel(ix: &GraphIndex, name: &Option<String>) -> usize {
    name.as_deref()
        .and_then(|n| ix.constant(n))
        .and_then(|c| tensor::numel(c.tensor()).ok())
        .unwrap_or(0)
}

fn norm_params(ix: &GraphIndex, n: &Norm) -> usize {
    numel(ix, &n.scale) + numel(ix, &n.bias) + numel(ix, &n.skip_bias)
}

fn attention_params(ix: &GraphIndex, a: &Attention) -> usize {
    let qkv = match &a.qkv {
        Qkv::Separate { q, k, v } => q.params() + k.params() + v.params(),
        Qkv::Packed { weight, bias, .. } => numel(ix, &Some(weight.clone())) + numel(ix, bias),
    };
    qkv + a.output.params()
}

/// Parameter counts (elements of float initializers) per part of the model.
pub fn parameter_counts(model: &ModelProto, t: &Transformer) -> ParameterCounts {
    let Some(graph) = model.graph.as_ref() else {
        return ParameterCounts::default();
    };
    let ix = GraphIndex::new(graph);
    let total: usize = graph
        .initializer
        .iter()
        .filter(|i| matches!(i.data_type(), 1 | 10 | 11 | 16))
        // A single value (rank 0, or [1] as ONNX Runtime's optimizer folds them) is an op's
        // constant — a scale, a mask's fill value, GELU's √2 — never a weight; a regression
        // head's one bias is counted by its classifier (`total` is at least what is attributed).
        .filter_map(|i| tensor::numel(i).ok())
        .filter(|&n| n > 1)
        .sum();
    let e = &t.embeddings;
    let embeddings = [&e.word, &e.position, &e.token_type]
        .iter()
        .filter_map(|t| t.as_ref())
        .map(|t| t.rows * t.dim)
        .sum::<usize>()
        + e.norm.as_ref().map_or(0, |n| norm_params(&ix, n))
        + e.project.as_ref().map_or(0, |p| p.params());
    // A per-head score bias table (often one for all layers) counts with the first layer
    // reading it.
    let mut tables = std::collections::HashSet::new();
    let attention: Vec<usize> = t
        .layers
        .iter()
        .map(|l: &EncoderLayer| {
            let biases: usize = l
                .attention
                .iter()
                .flat_map(|a| &a.head_biases)
                .filter(|b| tables.insert(b.table.clone()))
                .map(|b| numel(&ix, &Some(b.table.clone())))
                .sum();
            l.attention.as_ref().map_or(0, |a| attention_params(&ix, a))
                + biases
                + numel(&ix, &l.attention_bias)
                + norm_params(&ix, &l.attention_norm)
        })
        .collect();
    let ffn: Vec<usize> = t
        .layers
        .iter()
        .map(|l| {
            l.ffn.as_ref().map_or(0, |f| f.up.params() + f.down.params())
                + numel(&ix, &l.ffn_bias)
                + norm_params(&ix, &l.output_norm)
        })
        .collect();
    let pooler = t
        .head
        .as_ref()
        .and_then(|h| h.pooler.as_ref())
        .map_or(0, |p| p.params());
    let classifier = t.head.as_ref().map_or(0, |h| h.classifier.params());
    let known = embeddings + attention.iter().sum::<usize>() + ffn.iter().sum::<usize>() + pooler + classifier;
    ParameterCounts {
        embeddings,
        attention,
        ffn,
        pooler,
        classifier,
        other: total.saturating_sub(known),
        total: total.max(known),
    }
}

/// Multiply-accumulates of one encoder layer for one sequence of `seq` tokens: the four
/// projections, Q·Kᵀ and probabilities·V, and the FFN.
pub fn layer_macs(l: &EncoderLayer, seq: usize) -> u64 {
    let s = seq as u64;
    let attention = l.attention.as_ref().map_or(0, |a| {
        let all = a.all_heads() as u64;
        let hidden = a.output.out_features as u64;
        // Q, K, V and output projections (low-rank ones at their factors' cost); Q·Kᵀ and
        // probabilities·V.
        let qkv = match &a.qkv {
            Qkv::Separate { q, k, v } => q.macs_per_token() + k.macs_per_token() + v.macs_per_token(),
            Qkv::Packed { .. } => hidden * 3 * all,
        };
        s * qkv + s * a.output.macs_per_token() + 2 * s * s * all
    });
    let ffn = l
        .ffn
        .as_ref()
        .map_or(0, |f| s * (f.up.macs_per_token() + f.down.macs_per_token()));
    attention + ffn
}

/// Attention MACs of one head and FFN MACs of one neuron, per sequence of `seq` tokens (for
/// budgets).
pub fn unit_macs(hidden: usize, head_size: usize, seq: usize) -> (u64, u64) {
    let (s, h, d) = (seq as u64, hidden as u64, head_size as u64);
    (4 * s * h * d + 2 * s * s * d, 2 * s * h)
}

/// (encoder MACs, head MACs) per sequence of `seq` tokens. The head (pooler, classifier) runs on
/// the [CLS] vector only.
pub fn macs_per_sequence(t: &Transformer, seq: usize) -> (u64, u64) {
    let encoder = t.layers.iter().map(|l| layer_macs(l, seq)).sum();
    let head = t.head.as_ref().map_or(0, |h| {
        h.pooler.as_ref().map_or(0, |p| p.macs_per_token()) + h.classifier.macs_per_token()
    });
    (encoder, head)
}
