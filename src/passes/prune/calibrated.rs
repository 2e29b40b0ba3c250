//! Calibrated pruning: which heads and neurons go, and how the survivors compensate, decided on
//! calibration data.
//!
//! For each block (attention or FFN) of each layer the tool collects, through ONNX Runtime, the
//! block's input to its output projection X (per-head contexts, or FFN activations, plus a
//! constant 1 for the bias) and the target Y: what the unpruned model adds to the residual
//! stream there, corrected for the drift the already-pruned earlier layers left in the residual
//! (Y = unpruned pre-LayerNorm sum − current residual). With H = XᵀX and W = H⁻¹XᵀY, heads
//! (groups of head-size rows) or neurons (single rows) are removed greedily by the optimal brain
//! surgeon rule — the cheapest removal, in squared error after the others compensate — and the
//! output projection is replaced by the compensated least-squares solution, folded into the
//! weights (no new nodes). Layers are processed in order, each on the already-pruned model.
//!
//! With a MAC budget, the number of heads and neurons per layer comes from a first pass on the
//! unpruned model: each block's greedy cost curve, relative to the energy of the LayerNorm input
//! it perturbs, and units are removed globally, cheapest relative error per MAC saved first.

use std::time::Instant;

use ndarray::linalg::general_mat_mul;
use ndarray::Array2;

use super::*;
use crate::linalg::{obs_greedy, Obs};
use crate::passes::{divergence, ensure_finite, Calibrator};

/// Damping added to the Gram matrix's diagonal, relative to its mean (as in GPTQ/SparseGPT).
const DAMP: f64 = 1e-2;
/// In `sensitivity`'s per-block costs, at most this fraction of a layer's FFN neurons is removed
/// (budget allocation takes `PruneOptions::max_ffn_fraction`, the same by default).
const MAX_FFN_FRACTION: f64 = super::DEFAULT_MAX_FFN_FRACTION;
/// Gram statistics use at most this many tokens (evenly spaced over the calibration data): the
/// largest block has 1,537 unknowns, so this over-determines it five times while bounding the
/// cost of XᵀX.
const MAX_GRAM_TOKENS: usize = 8192;
/// The blocks' Gram statistics are captured a few layers at a time, as many layers as fit in this
/// many bytes (at least one; all of MiniLM's at once, three of BERT-base's): one capture for
/// every layer held every block's statistics and a batch of every layer's values at once (for
/// BERT-base, 1.1 GB of statistics alone). Each capture runs the model up to its last layer only.
const STATS_BYTES: usize = 320 << 20;
/// The unpruned model's sums that the refits reproduce are captured a few layers at a time too,
/// as many layers as fit in this many bytes (all of MiniLM's on SST-2, three of BERT-base's):
/// held for every layer at once they grow with the calibration data (BERT-base, 512 SST-2
/// examples: 0.49 GB, a third of the pass's peak).
const TARGET_BYTES: usize = 128 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Attention,
    Ffn,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Attention => "attention",
            Part::Ffn => "FFN",
        }
    }
}

/// Errors when a captured value holds NaN or infinities: the model itself produces them on the
/// calibration data, and no least-squares fit on them means anything. `what` is only built then.
fn finite_capture(value: &str, what: &dyn Fn() -> String, v: &[f32]) -> Result<(), PassError> {
    if v.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    ensure_finite(
        &format!("{}: value '{value}' computed on the calibration data", what()),
        v,
    )
}

/// Names of the values a layer's calibration needs.
struct Names {
    /// Attention: the residual its output is added to (the layer input; in a pre-LN layer the
    /// residual stream before the LayerNorm), projection input (contexts), the sum (LayerNorm
    /// input).
    x: String,
    ctx: String,
    res1: String,
    /// FFN: the residual its output is added to (the attention LayerNorm output; in a pre-LN
    /// layer the attention's sum), projection input, the sum.
    ln1: String,
    act: String,
    res2: String,
}

/// The other operand of the residual sum `sum` (the input of a LayerNorm: an `Add`, or a
/// `SkipLayerNormalization`'s input and skip) besides the block output `block_out`. When neither
/// operand is the block output as such (a Dropout between), `usual` (where a post-LN layer's
/// residual is) if it is an operand.
fn residual(
    ix: &GraphIndex,
    norm: &structure::Norm,
    sum: &str,
    block_out: &str,
    usual: &str,
    layer: usize,
) -> Result<String, PassError> {
    let operands: Vec<String> = if norm.kind == "SkipLayerNormalization" {
        ix.node(norm.node).input.iter().take(2).cloned().collect()
    } else {
        match ix.producer(sum).map(|p| ix.node(p)) {
            Some(n) if n.op_type() == "Add" && n.input.len() == 2 => n.input.clone(),
            _ => vec![],
        }
    };
    let is = |a: &str, b: &str| ix.resolve(a) == ix.resolve(b);
    let found = match operands.as_slice() {
        [a, b] if is(a, block_out) => Some(b),
        [a, b] if is(b, block_out) => Some(a),
        [a, b] => [a, b].into_iter().find(|v| is(v, usual)),
        _ => None,
    };
    found.cloned().ok_or_else(|| {
        PassError::Unsupported(format!(
            "layer {layer}: calibrated pruning needs the residual sum before {} to be an Add of the block's output '{block_out}' and the residual; use the l1 strategy (--strategy l1; in a recipe, strategy: l1 under args)",
            norm.node_name
        ))
    })
}

/// The value ONNX Runtime's `SkipLayerNormalization` node `norm` writes its sum (input + skip +
/// bias) to: its fourth output, named after its first when the graph leaves it out (see
/// [`with_skip_sums`]).
fn skip_sum(ix: &GraphIndex, norm: &structure::Norm) -> String {
    match ix.node(norm.node).output.get(3).filter(|o| !o.is_empty()) {
        Some(o) => o.clone(),
        None => format!("{}.input_skip_bias_sum", norm.output),
    }
}

/// `model` with every `SkipLayerNormalization` writing its sum to the output [`skip_sum`] names,
/// so that calibration can capture the sum before each LayerNorm (borrowed when none lacks it).
fn with_skip_sums(model: &ModelProto) -> std::borrow::Cow<'_, ModelProto> {
    let lacks = |n: &crate::onnx::NodeProto| {
        n.op_type() == "SkipLayerNormalization" && n.output.get(3).is_none_or(|o| o.is_empty())
    };
    if !model.graph.as_ref().is_some_and(|g| g.node.iter().any(lacks)) {
        return std::borrow::Cow::Borrowed(model);
    }
    let mut out = model.clone();
    for n in out
        .graph
        .iter_mut()
        .flat_map(|g| g.node.iter_mut())
        .filter(|n| lacks(n))
    {
        let sum = format!("{}.input_skip_bias_sum", n.output[0]);
        n.output.resize(4, String::new());
        n.output[3] = sum;
    }
    std::borrow::Cow::Owned(out)
}

fn names(ix: &GraphIndex, l: &EncoderLayer) -> Result<Names, PassError> {
    let norm_input = |n: &structure::Norm| -> Result<String, PassError> {
        if n.kind == "SkipLayerNormalization" {
            return Ok(skip_sum(ix, n));
        }
        if n.kind != "LayerNormalization" {
            return Err(PassError::Unsupported(format!(
                "layer {}: calibrated pruning needs LayerNormalization or SkipLayerNormalization nodes, \
                 found {}: export at opset 17 or later (which writes LayerNormalization), or use the l1 strategy (--strategy l1; in a recipe, strategy: l1 under args)",
                l.index, n.kind
            )));
        }
        Ok(ix.node(n.node).input[0].clone())
    };
    let ctx = l
        .attention
        .as_ref()
        .map(|a| ix.node(a.output.node).input[0].clone())
        .unwrap_or_default();
    let act = l
        .ffn
        .as_ref()
        .map(|f| ix.node(f.down.node).input[0].clone())
        .unwrap_or_default();
    let res1 = norm_input(&l.attention_norm)?;
    let res2 = norm_input(&l.output_norm)?;
    let x = match &l.attention {
        Some(a) => residual(ix, &l.attention_norm, &res1, &a.output.output, &l.input, l.index)?,
        None => l.input.clone(),
    };
    let ln1 = match &l.ffn {
        Some(f) => residual(
            ix,
            &l.output_norm,
            &res2,
            &f.down.output,
            &l.attention_norm.output,
            l.index,
        )?,
        None => l.attention_norm.output.clone(),
    };
    Ok(Names {
        x,
        ctx,
        res1,
        ln1,
        act,
        res2,
    })
}

/// [`names`] for every layer.
fn all_names(model: &ModelProto, t: &Transformer) -> Result<Vec<Names>, PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    t.layers.iter().map(|l| names(&ix, l)).collect()
}

/// Gram statistics of one block: H = XᵀX and C = XᵀY with X = [units, 1], and the energy of
/// the LayerNorm input (Σ over tokens of its centred squared norm).
struct Stats {
    h: Array2<f64>,
    c: Array2<f64>,
    energy: f64,
    /// Tokens seen so far (all of them, used or not) and the spacing of those used.
    seen: usize,
    stride: usize,
}

