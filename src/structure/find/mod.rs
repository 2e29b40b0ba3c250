//! The pattern matcher behind [`discover`], one file per part of the transformer.

use std::collections::{HashSet, VecDeque};

use super::*;
use crate::onnx::{GraphIndex, ModelProto};

mod attention;
mod embeddings;
mod ffn;
mod linear;
mod norm;
mod shapes;
mod walk;

pub(crate) use linear::is_gemm;

use attention::*;
use embeddings::*;
use ffn::*;
use linear::*;
use norm::*;
use shapes::*;
use walk::*;

type R<T> = Result<T, StructureError>;

fn fail(looked_for: impl Into<String>, stopped_at: impl Into<String>) -> StructureError {
    StructureError {
        looked_for: looked_for.into(),
        stopped_at: stopped_at.into(),
    }
}

/// Ops that only move or rename data between a projection and where it is used.
const PASS_THROUGH: &[&str] = &["Identity", "Cast", "Dropout"];

/// Maps the transformer in `model`. A model quantized already (int8 or float16) that does not
/// map is named so: the passes that need the map work on the float32 model, before quantizing.
pub fn discover(model: &ModelProto) -> R<Transformer> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("a graph", "the model has no graph"))?;
    discover_graph(graph).map_err(|e| match quantized_evidence(graph) {
        Some(why) => fail(
            "a float32 model",
            format!(
                "{why}: the model is quantized already (int8, or float16 as `quantize --mode fp16` or a half-precision export writes it); prune, factor or measure the float32 model, then quantize it (quantization is the last step of a chain)"
            ),
        ),
        // Say which layout it is and what works on it.
        None if model.producer_name() == "tf2onnx" => StructureError {
            stopped_at: format!(
                "{} (a tf2onnx export: its layout, each Dense a Reshape → MatMul → Reshape and LayerNorm \
                 computed from GlobalAveragePool, is not mapped; quantize and eval work on it)",
                e.stopped_at
            ),
            ..e
        },
        None => e,
    })
}

/// Whether the output of node `i` (an attention's Softmax) reaches a MatMul within six nodes
/// (through the SDPA guard's IsNaN/Where, a Cast, Dropout or Reshape; as far as discovery walks
/// back from a Softmax to its scores), as attention probabilities do.
fn weighs_values(ix: &GraphIndex, i: usize) -> bool {
    let mut frontier = vec![i];
    for _ in 0..6 {
        let next: Vec<usize> = frontier
            .iter()
            .flat_map(|&n| ix.node(n).output.iter())
            .flat_map(|v| ix.consumers(v).iter().copied())
            .collect();
        if next
            .iter()
            .any(|&n| matches!(ix.node(n).op_type(), "MatMul" | "FusedMatMul" | "Einsum"))
        {
            return true;
        }
        frontier = next;
    }
    false
}

