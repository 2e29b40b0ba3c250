//! The pass executor: every option is checked before any work, calibration is loaded only when
//! a step needs it, the model is checked after every pass (a pass that writes a broken graph
//! fails with its name and the node, and nothing is written), and history records what each
//! step used.

mod common;

use std::path::Path;
use std::sync::Arc;

use onnx_compress::executor::{self, Calibration, Output, Plan, Step};
use onnx_compress::history;
use onnx_compress::onnx::build::node;
use onnx_compress::onnx::{self, ExternalData, ModelProto, SaveOptions};
use onnx_compress::passes::prune::{PruneOptions, Strategy};
use onnx_compress::passes::{Applied, Calibrator, CustomPass, Pass, PassError, PassReport};
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};

use common::bin;

fn save_tiny(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("in.onnx");
    let save = SaveOptions {
        external_data: ExternalData::Never,
        ..Default::default()
    };
    onnx::save(&tiny_bert(&SynthOptions::default()), &p, &save).unwrap();
    p
}

fn output(path: &Path) -> Output {
    Output::new(path.to_path_buf(), ExternalData::Auto)
}

fn l1(heads: f64) -> Pass {
    Pass::Prune(PruneOptions {
        heads,
        strategy: Strategy::L1,
        ..Default::default()
    })
}

/// What a test pass returns: its model, with an empty report.
fn applied(model: ModelProto) -> Applied {
    Applied {
        model,
        report: PassReport::Custom(serde_json::json!({})),
        options: serde_json::json!({}),
        params: None,
    }
}

/// A pass that adds a node reading a value nothing defines: a broken graph.
#[derive(Debug)]
struct Breaks;

impl CustomPass for Breaks {
    fn name(&self) -> &'static str {
        "breaks"
    }
    fn apply(&self, model: &ModelProto, _: Option<&mut dyn Calibrator>) -> Result<Applied, PassError> {
        let mut m = model.clone();
        let g = m.graph.as_mut().unwrap();
        g.node
            .push(node("Relu", "dangling_relu", &["no_such_value"], &["dangling_out"]));
        Ok(applied(m))
    }
}

#[test]
fn a_pass_that_writes_a_broken_graph_fails_with_its_name_and_the_node_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path());
    let out = dir.path().join("out.onnx");
    let plan = Plan {
        steps: vec![
            Step {
                label: "prune".into(),
                pass: l1(0.25),
            },
            Step {
                label: "breaks".into(),
                pass: Pass::Custom(Arc::new(Breaks)),
            },
        ],
        calibration: None,
        labels: None,
    };
    let e = executor::execute(&input, &plan, None, Some(&output(&out)), &|_| {}).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("breaks wrote an invalid model"), "{msg}");
    assert!(msg.contains("dangling_relu") && msg.contains("no_such_value"), "{msg}");
    assert!(!out.exists(), "nothing written");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the input is left: {left:?}");
}

/// A pass that widens the classifier's weight by three columns: a graph every value of which is
/// defined, which ONNX Runtime refuses (the Gemm's shapes no longer agree).
#[derive(Debug)]
struct Misshapes;

impl CustomPass for Misshapes {
    fn name(&self) -> &'static str {
        "misshapes"
    }
    fn apply(&self, model: &ModelProto, _: Option<&mut dyn Calibrator>) -> Result<Applied, PassError> {
        let mut m = model.clone();
        let g = m.graph.as_mut().unwrap();
        let w = g
            .initializer
            .iter_mut()
            .find(|t| t.name() == "classifier.weight")
            .unwrap();
        let (rows, cols) = (w.dims[0] as usize, w.dims[1] as usize + 3);
        *w = onnx::tensor::from_f32("classifier.weight", &[rows, cols], &vec![0.1; rows * cols]);
        Ok(applied(m))
    }
}

