//! The feed-forward block: up projection, activation, down projection.

use super::*;

pub(super) const ACTIVATION_OPS: &[&str] = &[
    "Div",
    "Erf",
    "Add",
    "Mul",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "Tanh",
    "Pow",
    "Relu",
    "Sigmoid",
    "Identity",
    "Cast",
    "Sqrt",
    "Sub",
    "Dropout",
    "QuickGelu",
];

/// Element-wise ops an activation may also hold besides [`ACTIVATION_OPS`] (mish's `Softplus`,
/// onnxscript's `CastLike`, relu6's `Clip`, ...): checked on the way back from the down
/// projection (their other inputs must be neuron by neuron too).
const ELEMENTWISE_OPS: &[&str] = &[
    "CastLike",
    "Softplus",
    "Softsign",
    "Mish",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sign",
    "Reciprocal",
    "Elu",
    "Selu",
    "Celu",
    "LeakyRelu",
    "ThresholdedRelu",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Max",
    "Min",
];

pub(super) fn find_ffn(ix: &GraphIndex, norm: &Norm, hidden: Option<usize>) -> R<Ffn> {
    let up = ix
        .consumers(&norm.output)
        .iter()
        .find_map(|&c| linear_at(ix, c).filter(|l| hidden.is_none_or(|h| l.in_features == h)))
        .ok_or_else(|| {
            fail(
                "the FFN up projection (MatMul with a weight [hidden, width]) reading the attention LayerNorm",
                format!("consumers of '{}' ({})", norm.output, ix.node_label(norm.node)),
            )
        })?;
    let width = up.out_features;
    let hidden = up.in_features;
    // Breadth-first through the activation's elementwise ops to the down projection.
    let mut queue = VecDeque::from([up.output.clone()]);
    let mut seen = HashSet::new();
    let mut ops = Vec::new();
    let mut down = None;
    // A gated FFN takes the up projection's output apart in halves (Slice or Split): its down
    // projection reads half the width.
    let halves = halves_of(ix, &up.output, width);
    let down_in = if halves.is_some() { width / 2 } else { width };
    while let Some(v) = queue.pop_front() {
        if seen.len() > 32 {
            break;
        }
        for &c in ix.consumers(&v) {
            if !seen.insert(c) {
                continue;
            }
            if let Some(l) = linear_at(ix, c).filter(|l| l.in_features == down_in && l.out_features == hidden) {
                down = Some(l);
                break;
            }
            let n = ix.node(c);
            let halving = halves.as_ref().is_some_and(|g| g.nodes.contains(&c));
            if halving {
                queue.extend(n.output.iter().cloned());
            } else if ACTIVATION_OPS.contains(&n.op_type()) {
                ops.push(n.op_type().to_string());
                if let Some(o) = n.output.first() {
                    queue.push_back(o.clone());
                }
            }
        }
        if down.is_some() {
            break;
        }
    }
    // Two Slices or a Split of the up projection's output that are not its halves: say so
    // (the search above looked for a down projection of the whole width instead).
    let splits: Vec<usize> = ix
        .consumers(&up.output)
        .iter()
        .copied()
        .filter(|&c| matches!(ix.node(c).op_type(), "Slice" | "Split"))
        .collect();
    if down.is_none() && halves.is_none() && !splits.is_empty() {
        return Err(fail(
            "a gated FFN's halves: Slices of the up projection's last axis taking [0, w/2) and [w/2, w) \
             (constants, or computed from its shape as torch's chunk(2) exports them), or a Split in two equal parts",
            format!(
                "{} read {} ({width} wide): not those halves",
                splits.iter().map(|&s| ix.node_label(s)).collect::<Vec<_>>().join(", "),
                up.output
            ),
        ));
    }
    let down = down.ok_or_else(|| {
        fail(
            format!("the FFN down projection (MatMul with a weight [{down_in}, {hidden}]) after the activation"),
            format!(
                "after {} (activation ops seen: {})",
                ix.node_label(up.node),
                ops.join(", ")
            ),
        )
    })?;
    // The activation's ops, by every path back from the down projection to the up projection's
    // output: the search above stops at the shortest (GELU's tanh form reaches the down
    // projection through `0.5·x·(…)` before its `Tanh`). Every value on those paths must be
    // computed neuron by neuron from the up projection's output (or its halves) and scalar
    // constants: an op that mixes or reorders neurons (a ReduceMean, a LayerNorm over the width,
    // a Slice) or a per-neuron constant this tool does not slice would be pruned wrong.
    let halves_out: Vec<&String> = halves
        .iter()
        .flat_map(|g| g.nodes.iter().flat_map(|&n| &ix.node(n).output))
        .collect();
    let mut back: VecDeque<String> = ix.node(down.node).input.first().cloned().into_iter().collect();
    let mut behind = HashSet::new();
    let mut neurons_fixed = None;
    while let Some(v) = back.pop_front() {
        if v.is_empty() || ix.resolve(&v) == ix.resolve(&up.output) || halves_out.contains(&&v) {
            continue;
        }
        if let Some(c) = ix.constant(&v) {
            let one = crate::onnx::tensor::numel(c.tensor()).is_ok_and(|n| n <= 1);
            // ONNX Runtime's BiasGelu/FastGelu read the up projection's bias (sliced with it).
            if one || (up.bias.is_some() && ix.constant_name(&v) == up.bias) {
                continue;
            }
            // The same value for every neuron (last axis 1: one per token, say) is neuron by
            // neuron. One value per neuron ([width], [1, 1, width], or per token too) is as
            // well, but not sliced with them: mapped, its neurons are not pruned.
            let dims = &c.tensor().dims;
            if dims.last() == Some(&1) {
                continue;
            }
            if dims.last() == Some(&(down_in as i64)) {
                neurons_fixed.get_or_insert(format!(
                    "its activation reads '{v}', one value per neuron, which this tool does not slice with them"
                ));
                continue;
            }
            neurons_fixed.get_or_insert(format!(
                "its activation reads constant '{v}' of shape {dims:?}, whose last axis is neither 1 nor the {down_in} neurons"
            ));
            continue;
        }
        let Some(p) = ix.producer(&v) else {
            neurons_fixed.get_or_insert(format!("its activation reads graph input '{v}'"));
            continue;
        };
        let n = ix.node(p);
        if !behind.insert(p) {
            continue;
        }
        // A `Constant` of one number in its other forms (`value_float`, `value_int`).
        if n.op_type() == "Constant"
            && n.attribute
                .iter()
                .any(|a| matches!(a.name(), "value_float" | "value_int"))
        {
            continue;
        }
        let op = n.op_type();
        let known = ACTIVATION_OPS.contains(&op) || ELEMENTWISE_OPS.contains(&op) && n.domain().is_empty();
        if !known || behind.len() > 64 {
            neurons_fixed.get_or_insert(if known {
                "its activation has more than 64 ops".to_string()
            } else {
                format!(
                    "{} feeds its activation, an op this tool does not know to act neuron by neuron",
                    ix.node_label(p)
                )
            });
            continue;
        }
        ops.push(op.to_string());
        back.extend(n.input.iter().cloned());
    }
    let has = |op: &str| ops.iter().any(|o| o == op);
    let activation = if has("Gelu") || has("FastGelu") || has("BiasGelu") {
        "gelu (fused op)"
    } else if has("Erf") {
        "gelu(erf)"
    } else if has("Tanh") {
        "gelu(tanh)"
    } else if has("Relu") {
        "relu"
    } else if has("Sigmoid") {
        "silu"
    } else if ops.is_empty() {
        "none"
    } else {
        "unrecognized elementwise"
    };
    // Gated: GeGLU, ReGLU, SwiGLU by the activation of the gate half.
    let activation = match (&halves, activation) {
        (None, a) => a.to_string(),
        (Some(_), "relu") => "reglu".into(),
        (Some(_), "silu") => "swiglu".into(),
        (Some(_), a) if a.starts_with("gelu") => format!("ge{}", a.replacen("gelu", "glu", 1)),
        (Some(_), a) => format!("{a}, gated"),
    };
    Ok(Ffn {
        up,
        down,
        activation,
        width: down_in,
        gate: halves,
        neurons_fixed,
    })
}

