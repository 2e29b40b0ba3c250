//! The attention core as one ONNX `Attention` (opset 23): the exporters' eight-node chain
//!
//! ```text
//! Q, K, V [batch, seq, heads, head] ─ Transpose ×3 ─ MatMul(Q, Kᵀ) ─ Mul/Div (scale) ─ Add (mask)
//!   ─ Softmax ─ MatMul(·, V) ─ Transpose ─ context [batch, seq, heads, head]
//! ```
//!
//! becomes `Attention(Q, K, V, mask)` on the [batch, seq, heads·head] layout: ONNX Runtime's kernel
//! reads each head in place, so the four head transposes go, and the scores never leave the kernel
//! (no [batch, heads, seq, seq] tensor is written for the mask `Add` and the softmax to read
//! again). The products, the softmax and the weighted sum are the same numbers (the shared models'
//! static INT8 logits are bit for bit those of the chain); measured on the packed models
//! (calibrated prune 60% + static INT8 `--unpad`): 14% (SST-2) and 18% (MRPC) more throughput,
//! paired (bench/RESULTS.md, "One Attention op").
//!
//! The heads come from the structure found in the model (per Softmax, by name), checked against the
//! Reshape that splits them where its shape is constant. The additive mask is broadcast to [·, ·,
//! query, key] (`Expand`, once per attention), which ONNX Runtime's kernel requires; a term added
//! to the scaled scores before the mask (MPNet's relative position bias) is added to the mask
//! first. A `Where(masked, fill, scores)` with a large negative fill (DistilBERT) becomes the
//! boolean mask of the keys attended; where the chain broadcast `masked` to the scores' own shape
//! first (transformers 4's classic export), the op broadcasts the mask before that instead, so
//! the score product is not kept for its shape. The classic exporter's SDPA attention is matched
//! too: transformers 4's scale √(1/√d) on Q and K, computed at run time from Q's shape, is
//! evaluated where the graph fixes it (`scalar_value`), and transformers 5's reshape of the
//! context to its own shape is checked element by element (`keeps_shape`); the dynamo exporter's
//! Kᵀ, the last two axes swapped through a rank-3 reshape, is recognised as the transpose it is
//! (`last_two_swapped`).
//! transformers' SDPA guard after the softmax, `Where(IsNaN(p), 0, p)`, goes into the op too (its
//! kernel gives a query whose every key is masked a zero context, what the guard gives; without
//! the guard, such a query — a sequence with no real token — averaged the values before and gets
//! zero now). A constant scale on Q or K before the product (DistilBERT divides Q by √d) goes
//! into the op's `scale` with the one after it.
//!
//! Where Q, K or V is not a head split's transpose (ModernBERT's rotary embedding acts on Q and K
//! as [batch, heads, seq, head]; the first-token split slices the last layer's query after its
//! transpose), the op takes all three as [batch, heads, seq, head] instead, its output replacing
//! the product with V (the context's transpose stays): the operands the products read, of rank 4
//! by how they are computed (`rank`), the keys before their transpose (a scalar on Kᵀ that the
//! run computes, transformers 4's SDPA scale read off the rotated Q's shape, multiplies the keys
//! instead), a head split's transpose kept as one (also keys read through a [0, 2, 3, 1]
//! `Transpose` of [batch, seq, heads, head], where ONNX Runtime's transpose optimizer moved
//! ModernBERT's head transpose past the rotary embedding). The scores still never leave the
//! kernel.
//! Float `Cast`s between the softmax and the product with V (ModernBERT's eager export) are
//! read through.
//!
//! DeBERTa's attention runs on [batch·heads, seq, ·] between Reshapes, its relative position
//! bias added to the scores and its padding mask a `Where` on [batch, heads, query, key] (a
//! padding query's whole row masked): the op takes Q, K and V before their merging Reshapes and
//! the bias, filled where masked, as its mask (`batched`).
//!
//! The op needs opset 23; the model's default opset is raised to it where nothing in the graph
//! changes meaning on the way (from 13 on: the `Reduce*` ops' `axes` become an input and `Split`
//! states its outputs' count at 18, both rewritten here, in subgraphs too — transformers 4's
//! DeBERTa export has `If`s; a graph with local functions or an op that changed otherwise keeps
//! its chains, with the reason).

use std::collections::{HashMap, HashSet};

use crate::onnx::build::{attr_float, attr_int, attr_ints, node, with_attrs};
use crate::onnx::graph::GraphIndex;
use crate::onnx::patch::Patch;
use crate::onnx::proto::{attribute_proto::AttributeType, GraphProto, ModelProto, NodeProto};
use crate::onnx::tensor;
use crate::passes::PassError;

use super::default_opset;

/// The first opset with `Attention`.
const OPSET: i64 = 23;
/// A fill for masked scores that absorbs any score added to it (its float32 spacing is ~10³¹),
/// so a query whose every key is masked has equal scores, and the softmax's uniform weights, as
/// in the chain: DeBERTa masks a padding query's whole row. Not the lowest float, which ONNX
/// Runtime's kernel takes as "nothing attended" and answers with a zero context (a padding
/// row's values would change, and with them a dynamic INT8 range over the rows).
const ABSORBING: f32 = -3.0e38;
/// `TensorProto.DataType` FLOAT and BOOL.
const FLOAT: i64 = 1;
const BOOL: i64 = 9;
/// Ops whose `axes` attribute became an input at opset 18 (`ReduceSum` at 13).
const REDUCE_AXES_INPUT: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];
/// Ops whose meaning changed between opsets 13 and 23 in ways not rewritten here.
const CHANGED: &[&str] = &["DFT", "GridSample", "GroupNormalization"];

/// How the chain keeps padding keys out of the scores.
enum Mask {
    /// Terms added to the scaled scores, summed into the op's float mask: the padding mask (0 or
    /// a large negative), and MPNet's relative position bias before it.
    Add(Vec<String>),
    /// `Where(masked, fill, scores)` with a large negative constant fill (DistilBERT): the op
    /// takes the opposite, true where a key is attended; `cast`: `masked` is cast to bool first
    /// (as the chain cast its broadcast); `first_query`: the starts, ends and axes (and steps) of
    /// a slice of the first query's row, taken of `masked` first (as the chain sliced its
    /// broadcast).
    Fill {
        masked: String,
        cast: bool,
        first_query: Option<Vec<String>>,
    },
    /// `Where(masked, fill, scores + bias)` on [batch, heads, query, key], the bias computed on
    /// [batch·heads, query, key] (DeBERTa's relative position terms), or `Where(attended, scores
    /// + bias, fill)` (`attended`; after ONNX Runtime's optimizer): the op's float mask is the
    /// bias reshaped, [`ABSORBING`] where masked.
    FillBias { cond: String, attended: bool, bias: String },
}

/// One of Q, K, V as the op gets it.
enum Operand {
    /// [batch, seq, heads, head], before the chain's head transpose.
    Split(String),
    /// [batch, heads, seq, head], as the chain's product reads it (after a rotary embedding, a
    /// slice to the first token's query).
    Heads(String),
    /// `Heads` (or `Split` where `split`, in the [batch, heads, seq, head] layout only) multiplied
    /// (`op` `Mul`) or divided (`Div`) by a scalar computed at run time: transformers 4's SDPA
    /// scale on Kᵀ, read off a shape the rewrite cannot state; DeBERTa's √(d·3) on Kᵀ;
    /// ModernBERT's keys after ONNX Runtime's transpose optimizer, still [batch, seq, heads, head].
    Scaled {
        x: String,
        split: bool,
        op: &'static str,
        by: String,
    },
}

/// What the op's output replaces.
enum Layout {
    /// The context's transpose (node) to [batch, seq, heads, head]: Q, K and V all `Split`,
    /// flattened to [batch, seq, heads·head], the op's output split into heads again.
    Flat { context: usize },
    /// The product with V (node), [batch, heads, seq, head], or the Reshape of DeBERTa's product
    /// on [batch·heads, seq, head] back to that: every operand as [batch, heads, seq, head] (a
    /// `Split` one through its head transpose), the chain's context transpose kept.
    Heads { pv: usize },
}

/// One matched chain: its values and what the op needs.
struct Core {
    layout: Layout,
    q: Operand,
    k: Operand,
    v: Operand,
    mask: Option<Mask>,
    heads: usize,
    head_size: usize,
    scale: f32,
}

