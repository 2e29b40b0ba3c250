//! One graph patch: a pass records every change it makes to a graph (new initializers and nodes,
//! replaced initializers and nodes, rewired inputs, renamed values, fresh names), then applies
//! them in one step. The patch is checked before the graph is touched, so a failed patch leaves
//! the graph as it was and a half-applied rewrite can never be observed.
//!
//! Nodes are addressed by their index in the graph the patch was made for. Edits of values
//! (`rewire`, `replace_uses`, `rename`) take effect on the nodes that exist when they are
//! recorded (the graph's and the patch's), as if the graph were edited in place, step by step.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::edit;
use super::proto::{GraphProto, NodeProto, TensorProto};
use super::OnnxError;

/// Why a patch could not be applied. Each names the node or value it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch was made for a graph of {expected} nodes, this one has {found}")]
    WrongGraph { expected: usize, found: usize },
    #[error("{what}: node #{node} does not exist (the graph has {nodes} nodes)")]
    NoSuchNode { what: String, node: usize, nodes: usize },
    #[error("{what}: node #{node} has no {slot}")]
    NoSuchSlot { what: String, node: usize, slot: String },
    #[error("{what}: node #{node} is replaced by the same patch")]
    NodeReplaced { what: String, node: usize },
    #[error("{what}: no value '{value}' in the graph or the patch")]
    MissingValue { what: String, value: String },
    #[error("no initializer '{0}' to replace")]
    NoSuchInitializer(String),
}

/// A value name that must exist when the patch is applied, and the edit that reads it.
#[derive(Debug, Clone)]
struct Check {
    what: String,
    value: String,
}

/// Changes to one graph, collected first and applied together by [`Patch::apply`].
#[derive(Debug, Clone)]
pub struct Patch {
    /// Node count of the graph the patch was made for (nodes are addressed by index).
    nodes: usize,
    /// Every name in use (the graph's values, and what the patch adds): fresh names avoid them.
    taken: HashSet<String>,
    /// New nodes placed before an original node, in the order they were added.
    before: BTreeMap<usize, Vec<NodeProto>>,
    /// Original nodes replaced by these (none: removed).
    replaced: BTreeMap<usize, Vec<NodeProto>>,
    /// New nodes after every other.
    appended: Vec<NodeProto>,
    /// New inputs and outputs of original nodes: (node, slot) → value.
    inputs: HashMap<(usize, usize), String>,
    outputs: HashMap<(usize, usize), String>,
    /// Nodes whose inputs or outputs the patch edits, and how (for the checks).
    edited: Vec<(usize, Slot, String)>,
    initializers: Vec<TensorProto>,
    replaced_initializers: Vec<(String, TensorProto)>,
    checks: Vec<Check>,
    remove_unused: bool,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Input(usize),
    Output(usize),
}

impl Patch {
    /// An empty patch for `g`; fresh names avoid every value name of `g` (initializers, node
    /// outputs, graph inputs).
    pub fn new(g: &GraphProto) -> Self {
        Patch {
            nodes: g.node.len(),
            taken: edit::names(g),
            before: BTreeMap::new(),
            replaced: BTreeMap::new(),
            appended: vec![],
            inputs: HashMap::new(),
            outputs: HashMap::new(),
            edited: vec![],
            initializers: vec![],
            replaced_initializers: vec![],
            checks: vec![],
            remove_unused: false,
        }
    }

    /// Makes fresh names avoid the node names of `g` too (values and nodes then share one pool).
    pub fn reserve_node_names(&mut self, g: &GraphProto) {
        self.taken.extend(g.node.iter().map(|n| n.name().to_string()));
    }

    /// A name used neither by the graph nor by the patch, based on `base` (`base`, `base_1`, …);
    /// it is taken from then on.
    pub fn fresh_name(&mut self, base: &str) -> String {
        edit::fresh_name(&mut self.taken, base)
    }

    /// Adds an initializer (after the graph's, in the order added).
    pub fn add_initializer(&mut self, t: TensorProto) {
        self.taken.insert(t.name().to_string());
        self.initializers.push(t);
    }