/// The two halves of `value` ([.., `width`]) when that is all its readers take: two `Slice`s of
/// the last axis, [0, width/2) and [width/2, width) — the bounds constant, or computed from its
/// shape as torch's `chunk(2, -1)` exports them — or a `Split` of the last axis in two equal
/// parts (torch's dynamo exporter: `num_outputs` 2).
fn halves_of(ix: &GraphIndex, value: &str, width: usize) -> Option<Gate> {
    if width % 2 != 0 || ix.is_graph_output(value) {
        return None;
    }
    let readers: Vec<usize> = ix
        .consumers(value)
        .iter()
        .copied()
        .filter(|&c| ix.node(c).op_type() != "Shape")
        .collect();
    let last_axis = |axes: Option<&String>| match axes.filter(|a| !a.is_empty()) {
        Some(a) => ix.const_i64(a).is_some_and(|v| v.len() == 1 && v[0] == -1),
        None => false,
    };
    match readers.as_slice() {
        [s] if ix.node(*s).op_type() == "Split" => {
            let n = ix.node(*s);
            let axis = ix.attr_i(*s, "axis").unwrap_or(0);
            let sizes = n.input.get(1).filter(|v| !v.is_empty());
            let equal = match sizes {
                Some(v) => ix.const_i64(v).is_some_and(|v| v.len() == 2 && v[0] == v[1]),
                None => n.output.len() == 2,
            };
            // The last axis: -1, or 2 of the usual [batch, sequence, 2·width].
            ((axis == -1 || axis == 2) && n.output.len() == 2 && equal).then(|| Gate {
                nodes: vec![*s],
                constant_bounds: sizes.is_some(),
            })
        }
        [a, b] if ix.node(*a).op_type() == "Slice" && ix.node(*b).op_type() == "Slice" => {
            let bounds = |i: usize| {
                let n = ix.node(i);
                if !last_axis(n.input.get(3))
                    || n.input
                        .get(4)
                        .is_some_and(|s| !s.is_empty() && ix.const_i64(s) != Some(vec![1]))
                {
                    return None;
                }
                // (start, end) when constant; None for a bound computed at run time.
                let c = |k: usize| {
                    n.input
                        .get(k)
                        .and_then(|v| ix.const_i64(v))
                        .and_then(|v| v.first().copied())
                };
                Some((c(1), c(2)))
            };
            let (ba, bb) = (bounds(*a)?, bounds(*b)?);
            let half = (width / 2) as i64;
            let first = |b: (Option<i64>, Option<i64>)| b.0 == Some(0) && b.1.is_none_or(|e| e == half);
            let (lo, hi) = if first(ba) {
                ((*a, ba), (*b, bb))
            } else {
                ((*b, bb), (*a, ba))
            };
            let constant = [lo.1 .1, hi.1 .0, hi.1 .1].iter().all(|v| v.is_some());
            let ok = first(lo.1)
                && hi.1 .0.is_none_or(|s| s == half)
                && hi.1 .1.is_none_or(|e| e >= width as i64)
                // Computed bounds must be the ones chunk(2) computes, at this width and at the
                // narrower ones pruning gives: evaluated from the shape at each.
                && (constant || halves_at_every_width(ix, (lo.0, hi.0), value, width));
            ok.then(|| Gate {
                nodes: vec![lo.0, hi.0],
                constant_bounds: constant,
            })
        }
        _ => None,
    }
}

