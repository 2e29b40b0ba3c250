//! The shape constants that carry the head count and size: the target shapes of the head-split
//! and head-merge Reshapes.

use super::*;

impl ShapeConst {
    /// Element `element` (= `value`) of constant `constant`, read by node `used_by_node` in the
    /// role `role`.
    pub(super) fn found(
        ix: &GraphIndex,
        constant: String,
        (element, value): (usize, i64),
        role: ShapeRole,
        used_by_node: usize,
    ) -> ShapeConst {
        ShapeConst {
            readers: vec![],
            shared_by: ix.consumers(&constant).len(),
            constant,
            element,
            value,
            role,
            used_by: ix.node(used_by_node).name().to_string(),
            used_by_node,
        }
    }
}

/// Constant elements of the target shapes of the head-split (rank 4: [B, S, heads, size]) and
/// head-merge (rank 3: [B, S, all]; rank 2: [B·S, all]) Reshapes.
pub(super) fn shape_constants(ix: &GraphIndex, split: &[usize], merge: &[usize]) -> (Vec<ShapeConst>, usize) {
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
            // A stacked Q/K/V projection's output: [B, S, 3, heads, size].
            (true, 5) => &[(3, ShapeRole::Heads), (4, ShapeRole::HeadSize)],
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
                        out.push(ShapeConst::found(ix, name.clone(), (*element, *value), role, *used_by));
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
pub(super) type ShapeElem = (String, usize, usize, i64, usize);

pub(super) fn shape_elements(ix: &GraphIndex, shape: &str, reshape: usize) -> Option<(usize, Vec<ShapeElem>)> {
    if let Some((vals, name)) = shape_piece(ix, shape) {
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
        if let Some((vals, name)) = shape_piece(ix, piece) {
            for (j, &v) in vals.iter().enumerate() {
                elems.push((name.clone(), j, pos + j, v, p));
            }
            pos += vals.len();
        } else {
            // A dynamic piece: an Unsqueeze of a scalar (one element) is the usual form; torch's
            // dynamo exporter reads dimensions as `Shape(x, start, end)` slices.
            let len = match ix.producer(piece) {
                Some(q) if matches!(ix.node(q).op_type(), "Unsqueeze" | "Gather") => 1,
                Some(q) => match shape_slice_len(ix, q) {
                    Some(len) => len,
                    None => return Some((usize::MAX, elems)),
                },
                None => return Some((usize::MAX, elems)),
            };
            pos += len;
        }
    }
    Some((pos, elems))
}

/// The values of a shape (or a piece of one) that constants give, and the name they are
/// rewritten under: a constant (read as it is), or a value computed from constants alone
/// (`Unsqueeze` of a scalar, `Cast` to int64, ...), which pruning replaces by a constant.
fn shape_piece(ix: &GraphIndex, value: &str) -> Option<(Vec<i64>, String)> {
    match (ix.const_i64(value), ix.constant_name(value)) {
        (Some(vals), Some(name)) => Some((vals, name)),
        _ => Some((ix.fold_i64(value)?.0, ix.folded_name(value)?)),
    }
}

/// The length of `Shape(x, start, end)` at node `q` when it does not depend on x's rank: both
/// bounds given and of the same sign.
fn shape_slice_len(ix: &GraphIndex, q: usize) -> Option<usize> {
    if ix.node(q).op_type() != "Shape" {
        return None;
    }
    let (start, end) = (ix.attr_i(q, "start")?, ix.attr_i(q, "end")?);
    ((start >= 0) == (end >= 0) && end > start).then(|| (end - start) as usize)
}

pub(super) fn heads_from(consts: &[ShapeConst], scale: Option<f32>, all_heads: usize) -> Option<(usize, usize)> {
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

pub(super) fn check_consts(consts: &[ShapeConst], heads: usize, size: usize) -> R<()> {
    for c in consts {
        let expected = match c.role {
            ShapeRole::Heads | ShapeRole::MaskHeads => heads,
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

/// Marks the shape constants read through a `Concat` whose shape other layers' Reshapes read
/// too (torch's dynamo exporter under transformers 4 builds one head-split shape for every
/// layer): their `readers` are this attention's Reshapes (`own`), so pruning gives this layer a
/// copy of the `Concat` with its own head count instead of changing every layer's.
pub(super) fn share_readers(ix: &GraphIndex, consts: &mut [ShapeConst], own: &[usize]) {
    for c in consts.iter_mut().filter(|c| c.readers.is_empty()) {
        let node = ix.node(c.used_by_node);
        if node.op_type() != "Concat" || node.output.len() != 1 {
            continue;
        }
        let readers = ix.consumers(&node.output[0]);
        let reshapes_only = readers
            .iter()
            .all(|&r| ix.node(r).op_type() == "Reshape" && ix.node(r).input.get(1) == node.output.first());
        let mine: Vec<usize> = readers.iter().copied().filter(|r| own.contains(r)).collect();
        if reshapes_only && mine.len() < readers.len() {
            c.readers = mine;
        }
    }
}

/// The head count in the shapes that masks filling the scores are expanded to: for each `Where`
/// on the way from the scores MatMul to the Softmax (`path`), an operand that is an `Expand` of
/// a value computed without the layer's input (`layer_input`: a mask, the same for every head)
/// to a rank-4 shape holding `heads` at position 1.
pub(super) fn mask_expansions(ix: &GraphIndex, path: &[usize], layer_input: &str, heads: usize) -> Vec<ShapeConst> {
    let mut out = Vec::new();
    for &w in path.iter().filter(|&&w| ix.node(w).op_type() == "Where") {
        for operand in &ix.node(w).input {
            let Some(e) = ix.producer(operand).filter(|&e| ix.node(e).op_type() == "Expand") else {
                continue;
            };
            let en = ix.node(e);
            if en.input.len() != 2 || depends_on(ix, &en.input[0], layer_input) {
                continue;
            }
            let Some((4, elems)) = shape_elements(ix, &en.input[1], e) else {
                continue;
            };
            for (name, element, pos, value, used_by) in elems {
                if pos == 1 && value == heads as i64 && !out.iter().any(|c: &ShapeConst| c.used_by_node == used_by) {
                    out.push(ShapeConst::found(
                        ix,
                        name,
                        (element, value),
                        ShapeRole::MaskHeads,
                        used_by,
                    ));
                }
            }
        }
    }
    out
}

/// Whether `value` is computed from `from` (64 nodes back at most: past that, assumed so).
fn depends_on(ix: &GraphIndex, value: &str, from: &str) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![value.to_string()];
    while let Some(v) = todo.pop() {
        if ix.resolve(&v) == ix.resolve(from) {
            return true;
        }
        let Some(n) = ix.producer(&v) else { continue };
        if !seen.insert(n) {
            continue;
        }
        if seen.len() > 64 {
            return true;
        }
        todo.extend(ix.node(n).input.iter().cloned());
    }
    false
}
