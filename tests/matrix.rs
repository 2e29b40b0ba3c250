//! The export matrix: every family × attention × exporter cell in `tests/fixtures/matrix/`, each a
//! tiny random classifier written by a real exporter (`scripts/fixtures/export_matrix.py`; its
//! `manifest.json` records the config and the versions of each cell), through every pass with
//! the exactness checks of issue 14:
//!
//! - it maps as configured (2 layers × 4 heads of 8, FFN 64, a classifier head), `inspect` names
//!   its family, and ONNX Runtime computes torch's logits (1e-5);
//! - pruning nothing keeps the logits (1e-4); removing heads and neurons equals zeroing their
//!   output rows and down rows (1e-4), and changes the logits; `prune --heads --ffn` through the
//!   binary writes a model that maps with what was kept;
//! - low rank at full rank keeps the logits (1e-4); float16 is within 1e-2 relative; static
//!   INT8 with `--unpad` gives static INT8's logits on the padded sample batch (1e-5); dynamic
//!   and static INT8 run, dynamic within a sanity bar, its error printed beside that of ONNX
//!   Runtime's own `quantize_dynamic` of the same model; each attention core as one ONNX
//!   `Attention` op (what the int8 ORT forms write) keeps the float logits (1e-4), the cell's
//!   line saying on how many layers, or why none. Issue 14 asks for "no worse than ONNX
//!   Runtime's" and argmax agreement; its bar depends on the CPU, since ONNX Runtime's u8 × s8
//!   kernels sum products exactly with VNNI and saturate pair sums in 16 bits on AVX2 alone. So
//!   each cell's `expected.json` holds both: `ort_quantize_dynamic_logits` (the sample batch,
//!   computed on an AVX2 CPU) and `vnni_bar` (32 seeded sequences and the logits on them,
//!   computed with VNNI by `scripts/fixtures/ort_bar_vnni.py`). With the embedding tables left
//!   float (the same MatMuls quantized; `quantize_dynamic` stores the tables int8 too), held:
//!   with VNNI, no argmax of the sample batch flipped and the error on the 32 examples no worse
//!   than `quantize_dynamic`'s (keeping float the MatMuls it leaves float, where it leaves any;
//!   ALBERT after ONNX Runtime's optimizer: within 1.1×, [`KNOWN_GAP`]); on AVX2, `--weight-type u8`
//!   (exact u8 × u8 kernels) against the AVX2 bar (the default s8 weights, whose full-range
//!   per-channel columns saturate there, printed). The default, int8 tables too (as
//!   `quantize_dynamic`'s), with VNNI: no worse by the RMS error over every logit of the 32
//!   examples (ALBERT's dynamo and optimizer cells within 1.1× / 1.15×, [`KNOWN_RMS_GAP`]); its
//!   largest error, a single logit's, is printed (bench/RESULTS.md, "The export matrix");
//! - the first-token split (padded and unpadded) keeps its logits (1e-4), and the last layer's
//!   attention runs for the first token's query alone on the exports where that can be followed;
//! - `eval` runs it on a small CSV with a word-level `tokenizer.json` and predicts what its
//!   logits say (on these random weights 52 of the 88 cells give every example label 0, so
//!   there it shows that eval runs; the others also that it feeds what the tokenizer says);
//! - calibrated pruning and activation-aware low rank choose the same and give the same logits
//!   (1e-4) on the SDPA export as on the eager export of the same weights (ALBERT's calibrated
//!   passes are refused on both, naming the shared weights and what to use instead).
//!
//! Every cell is checked and every failure named before a test fails.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use onnx_compress::onnx::{self, ModelProto};
use onnx_compress::passes::lowrank::{LowrankOptions, RankRule};
use onnx_compress::passes::prune::{self, Plan, PruneOptions, Strategy};
use onnx_compress::passes::quantize::attention_op::{heads_by_softmax, one_op_attention};
use onnx_compress::passes::quantize::split::split_first_token;
use onnx_compress::passes::quantize::{Mode, QuantizeOptions, QuantizeReport, StaticForm, WeightType};
use onnx_compress::passes::{Applied, Pass, PassReport};
use onnx_compress::runtime::Batch;
use onnx_compress::structure::{discover, Transformer};
use onnx_compress::testkit::shared::require_ort;
use serde_json::Value;

mod common;

use common::{bin, calibrator, logits, max_diff, s, vnni, zero_in_features};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/matrix")
}

/// One cell of the matrix, as `manifest.json` describes it.
struct Cell {
    name: String,
    family: String,
    attention: String,
    shared_layers: bool,
}

impl Cell {
    fn path(&self) -> PathBuf {
        root().join(&self.name).join("model.onnx")
    }

    fn load(&self) -> ModelProto {
        onnx::load(&self.path()).unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    fn expected(&self) -> Value {
        let text = std::fs::read_to_string(root().join(&self.name).join("expected.json")).expect("expected.json");
        serde_json::from_str(&text).expect("expected.json is JSON")
    }

    /// The example batch of `expected.json`.
    fn batch(&self) -> Batch {
        batch_of(&self.expected())
    }

    /// The example batch and the same with its second example fully masked.
    fn batches(&self) -> [Batch; 2] {
        let mut masked = self.batch();
        masked.attention_mask.row_mut(1).fill(0);
        [self.batch(), masked]
    }

    /// Logits (flattened) stored under `key` in `expected.json`.
    fn stored(&self, key: &str) -> Vec<f32> {
        flat(&self.expected()[key], key)
    }

    /// The 32-example batch of `expected.json`'s `vnni_bar`, ONNX Runtime's quantize_dynamic
    /// logits on it, computed on a CPU with VNNI (`scripts/fixtures/ort_bar_vnni.py`), and the
    /// MatMuls with a constant weight that quantize_dynamic left float (names; usually none).
    fn vnni_bar(&self) -> (Batch, Vec<f32>, Vec<String>) {
        let bar = &self.expected()["vnni_bar"];
        let left = match &bar["ort_float_matmuls"] {
            Value::Null => vec![],
            v => serde_json::from_value(v.clone()).expect("vnni_bar's ort_float_matmuls: names"),
        };
        (
            batch_of(bar),
            flat(&bar["ort_quantize_dynamic_logits"], "vnni_bar's logits"),
            left,
        )
    }

    /// The cell's name without its attention: equal for the SDPA and eager exports of one model.
    fn twin_key(&self) -> String {
        self.name.replacen(&format!("-{}-", self.attention), "--", 1)
    }
}

/// The three input matrices under `v` (an `expected.json` or its `vnni_bar`).
fn batch_of(v: &Value) -> Batch {
    Batch {
        input_ids: array(&v["input_ids"]),
        attention_mask: array(&v["attention_mask"]),
        token_type_ids: array(&v["token_type_ids"]),
    }
}

/// Rows of logits, flattened.
fn flat(v: &Value, what: &str) -> Vec<f32> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect(what);
    rows.concat()
}

