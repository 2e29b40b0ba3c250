//! Parameter counts per part and multiply-accumulates per sequence.

use serde::Serialize;

use std::collections::HashSet;

use super::{Attention, EncoderLayer, Ffn, Linear, Norm, Qkv, Transformer};
use crate::onnx::{tensor, GraphIndex, ModelProto};

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ParameterCounts {
    pub embeddings: usize,
    /// Per encoder layer: attention (Q, K, V, output, its LayerNorm; a per-head score bias table
    /// or the weights of other score terms, with the first layer reading them).
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

/// Counts initializer elements by name, each initializer once: a weight that several layers
/// share (ALBERT's, a relative position bias table) counts with the first part reading it.
struct Counter<'g> {
    ix: GraphIndex<'g>,
    seen: HashSet<String>,
}

impl Counter<'_> {
    fn named(&mut self, name: Option<&str>) -> usize {
        let Some(name) = name else { return 0 };
        let Some(c) = self.ix.constant(name) else { return 0 };
        if !self.seen.insert(self.ix.resolve(name).to_string()) {
            return 0;
        }
        tensor::numel(c.tensor()).unwrap_or(0)
    }

    fn linear(&mut self, l: &Linear) -> usize {
        self.named(Some(&l.weight))
            + self.named(l.factor.as_ref().map(|f| f.weight.as_str()))
            + self.named(l.bias.as_deref())
    }

    fn norm(&mut self, n: &Norm) -> usize {
        self.named(n.scale.as_deref()) + self.named(n.bias.as_deref()) + self.named(n.skip_bias.as_deref())
    }

    fn attention(&mut self, a: &Attention) -> usize {
        let qkv = match &a.qkv {
            Qkv::Separate { q, k, v } => self.linear(q) + self.linear(k) + self.linear(v),
            Qkv::Stacked { qkv } => self.linear(qkv),
            Qkv::Packed { weight, bias, .. } => self.named(Some(weight)) + self.named(bias.as_deref()),
        };
        let tables: usize = a.head_biases.iter().map(|b| self.named(Some(&b.table))).sum();
        let terms: usize = a.score_terms.iter().map(|w| self.named(Some(w))).sum();
        qkv + tables + terms + self.linear(&a.output)
    }
}

/// Parameter counts (elements of float initializers) per part of the model; an initializer read
/// by several parts counts once, with the first.
pub fn parameter_counts(model: &ModelProto, t: &Transformer) -> ParameterCounts {
    let Some(graph) = model.graph.as_ref() else {
        return ParameterCounts::default();
    };
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
    let mut c = Counter {
        ix: GraphIndex::new(graph),
        seen: HashSet::new(),
    };
    let e = &t.embeddings;
    let embeddings = [&e.word, &e.position, &e.token_type]
        .iter()
        .filter_map(|t| t.as_ref())
        .map(|t| c.named(Some(&t.weight)))
        .sum::<usize>()
        + e.norm.as_ref().map_or(0, |n| c.norm(n))
        + e.project.as_ref().map_or(0, |p| c.linear(p));
    let attention: Vec<usize> = t
        .layers
        .iter()
        .map(|l: &EncoderLayer| {
            l.attention.as_ref().map_or(0, |a| c.attention(a))
                + c.named(l.attention_bias.as_deref())
                + c.norm(&l.attention_norm)
        })
        .collect();
    let ffn: Vec<usize> = t
        .layers
        .iter()
        .map(|l| {
            l.ffn.as_ref().map_or(0, |f| c.linear(&f.up) + c.linear(&f.down))
                + c.named(l.ffn_bias.as_deref())
                + c.norm(&l.output_norm)
        })
        .collect();
    let pooler = t.head.as_ref().map_or(0, |h| {
        h.pooler.as_ref().map_or(0, |p| c.linear(p)) + h.norm.as_ref().map_or(0, |n| c.norm(n))
    });
    let classifier = t.head.as_ref().map_or(0, |h| c.linear(&h.classifier));
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
            Qkv::Stacked { qkv } => qkv.macs_per_token(),
            Qkv::Packed { .. } => hidden * 3 * all,
        };
        s * qkv + s * a.output.macs_per_token() + 2 * s * s * all + score_term_macs(a, all, s)
    });
    let ffn = l
        .ffn
        .as_ref()
        .map_or(0, |f| s * (f.up.macs_per_token() + f.down.macs_per_token()));
    attention + ffn
}

/// MACs of an attention's other score terms for `width` of its query/key columns (DeBERTa's
/// disentangled attention: each term scores the `seq` queries or keys against the span of
/// relative positions, s·span·width, and its projection of the relative position embeddings
/// costs span·hidden·width, counted per sequence as at batch 1). Zero when the span is unknown.
fn score_term_macs(a: &Attention, width: u64, s: u64) -> u64 {
    let Some(span) = a.score_span.map(|x| x as u64) else {
        return 0;
    };
    let terms = a.score_projections.len().max(a.score_tables.len()) as u64;
    let projections: u64 = a.score_projections.iter().map(|p| p.in_features as u64).sum();
    terms * s * span * width + projections * span * width
}

/// Attention MACs of one head and FFN MACs of one neuron, per sequence of `seq` tokens (for
/// budgets).
pub fn unit_macs(hidden: usize, head_size: usize, seq: usize) -> (u64, u64) {
    let (s, h, d) = (seq as u64, hidden as u64, head_size as u64);
    (4 * s * h * d + 2 * s * s * d, 2 * s * h)
}

/// MACs of one head of `a` per sequence of `seq` tokens: [`unit_macs`]' and its share of the
/// attention's other score terms (DeBERTa's).
pub fn head_macs(a: &Attention, hidden: usize, seq: usize) -> u64 {
    unit_macs(hidden, a.head_size, seq).0 + score_term_macs(a, a.head_size as u64, seq as u64)
}

/// MACs of one neuron of `f` per sequence of `seq` tokens: its up projection columns (two when
/// gated) and its down projection row.
pub fn neuron_macs(f: &Ffn, seq: usize) -> u64 {
    let per_neuron = f.up.out_features / f.width.max(1);
    (seq * (per_neuron * f.up.in_features + f.down.out_features)) as u64
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