impl Stats {
    fn new(units: usize, width: usize, total_tokens: usize) -> Stats {
        Stats {
            h: Array2::zeros((units + 1, units + 1)),
            c: Array2::zeros((units + 1, width)),
            energy: 0.0,
            seen: 0,
            stride: total_tokens.div_ceil(MAX_GRAM_TOKENS).max(1),
        }
    }

    /// Adds one batch: `x` [t, units], `target` [t, width] (the pre-LN sum to reproduce),
    /// `resid` [t, width] (the residual the block's output is added to).
    fn add(&mut self, t: usize, x: &[f32], target: &[f32], resid: &[f32]) {
        let units = self.h.nrows() - 1;
        let width = self.c.ncols();
        let rows: Vec<usize> = (0..t).filter(|r| (self.seen + r) % self.stride == 0).collect();
        self.seen += t;
        let mut xb = Array2::<f64>::zeros((rows.len(), units + 1));
        let mut yb = Array2::<f64>::zeros((rows.len(), width));
        for (k, &r) in rows.iter().enumerate() {
            let r_out = k;
            for (dst, &v) in xb.row_mut(r_out).iter_mut().zip(&x[r * units..(r + 1) * units]) {
                *dst = v as f64;
            }
            xb[[r_out, units]] = 1.0;
            let tr = &target[r * width..(r + 1) * width];
            let rr = &resid[r * width..(r + 1) * width];
            let mean = tr.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            self.energy += tr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
            for (c, dst) in yb.row_mut(r_out).iter_mut().enumerate() {
                *dst = tr[c] as f64 - rr[c] as f64;
            }
        }
        general_mat_mul(1.0, &xb.t(), &xb, 1.0, &mut self.h);
        general_mat_mul(1.0, &xb.t(), &yb, 1.0, &mut self.c);
    }

    /// The least-squares problem, regularized toward the current weights `w0` ([units, width],
    /// logical [in, out] layout): min ‖XW − Y‖² + λ‖W − W₀‖² with λ = DAMP × mean diag(H), so
    /// that the refit never strays far from what the layer had where the data says little.
    fn obs(&self, w0: &[f64], what: &str) -> Result<Obs, PassError> {
        Self::solve(self.h.iter().copied().collect(), &self.c, w0, what)
    }

    /// [`Stats::obs`], handing H over rather than copying it: for the widest FFN block (BERT-base:
    /// 3073² values, 75 MB) the copy was a quarter of the pass's peak above its base.
    fn into_obs(self, w0: &[f64], what: &str) -> Result<Obs, PassError> {
        let (h, offset) = self.h.into_raw_vec_and_offset();
        if offset.is_some_and(|o| o != 0) {
            return Err(PassError::Internal("the Gram matrix does not start its buffer".into()));
        }
        Self::solve(h, &self.c, w0, what)
    }

    /// The least-squares problem of `obs` from H = XᵀX (row-major) and C = XᵀY.
    fn solve(h: Vec<f64>, c: &Array2<f64>, w0: &[f64], what: &str) -> Result<Obs, PassError> {
        let n = c.nrows();
        let m = c.ncols();
        let units = n - 1;
        let mean_diag = (0..units).map(|i| h[i * n + i]).sum::<f64>() / units.max(1) as f64;
        let mut c: Vec<f64> = c.iter().copied().collect();
        let lambda = DAMP * mean_diag.max(1e-12);
        for (ci, wi) in c.iter_mut().zip(w0) {
            *ci += lambda * wi;
        }
        if h.iter().chain(&c).any(|v| !v.is_finite()) {
            return Err(PassError::Calibration(format!(
                "{what}: the least-squares statistics overflowed (values too large to fit)"
            )));
        }
        let obs = Obs::new(h, &c, n, m, lambda)
            .map_err(|e| PassError::Calibration(format!("{what}: least squares failed: {e}")))?;
        if obs.w.iter().any(|v| !v.is_finite()) {
            return Err(PassError::Calibration(format!(
                "{what}: least squares produced non-finite weights"
            )));
        }
        Ok(obs)
    }
}

/// The output projection's weight in logical [in, out] layout, as f64.
fn logical_weight(model: &ModelProto, lin: &Linear) -> Result<Vec<f64>, PassError> {
    let w = source_weight(model, &lin.weight)?;
    let (i, o) = (lin.in_features, lin.out_features);
    Ok(if lin.transposed {
        let mut out = vec![0.0; i * o];
        for r in 0..o {
            for c in 0..i {
                out[c * o + r] = w[r * i + c] as f64;
            }
        }
        out
    } else {
        w.iter().map(|&v| v as f64).collect()
    })
}

/// Groups of rows: heads (head-size rows each) or single neurons.
fn groups(part: Part, l: &EncoderLayer) -> Vec<Vec<usize>> {
    match part {
        Part::Attention => {
            let a = l.attention.as_ref().map_or((0, 0), |a| (a.num_heads, a.head_size));
            (0..a.0).map(|h| (h * a.1..(h + 1) * a.1).collect()).collect()
        }
        Part::Ffn => (0..l.ffn_width()).map(|j| vec![j]).collect(),
    }
}

/// The layers that run block `part` of layer `lead` with its weights: `lead` and the layers
/// sharing them (ALBERT's); empty when `lead` itself reads an earlier layer's weights. One
/// shared block is fitted once, to all its layers' statistics summed (the least-squares problem
/// of one weight that must serve every layer reading it), and pruned alike in all of them.
fn sharing(shared: &[(Option<usize>, Option<usize>)], lead: usize, part: Part) -> Vec<usize> {
    let of = |j: usize| match part {
        Part::Attention => shared[j].0,
        Part::Ffn => shared[j].1,
    };
    if of(lead).is_some() {
        return vec![];
    }
    (lead..shared.len())
        .filter(|&j| j == lead || of(j) == Some(lead))
        .collect()
}

/// One block's greedy removal costs (relative to the energy of the LayerNorm input it feeds)
/// and the MACs one unit costs (in all the layers running it).
#[derive(Clone)]
struct Curve {
    /// The layers running the block: one, or those sharing its weights.
    layers: Vec<usize>,
    part: Part,
    costs: Vec<f64>,
    unit_macs: u64,
}

impl Curve {
    /// The cost of taking unit `n` (0 for a negative estimate).
    fn cost(&self, n: usize) -> f64 {
        self.costs[n].max(0.0)
    }

    /// [`Curve::cost`] per MAC it saves.
    fn per_mac(&self, n: usize) -> f64 {
        self.cost(n) / self.unit_macs as f64
    }
}

/// Per layer: the attention's and the FFN's statistics (`None` for a block that is gone).
type LayerStats = (Option<Stats>, Option<Stats>);

/// The Gram statistics of the blocks of `layers` on the unpruned model (one capture over the
/// calibration data).
fn block_stats(
    model: &ModelProto,
    t: &Transformer,
    layer_names: &[Names],
    layers: std::ops::Range<usize>,
    calib: &mut dyn Calibrator,
) -> Result<Vec<LayerStats>, PassError> {
    let mut wanted: Vec<String> = Vec::new();
    let total_tokens = calib.tokens();
    let shared = t.shared_weights();
    // The statistics of a block whose weights other layers share sum theirs: kept at the first
    // (which `each_block_stats` puts in the same run), `None` at the others.
    let lead = |li: usize, part: Part| -> Result<usize, PassError> {
        let first = match part {
            Part::Attention => shared[li].0,
            Part::Ffn => shared[li].1,
        }
        .unwrap_or(li);
        first
            .checked_sub(layers.start)
            .ok_or_else(|| PassError::Internal(format!("layer {li} shares layer {first}'s weights across runs")))
    };
    let mut stats: Vec<LayerStats> = Vec::new();
    for li in layers.clone() {
        let (l, n) = (&t.layers[li], &layer_names[li]);
        let stats_of = |units: usize, part: Part| {
            let k = sharing(&shared, li, part).len();
            (k > 0).then(|| Stats::new(units, t.hidden, total_tokens * k))
        };
        let a = l.attention.as_ref().and_then(|a| {
            wanted.extend([n.x.clone(), n.ctx.clone(), n.res1.clone()]);
            stats_of(a.all_heads(), Part::Attention)
        });
        let f = l.ffn.as_ref().and_then(|f| {
            wanted.extend([n.ln1.clone(), n.act.clone(), n.res2.clone()]);
            stats_of(f.width, Part::Ffn)
        });
        stats.push((a, f));
    }
    wanted.sort();
    wanted.dedup();
    let pos = |name: &str| wanted.iter().position(|w| w == name).unwrap_or(0);
    calib.capture(&with_skip_sums(model), &wanted, &mut |positions, vals| {
        let tokens = positions.len();
        for li in layers.clone() {
            let (l, n) = (&t.layers[li], &layer_names[li]);
            if l.attention.is_some() {
                for v in [&n.ctx, &n.res1, &n.x] {
                    finite_capture(v, &|| format!("layer {li} attention"), &vals[pos(v)].0)?;
                }
                if let Some(a) = stats.get_mut(lead(li, Part::Attention)?).and_then(|s| s.0.as_mut()) {
                    a.add(tokens, &vals[pos(&n.ctx)].0, &vals[pos(&n.res1)].0, &vals[pos(&n.x)].0);
                }
            }
            if l.ffn.is_some() {
                for v in [&n.act, &n.res2, &n.ln1] {
                    finite_capture(v, &|| format!("layer {li} FFN"), &vals[pos(v)].0)?;
                }
                if let Some(f) = stats.get_mut(lead(li, Part::Ffn)?).and_then(|s| s.1.as_mut()) {
                    f.add(
                        tokens,
                        &vals[pos(&n.act)].0,
                        &vals[pos(&n.res2)].0,
                        &vals[pos(&n.ln1)].0,
                    );
                }
            }
        }
        Ok(())
    })?;
    Ok(stats)
}

