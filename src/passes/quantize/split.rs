//! The first token's feed-forward blocks computed apart from the other tokens'.
//!
//! In BERT-family encoders the first token ([CLS]) carries a few huge activations (here up to
//! 28 in one hidden channel at the FFN input and 24 in one FFN neuron, where every other token
//! stays below 7–18 and 6–8). A per-tensor int8 range must cover them, so every other token's
//! FFN is quantized 2–4× coarser than it needs to be. Rewritten here, each FFN reads the sequence
//! sliced in two, `x[:, :1]` and `x[:, 1:]`, runs the same nodes (sharing the weights) on each,
//! and concatenates the two results along the sequence; calibration then measures each half's
//! ranges on its own tokens ([`Tokens::First`], [`Tokens::AfterFirst`]). The float graph computes
//! the same function as before, the FFN acting on each token on its own (the tests hold its logits
//! to 1e-5 of the input model's).
//!
//! Only FFNs whose input is the layer's LayerNorm output and whose nodes form a closed block are
//! split, and only when the residual stream is [batch, sequence, hidden]: the word embedding's
//! `Gather` reads a rank-2 `input_ids` and no node between it and the first layer reshapes.

use std::collections::{HashMap, HashSet};

use super::calibrate::{Probe, Tokens};
use crate::onnx::build::{attr_int, node, with_attrs};
use crate::onnx::proto::ModelProto;
use crate::onnx::{edit, tensor, GraphIndex};
use crate::passes::PassError;
use crate::structure::{discover, Transformer};

/// The split graph, which layers were split, and for each value of the split graph that a
/// quantized MatMul may read and that is a slice of a value of the input model: that value and
/// the tokens it holds (what calibration measures on the input model).
pub struct Split {
    pub model: ModelProto,
    pub layers: Vec<usize>,
    pub probes: HashMap<String, Probe>,
    /// The first-token copy of each node (by name) → the node it copies.
    pub origin: HashMap<String, String>,
    /// Why a layer (or the whole model) was left as it was.
    pub skipped: Vec<String>,
}

const RESHAPING: &[&str] = &["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"];

/// Nodes `from` reaches (itself included) that `to` depends on (itself included).
fn between(ix: &GraphIndex, from: usize, to: usize) -> HashSet<usize> {
    let mut back = HashSet::new();
    let mut stack = vec![to];
    while let Some(i) = stack.pop() {
        if back.insert(i) {
            stack.extend(ix.node(i).input.iter().filter_map(|v| ix.producer(v)));
        }
    }
    let mut both = HashSet::new();
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if back.contains(&i) && both.insert(i) {
            for o in &ix.node(i).output {
                stack.extend(ix.consumers(o).iter().copied());
            }
        }
    }
    both
}

/// Whether the encoder's residual stream is [batch, sequence, hidden]: `input_ids` (the word
/// `Gather`'s indices) has rank 2 where declared, and nothing reshapes between that `Gather`
/// and the first layer's input.
fn sequence_on_axis_1(ix: &GraphIndex, t: &Transformer) -> Result<(), String> {
    let word = t.embeddings.word.as_ref().ok_or("no word embedding table found")?;
    let first = t.layers.first().ok_or("no encoder layer")?;
    let gather = ix.node(word.gather_node);
    let ids = gather.input.get(1).ok_or("the word embedding Gather has no indices")?;
    if let Some(v) = ix.graph.input.iter().find(|v| v.name() == ids) {
        let rank = v.r#type.as_ref().and_then(|ty| match &ty.value {
            Some(crate::onnx::proto::type_proto::Value::TensorType(tt)) => tt.shape.as_ref().map(|s| s.dim.len()),
            _ => None,
        });
        if rank.is_some_and(|r| r != 2) {
            return Err(format!("input '{ids}' is not [batch, sequence]"));
        }
    } else {
        return Err(format!("the word embedding Gather reads '{ids}', not a graph input"));
    }
    let end = ix
        .producer(&first.input)
        .ok_or("the first layer's input is not computed")?;
    if let Some(&r) = between(ix, word.gather_node, end)
        .iter()
        .find(|&&i| RESHAPING.contains(&ix.node(i).op_type()))
    {
        return Err(format!(
            "{} reshapes the hidden states before the first layer",
            ix.node_label(r)
        ));
    }
    Ok(())
}

