//! The last layer's attention for the first token only.
//!
//! When the model reads nothing of the last layer but its first token (BERT's pooler), the
//! first-token split already runs that layer's FFN, residual `Add` and LayerNorm on the first
//! token alone ([`super::split`]). This goes one step further up: the attention LayerNorm, the
//! residual `Add`, the output projection, the head merge, the product with the values, the
//! softmax, the mask and scale, the score product and the queries all run for the first token's
//! query alone; the keys and values stay whole (the first token attends to every token). The
//! scores shrink from [batch, heads, seq, seq] to [batch, heads, 1, seq].
//!
//! Done as a slice hoisted up the graph: starting from the split's `Slice` of the first token of
//! the attention LayerNorm's output, each node whose outputs are read only by nodes already moved
//! is rewritten to compute its output's first-token slice from slices of its inputs — on the same
//! axis for elementwise ops (none on an input that broadcasts over it), through the permutation
//! for a `Transpose`, on the rows of the left factor for a `MatMul`, on the query axis for a
//! softmax over keys. Where a node cannot be moved (it has other readers, such as the layer input
//! the keys and values read, or an op not listed here), its output is sliced instead. A `Shape`
//! reader does not stop a move where it only sizes moved head reshapes or an `Expand` that is
//! itself sliced on the moved axis (a mask broadcast to the scores' shape). Slicing an
//! axis of size 1 by [0, 1) changes nothing, so a broadcast mask is sliced safely. The head
//! reshapes move where discovery found their head sizes or their batch and sequence come from the
//! layer's input (the reshape then writes 1 for the sequence); a split block's joined output
//! becomes its first-token half. The result is the same function (the tests hold logits
//! to 1e-5 on the synthetic layouts, 1e-4 on every export-matrix cell). The split keeps it only
//! when the softmax moved (the scores are the first token's alone); short of that the attention
//! is left as it was.

use std::collections::{HashMap, HashSet};

use super::calibrate::{Probe, Tokens};
use crate::onnx::build::{attr_int, node, with_attrs};
use crate::onnx::graph::declared_rank;
use crate::onnx::proto::{GraphProto, ModelProto};
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::passes::PassError;

/// Ops that act on each element alone (a first-token slice passes straight through them).
const UNARY: &[&str] = &[
    "Identity",
    "Cast",
    "Erf",
    "Sqrt",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Neg",
    "Exp",
    "Abs",
    "IsNaN",
    "Not",
    "Reciprocal",
    "Softplus",
    "Clip",
];

/// Elementwise ops with numpy broadcasting.
const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Max",
    "Min",
];

/// Ops (ONNX's or ONNX Runtime's) whose first output has their first input's rank, for the
/// rank sweep only.
const SAME_RANK: &[&str] = &[
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "QuickGelu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Mish",
    "HardSigmoid",
    "HardSwish",
    "Softsign",
    "Dropout",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization",
    "Log",
    "Sin",
    "Cos",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "BiasAdd",
];

/// How a moved node reads one of its inputs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Read {
    /// As it is (a weight, the keys, a broadcast operand).
    Whole,
    /// Its first-token slice on this axis.
    First(usize),
    /// A head reshape's shape, with 1 written for the sequence.
    Shape,
    /// Not at all: the node (a split block's join) becomes an `Identity` of its first-token half.
    Dropped,
}

/// What was done: the rewritten model, whether the scores moved, and for calibration the slices a MatMul reads, each mapped to the whole value of the input model
/// (the moved nodes keep their values' names: calibration measures those whole, too).
pub struct FirstQuery {
    pub model: ModelProto,
    /// Whether the attention's softmax moved: its scores are the first token's query's alone.
    pub scores: bool,
    pub probes: HashMap<String, Probe>,
}

/// Ranks of the graph's values where a forward sweep can tell (and the lengths of rank-1
/// integer values such as shapes).
struct Ranks {
    rank: HashMap<String, usize>,
    len: HashMap<String, usize>,
    /// Computed integer vectors known in full (the `Shape` of a vector).
    value: HashMap<String, Vec<i64>>,
}

impl Ranks {
    fn of(&self, v: &str) -> Option<usize> {
        self.rank.get(v).copied()
    }