    /// Replaces the graph's initializer `name` in place (same name and position, new contents).
    pub fn replace_initializer(&mut self, name: &str, mut t: TensorProto) {
        t.name = Some(name.to_string());
        self.replaced_initializers.push((name.to_string(), t));
    }

    /// Whether `name` is an initializer of `g` or one the patch adds.
    pub fn has_initializer(&self, g: &GraphProto, name: &str) -> bool {
        self.initializers.iter().any(|t| t.name() == name) || g.initializer.iter().any(|t| t.name() == name)
    }

    /// Places `n` before the graph's node `node` (after nodes placed there earlier).
    pub fn insert_before(&mut self, node: usize, n: NodeProto) {
        self.take_outputs(&n);
        self.before.entry(node).or_default().push(n);
    }

    /// Replaces the graph's node `node` by `with` (in that order; none removes it).
    pub fn replace_node(&mut self, node: usize, with: Vec<NodeProto>) {
        with.iter().for_each(|n| self.take_outputs(n));
        self.replaced.insert(node, with);
    }

    /// Removes the graph's node `node`.
    pub fn remove_node(&mut self, node: usize) {
        self.replace_node(node, vec![]);
    }

    /// Adds `n` after every other node.
    pub fn push_node(&mut self, n: NodeProto) {
        self.take_outputs(&n);
        self.appended.push(n);
    }

    fn take_outputs(&mut self, n: &NodeProto) {
        self.taken.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }

    /// Points input `slot` of the graph's node `node` at `value`. Applying fails when the node,
    /// the slot or the value does not exist (in the graph or the patch).
    pub fn rewire(&mut self, node: usize, slot: usize, value: &str) {
        self.inputs.insert((node, slot), value.to_string());
        self.edited.push((node, Slot::Input(slot), value.to_string()));
        self.checks.push(Check {
            what: format!("rewiring input {slot} of node #{node}"),
            value: value.to_string(),
        });
    }

    /// The value input `slot` of the graph's node `node` reads, with the patch's edits so far.
    pub fn input<'a>(&'a self, g: &'a GraphProto, node: usize, slot: usize) -> Option<&'a str> {
        match self.inputs.get(&(node, slot)) {
            Some(v) => Some(v),
            None => g.node.get(node)?.input.get(slot).map(|s| s.as_str()),
        }
    }

    /// Points every node input that reads `from` at `to`, in the graph's nodes and those the
    /// patch added so far (graph outputs are left alone). Applying fails when either value does
    /// not exist.
    pub fn replace_uses(&mut self, g: &GraphProto, from: &str, to: &str) {
        self.edit_values(g, from, to, false);
        for (what, value) in [("replacing uses of", from), ("replacing uses by", to)] {
            self.checks.push(Check {
                what: format!("{what} '{value}'"),
                value: value.to_string(),
            });
        }
    }

    /// Renames the value `from` to `to` wherever a node reads or writes it, in the graph's nodes
    /// and those the patch added so far (graph outputs keep their names: add the node that
    /// writes them under their name). Applying fails when `from` does not exist.
    pub fn rename(&mut self, g: &GraphProto, from: &str, to: &str) {
        self.edit_values(g, from, to, true);
        self.taken.insert(to.to_string());
        self.checks.push(Check {
            what: format!("renaming '{from}'"),
            value: from.to_string(),
        });
    }