/// Rewrites every attention core whose Softmax `heads` names ((heads, head size), from the
/// structure found in the model) into one `Attention`; returns the model, how many were
/// rewritten, and why none was where chains matched but the opset could not be raised.
pub fn one_op_attention(
    model: &ModelProto,
    heads: &HashMap<String, (usize, usize)>,
) -> Result<(ModelProto, usize, Option<String>), PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    let mut count: HashMap<&str, usize> = HashMap::new();
    g.node.iter().for_each(|n| *count.entry(n.name()).or_default() += 1);
    let cores: Vec<Core> = (0..g.node.len())
        .filter_map(|i| {
            let name = g.node[i].name();
            if count[name] != 1 {
                return None;
            }
            let (h, d) = *heads.get(name)?;
            matched(&ix, i, h, d)
        })
        .collect();
    if cores.is_empty() {
        return Ok((model.clone(), 0, None));
    }
    let mut out = model.clone();
    if let Err(why) = raise_opset(&mut out) {
        return Ok((model.clone(), 0, Some(why)));
    }
    let g = crate::passes::graph_mut(&mut out)?;
    let mut patch = Patch::new(g);
    patch.reserve_node_names(g);
    let flat_shape = patch.fresh_name("attention_op_flat");
    patch.add_initializer(tensor::from_i64(&flat_shape, &[3], &[0, 0, -1]));
    let ones = patch.fresh_name("attention_op_ones");
    patch.add_initializer(tensor::from_i64(&ones, &[2], &[1, 1]));
    let absorbing = patch.fresh_name("attention_op_masked");
    patch.add_initializer(tensor::from_f32(&absorbing, &[], &[ABSORBING]));
    for c in &cores {
        let (replaced, flat) = match c.layout {
            Layout::Flat { context } => (context, true),
            Layout::Heads { pv } => (pv, false),
        };
        let old = g.node[replaced].clone();
        let base = old.name().to_string();
        let mut nodes = vec![];
        // Q, K, V: [batch, seq, heads·head] (flat) or [batch, heads, seq, head].
        let mut operand = |o: &Operand, what: &str, patch: &mut Patch| {
            // [batch, seq, heads, head] to [batch, heads, seq, head].
            let heads = |x: &str, nodes: &mut Vec<NodeProto>, patch: &mut Patch| {
                let out = patch.fresh_name(&format!("{base}/{what}4"));
                nodes.push(with_attrs(
                    node("Transpose", &patch.fresh_name(&out), &[x], &[&out]),
                    vec![attr_ints("perm", &[0, 2, 1, 3])],
                ));
                out
            };
            match o {
                Operand::Split(x) if flat => {
                    let out = patch.fresh_name(&format!("{base}/{what}3"));
                    nodes.push(node("Reshape", &patch.fresh_name(&out), &[x, &flat_shape], &[&out]));
                    out
                }
                Operand::Split(x) => heads(x, &mut nodes, patch),
                Operand::Heads(x) => x.clone(),
                Operand::Scaled { x, split, op, by } => {
                    let x = if *split { heads(x, &mut nodes, patch) } else { x.clone() };
                    let out = patch.fresh_name(&format!("{base}/{what}4_scaled"));
                    nodes.push(node(op, &patch.fresh_name(&out), &[&x, by], &[&out]));
                    out
                }
            }
        };
        let (q, k, v) = (
            operand(&c.q, "Q", &mut patch),
            operand(&c.k, "K", &mut patch),
            operand(&c.v, "V", &mut patch),
        );
        let mut inputs = vec![q.clone(), k.clone(), v];
        if let Some(mask) = &c.mask {
            // The sequence axis: 1 of [batch, seq, hidden], 2 of [batch, heads, seq, head].
            let axis = if flat { 1 } else { 2 };
            let len = |v: &str, what: &str, nodes: &mut Vec<NodeProto>, patch: &mut Patch| {
                let o = patch.fresh_name(&format!("{base}/{what}"));
                nodes.push(with_attrs(
                    node("Shape", &patch.fresh_name(&o), &[v], &[&o]),
                    vec![attr_int("start", axis), attr_int("end", axis + 1)],
                ));
                o
            };
            let sq = len(&q, "query_len", &mut nodes, &mut patch);
            let sk = len(&k, "key_len", &mut nodes, &mut patch);
            // What is still to be broadcast to [·, ·, query, key].
            let partial = match mask {
                Mask::Add(terms) => {
                    let mut sum = terms[0].clone();
                    for t in &terms[1..] {
                        let o = patch.fresh_name(&format!("{base}/mask_terms"));
                        nodes.push(node("Add", &patch.fresh_name(&o), &[&sum, t], &[&o]));
                        sum = o;
                    }
                    Some(sum)
                }
                Mask::Fill {
                    masked,
                    cast,
                    first_query,
                } => {
                    let masked = match first_query {
                        Some(bounds) => {
                            let row = patch.fresh_name(&format!("{base}/first_query_mask"));
                            let ins: Vec<&str> = std::iter::once(masked.as_str())
                                .chain(bounds.iter().map(String::as_str))
                                .collect();
                            nodes.push(node("Slice", &patch.fresh_name(&row), &ins, &[&row]));
                            row
                        }
                        None => masked.clone(),
                    };
                    let masked = if *cast {
                        let b = patch.fresh_name(&format!("{base}/masked"));
                        nodes.push(with_attrs(
                            node("Cast", &patch.fresh_name(&b), &[&masked], &[&b]),
                            vec![attr_int("to", BOOL)],
                        ));
                        b
                    } else {
                        masked
                    };
                    let attend = patch.fresh_name(&format!("{base}/attend"));
                    nodes.push(node("Not", &patch.fresh_name(&attend), &[&masked], &[&attend]));
                    Some(attend)
                }
                Mask::FillBias { cond, attended, bias } => {
                    // [-1, heads, query, key]: already the op's full mask once filled.
                    let heads = patch.fresh_name(&format!("{base}/bias_heads"));
                    patch.add_initializer(tensor::from_i64(&heads, &[2], &[-1, c.heads as i64]));
                    let shape = patch.fresh_name(&format!("{base}/bias_shape"));
                    nodes.push(with_attrs(
                        node("Concat", &patch.fresh_name(&shape), &[&heads, &sq, &sk], &[&shape]),
                        vec![attr_int("axis", 0)],
                    ));
                    let bias4 = patch.fresh_name(&format!("{base}/bias"));
                    nodes.push(node("Reshape", &patch.fresh_name(&bias4), &[bias, &shape], &[&bias4]));
                    let full = patch.fresh_name(&format!("{base}/mask"));
                    let sides = if *attended {
                        [&bias4, &absorbing]
                    } else {
                        [&absorbing, &bias4]
                    };
                    nodes.push(node(
                        "Where",
                        &patch.fresh_name(&full),
                        &[cond, sides[0], sides[1]],
                        &[&full],
                    ));
                    inputs.push(full);
                    None
                }
            };
            if let Some(mask) = partial {
                // [1, 1, query, key]: Expand broadcasts both ways, keeping the mask's batch and
                // heads.
                let shape = patch.fresh_name(&format!("{base}/mask_shape"));
                let full = patch.fresh_name(&format!("{base}/mask"));
                nodes.push(with_attrs(
                    node("Concat", &patch.fresh_name(&shape), &[&ones, &sq, &sk], &[&shape]),
                    vec![attr_int("axis", 0)],
                ));
                nodes.push(node("Expand", &patch.fresh_name(&full), &[&mask, &shape], &[&full]));
                inputs.push(full);
            }
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let scale = attr_float("scale", c.scale);
        if flat {
            // 3-D inputs are told their heads.
            let a = patch.fresh_name(&format!("{base}/attention"));
            nodes.push(with_attrs(
                node(
                    "Attention",
                    &patch.fresh_name(&format!("{base}/Attention")),
                    &inputs,
                    &[&a],
                ),
                vec![
                    scale,
                    attr_int("q_num_heads", c.heads as i64),
                    attr_int("kv_num_heads", c.heads as i64),
                ],
            ));
            // Back to [batch, seq, heads, head], what the last Transpose gave its readers.
            let split = patch.fresh_name(&format!("{base}/heads"));
            patch.add_initializer(tensor::from_i64(
                &split,
                &[4],
                &[0, 0, c.heads as i64, c.head_size as i64],
            ));
            nodes.push(node("Reshape", &base, &[&a, &split], &[&old.output[0]]));
        } else {
            // The product with V's own output, [batch, heads, seq, head]; 4-D inputs carry their
            // heads.
            nodes.push(with_attrs(
                node("Attention", &base, &inputs, &[&old.output[0]]),
                vec![scale],
            ));
        }
        patch.replace_node(replaced, nodes);
    }
    patch.remove_unused();
    patch
        .apply(g)
        .map_err(|e| PassError::Internal(format!("one Attention op per attention: {e}")))?;
    Ok((out, cores.len(), None))
}