fn array(v: &Value) -> Array2<i64> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("an int matrix");
    let cols = rows.first().map_or(0, |r| r.len());
    Array2::from_shape_vec((rows.len(), cols), rows.concat()).expect("a rectangular matrix")
}

fn cells() -> Vec<Cell> {
    let text = std::fs::read_to_string(root().join("manifest.json")).expect("tests/fixtures/matrix/manifest.json");
    let m: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("the manifest is JSON");
    assert!(m.len() >= 80, "the matrix holds {} cells", m.len());
    m.into_iter()
        .map(|(name, v)| Cell {
            family: v["family"].as_str().unwrap().to_string(),
            attention: v["attention"].as_str().unwrap().to_string(),
            shared_layers: v["shared_layers"].as_bool().unwrap(),
            name,
        })
        .collect()
}

/// Runs `check` on every cell; fails naming every cell that failed and why.
fn every_cell(what: &str, check: impl Fn(&Cell) -> Result<String, String>) {
    if !require_ort(what) {
        return;
    }
    let mut failed = vec![];
    for c in cells() {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&c))) {
            Ok(Ok(line)) => eprintln!("{}: ok {line}", c.name),
            Ok(Err(e)) => failed.push(format!("{}: {e}", c.name)),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{}: panicked: {msg}", c.name));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{what}: {} cells failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// The family name `inspect` should give each manifest family (XLM-R keeps RoBERTa's module
/// names; ModernBERT's are not in the weights' names).
fn inspect_family(family: &str) -> &str {
    match family {
        "xlm-roberta" => "roberta",
        "electra-equal" => "electra",
        "deberta-v3" => "deberta",
        "modernbert" => "modernbert",
        f => f,
    }
}

#[test]
fn every_cell_maps_as_configured_and_runs_as_torch_computed_it() {
    every_cell("the export matrix maps and runs", |c| {
        let m = c.load();
        let t = discover(&m).map_err(|e| format!("does not map: {e}"))?;
        let sizes: Vec<(usize, Option<usize>, usize)> = t
            .layers
            .iter()
            .map(|l| (l.heads(), l.head_size(), l.ffn_width()))
            .collect();
        ensure(t.hidden == 32 && sizes == [(4, Some(8), 64); 2], || {
            format!("mapped hidden {} and (heads, size, FFN) {sizes:?}", t.hidden)
        })?;
        ensure(t.head.is_some(), || "no classifier head found".into())?;
        let out = bin().args(["inspect", "--json"]).arg(c.path()).output().unwrap();
        ensure(out.status.success(), || {
            format!("inspect: {}", common::text(&out.stderr))
        })?;
        let j: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let arch = j["architecture"].as_str().unwrap_or_default().to_string();
        let note = match c.family.as_str() {
            "albert" => "shared layers",
            "deberta-v3" => "relative attention",
            "mpnet" => "relative position bias",
            _ => "",
        };
        ensure(
            arch.starts_with(inspect_family(&c.family)) && arch.contains(note),
            || format!("inspect says architecture {arch:?}"),
        )?;
        let family = j["family"].as_str().unwrap_or_default();
        ensure(
            family.starts_with(inspect_family(&c.family)) && arch.starts_with(family),
            || format!("inspect --json says family {family:?}"),
        )?;
        // Every exporter's activation is named (ALBERT's tanh GELU read "unrecognized").
        let acts: Vec<&str> = j["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["activation"].as_str())
            .collect();
        ensure(
            acts.len() == 2
                && acts.iter().all(|a| a.contains("gelu") || a.contains("glu"))
                && !acts.iter().any(|a| a.contains("unrecognized")),
            || format!("inspect names the activations {acts:?}"),
        )?;
        let got = logits(&m, &c.batches(), &c.name);
        let want = c.stored("logits");
        let d = max_diff(&got[..want.len()], &want);
        ensure(d <= 1e-5, || format!("ONNX Runtime vs torch: {d}"))?;
        Ok(arch)
    });
}

/// Which heads each layer keeps in the exactness checks: different per layer, the same where
/// the layers share their weights (ALBERT) or must keep as many heads (DeBERTa's dynamo export
/// shares a size holding the head count between layers).
fn keep_heads(c: &Cell, t: &Transformer) -> [Vec<usize>; 2] {
    let alike = t
        .layers
        .iter()
        .any(|l| l.attention.as_ref().is_some_and(|a| a.heads_alike.is_some()));
    if c.shared_layers {
        [vec![0, 2, 3], vec![0, 2, 3]]
    } else if alike {
        [vec![0, 2, 3], vec![1, 2, 3]]
    } else {
        [vec![0, 2, 3], vec![1]]
    }
}

fn keep_neurons(c: &Cell) -> [Vec<usize>; 2] {
    let evens: Vec<usize> = (0..64).step_by(2).collect();
    if c.shared_layers {
        [evens.clone(), evens]
    } else {
        [evens, (10..50).collect()]
    }
}

/// `m` with the attention-output rows of the heads and the down-projection rows of the neurons
/// each layer does not keep set to zero: each head adds ctx_h · W_o[rows of h] and each neuron
/// act_i · W_down[row i] to the output, so this removes exactly those (tests/prune.rs says why in
/// full). Shared weights are zeroed once.
fn silenced(m: &ModelProto, t: &Transformer, heads: &[Vec<usize>; 2], neurons: &[Vec<usize>; 2]) -> ModelProto {
    let mut m = m.clone();
    for (l, (keep_h, keep_n)) in t.layers.iter().zip(heads.iter().zip(neurons)) {
        let a = l.attention.as_ref().unwrap();
        let gone: Vec<usize> = (0..a.num_heads).filter(|h| !keep_h.contains(h)).collect();
        zero_in_features(&mut m, &a.output, &prune::head_columns(&gone, a.head_size));
        let f = l.ffn.as_ref().unwrap();
        let gone: Vec<usize> = (0..f.width).filter(|n| !keep_n.contains(n)).collect();
        zero_in_features(&mut m, &f.down, &gone);
    }
    m
}

#[test]
fn pruning_every_cell_is_exact() {
    every_cell("pruning the export matrix", |c| {
        let m = c.load();
        let t = discover(&m).map_err(|e| e.to_string())?;
        let batches = c.batches();
        let original = logits(&m, &batches, &c.name);
        let nothing = Pass::Prune(PruneOptions::default())
            .apply(&m, None)
            .map_err(|e| format!("prune 0: {e}"))?;
        let d0 = max_diff(&original, &logits(&nothing.model, &batches, "pruned by 0"));
        ensure(d0 <= 1e-4, || format!("pruning nothing moved the logits by {d0}"))?;

        let (heads, neurons) = (keep_heads(c, &t), keep_neurons(c));
        let mut plan = Plan::keep_all(&t);
        for ((p, h), n) in plan.layers.iter_mut().zip(&heads).zip(&neurons) {
            p.keep_heads = h.clone();
            p.keep_neurons = n.clone();
        }
        let out = prune::apply_plan(&m, &t, &plan).map_err(|e| format!("the plan: {e}"))?;
        let t2 = discover(&out).map_err(|e| format!("the pruned model does not map: {e}"))?;
        let sizes: Vec<(usize, usize)> = t2.layers.iter().map(|l| (l.heads(), l.ffn_width())).collect();
        let want: Vec<(usize, usize)> = heads.iter().zip(&neurons).map(|(h, n)| (h.len(), n.len())).collect();
        ensure(sizes == want, || format!("pruned sizes {sizes:?}, planned {want:?}"))?;
        let pruned = logits(&out, &batches, "pruned");
        let zeroed = logits(&silenced(&m, &t, &heads, &neurons), &batches, "zeroed");
        let d = max_diff(&pruned, &zeroed);
        ensure(d <= 1e-4, || format!("pruned vs zeroed: {d}"))?;
        let moved = max_diff(&pruned, &original);
        ensure(moved > 1e-3, || {
            format!("removing them moved the logits by only {moved}")
        })?;

        let dir = tempfile::tempdir().unwrap();
        let written = dir.path().join("pruned.onnx");
        let o = bin()
            .args(["prune", "--heads", "0.5", "--ffn", "0.5"])
            .arg(c.path())
            .arg(&written)
            .output()
            .unwrap();
        ensure(o.status.success(), || {
            format!("prune --heads 0.5 --ffn 0.5: {}", common::text(&o.stderr))
        })?;
        let t3 = discover(&onnx::load(&written).unwrap()).map_err(|e| format!("the written model: {e}"))?;
        let sizes: Vec<(usize, usize)> = t3.layers.iter().map(|l| (l.heads(), l.ffn_width())).collect();
        ensure(sizes == [(2, 32); 2], || {
            format!("prune --heads 0.5 --ffn 0.5 wrote {sizes:?}")
        })?;
        Ok(format!("(pruned vs zeroed {d:.1e})"))
    });
}

/// Largest |a − b| relative to the largest |a|.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    max_diff(a, b) / a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// How far dynamic INT8 (float embeddings) may be from ONNX Runtime's quantize_dynamic on a CPU
/// with VNNI, as a factor of its relative logit error: 1 (no worse) except where measured worse.
/// ALBERT after ONNX Runtime's optimizer (2026-12-04, AMD EPYC with VNNI): 0.0227 against its
/// 0.0214 on the 32 examples, with the same weights quantized; there each tool's variants spread
/// wider than the gap (ours per tensor 0.0235; quantize_dynamic per channel 0.0323, without its
/// int8 embedding tables 0.0292), bench/RESULTS.md "The export matrix". Issue 14 stays open on it.
/// Named cell by cell: a new cell gets no allowance, and a listed one that no longer needs its
/// allowance fails (so the list shrinks with the gaps).
const KNOWN_GAP: &[(&str, f32)] = &[("t4-ortopt-default-albert", 1.1)];

/// RMS of a − b relative to the RMS of a: the error over every logit, where [`relative`] reads
/// one.
fn rms_relative(a: &[f32], b: &[f32]) -> f32 {
    let sq = |v: &mut dyn Iterator<Item = f32>| v.map(|x| f64::from(x) * f64::from(x)).sum::<f64>();
    (sq(&mut a.iter().zip(b).map(|(x, y)| x - y)) / sq(&mut a.iter().copied())).sqrt() as f32
}

/// How far the default dynamic INT8 (int8 tables too) may be from ONNX Runtime's quantize_dynamic
/// on a CPU with VNNI, as a factor of its RMS relative logit error: 1 (no worse) except where
/// measured worse, all ALBERT (2026-12-05, AMD EPYC with VNNI): its dynamo exports 1.08×, after
/// ONNX Runtime's optimizer 1.12×. There the same MatMuls quantized per tensor by this tool read
/// below its error (bench/RESULTS.md "The export matrix": 0.0123 against 0.0173 after the
/// optimizer): the one shared layer's rounding, repeated in every layer, adds up or cancels by
/// chance, and the per-channel default's added up: over 20 random ALBERT models of the fixture's
/// config the default is no worse in 17 (bench/matrix/albert_seeds.py), the fixture's one of
/// the three. Issue 14 stays open on it. Named cell by cell, as [`KNOWN_GAP`].
const KNOWN_RMS_GAP: &[(&str, f32)] = &[
    ("t4-dynamo-eager-albert", 1.1),
    ("t4-dynamo-sdpa-albert", 1.1),
    ("t5-dynamo-eager-albert", 1.1),
    ("t5-dynamo-sdpa-albert", 1.1),
    ("t4-ortopt-default-albert", 1.15),
];

/// Checks ours ≤ theirs × the cell's allowance in `known` (1 where it has none). A cell listed
/// there that is no worse without its allowance fails too: the exception is stale, drop it.
fn within_known(
    c: &Cell,
    known: &[(&str, f32)],
    ours: f32,
    theirs: f32,
    what: &dyn Fn(f32) -> String,
) -> Result<(), String> {
    let factor = known.iter().find(|(n, _)| *n == c.name).map_or(1.0, |k| k.1);
    ensure(ours <= theirs * factor, || what(theirs * factor))?;
    ensure(factor == 1.0 || ours > theirs, || {
        format!(
            "{}: listed as worse than quantize_dynamic (×{factor}) but no worse now ({ours} against {theirs}): remove it from the list",
            what(theirs * factor)
        )
    })
}

/// A quantize pass's report.
fn quantize_report(q: &Applied) -> &QuantizeReport {
    match &q.report {
        PassReport::Quantize(r) => r,
        _ => panic!("a quantize pass without its report"),
    }
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap()
}

/// The first-token split (dynamic mode's: FFN and Q/K/V, padded and unpadded) computes the
/// same logits on every cell (1e-4), the fully masked example included. The last layer's
/// attention from its scores on runs for the first token's query alone on the exports where
/// that could be followed (36 of the 88 cells: transformers 4's classic, dynamo eager and
/// Optimum exports, transformers 5's classic eager one; not DeBERTa's relative attention, not
/// ModernBERT, whose last FFN does not run on the first token alone either, not ONNX Runtime's
/// fused attention); on the others the slice would stop short of the scores, and the attention
/// is left as it was.
#[test]
fn the_first_token_split_keeps_every_cells_logits() {
    let scores_move = |c: &Cell| {
        let exporter = [
            "t4-classic-eager-",
            "t4-classic-sdpa-",
            "t4-dynamo-eager-",
            "t4-optimum-default-",
            "t5-classic-eager-",
        ]
        .iter()
        .any(|p| c.name.starts_with(p));
        // ALBERT's classic eager export: the sweep finds no rank for its output projection.
        exporter && !["deberta-v3", "modernbert"].contains(&c.family.as_str()) && c.name != "t4-classic-eager-albert"
    };
    every_cell("the first-token split of the export matrix", |c| {
        let m = c.load();
        let mut line = String::new();
        // Unpadded, a fully masked example's padding rows hold zeros instead of what nothing
        // reads through the mask: its logits are not the model's (the sample batch pads its
        // second example by two, and masks none fully).
        for (unpad, batches) in [(false, Vec::from(c.batches())), (true, vec![c.batch()])] {
            let base = logits(&m, &batches, &c.name);
            let s = split_first_token(&m, true, unpad).map_err(|e| format!("split (unpad {unpad}): {e}"))?;
            let d = max_diff(&base, &logits(&s.model, &batches, "split"));
            ensure(d <= 1e-4, || {
                format!("the split (unpad {unpad}) moved the logits by {d}")
            })?;
            ensure((s.first_token_attention == Some(1)) == scores_move(c), || {
                format!(
                    "the last attention's scores on the first token only: {:?}",
                    s.first_token_attention
                )
            })?;
            line = format!(
                "last FFN on the first token {:?}, last attention {:?}, diff {d:.1e}",
                s.first_token_only, s.first_token_attention
            );
        }
        Ok(line)
    });
}

#[test]
fn low_rank_and_quantization_of_every_cell() {
    every_cell("low rank and quantization of the export matrix", |c| {
        let m = c.load();
        let batch = [c.batch()];
        let base = logits(&m, &batch, &c.name);
        let full = Pass::Lowrank(LowrankOptions {
            rank: RankRule::Ratio(1.0),
            force: true,
            ..Default::default()
        })
        .apply(&m, None)
        .map_err(|e| format!("low rank at full rank: {e}"))?;
        let d = max_diff(&base, &logits(&full.model, &batch, "full rank"));
        ensure(d <= 1e-4, || format!("low rank at full rank moved the logits by {d}"))?;

        // Each attention core as one ONNX Attention op (what the int8 ORT forms write), on the
        // float model: the same logits where it applies.
        let cores = heads_by_softmax(&m);
        let (one, one_op, why) = one_op_attention(&m, &cores).map_err(|e| format!("one Attention op: {e}"))?;
        if one_op > 0 {
            let d = max_diff(&base, &logits(&one, &batch, "one Attention op"));
            ensure(d <= 1e-4, || {
                format!("one Attention op per attention moved the logits by {d}")
            })?;
        }
        // Every unfused attention runs as the op: eager and SDPA, the classic exporter's
        // (transformers 4's SDPA: the scale √(1/√d) read off Q's shape at run time; 5's: the
        // context reshaped to its own shape read off Q's and V's; DistilBERT's transformers 4
        // eager: the mask broadcast to the scores' shape) and the dynamo exporter's (Kᵀ through
        // rank 3); MPNet's with its relative position bias; ModernBERT's on Q and K after the
        // rotary embedding, [batch, heads, seq, head] (after ONNX Runtime's optimizer too, which
        // moves the keys' head transpose past it); DeBERTa's on [batch·heads, seq, head] with its
        // relative position bias (transformers 4's graphs with `If`s too): every one of the
        // model's attentions. (ONNX Runtime's fused graphs have their own op.)
        let fused = m.graph.as_ref().is_some_and(|g| {
            g.node
                .iter()
                .any(|n| n.op_type() == "Attention" && n.domain() == "com.microsoft")
        });
        ensure(fused || (one_op > 0 && one_op == cores.len()), || {
            format!(
                "the export kept attention cores separate: {one_op} of {} as the op ({why:?})",
                cores.len()
            )
        })?;
        let float_ops = one_op;
        let one_op = match why {
            Some(why) => format!("kept separate: {why}"),
            None => format!("{one_op}"),
        };

        let quantize = |mode| {
            Pass::Quantize(QuantizeOptions {
                mode,
                ..Default::default()
            })
        };
        let labels = base.len() / 2;
        // Dynamic INT8 with `opts`: the model, its relative logit error on the sample batch, how
        // many of its argmaxes it flips, and its logits there.
        let dynamic = |opts: QuantizeOptions, what: &str| -> Result<(Applied, f32, usize, Vec<f32>), String> {
            let q = Pass::Quantize(QuantizeOptions {
                mode: Mode::Dynamic,
                ..opts
            })
            .apply(&m, None)
            .map_err(|e| format!("{what}: {e}"))?;
            let got = logits(&q.model, &batch, what);
            let flips = base
                .chunks(labels)
                .zip(got.chunks(labels))
                .filter(|(want, q)| argmax(want) != argmax(q))
                .count();
            Ok((q, relative(&base, &got), flips, got))
        };
        let (default, ours, flips, default_logits) = dynamic(Default::default(), "dynamic INT8")?;
        // Not yet ONNX Runtime's bar (see the module's note): a broken graph is off by ~1.
        ensure(ours < 0.75, || format!("dynamic INT8's relative logit error {ours}"))?;
        // Each attention's separate ops give what the Attention op gives, on the quantized graph
        // too (where the first-token split sliced the last layer's query).
        let (.., separate_logits) = dynamic(
            QuantizeOptions {
                attention_op: false,
                ..Default::default()
            },
            "dynamic INT8, separate attention ops",
        )?;
        // Every attention the float model runs as the op does so in dynamic INT8 too, the last
        // layer's first-token query included (DistilBERT's transformers 4 classic eager export
        // slices its mask's broadcast to the first query: the op takes that row of the mask).
        let quantized_ops = quantize_report(&default).attention_ops;
        ensure(quantized_ops == float_ops, || {
            format!("dynamic INT8 runs {quantized_ops} attention cores as the op, the float model {float_ops}")
        })?;
        let dop = max_diff(&default_logits, &separate_logits);
        ensure(dop <= 1e-5, || {
            format!("dynamic INT8 with one Attention op per attention moved the logits by {dop} from the separate ops")
        })?;

        let fp16 = quantize(Mode::Fp16).apply(&m, None).map_err(|e| format!("fp16: {e}"))?;
        let e16 = relative(&base, &logits(&fp16.model, &batch, "fp16"));
        ensure(e16 <= 1e-2, || format!("fp16's relative logit error {e16}"))?;

        let stat = quantize(Mode::Static)
            .apply(&m, Some(&mut calibrator(2, 5)))
            .map_err(|e| format!("static INT8: {e}"))?;
        let static_logits = logits(&stat.model, &batch, "static INT8");
        let es = relative(&base, &static_logits);
        // --unpad: the same static model on the real tokens (the sample batch pads its second
        // example by two), whatever the exporter wrote.
        let unpadded = Pass::Quantize(QuantizeOptions {
            mode: Mode::Static,
            unpad: true,
            ..Default::default()
        })
        .apply(&m, Some(&mut calibrator(2, 5)))
        .map_err(|e| format!("static INT8 --unpad: {e}"))?;
        let du = max_diff(&static_logits, &logits(&unpadded.model, &batch, "static INT8 --unpad"));
        ensure(du <= 1e-5, || format!("static INT8 --unpad moved the logits by {du}"))?;
        let ur = quantize_report(&unpadded);
        let unpadded_layers = ur.unpadded_layers.len();
        // Packed rows where the graph allows, else the split blocks alone, saying why.
        let how = if ur.tokens_packed {
            "packed"
        } else {
            // Refused on the float graph with the reason, never a plan the quantized graph
            // then breaks ("tokens not packed in the quantized graph").
            ensure(ur.warnings.iter().any(|w| w.starts_with("tokens not packed: ")), || {
                format!(
                    "static INT8 --unpad did not pack the tokens and said nothing: {:?}",
                    ur.warnings
                )
            })?;
            "blocks"
        };
        // Every cell packs but ONNX Runtime's fused-attention graphs (ModernBERT's gated FFN
        // halves along the width, sliced or split, and its head's first-token Gather pack too).
        ensure(ur.tokens_packed || fused, || {
            format!("static INT8 --unpad did not pack the tokens: {:?}", ur.warnings)
        })?;
        // ONNX Runtime's static form, packed: each attention one op, those on the padded layout
        // in two length groups (the sample batch's two lengths are two groups); the same logits.
        let ort_static = |unpad: bool| {
            Pass::Quantize(QuantizeOptions {
                mode: Mode::Static,
                static_form: StaticForm::Ort,
                unpad,
                ..Default::default()
            })
            .apply(&m, Some(&mut calibrator(2, 5)))
            .map_err(|e| format!("static INT8, ONNX Runtime's form (unpad {unpad}): {e}"))
        };
        let (padded_ort, packed_ort) = (ort_static(false)?, ort_static(true)?);
        let dg = max_diff(
            &logits(&padded_ort.model, &batch, "static INT8, ORT form"),
            &logits(&packed_ort.model, &batch, "static INT8, ORT form, --unpad"),
        );
        ensure(dg <= 1e-5, || {
            format!("static INT8 (ORT form) --unpad moved the logits by {dg}")
        })?;
        // Every attention on the padded layout: all but DeBERTa's (Q and K read by its relative
        // position terms too) and ModernBERT's (the rotary embedding between the projections
        // and the op), and the last layer's where its query is the first token alone.
        let pr = quantize_report(&packed_ort);
        let grouped = pr.attention_length_groups;
        if pr.tokens_packed && !["deberta-v3", "modernbert"].contains(&c.family.as_str()) {
            let want = pr.attention_ops - usize::from(pr.first_token_only_attention_layer.is_some());
            ensure(grouped == want && grouped > 0, || {
                format!(
                    "{grouped} of {} attention ops in length groups, not {want}",
                    pr.attention_ops
                )
            })?;
        }
        // The embedding tables left float: the same MatMuls quantized as by ONNX Runtime's
        // quantize_dynamic, which stores the tables int8 too (per tensor), so this variant has
        // fewer quantized tensors than the bar; the default, int8 tables too, is printed.
        // u8 weights run exact u8 × u8 kernels on every CPU; the default s8 weights run exactly
        // only with VNNI.
        let (_, ours8, flips8, _) = dynamic(
            QuantizeOptions {
                weight_type: WeightType::U8,
                embeddings: false,
                ..Default::default()
            },
            "dynamic INT8, u8 weights",
        )?;
        ensure(flips8 == 0, || {
            format!("dynamic INT8 with u8 weights flips {flips8} of the examples' argmax (error {ours8})")
        })?;
        let (like, ours_like, flips_like, _) = dynamic(
            QuantizeOptions {
                embeddings: false,
                ..Default::default()
            },
            "dynamic INT8, float embeddings",
        )?;
        // ONNX Runtime's quantize_dynamic as it runs on this kind of CPU (the module's note).
        let bar = if vnni() {
            // Exact kernels on both sides: 32 examples, s8 weights (u8 ones store the same values;
            // on the sample batch above their errors read the same, bench/RESULTS.md).
            let (bar_batch, ort, left_float) = c.vnni_bar();
            let on_bar = |model: &ModelProto, what| logits(model, std::slice::from_ref(&bar_batch), what);
            let base = on_bar(&m, "FP32");
            let theirs = relative(&base, &ort);
            let ours = relative(&base, &on_bar(&like.model, "dynamic INT8, float embeddings"));
            let full = relative(&base, &on_bar(&default.model, "dynamic INT8"));
            // Where quantize_dynamic left MatMuls float (weights it does not see through
            // Identity: ALBERT's shared layer), the held comparison keeps ours float there too.
            // A MatMul and its first-token copy (`NAME_first`, the split) are one MatMul here.
            let one = |q: &str, n: &str| q == n || q.strip_prefix(n) == Some("_first");
            let same: Vec<String> = left_float
                .into_iter()
                .filter(|n| quantize_report(&like).matmuls.iter().any(|q| one(&q.node, n)))
                .collect();
            // Dynamic INT8 (int8 tables or float ones) with the MatMuls quantize_dynamic left float
            // kept float: its logits on the bar.
            let same_matmuls = |embeddings: bool, what: &str| -> Result<Vec<f32>, String> {
                let (q, ..) = dynamic(
                    QuantizeOptions {
                        embeddings,
                        exclude: same.clone(),
                        ..Default::default()
                    },
                    what,
                )?;
                let kept = &quantize_report(&q).excluded;
                let covered = same.iter().all(|n| kept.iter().any(|k| one(k, n)))
                    && kept.iter().all(|k| same.iter().any(|n| one(k, n)));
                ensure(covered, || {
                    format!("excluding quantize_dynamic's float MatMuls {same:?} kept {kept:?} float")
                })?;
                Ok(on_bar(&q.model, "the same MatMuls quantized"))
            };
            let held = if same.is_empty() {
                ours
            } else {
                relative(
                    &base,
                    &same_matmuls(
                        false,
                        "dynamic INT8, float embeddings, quantize_dynamic's float MatMuls float",
                    )?,
                )
            };
            // The default, int8 tables too, by the error over every logit of the 32 examples.
            let default_bar = if same.is_empty() {
                on_bar(&default.model, "dynamic INT8")
            } else {
                same_matmuls(true, "dynamic INT8, quantize_dynamic's float MatMuls float")?
            };
            let (full_rms, theirs_rms) = (rms_relative(&base, &default_bar), rms_relative(&base, &ort));
            within_known(c, KNOWN_RMS_GAP, full_rms, theirs_rms, &|allowed_rms| {
                format!(
                    "dynamic INT8 (the default: s8 weights, int8 tables, {} MatMuls kept float as quantize_dynamic keeps them) on a CPU with VNNI: RMS relative logit error {full_rms} on 32 examples, ONNX Runtime's quantize_dynamic {theirs_rms} (allowed {allowed_rms})",
                    same.len()
                )
            })?;
            ensure(flips_like == 0, || {
                format!("dynamic INT8 (s8 weights, float embeddings): {flips_like} of the sample batch flipped")
            })?;
            within_known(c, KNOWN_GAP, held, theirs, &|allowed| {
                format!(
                    "dynamic INT8 (s8 weights, float embeddings, {} MatMuls kept float as quantize_dynamic keeps them) on a CPU with VNNI: relative logit error {held} on 32 examples, ONNX Runtime's quantize_dynamic {theirs} (allowed {allowed})",
                    same.len()
                )
            })?;
            let verdict = if full <= theirs { "no worse" } else { "worse (not held)" };
            let same_note = if same.is_empty() {
                String::new()
            } else {
                format!(
                    ", {held:.4} with the {} MatMuls quantize_dynamic left float kept float",
                    same.len()
                )
            };
            format!(
                "32 examples with VNNI: largest error: float embeddings {ours:.4}{same_note} vs ORT's quantize_dynamic {theirs:.4}, the default {full:.4} {verdict}; RMS: the default {full_rms:.4} vs ORT's {theirs_rms:.4}"
            )
        } else {
            // AVX2: quantize_dynamic's saturated sums on the sample batch; u8 weights held.
            let theirs = relative(&base, &c.stored("ort_quantize_dynamic_logits"));
            ensure(ours8 <= theirs, || {
                format!(
                    "dynamic INT8 with u8 weights: relative logit error {ours8}, ONNX Runtime's quantize_dynamic {theirs}"
                )
            })?;
            let like = if ours_like <= theirs && flips_like == 0 {
                "no worse"
            } else {
                "WORSE (not held)"
            };
            format!(
                "without VNNI: ORT's quantize_dynamic {theirs:.3}; u8 weights {ours8:.3} no worse; s8, float embeddings {ours_like:.3} {like}"
            )
        };
        Ok(format!(
            "({bar}; sample batch: dynamic {ours:.3}, {flips} flipped; float embeddings {ours_like:.3}, {flips_like} flipped; u8 weights {ours8:.3}, {flips8} flipped; fp16 {e16:.1e}, static {es:.3}, unpadded in {unpadded_layers} layers ({how}): {du:.0e}; one Attention op: {one_op}; ORT form packed: {dg:.0e}, {grouped} in length groups)"
        ))
    });
}

/// Per layer (heads, FFN width), and the rank of every factored Linear.
type Choices = (Vec<(usize, usize)>, Vec<usize>);

/// What a calibrated pass chose, and the logits of its result.
type Outcome = (Choices, Vec<f32>);

/// Per layer (heads, FFN width) and the rank of every factored Linear.
fn choices(t: &Transformer) -> Choices {
    let sizes = t.layers.iter().map(|l| (l.heads(), l.ffn_width())).collect();
    let ranks = t
        .layers
        .iter()
        .flat_map(|l| {
            let ffn = l.ffn.as_ref().map(|f| [&f.up, &f.down]);
            ffn.into_iter().flatten().chain(l.attention.as_ref().map(|a| &a.output))
        })
        .filter_map(|lin| lin.factor.as_ref().map(|f| f.rank))
        .collect();
    (sizes, ranks)
}

/// Calibrated pruning and activation-aware low rank of `m`: what each chose and its logits on
/// the example batch.
fn calibrated(c: &Cell) -> Result<Vec<Outcome>, String> {
    let m = c.load();
    let passes = [
        Pass::Prune(PruneOptions {
            heads: 0.5,
            ffn: 0.5,
            strategy: Strategy::Obs,
            ..Default::default()
        }),
        Pass::Lowrank(LowrankOptions {
            activation_aware: true,
            target_params: Some(0.5),
            ..Default::default()
        }),
    ];
    let mut out = vec![];
    for p in passes {
        let a = match p.apply(&m, Some(&mut calibrator(4, 3))) {
            Ok(a) => a,
            // A one-line refusal that names the sharing and what to use instead.
            Err(e)
                if c.shared_layers
                    && ["share their weights", "share the weight"]
                        .iter()
                        .any(|w| e.to_string().contains(w)) =>
            {
                out.push(((vec![], vec![]), vec![]));
                continue;
            }
            Err(e) => return Err(format!("{}: {e}", p.name())),
        };
        let t = discover(&a.model).map_err(|e| format!("{}: the result does not map: {e}", p.name()))?;
        out.push((choices(&t), logits(&a.model, &[c.batch()], p.name())));
    }
    Ok(out)
}

#[test]
fn calibrated_passes_choose_alike_on_sdpa_and_eager_exports() {
    let all = cells();
    // Every SDPA export has its eager twin (a renamed cell is an error, not a pair skipped).
    let sdpa = all.iter().filter(|c| c.attention == "sdpa").count();
    assert!(sdpa >= 28, "{sdpa} SDPA exports in the matrix, 28 expected");
    every_cell("calibrated passes on SDPA and eager exports", |c| {
        if c.attention != "sdpa" {
            return Ok("(the SDPA export of the pair checks it)".into());
        }
        let eager = all
            .iter()
            .find(|e| e.attention == "eager" && e.twin_key() == c.twin_key())
            .ok_or_else(|| format!("no eager export of the same weights ({})", c.twin_key()))?;
        let (a, b) = (calibrated(c)?, calibrated(eager)?);
        for (((ca, la), (cb, lb)), pass) in a
            .iter()
            .zip(&b)
            .zip(["calibrated pruning", "activation-aware low rank"])
        {
            ensure(ca == cb, || format!("{pass}: SDPA chose {ca:?}, eager {cb:?}"))?;
            let d = max_diff(la, lb);
            ensure(d <= 1e-4, || format!("{pass}: SDPA vs eager logits {d}"))?;
        }
        Ok(format!("(as {})", eager.name))
    });
}

/// A word-level tokenizer.json in `dir` over the fixtures' vocabulary of 100 (`w4` … `w99`; 0–3
/// the specials).
fn fixture_tokenizer(dir: &Path) -> PathBuf {
    let tokenizer = dir.join("tokenizer.json");
    let words: Vec<String> = (4..100).map(|i| format!("w{i}")).collect();
    let mut vocab = vec!["[UNK]", "[CLS]", "[SEP]", "[PAD]"];
    vocab.extend(words.iter().map(String::as_str));
    std::fs::write(
        &tokenizer,
        common::word_level_tokenizer(&vocab, ["[UNK]", "[PAD]", "[CLS]", "[SEP]"], Value::Null),
    )
    .unwrap();
    tokenizer
}

#[test]
fn eval_runs_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = fixture_tokenizer(dir.path());
    let data = dir.path().join("data.csv");
    let rows: [&[i64]; 8] = [
        &[5, 6, 7],
        &[40, 41],
        &[9],
        &[60, 70, 80, 90, 11],
        &[99, 98, 97, 96],
        &[12, 13],
        &[55, 20, 33, 71, 8, 4],
        &[30],
    ];
    let mut csv = "text,label\n".to_string();
    for (i, r) in rows.iter().enumerate() {
        let words: Vec<String> = r.iter().map(|id| format!("w{id}")).collect();
        csv += &format!("{},{}\n", words.join(" "), i % 2);
    }
    std::fs::write(&data, csv).unwrap();
    every_cell("eval over the export matrix", |c| {
        let out = bin()
            .args(["eval", "--json", "--max-length", "16", "--model"])
            .arg(c.path())
            .arg("--data")
            .arg(&data)
            .arg("--tokenizer")
            .arg(&tokenizer)
            .output()
            .unwrap();
        ensure(out.status.success(), || format!("eval: {}", common::text(&out.stderr)))?;
        let j: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let got: Vec<usize> = serde_json::from_value(j["predictions"].clone()).map_err(|e| e.to_string())?;
        // Each example alone: [CLS] ids [SEP], no padding.
        let m = c.load();
        let want: Vec<usize> = rows
            .iter()
            .map(|r| {
                let ids: Vec<i64> = [1].iter().chain(r.iter()).chain(&[2]).copied().collect();
                let n = ids.len();
                let b = Batch {
                    input_ids: Array2::from_shape_vec((1, n), ids).unwrap(),
                    attention_mask: Array2::ones((1, n)),
                    token_type_ids: Array2::zeros((1, n)),
                };
                argmax(&logits(&m, &[b], &c.name))
            })
            .collect();
        ensure(got == want, || {
            format!("eval predicted {got:?}, the logits say {want:?}")
        })?;
        Ok(format!("(predictions {got:?})"))
    });
}

/// A user's own labelled CSV files in `dir`, `train.csv` (96 rows) and `dev.csv` (64): seeded
/// random texts of 2–12 of the fixtures' words, labels 0/1.
fn random_texts(dir: &Path) -> (PathBuf, PathBuf) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut write = |name: &str, rows: usize| {
        let mut csv = "text,label\n".to_string();
        for _ in 0..rows {
            let words: Vec<String> = (0..2 + next(11)).map(|_| format!("w{}", 4 + next(96))).collect();
            csv += &format!("{},{}\n", words.join(" "), next(2));
        }
        let path = dir.join(name);
        std::fs::write(&path, csv).unwrap();
        path
    };
    (write("train.csv", 96), write("dev.csv", 64))
}

