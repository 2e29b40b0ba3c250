//! The first-token split of the int8 modes (Q/K/V and FFN): the split float graph computes what
//! the model did, calibration measures the first token and the others apart, the int8 models keep the
//! split, and `--per-tensor` (ONNX Runtime's quantize_dynamic) leaves the model unsplit unless asked.

use std::collections::HashMap;

use ndarray::Array2;
use onnx_compress::onnx::proto::type_proto::Value as TypeValue;
use onnx_compress::onnx::proto::ValueInfoProto;
use onnx_compress::onnx::{self, ModelProto, SaveOptions};
use onnx_compress::passes::quantize::calibrate::{ranges, Probe, Tokens};
use onnx_compress::passes::quantize::split::split_first_token;
use onnx_compress::passes::quantize::{self, CalibMethod, Mode, QuantizeOptions};
use onnx_compress::passes::{Calibrator, PassError, Sink};
use onnx_compress::recipe;
use onnx_compress::recipe::QuantizationSection;
use onnx_compress::runtime::{Batch, OrtCalibrator, SessionOptions};
use onnx_compress::structure::discover;
use onnx_compress::testkit::shared::require_ort;
use onnx_compress::testkit::synth::{random_batches, tiny_bert, GeluStyle, ShapeStyle, SynthOptions};

mod common;

use common::{bin, logits, max_diff, optimized};

fn count(m: &ModelProto, op: &str) -> usize {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type() == op)
        .count()
}

/// Three-layer models in four graph layouts (shape constants, GELU form, Identity aliases of the
/// weights, a fused attention op): a label, the model, and whether its attention is fused.
fn layouts() -> Vec<(String, ModelProto, bool)> {
    [
        (ShapeStyle::ConcatInferred, GeluStyle::Erf, false, false),
        (ShapeStyle::ConcatExplicit, GeluStyle::Op, true, false),
        (ShapeStyle::SharedInitializer, GeluStyle::Tanh, false, false),
        (ShapeStyle::ConstantPerReshape, GeluStyle::Erf, false, true),
    ]
    .into_iter()
    .map(|(shapes, gelu, identity_aliases, fused_attention)| {
        let m = tiny_bert(&SynthOptions {
            layers: 3,
            shapes,
            gelu,
            identity_aliases,
            fused_attention,
            seed: 3,
            ..Default::default()
        });
        let what = format!("{shapes:?}/{gelu:?}/aliases {identity_aliases}/fused {fused_attention}");
        (what, m, fused_attention)
    })
    .collect()
}

#[test]
fn split_graph_computes_the_same_logits_in_every_layout() {
    if !require_ort("running split graphs") {
        return;
    }
    let bs = random_batches(4, 5);
    for (what, m, fused_attention) in layouts() {
        let s = split_first_token(&m, true, false).unwrap();
        assert_eq!(s.layers, vec![0, 1, 2], "{what}: {:?}", s.skipped);
        // The pooler reads only the first token of layer 2: its FFN runs on that token alone, and
        // so does its attention (for the first token's query), unless that is one fused op.
        assert_eq!(s.first_token_only, Some(2), "{what}");
        let attention_moved = usize::from(!fused_attention);
        assert_eq!(s.first_token_attention, (!fused_attention).then_some(2), "{what}");
        // Q/K/V split where they are three MatMuls; a fused attention op is named and left whole.
        let qkv_layers = if fused_attention {
            assert_eq!(s.skipped.len(), 3, "{what}: {:?}", s.skipped);
            assert!(
                s.skipped.iter().all(|w| w.ends_with("its attention is one fused op")),
                "{what}: {:?}",
                s.skipped
            );
            0
        } else {
            assert!(s.skipped.is_empty(), "{what}: {:?}", s.skipped);
            3
        };
        assert_eq!(s.qkv_layers.len(), qkv_layers, "{what}");
        // Per FFN one Concat and a copy of its two MatMuls, less the last layer's other-tokens
        // half (one Concat, two MatMuls); per Q/K/V three Concats and three MatMul copies, less
        // the last layer's other-tokens queries (its Q Concat becomes an Identity of the first
        // token's, one MatMul fewer); the two head reshapes that moved get a shape Concat each.
        assert_eq!(
            count(&s.model, "Concat") + attention_moved - count(&m, "Concat"),
            3 - 1 + 3 * qkv_layers + 2 * attention_moved,
            "{what}"
        );
        assert_eq!(
            count(&s.model, "MatMul") + attention_moved - count(&m, "MatMul"),
            6 - 2 + 3 * qkv_layers,
            "{what}"
        );
        // Every MatMul input inside a split block maps back to a value of the input model: per FFN
        // both MatMuls' inputs in each half (the last layer's first half only), per Q/K/V the
        // one input they share, in each half.
        assert_eq!(s.probes.len(), 12 - 2 + 2 * qkv_layers, "{what}");
        assert_eq!(
            s.probes.values().filter(|p| p.tokens == Tokens::First).count(),
            6 + qkv_layers,
            "{what}"
        );
        let (a, b) = (logits(&m, &bs, &what), logits(&s.model, &bs, &what));
        let worst = max_diff(&a, &b);
        assert!(worst < 1e-5, "{what}: logits differ by {worst}");
    }
}

