//! The first token's Q/K/V projections and feed-forward blocks computed apart from the other
//! tokens'.
//!
//! In BERT-family encoders the first token ([CLS]) carries a few huge activations (here up to
//! 28 in one hidden channel at the FFN input and 24 in one FFN neuron, where every other token
//! stays below 7–18 and 6–8). A per-tensor int8 range must cover them, so every other token is
//! quantized 2–4× coarser than it needs to be. Rewritten here, each layer's FFN (and, when asked,
//! its Q/K/V projections: the quantize pass asks in dynamic mode) reads its input sliced in two,
//! `x[:, :1]` and `x[:, 1:]`, runs the same nodes (sharing the weights) on each, and concatenates
//! the two results along the sequence; calibration then measures each half's ranges on its own
//! tokens ([`Tokens::First`], [`Tokens::AfterFirst`]), and dynamic quantization finds each half's
//! range on its own. The float graph computes the same function as before, these blocks acting on
//! each token on its own (the tests hold its logits to 1e-5 of the input model's).
//!
//! When the model reads nothing of the last layer but its first token (BERT's pooler: a
//! `Gather` of index 0 on the sequence axis), the last FFN, its residual `Add` and LayerNorm run
//! on the first token only: the other tokens' copy would be computed and thrown away. The
//! layer's attention then runs for the first token's query alone too, where the graph lets that
//! slice move up to the scores (`query.rs`).
//!
//! With `unpad`, where the whole token stream cannot be packed (`pack.rs`, which the quantize
//! pass tries first), the other tokens' half of each split block runs on the real tokens only: after
//! its `Slice` the rows of the [batch, sequence − 1, width] input that the model's
//! `attention_mask` marks (`NonZero`) are gathered (`GatherND`, [N, width]); before the `Concat`
//! the half's rows are scattered back (`ScatterND`) into zeros of the padded shape. Padding rows
//! then cost nothing in these blocks (48% of SST-2 dev's tokens in batches of 32 in file order are
//! padding): the real tokens' values are the same (each of these blocks acts on each token on its
//! own), the padding positions hold zeros instead of values nothing reads through the mask, and
//! dynamic quantization takes its ranges from the real tokens alone (static ranges are calibrated
//! on real tokens anyway: a static model is the same model). A block is unpadded only when every
//! node in it acts on the last axis alone ([`ROW_WISE`]); the model needs a rank-2
//! `attention_mask` input. (Unpadding the blocks that are not split too, whole, each with its own
//! gather and scatter — each attention's output projection, static mode's Q/K/V — was tried: on
//! MiniLM its speed-ups over the padded model read the same or lower, two runs each
//! (bench/RESULTS.md); packing the stream once, `pack.rs`, is what pays.)
//!
//! Only blocks that read the layer's input (Q/K/V) or its attention LayerNorm output (FFN)
//! directly and whose nodes form a closed block are split, and only when the residual stream is
//! [batch, sequence, hidden]: the word embedding's `Gather` reads a rank-2 `input_ids` and no
//! node between it and the first layer reshapes.

use std::collections::{HashMap, HashSet};

use super::calibrate::{Probe, Tokens};
use crate::onnx::build::{attr_int, attr_ints, attr_tensor, node, with_attrs};
use crate::onnx::graph::declared_rank;
use crate::onnx::proto::{ModelProto, NodeProto};
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::passes::PassError;
use crate::structure::{discover, Linear, Qkv, Transformer};

/// The split graph, which layers were split, and for each value of the split graph that a
/// quantized MatMul may read and that is a slice of a value of the input model: that value and
/// the tokens it holds (what calibration measures on the input model).
pub struct Split {
    pub model: ModelProto,
    /// Layers whose FFN was split.
    pub layers: Vec<usize>,
    /// Layers whose Q/K/V projections were split.
    pub qkv_layers: Vec<usize>,
    /// The last layer, when its FFN runs on the first token only (nothing reads the others).
    pub first_token_only: Option<usize>,
    /// The last layer, when its attention also runs for the first token's query only, from the
    /// scores on (`query.rs`).
    pub first_token_attention: Option<usize>,
    pub probes: HashMap<String, Probe>,
    /// The first-token copy of each node (by name) → the node it copies.
    pub origin: HashMap<String, String>,
    /// Why a layer (or the whole model) was left as it was.
    pub skipped: Vec<String>,
    /// Layers whose other-tokens halves run on the real tokens only (`unpad`).
    pub unpadded_layers: Vec<usize>,
    /// Why a split block (or every one) was left padded (`unpad`).
    pub unpad_skipped: Vec<String>,
}

