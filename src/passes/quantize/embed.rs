//! INT8 of ONNX Runtime's fused `EmbedLayerNormalization` (com.microsoft; its transformer
//! optimizer's output): the node becomes `QEmbedLayerNormalization`, which reads its word,
//! position and token-type tables and its LayerNorm scale and bias as uint8 (one scale and zero
//! point per tensor, asymmetric, as ONNX Runtime's own `quantize_dynamic` writes them) and
//! dequantizes the rows it gathers. Without it the tables of a fused graph stayed float: on
//! MiniLM, 47 of the 59 MB left after INT8.
//!
//! Only a node ONNX Runtime's kernel can take is rewritten: no `position_ids` input, no
//! `embedding_sum` output in use, no attribute but `epsilon`; any other stays float with a
//! warning.

use super::{from_u8, pattern_matches, EmbeddingReport, QuantizeOptions, QuantizeReport};
use crate::onnx::build::{node, with_domain};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::ModelProto;
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::passes::PassError;

/// The node's float inputs that become uint8, by slot: word, position and token-type tables,
/// LayerNorm scale and bias (the token-type table is optional).
const TABLES: [(usize, &str); 5] = [
    (2, "word_embedding"),
    (3, "position_embedding"),
    (4, "segment_embedding"),
    (5, "gamma"),
    (6, "beta"),
];

/// uint8 asymmetric quantization of `x` with one scale: (values, scale, zero point) over
/// [min(x, 0), max(x, 0)]; an all-zero tensor gets scale 1 (its zeros stay exact).
pub fn quantize_u8(x: &[f32]) -> (Vec<u8>, f32, u8) {
    let lo = x.iter().copied().fold(0f32, f32::min);
    let hi = x.iter().copied().fold(0f32, f32::max);
    let scale = (hi - lo) / 255.0;
    if !(scale.is_normal() && scale > 0.0) {
        return (vec![0; x.len()], 1.0, 0);
    }
    let zp = (-lo / scale).round().clamp(0.0, 255.0);
    let q = x
        .iter()
        .map(|&v| ((v / scale).round() + zp).clamp(0.0, 255.0) as u8)
        .collect();
    (q, scale, zp as u8)
}

/// Rewrites every fused `EmbedLayerNormalization` of `model` that the kernel can take and whose
/// name `select` accepts and no `exclude` pattern matches (nothing when `opts.embeddings` is off).
pub(super) fn quantize_fused(
    model: &ModelProto,
    opts: &QuantizeOptions,
    select: &dyn Fn(&str) -> bool,
    report: &mut QuantizeReport,
) -> Result<ModelProto, PassError> {
    let Some(src) = model.graph.as_ref().filter(|_| opts.embeddings) else {
        return Ok(model.clone());
    };
    let ix = GraphIndex::new(src);
    let mut patch = Patch::new(src);
    let mut rewritten = 0;
    for (i, n) in src.node.iter().enumerate() {
        if n.op_type() != "EmbedLayerNormalization" || n.domain() != "com.microsoft" {
            continue;
        }
        let name = n.name().to_string();
        if opts.exclude.iter().any(|p| pattern_matches(p, &name)) {
            report.excluded.push(name);
            continue;
        }
        if !select(&name) {
            continue;
        }
        let kept = |why: String| format!("fused embeddings '{name}' kept float: {why}");
        if n.input.len() > 8 && n.input[8..].iter().any(|v| !v.is_empty()) {
            report.warnings.push(kept(
                "it reads position_ids, which QEmbedLayerNormalization has not".into(),
            ));
            continue;
        }
        if let Some(sum) = n.output.get(2).filter(|v| !v.is_empty()) {
            if !ix.consumers(sum).is_empty() || ix.is_graph_output(sum) {
                report.warnings.push(kept(
                    "its embedding_sum output is read, which QEmbedLayerNormalization has not".into(),
                ));
                continue;
            }
        }
        if let Some(a) = n.attribute.iter().find(|a| a.name() != "epsilon") {
            report.warnings.push(kept(format!(
                "QEmbedLayerNormalization has no attribute '{}'",
                a.name()
            )));
            continue;
        }
        // Every table a float32 constant (the token-type table may be absent).
        let mut tables = Vec::new();
        let mut ok = true;
        for (slot, what) in TABLES {
            let v = n.input.get(slot).map_or("", |v| v.as_str());
            if v.is_empty() {
                if slot == 4 {
                    tables.push(None);
                    continue;
                }
                ok = false;
                break;
            }
            match ix.constant(v).map(|c| c.tensor()) {
                Some(t) if t.data_type() == DataType::Float as i32 => tables.push(Some((v.to_string(), what, t))),
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            report.warnings.push(kept(
                "a table or its LayerNorm scale or bias is not a float32 constant".into(),
            ));
            continue;
        }
        // Slots 8–17 of QEmbedLayerNormalization: the five scales, then the five zero points.
        let mut quantized = vec![String::new(); 5];
        let mut scales = vec![String::new(); 5];
        let mut zero_points = vec![String::new(); 5];
        for (k, table) in tables.into_iter().enumerate() {
            let Some((value, what, t)) = table else { continue };
            let x = tensor::to_f32(t)?;
            let (q, scale, zp) = quantize_u8(&x);
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let base = format!("{value}_{what}");
            quantized[k] = patch.fresh_name(&format!("{base}_quantized"));
            scales[k] = patch.fresh_name(&format!("{base}_scale"));
            zero_points[k] = patch.fresh_name(&format!("{base}_zero_point"));
            patch.add_initializer(from_u8(&quantized[k], &dims, &q));
            patch.add_initializer(tensor::from_f32(&scales[k], &[], &[scale]));
            patch.add_initializer(from_u8(&zero_points[k], &[], &[zp]));
            if dims.len() == 2 {
                report.embeddings.push(EmbeddingReport {
                    table: value,
                    rows: dims[0],
                    cols: dims[1],
                    stored: "uint8",
                });
            }
        }
        let input = |slot: usize| n.input.get(slot).map_or("", |v| v.as_str());
        let mut inputs: Vec<&str> = vec![input(0), input(1)];
        inputs.extend(quantized.iter().map(String::as_str));
        inputs.push(input(7));
        inputs.extend(scales.iter().map(String::as_str));
        inputs.extend(zero_points.iter().map(String::as_str));
        let outputs: Vec<&str> = n.output.iter().take(2).map(String::as_str).collect();
        let mut q = with_domain(
            node("QEmbedLayerNormalization", &name, &inputs, &outputs),
            "com.microsoft",
        );
        q.attribute = n.attribute.clone();
        q.doc_string = n.doc_string.clone();
        patch.replace_node(i, vec![q]);
        rewritten += 1;
    }
    super::patched(model, patch, rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_quantization_round_trips_within_half_a_step() {
        let x = [-0.5f32, -0.1, 0.0, 0.25, 1.0];
        let (q, scale, zp) = quantize_u8(&x);
        assert!((scale - 1.5 / 255.0).abs() < 1e-7);
        for (&v, &qv) in x.iter().zip(&q) {
            let back = (qv as f32 - zp as f32) * scale;
            assert!((back - v).abs() <= scale / 2.0 + 1e-7, "{v} -> {back}");
        }
        // Zero is exact; a positive-only tensor has zero point 0; all zeros stay zeros.
        assert_eq!(q[2], zp);
        assert_eq!(quantize_u8(&[0.5, 1.0]).2, 0);
        assert_eq!(quantize_u8(&[0.0, 0.0]), (vec![0, 0], 1.0, 0));
    }
}