#[test]
fn a_pass_that_writes_a_model_onnx_runtime_refuses_is_named_and_nothing_is_written() {
    if !common::have_ort("a pass writing a model ONNX Runtime refuses") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path());
    let out = dir.path().join("out.onnx");
    let plan = Plan {
        steps: vec![Step {
            label: "misshapes".into(),
            pass: Pass::Custom(Arc::new(Misshapes)),
        }],
        calibration: None,
        labels: None,
    };
    let e = executor::execute(&input, &plan, None, Some(&output(&out)), &|_| {}).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("misshapes wrote a model that ONNX Runtime does not run") && msg.contains("classifier"),
        "{msg}"
    );
    assert!(msg.contains("nothing was written"), "{msg}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn every_option_is_checked_before_the_model_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    // The second step is bad: the first must not run, the (absent) input must not be read.
    let plan = Plan {
        steps: vec![
            Step {
                label: "a".into(),
                pass: l1(0.25),
            },
            Step {
                label: "b".into(),
                pass: l1(1.5),
            },
        ],
        calibration: None,
        labels: None,
    };
    let e = plan.validate().unwrap_err();
    assert_eq!(e.step, Some(1));
    assert_eq!(e.error.field, "heads");
    let msg = executor::execute(
        &dir.path().join("absent.onnx"),
        &plan,
        None,
        Some(&output(&out)),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("--heads 1.5"), "{msg}");
    assert!(!out.exists());
    // A step that needs calibration data without any is refused up front too.
    let obs = Plan::single(
        Pass::Prune(PruneOptions {
            heads: 0.25,
            strategy: Strategy::Obs,
            ..Default::default()
        }),
        None,
    );
    let e = obs.validate().unwrap_err();
    assert_eq!((e.step, e.error.field), (Some(0), "calib_data"));
}

#[test]
fn calibration_is_loaded_only_when_a_step_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path());
    let out = dir.path().join("out.onnx");
    // The calibration file does not exist: loading it would fail (and need ONNX Runtime).
    let calibration = Calibration {
        data: dir.path().join("absent-train.tsv"),
        format: None,
        columns: Default::default(),
        task: None,
        samples: 8,
        seed: 0,
        max_length: 128,
        threads: 0,
        tokenizer: None,
        recorded_as: None,
    };
    let plan = Plan::single(l1(0.25), Some(calibration));
    assert!(!plan.needs_calibration());
    let done = executor::execute(&input, &plan, None, Some(&output(&out)), &|_| {}).unwrap();
    assert_eq!(done.calibration_load_seconds, 0.0);
    // A data-free step records no calibration in its history.
    let h = history::history(&onnx::load(&out).unwrap()).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].pass, "prune");
    assert!(h[0].options.get("calib_data").is_none(), "{:?}", h[0].options);
    assert!(h[0].params_before.is_some() && h[0].macs_after.is_some());
}

#[test]
fn steps_are_recorded_in_order_and_the_input_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path());
    let before = std::fs::read(&input).unwrap();
    let out = dir.path().join("out.onnx");
    let plan = Plan {
        steps: vec![
            Step {
                label: "prune.attention_heads".into(),
                pass: l1(0.5),
            },
            Step {
                label: "prune.mlp_neurons".into(),
                // Its own report counts at 32 tokens; the history at 128, as every step's.
                pass: Pass::Prune(PruneOptions {
                    ffn: 0.25,
                    seq_len: 32,
                    ..Default::default()
                }),
            },
        ],
        calibration: None,
        labels: None,
    };
    let done = executor::execute(&input, &plan, None, Some(&output(&out)), &|_| {}).unwrap();
    assert_eq!(done.steps.len(), 2);
    assert_eq!(done.steps[1].label, "prune.mlp_neurons");
    assert!(done.steps[1].encoder_macs_after < done.steps[0].encoder_macs_after);
    let written = onnx::load(&out).unwrap();
    let h = history::history(&written).unwrap();
    assert_eq!(
        h.iter().map(|e| e.pass.as_str()).collect::<Vec<_>>(),
        ["prune", "prune"]
    );
    assert_eq!(h[0].macs_before, executor::encoder_macs(&onnx::load(&input).unwrap()));
    assert_eq!(
        h[1].macs_before, h[0].macs_after,
        "each step's before is the last one's after"
    );
    assert_eq!(h[1].macs_after, executor::encoder_macs(&written));
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // Writing onto the input is refused before any work.
    let e = executor::execute(&input, &plan, None, Some(&output(&input)), &|_| {}).unwrap_err();
    assert!(e.to_string().contains("refusing to write"), "{e}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // So is writing onto any other file the command reads: the tokenizer beside the model, the
    // calibration data, a file the caller names (`run`'s recipe and evaluation data).
    let dir = input.parent().unwrap();
    let tokenizer = dir.join("tokenizer.json");
    let calib = dir.join("train.tsv");
    let recipe = dir.join("recipe.yaml");
    // The tokenizer named after the model, looked for too (it was written over, exit 0).
    let stem = input.with_extension("tokenizer.json");
    let config = dir.join("config.json");
    for f in [&tokenizer, &calib, &recipe, &stem] {
        std::fs::write(f, "keep me").unwrap();
    }
    // (config.json is not there: the output would be read as it.)
    for (target, what) in [
        (&stem, "it is the model's tokenizer"),
        (&config, "it is where the model's config.json is read from"),
    ] {
        let e = executor::execute(&input, &plan, None, Some(&output(target)), &|_| {}).unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
    }
    assert_eq!(std::fs::read_to_string(&stem).unwrap(), "keep me");
    let mut calibrated = plan.clone();
    calibrated.calibration = Some(executor::Calibration {
        data: calib.clone(),
        format: None,
        columns: Default::default(),
        task: None,
        samples: 8,
        seed: 0,
        max_length: 16,
        threads: 1,
        tokenizer: None,
        recorded_as: None,
    });
    let named = Output {
        reads: vec![(recipe.clone(), "the recipe".into())],
        ..output(&recipe)
    };
    for (target, what) in [
        (output(&tokenizer), "it is the model's tokenizer"),
        (output(&calib), "it is the calibration data"),
        (named, "it is the recipe"),
    ] {
        let e = executor::execute(&input, &calibrated, None, Some(&target), &|_| {}).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("refusing to write {}: {what}", target.path.display())),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&target.path).unwrap(), "keep me");
    }
}

