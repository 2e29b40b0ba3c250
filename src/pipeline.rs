//! Carries out a [`LoadedRecipe`]: its plan (low-rank, heads, FFN, quantization) through the
//! [`executor`], the result written (to `--out`, or a temporary file), evaluated, and returned as
//! one results row.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::eval::{self, EvalOptions, EvalReport};
use crate::executor::{self, Output, StepOutcome};
use crate::glue::Task;
use crate::onnx::{self, ExternalData};
use crate::passes::PassReport;
use crate::recipe::LoadedRecipe;
use crate::report;
use crate::runtime::{Device, SessionOptions};

pub use crate::executor::{weight_elements, MAC_SEQ_LEN};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep the compressed model here (written atomically); default: a temporary file.
    pub out: Option<PathBuf>,
    /// Evaluate only the first N examples (overrides the recipe's `eval.limit`).
    pub limit: Option<usize>,
    /// GLUE folder when the recipe has no `data.dir`.
    pub data_dir: PathBuf,
    /// Untimed batches before timing (overrides the recipe's `eval.warmup`).
    pub warmup: Option<usize>,
    /// Batches timed after the warm-up (overrides the recipe's `eval.measure`).
    pub measure: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub pass: String,
    pub seconds: f64,
    /// One line: what the pass did.
    pub summary: String,
    pub params_after: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_macs_after: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub name: String,
    pub config: PathBuf,
    /// The model file the run read (`--model`, `model_name`, or the export `model_name` names).
    pub model: PathBuf,
    /// How `model` was found: `--model`, `model_name` (a path), or `models/ lookup of '<id>'`.
    pub model_source: String,
    /// The GLUE task (`None`: the recipe's own `data.file`).
    pub task: Option<Task>,
    /// No pass applied.
    pub baseline: bool,
    /// Only the reference experiment's own methods applied.
    pub reference_method: bool,
    pub steps: Vec<StepReport>,
    /// Elements of all weight initializers (float, float16, int8, uint8), quantization scales included.
    pub params: usize,
    /// Encoder MACs per sequence of [`MAC_SEQ_LEN`] tokens (quantization does not change them).
    pub encoder_macs: Option<u64>,
    pub output: Option<PathBuf>,
    /// The evaluation; its `model` is the file evaluated: `--out`, the input when no pass ran,
    /// else the compressed model in a temporary folder (gone when the run ends).
    pub eval: EvalReport,
    /// Seconds in passes (calibration runs included).
    pub pass_seconds: f64,
    /// Seconds loading calibration data.
    pub calibration_load_seconds: f64,
    pub wall_seconds: f64,
    /// Wall time beyond passes, calibration loading and evaluation: reading, writing, bookkeeping.
    pub overhead_seconds: f64,
    /// The passes' notes ([`executor::Outcome::notes`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A step's one-line summary in results rows.
fn step_report(s: &StepOutcome) -> StepReport {
    StepReport {
        pass: s.label.clone(),
        seconds: s.seconds,
        summary: match &s.report {
            PassReport::Prune(r) => report::prune_summary(r),
            PassReport::Lowrank(r) => report::lowrank_summary(r),
            PassReport::Quantize(r) => report::quantize_summary(r),
            PassReport::Convert => "re-encoded".into(),
            PassReport::Custom(v) => v.to_string(),
        },
        params_after: s.params_after,
        encoder_macs_after: s.encoder_macs_after,
    }
}

