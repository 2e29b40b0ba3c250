//! `--unpad` as a packed token stream: the encoder's residual stream runs on the real tokens only,
//! as rows [tokens, hidden], and only each attention's scores see the padded [batch, sequence]
//! layout.
//!
//! After the embeddings, the real tokens' rows are gathered once (`Gather` by row index): first
//! the first token of every sequence, then every other token `attention_mask` marks, sequence by
//! sequence. Everything that acts on each token alone then runs on those rows: the Q/K/V and
//! output projections, the residual `Add`s, the LayerNorms and the FFNs, quantized or not. Each
//! attention's Q/K/V outputs are spread back to [batch, sequence, ·] by a `Gather` whose padding
//! positions read the first row (values the mask keeps out of every score; a padding query's
//! context is dropped), and the attention's context is gathered back to rows before its output
//! projection. The first-token split becomes row slices: its first half is the first `batch`
//! rows (as [batch, 1, ·], what the split's first-token nodes read), its other half the rest, and
//! its `Concat` joins rows; a head's `Gather` of the first token (ModernBERT's) is those rows
//! too. A `Slice` or `Split` along the width (a gated FFN's halves) acts on each row alone, and a
//! `Shape` read for the width alone reads it off the rows as well. Every real token gets the
//! values it had: each packed node acts on each row alone (a static INT8 model gives the same
//! logits), and a dynamic INT8 range is taken over the real tokens alone, as with the per-block
//! unpadding this replaces.
//!
//! Where the graph has anything else on the stream (an op that does not act on each token alone,
//! a graph output on it, a fused attention op), [`pack`] says what, and the quantize pass unpads
//! the split blocks alone (`split.rs`).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::onnx::build::{attr_int, attr_tensor, node, with_attrs};
use crate::onnx::proto::{ModelProto, NodeProto};
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::structure::{Qkv, Transformer};

/// Ops that act on each token (row) alone besides the split's (`split::ROW_WISE`): the norms
/// and the quantized forms the quantize pass writes; all run on the packed rows as they are.
const ROW_OPS: &[&str] = &[
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
];

fn row_op(op: &str) -> bool {
    super::split::ROW_WISE.contains(&op) || ROW_OPS.contains(&op)
}

/// Ops whose input 1 is a weight (rank 2, [in, out]) rather than something broadcast per token.
const WEIGHT_SLOT_1: &[&str] = &[
    "MatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
];

/// Where the stream is packed and where attention needs it padded, by value names (the same in
/// the float split graph and in its quantized form).
pub struct Plan {
    /// The first layer's input ([batch, sequence, hidden], from the embeddings).
    entry: String,
    /// The stream's values: a `Shape` of one reads the (padded) entry instead, the same sizes.
    stream: HashSet<String>,
    /// Per attention: its Q, K, V (or stacked QKV) projection outputs, the query's first, and the
    /// context its output projection reads (`None` where the attention runs for the first token's
    /// query alone from the scores on: its context is the first token's).
    attentions: Vec<(Vec<String>, Option<String>)>,
}

impl Plan {
    /// The plan for `t`, a transformer found in the graph `ix`, or why it cannot be packed.
    /// `first_token_query`: the layer whose attention the split runs for the first token's query
    /// alone (`query.rs`).
    pub fn new(t: &Transformer, ix: &GraphIndex, first_token_query: Option<usize>) -> Result<Plan, String> {
        let first = t.layers.first().ok_or("no encoder layer")?;
        let mut attentions = vec![];
        for l in &t.layers {
            let a = l
                .attention
                .as_ref()
                .ok_or_else(|| format!("layer {} has no attention this tool maps", l.index))?;
            let pads = match &a.qkv {
                Qkv::Separate { q, k, v } if !a.fused => vec![q.output.clone(), k.output.clone(), v.output.clone()],
                Qkv::Stacked { qkv } => vec![qkv.output.clone()],
                _ => return Err(format!("layer {}: its attention is one fused op", l.index)),
            };
            let o = ix.node(a.output.node);
            if o.op_type() != "MatMul" {
                return Err(format!("layer {}: its output projection is a {}", l.index, o.op_type()));
            }
            let context = (first_token_query != Some(l.index)).then(|| o.input[0].clone());
            attentions.push((pads, context));
        }
        let stream = t
            .layers
            .iter()
            .flat_map(|l| [&l.input, &l.attention_norm.output, &l.output_norm.output])
            .cloned()
            .collect();
        Ok(Plan {
            entry: first.input.clone(),
            stream,
            attentions,
        })
    }

