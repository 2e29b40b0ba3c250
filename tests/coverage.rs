//! Models written by real exporters in layouts beyond the shared models': committed fixtures in
//! `tests/fixtures/`, each written by a script in `scripts/fixtures/` with a README of the
//! versions used. Each must map as its config says, run in ONNX Runtime as the exporter's
//! framework computed it, and come out of every pass as a model ONNX Runtime runs.
//!
//! `bert-sdpa`: transformers' default attention (SDPA) through torch's classic exporter. The
//! softmax is guarded against fully masked rows, `Where(IsNaN(p), 0, p)`, before the context
//! MatMul, and Q and Kᵀ are each scaled by √(1/√d). Config: hidden 32, 2 layers × 4 heads × 8,
//! FFN 64, vocabulary 100, 2 labels, random weights.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use onnx_compress::onnx::{self, edit, tensor, ModelProto};
use onnx_compress::passes::prune::{self, Plan, PruneOptions, Strategy};
use onnx_compress::passes::quantize::{Mode, QuantizeOptions};
use onnx_compress::passes::Pass;
use onnx_compress::runtime::Batch;
use onnx_compress::structure::{discover, parameter_counts, Transformer};
use onnx_compress::testkit::shared::require_ort;
use serde_json::Value;

mod common;

use common::{bin, calibrator, have_ort, logits, max_diff};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn sdpa_path() -> PathBuf {
    fixture("bert-sdpa/model.onnx")
}

fn sdpa() -> ModelProto {
    onnx::load(&sdpa_path()).expect("the bert-sdpa fixture loads")
}

fn array(v: &Value) -> Array2<i64> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("an int matrix");
    let cols = rows.first().map_or(0, |r| r.len());
    Array2::from_shape_vec((rows.len(), cols), rows.concat()).expect("a rectangular matrix")
}

/// The fixture's `expected.json`: a batch and torch's logits on it (flattened).
fn expected() -> (Batch, Vec<f32>) {
    let text = std::fs::read_to_string(fixture("bert-sdpa/expected.json")).expect("expected.json");
    let e: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let batch = Batch {
        input_ids: array(&e["input_ids"]),
        attention_mask: array(&e["attention_mask"]),
        token_type_ids: array(&e["token_type_ids"]),
    };
    let logits: Vec<Vec<f32>> = serde_json::from_value(e["logits"].clone()).expect("logits");
    (batch, logits.concat())
}

/// The expected batch with the second example fully masked: its softmax rows are all −∞, which
/// only the NaN guard turns into finite logits.
fn fully_masked() -> Batch {
    let (mut b, _) = expected();
    b.attention_mask.row_mut(1).fill(0);
    b
}

/// `inspect --json` of `path`.
fn inspect(path: &Path) -> Value {
    let out = bin().args(["inspect", "--json"]).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "inspect {}: {}",
        path.display(),
        common::text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// (heads, FFN width) of each layer per `inspect --json`.
fn layer_sizes(path: &Path) -> Vec<(u64, u64)> {
    inspect(path)["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no layers mapped", path.display()))
        .iter()
        .map(|l| (l["heads"].as_u64().unwrap(), l["ffn_width"].as_u64().unwrap()))
        .collect()
}

/// Runs the binary with `args` then IN OUT; OUT is `dir/name`.
fn run_pass(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out_path = dir.join(name);
    let out = bin().args(args).arg(sdpa_path()).arg(&out_path).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} on bert-sdpa: {}",
        common::text(&out.stderr)
    );
    out_path
}

#[test]
fn sdpa_export_maps_two_layers_of_four_heads() {
    let m = sdpa();
    let t = discover(&m).expect("the SDPA export maps");
    assert_eq!(t.hidden, 32);
    assert_eq!(t.layers.len(), 2);
    for l in &t.layers {
        assert_eq!(l.heads(), 4);
        assert_eq!(l.head_size(), Some(8));
        assert_eq!(l.ffn_width(), 64);
        let a = l.attention.as_ref().unwrap();
        // √s on Q times √s on Kᵀ: the scale on Q·Kᵀ is 1/√8.
        let scale = a.scale.expect("a scale");
        assert!((scale - 1.0 / 8f32.sqrt()).abs() < 1e-6, "{scale}");
    }
    assert!(t.head.is_some());
    assert_eq!(parameter_counts(&m, &t).other, 0);
    assert_eq!(layer_sizes(&sdpa_path()), [(4, 64), (4, 64)]);
}