/// Each unfused attention's (heads, head size) by the name of its Softmax node, as found in
/// `model` (none where no transformer is found).
pub fn heads_by_softmax(model: &ModelProto) -> HashMap<String, (usize, usize)> {
    let Ok(t) = crate::structure::discover(model) else {
        return HashMap::new();
    };
    let Some(g) = model.graph.as_ref() else {
        return HashMap::new();
    };
    // By name only where the name is one node's: an unnamed or repeated name could take another
    // attention's heads.
    let mut count: HashMap<&str, usize> = HashMap::new();
    g.node.iter().for_each(|n| *count.entry(n.name()).or_default() += 1);
    t.layers
        .iter()
        .filter_map(|l| l.attention.as_ref())
        .filter_map(|a| {
            let name = g.node.get(a.softmax?)?.name();
            (!name.is_empty() && count[name] == 1).then(|| (name.to_string(), (a.num_heads, a.head_size)))
        })
        .collect()
}

/// The chain ending at Softmax `sm`, if it is one this rewrite keeps exact.
fn matched(ix: &GraphIndex, sm: usize, heads: usize, head_size: usize) -> Option<Core> {
    let n = ix.node(sm);
    if n.op_type() != "Softmax" || !n.domain().is_empty() || !matches!(ix.attr_i(sm, "axis").unwrap_or(-1), -1 | 3) {
        return None;
    }
    if let Some(core) = batched(ix, sm, heads, head_size) {
        return Some(core);
    }
    // Each value inside the chain read by the next node alone.
    let only = |v: &str, reader: usize| ix.consumers(v) == [reader] && !ix.is_graph_output(v);
    // The probabilities (through SDPA's NaN guard or not) times V, then the context's transpose.
    let probs = &n.output[0];
    if ix.is_graph_output(probs) {
        return None;
    }
    let weights = match *ix.consumers(probs) {
        [_] => probs.clone(),
        [a, b] => nan_guard(ix, probs, a, b)?,
        _ => return None,
    };
    let weights = through_float_casts(ix, &weights);
    let &[pv] = ix.consumers(&weights) else { return None };
    let pvn = ix.node(pv);
    if pvn.op_type() != "MatMul" || !pvn.domain().is_empty() || pvn.input[0] != weights {
        return None;
    }
    // Softmax ← Add(scores, mask) or Where(masked, fill, scores) or neither ← Mul/Div by a
    // scalar* ← the score product.
    let mut mask = None;
    let (mm, transposed_keys, scale) = match (ix.produced_by(&n.input[0], "Add"), ix.produced_by(&n.input[0], "Where"))
    {
        (Some(add), _) if only(&n.input[0], sm) => {
            let a = ix.node(add);
            let (slot, found, bias) = (0..2).find_map(|s| match scaled_scores(ix, &a.input[s], add, None) {
                Some(found) => Some((s, found, None)),
                None => biased_scores(ix, &a.input[s], add).map(|(found, bias)| (s, found, Some(bias))),
            })?;
            mask = Some(Mask::Add(bias.into_iter().chain([a.input[1 - slot].clone()]).collect()));
            found
        }
        (_, Some(w)) if only(&n.input[0], sm) => {
            let wn = ix.node(w);
            if !masking_fill(ix, &wn.input[1]) {
                return None;
            }
            let (masked, cast, shape, first_query) = match expanded_to_scores(ix, &wn.input[0], w, &wn.input[2]) {
                Some((x, cast, shape, first_query)) => (x, cast, Some(shape), first_query),
                None => (wn.input[0].clone(), false, None, None),
            };
            mask = Some(Mask::Fill {
                masked,
                cast,
                first_query,
            });
            scaled_scores(ix, &wn.input[2], w, shape)?
        }
        _ => scaled_scores(ix, &n.input[0], sm, None)?,
    };
    let m = ix.node(mm);
    let key_perm: &[i64] = if transposed_keys { &[0, 2, 1, 3] } else { &[0, 2, 3, 1] };
    let split = [
        heads_of(ix, &m.input[0], &[0, 2, 1, 3], mm),
        heads_of(ix, &m.input[1], key_perm, mm),
        heads_of(ix, &pvn.input[1], &[0, 2, 1, 3], pv),
    ];
    let core = |layout, [q, k, v]: [Operand; 3], scale: f32| {
        (scale.is_finite() && scale > 0.0).then_some(Core {
            layout,
            q,
            k,
            v,
            mask,
            heads,
            head_size,
            scale,
        })
    };
    // A scale on V would scale the context: V's split only where it has none.
    let [sq, sk, sv] = split;
    let sv = sv.filter(|&(_, c)| c == 1.0);
    let split = [sq, sk, sv];
    if let [Some((q, cq)), Some((k, ck)), Some((v, _))] = &split {
        if let Some(context) = flat_context(ix, pv, [q, v], [heads, head_size]) {
            // The heads where the split's shape states them.
            let stated = [q, k, v].iter().all(|s| {
                ix.produced_by(s, "Reshape")
                    .and_then(|r| heads_stated(ix, &ix.node(r).input[1]))
                    .is_none_or(|got| {
                        got.iter()
                            .zip([heads, head_size])
                            .all(|(&got, want)| got <= 0 || got as usize == want)
                    })
            });
            if !stated {
                return None;
            }
            let ops = [q, k, v].map(|x| Operand::Split(x.clone()));
            return core(Layout::Flat { context }, ops, scale * cq * ck);
        }
    }
    // [batch, heads, seq, head] as the products read them: a value before a head transpose where
    // one is found, else the product's own operand (the keys' before their transpose), each of
    // rank 4 by how it is computed.
    let [sq, sk, sv] = split;
    let mut scale = scale;
    let q = match sq {
        Some((x, c)) => {
            scale *= c;
            Operand::Split(x)
        }
        None => Operand::Heads(rank4(ix, &m.input[0], 12)?),
    };
    let k = match sk {
        Some((x, c)) => {
            scale *= c;
            Operand::Split(x)
        }
        None => {
            let (k, c, split) = keys_of(ix, &m.input[1], transposed_keys)?;
            // [batch, seq, heads, head] by its transpose's permutation: through a head transpose.
            let k = if split { k } else { rank4(ix, &k, 12)? };
            match c {
                Factor::Known(c) => {
                    scale *= c;
                    if split {
                        Operand::Split(k)
                    } else {
                        Operand::Heads(k)
                    }
                }
                Factor::Run { op, by } => Operand::Scaled { x: k, split, op, by },
            }
        }
    };
    let v = match sv {
        Some((x, _)) => Operand::Split(x),
        None => Operand::Heads(rank4(ix, &pvn.input[1], 12)?),
    };
    core(Layout::Heads { pv }, [q, k, v], scale)
}

