//! Quantization: int8 weights within scale/2 of the originals, quantized models that agree with
//! float32 in ONNX Runtime (synthetic models and, when present, the shared models on GLUE dev),
//! integer kernels in the graph ONNX Runtime runs, float16 that keeps float32 where it must,
//! fallbacks for constant activations, and clean errors for bad options and quantized inputs.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use onnx_compress::executor::weight_elements;
use onnx_compress::onnx::proto::tensor_proto::DataType;
use onnx_compress::onnx::{self, tensor, GraphIndex, ModelProto, SaveOptions};
use onnx_compress::passes::quantize::fp16::f16_to_f32;
use onnx_compress::passes::quantize::{
    self, ActivationType, CalibMethod, Fp16Float32, Mode, QuantizeOptions, StaticForm, WeightType,
};
use onnx_compress::passes::{Calibrator, PassError, Sink};
use onnx_compress::runtime::{self, Batch, SessionOptions};
use onnx_compress::testkit::shared::{require, require_ort};
use onnx_compress::testkit::synth::{random_batches, tiny_bert, ShapeStyle, SynthOptions};

mod common;

use common::{bin, calibrator, logits_and_labels, optimized, vnni};

fn synth() -> ModelProto {
    tiny_bert(&SynthOptions {
        layers: 2,
        heads: 4,
        head_size: 8,
        ffn: 64,
        shapes: ShapeStyle::ConcatInferred,
        seed: 11,
        ..Default::default()
    })
}

/// Logits of `m` on each batch, concatenated (two labels each).
fn logits(m: &ModelProto, bs: &[Batch], what: &str) -> Vec<f32> {
    let (l, n) = logits_and_labels(m, bs, what);
    assert_eq!(n, 2);
    l
}

/// The largest relative logit error dynamic INT8 may show on the random tiny model: 0.05 with
/// VNNI; 0.10 without (measured on an AVX2-only EPYC: 0.081 and 0.087).
fn dynamic_tolerance() -> f32 {
    if vnni() {
        0.05
    } else {
        0.10
    }
}

/// (largest |difference| relative to the largest |logit|, share of equal argmaxes).
fn compare(a: &[f32], b: &[f32]) -> (f32, f64) {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = common::max_diff(a, b);
    let rows = a.len() / 2;
    let same = (0..rows)
        .filter(|&r| (a[2 * r] > a[2 * r + 1]) == (b[2 * r] > b[2 * r + 1]))
        .count();
    (diff / scale, same as f64 / rows as f64)
}

fn opts(mode: Mode) -> QuantizeOptions {
    QuantizeOptions {
        mode,
        ..Default::default()
    }
}

fn ops(m: &ModelProto) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *c.entry(n.op_type().to_string()).or_default() += 1;
    }
    c
}

fn int8_values(t: &onnx::TensorProto) -> Vec<i8> {
    assert_eq!(t.data_type(), DataType::Int8 as i32, "{}", t.name());
    t.raw_data.as_ref().unwrap().iter().map(|&b| b as i8).collect()
}