#[test]
fn models_that_are_not_transformers_are_left_alone_with_the_reason() {
    let m = tiny_bert(&SynthOptions::default());
    let mut g = m.clone();
    // Without its Softmax nodes nothing maps as attention.
    g.graph.as_mut().unwrap().node.retain(|n| n.op_type() != "Softmax");
    let s = split_first_token(&g, true, false).unwrap();
    assert!(s.layers.is_empty());
    assert_eq!(s.model, g);
    assert!(s.skipped[0].contains("no transformer found"), "{:?}", s.skipped);
}

#[test]
fn ffns_that_cannot_be_split_are_named_and_left_alone() {
    let m = tiny_bert(&SynthOptions::default());
    let t = discover(&m).unwrap();
    // input_ids declared with a third axis: the sequence may not be axis 1.
    let mut r3 = m.clone();
    let ids = r3
        .graph
        .as_mut()
        .unwrap()
        .input
        .iter_mut()
        .find(|v| v.name() == "input_ids")
        .unwrap();
    let Some(TypeValue::TensorType(tt)) = ids.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        panic!("input_ids has no tensor type")
    };
    tt.shape
        .get_or_insert_with(Default::default)
        .dim
        .resize(3, Default::default());
    let s = split_first_token(&r3, true, false).unwrap();
    assert!(s.layers.is_empty() && s.model == r3);
    assert!(s.skipped[0].contains("is not [batch, sequence]"), "{:?}", s.skipped);
    // A value inside layer 1's FFN (its activation) is also a graph output: that FFN is not a
    // closed block, layer 0's is split.
    let mut open = m.clone();
    let f = t.layers[1].ffn.as_ref().unwrap();
    let inside = open.graph.as_ref().unwrap().node[f.down.node].input[0].clone();
    let g = open.graph.as_mut().unwrap();
    g.output.push(ValueInfoProto {
        name: Some(inside.clone()),
        ..Default::default()
    });
    let s = split_first_token(&open, true, false).unwrap();
    assert_eq!(s.layers, vec![0]);
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert!(
        s.skipped[0].starts_with("layer 1: ")
            && s.skipped[0].contains(&format!("'{inside}' inside its FFN is read outside it")),
        "{:?}",
        s.skipped
    );
}

/// A two-layer model, and the same whose last layer's output is also a graph output (every
/// token's hidden state read).
fn two_layers_and_read_whole(seed: u64) -> (ModelProto, ModelProto) {
    let m = tiny_bert(&SynthOptions {
        layers: 2,
        seed,
        ..Default::default()
    });
    let t = discover(&m).unwrap();
    let mut all = m.clone();
    all.graph.as_mut().unwrap().output.push(ValueInfoProto {
        name: Some(t.layers[1].output_norm.output.clone()),
        ..Default::default()
    });
    (m, all)
}

#[test]
fn the_last_ffn_runs_on_every_token_when_the_model_reads_them() {
    if !require_ort("running split graphs") {
        return;
    }
    let (m, all) = two_layers_and_read_whole(5);
    let (s, s_all) = (
        split_first_token(&m, true, false).unwrap(),
        split_first_token(&all, true, false).unwrap(),
    );
    assert_eq!(s.first_token_only, Some(1));
    assert_eq!(s.first_token_attention, Some(1));
    assert_eq!(s_all.first_token_only, None);
    assert_eq!(s_all.first_token_attention, None);
    assert_eq!(s_all.layers, vec![0, 1]);
    // Reading every token keeps the last FFN's other-tokens half (a Concat, two MatMuls) and
    // the last queries' (a Concat, a MatMul), and its head reshapes as they were (two shape
    // Concats fewer).
    assert_eq!(count(&s_all.model, "Concat") + 2 - count(&s.model, "Concat"), 2);
    assert_eq!(count(&s_all.model, "MatMul") - count(&s.model, "MatMul"), 3);
    let bs = random_batches(3, 6);
    let logits_only = |m: &ModelProto| {
        let mut m = m.clone();
        m.graph.as_mut().unwrap().output.truncate(1);
        m
    };
    let (a, b) = (
        logits(&m, &bs, "input"),
        logits(&logits_only(&s_all.model), &bs, "split, all tokens read"),
    );
    let worst = max_diff(&a, &b);
    assert!(worst < 1e-5, "logits differ by {worst}");
}