/// DeBERTa's chain (the Softmax `sm`), on [batch·heads, seq, ·] between Reshapes:
///
/// ```text
/// Q, K, V [batch, heads, seq, head] ─ Reshape ×3 ─ MatMul(Q, Kᵀ ÷ s) ─ Add (relative position
///   bias) ─ Reshape to [batch, heads, query, key] ─ Where(masked, fill, ·) (or Where(attended,
///   ·, fill)) ─ Softmax ─ Reshape ─ MatMul(·, V) ─ Reshape to [batch, heads, query, head]
/// ```
///
/// The op takes Q, K and V before their Reshapes (which stay: the bias's own products read
/// them), the bias reshaped to [batch, heads, query, key] and filled where masked as its mask, and
/// its output replaces the last Reshape's. s (√(d·3)) is known, or computed at run time from a
/// shape (the classic exporter's), then the keys are divided by it.
fn batched(ix: &GraphIndex, sm: usize, heads: usize, head_size: usize) -> Option<Core> {
    let only = |v: &str, reader: usize| ix.consumers(v) == [reader] && !ix.is_graph_output(v);
    // A Reshape to `rank` elements, the heads second where `heads_at_1`, the head size last where
    // stated: its input.
    let reshaped = |r: usize, rank: usize, heads_at_1: bool, head_last: bool| -> Option<String> {
        let n = ix.node(r);
        if n.op_type() != "Reshape" || !n.domain().is_empty() {
            return None;
        }
        let p = pieces(ix, n.input.get(1)?)?;
        let ok = p.len() == rank
            && (!heads_at_1 || p[1] == Some(heads as i64))
            && (!head_last || p[rank - 1].is_none_or(|d| d == head_size as i64));
        ok.then(|| n.input[0].clone())
    };
    // Q, K, V: a head split's transpose to [batch, heads, seq, head], merged to [batch·heads, seq,
    // head].
    let merged = |v: &str| -> Option<String> {
        let x = reshaped(ix.producer(v)?, 3, false, true)?;
        ix.producer(&x).filter(|&t| transpose(ix, t, &[0, 2, 1, 3]))?;
        Some(x)
    };
    let n = ix.node(sm);
    let w = ix.produced_by(&n.input[0], "Where").filter(|_| only(&n.input[0], sm))?;
    let wn = ix.node(w);
    // The fill on one side, the scores on the other.
    let fills = |k: usize| masking_fill(ix, &wn.input[k]);
    let attended = match (fills(1), fills(2)) {
        (true, false) => false,
        (false, true) => true,
        _ => return None,
    };
    let scores = &wn.input[if attended { 1 } else { 2 }];
    let r = ix.produced_by(scores, "Reshape").filter(|_| only(scores, w))?;
    let sum = reshaped(r, 4, true, false)?;
    let add = ix.produced_by(&sum, "Add").filter(|_| beside_shapes(ix, &sum) == [r])?;
    let an = ix.node(add);
    let (mm, bias) = (0..2).find_map(|s| {
        let p = ix
            .produced_by(&an.input[s], "MatMul")
            .filter(|_| only(&an.input[s], add))?;
        Some((p, an.input[1 - s].clone()))
    })?;
    // Forward: Reshape to [batch·heads, query, key] ─ MatMul(·, V) ─ Reshape to [batch, heads,
    // ·, ·].
    let probs = &n.output[0];
    let &[r3] = &beside_shapes(ix, probs)[..] else {
        return None;
    };
    reshaped(r3, 3, false, false)?;
    let p3 = &ix.node(r3).output[0];
    let &[pv] = ix.consumers(p3) else { return None };
    let pvn = ix.node(pv);
    if pvn.op_type() != "MatMul" || !pvn.domain().is_empty() || pvn.input[0] != *p3 || ix.is_graph_output(p3) {
        return None;
    }
    let &[r4] = &beside_shapes(ix, &pvn.output[0])[..] else {
        return None;
    };
    reshaped(r4, 4, true, true)?;
    // Kᵀ: Transpose(K, [0, 2, 1]), times or divided by a scalar or not.
    let mn = ix.node(mm);
    let kt = &mn.input[1];
    if !only(kt, mm) {
        return None;
    }
    let (t, factor) = under_factor(ix, kt)?;
    if !transpose(ix, t, &[0, 2, 1]) {
        return None;
    }
    let (q, k4, v) = (
        merged(&mn.input[0])?,
        merged(&ix.node(t).input[0])?,
        merged(&pvn.input[1])?,
    );
    let (k, scale) = match factor {
        Factor::Known(c) => (Operand::Heads(k4), c),
        Factor::Run { op, by } => (
            Operand::Scaled {
                x: k4,
                split: false,
                op,
                by,
            },
            1.0,
        ),
    };
    (scale.is_finite() && scale > 0.0).then_some(Core {
        layout: Layout::Heads { pv: r4 },
        q: Operand::Heads(q),
        k,
        v: Operand::Heads(v),
        mask: Some(Mask::FillBias {
            cond: wn.input[0].clone(),
            attended,
            bias,
        }),
        heads,
        head_size,
        scale,
    })
}

/// Whether `v` is a constant fill that masks a score exactly: exp(fill − max) is 0 in float32
/// from −104 on, so −10⁴ or below.
fn masking_fill(ix: &GraphIndex, v: &str) -> bool {
    matches!(ix.const_f32(v).as_deref(), Some(&[fill]) if fill <= -1e4)
}

/// A shape's elements as the graph states them: a constant, or a `Concat` of one-element
/// pieces (see [`run_scalar`]), each its value where constant.
fn pieces(ix: &GraphIndex, shape: &str) -> Option<Vec<Option<i64>>> {
    if let Some(s) = ix.const_i64(shape) {
        return Some(s.into_iter().map(Some).collect());
    }
    let p = concat_pieces(ix, shape, |x| run_scalar(ix, x, 8).then_some(()))?;
    Some(p.into_iter().map(Result::ok).collect())
}

/// A 1-D shape built by a `Concat` (axis 0) of one-element pieces: each a constant (`Ok`) or
/// what `other` reads in it (`Err`); none where a piece is neither.
fn concat_pieces<T>(ix: &GraphIndex, shape: &str, other: impl Fn(&str) -> Option<T>) -> Option<Vec<Result<i64, T>>> {
    let c = ix.producer(shape).filter(|&c| {
        let n = ix.node(c);
        n.op_type() == "Concat" && n.domain().is_empty() && matches!(ix.attr_i(c, "axis"), Some(0 | -1))
    })?;
    ix.node(c)
        .input
        .iter()
        .map(|p| match ix.const_i64(p).as_deref() {
            Some(&[k]) => Some(Ok(k)),
            Some(_) => None,
            None => other(p).map(Err),
        })
        .collect()
}

/// The context's transpose to [batch, seq, heads, head] right after the product with V (`pv`),
/// or after a Reshape of the product that keeps its shape (transformers 5's SDPA export: to
/// [batch, -1, query, head] read off the shapes; `q`, `v`: the head splits): that transpose.
fn flat_context(ix: &GraphIndex, pv: usize, [q, v]: [&str; 2], [heads, head_size]: [usize; 2]) -> Option<usize> {
    let product = &ix.node(pv).output[0];
    let &[next] = &beside_shapes(ix, product)[..] else {
        return None;
    };
    if transpose(ix, next, &[0, 2, 1, 3]) {
        return Some(next);
    }
    let r = ix.node(next);
    let &[t] = ix.consumers(&r.output[0]) else { return None };
    (r.op_type() == "Reshape"
        && r.domain().is_empty()
        && !ix.is_graph_output(&r.output[0])
        && transpose(ix, t, &[0, 2, 1, 3])
        && keeps_shape(ix, next, product, [q, v], [heads, head_size]))
    .then_some(t)
}

/// The probabilities `p` through `Cast`s to float (ModernBERT's eager export casts its float32
/// softmax to the model's type), each value read by the next alone.
fn through_float_casts(ix: &GraphIndex, p: &str) -> String {
    let mut p = p.to_string();
    while let &[c] = ix.consumers(&p) {
        let n = ix.node(c);
        if ix.is_graph_output(&p)
            || n.op_type() != "Cast"
            || !n.domain().is_empty()
            || ix.attr_i(c, "to") != Some(FLOAT)
        {
            break;
        }
        p = n.output[0].clone();
    }
    p
}

/// A scalar factor: known before the run, or a value computed in it.
enum Factor {
    Known(f32),
    /// A value computed in the run that multiplies (`op` `Mul`) or divides (`Div`).
    Run {
        op: &'static str,
        by: String,
    },
}

/// Node `p` = `Mul` or `Div` of a value by a scalar, known before the run or computed in it (a
/// `Div` only by the scalar): (the factor, that value).
fn scalar_factor(ix: &GraphIndex, p: usize) -> Option<(Factor, String)> {
    let n = ix.node(p);
    if !matches!(n.op_type(), "Mul" | "Div") || !n.domain().is_empty() || n.input.len() != 2 {
        return None;
    }
    if let Some((c, other)) = times_scalar(ix, p) {
        return Some((Factor::Known(c), other));
    }
    let (op, slots): (&'static str, &[usize]) = if n.op_type() == "Div" {
        ("Div", &[1])
    } else {
        ("Mul", &[0, 1])
    };
    let s = slots.iter().copied().find(|&s| run_scalar(ix, &n.input[s], 8))?;
    Some((
        Factor::Run {
            op,
            by: n.input[s].clone(),
        },
        n.input[1 - s].clone(),
    ))
}

/// The node under `v` past a scalar factor on it (`v` itself's producer where there is none),
/// the factor's operand read by it alone: (that node, the factor).
fn under_factor(ix: &GraphIndex, v: &str) -> Option<(usize, Factor)> {
    let p = ix.producer(v)?;
    let Some((factor, other)) = scalar_factor(ix, p) else {
        return Some((p, Factor::Known(1.0)));
    };
    if ix.consumers(&other) != [p] || ix.is_graph_output(&other) {
        return None;
    }
    Some((ix.producer(&other)?, factor))
}

/// The keys behind the score product's second operand `kt`: itself where the product reads it
/// transposed, else before a [0, 1, 3, 2] `Transpose` or the dynamo exporter's swap of the last
/// two axes, as [batch, heads, seq, head], or before a [0, 2, 3, 1] `Transpose`, as [batch, seq,
/// heads, head] (ONNX Runtime's transpose optimizer moves ModernBERT's head transpose of the keys
/// past the rotary embedding), times or divided by a scalar or not (SDPA scales Kᵀ; a scalar
/// `Mul` commutes with the transpose): (the keys, the factor, whether they are [batch, seq,
/// heads, head]).
fn keys_of(ix: &GraphIndex, kt: &str, transposed: bool) -> Option<(String, Factor, bool)> {
    if transposed {
        return Some((kt.to_string(), Factor::Known(1.0), false));
    }
    let (t, c) = under_factor(ix, kt)?;
    if transpose(ix, t, &[0, 1, 3, 2]) {
        return Some((ix.node(t).input[0].clone(), c, false));
    }
    if transpose(ix, t, &[0, 2, 3, 1]) {
        return Some((ix.node(t).input[0].clone(), c, true));
    }
    Some((last_two_swapped(ix, t)?, c, false))
}

