//! The command line's flags (clap derive): what each command accepts, its defaults and help.
//! Nothing here runs anything; [`super::options`] turns flags into library options.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use onnx_compress::auto::Objective;
use onnx_compress::data::Format;
use onnx_compress::options::Named;
use onnx_compress::passes::lowrank::{ApplyTo, Shrink};
use onnx_compress::passes::prune::Strategy;
use onnx_compress::passes::quantize::{ActivationType, CalibMethod, Fp16Float32, Mode, StaticForm, WeightType};
use onnx_compress::runtime::Device;

/// A value parser for one of the library's named choices, with each name's help.
fn choice<T: Named + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|(_, n, h)| PossibleValue::new(*n).help(*h)))
        // The parser above admits only these names.
        .map(|s| T::from_name(&s).unwrap_or(T::ALL[0].0))
}

/// The longest `--seq-len` for MAC counts: 2^20 tokens, past any encoder's position table (a
/// larger count saturated the MACs).
pub const MAX_SEQ_LEN: usize = 1 << 20;

/// A `--seq-len`: 1 to [`MAX_SEQ_LEN`].
fn seq_len(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_SEQ_LEN).contains(&n) => Ok(n),
        _ => Err(format!("a sequence length from 1 to {MAX_SEQ_LEN} tokens")),
    }
}