    /// The number of encoder layers packed.
    pub fn layers(&self) -> usize {
        self.attentions.len()
    }
}

/// The packing's index values a later rewrite reads (`groups.rs`).
pub struct Packing {
    /// The model's `attention_mask` input.
    pub mask: String,
    /// [1]: the batch size and the (padded) sequence length.
    pub batch: String,
    pub seq: String,
    /// [batch, sequence]: each position's packed row (padding: row 0).
    pub padded: String,
    /// [tokens]: each packed row's position in the flattened [batch × sequence].
    pub rows: String,
    pub constants: Constants,
}

/// The small i64 constants the index nodes read, there for a later rewrite's nodes too.
pub struct Constants {
    /// [1]: 0, 1, −1 and i64::MAX (a slice to the end).
    pub zero: String,
    pub one: String,
    pub minus_one: String,
    pub max: String,
    /// []: 0 and 1.
    pub scalar_zero: String,
    pub scalar_one: String,
}

/// The index values computed from `attention_mask`.
struct Index {
    /// [tokens]: each packed row's position in the flattened [batch × sequence].
    rows: String,
    /// [batch, sequence]: each position's packed row (padding: row 0).
    padded: String,
    /// [1]: the batch size and the sequence length.
    batch: String,
    seq: String,
    /// [3]: batch, 1, −1 (a first-token half's shape).
    first_shape: String,
    constants: Constants,
}

