//! The int8 rewrites: weights to int8 initializers, activations through `QuantizeLinear →
//! DequantizeLinear` (static) or `DynamicQuantizeMatMul` (dynamic), embedding tables to int8 read
//! by their `Gather` and dequantized after it: `DequantizeLinear` with one scale per tensor, or
//! `Cast` to float32 and `Mul` by the per-channel scales (the same values; ONNX Runtime's per-axis
//! `DequantizeLinear` runs a scalar loop, 5x slower than the two vectorized ops).

use std::collections::{HashMap, HashSet};

use super::calibrate::Range;
use super::{
    add_quantized_weight, default_opset, ensure_opset, from_i8, from_u8, quantize_weight, ActivationReport,
    ActivationType, EmbeddingReport, Mode, QuantizeOptions, QuantizeReport, StaticForm, Target,
};
use crate::onnx::build::{attr_int, node, with_attrs, with_domain};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::ModelProto;
use crate::onnx::{tensor, GraphIndex, Patch};
use crate::passes::PassError;

/// Token rows are 2-D, and ONNX Runtime's CPU optimizer fuses a 2-D `MatMul` and the `Add` after
/// it into a float `Gemm` (its MatMulAddFusion) before its QDQ fusions see the MatMul: the QDQ
/// MatMuls on rows would run in float on dequantized weights (SST-2 packed: 1.34× FP32, 3.82×
/// with this, 2.98× padded; bench/RESULTS.md "Packed QDQ: the bias as `Sum`"). Each `Add` reading
/// a QDQ MatMul (its weight through `DequantizeLinear`) on rows is written as `Sum` of the same
/// two inputs: the same one addition with the same broadcasting (opset 8 on), which that fusion
/// does not match, so the MatMul becomes ONNX Runtime's integer kernel. On rows: every one in a
/// `packed` graph; otherwise those of the blocks unpadded alone (their input traced back to the
/// block's `GatherND`), as the rewrite costs on the padded layout.
pub fn bias_sums(model: &mut ModelProto, packed: bool) -> Result<(), PassError> {
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    let qdq_matmul_on_rows = |v: &String| {
        ix.produced_by(v, "MatMul").is_some_and(|m| {
            let n = ix.node(m);
            n.input
                .get(1)
                .is_some_and(|w| ix.produced_by(w, "DequantizeLinear").is_some())
                && (packed || n.input.first().is_some_and(|x| unpadded_rows(&ix, x)))
        })
    };
    let adds: Vec<usize> = (0..g.node.len())
        .filter(|&i| ix.is_op(i, "Add") && ix.node(i).input.iter().any(qdq_matmul_on_rows))
        .collect();
    let g = crate::passes::graph_mut(model)?;
    for i in adds {
        g.node[i].op_type = Some("Sum".into());
    }
    Ok(())
}

/// Whether `v` is computed on the rows of a block unpadded alone: back through its first input
/// that is not a constant, node by node, to the block's `GatherND` (named with
/// [`super::split::UNPAD_GATHER`]), and only through what such a block holds: its row-wise ops
/// ([`super::split::ROW_WISE`]), the QDQ pairs, `Sum`s, and width `Slice`s / `Split`s (a gated
/// FFN's halves). A walk that leaves the block meets another op, or no `GatherND` of a block.
fn unpadded_rows(ix: &GraphIndex, v: &str) -> bool {
    const ALSO: [&str; 5] = ["QuantizeLinear", "DequantizeLinear", "Sum", "Slice", "Split"];
    let mut v = v.to_string();
    for _ in 0..64 {
        let Some(p) = ix.producer(&v) else { return false };
        let n = ix.node(p);
        if ix.is_op(p, "GatherND") {
            return n.name().ends_with(super::split::UNPAD_GATHER);
        }
        if !super::split::ROW_WISE.iter().chain(&ALSO).any(|op| n.op_type() == *op) {
            return false;
        }
        let Some(&next) = ix.dynamic_inputs(p).first() else {
            return false;
        };
        v = next.to_string();
    }
    false
}

/// Scale and zero point of an activation range: u8 asymmetric over [min(lo, 0), max(hi, 0)], or
/// s8 symmetric over ±max(|lo|, |hi|). `None` when the range is empty or not finite (a constant
/// zero activation): no scale would be valid.
pub fn activation_params(r: Range, ty: ActivationType) -> Option<(f32, i32)> {
    let (lo, hi) = (r.min.min(0.0), r.max.max(0.0));
    if !(lo.is_finite() && hi.is_finite()) {
        return None;
    }
    let (scale, zp) = match ty {
        ActivationType::U8 => {
            let s = (hi - lo) / 255.0;
            (s, (-lo / s).round().clamp(0.0, 255.0) as i32)
        }
        ActivationType::S8 => (hi.max(-lo) / 127.0, 0),
    };
    (scale.is_finite() && scale.is_normal() && scale > 0.0).then_some((scale, zp))
}

