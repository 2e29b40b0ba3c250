//! A read-only index over a graph: who produces a value, who consumes it, which values are
//! constants (initializers, `Constant` nodes, `Identity` aliases of either).

use std::collections::HashMap;

use super::proto::{type_proto, GraphProto, NodeProto, TensorProto, ValueInfoProto};
use super::tensor;

pub struct GraphIndex<'g> {
    pub graph: &'g GraphProto,
    producer: HashMap<&'g str, usize>,
    consumers: HashMap<&'g str, Vec<usize>>,
    initializers: HashMap<&'g str, usize>,
    graph_inputs: Vec<&'g str>,
    graph_outputs: Vec<&'g str>,
}

/// Where a constant value lives.
#[derive(Debug, Clone, Copy)]
pub enum ConstRef<'g> {
    Initializer(&'g TensorProto),
    /// A `Constant` node (index) and its `value` tensor.
    Node(usize, &'g TensorProto),
}

/// The tensor type of a value (a graph input or output): its element type and shape, as declared.
pub fn tensor_type(v: &ValueInfoProto) -> Option<&type_proto::Tensor> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    }
}

/// The declared rank of a tensor value (a graph input or output), when its type gives a shape.
pub fn declared_rank(v: &ValueInfoProto) -> Option<usize> {
    tensor_type(v)?.shape.as_ref().map(|s| s.dim.len())
}

/// Which of a model's outputs holds its predictions: the one named `logits` (as Hugging Face
/// classifiers name theirs), else the first. A classifier may output more (hidden states) before
/// its logits; a headless encoder's first output is per token (a pooled vector may follow it,
/// which is no prediction).
pub fn prediction_output<'a>(outputs: &[&'a str]) -> Option<&'a str> {
    outputs
        .iter()
        .find(|n| **n == "logits")
        .or_else(|| outputs.first())
        .copied()
}

/// [`prediction_output`] of a graph.
pub fn prediction_value(g: &GraphProto) -> Option<&ValueInfoProto> {
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name()).collect();
    let name = prediction_output(&outputs)?;
    g.output.iter().find(|o| o.name() == name)
}

impl<'g> ConstRef<'g> {
    pub fn tensor(&self) -> &'g TensorProto {
        match self {
            ConstRef::Initializer(t) | ConstRef::Node(_, t) => t,
        }
    }
}

