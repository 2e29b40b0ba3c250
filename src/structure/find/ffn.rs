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
    while let Some(v) = queue.pop_front() {
        if seen.len() > 24 {
            break;
        }
        for &c in ix.consumers(&v) {
            if !seen.insert(c) {
                continue;
            }
            if let Some(l) = linear_at(ix, c).filter(|l| l.in_features == width && l.out_features == hidden) {
                down = Some(l);
                break;
            }
            let n = ix.node(c);
            if ACTIVATION_OPS.contains(&n.op_type()) {
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
            format!("the FFN down projection (MatMul with a weight [{width}, {hidden}]) after the activation"),
            format!(
                "after {} (activation ops seen: {})",
                ix.node_label(up.node),
                ops.join(", ")
            ),
        )
    })?;
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
    Ok(Ffn {
        up,
        down,
        activation: activation.into(),
        width,
    })
}