struct QWeight {
    q: String,
    scale: String,
    zp: String,
    /// Static mode: the DequantizeLinear output, once made.
    dq: Option<String>,
}

/// A statically quantized activation: the `QuantizeLinear` output, its scale and zero point, and
/// (QDQ form) the `DequantizeLinear` output.
#[derive(Clone)]
struct QAct {
    q: String,
    scale: String,
    zp: String,
    dq: Option<String>,
}

pub(super) fn rewrite(
    model: &ModelProto,
    opts: &QuantizeOptions,
    targets: &[Target],
    ranges: Option<&HashMap<String, Range>>,
    report: &mut QuantizeReport,
) -> Result<ModelProto, PassError> {
    let opset = default_opset(model);
    if opset < 13 {
        return Err(PassError::Unsupported(format!(
            "the model's opset is {opset}: int8 quantization writes QuantizeLinear/DequantizeLinear with an axis (opset 13 or later); upgrade the model first (re-export it with opset_version 13 or later, or onnx.version_converter.convert_version(model, 17))"
        )));
    }
    let mut m = model.clone();
    ensure_opset(&mut m, "com.microsoft", 1);
    let g = crate::passes::graph_mut(&mut m)?;
    let src = crate::passes::graph(model)?;
    let ix = GraphIndex::new(src);
    let mut patch = Patch::new(src);
    let mut weights: HashMap<String, QWeight> = HashMap::new();
    // Static: activation value → its quantized form (None: fell back to dynamic).
    let mut acts: HashMap<String, Option<QAct>> = HashMap::new();
    let qdq = opts.static_form == StaticForm::Qdq;
    let by_node: HashMap<usize, &Target> = targets.iter().map(|t| (t.node, t)).collect();
    // Dynamic and static `ort` form: a bias Add right after the MatMul folds into the integer
    // kernel's bias input, except where the sum feeds another Add (the residual before a
    // LayerNorm): ONNX Runtime would fuse that into SkipLayerNormalization, which runs slower on
    // CPU than Add + LayerNormalization.
    let mut fold: HashMap<usize, (usize, String)> = HashMap::new();
    if opts.mode == Mode::Dynamic || !qdq {
        for t in targets {
            let out = &src.node[t.node].output[0];
            if ix.is_graph_output(out) {
                continue;
            }
            let &[a] = ix.consumers(out) else { continue };
            let add = &src.node[a];
            if add.op_type() != "Add" || !add.domain().is_empty() || add.input.len() != 2 {
                continue;
            }
            let other = if add.input[0] == *out {
                &add.input[1]
            } else {
                &add.input[0]
            };
            let bias = ix.resolve(other);
            let Some(b) = ix.initializer(bias) else { continue };
            if b.data_type() != DataType::Float as i32 || b.dims != [t.cols as i64] {
                continue;
            }
            if ix
                .consumers(&add.output[0])
                .iter()
                .any(|&c| src.node[c].op_type() == "Add")
            {
                continue;
            }
            fold.insert(t.node, (a, bias.to_string()));
        }
    }
    let folded: HashSet<usize> = fold.values().map(|v| v.0).collect();
    // Dynamic: an activation read by several MatMuls (Q, K, V) is quantized once by a
    // DynamicQuantizeLinear, and each reads it through MatMulIntegerToFloat.
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for t in targets {
        *readers.entry(t.input.as_str()).or_default() += 1;
    }
    let mut dyn_shared: HashMap<String, [String; 3]> = HashMap::new();

    // Embedding tables read by a Gather with computed indices.
    let mut tables: HashMap<String, (String, String, String)> = HashMap::new();
    let mut gathers: HashMap<usize, String> = HashMap::new();
    if opts.embeddings {
        for (i, n) in src.node.iter().enumerate() {
            if n.op_type() != "Gather" || !n.domain().is_empty() || n.input.len() != 2 {
                continue;
            }
            if ix.attr_i(i, "axis").unwrap_or(0) != 0 || ix.constant(&n.input[1]).is_some() {
                continue;
            }
            let Some(c) = ix.constant(&n.input[0]) else { continue };
            let t = c.tensor();
            if t.data_type() != DataType::Float as i32 || t.dims.len() != 2 || t.dims.iter().any(|&d| d <= 0) {
                continue;
            }
            let name = ix.constant_name(&n.input[0]).unwrap_or_else(|| n.input[0].clone());
            if !tables.contains_key(&name) {
                let (rows, cols) = (t.dims[0] as usize, t.dims[1] as usize);
                let w = tensor::to_f32(t)?;
                let (q, scales, zero) = quantize_weight(&w, rows, cols, opts.per_channel);
                if zero > 0 {
                    report.warnings.push(format!(
                        "embedding table '{name}': {zero} all-zero column(s) got scale 1 (stored as exact zeros)"
                    ));
                }
                let qn = patch.fresh_name(&format!("{name}_quantized"));
                let sn = patch.fresh_name(&format!("{name}_scale"));
                let zn = patch.fresh_name(&format!("{name}_zero_point"));
                let sd: Vec<usize> = if opts.per_channel { vec![cols] } else { vec![] };
                patch.add_initializer(from_i8(&qn, &[rows, cols], &q));
                patch.add_initializer(tensor::from_f32(&sn, &sd, &scales));
                if !opts.per_channel {
                    patch.add_initializer(from_i8(&zn, &sd, &[0]));
                }
                report.embeddings.push(EmbeddingReport {
                    table: name.clone(),
                    rows,
                    cols,
                    stored: "int8",
                });
                tables.insert(name.clone(), (qn, sn, zn));
            }
            gathers.insert(i, name);
        }
    }

    for (i, n) in src.node.iter().enumerate() {
        if folded.contains(&i) {
            patch.remove_node(i);
            continue;
        }
        if let Some(table) = gathers.get(&i) {
            let (qn, sn, zn) = &tables[table];
            let out = &n.output[0];
            let gq = patch.fresh_name(&format!("{out}_quantized"));
            let mut gn = n.clone();
            gn.input[0] = qn.clone();
            gn.output[0] = gq.clone();
            let mut nodes = vec![gn];
            if opts.per_channel {
                let gf = patch.fresh_name(&format!("{out}_int8_as_float"));
                nodes.push(with_attrs(
                    node("Cast", &format!("{}_to_float", n.name()), &[&gq], &[&gf]),
                    vec![attr_int("to", DataType::Float as i64)],
                ));
                nodes.push(node("Mul", &format!("{}_dequantize", n.name()), &[&gf, sn], &[out]));
            } else {
                nodes.push(node(
                    "DequantizeLinear",
                    &format!("{}_dequantize", n.name()),
                    &[&gq, sn, zn],
                    &[out],
                ));
            }
            patch.replace_node(i, nodes);
            continue;
        }
        let Some(t) = by_node.get(&i) else { continue };
        // The weight, quantized once however many MatMuls share it.
        if !weights.contains_key(&t.weight) {
            let c = ix
                .constant(&n.input[1])
                .ok_or_else(|| PassError::Internal(format!("weight of '{}' is not a constant", t.name)))?;
            let w = tensor::to_f32(c.tensor())?;
            let names = add_quantized_weight(
                &mut patch,
                &t.weight,
                (&t.name, n.op_type()),
                &w,
                (t.rows, t.cols),
                opts,
                report,
            );
            weights.insert(
                t.weight.clone(),
                QWeight {
                    q: names.q,
                    scale: names.scale,
                    zp: names.zero_point,
                    dq: None,
                },
            );
        } else {
            // Shared: the same weight, so the same errors.
            let mut r = report
                .matmuls
                .iter()
                .find(|r| r.weight == t.weight)
                .cloned()
                .ok_or_else(|| PassError::Internal(format!("weight '{}' quantized but not reported", t.weight)))?;
            r.node = t.name.clone();
            report.matmuls.push(r);
        }
        // The activation: static QDQ (once per value), or dynamic.
        let act = match (opts.mode, ranges) {
            (Mode::Static, Some(ranges)) => {
                if !acts.contains_key(&t.input) {
                    let r = ranges
                        .get(&t.input)
                        .copied()
                        .ok_or_else(|| PassError::Internal(format!("no calibrated range for '{}'", t.input)))?;
                    match activation_params(r, opts.activation_type) {
                        Some((scale, zp)) => {
                            let base = t.input.trim_start_matches('/').replace('/', "_");
                            let sn = patch.fresh_name(&format!("{base}_scale"));
                            let zn = patch.fresh_name(&format!("{base}_zero_point"));
                            let qv = patch.fresh_name(&format!("{}_quantized", t.input));
                            patch.add_initializer(tensor::from_f32(&sn, &[], &[scale]));
                            match opts.activation_type {
                                ActivationType::U8 => patch.add_initializer(from_u8(&zn, &[], &[zp as u8])),
                                ActivationType::S8 => patch.add_initializer(from_i8(&zn, &[], &[zp as i8])),
                            }
                            patch.insert_before(
                                i,
                                node(
                                    "QuantizeLinear",
                                    &format!("{base}_QuantizeLinear"),
                                    &[&t.input, &sn, &zn],
                                    &[&qv],
                                ),
                            );
                            let dqv = qdq.then(|| {
                                let dqv = patch.fresh_name(&format!("{}_dequantized", t.input));
                                patch.insert_before(
                                    i,
                                    node(
                                        "DequantizeLinear",
                                        &format!("{base}_DequantizeLinear"),
                                        &[&qv, &sn, &zn],
                                        &[&dqv],
                                    ),
                                );
                                dqv
                            });
                            let readers: Vec<String> = targets
                                .iter()
                                .filter(|o| o.input == t.input)
                                .map(|o| o.name.clone())
                                .collect();
                            report.activations.push(ActivationReport {
                                value: t.input.clone(),
                                nodes: readers,
                                min: r.min,
                                max: r.max,
                                scale,
                                zero_point: zp,
                            });
                            acts.insert(
                                t.input.clone(),
                                Some(QAct {
                                    q: qv,
                                    scale: sn,
                                    zp: zn,
                                    dq: dqv,
                                }),
                            );
                        }
                        None => {
                            report.warnings.push(format!(
                                "activation '{}' of '{}' had no usable range on the calibration data (min {}, max {}): its MatMuls quantize it at run time (dynamic) instead",
                                t.input, t.name, r.min, r.max
                            ));
                            acts.insert(t.input.clone(), None);
                        }
                    }
                }
                acts[&t.input].clone()
            }
            _ => None,
        };
        let w = weights
            .get_mut(&t.weight)
            .ok_or_else(|| PassError::Internal("weight not quantized".into()))?;
        // A bias Add folded into the integer kernel: the kernel writes the Add's output.
        let (bias, output) = match fold.get(&i) {
            Some((a, bias)) => (Some(bias.as_str()), src.node[*a].output[0].as_str()),
            None => (None, n.output[0].as_str()),
        };
        // The u8 activation read by MatMulIntegerToFloat: static (`ort` form), or one
        // DynamicQuantizeLinear shared by the MatMuls reading the same value (Q/K/V).
        let int_act: Option<[String; 3]> = match act {
            Some(QAct { dq: Some(dqv), .. }) => {
                if w.dq.is_none() {
                    let base = t.weight.trim_start_matches('/').replace('/', "_");
                    let out = patch.fresh_name(&format!("{}_dequantized", t.weight));
                    let mut dq = node(
                        "DequantizeLinear",
                        &format!("{base}_DequantizeLinear"),
                        &[&w.q, &w.scale, &w.zp],
                        &[&out],
                    );
                    if opts.per_channel {
                        dq = with_attrs(dq, vec![attr_int("axis", 1)]);
                    }
                    patch.insert_before(i, dq);
                    w.dq = Some(out);
                }
                let mut mm = n.clone();
                mm.input = vec![dqv, w.dq.clone().unwrap_or_default()];
                patch.replace_node(i, vec![mm]);
                continue;
            }
            Some(QAct { q, scale, zp, dq: None }) => Some([q, scale, zp]),
            None if readers[t.input.as_str()] > 1 => {
                if !dyn_shared.contains_key(&t.input) {
                    let base = t.input.trim_start_matches('/').replace('/', "_");
                    let outs = [
                        patch.fresh_name(&format!("{}_quantized", t.input)),
                        patch.fresh_name(&format!("{}_scale", t.input)),
                        patch.fresh_name(&format!("{}_zero_point", t.input)),
                    ];
                    patch.insert_before(
                        i,
                        node(
                            "DynamicQuantizeLinear",
                            &format!("{base}_DynamicQuantizeLinear"),
                            &[&t.input],
                            &[&outs[0], &outs[1], &outs[2]],
                        ),
                    );
                    dyn_shared.insert(t.input.clone(), outs);
                }
                Some(dyn_shared[&t.input].clone())
            }
            None => None,
        };
        let mut kernel = match &int_act {
            Some([q, s, z]) => {
                let mut inputs = vec![q.as_str(), &w.q, s, &w.scale, z, &w.zp];
                inputs.extend(bias);
                node("MatMulIntegerToFloat", n.name(), &inputs, &[output])
            }
            None => {
                let mut inputs = vec![t.input.as_str(), &w.q, &w.scale, &w.zp];
                inputs.extend(bias);
                node("DynamicQuantizeMatMul", n.name(), &inputs, &[output])
            }
        };
        kernel.doc_string = n.doc_string.clone();
        patch.replace_node(i, vec![with_domain(kernel, "com.microsoft")]);
    }
    patch.remove_unused();
    patch.apply(g)?;
    // Value types of rewired values did not change, but drop annotations of removed values.
    let live: HashSet<String> = g.node.iter().flat_map(|n| n.output.iter().cloned()).collect();
    g.value_info.retain(|v| live.contains(v.name()));
    Ok(m)
}
