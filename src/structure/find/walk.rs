//! Walking the graph back and forth through pass-through ops to the node a pattern needs.

use super::*;

/// Walks back from `value` through the ops in `through` until a node satisfying `pred`.
/// Returns the node and the nodes passed on the way.
pub(super) fn find_back(
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
pub(super) fn find_forward(
    ix: &GraphIndex,
    value: &str,
    pred: &dyn Fn(usize) -> bool,
    through: &[&str],
    depth: usize,
) -> Option<(usize, Vec<usize>)> {
    find_forward_via(ix, value, pred, &|c, v| passes_through(ix, through, c, v), depth)
}

/// Whether node `c` is one of the ops in `through` and passes on `value`, its first input.
pub(super) fn passes_through(ix: &GraphIndex, through: &[&str], c: usize, value: &str) -> bool {
    let n = ix.node(c);
    through.contains(&n.op_type()) && n.input.first().map(|s| s.as_str()) == Some(value)
}

/// [`find_forward`], going on through a node `c` reading `value` where `passes(c, value)`.
pub(super) fn find_forward_via(
    ix: &GraphIndex,
    value: &str,
    pred: &dyn Fn(usize) -> bool,
    passes: &dyn Fn(usize, &str) -> bool,
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
        if !passes(c, value) {
            continue;
        }
        if let Some(out) = ix.node(c).output.first() {
            if let Some((found, mut path)) = find_forward_via(ix, out, pred, passes, depth - 1) {
                path.insert(0, c);
                return Some((found, path));
            }
        }
    }
    None
}
