//! Self-attention, unfused (Q/K/V projections, head reshapes, softmax) or fused
//! (com.microsoft `Attention`).

use super::*;

/// A projection behind `value`: walks back through head reshapes/transposes and scaling to a
/// linear layer. Returns the layer, the Reshape nodes passed and any constant scale.
pub(super) fn projection_behind(ix: &GraphIndex, value: &str, what: &str) -> R<(Linear, Vec<usize>, Option<f32>)> {
    let through = [
        "Transpose",
        "Reshape",
        "Mul",
        "Div",
        "Identity",
        "Cast",
        "Squeeze",
        "Unsqueeze",
        // Rotary positions (ModernBERT): x·cos + rotate_half(x)·sin, walked back through x·cos.
        "Add",
        // One stacked Q/K/V projection split three ways (ModernBERT's Wqkv): a Split, or three
        // Slices as torch's dynamo exporter writes `unbind`.
        "Split",
        "Slice",
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
    let (end, path) = find_back(ix, value, &is_linear_end, &through, 12).ok_or_else(|| {
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
    let mut scale = None;
    for &p in &path {
        let n = ix.node(p);
        if matches!(n.op_type(), "Mul" | "Div") {
            if let Some(c) = n.input.iter().find_map(|v| ix.const_f32(v)).filter(|c| c.len() == 1) {
                scale = Some(if n.op_type() == "Div" { 1.0 / c[0] } else { c[0] });
            }
        }
    }
    Ok((linear, path, scale))
}

/// Checks that the heads are whole runs of columns: the first Transpose after each rank-4 head
/// split ([B, S, heads, size]) makes its heads axis 1 (Q and V `[0, 2, 1, 3]`, K `[0, 2, 3, 1]`),
/// and the Transpose before the merge (`merge_path`, from the context on) puts them back
/// (`[0, 2, 1, 3]`). A split whose heads are another axis (columns k, k + 4, … for head k)
/// would be read as contiguous heads and pruned wrong: it is refused.
fn check_head_axes(ix: &GraphIndex, paths: [&Vec<usize>; 3], merge_path: &[usize]) -> R<()> {
    let perm = |t: usize| ix.attr_ints(t, "perm").unwrap_or_default();
    let refuse = |t: usize, want: &str| {
        fail(
            "heads as whole runs of columns (Transposes [0, 2, 1, 3] after the head split and before the merge)",
            format!("{} has perm {:?}, where {want}", ix.node_label(t), perm(t)),
        )
    };
    for path in paths {
        for (at, &r) in path.iter().enumerate() {
            let rank4 = ix.is_op(r, "Reshape")
                && ix
                    .node(r)
                    .input
                    .get(1)
                    .and_then(|s| shape_elements(ix, s, r))
                    .is_some_and(|(rank, _)| rank == 4);
            if !rank4 {
                continue;
            }
            if let Some(&t) = path[at + 1..].iter().find(|&&t| ix.is_op(t, "Transpose")) {
                let p = perm(t);
                if p.len() != 4 || p[0] != 0 || p[1] != 2 {
                    return Err(refuse(t, "the head split's heads axis (2) must become axis 1"));
                }
            }
        }
    }
    if let Some(&t) = merge_path.iter().find(|&&t| ix.is_op(t, "Transpose")) {
        if perm(t) != [0, 2, 1, 3] {
            return Err(refuse(t, "the merge must bring the heads back beside the head size"));
        }
    }
    Ok(())
}

/// Checks that the query, key and value paths (`paths`, as [`projection_behind`] returns them:
/// from the projection onwards) leave one stacked projection as the first, second and third
/// part of one tensor: the outputs of one `Split` into three equal parts, or three `Slice`s of
/// one step each (torch's dynamo exporter writes `unbind` so), along the axis of the three: the
/// columns of Q, K and V are then the first, second and third third of the projection's.
fn stacked_parts(ix: &GraphIndex, lin: &Linear, paths: [&Vec<usize>; 3]) -> R<()> {
    let why = |stopped: String| {
        fail(
            "one stacked Q/K/V projection (MatMul [hidden, 3·all heads]) split into Q, K and V in that order",
            stopped,
        )
    };
    let mut source: Option<(String, i64)> = None;
    for (part, path) in paths.iter().enumerate() {
        let Some(at) = path
            .iter()
            .position(|&p| matches!(ix.node(p).op_type(), "Split" | "Slice"))
        else {
            return Err(why(format!(
                "{} is read by Q, K and V without a Split or Slice",
                ix.node_label(lin.node)
            )));
        };
        let s = path[at];
        let n = ix.node(s);
        let input = n.input.first().map(|v| ix.resolve(v).to_string()).unwrap_or_default();
        let (axis, got) = if n.op_type() == "Split" {
            // The output of the Split the path goes on with: what the next node on it reads.
            let next = path.get(at + 1).map(|&n| ix.node(n));
            let out = n
                .output
                .iter()
                .position(|o| next.is_some_and(|n| n.input.iter().any(|i| i == o)));
            let equal = match n.input.get(1).filter(|v| !v.is_empty()) {
                Some(sizes) => ix
                    .const_i64(sizes)
                    .is_some_and(|v| v.len() == 3 && v.iter().all(|&x| x == v[0])),
                None => n.output.len() == 3,
            };
            if !equal {
                return Err(why(format!(
                    "{} does not split into three equal parts",
                    ix.node_label(s)
                )));
            }
            (ix.attr_i(s, "axis").unwrap_or(0), out)
        } else {
            let c = |k: usize| n.input.get(k).and_then(|v| ix.const_i64(v));
            let (Some(st), Some(en), Some(ax)) = (c(1), c(2), c(3)) else {
                return Err(why(format!(
                    "{} has bounds or axes computed at run time",
                    ix.node_label(s)
                )));
            };
            let step_one = n
                .input
                .get(4)
                .is_none_or(|v| v.is_empty() || c(4).as_deref() == Some(&[1]));
            let (third, axis) = match (st.as_slice(), en.as_slice(), ax.as_slice()) {
                // One of the three on the axis of the three, or a third of the last axis.
                ([a], [b], [x]) if step_one && *b == *a + 1 && *x != -1 => (Some(*a as usize), *x),
                ([a], [b], [x]) if step_one && *x == -1 => {
                    let w = (lin.out_features / 3) as i64;
                    let k = a / w.max(1);
                    ((*a == k * w && *b == (k + 1) * w).then_some(k as usize), *x)
                }
                _ => (None, 0),
            };
            (axis, third)
        };
        if *source.get_or_insert((input.clone(), axis)) != (input, axis) {
            return Err(why(format!(
                "Q, K and V are taken from different tensors or axes after {}",
                ix.node_label(lin.node)
            )));
        }
        if got != Some(part) {
            return Err(why(format!(
                "{} gives {} part {:?} of three",
                ix.node_label(s),
                ["Q", "K", "V"][part],
                got
            )));
        }
    }
    let (input, axis) = source.expect("three paths");
    // The three must be the outermost grouping of the projection's columns: a Split of its
    // [batch, sequence, 3·all] output along the last axis, or of a Reshape to
    // [batch, sequence, 3, …] along axis 2 (not, say, [.., heads, 3, size], Q/K/V per head),
    // also after Transposes that move other axes (transformers 4's [batch, heads, 3, …]).
    let (mut input, mut axis) = (input, axis);
    while let Some(t) = ix.producer(&input).filter(|&p| ix.node(p).op_type() == "Transpose") {
        let Some(perm) = ix.attr_ints(t, "perm") else { break };
        let a = if axis < 0 { axis + perm.len() as i64 } else { axis };
        let Some(&from) = usize::try_from(a).ok().and_then(|a| perm.get(a)) else {
            break;
        };
        axis = from;
        input = ix.resolve(&ix.node(t).input[0]).to_string();
    }
    let outermost = match ix.producer(&input).filter(|&p| ix.node(p).op_type() == "Reshape") {
        Some(r) => ix
            .node(r)
            .input
            .get(1)
            .and_then(|shape| shape_elements(ix, shape, r))
            .is_some_and(|(rank, elems)| {
                rank < usize::MAX
                    && (axis == 2 || axis + rank as i64 == 2)
                    && elems.iter().any(|e| e.2 == 2 && e.3 == 3)
            }),
        None => ix.resolve(&lin.output) == input && (axis == -1 || axis == 2),
    };
    if !outermost {
        return Err(why(format!(
            "'{input}' is taken apart along axis {axis}, not the outermost grouping of the projection's columns"
        )));
    }
    Ok(())
}

pub(super) fn unfused_attention(ix: &GraphIndex, sm: usize) -> R<(Attention, String)> {
    let sm_node = ix.node(sm);
    let sm_in = sm_node
        .input
        .first()
        .ok_or_else(|| fail("Softmax input", ix.node_label(sm)))?;
    // ONNX Runtime's session optimizations fold the scale and the keys' transpose into one contrib
    // FusedMatMul (alpha, transB); one that transposes Q or the batch axes is no scores product.
    let fused_scores = |i: usize| {
        ix.node(i).op_type() == "FusedMatMul"
            && ix.node(i).domain() == "com.microsoft"
            && ["transA", "transBatchA", "transBatchB"]
                .iter()
                .all(|a| ix.attr_i(i, a).unwrap_or(0) == 0)
    };
    let is_matmul = |i: usize| (ix.node(i).op_type() == "MatMul" || fused_scores(i)) && ix.dynamic_inputs(i).len() == 2;
    // Through DeBERTa's mask fill (a Where) and its reshape of batch × heads back to heads.
    let through = ["Add", "Mul", "Div", "Cast", "Identity", "Where", "Reshape"];
    let (scores, score_path) = find_back(ix, sm_in, &is_matmul, &through, 6).ok_or_else(|| {
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
    let (q, q_path, q_scale) = projection_behind(ix, &sn.input[0], "query")?;
    let (k, k_path, k_scale) = projection_behind(ix, &sn.input[1], "key")?;
    // The scale on Q·Kᵀ is the product of those found: SDPA's export scales Q and Kᵀ by √s each.
    // FusedMatMul's alpha is a scale on them too.
    let alpha = fused_scores(scores).then(|| ix.attr_f(scores, "alpha").unwrap_or(1.0));
    let scale = [scale, q_scale, k_scale, alpha]
        .into_iter()
        .flatten()
        .reduce(|a, b| a * b);
    let sm_out = sm_node
        .output
        .first()
        .ok_or_else(|| fail("Softmax output", ix.node_label(sm)))?;
    // The context MatMul reads the probabilities directly, through PASS_THROUGH ops, or through
    // the guard torch's exporter writes after SDPA's softmax for fully masked rows.
    let is_ctx = |i: usize| ix.node(i).op_type() == "MatMul";
    let through = |c: usize, v: &str| {
        passes_through(ix, PASS_THROUGH, c, v) || passes_through(ix, &["Reshape"], c, v) || nan_guard(ix, c, v)
    };
    let (ctx, _) = find_forward_via(ix, sm_out, &is_ctx, &through, 4).ok_or_else(|| {
        fail(
            "the context MatMul(probabilities, V) after the Softmax (through Identity, Cast, Dropout \
             or a NaN guard Where(IsNaN(p), 0, p))",
            format!("after {}", ix.node_label(sm)),
        )
    })?;
    let cn = ix.node(ctx);
    let v_in = cn.input.get(1).ok_or_else(|| fail("V input", ix.node_label(ctx)))?;
    let (v, v_path, _) = projection_behind(ix, v_in, "value")?;
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
    let stacked = q.node == k.node && q.node == v.node;
    if stacked {
        stacked_parts(ix, &q, [&q_path, &k_path, &v_path])?;
    }
    for (lin, name) in [(&k, "key"), (&v, "value")] {
        let other = ix.resolve(&ix.node(lin.node).input[0]);
        if other != input {
            return Err(fail(
                "query, key and value projections reading the same input".to_string(),
                format!("query reads '{input}', {name} reads '{other}'"),
            ));
        }
    }
    let all_heads = if stacked { q.out_features / 3 } else { q.out_features };
    if stacked && output.in_features != all_heads {
        return Err(fail(
            "a stacked Q/K/V projection three times as wide as the output projection's input",
            format!(
                "{} is {}×{}, the output projection {}×{}",
                ix.node_label(q.node),
                q.in_features,
                q.out_features,
                output.in_features,
                output.out_features
            ),
        ));
    }
    if !stacked && (k.out_features != all_heads || v.out_features != all_heads || output.in_features != all_heads) {
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
    let mut split: Vec<usize> = Vec::new();
    for &p in q_path.iter().chain(&k_path).chain(&v_path) {
        if ix.node(p).op_type() == "Reshape" && !split.contains(&p) {
            split.push(p);
        }
    }
    let merge: Vec<usize> = merge_path
        .iter()
        .copied()
        .filter(|&p| ix.node(p).op_type() == "Reshape")
        .collect();
    check_head_axes(ix, [&q_path, &k_path, &v_path], &merge_path)?;
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
    // No shape constant gives the head count or size (an all-heads width only bounds them):
    // the scale alone did (1/√d), which a scaling folded into the weights or a custom one would
    // misread. Mapped, not pruned on.
    let scale_only = (!shape_consts
        .iter()
        .any(|c| matches!(c.role, ShapeRole::Heads | ShapeRole::HeadSize)))
    .then(|| {
        format!(
            "no shape constant of its head split or merge gives its head count or size, only the attention scale {} (read as heads of {head_size}), which this tool does not prune heads on",
            scale.unwrap_or(f32::NAN)
        )
    });
    let mut shape_consts = shape_consts;
    let own: Vec<usize> = split.iter().chain(&merge).copied().collect();
    share_readers(ix, &mut shape_consts, &own);
    shape_consts.extend(mask_expansions(ix, &score_path, &input, num_heads));
    let adds = score_adds(ix, scores, &score_path);
    let head_biases = head_biases(ix, &adds, num_heads);
    let stop: Vec<usize> = [&q, &k, &v]
        .iter()
        .flat_map(|l| [Some(l.node), l.bias_node])
        .flatten()
        .collect();
    let cones = term_cones(ix, &adds, &head_biases, &stop);
    let score_terms = score_terms(ix, &cones);
    let (mut shape_consts, score_projections, heads_fixed, heads_alike) = if score_terms.is_empty() {
        (shape_consts, vec![], None, None)
    } else {
        let (projections, found, fixed, alike) =
            disentangled_heads(ix, &cones, [&q, &k, &v], &output, num_heads, head_size);
        let mut all = shape_consts;
        for c in found {
            match all
                .iter_mut()
                .find(|a| a.constant == c.constant && a.element == c.element && a.used_by_node == c.used_by_node)
            {
                // Found by the head split already: it is read by other layers too.
                Some(a) => a.readers = c.readers,
                None => all.push(c),
            }
        }
        let fixed = fixed.map(|why| {
            format!(
                "its attention scores add terms computed per head (DeBERTa's disentangled relative attention) whose head count this tool does not rewrite: {why}"
            )
        });
        (all, projections, fixed, alike)
    };
    let heads_fixed = heads_fixed.or(scale_only);
    shape_consts.sort_by_key(|c| c.used_by_node);
    let tables = score_tables(ix, &cones, num_heads, head_size);
    Ok((
        Attention {
            qkv: if stacked {
                Qkv::Stacked { qkv: q }
            } else {
                Qkv::Separate { q, k, v }
            },
            output,
            num_heads,
            head_size,
            fused: false,
            softmax: Some(sm),
            scale,
            shape_consts,
            inferred_reshapes: inferred,
            head_biases,
            score_terms,
            score_span: score_span(ix, &score_projections, &tables),
            score_tables: tables,
            score_projections,
            heads_fixed,
            heads_alike,
        },
        input,
    ))
}

/// What pruning the heads of an attention with disentangled score terms needs (DeBERTa): the
/// projections inside those terms with one column per head and size (the relative position
/// embeddings projected by the query and key weights, or by weights of their own), and every
/// integer constant of the attention that holds the head count — the head split of those
/// projections ([1, span, heads, −1]), the views of the scores and contexts with heads merged
/// into the batch axis ([−1, heads, …]) and batch × heads computed from, or divided back by,
/// heads. The attention is the nodes its output projection's input depends on that the layer's
/// input does not. A constant holding the head count anywhere else there makes the heads fixed
/// (the third value says where); one whose result reaches other layers (computed once for all)
/// makes every layer keep as many heads (the fourth), unless it is a shape `Concat`, which is
/// copied per layer (its `readers`).
fn disentangled_heads(
    ix: &GraphIndex,
    cones: &[Vec<usize>],
    qkv: [&Linear; 3],
    output: &Linear,
    heads: usize,
    size: usize,
) -> (Vec<Linear>, Vec<ShapeConst>, Option<String>, Option<String>) {
    let all = heads * size;
    // The per-head projections in the terms' cones.
    let mut projections: Vec<Linear> = Vec::new();
    for &q in cones.iter().flatten() {
        if let Some(l) = linear_at(ix, q).filter(|l| l.out_features == all && l.factor.is_none()) {
            if !projections.iter().any(|x| x.node == l.node) {
                projections.push(l);
            }
        }
    }
    // The attention's nodes: those its output projection's input depends on that the layer's
    // input does not (sizes computed from the model's inputs for this attention included).
    let ancestors = |from: &str| -> HashSet<usize> {
        let mut set = HashSet::new();
        let mut todo: Vec<usize> = ix.producer(from).into_iter().collect();
        while let Some(n) = todo.pop() {
            if set.insert(n) {
                todo.extend(ix.node(n).input.iter().filter_map(|i| ix.producer(i)));
            }
        }
        set
    };
    let before = ancestors(&ix.node(qkv[0].node).input[0]);
    let region: HashSet<usize> = ancestors(&ix.node(output.node).input[0])
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    let mut nodes: Vec<usize> = region.iter().copied().collect();
    nodes.sort_unstable();
    let mut found = Vec::new();
    let mut fixed = None;
    let h = heads as i64;
    let at = |n: usize| ix.node_label(n);
    for &n in &nodes {
        let node = ix.node(n);
        for (slot, input) in node.input.iter().enumerate() {
            let Some(values) = ix.const_i64(input).filter(|v| v.contains(&h)) else {
                continue;
            };
            let Some(name) = ix.constant_name(input) else { continue };
            let op = node.op_type();
            // Indices, axes and bounds: positions, not sizes.
            let index_like = matches!(
                (op, slot),
                (
                    "Gather" | "GatherElements" | "Unsqueeze" | "Squeeze" | "ReduceSum" | "ReduceMean",
                    1
                ) | ("Slice", 1..=4)
                    | ("Range" | "Clip", _)
            );
            let classified = match (op, slot) {
                _ if index_like => true,
                // Read where the Reshape reads the shape built (below).
                ("Concat", _) => node
                    .output
                    .first()
                    .is_some_and(|o| ix.consumers(o).iter().all(|&c| ix.node(c).op_type() == "Reshape")),
                ("Reshape", 1) => true,
                // batch × heads from the batch, or back: the head count as a factor of a size.
                ("Div" | "Mul", 1) | ("Mul", 0) if values.len() == 1 && ix.dynamic_inputs(n).len() == 1 => {
                    found.push(ShapeConst::found(ix, name.clone(), (0, h), ShapeRole::Heads, n));
                    true
                }
                _ => false,
            };
            if !classified {
                fixed.get_or_insert(format!("the head count {h} read by {} (input {slot})", at(n)));
            }
        }
        if node.op_type() == "Reshape" {
            let Some((rank, elems)) = node.input.get(1).and_then(|s| shape_elements(ix, s, n)) else {
                continue;
            };
            let lead = elems.iter().find(|e| e.2 == 0).map(|e| e.3);
            for (name, element, pos, value, user) in elems {
                // [−1, heads, …]: batch × heads split again; [b, s, heads, −1]: a head split.
                let heads_here = (rank == 4 && pos == 1 && lead == Some(-1)) || (rank == 4 && pos == 2);
                if value == h && heads_here {
                    found.push(ShapeConst::found(ix, name, (element, value), ShapeRole::Heads, user));
                } else if value == h && !(rank == 3 && pos == 2 && value == size as i64) {
                    fixed.get_or_insert(format!(
                        "the head count {h} in the shape of {} (position {pos} of {rank})",
                        at(n)
                    ));
                }
            }
        }
    }
    // A rewritten node whose result reaches other layers would change theirs: a shape Concat
    // read by Reshapes only is copied for this attention's Reshapes (when their results stay
    // in it); anything else holds the head count for every layer alike.
    let leaks = |from: &[usize]| {
        let mut seen: HashSet<usize> = HashSet::new();
        let mut todo: Vec<usize> = from.to_vec();
        while let Some(n) = todo.pop() {
            for o in &ix.node(n).output {
                for &c in ix.consumers(o) {
                    if c == output.node || !seen.insert(c) {
                        continue;
                    }
                    if !region.contains(&c) {
                        return true;
                    }
                    todo.push(c);
                }
            }
        }
        false
    };
    let mut alike = None;
    for c in &mut found {
        let n = c.used_by_node;
        if !leaks(&[n]) {
            continue;
        }
        let node = ix.node(n);
        let readers: Vec<usize> = node.output.iter().flat_map(|o| ix.consumers(o)).copied().collect();
        let reshapes_only = node.op_type() == "Concat"
            && node.output.len() == 1
            && readers
                .iter()
                .all(|&r| ix.node(r).op_type() == "Reshape" && ix.node(r).input.get(1) == node.output.first());
        let mine: Vec<usize> = readers.into_iter().filter(|r| region.contains(r)).collect();
        if reshapes_only && !leaks(&mine) {
            c.readers = mine;
        } else {
            alike.get_or_insert(format!("the head count at {} reaches other layers", at(n)));
        }
    }
    (projections, found, fixed, alike)
}

/// The `Add`s on the way from the scores MatMul to the Softmax (`path`, in that order), each
/// with the slot of its operand that is not the scores' chain.
fn score_adds(ix: &GraphIndex, scores: usize, path: &[usize]) -> Vec<(usize, usize)> {
    let mut chain = ix.node(scores).output.first().cloned().unwrap_or_default();
    let mut adds = Vec::new();
    for &p in path {
        let n = ix.node(p);
        if n.op_type() == "Add" && n.input.len() == 2 {
            adds.push((p, usize::from(ix.resolve(&n.input[0]) == ix.resolve(&chain))));
        }
        chain = n.output.first().cloned().unwrap_or_default();
    }
    adds
}

/// The per-head biases among `adds` ([`score_adds`]): an operand computed from a
/// [buckets, `heads`] table.
fn head_biases(ix: &GraphIndex, adds: &[(usize, usize)], heads: usize) -> Vec<HeadBias> {
    adds.iter()
        .filter_map(|&(add_node, slot)| {
            let table = head_table(ix, &ix.node(add_node).input[slot], Some(heads), 10)?;
            Some(HeadBias { add_node, slot, table })
        })
        .collect()
}

/// The nodes each of the other terms among `adds` ([`score_adds`]) is computed by: walking back
/// from the operand no further than the Q/K/V projections (`stop`), not into sizes, 24 nodes
/// deep at most. One list per term.
fn term_cones(ix: &GraphIndex, adds: &[(usize, usize)], biases: &[HeadBias], stop: &[usize]) -> Vec<Vec<usize>> {
    let mut cones = Vec::new();
    for &(p, slot) in adds.iter().filter(|(p, _)| !biases.iter().any(|b| b.add_node == *p)) {
        let mut cone = Vec::new();
        let mut seen = HashSet::new();
        let mut todo = vec![(ix.node(p).input[slot].clone(), 0usize)];
        while let Some((v, depth)) = todo.pop() {
            let Some(q) = ix.producer(&v) else { continue };
            if depth > 24 || stop.contains(&q) || !seen.insert(q) {
                continue;
            }
            let qn = ix.node(q);
            if matches!(qn.op_type(), "Shape" | "Size") {
                continue; // sizes, not values
            }
            cone.push(q);
            todo.extend(
                qn.input
                    .iter()
                    .filter(|i| ix.constant(i).is_none())
                    .map(|i| (i.clone(), depth + 1)),
            );
        }
        cones.push(cone);
    }
    cones
}

/// The weights of the terms whose cones ([`term_cones`]) hold matrix products of their own:
/// every float constant of more than one value read there.
fn score_terms(ix: &GraphIndex, cones: &[Vec<usize>]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for cone in cones.iter().filter(|c| {
        c.iter()
            .any(|&q| matches!(ix.node(q).op_type(), "MatMul" | "FusedMatMul"))
    }) {
        for &q in cone {
            for i in &ix.node(q).input {
                if let Some(c) = ix.constant(i) {
                    let t = c.tensor();
                    if t.data_type() == 1 && t.dims.iter().product::<i64>() > 1 {
                        found.extend(ix.constant_name(i));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The float constants read in the score terms' cones shaped [`heads`, span, `size`] and read
/// nowhere else: per-head tables of this attention alone (projected relative positions folded by
/// ONNX Runtime's optimizer), which pruning replaces by their kept heads.
fn score_tables(ix: &GraphIndex, cones: &[Vec<usize>], heads: usize, size: usize) -> Vec<String> {
    let in_cones = |n: &usize| cones.iter().flatten().any(|q| q == n);
    let mut found: Vec<String> = Vec::new();
    for &q in cones.iter().flatten() {
        for i in &ix.node(q).input {
            let Some(c) = ix.constant(i) else { continue };
            let t = c.tensor();
            if t.data_type() == 1 && t.dims.len() == 3 && t.dims[0] == heads as i64 && t.dims[2] == size as i64 {
                found.extend(
                    ix.constant_name(i)
                        .filter(|n| !found.contains(n) && ix.consumers(n).iter().all(in_cones)),
                );
            }
        }
    }
    found
}

/// The relative positions the score terms read: the span of a folded table ([heads, span,
/// size]), else the rows of the [rows, hidden] embeddings a projection reads (through a
/// normalization, reshapes and a `Slice` of rows from 0, which bounds them).
fn score_span(ix: &GraphIndex, projections: &[Linear], tables: &[String]) -> Option<usize> {
    if let Some(t) = tables.first().and_then(|t| ix.constant(t)) {
        return usize::try_from(*t.tensor().dims.get(1)?).ok();
    }
    let p = projections.first()?;
    let mut value = ix.node(p.node).input.first()?.as_str();
    let mut limit = usize::MAX;
    for _ in 0..8 {
        let n = ix.producer(value)?;
        let node = ix.node(n);
        if let Some(rows) = node
            .input
            .iter()
            .filter_map(|i| ix.weight_2d(i))
            .find(|&(_, _, cols)| cols == p.in_features)
            .map(|(_, rows, _)| rows)
        {
            return Some(rows.min(limit));
        }
        if node.op_type() == "Slice" {
            // Rows [0, end) on the first axis (axes absent or [0]).
            let get = |k: usize| node.input.get(k).and_then(|v| ix.const_i64(v));
            match (get(1).as_deref(), get(2).as_deref(), get(3).as_deref()) {
                (Some([0]), Some(&[end]), None | Some([0])) if end > 0 => {
                    limit = limit.min(usize::try_from(end).unwrap_or(usize::MAX));
                }
                _ => return None,
            }
        }
        value = *ix.dynamic_inputs(n).first()?;
    }
    None
}

/// The [rows, `width`] table `value` is computed from by a `Gather` of rows (its columns the
/// heads), walking back through at most `depth` producers. A `Gather` of constant indices along
/// the way (what pruning inserts: the kept heads) sets `width` to its index count and frees the
/// table's own width.
fn head_table(ix: &GraphIndex, value: &str, width: Option<usize>, depth: usize) -> Option<String> {
    let p = ix.producer(value)?;
    let n = ix.node(p);
    if n.op_type() == "Gather" && n.input.len() == 2 {
        if let Some((_, _, cols)) = ix.weight_2d(&n.input[0]) {
            return (ix.constant(&n.input[1]).is_none() && width.is_none_or(|w| w == cols))
                .then(|| ix.constant_name(&n.input[0]))
                .flatten();
        }
        if let Some(idx) = ix.constant(&n.input[1]) {
            let t = idx.tensor();
            if t.dims.len() == 1 && width == Some(t.dims[0] as usize) && depth > 0 {
                return head_table(ix, &n.input[0], None, depth - 1);
            }
            return None;
        }
    }
    if depth == 0 {
        return None;
    }
    ix.dynamic_inputs(p)
        .into_iter()
        .find_map(|v| head_table(ix, v, width, depth - 1))
}

/// Whether node `i` is `Where(IsNaN(value), c, value)` or `Where(Not(IsNaN(value)), value, c)`
/// with `c` a one-element constant.
fn nan_guard(ix: &GraphIndex, i: usize, value: &str) -> bool {
    let n = ix.node(i);
    if n.op_type() != "Where" || n.input.len() != 3 {
        return false;
    }
    let is_op_of = |v: &str, op: &str| {
        ix.producer(v)
            .map(|p| ix.node(p))
            .filter(|p| p.op_type() == op)
            .and_then(|p| p.input.first())
            .map(|s| ix.resolve(s).to_string())
    };
    let value = ix.resolve(value);
    let cond = n.input[0].as_str();
    let nan_of_value = |v: &str| is_op_of(v, "IsNaN").as_deref() == Some(value);
    let (kept, other) = if nan_of_value(cond) {
        (&n.input[2], &n.input[1])
    } else if is_op_of(cond, "Not").is_some_and(|x| nan_of_value(&x)) {
        (&n.input[1], &n.input[2])
    } else {
        return false;
    };
    ix.resolve(kept) == value
        && ix
            .constant(other)
            .is_some_and(|c| c.tensor().dims.iter().product::<i64>() == 1)
}

pub(super) fn fused_attention(ix: &GraphIndex, node: usize) -> R<(Attention, String)> {
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
    // Q, K and V of different widths (qkv_hidden_sizes) are not a layout this tool maps.
    if let Some(sizes) = ix.attr_ints(node, "qkv_hidden_sizes") {
        if sizes.iter().any(|&s| s != all as i64) || sizes.len() != 3 {
            return Err(fail(
                "a fused Attention with Q, K and V of one width",
                format!("{label}: qkv_hidden_sizes {sizes:?}"),
            ));
        }
    }
    // Inputs past the mask (past state, an additive attention bias per head) are not mapped.
    if n.input.iter().skip(4).any(|v| !v.is_empty()) {
        return Err(fail(
            "a fused Attention reading input, weights, bias and mask only",
            format!("{label}: {} inputs (past state or attention bias)", n.input.len()),
        ));
    }
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
            head_biases: vec![],
            score_terms: vec![],
            score_projections: vec![],
            score_tables: vec![],
            score_span: None,
            heads_fixed: None,
            heads_alike: None,
        },
        input,
    ))
}
