//! float16: every float32 tensor and value becomes float16, except where numerics need float32:
//! LayerNormalization and Softmax (with [`Fp16Float32::Norms`], the default), the reductions of a
//! decomposed LayerNorm, the node that produces each graph output (the logits), and ONNX
//! Runtime's fused ops that its CPU runs in float32 only (EmbedLayerNormalization, Attention,
//! BiasGelu, FastGelu). Those nodes read float32 through a `Cast` and their results are cast back
//! to float16 for the nodes that follow. With [`Fp16Float32::Outputs`] LayerNorm and softmax run
//! in float16 (ONNX Runtime's kernels keep their sums in float32): two `Cast`s fewer for each.
//! Graph inputs and outputs keep their types. Constants beyond float16's range (±65504, e.g. the
//! attention mask's "minus infinity") are clamped to it.

use std::collections::{HashMap, HashSet};

use super::{pattern_matches, Fp16Float32, QuantizeOptions, QuantizeReport};
use crate::onnx::build::{attr_int, node, with_attrs};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{type_proto, ModelProto, TensorProto};
use crate::onnx::{tensor, Patch};
use crate::passes::PassError;

/// Operators computed in float32 with [`Fp16Float32::Norms`] (the default): each keeps its sums
/// in float32 inside ONNX Runtime's float16 kernels, so `Outputs` runs them in float16.
const NORMS_F32: &[&str] = &[
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Softmax",
    "LogSoftmax",
];

/// Operators always computed in float32.
const KEEP_F32: &[&str] = &[
    // A decomposed LayerNorm's reductions: a squared deviation past 256 overflows float16.
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Reciprocal",
    // ONNX Runtime's fused ops (its transformer optimizer's output) with no float16 kernel on
    // the CPU: a model that loads only on a GPU would fail the run check before writing.
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "BiasGelu",
    "FastGelu",
    "QuickGelu",
];

/// Output producers that may stay float32 (all their inputs are float).
const FLOAT_ONLY: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Softmax",
    "LayerNormalization",
];

pub const F16_MAX: f32 = 65504.0;

/// IEEE binary16 bits of `x`, rounded to nearest even (values past the range become ±inf).
pub fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut r = m >> shift;
        let rem = m & ((1 << shift) - 1);
        if rem > half || (rem == half && (r & 1) == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && (r & 1) == 1) {
        r += 1;
    }
    sign | r as u16
}

/// The float32 value of binary16 bits.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man × 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// A float32 tensor as float16 (clamped to ±65504); returns it and how many values were clamped.
fn to_f16(t: &TensorProto) -> Result<(TensorProto, usize), PassError> {
    let v = tensor::to_f32(t)?;
    let mut clamped = 0;
    let mut raw = Vec::with_capacity(v.len() * 2);
    for x in v {
        let c = if x.is_finite() { x.clamp(-F16_MAX, F16_MAX) } else { x };
        clamped += (c != x) as usize;
        raw.extend_from_slice(&f16_bits(c).to_le_bytes());
    }
    Ok((
        TensorProto {
            name: t.name.clone(),
            dims: t.dims.clone(),
            data_type: Some(DataType::Float16 as i32),
            raw_data: Some(raw.into()),
            ..Default::default()
        },
        clamped,
    ))
}