impl Index {
    /// The nodes computing the index from `mask` ([batch, sequence]), placed before node `at`.
    fn new(mask: &str, at: usize, patch: &mut Patch) -> Index {
        let mut c = |name: &str, dims: &[usize], v: &[i64]| {
            let n = patch.fresh_name(&format!("pack_{name}"));
            patch.add_initializer(tensor::from_i64(&n, dims, v));
            n
        };
        let constants = Constants {
            zero: c("0", &[1], &[0]),
            one: c("1", &[1], &[1]),
            minus_one: c("minus_1", &[1], &[-1]),
            max: c("max", &[1], &[i64::MAX]),
            scalar_zero: c("scalar_0", &[], &[0]),
            scalar_one: c("scalar_1", &[], &[1]),
        };
        let c2 = c("2", &[1], &[2]);
        let Constants {
            zero: c0,
            one: c1,
            minus_one: cm1,
            max: cmax,
            scalar_zero: s0,
            scalar_one: s1,
        } = &constants;
        let names = [
            "shape",
            "batch",
            "seq",
            "after_first",
            "nonzero",
            "b",
            "s",
            "bs",
            "bss",
            "other",
            "batch_scalar",
            "range_b",
            "first",
            "rows",
            "tokens",
            "tokens_scalar",
            "range_t",
            "positions",
            "zeros",
            "padded_flat",
            "padded",
            "first_shape",
        ]
        .map(|s| patch.fresh_name(&format!("pack_{s}")));
        let [shape, batch, seq, rest, nz, b, s, bs, bss, other, bsc, rb, first, rows, tokens, tsc, rt, positions, zeros, flat, padded, first_shape] =
            names.each_ref().map(|s| s.as_str());
        let zeros_value = tensor::from_i64("value", &[1], &[0]);
        let nodes = [
            node("Shape", "/pack/Shape", &[mask], &[shape]),
            node("Slice", "/pack/Batch", &[shape, c0, c1, c0], &[batch]),
            node("Slice", "/pack/Sequence", &[shape, c1, &c2, c0], &[seq]),
            node("Slice", "/pack/MaskAfterFirst", &[mask, c1, cmax, c1], &[rest]),
            node("NonZero", "/pack/NonZero", &[rest], &[nz]),
            with_attrs(
                node("Gather", "/pack/OtherBatch", &[nz, s0], &[b]),
                vec![attr_int("axis", 0)],
            ),
            with_attrs(
                node("Gather", "/pack/OtherPosition", &[nz, s1], &[s]),
                vec![attr_int("axis", 0)],
            ),
            node("Mul", "/pack/OtherRowStart", &[b, seq], &[bs]),
            node("Add", "/pack/OtherRowMinus1", &[bs, s], &[bss]),
            node("Add", "/pack/OtherRow", &[bss, c1], &[other]),
            node("Squeeze", "/pack/BatchScalar", &[batch], &[bsc]),
            node("Range", "/pack/Sequences", &[s0, bsc, s1], &[rb]),
            node("Mul", "/pack/FirstRow", &[rb, seq], &[first]),
            with_attrs(
                node("Concat", "/pack/Rows", &[first, other], &[rows]),
                vec![attr_int("axis", 0)],
            ),
            node("Shape", "/pack/Tokens", &[rows], &[tokens]),
            node("Squeeze", "/pack/TokensScalar", &[tokens], &[tsc]),
            node("Range", "/pack/PackedRows", &[s0, tsc, s1], &[rt]),
            node("Mul", "/pack/Positions", &[batch, seq], &[positions]),
            with_attrs(
                node("ConstantOfShape", "/pack/Zeros", &[positions], &[zeros]),
                vec![attr_tensor("value", zeros_value)],
            ),
            with_attrs(
                node("ScatterElements", "/pack/PaddedFlat", &[zeros, rows, rt], &[flat]),
                vec![attr_int("axis", 0)],
            ),
            node("Reshape", "/pack/Padded", &[flat, shape], &[padded]),
            with_attrs(
                node("Concat", "/pack/FirstShape", &[batch, c1, cm1], &[first_shape]),
                vec![attr_int("axis", 0)],
            ),
        ];
        for n in nodes {
            patch.insert_before(at, n);
        }
        Index {
            rows: rows.to_string(),
            padded: padded.to_string(),
            batch: batch.to_string(),
            seq: seq.to_string(),
            first_shape: first_shape.to_string(),
            constants,
        }
    }

    /// The nodes (the first named `name`) giving `out` the first token of each sequence from
    /// `rows`: the first `batch` rows, [batch, width], or [batch, 1, width] with `keep_axis`.
    fn first_rows(&self, name: &str, rows: &str, out: &str, keep_axis: bool, patch: &mut Patch) -> Vec<NodeProto> {
        let slice = |o: &str| {
            node(
                "Slice",
                name,
                &[rows, &self.constants.zero, &self.batch, &self.constants.zero],
                &[o],
            )
        };
        if !keep_axis {
            return vec![slice(out)];
        }
        let part = patch.fresh_name(&format!("{out}_rows"));
        vec![
            slice(&part),
            node(
                "Reshape",
                &format!("{name}/FirstToken"),
                &[&part, &self.first_shape],
                &[out],
            ),
        ]
    }

    /// Before node `at`: `x` ([batch, sequence, width]) as packed rows; returns their value.
    fn pack(&self, x: &str, patch: &mut Patch, at: usize) -> String {
        let [flat, rows] = ["flat", "packed"].map(|s| patch.fresh_name(&format!("{x}_{s}")));
        patch.insert_before(
            at,
            with_attrs(
                node("Flatten", &format!("/pack/{x}/Flatten"), &[x], &[&flat]),
                vec![attr_int("axis", 2)],
            ),
        );
        patch.insert_before(
            at,
            with_attrs(
                node("Gather", &format!("/pack/{x}/Pack"), &[&flat, &self.rows], &[&rows]),
                vec![attr_int("axis", 0)],
            ),
        );
        rows
    }
}

