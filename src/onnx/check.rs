//! Checks every model gets as it is loaded, before anything trusts its contents: each tensor's
//! payload matches its data type and shape (no negative or absurd dimensions, no payload longer
//! or shorter than the shape claims, no tensor without data), declared input/output shapes have
//! no negative dimensions, every value is produced once, graph outputs are listed once, and the
//! graph has no cycle. These are the rules of the ONNX checker that the rest of the tool relies
//! on: a weight read later is the size its dims say, and walking the graph ends.
//!
//! The checks only read lengths and names; they allocate in proportion to the node count, never
//! to a length taken from the file.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::proto::tensor_proto::DataType;
use super::proto::type_proto;
use super::proto::{GraphProto, ModelProto, TensorProto, TypeProto, ValueInfoProto};
use super::{tensor, OnnxError};

/// Checks `model` (see the module docs); errors name `path` and the tensor, value or node.
pub fn check_model(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    let fail = |reason: String| OnnxError::NotOnnx {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(g) = model.graph.as_ref() {
        check_graph(g, 0).map_err(fail)?;
    }
    for f in &model.functions {
        let mut seen = HashSet::new();
        for n in &f.node {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if !seen.insert(o.as_str()) {
                    return Err(fail(format!(
                        "function '{}': value '{}' is produced twice",
                        f.name(),
                        shorten(o)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Checks one tensor's payload against its data type and dims. External tensors (data still in
/// a side file) are checked by the loader when it reads them; only their dims are checked here.
pub fn check_tensor(t: &TensorProto) -> Result<(), String> {
    let name = shorten(t.name());
    let n = tensor::numel(t).map_err(|e| match e {
        OnnxError::Tensor { reason, .. } => format!("tensor '{name}': {reason}"),
        other => other.to_string(),
    })? as u64;
    if tensor::is_external(t) {
        return Ok(());
    }
    let dtype = t.data_type.unwrap_or(0);
    let Ok(dt) = DataType::try_from(dtype) else {
        return Err(format!("tensor '{name}': data type {dtype} is not an ONNX type"));
    };
    if dt == DataType::Undefined {
        return Err(format!("tensor '{name}': has no data type"));
    }
    let raw = t.raw_data.as_ref().map_or(0, |r| r.len()) as u64;
    let typed = [
        ("float_data", t.float_data.len()),
        ("int32_data", t.int32_data.len()),
        ("int64_data", t.int64_data.len()),
        ("double_data", t.double_data.len()),
        ("uint64_data", t.uint64_data.len()),
        ("string_data", t.string_data.len()),
    ];
    let present: Vec<(&str, usize)> = typed.iter().copied().filter(|&(_, len)| len > 0).collect();
    if raw > 0 && !present.is_empty() || present.len() > 1 {
        let mut fields: Vec<&str> = present.iter().map(|p| p.0).collect();
        if raw > 0 {
            fields.insert(0, "raw_data");
        }
        return Err(format!(
            "tensor '{name}': holds data in several fields ({}); ONNX allows one",
            fields.join(", ")
        ));
    }
    let dims = || format!("{:?}", t.dims);
    let packed = |bits: u64| (n * bits).div_ceil(8);
    if raw > 0 {
        let expected = match dt {
            DataType::String => return Err(format!("tensor '{name}': a string tensor cannot use raw_data")),
            DataType::Uint4 | DataType::Int4 | DataType::Float4e2m1 => packed(4),
            DataType::Uint2 | DataType::Int2 => packed(2),
            DataType::Float6e2m3 | DataType::Float6e3m2 => packed(6),
            _ => match tensor::element_size(dtype) {
                Some(size) => n * size as u64,
                None => return Ok(()),
            },
        };
        if raw != expected {
            return Err(format!(
                "tensor '{name}': raw_data has {raw} bytes, but {} of shape {} needs {expected}",
                tensor::dtype_name(dtype),
                dims()
            ));
        }
        return Ok(());
    }
    let Some(&(field, count)) = present.first() else {
        if n > 0 {
            return Err(format!(
                "tensor '{name}': shape {} claims {n} elements but the tensor holds no data",
                dims()
            ));
        }
        return Ok(());
    };
    let expected = match dt {
        DataType::Complex64 | DataType::Complex128 => n * 2,
        // 4-bit types pack two values per int32_data entry.
        DataType::Uint4 | DataType::Int4 | DataType::Float4e2m1 => n.div_ceil(2),
        // Packing of 2- and 6-bit types in typed fields: not checked.
        DataType::Uint2 | DataType::Int2 | DataType::Float6e2m3 | DataType::Float6e3m2 => return Ok(()),
        _ => n,
    };
    let ok = count as u64 == expected;
    if !ok {
        return Err(format!(
            "tensor '{name}': {field} has {count} values, but {} of shape {} needs {expected}",
            tensor::dtype_name(dtype),
            dims()
        ));
    }
    Ok(())
}

/// Checks a graph and, recursively, its subgraphs (`depth` counts nesting, for messages).
fn check_graph(g: &GraphProto, depth: usize) -> Result<(), String> {
    let scope = if depth == 0 {
        String::new()
    } else {
        format!("subgraph '{}': ", shorten(g.name()))
    };
    for t in &g.initializer {
        check_tensor(t).map_err(|e| format!("{scope}initializer {e}"))?;
    }
    for st in &g.sparse_initializer {
        for t in st.values.iter().chain(st.indices.iter()) {
            check_tensor(t).map_err(|e| format!("{scope}sparse initializer {e}"))?;
        }
    }
    for (kind, list) in [("input", &g.input), ("output", &g.output)] {
        for v in list {
            check_value_info(v).map_err(|e| format!("{scope}graph {kind} {e}"))?;
        }
    }
    let mut outputs = HashSet::new();
    for v in &g.output {
        if !outputs.insert(v.name()) {
            return Err(format!("{scope}graph output '{}' is listed twice", shorten(v.name())));
        }
    }

    // Every value is produced once: by a node, an initializer or a graph input.
    let mut defined: HashMap<&str, &str> = HashMap::new();
    for v in &g.input {
        defined.insert(v.name(), "a graph input");
    }
    for t in &g.initializer {
        defined.entry(t.name()).or_insert("an initializer");
    }
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in g.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if let Some(&j) = producer.get(out.as_str()) {
                return Err(format!(
                    "{scope}value '{}' is produced twice (by {} and {})",
                    shorten(out),
                    node_label(g, j),
                    node_label(g, i)
                ));
            }
            if let Some(what) = defined.get(out.as_str()) {
                return Err(format!(
                    "{scope}value '{}' of {} is also {what}",
                    shorten(out),
                    node_label(g, i)
                ));
            }
            producer.insert(out.as_str(), i);
        }
        for attr in &node.attribute {
            let ctx = |e: String| format!("{scope}{} attribute '{}': {e}", node_label(g, i), shorten(attr.name()));
            for t in attr.t.iter().chain(&attr.tensors) {
                check_tensor(t).map_err(ctx)?;
            }
            for sg in attr.g.iter().chain(&attr.graphs) {
                check_graph(sg, depth + 1).map_err(ctx)?;
            }
        }
    }
    check_acyclic(g, &producer).map_err(|e| format!("{scope}{e}"))
}

/// Kahn's algorithm over the node → node edges given by value names. Values no node produces
/// (graph inputs, initializers, outer-scope values of a subgraph) are sources.
fn check_acyclic(g: &GraphProto, producer: &HashMap<&str, usize>) -> Result<(), String> {
    let n = g.node.len();
    let mut indegree = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.node.iter().enumerate() {
        for inp in node.input.iter().filter(|v| !v.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                indegree[i] += 1;
                users[p].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.push(u);
            }
        }
    }
    if done == n {
        return Ok(());
    }
    let stuck = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
    Err(format!(
        "the graph has a cycle: {} depends on its own output ({} of {n} nodes are on or behind a cycle)",
        node_label(g, stuck),
        n - done
    ))
}

fn check_value_info(v: &ValueInfoProto) -> Result<(), String> {
    let name = shorten(v.name());
    check_type(v.r#type.as_ref(), 0).map_err(|e| format!("'{name}': {e}"))
}

fn check_type(t: Option<&TypeProto>, depth: usize) -> Result<(), String> {
    let Some(value) = t.and_then(|t| t.value.as_ref()) else {
        return Ok(());
    };
    use super::proto::tensor_shape_proto::dimension::Value as Dim;
    let shape = match value {
        type_proto::Value::TensorType(t) => t.shape.as_ref(),
        type_proto::Value::SparseTensorType(t) => t.shape.as_ref(),
        type_proto::Value::SequenceType(s) if depth < 8 => return check_type(s.elem_type.as_deref(), depth + 1),
        type_proto::Value::OptionalType(o) if depth < 8 => return check_type(o.elem_type.as_deref(), depth + 1),
        type_proto::Value::MapType(m) if depth < 8 => return check_type(m.value_type.as_deref(), depth + 1),
        _ => None,
    };
    for (i, d) in shape.iter().flat_map(|s| s.dim.iter()).enumerate() {
        if let Some(Dim::DimValue(v)) = d.value {
            if v < 0 {
                return Err(format!("dimension {i} of its shape is negative ({v})"));
            }
        }
    }
    Ok(())
}

fn node_label(g: &GraphProto, i: usize) -> String {
    let n = &g.node[i];
    match n.name() {
        "" => format!("node #{i} ({})", shorten(n.op_type())),
        name => format!("node '{}' ({})", shorten(name), shorten(n.op_type())),
    }
}

/// Names from a file may be huge: quote at most 80 characters.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::check_tensor;
    use crate::onnx::proto::tensor_proto::{DataLocation, DataType};
    use crate::onnx::proto::TensorProto;

    fn t(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            dims: dims.to_vec(),
            data_type: Some(dtype as i32),
            ..Default::default()
        }
    }

    #[test]
    fn payloads_are_checked_per_type() {
        // Typed fields: one value per element, two for complex, two 4-bit values per int32.
        let mut s = t(DataType::String, &[2]);
        s.string_data = vec![b"a".to_vec().into(), b"b".to_vec().into()];
        assert!(check_tensor(&s).is_ok());
        s.string_data.pop();
        assert!(check_tensor(&s).unwrap_err().contains("string_data has 1 values"));
        let mut c = t(DataType::Complex64, &[3]);
        c.float_data = vec![0.0; 6];
        assert!(check_tensor(&c).is_ok());
        c.float_data.pop();
        assert!(check_tensor(&c).is_err());
        let mut q = t(DataType::Int4, &[5]);
        q.int32_data = vec![0; 3];
        assert!(check_tensor(&q).is_ok());
        q.raw_data = Some(vec![0u8; 3].into());
        assert!(check_tensor(&q)
            .unwrap_err()
            .contains("several fields (raw_data, int32_data)"));
        q.int32_data.clear();
        assert!(check_tensor(&q).is_ok(), "5 int4 values pack into 3 bytes");
        q.raw_data = Some(vec![0u8; 2].into());
        assert!(check_tensor(&q).unwrap_err().contains("raw_data has 2 bytes"));
        // Strings cannot be raw; a type must be given and known.
        let mut r = t(DataType::String, &[1]);
        r.raw_data = Some(vec![0u8; 4].into());
        assert!(check_tensor(&r).unwrap_err().contains("cannot use raw_data"));
        let mut u = t(DataType::Undefined, &[1]);
        u.raw_data = Some(vec![0u8; 4].into());
        assert!(check_tensor(&u).unwrap_err().contains("no data type"));
        u.data_type = Some(999);
        assert!(check_tensor(&u).unwrap_err().contains("999 is not an ONNX type"));
        // Empty tensors need no data; external ones are checked when their data is read.
        assert!(check_tensor(&t(DataType::Float, &[0, 7])).is_ok());
        let mut e = t(DataType::Float, &[1 << 20]);
        e.data_location = Some(DataLocation::External as i32);
        assert!(check_tensor(&e).is_ok());
        e.dims = vec![1 << 20, 1 << 20];
        assert!(check_tensor(&e).unwrap_err().contains("absurdly large"));
        // The bound is 2^34 elements: that many are claimed, one pair more is refused.
        e.dims = vec![1 << 17, 1 << 17];
        assert_eq!(crate::onnx::tensor::numel(&e).unwrap(), 1 << 34);
        assert!(check_tensor(&e).is_ok());
        e.dims = vec![2, (1 << 33) + 1];
        assert!(check_tensor(&e).unwrap_err().contains("absurdly large"));
    }
}
