//! Two length groups per batch for the attention of a packed model (`--unpad` with one ONNX
//! `Attention` op per attention).
//!
//! Packed, everything but each attention's scores runs on the real tokens; the scores run on the
//! padded [batch, sequence] layout, so a batch of one long and many short sequences pays the long
//! one's length squared for every sequence. Here each batch is cut in two groups by length, each
//! padded only to its own longest sequence, and each attention runs once per group:
//!
//! - once per run, from `attention_mask`: each sequence's extent (its last marked position + 1,
//!   at least 1: the first token is always a row), the sequences sorted by it (`TopK`), and the cut
//!   k that minimises k·(extent of the k-th)² + (batch − k)·(longest)², the two groups' padded
//!   score sizes (k = 0: one group). Group A is the first max(k, 1) sorted sequences padded to the
//!   k-th's extent (at k = 0 one sequence's first token, read by nothing), group B the rest padded
//!   to the longest. Their [sequences, length] indexes of packed rows are rows of the packing's
//!   padded index, and each packed row's place in the two groups' joined contexts is computed
//!   once too.
//! - per attention: Q, K and V gathered from the rows by each group's index, the mask's rows of
//!   each group's sequences (its first axis, when that is the batch's) cut to the group's length
//!   on the query and key axes, the `Attention` once per group, and the two contexts joined and
//!   gathered back to rows.
//!
//! Each sequence keeps its positions (0 .. its group's length, which covers every real token),
//! and the keys cut off are padding the mask already kept out of every score, so every real
//! token's context is the one of the padded attention (the logits stay the same).
//!
//! An attention is taken where its Q, K and V are the packing's padded gathers of rows through
//! reshapes alone (the head split, and the op's [batch, sequence, heads·head] view: the op's
//! inputs are the padded layout's [batch, sequence, ·]) and its context reaches the packing's
//! gather back to rows through reshapes and the [batch·sequence, ·] flatten, read by nothing else
//! but `Shape`s of values whose sizes are known (a reshape to [0, 0, heads, head]: they read
//! the packing's batch and sequence sizes instead). The others stay as they are: the last
//! layer's first-token query, DeBERTa's attention (its Q and K are read by the relative position
//! terms too) and ModernBERT's (rotated between the projections and the op).

use std::collections::HashMap;

use crate::onnx::build::{attr_int, attr_tensor, node, with_attrs};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{ModelProto, NodeProto};
use crate::onnx::{tensor, GraphIndex, Patch};

use super::pack::{Constants, Packing};
use super::PassError;

/// One attention taken: its node, its Q/K/V sources (packed rows), its mask's source (what
/// the op's `Expand` to [·, ·, query, key] reads, or the mask), the `Shape`s of each of its
/// context's values (with that value's sizes after batch and sequence), and the node that gathers
/// its context back to rows.
struct Taken {
    attention: usize,
    sources: [String; 3],
    mask: String,
    shapes: Vec<(Vec<usize>, Vec<i64>)>,
    back: usize,
}