impl<'g> GraphIndex<'g> {
    pub fn new(graph: &'g GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for out in &node.output {
                if !out.is_empty() {
                    producer.entry(out.as_str()).or_insert(i);
                }
            }
            for inp in &node.input {
                if !inp.is_empty() {
                    let list = consumers.entry(inp.as_str()).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let initializers = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name(), i))
            .collect();
        let init_names: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        GraphIndex {
            graph,
            producer,
            consumers,
            initializers,
            graph_inputs: graph
                .input
                .iter()
                .map(|v| v.name())
                .filter(|n| !init_names.contains(n))
                .collect(),
            graph_outputs: graph.output.iter().map(|v| v.name()).collect(),
        }
    }

    pub fn node(&self, i: usize) -> &'g NodeProto {
        &self.graph.node[i]
    }

    /// Display name of a node: its name, or `#index (OpType)` when unnamed.
    pub fn node_label(&self, i: usize) -> String {
        let n = self.node(i);
        match n.name() {
            "" => format!("#{i} ({})", n.op_type()),
            name => format!("'{name}' ({})", n.op_type()),
        }
    }

    pub fn producer(&self, value: &str) -> Option<usize> {
        self.producer.get(value).copied()
    }

    pub fn consumers(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map_or(&[], |v| v.as_slice())
    }

    pub fn initializer(&self, name: &str) -> Option<&'g TensorProto> {
        self.initializers.get(name).map(|&i| &self.graph.initializer[i])
    }

    pub fn graph_inputs(&self) -> &[&'g str] {
        &self.graph_inputs
    }

    pub fn graph_outputs(&self) -> &[&'g str] {
        &self.graph_outputs
    }

    pub fn is_graph_output(&self, value: &str) -> bool {
        self.graph_outputs.contains(&value)
    }

    /// Follows `Identity` nodes back to the value they alias, however long the chain. A cycle of
    /// Identities (an invalid graph) aliases nothing: then `value` itself is returned.
    pub fn resolve<'a>(&'a self, value: &'a str) -> &'a str {
        let mut current = value;
        // A chain without a cycle passes each node at most once.
        for _ in 0..=self.graph.node.len() {
            match self.producer(current).map(|i| self.node(i)) {
                Some(n) if n.op_type() == "Identity" && !n.input.is_empty() => current = &n.input[0],
                _ => return current,
            }
        }
        value
    }

    /// The constant behind a value: an initializer or a `Constant` node's `value`, through Identity.
    pub fn constant(&self, value: &str) -> Option<ConstRef<'g>> {
        let value = self.resolve(value);
        if let Some(t) = self.initializer(value) {
            return Some(ConstRef::Initializer(t));
        }
        let i = self.producer(value)?;
        let n = self.node(i);
        if n.op_type() == "Constant" && n.domain().is_empty() {
            let attr = n.attribute.iter().find(|a| a.name() == "value")?;
            return attr.t.as_ref().map(|t| ConstRef::Node(i, t));
        }
        None
    }

    /// Name of the value (after Identity) if it is a constant; the name under which it is stored.
    pub fn constant_name(&self, value: &str) -> Option<String> {
        match self.constant(value)? {
            ConstRef::Initializer(t) => Some(t.name().to_string()),
            ConstRef::Node(i, _) => self.node(i).output.first().cloned(),
        }
    }

    pub fn const_i64(&self, value: &str) -> Option<Vec<i64>> {
        tensor::to_i64(self.constant(value)?.tensor()).ok()
    }

    pub fn const_f32(&self, value: &str) -> Option<Vec<f32>> {
        tensor::to_f32(self.constant(value)?.tensor()).ok()
    }

    /// A float initializer of rank 2 behind the value: (name, dims).
    pub fn weight_2d(&self, value: &str) -> Option<(&'g TensorProto, usize, usize)> {
        let c = self.constant(value)?;
        let t = c.tensor();
        if t.dims.len() == 2
            && t.dims.iter().all(|&d| d > 0)
            && tensor::element_size(t.data_type()).is_some()
            && matches!(t.data_type(), 1 | 10 | 16)
        {
            Some((t, t.dims[0] as usize, t.dims[1] as usize))
        } else {
            None
        }
    }

    /// First input of `node` that is not a constant.
    pub fn dynamic_inputs(&self, i: usize) -> Vec<&'g str> {
        self.node(i)
            .input
            .iter()
            .filter(|v| !v.is_empty() && self.constant(v).is_none())
            .map(|s| s.as_str())
            .collect()
    }

    pub fn attr_i(&self, i: usize, name: &str) -> Option<i64> {
        self.node(i)
            .attribute
            .iter()
            .find(|a| a.name() == name)
            .and_then(|a| a.i)
    }

    pub fn attr_f(&self, i: usize, name: &str) -> Option<f32> {
        self.node(i)
            .attribute
            .iter()
            .find(|a| a.name() == name)
            .and_then(|a| a.f)
    }

    pub fn attr_ints(&self, i: usize, name: &str) -> Option<Vec<i64>> {
        self.node(i)
            .attribute
            .iter()
            .find(|a| a.name() == name)
            .map(|a| a.ints.clone())
    }

    /// Whether node `i` is the standard ONNX op `op` (the default domain).
    pub fn is_op(&self, i: usize, op: &str) -> bool {
        let n = self.node(i);
        n.op_type() == op && n.domain().is_empty()
    }

    /// The node producing `value`, if it is the standard ONNX op `op`.
    pub fn produced_by(&self, value: &str, op: &str) -> Option<usize> {
        self.producer(value).filter(|&p| self.is_op(p, op))
    }

    /// Whether node `i` is a `Shape` of its whole input (`start` absent or 0, `end` absent).
    pub fn whole_shape(&self, i: usize) -> bool {
        self.is_op(i, "Shape") && self.attr_i(i, "start").unwrap_or(0) == 0 && self.attr_i(i, "end").is_none()
    }

    /// The int64 values and dims of `value` when constants alone compute it through the shape
    /// arithmetic exporters write: `Cast` to int64, `Unsqueeze`/`Squeeze` of a scalar or one
    /// element, `Concat` of vectors, `Add`/`Sub`/`Mul` and exact `Div` (8 nodes deep at most).
    /// A plain integer constant is read as [`GraphIndex::const_i64`] reads it.
    pub fn fold_i64(&self, value: &str) -> Option<(Vec<i64>, Vec<i64>)> {
        self.fold(value, 8, false)
    }

    /// The name a shape constant is known by: the constant's own ([`GraphIndex::constant_name`]),
    /// or, for a value constants compute ([`GraphIndex::fold_i64`]), the value's.
    pub fn folded_name(&self, value: &str) -> Option<String> {
        self.constant_name(value)
            .or_else(|| self.fold_i64(value).map(|_| self.resolve(value).to_string()))
    }

    /// `any_int`: a plain constant of any integer type (a `Cast`'s input); else int64 only.
    fn fold(&self, value: &str, depth: usize, any_int: bool) -> Option<(Vec<i64>, Vec<i64>)> {
        if let Some(c) = self.constant(value) {
            let t = c.tensor();
            let int64 = t.data_type() == super::proto::tensor_proto::DataType::Int64 as i32;
            return (int64 || any_int)
                .then(|| tensor::to_i64(t).ok())
                .flatten()
                .map(|v| (v, t.dims.clone()));
        }
        let i = self.producer(self.resolve(value))?;
        let n = self.node(i);
        if depth == 0 || !n.domain().is_empty() {
            return None;
        }
        let arg = |k: usize, any_int: bool| {
            n.input
                .get(k)
                .filter(|v| !v.is_empty())
                .and_then(|v| self.fold(v, depth - 1, any_int))
        };
        match n.op_type() {
            "Cast" if self.attr_i(i, "to") == Some(7) => arg(0, true),
            "Unsqueeze" => {
                let (v, dims) = arg(0, false)?;
                dims.is_empty().then(|| (v, vec![1]))
            }
            "Squeeze" => {
                let (v, dims) = arg(0, false)?;
                (dims == [1]).then(|| (v, vec![]))
            }
            "Concat" if matches!(self.attr_i(i, "axis"), Some(0 | -1)) => {
                let mut all = Vec::new();
                for k in 0..n.input.len() {
                    let (v, dims) = arg(k, false)?;
                    if dims.len() != 1 {
                        return None;
                    }
                    all.extend(v);
                }
                let len = all.len() as i64;
                Some((all, vec![len]))
            }
            op @ ("Add" | "Sub" | "Mul" | "Div") => {
                let ((a, da), (b, db)) = (arg(0, false)?, arg(1, false)?);
                // Equal shapes, or one side a single element (a scalar or [1]).
                let dims = match (a.len(), b.len()) {
                    _ if da == db => da,
                    (1, _) if da.len() <= db.len() => db,
                    (_, 1) if db.len() <= da.len() => da,
                    _ => return None,
                };
                let n = a.len().max(b.len());
                let at = |v: &[i64], k: usize| if v.len() == 1 { v[0] } else { v[k] };
                (0..n)
                    .map(|k| {
                        let (x, y) = (at(&a, k), at(&b, k));
                        match op {
                            "Add" => x.checked_add(y),
                            "Sub" => x.checked_sub(y),
                            "Mul" => x.checked_mul(y),
                            _ => (y != 0 && x.checked_rem(y) == Some(0)).then(|| x / y),
                        }
                    })
                    .collect::<Option<Vec<i64>>>()
                    .map(|v| (v, dims))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{attr_int, node};
    use crate::onnx::tensor::from_i64;

    /// Values computed from constants fold as ONNX computes them; anything past what shape
    /// arithmetic needs (an inexact division, an overflow, a run-time input) does not.
    #[test]
    fn shape_arithmetic_of_constants_folds() {
        let mut cast = node("Cast", "cast", &["i32"], &["cast"]);
        cast.attribute.push(attr_int("to", 7));
        let mut concat = node("Concat", "concat", &["unsq", "cast", "mul"], &["concat"]);
        concat.attribute.push(attr_int("axis", 0));
        let graph = GraphProto {
            node: vec![
                node("Unsqueeze", "unsq", &["four", "axes"], &["unsq"]),
                cast,
                node("Mul", "mul", &["two", "unsq"], &["mul"]),
                concat,
                node("Div", "div", &["concat", "two"], &["div"]),
                node("Div", "inexact", &["cast", "two"], &["inexact"]),
                node("Mul", "overflow", &["big", "big"], &["overflow"]),
                node("Squeeze", "squeeze", &["mul"], &["squeeze"]),
                node("Add", "dynamic", &["x", "two"], &["dynamic"]),
                node("Identity", "alias", &["div"], &["alias"]),
                node("Div", "half", &["mul", "two"], &["half"]),
            ],
            initializer: vec![
                from_i64("four", &[], &[4]),
                from_i64("axes", &[1], &[0]),
                from_i64("two", &[1], &[2]),
                from_i64("big", &[1], &[i64::MAX / 2]),
                crate::onnx::TensorProto {
                    name: Some("i32".into()),
                    dims: vec![1],
                    data_type: Some(6),
                    int32_data: vec![7],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let ix = GraphIndex::new(&graph);
        let fold = |v: &str| ix.fold_i64(v);
        assert_eq!(fold("unsq"), Some((vec![4], vec![1])));
        assert_eq!(fold("cast"), Some((vec![7], vec![1])));
        assert_eq!(fold("mul"), Some((vec![8], vec![1])));
        assert_eq!(fold("concat"), Some((vec![4, 7, 8], vec![3])));
        assert_eq!(fold("squeeze"), Some((vec![8], vec![])));
        assert_eq!(fold("half"), Some((vec![4], vec![1])));
        // 7 / 2 is not exact: not folded (ONNX would truncate; no shape divides so).
        assert_eq!(fold("div"), None);
        assert_eq!(fold("inexact"), None);
        assert_eq!(fold("overflow"), None);
        assert_eq!(fold("dynamic"), None);
        // An int32 constant is not an int64 shape: read only through a Cast.
        assert_eq!(fold("i32"), None);
        assert_eq!(ix.folded_name("alias"), None);
        assert_eq!(ix.folded_name("mul").as_deref(), Some("mul"));
        assert_eq!(ix.folded_name("four").as_deref(), Some("four"));
    }
}
