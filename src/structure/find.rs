//! The pattern matcher behind [`discover`].

use std::collections::{HashSet, VecDeque};

use super::*;
use crate::onnx::{GraphIndex, ModelProto};

type R<T> = Result<T, StructureError>;

fn fail(looked_for: impl Into<String>, stopped_at: impl Into<String>) -> StructureError {
    StructureError {
        looked_for: looked_for.into(),
        stopped_at: stopped_at.into(),
    }
}

/// Ops that only move or rename data between a projection and where it is used.
const PASS_THROUGH: &[&str] = &["Identity", "Cast", "Dropout"];

/// Maps the transformer in `model`.
pub fn discover(model: &ModelProto) -> R<Transformer> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("a graph", "the model has no graph"))?;
    let ix = GraphIndex::new(graph);

    let mut attn_nodes: Vec<usize> = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        let default_domain = n.domain().is_empty() || n.domain() == "ai.onnx";
        if (n.op_type() == "Softmax" && default_domain)
            || (matches!(n.op_type(), "Attention") && n.domain() == "com.microsoft")
        {
            attn_nodes.push(i);
        }
    }
    let embeddings = find_embeddings(&ix);
    if attn_nodes.is_empty() && embeddings.norm.is_none() {
        return Err(fail(
            "attention blocks (Softmax fed by MatMul(Q, Kᵀ), or a fused com.microsoft Attention node)",
            format!(
                "none in the graph's {} nodes (ops: {})",
                graph.node.len(),
                op_summary(graph)
            ),
        ));
    }
    // Every attention block, keyed by the value it reads.
    let mut blocks: Vec<(String, Attention)> = Vec::new();
    for (n, &node) in attn_nodes.iter().enumerate() {
        let (attention, input) = if ix.node(node).op_type() == "Softmax" {
            unfused_attention(&ix, node)
        } else {
            fused_attention(&ix, node)
        }
        .map_err(|e| StructureError {
            looked_for: format!(
                "attention block {n} (at node {}): {}",
                ix.node_label(node),
                e.looked_for
            ),
            stopped_at: e.stopped_at,
        })?;
        blocks.push((input, attention));
    }
    // Walk the encoder from the embeddings (or the first attention's input) layer by layer.
    let mut value = match (&embeddings.norm, blocks.first()) {
        (Some(norm), _) => norm.output.clone(),
        (None, Some((input, _))) => input.clone(),
        (None, None) => return Err(fail("encoder layers", "no embeddings LayerNorm and no attention")),
    };
    let mut layers = Vec::new();
    let mut used = vec![false; blocks.len()];
    loop {
        let index = layers.len();
        let here = ix.resolve(&value).to_string();
        let block = blocks.iter().position(|(input, _)| ix.resolve(input) == here);
        let (attention, attention_bias, attention_norm) = if let Some(b) = block {
            used[b] = true;
            let a = blocks[b].1.clone();
            let norm = find_norm(&ix, &a.output.output, 3).ok_or_else(|| {
                fail(
                    format!("layer {index}: the LayerNorm after the attention output projection (residual Add, then LayerNormalization)"),
                    format!("after node {}", ix.node_label(a.output.node)),
                )
            })?;
            (Some(a), None, norm)
        } else if let Some((bias, norm)) = bias_only_block(&ix, &here) {
            (None, Some(bias), norm)
        } else {
            break;
        };
        let hidden = attention.as_ref().map(|a| a.output.out_features);
        let (ffn, ffn_bias, output_norm) = match find_ffn(&ix, &attention_norm, hidden) {
            Ok(ffn) => {
                let norm = find_norm(&ix, &ffn.down.output, 3).ok_or_else(|| {
                    fail(
                        format!("layer {index}: the LayerNorm after the FFN down projection"),
                        format!("after node {}", ix.node_label(ffn.down.node)),
                    )
                })?;
                (Some(ffn), None, norm)
            }
            Err(e) => match bias_only_block(&ix, &attention_norm.output) {
                Some((bias, norm)) => (None, Some(bias), norm),
                None => {
                    return Err(StructureError {
                        looked_for: format!("layer {index}: {}", e.looked_for),
                        stopped_at: e.stopped_at,
                    })
                }
            },
        };
        value = output_norm.output.clone();
        layers.push(EncoderLayer {
            index,
            input: here,
            attention,
            attention_bias,
            attention_norm,
            ffn,
            ffn_bias,
            output_norm,
        });
        if layers.len() > 10_000 {
            return Err(fail(
                "a finite encoder",
                "more than 10000 layers (a cycle in the graph?)",
            ));
        }
    }
    if let Some(b) = used.iter().position(|u| !u) {
        let (input, a) = &blocks[b];
        return Err(fail(
            "every attention block on the encoder's chain of layers",
            format!(
                "the attention at {} reads '{input}', which no mapped layer produces ({} layers mapped)",
                a.softmax
                    .map(|s| ix.node_label(s))
                    .unwrap_or_else(|| ix.node_label(a.output.node)),
                layers.len()
            ),
        ));
    }
    if layers.is_empty() {
        return Err(fail(
            "encoder layers after the embeddings",
            format!("nothing recognizable reads '{value}'"),
        ));
    }
    let hidden = layers
        .iter()
        .find_map(|l| {
            l.attention
                .as_ref()
                .map(|a| a.output.out_features)
                .or(l.ffn.as_ref().map(|f| f.up.in_features))
        })
        .or(embeddings.word.as_ref().map(|w| w.dim))
        .unwrap_or(0);
    let head = find_head(&ix, &value);
    Ok(Transformer {
        hidden,
        embeddings,
        layers,
        head,
    })
}