    /// `hints`: values whose rank is known from elsewhere (the hidden states between layers).
    fn new(ix: &GraphIndex, opset: i64, hints: &HashMap<String, usize>) -> Ranks {
        let g = ix.graph;
        let mut r = Ranks {
            rank: HashMap::new(),
            len: HashMap::new(),
            value: HashMap::new(),
        };
        for v in &g.input {
            if let Some(k) = declared_rank(v) {
                r.rank.insert(v.name().to_string(), k);
            }
        }
        for t in &g.initializer {
            r.rank.insert(t.name().to_string(), t.dims.len());
            if t.dims.len() == 1 {
                r.len.insert(t.name().to_string(), t.dims[0] as usize);
            }
        }
        for (i, n) in g.node.iter().enumerate() {
            let Some(out) = n.output.first().filter(|o| !o.is_empty()) else {
                continue;
            };
            let ins: Vec<Option<usize>> = n.input.iter().map(|v| r.of(v)).collect();
            let in0 = ins.first().copied().flatten();
            let const_len = |v: Option<&String>| v.and_then(|v| ix.const_i64(v)).map(|c| c.len());
            let (rank, len) = if SAME_RANK.contains(&n.op_type()) {
                (in0, None)
            } else if n.op_type() == "Transpose" && n.domain().is_empty() && ix.attr_ints(i, "perm").is_some() {
                (ix.attr_ints(i, "perm").map(|p| p.len()), None)
            } else if !n.domain().is_empty() && n.op_type() != "FusedMatMul" {
                (None, None)
            } else {
                match n.op_type() {
                    "Constant" => match ix.constant(out) {
                        Some(c) => {
                            let d = &c.tensor().dims;
                            (Some(d.len()), (d.len() == 1).then(|| d[0] as usize))
                        }
                        None => (None, None),
                    },
                    op if UNARY.contains(&op)
                        || matches!(
                            op,
                            "Softmax" | "LogSoftmax" | "LayerNormalization" | "Transpose" | "Slice"
                        ) =>
                    {
                        let len = (in0 == Some(1) && matches!(op, "Identity" | "Cast"))
                            .then(|| r.len.get(&n.input[0]).copied())
                            .flatten();
                        (in0, len)
                    }
                    op if BROADCAST.contains(&op) => {
                        let all: Option<Vec<usize>> = ins.iter().copied().collect();
                        let rank = all.and_then(|a| a.into_iter().max());
                        // Vectors (shapes): the longest, the others of the same length or 1.
                        let len = (rank == Some(1))
                            .then(|| {
                                n.input
                                    .iter()
                                    .zip(&ins)
                                    .map(|(v, &k)| if k == Some(0) { Some(1) } else { r.len.get(v).copied() })
                                    .collect::<Option<Vec<usize>>>()
                            })
                            .flatten()
                            .and_then(|l| l.into_iter().max());
                        (rank, len)
                    }
                    "MatMul" | "FusedMatMul" => match (ins.first().copied().flatten(), ins.get(1).copied().flatten()) {
                        (Some(a), Some(b)) if a >= 2 && b >= 2 => (Some(a.max(b)), None),
                        _ => (None, None),
                    },
                    "Unsqueeze" | "Squeeze" => {
                        let axes = if opset >= 13 {
                            const_len(n.input.get(1))
                        } else {
                            ix.attr_ints(i, "axes").map(|a| a.len())
                        };
                        match (in0, axes) {
                            (Some(k), Some(a)) if n.op_type() == "Unsqueeze" => {
                                (Some(k + a), (k + a == 1).then_some(1))
                            }
                            (Some(k), Some(a)) if k >= a => (Some(k - a), None),
                            _ => (None, None),
                        }
                    }
                    "Reshape" => {
                        let rank = n.input.get(1).and_then(|s| r.len.get(s)).copied();
                        let len = (rank == Some(1) && in0 == Some(1))
                            .then(|| r.len.get(&n.input[0]).copied())
                            .flatten();
                        (rank, len)
                    }
                    "Expand" => {
                        let s = n.input.get(1).and_then(|s| r.len.get(s)).copied();
                        (in0.zip(s).map(|(a, b)| a.max(b)), None)
                    }
                    "ConstantOfShape" => {
                        let shape = n.input.first();
                        let rank = shape.and_then(|s| r.len.get(s)).copied();
                        let value = shape.and_then(|s| r.value.get(s).cloned().or_else(|| ix.const_i64(s)));
                        let len = (rank == Some(1))
                            .then(|| value.and_then(|v| v.first().and_then(|&l| usize::try_from(l).ok())))
                            .flatten();
                        (rank, len)
                    }
                    "Shape" => {
                        // The sizes of a whole vector of known length are known: [length].
                        let whole = n.attribute.is_empty();
                        if let Some(&l) = (whole && in0 == Some(1)).then(|| r.len.get(&n.input[0])).flatten() {
                            r.value.insert(out.clone(), vec![l as i64]);
                        }
                        // start/end (opset 15): the sizes of those axes.
                        let len = in0.and_then(|k| {
                            let k = k as i64;
                            let at = |a: Option<i64>, d: i64| {
                                let a = a.unwrap_or(d);
                                (if a < 0 { a + k } else { a }).clamp(0, k)
                            };
                            let (s, e) = (at(ix.attr_i(i, "start"), 0), at(ix.attr_i(i, "end"), k));
                            usize::try_from(e - s).ok()
                        });
                        (Some(1), len)
                    }
                    "Range" => (Some(1), None),
                    "Gather" => match (in0, ins.get(1).copied().flatten()) {
                        (Some(d), Some(k)) if d >= 1 => (Some(d - 1 + k), None),
                        _ => (None, None),
                    },
                    "Concat" => {
                        let len = (in0 == Some(1))
                            .then(|| n.input.iter().map(|v| r.len.get(v).copied()).sum::<Option<usize>>())
                            .flatten();
                        (in0, len)
                    }
                    _ => (None, None),
                }
            };
            if let Some(k) = hints.get(out).copied().or(rank) {
                r.rank.insert(out.clone(), k);
            }
            if let Some(l) = len {
                r.len.insert(out.clone(), l);
            }
        }
        r
    }
}

