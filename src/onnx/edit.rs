//! Small graph helpers under the [`Patch`](super::patch::Patch): value names, fresh names, use
//! counts, replacing one initializer, and removing what nothing uses any more. Passes edit graphs
//! through a patch; these serve it and the tests.

use std::collections::HashSet;

use super::proto::{GraphProto, TensorProto};

/// Every value name in the graph (initializers, node outputs, graph inputs).
pub fn names(g: &GraphProto) -> HashSet<String> {
    let mut s: HashSet<String> = g.initializer.iter().map(|t| t.name().to_string()).collect();
    s.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    s.extend(g.input.iter().map(|v| v.name().to_string()));
    s
}

/// A name not yet used in `taken`, based on `base`; records it as taken.
pub fn fresh_name(taken: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut i = 1;
    while taken.contains(&name) {
        name = format!("{base}_{i}");
        i += 1;
    }
    taken.insert(name.clone());
    name
}

/// Number of node inputs (anywhere in the graph) that read `name` directly.
pub fn use_count(g: &GraphProto, name: &str) -> usize {
    g.node
        .iter()
        .flat_map(|n| n.input.iter())
        .filter(|i| *i == name)
        .count()
        + g.output.iter().filter(|o| o.name() == name).count()
}

/// Replaces the initializer `name` in place (same name, new dims and data).
pub fn replace_initializer(g: &mut GraphProto, name: &str, mut t: TensorProto) -> bool {
    match g.initializer.iter_mut().find(|i| i.name() == name) {
        Some(slot) => {
            t.name = Some(name.to_string());
            *slot = t;
            true
        }
        None => false,
    }
}

/// Removes nodes whose outputs nobody reads, then initializers nobody reads, to a fixed point.
/// Graph outputs and the inputs of subgraphs are kept. Returns (nodes, initializers) removed.
pub fn remove_unused(g: &mut GraphProto) -> (usize, usize) {
    let (mut nodes_removed, mut inits_removed) = (0, 0);
    loop {
        let mut used: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
        for n in &g.node {
            used.extend(n.input.iter().cloned());
            // Subgraphs may read outer values by name.
            for a in &n.attribute {
                for sg in a.g.iter().chain(a.graphs.iter()) {
                    collect_reads(sg, &mut used);
                }
            }
        }
        let before = g.node.len();
        g.node
            .retain(|n| n.output.iter().any(|o| !o.is_empty() && used.contains(o)));
        nodes_removed += before - g.node.len();
        if g.node.len() == before {
            let removed: HashSet<String> = g
                .initializer
                .iter()
                .filter(|t| !used.contains(t.name()))
                .map(|t| t.name().to_string())
                .collect();
            g.initializer.retain(|t| used.contains(t.name()));
            inits_removed += removed.len();
            // Old IRs also list initializers among the graph inputs: drop those that are gone.
            g.input.retain(|v| !removed.contains(v.name()));
            return (nodes_removed, inits_removed);
        }
    }
}

fn collect_reads(g: &GraphProto, used: &mut HashSet<String>) {
    for n in &g.node {
        used.extend(n.input.iter().cloned());
        for a in &n.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                collect_reads(sg, used);
            }
        }
    }
}
