//! Carries out a [`Recipe`]: applies its passes in the reference order (low-rank, heads, FFN,
//! quantization) to the model in memory, records each in the model's history, writes the result
//! (to `--out`, or a temporary file), evaluates it and returns one results row.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::eval::{self, EvalOptions, EvalReport};
use crate::glue::Task;
use crate::onnx::{self, tensor, ModelProto, SaveOptions};
use crate::passes::lowrank::{self, ApplyTo, LowrankOptions, RankRule, Shrink};
use crate::passes::prune::{self, PruneOptions, Strategy};
use crate::passes::quantize::{self, ActivationType, CalibMethod, Mode, QuantizeOptions, StaticForm};
use crate::recipe::{LoadedRecipe, LowrankSection, PruneUnit, QuantizationSection};
use crate::runtime::{Device, OrtCalibrator, SessionOptions};
use crate::structure;
use crate::{calib, history};

/// Sequence length of the MAC counts in results rows (the tool's default everywhere).
pub const MAC_SEQ_LEN: usize = 128;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep the compressed model here (written atomically); default: a temporary file.
    pub out: Option<PathBuf>,
    /// Evaluate only the first N examples (overrides the recipe's `eval.limit`).
    pub limit: Option<usize>,
    /// GLUE folder when the recipe has no `data.dir`.
    pub data_dir: PathBuf,
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
    pub model: PathBuf,
    pub task: Task,
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
    pub eval: EvalReport,
    /// Seconds in passes (calibration runs included).
    pub pass_seconds: f64,
    /// Seconds loading calibration data.
    pub calibration_load_seconds: f64,
    pub wall_seconds: f64,
    /// Wall time beyond passes, calibration loading and evaluation: reading, writing, bookkeeping.
    pub overhead_seconds: f64,
}

/// Elements of the weight-like initializers: floating point and 8-bit integer tensors.
pub fn weight_elements(model: &ModelProto) -> usize {
    model
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .filter(|i| matches!(i.data_type(), 1 | 2 | 3 | 10 | 11 | 16))
                .filter_map(|i| tensor::numel(i).ok())
                .sum()
        })
        .unwrap_or(0)
}

fn encoder_macs(model: &ModelProto) -> Option<u64> {
    structure::discover(model)
        .ok()
        .map(|t| structure::macs_per_sequence(&t, MAC_SEQ_LEN).0)
}

/// The calibration examples of a recipe, ready for a pass.
fn calibrator(r: &LoadedRecipe, model_path: &Path, model: &ModelProto) -> Result<Option<OrtCalibrator>> {
    let Some(c) = &r.recipe.calibration else {
        return Ok(None);
    };
    let path = r.resolve(&c.data);
    let spec = calib::Spec {
        path: &path,
        task: Some(r.task()),
        samples: c.samples,
        seed: c.seed,
        max_length: r.recipe.data.max_input_length,
        threads: r.recipe.eval.threads,
        tokenizer: None,
    };
    let cal = calib::ort_calibrator(&spec, model_path, model)
        .with_context(|| format!("calibration.data {}", path.display()))?;
    Ok(Some(cal))
}

fn strategy(name: &str) -> Strategy {
    match name {
        "random" => Strategy::Random,
        "obs" => Strategy::Obs,
        _ => Strategy::L1,
    }
}

/// One pruning step (heads, FFN, or a MAC budget) with its history entry.
fn prune_step(
    model: &ModelProto,
    opts: &PruneOptions,
    calibrator: Option<&mut OrtCalibrator>,
) -> Result<(ModelProto, String)> {
    prune::validate(opts)?;
    let (mut out, rep) = match (opts.strategy, calibrator) {
        (Strategy::Obs, Some(c)) => prune::prune_calibrated(model, opts, c)?,
        (Strategy::Obs, None) => bail!("obs pruning needs a `calibration:` section"),
        _ => prune::prune(model, opts)?,
    };
    history::record(
        &mut out,
        "prune",
        serde_json::to_value(&rep.options)?,
        Some((rep.params_before, rep.params_after)),
        Some((rep.encoder_macs_before, rep.encoder_macs_after)),
    )
    .map_err(|e| anyhow!(e))?;
    let summary = format!(
        "{}: heads {} → {}, FFN neurons {} → {}, encoder MACs ×{:.3}",
        format!("{:?}", rep.options.strategy).to_lowercase(),
        rep.layers.iter().map(|l| l.heads_before).sum::<usize>(),
        rep.layers.iter().map(|l| l.heads_after).sum::<usize>(),
        rep.layers.iter().map(|l| l.neurons_before).sum::<usize>(),
        rep.layers.iter().map(|l| l.neurons_after).sum::<usize>(),
        rep.encoder_macs_after as f64 / rep.encoder_macs_before.max(1) as f64
    );
    Ok((out, summary))
}