/// Whether `v` is one number by how it is computed (looking `depth` nodes up): a one-element
/// constant, an element of a shape (`Gather(Shape(x), j)`, j one index, a one-element
/// `Slice(Shape(x), …)`, or a `Shape` from one axis to the next), and casts, square roots,
/// squeezes, unsqueezes and arithmetic of such.
fn run_scalar(ix: &GraphIndex, v: &str, depth: usize) -> bool {
    if ix.const_f32(v).is_some_and(|c| c.len() == 1) || ix.const_i64(v).is_some_and(|c| c.len() == 1) {
        return true;
    }
    let Some(p) = ix.producer(v).filter(|_| depth > 0) else {
        return false;
    };
    let n = ix.node(p);
    n.domain().is_empty()
        && match n.op_type() {
            "Gather" => shape_element(ix, v).is_some() && ix.const_i64(&n.input[1]).is_some_and(|j| j.len() == 1),
            // From the last element, or one long: at most one element.
            "Slice" => {
                shape_slice(ix, v).is_some_and(|(_, start, end)| start == -1 || end.checked_sub(start) == Some(1))
            }
            "Shape" => match (ix.attr_i(p, "start"), ix.attr_i(p, "end")) {
                (Some(start), Some(end)) => (start >= 0) == (end >= 0) && end - start == 1,
                _ => false,
            },
            "Cast" | "Sqrt" | "Reciprocal" | "Neg" | "Squeeze" | "Unsqueeze" => run_scalar(ix, &n.input[0], depth - 1),
            "Add" | "Sub" | "Mul" | "Div" => n.input.iter().all(|x| run_scalar(ix, x, depth - 1)),
            _ => false,
        }
}

/// `v` where how it is computed gives it rank 4 (looking `depth` nodes up): see [`rank`].
fn rank4(ix: &GraphIndex, v: &str, depth: usize) -> Option<String> {
    (rank(ix, v, depth) == Some(4)).then(|| v.to_string())
}

/// The rank of `v` where how it is computed states it (looking `depth` nodes up): a `Transpose`'s
/// permutation, a `Reshape`'s stated elements ([`pieces`]), a `Squeeze` or `Unsqueeze` of a
/// known rank, through casts, slices, splits, concatenations and elementwise arithmetic (the
/// largest known rank among the operands: the others broadcast to it, as an attention's rotary
/// tables and scales do).
fn rank(ix: &GraphIndex, v: &str, depth: usize) -> Option<usize> {
    let p = ix.producer(v).filter(|_| depth > 0)?;
    let n = ix.node(p);
    if !n.domain().is_empty() {
        return None;
    }
    let of = |k: usize| n.input.get(k).and_then(|x| rank(ix, x, depth - 1));
    // Squeeze's and Unsqueeze's axes: an input from opset 13, an attribute before.
    let axes = || {
        n.input
            .get(1)
            .and_then(|a| ix.const_i64(a))
            .or_else(|| ix.attr_ints(p, "axes"))
            .map(|a| a.len())
    };
    match n.op_type() {
        "Transpose" => ix.attr_ints(p, "perm").map(|perm| perm.len()),
        "Reshape" => pieces(ix, n.input.get(1)?).map(|p| p.len()),
        "Squeeze" => of(0)?.checked_sub(axes()?),
        "Unsqueeze" => Some(of(0)? + axes()?),
        "Cast" | "Identity" | "Neg" | "Slice" | "Split" => of(0),
        "Add" | "Sub" | "Mul" | "Div" | "Concat" => (0..n.input.len()).filter_map(of).max(),
        _ => None,
    }
}

/// `Where(IsNaN(p), 0, p)` on the probabilities `p` (read by nodes `a` and `b`, nothing else):
/// its output. Exact in the op: ONNX Runtime's kernel gives 0 for a query whose every key is
/// masked, where the softmax gives NaN and the guard 0.
fn nan_guard(ix: &GraphIndex, p: &str, a: usize, b: usize) -> Option<String> {
    let (isnan, w) = if ix.node(a).op_type() == "IsNaN" {
        (a, b)
    } else {
        (b, a)
    };
    let (i, wn) = (ix.node(isnan), ix.node(w));
    let ok = i.op_type() == "IsNaN"
        && i.domain().is_empty()
        && i.input[0] == p
        && wn.op_type() == "Where"
        && wn.domain().is_empty()
        && wn.input.len() == 3
        && wn.input[0] == i.output[0]
        && wn.input[2] == p
        && ix.const_f32(&wn.input[1]).as_deref() == Some(&[0.0])
        && ix.consumers(&i.output[0]) == [w]
        && !ix.is_graph_output(&i.output[0])
        && !ix.is_graph_output(&wn.output[0]);
    ok.then(|| wn.output[0].clone())
}

/// The score product behind `v` through scalar `Mul`s and `Div`s, each value read by the next
/// node alone (the last by `reader`; any of them also by `shape`, a `Shape` node the rewrite
/// leaves without readers): (node, whether it reads its keys transposed, the scale).
fn scaled_scores(ix: &GraphIndex, v: &str, reader: usize, shape: Option<usize>) -> Option<(usize, bool, f32)> {
    let (mut x, mut reader, mut scale) = (v.to_string(), reader, 1.0f32);
    loop {
        let readers: Vec<usize> = ix.consumers(&x).iter().copied().filter(|&r| Some(r) != shape).collect();
        if readers != [reader] || ix.is_graph_output(&x) {
            return None;
        }
        let p = ix.producer(&x)?;
        let pn = ix.node(p);
        if !matches!((pn.op_type(), pn.domain()), ("Mul", "") | ("Div", "")) {
            let (mm, transposed, alpha) = scores_from(ix, &x)?;
            return Some((mm, transposed, scale * alpha));
        }
        let (c, other) = times_scalar(ix, p)?;
        scale *= c;
        x = other;
        reader = p;
    }
}

/// `v` = `Add(scaled scores, bias)`, read by `reader` alone (MPNet adds its relative position
/// bias before the mask): (the scores as [`scaled_scores`] finds them, the bias).
fn biased_scores(ix: &GraphIndex, v: &str, reader: usize) -> Option<((usize, bool, f32), String)> {
    if ix.consumers(v) != [reader] || ix.is_graph_output(v) {
        return None;
    }
    let add = ix
        .producer(v)
        .filter(|&a| ix.node(a).op_type() == "Add" && ix.node(a).domain().is_empty())?;
    let a = ix.node(add);
    (0..2).find_map(|s| Some((scaled_scores(ix, &a.input[s], add, None)?, a.input[1 - s].clone())))
}

/// `cond` = `Expand(x, Shape(scores))`, cast to bool or not, each value read by the next node
/// alone (the last by `reader`): DistilBERT's classic export under transformers 4 broadcasts its
/// mask to the scores' shape. The op broadcasts `x` itself, so the scores are not computed for
/// their shape alone: (x, whether it is cast, the `Shape` node, and the inputs after the first of
/// a `Slice` of the first query row between the two, which the op's mask takes of x instead —
/// the first-token split's, where the scores are the first token's query's).
fn expanded_to_scores(
    ix: &GraphIndex,
    cond: &str,
    reader: usize,
    scores: &str,
) -> Option<(String, bool, usize, Option<Vec<String>>)> {
    let only = |v: &str, r: usize| ix.consumers(v) == [r] && !ix.is_graph_output(v);
    if !only(cond, reader) {
        return None;
    }
    let mut p = ix.producer(cond)?;
    let cast = ix.is_op(p, "Cast");
    if cast {
        if ix.attr_i(p, "to") != Some(BOOL) || !only(&ix.node(p).input[0], p) {
            return None;
        }
        p = ix.producer(&ix.node(p).input[0])?;
    }
    let mut first_query = None;
    if ix.is_op(p, "Slice") {
        let n = ix.node(p);
        if !matches!(unit_slice(ix, p), Some((0, 1, 2 | -2))) || !only(&n.input[0], p) {
            return None;
        }
        first_query = Some(n.input[1..].to_vec());
        p = ix.producer(&n.input[0])?;
    }
    let e = ix.node(p);
    if !ix.is_op(p, "Expand") || !only(&e.input[1], p) || shape_of(ix, &e.input[1]).as_deref() != Some(scores) {
        return None;
    }
    // The slice's query axis is x's own only where x has the scores' rank.
    if first_query.is_some() && rank(ix, &e.input[0], 12) != Some(4) {
        return None;
    }
    Some((e.input[0].clone(), cast, ix.producer(&e.input[1])?, first_query))
}