/// Every quantized weight and embedding table of `q`, dequantized, lies within scale/2 of the
/// float32 original in `m` (plus float rounding of the product). Returns how many were checked.
fn check_weights(m: &ModelProto, q: &ModelProto, per_channel: bool) -> usize {
    let orig = GraphIndex::new(m.graph.as_ref().unwrap());
    let g = q.graph.as_ref().unwrap();
    let ix = GraphIndex::new(g);
    let mut checked = 0;
    for t in &g.initializer {
        let Some(base) = t.name().strip_suffix("_quantized") else {
            continue;
        };
        if t.data_type() != DataType::Int8 as i32 {
            continue;
        }
        let w = tensor::to_f32(
            orig.initializer(base)
                .unwrap_or_else(|| panic!("original of {}", t.name())),
        )
        .unwrap();
        let scales = ix
            .const_f32(&format!("{base}_scale"))
            .expect("scale beside the int8 weight");
        // Per-channel embedding tables are dequantized by Cast + Mul: no zero point stored.
        if let Some(z) = ix.initializer(&format!("{base}_zero_point")) {
            assert!(int8_values(z).iter().all(|&z| z == 0), "weights are symmetric");
        }
        let cols = t.dims[1] as usize;
        assert_eq!(scales.len(), if per_channel { cols } else { 1 }, "{base}");
        assert!(scales.iter().all(|s| s.is_finite() && *s > 0.0), "{base}: {scales:?}");
        for (k, (&qv, &wv)) in int8_values(t).iter().zip(&w).enumerate() {
            assert!((-127..=127).contains(&qv));
            let s = scales[if per_channel { k % cols } else { 0 }];
            let err = (qv as f32 * s - wv).abs();
            assert!(
                err <= s / 2.0 + 1e-6 * wv.abs(),
                "{base}[{k}]: {wv} vs {} (scale {s})",
                qv as f32 * s
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn dequantized_weights_lie_within_half_a_scale() {
    let m = synth();
    for per_channel in [true, false] {
        let o = QuantizeOptions {
            per_channel,
            ..opts(Mode::Dynamic)
        };
        let (q, r) = quantize::quantize(&m, &o, None).unwrap();
        // 2 layers × 6 projections, plus Q, K, V and each FFN's up and down again for the first
        // token (the split, on by default; one weight serves both halves), less the last FFN's
        // other-tokens half and the last queries' (the pooler reads only the first token), and
        // three embedding tables.
        assert_eq!(r.matmuls.len(), 12 + 2 * 5 - 2 - 1);
        assert_eq!(r.embeddings.len(), 3);
        assert_eq!(check_weights(&m, &q, per_channel), 15);
        for mm in &r.matmuls {
            assert!(mm.max_weight_error <= mm.max_half_scale * (1.0 + 1e-5), "{mm:?}");
        }
        // No float MatMul with a constant weight is left.
        let ix = GraphIndex::new(q.graph.as_ref().unwrap());
        for n in &q.graph.as_ref().unwrap().node {
            if n.op_type() == "MatMul" {
                assert!(
                    ix.constant(&n.input[1]).is_none(),
                    "{} still has a float weight",
                    n.name()
                );
            }
        }
    }
}

#[test]
fn weight_quantization_handles_zero_columns_and_rounding() {
    // A zero column must not get scale 0; values round to the nearest step.
    let w = [0.0f32, 1.0, 0.0, -0.5, 0.0, 0.25];
    let (q, s, zero) = onnx_compress::passes::quantize::quantize_weight(&w, 3, 2, true);
    assert_eq!(zero, 1);
    assert_eq!(s, vec![1.0, 1.0 / 127.0]);
    assert_eq!(q, vec![0, 127, 0, -64, 0, 32]);
    let (q, s, _) = onnx_compress::passes::quantize::quantize_weight(&w, 3, 2, false);
    assert_eq!(s, vec![1.0 / 127.0]);
    assert_eq!(q, vec![0, 127, 0, -64, 0, 32]);
}

#[test]
fn dynamic_agrees_with_float32_and_runs_integer_kernels() {
    if !require_ort("dynamic quantization in ONNX Runtime") {
        return;
    }
    let m = synth();
    let bs = random_batches(6, 3);
    let f = logits(&m, &bs, "float32");
    for per_channel in [true, false] {
        let (q, _) = quantize::quantize(
            &m,
            &QuantizeOptions {
                per_channel,
                ..opts(Mode::Dynamic)
            },
            None,
        )
        .unwrap();
        let c = ops(&q);
        assert_eq!(
            c.get("DynamicQuantizeMatMul").copied().unwrap_or(0) + c["MatMulIntegerToFloat"],
            12 + 2 * 5 - 2 - 1,
            "6 projections a layer; Q, K, V, FFN up and down again for the first token; not the last FFN's or queries' other tokens"
        );
        // Its parameters are the float model's: the scales and zero points are not counted.
        assert_eq!(
            onnx_compress::executor::weight_elements(&q),
            onnx_compress::executor::weight_elements(&m),
            "per_channel {per_channel}"
        );
        let l = logits(&q, &bs, "dynamic");
        let (rel, agree) = compare(&f, &l);
        assert!(
            rel < dynamic_tolerance(),
            "per_channel {per_channel}: logits differ by {rel} of their scale"
        );
        assert!(agree >= 0.98, "per_channel {per_channel}: agreement {agree}");
    }
}

/// `--weight-type u8` stores the s8 values plus 128 with zero point 128, and then ONNX Runtime's
/// u8 × u8 kernels compute exactly on every CPU: the VNNI bar holds on an AVX2-only CPU too,
/// where s8 weights need the looser one.
#[test]
fn u8_weights_are_the_s8_values_shifted_and_exact_on_every_cpu() {
    if !require_ort("dynamic quantization in ONNX Runtime") {
        return;
    }
    let m = synth();
    let (s8, _) = quantize::quantize(&m, &opts(Mode::Dynamic), None).unwrap();
    let u8_opts = QuantizeOptions {
        weight_type: WeightType::U8,
        ..opts(Mode::Dynamic)
    };
    let (u8q, report) = quantize::quantize(&m, &u8_opts, None).unwrap();
    assert_eq!(report.options.weight_type, WeightType::U8);
    let shifted = GraphIndex::new(u8q.graph.as_ref().unwrap());
    let mut checked = 0;
    for t in &s8.graph.as_ref().unwrap().initializer {
        let Some(base) = t.name().strip_suffix("_quantized") else {
            continue;
        };
        let Some(u) = shifted.initializer(t.name()) else {
            continue;
        };
        if u.data_type() != DataType::Uint8 as i32 {
            continue; // an embedding table: stays int8
        }
        let uv = u.raw_data.as_ref().unwrap();
        assert!(
            int8_values(t)
                .iter()
                .zip(uv.iter())
                .all(|(&q, &v)| q as i16 + 128 == v as i16),
            "{base}"
        );
        let z = shifted
            .initializer(&format!("{base}_zero_point"))
            .expect("a zero point");
        assert_eq!(z.data_type(), DataType::Uint8 as i32);
        assert!(z.raw_data.as_ref().unwrap().iter().all(|&v| v == 128), "{base}");
        checked += 1;
    }
    assert!(checked >= 12, "{checked} u8 weights checked");
    let bs = random_batches(6, 3);
    let f = logits(&m, &bs, "float32");
    let (rel, agree) = compare(&f, &logits(&u8q, &bs, "dynamic, u8 weights"));
    assert!(rel < 0.05, "u8 weights: logits differ by {rel} of their scale");
    assert!(agree >= 0.98, "u8 weights: agreement {agree}");
}

#[test]
fn static_qdq_agrees_with_float32_and_becomes_integer_matmuls() {
    if !require_ort("static quantization in ONNX Runtime") {
        return;
    }
    let m = synth();
    let bs = random_batches(6, 3);
    let f = logits(&m, &bs, "float32");
    let mut minmax: HashMap<String, (f32, f32)> = HashMap::new();
    for method in [CalibMethod::Minmax, CalibMethod::Percentile, CalibMethod::Entropy] {
        for act in [ActivationType::U8, ActivationType::S8] {
            let o = QuantizeOptions {
                calib_method: method,
                activation_type: act,
                ..opts(Mode::Static)
            };
            let mut cal = calibrator(8, 7);
            let (q, r) = quantize::quantize(&m, &o, Some(&mut cal)).unwrap();
            // One QDQ pair per distinct MatMul input: Q/K/V share the LayerNorm output, and the
            // FFN's two inputs are split into the first token and the others: 6 a layer, less
            // the last FFN's other-tokens half (static mode splits the FFNs only). The last
            // queries read the first token's slice of the layer input: one more pair, calibrated
            // on the whole layer input (the same parameters as the keys' and values').
            assert_eq!(r.activations.len(), 2 * 6 - 2 + 1, "{method:?}");
            let c = ops(&q);
            assert_eq!(c["QuantizeLinear"], 10 + 1);
            // 11 activation pairs, 12 weights (each FFN weight serves both halves); the 3 embedding
            // tables go through Cast + Mul (per-channel scales), which ONNX Runtime runs vectorized.
            assert_eq!(c["DequantizeLinear"], 11 + 12);
            let g = q.graph.as_ref().unwrap();
            let gathered_int8 = g
                .node
                .iter()
                .filter(|n| n.op_type() == "Gather" && n.input[0].ends_with("_quantized"))
                .map(|n| n.output[0].clone())
                .collect::<HashSet<_>>();
            let casts = g
                .node
                .iter()
                .filter(|n| n.op_type() == "Cast" && gathered_int8.contains(&n.input[0]))
                .count();
            assert_eq!((gathered_int8.len(), casts), (3, 3));
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
            for a in &r.activations {
                assert!(a.scale.is_finite() && a.scale > 0.0, "{a:?}");
                // Percentile and entropy only ever clip the min/max range.
                if method == CalibMethod::Minmax {
                    minmax.insert(a.value.clone(), (a.min, a.max));
                } else {
                    let (lo, hi) = minmax[&a.value];
                    assert!(a.min >= lo && a.max <= hi, "{method:?} {a:?} outside [{lo}, {hi}]");
                }
                assert!(a.min <= a.max, "{a:?}");
                if act == ActivationType::S8 {
                    assert_eq!(a.zero_point, 0);
                } else {
                    assert!((0..=255).contains(&a.zero_point));
                }
            }
            check_weights(&m, &q, true);
            let l = logits(&q, &bs, "static");
            let (rel, agree) = compare(&f, &l);
            if method == CalibMethod::Entropy {
                // Entropy clips the long tails of hidden states (BERT's outlier features) hard:
                // it runs, but is not held to the accuracy bar (see README).
                continue;
            }
            assert!(rel < 0.1, "{method:?} {act:?}: logits differ by {rel} of their scale");
            // Without VNNI (see `vnni`), 0.97: measured 0.979 for minmax S8 on an AVX2-only EPYC.
            let bar = if vnni() { 0.98 } else { 0.97 };
            assert!(agree >= bar, "{method:?} {act:?}: agreement {agree}");
            if method == CalibMethod::Minmax && act == ActivationType::U8 {
                // ONNX Runtime fuses every QDQ MatMul into an integer kernel: no float MatMul reads a
                // weight any more (the two attention MatMuls per layer stay float).
                let oc = ops(&optimized(&q));
                assert_eq!(
                    oc.get("MatMulIntegerToFloat").copied().unwrap_or(0),
                    12 + 2 * 2 - 2,
                    "{oc:?}"
                );
                assert!(oc.get("MatMul").copied().unwrap_or(0) <= 4, "{oc:?}");
            }
        }
    }
}

/// `--static-form ort` writes what ONNX Runtime makes of the QDQ form itself — QuantizeLinear with
/// the calibrated scale, then MatMulIntegerToFloat — with the bias Adds folded in where that is
/// allowed, and computes the same logits as the QDQ model up to float rounding.
#[test]
fn static_ort_form_matches_qdq_with_biases_folded() {
    if !require_ort("static quantization in ONNX Runtime") {
        return;
    }
    let m = synth();
    let bs = random_batches(6, 3);
    let (qdq, rq) = quantize::quantize(&m, &opts(Mode::Static), Some(&mut calibrator(8, 7))).unwrap();
    let o = QuantizeOptions {
        static_form: StaticForm::Ort,
        ..opts(Mode::Static)
    };
    let (fused, rf) = quantize::quantize(&m, &o, Some(&mut calibrator(8, 7))).unwrap();
    assert!(rf.warnings.is_empty(), "{:?}", rf.warnings);
    // The same calibrated activation parameters.
    let params = |r: &quantize::QuantizeReport| {
        r.activations
            .iter()
            .map(|a| (a.value.clone(), a.scale.to_bits(), a.zero_point))
            .collect::<Vec<_>>()
    };
    assert_eq!(params(&rq), params(&rf));
    let c = ops(&fused);
    // As in QDQ form: 10 activations and the last queries' slice of the layer input.
    assert_eq!(c["QuantizeLinear"], 10 + 1);
    assert_eq!(c.get("DequantizeLinear").copied().unwrap_or(0), 0, "{c:?}");
    assert_eq!(c["MatMulIntegerToFloat"], 12 + 2 * 2 - 2);
    assert_eq!(
        (c.get("MatMul"), c.get("FusedMatMul"), c["Attention"]),
        (None, None, 2),
        "only the attention products stay float, inside one Attention op per layer: {c:?}"
    );
    // Q/K/V and both halves' FFN up and down biases fold (7 in layer 0): the split FFN's
    // down-projection feeds the Concat that joins the halves; the attention-output bias feeds a
    // residual Add. Layer 1 runs its FFN on the first token only: Q/K/V and FFN up fold (4), its
    // down-projection feeds the residual Add.
    let with_bias = fused
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type() == "MatMulIntegerToFloat" && n.input.len() == 7)
        .count();
    assert_eq!(with_bias, 7 + 4);
    // 11 folded, 3 more in layer 0's first-token copy (two biases and GELU's Add); layer 1's
    // first-token FFN and tail replace the originals; the two mask Adds are in the Attention ops.
    assert_eq!(ops(&m)["Add"] + 3 - c["Add"], 11 + 2);
    check_weights(&m, &fused, true);
    let (a, b) = (logits(&qdq, &bs, "qdq"), logits(&fused, &bs, "fused"));
    let (rel, agree) = compare(&a, &b);
    assert!(rel < 1e-3 && agree == 1.0, "{rel} {agree}");
}

/// This tool's int8 forms in ONNX Runtime's operators (dynamic, static `ort`) read attention's
/// keys transposed by the score product (`FusedMatMul` with `transB`) instead of through the
/// exporters' [0,2,3,1] `Transpose`: the same products, so the same logits. The portable QDQ form
/// and the reference's methods keep the exporter's graph.
#[test]
fn score_products_read_the_keys_transposed_with_the_same_logits() {
    if !require_ort("the keys rewrite in ONNX Runtime") {
        return;
    }
    let m = synth();
    let bs = random_batches(6, 3);
    let key_transposes = |m: &ModelProto| {
        let g = m.graph.as_ref().unwrap();
        let ix = GraphIndex::new(g);
        (0..g.node.len())
            .filter(|&i| g.node[i].op_type() == "Transpose" && ix.attr_ints(i, "perm") == Some(vec![0, 2, 3, 1]))
            .count()
    };
    assert_eq!(key_transposes(&m), 2);
    let (k, n) = quantize::keys::read_keys_transposed(&m).unwrap();
    assert_eq!((n, key_transposes(&k), ops(&k)["FusedMatMul"]), (2, 0, 2));
    let (a, b) = (logits(&m, &bs, "float32"), logits(&k, &bs, "keys read transposed"));
    let (rel, agree) = compare(&a, &b);
    assert!(rel < 1e-5 && agree == 1.0, "{rel} {agree}");
    // Once is enough: nothing left to rewrite.
    assert_eq!(quantize::keys::read_keys_transposed(&k).unwrap().1, 0);

    let ort = QuantizeOptions {
        static_form: StaticForm::Ort,
        ..opts(Mode::Static)
    };
    let unsplit = QuantizeOptions {
        split_first_token: false,
        per_channel: false,
        ..opts(Mode::Dynamic)
    };
    // In the quantize pass, ONNX Runtime's forms run each attention core as one Attention op,
    // which reads the keys in place: no key transpose is left to rewrite.
    for (what, o, one_op) in [
        ("dynamic", opts(Mode::Dynamic), 2),
        ("static, ORT form", ort, 2),
        ("static, QDQ form", opts(Mode::Static), 0),
        ("dynamic as the reference's methods", unsplit, 0),
    ] {
        let (q, r) = quantize::quantize(&m, &o, Some(&mut calibrator(8, 7))).unwrap();
        assert_eq!((r.attention_ops, r.keys_read_transposed), (one_op, 0), "{what}");
        assert_eq!(key_transposes(&q), 2 - one_op, "{what}");
        assert_eq!(ops(&q).get("Attention").copied().unwrap_or(0), one_op, "{what}");
        assert!(!ops(&q).contains_key("FusedMatMul"), "{what}");
        logits(&q, &bs, what);
    }
}

fn default_opset(m: &ModelProto) -> i64 {
    m.opset_import.iter().find(|o| o.domain().is_empty()).unwrap().version()
}

/// `--no-attention-op` keeps each attention core as the separate ops it was, in the model's
/// opset (for runtimes without opset 23), with the same logits as the one-op model; where no op
/// would be written the flag is refused and nothing is written.
#[test]
fn no_attention_op_keeps_the_separate_ops_in_the_models_opset() {
    if !require_ort("the Attention op in ONNX Runtime") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = synth();
    let input = save(&m, dir.path(), "in.onnx");
    let quantized = |extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let o = bin()
            .args(["quantize", "--json", "--mode", "dynamic"])
            .args(extra)
            .arg(&input)
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (onnx::load(&out).unwrap(), r)
    };
    let (one, r1) = quantized(&[], "one.onnx");
    let (kept, r2) = quantized(&["--no-attention-op"], "kept.onnx");
    assert_eq!(
        (r1["attention_ops"].as_u64(), r2["attention_ops"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(r2["keys_read_transposed"].as_u64(), Some(2), "{r2}");
    assert_eq!(r2["options"]["attention_op"], false);
    assert_eq!((default_opset(&one), default_opset(&kept)), (23, default_opset(&m)));
    assert!(!ops(&kept).contains_key("Attention"), "{:?}", ops(&kept));
    assert_eq!(ops(&kept)["Softmax"], 2);
    let bs = random_batches(6, 3);
    let (x, y) = (logits(&one, &bs, "one op"), logits(&kept, &bs, "separate ops"));
    let (rel, agree) = compare(&x, &y);
    assert!(rel < 1e-5 && agree == 1.0, "{rel} {agree}");

    let out = dir.path().join("refused.onnx");
    for args in [
        &["--mode", "fp16"][..],
        &["--mode", "dynamic", "--per-tensor"][..],
        &["--mode", "dynamic", "--no-split-first-token"][..],
    ] {
        let o = bin()
            .arg("quantize")
            .args(args)
            .arg("--no-attention-op")
            .arg(&input)
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("--no-attention-op: no Attention op would be written"),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}

/// Each attention core (head transposes, score product, scale, mask Add, softmax, weighted sum,
/// context transpose) becomes one ONNX `Attention` op, opset 23, with the same logits: for every
/// way the exporters write the head split, for scales after the product or on Q and K before it,
/// and with other `Reduce*` and `Split` nodes in the graph rewritten for opset 18's inputs.
#[test]
fn attention_cores_run_as_one_op_with_the_same_logits() {
    if !require_ort("the Attention op in ONNX Runtime") {
        return;
    }
    use quantize::attention_op::{heads_by_softmax, one_op_attention};
    let bs = random_batches(6, 3);
    for shapes in [
        ShapeStyle::ConcatInferred,
        ShapeStyle::ConcatExplicit,
        ShapeStyle::SharedInitializer,
        ShapeStyle::ConstantPerReshape,
        ShapeStyle::ShapeSlices,
    ] {
        // transformers' SDPA guard after the softmax, Where(IsNaN(p), 0, p), goes in too.
        let nan_guard = shapes == ShapeStyle::ConcatInferred;
        let m = tiny_bert(&SynthOptions {
            shapes,
            nan_guard,
            seed: 5,
            ..Default::default()
        });
        let (a, n, why) = one_op_attention(&m, &heads_by_softmax(&m)).unwrap();
        assert_eq!((n, why), (2, None), "{shapes:?}");
        if nan_guard {
            assert!(!ops(&a).contains_key("IsNaN"), "{:?}", ops(&a));
        }
        let c = ops(&a);
        assert_eq!(c["Attention"], 2, "{shapes:?}");
        for gone in ["Softmax", "Transpose", "MatMul"] {
            // The only float MatMuls left read weights (none in the attention core).
            let left = c.get(gone).copied().unwrap_or(0);
            let weights = if gone == "MatMul" { ops(&m)["MatMul"] - 4 } else { 0 };
            assert_eq!(left, weights, "{shapes:?}: {gone} {c:?}");
        }
        assert_eq!(default_opset(&a), 23);
        let (x, y) = (logits(&m, &bs, "chain"), logits(&a, &bs, "one op"));
        let (rel, agree) = compare(&x, &y);
        assert!(rel < 1e-5 && agree == 1.0, "{shapes:?}: {rel} {agree}");
    }

    // Scale d^-1/4 on Q and on K before the product (transformers 5 SDPA's constants), not after.
    let m = synth();
    let mut s = m.clone();
    let g = s.graph.as_mut().unwrap();
    let quarter = (8f32).powf(-0.25);
    g.initializer.push(tensor::from_f32("quarter", &[], &[quarter]));
    let mut moved = 0;
    for layer in ["layer.0", "layer.1"] {
        let at = |g: &onnx::proto::GraphProto, suffix: &str| {
            g.node
                .iter()
                .position(|n| n.name().contains(layer) && n.name().contains(suffix))
                .unwrap()
        };
        // scores·(1/√d) → scores·1, and Q and K each times d^-1/4 before the product.
        let scale = at(g, "/scale_");
        g.node[scale].input[1] = "one".into();
        for slot in 0..2 {
            let scores = at(g, "/scores_");
            let v = g.node[scores].input[slot].clone();
            let scaled = format!("{v}_scaled");
            g.node[scores].input[slot] = scaled.clone();
            g.node
                .insert(scores, onnx::build::node("Mul", &scaled, &[&v, "quarter"], &[&scaled]));
        }
        moved += 1;
    }
    assert_eq!(moved, 2);
    g.initializer.push(tensor::from_f32("one", &[], &[1.0]));
    let (x, y) = (logits(&m, &bs, "chain"), logits(&s, &bs, "chain, scaled before"));
    assert!(compare(&x, &y).0 < 1e-5, "{:?}", compare(&x, &y));
    let (a, n, _) = one_op_attention(&s, &heads_by_softmax(&m)).unwrap();
    assert_eq!(n, 2);
    let (x, y) = (logits(&m, &bs, "chain"), logits(&a, &bs, "one op, scaled before"));
    let (rel, agree) = compare(&x, &y);
    assert!(rel < 1e-5 && agree == 1.0, "scaled before: {rel} {agree}");

    // A scalar on V before the product scales the context: it stays in the op's V (taken as
    // [batch, heads, seq, head], the scaled value itself).
    let mut v2 = m.clone();
    let g = v2.graph.as_mut().unwrap();
    g.initializer.push(tensor::from_f32("two", &[], &[2.0]));
    for layer in ["layer.0", "layer.1"] {
        let ctx = g
            .node
            .iter()
            .position(|n| n.name().contains(layer) && n.name().contains("/context_"))
            .unwrap();
        let v = g.node[ctx].input[1].clone();
        let doubled = format!("{v}_doubled");
        g.node[ctx].input[1] = doubled.clone();
        g.node
            .insert(ctx, onnx::build::node("Mul", &doubled, &[&v, "two"], &[&doubled]));
    }
    let (a, n, _) = one_op_attention(&v2, &heads_by_softmax(&m)).unwrap();
    assert_eq!(n, 2);
    let (x, y) = (
        logits(&v2, &bs, "chain, V doubled"),
        logits(&a, &bs, "one op, V doubled"),
    );
    let (rel, agree) = compare(&x, &y);
    assert!(rel < 1e-5 && agree == 1.0, "V doubled: {rel} {agree}");

    // Opset 17 → 23: a ReduceMean's axes attribute becomes an input, a Split without sizes gets
    // its outputs' count; both still compute what they did.
    let mut r = m.clone();
    let g = r.graph.as_mut().unwrap();
    let logits_name = g.output[0].name().to_string();
    g.node.push(onnx::build::with_attrs(
        onnx::build::node("ReduceMean", "mean", &[&logits_name], &["mean"]),
        vec![
            onnx::build::attr_ints("axes", &[1]),
            onnx::build::attr_int("keepdims", 0),
        ],
    ));
    g.node.push(onnx::build::with_attrs(
        onnx::build::node("Split", "halves", &[&logits_name], &["left", "right"]),
        vec![onnx::build::attr_int("axis", 1)],
    ));
    for o in ["mean", "left", "right"] {
        g.output.push(onnx::build::value_info(
            o,
            DataType::Float,
            &[Err("batch"), Ok(1)][..if o == "mean" { 1 } else { 2 }],
        ));
    }
    let (a, n, why) = one_op_attention(&r, &heads_by_softmax(&r)).unwrap();
    assert_eq!((n, why), (2, None));
    let mean = a
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.name() == "mean")
        .unwrap()
        .clone();
    assert!(
        mean.attribute.iter().all(|a| a.name() != "axes") && mean.input.len() == 2,
        "{mean:?}"
    );
    let outs = |m: &ModelProto| {
        let names: Vec<String> = ["mean", "left", "right"].map(String::from).to_vec();
        let mut p = runtime::Probe::open(m, &names, "Reduce and Split", &SessionOptions::default()).unwrap();
        bs.iter()
            .flat_map(|b| p.run(b).unwrap())
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    let (x, y) = (outs(&r), outs(&a));
    assert_eq!(x.len(), 3 * bs.len());
    for (vx, vy) in x.iter().zip(&y) {
        assert_eq!(vx.len(), vy.len());
        let d = common::max_diff(vx, vy);
        assert!(d < 1e-4, "{d}");
    }

    // What it leaves alone, and says why where a chain matched: an opset before 13; heads that
    // disagree with the Reshape's constant; no structure (no heads) at all.
    let mut old = m.clone();
    old.opset_import.iter_mut().for_each(|o| {
        if o.domain().is_empty() {
            o.version = Some(12)
        }
    });
    let (_, n, why) = one_op_attention(&old, &heads_by_softmax(&m)).unwrap();
    assert_eq!(n, 0);
    assert!(why.unwrap().contains("older than 13"));
    let e = tiny_bert(&SynthOptions {
        shapes: ShapeStyle::ConcatExplicit,
        ..Default::default()
    });
    let wrong: HashMap<String, (usize, usize)> = heads_by_softmax(&e).into_keys().map(|k| (k, (2, 16))).collect();
    assert_eq!(one_op_attention(&e, &wrong).unwrap().1, 0);
    assert_eq!(one_op_attention(&e, &HashMap::new()).unwrap().1, 0);
}

/// A calibrator that shows every value as constant zero.
struct Zeros;

impl Calibrator for Zeros {
    fn capture(&mut self, _model: &ModelProto, values: &[String], sink: &mut Sink) -> Result<(), PassError> {
        let v: Vec<(Vec<f32>, usize)> = values.iter().map(|_| (vec![0.0; 4 * 32], 32)).collect();
        sink(&[0, 1, 2, 3], &v)
    }
    fn logits(&mut self, _model: &ModelProto) -> Result<(Vec<f32>, usize), PassError> {
        Ok((vec![], 2))
    }
    fn examples(&self) -> usize {
        1
    }
    fn tokens(&self) -> usize {
        4
    }
}

#[test]
fn constant_zero_activations_fall_back_to_dynamic_and_say_where() {
    let m = synth();
    let (q, r) = quantize::quantize(&m, &opts(Mode::Static), Some(&mut Zeros)).unwrap();
    assert!(r.activations.is_empty());
    // One per quantized input: 10, and the last queries' slice of the layer input.
    assert_eq!(r.warnings.len(), 11, "{:?}", r.warnings);
    assert!(r
        .warnings
        .iter()
        .all(|w| w.contains("no usable range") && w.contains("MatMul")));
    let c = ops(&q);
    assert!(!c.contains_key("QuantizeLinear"));
    assert_eq!(
        c.get("DynamicQuantizeMatMul").copied().unwrap_or(0) + c["MatMulIntegerToFloat"],
        12 + 2 * 2 - 2
    );
    // Every scale in the graph is finite and positive.
    let ix = GraphIndex::new(q.graph.as_ref().unwrap());
    for t in &q.graph.as_ref().unwrap().initializer {
        if t.name().ends_with("_scale") {
            assert!(ix
                .const_f32(t.name())
                .unwrap()
                .iter()
                .all(|s| s.is_finite() && *s > 0.0));
        }
    }
}

#[test]
fn low_rank_chains_and_pruned_shapes_are_quantized() {
    if !require_ort("low-rank chain in ONNX Runtime") {
        return;
    }
    // Replace each FFN up-projection W [h, f] by a chain MatMul(MatMul(x, A), B) with
    // A = W[:, :k]·… — here A = W (h × f) and B = I (f × f) keeps the function and gives the
    // two-initializer chain a low-rank pass writes.
    let mut m = synth();
    {
        let g = m.graph.as_mut().unwrap();
        let ix = GraphIndex::new(g);
        let mut edits = vec![];
        for (i, n) in g.node.iter().enumerate() {
            if n.op_type() == "MatMul" {
                if let Some((t, _, f)) = ix.weight_2d(&n.input[1]) {
                    if f == 64 {
                        edits.push((i, t.name().to_string(), f));
                    }
                }
            }
        }
        assert_eq!(edits.len(), 2);
        for (k, (i, _, f)) in edits.into_iter().enumerate().rev() {
            let mut eye = vec![0f32; f * f];
            for d in 0..f {
                eye[d * f + d] = 1.0;
            }
            let b = format!("lowrank{k}.B");
            g.initializer.push(tensor::from_f32(&b, &[f, f], &eye));
            let out = g.node[i].output[0].clone();
            let mid = format!("{out}_mid");
            g.node[i].output[0] = mid.clone();
            g.node.insert(
                i + 1,
                onnx::build::node("MatMul", &format!("lowrank{k}/MatMul"), &[&mid, &b], &[&out]),
            );
        }
    }
    let bs = random_batches(4, 9);
    let f = logits(&m, &bs, "float32 chain");
    let (q, r) = quantize::quantize(&m, &opts(Mode::Dynamic), None).unwrap();
    // 14, and the first token's Q/K/V and FFN (the factorized up-projection's two MatMuls and the
    // down one), less the last FFN's and the last queries' other-tokens halves.
    assert_eq!(r.matmuls.len(), 14 + 2 * 3 + 2 * 3 - 3 - 1);
    assert!(r.matmuls.iter().any(|x| x.node.starts_with("lowrank")));
    let (rel, agree) = compare(&f, &logits(&q, &bs, "dynamic chain"));
    assert!(rel < dynamic_tolerance() && agree >= 0.98, "{rel} {agree}");
}

#[test]
fn exclude_keeps_named_matmuls_in_float() {
    let m = synth();
    let o = QuantizeOptions {
        exclude: vec!["encoder.layer.?.output.dense*".into(), "layer.1".into()],
        ..opts(Mode::Dynamic)
    };
    let names: Vec<String> = m
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type() == "MatMul")
        .map(|n| n.name().to_string())
        .collect();
    let down = names.iter().filter(|n| n.contains("0.output.dense")).count();
    assert!(down > 0, "synth names changed: {names:?}");
    let (_, r) = quantize::quantize(&m, &o, None).unwrap();
    assert!(!r.excluded.is_empty());
    // A pattern excludes a split FFN's first-token copy with it (even an exact name).
    assert_eq!(r.matmuls.len() + r.excluded.len(), 12 + 2 * 5 - 2 - 1);
    assert!(r
        .matmuls
        .iter()
        .all(|x| !x.node.contains("layer.0.output.dense") && !x.node.contains("layer.1")));
    assert_eq!(
        r.matmuls.len(),
        9,
        "layer 0's Q, K, V twice, attention output, FFN up twice"
    );
    let exact = names.iter().find(|n| n.contains("0.intermediate")).unwrap();
    let (_, r) = quantize::quantize(
        &m,
        &QuantizeOptions {
            exclude: vec![format!("*{exact}")],
            ..opts(Mode::Dynamic)
        },
        None,
    )
    .unwrap();
    assert_eq!(r.excluded.len(), 2, "{:?}", r.excluded);
    // A pattern matching nothing is a mistake, not a no-op.
    let bad = QuantizeOptions {
        exclude: vec!["no-such-node".into()],
        ..opts(Mode::Dynamic)
    };
    let e = quantize::quantize(&m, &bad, None).unwrap_err().to_string();
    assert!(e.contains("no-such-node") && e.contains("matches no"), "{e}");
    // A wildcard pattern matches whole names: the error says how to match a part.
    let bad = QuantizeOptions {
        exclude: vec!["layer.1/*".into()],
        ..opts(Mode::Dynamic)
    };
    let e = quantize::quantize(&m, &bad, None).unwrap_err().to_string();
    assert!(e.contains("matches whole names") && e.contains("'*layer.1/*'"), "{e}");
}

#[test]
fn already_quantized_models_are_refused() {
    let m = synth();
    for mode in [Mode::Dynamic, Mode::Fp16] {
        let (q, _) = quantize::quantize(&m, &opts(mode), None).unwrap();
        for again in [Mode::Dynamic, Mode::Static, Mode::Fp16] {
            let e = quantize::quantize(&q, &opts(again), Some(&mut Zeros))
                .unwrap_err()
                .to_string();
            assert!(e.contains("quantized already"), "{mode:?} then {again:?}: {e}");
        }
    }
}

#[test]
fn bad_options_are_refused() {
    let m = synth();
    for p in [0.0, -1.0, 100.5, f64::NAN] {
        let o = QuantizeOptions {
            percentile: p,
            ..opts(Mode::Static)
        };
        let e = quantize::quantize(&m, &o, Some(&mut Zeros)).unwrap_err().to_string();
        assert!(e.contains("--percentile") && e.contains("(0, 100]"), "{e}");
    }
    let e = quantize::quantize(&m, &opts(Mode::Static), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--calib-data"), "{e}");
    let o = QuantizeOptions {
        weight_type: WeightType::U8,
        activation_type: ActivationType::S8,
        ..opts(Mode::Static)
    };
    let e = quantize::quantize(&m, &o, Some(&mut Zeros)).unwrap_err().to_string();
    assert!(e.contains("--weight-type u8 needs u8 activations"), "{e}");
}

#[test]
fn fp16_keeps_float32_where_numerics_need_it_and_agrees() {
    let m = synth();
    let (q, r) = quantize::quantize(&m, &opts(Mode::Fp16), None).unwrap();
    let g = q.graph.as_ref().unwrap();
    // Inputs and outputs unchanged.
    assert_eq!(g.input, m.graph.as_ref().unwrap().input);
    assert_eq!(g.output, m.graph.as_ref().unwrap().output);
    // Every large float tensor is float16 now, except those only float32 nodes read.
    let ix = GraphIndex::new(g);
    for t in &g.initializer {
        if t.data_type() == DataType::Float as i32 {
            assert!(
                ix.consumers(t.name())
                    .iter()
                    .all(|&c| r.kept_float32.contains(&g.node[c].name().to_string())),
                "{} stayed float32",
                t.name()
            );
        }
    }
    let halves = g
        .initializer
        .iter()
        .filter(|t| t.data_type() == DataType::Float16 as i32)
        .count();
    assert!(halves >= 10, "{halves}");
    // LayerNorms and softmaxes read float32 (through a Cast to float, or float32 constants).
    for (i, n) in g.node.iter().enumerate() {
        if matches!(n.op_type(), "LayerNormalization" | "Softmax") {
            let p = ix.producer(&n.input[0]).map(|p| ix.node(p));
            assert!(
                p.is_some_and(
                    |p| p.op_type() == "Cast" && ix.attr_i(ix.producer(&n.input[0]).unwrap(), "to") == Some(1)
                ),
                "node #{i} {} reads {:?}",
                n.name(),
                p.map(|p| p.op_type())
            );
        }
    }
    // The embedding table holds the original values rounded to float16.
    let orig = tensor::to_f32(
        GraphIndex::new(m.graph.as_ref().unwrap())
            .initializer("embeddings.word_embeddings.weight")
            .unwrap(),
    )
    .unwrap();
    let t = ix.initializer("embeddings.word_embeddings.weight").unwrap();
    let h: Vec<f32> = t
        .raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(2)
        .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    for (a, b) in orig.iter().zip(&h) {
        assert!((a - b).abs() <= a.abs() / 1024.0 + 6e-8, "{a} vs {b}");
    }
    if !require_ort("float16 in ONNX Runtime (CPU)") {
        return;
    }
    let bs = random_batches(6, 3);
    let (rel, agree) = compare(&logits(&m, &bs, "float32"), &logits(&q, &bs, "float16"));
    assert!(rel < 0.01 && agree >= 0.98, "{rel} {agree}");
}

#[test]
fn fp16_with_only_the_outputs_in_float32_runs_norms_in_float16_and_agrees() {
    let m = synth();
    let o = QuantizeOptions {
        fp16_float32: Fp16Float32::Outputs,
        ..opts(Mode::Fp16)
    };
    let (q, r) = quantize::quantize(&m, &o, None).unwrap();
    let (norms, rn) = quantize::quantize(&m, &opts(Mode::Fp16), None).unwrap();
    let g = q.graph.as_ref().unwrap();
    assert_eq!(g.input, m.graph.as_ref().unwrap().input);
    assert_eq!(g.output, m.graph.as_ref().unwrap().output);
    let ix = GraphIndex::new(g);
    // LayerNorms and softmaxes read float16: no Cast to float before them, and their
    // initializers (scale, bias) are float16.
    let mut seen = 0;
    for n in &g.node {
        if matches!(n.op_type(), "LayerNormalization" | "Softmax") {
            seen += 1;
            assert!(
                !r.kept_float32.contains(&n.name().to_string()),
                "{} kept float32",
                n.name()
            );
            let p = ix.producer(&n.input[0]);
            assert!(
                p.is_none_or(|p| !(ix.node(p).op_type() == "Cast" && ix.attr_i(p, "to") == Some(1))),
                "{} reads a Cast to float",
                n.name()
            );
            for i in &n.input[1..] {
                if let Some(t) = ix.initializer(i) {
                    assert_eq!(t.data_type(), DataType::Float16 as i32, "{i}");
                }
            }
        }
    }
    assert!(seen >= 3, "{seen} LayerNorm/Softmax nodes");
    // Only the logits' producer stays float32, so fewer Casts than with the norms kept.
    let casts = |m: &ModelProto| {
        m.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type() == "Cast")
            .count()
    };
    assert!(
        casts(&q) + 2 * seen <= casts(&norms) + 1,
        "{} vs {}",
        casts(&q),
        casts(&norms)
    );
    assert!(r.kept_float32.len() < rn.kept_float32.len());
    // History records the option for fp16 only.
    let h = quantize::history_options(&o).unwrap();
    assert_eq!(h["fp16_float32"], "outputs", "{h}");
    let h = quantize::history_options(&opts(Mode::Dynamic)).unwrap();
    assert!(h.get("fp16_float32").is_none(), "{h}");
    if !require_ort("float16 LayerNorm and softmax in ONNX Runtime (CPU)") {
        return;
    }
    let bs = random_batches(6, 3);
    let (rel, agree) = compare(&logits(&m, &bs, "float32"), &logits(&q, &bs, "float16, norms too"));
    assert!(rel < 0.01 && agree >= 0.98, "{rel} {agree}");
}

// ---------------------------------------------------------------------------------------------
// The binary: bad options leave no output file; history is recorded.
// ---------------------------------------------------------------------------------------------

fn save(m: &ModelProto, dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    onnx::save(m, &p, &SaveOptions::default()).unwrap();
    p
}

fn fails(args: &[&str], out: &Path, needles: &[&str]) {
    let o = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // 1: our errors; 2: clap's (an unknown value for an enumerated flag).
    assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty());
    assert!(!out.exists(), "{args:?} wrote {}", out.display());
    for n in needles {
        assert!(err.contains(n), "{args:?}: error does not mention {n:?}: {err}");
    }
}

#[test]
fn cli_bad_options_give_one_clear_error_and_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = save(&synth(), dir.path(), "in.onnx");
    let out = dir.path().join("out.onnx");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let calib = dir.path().join("train.tsv");
    std::fs::write(&calib, "sentence\tlabel\ngood film \t1\n").unwrap();
    let c = calib.to_str().unwrap();
    fails(&["quantize", "--mode", "static", i, o], &out, &["--calib-data"]);
    fails(
        &[
            "quantize",
            "--mode",
            "static",
            "--calib-data",
            c,
            "--calib-method",
            "magic",
            i,
            o,
        ],
        &out,
        &["magic"],
    );
    for p in ["0", "-3", "100.1"] {
        fails(
            &[
                "quantize",
                "--mode",
                "static",
                "--calib-data",
                c,
                "--calib-method",
                "percentile",
                "--percentile",
                p,
                i,
                o,
            ][..],
            &out,
            &["--percentile", "(0, 100]"],
        );
    }
    fails(
        &[
            "quantize",
            "--mode",
            "static",
            "--calib-data",
            c,
            "--calib-samples",
            "0",
            i,
            o,
        ],
        &out,
        &["--calib-samples"],
    );
    fails(
        &["quantize", "--mode", "dynamic", "--calib-data", c, i, o],
        &out,
        &["--calib-data"],
    );
    fails(&["quantize", "--mode", "int4", i, o], &out, &["int4"]);
    fails(
        &["quantize", "--mode", "dynamic", "--static-form", "ort", i, o],
        &out,
        &["--static-form", "--mode static only"],
    );
    fails(
        &["quantize", "--mode", "dynamic", "--exclude", "nothing-like-this", i, o],
        &out,
        &["nothing-like-this"],
    );
    fails(&["quantize", "--mode", "dynamic", i, i], &out, &[]);
    // A pattern that keeps every MatMul in float says so (it said "no MatMul ... to quantize").
    fails(
        &["quantize", "--mode", "dynamic", "--exclude", "*", i, o],
        &out,
        &[
            "--exclude keeps every MatMul with a constant weight in float",
            "narrow the pattern",
        ],
    );
    fails(
        &["quantize", "--mode", "fp16", "--exclude", "*", i, o],
        &out,
        &["--exclude keeps every MatMul in float32", "narrow the pattern"],
    );
    // fp16 has no int8 weights or first-token split: each of their flags is refused, both ways.
    for flag in [
        "--per-tensor",
        "--per-channel",
        "--split-first-token",
        "--no-split-first-token",
    ] {
        fails(
            &["quantize", "--mode", "fp16", flag, i, o],
            &out,
            &[flag, "applies to the int8 modes, not --mode fp16"],
        );
    }
    // An already quantized input.
    let (q, _) = quantize::quantize(&synth(), &opts(Mode::Dynamic), None).unwrap();
    let qin = save(&q, dir.path(), "q.onnx");
    fails(
        &["quantize", "--mode", "dynamic", qin.to_str().unwrap(), o],
        &out,
        &["q.onnx", "quantized already"],
    );
    // Pruning, low rank and auto rewrite float32 weights: a model quantized already (int8, or
    // float16) is refused naming what shows it and what to do, before any calibration data is
    // read (the file named here does not exist). They said "not a transformer this tool can map".
    let (h, _) = quantize::quantize(&synth(), &opts(Mode::Fp16), None).unwrap();
    let hin = save(&h, dir.path(), "h.onnx");
    let train = dir.path().join("train.csv");
    std::fs::write(&train, "text,label\na,0\n").unwrap();
    for (model, shows) in [(&qin, "DynamicQuantizeLinear"), (&hin, "of float16")] {
        let m = model.to_str().unwrap();
        fails(
            &["prune", "--heads", "0.5", m, o],
            &out,
            &["quantized already", shows, "quantization is the last step of a chain"],
        );
        fails(
            &["prune", "--target-macs", "0.6", "--calib-data", "none.csv", m, o],
            &out,
            &["quantized already", shows],
        );
        fails(&["lowrank", "--rank", "4", m, o], &out, &["quantized already", shows]);
        let inspect = bin().args(["inspect", m]).output().unwrap();
        let text = String::from_utf8_lossy(&inspect.stdout);
        assert!(
            text.contains("quantized already") && text.contains(shows),
            "inspect {m}: {text}{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
    }
    let dev = dir.path().join("dev.csv");
    std::fs::write(&dev, "text,label\nb,1\n").unwrap();
    let (t, d) = (train.to_str().unwrap(), dev.to_str().unwrap());
    fails(
        &["auto", qin.to_str().unwrap(), o, "--calib-data", t, "--data", d],
        &out,
        &["q.onnx", "quantized already", "DynamicQuantizeLinear", "float32 model"],
    );
    // A plan too: refused before its folder is written, not in each of its jobs.
    let plan = dir.path().join("plan");
    let p = plan.to_str().unwrap();
    fails(
        &[
            "auto",
            qin.to_str().unwrap(),
            o,
            "--calib-data",
            t,
            "--data",
            d,
            "--plan",
            p,
        ],
        &out,
        &["q.onnx", "quantized already", "DynamicQuantizeLinear"],
    );
    assert!(!plan.exists(), "auto --plan wrote a plan for a quantized model");
}

#[test]
fn cli_records_history_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = save(&synth(), dir.path(), "in.onnx");
    let out = dir.path().join("out.onnx");
    let o = bin()
        .args(["quantize", "--mode", "dynamic", "--per-tensor", "--json"])
        .arg(&input)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["options"]["mode"], "dynamic");
    assert_eq!(r["options"]["per_channel"], false);
    assert_eq!(r["matmuls"].as_array().unwrap().len(), 12);
    let m = onnx::load(&out).unwrap();
    let h = onnx_compress::history::history(&m).unwrap();
    assert_eq!(h.last().unwrap().pass, "quantize");
    assert_eq!(h.last().unwrap().options["mode"], "dynamic");
    // The report's options are the history's: those of the mode (no calibration method, static
    // form or fp16 setting for dynamic INT8).
    assert_eq!(r["options"], h.last().unwrap().options);
    assert!(r["options"].get("calib_method").is_none(), "{}", r["options"]);
    // The input is untouched.
    assert_eq!(onnx::load(&input).unwrap(), synth());
}

/// `quantize` says when this CPU's u8 × s8 kernels saturate (no VNNI), only for s8 weights, and
/// only there; the note goes to stderr, so `--json` stays parseable.
#[test]
fn cli_notes_a_cpu_whose_int8_kernels_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let input = save(&synth(), dir.path(), "in.onnx");
    let saturates = runtime::u8s8_saturates();
    for (extra, noted) in [
        (&["--mode", "dynamic", "--json"][..], saturates),
        (&["--mode", "dynamic", "--weight-type", "u8"][..], false),
        (&["--mode", "fp16"][..], false),
    ] {
        let o = bin()
            .arg("quantize")
            .args(extra)
            .arg(&input)
            .arg(dir.path().join("out.onnx"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{extra:?}: {err}");
        assert_eq!(err.contains("note: this CPU has no VNNI"), noted, "{extra:?}: {err}");
        if extra.contains(&"--json") {
            serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("--json prints JSON alone");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shared models: GLUE dev predictions against float32 (a subset, to keep the suite quick).
// ---------------------------------------------------------------------------------------------

/// Quantizes a shared model through the binary and evaluates the first `limit` dev examples;
/// returns (agreement with the float32 reference predictions, accuracy, float32 accuracy on the
/// same examples, size ratio).
fn shared_check(task: &str, extra: &[&str], limit: usize) -> Option<(f64, f64, f64, f64)> {
    let dir = require(&format!("models/minilm-l6-{task}"), "quantizing a shared model")?;
    let data = require("data/glue", "quantizing a shared model")?;
    if !require_ort("quantizing a shared model") {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.onnx");
    let input = dir.join("model.onnx");
    let o = bin()
        .arg("quantize")
        .args(extra)
        .arg(&input)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = bin()
        .args([
            "eval",
            "--json",
            "--warmup",
            "0",
            "--measure",
            "1",
            "--task",
            task,
            // The batch: dynamic ranges are found per batch, so agreement depends on it.
            "--batch-size",
            "32",
            "--limit",
        ])
        .arg(limit.to_string())
        .arg("--data")
        .arg(&data)
        .arg("--model")
        .arg(&out)
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let r: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let refp = reference["predictions"].as_array().unwrap();
    let preds = r["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), limit);
    let same = (0..limit).filter(|&i| preds[i] == refp[i]).count();
    let labels: Vec<i64> = {
        let text = std::fs::read_to_string(data.join(task).join("dev.tsv")).unwrap();
        let mut lines = text.trim_start_matches('\u{feff}').lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let col = header.iter().position(|h| *h == "label" || *h == "Quality").unwrap();
        lines
            .take(limit)
            .map(|l| l.split('\t').nth(col).unwrap().parse().unwrap())
            .collect()
    };
    let acc = |p: &[serde_json::Value]| {
        (0..limit).filter(|&i| p[i].as_i64() == Some(labels[i])).count() as f64 / limit as f64
    };
    let size = std::fs::metadata(&out).unwrap().len() as f64 / std::fs::metadata(&input).unwrap().len() as f64;
    Some((same as f64 / limit as f64, acc(preds), acc(refp), size))
}

#[test]
fn shared_sst2_dynamic_agrees_with_float32() {
    let Some((agree, acc, acc32, size)) = shared_check("sst2", &["--mode", "dynamic"], 436) else {
        return;
    };
    assert!(agree >= 0.98, "agreement {agree}");
    assert!(acc >= acc32 - 0.01, "accuracy {acc} vs float32 {acc32}");
    assert!(size <= 0.27, "size {size} of float32");
}

#[test]
fn shared_sst2_static_agrees_with_float32() {
    let Some(calib) = require("data/glue/sst2/train.tsv", "static calibration") else {
        return;
    };
    let c = calib.to_str().unwrap().to_string();
    let Some((agree, acc, acc32, size)) = shared_check(
        "sst2",
        &["--mode", "static", "--calib-data", &c, "--calib-samples", "128"],
        436,
    ) else {
        return;
    };
    assert!(agree >= 0.98, "agreement {agree}");
    assert!(acc >= acc32 - 0.01, "accuracy {acc} vs float32 {acc32}");
    assert!(size <= 0.27, "size {size} of float32");
}

/// The bar on the harder task, over the whole dev set: MRPC's classifier has 7 dev
/// examples within 0.2 of its decision boundary, and without the first-token split static INT8
/// agreed with float32 on 97.1% and lost 1.47 points (calibration seed 0).
#[test]
fn shared_mrpc_static_agrees_with_float32() {
    let Some(calib) = require("data/glue/mrpc/train.tsv", "static calibration") else {
        return;
    };
    let c = calib.to_str().unwrap().to_string();
    let Some((agree, acc, acc32, size)) = shared_check("mrpc", &["--mode", "static", "--calib-data", &c], 408) else {
        return;
    };
    // Without VNNI (see `vnni`) ONNX Runtime's kernels saturate: measured on an AVX2-only EPYC,
    // agreement 97.5% and accuracy 0.7892 against 0.7990 (4 predictions); the bar there is
    // agreement 97% and 1.5 points, and the README says so.
    let (agree_bar, points) = if vnni() { (0.98, 0.005) } else { (0.97, 0.015) };
    if !vnni() {
        eprintln!("NOTE: no VNNI on this CPU: MRPC static INT8 held to agreement {agree_bar}, -{points} accuracy");
    }
    assert!(agree >= agree_bar, "agreement {agree}");
    assert!(acc >= acc32 - points, "accuracy {acc} vs float32 {acc32}");
    assert!(size <= 0.27, "size {size} of float32");
    // --unpad: the same static model on the real tokens, so the same dev predictions.
    let Some((agree_u, acc_u, _, _)) = shared_check("mrpc", &["--mode", "static", "--calib-data", &c, "--unpad"], 408)
    else {
        return;
    };
    assert_eq!(
        (agree_u, acc_u),
        (agree, acc),
        "--unpad against the padded static model"
    );
}

#[test]
fn shared_mrpc_dynamic_and_fp16_agree_with_float32() {
    // The whole dev set: MRPC's fragile examples (7 within 0.2 of the decision boundary) are where
    // int8 and float32 part ways; dynamic INT8 agreed on 97.3% before Q/K/V were split too.
    let Some((agree, acc, acc32, size)) = shared_check("mrpc", &["--mode", "dynamic"], 408) else {
        return;
    };
    assert!(agree >= 0.98, "agreement {agree}");
    assert!(acc >= acc32 - 0.005, "accuracy {acc} vs float32 {acc32}");
    assert!(size <= 0.27, "size {size} of float32");
    let Some((agree, _, _, size)) = shared_check("mrpc", &["--mode", "fp16"], 204) else {
        return;
    };
    assert!(agree >= 0.98, "fp16 agreement {agree}");
    assert!(size <= 0.52, "fp16 size {size} of float32");
    let Some((agree, _, _, _)) = shared_check("mrpc", &["--mode", "fp16", "--fp16-float32", "outputs"], 204) else {
        return;
    };
    assert!(
        agree >= 0.98,
        "fp16 (LayerNorm and softmax in float16) agreement {agree}"
    );
}

/// The one Attention op computes what the separate ops computed, on a real model: the shared
/// SST-2 model's static INT8 (ONNX Runtime's form) with and without it, over 256 dev examples,
/// agrees on every prediction and its logits differ by at most 1e-4 (measured: 0 over the whole
/// dev set on an AVX-512 VNNI CPU, bench/RESULTS.md "One Attention op per attention").
#[test]
fn shared_sst2_one_attention_op_gives_the_separate_ops_logits() {
    let what = "the one Attention op on a shared model";
    let (Some(dir), Some(train)) = (
        require("models/minilm-l6-sst2", what),
        require("data/glue/sst2/train.tsv", what),
    ) else {
        return;
    };
    let Some(data) = require("data/glue", what) else {
        return;
    };
    if !require_ort(what) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let quantized = |extra: &[&str], name: &str| {
        let out = tmp.path().join(name);
        let o = bin()
            .args([
                "quantize",
                "-q",
                "--mode",
                "static",
                "--static-form",
                "ort",
                "--calib-samples",
                "64",
                "--calib-data",
            ])
            .arg(&train)
            .args(extra)
            .arg(dir.join("model.onnx"))
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (one, kept) = (
        quantized(&[], "one.onnx"),
        quantized(&["--no-attention-op"], "kept.onnx"),
    );
    assert_eq!(ops(&onnx::load(&one).unwrap()).get("Attention"), Some(&6));
    assert_eq!(ops(&onnx::load(&kept).unwrap()).get("Attention"), None);
    let o = bin()
        .args(["diff", "-q", "--json", "--task", "sst2", "--limit", "256", "--data"])
        .arg(&data)
        .arg(&kept)
        .arg(&one)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["examples"], 256);
    assert_eq!(r["agreement"], 1.0, "{}", r["shown_flips"]);
    let diff = r["max_abs_logit_diff"].as_f64().unwrap();
    assert!(diff <= 1e-4, "largest logit difference {diff}");
}

/// An INT8 model has its float original's parameters: the quantized ops' scales and zero points
/// are not counted, on ONNX Runtime's fused graph (QAttention) and in static QDQ too.
#[test]
fn int8_models_count_their_float_originals_parameters() {
    let fused =
        onnx::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-fused/model.onnx")).unwrap();
    let (q, _) = quantize::quantize(&fused, &opts(Mode::Dynamic), None).unwrap();
    assert!(ops(&q).contains_key("QAttention"), "{:?}", ops(&q));
    assert_eq!(weight_elements(&q), weight_elements(&fused));
    if !require_ort("static quantization's parameters") {
        return;
    }
    let m = synth();
    let mut cal = calibrator(4, 7);
    let (q, _) = quantize::quantize(&m, &opts(Mode::Static), Some(&mut cal)).unwrap();
    assert_eq!(weight_elements(&q), weight_elements(&m));
}