/// Ops that act on each row (token) of their input alone and take any rank: a block made of
/// these computes the same for the real tokens flattened to rows as for the padded batch.
pub(super) const ROW_WISE: &[&str] = &[
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Pow",
    "Sqrt",
    "Neg",
    "Exp",
    "Softplus",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "QuickGelu",
    "Cast",
    "Identity",
    "Clip",
    "Min",
    "Max",
];

/// How the `GatherND` of an unpadded block's real rows is named (after the block's base): what
/// `qdq::bias_sums` finds the block's rows by.
pub(super) const UNPAD_GATHER: &str = "/Unpad";

const RESHAPING: &[&str] = &["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"];

/// Nodes `from` reaches (itself included) that `to` depends on (itself included).
fn between(ix: &GraphIndex, from: usize, to: usize) -> HashSet<usize> {
    between_through(ix, from, to, &[])
}

/// [`between`], not following a path past nodes of the `stop` ops (they are included).
fn between_through(ix: &GraphIndex, from: usize, to: usize, stop: &[&str]) -> HashSet<usize> {
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
        if back.contains(&i) && both.insert(i) && !stop.contains(&ix.node(i).op_type()) {
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
    // ONNX Runtime's fused EmbedLayerNormalization reads input_ids first, a Gather second.
    let slot = usize::from(gather.op_type() != "EmbedLayerNormalization");
    let mut ids = gather
        .input
        .get(slot)
        .ok_or("the word embedding Gather has no indices")?;
    // Through the Cast to int32 ONNX Runtime's optimizer puts before its fused embeddings.
    while let Some(c) = ix.producer(ids).map(|p| ix.node(p)).filter(|p| p.op_type() == "Cast") {
        ids = &c.input[0];
    }
    if let Some(v) = ix.graph.input.iter().find(|v| v.name() == ids) {
        if declared_rank(v).is_some_and(|r| r != 2) {
            return Err(format!("input '{ids}' is not [batch, sequence]"));
        }
    } else {
        return Err(format!("the word embedding Gather reads '{ids}', not a graph input"));
    }
    let end = ix
        .producer(&first.input)
        .ok_or("the first layer's input is not computed")?;
    // Only where the hidden states flow: a `Shape` of them starts a computation of sizes (e.g.
    // DistilBERT's position ids, a Slice by the sequence length), not of values.
    if let Some(&r) = between_through(ix, word.gather_node, end, &["Shape", "Size"])
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

/// Which part of a layer a block is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Qkv,
    Ffn,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Qkv => "Q/K/V",
            Part::Ffn => "FFN",
        }
    }
}

/// Nodes run twice, on the first token and on the others: they read `input` and are read
/// outside only through `outputs` (each with its producer), which the halves are joined into.
struct Block {
    layer: usize,
    part: Part,
    nodes: HashSet<usize>,
    input: String,
    outputs: Vec<(String, usize)>,
    /// The width of each output (its linear layer's out features).
    widths: Vec<usize>,
}

/// Why `nodes` is not a closed block: a node reshapes or holds a subgraph, reads a computed value
/// from outside other than `inputs`, or has an output other than `outputs` read outside.
fn open(ix: &GraphIndex, nodes: &HashSet<usize>, inputs: &[&str], outputs: &[&str], what: &str) -> Option<String> {
    let mut sorted: Vec<usize> = nodes.iter().copied().collect();
    sorted.sort_unstable();
    sorted.into_iter().find_map(|i| {
        let n = ix.node(i);
        if RESHAPING.contains(&n.op_type()) || !n.attribute.iter().all(|a| a.g.is_none() && a.graphs.is_empty()) {
            return Some(format!("{} inside its {what}", ix.node_label(i)));
        }
        for v in ix.dynamic_inputs(i) {
            if !inputs.contains(&v) && !ix.producer(v).is_some_and(|p| nodes.contains(&p)) {
                return Some(format!("{} reads '{v}' from outside its {what}", ix.node_label(i)));
            }
        }
        n.output
            .iter()
            .filter(|o| !outputs.contains(&o.as_str()))
            .find_map(|o| {
                (ix.is_graph_output(o) || ix.consumers(o).iter().any(|c| !nodes.contains(c)))
                    .then(|| format!("'{o}' inside its {what} is read outside it"))
            })
    })
}

