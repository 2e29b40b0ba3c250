//! LayerNorms: the `LayerNormalization` op, `SkipLayerNormalization`, or its decomposed form.

use super::*;

/// LayerNormalization, SkipLayerNormalization or a decomposed LayerNorm after `value`, through
/// residual Adds.
pub(super) fn find_norm(ix: &GraphIndex, value: &str, depth: usize) -> Option<Norm> {
    for &c in ix.consumers(value) {
        let n = ix.node(c);
        match n.op_type() {
            "LayerNormalization" | "SkipLayerNormalization" | "SimplifiedLayerNormalization" => {
                return Some(Norm {
                    node: c,
                    node_name: n.name().to_string(),
                    kind: n.op_type().to_string(),
                    scale: n
                        .input
                        .get(if n.op_type() == "SkipLayerNormalization" { 2 } else { 1 })
                        .and_then(|v| ix.constant_name(v)),
                    bias: n
                        .input
                        .get(if n.op_type() == "SkipLayerNormalization" { 3 } else { 2 })
                        .and_then(|v| ix.constant_name(v)),
                    skip_bias: n
                        .input
                        .get(4)
                        .filter(|_| n.op_type() == "SkipLayerNormalization")
                        .and_then(|v| ix.constant_name(v)),
                    output: n.output.first()?.clone(),
                })
            }
            "ReduceMean" => {
                if let Some(norm) = decomposed_norm(ix, value) {
                    return Some(norm);
                }
            }
            _ => {}
        }
    }
    if depth == 0 {
        return None;
    }
    for &c in ix.consumers(value) {
        let n = ix.node(c);
        if matches!(n.op_type(), "Add" | "Identity" | "Dropout" | "Cast") && !ix.dynamic_inputs(c).is_empty() {
            if let Some(out) = n.output.first() {
                if let Some(norm) = find_norm(ix, out, depth - 1) {
                    return Some(norm);
                }
            }
        }
    }
    None
}

/// x → ReduceMean, Sub(x, mean) → … → Div(sub, std) → Mul(γ) → Add(β).
pub(super) fn decomposed_norm(ix: &GraphIndex, x: &str) -> Option<Norm> {
    let sub = ix
        .consumers(x)
        .iter()
        .copied()
        .find(|&c| ix.node(c).op_type() == "Sub" && ix.node(c).input.first().map(|s| s.as_str()) == Some(x))?;
    let sub_out = ix.node(sub).output.first()?;
    let div = ix
        .consumers(sub_out)
        .iter()
        .copied()
        .find(|&c| ix.node(c).op_type() == "Div" && ix.node(c).input.first() == Some(sub_out))?;
    let mut out = ix.node(div).output.first()?.clone();
    let mut scale = None;
    let mut bias = None;
    let mut last = div;
    if let [m] = ix.consumers(&out) {
        if ix.node(*m).op_type() == "Mul" {
            scale = ix.node(*m).input.iter().find_map(|v| ix.constant_name(v));
            out = ix.node(*m).output.first()?.clone();
            last = *m;
        }
    }
    if let [a] = ix.consumers(&out) {
        if ix.node(*a).op_type() == "Add" {
            if let Some(b) = ix.node(*a).input.iter().find_map(|v| ix.constant_name(v)) {
                bias = Some(b);
                out = ix.node(*a).output.first()?.clone();
                last = *a;
            }
        }
    }
    Some(Norm {
        node: last,
        node_name: ix.node(last).name().to_string(),
        kind: "decomposed".into(),
        scale,
        bias,
        skip_bias: None,
        output: out,
    })
}
