//! The one executor of compression plans: every caller (the single-pass commands, recipes,
//! benches) runs its passes through [`execute`], so composition is written once.
//!
//! In order: every step's options are validated (nothing is read before), the input is read
//! (refusing an output that would overwrite it or its external data), calibration data is loaded
//! only when a step needs it, each pass is applied and recorded in the model's history, the
//! model is checked after every pass as on load (a pass that produced an invalid graph fails with
//! its name and the node; nothing is written), and the result is saved atomically.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::glue::Task;
use crate::onnx::{self, ExternalData, ModelProto, SaveOptions, SaveSummary};
use crate::options::OptionError;
use crate::passes::{Calibrator, Pass, PassReport};
use crate::{calib, history, structure};

/// Where calibration examples come from (see [`crate::calib::Spec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// A file of examples: a GLUE TSV, or any format of [`crate::data`] (labels are not read).
    pub data: PathBuf,
    /// The file's format; `None`: by its extension.
    pub format: Option<crate::data::Format>,
    /// The text (and pair) columns; unset: a GLUE header's, else the usual names.
    pub columns: crate::data::Columns,
    /// The GLUE task whose preset reads the file; `None`: from a GLUE TSV's header, if it is one.
    pub task: Option<Task>,
    pub samples: usize,
    pub seed: u64,
    pub max_length: usize,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
    /// tokenizer.json to use (default: the model's).
    pub tokenizer: Option<PathBuf>,
    /// The path history records when not `data`: a recipe's as it is written there (relative to
    /// the recipe's folder), so that `run` writes the same bytes from any working folder.
    pub recorded_as: Option<PathBuf>,
}

impl Calibration {
    /// Checks the values on their own.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.samples == 0 {
            return Err(OptionError::new("calib_samples", "`calib_samples` must be at least 1"));
        }
        if self.max_length < 2 {
            return Err(OptionError::new("max_length", "`max_length` must be at least 2"));
        }
        Ok(())
    }

    /// The calibration spec to load it with.
    pub fn spec(&self) -> calib::Spec<'_> {
        calib::Spec {
            path: &self.data,
            format: self.format,
            columns: &self.columns,
            task: self.task,
            samples: self.samples,
            seed: self.seed,
            max_length: self.max_length,
            threads: self.threads,
            tokenizer: self.tokenizer.as_deref(),
        }
    }

    /// The note when the file held fewer than the examples asked for (`examples` were drawn).
    pub fn shortfall(&self, examples: usize) -> Option<String> {
        (examples < self.samples).then(|| {
            let (held, used) = match examples {
                1 => ("1 example".to_string(), "it is used".to_string()),
                n => (format!("{n} examples"), format!("all {n} are used")),
            };
            format!(
                "{} holds {held}, fewer than the {} calibration samples asked for: {used}",
                self.data.display(),
                self.samples
            )
        })
    }

    /// What a history entry records of the calibration a pass used.
    fn record(&self, options: &mut serde_json::Value) {
        if let Some(o) = options.as_object_mut() {
            let path = self.recorded_as.as_ref().unwrap_or(&self.data);
            o.insert("calib_data".into(), serde_json::json!(path.display().to_string()));
            o.insert("calib_samples".into(), serde_json::json!(self.samples));
            o.insert("seed".into(), serde_json::json!(self.seed));
            o.insert("calib_max_length".into(), serde_json::json!(self.max_length));
            if let Some(f) = self.format {
                o.insert("calib_format".into(), serde_json::json!(f.to_string()));
            }
            if let Some(c) = &self.columns.text {
                o.insert("calib_text_column".into(), serde_json::json!(c));
            }
            if let Some(c) = &self.columns.pair {
                o.insert("calib_text_pair_column".into(), serde_json::json!(c));
            }
        }
    }
}

/// One step of a plan: a pass and the label it is reported under (`prune`, or a recipe's
/// `prune.attention_heads`).
#[derive(Debug, Clone)]
pub struct Step {
    pub label: String,
    pub pass: Pass,
}

/// Passes to apply in order, and the calibration data for those that need it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub calibration: Option<Calibration>,
    /// Class names (in class order) to embed in the written model, replacing any it carries: a
    /// recipe's `data.labels`, so that the model evaluates on the user's labelled file without them.
    pub labels: Option<Vec<String>>,
}