/// The slice a split `Slice` of the stream takes: the first token, or every token after it.
#[derive(PartialEq)]
enum Half {
    First,
    AfterFirst,
}

fn split_half(ix: &GraphIndex, i: usize) -> Option<Half> {
    let n = ix.node(i);
    let c = |slot: usize| {
        n.input
            .get(slot)
            .filter(|v| !v.is_empty())
            .and_then(|v| ix.const_i64(v))
    };
    let (starts, ends) = (c(1)?, c(2)?);
    let axes = c(3).unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = c(4).unwrap_or(vec![1]);
    if !(axes == [1] || axes == [-2]) || steps != [1] {
        return None;
    }
    match (starts.as_slice(), ends.as_slice()) {
        ([0], [1]) => Some(Half::First),
        ([1], [e]) if *e >= i64::from(i32::MAX) => Some(Half::AfterFirst),
        _ => None,
    }
}

/// Whether `v` is computed from constants alone (e.g. a weight's `DequantizeLinear`).
fn constant_derived(ix: &GraphIndex, v: &str, seen: &mut HashSet<String>) -> bool {
    if ix.constant(v).is_some() {
        return true;
    }
    if !seen.insert(v.to_string()) {
        return true;
    }
    let Some(p) = ix.producer(v) else { return false };
    ix.node(p)
        .input
        .iter()
        .filter(|x| !x.is_empty())
        .all(|x| constant_derived(ix, x, seen))
}