/// `axis` (possibly negative) of a rank-`r` value as an index.
fn norm(axis: i64, r: usize) -> Option<usize> {
    let a = if axis < 0 { axis + r as i64 } else { axis };
    (0..r as i64).contains(&a).then_some(a as usize)
}

/// Whether a reshape's `shape` is built (a `Concat` of single elements) with the batch and the
/// sequence read from the sizes of `sequence` ([batch, sequence, hidden]: the layer's input),
/// at their own places, or copied (`0`) or left to be inferred (`-1`, one of the two): a reshape
/// of the heads that keeps the first two axes.
fn copies_batch_and_sequence(ix: &GraphIndex, ranks: &Ranks, shape: &str, sequence: &str) -> bool {
    let Some(c) = ix
        .producer(shape)
        .map(|p| ix.node(p))
        .filter(|n| n.op_type() == "Concat")
    else {
        return false;
    };
    if c.input.len() < 3 || c.input.iter().any(|v| ranks.len.get(v) != Some(&1)) {
        return false;
    }
    // Each of the first two: Some(true) read from `sequence`'s own size or copied, Some(false)
    // inferred, None anything else.
    let element = |k: usize| -> Option<bool> {
        let v = ix.resolve(&c.input[k]);
        match ix.const_i64(v).as_deref() {
            Some([0]) => return Some(true),
            Some([-1]) => return Some(false),
            Some(_) => return None,
            None => {}
        }
        let mut v = v;
        while let Some(n) = ix
            .producer(v)
            .map(|p| ix.node(p))
            .filter(|n| matches!(n.op_type(), "Unsqueeze" | "Cast"))
        {
            v = &n.input[0];
        }
        // The model's [batch, sequence] inputs have the hidden states' first two sizes.
        let sized = |x: &str| {
            x == sequence
                || ix
                    .graph
                    .input
                    .iter()
                    .any(|g| g.name() == x && declared_rank(g) == Some(2) && ix.initializer(x).is_none())
        };
        let p = ix.producer(v)?;
        let n = ix.node(p);
        match n.op_type() {
            // Gather(Shape(x), k)
            "Gather" => {
                if ix.const_i64(n.input.get(1)?)? != [k as i64] {
                    return None;
                }
                let size = ix.node(ix.producer(&n.input[0])?);
                (size.op_type() == "Shape" && size.attribute.is_empty() && sized(&size.input[0])).then_some(true)
            }
            // Shape(x, start=k, end=k+1)
            "Shape" => {
                let (s, e) = (ix.attr_i(p, "start")?, ix.attr_i(p, "end")?);
                (s == k as i64 && e == s + 1 && sized(&n.input[0])).then_some(true)
            }
            _ => None,
        }
    };
    matches!(
        (element(0), element(1)),
        (Some(true), Some(true)) | (Some(true), Some(false)) | (Some(false), Some(true))
    )
}