/// Static INT8 calibrates the last layer's queries and output projection on their whole inputs
/// as before, so running that attention for the first token alone gives the same model: the
/// same logits as the same pass on the model whose last layer is read whole (no first-token
/// tail, nothing moved), in both static forms.
#[test]
fn static_int8_with_the_last_attention_on_the_first_token_is_the_same_model() {
    if !require_ort("quantization in ONNX Runtime") {
        return;
    }
    let (m, all) = two_layers_and_read_whole(13);
    // Static mode splits no Q/K/V: the last queries read a slice of the layer input, which is
    // calibrated on the whole input (not on its first token).
    let input = &discover(&m).unwrap().layers[1].input;
    let s = split_first_token(&m, false, false).unwrap();
    let sliced: Vec<_> = s
        .probes
        .iter()
        .filter(|&(k, p)| k != input && &p.value == input)
        .collect();
    assert_eq!(sliced.len(), 1, "{:?}", s.probes.keys());
    assert_eq!(sliced[0].1.tokens, Tokens::All);
    let cal = || OrtCalibrator::new(random_batches(6, 3), SessionOptions::default());
    let bs = random_batches(3, 17);
    for form in [quantize::StaticForm::Qdq, quantize::StaticForm::Ort] {
        let o = QuantizeOptions {
            mode: Mode::Static,
            static_form: form,
            ..Default::default()
        };
        let (a, ra) = quantize::quantize(&m, &o, Some(&mut cal())).unwrap();
        let (b, rb) = quantize::quantize(&all, &o, Some(&mut cal())).unwrap();
        assert_eq!(ra.first_token_only_attention_layer, Some(1), "{form:?}");
        assert_eq!(rb.first_token_only_attention_layer, None, "{form:?}");
        let mut b = b;
        b.graph.as_mut().unwrap().output.truncate(1);
        let d = max_diff(&logits(&a, &bs, "moved"), &logits(&b, &bs, "whole"));
        assert!(d < 1e-5, "{form:?}: logits differ by {d}");
    }
}

#[test]
fn recipes_split_with_this_tools_methods_and_keep_the_references_as_they_were() {
    let opts = |method: &str, per_channel: Option<bool>, split: Option<bool>| {
        recipe::quantize_options(&QuantizationSection {
            enable: true,
            method: Some(method.into()),
            per_channel,
            split_first_token: split,
            ..Default::default()
        })
        .unwrap()
        .split_first_token
    };
    for m in ["dynamic_per_channel", "static", "static_ort"] {
        assert!(opts(m, None, None), "{m}");
        assert!(!opts(m, Some(false), None), "{m} per tensor");
        assert!(!opts(m, None, Some(false)), "{m} refused");
    }
    for m in ["dynamic", "onnx"] {
        assert!(!opts(m, None, None), "{m}");
        assert!(!opts(m, Some(true), None), "{m} per channel");
        assert!(opts(m, None, Some(true)), "{m} asked");
    }
    assert!(!opts("fp16", None, None));
    // `unpad` is off unless the recipe asks.
    let unpad = |u: Option<bool>| {
        recipe::quantize_options(&QuantizationSection {
            enable: true,
            method: Some("static_ort".into()),
            unpad: u,
            ..Default::default()
        })
        .unwrap()
        .unpad
    };
    assert!(!unpad(None) && unpad(Some(true)) && !unpad(Some(false)));
}

/// Hands out one batch of 3 sequences (positions 0, 1, 2 and 0, 1 and 0) of a width-1 value:
/// the first tokens hold 100, 200, 300; the others 1, 2, 3.
struct Positions;

impl Calibrator for Positions {
    fn capture(&mut self, _model: &ModelProto, values: &[String], sink: &mut Sink) -> Result<(), PassError> {
        let rows = vec![100.0, 1.0, 2.0, 200.0, 3.0, 300.0];
        let v: Vec<(Vec<f32>, usize)> = values.iter().map(|_| (rows.clone(), 1)).collect();
        sink(&[0, 1, 2, 0, 1, 0], &v)
    }
    fn logits(&mut self, _model: &ModelProto) -> Result<(Vec<f32>, usize), PassError> {
        Ok((vec![], 2))
    }
    fn examples(&self) -> usize {
        3
    }
    fn tokens(&self) -> usize {
        6
    }
}