    fn edit_values(&mut self, g: &GraphProto, from: &str, to: &str, outputs: bool) {
        for (i, n) in g.node.iter().enumerate() {
            if self.replaced.contains_key(&i) {
                continue;
            }
            for s in 0..n.input.len() {
                if self.input(g, i, s) == Some(from) {
                    self.inputs.insert((i, s), to.to_string());
                    self.edited.push((i, Slot::Input(s), to.to_string()));
                }
            }
            if outputs {
                for s in 0..n.output.len() {
                    let cur = self.outputs.get(&(i, s)).map_or(n.output[s].as_str(), |o| o.as_str());
                    if cur == from {
                        self.outputs.insert((i, s), to.to_string());
                        self.edited.push((i, Slot::Output(s), to.to_string()));
                    }
                }
            }
        }
        let added = self.before.values_mut().chain(self.replaced.values_mut()).flatten();
        for n in added.chain(self.appended.iter_mut()) {
            let names = if outputs {
                n.input.iter_mut().chain(n.output.iter_mut()).collect::<Vec<_>>()
            } else {
                n.input.iter_mut().collect()
            };
            for v in names.into_iter().filter(|v| *v == from) {
                *v = to.to_string();
            }
        }
    }

    /// How many node inputs and graph outputs read `name`, with the patch's edits so far.
    pub fn use_count(&self, g: &GraphProto, name: &str) -> usize {
        let original = g
            .node
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.replaced.contains_key(i))
            .flat_map(|(i, n)| (0..n.input.len()).map(move |s| (i, s)))
            .filter(|&(i, s)| self.input(g, i, s) == Some(name))
            .count();
        let added = self
            .before
            .values()
            .chain(self.replaced.values())
            .flatten()
            .chain(&self.appended)
            .flat_map(|n| n.input.iter())
            .filter(|i| *i == name)
            .count();
        original + added + g.output.iter().filter(|o| o.name() == name).count()
    }

    /// After applying, removes nodes whose outputs nobody reads and initializers nobody reads
    /// (to a fixed point; see [`edit::remove_unused`]).
    pub fn remove_unused(&mut self) {
        self.remove_unused = true;
    }

    /// Checks the patch against `g` (the graph it was made for), then applies it: nodes in
    /// order (each original node preceded by those inserted before it, or replaced), then the
    /// appended nodes; new initializers after the graph's. On error `g` is unchanged.
    pub fn apply(self, g: &mut GraphProto) -> Result<(), OnnxError> {
        self.check(g)?;
        let Patch {
            mut before,
            mut replaced,
            appended,
            inputs,
            outputs,
            initializers,
            replaced_initializers,
            remove_unused,
            ..
        } = self;
        let index: HashMap<String, usize> = g
            .initializer
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (t.name().to_string(), i))
            .collect();
        for (name, t) in replaced_initializers {
            g.initializer[index[&name]] = t;
        }
        for ((i, s), v) in inputs {
            g.node[i].input[s] = v;
        }
        for ((i, s), v) in outputs {
            g.node[i].output[s] = v;
        }
        let old = std::mem::take(&mut g.node);
        let added: usize = before.values().chain(replaced.values()).map(Vec::len).sum();
        g.node.reserve(old.len() + added + appended.len());
        for (i, n) in old.into_iter().enumerate() {
            g.node.extend(before.remove(&i).unwrap_or_default());
            match replaced.remove(&i) {
                Some(with) => g.node.extend(with),
                None => g.node.push(n),
            }
        }
        g.node.extend(appended);
        g.initializer.extend(initializers);
        if remove_unused {
            edit::remove_unused(g);
        }
        Ok(())
    }

    fn check(&self, g: &GraphProto) -> Result<(), PatchError> {
        if g.node.len() != self.nodes {
            return Err(PatchError::WrongGraph {
                expected: self.nodes,
                found: g.node.len(),
            });
        }
        let nodes = g.node.len();
        let placed = self.before.keys().map(|&i| (i, "inserting a node"));
        let replaced = self.replaced.keys().map(|&i| (i, "replacing a node"));
        for (node, what) in placed.chain(replaced) {
            if node >= nodes {
                return Err(PatchError::NoSuchNode {
                    what: what.into(),
                    node,
                    nodes,
                });
            }
        }
        for (node, slot, value) in &self.edited {
            let what = match slot {
                Slot::Input(s) => format!("setting input {s} to '{value}'"),
                Slot::Output(s) => format!("setting output {s} to '{value}'"),
            };
            let Some(n) = g.node.get(*node) else {
                return Err(PatchError::NoSuchNode {
                    what,
                    node: *node,
                    nodes,
                });
            };
            let (exists, slot) = match slot {
                Slot::Input(s) => (*s < n.input.len(), format!("input {s}")),
                Slot::Output(s) => (*s < n.output.len(), format!("output {s}")),
            };
            if !exists {
                return Err(PatchError::NoSuchSlot {
                    what,
                    node: *node,
                    slot,
                });
            }
            if self.replaced.contains_key(node) {
                return Err(PatchError::NodeReplaced { what, node: *node });
            }
        }
        let mut values = edit::names(g);
        values.extend(self.initializers.iter().map(|t| t.name().to_string()));
        let added = self.before.values().chain(self.replaced.values()).flatten();
        values.extend(added.chain(&self.appended).flat_map(|n| n.output.iter().cloned()));
        values.extend(self.outputs.values().cloned());
        if let Some(c) = self.checks.iter().find(|c| !values.contains(&c.value)) {
            return Err(PatchError::MissingValue {
                what: c.what.clone(),
                value: c.value.clone(),
            });
        }
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        if let Some((name, _)) = self
            .replaced_initializers
            .iter()
            .find(|(name, _)| !inits.contains(name.as_str()))
        {
            return Err(PatchError::NoSuchInitializer(name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{node, value_info};
    use crate::onnx::proto::tensor_proto::DataType;
    use crate::onnx::tensor;

    /// `x → Relu → a`, `Add(a, w) → y`; the initializer `unused` is read by nobody.
    fn graph() -> GraphProto {
        GraphProto {
            node: vec![
                node("Relu", "relu", &["x"], &["a"]),
                node("Add", "add", &["a", "w"], &["y"]),
            ],
            initializer: vec![
                tensor::from_f32("w", &[1], &[1.0]),
                tensor::from_f32("unused", &[1], &[2.0]),
            ],
            input: vec![value_info("x", DataType::Float, &[Ok(1)])],
            output: vec![value_info("y", DataType::Float, &[Ok(1)])],
            ..Default::default()
        }
    }

    #[test]
    fn rewire_to_a_missing_value_is_an_error_and_changes_nothing() {
        let mut g = graph();
        let before = g.clone();
        let mut p = Patch::new(&g);
        p.add_initializer(tensor::from_f32("w2", &[1], &[3.0]));
        p.insert_before(1, node("Neg", "neg", &["a"], &["b"]));
        p.rewire(1, 1, "nowhere");
        p.remove_unused();
        let err = p.apply(&mut g).unwrap_err();
        assert!(
            matches!(&err, OnnxError::Patch(PatchError::MissingValue { value, .. }) if value == "nowhere"),
            "{err}"
        );
        assert_eq!(g, before);
    }

    #[test]
    fn replacing_uses_of_a_missing_value_is_an_error() {
        let mut g = graph();
        let before = g.clone();
        let mut p = Patch::new(&g);
        p.replace_uses(&g, "nothing", "w");
        assert!(p.apply(&mut g).is_err());
        assert_eq!(g, before);
    }

    #[test]
    fn rewire_to_a_value_the_patch_adds() {
        let mut g = graph();
        let mut p = Patch::new(&g);
        p.add_initializer(tensor::from_f32("w2", &[1], &[3.0]));
        p.insert_before(1, node("Neg", "neg", &["a"], &["b"]));
        p.rewire(1, 0, "b");
        p.rewire(1, 1, "w2");
        p.apply(&mut g).unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Relu", "Neg", "Add"]);
        assert_eq!(g.node[2].input, ["b", "w2"]);
        assert_eq!(g.initializer.last().map(|t| t.name()), Some("w2"));
    }

    #[test]
    fn fresh_names_avoid_the_graph_and_the_patch() {
        let g = graph();
        let mut p = Patch::new(&g);
        assert_eq!(p.fresh_name("a"), "a_1");
        assert_eq!(p.fresh_name("a"), "a_2");
        assert_eq!(p.fresh_name("w"), "w_1");
        p.add_initializer(tensor::from_f32("c", &[1], &[0.0]));
        p.push_node(node("Neg", "n", &["y"], &["d"]));
        assert_eq!(p.fresh_name("c"), "c_1");
        assert_eq!(p.fresh_name("d"), "d_1");
        // Node names are another pool unless reserved.
        assert_eq!(p.fresh_name("relu"), "relu");
        p.reserve_node_names(&g);
        assert_eq!(p.fresh_name("add"), "add_1");
        let all: HashSet<String> = (0..20).map(|_| p.fresh_name("x")).collect();
        assert_eq!(all.len(), 20);
        assert!(!all.contains("x"));
    }

    #[test]
    fn dead_nodes_and_unread_initializers_are_removed() {
        let mut g = graph();
        let mut p = Patch::new(&g);
        // `y` now comes straight from Relu: Add is dead, and so is `w`; `unused` never was read.
        p.replace_node(1, vec![node("Relu", "relu2", &["x"], &["y"])]);
        p.push_node(node("Neg", "dead", &["a"], &["z"]));
        p.remove_unused();
        p.apply(&mut g).unwrap();
        let names: Vec<&str> = g.node.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["relu2"]);
        assert!(g.initializer.is_empty());
    }

    #[test]
    fn applying_is_all_or_nothing() {
        // Every kind of bad edit, each recorded after good ones: the graph never changes.
        type Edit = Box<dyn Fn(&mut Patch, &GraphProto)>;
        let cases: Vec<Edit> = vec![
            Box::new(|p, _| p.rewire(7, 0, "a")),
            Box::new(|p, _| p.rewire(1, 5, "a")),
            Box::new(|p, _| p.insert_before(9, node("Neg", "n", &["a"], &["b"]))),
            Box::new(|p, _| p.replace_initializer("nope", tensor::from_f32("", &[1], &[0.0]))),
            Box::new(|p, _| {
                p.rewire(1, 0, "x");
                p.remove_node(1);
            }),
        ];
        for (k, bad) in cases.iter().enumerate() {
            let mut g = graph();
            let before = g.clone();
            let mut p = Patch::new(&g);
            p.add_initializer(tensor::from_f32("w2", &[1], &[3.0]));
            p.replace_initializer("w", tensor::from_f32("", &[1], &[9.0]));
            p.insert_before(0, node("Neg", "neg", &["x"], &["b"]));
            p.replace_uses(&g, "a", "b");
            p.remove_unused();
            bad(&mut p, &g);
            assert!(p.apply(&mut g).is_err(), "case {k}");
            assert_eq!(g, before, "case {k}");
        }
        // A patch made for another graph.
        let mut g = graph();
        let p = Patch::new(&GraphProto::default());
        assert!(matches!(
            p.apply(&mut g),
            Err(OnnxError::Patch(PatchError::WrongGraph { .. }))
        ));
        assert_eq!(g, graph());
    }

    #[test]
    fn edits_see_earlier_edits() {
        let g = graph();
        let mut p = Patch::new(&g);
        assert_eq!(p.use_count(&g, "a"), 1);
        p.push_node(node("Neg", "n", &["a"], &["b"]));
        assert_eq!(p.use_count(&g, "a"), 2);
        p.replace_uses(&g, "a", "x");
        assert_eq!(p.use_count(&g, "a"), 0);
        assert_eq!(p.input(&g, 1, 0), Some("x"));
        assert_eq!(p.use_count(&g, "y"), 1, "graph outputs count");
        let mut out = g.clone();
        p.rename(&g, "y", "y_inner");
        p.push_node(node("Identity", "id", &["y_inner"], &["y"]));
        p.apply(&mut out).unwrap();
        assert_eq!(out.node[1].input, ["x", "w"]);
        assert_eq!(out.node[1].output, ["y_inner"]);
        assert_eq!(out.node[2].input, ["x"]);
        assert_eq!(out.node[3].input, ["y_inner"]);
    }
}
