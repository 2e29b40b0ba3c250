//! The `prune` pass, end to end: what it computes (pruning a head or a neuron is exactly zeroing
//! its weights in the original model, checked in ONNX Runtime), what it leaves (a graph that
//! maps and runs, in every exporter layout, even when a layer loses everything), what it refuses
//! (bad options, graphs without the structure, through the library and through the binary), what
//! it reports and records, and the reference's l1 counts.
//!
//! Synthetic models (`testkit::synth::tiny_bert`) carry most checks; the shared SST-2 model is
//! used only where stated and skipped visibly when `../shared` is absent (a failure under
//! `CI=true`). Tests that run ONNX Runtime skip the same way when it is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::Array2;
use onnx_compress::onnx::build::{model, node, value_info};
use onnx_compress::onnx::proto::tensor_proto::DataType;
use onnx_compress::onnx::{self, edit, tensor, GraphIndex, GraphProto, ModelProto};
use onnx_compress::passes::prune::{
    self, apply_plan, keep_uniform, l1_scores, LayerPlan, Plan, PruneOptions, Removal, Strategy,
};
use onnx_compress::passes::PassError;
use onnx_compress::runtime::Batch;
use onnx_compress::structure::{discover, Linear, Qkv, ShapeRole, Transformer};
use onnx_compress::testkit::shared::{require, require_ort};
use onnx_compress::testkit::synth::{sample_batch, tiny_bert, GeluStyle, ShapeStyle, SynthOptions};
use prost::Message;
use serde_json::Value;

mod common;

use common::{bin, logits_2x2, max_diff, zero_in_features, zero_out_features};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ALL_STYLES: [ShapeStyle; 4] = [
    ShapeStyle::ConcatInferred,
    ShapeStyle::ConcatExplicit,
    ShapeStyle::SharedInitializer,
    ShapeStyle::ConstantPerReshape,
];

/// Every layout the pass must handle: each shape style, plus Identity-aliased weights and the
/// NaN guard torch's exporter writes after SDPA's softmax.
fn layouts() -> Vec<(String, SynthOptions)> {
    let mut v: Vec<(String, SynthOptions)> = ALL_STYLES
        .iter()
        .map(|&shapes| {
            (
                format!("{shapes:?}"),
                SynthOptions {
                    shapes,
                    ..Default::default()
                },
            )
        })
        .collect();
    v.push((
        "identity aliases".into(),
        SynthOptions {
            identity_aliases: true,
            ..Default::default()
        },
    ));
    v.push((
        "SharedInitializer + identity aliases".into(),
        SynthOptions {
            shapes: ShapeStyle::SharedInitializer,
            identity_aliases: true,
            ..Default::default()
        },
    ));
    v.push((
        "SDPA NaN guard".into(),
        SynthOptions {
            nan_guard: true,
            ..Default::default()
        },
    ));
    v.push((
        "dynamo Shape slices + NaN guard".into(),
        SynthOptions {
            shapes: ShapeStyle::ShapeSlices,
            nan_guard: true,
            ..Default::default()
        },
    ));
    v.push((
        "embeddings projection".into(),
        SynthOptions {
            embedding_size: Some(16),
            ..Default::default()
        },
    ));
    v
}

/// Two real-looking BERT sequences ([CLS] ... [SEP], ids < 30522), the second padded.
fn sst2_batch() -> Batch {
    let ids = vec![
        101i64, 1037, 2307, 3185, 1010, 2200, 6429, 999, 102, //
        101, 1996, 2143, 2001, 9643, 102, 0, 0, 0,
    ];
    let mask = vec![
        1i64, 1, 1, 1, 1, 1, 1, 1, 1, //
        1, 1, 1, 1, 1, 1, 0, 0, 0,
    ];
    Batch {
        input_ids: Array2::from_shape_vec((2, 9), ids).unwrap(),
        attention_mask: Array2::from_shape_vec((2, 9), mask).unwrap(),
        token_type_ids: Array2::zeros((2, 9)),
    }
}

fn synth_logits(m: &ModelProto, what: &str) -> Vec<f32> {
    logits_2x2(m, &sample_batch(), what)
}

/// The shared SST-2 model, decoded once for the whole file (`None`: skipped, visibly).
fn sst2(what: &str) -> Option<&'static ModelProto> {
    static MODEL: OnceLock<Option<ModelProto>> = OnceLock::new();
    let path = require("models/minilm-l6-sst2/model.onnx", what)?;
    MODEL
        .get_or_init(|| Some(onnx::load(&path).expect("the shared SST-2 model loads")))
        .as_ref()
}

/// Logits of the unmodified shared SST-2 model on [`sst2_batch`], computed once.
fn sst2_logits(m: &ModelProto) -> &'static [f32] {
    static LOGITS: OnceLock<Vec<f32>> = OnceLock::new();
    LOGITS.get_or_init(|| logits_2x2(m, &sst2_batch(), "shared SST-2 model"))
}

fn attention(t: &Transformer, layer: usize) -> &onnx_compress::structure::Attention {
    t.layers[layer]
        .attention
        .as_ref()
        .unwrap_or_else(|| panic!("layer {layer} has attention"))
}

/// The V projection of an unfused attention.
fn v_proj(t: &Transformer, layer: usize) -> &Linear {
    match &attention(t, layer).qkv {
        Qkv::Separate { v, .. } => v,
        other => panic!("layer {layer}: Q, K and V not separate: {other:?}"),
    }
}

fn keep_all(t: &Transformer) -> Plan {
    Plan::keep_all(t)
}

/// Indices in 0..n that are not in `keep`.
fn removed(n: usize, keep: &[usize]) -> Vec<usize> {
    (0..n).filter(|i| !keep.contains(i)).collect()
}

/// The original model with, per layer, every head not in `plan.keep_heads` silenced (V columns
/// and V bias entries, and attention-output rows, zeroed) and every neuron not in
/// `plan.keep_neurons` silenced (FFN down-projection rows zeroed).
///
/// Why this is exactly removal. Head h computes ctx_h = softmax(Q_h K_hᵀ/√d + mask) · V_h, and
/// the attention output is Σ_h ctx_h · W_o[rows of h] + b_o. Each softmax row is a probability
/// vector (sums to 1), so ctx_h is a weighted mean of the rows of V_h = x·W_v[:, cols of h] +
/// b_v[cols of h]; with those columns and bias entries zeroed, V_h = 0, hence ctx_h = 0 whatever
/// Q and K are. Zeroing W_o's rows of h removes the term ctx_h · W_o[rows of h] even on its own.
/// What remains is Σ over kept heads + b_o: what the sliced graph computes. (Q and K of the head
/// only feed its softmax, whose output is multiplied by zeros.) Likewise an FFN neuron j adds
/// act(up_j(x)) · W_down[j, :] to the output: a zero row of W_down removes it exactly.
fn silenced(original: &ModelProto, t: &Transformer, plan: &Plan) -> ModelProto {
    let mut m = original.clone();
    for (l, p) in t.layers.iter().zip(&plan.layers) {
        if let Some(a) = &l.attention {
            let gone = removed(a.num_heads, &p.keep_heads);
            let cols = prune::head_columns(&gone, a.head_size);
            if !cols.is_empty() {
                zero_out_features(&mut m, v_proj(t, l.index), &cols);
                zero_in_features(&mut m, &a.output, &cols);
            }
        }
        if let Some(f) = &l.ffn {
            let gone = removed(f.width, &p.keep_neurons);
            if !gone.is_empty() {
                zero_in_features(&mut m, &f.down, &gone);
            }
        }
    }
    m
}