/// The low-rank options of a recipe: the reference's keys (`k_mode` energy|ratio|fixed with
/// `energy`/`ratio`/`k`, clamps, `apply_to`, `layers`, `denoise` + `shrink_method`), or a
/// parameter budget (`target_params`, activation-aware on the calibration data).
pub fn lowrank_options(l: &LowrankSection) -> Result<LowrankOptions> {
    use clap::ValueEnum;
    let d = LowrankOptions::default();
    let rank = match l.k_mode.as_deref().unwrap_or("energy") {
        "energy" => RankRule::Energy(l.energy.unwrap_or(0.99)),
        "ratio" => RankRule::Ratio(l.ratio.context("rmt_lowrank.k_mode ratio needs rmt_lowrank.ratio")?),
        "fixed" => RankRule::Fixed(l.k.context("rmt_lowrank.k_mode fixed needs rmt_lowrank.k")?),
        m => bail!("rmt_lowrank.k_mode: unknown mode '{m}' (energy, ratio, fixed)"),
    };
    let apply_to = match l.apply_to.as_deref() {
        None => d.apply_to,
        Some(a) => ApplyTo::from_str(a, true).map_err(|_| {
            anyhow!("rmt_lowrank.apply_to: unknown set '{a}' (all_linear, bert_linear_only, exclude_classifier, ffn_only, ffn_plus_attn_output, qkv_only)")
        })?,
    };
    let shrink = match l.shrink_method.as_deref() {
        None => Shrink::GavishDonoho,
        Some(m) => Shrink::from_str(m, true).map_err(|_| {
            anyhow!("rmt_lowrank.shrink_method: unknown rule '{m}' (gavish_donoho, bulk_shrink, hard_threshold, soft_threshold)")
        })?,
    };
    if l.target_params.is_some() && l.denoise {
        bail!("rmt_lowrank: denoise belongs to the weight-only method; drop it or target_params");
    }
    let o = LowrankOptions {
        rank,
        k_min: l.k_min,
        k_max: l.k_max,
        apply_to,
        layers: l.layers.clone(),
        denoise: l.denoise.then_some(shrink),
        force: l.force,
        target_params: l.target_params,
        seq_len: MAC_SEQ_LEN,
    };
    lowrank::validate(&o).context("rmt_lowrank")?;
    Ok(o)
}

fn lowrank_step(
    model: &ModelProto,
    opts: &LowrankOptions,
    calibrator: Option<&mut OrtCalibrator>,
) -> Result<(ModelProto, String)> {
    let (mut out, rep) = match (opts.target_params, calibrator) {
        (Some(_), Some(c)) => lowrank::lowrank_calibrated(model, opts, c)?,
        (Some(_), None) => bail!("rmt_lowrank.target_params needs a `calibration:` section"),
        (None, _) => lowrank::lowrank(model, opts)?,
    };
    history::record(
        &mut out,
        "lowrank",
        serde_json::to_value(&rep.options)?,
        Some((rep.params_before, rep.params_after)),
        Some((rep.encoder_macs_before, rep.encoder_macs_after)),
    )
    .map_err(|e| anyhow!(e))?;
    let summary = format!(
        "{}: {} layers factorized, {} left dense; encoder Linear parameters {:.1}% of before",
        rep.method,
        rep.factorized,
        rep.skipped,
        100.0 * rep.encoder_linear_params_after as f64 / rep.encoder_linear_params_before.max(1) as f64
    );
    Ok((out, summary))
}