/// Whether Slices `lo` and `hi` of `value` take [0, w/2) and [w/2, ≥ w) of its last axis for
/// its width `w` = `width` and for narrower even widths (what pruning leaves): their bounds
/// evaluated from `value`'s shape at each ([`bound_at`]).
fn halves_at_every_width(ix: &GraphIndex, (lo, hi): (usize, usize), value: &str, width: usize) -> bool {
    let w = width as i64;
    [w, w - 2, (w / 4) * 2, 2].iter().filter(|&&w| w >= 2).all(|&w| {
        let at = |s: usize, k: usize, missing: i64| match ix.node(s).input.get(k).filter(|v| !v.is_empty()) {
            Some(v) => bound_at(ix, v, value, w, 16),
            None => Some(missing),
        };
        at(lo, 1, 0) == Some(0)
            && at(lo, 2, i64::MAX) == Some(w / 2)
            && at(hi, 1, 0) == Some(w / 2)
            && at(hi, 2, i64::MAX).is_some_and(|e| e >= w)
    })
}

/// A Slice bound (one element) evaluated with the last axis of `value` `width` wide: constants,
/// `Shape(value)` read at its last axis (`Gather` of index -1, or `Shape(value, -1)`), and
/// `Add`/`Sub`/`Mul`/`Div` (integer division, as ONNX Runtime's), `Cast`, `Identity`,
/// `Unsqueeze`/`Squeeze`. Anything else (another axis, another tensor) is not evaluated.
fn bound_at(ix: &GraphIndex, v: &str, value: &str, width: i64, depth: usize) -> Option<i64> {
    if let Some(c) = ix.const_i64(v) {
        return (c.len() == 1).then(|| c[0]);
    }
    let p = ix.producer(ix.resolve(v))?;
    let n = ix.node(p);
    if depth == 0 || !n.domain().is_empty() {
        return None;
    }
    let last_of_shape = |s: &str| {
        ix.producer(s)
            .is_some_and(|q| ix.whole_shape(q) && ix.resolve(&ix.node(q).input[0]) == ix.resolve(value))
    };
    let arg = |k: usize| bound_at(ix, n.input.get(k)?, value, width, depth - 1);
    match n.op_type() {
        "Shape" => (ix.resolve(n.input.first()?) == ix.resolve(value)
            && ix.attr_i(p, "start") == Some(-1)
            && ix.attr_i(p, "end").is_none())
        .then_some(width),
        "Gather" => (last_of_shape(n.input.first()?)
            && ix.attr_i(p, "axis").unwrap_or(0) == 0
            && ix.const_i64(n.input.get(1)?).is_some_and(|i| i == [-1]))
        .then_some(width),
        "Cast" | "Identity" | "Unsqueeze" | "Squeeze" => arg(0),
        "Add" => arg(0)?.checked_add(arg(1)?),
        "Sub" => arg(0)?.checked_sub(arg(1)?),
        "Mul" => arg(0)?.checked_mul(arg(1)?),
        "Div" => {
            let (a, b) = (arg(0)?, arg(1)?);
            (b != 0).then(|| a / b)
        }
        _ => None,
    }
}