/// Rewrites the attentions of `model` that read the packing `p`'s padded layout into two length
/// groups; returns the model and how many attentions were rewritten.
pub fn two_length_groups(model: &ModelProto, p: &Packing) -> Result<(ModelProto, usize), PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    let taken: Vec<Taken> = (0..g.node.len()).filter_map(|i| matched(&ix, i, p)).collect();
    let Some(first) = taken.iter().map(|t| t.attention).min() else {
        return Ok((model.clone(), 0));
    };
    let mut out = model.clone();
    let g = crate::passes::graph_mut(&mut out)?;
    let mut patch = Patch::new(g);
    patch.reserve_node_names(g);
    let groups = Groups::new(p, first, &mut patch);
    // Each mask source's two group masks, made where its first attention is.
    let mut masks: HashMap<String, [String; 2]> = HashMap::new();
    for t in &taken {
        let a = g.node[t.attention].clone();
        let base = a.name().to_string();
        let mut nodes = vec![];
        let fresh = |what: &str, patch: &mut Patch| patch.fresh_name(&format!("{base}/{what}"));
        let mask = masks
            .entry(t.mask.clone())
            .or_insert_with(|| groups.masks(&t.mask, &base, &mut nodes, &mut patch))
            .clone();
        let mut contexts = vec![];
        for (k, grp) in groups.groups.iter().enumerate() {
            let tag = ["a", "b"][k];
            let mut inputs = vec![];
            for (x, what) in t.sources.iter().zip(["Q", "K", "V"]) {
                let o = fresh(&format!("group_{tag}/{what}"), &mut patch);
                nodes.push(with_attrs(
                    node("Gather", &o, &[x, &grp.index], &[&o]),
                    vec![attr_int("axis", 0)],
                ));
                inputs.push(o);
            }
            inputs.push(mask[k].clone());
            let (context, flat) = (
                fresh(&format!("group_{tag}/context"), &mut patch),
                fresh(&format!("group_{tag}/context_rows"), &mut patch),
            );
            let mut op = a.clone();
            op.name = Some(fresh(&format!("group_{tag}/Attention"), &mut patch));
            op.input = inputs;
            op.output = vec![context.clone()];
            nodes.push(op);
            nodes.push(with_attrs(
                node("Flatten", &flat, &[&context], &[&flat]),
                vec![attr_int("axis", 2)],
            ));
            contexts.push(flat);
        }
        patch.replace_node(t.attention, nodes);
        // The context's sizes, [batch, sequence, ·], from the packing's instead.
        for (readers, tail) in &t.shapes {
            let sizes = patch.fresh_name(&format!("{base}/context_tail"));
            patch.add_initializer(tensor::from_i64(&sizes, &[tail.len()], tail));
            for &s in readers {
                let n = &g.node[s];
                patch.replace_node(
                    s,
                    vec![with_attrs(
                        node("Concat", n.name(), &[&p.batch, &p.seq, &sizes], &[&n.output[0]]),
                        vec![attr_int("axis", 0)],
                    )],
                );
            }
        }
        let back = g.node[t.back].clone();
        let joined = patch.fresh_name(&format!("{base}/group_contexts"));
        let contexts: Vec<&str> = contexts.iter().map(String::as_str).collect();
        patch.replace_node(
            t.back,
            vec![
                with_attrs(
                    node("Concat", &joined, &contexts, &[&joined]),
                    vec![attr_int("axis", 0)],
                ),
                with_attrs(
                    node("Gather", back.name(), &[&joined, &groups.row_place], &[&back.output[0]]),
                    vec![attr_int("axis", 0)],
                ),
            ],
        );
    }
    patch.remove_unused();
    patch
        .apply(g)
        .map_err(|e| PassError::Internal(format!("two length groups for the attention: {e}")))?;
    Ok((out, taken.len()))
}

/// Attention node `i`, if it reads the padded layout of `p` as this rewrite needs.
fn matched(ix: &GraphIndex, i: usize, p: &Packing) -> Option<Taken> {
    let n = ix.node(i);
    // The 3-D form ([batch, sequence, heads·head], told its heads) with a mask and nothing else:
    // without a mask the padded keys count in the scores, and cutting them would change them.
    if !ix.is_op(i, "Attention")
        || ix.attr_i(i, "q_num_heads").is_none()
        || n.input.len() != 4
        || n.input[3].is_empty()
        || n.output.len() != 1
    {
        return None;
    }
    let axis0 = |j: usize| ix.attr_i(j, "axis").unwrap_or(0) == 0;
    let source = |v: &str| -> Option<String> {
        let mut v = v.to_string();
        loop {
            let j = ix.producer(&v)?;
            let m = ix.node(j);
            if ix.is_op(j, "Reshape") {
                v = m.input[0].clone();
            } else if ix.is_op(j, "Gather") && axis0(j) && m.input[1] == p.padded {
                return Some(m.input[0].clone());
            } else {
                return None;
            }
        }
    };
    let sources = [source(&n.input[0])?, source(&n.input[1])?, source(&n.input[2])?];
    // The context: reshapes, the flatten to [batch·sequence, ·], the gather of the packed rows,
    // each value read by the next step alone, or by `Shape`s too where its shape is known
    // (transformers 4's exports read the batch and sequence sizes off the context).
    let mut v = n.output[0].clone();
    let mut flattened = false;
    let mut shapes = vec![];
    loop {
        if ix.is_graph_output(&v) {
            return None;
        }
        let (sizes, next): (Vec<usize>, Vec<usize>) = ix.consumers(&v).iter().partition(|&&j| ix.whole_shape(j));
        let [j] = next[..] else { return None };
        if ix.node(j).input[0] != v {
            return None;
        }
        if !sizes.is_empty() {
            shapes.push((sizes, batch_sequence_tail(ix, &v)?));
        }
        if ix.is_op(j, "Reshape") && !flattened {
            v = ix.node(j).output[0].clone();
        } else if ix.is_op(j, "Flatten") && ix.attr_i(j, "axis") == Some(2) && !flattened {
            flattened = true;
            v = ix.node(j).output[0].clone();
        } else if flattened && ix.is_op(j, "Gather") && axis0(j) && ix.node(j).input[1] == p.rows {
            let mask = match ix.producer(&n.input[3]) {
                Some(e) if ix.is_op(e, "Expand") => ix.node(e).input[0].clone(),
                _ => n.input[3].clone(),
            };
            return Some(Taken {
                attention: i,
                sources,
                mask,
                shapes,
                back: j,
            });
        } else {
            return None;
        }
    }
}