/// A bad option of one step (index into [`Plan::steps`]; `None`: the calibration), for the
/// front end to render in its own words.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError {
    pub step: Option<usize>,
    pub error: OptionError,
}

impl Plan {
    /// A plan of one pass, labelled by its name.
    pub fn single(pass: Pass, calibration: Option<Calibration>) -> Plan {
        Plan {
            steps: vec![Step {
                label: pass.name().into(),
                pass,
            }],
            calibration,
            labels: None,
        }
    }

    /// Whether any step runs the model on calibration data.
    pub fn needs_calibration(&self) -> bool {
        self.steps.iter().any(|s| s.pass.needs_calibration())
    }

    /// Checks every step's options and the calibration, before anything is read. A step that
    /// needs calibration data without any is an error too.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (i, s) in self.steps.iter().enumerate() {
            s.pass.validate().map_err(|error| PlanError { step: Some(i), error })?;
        }
        if let Some(c) = &self.calibration {
            c.validate().map_err(|error| PlanError { step: None, error })?;
        }
        if self.calibration.is_none() {
            if let Some((i, s)) = self.steps.iter().enumerate().find(|(_, s)| s.pass.needs_calibration()) {
                let error = OptionError::new(
                    "calib_data",
                    format!("{} needs calibration data: add `calib_data` TRAIN.tsv", s.label),
                );
                return Err(PlanError { step: Some(i), error });
            }
        }
        Ok(())
    }
}

/// A pass that failed: the step's label and the pass's error (an option error among them is
/// for the front end to render in its own words).
#[derive(Debug, thiserror::Error)]
#[error("{label}")]
pub struct StepError {
    pub label: String,
    #[source]
    pub source: crate::passes::PassError,
}

/// Where the result goes.
#[derive(Debug, Clone)]
pub struct Output {
    pub path: PathBuf,
    pub external_data: ExternalData,
    /// Other files the command reads (a recipe, its evaluation data), each with what it is:
    /// refused as the output, as are the model's and the plan's own inputs.
    pub reads: Vec<(PathBuf, String)>,
}

