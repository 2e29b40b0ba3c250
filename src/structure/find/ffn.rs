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
    // projection through `0.5·x·(…)` before its `Tanh`).
    let mut back: VecDeque<String> = ix.node(down.node).input.first().cloned().into_iter().collect();
    let mut behind = HashSet::new();
    while let Some(v) = back.pop_front() {
        if v == up.output || behind.len() > 64 {
            continue;
        }
        let Some(p) = ix.producer(&v) else { continue };
        let n = ix.node(p);
        if !behind.insert(p) || !ACTIVATION_OPS.contains(&n.op_type()) {
            continue;
        }
        ops.push(n.op_type().to_string());
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
                // Computed bounds must be the ones chunk(2) computes: both from this shape.
                && (constant || computed_from_shape_of(ix, lo.0, value) && computed_from_shape_of(ix, hi.0, value));
            ok.then(|| Gate {
                nodes: vec![lo.0, hi.0],
                constant_bounds: constant,
            })
        }
        _ => None,
    }
}

/// Whether every non-constant bound of Slice `s` is computed from `Shape(value)` alone.
fn computed_from_shape_of(ix: &GraphIndex, s: usize, value: &str) -> bool {
    let mut todo: Vec<String> = ix.node(s).input[1..3.min(ix.node(s).input.len())]
        .iter()
        .filter(|v| ix.constant(v).is_none())
        .cloned()
        .collect();
    let mut steps = 0;
    while let Some(v) = todo.pop() {
        steps += 1;
        let Some(p) = ix.producer(&v) else { return false };
        if steps > 32 {
            return false;
        }
        let n = ix.node(p);
        if n.op_type() == "Shape" {
            if ix.resolve(&n.input[0]) != ix.resolve(value) {
                return false;
            }
            continue;
        }
        todo.extend(
            n.input
                .iter()
                .filter(|i| !i.is_empty() && ix.constant(i).is_none())
                .cloned(),
        );
    }
    true
}