/// The quantization options of a recipe: the reference's methods first (`dynamic`: its PyTorch
/// dynamic INT8 of every Linear, per tensor, embeddings in float; `onnx`: ONNX Runtime's
/// `quantize_dynamic` default, per tensor, embeddings too), then this tool's (`static`,
/// `static_ort` (static in ONNX Runtime's fused form), `dynamic_per_channel`, `fp16`); explicit
/// keys override.
pub fn quantize_options(q: &QuantizationSection) -> Result<QuantizeOptions> {
    let d = QuantizeOptions::default();
    // (mode, per-channel weights, int8 embeddings, graph form, reproduces the reference's method)
    let (mode, per_channel, embeddings, static_form, reference) = match q.method.as_deref().unwrap_or("dynamic") {
        "dynamic" => (Mode::Dynamic, false, false, StaticForm::Qdq, true),
        "onnx" => (Mode::Dynamic, false, true, StaticForm::Qdq, true),
        "dynamic_per_channel" => (Mode::Dynamic, true, true, StaticForm::Qdq, false),
        "static" => (Mode::Static, true, true, StaticForm::Qdq, false),
        "static_ort" => (Mode::Static, true, true, StaticForm::Ort, false),
        "fp16" => (Mode::Fp16, true, true, StaticForm::Qdq, false),
        m => bail!("quantization.method: unknown method '{m}'"),
    };
    let per_channel = q.per_channel.unwrap_or(per_channel);
    let calib_method = match q.calib_method.as_deref() {
        None => d.calib_method,
        Some("minmax") => CalibMethod::Minmax,
        Some("percentile") => CalibMethod::Percentile,
        Some("entropy") => CalibMethod::Entropy,
        Some(m) => bail!("quantization.calib_method: unknown method '{m}' (minmax, percentile, entropy)"),
    };
    let activation_type = match q.activation_type.as_deref() {
        None => d.activation_type,
        Some("u8") => ActivationType::U8,
        Some("s8") => ActivationType::S8,
        Some(t) => bail!("quantization.activation_type: unknown type '{t}' (u8, s8)"),
    };
    let o = QuantizeOptions {
        mode,
        per_channel,
        weight_type: d.weight_type,
        activation_type,
        calib_method,
        percentile: q.percentile.unwrap_or(d.percentile),
        exclude: q.exclude.clone(),
        embeddings: q.embeddings.unwrap_or(embeddings),
        static_form,
        // The reference's methods stay as they were.
        split_first_token: q
            .split_first_token
            .unwrap_or(!reference && quantize::split_by_default(mode, per_channel)),
    };
    quantize::validate(&o).context("quantization")?;
    Ok(o)
}

fn quantize_step(
    model: &ModelProto,
    opts: &QuantizeOptions,
    calibrator: Option<&mut OrtCalibrator>,
) -> Result<(ModelProto, String)> {
    let calibrator = match (opts.mode, calibrator) {
        (Mode::Static, None) => bail!("static quantization needs a `calibration:` section"),
        (Mode::Static, Some(c)) => Some(c as &mut dyn crate::passes::Calibrator),
        _ => None,
    };
    let (mut out, rep) = quantize::quantize(model, opts, calibrator)?;
    history::record(&mut out, "quantize", serde_json::to_value(&rep.options)?, None, None).map_err(|e| anyhow!(e))?;
    let what = if opts.mode == Mode::Fp16 {
        format!("float16, {} values kept in float32", rep.kept_float32.len())
    } else {
        format!(
            "{:?} int8: {} MatMuls, {} embedding tables",
            opts.mode,
            rep.matmuls.len(),
            rep.embeddings.len()
        )
        .to_lowercase()
    };
    let summary = format!(
        "{what}; tensor data {:.1}% of before{}",
        100.0 * rep.weight_bytes_after as f64 / rep.weight_bytes_before.max(1) as f64,
        if rep.warnings.is_empty() {
            String::new()
        } else {
            format!("; {}", rep.warnings.join("; "))
        }
    );
    Ok((out, summary))
}

fn unit_options(unit: &PruneUnit, heads: bool, per_layer: bool) -> PruneOptions {
    PruneOptions {
        heads: if heads { unit.args.prune_amount } else { 0.0 },
        ffn: if heads { 0.0 } else { unit.args.prune_amount },
        strategy: strategy(&unit.args.strategy),
        seed: unit.args.seed,
        seq_len: MAC_SEQ_LEN,
        target_macs: None,
        per_layer,
    }
}