#[test]
fn sdpa_export_runs_as_torch_computed_it() {
    if !require_ort("bert-sdpa in ONNX Runtime") {
        return;
    }
    let (batch, torch) = expected();
    let got = logits(&sdpa(), std::slice::from_ref(&batch), "bert-sdpa");
    assert!(max_diff(&got, &torch) < 1e-5, "{got:?} vs torch {torch:?}");
    // A fully masked example gives finite logits (checked by `logits`) through the guard.
    logits(&sdpa(), &[fully_masked()], "bert-sdpa, fully masked");
}

#[test]
fn pruning_heads_and_ffn_of_the_sdpa_export() {
    if !have_ort("prune on bert-sdpa") || !require_ort("prune on bert-sdpa") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let batches = [expected().0, fully_masked()];
    for (name, args, sizes) in [
        ("heads.onnx", vec!["prune", "--heads", "0.5"], [(2, 64), (2, 64)]),
        ("ffn.onnx", vec!["prune", "--ffn", "0.5"], [(4, 32), (4, 32)]),
        (
            "both.onnx",
            vec!["prune", "--heads", "0.25", "--ffn", "0.25"],
            [(3, 48), (3, 48)],
        ),
    ] {
        let out = run_pass(dir.path(), name, &args);
        assert_eq!(layer_sizes(&out), sizes, "{args:?}");
        let m = onnx::load(&out).unwrap();
        logits(&m, &batches, &format!("{args:?} on bert-sdpa"));
        // The guard is kept: one IsNaN per layer.
        let guards = m.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type() == "IsNaN");
        assert_eq!(guards.count(), 2, "{args:?}");
    }
}

/// The fixture with the attention-output rows of the heads not in `keep[layer]` zeroed: each
/// head adds ctx_h · W_o[rows of h] to the output, so this removes exactly those heads
/// (tests/prune.rs, `silenced`, says why in full).
fn silenced_heads(m: &ModelProto, t: &Transformer, keep: &[&[usize]]) -> ModelProto {
    let mut m = m.clone();
    let g = m.graph.as_mut().unwrap();
    for (l, keep) in t.layers.iter().zip(keep) {
        let a = l.attention.as_ref().unwrap();
        let o = &a.output;
        let gone: Vec<usize> = (0..a.num_heads).filter(|h| !keep.contains(h)).collect();
        let w = g.initializer.iter().find(|w| w.name() == o.weight).unwrap();
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        let mut v = tensor::to_f32(w).unwrap();
        for r in prune::head_columns(&gone, a.head_size) {
            for c in 0..o.out_features {
                let i = if o.transposed {
                    c * o.in_features + r
                } else {
                    r * o.out_features + c
                };
                v[i] = 0.0;
            }
        }
        assert!(edit::replace_initializer(
            g,
            &o.weight,
            tensor::from_f32(&o.weight, &dims, &v)
        ));
    }
    m
}

#[test]
fn removing_heads_of_the_sdpa_export_equals_zeroing_them() {
    if !require_ort("head pruning vs zeroing on bert-sdpa") {
        return;
    }
    let m = sdpa();
    let t = discover(&m).unwrap();
    let keep: [&[usize]; 2] = [&[0, 2, 3], &[1]];
    let mut plan = Plan::keep_all(&t);
    for (p, k) in plan.layers.iter_mut().zip(keep) {
        p.keep_heads = k.to_vec();
    }
    let out = prune::apply_plan(&m, &t, &plan).expect("the plan applies");
    let t2 = discover(&out).expect("the pruned model maps");
    assert_eq!((t2.layers[0].heads(), t2.layers[1].heads()), (3, 1));
    let batches = [expected().0, fully_masked()];
    let pruned = logits(&out, &batches, "bert-sdpa, pruned");
    let zeroed = logits(&silenced_heads(&m, &t, &keep), &batches, "bert-sdpa, zeroed");
    // Same function, fewer terms summed: within 1e-4 (as tests/prune.rs); and the check has
    // teeth: those heads do change the logits.
    assert!(
        max_diff(&pruned, &zeroed) <= 1e-4,
        "pruned {pruned:?} vs zeroed {zeroed:?}"
    );
    let original = logits(&m, &batches, "bert-sdpa");
    assert!(max_diff(&pruned, &original) > 1e-3, "{pruned:?} vs {original:?}");
}