/// The sizes after the first two of `v`, where `v` is [batch, sequence, ·] by a `Reshape` to a
/// constant shape that keeps the first two sizes (0, 0) and states the others.
fn batch_sequence_tail(ix: &GraphIndex, v: &str) -> Option<Vec<i64>> {
    let r = ix.producer(v)?;
    let n = ix.node(r);
    if !ix.is_op(r, "Reshape") || ix.attr_i(r, "allowzero").unwrap_or(0) != 0 {
        return None;
    }
    let shape = ix.const_i64(n.input.get(1)?)?;
    match shape.as_slice() {
        [0, 0, tail @ ..] if tail.iter().all(|&d| d > 0) => Some(tail.to_vec()),
        _ => None,
    }
}

/// One length group: its sequences, their packed rows, and its length (twice, as slice ends).
struct Group {
    /// [sequences]: the group's sequences (batch indexes).
    order: String,
    /// [sequences, length]: each position's packed row (padding: row 0, as the packing's).
    index: String,
    /// [2]: the group's length, twice.
    lengths2: String,
    /// [4]: 1, 1, length, length.
    mask_shape: String,
}

/// The index values both groups share, computed once per model run.
struct Groups {
    groups: [Group; 2],
    /// [tokens]: each packed row's place in the two groups' contexts, joined.
    row_place: String,
    one: String,
    zeros2: String,
    axes23: String,
    /// [4]: 1, 1, 1, 1 (a mask of any rank up to 4 made rank 4).
    ones4: String,
}

