//! The reference experiment's own configuration files (`tests/fixtures/seed-configs/`, verbatim
//! copies of `../shared/docs/seed-configs/`) run unchanged: the keys of its layout this tool
//! cannot act on are ignored with one note line each, its Hugging Face ids are looked up under
//! `models/`, `--model` overrides them, its t5 config is refused in one line, and keys in neither
//! layout stay errors naming their line.
//!
//! The runs use a synthetic 12-layer model (the configs' `rmt_lowrank.layers` 7–11 need twelve)
//! with a word-level tokenizer and a few GLUE rows per task, at `--limit 8`; they need ONNX
//! Runtime and skip with a visible `SKIP:` line without it (fail under `CI=true`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_clean_error, bin, have_ort, s, text, word_level_tokenizer, BERT_SPECIALS};
use onnx_compress::glue::Task;
use onnx_compress::onnx::{self, SaveOptions};
use onnx_compress::recipe;
use onnx_compress::testkit::shared::require;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;

const FILES: [&str; 4] = [
    "config.yaml",
    "config_bert_sst2.yaml",
    "config_bert_mrpc.yaml",
    "config_bert_qqp.yaml",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-configs")
}

/// A folder holding copies of the four configs and a `glue/` folder with a few rows per task.
struct Seed {
    dir: tempfile::TempDir,
}

impl Seed {
    fn new() -> Seed {
        let dir = tempfile::tempdir().unwrap();
        for f in FILES {
            std::fs::copy(fixtures().join(f), dir.path().join(f)).unwrap();
        }
        let rows = |header: &str, row: &dyn Fn(usize) -> String| {
            let mut t = format!("{header}\n");
            for i in 0..10 {
                t += &row(i);
                t.push('\n');
            }
            t
        };
        let glue = dir.path().join("glue");
        for (task, header, row) in [
            (
                "sst2",
                "sentence\tlabel",
                &(|i: usize| format!("the film is {} \t{}", ["good", "bad"][i % 2], 1 - i % 2))
                    as &dyn Fn(usize) -> String,
            ),
            ("mrpc", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", &|i: usize| {
                format!(
                    "{}\t{i}\t{i}\tthe film is good\ta film is {}",
                    1 - i % 2,
                    ["good", "bad"][i % 2]
                )
            }),
            (
                "qqp",
                "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                &|i: usize| {
                    format!(
                        "{i}\t{i}\t{i}\tis the film good\tis a film {}\t{}",
                        ["good", "bad"][i % 2],
                        1 - i % 2
                    )
                },
            ),
        ] {
            std::fs::create_dir_all(glue.join(task)).unwrap();
            std::fs::write(glue.join(task).join("dev.tsv"), rows(header, row)).unwrap();
        }
        Seed { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A synthetic BERT classifier (12 layers, 512 positions) and its tokenizer.json at `rel` (a
    /// `model.onnx` path in the folder). `wide`: hidden 512 (8 heads), FFN 2048, the narrowest
    /// shape at which the configs' `k_min: 384` is below the FFN projections' break-even rank
    /// (512·2048/2560 = 409.6), so that their low-rank step has something to do; else hidden 32
    /// (4 heads), FFN 64. Written once per folder and shape, then hard-linked.
    fn model(&self, rel: &str, wide: bool) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let first = self.path(if wide { "wide.onnx" } else { "narrow.onnx" });
        if !first.exists() {
            let o = if wide {
                SynthOptions {
                    heads: 8,
                    head_size: 64,
                    ffn: 2048,
                    ..Default::default()
                }
            } else {
                SynthOptions::default()
            };
            let m = tiny_bert(&SynthOptions {
                layers: 12,
                max_positions: 512,
                ..o
            });
            onnx::save(&m, &first, &SaveOptions::default()).unwrap();
        }
        std::fs::hard_link(&first, &p).unwrap();
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "the", "a", "is",
        ];
        std::fs::write(
            p.with_file_name("tokenizer.json"),
            word_level_tokenizer(&words, BERT_SPECIALS, Value::Null),
        )
        .unwrap();
        p
    }

    /// Runs the binary in the folder (quiet: stderr holds only notes and errors).
    fn run(&self, args: &[&str]) -> Output {
        bin()
            .current_dir(self.dir.path())
            .arg("--quiet")
            .args(args)
            .output()
            .unwrap()
    }

    /// A config of the folder with `from` replaced by `to` (which must occur), as `name`.
    fn edited(&self, config: &str, name: &str, from: &str, to: &str) -> String {
        let t = std::fs::read_to_string(self.path(config)).unwrap();
        assert!(t.contains(from), "{config} has no {from:?}");
        std::fs::write(self.path(name), t.replacen(from, to, 1)).unwrap();
        name.to_string()
    }
}