fn discover_graph(graph: &crate::onnx::proto::GraphProto) -> R<Transformer> {
    let ix = GraphIndex::new(graph);

    let mut attn_nodes: Vec<usize> = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        let default_domain = n.domain().is_empty() || n.domain() == "ai.onnx";
        // A Softmax whose probabilities no MatMul reads is not an attention's (the classifier's
        // probabilities, appended after the logits).
        if (n.op_type() == "Softmax" && default_domain && weighs_values(&ix, i))
            || (matches!(n.op_type(), "Attention") && n.domain() == "com.microsoft")
        {
            attn_nodes.push(i);
        }
    }
    let mut embeddings = find_embeddings(&ix);
    if attn_nodes.is_empty() && embeddings.norm.is_none() {
        return Err(fail(
            "attention blocks (Softmax fed by MatMul(Q, Kᵀ), or a fused com.microsoft Attention node)",
            format!(
                "none in the graph's {} nodes (ops: {})",
                graph.node.len(),
                op_summary(graph)
            ),
        ));
    }
    // Every attention block, keyed by the value it reads.
    let mut blocks: Vec<(String, Attention)> = Vec::new();
    for (n, &node) in attn_nodes.iter().enumerate() {
        let (attention, input) = if ix.node(node).op_type() == "Softmax" {
            unfused_attention(&ix, node)
        } else {
            fused_attention(&ix, node)
        }
        .map_err(|e| StructureError {
            looked_for: format!(
                "attention block {n} (at node {}): {}",
                ix.node_label(node),
                e.looked_for
            ),
            stopped_at: e.stopped_at,
        })?;
        blocks.push((input, attention));
    }
    // Walk the encoder from the embeddings (or the first attention's input) layer by layer.
    let mut value = match (&embeddings.norm, blocks.first()) {
        (Some(norm), _) => norm.output.clone(),
        (None, Some((input, _))) => input.clone(),
        (None, None) => return Err(fail("encoder layers", "no embeddings LayerNorm and no attention")),
    };
    let reads = |v: &str| blocks.iter().any(|(input, _)| ix.resolve(input) == ix.resolve(v));
    // DeBERTa zeroes the padded positions of the embeddings: Mul(embeddings, mask).
    if !reads(&value) {
        if let Some(m) = masked_by(&ix, &value).filter(|m| reads(m)) {
            value = m;
        }
    }
    if !reads(&value) && bias_only_block(&ix, &value).is_none() {
        if let Some(p) = embedding_projection(&ix, &value, &|v| reads(v) || bias_only_block(&ix, v).is_some()) {
            value = p.output.clone();
            embeddings.project = Some(p);
        }
    }
    let mut layers = Vec::new();
    let mut used = vec![false; blocks.len()];
    loop {
        let index = layers.len();
        let here = ix.resolve(&value).to_string();
        let block = blocks.iter().position(|(input, _)| ix.resolve(input) == here);
        let (attention, attention_bias, attention_norm) = if let Some(b) = block {
            used[b] = true;
            let a = blocks[b].1.clone();
            let norm = find_norm(&ix, &a.output.output, 3).ok_or_else(|| {
                fail(
                    format!("layer {index}: the LayerNorm after the attention output projection (residual Add, then LayerNormalization)"),
                    format!("after node {}", ix.node_label(a.output.node)),
                )
            })?;
            (Some(a), None, norm)
        } else if let Some((bias, norm)) = bias_only_block(&ix, &here) {
            (None, Some(bias), norm)
        } else {
            break;
        };
        let hidden = attention.as_ref().map(|a| a.output.out_features);
        let (ffn, ffn_bias, output_norm) = match find_ffn(&ix, &attention_norm, hidden) {
            Ok(ffn) => {
                let norm = find_norm(&ix, &ffn.down.output, 3).ok_or_else(|| {
                    fail(
                        format!("layer {index}: the LayerNorm after the FFN down projection"),
                        format!("after node {}", ix.node_label(ffn.down.node)),
                    )
                })?;
                (Some(ffn), None, norm)
            }
            Err(e) => match bias_only_block(&ix, &attention_norm.output) {
                Some((bias, norm)) => (None, Some(bias), norm),
                None => {
                    return Err(StructureError {
                        looked_for: format!("layer {index}: {}", e.looked_for),
                        stopped_at: e.stopped_at,
                    })
                }
            },
        };
        value = output_norm.output.clone();
        layers.push(EncoderLayer {
            index,
            input: here,
            attention,
            attention_bias,
            attention_norm,
            ffn,
            ffn_bias,
            output_norm,
        });
        if layers.len() > 10_000 {
            return Err(fail(
                "a finite encoder",
                "more than 10000 layers (a cycle in the graph?)",
            ));
        }
    }
    if let Some(b) = used.iter().position(|u| !u) {
        let (input, a) = &blocks[b];
        return Err(fail(
            "every attention block on the encoder's chain of layers",
            format!(
                "the attention at {} reads '{input}', which no mapped layer produces ({} layers mapped)",
                a.softmax
                    .map(|s| ix.node_label(s))
                    .unwrap_or_else(|| ix.node_label(a.output.node)),
                layers.len()
            ),
        ));
    }
    if layers.is_empty() {
        return Err(fail(
            "encoder layers after the embeddings",
            format!("nothing recognizable reads '{value}'"),
        ));
    }
    let hidden = layers
        .iter()
        .find_map(|l| {
            l.attention
                .as_ref()
                .map(|a| a.output.out_features)
                .or(l.ffn.as_ref().map(|f| f.up.in_features))
        })
        .or(embeddings.word.as_ref().map(|w| w.dim))
        .unwrap_or(0);
    // A graph output computed inside a block keeps that block's heads or neurons: pruned, it
    // would change width under the shape it declares (or, the block removed, lose what computes it).
    for l in layers.iter_mut() {
        if let Some(v) = exposed_output(&ix, l, true) {
            let a = l.attention.as_mut().expect("an attention gives exposed values");
            a.heads_fixed
                .get_or_insert(format!("the model outputs '{v}', computed inside its attention"));
        }
        if let Some(v) = exposed_output(&ix, l, false) {
            let f = l.ffn.as_mut().expect("an FFN gives exposed values");
            f.neurons_fixed
                .get_or_insert(format!("the model outputs '{v}', computed inside its FFN"));
        }
    }
    let head = find_head(&ix, &value);
    Ok(Transformer {
        hidden,
        embeddings,
        layers,
        head,
    })
}