/// A run of layers for progress: `layers 0–5 of 0–11`, `layer 3 of 0–5`.
fn layers_of(run: std::ops::Range<usize>, t: &Transformer) -> String {
    let all = t.layers.len().saturating_sub(1);
    match run.len() {
        1 => format!("layer {} of 0–{all}", run.start),
        _ => format!("layers {}–{} of 0–{all}", run.start, run.end.saturating_sub(1)),
    }
}

/// One block for progress: `layer 3 FFN of 0–5`.
fn block_of(li: usize, part: Part, layers: usize) -> String {
    format!("layer {li} {} of 0–{}", part.name(), layers.saturating_sub(1))
}

/// Bytes of one layer's block statistics (H and C in f64).
fn stats_bytes(t: &Transformer, l: &EncoderLayer) -> usize {
    let block = |units: usize| 8 * (units + 1) * (units + 1 + t.hidden);
    l.attention.as_ref().map_or(0, |a| block(a.all_heads())) + l.ffn.as_ref().map_or(0, |f| block(f.width))
}

/// What `each_block_stats` calls per block: the calibrator, the layer, the block, its statistics.
type BlockVisit<'a> = dyn FnMut(&mut dyn Calibrator, usize, Part, &Stats) -> Result<(), PassError> + 'a;

/// Calls `each` with every block's statistics on the unpruned model, in layer order, captured
/// layer run by layer run (`budget` bytes of statistics at a time) and released after their run.
/// A block whose weights later layers share is visited once, with their statistics summed.
fn each_block_stats(
    model: &ModelProto,
    t: &Transformer,
    calib: &mut dyn Calibrator,
    budget: usize,
    each: &mut BlockVisit,
) -> Result<(), PassError> {
    let layer_names = all_names(model, t)?;
    // Layers sharing weights (ALBERT) sum their statistics into one block's: one run, holding one
    // block's statistics per distinct weight.
    let shares = t.shared_weights().iter().any(|(a, f)| a.is_some() || f.is_some());
    let runs = if shares {
        std::iter::once(0..t.layers.len()).collect()
    } else {
        crate::passes::runs_within(t.layers.iter().map(|l| stats_bytes(t, l)), budget)
    };
    for run in runs {
        calib.phase(&format!("statistics of {}", layers_of(run.clone(), t)));
        let stats = block_stats(model, t, &layer_names, run.clone(), calib)?;
        for (li, (a, f)) in run.zip(&stats) {
            for (part, st) in [(Part::Attention, a), (Part::Ffn, f)] {
                if let Some(st) = st {
                    each(calib, li, part, st)?;
                }
            }
        }
    }
    Ok(())
}

/// Each block's greedy OBS cost curve on the unpruned model, scaled by a measured sensitivity:
/// the block alone is pruned to `probe` of its units (with compensation) and the divergence of
/// the model's predictions on the calibration data, per unit of the block's local cost, turns
/// local reconstruction error into its effect on the output. The statistics are captured
/// `budget` bytes at a time (`each_block_stats`).
fn curves(
    model: &ModelProto,
    t: &Transformer,
    (seq_len, max_ffn): (usize, f64),
    probe: (f64, f64),
    calib: &mut dyn Calibrator,
    budget: usize,
) -> Result<Vec<Curve>, PassError> {
    calib.phase("the unpruned model's predictions");
    let (reference, labels) = calib.logits(model)?;
    ensure_finite("the unpruned model's logits on the calibration data", &reference)?;
    // Cost curves: relative error added by each successive removal.
    let mut curves: Vec<Curve> = Vec::new();
    // A head count computed once for all layers: every layer's heads go in step, one curve whose
    // unit is a head of every layer (probed together: no layer's heads can be pruned alone).
    let lockstep = heads_in_step(t);
    // A layer that no longer maps without heads keeps one.
    let headless_ok = super::layers_map_without_heads(model, t);
    // Per layer in step: its costs, its plan at the probe level, its local cost, one head's MACs.
    let mut in_step: Vec<(usize, Vec<f64>, LayerPlan, f64, u64)> = Vec::new();
    each_block_stats(model, t, calib, budget, &mut |calib, li, part, st| {
        let l = &t.layers[li];
        let (out_lin, unit) = match part {
            // Heads whose scores carry terms this tool cannot slice are not pruned: no curve,
            // so a budget is met from the other blocks.
            Part::Attention => {
                let Some(att) = l.attention.as_ref().filter(|a| a.heads_fixed.is_none()) else {
                    return Ok(());
                };
                (&att.output, structure::head_macs(att, t.hidden, seq_len))
            }
            // Likewise neurons read by a per-neuron constant this tool does not slice.
            Part::Ffn => {
                let Some(ffn) = l.ffn.as_ref().filter(|f| f.neurons_fixed.is_none()) else {
                    return Ok(());
                };
                (&ffn.down, structure::neuron_macs(ffn, seq_len))
            }
        };
        let w0 = logical_weight(model, out_lin)?;
        let gs = groups(part, l);
        let limit = match part {
            Part::Attention => gs.len() - usize::from(!headless_ok[li]).min(gs.len()),
            Part::Ffn => (gs.len() as f64 * max_ffn) as usize,
        };
        if limit == 0 {
            // Nothing it may remove (a layer's last head where the layer would no longer map):
            // no curve, not even the probe's one unit.
            return Ok(());
        }
        // Probe: this block alone at the probe level, compensated, through the whole model;
        // then the same greedy run goes on to the limit for the cost curve.
        let fraction = if part == Part::Attention { probe.0 } else { probe.1 };
        // The probe keeps a head: some layouts no longer map without one (DeBERTa's), and the
        // probe measures a sensitivity, which a partial block gives as well.
        let probe_limit = match part {
            Part::Attention => limit.saturating_sub(1),
            Part::Ffn => limit,
        };
        let k = ((gs.len() as f64 * fraction).round() as usize).clamp(1, probe_limit.max(1));
        let what = format!("layer {li} {}", part.name());
        let mut obs = st.obs(&w0, &what)?;
        let (_, mut costs) = obs_greedy(&mut obs, &gs, k);
        let local: f64 = costs.iter().sum();
        let plan = block_plan(t, li, part, &obs, &gs, out_lin)?;
        let (_, rest) = obs_greedy(&mut obs, &gs, limit.saturating_sub(k));
        costs.extend(rest);
        if part == Part::Attention && lockstep {
            // One head of every layer per unit, and never the last (the shared count stays > 0).
            costs.truncate(gs.len().saturating_sub(1));
            in_step.push((li, costs, plan.layers[li].clone(), local, unit));
            return Ok(());
        }
        let probed = apply_plan(model, t, &plan)?;
        calib.phase(&format!("the cost of {}", block_of(li, part, t.layers.len())));
        let (logits, _) = calib.logits(&probed)?;
        ensure_finite(
            &format!("{what}: the logits with this block pruned alone (sensitivity probe)"),
            &logits,
        )?;
        let sensitivity = divergence(&reference, &logits, labels) / local.max(1e-30);
        let layers = sharing(&t.shared_weights(), li, part);
        curves.push(Curve {
            unit_macs: unit * layers.len() as u64,
            layers,
            part,
            costs: costs.iter().map(|c| c * sensitivity).collect(),
        });
        Ok(())
    })?;
    if !in_step.is_empty() {
        let mut plan = Plan::keep_all(t);
        for (li, _, lp, _, _) in &in_step {
            plan.layers[*li] = lp.clone();
        }
        calib.phase("the cost of every layer's heads in step");
        let (logits, _) = calib.logits(&apply_plan(model, t, &plan)?)?;
        ensure_finite(
            "the logits with every layer's heads pruned in step (sensitivity probe)",
            &logits,
        )?;
        let local: f64 = in_step.iter().map(|x| x.3).sum();
        let sensitivity = divergence(&reference, &logits, labels) / local.max(1e-30);
        let n = in_step.iter().map(|x| x.1.len()).min().unwrap_or(0);
        curves.push(Curve {
            layers: in_step.iter().map(|x| x.0).collect(),
            part: Part::Attention,
            costs: (0..n)
                .map(|i| in_step.iter().map(|x| x.1[i]).sum::<f64>() * sensitivity)
                .collect(),
            unit_macs: in_step.iter().map(|x| x.4).sum(),
        });
    }
    Ok(curves)
}

