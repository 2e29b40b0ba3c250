//! The `onnx-compress` command line: parses flags and composes library calls, nothing else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use onnx_compress::eval::{self, EvalOptions};
use onnx_compress::glue::Task;
use onnx_compress::onnx::{self, ExternalData, ModelProto, SaveOptions};
use onnx_compress::passes::lowrank::{self, ApplyTo, LowrankOptions, RankRule, Shrink};
use onnx_compress::passes::prune::{self, PruneOptions, Strategy};
use onnx_compress::passes::quantize::{
    self, ActivationType, CalibMethod, Mode, QuantizeOptions, StaticForm, WeightType,
};
use onnx_compress::runtime::{self, Device, SessionOptions};
use onnx_compress::{bench, calib, history, inspect, pipeline, recipe, report};

#[derive(Parser)]
#[command(name = "onnx-compress", version, about = "Compress BERT-family ONNX classifiers and measure what it costs", long_about = None)]
struct Cli {
    /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then the project's .ort/lib, then Python's site-packages).
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the transformer found in a model: layers, heads, FFN widths, parameters, MACs, history.
    Inspect {
        /// The .onnx model to inspect.
        model: PathBuf,
        /// Sequence length for the MAC count.
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model on a GLUE task: accuracy/F1 and speed, measured as the reference did.
    Eval(EvalArgs),
    /// Remove attention heads and FFN neurons: the graph is really sliced, per layer.
    Prune(PruneArgs),
    /// Replace Linear layers by two thin factors x·A·B (weight SVD, or activation-aware with --calib-data).
    Lowrank(LowrankArgs),
    /// Run one YAML recipe (the reference's config layout): apply its passes, evaluate, print the row.
    Run(RunArgs),
    /// Run many recipes of one task and write the results table (Markdown, CSV, JSON) and Pareto charts.
    Bench(BenchArgs),
    /// Quantize: INT8 (static, calibrated QDQ; or dynamic) with int8 embeddings, or float16.
    Quantize(QuantizeArgs),
    /// Re-encode a model (e.g. to or from external data), embedding its tokenizer and recording history.
    Convert {
        /// The model to read (never modified).
        input: PathBuf,
        /// Where to write the copy (written atomically; must differ from INPUT).
        output: PathBuf,
        /// Store tensors in OUTPUT.data: auto (only past protobuf's 2 GiB limit), always, never.
        #[arg(long, value_enum, default_value_t = ExternalMode::Auto)]
        external_data: ExternalMode,
        /// Tokenizer to embed (default: the one found for INPUT, if any).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Calibration examples drawn by default (quantize: [`QUANTIZE_CALIB_SAMPLES`]).
const CALIB_SAMPLES: usize = 512;
const QUANTIZE_CALIB_SAMPLES: usize = 256;

/// The calibration flags of prune, lowrank and quantize.
#[derive(clap::Args)]
struct CalibArgs {
    /// Calibration data: a GLUE TSV of the task's train split (task from its header, or --task);
    /// prune: for --strategy obs, lowrank: activation-aware, quantize: --mode static.
    #[arg(long, value_name = "FILE")]
    calib_data: Option<PathBuf>,
    /// Number of calibration examples drawn (seeded by --seed) from --calib-data [default: 512;
    /// quantize: 256].
    #[arg(long)]
    calib_samples: Option<usize>,
    /// Task of --calib-data when its header does not tell (sst2, mrpc, qqp, ...).
    #[arg(long)]
    task: Option<String>,
    /// Truncation length of calibration examples.
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// Intra-op threads for calibration runs (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Seed for drawing the calibration examples (prune: also for --strategy random).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl CalibArgs {
    /// The calibration runner, when --calib-data was given.
    fn runner(
        &self,
        ort_lib: Option<&Path>,
        input: &Path,
        model: &ModelProto,
        default_samples: usize,
        tokenizer: Option<&Path>,
    ) -> Result<Option<runtime::OrtCalibrator>> {
        let Some(path) = &self.calib_data else {
            return Ok(None);
        };
        runtime::init(ort_lib)?;
        let spec = calib::Spec {
            path,
            task: self.task.as_deref().map(Task::from_name).transpose()?,
            samples: self.calib_samples.unwrap_or(default_samples),
            seed: self.seed,
            max_length: self.max_length,
            threads: self.threads,
            tokenizer,
        };
        Ok(Some(calib::ort_calibrator(&spec, input, model)?))
    }

    /// A pass's options for the history, with the calibration it used (when it used one).
    fn record(&self, mut options: serde_json::Value, default_samples: usize) -> serde_json::Value {
        if let (Some(o), Some(c)) = (options.as_object_mut(), &self.calib_data) {
            o.insert("calib_data".into(), serde_json::json!(c.display().to_string()));
            o.insert(
                "calib_samples".into(),
                serde_json::json!(self.calib_samples.unwrap_or(default_samples)),
            );
            o.insert("seed".into(), serde_json::json!(self.seed));
        }
        options
    }
}

#[derive(clap::Args)]
struct PruneArgs {
    /// The model to prune (never modified).
    input: PathBuf,
    /// Where to write the pruned model (atomically; must differ from INPUT).
    output: PathBuf,
    /// Fraction of attention heads to remove in each layer, in [0, 1): round(heads × F), at least one kept.
    #[arg(long, default_value_t = 0.0)]
    heads: f64,
    /// Fraction of FFN neurons to remove in each layer, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    ffn: f64,
    /// How heads and neurons are chosen: l1 (the reference's weight magnitudes), random, or obs
    /// (calibrated: least-squares optimal removal and refit). Default: obs with --calib-data, else l1.
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// Keep this fraction of encoder MACs (at --seq-len), in (0, 1]: per-layer head and neuron
    /// counts are chosen globally on the calibration data (needs --calib-data).
    #[arg(long, value_name = "F")]
    target_macs: Option<f64>,
    /// With calibration, --heads/--ffn are fractions of all heads/neurons of the model, placed
    /// where the calibration data says they cost least (layers end up with different sizes);
    /// --per-layer removes the same fraction in every layer instead (as l1 and random always do).
    #[arg(long)]
    per_layer: bool,
    #[command(flatten)]
    calib: CalibArgs,
    /// Sequence length for the MAC counts in the report.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Tokenizer to embed when the input has none embedded (default: tokenizer.json beside INPUT).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The recipe (YAML; paths in it are relative to its folder).
    config: PathBuf,
    /// Keep the compressed model here (written atomically); default: evaluated from a temporary file.
    #[arg(long, value_name = "MODEL")]
    out: Option<PathBuf>,
    /// Evaluate only the first N examples (overrides the recipe's eval.limit).
    #[arg(long)]
    limit: Option<usize>,
    /// GLUE folder when the recipe has no data.dir (default: data/glue, then ../shared/data/glue).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print the run report as JSON (with every prediction).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Recipes, or folders of *.yaml recipes (those of --task are run, in name order).
    #[arg(required = true, value_name = "CONFIG")]
    configs: Vec<PathBuf>,
    /// The task whose recipes are run (sst2, mrpc, qqp, ...).
    #[arg(long)]
    task: String,
    /// Evaluate only the first N examples of each variant.
    #[arg(long)]
    limit: Option<usize>,
    /// Folder for results.md, results.csv, results.json and the charts (default: bench/out/<task>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// GLUE folder for recipes without data.dir (default: data/glue, then ../shared/data/glue).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print the report as JSON instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct QuantizeArgs {
    /// The float32 model to quantize (never modified).
    input: PathBuf,
    /// Where to write the quantized model (atomically; must differ from INPUT).
    output: PathBuf,
    /// static: int8 with calibrated activation ranges (QDQ, needs --calib-data); dynamic: int8 with
    /// ranges found at run time; fp16: float16 with float32 kept for LayerNorm, softmax and logits.
    #[arg(long, value_enum)]
    mode: Mode,
    /// How activation ranges are chosen from the calibration data (static; default minmax).
    #[arg(long, value_enum)]
    calib_method: Option<CalibMethod>,
    /// For --calib-method percentile: the share of values kept, in (0, 100] (default 99.999).
    #[arg(long, allow_negative_numbers = true)]
    percentile: Option<f64>,
    /// One weight scale per output channel (the default).
    #[arg(long, overrides_with = "per_tensor")]
    per_channel: bool,
    /// One weight scale per tensor (ONNX Runtime's quantize_dynamic default).
    #[arg(long)]
    per_tensor: bool,
    /// Weight type (int8, symmetric).
    #[arg(long, value_enum, default_value_t = WeightType::S8)]
    weight_type: WeightType,
    /// Activation type for static mode: u8 (asymmetric, the default) or s8 (symmetric).
    #[arg(long, value_enum)]
    activation_type: Option<ActivationType>,
    /// Graph form of static mode: qdq (standard QuantizeLinear/DequantizeLinear pairs, the
    /// default) or ort (ONNX Runtime's MatMulIntegerToFloat with biases folded: faster there).
    #[arg(long, value_enum)]
    static_form: Option<StaticForm>,
    /// Keep MatMuls (fp16: nodes) whose node or weight name matches in float; `*`/`?` wildcards,
    /// else a substring. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Quantize the embedding tables too (the default).
    #[arg(long, overrides_with = "no_embeddings")]
    embeddings: bool,
    /// Keep the embedding tables in float32.
    #[arg(long)]
    no_embeddings: bool,
    /// int8: run each FFN (dynamic: and the Q/K/V projections) on the first token ([CLS]) apart
    /// from the other tokens, with ranges of its own, so its outlier activations do not coarsen
    /// every other token's. The default, except with --per-tensor (which reproduces ONNX
    /// Runtime's quantize_dynamic).
    #[arg(long, overrides_with = "no_split_first_token")]
    split_first_token: bool,
    /// int8: every block runs all tokens at once, as the model did.
    #[arg(long)]
    no_split_first_token: bool,
    #[command(flatten)]
    calib: CalibArgs,
    /// Tokenizer to embed when the input has none embedded (default: tokenizer.json beside INPUT).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExternalMode {
    Auto,
    Always,
    Never,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("rank_rule").args(["energy", "ratio", "rank", "target_params"]).multiple(false)))]