impl Groups {
    /// The nodes computing the groups from the packing `p`, placed before node `at`.
    fn new(p: &Packing, at: usize, patch: &mut Patch) -> Groups {
        let mut c = |name: &str, dims: &[usize], v: &[i64]| {
            let n = patch.fresh_name(&format!("groups_{name}"));
            patch.add_initializer(tensor::from_i64(&n, dims, v));
            n
        };
        let Constants {
            zero: c0,
            one: c1,
            minus_one: cm1,
            max: cmax,
            scalar_zero: s0,
            scalar_one: s1,
        } = &p.constants;
        let (zeros2, axes23) = (c("zeros2", &[2], &[0, 0]), c("axes23", &[2], &[2, 3]));
        let ones4 = c("ones4", &[4], &[1, 1, 1, 1]);
        let names = [
            "marked",
            "marked64",
            "seq_plus_1",
            "seq_plus_1_scalar",
            "positions",
            "marked_positions",
            "extent_or_0",
            "extent",
            "sorted",
            "order",
            "sorted_head",
            "before",
            "batch_scalar",
            "cut",
            "longest",
            "before2",
            "cost_a",
            "rest",
            "longest2",
            "cost_b",
            "cost",
            "k",
            "size_a",
            "size_a_minus_1",
            "extent_k",
            "length_a",
            "order_a",
            "order_b",
            "padded_a",
            "padded_b",
            "index_a",
            "index_b",
            "lengths2_a",
            "lengths2_b",
            "shape_a",
            "shape_b",
            "zeros_b",
            "rank",
            "in_a",
            "start_a",
            "size_a_rows",
            "rank_b",
            "offset_b",
            "start_b",
            "start",
            "start_col",
            "seq_scalar",
            "seq_range",
            "places",
            "places_flat",
            "row_place",
        ]
        .map(|s| patch.fresh_name(&format!("groups_{s}")));
        let [marked, marked64, seq1, seq1s, positions, mpos, ext0, ext, sorted, order, head, before, bsc, cut, longest, before2, cost_a, rest, longest2, cost_b, cost, k, size_a, size_a1, ext_k, len_a, order_a, order_b, pad_a, pad_b, index_a, index_b, len2_a, len2_b, shape_a, shape_b, zeros_b, rank, in_a, start_a, rows_a, rank_b, off_b, start_b, start, start_col, seqs, seq_range, places, places_flat, row_place] =
            names.each_ref().map(|s| s.as_str());
        let zero_value = tensor::from_i64("value", &[1], &[0]);
        let axis = |n: NodeProto, a: i64| with_attrs(n, vec![attr_int("axis", a)]);
        let (mask, batch, seq) = (p.mask.as_str(), p.batch.as_str(), p.seq.as_str());
        let nodes = [
            // Each sequence's extent: its last marked position + 1, at least 1.
            with_attrs(
                node("Cast", "/groups/Marked", &[mask], &[marked]),
                vec![attr_int("to", DataType::Bool as i64)],
            ),
            with_attrs(
                node("Cast", "/groups/Marked64", &[marked], &[marked64]),
                vec![attr_int("to", DataType::Int64 as i64)],
            ),
            node("Add", "/groups/SeqPlus1", &[seq, c1], &[seq1]),
            node("Squeeze", "/groups/SeqPlus1Scalar", &[seq1], &[seq1s]),
            node("Range", "/groups/Positions", &[s1, seq1s, s1], &[positions]),
            node("Mul", "/groups/MarkedPositions", &[marked64, positions], &[mpos]),
            with_attrs(
                node("ReduceMax", "/groups/Extent", &[mpos, c1], &[ext0]),
                vec![attr_int("keepdims", 0)],
            ),
            node("Max", "/groups/ExtentAtLeast1", &[ext0, s1], &[ext]),
            // Sorted by extent; the cost of cutting before sorted position k, for every k.
            with_attrs(
                node("TopK", "/groups/Sort", &[ext, batch], &[sorted, order]),
                vec![attr_int("largest", 0), attr_int("sorted", 1)],
            ),
            node("Slice", "/groups/SortedHead", &[sorted, c0, cm1], &[head]),
            axis(node("Concat", "/groups/Before", &[c0, head], &[before]), 0),
            node("Squeeze", "/groups/BatchScalar", &[batch], &[bsc]),
            node("Range", "/groups/Cuts", &[s0, bsc, s1], &[cut]),
            node("Slice", "/groups/Longest", &[sorted, cm1, cmax], &[longest]),
            node("Mul", "/groups/Before2", &[before, before], &[before2]),
            node("Mul", "/groups/CostA", &[cut, before2], &[cost_a]),
            node("Sub", "/groups/Rest", &[batch, cut], &[rest]),
            node("Mul", "/groups/Longest2", &[longest, longest], &[longest2]),
            node("Mul", "/groups/CostB", &[rest, longest2], &[cost_b]),
            node("Add", "/groups/Cost", &[cost_a, cost_b], &[cost]),
            with_attrs(
                node("ArgMin", "/groups/Cut", &[cost], &[k]),
                vec![attr_int("keepdims", 1)],
            ),
            // Group A: sorted[0 .. max(k, 1)] at the k-th's extent (1 when k = 0); B: the rest.
            node("Max", "/groups/SizeA", &[k, c1], &[size_a]),
            node("Sub", "/groups/SizeAMinus1", &[size_a, c1], &[size_a1]),
            axis(node("Gather", "/groups/ExtentK", &[before, k], &[ext_k]), 0),
            node("Max", "/groups/LengthA", &[ext_k, c1], &[len_a]),
            node("Slice", "/groups/OrderA", &[order, c0, size_a], &[order_a]),
            node("Slice", "/groups/OrderB", &[order, k, cmax], &[order_b]),
            axis(node("Gather", "/groups/PaddedA", &[&p.padded, order_a], &[pad_a]), 0),
            axis(node("Gather", "/groups/PaddedB", &[&p.padded, order_b], &[pad_b]), 0),
            node("Slice", "/groups/IndexA", &[pad_a, c0, len_a, c1], &[index_a]),
            node("Slice", "/groups/IndexB", &[pad_b, c0, longest, c1], &[index_b]),
            axis(node("Concat", "/groups/LengthsA", &[len_a, len_a], &[len2_a]), 0),
            axis(node("Concat", "/groups/LengthsB", &[longest, longest], &[len2_b]), 0),
            axis(
                node("Concat", "/groups/MaskShapeA", &[c1, c1, len_a, len_a], &[shape_a]),
                0,
            ),
            axis(
                node("Concat", "/groups/MaskShapeB", &[c1, c1, longest, longest], &[shape_b]),
                0,
            ),
            // Each sequence's first place in the joined contexts (A's rows, then B's).
            with_attrs(
                node("ConstantOfShape", "/groups/ZerosB", &[batch], &[zeros_b]),
                vec![attr_tensor("value", zero_value)],
            ),
            axis(
                node("ScatterElements", "/groups/Rank", &[zeros_b, order, cut], &[rank]),
                0,
            ),
            node("Less", "/groups/InA", &[rank, k], &[in_a]),
            node("Mul", "/groups/StartA", &[rank, len_a], &[start_a]),
            node("Mul", "/groups/RowsA", &[size_a, len_a], &[rows_a]),
            node("Sub", "/groups/RankB", &[rank, k], &[rank_b]),
            node("Mul", "/groups/OffsetB", &[rank_b, longest], &[off_b]),
            node("Add", "/groups/StartB", &[rows_a, off_b], &[start_b]),
            node("Where", "/groups/Start", &[in_a, start_a, start_b], &[start]),
            node("Unsqueeze", "/groups/StartColumn", &[start, c1], &[start_col]),
            node("Squeeze", "/groups/SeqScalar", &[seq], &[seqs]),
            node("Range", "/groups/SeqRange", &[s0, seqs, s1], &[seq_range]),
            node("Add", "/groups/Places", &[start_col, seq_range], &[places]),
            node("Reshape", "/groups/PlacesFlat", &[places, cm1], &[places_flat]),
            axis(
                node("Gather", "/groups/RowPlace", &[places_flat, &p.rows], &[row_place]),
                0,
            ),
        ];
        for n in nodes {
            patch.insert_before(at, n);
        }
        let group = |order: &str, index: &str, lengths2: &str, mask_shape: &str| Group {
            order: order.to_string(),
            index: index.to_string(),
            lengths2: lengths2.to_string(),
            mask_shape: mask_shape.to_string(),
        };
        Groups {
            groups: [
                group(order_a, index_a, len2_a, shape_a),
                group(order_b, index_b, len2_b, shape_b),
            ],
            row_place: row_place.to_string(),
            one: c1.clone(),
            zeros2,
            axes23,
            ones4,
        }
    }