/// Whether every layer's head count is one value computed once for all layers (a dynamo DeBERTa
/// export's position indices): their heads are pruned in step, as many in every layer, all
/// layers' attention in one rewrite. Not with layers sharing weights (pruned with their lead).
fn heads_in_step(t: &Transformer) -> bool {
    let shares = t.shared_weights().iter().any(|(a, f)| a.is_some() || f.is_some());
    !shares
        && t.layers
            .iter()
            .any(|l| l.attention.as_ref().is_some_and(|a| a.heads_alike.is_some()))
}

/// Takes units from the curves, cheapest first, until `done` (given each unit's curve) holds.
/// Returns per-layer (heads, neurons).
fn take(
    curves: &[Curve],
    layers: usize,
    allowed: &dyn Fn(&Curve) -> bool,
    done: &mut dyn FnMut(&Curve) -> bool,
) -> Option<Vec<(usize, usize)>> {
    let mut taken = vec![0usize; curves.len()];
    loop {
        let best = curves
            .iter()
            .enumerate()
            .filter(|(i, c)| allowed(c) && taken[*i] < c.costs.len())
            .min_by(|(i, a), (j, b)| a.costs[taken[*i]].max(0.0).total_cmp(&b.costs[taken[*j]].max(0.0)))
            .map(|(i, _)| i);
        let i = best?;
        taken[i] += 1;
        if done(&curves[i]) {
            break;
        }
    }
    Some(counts_of(curves, &taken, layers))
}

/// A plan that changes one block only (in every layer sharing its weights): the groups `obs` has
/// removed go, the output projection becomes the compensated fit.
fn block_plan(
    t: &Transformer,
    layer: usize,
    part: Part,
    obs: &Obs,
    gs: &[Vec<usize>],
    out_lin: &Linear,
) -> Result<Plan, PassError> {
    let keep: Vec<usize> = (0..gs.len())
        .filter(|&g| gs[g].first().is_some_and(|&r| !obs.is_removed(r)))
        .collect();
    let rows: Vec<usize> = keep.iter().flat_map(|&g| gs[g].clone()).collect();
    let refit = refit_from(obs, &rows, out_lin, &format!("layer {layer} {}", part.name()))?;
    let mut plan = Plan::keep_all(t);
    let mut layers = sharing(&t.shared_weights(), layer, part);
    if layers.is_empty() {
        layers.push(layer);
    }
    for l in layers {
        let lp = &mut plan.layers[l];
        match part {
            Part::Attention => {
                lp.keep_heads = keep.clone();
                lp.output_refit = Some(refit.clone());
            }
            Part::Ffn => {
                lp.keep_neurons = keep.clone();
                lp.down_refit = Some(refit.clone());
            }
        }
    }
    Ok(plan)
}

/// Per-layer counts removing `heads` heads and `neurons` neurons in all, wherever they cost least;
/// an error when the curves hold fewer (heads that cannot be pruned have no curve, heads in step
/// leave every layer one, at most `max_ffn_fraction` of a layer's neurons go; `fractions`: the
/// options asked, for the message).
fn allocate_counts(
    curves: &[Curve],
    layers: usize,
    (heads, neurons): (usize, usize),
    fractions: (f64, f64, f64),
) -> Result<Vec<(usize, usize)>, PassError> {
    for (part, k, field, f) in [
        (Part::Attention, heads, "heads", fractions.0),
        (Part::Ffn, neurons, "ffn", fractions.1),
    ] {
        let there: usize = curves
            .iter()
            .filter(|c| c.part == part)
            .map(|c| c.costs.len() * c.layers.len())
            .sum();
        if k > there {
            let why = match part {
                Part::Attention => "heads that cannot be pruned stay, and every layer keeps one where its heads go in step or a layer without heads would not map".to_string(),
                Part::Ffn => format!(
                    "a model-wide choice takes at most {:.0}% of a layer's neurons; `per_layer` takes the fraction from every layer",
                    fractions.2 * 100.0
                ),
            };
            return Err(PassError::Options(crate::options::OptionError::new(
                field,
                format!("`{field}` {f}: calibrated pruning can remove {there} of them here, not {k}: {why}"),
            )));
        }
    }
    let mut counts = vec![(0usize, 0usize); layers];
    for (part, k) in [(Part::Attention, heads), (Part::Ffn, neurons)] {
        if k == 0 {
            continue;
        }
        let mut left = k;
        // A unit of a shared block goes in every layer running it.
        let got = take(curves, layers, &|c| c.part == part, &mut |c| {
            left = left.saturating_sub(c.layers.len());
            left == 0
        });
        if let Some(got) = got {
            for (dst, src) in counts.iter_mut().zip(got) {
                match part {
                    Part::Attention => dst.0 = src.0,
                    Part::Ffn => dst.1 = src.1,
                }
            }
        }
    }
    Ok(counts)
}

/// Takes units cheapest relative error per MAC saved first until `macs` ≤ `goal`; their total
/// cost, or None when the units run out before. Where the cheapest unit would finish more than
/// `far` MACs under the goal, finishing without it (the other curves, the same way) is taken
/// instead when that costs less in all: a coarse unit (a whole head of a small model, a head of
/// every layer in step) would otherwise land far under the target at a cost the finer units
/// avoid. `skip`: a curve left out (the lookahead's; it looks no further).
fn take_macs(
    curves: &[Curve],
    taken: &mut [usize],
    macs: &mut f64,
    (goal, far): (f64, f64),
    skip: Option<usize>,
) -> Option<f64> {
    let cost = |i: usize, n: usize| curves[i].cost(n);
    let per_mac = |i: usize, n: usize| curves[i].per_mac(n);
    let mut total = 0.0;
    while *macs > goal {
        let i = (0..curves.len())
            .filter(|&i| Some(i) != skip && taken[i] < curves[i].costs.len())
            .min_by(|&i, &j| per_mac(i, taken[i]).total_cmp(&per_mac(j, taken[j])))?;
        let (c, unit) = (cost(i, taken[i]), curves[i].unit_macs as f64);
        if skip.is_none() && *macs - unit < goal - far {
            let (mut other, mut left) = (taken.to_vec(), *macs);
            if let Some(rest) = take_macs(curves, &mut other, &mut left, (goal, far), Some(i)).filter(|&r| r < c) {
                taken.copy_from_slice(&other);
                *macs = left;
                return Some(total + rest);
            }
        }
        taken[i] += 1;
        *macs -= unit;
        total += c;
    }
    Some(total)
}

/// Puts back taken units the budget has room for, the costliest per MAC first (each curve's last
/// taken unit): the greedy takes whole units, and a coarse one taken late (a head) can leave room
/// under the goal for finer ones taken before it, which were removed for nothing.
fn give_back(curves: &[Curve], taken: &mut [usize], macs: &mut f64, goal: f64) {
    let per_mac = |i: usize, n: usize| curves[i].per_mac(n);
    while let Some(i) = (0..curves.len())
        .filter(|&i| taken[i] > 0 && *macs + curves[i].unit_macs as f64 <= goal)
        .max_by(|&i, &j| per_mac(i, taken[i] - 1).total_cmp(&per_mac(j, taken[j] - 1)))
    {
        taken[i] -= 1;
        *macs += curves[i].unit_macs as f64;
    }
}

/// Per-layer (heads, neurons) removed, from the units taken of each curve (a unit of a shared
/// block goes in every layer running it).
fn counts_of(curves: &[Curve], taken: &[usize], layers: usize) -> Vec<(usize, usize)> {
    let mut counts = vec![(0usize, 0usize); layers];
    for (c, &n) in curves.iter().zip(taken) {
        for &l in &c.layers {
            match c.part {
                Part::Attention => counts[l].0 = n,
                Part::Ffn => counts[l].1 = n,
            }
        }
    }
    counts
}

/// Per-layer counts bringing encoder MACs down to `target` × their current total.
fn allocate_macs(
    curves: &[Curve],
    t: &Transformer,
    target: f64,
    (seq_len, max_ffn): (usize, f64),
) -> Result<Vec<(usize, usize)>, PassError> {
    let total = structure::macs_per_sequence(t, seq_len).0 as f64;
    let goal = total * target;
    let mut macs = total;
    if macs <= goal {
        return Ok(vec![(0, 0); t.layers.len()]);
    }
    let mut taken = vec![0usize; curves.len()];
    // "Far": 1% of the MACs. A head of a BERT-size model is about half that, so its budgets are
    // met by the plain greedy order. Landing farther under the goal than that (a coarse unit
    // taken last on a small model), the units there is room for are put back. (Put back nearer,
    // too, MiniLM SST-2's plan at 60% keeps 12 more neurons: a change every recorded result of
    // that plan would have to be measured again for.)
    let far = 0.01 * total;
    take_macs(curves, &mut taken, &mut macs, (goal, far), None)
        .map(|_| {
            if goal - macs > far {
                give_back(curves, &mut taken, &mut macs, goal);
            }
            counts_of(curves, &taken, t.layers.len())
        })
        .ok_or_else(|| {
            // Everything the curves hold gone: the lowest fraction this model reaches.
            let removable: f64 = curves.iter().map(|c| (c.costs.len() as u64 * c.unit_macs) as f64).sum();
            let lowest = (total - removable).max(0.0) / total;
            let raise = if max_ffn < 0.99 {
                "; `max_ffn_fraction` (up to just under 1) lowers that"
            } else {
                ""
            };
            PassError::Options(crate::options::OptionError::new(
                "target_macs",
                format!(
                    "`target_macs` {target}: out of reach: every head and neuron it may remove (at most {:.0}% of a layer's FFN neurons, a head kept where a layer needs one) leaves {lowest:.3} of the MACs{raise}",
                    max_ffn * 100.0
                ),
            ))
        })
}