/// Whether node `c` is a `Shape` whose sizes go (through `Gather`, `Unsqueeze`, `Concat` and the
/// like) only into the shapes of moved head reshapes: reading a value sliced on axis 1 (the
/// caller's condition), it sees a sequence of 1 after the move, and those shapes get 1 written
/// for the sequence anyway (torch's classic exporter builds the head merge's shape from the
/// context's own sizes).
fn sizes_moved_reshapes(ix: &GraphIndex, c: usize, moved: &HashMap<usize, Vec<Read>>) -> bool {
    const SIZE_OPS: &[&str] = &["Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice"];
    if ix.node(c).op_type() != "Shape" {
        return false;
    }
    let mut stack = vec![c];
    let mut seen = HashSet::new();
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        for o in &ix.node(i).output {
            if ix.is_graph_output(o) {
                return false;
            }
            for &r in ix.consumers(o) {
                let n = ix.node(r);
                let shape_of_moved = moved.get(&r).is_some_and(|reads| {
                    n.op_type() == "Reshape" && n.input.iter().zip(reads).all(|(v, &k)| v != o || k == Read::Shape)
                });
                if shape_of_moved {
                    continue;
                }
                if moved.contains_key(&r) || !SIZE_OPS.contains(&n.op_type()) || !n.domain().is_empty() {
                    return false;
                }
                stack.push(r);
            }
        }
    }
    true
}

/// Whether `c`, a reader of a value `v` that moves (sliced on `axis`), is a `Shape` of all of `v`
/// read only by an `Expand`'s shape whose output the move slices on that same axis, every reader
/// of it having moved (DistilBERT's classic export under transformers 4 broadcasts its mask to
/// the scores' own shape). With `v` moved, the `Expand` writes on that axis the broadcast
/// operand's size (1 or the whole) instead of the whole, and its slice [0, 1) there is what it
/// was: the shape's other sizes are the same.
fn expands_sliced(
    ix: &GraphIndex,
    c: usize,
    axis: usize,
    ranks: &Ranks,
    wants: &HashMap<&str, Vec<Read>>,
    moved: &HashMap<usize, Vec<Read>>,
) -> bool {
    let n = ix.node(c);
    if n.op_type() != "Shape" || !n.domain().is_empty() || !n.attribute.is_empty() {
        return false;
    }
    let shape = &n.output[0];
    let &[e] = ix.consumers(shape) else { return false };
    let en = ix.node(e);
    let out = &en.output[0];
    !ix.is_graph_output(shape)
        && en.op_type() == "Expand"
        && en.domain().is_empty()
        && en.input.len() == 2
        && en.input[1] == *shape
        && en.input[0] != *shape
        && !ix.is_graph_output(out)
        && ranks.of(out).is_some()
        && ranks.of(out) == ranks.of(&n.input[0])
        && !ix.consumers(out).is_empty()
        && ix.consumers(out).iter().all(|r| moved.contains_key(r))
        && wants
            .get(out.as_str())
            .is_some_and(|w| w.iter().all(|&k| k == Read::First(axis)))
}

/// How a rank-`rj` operand broadcast to rank `r` is read for the output's slice on `axis`: on
/// its own matching axis, or whole where it has none.
fn broadcast(axis: usize, r: usize, rj: usize) -> Read {
    match (axis + rj).checked_sub(r) {
        Some(k) => Read::First(k),
        None => Read::Whole,
    }
}

