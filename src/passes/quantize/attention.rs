//! Dynamic INT8 of ONNX Runtime's fused `Attention` (com.microsoft; its transformer optimizer's
//! output, what Optimum's `-O2` writes): the packed Q/K/V weight stored as int8 and the node
//! rewritten as `DynamicQuantizeLinear` of its input then `QAttention` (u8 × s8, the same
//! kernel family as `DynamicQuantizeMatMul`), as ONNX Runtime's own `quantize_dynamic` does.
//! Without it a fused graph kept three quarters of its tensor data in float.

use super::{add_quantized_weight, pattern_matches, QuantizeOptions, QuantizeReport};
use crate::onnx::build::{node, with_domain};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::ModelProto;
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

/// Rewrites every fused `Attention` of `model` whose weight is a constant [in, 3·hidden] float
/// matrix and whose name `select` accepts and no `exclude` pattern matches.
pub(super) fn quantize_fused(
    model: &ModelProto,
    opts: &QuantizeOptions,
    select: &dyn Fn(&str) -> bool,
    report: &mut QuantizeReport,
) -> Result<ModelProto, PassError> {
    let Some(src) = model.graph.as_ref() else {
        return Ok(model.clone());
    };
    let ix = GraphIndex::new(src);
    let mut patch = Patch::new(src);
    let mut rewritten = 0;
    for (i, n) in src.node.iter().enumerate() {
        if n.op_type() != "Attention" || n.domain() != "com.microsoft" {
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
        let Some(weight) = n.input.get(1).and_then(|w| ix.constant(w)) else {
            continue;
        };
        let t = weight.tensor();
        if t.data_type() != DataType::Float as i32 || t.dims.len() != 2 {
            continue;
        }
        if let Some(a) = n.attribute.iter().find(|a| !CARRIED.contains(&a.name())) {
            report.warnings.push(format!(
                "fused attention '{name}' kept float: QAttention has no attribute '{}'",
                a.name()
            ));
            continue;
        }
        // input, weight, bias, mask_index: past states and attention biases are not carried.
        if n.input.len() > 4 || n.input.get(2).is_none_or(|b| b.is_empty()) {
            report.warnings.push(format!(
                "fused attention '{name}' kept float: it reads inputs past the mask (or no bias)"
            ));
            continue;
        }
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
        let input = &n.input[0];
        let base = format!("{name}_input");
        let acts = [
            patch.fresh_name(&format!("{base}_quantized")),
            patch.fresh_name(&format!("{base}_scale")),
            patch.fresh_name(&format!("{base}_zero_point")),
        ];
        let dql = node(
            "DynamicQuantizeLinear",
            &format!("{name}_DynamicQuantizeLinear"),
            &[input],
            &[&acts[0], &acts[1], &acts[2]],
        );
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
        patch.replace_node(i, vec![dql, qa]);
        rewritten += 1;
    }
    let mut m = model.clone();
    if rewritten == 0 {
        return Ok(m);
    }
    let g = m.graph.as_mut().ok_or_else(|| PassError::Internal("no graph".into()))?;
    patch.remove_unused();
    patch.apply(g)?;
    Ok(m)
}