/// Runs the recipe: passes, save, evaluation. `runtime::init` must have been called.
/// `stage` hears a line before each stage; `progress` is the evaluation's progress callback.
pub fn run(r: &LoadedRecipe, opts: &RunOptions, stage: &dyn Fn(&str), progress: eval::Progress) -> Result<RunReport> {
    let wall = Instant::now();
    let rec = &r.recipe;
    let task = r.task();
    // Every option, of every step and of the evaluation, before any work.
    let plan = r
        .plan()
        .map_err(anyhow::Error::msg)
        .with_context(|| r.path.display().to_string())?;
    plan.validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", r.path.display(), e.error))?;
    r.check_files()
        .map_err(|e| anyhow::anyhow!("{}: {e}", r.path.display()))?;
    let limit = opts.limit.or(rec.eval.limit);
    if limit == Some(0) {
        bail!("{}: the evaluation limit must be at least 1", r.path.display());
    }
    let resolved = r.model().map_err(|e| anyhow::anyhow!("{}: {e}", r.path.display()))?;
    let model_path = resolved.path;
    let eval_opts = EvalOptions {
        task,
        data: match r.data_file() {
            Some(source) => eval::EvalData::File(source),
            None => eval::EvalData::Glue {
                dir: rec
                    .data
                    .dir
                    .as_ref()
                    .map(|d| r.resolve(d))
                    .unwrap_or_else(|| opts.data_dir.clone()),
                split: r.split(),
            },
        },
        labels: rec.data.labels.clone(),
        batch_size: rec.data.batch_size.unwrap_or(Task::batch_size_of(task)),
        max_length: rec.data.max_input_length,
        warmup: opts.warmup.unwrap_or(rec.eval.warmup),
        measure: opts.measure.unwrap_or(rec.eval.measure),
        limit,
        bucket: false,
        tokenizer: None,
        session: SessionOptions {
            device: if rec.device.cuda { Device::Cuda } else { Device::Cpu },
            threads: rec.eval.threads,
            ..Default::default()
        },
        words: eval::Words::Recipe,
    };
    // The device and what the evaluation reads (its data and labels, the tokenizer, the input
    // length), checked on the input model before any pass runs: a bad label, a missing tokenizer
    // or a device this build lacks surfaced only after the passes, with the model written
    // already (or naming a temporary copy).
    crate::runtime::check_device(&eval_opts.session).with_context(|| r.path.display().to_string())?;
    stage("reading the evaluation data");
    let prepared = {
        let input = onnx::load(&model_path)?;
        eval::prepare(&model_path, &input, &eval_opts).with_context(|| r.path.display().to_string())?
    };
    // Write the model: to --out, else (unless nothing changes) to a temporary folder.
    // Removed on Ctrl-C too (a model's size in the temporary folder).
    let (tmp, _registered) = match (&opts.out, plan.steps.is_empty()) {
        (None, false) => {
            let (dir, registered) = crate::interrupt::Temp::create(tempfile::tempdir, |d| d.path())
                .context("creating a temporary folder for the compressed model")?;
            (Some(dir), Some(registered))
        }
        _ => (None, None),
    };
    let target = match (&opts.out, &tmp) {
        (Some(out), _) => Some(out.clone()),
        (None, Some(dir)) => Some(
            dir.path().join(
                model_path
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| "model.onnx".into()),
            ),
        ),
        (None, None) => None,
    };
    // Neither the recipe nor the file it evaluates on may be written over.
    let mut reads = vec![(r.path.clone(), "the recipe".to_string())];
    if let Some(file) = eval_opts.data.file(task) {
        reads.push((file, "the evaluation data".to_string()));
    }
    let output = target.as_ref().map(|path| Output {
        reads,
        ..Output::new(path.clone(), ExternalData::Auto)
    });
    let (steps, params, macs, pass_seconds, calibration_load_seconds, notes) =
        if opts.out.is_none() && plan.steps.is_empty() {
            let m = onnx::load(&model_path)?;
            (
                vec![],
                weight_elements(&m),
                executor::encoder_macs(&m),
                0.0,
                0.0,
                vec![],
            )
        } else {
            let o = executor::execute(&model_path, &plan, None, output.as_ref(), stage).map_err(|e| {
                // Option errors found on the model (a layer it lacks, say) in the recipe's words.
                let msg = executor::render_error(&e, &|label, field| crate::recipe::recipe_key(label, field));
                anyhow::anyhow!("{}: {msg}", r.path.display())
            })?;
            let macs = o.steps.last().map_or(o.encoder_macs_before, |s| s.encoder_macs_after);
            (
                o.steps.iter().map(step_report).collect::<Vec<_>>(),
                weight_elements(&o.model),
                macs,
                o.steps.iter().map(|s| s.seconds).sum(),
                o.calibration_load_seconds,
                o.notes,
            )
        };
    let eval_path = target.clone().unwrap_or_else(|| model_path.clone());

    stage("evaluating");
    // The written model is read as the input was: its labels and tokenizer are the input's.
    let report = eval::evaluate_prepared(&eval_path, &prepared, &eval_opts, progress)
        .with_context(|| r.path.display().to_string())?;
    // The evaluation's notes (a tokenizer without special tokens) with the passes' (a calibrated
    // pass said it of the same tokenizer, read from the file or embedded by then: once).
    let mut notes = notes;
    let said = |n: &String| notes.iter().any(|m| eval::same_note(m, n));
    let new: Vec<String> = report.notes.iter().filter(|n| !said(n)).cloned().collect();
    notes.extend(new);
    drop(tmp);
    let wall_seconds = wall.elapsed().as_secs_f64();
    // The rest of the wall time beside the parts shown (eval's own wall time includes its
    // reading and tokenizing of the examples, done before the passes), so the parts add up.
    let overhead_seconds = (wall_seconds - pass_seconds - calibration_load_seconds - report.wall_seconds).max(0.0);
    Ok(RunReport {
        name: r.name(),
        config: r.path.clone(),
        model: model_path,
        model_source: resolved.source,
        task,
        baseline: r.is_baseline(),
        reference_method: r.is_reference_method(),
        steps,
        params,
        encoder_macs: macs,
        output: opts.out.clone(),
        eval: report,
        pass_seconds,
        calibration_load_seconds,
        wall_seconds,
        overhead_seconds,
        notes,
    })
}