impl Output {
    pub fn new(path: PathBuf, external_data: ExternalData) -> Output {
        Output {
            path,
            external_data,
            reads: Vec::new(),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub label: String,
    pub pass: &'static str,
    pub report: PassReport,
    /// Seconds in the pass (its calibration runs included).
    pub seconds: f64,
    /// The options as the model's history records them (the calibration's included).
    pub options: serde_json::Value,
    /// Weight elements after the step (see [`weight_elements`]).
    pub params_after: usize,
    /// Encoder MACs per sequence of [`MAC_SEQ_LEN`] tokens after the step, when mapped.
    pub encoder_macs_after: Option<u64>,
}

/// The note when a MAC budget ended more than a point from what was asked: under it, whole heads
/// are coarse units on a small model, and the allocation finishes with finer ones only where the
/// calibration data rates them cheaper; under or over it, each layer's kept neurons rounded to
/// the nearest multiple (`ffn_multiple_of`; its setting is not named: a flag or a recipe key).
fn budget_note(label: &str, pass: &Pass, report: &PassReport) -> Option<String> {
    let (Pass::Prune(o), PassReport::Prune(r)) = (pass, report) else {
        return None;
    };
    let target = o.target_macs?;
    let reached = r.encoder_macs_after as f64 / r.encoder_macs_before.max(1) as f64;
    let side = if reached < target - 0.01 {
        "under"
    } else if reached > target + 0.01 {
        "over"
    } else {
        return None;
    };
    let why = if o.ffn_multiple_of > 1 {
        format!(
            "each layer's kept neurons are rounded to the nearest multiple of {} (--ffn-multiple-of; prune.ffn_multiple_of in a recipe); a smaller multiple lands closer",
            o.ffn_multiple_of
        )
    } else if side == "under" {
        "a head is a coarse unit on this model, and no finer removal that meets the budget was rated cheaper on the calibration data".to_string()
    } else {
        // (A budget out of reach is refused before pruning: over it, only rounding ends.)
        return None;
    };
    Some(format!(
        "{label}: the MAC budget {target} ended at {reached:.3} of the MACs, {side} it: {why}"
    ))
}

/// A note where a step counts MACs at a `--seq-len` past the positions of `model` (its input,
/// `mapped` its transformer): the counts (and a `--target-macs` budget) are of inputs the model
/// cannot take.
fn past_positions_note(
    label: &str,
    pass: &Pass,
    model: &ModelProto,
    mapped: Option<&structure::Transformer>,
) -> Option<String> {
    let seq_len = match pass {
        Pass::Prune(o) => o.seq_len,
        Pass::Lowrank(o) => o.seq_len,
        _ => return None,
    };
    let positions = crate::eval::input_limits_of(model, mapped).positions;
    crate::eval::past_positions(positions, seq_len)
        .map(|why| format!("{label}: MACs are counted at {seq_len} tokens, {why}"))
}

/// A note where a low-rank step selects the query, key and value projections of layers that
/// ONNX Runtime's optimizer packed into one fused `Attention` op (of `mapped`, the step's input):
/// those are not factorized.
fn packed_qkv_note(label: &str, pass: &Pass, mapped: Option<&structure::Transformer>) -> Option<String> {
    let Pass::Lowrank(o) = pass else {
        return None;
    };
    if !o.apply_to.selects(crate::passes::lowrank::Role::Query) {
        return None;
    }
    let t = mapped?;
    let packed: Vec<String> = t
        .layers
        .iter()
        .filter(|l| o.layers.as_ref().is_none_or(|ls| ls.contains(&l.index)))
        .filter(|l| {
            matches!(
                l.attention.as_ref().map(|a| &a.qkv),
                Some(structure::Qkv::Packed { .. })
            )
        })
        .map(|l| l.index.to_string())
        .collect();
    (!packed.is_empty()).then(|| {
        format!(
            "{label}: the query, key and value projections of layer{} {} are packed in ONNX Runtime's fused Attention op and are not factorized; to factorize them, run lowrank on the model before ONNX Runtime's optimizer fuses it",
            if packed.len() == 1 { "" } else { "s" },
            packed.join(", ")
        )
    })
}

/// What the executor did.
#[derive(Debug)]
pub struct Outcome {
    pub model: ModelProto,
    pub steps: Vec<StepOutcome>,
    /// Encoder MACs of the input (per [`MAC_SEQ_LEN`] tokens), when mapped.
    pub encoder_macs_before: Option<u64>,
    /// Seconds loading and tokenizing calibration data (0 when no step needed it).
    pub calibration_load_seconds: f64,
    /// The files the input was read from (never overwritten).
    pub sources: Vec<PathBuf>,
    pub saved: Option<SaveSummary>,
    /// What the user should know and did not ask about (fewer calibration examples than asked).
    pub notes: Vec<String>,
    /// Calibration examples and their real tokens, when a step needed calibration.
    pub calibration_examples: Option<usize>,
    pub calibration_tokens: Option<usize>,
}

/// Sequence length of the MAC counts in step outcomes and results rows.
pub const MAC_SEQ_LEN: usize = 128;

/// Elements of the weight-like initializers: floating point and 8-bit integer tensors, not the
/// scales and zero points of quantization.
pub fn weight_elements(model: &ModelProto) -> usize {
    let Some(g) = model.graph.as_ref() else { return 0 };
    // Quantization's scales and zero points are not parameters: an INT8 model counted more than
    // its float original. They are the scale and zero-point inputs of the quantized ops, and the
    // per-channel scales an 8-bit embedding table's rows are multiplied by once gathered and cast.
    use std::collections::HashSet;
    let int8: HashSet<&str> = g
        .initializer
        .iter()
        .filter(|i| matches!(i.data_type(), 2 | 3))
        .map(|i| i.name())
        .collect();
    let outputs_of = |op: &str, from: &HashSet<&str>| -> HashSet<String> {
        g.node
            .iter()
            .filter(|n| n.op_type() == op && n.input.first().is_some_and(|i| from.contains(i.as_str())))
            .filter_map(|n| n.output.first().cloned())
            .collect()
    };
    let gathered = outputs_of("Gather", &int8);
    let cast = outputs_of("Cast", &gathered.iter().map(String::as_str).collect());
    let scales: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| {
            let at: &[usize] = match n.op_type() {
                "QuantizeLinear" | "DequantizeLinear" => &[1, 2],
                "DynamicQuantizeMatMul" | "MatMulInteger" => &[2, 3],
                "MatMulIntegerToFloat" => &[2, 3, 4, 5],
                "QLinearMatMul" => &[1, 2, 4, 5, 6, 7],
                "QAttention" => &[3, 4, 6, 7],
                "QEmbedLayerNormalization" => &[8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
                "Mul" if n.input.iter().any(|i| cast.contains(i)) => &[0, 1],
                _ => &[],
            };
            at.iter().filter_map(|&k| n.input.get(k)).map(String::as_str)
        })
        .collect();
    g.initializer
        .iter()
        .filter(|i| matches!(i.data_type(), 1 | 2 | 3 | 10 | 11 | 16) && !scales.contains(i.name()))
        .filter_map(|i| onnx::tensor::numel(i).ok())
        .sum()
}

/// Encoder MACs per sequence of [`MAC_SEQ_LEN`] tokens, when the transformer can be mapped.
pub fn encoder_macs(model: &ModelProto) -> Option<u64> {
    structure::discover(model).ok().map(|t| mapped_macs(&t))
}

/// [`encoder_macs`] of a mapped transformer.
fn mapped_macs(t: &structure::Transformer) -> u64 {
    structure::macs_per_sequence(t, MAC_SEQ_LEN).0
}

/// Runs `plan` on the model at `input`: validates, reads, calibrates (when a step needs it),
/// applies and checks each pass, records the history, embeds the tokenizer (`tokenizer`, else
/// `tokenizer.json` beside the input, unless one is embedded) and, with `output`, saves
/// atomically. ONNX Runtime must be initialized when a step needs calibration. `stage` hears a
/// line before each stage.
pub fn execute(
    input: &Path,
    plan: &Plan,
    tokenizer: Option<&Path>,
    output: Option<&Output>,
    stage: &dyn Fn(&str),
) -> Result<Outcome> {
    plan.validate().map_err(|e| anyhow!(e.error.to_string()))?;
    if let Some(o) = output {
        onnx::io::ensure_distinct(input, &o.path)?;
        // Before any work: a folder as the output, a folder that is not there, a device or a pipe.
        if o.path.is_dir() {
            bail!(
                "{}: a folder; name the model file to write in it (model.onnx)",
                o.path.display()
            );
        }
        onnx::io::target_folder(&o.path)?;
        // What else is read: the tokenizer and config.json beside the model (or the one
        // given), the calibration data. Writing over one would lose it.
        let mut reads: Vec<(PathBuf, String)> = crate::eval::files_read_with(input)
            .into_iter()
            .map(|(p, what)| (p, what.to_string()))
            .collect();
        if let Some(t) = tokenizer {
            reads.push((t.to_path_buf(), "the tokenizer".to_string()));
        }
        if let Some(c) = &plan.calibration {
            reads.push((c.data.clone(), "the calibration data".to_string()));
        }
        for (path, what) in reads.iter().chain(&o.reads) {
            onnx::io::ensure_not_read(path, what, &o.path)?;
        }
    }
    stage("reading the model");
    let (mut model, sources) = onnx::load_with_sources(input)?;
    // A broken input is named as such, not as what a pass then wrote (the load checked the rest).
    check_defined(&model).with_context(|| format!("{}: not a model this tool can rewrite", input.display()))?;
    no_nan_weights(&model).with_context(|| input.display().to_string())?;
    if let Some(o) = output {
        onnx::io::ensure_not_overwriting(&sources, &o.path)?;
    }
    let mut input_notes = history::carry_tokenizer(&mut model, input, tokenizer)?;
    // A recipe's data.labels name the classes over the config.json beside the input.
    match &plan.labels {
        Some(names) => history::embed_labels(&mut model, names)?,
        None => input_notes.extend(history::carry_labels(&mut model, input)?),
    }
    // The transformer of each step's input, mapped once (the notes and the MACs read it).
    let mut mapped = structure::discover(&model).ok();
    let encoder_macs_before = mapped.as_ref().map(mapped_macs);

    // What the first pass refuses on sight (a model quantized already), before calibration.
    if let Some(first) = plan.steps.first() {
        first
            .pass
            .check_input(&model)
            .map_err(|source| StepError {
                label: first.label.clone(),
                source,
            })
            .with_context(|| input.display().to_string())?;
    }
    let mut calibration_load_seconds = 0.0;
    let mut notes: Vec<String> = input_notes;
    let mut calibration_counts = None;
    let mut calibrator = match (&plan.calibration, plan.needs_calibration()) {
        (Some(c), true) => {
            stage("loading calibration data");
            let t = Instant::now();
            let (cal, note) = calib::ort_calibrator(&c.spec(), input, &model)?;
            calibration_load_seconds = t.elapsed().as_secs_f64();
            notes.extend(note);
            notes.extend(c.shortfall(cal.examples));
            // Calibrated pruning refits what it keeps on these tokens: too few fit exactly (the
            // wider of the blocks it prunes: an FFN's neurons, the heads' outputs).
            let pruned = |ffn: bool| {
                plan.steps.iter().any(|s| {
                    matches!(&s.pass, Pass::Prune(o)
                        if o.strategy == crate::passes::prune::Strategy::Obs
                            && (o.target_macs.is_some() || if ffn { o.ffn > 0.0 } else { o.heads > 0.0 }))
                })
            };
            if pruned(true) || pruned(false) {
                notes.extend(crate::passes::prune::few_tokens_note(
                    &model,
                    cal.tokens(),
                    pruned(false),
                    pruned(true),
                ));
            }
            // Activation-aware low rank sees as many directions of a layer's inputs as tokens.
            let aware: Vec<_> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.pass {
                    Pass::Lowrank(o) if s.pass.needs_calibration() => Some(o.apply_to),
                    _ => None,
                })
                .collect();
            if !aware.is_empty() {
                notes.extend(crate::passes::lowrank::few_tokens_note(&model, cal.tokens(), &aware));
            }
            calibration_counts = Some((cal.examples, cal.tokens()));
            Some(cal)
        }
        _ => None,
    };

    let mut steps = Vec::with_capacity(plan.steps.len());
    let mut macs = encoder_macs_before;
    for step in &plan.steps {
        stage(&step.label);
        let t = Instant::now();
        let used = step.pass.needs_calibration();
        let mut reporting = calibrator.as_mut().filter(|_| used).map(|c| Reporting {
            inner: c,
            label: &step.label,
            stage,
            runs: 0,
            phase: String::new(),
        });
        let cal = reporting.as_mut().map(|c| c as &mut dyn Calibrator);
        let applied = step
            .pass
            .apply(&model, cal)
            .map_err(|source| StepError {
                label: step.label.clone(),
                source,
            })
            .with_context(|| input.display().to_string())?;
        let seconds = t.elapsed().as_secs_f64();
        notes.extend(past_positions_note(&step.label, &step.pass, &model, mapped.as_ref()));
        notes.extend(packed_qkv_note(&step.label, &step.pass, mapped.as_ref()));
        notes.extend(budget_note(&step.label, &step.pass, &applied.report));
        let mut out = applied.model;
        stage(&format!("{}: checking the model", step.label));
        check(&out).with_context(|| format!("{}: {} wrote an invalid model", input.display(), step.label))?;
        let mut options = applied.options;
        if let (true, Some(c)) = (used, &plan.calibration) {
            c.record(&mut options);
        }
        // Every pass records parameters and MACs before and after (quantization and convert
        // leave the MACs as they were). The MACs are counted at MAC_SEQ_LEN tokens whatever a
        // step's --seq-len, so each step's "before" is the previous step's "after".
        let params = applied
            .params
            .or_else(|| Some((weight_elements(&model), weight_elements(&out))));
        mapped = structure::discover(&out).ok();
        let after = mapped.as_ref().map(mapped_macs);
        let step_macs = macs.map(|m| (m, after.unwrap_or(m)));
        // (The history is metadata: the graph `mapped` indexes stays as it is.)
        history::record(&mut out, step.pass.name(), options.clone(), params, step_macs)
            .map_err(|e| anyhow!(e))
            .with_context(|| input.display().to_string())?;
        if after.is_some() {
            macs = after;
        }
        steps.push(StepOutcome {
            label: step.label.clone(),
            pass: step.pass.name(),
            report: applied.report,
            seconds,
            options,
            params_after: weight_elements(&out),
            encoder_macs_after: macs,
        });
        model = out;
    }

    let saved = match output {
        Some(o) => {
            if o.external_data == ExternalData::Never {
                onnx::io::ensure_fits_inline(&model, &o.path)?;
            }
            check_runs(&model, plan, input)?;
            stage("writing");
            Some(onnx::save(
                &model,
                &o.path,
                &SaveOptions {
                    external_data: o.external_data,
                    protect: sources.clone(),
                },
            )?)
        }
        None => None,
    };
    Ok(Outcome {
        model,
        steps,
        encoder_macs_before,
        calibration_load_seconds,
        sources,
        saved,
        notes,
        calibration_examples: calibration_counts.map(|c| c.0),
        calibration_tokens: calibration_counts.map(|c| c.1),
    })
}

/// The check before any model is written: ONNX Runtime loads it and runs it on a synthetic batch
/// of token inputs ([`crate::runtime::check_runs`]; a model with other inputs is only loaded),
/// so that no command writes a model it cannot run (models past protobuf's 2 GiB limit too:
/// the weights are fed as graph inputs, apart from the graph ONNX Runtime parses).
/// When the written model fails, the input is checked too: where it fails as well, the error
/// names the input rather than the pass.
fn check_runs(model: &ModelProto, plan: &Plan, input: &Path) -> Result<()> {
    let label = plan.steps.last().map_or("convert", |s| s.label.as_str());
    crate::runtime::init(None).with_context(|| format!("checking the model {label} wrote"))?;
    crate::runtime::check_runs(model).map(|_| ()).map_err(|e| {
        match onnx::load(input).ok().and_then(|m| crate::runtime::check_runs(&m).err()) {
            Some(original) => {
                // Where the written model fails otherwise, that is said too.
                let written = if original.to_string() == e.to_string() {
                    String::new()
                } else {
                    format!(" (the model {label} wrote: {e})")
                };
                anyhow!(
                    "{} fails in ONNX Runtime ({original}): the input fails the check every written model gets{written}; fix or re-export the input; nothing was written",
                    input.display()
                )
            }
            None => anyhow!("{label} wrote a model that ONNX Runtime does not run ({e}); nothing was written"),
        }
    })
}

/// Refuses a model whose float weights (initializers a node reads) hold NaN: every output would
/// be NaN, and a pass (int8's rounding, a pruned row) could hide it. Infinite constants are left
/// alone (attention masks hold −∞).
fn no_nan_weights(model: &ModelProto) -> Result<()> {
    let Some(g) = model.graph.as_ref() else { return Ok(()) };
    let read: std::collections::HashSet<&str> =
        g.node.iter().flat_map(|n| n.input.iter()).map(String::as_str).collect();
    for t in &g.initializer {
        if t.data_type != Some(onnx::proto::tensor_proto::DataType::Float as i32) || !read.contains(t.name()) {
            continue;
        }
        let values = onnx::tensor::to_f32(t).map_err(|e| anyhow!(e))?;
        let nan = values.iter().filter(|v| v.is_nan()).count();
        if nan > 0 {
            bail!(
                "initializer '{}' holds NaN ({nan} of {} values): the model computes NaN; re-export it from a checkpoint with finite weights (nothing was written)",
                t.name(),
                values.len()
            );
        }
    }
    Ok(())
}

/// The check every rewritten model gets: the load check, and every value a node or the graph's
/// outputs read is defined (by a node, an initializer or a graph input).
pub fn check(model: &ModelProto) -> Result<()> {
    onnx::check::check_model(model, Path::new("(rewritten model)"))?;
    check_defined(model)
}

/// The part of [`check`] the load check does not do: the graph has inputs (token inputs: a
/// graph without any is valid ONNX, but not a model this tool runs) and outputs, and every value
/// a node or the graph's outputs read is defined.
fn check_defined(model: &ModelProto) -> Result<()> {
    let Some(g) = model.graph.as_ref() else {
        bail!("the model has no graph")
    };
    if g.output.is_empty() {
        bail!("the graph has no outputs");
    }
    if g.input.is_empty() {
        bail!("the graph has no inputs (this tool feeds a model its token inputs)");
    }
    let mut defined: std::collections::HashSet<&str> = g.input.iter().map(|v| v.name()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name()));
    defined.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|t| t.values.as_ref())
            .map(|v| v.name()),
    );
    defined.extend(
        g.node
            .iter()
            .flat_map(|n| n.output.iter())
            .filter(|o| !o.is_empty())
            .map(String::as_str),
    );
    for (i, n) in g.node.iter().enumerate() {
        if let Some(inp) = n.input.iter().find(|v| !v.is_empty() && !defined.contains(v.as_str())) {
            bail!(
                "node '{}' ({}, #{i}) reads '{inp}', which nothing defines",
                n.name(),
                n.op_type()
            );
        }
    }
    if let Some(o) = g.output.iter().find(|o| !defined.contains(o.name())) {
        bail!("graph output '{}' is produced by no node", o.name());
    }
    Ok(())
}