struct LowrankArgs {
    /// The model to factorize (never modified).
    input: PathBuf,
    /// Where to write the factorized model (atomically; must differ from INPUT).
    output: PathBuf,
    /// Rank = smallest k whose share of the spectral energy Σs² reaches E, in (0, 1] (default 0.99).
    #[arg(long, value_name = "E")]
    energy: Option<f64>,
    /// Rank = round(full rank × R), R in (0, 1].
    #[arg(long, value_name = "R")]
    ratio: Option<f64>,
    /// Rank = K in every selected layer (an error where K exceeds a layer's full rank).
    #[arg(long, value_name = "K")]
    rank: Option<usize>,
    /// Lower bound on the chosen rank (then capped at the layer's full rank).
    #[arg(long, value_name = "K")]
    k_min: Option<usize>,
    /// Upper bound on the chosen rank.
    #[arg(long, value_name = "K")]
    k_max: Option<usize>,
    /// Which Linear layers: all_linear, bert_linear_only, exclude_classifier, ffn_only, ffn_plus_attn_output, qkv_only.
    #[arg(long, value_enum, default_value_t = ApplyTo::ExcludeClassifier)]
    apply_to: ApplyTo,
    /// Encoder layers to touch, e.g. 4,5 (default: all; the pooler and classifier are not filtered by it).
    #[arg(long, value_delimiter = ',', value_name = "L,L,...")]
    layers: Option<Vec<usize>>,
    /// Denoise each weight before the SVD (the reference's RMT step: column standardization + shrinkage).
    #[arg(long)]
    denoise: bool,
    /// Shrinkage rule of --denoise.
    #[arg(long, value_enum, default_value_t = Shrink::GavishDonoho, requires = "denoise")]
    shrink: Shrink,
    /// Factorize even where the rank is at or above break-even (k ≥ m·n/(m+n)).
    #[arg(long)]
    force: bool,
    /// With --calib-data: keep this fraction of the selected layers' parameters, in (0, 1);
    /// ranks are allocated across layers by output error per parameter.
    #[arg(long, value_name = "F", requires = "calib_data")]
    target_params: Option<f64>,
    #[command(flatten)]
    calib: CalibArgs,
    /// Sequence length for the MAC counts in the report.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Tokenizer to embed when the input has none embedded (default: tokenizer.json beside INPUT).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// sst2, mrpc, qqp (also cola, qnli, rte, mnli, stsb, wnli).
    #[arg(long)]
    task: String,
    /// The .onnx model to evaluate.
    #[arg(long)]
    model: PathBuf,
    /// GLUE folder holding <task>/<split>.tsv (default: data/glue, then ../shared/data/glue).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which file of the task folder to read: dev, train, or any <split>.tsv there.
    #[arg(long, default_value = "dev")]
    split: String,
    /// Default: 32 (MRPC: 24), as the reference.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Truncate each example (or pair, longest first) to this many tokens.
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// cpu, or cuda (ONNX Runtime's CUDA execution provider; an error where unavailable, never a fallback).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Intra-op threads (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Untimed batches before timing starts.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Batches timed after the warm-up.
    #[arg(long, default_value_t = 50)]
    measure: usize,
    /// Evaluate only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Batch examples of similar length together (predictions stay in file order).
    #[arg(long)]
    bucket: bool,
    /// Keep denormal floats (by default ONNX Runtime flushes them to zero: the masked softmax
    /// produces them and they slow the CPU several times; no prediction changes).
    #[arg(long)]
    keep_denormals: bool,
    /// tokenizer.json to use (default: embedded in the model, then beside it).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print JSON (with every prediction) instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: causes joined by ": ", line breaks from libraries folded.
            let msg = format!("{e:#}");
            let msg: Vec<&str> = msg.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect();
            let _ = writeln!(std::io::stderr(), "error: {}", msg.join(" "));
            ExitCode::FAILURE
        }
    }
}

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    print(&(serde_json::to_string_pretty(v)? + "\n"))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, seq_len, json } => {
            if seq_len == 0 {
                bail!("--seq-len must be at least 1");
            }
            let m = onnx::load(&model)?;
            let s = inspect::summarize(&m, &model, seq_len).with_context(|| model.display().to_string())?;
            if json {
                print_json(&s)
            } else {
                print(&report::inspect_text(&s))
            }
        }
        Command::Eval(a) => cmd_eval(cli.ort_lib.as_deref(), a),
        Command::Prune(a) => cmd_prune(cli.ort_lib.as_deref(), a),
        Command::Lowrank(a) => cmd_lowrank(cli.ort_lib.as_deref(), a),
        Command::Run(a) => cmd_run(cli.ort_lib.as_deref(), a),
        Command::Bench(a) => cmd_bench(cli.ort_lib.as_deref(), a),
        Command::Quantize(a) => cmd_quantize(cli.ort_lib.as_deref(), a),
        Command::Convert {
            input,
            output,
            external_data,
            tokenizer,
            json,
        } => {
            let (m, sources) = read_input(&input, &output)?;
            let mode = match external_data {
                ExternalMode::Auto => ExternalData::Auto,
                ExternalMode::Always => ExternalData::Always,
                ExternalMode::Never => ExternalData::Never,
            };
            let options = serde_json::json!({ "external_data": format!("{:?}", mode).to_lowercase() });
            let to = Destination {
                input: &input,
                output: &output,
                sources,
                tokenizer: tokenizer.as_deref(),
                external_data: mode,
            };
            let summary = write_output(m, to, "convert", options, None, None)?;
            if json {
                print_json(&summary)
            } else {
                print(&format!(
                    "wrote {} ({} bytes){}\n",
                    summary.path.display(),
                    summary.bytes,
                    summary
                        .data_file
                        .as_ref()
                        .map(|d| format!(" and {} ({} bytes)", d.display(), summary.data_bytes))
                        .unwrap_or_default()
                ))
            }
        }
    }
}