#[test]
fn calibration_measures_the_first_token_and_the_others_apart() {
    let probe = |tokens| Probe {
        value: "x".into(),
        tokens,
    };
    let probes = [probe(Tokens::All), probe(Tokens::First), probe(Tokens::AfterFirst)];
    let m = ModelProto::default();
    let r = ranges(&m, &mut Positions, &probes, CalibMethod::Minmax, 100.0).unwrap();
    let got: Vec<(f32, f32)> = r.iter().map(|r| (r.min, r.max)).collect();
    assert_eq!(got, vec![(1.0, 300.0), (100.0, 300.0), (1.0, 3.0)]);
    // Percentile 100 keeps the whole range of each probe.
    let p = ranges(&m, &mut Positions, &probes, CalibMethod::Percentile, 100.0).unwrap();
    assert_eq!(p, r);
}

#[test]
fn static_split_ranges_leave_the_first_token_out_of_the_other_tokens_range() {
    if !require_ort("static quantization in ONNX Runtime") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        seed: 11,
        ..Default::default()
    });
    let cal = || OrtCalibrator::new(random_batches(8, 7), SessionOptions::default());
    let o = QuantizeOptions {
        mode: Mode::Static,
        ..Default::default()
    };
    let (_, split) = quantize::quantize(&m, &o, Some(&mut cal())).unwrap();
    let whole = QuantizeOptions {
        split_first_token: false,
        ..o.clone()
    };
    let (_, unsplit) = quantize::quantize(&m, &whole, Some(&mut cal())).unwrap();
    assert_eq!(split.first_token_split_layers, vec![0, 1]);
    // Static mode splits the FFNs only (Q/K/V: dynamic mode).
    assert!(split.first_token_split_qkv_layers.is_empty());
    assert_eq!(split.first_token_only_ffn_layer, Some(1));
    assert!(unsplit.first_token_split_layers.is_empty());
    assert_eq!(unsplit.first_token_only_ffn_layer, None);
    let by_value: HashMap<&str, (f32, f32)> = unsplit
        .activations
        .iter()
        .map(|a| (a.value.as_str(), (a.min, a.max)))
        .collect();
    let find = |v: &str| split.activations.iter().find(|a| a.value == v);
    // Each FFN input is measured three ways: all tokens (unsplit), the first token, the others;
    // the two halves lie inside the whole, and together span it. The last FFN runs on the first
    // token only: it has no other half.
    let t = discover(&m).unwrap();
    for l in &t.layers {
        let x = &l.attention_norm.output;
        let halves = l.index + 1 < t.layers.len();
        let first =
            find(&format!("{x}_first")).unwrap_or_else(|| panic!("no range for {x}_first: {:?}", split.activations));
        let (lo, hi) = by_value[x.as_str()];
        assert!(first.min >= lo && first.max <= hi, "{first:?} outside [{lo}, {hi}]");
        let Some(rest) = find(&format!("{x}_after_first")) else {
            assert!(!halves, "no range for {x}_after_first: {:?}", split.activations);
            continue;
        };
        assert!(halves, "{x}_after_first is still read");
        assert!(rest.min >= lo && rest.max <= hi, "{rest:?} outside [{lo}, {hi}]");
        assert_eq!(first.min.min(rest.min), lo);
        assert_eq!(first.max.max(rest.max), hi);
        assert!(!split
            .activations
            .iter()
            .any(|a| a.value == format!("{}_first", l.input)));
    }
}