/// A block of spans, each from a linear layer reading `input` to a linear layer's output (the
/// same layer for Q, K, V; up to down for the FFN), with everything between.
fn linear_block(
    ix: &GraphIndex,
    layer: usize,
    part: Part,
    input: &str,
    spans: &[(&Linear, &Linear)],
) -> Result<Block, String> {
    let what = part.name();
    let mut nodes = HashSet::new();
    let mut outputs = vec![];
    let mut widths = vec![];
    for (start, end) in spans {
        if start.transposed || end.transposed || ix.node(start.node).op_type() != "MatMul" {
            return Err(format!("its {what} is a Gemm (2-D activations)"));
        }
        if ix.node(start.node).input[0] != input {
            return Err(format!(
                "its {what} does not read the {} directly",
                match part {
                    Part::Qkv => "layer input",
                    Part::Ffn => "LayerNorm output",
                }
            ));
        }
        let last = ix
            .producer(&end.output)
            .ok_or_else(|| format!("its {what} output '{}' is not computed", end.output))?;
        nodes.extend(between(ix, start.node, last));
        outputs.push((end.output.clone(), last));
        widths.push(end.out_features);
    }
    let outs: Vec<&str> = outputs.iter().map(|(o, _)| o.as_str()).collect();
    if let Some(why) = open(ix, &nodes, &[input], &outs, what) {
        return Err(why);
    }
    Ok(Block {
        layer,
        part,
        nodes,
        input: input.to_string(),
        outputs,
        widths,
    })
}

/// The last layer's nodes after its FFN (residual `Add`, LayerNorm) when the model reads only the
/// first token of that layer's output: every reader is a `Gather` of index 0 on axis 1. They read
/// only the FFN output and the FFN input (the residual), so they can run on the first token alone.
struct Tail {
    layer: usize,
    block: usize,
    nodes: HashSet<usize>,
    output: String,
    readers: HashSet<usize>,
}

fn first_token_tail(ix: &GraphIndex, t: &Transformer, blocks: &[Block]) -> Option<Tail> {
    let last = t.layers.last()?;
    let b = blocks
        .iter()
        .position(|b| b.layer == last.index && b.part == Part::Ffn)?;
    let blk = &blocks[b];
    let output = &last.output_norm.output;
    let readers = ix.consumers(output);
    let first_token = |&i: &usize| {
        let n = ix.node(i);
        n.op_type() == "Gather"
            && ix.attr_i(i, "axis") == Some(1)
            && n.input.get(1).and_then(|v| ix.const_i64(v)) == Some(vec![0])
    };
    if ix.is_graph_output(output) || readers.is_empty() || !readers.iter().all(first_token) {
        return None;
    }
    let (ffn_out, _) = &blk.outputs[0];
    let mut nodes = HashSet::new();
    for &c in ix.consumers(ffn_out) {
        nodes.extend(between(ix, c, last.output_norm.node));
    }
    let all_read_inside = ix.consumers(ffn_out).iter().all(|c| nodes.contains(c));
    if !nodes.contains(&last.output_norm.node) || !all_read_inside || ix.is_graph_output(ffn_out) {
        return None;
    }
    if open(ix, &nodes, &[ffn_out, &blk.input], &[output], "last layer").is_some() {
        return None;
    }
    Some(Tail {
        layer: last.index,
        block: b,
        nodes,
        output: output.clone(),
        readers: readers.iter().copied().collect(),
    })
}