/// The GLUE folder: `--data`, else `data/glue` here or in the project, else `../shared/data/glue`.
fn default_data_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        PathBuf::from("data/glue"),
        manifest.join("data/glue"),
        PathBuf::from("../shared/data/glue"),
        manifest.join("../shared/data/glue"),
    ];
    candidates
        .iter()
        .find(|c| c.is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

fn cmd_eval(ort_lib: Option<&Path>, a: EvalArgs) -> Result<()> {
    let task = Task::from_name(&a.task)?;
    if a.model.is_dir() {
        bail!(
            "--model {}: is a directory; pass the .onnx file inside it",
            a.model.display()
        );
    }
    if !a.model.is_file() {
        bail!("--model {}: no such file", a.model.display());
    }
    runtime::init(ort_lib)?;
    let opts = EvalOptions {
        task,
        split: a.split,
        data_dir: a.data.unwrap_or_else(default_data_dir),
        batch_size: a.batch_size.unwrap_or(task.default_batch_size()),
        max_length: a.max_length,
        warmup: a.warmup,
        measure: a.measure,
        limit: a.limit,
        bucket: a.bucket,
        tokenizer: a.tokenizer,
        session: SessionOptions {
            device: a.device,
            threads: a.threads,
            flush_denormals: !a.keep_denormals,
            ..Default::default()
        },
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("eval {task}"));
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let r = eval::evaluate(&a.model, &opts, &progress);
    bar.finish_and_clear();
    let r = r?;
    if a.json {
        print_json(&r)
    } else {
        print(&report::eval_text(&r))
    }
}

/// An evaluation progress bar on stderr; `prefix` is shown before it.
fn eval_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} {msg} [{bar:30}] {pos}/{len} batches {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn cmd_run(ort_lib: Option<&Path>, a: RunArgs) -> Result<()> {
    let r = recipe::load(&a.config)?;
    runtime::init(ort_lib)?;
    let bar = eval_bar();
    bar.set_prefix(format!("run {}", r.name()));
    let stage = |s: &str| {
        bar.set_message(s.to_string());
        bar.tick();
    };
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let opts = pipeline::RunOptions {
        out: a.out,
        limit: a.limit,
        data_dir: a.data.unwrap_or_else(default_data_dir),
    };
    let rep = pipeline::run(&r, &opts, &stage, &progress);
    bar.finish_and_clear();
    let rep = rep?;
    if a.json {
        print_json(&rep)
    } else {
        print(&report::run_text(&rep))
    }
}

fn cmd_bench(ort_lib: Option<&Path>, a: BenchArgs) -> Result<()> {
    let task = Task::from_name(&a.task)?;
    let mut recipes = vec![];
    for given in &a.configs {
        for path in recipe::expand(std::slice::from_ref(given))? {
            let r = recipe::load(&path)?;
            if r.task() == task {
                recipes.push(r);
            } else if !given.is_dir() {
                bail!(
                    "{}: a recipe for {}, not --task {}",
                    path.display(),
                    r.task().name(),
                    task.name()
                );
            }
        }
    }
    if recipes.is_empty() {
        bail!(
            "no recipe for task {task} in {}",
            a.configs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let out = a.out.unwrap_or_else(|| PathBuf::from("bench/out").join(task.name()));
    runtime::init(ort_lib)?;
    let bar = eval_bar();
    let n = recipes.len();
    let stage = |i: usize, name: &str, s: &str| {
        bar.set_prefix(format!("[{}/{n}] {name}", i + 1));
        bar.set_message(s.to_string());
        bar.set_position(0);
        bar.tick();
    };
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let opts = pipeline::RunOptions {
        out: None,
        limit: a.limit,
        data_dir: a.data.unwrap_or_else(default_data_dir),
    };
    let rep = bench::bench(&recipes, task, &opts, &stage, &progress);
    bar.finish_and_clear();
    let rep = rep?;
    let files = bench::write(&rep, &out)?;
    if a.json {
        print_json(&rep)
    } else {
        let mut s = bench::markdown(&rep);
        s += "\nwrote ";
        s += &files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        s.push('\n');
        print(&s)
    }
}

/// Reads the input of a command that writes `output`: refused when `output` is the input or
/// any file the input was read from (external data). Returns the model and those files.
fn read_input(input: &Path, output: &Path) -> Result<(ModelProto, Vec<PathBuf>)> {
    onnx::io::ensure_distinct(input, output)?;
    let (model, sources) = onnx::load_with_sources(input)?;
    onnx::io::ensure_not_overwriting(&sources, output)?;
    Ok((model, sources))
}

/// Where a command's model goes: its output path, the input it came from (and the files that
/// input was read from, never overwritten), the tokenizer to embed, and the storage mode.
struct Destination<'a> {
    input: &'a Path,
    output: &'a Path,
    sources: Vec<PathBuf>,
    tokenizer: Option<&'a Path>,
    external_data: ExternalData,
}

/// Embeds the tokenizer (unless one is), appends the history entry for `pass`, and saves the
/// model atomically.
fn write_output(
    mut model: ModelProto,
    to: Destination,
    pass: &str,
    options: serde_json::Value,
    params: Option<(usize, usize)>,
    macs: Option<(u64, u64)>,
) -> Result<onnx::io::SaveSummary> {
    history::carry_tokenizer(&mut model, to.input, to.tokenizer)?;
    history::record(&mut model, pass, options, params, macs)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| to.input.display().to_string())?;
    Ok(onnx::save(
        &model,
        to.output,
        &SaveOptions {
            external_data: to.external_data,
            protect: to.sources,
        },
    )?)
}

fn cmd_prune(ort_lib: Option<&Path>, a: PruneArgs) -> Result<()> {
    let strategy = a.strategy.unwrap_or(if a.calib.calib_data.is_some() {
        Strategy::Obs
    } else {
        Strategy::L1
    });
    let opts = PruneOptions {
        heads: a.heads,
        ffn: a.ffn,
        strategy,
        seed: a.calib.seed,
        seq_len: a.seq_len,
        target_macs: a.target_macs,
        per_layer: a.per_layer,
    };
    prune::validate(&opts)?;
    if strategy == Strategy::Obs && a.calib.calib_data.is_none() {
        bail!("--strategy obs needs calibration data: add --calib-data TRAIN.tsv");
    }
    if strategy != Strategy::Obs && a.calib.calib_data.is_some() {
        bail!("--calib-data is only used by --strategy obs (the default with calibration data)");
    }
    let (model, sources) = read_input(&a.input, &a.output)?;
    let calibrator = a
        .calib
        .runner(ort_lib, &a.input, &model, CALIB_SAMPLES, a.tokenizer.as_deref())?;
    let (out, report) = if let Some(mut calibrator) = calibrator {
        prune::prune_calibrated(&model, &opts, &mut calibrator).with_context(|| a.input.display().to_string())?
    } else {
        prune::prune(&model, &opts).with_context(|| a.input.display().to_string())?
    };
    write_output(
        out,
        Destination {
            input: &a.input,
            output: &a.output,
            sources,
            tokenizer: a.tokenizer.as_deref(),
            external_data: ExternalData::Auto,
        },
        "prune",
        serde_json::to_value(&report.options)?,
        Some((report.params_before, report.params_after)),
        Some((report.encoder_macs_before, report.encoder_macs_after)),
    )?;
    if a.json {
        print_json(&report)
    } else {
        print(&report::prune_text(&report, &a.output))
    }
}

fn cmd_quantize(ort_lib: Option<&Path>, a: QuantizeArgs) -> Result<()> {
    if a.mode != Mode::Static {
        for (set, flag) in [
            (a.calib_method.is_some(), "--calib-method"),
            (a.percentile.is_some(), "--percentile"),
            (a.activation_type.is_some(), "--activation-type"),
            (a.static_form.is_some(), "--static-form"),
        ] {
            if set {
                bail!("{flag} applies to --mode static only (dynamic quantizes activations to u8 at run time; fp16 has none)");
            }
        }
    }
    if a.percentile.is_some() && a.calib_method != Some(CalibMethod::Percentile) {
        bail!("--percentile needs --calib-method percentile");
    }
    let defaults = QuantizeOptions::default();
    let opts = QuantizeOptions {
        mode: a.mode,
        per_channel: !a.per_tensor,
        weight_type: a.weight_type,
        activation_type: a.activation_type.unwrap_or(defaults.activation_type),
        calib_method: a.calib_method.unwrap_or(defaults.calib_method),
        percentile: a.percentile.unwrap_or(defaults.percentile),
        exclude: a.exclude.clone(),
        embeddings: !a.no_embeddings,
        static_form: a.static_form.unwrap_or(defaults.static_form),
        // At most one of the two flags is set (each overrides the other); fp16 refuses the first below.
        split_first_token: a.split_first_token
            || (!a.no_split_first_token && quantize::split_by_default(a.mode, !a.per_tensor)),
    };
    quantize::validate(&opts)?;
    if a.mode == Mode::Static && a.calib.calib_data.is_none() {
        bail!("--mode static needs calibration data: add --calib-data TRAIN.tsv (or use --mode dynamic)");
    }
    if a.mode != Mode::Static && a.calib.calib_data.is_some() {
        bail!("--calib-data is only used by --mode static");
    }
    if a.calib.calib_samples == Some(0) {
        bail!("--calib-samples must be at least 1");
    }
    if a.mode == Mode::Fp16 && a.per_tensor {
        bail!("--per-tensor applies to the int8 modes, not --mode fp16");
    }
    if a.mode == Mode::Fp16 && a.split_first_token {
        bail!("--split-first-token applies to the int8 modes, not --mode fp16");
    }
    let (model, sources) = read_input(&a.input, &a.output)?;
    quantize::ensure_not_quantized(&model).with_context(|| a.input.display().to_string())?;
    let mut calibrator = a.calib.runner(
        ort_lib,
        &a.input,
        &model,
        QUANTIZE_CALIB_SAMPLES,
        a.tokenizer.as_deref(),
    )?;
    let (out, report) = quantize::quantize(
        &model,
        &opts,
        calibrator
            .as_mut()
            .map(|c| c as &mut dyn onnx_compress::passes::Calibrator),
    )
    .with_context(|| a.input.display().to_string())?;
    let options = a
        .calib
        .record(serde_json::to_value(&report.options)?, QUANTIZE_CALIB_SAMPLES);
    let summary = write_output(
        out,
        Destination {
            input: &a.input,
            output: &a.output,
            sources,
            tokenizer: a.tokenizer.as_deref(),
            external_data: ExternalData::Auto,
        },
        "quantize",
        options,
        None,
        None,
    )?;
    if a.json {
        print_json(&report)
    } else {
        print(&report::quantize_text(&report, &a.output, summary.bytes))
    }
}

fn cmd_lowrank(ort_lib: Option<&Path>, a: LowrankArgs) -> Result<()> {
    let rank = match (a.energy, a.ratio, a.rank) {
        (_, Some(r), _) => RankRule::Ratio(r),
        (_, _, Some(k)) => RankRule::Fixed(k),
        (e, _, _) => RankRule::Energy(e.unwrap_or(0.99)),
    };
    let opts = LowrankOptions {
        rank,
        k_min: a.k_min,
        k_max: a.k_max,
        apply_to: a.apply_to,
        layers: a.layers.clone(),
        denoise: a.denoise.then_some(a.shrink),
        force: a.force,
        target_params: a.target_params,
        seq_len: a.seq_len,
    };
    lowrank::validate(&opts)?;
    if a.calib.calib_data.is_some() && a.denoise {
        bail!("--denoise belongs to the weight-only method: drop it or --calib-data");
    }
    if a.calib.calib_data.is_some() && a.calib.calib_samples == Some(0) {
        bail!("--calib-samples must be at least 1");
    }
    let (model, sources) = read_input(&a.input, &a.output)?;
    let calibrator = a
        .calib
        .runner(ort_lib, &a.input, &model, CALIB_SAMPLES, a.tokenizer.as_deref())?;
    let (out, report) = if let Some(mut calibrator) = calibrator {
        lowrank::lowrank_calibrated(&model, &opts, &mut calibrator).with_context(|| a.input.display().to_string())?
    } else {
        lowrank::lowrank(&model, &opts).with_context(|| a.input.display().to_string())?
    };
    let options = a.calib.record(serde_json::to_value(&report.options)?, CALIB_SAMPLES);
    write_output(
        out,
        Destination {
            input: &a.input,
            output: &a.output,
            sources,
            tokenizer: a.tokenizer.as_deref(),
            external_data: ExternalData::Auto,
        },
        "lowrank",
        options,
        Some((report.params_before, report.params_after)),
        Some((report.encoder_macs_before, report.encoder_macs_after)),
    )?;
    if a.json {
        print_json(&report)
    } else {
        print(&report::lowrank_text(&report, &a.output))
    }
}
