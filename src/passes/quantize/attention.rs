//! INT8 of ONNX Runtime's fused `Attention` (com.microsoft; its transformer optimizer's output,
//! what Optimum's `-O2` writes): the packed Q/K/V weight stored as int8 and the node rewritten
//! as `QAttention` (u8 activations × int8 weights, the same kernel family as
//! `DynamicQuantizeMatMul`). Dynamic mode quantizes its input with `DynamicQuantizeLinear`, as
//! ONNX Runtime's own `quantize_dynamic` does; static mode with `QuantizeLinear` at the input's
//! calibrated range (u8, asymmetric: `QAttention` takes no other activation type). Without it a
//! fused graph kept three quarters of its tensor data in float.

use std::collections::HashMap;

use super::calibrate::Range;
use super::qdq::activation_params;
use super::{
    add_quantized_weight, from_u8, pattern_matches, ActivationReport, ActivationType, Mode, QuantizeOptions,
    QuantizeReport,
};
use crate::onnx::build::{node, with_domain};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{ModelProto, NodeProto};
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::passes::PassError;

/// Attributes `QAttention` takes over from `Attention`; a node with any other (e.g.
/// `qkv_hidden_sizes`, which `QAttention` has not) stays float, with a warning.
const CARRIED: &[&str] = &[
    "num_heads",
    "unidirectional",
    "mask_filter_value",
    "scale",
    "do_rotary",
    "rotary_embedding_dim",
    "past_present_share_buffer",
];

/// What becomes of one fused `Attention` node.
enum Verdict {
    /// Not a fused attention with a constant float32 [in, 3·hidden] weight, or not selected.
    Skip,
    /// Matched by an `exclude` pattern.
    Excluded,
    /// Kept float, with the reason.
    Float(String),
    Quantize,
}

fn verdict(ix: &GraphIndex, n: &NodeProto, opts: &QuantizeOptions, select: &dyn Fn(&str) -> bool) -> Verdict {
    if n.op_type() != "Attention" || n.domain() != "com.microsoft" {
        return Verdict::Skip;
    }
    let name = n.name();
    if opts.exclude.iter().any(|p| pattern_matches(p, name)) {
        return Verdict::Excluded;
    }
    if !select(name) {
        return Verdict::Skip;
    }
    let Some(weight) = n.input.get(1).and_then(|w| ix.constant(w)) else {
        return Verdict::Skip;
    };
    let t = weight.tensor();
    if t.data_type() != DataType::Float as i32 || t.dims.len() != 2 {
        return Verdict::Skip;
    }
    if let Some(a) = n.attribute.iter().find(|a| !CARRIED.contains(&a.name())) {
        return Verdict::Float(format!(
            "fused attention '{name}' kept float: QAttention has no attribute '{}'",
            a.name()
        ));
    }
    // input, weight, bias, mask_index: past states and attention biases are not carried.
    if n.input.len() > 4 || n.input.get(2).is_none_or(|b| b.is_empty()) {
        return Verdict::Float(format!(
            "fused attention '{name}' kept float: it reads inputs past the mask (or no bias)"
        ));
    }
    Verdict::Quantize
}

/// The inputs of the fused attentions [`quantize_fused`] would rewrite: static mode calibrates
/// their ranges with the MatMuls'.
pub(super) fn inputs(model: &ModelProto, opts: &QuantizeOptions, select: &dyn Fn(&str) -> bool) -> Vec<String> {
    let Some(g) = model.graph.as_ref() else {
        return vec![];
    };
    let ix = GraphIndex::new(g);
    g.node
        .iter()
        .filter(|n| matches!(verdict(&ix, n, opts, select), Verdict::Quantize))
        .map(|n| n.input[0].clone())
        .collect()
}