/// The shape values of an attention's head reshapes (split into heads, merged back), found by
/// discovery from their head sizes: the reshape's constant, or the `Concat` that builds it.
fn head_shapes(ix: &GraphIndex, a: &crate::structure::Attention) -> HashSet<String> {
    a.shape_consts
        .iter()
        .filter(|c| c.role != crate::structure::ShapeRole::MaskHeads)
        .filter_map(|c| {
            let u = ix.node(c.used_by_node);
            match u.op_type() {
                "Reshape" => u.input.get(1).cloned(),
                "Concat" => u.output.first().cloned(),
                _ => None,
            }
        })
        .collect()
}

/// `n` copied for one half: inputs renamed through `names`, outputs renamed with `suffix` (and
/// recorded in `names`). With `rename` the node's name gets the suffix too and `origin` records
/// the copy (the other-tokens half keeps the original names).
fn copy_node(
    n: &NodeProto,
    names: &mut HashMap<String, String>,
    suffix: &str,
    rename: bool,
    patch: &mut Patch,
    origin: &mut HashMap<String, String>,
) -> NodeProto {
    let mut c = n.clone();
    for v in c.input.iter_mut() {
        if let Some(r) = names.get(v.as_str()) {
            *v = r.clone();
        }
    }
    for o in c.output.iter_mut().filter(|o| !o.is_empty()) {
        let r = patch.fresh_name(&format!("{o}_{suffix}"));
        names.insert(o.clone(), r.clone());
        *o = r;
    }
    if rename && !n.name().is_empty() {
        c.name = Some(format!("{}_{suffix}", n.name()));
        origin.insert(c.name().to_string(), n.name().to_string());
    }
    c
}

/// The real tokens after the first of each sequence: their (batch, position) pairs in the
/// other-tokens half [batch, sequence − 1, ·], computed once from `attention_mask` before the
/// first unpadded block. `GatherND` takes their rows out, `ScatterND` puts them back into zeros
/// (no `Reshape`: its 0 would copy a dimension when the half is empty).
struct Rows {
    /// [N, 2] (batch, position) of each real token.
    index: String,
    /// [2]: batch, sequence − 1.
    shape: String,
    /// Per width W: the initializers [W] and [−1, W].
    widths: HashMap<usize, (String, String)>,
}

impl Rows {
    /// `one` and `end`: the split's [1] and [i64::MAX] initializers.
    fn new(
        mask: Option<&str>,
        (one, end): (&str, &str),
        blocks: &[Block],
        packed: &HashSet<usize>,
        starts: &HashMap<usize, usize>,
        patch: &mut Patch,
    ) -> Option<Rows> {
        let mask = mask?;
        let at = *starts
            .iter()
            .filter(|(_, b)| packed.contains(b))
            .map(|(i, _)| i)
            .min()?;
        let name = |patch: &mut Patch, s: &str| patch.fresh_name(&format!("unpad_{s}"));
        let [rest, nz, index, shape] = ["mask_after_first", "nonzero", "rows", "padded_shape"].map(|s| name(patch, s));
        for n in [
            node("Slice", "/unpad/MaskAfterFirst", &[mask, one, end, one], &[&rest]),
            node("NonZero", "/unpad/NonZero", &[&rest], &[&nz]),
            with_attrs(
                node("Transpose", "/unpad/Rows", &[&nz], &[&index]),
                vec![attr_ints("perm", &[1, 0])],
            ),
            node("Shape", "/unpad/PaddedShape", &[&rest], &[&shape]),
        ] {
            patch.insert_before(at, n);
        }
        let mut widths = HashMap::new();
        for blk in blocks
            .iter()
            .enumerate()
            .filter(|(b, _)| packed.contains(b))
            .map(|(_, blk)| blk)
        {
            for &w in &blk.widths {
                widths.entry(w).or_insert_with(|| {
                    let (v, m) = (name(patch, &format!("width_{w}")), name(patch, &format!("rows_by_{w}")));
                    patch.add_initializer(tensor::from_i64(&v, &[1], &[w as i64]));
                    patch.add_initializer(tensor::from_i64(&m, &[2], &[-1, w as i64]));
                    (v, m)
                });
            }
        }
        Some(Rows { index, shape, widths })
    }