#[derive(Parser)]
#[command(name = "onnx-compress", version, about = "Compress BERT-family ONNX classifiers and measure what it costs", long_about = None)]
pub struct Cli {
    /// Path to libonnxruntime.so, for the commands that run a model (inspect runs none) (default: ORT_DYLIB_PATH, then the Python environment onnx-compress is installed in, then the project's .ort/lib, then python3's site-packages).
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// No progress on stderr (stage lines, bars); results, notes and errors still print.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show the transformer found in a model: layers, heads, FFN widths, parameters, MACs, history.
    Inspect {
        /// The .onnx model to inspect.
        model: PathBuf,
        /// Sequence length for the MAC count.
        #[arg(long, default_value_t = 128, value_parser = seq_len)]
        seq_len: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model on a GLUE task or your own labelled file: quality and speed, measured as the reference did.
    Eval(EvalArgs),
    /// Remove attention heads and FFN neurons: the graph is really sliced, per layer.
    Prune(PruneArgs),
    /// Replace Linear layers by two thin factors x·A·B (weight SVD, or activation-aware with --calib-data).
    Lowrank(LowrankArgs),
    /// Run one YAML recipe (the reference's config layout): apply its passes, evaluate, print the row.
    Run(RunArgs),
    /// Run many recipes of one task (or of your own data file) and write the results table (Markdown,
    /// CSV, JSON) and Pareto charts.
    Bench(BenchArgs),
    /// Quantize: INT8 (static, calibrated QDQ; or dynamic) with int8 embeddings, or float16.
    Quantize(QuantizeArgs),
    /// Re-encode a model (e.g. to or from external data), embedding its tokenizer and recording history.
    Convert(ConvertArgs),
    /// Compare two models on the same examples (labels optional): agreement, flipped predictions, margin change, per-layer drift.
    Diff(DiffArgs),
    /// Where accuracy goes: the cost of pruning each block and of INT8 on each MatMul, measured on calibration data.
    Sensitivity(SensitivityArgs),
    /// Search pruning × low rank × INT8 for the fastest (smallest, leanest) model within an accuracy budget.
    Auto(Box<AutoArgs>),
}

/// The model a pass command reads and writes, and how it reports.
#[derive(clap::Args)]
pub struct PassIo {
    /// The model to read (never modified).
    pub input: PathBuf,
    /// Where to write the result (atomically; must differ from INPUT).
    pub output: PathBuf,
    /// Tokenizer to embed, replacing one the input has embedded (default: the embedded one, else
    /// tokenizer.json beside INPUT).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The calibration flags of prune, lowrank and quantize.
#[derive(clap::Args)]
pub struct CalibArgs {
    /// Calibration data: a GLUE TSV of the task's train split (task from its header, or --task),
    /// or any CSV/TSV/JSONL/Parquet file of texts (see --text-column);
    /// prune: for --strategy obs, lowrank: activation-aware, quantize: --mode static.
    #[arg(long, value_name = "FILE")]
    pub calib_data: Option<PathBuf>,
    /// Number of calibration examples drawn (seeded by --seed) from --calib-data [default: 512;
    /// prune --target-macs below 0.5: 1024; quantize: 256].
    #[arg(long)]
    pub calib_samples: Option<usize>,
    /// GLUE task of --calib-data when its header does not tell (sst2, mrpc, qqp, ...).
    #[arg(long)]
    pub task: Option<String>,
    /// How to read --calib-data when it is not a GLUE TSV (no label column is needed).
    #[command(flatten)]
    pub file: DataFileArgs,
    /// Truncation length of calibration examples [default: 128].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Intra-op threads for calibration runs, at most 4 per CPU [default: 0, ONNX Runtime's choice].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed for drawing the calibration examples (prune: also for --strategy random) [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub io: PassIo,
    /// Fraction of attention heads to remove, in [0, 1). l1/random: in each layer, round(heads × F)
    /// (at least one kept); obs: of all heads of the model, placed where the calibration data says
    /// they cost least (--per-layer: in each layer).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub heads: f64,
    /// Fraction of FFN neurons to remove, in [0, 1): per layer or model-wide as --heads.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ffn: f64,
    /// How heads and neurons are chosen. Default: obs with --calib-data, else l1.
    #[arg(long, value_parser = choice::<Strategy>())]
    pub strategy: Option<Strategy>,
    /// Keep this fraction of encoder MACs (at --seq-len), in (0, 1): per-layer head and neuron
    /// counts are chosen globally on the calibration data (needs --calib-data).
    #[arg(long, value_name = "F", allow_negative_numbers = true, conflicts_with_all = ["heads", "ffn", "per_layer"])]
    pub target_macs: Option<f64>,
    /// With --target-macs: the largest share of one layer's FFN neurons the allocation may
    /// remove, in (0, 1) [default: 0.98 at --target-macs 0.5 and below, else 0.9].
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    pub max_ffn_fraction: Option<f64>,
    /// With calibration: remove the same fraction in every layer instead of placing the
    /// model-wide count where it costs least (l1 and random always work per layer).
    #[arg(long, requires = "calib_data")]
    pub per_layer: bool,
    /// Round each layer's kept FFN neurons to the nearest multiple of N (with --ffn or
    /// --target-macs). For GPUs: 8 or 64; widths like 1843 leave their fast kernels.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub ffn_multiple_of: usize,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Sequence length for the MAC counts in the report.
    #[arg(long, default_value_t = 128, value_parser = seq_len)]
    pub seq_len: usize,
}

/// What `run` and `bench` override in each recipe: its model and its evaluation.
#[derive(clap::Args)]
pub struct RecipeEval {
    /// The .onnx model to run instead of the recipe's model.model_name (bench: in every recipe).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Evaluate only the first N examples (overrides the recipe's eval.limit).
    #[arg(long)]
    pub limit: Option<usize>,
    /// GLUE folder for a recipe without data.dir (default: data/glue, then ../shared/data/glue,
    /// here, then in the checkout the binary was built from); refused for a recipe that names
    /// its own data.dir or data.file.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Untimed batches before timing starts (overrides the recipe's eval.warmup; default 10).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Batches timed after the warm-up (overrides the recipe's eval.measure; default 50).
    #[arg(long)]
    pub measure: Option<usize>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The recipe (YAML; paths in it are relative to its folder).
    pub config: PathBuf,
    /// Keep the compressed model here (written atomically); default: evaluated from a temporary file.
    #[arg(long, value_name = "MODEL")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub eval: RecipeEval,
    /// Print the run report as JSON (with every prediction).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Recipes, or folders of *.yaml recipes (those of --task are run, in name order; without
    /// --task, those on your own data file, data.file, else those of their one task).
    #[arg(required = true, value_name = "CONFIG")]
    pub configs: Vec<PathBuf>,
    /// The task whose recipes are run (sst2, mrpc, qqp, ...); without it, the recipes that evaluate
    /// on your own labelled file (data.file, the same in all of them), else the one task of the
    /// recipes given (several: refused).
    #[arg(long)]
    pub task: Option<String>,
    /// Folder for results.md, results.csv, results.json and the charts (default: bench/out/<task>,
    /// or bench/out/<data file's stem>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub eval: RecipeEval,
    /// Print the report as JSON instead of the Markdown table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub io: PassIo,
    /// static: int8 with calibrated activation ranges (QDQ, needs --calib-data); dynamic: int8 with
    /// ranges found at run time; fp16: float16 with float32 kept for LayerNorm, softmax and logits.
    #[arg(long, value_parser = choice::<Mode>())]
    pub mode: Mode,
    /// How activation ranges are chosen from the calibration data (static; default minmax).
    #[arg(long, value_parser = choice::<CalibMethod>())]
    pub calib_method: Option<CalibMethod>,
    /// For --calib-method percentile: the share of values kept, in (0, 100] (default 99.999).
    #[arg(long, allow_negative_numbers = true)]
    pub percentile: Option<f64>,
    /// One weight scale per output channel (the default).
    #[arg(long, conflicts_with = "per_tensor")]
    pub per_channel: bool,
    /// One weight scale per tensor (ONNX Runtime's quantize_dynamic default).
    #[arg(long)]
    pub per_tensor: bool,
    /// Weight type of the int8 modes (symmetric) [default: s8].
    #[arg(long, value_parser = choice::<WeightType>())]
    pub weight_type: Option<WeightType>,
    /// Activation type for static mode: u8 (asymmetric, the default) or s8 (symmetric).
    #[arg(long, value_parser = choice::<ActivationType>())]
    pub activation_type: Option<ActivationType>,
    /// Graph form of static mode: qdq (standard QuantizeLinear/DequantizeLinear pairs, the
    /// default) or ort (ONNX Runtime's MatMulIntegerToFloat with biases folded: faster there).
    #[arg(long, value_parser = choice::<StaticForm>())]
    pub static_form: Option<StaticForm>,
    /// Keep MatMuls whose node or weight name matches in float (fp16: nodes whose node name
    /// matches); `*`/`?` wildcards, else a substring. Repeatable. (int8 keeps Gemm nodes, the pooler and classifier, in float
    /// anyway.)
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Quantize the embedding tables too (the default).
    #[arg(long, conflicts_with = "no_embeddings")]
    pub embeddings: bool,
    /// Keep the embedding tables in float32.
    #[arg(long)]
    pub no_embeddings: bool,
    /// int8: run each FFN (dynamic: and the Q/K/V projections) on the first token ([CLS]) apart
    /// from the other tokens, with ranges of its own, so its outlier activations do not coarsen
    /// every other token's. The default, except with --per-tensor (which reproduces ONNX
    /// Runtime's quantize_dynamic). With --no-split-first-token, the last one given wins.
    #[arg(long, overrides_with = "no_split_first_token")]
    pub split_first_token: bool,
    /// int8: every block runs all tokens at once, as the model did.
    #[arg(long, overrides_with = "split_first_token")]
    pub no_split_first_token: bool,
    /// int8, with the first-token split: run the encoder on the real tokens only (by
    /// attention_mask: packed rows, padded again for each attention's scores, in two length
    /// groups per batch where the attention is one op; where the graph does not allow, the split
    /// blocks alone): padded batches run faster, the real tokens' values are the same (dynamic:
    /// ranges from real tokens only); one sequence at a time runs a few percent slower: leave it
    /// off there
    #[arg(long)]
    pub unpad: bool,
    /// int8, ONNX Runtime's forms (dynamic; static --static-form ort): keep each attention core as
    /// the separate ops the model has, in its own opset, instead of one ONNX Attention op (opset
    /// 23): for runtimes older than opset 23 (ONNX Runtime before 1.23). The same outputs; slower.
    #[arg(long)]
    pub no_attention_op: bool,
    /// fp16: what stays float32: norms (LayerNorm, softmax and the logits; the default) or
    /// outputs (the logits: LayerNorm and softmax in float16, whose kernels sum in float32; fewer
    /// Casts, faster on CUDA at large batches)
    #[arg(long, value_parser = choice::<Fp16Float32>(), value_name = "WHAT")]
    pub fp16_float32: Option<Fp16Float32>,
    #[command(flatten)]
    pub calib: CalibArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExternalMode {
    Auto,
    Always,
    Never,
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The model to read (never modified).
    pub input: PathBuf,
    /// Where to write the copy (written atomically; must differ from INPUT).
    pub output: PathBuf,
    /// Store tensors in OUTPUT.data: auto (only past protobuf's 2 GiB limit), always, never.
    #[arg(long, value_enum, default_value_t = ExternalMode::Auto)]
    pub external_data: ExternalMode,
    /// Tokenizer to embed, replacing one the input has embedded (default: the one found for INPUT,
    /// if any).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("rank_rule").args(["energy", "ratio", "rank", "target_params"]).multiple(false)))]
pub struct LowrankArgs {
    #[command(flatten)]
    pub io: PassIo,
    /// Rank = smallest k whose share of the spectral energy Σs² reaches E, in (0, 1] (default 0.99).
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    pub energy: Option<f64>,
    /// Rank = round(full rank × R), R in (0, 1].
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub ratio: Option<f64>,
    /// Rank = K in every selected layer, then clamped by --k-min/--k-max as any rank (the
    /// reference's fixed k); an error where K exceeds a layer's full rank.
    #[arg(long, value_name = "K")]
    pub rank: Option<usize>,
    /// Lower bound on the chosen rank (then capped at the layer's full rank).
    #[arg(long, value_name = "K")]
    pub k_min: Option<usize>,
    /// Upper bound on the chosen rank.
    #[arg(long, value_name = "K")]
    pub k_max: Option<usize>,
    /// Which Linear layers.
    #[arg(long, value_parser = choice::<ApplyTo>(), default_value = "exclude_classifier")]
    pub apply_to: ApplyTo,
    /// Encoder layers to touch, e.g. 4,5 (default: all; the pooler and classifier are not filtered by it).
    #[arg(long, value_delimiter = ',', value_name = "L,L,...")]
    pub layers: Option<Vec<usize>>,
    /// Denoise each weight before the SVD (the reference's RMT step: column standardization + shrinkage).
    #[arg(long)]
    pub denoise: bool,
    /// Shrinkage rule of --denoise.
    #[arg(long, value_parser = choice::<Shrink>(), default_value = "gavish_donoho", requires = "denoise")]
    pub shrink: Shrink,
    /// Factorize even where the rank is at or above break-even (k ≥ m·n/(m+n)).
    #[arg(long)]
    pub force: bool,
    /// With --calib-data: keep this fraction of the calibrated layers' weights (the selected
    /// encoder Linears' weight matrices; biases, pooler and classifier aside), in (0, 1); ranks
    /// are allocated across layers by output error per parameter (the report's `budget` line).
    #[arg(long, value_name = "F", requires = "calib_data", allow_negative_numbers = true)]
    pub target_params: Option<f64>,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Sequence length for the MAC counts in the report.
    #[arg(long, default_value_t = 128, value_parser = seq_len)]
    pub seq_len: usize,
}

/// How to read a data file (`eval --data FILE`, `--calib-data FILE`).
#[derive(clap::Args)]
pub struct DataFileArgs {
    /// Format of the data file: tsv, csv, jsonl or parquet [default: by its extension].
    #[arg(long, value_name = "FORMAT", value_parser = choice::<Format>())]
    pub format: Option<Format>,
    /// Column of the data file holding the text [default: the task's (a GLUE header's), else
    /// text, sentence1, question1, premise, sentence, question or content].
    #[arg(long, value_name = "NAME")]
    pub text_column: Option<String>,
    /// Column holding the second text of a pair [default: the text column's usual partner:
    /// text_pair, sentence2, question2, hypothesis].
    #[arg(long, value_name = "NAME")]
    pub text_pair_column: Option<String>,
}

impl DataFileArgs {
    /// The columns named, with `label` (eval's --label-column; calibration reads none).
    pub fn columns(&self, label: Option<String>) -> onnx_compress::data::Columns {
        onnx_compress::data::Columns {
            text: self.text_column.clone(),
            pair: self.text_pair_column.clone(),
            label,
            named_in: None,
        }
    }
}

/// How a data file's labels are read (`eval`, `diff`, `auto`).
#[derive(clap::Args)]
pub struct LabelArgs {
    /// Column holding the label [default: the task's, else label, labels, gold_label, score or
    /// target]. Labels are class indexes or class names; a model with one output reads numbers.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// The model's class names in class order (e.g. negative,positive): labels written as names
    /// are read by them, and under --task outputs named as the task's classes are read by name
    /// [default: the names embedded in the model, else id2label of config.json beside it].
    #[arg(long, value_name = "NAMES", allow_hyphen_values = true)]
    pub labels: Option<String>,
}

/// Which examples `eval` and `diff` read, and how their labels are read.
#[derive(clap::Args)]
pub struct EvalDataArgs {
    /// A GLUE task: sst2, mrpc, qqp (also cola, qnli, rte, mnli, stsb, wnli): its files, labels
    /// and metrics. Leave it out to evaluate your own labelled file (--data FILE).
    #[arg(long)]
    pub task: Option<String>,
    /// A GLUE folder holding <task>/<split>.tsv (default: data/glue, then ../shared/data/glue, each
    /// here, then in the checkout this binary was built from), or a labelled data file: .tsv,
    /// .csv, .jsonl or .parquet (Hugging Face datasets' files).
    #[arg(long, value_name = "DIR|FILE")]
    pub data: Option<PathBuf>,
    /// Which file of the GLUE task folder to read: dev, train, or any <split>.tsv there [default: dev].
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub file: DataFileArgs,
    #[command(flatten)]
    pub label: LabelArgs,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The .onnx model to evaluate.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Default: 32 (MRPC: 24), as the reference.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Truncate each example (or pair, longest first) to this many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// cpu, or cuda (ONNX Runtime's CUDA execution provider; an error where unavailable, never a fallback).
    #[arg(long, value_parser = choice::<Device>(), default_value = "cpu")]
    pub device: Device,
    /// Intra-op threads, at most 4 per CPU (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Untimed batches before timing starts.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Batches timed after the warm-up.
    #[arg(long, default_value_t = 50)]
    pub measure: usize,
    /// Evaluate only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Batch examples of similar length together (predictions stay in file order).
    #[arg(long)]
    pub bucket: bool,
    /// Keep denormal floats (by default ONNX Runtime flushes them to zero: the masked softmax
    /// produces them and they slow the CPU several times; no prediction changes).
    #[arg(long)]
    pub keep_denormals: bool,
    /// tokenizer.json to use (default: embedded in the model, then beside it).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Print JSON (with every prediction) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The first model (the reference, e.g. the uncompressed one).
    pub model_a: PathBuf,
    /// The second model (e.g. its compressed version).
    pub model_b: PathBuf,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Default: 32 (MRPC: 24).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Truncate each example (or pair, longest first) to this many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Compare only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Relative error of a layer's hidden states that counts as divergence (the report names the
    /// first layer past it).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub threshold: f64,
    /// How many flipped examples to list (all are counted; --json and --csv have every example).
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// cpu, or cuda (an error where unavailable, never a fallback).
    #[arg(long, value_parser = choice::<Device>(), default_value = "cpu")]
    pub device: Device,
    /// Intra-op threads, at most 4 per CPU (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// tokenizer.json to use (default: the one of MODEL_A: embedded, then beside it).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Also write every example's row (predictions, margins, change) to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print JSON (with every example's row) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct SensitivityArgs {
    /// The model to measure (never modified).
    pub model: PathBuf,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Pruning fractions measured per block, each in (0, 1).
    #[arg(long, value_delimiter = ',', value_name = "F,F,...", default_value = "0.25,0.5,0.75")]
    pub fractions: Vec<f64>,
    /// Skip the per-MatMul INT8 measurements (about half the time on BERT layouts).
    #[arg(long)]
    pub no_int8: bool,
    /// Sequence length for the MACs saved.
    #[arg(long, default_value_t = 128, value_parser = seq_len)]
    pub seq_len: usize,
    /// tokenizer.json to use (default: the model's: embedded, then beside it).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Write sensitivity.csv, sensitivity.json and the chart (sensitivity.svg, .png) into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct AutoArgs {
    /// The model to compress (never modified).
    pub model: PathBuf,
    /// Where the chosen model is written (atomically; nothing is written when no candidate is within the budget).
    pub out: PathBuf,
    /// A GLUE task: its columns, labels and dev split (sst2, mrpc, qqp, ...; classification).
    /// Leave it out for your own labelled files: --data FILE names the one to report on.
    #[arg(long)]
    pub task: Option<String>,
    /// Labelled training examples (a GLUE TSV of the task, or any .tsv/.csv/.jsonl/.parquet file
    /// with its columns found or named as eval reads them), split into a calibration part and a
    /// disjoint selection part.
    #[arg(long, value_name = "TRAIN")]
    pub calib_data: PathBuf,
    #[command(flatten)]
    pub file: DataFileArgs,
    #[command(flatten)]
    pub label: LabelArgs,
    /// Calibration examples: the first drawn (seeded by --seed), as every calibrated pass draws them.
    #[arg(long, default_value_t = 512)]
    pub calib_samples: usize,
    /// Selection examples: the ones drawn after the calibration part (all of them when fewer
    /// remain). Every choice is made on them; more examples, a smaller standard error of each
    /// candidate's drop.
    #[arg(long, default_value_t = 4096)]
    pub selection: usize,
    /// Choose on this labelled file instead (e.g. a validation split the model was not fine-tuned
    /// on; --selection examples drawn from it, all when it has fewer), read like TRAIN.
    #[arg(long, value_name = "FILE")]
    pub selection_data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Accuracy points the chosen model may lose on the selection part.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub max_drop: f64,
    /// How int8 weights are stored: s8, or u8 (the same values + 128: exact on CPUs without VNNI,
    /// where s8 weights can saturate, and slower there) [default: s8].
    #[arg(long, value_parser = choice::<WeightType>())]
    pub weight_type: Option<WeightType>,
    /// The largest share of one layer's FFN neurons a pruning level may take (prune
    /// --max-ffn-fraction) [default: prune's, 0.98 for levels at half the MACs and below, else 0.9].
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    pub max_ffn_fraction: Option<f64>,
    /// Build static INT8 candidates without quantize --unpad (by default their split blocks run
    /// on the real tokens only: the same model, faster on padded batches; a few small ops more on
    /// batches without padding, e.g. --bucket; --batch-size 1 builds them padded itself).
    #[arg(long)]
    pub no_unpad: bool,
    /// One-sided confidence that a candidate is within --max-drop: its selection drop plus this
    /// level's normal quantile times the paired standard error must be (0.5: the drop alone; 0.9:
    /// the drop + 1.28 standard errors).
    #[arg(long, default_value_t = 0.9)]
    pub confidence: f64,
    #[arg(long, value_parser = choice::<Objective>(), default_value = "speed")]
    pub objective: Objective,
    /// Stop starting new pruning levels when this would be exceeded (90s, 30m, 2h; a --plan's
    /// jobs run as long as they take).
    #[arg(long, default_value = "30m")]
    pub time_budget: String,
    /// Encoder MAC fractions kept by calibrated pruning, tried by bisection (then refined; for
    /// speed and size a level within the budget in float only counts as beyond it where a number
    /// format alone is within) ('none': skip) [default: 0.8,0.7,0.6,0.5,0.4].
    #[arg(long, value_delimiter = ',', value_name = "F,F,...|none")]
    pub prune: Option<Vec<String>>,
    /// Parameter fractions kept by activation-aware low rank ('none': skip) [default: none for
    /// --objective speed (it rarely runs faster here), else 0.8].
    #[arg(long, value_delimiter = ',', value_name = "F,F,...|none")]
    pub lowrank: Option<Vec<String>>,
    /// Number formats tried on every structure beside float [default: cpu:
    /// dynamic_per_channel,static,static_ort; cuda: fp16] ('none': float only).
    #[arg(long, value_delimiter = ',', value_name = "METHOD,...|none")]
    pub quant: Option<Vec<String>>,
    /// cpu, or cuda (ONNX Runtime's CUDA execution provider; an error where unavailable).
    #[arg(long, value_parser = choice::<Device>(), default_value = "cpu")]
    pub device: Device,
    /// Intra-op threads for scoring and timing, at most 4 per CPU (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// What the chosen model is reported on, once, at the end: the task's GLUE folder (default:
    /// data/glue, then ../shared/data/glue), or your own labelled file (read like TRAIN; never
    /// chosen on).
    #[arg(long, value_name = "DIR|FILE")]
    pub data: Option<PathBuf>,
    /// The GLUE folder's split of the final evaluation [default: dev].
    #[arg(long)]
    pub split: Option<String>,
    /// Work folder: journal (an interrupted search resumes from it), candidates, recipes, the
    /// front [default: OUT without .onnx, plus .auto].
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Rounds of paired timing (--objective speed) [default: 5].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Examples per batch, the batch size the model will serve at [default: the task's, as eval:
    /// 32, mrpc 24]: the selection and dev are scored in batches of N (by length; dynamic INT8
    /// finds its ranges per batch) and timed in them (--objective speed; the timed examples are
    /// the same: the selection's first 8 default batches, in draw order). 1: one sequence at a
    /// time, where static INT8 candidates are built without --unpad (no padding to skip).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Write the search as independent jobs into DIR instead (jobs.txt: one command per line;
    /// Makefile; collect.sh), one per level: the formats alone, each --prune and --lowrank value.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collect", "only", "jobs"])]
    pub plan: Option<PathBuf>,
    /// Choose from the results of a plan's jobs in DIR (builds nothing), then as a search ends.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["only", "jobs"])]
    pub collect: Option<PathBuf>,
    /// A plan's job: build and score one level (base, p0.60, lr0.80) into --work, then stop.
    #[arg(long, value_name = "LEVEL", requires = "work", conflicts_with = "jobs")]
    pub only: Option<String>,
    /// Run the plan's jobs here, N at a time (in --work), then collect.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print the report as JSON (every candidate) instead of text.
    #[arg(long)]
    pub json: bool,
}