/// Every initializer and Constant-node tensor has only non-zero dimensions.
fn assert_no_empty_tensors(m: &ModelProto, what: &str) {
    let g = m.graph.as_ref().unwrap();
    for t in &g.initializer {
        assert!(
            t.dims.iter().all(|&d| d > 0),
            "{what}: initializer '{}' has dims {:?}",
            t.name(),
            t.dims
        );
    }
    for n in g.node.iter().filter(|n| n.op_type() == "Constant") {
        for a in &n.attribute {
            if let Some(t) = &a.t {
                assert!(
                    t.dims.iter().all(|&d| d > 0),
                    "{what}: Constant '{}' has dims {:?}",
                    n.name(),
                    t.dims
                );
            }
        }
    }
}

/// Number of float32 values stored in the graph's initializers.
fn float_values(m: &ModelProto) -> usize {
    m.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(DataType::Float as i32))
        .map(|t| tensor::numel(t).unwrap())
        .sum()
}

/// Float values a plan removes from an unfused model: per head, its Q, K, V columns and bias
/// entries and its output-projection rows; per neuron, its up column and bias entry and its down
/// row. (A fully pruned block keeps its output bias, as a new initializer.)
fn values_removed(t: &Transformer, plan: &Plan) -> usize {
    let h = t.hidden;
    t.layers
        .iter()
        .zip(&plan.layers)
        .map(|(l, p)| {
            let heads = l.heads() - p.keep_heads.len();
            let neurons = l.ffn_width() - p.keep_neurons.len();
            let d = l.head_size().unwrap_or(0);
            heads * (3 * (h * d + d) + d * h) + neurons * (h + 1 + h)
        })
        .sum()
}

fn l1(heads: f64, ffn: f64) -> PruneOptions {
    PruneOptions {
        heads,
        ffn,
        strategy: Strategy::L1,
        ..Default::default()
    }
}

/// A synthetic model written to `dir/name`.
fn write_synth(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, tiny_bert(&SynthOptions::default()).encode_to_vec()).unwrap();
    p
}