/// What remains of a fully pruned block: `Add(x, bias)` then a LayerNorm.
fn bias_only_block(ix: &GraphIndex, x: &str) -> Option<(String, Norm)> {
    for &c in ix.consumers(x) {
        let n = ix.node(c);
        if n.op_type() != "Add" || n.input.len() != 2 {
            continue;
        }
        let other = if ix.resolve(&n.input[0]) == x {
            &n.input[1]
        } else {
            &n.input[0]
        };
        let t = ix.constant(other)?;
        if t.tensor().dims.len() != 1 {
            continue;
        }
        let out = n.output.first()?;
        if let Some(norm) = find_norm(ix, out, 0) {
            return Some((ix.constant_name(other)?, norm));
        }
    }
    None
}

fn op_summary(graph: &crate::onnx::GraphProto) -> String {
    let mut ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
    ops.sort_unstable();
    ops.dedup();
    if ops.is_empty() {
        "none".into()
    } else {
        ops.join(", ")
    }
}

/// The linear layer computed by node `i` (MatMul or Gemm with a constant 2-D weight), with the
/// bias Add that follows it, if any. A factorized linear `x·A·B` (+ bias), as the `lowrank`
/// pass writes it, is one layer, found from either of its two nodes: see [`factor_pair`].
fn linear_at(ix: &GraphIndex, i: usize) -> Option<Linear> {
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
fn factor_pair(ix: &GraphIndex, i: usize) -> Option<(usize, usize)> {
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
            && matches!(s.op_type(), "MatMul" | "Gemm")
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
fn plain_linear(ix: &GraphIndex, i: usize) -> Option<Linear> {
    let n = ix.node(i);
    let (weight_input, transposed) = match n.op_type() {
        "MatMul" if n.input.len() == 2 => (&n.input[1], false),
        "Gemm" if n.input.len() >= 2 => {
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
    if n.op_type() == "Gemm" {
        if let Some(c) = n.input.get(2).filter(|c| !c.is_empty()) {
            bias = ix.constant_name(c);
        }
    } else if let [c] = ix.consumers(&out) {
        let add = ix.node(*c);
        if add.op_type() == "Add" && add.input.len() == 2 {
            let other = if add.input[0] == out {
                &add.input[1]
            } else {
                &add.input[0]
            };
            if let Some(t) = ix.constant(other) {
                let t = t.tensor();
                let len: i64 = t.dims.iter().product();
                if t.dims.len() == 1 && len == out_features as i64 {
                    bias = ix.constant_name(other);
                    bias_node = Some(*c);
                    output = add.output.first().cloned().unwrap_or(out);
                }
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

/// Walks back from `value` through the ops in `through` until a node satisfying `pred`.
/// Returns the node and the nodes passed on the way.
fn find_back(
    ix: &GraphIndex,
    value: &str,
    pred: &dyn Fn(usize) -> bool,
    through: &[&str],
    depth: usize,
) -> Option<(usize, Vec<usize>)> {
    let p = ix.producer(value)?;
    if pred(p) {
        return Some((p, vec![]));
    }
    if depth == 0 || !through.contains(&ix.node(p).op_type()) {
        return None;
    }
    for inp in ix.dynamic_inputs(p) {
        if ix.node(p).op_type() == "Reshape" && ix.node(p).input.get(1).map(|s| s.as_str()) == Some(inp) {
            continue; // never walk into a Reshape's shape input
        }
        if let Some((found, mut path)) = find_back(ix, inp, pred, through, depth - 1) {
            path.push(p);
            return Some((found, path));
        }
    }
    None
}

/// Walks forward from `value` through the ops in `through` to a node satisfying `pred`.
fn find_forward(
    ix: &GraphIndex,
    value: &str,
    pred: &dyn Fn(usize) -> bool,
    through: &[&str],
    depth: usize,
) -> Option<(usize, Vec<usize>)> {
    for &c in ix.consumers(value) {
        if pred(c) {
            return Some((c, vec![]));
        }
    }
    if depth == 0 {
        return None;
    }
    for &c in ix.consumers(value) {
        let n = ix.node(c);
        if through.contains(&n.op_type()) && n.input.first().map(|s| s.as_str()) == Some(value) {
            if let Some(out) = n.output.first() {
                if let Some((found, mut path)) = find_forward(ix, out, pred, through, depth - 1) {
                    path.insert(0, c);
                    return Some((found, path));
                }
            }
        }
    }
    None
}

/// A projection behind `value`: walks back through head reshapes/transposes and scaling to a
/// linear layer. Returns the layer, the Reshape nodes passed and any constant scale.
fn projection_behind(ix: &GraphIndex, value: &str, what: &str) -> R<(Linear, Vec<usize>, Option<f32>)> {
    let through = [
        "Transpose",
        "Reshape",
        "Mul",
        "Div",
        "Identity",
        "Cast",
        "Squeeze",
        "Unsqueeze",
    ];
    let is_linear_end = |i: usize| {
        let n = ix.node(i);
        (n.op_type() == "Add" && n.input.iter().any(|v| ix.constant(v).is_some()) && {
            n.input
                .iter()
                .filter_map(|v| ix.producer(v))
                .any(|p| linear_at(ix, p).is_some_and(|l| l.bias_node == Some(i)))
        }) || (matches!(n.op_type(), "MatMul" | "Gemm") && linear_at(ix, i).is_some())
    };
    let (end, path) = find_back(ix, value, &is_linear_end, &through, 8).ok_or_else(|| {
        fail(
            format!("the {what} projection (MatMul with a weight initializer, optional bias Add)"),
            format!(
                "walking back from '{value}'{}",
                ix.producer(value)
                    .map(|p| format!(" (node {})", ix.node_label(p)))
                    .unwrap_or_default()
            ),
        )
    })?;
    let linear = if ix.node(end).op_type() == "Add" {
        ix.node(end)
            .input
            .iter()
            .filter_map(|v| ix.producer(v))
            .find_map(|p| linear_at(ix, p).filter(|l| l.bias_node == Some(end)))
    } else {
        linear_at(ix, end)
    }
    .ok_or_else(|| fail(format!("the {what} projection"), ix.node_label(end)))?;
    let mut reshapes = Vec::new();
    let mut scale = None;
    for &p in &path {
        let n = ix.node(p);
        match n.op_type() {
            "Reshape" => reshapes.push(p),
            "Mul" | "Div" => {
                if let Some(c) = n.input.iter().find_map(|v| ix.const_f32(v)).filter(|c| c.len() == 1) {
                    scale = Some(if n.op_type() == "Div" { 1.0 / c[0] } else { c[0] });
                }
            }
            _ => {}
        }
    }
    Ok((linear, reshapes, scale))
}

fn unfused_attention(ix: &GraphIndex, sm: usize) -> R<(Attention, String)> {
    let sm_node = ix.node(sm);
    let sm_in = sm_node
        .input
        .first()
        .ok_or_else(|| fail("Softmax input", ix.node_label(sm)))?;
    let is_matmul = |i: usize| ix.node(i).op_type() == "MatMul" && ix.dynamic_inputs(i).len() == 2;
    let (scores, score_path) = find_back(ix, sm_in, &is_matmul, &["Add", "Mul", "Div", "Cast", "Identity"], 6)
        .ok_or_else(|| {
            fail(
                "the scores MatMul(Q, Kᵀ) before the Softmax (through scale Mul/Div and mask Add)",
                format!("walking back from {}", ix.node_label(sm)),
            )
        })?;
    let mut scale = None;
    for &p in &score_path {
        let n = ix.node(p);
        if matches!(n.op_type(), "Mul" | "Div") {
            if let Some(c) = n.input.iter().find_map(|v| ix.const_f32(v)).filter(|c| c.len() == 1) {
                scale = Some(if n.op_type() == "Div" { 1.0 / c[0] } else { c[0] });
            }
        }
    }
    let sn = ix.node(scores);
    let (q, q_reshapes, q_scale) = projection_behind(ix, &sn.input[0], "query")?;
    let (k, k_reshapes, k_scale) = projection_behind(ix, &sn.input[1], "key")?;
    scale = scale.or(q_scale).or(k_scale);
    let sm_out = sm_node
        .output
        .first()
        .ok_or_else(|| fail("Softmax output", ix.node_label(sm)))?;
    let is_ctx = |i: usize| ix.node(i).op_type() == "MatMul";
    let (ctx, _) = find_forward(ix, sm_out, &is_ctx, PASS_THROUGH, 3).ok_or_else(|| {
        fail(
            "the context MatMul(probabilities, V) after the Softmax",
            format!("after {}", ix.node_label(sm)),
        )
    })?;
    let cn = ix.node(ctx);
    let v_in = cn.input.get(1).ok_or_else(|| fail("V input", ix.node_label(ctx)))?;
    let (v, v_reshapes, _) = projection_behind(ix, v_in, "value")?;
    let ctx_out = cn
        .output
        .first()
        .ok_or_else(|| fail("context output", ix.node_label(ctx)))?;
    let is_out_proj = |i: usize| linear_at(ix, i).is_some();
    let (o_node, merge_path) = find_forward(
        ix,
        ctx_out,
        &is_out_proj,
        &["Transpose", "Reshape", "Identity", "Cast"],
        4,
    )
    .ok_or_else(|| {
        fail(
            "the attention output projection (Transpose, Reshape, then MatMul with a weight initializer)",
            format!("after {}", ix.node_label(ctx)),
        )
    })?;
    let output = linear_at(ix, o_node).ok_or_else(|| fail("output projection", ix.node_label(o_node)))?;

    let input = ix.resolve(&ix.node(q.node).input[0]).to_string();
    for (lin, name) in [(&k, "key"), (&v, "value")] {
        let other = ix.resolve(&ix.node(lin.node).input[0]);
        if other != input {
            return Err(fail(
                "query, key and value projections reading the same input".to_string(),
                format!("query reads '{input}', {name} reads '{other}'"),
            ));
        }
    }
    let all_heads = q.out_features;
    if k.out_features != all_heads || v.out_features != all_heads || output.in_features != all_heads {
        return Err(fail(
            "Q, K, V and output projections of matching widths",
            format!(
                "Q {}×{}, K {}×{}, V {}×{}, O {}×{} at {}",
                q.in_features,
                q.out_features,
                k.in_features,
                k.out_features,
                v.in_features,
                v.out_features,
                output.in_features,
                output.out_features,
                ix.node_label(q.node)
            ),
        ));
    }
    let split: Vec<usize> = q_reshapes
        .iter()
        .chain(&k_reshapes)
        .chain(&v_reshapes)
        .copied()
        .collect();
    let merge: Vec<usize> = merge_path
        .iter()
        .copied()
        .filter(|&p| ix.node(p).op_type() == "Reshape")
        .collect();
    let (shape_consts, inferred) = shape_constants(ix, &split, &merge);
    let (num_heads, head_size) = heads_from(&shape_consts, scale, all_heads).ok_or_else(|| {
        fail(
            "the head count or head size (a constant in the head-split Reshape, or the 1/√d scale)",
            format!(
                "Reshape nodes {:?} carry no usable constant and no scale was found",
                split.iter().map(|&p| ix.node_label(p)).collect::<Vec<_>>()
            ),
        )
    })?;
    check_consts(&shape_consts, num_heads, head_size)?;
    Ok((
        Attention {
            qkv: Qkv::Separate { q, k, v },
            output,
            num_heads,
            head_size,
            fused: false,
            softmax: Some(sm),
            scale,
            shape_consts,
            inferred_reshapes: inferred,
        },
        input,
    ))
}

fn fused_attention(ix: &GraphIndex, node: usize) -> R<(Attention, String)> {
    let n = ix.node(node);
    let label = ix.node_label(node);
    let num_heads = ix
        .attr_i(node, "num_heads")
        .filter(|&h| h > 0)
        .ok_or_else(|| fail("the num_heads attribute of the fused Attention node", label.clone()))?
        as usize;
    let w_in = n
        .input
        .get(1)
        .ok_or_else(|| fail("the packed QKV weight", label.clone()))?;
    let (_, _, three_all) = ix
        .weight_2d(w_in)
        .ok_or_else(|| fail("a constant packed QKV weight [hidden, 3·heads·size]", label.clone()))?;
    if three_all % 3 != 0 || (three_all / 3) % num_heads != 0 {
        return Err(fail(
            "a packed QKV weight divisible into 3 × heads",
            format!("{label}: width {three_all}"),
        ));
    }
    let all = three_all / 3;
    let out = n
        .output
        .first()
        .ok_or_else(|| fail("Attention output", label.clone()))?;
    let is_out_proj = |i: usize| linear_at(ix, i).is_some();
    let (o_node, _) = find_forward(ix, out, &is_out_proj, PASS_THROUGH, 2)
        .ok_or_else(|| fail("the output projection after the fused Attention", label.clone()))?;
    let output = linear_at(ix, o_node).ok_or_else(|| fail("output projection", ix.node_label(o_node)))?;
    let input = ix.resolve(&n.input[0]).to_string();
    Ok((
        Attention {
            qkv: Qkv::Packed {
                node,
                node_name: n.name().to_string(),
                weight: ix.constant_name(w_in).unwrap_or_default(),
                bias: n.input.get(2).and_then(|b| ix.constant_name(b)),
            },
            output,
            num_heads,
            head_size: all / num_heads,
            fused: true,
            softmax: None,
            scale: ix.attr_f(node, "scale"),
            shape_consts: vec![],
            inferred_reshapes: 0,
        },
        input,
    ))
}

/// Constant elements of the target shapes of the head-split (rank 4: [B, S, heads, size]) and
/// head-merge (rank 3: [B, S, all]; rank 2: [B·S, all]) Reshapes.
fn shape_constants(ix: &GraphIndex, split: &[usize], merge: &[usize]) -> (Vec<ShapeConst>, usize) {
    let mut out = Vec::new();
    let mut inferred = 0;
    for (&r, is_split) in split.iter().map(|r| (r, true)).chain(merge.iter().map(|r| (r, false))) {
        let Some(shape_in) = ix.node(r).input.get(1) else {
            continue;
        };
        let Some((rank, elems)) = shape_elements(ix, shape_in, r) else {
            continue;
        };
        let roles: &[(usize, ShapeRole)] = match (is_split, rank) {
            (true, 4) => &[(2, ShapeRole::Heads), (3, ShapeRole::HeadSize)],
            (true, 3) => &[(2, ShapeRole::HeadSize)],
            (false, 3) => &[(2, ShapeRole::AllHeads)],
            (false, 2) => &[(1, ShapeRole::AllHeads)],
            _ => &[],
        };
        let mut dependent_found = false;
        for &(pos, role) in roles {
            match elems.iter().find(|e| e.2 == pos) {
                Some((name, element, _, value, used_by)) if *value > 0 => {
                    dependent_found |= role != ShapeRole::HeadSize;
                    if !out.iter().any(|c: &ShapeConst| {
                        &c.constant == name && c.element == *element && c.used_by_node == *used_by
                    }) {
                        out.push(ShapeConst {
                            constant: name.clone(),
                            element: *element,
                            value: *value,
                            role,
                            used_by: ix.node(*used_by).name().to_string(),
                            used_by_node: *used_by,
                            shared_by: ix.consumers(name).len(),
                        });
                    }
                }
                _ => {}
            }
        }
        if !dependent_found {
            inferred += 1;
        }
    }
    (out, inferred)
}

/// (constant name, element index in it, position in the target shape, value, consuming node).
type ShapeElem = (String, usize, usize, i64, usize);

fn shape_elements(ix: &GraphIndex, shape: &str, reshape: usize) -> Option<(usize, Vec<ShapeElem>)> {
    if let (Some(vals), Some(name)) = (ix.const_i64(shape), ix.constant_name(shape)) {
        let elems = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (name.clone(), i, i, v, reshape))
            .collect();
        return Some((vals.len(), elems));
    }
    let p = ix.producer(ix.resolve(shape))?;
    let n = ix.node(p);
    if n.op_type() != "Concat" {
        return None;
    }
    let mut pos = 0;
    let mut elems = Vec::new();
    for piece in &n.input {
        if let (Some(vals), Some(name)) = (ix.const_i64(piece), ix.constant_name(piece)) {
            for (j, &v) in vals.iter().enumerate() {
                elems.push((name.clone(), j, pos + j, v, p));
            }
            pos += vals.len();
        } else {
            // A dynamic piece: an Unsqueeze of a scalar (one element) is the usual form.
            let len = match ix.producer(piece).map(|q| ix.node(q).op_type()) {
                Some("Unsqueeze") | Some("Gather") => 1,
                _ => return Some((usize::MAX, elems)),
            };
            pos += len;
        }
    }
    Some((pos, elems))
}

fn heads_from(consts: &[ShapeConst], scale: Option<f32>, all_heads: usize) -> Option<(usize, usize)> {
    let find = |role| consts.iter().find(|c| c.role == role).map(|c| c.value as usize);
    let head_size = find(ShapeRole::HeadSize)
        .or_else(|| {
            find(ShapeRole::Heads)
                .filter(|&h| h > 0 && all_heads % h == 0)
                .map(|h| all_heads / h)
        })
        .or_else(|| {
            let s = scale?;
            if s <= 0.0 || !s.is_finite() {
                return None;
            }
            Some((1.0 / (s * s)).round() as usize)
        })?;
    if head_size == 0 {
        return None;
    }
    if all_heads % head_size != 0 {
        // After pruning away all heads the width may be a placeholder; still derive honestly.
        return None;
    }
    Some((all_heads / head_size, head_size))
}

fn check_consts(consts: &[ShapeConst], heads: usize, size: usize) -> R<()> {
    for c in consts {
        let expected = match c.role {
            ShapeRole::Heads => heads,
            ShapeRole::HeadSize => size,
            ShapeRole::AllHeads => heads * size,
        } as i64;
        if c.value != expected {
            return Err(fail(
                format!("shape constants consistent with {heads} heads × {size}"),
                format!(
                    "constant '{}' element {} (used by '{}') holds {} where {:?} = {expected}",
                    c.constant, c.element, c.used_by, c.value, c.role
                ),
            ));
        }
    }
    Ok(())
}

/// LayerNormalization, SkipLayerNormalization or a decomposed LayerNorm after `value`, through
/// residual Adds.
fn find_norm(ix: &GraphIndex, value: &str, depth: usize) -> Option<Norm> {
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
fn decomposed_norm(ix: &GraphIndex, x: &str) -> Option<Norm> {
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
        output: out,
    })
}

const ACTIVATION_OPS: &[&str] = &[
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

fn find_ffn(ix: &GraphIndex, norm: &Norm, hidden: Option<usize>) -> R<Ffn> {
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

fn find_embeddings(ix: &GraphIndex) -> Embeddings {
    let mut tables: Vec<(EmbeddingTable, bool)> = Vec::new();
    for (i, n) in ix.graph.node.iter().enumerate() {
        if n.op_type() != "Gather" || n.input.len() != 2 {
            continue;
        }
        let Some((_, rows, dim)) = ix.weight_2d(&n.input[0]) else {
            continue;
        };
        let Some(weight) = ix.constant_name(&n.input[0]) else {
            continue;
        };
        // Indices straight from a graph input (through Cast/Identity) → word or token type.
        let mut idx = ix.resolve(&n.input[1]);
        for _ in 0..3 {
            match ix.producer(idx).map(|p| ix.node(p)) {
                Some(p) if p.op_type() == "Cast" => idx = &p.input[0],
                _ => break,
            }
        }
        let from_input = ix.graph_inputs().contains(&idx);
        tables.push((
            EmbeddingTable {
                weight,
                rows,
                dim,
                gather_node: i,
            },
            from_input,
        ));
    }
    let mut e = Embeddings::default();
    let mut from_inputs: Vec<&EmbeddingTable> = tables.iter().filter(|t| t.1).map(|t| &t.0).collect();
    from_inputs.sort_by_key(|t| std::cmp::Reverse(t.rows));
    if let Some(w) = from_inputs.first() {
        e.word = Some((*w).clone());
    }
    e.token_type = from_inputs.iter().skip(1).find(|t| t.rows <= 16).map(|t| (*t).clone());
    e.position = tables
        .iter()
        .filter(|t| !t.1 || (t.0.rows > 16 && Some(&t.0) != e.word.as_ref()))
        .map(|t| t.0.clone())
        .max_by_key(|t| t.rows);
    // The embedding LayerNorm: after the word embedding Gather, through the Adds of the others.
    if let Some(w) = &e.word {
        if let Some(out) = ix.node(w.gather_node).output.first() {
            e.norm = find_norm(ix, out, 3);
        }
    }
    e
}

fn find_head(ix: &GraphIndex, encoder_out: &str) -> Option<Head> {
    let mut queue = VecDeque::from([encoder_out.to_string()]);
    let mut seen = HashSet::new();
    let mut linears: Vec<Linear> = Vec::new();
    let mut ops: Vec<(usize, String)> = Vec::new();
    while let Some(v) = queue.pop_front() {
        if seen.len() > 48 {
            break;
        }
        for &c in ix.consumers(&v) {
            if !seen.insert(c) {
                continue;
            }
            if let Some(l) = linear_at(ix, c) {
                queue.push_back(l.output.clone());
                if let Some(b) = l.bias_node {
                    seen.insert(b);
                }
                linears.push(l);
                continue;
            }
            let n = ix.node(c);
            ops.push((c, n.op_type().to_string()));
            for o in &n.output {
                queue.push_back(o.clone());
            }
        }
    }
    linears.sort_by_key(|l| l.node);
    let classifier = linears.pop()?;
    let pooler = linears.pop();
    let pooler_activation = pooler.as_ref().and_then(|p| {
        ops.iter()
            .filter(|(i, op)| {
                *i > p.node
                    && *i < classifier.node
                    && matches!(op.as_str(), "Tanh" | "Relu" | "Gelu" | "Erf" | "Sigmoid")
            })
            .map(|(_, op)| op.to_lowercase())
            .next()
    });
    Some(Head {
        pooler,
        pooler_activation,
        classifier,
    })
}