/// The score product behind `v`: (node, whether it reads its keys transposed, its alpha).
fn scores_from(ix: &GraphIndex, v: &str) -> Option<(usize, bool, f32)> {
    let p = ix.producer(v)?;
    let n = ix.node(p);
    match (n.op_type(), n.domain()) {
        ("MatMul", "") => Some((p, false, 1.0)),
        ("FusedMatMul", "com.microsoft")
            if ix.attr_i(p, "transA").unwrap_or(0) == 0
                && ix.attr_i(p, "transBatchA").unwrap_or(0) == 0
                && ix.attr_i(p, "transBatchB").unwrap_or(0) == 0 =>
        {
            Some((
                p,
                ix.attr_i(p, "transB").unwrap_or(0) == 1,
                ix.attr_f(p, "alpha").unwrap_or(1.0),
            ))
        }
        _ => None,
    }
}

/// The readers of `v` other than `Shape`s (which read no values: what they feed keeps `v`
/// computed, not wrong); none where `v` is a graph output.
fn beside_shapes(ix: &GraphIndex, v: &str) -> Vec<usize> {
    if ix.is_graph_output(v) {
        return vec![];
    }
    ix.consumers(v)
        .iter()
        .copied()
        .filter(|&r| ix.node(r).op_type() != "Shape")
        .collect()
}

/// Reshape `r` of the product [batch, heads, query, head] to the shape it has: each element
/// copied (0), the heads or head size stated, -1 once, or read off a shape whose dimension is
/// the same — the product's own, or the transposed head splits of Q (`q`) or of V (`v`; not its
/// key length).
fn keeps_shape(ix: &GraphIndex, r: usize, product: &str, [q, v]: [&str; 2], [heads, head_size]: [usize; 2]) -> bool {
    if ix.attr_i(r, "allowzero").unwrap_or(0) != 0 {
        return false;
    }
    let Some(shape) = ix.node(r).input.get(1) else {
        return false;
    };
    // The shape's elements: Ok(constant) or Err((value read by Shape, its dimension)).
    let mut elements: Vec<Result<i64, (String, i64)>> = vec![];
    if let Some(c) = ix.const_i64(shape) {
        elements.extend(c.into_iter().map(Ok));
    } else {
        let Some(cat) = ix
            .producer(shape)
            .filter(|&c| ix.node(c).op_type() == "Concat" && ix.attr_i(c, "axis") == Some(0))
        else {
            return false;
        };
        for piece in &ix.node(cat).input {
            if let Some(c) = ix.const_i64(piece) {
                elements.extend(c.into_iter().map(Ok));
            } else if let Some(d) = shape_dim(ix, piece) {
                elements.push(Err(d));
            } else {
                return false;
            }
        }
    }
    // Where the transposed splits come from: Transpose(split, [0, 2, 1, 3]).
    let split_of = |x: &str| {
        ix.producer(x)
            .filter(|&t| transpose(ix, t, &[0, 2, 1, 3]))
            .map(|t| ix.node(t).input[0].clone())
    };
    let mut free = 0;
    elements.len() == 4
        && elements.iter().enumerate().all(|(k, e)| match e {
            Ok(0) => true,
            Ok(-1) => {
                free += 1;
                free == 1
            }
            Ok(c) => (k == 1 && *c == heads as i64) || (k == 3 && *c == head_size as i64),
            Err((x, j)) => {
                *j == k as i64
                    && (x == product
                        || split_of(x).as_deref() == Some(q)
                        || (k != 2 && split_of(x).as_deref() == Some(v)))
            }
        })
}

/// `Unsqueeze(Gather(Shape(x), j))` (a one-element piece of a shape), j counted from the first
/// axis: (x, j).
fn shape_dim(ix: &GraphIndex, piece: &str) -> Option<(String, i64)> {
    let u = ix
        .producer(piece)
        .filter(|&u| ix.node(u).op_type() == "Unsqueeze" && ix.node(u).domain().is_empty())?;
    let axes = ix
        .node(u)
        .input
        .get(1)
        .and_then(|a| ix.const_i64(a))
        .or_else(|| ix.attr_ints(u, "axes"))?;
    if axes != [0] {
        return None;
    }
    shape_element(ix, &ix.node(u).input[0]).filter(|&(_, j)| j >= 0)
}

/// `v` = `Shape(x)`, the whole shape: x.
fn shape_of(ix: &GraphIndex, v: &str) -> Option<String> {
    let sh = ix.producer(v)?;
    ix.whole_shape(sh).then(|| ix.node(sh).input[0].clone())
}

/// `v` = `Gather(Shape(x), j)` on axis 0, j a constant scalar: (x, j).
fn shape_element(ix: &GraphIndex, v: &str) -> Option<(String, i64)> {
    let g = ix
        .producer(v)
        .filter(|&g| ix.node(g).op_type() == "Gather" && ix.node(g).domain().is_empty())?;
    if ix.attr_i(g, "axis").unwrap_or(0) != 0 {
        return None;
    }
    let j = match ix.const_i64(ix.node(g).input.get(1)?)?[..] {
        [j] => j,
        _ => return None,
    };
    Some((shape_of(ix, &ix.node(g).input[0])?, j))
}

/// `v` = `Slice(Shape(x), start, end)` on axis 0 with step 1: (x, start, end).
fn shape_slice(ix: &GraphIndex, v: &str) -> Option<(String, i64, i64)> {
    let s = ix.producer(v)?;
    let (start, end, axis) = unit_slice(ix, s)?;
    (axis == 0).then_some(())?;
    Some((shape_of(ix, &ix.node(s).input[0])?, start, end))
}

/// Node `s` = `Slice` of one axis with constant one-element bounds and step 1: (start, end, the
/// axis, 0 where not stated).
fn unit_slice(ix: &GraphIndex, s: usize) -> Option<(i64, i64, i64)> {
    let n = ix.node(s);
    if n.op_type() != "Slice" || !n.domain().is_empty() {
        return None;
    }
    let one = |k: usize| match ix.const_i64(n.input.get(k)?)?[..] {
        [v] => Some(v),
        _ => None,
    };
    let stated = |k: usize| n.input.get(k).filter(|v| !v.is_empty()).is_some();
    let axis = if stated(3) { one(3)? } else { 0 };
    if stated(4) && one(4) != Some(1) {
        return None;
    }
    Some((one(1)?, one(2)?, axis))
}

/// `v` = Transpose(x, perm), times or divided by a scalar or not, read by `reader` alone (and
/// by `Shape`s): (x [batch, seq, heads, head], the factor).
fn heads_of(ix: &GraphIndex, v: &str, perm: &[i64], reader: usize) -> Option<(String, f32)> {
    if beside_shapes(ix, v) != [reader] {
        return None;
    }
    let mut p = ix.producer(v)?;
    let mut c = 1.0;
    if matches!(ix.node(p).op_type(), "Mul" | "Div") && ix.node(p).domain().is_empty() {
        let (s, other) = times_scalar(ix, p)?;
        // Besides the scale, only `Shape`s may read the heads (transformers 4's SDPA reads the
        // head size off Q's for the scale).
        if beside_shapes(ix, &other) != [p] {
            return None;
        }
        c = s;
        p = ix.producer(&other)?;
    }
    if transpose(ix, p, perm) {
        return Some((ix.node(p).input[0].clone(), c));
    }
    // The dynamo exporter's Kᵀ: the last two axes of K [batch, heads, seq, head] swapped through
    // rank 3.
    if perm != [0, 2, 3, 1] {
        return None;
    }
    let kt = last_two_swapped(ix, p)?;
    let t = ix.producer(&kt).filter(|&t| transpose(ix, t, &[0, 2, 1, 3]))?;
    Some((ix.node(t).input[0].clone(), c))
}

/// Reshape node `r` gives `x` with its last two axes swapped, as the dynamo exporter writes a
/// transpose of them: `Reshape(Transpose(Reshape(x, [-1, x[-2], x[-1]]), [0, 2, 1]), [x[:-2],
/// x[-1], x[-2]])`, the dimensions read off `Shape(x)`, each value read by the next node alone
/// (x also by `Shape`s): `x`.
fn last_two_swapped(ix: &GraphIndex, r: usize) -> Option<String> {
    let reshape = |i: usize| {
        let n = ix.node(i);
        n.op_type() == "Reshape" && n.domain().is_empty() && ix.attr_i(i, "allowzero").unwrap_or(0) == 0
    };
    if !reshape(r) {
        return None;
    }
    let t = ix
        .producer(&ix.node(r).input[0])
        .filter(|&t| transpose(ix, t, &[0, 2, 1]))?;
    let r1 = ix.producer(&ix.node(t).input[0]).filter(|&r1| reshape(r1))?;
    let x = ix.node(r1).input[0].clone();
    let single = |v: &str, reader: usize| ix.consumers(v) == [reader] && !ix.is_graph_output(v);
    if !single(&ix.node(t).input[0], t) || !single(&ix.node(r).input[0], r) || beside_shapes(ix, &x) != [r1] {
        return None;
    }
    // The pieces of each shape: (start, end) slices of Shape(x), or a constant.
    let pieces = |shape: &str| {
        concat_pieces(ix, shape, |p| {
            shape_slice(ix, p)
                .filter(|(y, ..)| *y == x)
                .map(|(_, start, end)| (start, end))
        })
    };
    const ALL: i64 = i64::MIN;
    let first = pieces(ix.node(r1).input.get(1)?)?;
    let last = pieces(ix.node(r).input.get(1)?)?;
    let is = |got: &Result<i64, (i64, i64)>, start: i64, end: i64| {
        // A slice's start at or before the first axis and end at or after the last mean the same.
        matches!(got, Err((s, e)) if (*s == start || (start == ALL && (*s <= -4 || *s == 0))) && (*e == end || (end == i64::MAX && *e >= 4)))
    };
    (matches!(first[..], [Ok(-1), ref a, ref b] if is(a, -2, -1) && is(b, -1, i64::MAX))
        && matches!(last[..], [ref a, ref b, ref c] if is(a, ALL, -2) && is(b, -1, i64::MAX) && is(c, -2, -1)))
    .then_some(x)
}