#[test]
fn per_tensor_leaves_the_model_unsplit_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    onnx::save(&tiny_bert(&SynthOptions::default()), &input, &SaveOptions::default()).unwrap();
    let out = dir.path().join("out.onnx");
    let quantize = |args: &[&str]| {
        let _ = std::fs::remove_file(&out);
        bin().arg("quantize").args(args).arg(&input).arg(&out).output().unwrap()
    };
    // The split as the report states it (options, and the layers split).
    let split_of = |args: &[&str]| -> bool {
        let o = quantize(&[&["--mode", "dynamic", "--json"], args].concat());
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let layers = r["first_token_split_layers"].as_array().unwrap().len();
        let opt = r["options"]["split_first_token"].as_bool().unwrap();
        assert_eq!(opt, layers > 0, "{args:?}");
        opt
    };
    assert!(split_of(&[]));
    assert!(!split_of(&["--per-tensor"]));
    assert!(split_of(&["--per-tensor", "--split-first-token"]));
    assert!(!split_of(&["--no-split-first-token"]));
    assert!(split_of(&["--no-split-first-token", "--split-first-token"]));
    // The text report says what was split (tiny_bert: 2 layers; Q/K/V in dynamic mode only).
    let text = |args: &[&str]| {
        let o = quantize(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        out.lines()
            .find(|l| l.starts_with("first token"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert_eq!(
        text(&["--mode", "dynamic"]),
        "first token  FFN split in layers 0,1; Q/K/V split in layers 0,1; layer 1's attention query and FFN on the first token only (the rest is not read)"
    );
    assert_eq!(
        text(&["--mode", "dynamic", "--no-split-first-token"]),
        "first token  not split (every block runs all tokens at once)"
    );
    // fp16 has nothing to split: its options (as its history records them) have no split;
    // asking for the split is an error.
    let o = quantize(&["--mode", "fp16", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["options"].get("split_first_token").is_none(), "{}", r["options"]);
    let o = quantize(&["--mode", "fp16", "--split-first-token"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--split-first-token applies to the int8 modes"));
    assert!(!out.exists());
}

/// `unpad`: the other tokens' half of every split block runs on the real tokens only, and the
/// float graph still computes what the model did, on padded batches, in every layout.
#[test]
fn unpadded_split_graph_computes_the_same_logits_in_every_layout() {
    if !require_ort("running unpadded graphs") {
        return;
    }
    // random_batches pads every batch (8 sequences of 5–16 tokens).
    let bs = random_batches(4, 5);
    assert!(bs.iter().all(|b| b.attention_mask.iter().any(|&v| v == 0)));
    for (what, m, fused_attention) in layouts() {
        let s = split_first_token(&m, true, true).unwrap();
        // Every split block but the last FFN (first token only) has another-tokens half to
        // unpad: Q/K/V of layers 0–2 (not a fused attention op) and the FFNs of layers 0–1. One
        // GatherND of the real rows per block, one ScatterND per block output (Q, K, V: three),
        // less layer 2's queries (its attention runs for the first token's query alone).
        let (layers, blocks, outputs) = if fused_attention {
            (vec![0, 1], 2, 2)
        } else {
            (vec![0, 1, 2], 3 + 2, 3 * 3 + 2 - 1)
        };
        assert_eq!(s.unpadded_layers, layers, "{what}: {:?}", s.unpad_skipped);
        assert_eq!(count(&s.model, "NonZero"), 1, "{what}");
        assert_eq!(count(&s.model, "GatherND"), blocks, "{what}");
        assert_eq!(count(&s.model, "ScatterND"), outputs, "{what}");
        let (a, b) = (logits(&m, &bs, &what), logits(&s.model, &bs, &what));
        let worst = max_diff(&a, &b);
        assert!(worst < 1e-5, "{what}: logits differ by {worst}");
    }
}

/// A batch of `rows` sequences from flat ids and mask (token types 0).
fn batch(rows: usize, ids: Vec<i64>, mask: Vec<i64>) -> Batch {
    let width = ids.len() / rows;
    Batch {
        input_ids: Array2::from_shape_vec((rows, width), ids).unwrap(),
        attention_mask: Array2::from_shape_vec((rows, width), mask).unwrap(),
        token_type_ids: Array2::zeros((rows, width)),
    }
}

/// Batches at the edges of unpadding: no other tokens, only padding after the first, one real
/// other token, one sequence, no padding at all; and for the attention's length groups, four
/// lengths (a cut after the third shortest) and a mask with holes (a sequence's extent is its last
/// marked position, not its count).
fn edge_batches() -> Vec<(&'static str, Batch)> {
    vec![
        ("one token each", batch(2, vec![2, 7], vec![1, 1])),
        (
            "the first token real, the rest padding",
            batch(2, vec![2, 0, 0, 2, 0, 0], vec![1, 0, 0, 1, 0, 0]),
        ),
        (
            "one real other token",
            batch(2, vec![2, 0, 0, 2, 9, 0], vec![1, 0, 0, 1, 1, 0]),
        ),
        ("one sequence, padded", batch(1, vec![2, 5, 9, 0], vec![1, 1, 1, 0])),
        ("no padding", batch(2, vec![2, 5, 9, 2, 4, 8], vec![1; 6])),
        (
            "four lengths (two length groups for the attention)",
            batch(
                4,
                vec![2, 5, 9, 4, 7, 3, 2, 6, 0, 0, 0, 0, 2, 8, 8, 0, 0, 0, 2, 3, 0, 0, 0, 0],
                vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0],
            ),
        ),
        (
            "holes in the mask, a masked first token",
            batch(
                3,
                vec![2, 5, 9, 4, 7, 2, 5, 9, 4, 0, 2, 6, 0, 0, 0],
                vec![1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0],
            ),
        ),
    ]
}

/// `m` in static INT8 of `form` without and with `unpad`, calibrated alike; the report of the
/// second.
fn static_with_and_without_unpad(
    m: &ModelProto,
    form: quantize::StaticForm,
) -> (ModelProto, ModelProto, quantize::QuantizeReport) {
    let cal = || OrtCalibrator::new(random_batches(8, 7), SessionOptions::default());
    let o = QuantizeOptions {
        mode: Mode::Static,
        static_form: form,
        ..Default::default()
    };
    let (a, _) = quantize::quantize(m, &o, Some(&mut cal())).unwrap();
    let (b, rb) = quantize::quantize(m, &QuantizeOptions { unpad: true, ..o }, Some(&mut cal())).unwrap();
    (a, b, rb)
}

/// Batches whose other tokens are all padding (or that have none) give the unpadded graph no
/// rows at all; it still computes what the model does.
#[test]
fn unpadded_graph_runs_batches_without_real_other_tokens() {
    if !require_ort("running unpadded graphs") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        seed: 4,
        ..Default::default()
    });
    let s = split_first_token(&m, true, true).unwrap();
    assert_eq!(s.unpadded_layers, vec![0, 1], "{:?}", s.unpad_skipped);
    for (what, b) in edge_batches() {
        let bs = [b];
        let d = max_diff(&logits(&m, &bs, what), &logits(&s.model, &bs, what));
        assert!(d < 1e-5, "{what}: logits differ by {d}");
    }
}

/// Static int8 with `unpad` is the same model on the real tokens (its ranges are calibrated on
/// real tokens either way); dynamic int8 too on a batch without padding, where the ranges it
/// finds at run time cover the same values; on padded batches it leaves the padding out of them.
#[test]
fn unpadded_int8_computes_what_the_padded_int8_model_does() {
    if !require_ort("quantization in ONNX Runtime") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        seed: 11,
        ..Default::default()
    });
    let padded = random_batches(3, 9);
    let full: Vec<Batch> = padded
        .iter()
        .map(|b| Batch {
            input_ids: b.input_ids.clone(),
            attention_mask: Array2::ones(b.attention_mask.raw_dim()),
            token_type_ids: b.token_type_ids.clone(),
        })
        .collect();
    let cal = || OrtCalibrator::new(random_batches(8, 7), SessionOptions::default());
    let forms = [
        (Mode::Static, quantize::StaticForm::Qdq),
        (Mode::Static, quantize::StaticForm::Ort),
        (Mode::Dynamic, quantize::StaticForm::Qdq),
    ];
    for (mode, static_form) in forms {
        let o = QuantizeOptions {
            mode,
            static_form,
            ..Default::default()
        };
        let u = QuantizeOptions {
            unpad: true,
            ..o.clone()
        };
        let (a, ra) = quantize::quantize(&m, &o, Some(&mut cal())).unwrap();
        let (b, rb) = quantize::quantize(&m, &u, Some(&mut cal())).unwrap();
        assert!(ra.unpadded_layers.is_empty() && !ra.tokens_packed);
        // The whole stream packed: rows gathered once after the embeddings, the Q/K/V padded
        // again for the scores (K and V only in the last layer, whose query is the first token's
        // alone) and the first layer's context packed again; no per-block scatter. In ONNX
        // Runtime's forms the first layer's attention, one op, runs in two length groups
        // instead: its Q/K/V gathered per group, not padded to the batch's longest.
        assert!(rb.tokens_packed, "{mode:?} {static_form:?}: {:?}", rb.warnings);
        assert_eq!(rb.unpadded_layers, vec![0, 1], "{mode:?} {static_form:?}");
        assert_eq!(count(&b, "ScatterND"), 0, "{mode:?} {static_form:?}");
        assert_eq!(count(&b, "GatherND"), 0, "{mode:?} {static_form:?}");
        let ort_forms = static_form == quantize::StaticForm::Ort || mode == Mode::Dynamic;
        assert_eq!(
            (rb.attention_ops, rb.attention_length_groups),
            if ort_forms { (2, 1) } else { (0, 0) },
            "{mode:?} {static_form:?}"
        );
        let gathers = |m: &ModelProto, what: &str| {
            m.graph
                .as_ref()
                .unwrap()
                .node
                .iter()
                .filter(|n| n.name().starts_with("/pack/") && n.name().ends_with(what))
                .count()
        };
        assert_eq!(
            (gathers(&b, "/Pack"), gathers(&b, "/Pad")),
            (2, if ort_forms { 2 } else { 5 }),
            "{mode:?} {static_form:?}"
        );
        let what = format!("{mode:?} {static_form:?}");
        if !ort_forms {
            // ONNX Runtime runs the packed QDQ MatMuls on its integer kernel, as the padded ones:
            // none became a float Gemm of dequantized weights (its MatMul + Add fusion on 2-D rows).
            let (oa, ob) = (optimized(&a), optimized(&b));
            assert_eq!(
                (count(&ob, "MatMulIntegerToFloat"), count(&ob, "Gemm")),
                (count(&oa, "MatMulIntegerToFloat"), count(&oa, "Gemm")),
                "{what}"
            );
            assert!(count(&oa, "MatMulIntegerToFloat") >= 10, "{what}");
        }
        let same = max_diff(&logits(&a, &full, &what), &logits(&b, &full, &what));
        assert!(same < 1e-5, "{what}, no padding: logits differ by {same}");
        let (x, y) = (logits(&a, &padded, &what), logits(&b, &padded, &what));
        let d = max_diff(&x, &y);
        if mode == Mode::Static {
            assert!(d < 1e-5, "{what}, padded: logits differ by {d}");
        } else {
            // Other ranges, the same model: close to the padded int8 model's logits.
            let f = logits(&m, &padded, "float");
            let (ea, eb) = (max_diff(&f, &x), max_diff(&f, &y));
            assert!(
                eb < 2.0 * ea + 1e-3,
                "{what}, padded: error {eb} against {ea} without unpad"
            );
        }
    }
}

/// The packed int8 model on batches whose other tokens are all padding, that have none, or one
/// sequence: static INT8 gives the padded static model's logits.
#[test]
fn packed_int8_runs_batches_without_real_other_tokens() {
    if !require_ort("quantization in ONNX Runtime") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        seed: 4,
        ..Default::default()
    });
    // QDQ: the attention on the padded layout; ONNX Runtime's form: one op in two length groups.
    for form in [quantize::StaticForm::Qdq, quantize::StaticForm::Ort] {
        let (a, b, rb) = static_with_and_without_unpad(&m, form);
        assert!(rb.tokens_packed, "{:?}", rb.warnings);
        let grouped = usize::from(form == quantize::StaticForm::Ort);
        assert_eq!(rb.attention_length_groups, grouped, "{form:?}");
        for (what, bt) in edge_batches() {
            let bs = [bt];
            let d = max_diff(&logits(&a, &bs, what), &logits(&b, &bs, what));
            assert!(d < 1e-5, "{form:?}, {what}: logits differ by {d}");
        }
    }
}

