//! The shape constants that carry the head count and size: the target shapes of the head-split
//! and head-merge Reshapes.

use super::*;

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
                        out.push(ShapeConst {
                            readers: vec![],
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
pub(super) type ShapeElem = (String, usize, usize, i64, usize);

pub(super) fn shape_elements(ix: &GraphIndex, shape: &str, reshape: usize) -> Option<(usize, Vec<ShapeElem>)> {
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