#[test]
fn option_errors_render_in_each_front_ends_words() {
    let plan = Plan::single(
        Pass::Lowrank(onnx_compress::passes::lowrank::LowrankOptions {
            k_min: Some(9),
            k_max: Some(3),
            ..Default::default()
        }),
        None,
    );
    let e = plan.validate().unwrap_err();
    let flag = |f: &str| format!("--{}", f.replace('_', "-"));
    assert_eq!(e.error.render(&flag), "--k-min 9 is above --k-max 3");
    let key = |f: &str| onnx_compress::recipe::recipe_key(Some("rmt_lowrank"), f);
    assert_eq!(e.error.render(&key), "rmt_lowrank.k_min 9 is above rmt_lowrank.k_max 3");
}

// ---------------------------------------------------------------------------------------------
// Through the binary: the command line's use of the executor.
// ---------------------------------------------------------------------------------------------

fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn an_evaluation_limit_of_zero_is_refused_before_any_pass_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = save_tiny(dir.path());
    let recipe = |extra: &str| {
        format!(
            "model:\n  model_name: {}\ndata:\n  task: sst2\nprune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: 0.5\n{extra}",
            model.display()
        )
    };
    let cfg = dir.path().join("r.yaml");
    std::fs::write(&cfg, recipe("")).unwrap();
    let out = dir.path().join("out.onnx");
    let cfg_s = cfg.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let e = fails(&["run", cfg_s, "--out", out_s, "--limit", "0"]);
    assert!(e.contains("--limit must be at least 1"), "{e}");
    assert!(!out.exists(), "nothing written");
    let e = fails(&[
        "bench",
        "--task",
        "sst2",
        cfg_s,
        "--limit",
        "0",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(e.contains("--limit must be at least 1"), "{e}");
    // The recipe's own eval.limit: 0 is a recipe error with its line.
    std::fs::write(&cfg, recipe("eval:\n  limit: 0\n")).unwrap();
    let e = fails(&["run", cfg_s, "--out", out_s]);
    assert!(e.contains("r.yaml") && e.contains("eval.limit (line 11)"), "{e}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn recipe_value_errors_name_the_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("r.yaml");
    std::fs::write(
        &cfg,
        "model:\n  model_name: m.onnx\ndata:\n  task: sst2\nrmt_lowrank:\n  enable: true\n  k_min: 9\n  k_max: 3\n",
    )
    .unwrap();
    let e = fails(&["run", cfg.to_str().unwrap()]);
    assert!(
        e.contains("rmt_lowrank (line 5): rmt_lowrank.k_min (line 7) 9 is above rmt_lowrank.k_max (line 8) 3"),
        "{e}"
    );
    assert!(!e.contains("--k-"), "no CLI flag in a recipe error: {e}");
}

/// The shared SST-2 model and training file, with ONNX Runtime installed (else a visible skip,
/// or a failure under CI).
fn sst2_model_and_train(what: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let model = onnx_compress::testkit::shared::require("models/minilm-l6-sst2/model.onnx", what)?;
    let train = onnx_compress::testkit::shared::require("data/glue/sst2/train.tsv", what)?;
    common::have_ort(what).then_some((model, train))
}

#[test]
fn calibrated_prune_records_its_calibration_in_the_history() {
    let Some((model, train)) = sst2_model_and_train("calibrated prune history") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let o = bin()
        .args([
            "prune",
            "--quiet",
            "--heads",
            "0.25",
            "--calib-samples",
            "16",
            "--seed",
            "3",
            "--calib-data",
        ])
        .arg(&train)
        .arg(&model)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No progress; notes still print (16 examples are too few tokens for the heads' refit).
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().all(|l| l.starts_with("note: ")), "--quiet: {err}");
    let h = history::history(&onnx::load(&out).unwrap()).unwrap();
    let opts = &h.last().unwrap().options;
    assert_eq!(opts["calib_data"], serde_json::json!(train.display().to_string()));
    assert_eq!(opts["calib_samples"], serde_json::json!(16));
    assert_eq!(opts["seed"], serde_json::json!(3));
    assert_eq!(opts["calib_max_length"], serde_json::json!(128));
    assert_eq!(opts["strategy"], serde_json::json!("obs"));
}

/// Progress in a pipe: nothing in the first seconds, then lines of `prune: <stage> (<n> s)` on
/// stderr (the calibration runs with their batch counts), at least one every 5 s; the report on
/// stdout as with `--quiet`.
#[test]
fn progress_in_a_pipe_is_timed_lines_on_stderr() {
    let Some((model, train)) = sst2_model_and_train("progress in a pipe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let mut cmd = bin();
    cmd.args(["prune", "--heads", "0.25", "--calib-samples", "32", "--calib-data"])
        .arg(&train)
        .arg(&model)
        .arg(&out);
    let (seconds, stdout, stderr) = assert_progress_in_a_pipe(cmd, "prune: <stage>", &|l| l.starts_with("prune: "));
    assert!(stdout.contains("heads"), "the report stays on stdout");
    if seconds > 10.0 {
        assert!(
            stderr.contains("calibration run"),
            "the calibration runs are shown:\n{stderr}"
        );
    }
}

/// Runs `cmd` with stderr a pipe and checks its progress there: every line is `form (<n> s)`
/// (`is_line` checks the part before the time); none in a run under a second; in a longer one, a
/// line at least every 5 s after the first. Returns the seconds, stdout and stderr.
fn assert_progress_in_a_pipe(
    mut cmd: assert_cmd::Command,
    form: &str,
    is_line: &dyn Fn(&str) -> bool,
) -> (f64, String, String) {
    let t = std::time::Instant::now();
    let o = cmd.output().unwrap();
    let seconds = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    for line in stderr.lines() {
        assert!(
            is_line(line) && line.ends_with(" s)"),
            "a progress line is `{form} (<n> s)`, got {line:?} in\n{stderr}"
        );
    }
    if seconds < 1.0 {
        assert!(stderr.is_empty(), "a run under a second prints no progress:\n{stderr}");
    }
    if seconds > 10.0 {
        assert!(
            stderr.lines().count() as f64 >= (seconds / 5.0).floor() - 1.0,
            "{seconds:.0} s with only these progress lines:\n{stderr}"
        );
    }
    (seconds, String::from_utf8_lossy(&o.stdout).into_owned(), stderr)
}

/// Progress on a terminal (a pseudo-terminal from util-linux `script`): a spinner that is
/// cleared at the end, so the terminal keeps only the report.
#[test]
fn progress_on_a_terminal_is_a_spinner_that_clears() {
    let Some((model, train)) = sst2_model_and_train("progress on a terminal") else {
        return;
    };
    if !common::have_tool("script", "util-linux `script`: progress on a terminal") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let exe = assert_cmd::cargo::cargo_bin("onnx-compress");
    let cmd = format!(
        "{} prune --heads 0.25 --calib-samples 16 --calib-data {} {} {}",
        exe.display(),
        train.display(),
        model.display(),
        out.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("heads"), "the report reaches the terminal:\n{all}");
    // The spinner redraws its line in place (carriage returns / erase-line) and names the pass.
    assert!(all.contains("prune: "), "the spinner names the pass:\n{all}");
    assert!(
        all.contains('\r') || all.contains("\u{1b}["),
        "the spinner redraws in place:\n{all}"
    );
}

/// `eval` in a pipe: the same rules, counted in batches (`eval SST-2: 12/28 batches (4 s)`), and
/// the report on stdout.
#[test]
fn eval_progress_in_a_pipe_counts_batches() {
    let Some((model, _)) = sst2_model_and_train("eval progress in a pipe") else {
        return;
    };
    let mut cmd = bin();
    cmd.args(["eval", "--task", "sst2", "--model"]).arg(&model);
    let (_, stdout, _) = assert_progress_in_a_pipe(cmd, "eval SST-2: <done>/<total> batches", &|l| {
        l.starts_with("eval SST-2: ") && l.contains(" batches (")
    });
    assert!(stdout.contains("accuracy 0.9094"), "the report stays on stdout");
}