/// Calibrated pruning. `counts` per layer (heads, neurons to remove) come from `--heads`/`--ffn`
/// (uniform, as the reference) or from the MAC budget.
pub fn prune_calibrated(
    model: &ModelProto,
    opts: &PruneOptions,
    calib: &mut dyn Calibrator,
) -> Result<(ModelProto, PruneReport), PassError> {
    prune_within(model, opts, calib, TARGET_BYTES)
}

/// [`prune_calibrated`], with the refits' targets captured `target_budget` bytes at a time.
fn prune_within(
    model: &ModelProto,
    opts: &PruneOptions,
    calib: &mut dyn Calibrator,
    target_budget: usize,
) -> Result<(ModelProto, PruneReport), PassError> {
    validate(opts)?;
    crate::passes::ensure_known_opsets(model)?;
    let start = Instant::now();
    let t = structure::discover(model)?;
    refuse_factorized(&t)?;
    refuse_wide_multiple(&t, opts)?;
    // Heads or neurons asked for by fraction where they cannot be pruned: refused, not silently
    // kept (a MAC budget is met from the other blocks).
    if opts.target_macs.is_none() {
        for l in &t.layers {
            if opts.heads > 0.0 {
                super::refuse_fixed(l, true)?;
            }
            if opts.ffn > 0.0 {
                super::refuse_fixed(l, false)?;
            }
        }
    }
    if opts.heads > 0.0 && opts.target_macs.is_none() {
        // Pruned one layer at a time, the model in between would hold two head counts where one
        // size holds them all: pruned in step instead, unless layers share weights.
        if let Some((l, why)) = t.layers.iter().filter(|_| !heads_in_step(&t)).find_map(|l| {
            l.attention
                .as_ref()
                .and_then(|a| a.heads_alike.as_deref())
                .map(|why| (l, why))
        }) {
            return Err(PassError::Unsupported(format!(
                "layer {}: {why} (computed once for all layers), which calibrated pruning, one layer at a time, \
                 cannot keep in step; prune heads with --strategy l1 or random, or give --target-macs, which \
                 leaves the heads alone",
                l.index
            )));
        }
    }
    let counts: Vec<(usize, usize)> = match opts.target_macs {
        Some(target) => {
            let c = curves(
                model,
                &t,
                (opts.seq_len, opts.max_ffn_fraction),
                (1.0 - target, 1.0 - target),
                calib,
                STATS_BYTES,
            )?;
            allocate_macs(&c, &t, target, (opts.seq_len, opts.max_ffn_fraction))?
        }
        None if !opts.per_layer => {
            let total_heads: usize = t.layers.iter().map(|l| l.heads()).sum();
            let total_neurons: usize = t.layers.iter().map(|l| l.ffn_width()).sum();
            let k_heads = round_half_even(total_heads as f64 * opts.heads).max(0) as usize;
            let k_neurons = round_half_even(total_neurons as f64 * opts.ffn).max(0) as usize;
            if k_heads + k_neurons == 0 {
                vec![(0, 0); t.layers.len()]
            } else {
                let c = curves(
                    model,
                    &t,
                    (opts.seq_len, opts.max_ffn_fraction),
                    (opts.heads.max(0.1), opts.ffn.max(0.1)),
                    calib,
                    STATS_BYTES,
                )?;
                allocate_counts(
                    &c,
                    t.layers.len(),
                    (k_heads, k_neurons),
                    (opts.heads, opts.ffn, opts.max_ffn_fraction),
                )?
            }
        }
        None => t
            .layers
            .iter()
            .map(|l| {
                let remove = |n: usize, f: f64| {
                    if n == 0 {
                        0
                    } else {
                        (round_half_even(n as f64 * f).max(0) as usize).min(n - 1)
                    }
                };
                (remove(l.heads(), opts.heads), remove(l.ffn_width(), opts.ffn))
            })
            .collect(),
    };
    let counts: Vec<(usize, usize)> = counts
        .into_iter()
        .zip(&t.layers)
        .map(|((h, n), l)| (h, super::aligned_removal(l.ffn_width(), n, opts.ffn_multiple_of)))
        .collect();
    let layer_names = all_names(model, &t)?;

    // Targets from the unpruned model: the pre-LayerNorm sums of every block to be pruned,
    // captured for a run of layers when pruning reaches it.
    let shared = t.shared_weights();
    let value_bytes = calib.tokens() * t.hidden * 4;
    let mut targets = Targets::new(&layer_names, &counts, &shared, (value_bytes, target_budget));
    let mut current = model.clone();
    let fit = Fit {
        model,
        layer_names: &layer_names,
        hidden: t.hidden,
    };
    // Heads in step: every layer's attention fitted on the unpruned model, rewritten at once.
    let lockstep = heads_in_step(&t);
    if lockstep && counts.iter().any(|c| c.0 > 0) {
        let mut merged = Plan::keep_all(&t);
        for (li, &(remove_heads, _)) in counts.iter().enumerate() {
            if remove_heads > 0 {
                let plan = fit.block(&current, li, Part::Attention, remove_heads, &[li], &mut targets, calib)?;
                merged.layers[li] = plan.layers[li].clone();
            }
        }
        current = apply_plan(&current, &t, &merged)?;
    }
    for (li, &(remove_heads, remove_neurons)) in counts.iter().enumerate() {
        for part in [Part::Attention, Part::Ffn] {
            let remove = if part == Part::Attention {
                remove_heads
            } else {
                remove_neurons
            };
            // A block whose weights an earlier layer holds was pruned with that layer.
            let members = sharing(&shared, li, part);
            if remove == 0 || members.is_empty() || (lockstep && part == Part::Attention) {
                continue;
            }
            let ct = structure::discover(&current)?;
            let plan = fit.block(&current, li, part, remove, &members, &mut targets, calib)?;
            current = apply_plan(&current, &ct, &plan)?;
        }
    }
    let report = report(
        model,
        &t,
        &current,
        opts,
        start.elapsed().as_secs_f64(),
        calib.seconds(),
    )?;
    Ok((current, report))
}

/// What fitting one block needs besides the model it changes: the unpruned model (whose sums the
/// refit reproduces), every layer's value names, the hidden width.
struct Fit<'a> {
    model: &'a ModelProto,
    layer_names: &'a [Names],
    hidden: usize,
}

impl Fit<'_> {
    /// The plan removing `remove` units of block `part` of layer `li` from `current` (in every
    /// layer of `members`, which run its weights), by OBS on statistics captured from `current`,
    /// its output projection refitted to the unpruned model's sums.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        current: &ModelProto,
        li: usize,
        part: Part,
        remove: usize,
        members: &[usize],
        targets: &mut Targets,
        calib: &mut dyn Calibrator,
    ) -> Result<Plan, PassError> {
        let (layer_names, hidden) = (self.layer_names, self.hidden);
        calib.phase(&format!("fitting {}", block_of(li, part, layer_names.len())));
        targets.load(self.model, li, calib)?;
        let ct = structure::discover(current)?;
        let l = ct.layers.get(li).ok_or_else(|| {
            PassError::Internal(format!(
                "the model pruned so far maps {} layers, not layer {li}",
                ct.layers.len()
            ))
        })?;
        // Per layer running the block: its input to the output projection, the residual
        // its output is added to, and the unpruned model's sum there.
        let mut names: Vec<String> = Vec::new();
        let mut member_targets: Vec<&[f32]> = Vec::new();
        for &m in members {
            let n = &layer_names[m];
            let (x_name, resid_name, target) = match part {
                Part::Attention => (&n.ctx, &n.x, targets.of(&n.res1)?),
                Part::Ffn => (&n.act, &n.ln1, targets.of(&n.res2)?),
            };
            names.extend([x_name.clone(), resid_name.clone()]);
            member_targets.push(target);
        }
        let units = match part {
            Part::Attention => l.attention.as_ref().map_or(0, |a| a.all_heads()),
            Part::Ffn => l.ffn_width(),
        };
        let mut st = Stats::new(units, hidden, calib.tokens() * members.len());
        let mut offset = 0;
        let what = format!("layer {li} {}", part.name());
        calib.capture(current, &names, &mut |positions, vals| {
            let tokens = positions.len();
            for (k, target) in member_targets.iter().enumerate() {
                let (x, resid) = (&vals[2 * k].0, &vals[2 * k + 1].0);
                finite_capture(&names[2 * k], &|| what.clone(), x)?;
                finite_capture(&names[2 * k + 1], &|| what.clone(), resid)?;
                let tgt = target
                    .get(offset * hidden..(offset + tokens) * hidden)
                    .ok_or_else(|| PassError::Internal("calibration batches changed between runs".into()))?;
                st.add(tokens, x, tgt, resid);
            }
            offset += tokens;
            Ok(())
        })?;
        let out_lin = match part {
            Part::Attention => {
                &l.attention
                    .as_ref()
                    .ok_or_else(|| PassError::Internal("no attention".into()))?
                    .output
            }
            Part::Ffn => &l.ffn.as_ref().ok_or_else(|| PassError::Internal("no FFN".into()))?.down,
        };
        let mut obs = st.into_obs(&logical_weight(current, out_lin)?, &what)?;
        let gs = groups(part, l);
        obs_greedy(&mut obs, &gs, remove);
        block_plan(&ct, li, part, &obs, &gs, out_lin)
    }
}

