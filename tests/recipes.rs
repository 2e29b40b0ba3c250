//! Recipes (`run`) and benchmarks (`bench`): every shipped config parses and round-trips, bad
//! configs get one clear error naming the key (and line) with no output, `run` chains passes and
//! records them in the model's history, and `bench` writes its table and charts.
//!
//! Tests that run models need `../shared` and ONNX Runtime: they skip with a visible `SKIP:`
//! line when either is missing (and fail under `CI=true`).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use onnx_compress::passes::quantize::{Mode, StaticForm};
use onnx_compress::recipe::{self, LoadedRecipe};
use onnx_compress::testkit::shared::{require, require_ort};
use serde_json::Value;

fn bin() -> Command {
    Command::cargo_bin("onnx-compress").expect("the onnx-compress binary is built")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_configs() -> Vec<PathBuf> {
    recipe::expand(&[
        root().join("configs/sst2"),
        root().join("configs/mrpc"),
        root().join("configs/qqp"),
    ])
    .unwrap()
}

/// Runs the binary, expecting failure with exactly one `error:` line on stderr; returns it.
fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

#[test]
fn every_shipped_config_parses_and_round_trips() {
    let files = shipped_configs();
    // One recipe per reference row for each task, plus this project's own.
    for task in ["sst2", "mrpc", "qqp"] {
        for row in [
            "01_baseline",
            "02_quantized",
            "03_pruned_heads_25",
            "04_pruned_mlp_15",
            "05_pruned_heads15_mlp10",
            "06_rmt_lowrank",
        ] {
            let p = root().join(format!("configs/{task}/{row}.yaml"));
            assert!(files.contains(&p), "missing {}", p.display());
        }
    }
    for f in &files {
        let r = recipe::load(f).unwrap_or_else(|e| panic!("{e}"));
        let back = recipe::parse(&recipe::to_yaml(&r.recipe), f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.recipe, r.recipe, "{}", f.display());
        let dir = f.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert_eq!(
            r.task().map(|t| t.name()),
            Some(dir),
            "{}: task matches its folder",
            f.display()
        );
        assert_eq!(r.split(), "dev");
    }
}

#[test]
fn reference_configs_say_what_the_reference_rows_did() {
    let load = |name: &str| recipe::load(&root().join("configs/mrpc").join(name)).unwrap();
    let base = load("01_baseline.yaml");
    assert!(base.is_baseline() && !base.is_reference_method());
    assert_eq!(base.recipe.data.batch_size, Some(24));
    let heads = load("03_pruned_heads_25.yaml");
    let h = heads.recipe.prune.attention_heads.as_ref().unwrap();
    assert!(h.enable && h.args.prune_amount == Some(0.25) && h.args.strategy == "l1");
    assert!(!heads.recipe.prune.mlp_neurons.as_ref().unwrap().enable);
    assert!(heads.is_reference_method());
    let both = load("05_pruned_heads15_mlp10.yaml");
    assert_eq!(
        both.recipe.prune.attention_heads.as_ref().unwrap().args.prune_amount,
        Some(0.15)
    );
    assert_eq!(
        both.recipe.prune.mlp_neurons.as_ref().unwrap().args.prune_amount,
        Some(0.10)
    );
    let q = load("02_quantized.yaml");
    assert!(q.recipe.quantization.enable && q.is_reference_method());
    let lr = load("06_rmt_lowrank.yaml");
    let l = &lr.recipe.rmt_lowrank;
    assert!(l.enable && l.denoise && l.energy == Some(0.995) && l.layers == Some(vec![4, 5]) && l.k_min == Some(192));
    let ours = load("10_obs_macs60.yaml");
    assert!(!ours.is_reference_method() && !ours.is_baseline());
    assert_eq!(ours.recipe.prune.target_macs, Some(0.6));
    // Static INT8 in both graph forms: the same options but for the form.
    let qdq = onnx_compress::recipe::quantize_options(&load("13_quant_static.yaml").recipe.quantization).unwrap();
    let ort = onnx_compress::recipe::quantize_options(&load("15_quant_static_ort.yaml").recipe.quantization).unwrap();
    assert_eq!((qdq.mode, ort.mode), (Mode::Static, Mode::Static));
    assert_eq!((qdq.static_form, ort.static_form), (StaticForm::Qdq, StaticForm::Ort));
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_configs_name_the_key_and_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let head = "model:\n  model_name: m.onnx\ndata:\n  task: sst2\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown pass",
            format!("{head}distill:\n  enable: true\n"),
            &["unknown field `distill`", "line 5"],
        ),
        (
            "unknown key inside a pass",
            format!("{head}prune:\n  attention_heads:\n    enable: true\n    args:\n      amount: 0.2\n"),
            &["prune.attention_heads.args", "unknown field `amount`", "line 9"],
        ),
        (
            "amount as a string",
            format!("{head}prune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: \"0.25\"\n"),
            &["prune.attention_heads.args.prune_amount", "invalid type: string", "line 9"],
        ),
        (
            "amount out of range",
            format!("{head}prune:\n  mlp_neurons:\n    enable: true\n    args:\n      prune_amount: 1.5\n"),
            &["prune.mlp_neurons.args.prune_amount (line 9)", "outside [0, 1)"],
        ),
        (
            "unknown strategy",
            format!("{head}prune:\n  mlp_neurons:\n    enable: true\n    args:\n      prune_amount: 0.1\n      strategy: magnitude\n"),
            &["strategy (line 10)", "unknown strategy 'magnitude'"],
        ),
        (
            "obs without calibration",
            format!("{head}prune:\n  mlp_neurons:\n    enable: true\n    args:\n      prune_amount: 0.1\n      strategy: obs\n"),
            &["calibration"],
        ),
        ("missing model section", "data:\n  task: sst2\n".into(), &["missing field `model`"]),
        ("unknown task", "model:\n  model_name: m.onnx\ndata:\n  task: sts3\n".into(), &["data.task (line 4)"]),
        (
            "unknown quantization method",
            format!("{head}quantization:\n  enable: true\n  method: int3\n"),
            &["quantization.method (line 7)", "unknown method 'int3'"],
        ),
        (
            "unknown weight type",
            format!("{head}quantization:\n  enable: true\n  method: dynamic\n  weight_type: u4\n"),
            &["quantization.weight_type", "unknown type 'u4'", "s8, u8"],
        ),
        (
            "unknown fp16 float32 set",
            format!("{head}quantization:\n  enable: true\n  method: fp16\n  fp16_float32: all\n"),
            &["quantization.fp16_float32", "unknown value 'all'", "norms, outputs"],
        ),
        (
            "an int8 key on fp16",
            format!("{head}quantization:\n  enable: true\n  method: fp16\n  weight_type: u8\n"),
            &["quantization (line 5)", "quantization.weight_type", "the int8 methods, not 'fp16'"],
        ),
        (
            "a static key on dynamic",
            format!("{head}quantization:\n  enable: true\n  method: dynamic\n  calib_method: entropy\n"),
            &["quantization (line 5)", "quantization.calib_method", "the static methods, not 'dynamic'"],
        ),
        (
            "fp16 float32 set on an int8 method",
            format!("{head}quantization:\n  enable: true\n  method: dynamic\n  fp16_float32: outputs\n"),
            &["quantization.fp16_float32", "method fp16"],
        ),
        (
            "attention_op off where no Attention op is written (static QDQ)",
            format!(
                "{head}calibration:\n  data: t.tsv\nquantization:\n  enable: true\n  method: static\n  attention_op: false\n"
            ),
            &["quantization.attention_op", "no Attention op would be written"],
        ),
        (
            "attention_op off on fp16",
            format!("{head}quantization:\n  enable: true\n  method: fp16\n  attention_op: false\n"),
            &["quantization.attention_op", "no Attention op would be written"],
        ),
        (
            "attention_op off without the first-token split",
            format!(
                "{head}quantization:\n  enable: true\n  method: dynamic_per_channel\n  split_first_token: false\n  attention_op: false\n"
            ),
            &["quantization.attention_op", "no Attention op would be written"],
        ),
        (
            "unpad without the first-token split (the reference's dynamic method)",
            format!("{head}quantization:\n  enable: true\n  method: dynamic\n  per_channel: true\n  unpad: true\n"),
            &["quantization.unpad", "set quantization.split_first_token"],
        ),
        (
            "u8 weights with s8 static activations",
            format!(
                "{head}calibration:\n  data: t.tsv\nquantization:\n  enable: true\n  method: static\n  weight_type: u8\n  activation_type: s8\n"
            ),
            &["quantization.weight_type", "u8 activations"],
        ),
        (
            "FFN share without a MAC budget",
            format!("{head}prune:\n  max_ffn_fraction: 0.98\n"),
            &["prune.max_ffn_fraction (line 6)", "prune.target_macs"],
        ),
        (
            "FFN rounding without FFN counts",
            format!("{head}prune:\n  ffn_multiple_of: 8\n"),
            &["prune.ffn_multiple_of (line 6)", "prune.target_macs"],
        ),
        (
            "FFN rounding of zero",
            format!("{head}calibration:\n  data: t.tsv\nprune:\n  target_macs: 0.5\n  ffn_multiple_of: 0\n"),
            &["prune.ffn_multiple_of", "at least 1"],
        ),
        (
            "FFN share out of range",
            format!("{head}calibration:\n  data: t.tsv\nprune:\n  target_macs: 0.5\n  max_ffn_fraction: 1.0\n"),
            &["prune.max_ffn_fraction (line 9)", "outside (0, 1)"],
        ),
        ("shuffle", format!("{head}  shuffle: true\n"), &["data.shuffle (line 5)"]),
        (
            "unknown low-rank set",
            format!("{head}rmt_lowrank:\n  enable: true\n  apply_to: everything\n"),
            &["rmt_lowrank (line 5)", "rmt_lowrank.apply_to: unknown set 'everything'"],
        ),
        (
            "energy out of range",
            format!("{head}rmt_lowrank:\n  enable: true\n  energy: 1.5\n"),
            &["rmt_lowrank (line 5)", "energy"],
        ),
        (
            "percentile out of range",
            format!(
                "{head}calibration:\n  data: t.tsv\nquantization:\n  enable: true\n  method: static\n  calib_method: percentile\n  percentile: 0\n"
            ),
            &["quantization (line 7)", "percentile", "(0, 100]"],
        ),
        (
            "percentile without the percentile method",
            format!(
                "{head}calibration:\n  data: t.tsv\nquantization:\n  enable: true\n  method: static\n  percentile: 99.9\n"
            ),
            &["quantization (line 7)", "quantization.percentile needs quantization.calib_method: percentile"],
        ),
        (
            "a low-rank rule's value under another rule",
            format!("{head}rmt_lowrank:\n  enable: true\n  ratio: 0.25\n"),
            &[
                "rmt_lowrank (line 5)",
                "rmt_lowrank.ratio applies to k_mode: ratio, and k_mode is energy (the default)",
            ],
        ),
        (
            "energy under a fixed rank",
            format!("{head}rmt_lowrank:\n  enable: true\n  k_mode: fixed\n  k: 8\n  energy: 0.9\n"),
            &["rmt_lowrank.energy applies to k_mode: energy, and k_mode is fixed:"],
        ),
        (
            "a shrinkage rule without denoise",
            format!("{head}rmt_lowrank:\n  enable: true\n  shrink_method: hard_threshold\n"),
            &["rmt_lowrank.shrink_method is the rule of denoise"],
        ),
        (
            "low rank and pruning in one recipe",
            format!(
                "{head}rmt_lowrank:\n  enable: true\nprune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: 0.25\n"
            ),
            &["rmt_lowrank (line 5)", "enabled with prune", "enable one of them"],
        ),
        (
            "an enabled unit removing nothing",
            format!("{head}prune:\n  mlp_neurons:\n    enable: true\n    args:\n      prune_amount: 0.0\n"),
            &["prune.mlp_neurons.args.prune_amount", "nothing to remove"],
        ),
        (
            "per_layer on l1 pruning",
            format!(
                "{head}prune:\n  per_layer: true\n  mlp_neurons:\n    enable: true\n    args:\n      prune_amount: 0.1\n"
            ),
            &["prune.per_layer (line 6)", "applies to calibrated pruning"],
        ),
        (
            "a MAC budget keeping every MAC",
            format!("{head}calibration:\n  data: t.tsv\nprune:\n  target_macs: 1.0\n"),
            &["prune.target_macs (line 8)", "outside (0, 1) (1 keeps them all"],
        ),
        ("not yaml", "model: [unclosed\n".into(), &["line 1"]),
    ];
    for (what, text, expect) in cases {
        let cfg = write_config(dir.path(), "bad.yaml", text);
        let err = fails(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(err.contains("bad.yaml"), "{what}: names the file: {err}");
        for e in *expect {
            assert!(err.contains(e), "{what}: expected {e:?} in: {err}");
        }
        assert!(!out.exists(), "{what}: no output");
    }
    // A model that is not there: named by key, no output written.
    let cfg = write_config(
        dir.path(),
        "nomodel.yaml",
        "model:\n  model_name: absent/model.onnx\ndata:\n  task: sst2\n",
    );
    let err = fails(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(
        err.contains("model.model_name") && err.contains("absent/model.onnx"),
        "{err}"
    );
    assert!(!out.exists());
    // A folder given to run: bench runs folders.
    let err = fails(&["run", dir.path().to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(
        err.contains("a folder, not a recipe") && err.contains("bench FOLDER"),
        "{err}"
    );
    // Data and calibration files that are not there: named by their keys and lines (they were
    // named by the command-line flag, --calib-data, or not at all).
    std::fs::write(dir.path().join("m.onnx"), b"not read").unwrap();
    for (body, want) in [
        (
            "model:\n  model_name: m.onnx\ndata:\n  file: absent.csv\n",
            "data.file (line 4): ",
        ),
        (
            "model:\n  model_name: m.onnx\ndata:\n  task: sst2\ncalibration:\n  data: absent.tsv\nquantization:\n  enable: true\n  method: static\n",
            "calibration.data (line 6): ",
        ),
    ] {
        let cfg = write_config(dir.path(), "nodata.yaml", body);
        let err = fails(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(
            err.contains("nodata.yaml") && err.contains(want) && err.contains("absent.") && err.contains("no such file"),
            "{err}"
        );
        assert!(!err.contains("--calib-data"), "{err}");
        assert!(!out.exists());
    }
    // bench refuses a recipe of another task given by name, and an empty selection.
    let cfg = write_config(
        dir.path(),
        "mrpc.yaml",
        "model:\n  model_name: m.onnx\ndata:\n  task: mrpc\n",
    );
    let err = fails(&["bench", "--task", "sst2", cfg.to_str().unwrap()]);
    assert!(err.contains("mrpc.yaml") && err.contains("not --task sst2"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&["bench", "--task", "sst2", empty.path().to_str().unwrap()]);
    assert!(err.contains("no .yaml recipe"), "{err}");
}

/// Two variants on the real SST-2 model, first `limit` examples, short timing.
fn two_variants(dir: &Path) -> Option<Vec<PathBuf>> {
    let model = require("models/minilm-l6-sst2/model.onnx", "run/bench on the SST-2 model")?;
    let data = require("data/glue", "run/bench on SST-2 dev")?;
    if !require_ort("run/bench") {
        return None;
    }
    let head = format!(
        "model:\n  model_name: {}\ndata:\n  task: sst2\n  dir: {}\neval:\n  warmup: 1\n  measure: 2\n",
        model.display(),
        data.display()
    );
    Some(vec![
        write_config(dir, "a_base.yaml", &format!("name: Base\n{head}")),
        write_config(
            dir,
            "b_pruned.yaml",
            &format!(
                "name: Pruned\n{head}prune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: 0.25\n  mlp_neurons:\n    enable: true\n    args:\n      prune_amount: 0.1\n"
            ),
        ),
    ])
}

#[test]
fn run_chains_passes_keeps_the_model_and_records_history() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cfgs) = two_variants(dir.path()) else { return };
    let out = dir.path().join("pruned.onnx");
    let o = bin()
        .args([
            "run",
            cfgs[1].to_str().unwrap(),
            "--limit",
            "96",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let passes: Vec<&str> = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pass"].as_str().unwrap())
        .collect();
    assert_eq!(
        passes,
        ["prune.attention_heads", "prune.mlp_neurons"],
        "reference order: heads, then FFN"
    );
    assert_eq!(rep["eval"]["examples"], 96);
    assert!(rep["reference_method"].as_bool().unwrap());
    // The time line's parts (passes, calibration data, eval, other) add up to the wall time.
    let secs = |v: &Value| v.as_f64().unwrap();
    let parts = secs(&rep["pass_seconds"])
        + secs(&rep["calibration_load_seconds"])
        + secs(&rep["eval"]["wall_seconds"])
        + secs(&rep["overhead_seconds"]);
    assert!(
        (parts - secs(&rep["wall_seconds"])).abs() < 1e-6,
        "{parts} vs {}",
        rep["wall_seconds"]
    );
    // The same pruning through the prune command gives the same accuracy on the same examples.
    let direct = dir.path().join("direct.onnx");
    let model = require("models/minilm-l6-sst2/model.onnx", "").unwrap();
    bin()
        .args([
            "prune",
            "--heads",
            "0.25",
            "--ffn",
            "0.1",
            model.to_str().unwrap(),
            direct.to_str().unwrap(),
        ])
        .assert()
        .success();
    let ev = bin()
        .args([
            "eval",
            "--task",
            "sst2",
            "--limit",
            "96",
            "--json",
            "--model",
            direct.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let ev: Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["predictions"], rep["eval"]["predictions"]);
    // History: both steps recorded, shown by inspect.
    let o = bin()
        .args(["inspect", "--json", out.to_str().unwrap()])
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let h = s["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["options"]["heads"], 0.25);
    assert_eq!(h[1]["options"]["ffn"], 0.1);
    assert!(h[1]["params_after"].as_u64() < h[0]["params_after"].as_u64());
    let text = bin().args(["inspect", out.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("1. prune") && text.contains("2. prune") && text.contains("MACs@128 1.43 G →"),
        "{text}"
    );
}

#[test]
fn bench_writes_table_csv_json_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_) = two_variants(dir.path()) else { return };
    let out = dir.path().join("out");
    let o = bin()
        .args([
            "bench",
            "--task",
            "sst2",
            "--limit",
            "160",
            "--out",
            out.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| Base (baseline) |") && md.contains("| Pruned (reference method) |"),
        "{md}"
    );
    assert!(md.contains("Throughput (samples/s)") && md.contains("Size (MiB)"));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("task,variant,baseline,"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["accuracy_drop_points"], 0.0);
    assert!(rows[1]["params"].as_u64() < rows[0]["params"].as_u64());
    assert!(rows[1]["encoder_macs"].as_u64() < rows[0]["encoder_macs"].as_u64());
    assert!(rows
        .iter()
        .all(|r| r["samples_per_s"].as_f64().unwrap() > 0.0 && r["examples"] == 160));
    // The baseline is timed twice (first and last); speed-ups divide by the mean of the two.
    let base: Vec<f64> = json["baseline_samples_per_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(base.len(), 2, "{base:?}");
    let mean = (base[0] + base[1]) / 2.0;
    for r in rows {
        let want = r["samples_per_s"].as_f64().unwrap() / mean;
        assert!((r["speedup"].as_f64().unwrap() - want).abs() < 1e-9 * want, "{r}");
    }
    assert!(
        md.contains("Speed-ups divide by the baseline's mean throughput over two runs"),
        "{md}"
    );
    for f in [
        "pareto_throughput.svg",
        "pareto_throughput.png",
        "pareto_size.svg",
        "pareto_size.png",
    ] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert!(bytes.len() > 1000, "{f}");
    }
    let svg = std::fs::read_to_string(out.join("pareto_size.svg")).unwrap();
    assert!(svg.contains("Base") && svg.contains("Pruned"));
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn recipe_paths_resolve_against_the_config_folder() {
    let r = recipe::parse(
        "model:\n  model_name: ../m/model.onnx\ndata:\n  task: mrpc\n",
        Path::new("/x/configs/r.yaml"),
    )
    .unwrap();
    let r: LoadedRecipe = r;
    assert_eq!(
        r.resolve(&r.recipe.model.model_name),
        Path::new("/x/configs/../m/model.onnx")
    );
    assert_eq!(r.resolve(Path::new("/abs/m.onnx")), Path::new("/abs/m.onnx"));
}

#[test]
fn inspect_shows_the_history_of_a_chained_model_it_can_no_longer_map() {
    use onnx_compress::onnx::{self, SaveOptions};
    use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m.onnx");
    onnx::save(&tiny_bert(&SynthOptions::default()), &base, &SaveOptions::default()).unwrap();
    let pruned = dir.path().join("m.pruned.onnx");
    let quant = dir.path().join("m.pruned.int8.onnx");
    let p = |a: &Path| a.to_str().unwrap().to_string();
    bin()
        .args(["prune", "--ffn", "0.25", &p(&base), &p(&pruned)])
        .assert()
        .success();
    bin()
        .args(["quantize", "--mode", "dynamic", &p(&pruned), &p(&quant)])
        .assert()
        .success();
    let o = bin().args(["inspect", &p(&quant)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("transformer  not mapped: quantized already (node '"),
        "{text}"
    );
    assert!(text.contains("1. prune") && text.contains("2. quantize"), "{text}");
    let o = bin().args(["inspect", "--json", &p(&quant)]).output().unwrap();
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["history"].as_array().unwrap().len(), 2);
    assert!(s["unmapped"].is_string() && s.get("structure").is_none());
    // A model this tool never wrote that does not map is still an error (see cli.rs).
}

/// `run --out` onto the file the recipe evaluates on is refused when that file is a GLUE
/// folder's split (data.dir, or --data), as when it is a data.file: it wrote the model over it.
#[test]
fn run_refuses_to_write_over_a_glue_folders_dev_file() {
    let Some(model) = require("models/minilm-l6-sst2/model.onnx", "run --out onto dev.tsv") else {
        return;
    };
    if !require_ort("run --out onto dev.tsv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let glue = dir.path().join("glue");
    std::fs::create_dir_all(glue.join("sst2")).unwrap();
    let dev = glue.join("sst2").join("dev.tsv");
    std::fs::write(&dev, "sentence\tlabel\ngood film \t1\nbad film \t0\n").unwrap();
    let before = std::fs::read(&dev).unwrap();
    let body = |data_dir: &str| {
        format!(
            "model:\n  model_name: {}\ndata:\n  task: sst2\n{data_dir}prune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: 0.25\n",
            model.display()
        )
    };
    // The folder in the recipe (data.dir), and given by --data.
    let in_recipe = write_config(dir.path(), "dir.yaml", &body(&format!("  dir: {}\n", glue.display())));
    let flagged = write_config(dir.path(), "flag.yaml", &body(""));
    for args in [
        vec!["run", in_recipe.to_str().unwrap(), "--out", dev.to_str().unwrap()],
        vec![
            "run",
            flagged.to_str().unwrap(),
            "--data",
            glue.to_str().unwrap(),
            "--out",
            dev.to_str().unwrap(),
        ],
    ] {
        let err = fails(&args);
        assert!(
            err.contains("refusing to write") && err.contains("the evaluation data"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read(&dev).unwrap(), before, "{args:?}: dev.tsv changed");
    }
}

/// A device or a pipe as the recipe or the tokenizer is refused at once: a pipe was waited on,
/// `/dev/zero` read until memory ran out.
#[cfg(unix)]
#[test]
fn a_device_as_recipe_or_tokenizer_is_refused() {
    let err = fails(&["run", "/dev/zero"]);
    assert!(
        err.contains("/dev/zero") && err.contains("not a file (a device"),
        "{err}"
    );
    let err = fails(&["bench", "--task", "sst2", "/dev/zero"]);
    assert!(err.contains("/dev/zero"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    onnx_compress::onnx::save(
        &onnx_compress::testkit::synth::tiny_bert(&Default::default()),
        &model,
        &Default::default(),
    )
    .unwrap();
    let err = fails(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "sst2",
        "--max-length",
        "64",
        "--tokenizer",
        "/dev/zero",
    ]);
    assert!(
        err.contains("--tokenizer /dev/zero") && err.contains("not a file (a device"),
        "{err}"
    );
}

/// bench's result files may not land on a file its recipes read: a recipe's data.file named
/// results.csv in the --out folder was written over by the table (exit 0). Refused before any
/// run, as is a folder where a result file goes.
#[test]
fn bench_refuses_result_files_over_what_its_recipes_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"not read").unwrap();
    std::fs::write(dir.path().join("results.csv"), "text,label\ngood,1\n").unwrap();
    let r = write_config(
        dir.path(),
        "r.yaml",
        "model:\n  model_name: m.onnx\ndata:\n  file: results.csv\n",
    );
    let err = fails(&["bench", r.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert!(
        err.contains("--out") && err.contains("refusing to write") && err.contains("data.file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("results.csv")).unwrap(),
        "text,label\ngood,1\n"
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("results.md")).unwrap();
    let err = fails(&["bench", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(err.contains("results.md is a folder"), "{err}");
}

/// A pipe named config.json beside a recipe's model is not read while the model is looked up
/// (reading it waited for ever): run ends, here on the model's missing tokenizer.
#[cfg(unix)]
#[test]
fn a_pipe_beside_a_recipes_model_is_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    onnx_compress::onnx::save(
        &onnx_compress::testkit::synth::tiny_bert(&Default::default()),
        &dir.path().join("m.onnx"),
        &Default::default(),
    )
    .unwrap();
    let config = dir.path().join("config.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap()
        .success());
    let recipe = write_config(
        dir.path(),
        "r.yaml",
        "name: r\nmodel:\n  model_name: m.onnx\ndata:\n  task: sst2\n",
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-compress"))
        .args(["run", recipe.to_str().unwrap(), "--limit", "2", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() > 60 {
            let _ = child.kill();
            panic!("run waited on the pipe {} for a minute", config.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!child.wait().unwrap().success());
}

/// A recipe's class names are data.labels in every message about them, not the command line's
/// --labels (the messages came from eval's and the label reader's, written for the flag).
#[test]
fn a_recipes_class_names_are_named_as_its_key() {
    if !require_ort("recipe label messages") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    onnx_compress::onnx::save(
        &onnx_compress::testkit::synth::tiny_bert(&Default::default()),
        &dir.path().join("m.onnx"),
        &Default::default(),
    )
    .unwrap();
    std::fs::write(dir.path().join("d.csv"), "text,label\nw5 w6,a\nw7,b\n").unwrap();
    let run = |name: &str, data: &str| {
        let recipe = write_config(
            dir.path(),
            name,
            &format!("name: r\nmodel:\n  model_name: m.onnx\ndata:\n{data}"),
        );
        fails(&["run", recipe.to_str().unwrap(), "-q"])
    };
    for (name, data, needles) in [
        (
            "one.yaml",
            "  file: d.csv\n  labels: a\n",
            &["data.labels", "give at least two non-empty names"][..],
        ),
        (
            "three.yaml",
            "  file: d.csv\n  labels: a,b,c\n",
            &["from data.labels", "set data.labels to the model's 2 class names"][..],
        ),
        (
            "task.yaml",
            "  task: sst2\n  labels: a,b,c\n",
            &["data.labels names 3 classes", "correct data.labels"][..],
        ),
        (
            "stsb.yaml",
            "  task: stsb\n  file: d.csv\n  labels: a,b\n",
            &["data.labels a,b names classes", "leave out data.labels"][..],
        ),
    ] {
        let err = run(name, data);
        assert!(
            needles.iter().all(|n| err.contains(n)) && !err.contains("--labels"),
            "{name}: {err}"
        );
    }
}