/// Splits every FFN it can; the others are listed in `skipped`. A model that is not a transformer
/// the structure discovery can map is returned unchanged, with the reason.
pub fn split_first_token(model: &ModelProto) -> Result<Split, PassError> {
    let unchanged = |skipped: Vec<String>| Split {
        model: model.clone(),
        layers: vec![],
        probes: HashMap::new(),
        origin: HashMap::new(),
        skipped,
    };
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| PassError::Internal("no graph".into()))?;
    let t = match discover(model) {
        Ok(t) => t,
        Err(e) => return Ok(unchanged(vec![format!("no transformer found ({e})")])),
    };
    let ix = GraphIndex::new(g);
    if let Err(why) = sequence_on_axis_1(&ix, &t) {
        return Ok(unchanged(vec![why]));
    }

    // Per split layer: its FFN nodes, input, output.
    struct Block {
        layer: usize,
        nodes: HashSet<usize>,
        up: usize,
        last: usize,
        input: String,
        output: String,
    }
    let mut blocks = vec![];
    let mut skipped = vec![];
    for l in &t.layers {
        let Some(f) = &l.ffn else { continue };
        let (up, down) = (&f.up, &f.down);
        let input = ix.node(up.node).input[0].clone();
        let why = if up.transposed || down.transposed || ix.node(up.node).op_type() != "MatMul" {
            Some("its FFN is a Gemm (2-D activations)".to_string())
        } else if input != l.attention_norm.output {
            Some("its FFN does not read the LayerNorm output directly".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            skipped.push(format!("layer {}: {why}", l.index));
            continue;
        }
        let Some(last) = ix.producer(&down.output) else {
            continue;
        };
        let nodes = between(&ix, up.node, last);
        // Closed: every computed input comes from inside or is the FFN input; nothing inside
        // but the output is read outside; nothing reshapes.
        let open = nodes.iter().find_map(|&i| {
            let n = ix.node(i);
            if RESHAPING.contains(&n.op_type()) || !n.attribute.iter().all(|a| a.g.is_none() && a.graphs.is_empty()) {
                return Some(format!("{} inside its FFN", ix.node_label(i)));
            }
            for v in ix.dynamic_inputs(i) {
                if v != input && !ix.producer(v).is_some_and(|p| nodes.contains(&p)) {
                    return Some(format!("{} reads '{v}' from outside its FFN", ix.node_label(i)));
                }
            }
            n.output.iter().filter(|o| **o != down.output).find_map(|o| {
                (ix.is_graph_output(o) || ix.consumers(o).iter().any(|c| !nodes.contains(c)))
                    .then(|| format!("'{o}' inside its FFN is read outside it"))
            })
        });
        if let Some(why) = open {
            skipped.push(format!("layer {}: {why}", l.index));
            continue;
        }
        blocks.push(Block {
            layer: l.index,
            nodes,
            up: up.node,
            last,
            input,
            output: down.output.clone(),
        });
    }

    if blocks.is_empty() {
        return Ok(unchanged(skipped));
    }
    let mut m = model.clone();
    let out_g = m.graph.as_mut().ok_or_else(|| PassError::Internal("no graph".into()))?;
    let mut taken = edit::names(out_g);
    let mut probes = HashMap::new();
    let mut origin = HashMap::new();
    let mut layers = vec![];
    let zero = edit::fresh_name(&mut taken, "first_token_split_0");
    let one = edit::fresh_name(&mut taken, "first_token_split_1");
    let end = edit::fresh_name(&mut taken, "first_token_split_end");
    out_g.initializer.push(tensor::from_i64(&zero, &[1], &[0]));
    out_g.initializer.push(tensor::from_i64(&one, &[1], &[1]));
    out_g.initializer.push(tensor::from_i64(&end, &[1], &[i64::MAX]));

    let by_node: HashMap<usize, usize> = blocks
        .iter()
        .enumerate()
        .flat_map(|(b, blk)| blk.nodes.iter().map(move |&i| (i, b)))
        .collect();
    // Per block: the renaming of the rest copy (original nodes) and of the first-token copy.
    let mut rest: Vec<HashMap<String, String>> = vec![HashMap::new(); blocks.len()];
    let mut first: Vec<HashMap<String, String>> = vec![HashMap::new(); blocks.len()];
    let mut nodes = Vec::with_capacity(g.node.len() + 16 * blocks.len());
    for (i, n) in g.node.iter().enumerate() {
        let Some(&b) = by_node.get(&i) else {
            nodes.push(n.clone());
            continue;
        };
        let blk = &blocks[b];
        let base = format!("/first_token_split/layer.{}", blk.layer);
        if i == blk.up {
            let xr = edit::fresh_name(&mut taken, &format!("{}_after_first", blk.input));
            let xf = edit::fresh_name(&mut taken, &format!("{}_first", blk.input));
            nodes.push(node(
                "Slice",
                &format!("{base}/SliceAfterFirst"),
                &[&blk.input, &one, &end, &one],
                &[&xr],
            ));
            nodes.push(node(
                "Slice",
                &format!("{base}/SliceFirst"),
                &[&blk.input, &zero, &one, &one],
                &[&xf],
            ));
            rest[b].insert(blk.input.clone(), xr);
            first[b].insert(blk.input.clone(), xf);
        }
        for (copy, keep_name, tokens, suffix) in [
            (&mut rest[b], true, Tokens::AfterFirst, "after_first"),
            (&mut first[b], false, Tokens::First, "first"),
        ] {
            let mut c = n.clone();
            for v in c.input.iter_mut() {
                if let Some(r) = copy.get(v.as_str()) {
                    if matches!(ix.node(i).op_type(), "MatMul") {
                        probes.insert(
                            r.clone(),
                            Probe {
                                value: v.clone(),
                                tokens,
                            },
                        );
                    }
                    *v = r.clone();
                }
            }
            for o in c.output.iter_mut().filter(|o| !o.is_empty()) {
                let r = edit::fresh_name(&mut taken, &format!("{o}_{suffix}"));
                copy.insert(o.clone(), r.clone());
                *o = r;
            }
            if !n.name().is_empty() && !keep_name {
                c.name = Some(format!("{}_{suffix}", n.name()));
                origin.insert(c.name().to_string(), n.name().to_string());
            }
            nodes.push(c);
        }
        if i == blk.last {
            nodes.push(with_attrs(
                node(
                    "Concat",
                    &format!("{base}/Concat"),
                    &[&first[b][&blk.output], &rest[b][&blk.output]],
                    &[&blk.output],
                ),
                vec![attr_int("axis", 1)],
            ));
            layers.push(blk.layer);
        }
    }
    out_g.node = nodes;
    Ok(Split {
        model: m,
        layers,
        probes,
        origin,
        skipped,
    })
}