/// A fused attention op cannot be padded again between its projections and its scores: the
/// tokens are not packed, the report says why, and the split blocks alone run unpadded (the same
/// static model all the same).
#[test]
fn a_fused_attention_keeps_the_per_block_unpadding_and_says_why() {
    if !require_ort("quantization in ONNX Runtime") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        fused_attention: true,
        seed: 5,
        ..Default::default()
    });
    let (a, b, rb) = static_with_and_without_unpad(&m, quantize::StaticForm::Qdq);
    assert!(!rb.tokens_packed);
    assert!(
        rb.warnings
            .iter()
            .any(|w| w.starts_with("tokens not packed: layer 0: its attention is one fused op")),
        "{:?}",
        rb.warnings
    );
    assert!(
        !rb.unpadded_layers.is_empty() && count(&b, "ScatterND") > 0,
        "{:?}",
        rb.warnings
    );
    let batches = random_batches(3, 9);
    let d = max_diff(&logits(&a, &batches, "static"), &logits(&b, &batches, "static --unpad"));
    assert!(d < 1e-5, "logits differ by {d}");
    // The unpadded blocks' QDQ MatMuls run on ONNX Runtime's integer kernel, as the padded ones.
    let (oa, ob) = (optimized(&a), optimized(&b));
    assert_eq!(
        (count(&ob, "MatMulIntegerToFloat"), count(&ob, "Gemm")),
        (count(&oa, "MatMulIntegerToFloat"), count(&oa, "Gemm"))
    );
}