/// `e` as one line (causes joined by ": "), with every option error's fields named by
/// `name(step label, field)`: the CLI's `--flag`, a recipe's key. Line breaks from libraries are
/// folded.
pub fn render_error(e: &anyhow::Error, name: &dyn Fn(Option<&str>, &str) -> String) -> String {
    let mut parts: Vec<String> = vec![];
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StepError>() {
            let label = s.label.as_str();
            if let crate::passes::PassError::Options(o) = &s.source {
                parts.push(format!("{label}: {}", o.render(&|f| name(Some(label), f))));
                break;
            }
        }
        if let Some(o) = cause.downcast_ref::<OptionError>() {
            parts.push(o.render(&|f| name(None, f)));
            break;
        }
        parts.push(cause.to_string());
    }
    let msg = parts.join(": ");
    msg.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A calibrator that reports each run over the calibration batches to the stage callback: which
/// run of the step, the batch, and the time left in this run.
struct Reporting<'a> {
    inner: &'a mut dyn Calibrator,
    label: &'a str,
    stage: &'a dyn Fn(&str),
    runs: usize,
    /// The pass's phase ([`Calibrator::phase`]) with its `: `, or nothing.
    phase: String,
}

impl Reporting<'_> {
    fn started(&mut self, what: &str) -> (usize, Instant) {
        self.runs += 1;
        (self.stage)(&format!(
            "{}: {}calibration run {} ({what})",
            self.label, self.phase, self.runs
        ));
        (self.runs, Instant::now())
    }
}