#[test]
fn pruning_nothing_keeps_the_sdpa_logits() {
    if !require_ort("prune 0 on bert-sdpa") {
        return;
    }
    let m = sdpa();
    let pass = Pass::Prune(PruneOptions::default());
    let applied = pass.apply(&m, None).expect("prune 0 heads, 0 neurons");
    let (batch, _) = expected();
    let batches = [batch, fully_masked()];
    let before = logits(&m, &batches, "bert-sdpa");
    let after = logits(&applied.model, &batches, "bert-sdpa pruned by 0");
    assert!(max_diff(&before, &after) < 1e-5, "{before:?} vs {after:?}");
}

#[test]
fn calibrated_pruning_of_the_sdpa_export() {
    if !require_ort("calibrated prune on bert-sdpa") {
        return;
    }
    // The calibrator's random batches use ids 1..100: the fixture's vocabulary.
    let pass = Pass::Prune(PruneOptions {
        heads: 0.5,
        ffn: 0.5,
        strategy: Strategy::Obs,
        ..Default::default()
    });
    let mut calib = calibrator(4, 3);
    let applied = pass.apply(&sdpa(), Some(&mut calib)).expect("obs pruning");
    let t = discover(&applied.model).expect("the pruned model maps");
    let heads: usize = t.layers.iter().map(|l| l.heads()).sum();
    let ffn: usize = t.layers.iter().map(|l| l.ffn_width()).sum();
    assert_eq!((heads, ffn), (4, 64));
    logits(&applied.model, &[expected().0, fully_masked()], "bert-sdpa, obs pruned");
}

/// Largest |a − b| relative to the largest |a|.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    max_diff(a, b) / a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

#[test]
fn lowrank_and_quantize_the_sdpa_export() {
    if !have_ort("lowrank and quantize on bert-sdpa") || !require_ort("lowrank and quantize on bert-sdpa") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let batches = [expected().0, fully_masked()];
    let base = logits(&sdpa(), &batches, "bert-sdpa");
    let lr = run_pass(dir.path(), "lowrank.onnx", &["lowrank", "--rank", "4"]);
    assert_eq!(layer_sizes(&lr), [(4, 64), (4, 64)]);
    logits(&onnx::load(&lr).unwrap(), &batches, "bert-sdpa lowrank");
    let mut results = vec![];
    for mode in ["dynamic", "fp16"] {
        let q = run_pass(dir.path(), &format!("{mode}.onnx"), &["quantize", "--mode", mode]);
        let got = logits(&onnx::load(&q).unwrap(), &batches, &format!("bert-sdpa {mode}"));
        results.push((mode, relative(&base, &got)));
    }
    let pass = Pass::Quantize(QuantizeOptions {
        mode: Mode::Static,
        ..Default::default()
    });
    let mut calib = calibrator(4, 5);
    let applied = pass.apply(&sdpa(), Some(&mut calib)).expect("static quantization");
    let got = logits(&applied.model, &batches, "bert-sdpa static");
    results.push(("static", relative(&base, &got)));
    // Bars: a few times what an AVX2-only CPU (no VNNI, the looser case, see tests/quantize.rs)
    // measured: dynamic 0.058, fp16 0.0004, static 0.039. A broken graph is off by ~1.
    for (mode, rel) in results {
        let bar = if mode == "fp16" { 0.005 } else { 0.15 };
        assert!(rel < bar, "{mode}: relative logit error {rel} (bar {bar})");
    }
}