/// `diff` and `sensitivity` on every cell. `diff` of the cell and its l1-pruned copy (half the
/// heads, a third of the neurons) compares 64 examples and traces the embeddings (unchanged:
/// relative error 0, or rounding where ONNX Runtime fuses the two graphs differently) and each
/// layer (changed); of an SDPA export and the eager export of the same weights, it finds the
/// same predictions and every layer equal to 1e-5; of the cell and its float16 copy, every layer
/// within 1e-2; `sensitivity` measures every block that pruning
/// can take and every MatMul in int8, all finite. (Before, `sensitivity` failed on DeBERTa's
/// dynamo exports, whose heads can only be pruned in step: it now measures them so.)
#[test]
fn diff_and_sensitivity_run_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = fixture_tokenizer(dir.path());
    let (train, dev) = random_texts(dir.path());
    let data = ["--tokenizer", s(&tokenizer), "--max-length", "16", "--json", "-q"];
    // A command of the binary with the data flags: its JSON report, or why it failed.
    let report = |what: &str, mut cmd: assert_cmd::Command| -> Result<Value, String> {
        let out = cmd.args(data).output().unwrap();
        ensure(out.status.success(), || {
            format!("{what}: {}", common::text(&out.stderr))
        })?;
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    };
    let diff = |a: &Path, b: &Path| {
        let mut c = bin();
        c.arg("diff").arg(a).arg(b).args(["--data", s(&dev)]);
        c
    };
    every_cell("diff and sensitivity over the export matrix", |c| {
        let pruned = dir.path().join(format!("{}.onnx", c.name));
        let pass = Pass::Prune(PruneOptions {
            heads: 0.5,
            ffn: 0.3,
            ..Default::default()
        });
        let applied = pass.apply(&c.load(), None).map_err(|e| format!("prune: {e}"))?;
        onnx::save(&applied.model, &pruned, &Default::default()).map_err(|e| e.to_string())?;
        let d = report("diff", diff(&c.path(), &pruned))?;
        let layers = d["layers"].as_array().cloned().unwrap_or_default();
        let errors: Vec<f64> = layers.iter().filter_map(|l| l["relative_error"].as_f64()).collect();
        ensure(
            d["examples"] == 64
                && layers.len() == 3
                && layers[0]["at"] == "embeddings"
                && errors.len() == 3
                && errors[0] < 1e-6
                && errors[1..].iter().all(|e| e.is_finite() && *e > 0.0),
            || format!("diff: {} examples, layers {layers:?}", d["examples"]),
        )?;
        // Its float16 copy: every traced value read as float, wherever the copy holds it in
        // float16 (ALBERT's, DeBERTa's and ELECTRA's embeddings were declared float and failed).
        let half = dir.path().join(format!("{}-fp16.onnx", c.name));
        let fp16 = Pass::Quantize(QuantizeOptions {
            mode: Mode::Fp16,
            ..Default::default()
        })
        .apply(&c.load(), None)
        .map_err(|e| format!("fp16: {e}"))?;
        onnx::save(&fp16.model, &half, &Default::default()).map_err(|e| e.to_string())?;
        let d = report("diff with the fp16 copy", diff(&c.path(), &half))?;
        let layers = d["layers"].as_array().cloned().unwrap_or_default();
        ensure(
            layers.len() == 3
                && layers
                    .iter()
                    .all(|l| l["relative_error"].as_f64().is_some_and(|e| e < 1e-2)),
            || format!("diff with the fp16 copy: layers {layers:?}"),
        )?;
        // An SDPA export against the eager export of the same weights: the same predictions,
        // every traced layer equal to rounding.
        let eager = root().join(c.name.replacen("-sdpa-", "-eager-", 1)).join("model.onnx");
        if c.attention == "sdpa" {
            ensure(eager.is_file(), || {
                format!("no eager export beside it: {}", eager.display())
            })?;
            let d = report("diff with eager", diff(&eager, &c.path()))?;
            let layers = d["layers"].as_array().cloned().unwrap_or_default();
            ensure(
                d["agreement"] == 1.0
                    && layers.len() == 3
                    && layers
                        .iter()
                        .all(|l| l["relative_error"].as_f64().is_some_and(|e| e < 1e-5)),
                || {
                    format!(
                        "diff with the eager export: agreement {}, layers {layers:?}",
                        d["agreement"]
                    )
                },
            )?;
        }
        let mut sensitivity = bin();
        sensitivity.arg("sensitivity").arg(c.path()).args([
            "--calib-data",
            s(&train),
            "--calib-samples",
            "32",
            "--fractions",
            "0.5",
        ]);
        let r = report("sensitivity", sensitivity)?;
        let rows = |k: &str| r[k].as_array().cloned().unwrap_or_default();
        let (pruning, int8) = (rows("pruning"), rows("int8"));
        // Each block kind's rows cover both layers once: a row per layer, one for layers sharing
        // the block's weights (ALBERT's, wholly or in part), one for heads in step.
        let covered = |b: &str| {
            let mut layers: Vec<u64> = pruning
                .iter()
                .filter(|x| x["block"] == b)
                .flat_map(|x| x["layers"].as_array().cloned().unwrap_or_default())
                .filter_map(|l| l.as_u64())
                .collect();
            layers.sort();
            layers
        };
        let in_step = pruning.iter().any(|x| x["in_step"] == true);
        ensure(covered("attention") == [0, 1] && covered("ffn") == [0, 1], || {
            format!("sensitivity rows: {pruning:?}")
        })?;
        ensure(
            !int8.is_empty()
                && pruning
                    .iter()
                    .chain(&int8)
                    .all(|x| x["divergence"].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0)),
            || format!("sensitivity values: {pruning:?} {int8:?}"),
        )?;
        // Every INT8 row is named: in a layer, or the embeddings' projection, pooler or
        // classifier outside them (those read '-').
        let unnamed: Vec<_> = int8
            .iter()
            .filter(|x| !x["role"].is_string())
            .map(|x| x["node"].clone())
            .collect();
        ensure(unnamed.is_empty(), || format!("INT8 rows without a role: {unnamed:?}"))?;
        // A fused graph's packed attention has no INT8 row, and the report says so.
        let fused = c
            .load()
            .graph
            .is_some_and(|g| g.node.iter().any(|n| n.op_type.as_deref() == Some("Attention")));
        let noted = rows("notes")
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("fused Attention nodes")));
        ensure(fused == noted, || {
            format!("fused attention {fused}, noted {noted}: {:?}", r["notes"])
        })?;
        Ok(format!(
            "(diff agreement {}, {} pruning rows{}, {} MatMuls)",
            d["agreement"],
            pruning.len(),
            if in_step { " (heads in step)" } else { "" },
            int8.len()
        ))
    });
}