/// Element types of every value, propagated forward from inputs, initializers and node rules.
fn value_types(g: &crate::onnx::GraphProto) -> HashMap<String, i32> {
    let mut ty: HashMap<String, i32> = HashMap::new();
    let elem = |v: &crate::onnx::proto::ValueInfoProto| match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type,
        _ => None,
    };
    for v in &g.input {
        if let Some(e) = elem(v) {
            ty.insert(v.name().to_string(), e);
        }
    }
    for t in &g.initializer {
        ty.insert(t.name().to_string(), t.data_type());
    }
    use DataType as D;
    for n in &g.node {
        let first = n.input.iter().find_map(|i| ty.get(i).copied());
        let attr_t = |name: &str| {
            n.attribute
                .iter()
                .find(|a| a.name() == name)
                .and_then(|a| a.t.as_ref())
                .map(|t| t.data_type())
        };
        let out = match n.op_type() {
            "Cast" => n
                .attribute
                .iter()
                .find(|a| a.name() == "to")
                .and_then(|a| a.i)
                .map(|v| v as i32),
            "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" => Some(D::Int64 as i32),
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Not" | "Xor"
            | "IsNaN" | "IsInf" => Some(D::Bool as i32),
            "Constant" => attr_t("value"),
            "ConstantOfShape" => Some(attr_t("value").unwrap_or(D::Float as i32)),
            "Where" => n.input.get(1).and_then(|i| ty.get(i).copied()),
            // ONNX Runtime's fused embeddings: the tables' type, then an int32 mask index.
            "EmbedLayerNormalization" => {
                if let Some(o) = n.output.get(1).filter(|o| !o.is_empty()) {
                    ty.insert(o.clone(), D::Int32 as i32);
                }
                if let (Some(o), Some(&t)) = (n.output.first(), n.input.get(2).and_then(|i| ty.get(i))) {
                    ty.insert(o.clone(), t);
                }
                continue;
            }
            _ => first,
        };
        if let Some(o) = out {
            for (k, name) in n.output.iter().enumerate() {
                // Ops with a second integer output (e.g. TopK indices) are not in these graphs;
                // only the first output takes the rule, the others the first input's type.
                if k == 0 || n.op_type() != "TopK" {
                    ty.insert(name.clone(), o);
                }
            }
        }
    }
    ty
}