/// The unpruned model's pre-LayerNorm sums that the pruned blocks' refits reproduce, held for one
/// run of layers at a time (runs of [`TARGET_BYTES`]; one run of every layer when layers share
/// weights, whose blocks are refitted to all their layers at once). Each run is one capture of the
/// unpruned model, cut after the run's last layer.
struct Targets {
    /// Per layer, the sums wanted there (after attention when its heads are pruned, after the FFN
    /// when its neurons are).
    wanted: Vec<Vec<String>>,
    runs: Vec<std::ops::Range<usize>>,
    /// The run held now, and its values by name: their rows for every calibration token.
    held: Option<(usize, Vec<NamedValues>)>,
}

/// A value's name and its rows for every calibration token.
type NamedValues = (String, Vec<f32>);

impl Targets {
    /// `value_bytes`: the bytes of one value over all calibration tokens; `budget`: the bytes of
    /// values one run may hold.
    fn new(
        layer_names: &[Names],
        counts: &[(usize, usize)],
        shared: &[(Option<usize>, Option<usize>)],
        (value_bytes, budget): (usize, usize),
    ) -> Targets {
        let wanted: Vec<Vec<String>> = layer_names
            .iter()
            .zip(counts)
            .map(|(n, &(h, f))| {
                let mut w = Vec::new();
                if h > 0 {
                    w.push(n.res1.clone());
                }
                if f > 0 {
                    w.push(n.res2.clone());
                }
                w
            })
            .collect();
        let shares = shared.iter().any(|(a, f)| a.is_some() || f.is_some());
        let runs = if shares {
            std::iter::once(0..wanted.len()).collect()
        } else {
            crate::passes::runs_within(wanted.iter().map(|w| w.len() * value_bytes), budget)
        };
        Targets {
            wanted,
            runs,
            held: None,
        }
    }

    /// Holds the run of layer `li` (captured from `model`, the unpruned model), releasing the one
    /// held before.
    fn load(&mut self, model: &ModelProto, li: usize, calib: &mut dyn Calibrator) -> Result<(), PassError> {
        let run = self
            .runs
            .iter()
            .position(|r| r.contains(&li))
            .ok_or_else(|| PassError::Internal(format!("layer {li} is in no run of targets")))?;
        if self.held.as_ref().is_some_and(|(r, _)| *r == run) {
            return Ok(());
        }
        self.held = None;
        let mut names: Vec<String> = self.wanted[self.runs[run].clone()].concat();
        names.sort();
        names.dedup();
        let mut values: Vec<Vec<f32>> = vec![Vec::new(); names.len()];
        if !names.is_empty() {
            calib.capture(&with_skip_sums(model), &names, &mut |_, vals| {
                for ((dst, (v, _)), name) in values.iter_mut().zip(vals).zip(&names) {
                    finite_capture(name, &|| "the unpruned model".into(), v)?;
                    dst.extend_from_slice(v);
                }
                Ok(())
            })?;
        }
        self.held = Some((run, names.into_iter().zip(values).collect()));
        Ok(())
    }

    /// The held values of `name`.
    fn of(&self, name: &str) -> Result<&[f32], PassError> {
        self.held
            .iter()
            .flat_map(|(_, values)| values)
            .find(|(w, _)| w == name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| PassError::Internal(format!("the unpruned model's '{name}' was not captured")))
    }
}

/// The compensated output projection for the kept rows, in the graph's layout, and its bias.
fn refit_from(obs: &Obs, rows: &[usize], lin: &Linear, what: &str) -> Result<Refit, PassError> {
    let m = obs.m;
    let bias_row = obs.n - 1;
    let mut weight = Vec::with_capacity(rows.len() * m);
    if lin.transposed {
        for c in 0..m {
            weight.extend(rows.iter().map(|&r| obs.w[r * m + c] as f32));
        }
    } else {
        for &r in rows {
            weight.extend(obs.w[r * m..(r + 1) * m].iter().map(|&v| v as f32));
        }
    }
    let bias: Vec<f32> = obs.w[bias_row * m..(bias_row + 1) * m]
        .iter()
        .map(|&v| v as f32)
        .collect();
    ensure_finite(&format!("{what}: the least-squares refit of '{}'", lin.weight), &weight)?;
    ensure_finite(&format!("{what}: the least-squares refit of its bias"), &bias)?;
    Ok(Refit { weight, bias })
}

/// The measured cost of pruning one block alone to some fraction of its units.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockCost {
    pub layer: usize,
    /// Every layer that runs this block: `[layer]`, or, where layers share one block's weights
    /// (ALBERT), all of them: pruning the block prunes it in each.
    pub layers: Vec<usize>,
    /// `attention` or `ffn`.
    pub block: &'static str,
    /// Heads or neurons the block has.
    pub units: usize,
    /// The fraction asked for, and the units that removes.
    pub fraction: f64,
    pub removed: usize,
    /// MACs saved per sequence (at the `seq_len` given).
    pub macs_saved: u64,
    /// Mean KL divergence of the predictions from the unpruned model's on the calibration data
    /// (mean squared difference for one output).
    pub divergence: f64,
    /// Share of calibration examples whose predicted class is unchanged (`None` for one output).
    pub agreement: Option<f64>,
    /// Heads pruned in step: `removed` heads of every layer in `layers` at once (their head
    /// count is computed once for all layers, as calibrated pruning then prunes them). Written
    /// `false` too, as the CSV writes it.
    pub in_step: bool,
}

/// `fractions` of [`block_costs`]: at least one, each in (0, 1).
pub fn check_fractions(fractions: &[f64]) -> Result<(), PassError> {
    if fractions.is_empty() || fractions.iter().any(|f| !(*f > 0.0 && *f < 1.0)) {
        return Err(PassError::Options(crate::options::OptionError::new(
            "fractions",
            "`fractions` must each be in (0, 1), e.g. 0.25,0.5,0.75",
        )));
    }
    Ok(())
}

/// One layer's attention measured in step ([`block_costs`]): its OBS state, head groups, the most
/// heads it may lose, the heads removed so far and one head's MACs.
struct InStep {
    layer: usize,
    obs: Obs,
    groups: Vec<Vec<usize>>,
    limit: usize,
    removed: usize,
    unit_macs: u64,
}

/// Greedy OBS removal carried on to `fraction` of the groups `gs` (at least one, at most `limit`)
/// from the `removed` taken so far (fractions come in ascending order); the count removed now.
/// The units a `fraction` of `units` asks to remove (at least one), before a block's limit.
pub fn units_asked(units: usize, fraction: f64) -> usize {
    ((units as f64 * fraction).round() as usize).max(1)
}

fn remove_to(obs: &mut Obs, gs: &[Vec<usize>], fraction: f64, limit: usize, removed: usize) -> usize {
    let k = units_asked(gs.len(), fraction).min(limit);
    if k > removed {
        obs_greedy(obs, gs, k - removed);
    }
    k.max(removed)
}

/// A note when the calibration data's `tokens` are fewer than the inputs of the widest block
/// pruned (`heads`: the heads' outputs an attention output projection reads; `ffn`: the neurons
/// of an FFN): the refit after pruning then has more unknowns than tokens, matches them (nearly)
/// exactly, and the costs measured on the same tokens read near zero whatever is removed.
pub fn few_tokens_note(model: &ModelProto, tokens: usize, heads: bool, ffn: bool) -> Option<String> {
    let t = structure::discover(model).ok()?;
    let outputs = |l: &EncoderLayer| l.heads() * l.head_size().unwrap_or(0);
    let widths = [
        (
            heads,
            t.layers.iter().map(outputs).max(),
            "head outputs an attention output projection reads",
        ),
        (ffn, t.layers.iter().map(|l| l.ffn_width()).max(), "neurons of an FFN"),
    ];
    let (width, what) = widths
        .into_iter()
        .filter_map(|(pruned, w, what)| pruned.then_some((w?, what)))
        .max_by_key(|(w, _)| *w)?;
    (tokens < width).then(|| {
        format!(
            "the calibration data gives {tokens} tokens, fewer than the {width} {what}: the refit after pruning can match so few almost exactly, so costs measured on them read near zero and choose poorly; give more calibration examples (--calib-samples; calibration.samples in a recipe)"
        )
    })
}