/// `auto` on every cell, on the user's own CSV files (random texts of the fixtures' words, random
/// labels): a small search (calibrated pruning to 60% MACs, static INT8 in ONNX Runtime's form,
/// chosen by MACs) builds and scores every candidate without a failure, and reports on the dev
/// file; `run` of the recipe it writes rebuilds the same bytes and scores dev alike. The random weights make the accuracies meaningless; that every candidate of every layout
/// is built, checked by ONNX Runtime and scored is what is tested.
#[test]
fn auto_searches_every_cell_on_the_users_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = fixture_tokenizer(dir.path());
    let (train, dev) = random_texts(dir.path());
    every_cell("auto over the export matrix", |c| {
        // The model beside the tokenizer, as a user keeps them.
        let cell = dir.path().join(&c.name);
        std::fs::create_dir_all(&cell).unwrap();
        std::fs::copy(c.path(), cell.join("model.onnx")).unwrap();
        std::fs::copy(&tokenizer, cell.join("tokenizer.json")).unwrap();
        let out = bin()
            .arg("auto")
            .arg(cell.join("model.onnx"))
            .arg(cell.join("out.onnx"))
            .arg("--calib-data")
            .arg(&train)
            .arg("--data")
            .arg(&dev)
            .args([
                "--calib-samples",
                "32",
                "--selection",
                "64",
                "--prune",
                "0.6",
                "--lowrank",
                "none",
                "--quant",
                "static_ort",
            ])
            .args([
                "--objective",
                "macs",
                "--max-drop",
                "100",
                "--max-length",
                "16",
                "--json",
                "-q",
            ])
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .unwrap();
        ensure(out.status.success(), || format!("auto: {}", common::text(&out.stderr)))?;
        let r: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        ensure(r["failed"].as_array().is_some_and(|f| f.is_empty()), || {
            format!("failed candidates: {}", r["failed"])
        })?;
        let ids: Vec<&str> = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["id"].as_str())
            .collect();
        ensure(ids == ["base", "base+static_ort", "p0.60", "p0.60+static_ort"], || {
            format!("rows {ids:?}")
        })?;
        ensure(r["dev"]["examples"] == 64 && cell.join("out.onnx").is_file(), || {
            format!("dev {} / no OUT", r["dev"])
        })?;
        // Its recipe rebuilds the same bytes and scores dev as auto did.
        let rebuilt = cell.join("rebuilt.onnx");
        let run = bin()
            .arg("run")
            .arg(cell.join("out.auto").join("recipe.yaml"))
            .arg("--out")
            .arg(&rebuilt)
            .args(["--json", "-q"])
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .unwrap();
        ensure(run.status.success(), || format!("run: {}", common::text(&run.stderr)))?;
        let rr: Value = serde_json::from_slice(&run.stdout).map_err(|e| e.to_string())?;
        ensure(
            std::fs::read(&rebuilt).ok() == std::fs::read(cell.join("out.onnx")).ok(),
            || "run rebuilt other bytes than auto wrote".into(),
        )?;
        ensure(rr["eval"]["metrics"]["accuracy"] == r["dev"]["accuracy"], || {
            format!(
                "run's dev accuracy {} against auto's {}",
                rr["eval"]["metrics"]["accuracy"], r["dev"]["accuracy"]
            )
        })?;
        Ok(format!(
            "(winner {}, MACs {})",
            r["winner"], r["rows"][2]["macs_fraction"]
        ))
    });
}