/// The `note:` lines of stderr; every other non-empty line must be the one `error:` line, if any.
fn notes(out: &Output) -> Vec<String> {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    let (notes, rest): (Vec<&str>, Vec<&str>) = err
        .lines()
        .filter(|l| !l.is_empty())
        .partition(|l| l.starts_with("note: "));
    assert!(
        rest.len() <= 1 && rest.iter().all(|l| l.starts_with("error: ")),
        "{err}"
    );
    notes.into_iter().map(String::from).collect()
}

/// The three notes of a published BERT config: trainer, logging, and its disabled magnitude
/// pruning (line `magnitude`).
fn assert_reference_notes(config: &str, out: &Output, magnitude: usize) {
    let n = notes(out);
    assert_eq!(n.len(), 3, "{config}: one note per ignored key: {n:#?}");
    assert_eq!(
        n[0],
        format!("note: {config}:10: trainer is the reference's training setup; ignored (onnx-compress does not train)")
    );
    assert!(n[1].starts_with(&format!("note: {config}:15: logging ")), "{}", n[1]);
    assert_eq!(
        n[2],
        format!("note: {config}:{magnitude}: prune.magnitude is disabled; ignored (onnx-compress has no unstructured magnitude pruning)")
    );
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Evaluate 8 examples of the folder's GLUE rows, time one batch.
const FAST: [&str; 8] = ["--data", "glue", "--limit", "8", "--warmup", "0", "--measure", "1"];

#[test]
fn fixtures_are_the_published_files() {
    for f in FILES {
        let Some(published) = require(&format!("docs/seed-configs/{f}"), "the published seed configs") else {
            return;
        };
        assert_eq!(
            std::fs::read(fixtures().join(f)).unwrap(),
            std::fs::read(published).unwrap(),
            "tests/fixtures/seed-configs/{f} differs from the published file"
        );
    }
}

#[test]
fn the_bert_configs_parse_as_the_reference_meant_them_and_round_trip() {
    for (f, task, batch) in [
        ("config_bert_sst2.yaml", Task::Sst2, 32),
        ("config_bert_mrpc.yaml", Task::Mrpc, 24),
        ("config_bert_qqp.yaml", Task::Qqp, 32),
    ] {
        let r = recipe::load(&fixtures().join(f)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.task(), Some(task));
        assert_eq!(r.split(), "dev");
        let d = &r.recipe.data;
        assert_eq!((d.batch_size, d.max_input_length, d.shuffle), (Some(batch), 512, false));
        assert!(r.is_reference_method() && !r.is_baseline());
        let l = &r.recipe.rmt_lowrank;
        assert_eq!(
            (l.k_min, l.layers.as_deref()),
            (Some(384), Some(&[7, 8, 9, 10, 11][..]))
        );
        let plan = r.plan().unwrap();
        let steps: Vec<&str> = plan.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(steps, ["rmt_lowrank"], "{f}");
        assert_eq!(r.notes().len(), 3, "{f}: {:?}", r.notes());
        assert!(r.recipe.trainer.is_some() && r.recipe.logging.is_some());
        let back = recipe::parse(&recipe::to_yaml(&r.recipe), &fixtures().join(f)).unwrap();
        assert_eq!(back.recipe, r.recipe, "{f}");
    }
    let e = recipe::load(&fixtures().join("config.yaml")).unwrap_err().to_string();
    assert!(e.contains("'t5-small' is a T5 model"), "{e}");
}

#[test]
fn the_t5_config_is_refused_in_one_line_before_anything_is_written() {
    let seed = Seed::new();
    let out = seed.run(&["run", "config.yaml", "--out", "out.onnx"]);
    assert_clean_error(
        "config.yaml",
        &out,
        &[
            "config.yaml: model.model_name (line 2): 't5-small' is a T5 model, an encoder-decoder",
            "BERT-family encoders",
        ],
    );
    assert!(!seed.path("out.onnx").exists());
    // bench says the same.
    let out = seed.run(&["bench", "--task", "sst2", "config.yaml", "--out", "bench"]);
    assert_clean_error("bench config.yaml", &out, &["'t5-small' is a T5 model"]);
    assert!(!seed.path("bench").exists());
    // A model file whose config.json says T5 is refused too.
    let model = seed.model("models/t5-small/model.onnx", false);
    std::fs::write(
        model.with_file_name("config.json"),
        r#"{"model_type": "t5", "is_encoder_decoder": true}"#,
    )
    .unwrap();
    let out = seed.run(&["run", "config_bert_sst2.yaml", "--model", s(&model)]);
    assert_eq!(notes(&out).len(), 3);
    let err = text(&out.stderr);
    assert!(
        err.contains("error: config_bert_sst2.yaml: --model ")
            && err.contains("is a T5 model, an encoder-decoder (model_type 't5'"),
        "{err}"
    );
}

/// Runs a published BERT config unchanged on the wide synthetic model placed at `model` (under
/// `models/`, where its hub id is looked up) and checks the notes and the run report.
fn runs_unchanged(config: &str, model: &str, task: &str, batch: u64, magnitude: usize) {
    if !have_ort("running the seed configs") {
        return;
    }
    let seed = Seed::new();
    seed.model(model, true);
    let out = seed.run(&[&["run", config, "--json"][..], &FAST].concat());
    assert_reference_notes(config, &out, magnitude);
    let r = json(&out);
    assert_eq!(r["model"], model, "{config}");
    let id = model
        .trim_start_matches("models/")
        .trim_end_matches("/model.onnx")
        .replace("--", "/");
    assert_eq!(r["model_source"], format!("models/ lookup of '{id}'"), "{config}");
    assert_eq!(r["task"], task);
    assert_eq!(
        (&r["baseline"], &r["reference_method"]),
        (&Value::Bool(false), &Value::Bool(true))
    );
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{config}: only its enabled pass: {steps:?}");
    assert_eq!(steps[0]["pass"], "rmt_lowrank");
    // ffn_only, layers 7-11: ten projections, factorized at k_min 384.
    let summary = steps[0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("denoise (gavish_donoho) + svd: 10 layers factorized, 0 left dense"),
        "{summary}"
    );
    let e = &r["eval"];
    assert_eq!(
        (
            e["split"].as_str(),
            e["examples"].as_u64(),
            e["batch_size"].as_u64(),
            e["max_length"].as_u64()
        ),
        (Some("dev"), Some(8), Some(batch), Some(512)),
        "{config}: split validation = dev, data.batch_size, data.max_input_length"
    );
    assert_eq!(e["device"], "cpu", "{config}: device.cuda false");
    assert!(e["metrics"]["accuracy"].is_number() && e["metrics"]["f1"].is_number());
}

// Both export layouts: models/<org>--<name>/ and models/<org>/<name>/.

#[test]
fn the_sst2_config_runs_unchanged() {
    runs_unchanged(
        "config_bert_sst2.yaml",
        "models/textattack--bert-base-uncased-SST-2/model.onnx",
        "sst2",
        32,
        37,
    );
}

#[test]
fn the_mrpc_config_runs_unchanged() {
    runs_unchanged(
        "config_bert_mrpc.yaml",
        "models/textattack/bert-base-uncased-MRPC/model.onnx",
        "mrpc",
        24,
        44,
    );
}

#[test]
fn the_qqp_config_runs_unchanged() {
    runs_unchanged(
        "config_bert_qqp.yaml",
        "models/textattack--bert-base-uncased-QQP/model.onnx",
        "qqp",
        32,
        37,
    );
}

#[test]
fn the_model_flag_overrides_model_name_in_run_and_bench() {
    if !have_ort("--model on the seed configs") {
        return;
    }
    let seed = Seed::new();
    let model = seed.model("elsewhere/bert12.onnx", true);
    let out = seed.run(&[&["run", "config_bert_sst2.yaml", "--model", s(&model)][..], &FAST].concat());
    assert_reference_notes("config_bert_sst2.yaml", &out, 37);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = format!("input        {} (--model)", model.display());
    assert!(
        text(&out.stdout).lines().any(|l| l == want),
        "{want:?} not in:\n{}",
        text(&out.stdout)
    );
    // bench takes it too, for every recipe (here the MRPC config without its low-rank step, on
    // the narrow model).
    let narrow = seed.model("elsewhere/narrow.onnx", false);
    let cfg = seed.edited(
        "config_bert_mrpc.yaml",
        "mrpc_baseline.yaml",
        "rmt_lowrank:\n  enable: true\n",
        "rmt_lowrank:\n  enable: false\n",
    );
    let out = seed.run(
        &[
            &[
                "bench",
                "--task",
                "mrpc",
                &cfg,
                "--json",
                "--out",
                "bench",
                "--model",
                s(&narrow),
            ][..],
            &FAST,
        ]
        .concat(),
    );
    assert_reference_notes(&cfg, &out, 44);
    let b = json(&out);
    assert_eq!(b["runs"][0]["model"], s(&narrow));
    assert_eq!(b["runs"][0]["model_source"], "--model");
    assert_eq!(b["rows"][0]["baseline"], true);
    assert!(seed.path("bench/results.csv").is_file());
    // A --model that is not there.
    let out = seed.run(&["run", "config_bert_sst2.yaml", "--model", "absent.onnx"]);
    assert!(text(&out.stderr).contains("error: config_bert_sst2.yaml: --model absent.onnx: no such file"));
}

#[test]
fn a_missing_model_names_the_paths_tried_and_the_export_command() {
    let seed = Seed::new();
    std::fs::create_dir(seed.path("configs")).unwrap();
    std::fs::copy(seed.path("config_bert_sst2.yaml"), seed.path("configs/sst2.yaml")).unwrap();
    let out = seed.run(&["run", "configs/sst2.yaml", "--out", "out.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(notes(&out).len(), 3);
    let err = text(&out.stderr);
    let err = err.lines().last().unwrap();
    for needle in [
        "error: configs/sst2.yaml: model.model_name (line 2): 'textattack/bert-base-uncased-SST-2' is neither a file",
        "models/textattack/bert-base-uncased-SST-2/model.onnx or models/textattack--bert-base-uncased-SST-2/model.onnx",
        "in the current directory (",
        "nor in the config's folder (configs)",
        "`python scripts/export_hf.py textattack/bert-base-uncased-SST-2 models/textattack/bert-base-uncased-SST-2`",
        "--model PATH",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert!(!seed.path("out.onnx").exists());
    // An export beside the config is found too (here with the low-rank step off: a narrow model).
    seed.model("configs/models/textattack--bert-base-uncased-SST-2/model.onnx", false);
    seed.edited(
        "configs/sst2.yaml",
        "configs/sst2_base.yaml",
        "rmt_lowrank:\n  enable: true\n",
        "rmt_lowrank:\n  enable: false\n",
    );
    if have_ort("a model found beside the config") {
        let out = seed.run(&[&["run", "configs/sst2_base.yaml"][..], &FAST].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let want = "input        configs/models/textattack--bert-base-uncased-SST-2/model.onnx (models/ lookup of \
                    'textattack/bert-base-uncased-SST-2')";
        assert!(
            text(&out.stdout).lines().any(|l| l == want),
            "{want:?} not in:\n{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn layers_the_model_lacks_are_named_with_its_layer_count() {
    let Some(minilm) = require("models/minilm-l6-sst2/model.onnx", "the seed config on MiniLM-L6") else {
        return;
    };
    if !have_ort("the seed config on MiniLM-L6") {
        return;
    }
    let seed = Seed::new();
    let out = seed.run(&[
        "run",
        "config_bert_sst2.yaml",
        "--model",
        s(&minilm),
        "--out",
        "out.onnx",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(notes(&out).len(), 3);
    let err = text(&out.stderr);
    assert!(
        err.contains("rmt_lowrank.layers 7, 8, 9, 10, 11: the model has 6 encoder layers (0 to 5)"),
        "{err}"
    );
    assert!(!seed.path("out.onnx").exists());
}

#[test]
fn keys_in_neither_layout_and_enabled_methods_it_lacks_are_errors_with_their_line() {
    let seed = Seed::new();
    let cases = [
        (
            "  num_epochs: 3\n",
            "  num_epochs: 3\n  warmup_steps: 100\n",
            &["trainer", "unknown field `warmup_steps`", "line 12"][..],
        ),
        (
            "logging:\n",
            "distill:\n  enable: true\nlogging:\n",
            &["unknown field `distill`", "line 15"],
        ),
        (
            "  magnitude:\n    enable: False\n",
            "  magnitude:\n    enable: False\n    args:\n      amount: 0.3\n",
            &["prune.magnitude.args", "unknown field `amount`", "line 40"],
        ),
        (
            "  magnitude:\n    enable: False\n",
            "  magnitude:\n    enable: True\n",
            &[
                "prune.magnitude (line 37): enabled, but onnx-compress has no unstructured magnitude pruning",
                "prune.attention_heads or prune.mlp_neurons",
            ],
        ),
        (
            "  magnitude:\n    enable: False\n",
            "  magnitude:\n    enable: False\n  tokens:\n    enable: True\n    args:\n      threshold_factor: 0.2\n",
            &["prune.tokens (line 39): enabled, but onnx-compress has no token pruning"],
        ),
        (
            "  model_name: \"textattack/bert-base-uncased-SST-2\"\n",
            "  model_name: \"textattack/bert-base-uncased-SST-2\"\n  should_train: True\n",
            &["model.should_train (line 3): true, but onnx-compress does not train"],
        ),
        (
            "  shuffle: false\n",
            "  shuffle: true\n",
            &["data.shuffle (line 5): true is not supported"],
        ),
    ];
    for (i, (from, to, needles)) in cases.iter().enumerate() {
        let name = seed.edited("config_bert_sst2.yaml", &format!("case{i}.yaml"), from, to);
        let out = seed.run(&["run", &name, "--out", "out.onnx"]);
        assert_clean_error(&name, &out, needles);
        assert!(!seed.path("out.onnx").exists());
    }
}

#[test]
fn named_heads_and_neurons_are_removed() {
    if !have_ort("heads_to_remove / neurons_to_remove") {
        return;
    }
    let seed = Seed::new();
    seed.model("models/textattack--bert-base-uncased-SST-2/model.onnx", false);
    // The sst2 config with config.yaml's forms of head and neuron pruning enabled.
    let name = seed.edited(
        "config_bert_sst2.yaml",
        "named.yaml",
        "  attention_heads:\n    enable: False\n    args:\n      prune_amount: 0.15\n      strategy: \"l1\"\n      seed: 42\n\n  mlp_neurons:\n    enable: False\n    args:\n      prune_amount: 0.10\n",
        "  attention_heads:\n    enable: True\n    args:\n      heads_to_remove: [ 0, 1 ]\n\n  mlp_neurons:\n    enable: True\n    args:\n      layer_idx: 1\n      neurons_to_remove: [ 10, 20, 30 ]\n",
    );
    let name = seed.edited(
        &name,
        "named.yaml",
        "rmt_lowrank:\n  enable: true\n",
        "rmt_lowrank:\n  enable: false\n",
    );
    let out = seed.run(&[&["run", &name, "--json", "--out", "pruned.onnx"][..], &FAST].concat());
    let r = json(&out);
    let passes: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pass"].as_str().unwrap())
        .collect();
    assert_eq!(passes, ["prune.attention_heads", "prune.mlp_neurons"]);
    assert_eq!(
        r["reference_method"], false,
        "named units are not the reference's scored method"
    );
    let o = bin()
        .args(["inspect", "--json", s(&seed.path("pruned.onnx"))])
        .output()
        .unwrap();
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers = i["layers"].as_array().expect("inspect maps the layers");
    assert_eq!(layers.len(), 12);
    for (n, l) in layers.iter().enumerate() {
        assert_eq!(l["heads"], 2, "layer {n}: heads 0 and 1 of 4 removed");
        assert_eq!(l["ffn_width"], if n == 1 { 61 } else { 64 }, "layer {n}");
    }
    let h = i["history"].as_array().unwrap();
    assert_eq!(h[0]["options"]["remove_heads"]["indices"], serde_json::json!([0, 1]));
    assert_eq!(h[1]["options"]["remove_neurons"]["layer"], 1);
    // An index the model does not have names the key and the layer's count.
    let name = seed.edited(
        &name,
        "bad_index.yaml",
        "heads_to_remove: [ 0, 1 ]",
        "heads_to_remove: [ 0, 4 ]",
    );
    let out = seed.run(&["run", &name, "--out", "bad.onnx"]);
    assert!(
        text(&out.stderr).contains("prune.attention_heads.args.heads_to_remove 4: layer 0 has 4 heads (0 to 3)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!seed.path("bad.onnx").exists());
    // Both an amount and a list: refused at parse time, with the line.
    let name = seed.edited(
        &name,
        "both.yaml",
        "      heads_to_remove: [ 0, 4 ]\n",
        "      heads_to_remove: [ 0 ]\n      prune_amount: 0.25\n",
    );
    let out = seed.run(&["run", &name]);
    assert_clean_error(
        "both",
        &out,
        &["prune.attention_heads.args.heads_to_remove (line 26): give either prune_amount or heads_to_remove, not both"],
    );
}