/// Checks a failed run: exit status ≠ 0, exactly one stderr line starting with `error: `, no
/// panic; returns that line.
fn one_error_line(out: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded; stderr: {stderr}");
    assert_ne!(out.status.code(), Some(101), "{what}: panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line on stderr, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
    lines[0].to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. Pruning 0% is the identity
// ---------------------------------------------------------------------------------------------

#[test]
fn pruning_nothing_is_the_identity_in_every_layout() {
    if !require_ort("0% pruning on synthetic models") {
        return;
    }
    for (what, o) in layouts() {
        let m = tiny_bert(&o);
        let (out, report) = prune::prune(&m, &l1(0.0, 0.0)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(report.params_before, report.params_after, "{what}");
        assert_eq!(report.encoder_macs_before, report.encoder_macs_after, "{what}");
        let t = discover(&out).unwrap();
        assert!(t.layers.iter().all(|l| l.heads() == 4 && l.ffn_width() == 64), "{what}");
        let a = synth_logits(&m, &what);
        let b = synth_logits(&out, &format!("{what}, pruned 0%"));
        // Nothing was sliced: same graph, same arithmetic; at most 1e-6 (in practice bit for bit).
        assert!(max_diff(&a, &b) <= 1e-6, "{what}: {a:?} vs {b:?}");
    }
}

#[test]
fn pruning_nothing_is_the_identity_on_the_shared_sst2_model() {
    let Some(m) = sst2("0% pruning of the SST-2 model") else {
        return;
    };
    if !require_ort("0% pruning of the SST-2 model") {
        return;
    }
    let (out, report) = prune::prune(m, &l1(0.0, 0.0)).unwrap();
    assert_eq!(report.params_before, report.params_after);
    let a = sst2_logits(m);
    let b = logits_2x2(&out, &sst2_batch(), "SST-2 pruned 0%");
    // Same graph, same weights: at most 1e-6.
    assert!(max_diff(a, &b) <= 1e-6, "{a:?} vs {b:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Head pruning is zeroing the head
// ---------------------------------------------------------------------------------------------

/// Layer 0 keeps heads [0, 2, 3], layer 1 keeps [1]; every neuron is kept.
fn head_plan(t: &Transformer) -> Plan {
    let mut plan = keep_all(t);
    plan.layers[0].keep_heads = vec![0, 2, 3];
    plan.layers[1].keep_heads = vec![1];
    plan
}

#[test]
fn removing_heads_equals_zeroing_them_in_every_layout() {
    if !require_ort("head pruning vs zeroing") {
        return;
    }
    for (what, o) in layouts() {
        let m = tiny_bert(&o);
        let t = discover(&m).unwrap();
        let plan = head_plan(&t);
        let out = apply_plan(&m, &t, &plan).unwrap_or_else(|e| panic!("{what}: {e}"));
        let t2 = discover(&out).unwrap_or_else(|e| panic!("{what}: the pruned model does not map: {e}"));
        assert_eq!((t2.layers[0].heads(), t2.layers[1].heads()), (3, 1), "{what}");
        assert_eq!(v_proj(&t2, 0).out_features, 3 * 8, "{what}");
        assert_eq!(attention(&t2, 1).output.in_features, 8, "{what}");
        // Really sliced, and no stale full-size copy left behind (aliases, un-shared weights).
        assert_eq!(
            float_values(&out),
            float_values(&m) - values_removed(&t, &plan),
            "{what}"
        );
        let pruned = synth_logits(&out, &format!("{what}, pruned"));
        let zeroed = synth_logits(&silenced(&m, &t, &plan), &format!("{what}, zeroed"));
        // Same function, different float summation order (fewer terms): within 1e-4.
        assert!(
            max_diff(&pruned, &zeroed) <= 1e-4,
            "{what}: pruned {pruned:?} vs zeroed {zeroed:?}"
        );
        // And the check has teeth: removing those heads does change the logits.
        let original = synth_logits(&m, &what);
        assert!(
            max_diff(&pruned, &original) > 1e-3,
            "{what}: {pruned:?} vs {original:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. FFN pruning is zeroing the neurons
// ---------------------------------------------------------------------------------------------

#[test]
fn removing_neurons_equals_zeroing_their_down_rows() {
    if !require_ort("FFN pruning vs zeroing") {
        return;
    }
    let cases = [
        ("gelu(erf)", GeluStyle::Erf, false),
        ("Gelu op", GeluStyle::Op, false),
        ("gelu(tanh)", GeluStyle::Tanh, false),
        ("gelu(erf), identity aliases", GeluStyle::Erf, true),
    ];
    for (what, gelu, identity_aliases) in cases {
        let m = tiny_bert(&SynthOptions {
            gelu,
            identity_aliases,
            ..Default::default()
        });
        let t = discover(&m).unwrap();
        let mut plan = keep_all(&t);
        // Layer 0 loses every third neuron, layer 1 the first 40 of 64.
        plan.layers[0].keep_neurons = (0..64).filter(|j| j % 3 != 0).collect();
        plan.layers[1].keep_neurons = (40..64).collect();
        let out = apply_plan(&m, &t, &plan).unwrap_or_else(|e| panic!("{what}: {e}"));
        let t2 = discover(&out).unwrap();
        assert_eq!((t2.layers[0].ffn_width(), t2.layers[1].ffn_width()), (42, 24), "{what}");
        let pruned = synth_logits(&out, &format!("{what}, pruned"));
        let zeroed = synth_logits(&silenced(&m, &t, &plan), &format!("{what}, zeroed"));
        // Same function, different summation order: within 1e-4.
        assert!(
            max_diff(&pruned, &zeroed) <= 1e-4,
            "{what}: pruned {pruned:?} vs zeroed {zeroed:?}"
        );
        let original = synth_logits(&m, what);
        assert!(
            max_diff(&pruned, &original) > 1e-3,
            "{what}: {pruned:?} vs {original:?}"
        );
    }
}

#[test]
fn ffn_pruning_of_the_shared_model_equals_zeroing() {
    let Some(m) = sst2("FFN pruning vs zeroing on SST-2") else {
        return;
    };
    if !require_ort("FFN pruning vs zeroing on SST-2") {
        return;
    }
    let (out, report) = prune::prune(m, &l1(0.0, 0.15)).unwrap();
    // Which neurons went: the pass's own l1 scores and keep rule.
    let t = discover(m).unwrap();
    let (hs, ns) = l1_scores(m, &t).unwrap();
    let plan = Plan {
        layers: hs
            .iter()
            .zip(&ns)
            .map(|(h, n)| LayerPlan {
                keep_heads: (0..h.len()).collect(),
                keep_neurons: keep_uniform(n, 0.15),
                ..Default::default()
            })
            .collect(),
    };
    let t2 = discover(&out).unwrap();
    for (i, (l, p)) in t2.layers.iter().zip(&plan.layers).enumerate() {
        // round(1536 × 0.15) = round(230.4) = 230 removed.
        assert_eq!(l.ffn_width(), 1536 - 230, "layer {i}");
        assert_eq!(l.ffn_width(), p.keep_neurons.len(), "layer {i}");
        assert_eq!(l.heads(), 12, "layer {i}");
        assert_eq!(
            (report.layers[i].neurons_before, report.layers[i].neurons_after),
            (1536, 1306)
        );
    }
    let pruned = logits_2x2(&out, &sst2_batch(), "SST-2 --ffn 0.15");
    let zeroed = logits_2x2(&silenced(m, &t, &plan), &sst2_batch(), "SST-2 FFN rows zeroed");
    // Same function, different summation order: within 1e-4.
    assert!(
        max_diff(&pruned, &zeroed) <= 1e-4,
        "pruned {pruned:?} vs zeroed {zeroed:?}"
    );
    let original = sst2_logits(m);
    assert!(max_diff(&pruned, original) > 0.0, "{pruned:?} vs {original:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. A layer may lose every head / every neuron
// ---------------------------------------------------------------------------------------------

#[test]
fn a_layer_may_lose_every_head_or_every_neuron() {
    if !require_ort("fully pruned blocks") {
        return;
    }
    for (what, o) in layouts() {
        let m = tiny_bert(&o);
        let t = discover(&m).unwrap();
        let mut plan = keep_all(&t);
        plan.layers[0].keep_heads = vec![];
        plan.layers[1].keep_neurons = vec![];
        let out = apply_plan(&m, &t, &plan).unwrap_or_else(|e| panic!("{what}: {e}"));
        let t2 = discover(&out).unwrap_or_else(|e| panic!("{what}: the pruned model does not map: {e}"));
        assert_eq!(t2.layers.len(), 2, "{what}");
        assert_eq!(t2.layers[0].heads(), 0, "{what}");
        assert!(t2.layers[0].attention.is_none(), "{what}");
        assert!(t2.layers[0].attention_bias.is_some(), "{what}");
        assert_eq!(t2.layers[0].ffn_width(), 64, "{what}");
        assert_eq!(t2.layers[1].heads(), 4, "{what}");
        assert_eq!(t2.layers[1].ffn_width(), 0, "{what}");
        assert!(t2.layers[1].ffn_bias.is_some(), "{what}");
        // inspect gives the head size of the layers that have heads (not layer 0's none).
        let s = onnx_compress::inspect::summarize(&out, Path::new("x.onnx"), 0, 128).unwrap();
        let text = onnx_compress::report::inspect_text(&s);
        assert!(text.contains("2 layers × [0, 4] heads × 8,"), "{what}: {text}");
        assert_no_empty_tensors(&out, &what);
        assert_eq!(
            float_values(&out),
            float_values(&m) - values_removed(&t, &plan),
            "{what}"
        );
        // Zeroing every head of layer 0 (all V columns and biases, all output rows) and every
        // down row of layer 1 leaves exactly the output biases: what the pruned blocks compute.
        let pruned = synth_logits(&out, &format!("{what}, emptied"));
        let zeroed = synth_logits(&silenced(&m, &t, &plan), &format!("{what}, all zeroed"));
        // Same function, different summation order: within 1e-4.
        assert!(
            max_diff(&pruned, &zeroed) <= 1e-4,
            "{what}: pruned {pruned:?} vs zeroed {zeroed:?}"
        );
        // The parameter counts no longer include the removed blocks.
        let p1 = onnx_compress::structure::parameter_counts(&m, &t);
        let p2 = onnx_compress::structure::parameter_counts(&out, &t2);
        assert!(p2.total < p1.total, "{what}: {p1:?} vs {p2:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Pruning a pruned model
// ---------------------------------------------------------------------------------------------

#[test]
fn a_pruned_synthetic_model_can_be_pruned_again() {
    if !require_ort("pruning twice, synthetic") {
        return;
    }
    for (what, o) in layouts() {
        let m = tiny_bert(&o);
        let (once, r1) = prune::prune(&m, &l1(0.25, 0.0)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let (twice, r2) = prune::prune(&once, &l1(0.25, 0.0)).unwrap_or_else(|e| panic!("{what}, again: {e}"));
        // 4 → 4 − round(1.0) = 3 → 3 − round(0.75) = 2.
        for (l1r, l2r) in r1.layers.iter().zip(&r2.layers) {
            assert_eq!((l1r.heads_before, l1r.heads_after), (4, 3), "{what}");
            assert_eq!((l2r.heads_before, l2r.heads_after), (3, 2), "{what}");
        }
        let (thrice, r3) = prune::prune(&twice, &l1(0.0, 0.5)).unwrap_or_else(|e| panic!("{what}, ffn: {e}"));
        for l in &r3.layers {
            assert_eq!((l.heads_before, l.heads_after), (2, 2), "{what}");
            assert_eq!((l.neurons_before, l.neurons_after), (64, 32), "{what}");
        }
        let t = discover(&thrice).unwrap();
        assert!(t.layers.iter().all(|l| l.heads() == 2 && l.ffn_width() == 32), "{what}");
        synth_logits(&twice, &format!("{what}, heads twice"));
        synth_logits(&thrice, &format!("{what}, heads twice then ffn"));
    }
}

#[test]
fn the_shared_model_pruned_twice_sees_the_pruned_sizes() {
    let Some(m) = sst2("pruning SST-2 twice") else { return };
    if !require_ort("pruning SST-2 twice") {
        return;
    }
    let (once, _) = prune::prune(m, &l1(0.25, 0.0)).unwrap();
    let (twice, r2) = prune::prune(&once, &l1(0.25, 0.0)).unwrap();
    // 12 → 12 − round(3.0) = 9 → 9 − round(2.25) = 7, in every layer.
    for l in &r2.layers {
        assert_eq!((l.heads_before, l.heads_after), (9, 7), "layer {}", l.layer);
    }
    let t = discover(&twice).unwrap();
    assert_eq!(t.layers.len(), 6);
    assert!(t.layers.iter().all(|l| l.heads() == 7 && l.ffn_width() == 1536));
    logits_2x2(&twice, &sst2_batch(), "SST-2, heads 0.25 twice");
    // FFN after heads: 1536 − round(153.6) = 1382 neurons, heads untouched.
    let (third, r3) = prune::prune(&twice, &l1(0.0, 0.1)).unwrap();
    for l in &r3.layers {
        assert_eq!((l.heads_before, l.heads_after), (7, 7));
        assert_eq!((l.neurons_before, l.neurons_after), (1536, 1382));
    }
    let t = discover(&third).unwrap();
    assert!(t.layers.iter().all(|l| l.heads() == 7 && l.ffn_width() == 1382));
    logits_2x2(&third, &sst2_batch(), "SST-2, heads twice then ffn");
}

// ---------------------------------------------------------------------------------------------
// 6. Shared constants are un-shared
// ---------------------------------------------------------------------------------------------

#[test]
fn shared_shape_constants_are_unshared_per_layer() {
    if !require_ort("un-shared shape constants") {
        return;
    }
    for identity_aliases in [false, true] {
        let what = format!("SharedInitializer, aliases {identity_aliases}");
        let m = tiny_bert(&SynthOptions {
            shapes: ShapeStyle::SharedInitializer,
            identity_aliases,
            ..Default::default()
        });
        let t = discover(&m).unwrap();
        // Before: both layers read the same two initializers.
        let consts = |t: &Transformer, l: usize| -> BTreeSet<String> {
            attention(t, l)
                .shape_consts
                .iter()
                .map(|c| c.constant.clone())
                .collect()
        };
        assert_eq!(
            consts(&t, 0),
            consts(&t, 1),
            "{what}: the model shares its shape constants"
        );
        let plan = head_plan(&t); // 3 heads in layer 0, 1 in layer 1
        let out = apply_plan(&m, &t, &plan).unwrap_or_else(|e| panic!("{what}: {e}"));
        let t2 = discover(&out).unwrap();
        let g = out.graph.as_ref().unwrap();
        let ix = GraphIndex::new(g);
        for (layer, heads) in [(0usize, 3i64), (1, 1)] {
            let a = attention(&t2, layer);
            assert_eq!(a.num_heads as i64, heads, "{what}: layer {layer}");
            // Split [0, 0, heads, 8] ×3 and merge [0, 0, heads·8].
            let roles: Vec<ShapeRole> = a.shape_consts.iter().map(|c| c.role).collect();
            assert!(
                roles.contains(&ShapeRole::Heads) && roles.contains(&ShapeRole::AllHeads),
                "{what}"
            );
            for c in &a.shape_consts {
                let want = match c.role {
                    ShapeRole::Heads | ShapeRole::MaskHeads => heads,
                    ShapeRole::AllHeads => heads * 8,
                    ShapeRole::HeadSize => 8,
                };
                assert_eq!(c.value, want, "{what}: layer {layer}: {c:?}");
                let stored = ix.const_i64(&c.constant).expect("an integer constant");
                assert_eq!(stored[c.element], want, "{what}: layer {layer}: {c:?}");
            }
        }
        // No constant is read by both layers any more; the shared ones are gone.
        let (c0, c1) = (consts(&t2, 0), consts(&t2, 1));
        assert!(c0.is_disjoint(&c1), "{what}: {c0:?} / {c1:?}");
        for shared in ["attention.split_shape", "attention.merge_shape"] {
            assert!(edit::use_count(g, shared) == 0, "{what}: '{shared}' is still read");
        }
        // Runs, and computes what zeroing computes (within 1e-4, summation order).
        let pruned = synth_logits(&out, &what);
        let zeroed = synth_logits(&silenced(&m, &t, &plan), &format!("{what}, zeroed"));
        assert!(max_diff(&pruned, &zeroed) <= 1e-4, "{what}: {pruned:?} vs {zeroed:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Bad options: a clear error, no output
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_options_are_refused_naming_the_flag() {
    let m = tiny_bert(&SynthOptions::default());
    let cases: Vec<(PruneOptions, &str)> = vec![
        (l1(1.0, 0.0), "--heads"),
        (l1(-0.1, 0.0), "--heads"),
        (l1(f64::NAN, 0.0), "--heads"),
        (l1(0.0, 1.5), "--ffn"),
        (l1(0.0, -0.5), "--ffn"),
        (l1(0.0, f64::NAN), "--ffn"),
        (l1(0.0, f64::INFINITY), "--ffn"),
        (
            PruneOptions {
                target_macs: Some(0.0),
                ..l1(0.0, 0.0)
            },
            "--target-macs",
        ),
        (
            PruneOptions {
                target_macs: Some(1.5),
                ..l1(0.0, 0.0)
            },
            "--target-macs",
        ),
        (
            PruneOptions {
                target_macs: Some(f64::NAN),
                ..l1(0.0, 0.0)
            },
            "--target-macs",
        ),
        // A valid budget still needs calibration data.
        (
            PruneOptions {
                target_macs: Some(0.5),
                ..l1(0.0, 0.0)
            },
            "--target-macs",
        ),
        (
            PruneOptions {
                strategy: Strategy::Obs,
                ..l1(0.25, 0.0)
            },
            "--calib-data",
        ),
        // The FFN share a budget may take: in (0, 1), and only with a budget.
        (
            PruneOptions {
                strategy: Strategy::Obs,
                target_macs: Some(0.5),
                max_ffn_fraction: 1.0,
                ..l1(0.0, 0.0)
            },
            "--max-ffn-fraction",
        ),
        (
            PruneOptions {
                max_ffn_fraction: 0.98,
                ..l1(0.25, 0.0)
            },
            "--max-ffn-fraction",
        ),
        (
            PruneOptions {
                seq_len: 0,
                ..l1(0.25, 0.0)
            },
            "--seq-len",
        ),
        (
            PruneOptions {
                ffn_multiple_of: 0,
                ..l1(0.0, 0.25)
            },
            "--ffn-multiple-of",
        ),
        // Rounding needs FFN counts to round.
        (
            PruneOptions {
                ffn_multiple_of: 8,
                ..l1(0.25, 0.0)
            },
            "--ffn-multiple-of",
        ),
    ];
    for (opts, flag) in cases {
        match prune::prune(&m, &opts) {
            Err(PassError::Options(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(flag), "{opts:?}: '{msg}' does not name {flag}")
            }
            Err(e) => panic!("{opts:?}: expected an options error naming {flag}, got {e}"),
            Ok(_) => panic!("{opts:?}: accepted"),
        }
    }
}

/// Named units (the reference's `heads_to_remove`, `layer_idx` + `neurons_to_remove`) are
/// exactly the plan that keeps the others; bad names are option errors naming the field.
#[test]
fn named_heads_and_neurons_are_the_plan_without_them() {
    let m = tiny_bert(&SynthOptions::default());
    let t = discover(&m).unwrap();
    let named = |layer, indices: &[usize]| {
        Some(Removal {
            layer,
            indices: indices.to_vec(),
        })
    };
    let opts = PruneOptions {
        remove_heads: named(None, &[3, 0]),
        remove_neurons: named(Some(1), &[10, 20, 30]),
        ..l1(0.0, 0.0)
    };
    let (out, report) = prune::prune(&m, &opts).unwrap();
    let mut plan = keep_all(&t);
    for l in &mut plan.layers {
        l.keep_heads = vec![1, 2];
    }
    plan.layers[1].keep_neurons.retain(|n| ![10, 20, 30].contains(n));
    let want = apply_plan(&m, &t, &plan).unwrap();
    assert_eq!(out.graph, want.graph);
    let sizes: Vec<(usize, usize)> = report.layers.iter().map(|l| (l.heads_after, l.neurons_after)).collect();
    assert_eq!(sizes, [(2, 64), (2, 61)]);
    let bad = |remove_heads, remove_neurons, heads, strategy| PruneOptions {
        remove_heads,
        remove_neurons,
        strategy,
        ..l1(heads, 0.0)
    };
    for (opts, field, message) in [
        (
            bad(named(None, &[4]), None, 0.0, Strategy::L1),
            "remove_heads",
            "`remove_heads` 4: layer 0 has 4 heads (0 to 3)",
        ),
        (
            bad(named(Some(2), &[0]), None, 0.0, Strategy::L1),
            "remove_heads",
            "`remove_heads` layer 2: the model has 2 encoder layers (0 to 1)",
        ),
        (
            bad(None, named(None, &[64]), 0.0, Strategy::L1),
            "remove_neurons",
            "`remove_neurons` 64: layer 0 has 64 neurons (0 to 63)",
        ),
        (
            bad(named(None, &[1, 1]), None, 0.0, Strategy::L1),
            "remove_heads",
            "index 1 is given twice",
        ),
        (
            bad(named(None, &[]), None, 0.0, Strategy::L1),
            "remove_heads",
            "name at least one index",
        ),
        (
            bad(named(None, &[1]), None, 0.25, Strategy::L1),
            "remove_heads",
            "both choose what to remove",
        ),
        (
            bad(named(None, &[1]), None, 0.0, Strategy::Obs),
            "remove_heads",
            "no calibrated",
        ),
    ] {
        match prune::prune(&m, &opts) {
            Err(PassError::Options(e)) => {
                assert_eq!(e.field, field, "{opts:?}");
                assert!(e.message.contains(message), "{opts:?}: {}", e.message);
            }
            other => panic!("{opts:?}: expected an options error, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_model_without_the_structure_is_a_structure_error() {
    let graph = GraphProto {
        name: Some("relu".into()),
        node: vec![node("Relu", "relu", &["x"], &["y"])],
        input: vec![value_info("x", DataType::Float, &[Ok(1), Ok(4)])],
        output: vec![value_info("y", DataType::Float, &[Ok(1), Ok(4)])],
        ..Default::default()
    };
    let m = model(graph, 17);
    match prune::prune(&m, &l1(0.25, 0.25)) {
        Err(PassError::Structure(e)) => assert!(!e.looked_for.is_empty(), "{e}"),
        Err(e) => panic!("expected a structure error, got {e}"),
        Ok(_) => panic!("a single Relu was pruned"),
    }
}

/// A fused Attention's heads are sliced out of its packed Q, K, V weight and bias, and its
/// `num_heads` follows (tests/coverage.rs checks the logits on ONNX Runtime's optimizer output).
#[test]
fn fused_attention_heads_are_pruned() {
    let o = SynthOptions {
        fused_attention: true,
        ..Default::default()
    };
    let m = tiny_bert(&o);
    let (out, _) = prune::prune(&m, &l1(0.25, 0.0)).expect("fused heads prune");
    let kept = o.heads - (o.heads as f64 * 0.25).round() as usize;
    let t = discover(&out).expect("the pruned model maps");
    let g = out.graph.as_ref().unwrap();
    for l in &t.layers {
        assert_eq!(l.heads(), kept);
        let a = l.attention.as_ref().unwrap();
        let Qkv::Packed { weight, bias, .. } = &a.qkv else {
            panic!("still packed")
        };
        let dims = |name: &str| g.initializer.iter().find(|i| i.name() == name).unwrap().dims.clone();
        let width = (3 * kept * a.head_size) as i64;
        assert_eq!(dims(weight), [(o.heads * o.head_size) as i64, width]);
        assert_eq!(dims(bias.as_deref().unwrap()), [width]);
    }
}

#[test]
fn ffn_of_a_fused_attention_model_prunes_with_random_scores() {
    if !require_ort("FFN pruning next to fused attention (random)") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        fused_attention: true,
        ..Default::default()
    });
    // Heads untouched, so the packed QKV weight is left as it is.
    let opts = PruneOptions {
        ffn: 0.25,
        strategy: Strategy::Random,
        seed: 3,
        ..Default::default()
    };
    let (out, report) = prune::prune(&m, &opts).unwrap();
    for l in &report.layers {
        assert_eq!((l.heads_after, l.neurons_after), (4, 48));
    }
    synth_logits(&out, "fused attention, --ffn 0.25 random");
}

#[test]
fn ffn_of_a_fused_attention_model_can_be_pruned() {
    if !require_ort("FFN pruning next to fused attention") {
        return;
    }
    let m = tiny_bert(&SynthOptions {
        fused_attention: true,
        ..Default::default()
    });
    // Heads untouched: the packed QKV weight need not be sliced, only the FFN.
    let (out, report) = prune::prune(&m, &l1(0.0, 0.25)).expect("FFN-only pruning of a fused-attention model");
    for l in &report.layers {
        assert_eq!((l.heads_before, l.heads_after), (4, 4));
        assert_eq!((l.neurons_before, l.neurons_after), (64, 48));
    }
    let t = discover(&m).unwrap();
    let t2 = discover(&out).unwrap();
    let plan = Plan {
        layers: t
            .layers
            .iter()
            .zip(&t2.layers)
            .map(|(l, _)| {
                // Which neurons survived: read back from the sliced down projection's rows.
                let f = l.ffn.as_ref().unwrap();
                let g = m.graph.as_ref().unwrap();
                let down = tensor::to_f32(g.initializer.iter().find(|x| x.name() == f.down.weight).unwrap()).unwrap();
                let g2 = out.graph.as_ref().unwrap();
                let f2 = t2.layers[l.index].ffn.as_ref().unwrap();
                let down2 =
                    tensor::to_f32(g2.initializer.iter().find(|x| x.name() == f2.down.weight).unwrap()).unwrap();
                let h = t.hidden;
                let keep: Vec<usize> = (0..64)
                    .filter(|&j| down2.chunks(h).any(|row| row == &down[j * h..(j + 1) * h]))
                    .collect();
                assert_eq!(keep.len(), 48);
                LayerPlan {
                    keep_heads: (0..4).collect(),
                    keep_neurons: keep,
                    ..Default::default()
                }
            })
            .collect(),
    };
    let mut zeroed = m.clone();
    for (l, p) in t.layers.iter().zip(&plan.layers) {
        let f = l.ffn.as_ref().unwrap();
        zero_in_features(&mut zeroed, &f.down, &removed(64, &p.keep_neurons));
    }
    let a = synth_logits(&out, "fused, --ffn 0.25");
    let b = synth_logits(&zeroed, "fused, down rows zeroed");
    // Same function, different summation order: within 1e-4.
    assert!(max_diff(&a, &b) <= 1e-4, "{a:?} vs {b:?}");
}

#[test]
fn apply_plan_rejects_bad_plans() {
    let m = tiny_bert(&SynthOptions::default());
    let t = discover(&m).unwrap();
    let mut short = keep_all(&t);
    short.layers.pop();
    let mut out_of_range = keep_all(&t);
    out_of_range.layers[0].keep_heads = vec![0, 4];
    let mut unsorted = keep_all(&t);
    unsorted.layers[1].keep_heads = vec![2, 1];
    let mut duplicate = keep_all(&t);
    duplicate.layers[1].keep_neurons = vec![3, 3, 5];
    for (what, plan) in [
        ("plan for fewer layers", short),
        ("head index out of range", out_of_range),
        ("unsorted heads", unsorted),
        ("duplicate neurons", duplicate),
    ] {
        assert!(apply_plan(&m, &t, &plan).is_err(), "{what}: accepted");
    }
}

#[test]
fn the_binary_refuses_bad_prune_commands_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_synth(dir.path(), "in.onnx");
    let original = std::fs::read(&input).unwrap();
    let output = dir.path().join("out.onnx");
    let p = |s: &Path| s.to_str().unwrap().to_string();

    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--heads".into(), "1.0".into(), p(&input), p(&output)], "--heads"),
        (vec!["--ffn".into(), "1.5".into(), p(&input), p(&output)], "--ffn"),
        (vec!["--heads=-0.1".into(), p(&input), p(&output)], "--heads"),
        (vec!["--heads".into(), "NaN".into(), p(&input), p(&output)], "--heads"),
        (
            vec!["--target-macs".into(), "1.5".into(), p(&input), p(&output)],
            "--target-macs",
        ),
        // A valid budget without calibration data.
        (
            vec!["--target-macs".into(), "0.5".into(), p(&input), p(&output)],
            "--calib-data",
        ),
        (
            vec!["--strategy".into(), "obs".into(), p(&input), p(&output)],
            "--calib-data",
        ),
        // Nothing asked: refused, not a copy written.
        (vec![p(&input), p(&output)], "nothing to prune"),
    ];
    // Calibration flags without --calib-data did nothing: refused, naming the flag (--seed is
    // --strategy random's too).
    let flag_cases = [
        (
            "prune",
            &["--heads", "0.5", "--calib-samples", "16"][..],
            "--calib-samples",
        ),
        ("prune", &["--heads", "0.5", "--seed", "3"], "--seed"),
        ("prune", &["--ffn", "0.5", "--text-column", "body"], "--text-column"),
        ("lowrank", &["--rank", "4", "--max-length", "64"], "--max-length"),
        // A multiple wider than the FFN rounds nothing (it was left unrounded, silently).
        (
            "prune",
            &["--ffn", "0.5", "--ffn-multiple-of", "4096"],
            "--ffn-multiple-of 4096 is more than the",
        ),
        // Asked for, but nothing removed: 0.1 of 4 heads rounds to none; 32 of 64 neurons kept
        // round back to all 64 (an unchanged copy was written, exit 0).
        ("prune", &["--heads", "0.1"], "no head or neuron would be removed"),
        (
            "prune",
            &["--ffn", "0.5", "--ffn-multiple-of", "64"],
            "--ffn-multiple-of",
        ),
        (
            "quantize",
            &["--mode", "dynamic", "--calib-samples", "8"],
            "--calib-samples",
        ),
        ("quantize", &["--mode", "fp16", "--threads", "2"], "--threads"),
    ];
    let cases = cases
        .into_iter()
        .map(|(args, needle)| (vec!["prune".to_string()], args, needle))
        .chain(flag_cases.iter().map(|(cmd, flags, needle)| {
            let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            args.extend([p(&input), p(&output)]);
            (vec![cmd.to_string()], args, *needle)
        }));
    for (cmd, args, needle) in cases {
        let out = bin().args(&cmd).args(&args).output().unwrap();
        let line = one_error_line(&out, &format!("{cmd:?} {args:?}"));
        assert!(
            line.contains(needle),
            "{cmd:?} {args:?}: '{line}' does not mention {needle}"
        );
        assert!(!output.exists(), "{cmd:?} {args:?}: wrote {}", output.display());
    }

    // The output must differ from the input: refused, input untouched.
    let out = bin()
        .args(["prune", "--heads", "0.25"])
        .arg(&input)
        .arg(&input)
        .output()
        .unwrap();
    let line = one_error_line(&out, "prune IN IN");
    assert!(
        line.contains("it is the input model; choose another output path"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "prune IN IN modified its input"
    );
    // The same file through another spelling of its path.
    let other = dir.path().join(".").join("in.onnx");
    let out = bin()
        .args(["prune", "--heads", "0.25"])
        .arg(&input)
        .arg(&other)
        .output()
        .unwrap();
    let line = one_error_line(&out, "prune IN ./IN");
    assert!(
        line.contains("it is the input model; choose another output path"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "prune IN ./IN modified its input"
    );

    // Not a transformer: a structure error, no output.
    let relu = dir.path().join("relu.onnx");
    let graph = GraphProto {
        node: vec![node("Relu", "relu", &["x"], &["y"])],
        input: vec![value_info("x", DataType::Float, &[Ok(1), Ok(4)])],
        output: vec![value_info("y", DataType::Float, &[Ok(1), Ok(4)])],
        ..Default::default()
    };
    std::fs::write(&relu, model(graph, 17).encode_to_vec()).unwrap();
    let out = bin()
        .args(["prune", "--heads", "0.25"])
        .arg(&relu)
        .arg(&output)
        .output()
        .unwrap();
    let line = one_error_line(&out, "prune of a Relu");
    assert!(line.contains("transformer"), "{line}");
    assert!(!output.exists());

    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["in.onnx", "relu.onnx"], "stray files");
}

// ---------------------------------------------------------------------------------------------
// 8. Report and history
// ---------------------------------------------------------------------------------------------

/// MACs counted at a --seq-len past the model's positions are noted as such (the tiny model
/// has 64); within them nothing is said.
#[test]
fn macs_past_the_models_positions_are_noted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_synth(dir.path(), "in.onnx");
    for (seq_len, noted) in [("65", true), ("64", false)] {
        let out = bin()
            .args(["prune", "--heads", "0.25", "--json", "--seq-len", seq_len])
            .arg(&input)
            .arg(dir.path().join(format!("p{seq_len}.onnx")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let note = format!("prune: MACs are counted at {seq_len} tokens, past the model's 64 positions");
        let notes = r["notes"].to_string();
        assert_eq!(notes.contains(&note), noted, "{notes}");
    }
}

#[test]
fn the_binary_reports_per_layer_sizes_and_records_history() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_synth(dir.path(), "in.onnx");
    let output = dir.path().join("pruned.onnx");
    let out = bin()
        .args(["prune", "--heads", "0.25", "--json"])
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let layers = r["layers"].as_array().expect("per-layer report");
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert_eq!(l["heads_before"], 4, "{l}");
        assert_eq!(l["heads_after"], 3, "{l}");
        assert_eq!(l["neurons_before"], 64, "{l}");
        assert_eq!(l["neurons_after"], 64, "{l}");
        assert!(
            l["params_after"].as_u64().unwrap() < l["params_before"].as_u64().unwrap(),
            "{l}"
        );
        assert!(
            l["macs_after"].as_u64().unwrap() < l["macs_before"].as_u64().unwrap(),
            "{l}"
        );
    }
    let (pb, pa) = (
        r["params_before"].as_u64().unwrap(),
        r["params_after"].as_u64().unwrap(),
    );
    assert!(pa < pb, "{r}");
    // One head of 8 columns per layer: Q, K, V lose 32×8 weights + 8 biases each, the output
    // projection 8×32 weights: 4·256 + 3·8 = 1048 per layer.
    assert_eq!(pb - pa, 2 * 1048, "{r}");
    assert!(r["encoder_macs_after"].as_u64().unwrap() < r["encoder_macs_before"].as_u64().unwrap());
    assert_eq!(r["options"]["heads"], 0.25);
    assert_eq!(r["options"]["strategy"], "l1");
    // Options that do not apply to l1 without a MAC budget are not recorded as if they did.
    for absent in ["seed", "per_layer", "max_ffn_fraction"] {
        assert!(r["options"].get(absent).is_none(), "{absent}: {}", r["options"]);
    }

    let out = bin().arg("inspect").arg("--json").arg(&output).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    let h = s["history"].as_array().expect("history");
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["pass"], "prune");
    assert_eq!(h[0]["params_before"].as_u64(), Some(pb));
    assert_eq!(h[0]["params_after"].as_u64(), Some(pa));
    assert!(h[0]["params_before"].as_u64() > h[0]["params_after"].as_u64());
    assert!(h[0]["macs_before"].as_u64() > h[0]["macs_after"].as_u64());
    assert_eq!(h[0]["options"]["heads"], 0.25);
    assert!(s["layers"].as_array().unwrap().iter().all(|l| l["heads"] == 3));

    // Pruning the output again appends to the history.
    let again = dir.path().join("again.onnx");
    let out = bin()
        .args(["prune", "--ffn", "0.5"])
        .arg(&output)
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = onnx_compress::history::history(&onnx::load(&again).unwrap()).unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].params_before, Some(pa as usize));
}

// ---------------------------------------------------------------------------------------------
// 9. The reference's l1 counts
// ---------------------------------------------------------------------------------------------

#[test]
fn l1_counts_match_the_reference_on_the_shared_model() {
    let Some(m) = sst2("l1 counts on SST-2") else { return };
    let (out, report) = prune::prune(m, &l1(0.15, 0.10)).unwrap();
    let t = discover(&out).unwrap();
    assert_eq!(t.layers.len(), 6);
    for l in &t.layers {
        // round(12 × 0.15) = round(1.8) = 2 heads removed; round(1536 × 0.10) = round(153.6) = 154
        // neurons removed.
        assert_eq!(l.heads(), 10, "layer {}", l.index);
        assert_eq!(l.ffn_width(), 1382, "layer {}", l.index);
        assert_eq!(l.head_size(), Some(32));
    }
    for l in &report.layers {
        assert_eq!((l.heads_before, l.heads_after), (12, 10));
        assert_eq!((l.neurons_before, l.neurons_after), (1536, 1382));
    }
    assert!(report.params_after < report.params_before);
}

#[test]
fn keep_uniform_keeps_at_least_one_and_rounds_half_to_even() {
    let s = |n: usize| -> Vec<f64> { (0..n).map(|i| ((i * 7) % n) as f64).collect() };
    assert_eq!(keep_uniform(&[], 0.5), Vec::<usize>::new());
    // Never removes everything.
    assert_eq!(keep_uniform(&[3.0], 0.5).len(), 1);
    assert_eq!(keep_uniform(&[3.0], 0.99).len(), 1);
    assert_eq!(keep_uniform(&s(12), 0.99).len(), 1); // round(11.88) = 12, capped at 11
    assert_eq!(keep_uniform(&s(12), 0.0).len(), 12);
    // Python's round: halves go to the even neighbour.
    assert_eq!(keep_uniform(&s(12), 0.125).len(), 10); // 1.5 → 2 removed
    assert_eq!(keep_uniform(&s(10), 0.25).len(), 8); // 2.5 → 2 removed
    assert_eq!(keep_uniform(&s(6), 0.25).len(), 4); // 1.5 → 2 removed
    assert_eq!(keep_uniform(&s(2), 0.25).len(), 2); // 0.5 → 0 removed
    assert_eq!(keep_uniform(&s(12), 0.15).len(), 10); // 1.8 → 2
    assert_eq!(keep_uniform(&s(1536), 0.10).len(), 1382); // 153.6 → 154
    assert_eq!(keep_uniform(&s(9), 0.25).len(), 7); // 2.25 → 2
                                                    // The lowest scores go; the result is ascending.
    assert_eq!(keep_uniform(&[5.0, 1.0, 4.0, 0.5, 3.0], 0.4), vec![0, 2, 4]);
    // Ties: the lower index goes first.
    assert_eq!(keep_uniform(&[1.0, 1.0, 1.0, 1.0], 0.5), vec![2, 3]);
}

#[test]
fn aligned_removal_keeps_the_nearest_multiple() {
    use onnx_compress::passes::prune::{aligned_removal, keep_uniform_aligned};
    assert_eq!(aligned_removal(3072, 1229, 1), 1229); // no rounding
    assert_eq!(aligned_removal(3072, 1229, 8), 1232); // 1843 kept → 1840
    assert_eq!(aligned_removal(3072, 1229, 64), 1216); // → 1856
    assert_eq!(aligned_removal(1536, 614, 64), 640); // 922 → 896 (nearer than 960)
    assert_eq!(aligned_removal(1536, 608, 64), 576); // 928 → 960: halves round up
    assert_eq!(aligned_removal(1536, 1530, 64), 1472); // at least one multiple kept
    assert_eq!(aligned_removal(1536, 0, 64), 0); // nothing asked, nothing removed
    assert_eq!(aligned_removal(48, 20, 64), 20); // narrower than one multiple: as asked
    assert_eq!(aligned_removal(100, 2, 8), 4); // 98 → 96; the width itself need not be aligned
                                               // The kept units are the highest-scored, as without rounding.
    let scores: Vec<f64> = (0..32).map(|i| ((i * 13) % 32) as f64).collect();
    let k = keep_uniform_aligned(&scores, 0.3, 8);
    assert_eq!(k.len(), 24); // round(9.6) = 10 removed, 22 kept → 24
    let mut sorted = scores.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert!(k.iter().all(|&i| scores[i] >= sorted[23]), "{k:?}");
    assert_eq!(keep_uniform_aligned(&scores, 0.3, 1), keep_uniform(&scores, 0.3));
}

#[test]
fn l1_pruning_with_ffn_multiple_of_keeps_aligned_widths() {
    let m = tiny_bert(&SynthOptions {
        ffn: 100,
        ..Default::default()
    });
    let (out, _) = prune::prune(
        &m,
        &PruneOptions {
            ffn_multiple_of: 16,
            ..l1(0.0, 0.3)
        },
    )
    .unwrap();
    let t = discover(&out).unwrap();
    // 100 − round(30) = 70 kept → 64.
    assert!(
        t.layers.iter().all(|l| l.ffn_width() == 64),
        "{:?}",
        t.layers.iter().map(|l| l.ffn_width()).collect::<Vec<_>>()
    );
}

#[test]
fn l1_scores_follow_the_reference_definition() {
    let m = tiny_bert(&SynthOptions::default());
    let t = discover(&m).unwrap();
    let (hs, ns) = l1_scores(&m, &t).unwrap();
    assert_eq!(hs.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4]);
    assert_eq!(ns.iter().map(Vec::len).collect::<Vec<_>>(), [64, 64]);
    let g = m.graph.as_ref().unwrap();
    let w = |name: &str| tensor::to_f32(g.initializer.iter().find(|t| t.name() == name).unwrap()).unwrap();
    // Head 2 of layer 1: |W| over its 8 Q, K, V columns, and its 8 rows of the output projection.
    let a = attention(&t, 1);
    let Qkv::Separate { q, k, v } = &a.qkv else { panic!() };
    let mut want = 0.0f64;
    for lin in [q, k, v] {
        let wv = w(&lin.weight);
        for r in 0..32 {
            for c in 16..24 {
                want += wv[r * 32 + c].abs() as f64;
            }
        }
    }
    let wo = w(&a.output.weight);
    want += wo[16 * 32..24 * 32].iter().map(|x| x.abs() as f64).sum::<f64>();
    // f64 sums of the same terms, possibly in another order: relative 1e-9.
    assert!((hs[1][2] - want).abs() <= 1e-9 * want, "{} vs {want}", hs[1][2]);
    // Neuron 5 of layer 0: its up column, its down row, |its up bias|.
    let f = t.layers[0].ffn.as_ref().unwrap();
    let up = w(&f.up.weight);
    let down = w(&f.down.weight);
    let ub = w(f.up.bias.as_ref().unwrap());
    let want: f64 = (0..32).map(|r| up[r * 64 + 5].abs() as f64).sum::<f64>()
        + down[5 * 32..6 * 32].iter().map(|x| x.abs() as f64).sum::<f64>()
        + ub[5].abs() as f64;
    assert!((ns[0][5] - want).abs() <= 1e-9 * want, "{} vs {want}", ns[0][5]);
}

#[test]
fn random_strategy_is_seeded_and_counts_like_l1() {
    let m = tiny_bert(&SynthOptions {
        layers: 2,
        heads: 4,
        ffn: 64,
        ..Default::default()
    });
    let opts = |seed| PruneOptions {
        heads: 0.5,
        ffn: 0.25,
        strategy: Strategy::Random,
        seed,
        ..Default::default()
    };
    let (a, ra) = prune::prune(&m, &opts(7)).unwrap();
    let (b, _) = prune::prune(&m, &opts(7)).unwrap();
    assert_eq!(a.encode_to_vec(), b.encode_to_vec(), "same seed, same model");
    for l in &ra.layers {
        assert_eq!((l.heads_after, l.neurons_after), (2, 48));
    }
}