/// The limits `eval` and calibration check an input against are the model's own, in every cell:
/// a sequence as long as `input_limits` says runs and one token longer fails in ONNX Runtime
/// (RoBERTa and XLM-R count positions from their padding index: two rows of the table no length
/// reaches), and the largest id below the vocabulary runs. Where there is no position table
/// (rotary, relative attention) a sequence of 64 runs.
#[test]
fn every_cells_input_limits_are_the_models_own() {
    every_cell("input limits", |c| {
        let limits = onnx_compress::eval::input_limits(&c.load());
        let vocab = limits.vocabulary.ok_or("no word embeddings found")? as i64;
        let mut session = onnx_compress::runtime::open(&c.path(), &Default::default()).map_err(|e| format!("{e:#}"))?;
        let batch = |len: usize| Batch {
            input_ids: Array2::from_elem((1, len), vocab - 1),
            attention_mask: Array2::ones((1, len)),
            token_type_ids: Array2::zeros((1, len)),
        };
        let longest = limits.positions.unwrap_or(64);
        session
            .run(&batch(longest))
            .map_err(|e| format!("{longest} tokens (ids up to {}): {e:#}", vocab - 1))?;
        if let Some(p) = limits.positions {
            ensure(session.run(&batch(p + 1)).is_err(), || {
                format!("{} tokens ran: the limit of {p} is too low", p + 1)
            })?;
        }
        Ok(format!("positions {:?}, vocabulary {vocab}", limits.positions))
    });
}