/// The last two elements of a 4-element Reshape shape (heads, head size) where they are
/// constant: in a constant shape, or in the constant pieces that end a `Concat` of it.
fn heads_stated(ix: &GraphIndex, shape: &str) -> Option<[i64; 2]> {
    if let Some(s) = ix.const_i64(shape) {
        return (s.len() == 4).then(|| [s[2], s[3]]);
    }
    let c = ix.producer(shape).filter(|&c| ix.node(c).op_type() == "Concat")?;
    let mut tail = vec![];
    for piece in ix.node(c).input.iter().rev() {
        let Some(p) = ix.const_i64(piece) else { break };
        tail.splice(0..0, p);
    }
    (tail.len() >= 2).then(|| [tail[tail.len() - 2], tail[tail.len() - 1]])
}

fn transpose(ix: &GraphIndex, i: usize, perm: &[i64]) -> bool {
    let n = ix.node(i);
    n.op_type() == "Transpose" && n.domain().is_empty() && ix.attr_ints(i, "perm").as_deref() == Some(perm)
}

/// Node `p` = `Mul` or `Div` of a value by a scalar known before the run: (the factor it
/// multiplies by, that value).
fn times_scalar(ix: &GraphIndex, p: usize) -> Option<(f32, String)> {
    let n = ix.node(p);
    if !matches!(n.op_type(), "Mul" | "Div") || !n.domain().is_empty() {
        return None;
    }
    let (c, other) = scalar_operand(ix, p)?;
    Some((if n.op_type() == "Mul" { c } else { 1.0 / c }, other))
}

/// A binary node with one scalar operand known before the run: (the scalar, the other input).
/// `Div` only by the scalar.
fn scalar_operand(ix: &GraphIndex, i: usize) -> Option<(f32, String)> {
    let n = ix.node(i);
    if n.input.len() != 2 {
        return None;
    }
    let slots: &[usize] = if n.op_type() == "Div" { &[1] } else { &[1, 0] };
    slots.iter().find_map(|&s| match scalar_value(ix, &n.input[s], 0) {
        Some(c) if c.is_finite() && c != 0.0 => Some((c, n.input[1 - s].clone())),
        _ => None,
    })
}

/// The value of scalar `v` where the graph fixes it: a constant, or arithmetic (`Sqrt`, `Div`,
/// `Mul`, `Reciprocal`, float `Cast`s) on constants and head sizes read off a head split's shape —
/// transformers 4's SDPA export scales Q and K each by √(1/√d), d sliced from Q's shape at run
/// time. Computed in float32, as the run computes it.
fn scalar_value(ix: &GraphIndex, v: &str, depth: usize) -> Option<f32> {
    if let Some(c) = ix.const_f32(v) {
        return match c[..] {
            [c] => Some(c),
            _ => None,
        };
    }
    if let Some(c) = ix.const_i64(v) {
        return match c[..] {
            [c] => Some(c as f32),
            _ => None,
        };
    }
    let p = ix.producer(v)?;
    let n = ix.node(p);
    if depth > 8 || !n.domain().is_empty() {
        return None;
    }
    let arg = |k: usize| scalar_value(ix, n.input.get(k)?, depth + 1);
    match n.op_type() {
        "Sqrt" => arg(0).map(f32::sqrt),
        "Reciprocal" => arg(0).map(|x| 1.0 / x),
        "Div" => Some(arg(0)? / arg(1)?),
        "Mul" => Some(arg(0)? * arg(1)?),
        // To float32 (1) only: the value is then what the run computes.
        "Cast" if ix.attr_i(p, "to") == Some(1) => arg(0),
        "Slice" | "Gather" => last_dim(ix, v).map(|d| d as f32),
        _ => None,
    }
}

/// `v` = the last element of a head split's shape (`Slice(Shape(x), -1, end)` or
/// `Gather(Shape(x), -1)`): the head size its Reshape states.
fn last_dim(ix: &GraphIndex, v: &str) -> Option<i64> {
    let last = |j: i64| j == -1 || j == 3;
    let x = match shape_slice(ix, v) {
        Some((x, start, end)) if last(start) && end >= 4 => x,
        Some(_) => return None,
        None => shape_element(ix, v).filter(|&(_, j)| last(j))?.0,
    };
    // The shape of [batch, heads, seq, head] transposed from a split [batch, seq, heads, head].
    let mut t = ix.producer(&x)?;
    if ix.node(t).op_type() == "Transpose" {
        if !transpose(ix, t, &[0, 2, 1, 3]) {
            return None;
        }
        t = ix.producer(&ix.node(t).input[0])?;
    }
    let r = ix.node(t);
    if r.op_type() != "Reshape" || !r.domain().is_empty() {
        return None;
    }
    let [_, d] = heads_stated(ix, r.input.get(1)?)?;
    (d > 0).then_some(d)
}

/// Raises the model's default opset to [`OPSET`] where its graph means the same there, or why not.
fn raise_opset(model: &mut ModelProto) -> Result<(), String> {
    let from = default_opset(model);
    if from >= OPSET {
        return Ok(());
    }
    if from < 13 {
        return Err(format!("the model's opset {from} is older than 13"));
    }
    if !model.functions.is_empty() {
        return Err("the model has local functions".into());
    }
    let g = model.graph.as_mut().ok_or("no graph")?;
    let mut taken = HashSet::new();
    names_within(g, &mut taken);
    raise_graph(g, from, &mut taken)?;
    for o in &mut model.opset_import {
        if o.domain().is_empty() || o.domain() == "ai.onnx" {
            o.version = Some(OPSET);
        }
    }
    Ok(())
}

/// The names `g` and its subgraphs define, into `taken`.
fn names_within(g: &GraphProto, taken: &mut HashSet<String>) {
    taken.extend(crate::onnx::edit::names(g));
    for n in &g.node {
        for a in &n.attribute {
            a.g.iter().chain(&a.graphs).for_each(|sub| names_within(sub, taken));
        }
    }
}