pub(super) fn convert(
    model: &ModelProto,
    opts: &QuantizeOptions,
    report: &mut QuantizeReport,
) -> Result<ModelProto, PassError> {
    let mut m = model.clone();
    let g = crate::passes::graph_mut(&mut m)?;
    let ty = value_types(g);
    let float = DataType::Float as i32;
    let is_float = |v: &str| ty.get(v) == Some(&float);
    let outputs: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();

    // Which nodes stay float32.
    let mut used = vec![false; opts.exclude.len()];
    let mut kept: Vec<bool> = Vec::with_capacity(g.node.len());
    // MatMuls: (kept in float32, kept by `exclude` alone).
    let mut matmuls: Vec<(bool, bool)> = vec![];
    for n in &g.node {
        let mut k = KEEP_F32.contains(&n.op_type())
            || (opts.fp16_float32 == Fp16Float32::Norms && NORMS_F32.contains(&n.op_type()))
            || (FLOAT_ONLY.contains(&n.op_type()) && n.output.iter().any(|o| outputs.contains(o)));
        let by_default = k;
        for (j, p) in opts.exclude.iter().enumerate() {
            if pattern_matches(p, n.name()) {
                used[j] = true;
                k = k || n.input.iter().all(|i| i.is_empty() || is_float(i));
            }
        }
        if n.op_type() == "MatMul" {
            matmuls.push((k, k && !by_default));
        }
        if !opts.embeddings
            && n.op_type() == "Gather"
            && g.initializer
                .iter()
                .any(|t| t.name() == n.input[0] && t.data_type() == float)
            && n.input.len() == 2
        {
            // --no-embeddings: the table stays float32 and the Gather reads it there.
            k = true;
        }
        kept.push(k);
    }
    if let Some(j) = used.iter().position(|u| !u) {
        return Err(PassError::Options(crate::options::OptionError::new(
            "exclude",
            format!("`exclude` '{}' matches no node name", opts.exclude[j]),
        )));
    }
    // As int8 refuses it: a model whose every MatMul stays float32 is hardly float16.
    if matmuls.iter().all(|m| m.0) && matmuls.iter().any(|m| m.1) {
        return Err(PassError::Options(crate::options::OptionError::new(
            "exclude",
            format!(
                "`exclude` keeps every MatMul in float32 ({} of them): the weights they read stay float32; narrow the pattern",
                matmuls.len()
            ),
        )));
    }
    report.kept_float32 = g
        .node
        .iter()
        .zip(&kept)
        .filter(|(_, &k)| k)
        .map(|(n, _)| n.name().to_string())
        .collect();

    // Consumers of each value: kept or not.
    let mut kept_users: HashMap<&str, (bool, bool)> = HashMap::new();
    for (n, &k) in g.node.iter().zip(&kept) {
        for i in &n.input {
            let e = kept_users.entry(i.as_str()).or_default();
            if k {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    // Float initializers: to float16 unless only float32 nodes read them.
    let mut f32_after: HashSet<String> = HashSet::new();
    let mut clamped = 0;
    let mut converted = vec![];
    for (idx, t) in g.initializer.iter().enumerate() {
        if t.data_type() != float {
            continue;
        }
        let (by_kept, by_other) = kept_users.get(t.name()).copied().unwrap_or((false, true));
        if by_kept && !by_other {
            f32_after.insert(t.name().to_string());
        } else {
            converted.push(idx);
        }
    }
    let mut patch = Patch::new(g);
    for idx in converted {
        let (t, c) = to_f16(&g.initializer[idx])?;
        clamped += c;
        patch.replace_initializer(g.initializer[idx].name(), t);
    }
    for v in &g.input {
        if is_float(v.name()) {
            f32_after.insert(v.name().to_string());
        }
    }
    for (n, &k) in g.node.iter().zip(&kept) {
        if k {
            for o in &n.output {
                if is_float(o) {
                    f32_after.insert(o.clone());
                }
            }
        }
    }

    let mut casts: HashMap<(String, i32), String> = HashMap::new();
    let mut cast_count = 0;
    for (i, (n, k)) in g.node.iter().zip(kept).enumerate() {
        let mut n = n.clone();
        let want = if k { float } else { DataType::Float16 as i32 };
        for slot in 0..n.input.len() {
            let v = n.input[slot].clone();
            if v.is_empty() || !is_float(&v) {
                continue;
            }
            let have = if f32_after.contains(&v) {
                float
            } else {
                DataType::Float16 as i32
            };
            if have == want {
                continue;
            }
            let key = (v.clone(), want);
            let c = match casts.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let suffix = if want == float { "f32" } else { "f16" };
                    let c = patch.fresh_name(&format!("{v}_{suffix}"));
                    patch.insert_before(
                        i,
                        with_attrs(
                            node("Cast", &format!("{c}_Cast"), &[&v], &[&c]),
                            vec![attr_int("to", want as i64)],
                        ),
                    );
                    cast_count += 1;
                    casts.insert(key, c.clone());
                    c
                }
            };
            n.input[slot] = c;
        }
        if !k {
            match n.op_type() {
                "Cast" => {
                    for a in &mut n.attribute {
                        if a.name() == "to" && a.i == Some(float as i64) {
                            a.i = Some(DataType::Float16 as i64);
                        }
                    }
                }
                "Constant" | "ConstantOfShape" => {
                    for a in &mut n.attribute {
                        if let Some(t) = a.t.as_mut().filter(|t| t.data_type() == float) {
                            let (h, c) = to_f16(t)?;
                            clamped += c;
                            *t = h;
                        }
                    }
                }
                _ => {}
            }
        }
        if n != g.node[i] {
            patch.replace_node(i, vec![n]);
        }
    }
    // Graph outputs computed in float16: cast back.
    for o in g.output.clone() {
        let name = o.name().to_string();
        if !is_float(&name) || f32_after.contains(&name) {
            continue;
        }
        let inner = patch.fresh_name(&format!("{name}_fp16"));
        patch.rename(g, &name, &inner);
        patch.push_node(with_attrs(
            node("Cast", &format!("{name}_Cast"), &[&inner], &[&name]),
            vec![attr_int("to", float as i64)],
        ));
        cast_count += 1;
    }
    patch.apply(g)?;
    // Graph inputs that were float stay float: their readers got casts above.
    g.value_info.clear();
    if clamped > 0 {
        report.warnings.push(format!(
            "{clamped} constant value(s) beyond float16's range were clamped to ±{F16_MAX} (e.g. an attention mask's large negative)"
        ));
    }
    report.warnings.push(format!("{cast_count} Cast nodes inserted"));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip() {
        for &x in &[
            0.0f32,
            1.0,
            -2.5,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
            0.1,
            1234.5678,
            -0.33333334,
        ] {
            let back = f16_to_f32(f16_bits(x));
            assert!((back - x).abs() <= x.abs() * 4.9e-4 + 3e-8, "{x} -> {back}");
        }
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(1e6), 0x7c00);
        // Ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
        assert_eq!(f16_bits(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f16_bits(1.0 + 3.0 / 2048.0), 0x3c02);
    }
}