    /// Before node `at`: the real tokens' rows of `x` ([batch, sequence − 1, width] → [N,
    /// width]), a `GatherND` named with [`UNPAD_GATHER`]; returns their value.
    fn gather(&self, base: &str, x: &str, patch: &mut Patch, at: usize) -> String {
        let real = patch.fresh_name(&format!("{x}_unpadded"));
        patch.insert_before(
            at,
            node(
                "GatherND",
                &format!("{base}{UNPAD_GATHER}"),
                &[x, &self.index],
                &[&real],
            ),
        );
        real
    }

    /// Appends to `nodes` the scatter of the real tokens' rows `y` (width `w`) back into zeros
    /// of the padded [batch, sequence − 1, w] as `out`.
    fn scatter(&self, base: &str, y: &str, w: usize, out: &str, patch: &mut Patch, nodes: &mut Vec<NodeProto>) {
        let (width, by) = &self.widths[&w];
        let [rows, zshape, zeros] = ["rows", "zeros_shape", "zeros"].map(|s| patch.fresh_name(&format!("{y}_{s}")));
        // Rows even where a constant of higher rank broadcast them to [1, N, w].
        nodes.push(node("Reshape", &format!("{base}/UnpadRows"), &[y, by], &[&rows]));
        nodes.push(with_attrs(
            node(
                "Concat",
                &format!("{base}/UnpadZerosShape"),
                &[&self.shape, width],
                &[&zshape],
            ),
            vec![attr_int("axis", 0)],
        ));
        nodes.push(with_attrs(
            node("ConstantOfShape", &format!("{base}/UnpadZeros"), &[&zshape], &[&zeros]),
            vec![attr_tensor("value", tensor::from_f32("value", &[1], &[0.0]))],
        ));
        nodes.push(node(
            "ScatterND",
            &format!("{base}/Repad"),
            &[&zeros, &self.index, &rows],
            &[out],
        ));
    }
}

/// The rank-2 graph input `attention_mask` (the real tokens of each sequence), or why not.
pub(super) fn attention_mask(ix: &GraphIndex) -> Result<String, String> {
    let v = ix
        .graph
        .input
        .iter()
        .find(|v| v.name() == "attention_mask")
        .ok_or("the model has no attention_mask input")?;
    if declared_rank(v).is_some_and(|r| r != 2) {
        return Err("its attention_mask input is not [batch, sequence]".into());
    }
    Ok(v.name().to_string())
}

/// Whether `Shape` node `i` is read for its last element alone (`Gather(·, -1)` on axis 0 by
/// every reader): the width, the same on rows [tokens, width] as on [batch, sequence, width]
/// (ModernBERT's gated FFN reads its up-projection's to split it in two halves).
pub(super) fn width_only_shape(ix: &GraphIndex, i: usize) -> bool {
    let n = ix.node(i);
    ix.whole_shape(i)
        && !ix.is_graph_output(&n.output[0])
        && !ix.consumers(&n.output[0]).is_empty()
        && ix.consumers(&n.output[0]).iter().all(|&g| {
            let gn = ix.node(g);
            gn.op_type() == "Gather"
                && gn.domain().is_empty()
                && gn.input[0] == n.output[0]
                && ix.attr_i(g, "axis").unwrap_or(0) == 0
                && gn.input.get(1).and_then(|j| ix.const_i64(j)).as_deref() == Some(&[-1])
        })
}

/// Whether `Slice` node `i` slices the last axis alone (axes [-1], steps 1): it acts on each
/// row alone, whatever its bounds (computed before the packing, or from a [`width_only_shape`]).
pub(super) fn last_axis_slice(ix: &GraphIndex, i: usize) -> bool {
    let n = ix.node(i);
    let c = |slot: usize| n.input.get(slot).filter(|v| !v.is_empty()).map(|v| ix.const_i64(v));
    n.op_type() == "Slice"
        && n.domain().is_empty()
        && c(3) == Some(Some(vec![-1]))
        && c(4).is_none_or(|s| s.as_deref() == Some(&[1][..]))
}

/// Whether `Split` node `i` splits the width of a [batch, sequence, width] value (axis 2 or -1;
/// the dynamo exporter's gated FFN halves): it acts on each row alone once its axis reads -1
/// ([`on_last_axis`]).
pub(super) fn width_split(ix: &GraphIndex, i: usize) -> bool {
    let n = ix.node(i);
    n.op_type() == "Split" && n.domain().is_empty() && matches!(ix.attr_i(i, "axis"), Some(2) | Some(-1))
}