impl Calibrator for Reporting<'_> {
    fn capture(
        &mut self,
        model: &ModelProto,
        values: &[String],
        sink: &mut crate::passes::Sink,
    ) -> Result<(), crate::passes::PassError> {
        let what = match values.len() {
            1 => "1 value".to_string(),
            n => format!("{n} values"),
        };
        let (run, start) = self.started(&format!("capturing {what}"));
        let (label, phase, stage, total) = (self.label, &self.phase, self.stage, self.inner.batches());
        let mut done = 0usize;
        self.inner.capture(model, values, &mut |positions, v| {
            done += 1;
            if let Some(n) = total {
                let per = start.elapsed().as_secs_f64() / done as f64;
                let left = per * n.saturating_sub(done) as f64;
                stage(&format!(
                    "{label}: {phase}calibration run {run} (capturing {what}): batch {done}/{n}, about {left:.0} s left in this run"
                ));
            }
            sink(positions, v)
        })
    }

    fn logits(&mut self, model: &ModelProto) -> Result<(Vec<f32>, usize), crate::passes::PassError> {
        self.started("logits");
        self.inner.logits(model)
    }

    fn examples(&self) -> usize {
        self.inner.examples()
    }

    fn tokens(&self) -> usize {
        self.inner.tokens()
    }

    fn seconds(&self) -> f64 {
        self.inner.seconds()
    }

    fn batches(&self) -> Option<usize> {
        self.inner.batches()
    }

    fn phase(&mut self, what: &str) {
        self.phase = format!("{what}: ");
        self.inner.phase(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MAC budget that ended more than a point under what was asked is noted; one met is not.
    #[test]
    fn a_mac_budget_ended_far_under_is_noted() {
        use crate::passes::prune::{PruneOptions, PruneReport};
        let opts = PruneOptions {
            target_macs: Some(0.5),
            ..Default::default()
        };
        let report = |after: u64| {
            PassReport::Prune(PruneReport {
                options: opts.clone(),
                layers: vec![],
                params_before: 0,
                params_after: 0,
                encoder_macs_before: 1000,
                encoder_macs_after: after,
                seq_len: 128,
                seconds: 0.0,
                calibration_seconds: 0.0,
            })
        };
        let pass = Pass::Prune(opts.clone());
        let n = budget_note("prune", &pass, &report(165)).unwrap();
        assert!(
            n.starts_with("prune: the MAC budget 0.5 ended at 0.165 of the MACs"),
            "{n}"
        );
        assert_eq!(budget_note("prune", &pass, &report(495)), None);
        let counts = Pass::Prune(PruneOptions {
            heads: 0.5,
            ..Default::default()
        });
        assert_eq!(budget_note("prune", &counts, &report(165)), None);
        let rounded = Pass::Prune(PruneOptions {
            ffn_multiple_of: 64,
            ..opts.clone()
        });
        let n = budget_note("prune", &rounded, &report(480)).unwrap();
        assert!(
            n.ends_with("ended at 0.480 of the MACs, under it: each layer's kept neurons are rounded to the nearest multiple of 64 (--ffn-multiple-of; prune.ffn_multiple_of in a recipe); a smaller multiple lands closer"),
            "{n}"
        );
        // Rounded up past the budget: said too (it was not).
        let n = budget_note("prune", &rounded, &report(667)).unwrap();
        assert!(n.contains("ended at 0.667 of the MACs, over it: each layer's kept neurons are rounded to the nearest multiple of 64"), "{n}");
        assert_eq!(budget_note("prune", &rounded, &report(505)), None);
        assert_eq!(budget_note("prune", &pass, &report(667)), None);
    }

    /// The shortfall note counts in the singular too ("holds 1 example ... it is used").
    #[test]
    fn the_shortfall_note_counts_its_examples() {
        let c = Calibration {
            data: PathBuf::from("t.csv"),
            format: None,
            columns: crate::data::Columns::default(),
            task: None,
            samples: 512,
            seed: 0,
            max_length: 128,
            threads: 0,
            tokenizer: None,
            recorded_as: None,
        };
        assert_eq!(c.shortfall(512), None);
        assert_eq!(
            c.shortfall(1).unwrap(),
            "t.csv holds 1 example, fewer than the 512 calibration samples asked for: it is used"
        );
        assert_eq!(
            c.shortfall(3).unwrap(),
            "t.csv holds 3 examples, fewer than the 512 calibration samples asked for: all 3 are used"
        );
    }

    /// History records a recipe's calibration path as the recipe writes it, not as resolved from
    /// the working folder: `run` writes the same bytes from any folder.
    #[test]
    fn history_records_a_recipes_calibration_path_as_written() {
        let text = "model:\n  model_name: m.onnx\ndata:\n  task: sst2\ncalibration:\n  data: ../data/train.tsv\nquantization:\n  enable: true\n  method: static\n";
        let recorded = |recipe: &str| {
            let plan = crate::recipe::parse(text, std::path::Path::new(recipe))
                .unwrap()
                .plan()
                .unwrap();
            let c = plan.calibration.unwrap();
            let mut o = serde_json::json!({});
            c.record(&mut o);
            (c.data, o["calib_data"].clone())
        };
        let (a, ra) = recorded("configs/r.yaml");
        let (b, rb) = recorded("../main/configs/r.yaml");
        assert_ne!(a, b, "resolved from the recipe's folder");
        assert_eq!(
            (ra, rb),
            (
                serde_json::json!("../data/train.tsv"),
                serde_json::json!("../data/train.tsv")
            )
        );
    }
}