/// `g`'s nodes, and its subgraphs' (an `If`'s branches: their ops are checked and rewritten as
/// the graph's), rewritten for opset [`OPSET`] from `from`.
fn raise_graph(g: &mut GraphProto, from: i64, taken: &mut HashSet<String>) -> Result<(), String> {
    let mut axes = vec![];
    for n in &mut g.node {
        for a in &mut n.attribute {
            if a.r#type() == AttributeType::Graph && a.g.is_none() {
                return Err(format!("node '{}' has a graph attribute without its graph", n.name()));
            }
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                raise_graph(sub, from, taken)?;
            }
        }
        if !n.domain().is_empty() && n.domain() != "ai.onnx" {
            continue;
        }
        let op = n.op_type().to_string();
        if CHANGED.contains(&op.as_str()) {
            return Err(format!(
                "node '{}' is a {op}, whose meaning changed by opset {OPSET}",
                n.name()
            ));
        }
        if from < 18 && REDUCE_AXES_INPUT.contains(&op.as_str()) {
            if let Some(at) = n.attribute.iter().position(|a| a.name() == "axes") {
                let a = n.attribute.remove(at);
                let name = crate::onnx::edit::fresh_name(taken, &format!("{}_axes", n.name()));
                axes.push(tensor::from_i64(&name, &[a.ints.len()], &a.ints));
                n.input.truncate(1);
                n.input.push(name);
            }
        }
        if from < 18 && op == "Split" && n.input.get(1).is_none_or(|s| s.is_empty()) {
            if !n.attribute.iter().any(|a| a.name() == "num_outputs") {
                n.attribute.push(attr_int("num_outputs", n.output.len() as i64));
            }
            n.input.truncate(1);
        }
    }
    g.initializer.extend(axes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{constant, with_domain};

    fn i64s(name: &str, v: &[i64]) -> NodeProto {
        constant(name, tensor::from_i64("", &[v.len()], v))
    }

    fn graph(nodes: Vec<NodeProto>) -> GraphProto {
        GraphProto {
            node: nodes,
            ..Default::default()
        }
    }

    /// Ranks from the ops that state them, through the ops that keep or broadcast them; `x` is a
    /// graph input of no stated rank.
    #[test]
    fn rank_is_read_off_how_a_value_is_computed() {
        let g = graph(vec![
            i64s("split_shape", &[0, 0, 12, 32]),
            node("Reshape", "split", &["x", "split_shape"], &["split"]),
            with_attrs(
                node("Transpose", "heads", &["split"], &["heads"]),
                vec![attr_ints("perm", &[0, 2, 1, 3])],
            ),
            constant("half", tensor::from_f32("", &[], &[0.5])),
            node("Mul", "scaled", &["heads", "half"], &["scaled"]),
            node("Cast", "cast", &["scaled"], &["cast"]),
            i64s("axis1", &[1]),
            node("Squeeze", "squeezed", &["cast", "axis1"], &["squeezed"]),
            node("Unsqueeze", "unsqueezed", &["squeezed", "axis1"], &["unsqueezed"]),
            node("Unsqueeze", "of_input", &["x", "axis1"], &["of_input"]),
            // A reshape to [batch, 12, 32], the batch read off x's shape.
            node("Shape", "shape", &["x"], &["shape"]),
            constant("zero", tensor::from_i64("", &[], &[0])),
            node("Gather", "batch", &["shape", "zero"], &["batch"]),
            i64s("axis0", &[0]),
            node("Unsqueeze", "batch1", &["batch", "axis0"], &["batch1"]),
            i64s("c12", &[12]),
            i64s("c32", &[32]),
            with_attrs(
                node("Concat", "dyn", &["batch1", "c12", "c32"], &["dyn"]),
                vec![attr_int("axis", 0)],
            ),
            node("Reshape", "rank3", &["x", "dyn"], &["rank3"]),
            node("Relu", "relu", &["heads"], &["relu"]),
            with_domain(node("Mul", "ms", &["heads", "half"], &["ms"]), "com.microsoft"),
        ]);
        let ix = GraphIndex::new(&g);
        let r = |v: &str| rank(&ix, v, 8);
        assert_eq!(r("split"), Some(4), "a Reshape states its rank by its shape's length");
        assert_eq!(r("heads"), Some(4), "a Transpose by its permutation");
        assert_eq!(r("scaled"), Some(4), "a scalar broadcasts to the other operand's rank");
        assert_eq!(r("cast"), Some(4));
        assert_eq!(r("squeezed"), Some(3));
        assert_eq!(r("unsqueezed"), Some(4));
        assert_eq!(
            r("rank3"),
            Some(3),
            "a shape concatenated of constants and shape elements"
        );
        assert_eq!(r("x"), None, "a graph input states none here");
        assert_eq!(r("of_input"), None, "an Unsqueeze of no known rank");
        assert_eq!(r("relu"), None, "an op not read through");
        assert_eq!(r("ms"), None, "another domain's op");
        assert_eq!(rank(&ix, "scaled", 1), None, "the Transpose lies past the depth");
        assert_eq!(rank4(&ix, "scaled", 8).as_deref(), Some("scaled"));
        assert_eq!(rank4(&ix, "rank3", 8), None);
    }

    /// The opset raise rewrites an `If`'s branches as it does the graph (a `ReduceMean`'s axes
    /// become an input, defined in the branch), and refuses a changed op inside one, naming it.
    #[test]
    fn the_opset_is_raised_through_subgraphs() {
        let branch = |nodes: Vec<NodeProto>| GraphProto {
            node: nodes,
            output: vec![crate::onnx::build::value_info(
                "y",
                crate::onnx::proto::tensor_proto::DataType::Float,
                &[],
            )],
            ..Default::default()
        };
        let graph_attr = |name: &str, g: GraphProto| crate::onnx::proto::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(g),
            ..Default::default()
        };
        let model = |then: NodeProto| {
            let n = with_attrs(
                node("If", "if", &["cond"], &["out"]),
                vec![
                    graph_attr("then_branch", branch(vec![then])),
                    graph_attr("else_branch", branch(vec![node("Identity", "id", &["x"], &["y"])])),
                ],
            );
            crate::onnx::build::model(
                GraphProto {
                    node: vec![n],
                    ..Default::default()
                },
                17,
            )
        };
        let mean = with_attrs(
            node("ReduceMean", "mean", &["x"], &["y"]),
            vec![attr_ints("axes", &[1])],
        );
        let mut m = model(mean);
        raise_opset(&mut m).unwrap();
        assert_eq!(default_opset(&m), OPSET);
        let then = m.graph.as_ref().unwrap().node[0].attribute[0].g.as_ref().unwrap();
        let r = &then.node[0];
        assert!(r.attribute.iter().all(|a| a.name() != "axes"), "the attribute is gone");
        assert_eq!(r.input.len(), 2);
        let axes = then
            .initializer
            .iter()
            .find(|t| t.name() == r.input[1])
            .expect("axes in the branch");
        assert_eq!(tensor::to_i64(axes).unwrap(), [1]);

        let mut changed = model(node("DFT", "dft", &["x"], &["y"]));
        let why = raise_opset(&mut changed).unwrap_err();
        assert!(why.contains("'dft'") && why.contains("DFT"), "{why}");
    }

    /// One number by how it is computed: constants of one element, single elements of a shape
    /// and arithmetic of such; not a slice of several elements, nor anything read off a tensor's
    /// values.
    #[test]
    fn run_scalars_are_single_elements_of_shapes_and_their_arithmetic() {
        let g = graph(vec![
            node("Shape", "shape", &["x"], &["shape"]),
            constant("last", tensor::from_i64("", &[], &[-1])),
            node("Gather", "d", &["shape", "last"], &["d"]),
            i64s("two", &[2]),
            node("Gather", "two_dims", &["shape", "two"], &["two_dims"]),
            i64s("pair", &[1, 2]),
            node("Gather", "pair_dims", &["shape", "pair"], &["pair_dims"]),
            i64s("from_last", &[-1]),
            i64s("end", &[i64::MAX]),
            node("Slice", "tail", &["shape", "from_last", "end"], &["tail"]),
            i64s("zero", &[0]),
            node("Slice", "head2", &["shape", "zero", "two"], &["head2"]),
            i64s("three", &[3]),
            node("Slice", "third", &["shape", "two", "three"], &["third"]),
            with_attrs(node("Cast", "df", &["d"], &["df"]), vec![attr_int("to", FLOAT)]),
            node("Sqrt", "root", &["df"], &["root"]),
            constant("one", tensor::from_f32("", &[], &[1.0])),
            node("Div", "scale", &["one", "root"], &["scale"]),
            node("Mul", "with_x", &["root", "x"], &["with_x"]),
            node("Relu", "relu", &["root"], &["relu"]),
            with_attrs(
                node("Shape", "one_axis", &["x"], &["one_axis"]),
                vec![attr_int("start", 1), attr_int("end", 2)],
            ),
            with_attrs(
                node("Shape", "two_axes", &["x"], &["two_axes"]),
                vec![attr_int("start", 0), attr_int("end", 2)],
            ),
            with_attrs(
                node("Shape", "across", &["x"], &["across"]),
                vec![attr_int("start", -1), attr_int("end", 0)],
            ),
            node("Unsqueeze", "d1", &["d", "zero"], &["d1"]),
            node("Squeeze", "tail0", &["tail", "zero"], &["tail0"]),
        ]);
        let ix = GraphIndex::new(&g);
        let s = |v: &str| run_scalar(&ix, v, 8);
        assert!(s("one") && s("two"), "constants of one element");
        assert!(!s("pair"), "a constant of two elements");
        assert!(s("d"), "an element of a shape");
        assert!(s("two_dims"), "an element of a shape, its index of one element");
        assert!(!s("pair_dims"), "two elements of a shape");
        assert!(s("tail"), "a slice from the last element");
        assert!(s("third"), "a slice one element long");
        assert!(!s("head2"), "a slice two elements long");
        assert!(s("root") && s("scale"), "casts, roots and arithmetic of such");
        assert!(!s("with_x"), "arithmetic with a tensor");
        assert!(!s("relu"), "an op not read through");
        assert!(!s("shape") && !s("x"), "a whole shape, a graph input");
        assert!(s("one_axis"), "a Shape from one axis to the next");
        assert!(!s("two_axes") && !s("across"), "a Shape of two axes, or of none");
        assert!(s("d1") && s("tail0"), "a one-element value unsqueezed or squeezed");
        assert!(!run_scalar(&ix, "scale", 2), "the shape element lies past the depth");
    }
}