/// `model` with its token stream packed by `plan` (module note) and the packing's index values,
/// or why it cannot be.
pub fn pack(model: &ModelProto, plan: &Plan) -> Result<(ModelProto, Packing), String> {
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    let ix = GraphIndex::new(g);
    if super::default_opset(model) < 11 {
        return Err("its opset is below 11 (NonZero, Range, ScatterElements)".into());
    }
    let mask = super::split::attention_mask(&ix)?;
    let entry_readers = ix.consumers(&plan.entry);
    let Some(&at) = entry_readers.iter().min() else {
        return Err(format!("nothing reads the encoder input '{}'", plan.entry));
    };
    let mut patch = Patch::new(g);
    let index = Index::new(&mask, at, &mut patch);
    let entry = index.pack(&plan.entry, &mut patch, at);

    let pad_points: HashSet<&str> = plan
        .attentions
        .iter()
        .flat_map(|(p, _)| p.iter().map(String::as_str))
        .collect();
    // Values holding packed rows (original names: the node computing one now computes rows).
    let mut packed: HashSet<String> = HashSet::new();
    // Nodes reading a value under a new name: (node, original value) → the packed value.
    let mut renamed: HashMap<(usize, String), String> = HashMap::new();
    let mut visited: HashSet<usize> = HashSet::new();
    let mut replaced: HashSet<usize> = HashSet::new();
    let mut padded: HashSet<String> = HashSet::new();
    let mut activated: HashSet<usize> = HashSet::new();
    // (node, value it is reached through, the name that value has on rows)
    let mut queue: VecDeque<(usize, String, String)> = entry_readers
        .iter()
        .map(|&c| (c, plan.entry.clone(), entry.clone()))
        .collect();
    let label = |i: usize| ix.node_label(i);

    loop {
        while let Some((i, v, rows)) = queue.pop_front() {
            let n = ix.node(i);
            let mut outputs_packed: Vec<String> = vec![];
            match n.op_type() {
                // The width alone: the same on rows.
                "Shape" if super::split::width_only_shape(&ix, i) => {
                    if rows != v {
                        renamed.insert((i, v.clone()), rows.clone());
                    }
                    visited.insert(i);
                    continue;
                }
                "Shape" | "Size" => {
                    if v != plan.entry {
                        if !plan.stream.contains(&v) {
                            return Err(format!(
                                "{} reads the size of '{v}', not of the hidden states",
                                label(i)
                            ));
                        }
                        patch.rewire(i, 0, &plan.entry);
                    }
                    continue;
                }
                // (A slice along the width is a row op, below.)
                "Slice" if n.input[0] == v && !super::split::last_axis_slice(&ix, i) => {
                    if !replaced.insert(i) {
                        continue;
                    }
                    match split_half(&ix, i) {
                        Some(Half::First) => {
                            let first = index.first_rows(n.name(), &rows, &n.output[0], true, &mut patch);
                            patch.replace_node(i, first);
                            // The first-token half is [batch, 1, ·] as before: not rows.
                        }
                        Some(Half::AfterFirst) => {
                            let s = node(
                                "Slice",
                                n.name(),
                                &[&rows, &index.batch, &index.constants.max, &index.constants.zero],
                                &[&n.output[0]],
                            );
                            patch.replace_node(i, vec![s]);
                            outputs_packed.push(n.output[0].clone());
                        }
                        None => return Err(format!("{} slices the hidden states", label(i))),
                    }
                }
                // Halves along the width (the dynamo exporter's gated FFN): on each row alone.
                "Split" if n.input[0] == v && super::split::width_split(&ix, i) => {
                    if !replaced.insert(i) {
                        continue;
                    }
                    let mut c = super::split::on_last_axis(n.clone());
                    c.input[0] = rows.clone();
                    patch.replace_node(i, vec![c]);
                    outputs_packed.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
                }
                // The first token of each sequence (ModernBERT's head reads it so): the first
                // `batch` rows.
                "Gather" if n.input[0] == v && ix.attr_i(i, "axis") == Some(1) => {
                    let index_dims = ix
                        .constant(&n.input[1])
                        .filter(|_| ix.const_i64(&n.input[1]).as_deref() == Some(&[0]))
                        .map(|c| c.tensor().dims.len());
                    if !matches!(index_dims, Some(0) | Some(1)) {
                        return Err(format!(
                            "{} reads the hidden states and does not act on each token alone",
                            label(i)
                        ));
                    }
                    if !replaced.insert(i) {
                        continue;
                    }
                    // [batch, ·] for a scalar index, [batch, 1, ·] for a one-element one: not rows.
                    let first = index.first_rows(n.name(), &rows, &n.output[0], index_dims == Some(1), &mut patch);
                    patch.replace_node(i, first);
                }
                "Concat" => {
                    let seq_axis = matches!(ix.attr_i(i, "axis"), Some(1) | Some(-2));
                    if !seq_axis
                        || n.input.len() != 2
                        || n.input[1] != v
                        || packed.contains(&n.input[0])
                        || n.input[0] == v
                    {
                        return Err(format!("{} joins the hidden states", label(i)));
                    }
                    if !replaced.insert(i) {
                        continue;
                    }
                    let first = patch.fresh_name(&format!("{}_first_rows", n.input[0]));
                    patch.replace_node(
                        i,
                        vec![
                            with_attrs(
                                node("Flatten", &format!("{}/FirstRows", n.name()), &[&n.input[0]], &[&first]),
                                vec![attr_int("axis", 2)],
                            ),
                            with_attrs(
                                node("Concat", n.name(), &[&first, &rows], &[&n.output[0]]),
                                vec![attr_int("axis", 0)],
                            ),
                        ],
                    );
                    outputs_packed.push(n.output[0].clone());
                }
                // Along the width too (ModernBERT's gated FFN halves).
                op if row_op(op) || super::split::last_axis_slice(&ix, i) => {
                    if rows != v {
                        renamed.insert((i, v.clone()), rows.clone());
                    }
                    if visited.insert(i) {
                        outputs_packed.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
                    }
                }
                _ => {
                    return Err(format!(
                        "{} reads the hidden states and does not act on each token alone",
                        label(i)
                    ))
                }
            }
            for o in outputs_packed {
                if ix.is_graph_output(&o) {
                    return Err(format!("'{o}' is a graph output"));
                }
                packed.insert(o.clone());
                if pad_points.contains(o.as_str()) {
                    // The attention reads it [batch, sequence, ·] again.
                    let readers = ix.consumers(&o);
                    let Some(&first) = readers.iter().min() else { continue };
                    let p = patch.fresh_name(&format!("{o}_padded"));
                    patch.insert_before(
                        first,
                        with_attrs(
                            node("Gather", &format!("/pack/{o}/Pad"), &[&o, &index.padded], &[&p]),
                            vec![attr_int("axis", 0)],
                        ),
                    );
                    for &r in readers {
                        for (slot, x) in ix.node(r).input.iter().enumerate() {
                            if *x == o {
                                patch.rewire(r, slot, &p);
                            }
                        }
                    }
                    padded.insert(o);
                } else {
                    queue.extend(ix.consumers(&o).iter().map(|&c| (c, o.clone(), o.clone())));
                }
            }
        }
        // An attention whose query was padded again gives its context back as rows.
        let mut more = false;
        for (k, (pads, context)) in plan.attentions.iter().enumerate() {
            let Some(context) = context else { continue };
            if activated.contains(&k) || !padded.contains(&pads[0]) {
                continue;
            }
            activated.insert(k);
            let readers = ix.consumers(context);
            let Some(&first) = readers.iter().min() else { continue };
            let rows = index.pack(context, &mut patch, first);
            queue.extend(readers.iter().map(|&c| (c, context.clone(), rows.clone())));
            more = true;
        }
        if !more {
            break;
        }
    }
    if padded.is_empty() {
        return Err("no attention reads the hidden states through its projections".into());
    }
    // Every packed node reads rows, constants along the last axis, or weights.
    let mut sorted: Vec<usize> = visited.iter().copied().collect();
    sorted.sort_unstable();
    for i in sorted {
        let n = ix.node(i);
        for (slot, v) in n.input.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
            if let Some(rows) = renamed.get(&(i, v.clone())) {
                patch.rewire(i, slot, rows);
                continue;
            }
            if padded.contains(v) {
                // Rewired to the padded copy for the attention: not rows any more.
                return Err(format!("{} reads the attention's projection '{v}' per token", label(i)));
            }
            if packed.contains(v) {
                continue;
            }
            // A slice's bounds along the width: the same for every row.
            if slot >= 1 && super::split::last_axis_slice(&ix, i) {
                continue;
            }
            let weight = slot == 1 && WEIGHT_SLOT_1.contains(&n.op_type());
            if let Some(c) = ix.constant(v) {
                let dims = &c.tensor().dims;
                if weight || dims.len() <= 1 || (dims.len() == 2 && dims[0] == 1) {
                    continue;
                }
                return Err(format!("{} reads a constant of shape {dims:?}", label(i)));
            }
            if weight && constant_derived(&ix, v, &mut HashSet::new()) {
                continue;
            }
            return Err(format!("{} reads '{v}', which is not on the token rows", label(i)));
        }
    }
    let mut m = model.clone();
    let out = m.graph.as_mut().ok_or("the model has no graph")?;
    // The split's slice bounds the row slices replaced, for one.
    patch.remove_unused();
    patch.apply(out).map_err(|e| format!("packing the tokens: {e}"))?;
    // Shapes recorded for the values now holding rows (rank 3 then, rank 2 now) would contradict
    // them.
    out.value_info.retain(|v| !packed.contains(v.name()));
    let packing = Packing {
        mask,
        batch: index.batch,
        seq: index.seq,
        padded: index.padded,
        rows: index.rows,
        constants: index.constants,
    };
    Ok((m, packing))
}