/// `n` (a [`width_split`]) splitting the last axis by that name, which rows [tokens, width] have
/// too.
pub(super) fn on_last_axis(mut n: NodeProto) -> NodeProto {
    for a in n.attribute.iter_mut().filter(|a| a.name() == "axis") {
        a.i = Some(-1);
    }
    n
}

/// Why `nodes` do not act on each token on their own, if they do not: a node of an op outside
/// [`ROW_WISE`] (but a [`width_only_shape`], its `Gather`s, a [`last_axis_slice`] and a
/// [`width_split`]), or one reading a constant that varies along an axis before the last (a
/// MatMul's weight aside).
fn not_row_wise(ix: &GraphIndex, nodes: &HashSet<usize>) -> Option<String> {
    let mut sorted: Vec<usize> = nodes.iter().copied().collect();
    sorted.sort_unstable();
    let width_read = |i: usize| {
        ix.node(i).op_type() == "Gather"
            && ix
                .producer(&ix.node(i).input[0])
                .is_some_and(|sh| width_only_shape(ix, sh))
    };
    sorted.into_iter().find_map(|i| {
        let n = ix.node(i);
        let row_wise = ROW_WISE.contains(&n.op_type())
            || width_only_shape(ix, i)
            || width_read(i)
            || last_axis_slice(ix, i)
            || width_split(ix, i);
        if !row_wise {
            return Some(format!("{} does not act on each token alone", ix.node_label(i)));
        }
        n.input.iter().enumerate().find_map(|(slot, v)| {
            let dims = &ix.constant(v)?.tensor().dims;
            let weight = n.op_type() == "MatMul" && slot == 1;
            (!weight && dims.len() > 1 && dims[..dims.len() - 1].iter().any(|&d| d != 1))
                .then(|| format!("{} reads a constant of shape {dims:?}", ix.node_label(i)))
        })
    })
}