/// Rewrites every fused `Attention` of `model` whose weight is a constant [in, 3·hidden] float
/// matrix and whose name `select` accepts and no `exclude` pattern matches. Static mode needs
/// `ranges` (calibrated, by value); an attention whose input has none usable stays float.
pub(super) fn quantize_fused(
    model: &ModelProto,
    opts: &QuantizeOptions,
    select: &dyn Fn(&str) -> bool,
    ranges: Option<&HashMap<String, Range>>,
    report: &mut QuantizeReport,
) -> Result<ModelProto, PassError> {
    let Some(src) = model.graph.as_ref() else {
        return Ok(model.clone());
    };
    let ix = GraphIndex::new(src);
    let mut patch = Patch::new(src);
    let mut rewritten = 0;
    for (i, n) in src.node.iter().enumerate() {
        let name = n.name().to_string();
        match verdict(&ix, n, opts, select) {
            Verdict::Skip => continue,
            Verdict::Excluded => {
                report.excluded.push(name);
                continue;
            }
            Verdict::Float(why) => {
                report.warnings.push(why);
                continue;
            }
            Verdict::Quantize => {}
        }
        let input = &n.input[0];
        // Static: the input's scale and zero point from its calibrated range (u8).
        let fixed = match (opts.mode, ranges) {
            (Mode::Static, Some(ranges)) => {
                let Some((r, (scale, zp))) = ranges
                    .get(input)
                    .and_then(|&r| activation_params(r, ActivationType::U8).map(|p| (r, p)))
                else {
                    report.warnings.push(format!(
                        "fused attention '{name}' kept float: no usable calibrated range for its input '{input}'"
                    ));
                    continue;
                };
                Some((r, scale, zp))
            }
            (Mode::Static, None) => {
                return Err(PassError::Internal(
                    "static INT8 of fused attention without ranges".into(),
                ))
            }
            _ => None,
        };
        let Some(t) = n.input.get(1).and_then(|w| ix.constant(w)).map(|c| c.tensor()) else {
            continue;
        };
        let (rows, cols) = (t.dims[0] as usize, t.dims[1] as usize);
        let w = tensor::to_f32(t)?;
        let qw = add_quantized_weight(
            &mut patch,
            &n.input[1],
            (&name, "Attention"),
            &w,
            (rows, cols),
            opts,
            report,
        );
        let base = format!("{name}_input");
        let acts = [
            patch.fresh_name(&format!("{base}_quantized")),
            patch.fresh_name(&format!("{base}_scale")),
            patch.fresh_name(&format!("{base}_zero_point")),
        ];
        let quantize = match fixed {
            Some((r, scale, zp)) => {
                patch.add_initializer(tensor::from_f32(&acts[1], &[], &[scale]));
                patch.add_initializer(from_u8(&acts[2], &[], &[zp as u8]));
                report.activations.push(ActivationReport {
                    value: input.clone(),
                    nodes: vec![name.clone()],
                    min: r.min,
                    max: r.max,
                    scale,
                    zero_point: zp,
                });
                node(
                    "QuantizeLinear",
                    &format!("{name}_QuantizeLinear"),
                    &[input, &acts[1], &acts[2]],
                    &[&acts[0]],
                )
            }
            None => node(
                "DynamicQuantizeLinear",
                &format!("{name}_DynamicQuantizeLinear"),
                &[input],
                &[&acts[0], &acts[1], &acts[2]],
            ),
        };
        let mask = n.input.get(3).map_or("", |v| v.as_str());
        let mut qa = with_domain(
            node(
                "QAttention",
                &name,
                &[
                    &acts[0],
                    &qw.q,
                    &n.input[2],
                    &acts[1],
                    &qw.scale,
                    mask,
                    &acts[2],
                    &qw.zero_point,
                ],
                &n.output.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
            ),
            "com.microsoft",
        );
        qa.attribute = n.attribute.clone();
        qa.doc_string = n.doc_string.clone();
        patch.replace_node(i, vec![quantize, qa]);
        rewritten += 1;
    }
    super::patched(model, patch, rewritten)
}