/// Runs the recipe: passes, save, evaluation. `runtime::init` must have been called.
/// `stage` hears a line before each stage; `progress` is the evaluation's progress callback.
pub fn run(r: &LoadedRecipe, opts: &RunOptions, stage: &dyn Fn(&str), progress: eval::Progress) -> Result<RunReport> {
    let wall = Instant::now();
    let rec = &r.recipe;
    let task = r.task();
    let model_path = r.resolve(&rec.model.model_name);
    if !model_path.is_file() {
        bail!(
            "{}: model.model_name: {} is not a file (paths are relative to the config file)",
            r.path.display(),
            model_path.display()
        );
    }
    if let Some(out) = &opts.out {
        onnx::io::ensure_distinct(&model_path, out)?;
    }
    let (mut model, sources) = onnx::load_with_sources(&model_path)?;
    if let Some(out) = &opts.out {
        onnx::io::ensure_not_overwriting(&sources, out)?;
    }
    let mut steps = vec![];
    let mut pass_seconds = 0.0;
    let mut calibration_load_seconds = 0.0;
    let mut macs = encoder_macs(&model);

    let needs_calibration = !r.is_baseline() && rec.calibration.is_some();
    let mut cal = if needs_calibration {
        stage("loading calibration data");
        let t = Instant::now();
        let c = calibrator(r, &model_path, &model)?;
        calibration_load_seconds = t.elapsed().as_secs_f64();
        c
    } else {
        None
    };

    let mut apply = |name: &str, f: &mut dyn FnMut(&ModelProto) -> Result<(ModelProto, String)>| -> Result<()> {
        stage(name);
        let t = Instant::now();
        let (m, summary) = f(&model).with_context(|| format!("{}: {name}", r.path.display()))?;
        let seconds = t.elapsed().as_secs_f64();
        pass_seconds += seconds;
        model = m;
        if let Some(x) = encoder_macs(&model) {
            macs = Some(x);
        }
        steps.push(StepReport {
            pass: name.into(),
            seconds,
            summary,
            params_after: weight_elements(&model),
            encoder_macs_after: macs,
        });
        Ok(())
    };

    if rec.rmt_lowrank.enable {
        let o = lowrank_options(&rec.rmt_lowrank)?;
        apply("rmt_lowrank", &mut |m| lowrank_step(m, &o, cal.as_mut()))?;
    }
    if let Some(t) = rec.prune.target_macs {
        let o = PruneOptions {
            heads: 0.0,
            ffn: 0.0,
            strategy: Strategy::Obs,
            seed: 0,
            seq_len: MAC_SEQ_LEN,
            target_macs: Some(t),
            per_layer: false,
        };
        apply("prune", &mut |m| prune_step(m, &o, cal.as_mut()))?;
    }
    if let Some(u) = rec.prune.attention_heads.as_ref().filter(|u| u.enable) {
        let o = unit_options(u, true, rec.prune.per_layer);
        apply("prune.attention_heads", &mut |m| prune_step(m, &o, cal.as_mut()))?;
    }
    if let Some(u) = rec.prune.mlp_neurons.as_ref().filter(|u| u.enable) {
        let o = unit_options(u, false, rec.prune.per_layer);
        apply("prune.mlp_neurons", &mut |m| prune_step(m, &o, cal.as_mut()))?;
    }
    if rec.quantization.enable {
        let o = quantize_options(&rec.quantization)?;
        apply("quantization", &mut |m| quantize_step(m, &o, cal.as_mut()))?;
    }

    // Write the model: to --out, else (unless nothing changed) to a temporary folder.
    let _tmp;
    let eval_path = if let Some(out) = &opts.out {
        history::carry_tokenizer(&mut model, &model_path, None)?;
        onnx::save(
            &model,
            out,
            &SaveOptions {
                protect: sources,
                ..Default::default()
            },
        )?;
        out.clone()
    } else if steps.is_empty() {
        model_path.clone()
    } else {
        history::carry_tokenizer(&mut model, &model_path, None)?;
        let dir = tempfile::tempdir().context("creating a temporary folder for the compressed model")?;
        let p = dir.path().join(
            model_path
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "model.onnx".into()),
        );
        onnx::save(&model, &p, &SaveOptions::default())?;
        _tmp = dir;
        p
    };

    stage("evaluating");
    let eval_opts = EvalOptions {
        task,
        split: r.split(),
        data_dir: rec
            .data
            .dir
            .as_ref()
            .map(|d| r.resolve(d))
            .unwrap_or_else(|| opts.data_dir.clone()),
        batch_size: rec.data.batch_size.unwrap_or(task.default_batch_size()),
        max_length: rec.data.max_input_length,
        warmup: rec.eval.warmup,
        measure: rec.eval.measure,
        limit: opts.limit.or(rec.eval.limit),
        bucket: false,
        tokenizer: None,
        session: SessionOptions {
            device: if rec.device.cuda { Device::Cuda } else { Device::Cpu },
            threads: rec.eval.threads,
            ..Default::default()
        },
    };
    let t = Instant::now();
    let mut report = eval::evaluate(&eval_path, &eval_opts, progress).with_context(|| r.path.display().to_string())?;
    let eval_seconds = t.elapsed().as_secs_f64();
    report.model = opts.out.clone().unwrap_or_else(|| model_path.clone());
    let wall_seconds = wall.elapsed().as_secs_f64();
    Ok(RunReport {
        name: r.name(),
        config: r.path.clone(),
        model: model_path,
        task,
        baseline: r.is_baseline(),
        reference_method: r.is_reference_method(),
        steps,
        params: weight_elements(&model),
        encoder_macs: macs,
        output: opts.out.clone(),
        eval: report,
        pass_seconds,
        calibration_load_seconds,
        wall_seconds,
        overhead_seconds: (wall_seconds - pass_seconds - calibration_load_seconds - eval_seconds).max(0.0),
    })
}