    /// Into `nodes`: the two groups' masks from `mask` (the op's mask or what it broadcasts to
    /// [·, ·, query, key]; rank up to 4, its first axis the batch's or 1): each group's rows of
    /// it (row min(sequence, rows − 1)), cut to the group's length on the query and key axes and
    /// broadcast to [·, ·, length, length].
    fn masks(&self, mask: &str, base: &str, nodes: &mut Vec<NodeProto>, patch: &mut Patch) -> [String; 2] {
        let mut fresh = |what: &str| patch.fresh_name(&format!("{base}/{what}"));
        let [rank4, rows, last] = ["mask_rank4", "mask_rows", "mask_last_row"].map(&mut fresh);
        nodes.push(node("Expand", &rank4, &[mask, &self.ones4], &[&rank4]));
        nodes.push(with_attrs(
            node("Shape", &rows, &[&rank4], &[&rows]),
            vec![attr_int("start", 0), attr_int("end", 1)],
        ));
        nodes.push(node("Sub", &last, &[&rows, &self.one], &[&last]));
        let mut out = vec![];
        for (g, tag) in self.groups.iter().zip(["a", "b"]) {
            let [index, gathered, cut, full] =
                ["mask_row_index", "mask_gathered", "mask_cut", "mask"].map(|w| fresh(&format!("group_{tag}/{w}")));
            nodes.push(node("Min", &index, &[&g.order, &last], &[&index]));
            nodes.push(with_attrs(
                node("Gather", &gathered, &[&rank4, &index], &[&gathered]),
                vec![attr_int("axis", 0)],
            ));
            nodes.push(node(
                "Slice",
                &cut,
                &[&gathered, &self.zeros2, &g.lengths2, &self.axes23],
                &[&cut],
            ));
            nodes.push(node("Expand", &full, &[&cut, &g.mask_shape], &[&full]));
            out.push(full);
        }
        [out[0].clone(), out[1].clone()]
    }
}