/// The output of the one `Mul` of `value` by another computed (not constant) value: a mask.
fn masked_by(ix: &GraphIndex, value: &str) -> Option<String> {
    let [c] = ix.consumers(value) else { return None };
    let n = ix.node(*c);
    (n.op_type() == "Mul" && ix.dynamic_inputs(*c).len() == 2)
        .then(|| n.output.first().cloned())
        .flatten()
}

/// What remains of a fully pruned block: `Add(x, bias)` then a LayerNorm.
fn bias_only_block(ix: &GraphIndex, x: &str) -> Option<(String, Norm)> {
    for &c in ix.consumers(x) {
        let n = ix.node(c);
        if n.op_type() != "Add" || n.input.len() != 2 {
            continue;
        }
        let other = if ix.resolve(&n.input[0]) == x {
            &n.input[1]
        } else {
            &n.input[0]
        };
        let t = ix.constant(other)?;
        if t.tensor().dims.len() != 1 {
            continue;
        }
        let out = n.output.first()?;
        if let Some(norm) = find_norm(ix, out, 0) {
            return Some((ix.constant_name(other)?, norm));
        }
    }
    None
}

fn op_summary(graph: &crate::onnx::GraphProto) -> String {
    let mut ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
    ops.sort_unstable();
    ops.dedup();
    if ops.is_empty() {
        "none".into()
    } else {
        ops.join(", ")
    }
}

/// A graph output computed inside layer `l`'s attention (`heads`) or FFN: a value from the
/// block's projections (Q, K and V; the up projection) to its output projection, which holds a
/// column per head or neuron. Shape reads (`Shape`, `Size`) are not followed, nor is anything
/// the output projection computes: another layer reading a shape or a value here is not inside.
pub(crate) fn exposed_output(ix: &GraphIndex, l: &EncoderLayer, heads: bool) -> Option<String> {
    let first = |node: usize| ix.node(node).output.first().cloned();
    let (starts, end): (Vec<String>, usize) = if heads {
        let a = l.attention.as_ref()?;
        let starts = match &a.qkv {
            Qkv::Separate { q, k, v } => [q, k, v].iter().filter_map(|lin| first(lin.node)).collect(),
            Qkv::Stacked { qkv } => first(qkv.node).into_iter().collect(),
            Qkv::Packed { node, .. } => ix.node(*node).output.clone(),
        };
        (starts, a.output.node)
    } else {
        let f = l.ffn.as_ref()?;
        (first(f.up.node).into_iter().collect(), f.down.node)
    };
    // What the output projection computes, directly or not.
    let mut after: HashSet<usize> = HashSet::from([end]);
    let mut queue: VecDeque<&str> = ix.node(end).output.iter().map(String::as_str).collect();
    while let Some(v) = queue.pop_front() {
        for &c in ix.consumers(v) {
            if after.insert(c) {
                queue.extend(ix.node(c).output.iter().map(String::as_str));
            }
        }
    }
    let mut queue: VecDeque<&str> = starts.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    while let Some(v) = queue.pop_front() {
        if ix.is_graph_output(v) {
            return Some(v.to_string());
        }
        for &c in ix.consumers(v) {
            let shape_read = matches!(ix.node(c).op_type(), "Shape" | "Size");
            if !after.contains(&c) && !shape_read && seen.insert(c) {
                queue.extend(ix.node(c).output.iter().map(String::as_str));
            }
        }
    }
    None
}
