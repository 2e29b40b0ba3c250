//! Linear layers: a MatMul or Gemm with a constant weight and its bias Add, or the two
//! factors the `lowrank` pass writes.

use super::*;

/// The linear layer computed by node `i` (MatMul or Gemm with a constant 2-D weight), with the
/// bias Add that follows it, if any. A factorized linear `x·A·B` (+ bias), as the `lowrank`
/// pass writes it, is one layer, found from either of its two nodes: see [`factor_pair`].
pub(super) fn linear_at(ix: &GraphIndex, i: usize) -> Option<Linear> {
    if let Some((first, second)) = factor_pair(ix, i) {
        let a = plain_linear(ix, first)?;
        let b = plain_linear(ix, second)?;
        return Some(Linear {
            bias: b.bias,
            bias_node: b.bias_node,
            out_features: b.out_features,
            output: b.output,
            factor: Some(Factor {
                node: second,
                node_name: b.node_name,
                weight: b.weight,
                rank: a.out_features,
                transposed: b.transposed,
            }),
            ..a
        });
    }
    plain_linear(ix, i)
}

/// The two nodes of a factorized linear that node `i` belongs to: a `MatMul(x, A)` with a
/// constant A whose only reader is a `MatMul`/`Gemm` with a constant B (two weight products in a
/// row with nothing between them compute one linear map of rank ≤ the inner width).
pub(super) fn factor_pair(ix: &GraphIndex, i: usize) -> Option<(usize, usize)> {
    let is_first = |f: usize| -> Option<usize> {
        let n = ix.node(f);
        if n.op_type() != "MatMul" || n.input.len() != 2 || ix.constant(&n.input[0]).is_some() {
            return None;
        }
        ix.weight_2d(&n.input[1])?;
        let out = n.output.first()?;
        if ix.is_graph_output(out) {
            return None;
        }
        let [c] = ix.consumers(out) else { return None };
        let s = ix.node(*c);
        let reads_first = s.input.first() == Some(out);
        (reads_first
            && (s.op_type() == "MatMul" || is_gemm(s))
            && s.input.len() >= 2
            && ix.weight_2d(&s.input[1]).is_some())
        .then_some(*c)
    };
    if let Some(second) = is_first(i) {
        let (a, b) = (plain_linear(ix, i)?, plain_linear(ix, second)?);
        return (a.out_features == b.in_features).then_some((i, second));
    }
    let n = ix.node(i);
    let first = ix.producer(n.input.first()?)?;
    (is_first(first) == Some(i)).then(|| factor_pair(ix, first)).flatten()
}

/// [`linear_at`] for one node alone.
pub(super) fn plain_linear(ix: &GraphIndex, i: usize) -> Option<Linear> {
    let n = ix.node(i);
    let (weight_input, transposed) = match n.op_type() {
        "MatMul" if n.input.len() == 2 => (&n.input[1], false),
        _ if is_gemm(n) && n.input.len() >= 2 => {
            if ix.attr_i(i, "transA").unwrap_or(0) != 0 {
                return None;
            }
            (&n.input[1], ix.attr_i(i, "transB").unwrap_or(0) != 0)
        }
        _ => return None,
    };
    if ix.constant(&n.input[0]).is_some() {
        return None;
    }
    let (_, d0, d1) = ix.weight_2d(weight_input)?;
    let weight = ix.constant_name(weight_input)?;
    let (in_features, out_features) = if transposed { (d1, d0) } else { (d0, d1) };
    let out = n.output.first()?.clone();
    let mut bias = None;
    let mut bias_node = None;
    let mut output = out.clone();
    if is_gemm(n) {
        if let Some(c) = n.input.get(2).filter(|c| !c.is_empty()) {
            bias = ix.constant_name(c);
        }
    } else if let [c] = ix.consumers(&out) {
        let add = ix.node(*c);
        if fused_bias_activation(add) && add.input.first() == Some(&out) {
            // ONNX Runtime's BiasGelu / FastGelu: the bias is the activation's second input; the
            // layer's output stays the MatMul's (no value holds it with the bias alone).
            if let Some(b) = add.input.get(1).filter(|b| is_bias(ix, b, out_features)) {
                bias = ix.constant_name(b);
                bias_node = Some(*c);
            }
        } else if add.op_type() == "Add" && add.input.len() == 2 {
            let other = if add.input[0] == out {
                &add.input[1]
            } else {
                &add.input[0]
            };
            if is_bias(ix, other, out_features) {
                bias = ix.constant_name(other);
                bias_node = Some(*c);
                output = add.output.first().cloned().unwrap_or(out);
            }
        }
    }
    Some(Linear {
        node: i,
        node_name: n.name().to_string(),
        weight,
        bias,
        bias_node,
        in_features,
        out_features,
        transposed,
        output,
        factor: None,
    })
}

/// A `Gemm`, or ONNX Runtime's `FusedGemm` (a Gemm with its activation folded in, as its session
/// optimizations write the pooler): the same inputs and attributes, its output activated.
pub(crate) fn is_gemm(n: &crate::onnx::NodeProto) -> bool {
    n.op_type() == "Gemm" || (n.op_type() == "FusedGemm" && n.domain() == "com.microsoft")
}

/// Whether `v` is a constant vector of `len` elements.
fn is_bias(ix: &GraphIndex, v: &str, len: usize) -> bool {
    ix.constant(v).is_some_and(|t| {
        let t = t.tensor();
        t.dims.len() == 1 && t.dims[0] == len as i64
    })
}

/// ONNX Runtime's activations with the preceding bias folded in (com.microsoft `BiasGelu`,
/// `FastGelu` with a bias input): `act(x + bias)`.
pub(super) fn fused_bias_activation(n: &crate::onnx::NodeProto) -> bool {
    n.domain() == "com.microsoft" && matches!(n.op_type(), "BiasGelu" | "FastGelu") && n.input.len() >= 2
}