/// How node `i` reads its inputs to compute its output's first-token slice on `axis`, if it can.
fn reads(
    ix: &GraphIndex,
    i: usize,
    axis: usize,
    ranks: &Ranks,
    head_shapes: &HashSet<String>,
    sequence: &str,
    opset: i64,
) -> Option<Vec<Read>> {
    let n = ix.node(i);
    if !n.domain().is_empty()
        || n.output
            .iter()
            .skip(1)
            .any(|o| !o.is_empty() && !ix.consumers(o).is_empty())
    {
        return None;
    }
    let r = ranks.of(&n.output[0])?;
    let same = |k: usize| -> Vec<Read> {
        let mut v = vec![Read::Whole; n.input.len()];
        v[0] = Read::First(k);
        v
    };
    let op = n.op_type();
    match op {
        _ if UNARY.contains(&op) => Some(same(axis)),
        _ if BROADCAST.contains(&op) => n.input.iter().map(|v| Some(broadcast(axis, r, ranks.of(v)?))).collect(),
        "MatMul" => {
            let (ra, rb) = (ranks.of(&n.input[0])?, ranks.of(&n.input[1])?);
            if ra < 2 || rb < 2 {
                return None;
            }
            if axis == r - 2 {
                Some(vec![Read::First(ra - 2), Read::Whole])
            } else if axis == r - 1 {
                Some(vec![Read::Whole, Read::First(rb - 1)])
            } else {
                Some(vec![broadcast(axis, r, ra), broadcast(axis, r, rb)])
            }
        }
        "Transpose" => {
            let perm = ix
                .attr_ints(i, "perm")
                .unwrap_or_else(|| (0..r as i64).rev().collect::<Vec<_>>());
            let p = *perm.get(axis)?;
            Some(vec![Read::First(usize::try_from(p).ok()?)])
        }
        "Softmax" | "LogSoftmax" => {
            let k = norm(ix.attr_i(i, "axis").unwrap_or(if opset >= 13 { -1 } else { 1 }), r)?;
            // Before opset 13 the op flattens from its axis on: the slice must come before it.
            (axis < k).then(|| same(axis))
        }
        "LayerNormalization" => {
            let k = norm(ix.attr_i(i, "axis").unwrap_or(-1), r)?;
            (axis < k).then(|| same(axis))
        }
        "Reshape" => {
            let shape = n.input.get(1)?;
            let keeps = head_shapes.contains(shape) || copies_batch_and_sequence(ix, ranks, shape, sequence);
            (axis == 1 && r >= 3 && keeps).then(|| vec![Read::First(1), Read::Shape])
        }
        "Concat" => {
            let c = norm(ix.attr_i(i, "axis")?, r)?;
            (c != axis).then(|| vec![Read::First(axis); n.input.len()])
        }
        _ => None,
    }
}