/// Splits every FFN block it can, and with `qkv` every Q/K/V block; the others are listed in
/// `skipped`. With `unpad`, every split block's other-tokens half that can runs on the real
/// tokens only (module note). A model that is not a transformer the structure discovery can map
/// is returned unchanged, with the reason.
pub fn split_first_token(model: &ModelProto, qkv: bool, unpad: bool) -> Result<Split, PassError> {
    let unchanged = |skipped: Vec<String>| Split {
        model: model.clone(),
        layers: vec![],
        qkv_layers: vec![],
        first_token_only: None,
        first_token_attention: None,
        probes: HashMap::new(),
        origin: HashMap::new(),
        skipped,
        unpadded_layers: vec![],
        unpad_skipped: vec![],
    };
    let g = crate::passes::graph(model)?;
    let t = match discover(model) {
        Ok(t) => t,
        Err(e) => return Ok(unchanged(vec![format!("no transformer found ({e})")])),
    };
    let ix = GraphIndex::new(g);
    if let Err(why) = sequence_on_axis_1(&ix, &t) {
        return Ok(unchanged(vec![why]));
    }

    let mut blocks = vec![];
    let mut skipped = vec![];
    for l in &t.layers {
        if let Some(a) = l.attention.as_ref().filter(|_| qkv) {
            let qkv = match &a.qkv {
                Qkv::Separate { q, k, v } if !a.fused => {
                    linear_block(&ix, l.index, Part::Qkv, &l.input, &[(q, q), (k, k), (v, v)])
                }
                Qkv::Stacked { qkv } => linear_block(&ix, l.index, Part::Qkv, &l.input, &[(qkv, qkv)]),
                _ => Err("its attention is one fused op".to_string()),
            };
            match qkv {
                Ok(b) => blocks.push(b),
                Err(why) => skipped.push(format!("layer {}: {why}", l.index)),
            }
        }
        if let Some(f) = &l.ffn {
            match linear_block(&ix, l.index, Part::Ffn, &l.attention_norm.output, &[(&f.up, &f.down)]) {
                Ok(b) => blocks.push(b),
                Err(why) => skipped.push(format!("layer {}: {why}", l.index)),
            }
        }
    }
    if blocks.is_empty() {
        return Ok(unchanged(skipped));
    }
    let tail = first_token_tail(&ix, &t, &blocks);
    let first_only = tail.as_ref().map(|tl| tl.block);
    // The blocks whose other-tokens half runs on the real tokens only.
    let mut packed: HashSet<usize> = HashSet::new();
    let mut unpad_skipped = vec![];
    let mask = if unpad {
        attention_mask(&ix)
            .map_err(|why| unpad_skipped.push(format!("not unpadded: {why}")))
            .ok()
    } else {
        None
    };
    if mask.is_some() {
        for (b, blk) in blocks.iter().enumerate().filter(|&(b, _)| first_only != Some(b)) {
            match not_row_wise(&ix, &blk.nodes) {
                None => {
                    packed.insert(b);
                }
                Some(why) => unpad_skipped.push(format!(
                    "layer {}: its {} not unpadded: {why}",
                    blk.layer,
                    blk.part.name()
                )),
            }
        }
    }

    let mut m = model.clone();
    let out_g = crate::passes::graph_mut(&mut m)?;
    let mut patch = Patch::new(g);
    let mut probes = HashMap::new();
    let mut origin = HashMap::new();
    let (mut layers, mut qkv_layers) = (vec![], vec![]);
    let zero = patch.fresh_name("first_token_split_0");
    let one = patch.fresh_name("first_token_split_1");
    let end = patch.fresh_name("first_token_split_end");
    patch.add_initializer(tensor::from_i64(&zero, &[1], &[0]));
    patch.add_initializer(tensor::from_i64(&one, &[1], &[1]));
    patch.add_initializer(tensor::from_i64(&end, &[1], &[i64::MAX]));

    let by_node: HashMap<usize, usize> = blocks
        .iter()
        .enumerate()
        .flat_map(|(b, blk)| blk.nodes.iter().map(move |&i| (i, b)))
        .collect();
    let starts: HashMap<usize, usize> = blocks
        .iter()
        .enumerate()
        .filter_map(|(b, blk)| blk.nodes.iter().min().map(|&i| (i, b)))
        .collect();
    // Per block: the renaming of the rest copy (original nodes) and of the first-token copy.
    let mut rest: Vec<HashMap<String, String>> = vec![HashMap::new(); blocks.len()];
    let mut first: Vec<HashMap<String, String>> = vec![HashMap::new(); blocks.len()];
    // The block (the last FFN) whose other-tokens half nothing would read: only its first-token
    // copy is built, and the tail after it joins that copy (`first_only`, above).
    let rows = Rows::new(mask.as_deref(), (&one, &end), &blocks, &packed, &starts, &mut patch);
    // Each joined block output → its first-token half ([batch, 1, width]).
    let mut halves_of: HashMap<String, String> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        if let Some(tl) = tail.as_ref() {
            if tl.nodes.contains(&i) {
                let c = copy_node(n, &mut first[tl.block], "first", true, &mut patch, &mut origin);
                patch.replace_node(i, vec![c]);
                continue;
            }
            if tl.readers.contains(&i) {
                patch.rewire(i, 0, &first[tl.block][&tl.output]);
                continue;
            }
        }
        let Some(&b) = by_node.get(&i) else { continue };
        let blk = &blocks[b];
        let both = first_only != Some(b);
        let base = match blk.part {
            Part::Ffn => format!("/first_token_split/layer.{}", blk.layer),
            Part::Qkv => format!("/first_token_split/layer.{}/qkv", blk.layer),
        };
        if starts.get(&i) == Some(&b) {
            if both {
                let xr = patch.fresh_name(&format!("{}_after_first", blk.input));
                patch.insert_before(
                    i,
                    node(
                        "Slice",
                        &format!("{base}/SliceAfterFirst"),
                        &[&blk.input, &one, &end, &one],
                        &[&xr],
                    ),
                );
                let xr = match &rows {
                    Some(r) if packed.contains(&b) => r.gather(&base, &xr, &mut patch, i),
                    _ => xr,
                };
                rest[b].insert(blk.input.clone(), xr);
            }
            let xf = patch.fresh_name(&format!("{}_first", blk.input));
            patch.insert_before(
                i,
                node(
                    "Slice",
                    &format!("{base}/SliceFirst"),
                    &[&blk.input, &zero, &one, &one],
                    &[&xf],
                ),
            );
            first[b].insert(blk.input.clone(), xf);
        }
        let mut nodes = vec![];
        let halves = [
            (&mut rest[b], Tokens::AfterFirst, "after_first", false),
            (&mut first[b], Tokens::First, "first", true),
        ];
        for (copy, tokens, suffix, rename) in halves.into_iter().filter(|&(_, t, _, _)| both || t == Tokens::First) {
            if n.op_type() == "MatMul" {
                for v in &n.input {
                    if let Some(r) = copy.get(v) {
                        probes.insert(
                            r.clone(),
                            Probe {
                                value: v.clone(),
                                tokens,
                            },
                        );
                    }
                }
            }
            let c = copy_node(n, copy, suffix, rename, &mut patch, &mut origin);
            // Block values are [batch, sequence, width] or rows [tokens, width].
            nodes.push(if width_split(&ix, i) { on_last_axis(c) } else { c });
        }
        for (k, (out, _)) in blk.outputs.iter().enumerate().filter(|(_, (_, p))| *p == i && both) {
            let name = match blk.part {
                Part::Ffn => format!("{base}/Concat"),
                Part::Qkv if blk.outputs.len() == 1 => format!("{base}/Concat_qkv"),
                Part::Qkv => format!("{base}/Concat_{}", ["q", "k", "v"][k]),
            };
            let others = match &rows {
                Some(r) if packed.contains(&b) => {
                    let padded = patch.fresh_name(&format!("{}_padded", rest[b][out]));
                    r.scatter(&name, &rest[b][out], blk.widths[k], &padded, &mut patch, &mut nodes);
                    padded
                }
                _ => rest[b][out].clone(),
            };
            halves_of.insert(out.clone(), first[b][out].clone());
            nodes.push(with_attrs(
                node("Concat", &name, &[&first[b][out], &others], &[out]),
                vec![attr_int("axis", 1)],
            ));
        }
        patch.replace_node(i, nodes);
        if blk.outputs.last().is_some_and(|&(_, p)| p == i) {
            match blk.part {
                Part::Ffn => layers.push(blk.layer),
                Part::Qkv => qkv_layers.push(blk.layer),
            }
        }
    }
    patch.apply(out_g)?;
    // The last layer's attention for its first token's query alone, when nothing reads the rest.
    let mut first_token_attention = None;
    if let Some(tl) = tail.as_ref() {
        let last = &t.layers[t.layers.len() - 1];
        let heads = last.attention.as_ref().map(|a| head_shapes(&ix, a)).unwrap_or_default();
        // The residual stream is [batch, sequence, hidden] (`sequence_on_axis_1`).
        let hidden: HashMap<String, usize> = t
            .layers
            .iter()
            .flat_map(|l| [&l.input, &l.attention_norm.output, &l.output_norm.output])
            .map(|v| (v.clone(), 3))
            .collect();
        let seed = &first[tl.block][&blocks[tl.block].input];
        let q = super::query::first_token_query(&m, seed, &halves_of, &heads, &last.input, &hidden)?;
        // Only when the scores moved: short of them the gain is small (the output projection and
        // a LayerNorm), and dynamic INT8 then quantizes that projection's input by the first
        // token's range alone for little (on DeBERTa's matrix cells, a larger logit error than
        // ONNX Runtime's quantize_dynamic).
        if q.scores {
            m = q.model;
            probes.extend(q.probes);
            first_token_attention = Some(tl.layer);
        }
    }
    layers.sort_unstable();
    qkv_layers.sort_unstable();
    let mut unpadded_layers: Vec<usize> = packed.iter().map(|&b| blocks[b].layer).collect();
    unpadded_layers.sort_unstable();
    unpadded_layers.dedup();
    Ok(Split {
        unpadded_layers,
        unpad_skipped,
        model: m,
        layers,
        qkv_layers,
        first_token_only: tail.map(|tl| tl.layer),
        first_token_attention,
        probes,
        origin,
        skipped,
    })
}