/// For each block of each layer and each of `fractions` (in (0, 1), ascending): that block alone
/// pruned the way calibrated pruning prunes it (greedy OBS removal, compensated refit), and what
/// it does to the model's predictions on the calibration data. FFN fractions stop at 90% of the
/// neurons, attention keeps at least one head. Where every layer's heads go in step (a head count
/// computed once for all layers), the attention is measured as calibrated pruning prunes it: every
/// layer's heads at once, one row; attention whose heads cannot be pruned has none. `stage` is
/// told each block. Returns the rows and the model's label count (1: one output, or a headless
/// encoder's hidden states, compared by mean squared difference).
pub fn block_costs(
    model: &ModelProto,
    fractions: &[f64],
    seq_len: usize,
    calib: &mut dyn Calibrator,
    stage: &mut dyn FnMut(&str),
) -> Result<(Vec<BlockCost>, usize), PassError> {
    crate::passes::ensure_known_opsets(model)?;
    check_fractions(fractions)?;
    let mut fractions = fractions.to_vec();
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    let t = structure::discover(model)?;
    refuse_factorized(&t)?;
    let (reference, labels) = calib.logits(model)?;
    ensure_finite("the unpruned model's logits on the calibration data", &reference)?;
    stage("capturing the blocks' inputs and outputs");
    let mut out = Vec::new();
    let lockstep = heads_in_step(&t);
    let mut in_step: Vec<InStep> = Vec::new();
    each_block_stats(model, &t, calib, STATS_BYTES, &mut |calib, li, part, st| {
        let l = &t.layers[li];
        let (out_lin, unit) = match (part, &l.attention, &l.ffn) {
            (Part::Attention, Some(att), _) if att.heads_fixed.is_none() => {
                (&att.output, structure::head_macs(att, t.hidden, seq_len))
            }
            (Part::Ffn, _, Some(ffn)) if ffn.neurons_fixed.is_none() => {
                (&ffn.down, structure::neuron_macs(ffn, seq_len))
            }
            _ => return Ok(()),
        };
        let what = format!("layer {li} {}", part.name());
        stage(&what);
        let gs = groups(part, l);
        let limit = match part {
            Part::Attention => gs.len().saturating_sub(1),
            Part::Ffn => (gs.len() as f64 * MAX_FFN_FRACTION) as usize,
        };
        if limit == 0 {
            return Ok(());
        }
        let mut obs = st.obs(&logical_weight(model, out_lin)?, &what)?;
        if part == Part::Attention && lockstep {
            in_step.push(InStep {
                layer: li,
                obs,
                groups: gs,
                limit,
                removed: 0,
                unit_macs: unit,
            });
            return Ok(());
        }
        let layers = match sharing(&t.shared_weights(), li, part) {
            shared if shared.is_empty() => vec![li],
            shared => shared,
        };
        let mut removed = 0;
        for &fraction in &fractions {
            removed = remove_to(&mut obs, &gs, fraction, limit, removed);
            let plan = block_plan(&t, li, part, &obs, &gs, out_lin)?;
            let (logits, _) = calib.logits(&apply_plan(model, &t, &plan)?)?;
            ensure_finite(&format!("{what}: the logits with this block pruned alone"), &logits)?;
            out.push(BlockCost {
                layer: li,
                layers: layers.clone(),
                block: if part == Part::Attention { "attention" } else { "ffn" },
                units: gs.len(),
                fraction,
                removed,
                macs_saved: unit * removed as u64 * layers.len() as u64,
                divergence: divergence(&reference, &logits, labels),
                agreement: crate::passes::agreement(&reference, &logits, labels),
                in_step: false,
            });
        }
        Ok(())
    })?;
    // Heads in step: at each fraction, every layer's choice of as many heads, rewritten at once.
    for &fraction in if in_step.is_empty() { &[][..] } else { &fractions[..] } {
        stage(&format!("every layer's attention in step, −{:.0}%", fraction * 100.0));
        let mut plan = Plan::keep_all(&t);
        let mut macs_saved = 0;
        for x in &mut in_step {
            let li = x.layer;
            x.removed = remove_to(&mut x.obs, &x.groups, fraction, x.limit, x.removed);
            let Some(att) = &t.layers[li].attention else { continue };
            plan.layers[li] = block_plan(&t, li, Part::Attention, &x.obs, &x.groups, &att.output)?.layers[li].clone();
            macs_saved += x.unit_macs * x.removed as u64;
        }
        let (logits, _) = calib.logits(&apply_plan(model, &t, &plan)?)?;
        ensure_finite("every layer's heads pruned in step: the logits", &logits)?;
        out.push(BlockCost {
            layer: in_step[0].layer,
            layers: in_step.iter().map(|x| x.layer).collect(),
            block: "attention",
            units: in_step[0].groups.len(),
            fraction,
            removed: in_step[0].removed,
            macs_saved,
            divergence: divergence(&reference, &logits, labels),
            agreement: crate::passes::agreement(&reference, &logits, labels),
            in_step: true,
        });
    }
    Ok((out, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One layer's greedy curve of `costs`, each unit `unit_macs`.
    fn curve(part: Part, unit_macs: u64, costs: Vec<f64>, layer: usize) -> Curve {
        Curve {
            layers: vec![layer],
            part,
            costs,
            unit_macs,
        }
    }

    /// A MAC budget is met cheapest per MAC first, but where the cheapest unit would land far
    /// under it (a whole head), finishing with finer units (neurons) is taken when it costs less.
    #[test]
    fn a_coarse_unit_does_not_overshoot_the_budget_where_finer_ones_cost_less() {
        let head = curve(Part::Attention, 45, vec![1.0, 1.0], 0);
        let neurons = curve(Part::Ffn, 1, vec![0.05; 60], 1);
        let run = |curves: &[Curve], goal: f64| {
            let (mut taken, mut macs) = (vec![0; curves.len()], 100.0);
            let cost = take_macs(curves, &mut taken, &mut macs, (goal, 1.0), None);
            (taken, macs, cost)
        };
        // One head (0.022 per MAC) first, then five neurons (0.25 in all) rather than the second
        // head (1.0, down to 10 MACs).
        let (taken, macs, cost) = run(&[head.clone(), neurons.clone()], 50.0);
        assert_eq!((taken, macs), (vec![1, 5], 50.0));
        assert!((cost.unwrap() - 1.25).abs() < 1e-12);
        // Where the finer units cost more in all, the head it is.
        let dear = curve(Part::Ffn, 1, vec![0.5; 60], 1);
        assert_eq!(run(&[head.clone(), dear], 50.0).0, vec![2, 0]);
        // Landing within `far` of the goal needs no look ahead.
        let (mut taken, mut macs) = (vec![0, 0], 100.0);
        take_macs(
            &[head.clone(), neurons.clone()],
            &mut taken,
            &mut macs,
            (50.0, 41.0),
            None,
        );
        assert_eq!(taken, vec![2, 0]);
        // Units that run out: None.
        assert_eq!(run(&[head], 1.0).2, None);
    }

    /// Neurons taken before a late head that the budget then has room for are put back, the
    /// costliest per MAC first (ALBERT's fixture ended 4 points under its budget so).
    #[test]
    fn units_the_budget_has_room_for_are_put_back() {
        // Cheap neurons of two FFNs, and a head (0.025 per MAC) taken last.
        let curves = [
            curve(Part::Ffn, 2, vec![0.01; 10], 0),
            curve(Part::Ffn, 2, vec![0.02, 0.02, 0.02, 0.5, 0.5], 1),
            curve(Part::Attention, 40, vec![1.0], 2),
        ];
        let (mut taken, mut macs) = (vec![10, 3, 1], 100.0 - 20.0 - 6.0 - 40.0);
        give_back(&curves, &mut taken, &mut macs, 50.0);
        // 34 MACs left, 16 of room: the dearer FFN's three (0.01 per MAC) come back first, then
        // five of the cheaper one's; the head stays (no room for its 40).
        assert_eq!((taken, macs), (vec![5, 0, 1], 50.0));
        // No room: nothing moves.
        let (mut taken, mut macs) = (vec![10, 3, 1], 34.0);
        give_back(&curves, &mut taken, &mut macs, 34.0);
        assert_eq!((taken, macs), (vec![10, 3, 1], 34.0));
    }

    fn fixture(name: &str) -> (ModelProto, Transformer) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .join("model.onnx");
        let m = crate::onnx::load(&path).expect("the fixture loads");
        let t = crate::structure::discover(&m).expect("the fixture maps");
        (m, t)
    }

    /// ONNX Runtime's calibrator, counting its captures and logging its phases and runs.
    struct Counting {
        inner: crate::runtime::OrtCalibrator,
        captures: usize,
        log: Vec<String>,
    }

    impl Counting {
        /// Over three random batches of seven tokens.
        fn new() -> Counting {
            Counting {
                inner: crate::runtime::OrtCalibrator::new(
                    crate::testkit::synth::random_batches(3, 7),
                    crate::runtime::SessionOptions::default(),
                ),
                captures: 0,
                log: Vec::new(),
            }
        }
    }

    impl Calibrator for Counting {
        fn capture(
            &mut self,
            model: &ModelProto,
            values: &[String],
            sink: &mut crate::passes::Sink,
        ) -> Result<(), PassError> {
            self.captures += 1;
            self.log.push("capture".into());
            self.inner.capture(model, values, sink)
        }
        fn logits(&mut self, model: &ModelProto) -> Result<(Vec<f32>, usize), PassError> {
            self.log.push("logits".into());
            self.inner.logits(model)
        }
        fn phase(&mut self, what: &str) {
            self.log.push(what.into());
        }
        fn examples(&self) -> usize {
            self.inner.examples()
        }
        fn tokens(&self) -> usize {
            self.inner.tokens()
        }
    }

    /// Statistics captured one layer at a time (the budget a big model gets) give the cost curves
    /// one capture of every layer gives, within float noise of where ONNX Runtime's graph is cut.
    #[test]
    fn statistics_captured_in_runs_of_layers_give_the_same_curves() {
        if !crate::testkit::shared::require_ort("calibrated pruning's statistics") {
            return;
        }
        let (m, t) = fixture("bert-sdpa");
        let run = |budget: usize| {
            let mut c = Counting::new();
            let curves = curves(&m, &t, (128, MAX_FFN_FRACTION), (0.5, 0.5), &mut c, budget).expect("curves");
            (curves, c.captures)
        };
        let (whole, one) = run(usize::MAX);
        let (runs, per_layer) = run(0);
        assert_eq!((one, per_layer), (1, t.layers.len()), "captures");
        assert_eq!(whole.len(), 2 * t.layers.len());
        assert_eq!(whole.len(), runs.len());
        for (a, b) in whole.iter().zip(&runs) {
            assert_eq!((&a.layers, a.part, a.costs.len()), (&b.layers, b.part, b.costs.len()));
            for (x, y) in a.costs.iter().zip(&b.costs) {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs().max(1e-12),
                    "layers {:?} {:?}: {x} vs {y}",
                    a.layers,
                    a.part
                );
            }
        }
    }

    /// The refits' targets captured one layer at a time (the budget a big model gets) give the
    /// model one capture of every layer gives: the same units kept, the same weights within float
    /// noise of where ONNX Runtime's graph is cut.
    #[test]
    fn targets_captured_in_runs_of_layers_give_the_same_model() {
        if !crate::testkit::shared::require_ort("calibrated pruning's targets") {
            return;
        }
        let (m, t) = fixture("bert-sdpa");
        let opts = PruneOptions {
            heads: 0.25,
            ffn: 0.25,
            strategy: super::super::Strategy::Obs,
            per_layer: true,
            ..Default::default()
        };
        let run = |budget: usize| {
            let mut c = Counting::new();
            let (out, _) = prune_within(&m, &opts, &mut c, budget).expect("prune");
            (out, c.captures)
        };
        let (whole, one) = run(usize::MAX);
        let (runs, per_layer) = run(0);
        // Beside the targets' captures (one, or one per layer), one per pruned block.
        let blocks = 2 * t.layers.len();
        assert_eq!((one, per_layer), (1 + blocks, t.layers.len() + blocks), "captures");
        let weights = |m: &ModelProto| -> Vec<(String, Vec<i64>, Vec<f32>)> {
            m.graph
                .as_ref()
                .unwrap()
                .initializer
                .iter()
                .map(|i| {
                    (
                        i.name().to_string(),
                        i.dims.clone(),
                        crate::onnx::tensor::to_f32(i).unwrap_or_default(),
                    )
                })
                .collect()
        };
        let (a, b) = (weights(&whole), weights(&runs));
        assert_eq!(a.len(), b.len());
        for ((na, da, va), (nb, db, vb)) in a.iter().zip(&b) {
            assert_eq!((na, da), (nb, db), "the same units kept");
            for (x, y) in va.iter().zip(vb) {
                assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{na}: {x} vs {y}");
            }
        }
    }

    /// Every run says what it is for, in order: the unpruned model's predictions, the blocks'
    /// statistics, each block's cost, then the fitting of each block pruned.
    #[test]
    fn each_run_is_announced_by_its_phase() {
        if !crate::testkit::shared::require_ort("calibrated pruning's phases") {
            return;
        }
        let (m, _) = fixture("bert-sdpa");
        let opts = PruneOptions {
            target_macs: Some(0.6),
            strategy: super::super::Strategy::Obs,
            ..Default::default()
        };
        let mut c = Counting::new();
        let (_, report) = prune_within(&m, &opts, &mut c, usize::MAX).expect("prune");
        // Each phase and the runs it announced.
        let mut phases: Vec<(String, Vec<String>)> = Vec::new();
        for e in &c.log {
            match e.as_str() {
                "capture" | "logits" => phases.last_mut().expect("a run before any phase").1.push(e.clone()),
                _ => phases.push((e.clone(), vec![])),
            }
        }
        let names: Vec<&str> = phases.iter().map(|p| p.0.as_str()).collect();
        let pruned: Vec<String> = report
            .layers
            .iter()
            .flat_map(|l| {
                [
                    (l.heads_before > l.heads_after).then(|| format!("fitting layer {} attention of 0–1", l.layer)),
                    (l.neurons_before > l.neurons_after).then(|| format!("fitting layer {} FFN of 0–1", l.layer)),
                ]
            })
            .flatten()
            .collect();
        assert!(!pruned.is_empty(), "{names:?}");
        let mut expected = vec![
            "the unpruned model's predictions",
            "statistics of layers 0–1 of 0–1",
            "the cost of layer 0 attention of 0–1",
            "the cost of layer 0 FFN of 0–1",
            "the cost of layer 1 attention of 0–1",
            "the cost of layer 1 FFN of 0–1",
        ];
        expected.extend(pruned.iter().map(String::as_str));
        assert_eq!(names, expected);
        for (what, runs) in &phases {
            let want: &[&str] = match what.as_str() {
                w if w.starts_with("statistics") => &["capture"],
                w if w.starts_with("fitting") => &["capture", "capture"][..if what == &pruned[0] { 2 } else { 1 }],
                _ => &["logits"],
            };
            assert_eq!(runs, want, "{what}");
        }
    }

    /// Where a layer left without heads no longer maps (DeBERTa's first, ModernBERT's), it keeps
    /// one, whatever the budget; BERT's layers may lose all their heads. Before,
    /// ModernBERT at 10% of the MACs panicked on a layer that had dropped out of the mapping,
    /// DeBERTa failed, and a ModernBERT export wrote a model of which one layer mapped.
    #[test]
    fn a_layer_keeps_a_head_where_it_does_not_map_without() {
        let probe = |name: &str| {
            let (m, t) = fixture(name);
            super::super::layers_map_without_heads(&m, &t)
        };
        assert_eq!(probe("bert-sdpa"), [true, true]);
        assert_eq!(probe("albert"), [true, true]);
        assert_eq!(
            probe("deberta-v3"),
            [false, true],
            "its first layer's heads are the ones that must stay"
        );
        for name in ["modernbert", "modernbert-transformers4"] {
            assert_eq!(
                probe(name),
                [true, false],
                "{name}: its first layer maps without heads, the second not"
            );
        }
        if !crate::testkit::shared::require_ort("calibrated pruning of every head") {
            return;
        }
        for name in ["deberta-v3", "modernbert", "modernbert-transformers4", "bert-sdpa"] {
            let (m, t) = fixture(name);
            for opts in [
                PruneOptions {
                    heads: 0.75,
                    ..Default::default()
                },
                PruneOptions {
                    target_macs: Some(0.3),
                    max_ffn_fraction: 0.9,
                    ..Default::default()
                },
            ] {
                let opts = PruneOptions {
                    strategy: super::super::Strategy::Obs,
                    ..opts
                };
                let (out, report) =
                    prune_within(&m, &opts, &mut Counting::new(), usize::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
                let after = crate::structure::discover(&out).expect("the pruned model maps");
                assert_eq!(after.layers.len(), t.layers.len(), "{name}");
                let keeps = match name {
                    "deberta-v3" => 0,
                    n if n.starts_with("modernbert") => 1,
                    _ => continue,
                };
                assert!(report.layers[keeps].heads_after > 0, "{name}: {:?}", report.layers);
            }
        }
    }

    /// The residual each block's output is added to: in a post-LN layer the layer input and the
    /// attention LayerNorm's output; in a pre-LN layer (ModernBERT) the stream before the
    /// LayerNorms — the previous layer's last sum, and the attention's sum.
    #[test]
    fn residuals_follow_the_layout() {
        let (m, t) = fixture("bert-sdpa");
        let names = all_names(&m, &t).unwrap();
        for (l, n) in t.layers.iter().zip(&names) {
            assert_eq!(n.x, l.input);
            assert_eq!(n.ln1, l.attention_norm.output);
        }
        let (m, t) = fixture("modernbert");
        let names = all_names(&m, &t).unwrap();
        // The first layer reads the embeddings' LayerNorm output, which is also its residual.
        assert_eq!(names[0].x, t.layers[0].input);
        assert_eq!(names[1].x, names[0].res2);
        assert_ne!(names[1].x, t.layers[1].input, "not the attention LayerNorm's output");
        for n in &names {
            assert_eq!(n.ln1, n.res1, "the FFN adds to the attention's sum");
        }
    }
}