/// Moves the first-token slice that `seed` (the split's `Slice` [0, 1) on axis 1 of the last
/// layer's attention LayerNorm output: its output value) takes up through the last layer's
/// attention. `halves`: each split block's joined output → its first-token half, which replaces
/// it when the slice reaches it; `head_shapes`: the shape values of that attention's head
/// reshapes (discovery's); `sequence`: the layer's input, [batch, sequence, hidden]; `hidden`:
/// the ranks of the hidden states between layers (3), which the graph's arithmetic may not tell
/// (e.g. RoBERTa's position ids).
pub fn first_token_query(
    model: &ModelProto,
    seed: &str,
    halves: &HashMap<String, String>,
    head_shapes: &HashSet<String>,
    sequence: &str,
    hidden: &HashMap<String, usize>,
) -> Result<FirstQuery, PassError> {
    let g: &GraphProto = crate::passes::graph(model)?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map_or(1, |o| o.version());
    let ix = GraphIndex::new(g);
    let ranks = Ranks::new(&ix, opset, hidden);
    let unchanged = || FirstQuery {
        model: model.clone(),
        scores: false,
        probes: HashMap::new(),
    };
    let Some(s0) = ix.producer(seed).filter(|&p| ix.node(p).op_type() == "Slice") else {
        return Ok(unchanged());
    };

    // Decided from the seed up, in reverse graph order: a node moves when every reader of its
    // outputs has moved and wants the same first-token axis of it.
    let mut moved: HashMap<usize, Vec<Read>> = HashMap::new();
    let mut wants: HashMap<&str, Vec<Read>> = HashMap::new();
    let mut identity_of: HashMap<usize, &str> = HashMap::new();
    let mut seed_reads = vec![Read::Whole; ix.node(s0).input.len()];
    seed_reads[0] = Read::First(1);
    fn record<'g>(
        ix: &GraphIndex<'g>,
        i: usize,
        r: Vec<Read>,
        moved: &mut HashMap<usize, Vec<Read>>,
        wants: &mut HashMap<&'g str, Vec<Read>>,
    ) {
        for (v, &k) in ix.node(i).input.iter().zip(&r) {
            if !v.is_empty() && k != Read::Dropped {
                wants.entry(v.as_str()).or_default().push(k);
            }
        }
        moved.insert(i, r);
    }
    record(&ix, s0, seed_reads, &mut moved, &mut wants);
    for i in (0..s0).rev() {
        let n = ix.node(i);
        let Some(out) = n.output.first().map(|o| o.as_str()) else {
            continue;
        };
        let Some(w) = wants.get(out) else { continue };
        let Read::First(axis) = w[0] else { continue };
        let all_moved = n.output.iter().filter(|o| !o.is_empty()).all(|o| {
            !ix.is_graph_output(o)
                && ix.consumers(o).iter().all(|&c| {
                    moved.contains_key(&c)
                        || (axis == 1 && sizes_moved_reshapes(&ix, c, &moved))
                        || expands_sliced(&ix, c, axis, &ranks, &wants, &moved)
                })
        });
        if !all_moved || w.iter().any(|&k| k != Read::First(axis)) {
            continue;
        }
        if let Some(half) = halves.get(out).filter(|_| axis == 1 && n.output.len() == 1) {
            identity_of.insert(i, half.as_str());
            record(&ix, i, vec![Read::Dropped; n.input.len()], &mut moved, &mut wants);
        } else if let Some(r) = reads(&ix, i, axis, &ranks, head_shapes, sequence, opset) {
            record(&ix, i, r, &mut moved, &mut wants);
        }
    }
    if moved.len() <= 1 {
        return Ok(unchanged());
    }

    let mut patch = Patch::new(g);
    let mut consts: HashMap<i64, String> = HashMap::new();
    let mut constant = |patch: &mut Patch, v: i64| -> String {
        consts
            .entry(v)
            .or_insert_with(|| {
                let name = patch.fresh_name(&format!("/first_token_query/const_{v}"));
                patch.add_initializer(tensor::from_i64(&name, &[1], &[v]));
                name
            })
            .clone()
    };
    let mut slices: HashMap<(String, usize), String> = HashMap::new();
    let mut probes = HashMap::new();
    let mut order: Vec<usize> = moved.keys().copied().collect();
    order.sort_unstable();
    for &i in &order {
        let n = ix.node(i);
        if i == s0 {
            continue;
        }
        for (slot, &k) in moved[&i].iter().enumerate() {
            let v = &n.input[slot];
            match k {
                Read::Whole | Read::Dropped => {}
                Read::First(axis) => {
                    if ix.producer(v).is_some_and(|p| moved.contains_key(&p)) {
                        continue;
                    }
                    let key = (v.clone(), axis);
                    let name = match slices.get(&key) {
                        Some(s) => s.clone(),
                        None => {
                            let s = patch.fresh_name(&format!("{v}_first_token"));
                            let (zero, one, ax) = (
                                constant(&mut patch, 0),
                                constant(&mut patch, 1),
                                constant(&mut patch, axis as i64),
                            );
                            patch.insert_before(
                                i,
                                node(
                                    "Slice",
                                    &format!("/first_token_query/Slice_{}", slices.len()),
                                    &[v, &zero, &one, &ax],
                                    &[&s],
                                ),
                            );
                            slices.insert(key, s.clone());
                            s
                        }
                    };
                    // A MatMul's slice is calibrated on the whole value, as the MatMul read it
                    // before: the same ranges, so a static model stays the same model.
                    if slot == 0 && n.op_type() == "MatMul" {
                        probes.insert(
                            name.clone(),
                            Probe {
                                value: v.clone(),
                                tokens: Tokens::All,
                            },
                        );
                    }
                    patch.rewire(i, slot, &name);
                }
                Read::Shape => {
                    let (zero, one, two, end) = (
                        constant(&mut patch, 0),
                        constant(&mut patch, 1),
                        constant(&mut patch, 2),
                        constant(&mut patch, i64::MAX),
                    );
                    let base = format!("/first_token_query/shape_{i}");
                    let head = patch.fresh_name(&format!("{base}_batch"));
                    let tail = patch.fresh_name(&format!("{base}_heads"));
                    let shape = patch.fresh_name(&base);
                    patch.insert_before(
                        i,
                        node("Slice", &format!("{base}/Slice"), &[v, &zero, &one, &zero], &[&head]),
                    );
                    patch.insert_before(
                        i,
                        node("Slice", &format!("{base}/Slice_1"), &[v, &two, &end, &zero], &[&tail]),
                    );
                    patch.insert_before(
                        i,
                        with_attrs(
                            node("Concat", &format!("{base}/Concat"), &[&head, &one, &tail], &[&shape]),
                            vec![attr_int("axis", 0)],
                        ),
                    );
                    patch.rewire(i, slot, &shape);
                }
            }
        }
        if let Some(half) = identity_of.get(&i) {
            patch.replace_node(i, vec![node("Identity", n.name(), &[half], &[&n.output[0]])]);
        }
    }
    patch.remove_unused();
    let mut out = model.clone();
    let og = crate::passes::graph_mut(&mut out)?;
    patch
        .apply(og)
        .map_err(|e| PassError::Internal(format!("running the last attention on the first token: {e}")))?;
    Ok(FirstQuery {
        model: out,
        scores: moved.keys().any(|&i| ix.node(i).op_type() == "Softmax"),
        probes,
    })
}