/// Without an `attention_mask` input there is nothing to tell real tokens from padding: the split
/// stays, unpadding is skipped with the reason.
#[test]
fn unpad_without_an_attention_mask_is_skipped_with_the_reason() {
    let mut m = tiny_bert(&SynthOptions::default());
    let g = m.graph.as_mut().unwrap();
    for v in g.input.iter_mut().filter(|v| v.name() == "attention_mask") {
        v.name = Some("mask".into());
    }
    for n in g.node.iter_mut() {
        for i in n.input.iter_mut().filter(|i| *i == "attention_mask") {
            *i = "mask".into();
        }
    }
    let s = split_first_token(&m, true, true).unwrap();
    assert_eq!(s.layers, vec![0, 1], "{:?}", s.skipped);
    assert!(s.unpadded_layers.is_empty());
    assert_eq!(s.unpad_skipped, ["not unpadded: the model has no attention_mask input"]);
}

#[test]
fn cli_unpad_says_what_it_did_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    onnx::save(&tiny_bert(&SynthOptions::default()), &input, &SaveOptions::default()).unwrap();
    let out = dir.path().join("out.onnx");
    let run = |args: &[&str]| bin().arg("quantize").args(args).arg(&input).arg(&out).output().unwrap();
    let o = run(&["--mode", "dynamic", "--unpad"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "; every layer on the real tokens only (packed rows, padded again for the attention scores: layers 0,1)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "attention    1 of them in two length groups per batch (each padded to its own longest sequence)\n"
        ),
        "{text}"
    );
    let o = run(&["--mode", "dynamic", "--unpad", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["options"]["unpad"], true);
    assert_eq!(r["unpadded_layers"], serde_json::json!([0, 1]));
    assert_eq!(r["tokens_packed"], true);
    assert_eq!(
        (r["attention_ops"].as_u64(), r["attention_length_groups"].as_u64()),
        (Some(2), Some(1))
    );
    std::fs::remove_file(&out).unwrap();
    for (args, says) in [
        (
            &["--mode", "dynamic", "--unpad", "--no-split-first-token"][..],
            "--unpad runs the first-token split's",
        ),
        (
            &["--mode", "dynamic", "--unpad", "--per-tensor"][..],
            "--unpad runs the first-token split's",
        ),
        (&["--mode", "fp16", "--unpad"][..], "--unpad applies to the int8 modes"),
        (
            &["--mode", "fp16", "--weight-type", "u8"][..],
            "--weight-type applies to the int8 modes",
        ),
    ] {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}

/// A constant of the block broadcast from [1, 1, width] still acts on each token alone (the rows
/// come back rank 3 and are flattened before the scatter); one that varies along an earlier axis
/// does not, and its block stays padded, named.
#[test]
fn unpad_checks_the_constants_a_block_reads() {
    let m = tiny_bert(&SynthOptions {
        seed: 6,
        ..Default::default()
    });
    let t = discover(&m).unwrap();
    let bias = t.layers[0].ffn.as_ref().unwrap().up.bias.clone().unwrap();
    let with_bias_dims = |dims: &[usize], copies: usize| {
        let mut m = m.clone();
        let g = m.graph.as_mut().unwrap();
        let init = g.initializer.iter_mut().find(|i| i.name() == bias).unwrap();
        let values = onnx::tensor::to_f32(init).unwrap().repeat(copies);
        *init = onnx::tensor::from_f32(&bias, dims, &values);
        m
    };
    let width = t.layers[0].ffn.as_ref().unwrap().up.out_features;
    let rank3 = with_bias_dims(&[1, 1, width], 1);
    let s = split_first_token(&rank3, true, true).unwrap();
    assert_eq!(s.unpadded_layers, vec![0, 1], "{:?}", s.unpad_skipped);
    if require_ort("running unpadded graphs") {
        let bs = random_batches(2, 3);
        let d = max_diff(&logits(&rank3, &bs, "rank 3 bias"), &logits(&s.model, &bs, "unpadded"));
        assert!(d < 1e-5, "logits differ by {d}");
    }
    let per_row = with_bias_dims(&[3, width], 3);
    let s = split_first_token(&per_row, true, true).unwrap();
    let why = format!("reads a constant of shape [3, {width}]");
    assert!(
        s.unpad_skipped
            .iter()
            .any(|x| x.starts_with("layer 0: its FFN not unpadded: ") && x.ends_with(&why)),
        "{:?}",
        s.unpad_skipped
    );
    assert_eq!(s.unpadded_layers, vec![0, 1], "Q/K/V of both layers still unpadded");
}
