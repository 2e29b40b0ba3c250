//! Run recipes: the reference experiment's YAML layout (`model`, `data`, `device`,
//! `prune.attention_heads` / `prune.mlp_neurons`, `quantization`, `rmt_lowrank`, and the keys it
//! has that this tool ignores with a note: [`reference`]), plus this project's own keys (`name`,
//! `calibration`, `eval`, `prune.target_macs`, quantization modes, low-rank budgets). Parsing
//! only: unknown keys and wrong types are errors naming the key and its line; [`model`] finds the
//! model file `model_name` means, [`plan`] maps a recipe to an executor plan and
//! [`crate::pipeline`] carries it out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::glue::Task;

pub mod model;
mod plan;
pub mod reference;

pub use model::ResolvedModel;
pub use plan::{lowrank_options, quantization_methods, quantize_options, recipe_key};

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One run: a model, the passes to apply (in the reference order: low-rank, heads, FFN,
/// quantization) and how to evaluate the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The row label in tables (default: the config's file stem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub device: DeviceSection,
    #[serde(default)]
    pub prune: PruneSection,
    #[serde(default)]
    pub quantization: QuantizationSection,
    #[serde(default)]
    pub rmt_lowrank: LowrankSection,
    /// Calibration data for the calibrated methods (obs pruning, static quantization,
    /// activation-aware low-rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSection>,
    #[serde(default)]
    pub eval: EvalSection,
    /// The reference's training setup: ignored with a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<reference::TrainerSection>,
    /// The reference's training-log setup: ignored with a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<reference::LoggingSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Path of the .onnx model, relative to the config file; or the reference's Hugging Face id,
    /// looked up as an export under `models/` ([`model::resolve`]).
    pub model_name: PathBuf,
    /// The reference's switch for fine-tuning first: `false` (this tool never trains) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_train: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A GLUE task: its files, labels and metrics (also the column names of `file`). Absent: the
    /// user's own labelled `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Default: 32 (MRPC 24), as the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Evaluation keeps file order; `true` is refused.
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default = "default_max_length")]
    pub max_input_length: usize,
    /// `validation` (the reference's name) or `dev`, `train`, or any `<split>.tsv`.
    #[serde(default = "default_split", skip_serializing_if = "is_default_split")]
    pub split: String,
    /// GLUE folder (relative to the config file); default: the tool's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A labelled data file to evaluate on instead of a GLUE folder's split (relative to the
    /// config file): .tsv, .csv, .jsonl or .parquet, read as `eval --data FILE` reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// `file`'s format (tsv, csv, jsonl, parquet) [default: by its extension].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `file`'s columns (`eval --text-column`, `--text-pair-column`, `--label-column`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// The model's class names in class order, comma-separated (`eval --labels`) or a YAML list.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "names_or_list")]
    pub labels: Option<String>,
}

/// A list of names as `eval --labels` takes it (`neg,pos`), or as a YAML list (`[neg, pos]`),
/// kept comma-separated.
fn names_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        One(String),
        List(Vec<String>),
    }
    match Option::<Names>::deserialize(d)? {
        None => Ok(None),
        Some(Names::One(s)) => Ok(Some(s)),
        Some(Names::List(names)) => match names.iter().find(|n| n.contains(',')) {
            Some(n) => Err(serde::de::Error::custom(format!(
                "labels: class name {n:?} holds a comma, which separates the names"
            ))),
            None => Ok(Some(names.join(","))),
        },
    }
}

/// A `format` key's value (checked by name when the recipe was read).
pub(crate) fn format_named(name: &Option<String>) -> Option<crate::data::Format> {
    name.as_deref()
        .and_then(<crate::data::Format as crate::options::Named>::from_name)
}

fn default_max_length() -> usize {
    128
}
fn default_split() -> String {
    "validation".into()
}
fn is_default_split(s: &str) -> bool {
    s == "validation"
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Run on ONNX Runtime's CUDA provider (an error where it is unavailable).
    #[serde(default)]
    pub cuda: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_heads: Option<PruneUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_neurons: Option<PruneUnit>,
    /// Keep this fraction of encoder MACs, chosen on the calibration data (needs `calibration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_macs: Option<f64>,
    /// With `target_macs`: the largest share of a layer's FFN neurons the allocation may remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ffn_fraction: Option<f64>,
    /// Round each layer's kept FFN neurons to a multiple of this (`target_macs` and
    /// `mlp_neurons`; for GPUs: 8 or 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_multiple_of: Option<usize>,
    /// With calibration: the same fraction in every layer instead of model-wide placement.
    #[serde(default)]
    pub per_layer: bool,
    /// The reference's other pruning methods: ignored with a note when disabled, refused when
    /// enabled ([`reference`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<reference::TokensUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnitude: Option<reference::UnstructuredUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient: Option<reference::UnstructuredUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stochastic: Option<reference::UnstructuredUnit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneUnit {
    #[serde(default)]
    pub enable: bool,
    #[serde(default)]
    pub args: PruneUnitArgs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneUnitArgs {
    /// Fraction removed per layer (or model-wide with `obs`), in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_amount: Option<f64>,
    /// `l1`, `random`, or `obs` (calibrated; needs `calibration`).
    #[serde(default = "default_strategy")]
    pub strategy: String,
    #[serde(default)]
    pub seed: u64,
    /// `attention_heads` only: these heads instead of `prune_amount` (in every layer, or in
    /// `layer_idx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads_to_remove: Option<Vec<usize>>,
    /// `mlp_neurons` only: these FFN neurons instead of `prune_amount` (in every layer, or in
    /// `layer_idx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_to_remove: Option<Vec<usize>>,
    /// The one layer `heads_to_remove` / `neurons_to_remove` apply to (default: every layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_idx: Option<usize>,
}

impl Default for PruneUnitArgs {
    fn default() -> Self {
        PruneUnitArgs {
            prune_amount: None,
            strategy: default_strategy(),
            seed: 0,
            heads_to_remove: None,
            neurons_to_remove: None,
            layer_idx: None,
        }
    }
}

impl PruneUnitArgs {
    /// The units named by index (`heads_to_remove` or `neurons_to_remove`), if any.
    pub fn named(&self) -> Option<&Vec<usize>> {
        self.heads_to_remove.as_ref().or(self.neurons_to_remove.as_ref())
    }
}

fn default_strategy() -> String {
    "l1".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizationSection {
    #[serde(default)]
    pub enable: bool,
    /// The reference's `dynamic` (INT8 weights of every Linear, per tensor, embeddings in FP32)
    /// and `onnx` (ONNX Runtime's `quantize_dynamic` default), or this tool's `static`,
    /// `static_ort` (static in ONNX Runtime's fused form), `dynamic_per_channel` and `fp16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    /// `minmax`, `percentile` or `entropy` (static).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calib_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// `s8` or `u8`: how int8 weights are stored (u8: the same values + 128, exact on CPUs without
    /// VNNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_type: Option<String>,
    /// `u8` or `s8` (static).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_type: Option<String>,
    /// Quantize the word-embedding table too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<bool>,
    /// Node-name patterns kept in float.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// int8: run each FFN (dynamic: and Q/K/V) on the first token apart (default: on for this
    /// tool's methods, off for the reference's `dynamic` and `onnx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_first_token: Option<bool>,
    /// int8 with the split: run the other tokens' half on the real tokens only (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpad: Option<bool>,
    /// ONNX Runtime's int8 forms: each attention core as one ONNX `Attention` op (default on;
    /// no effect where the form is not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_op: Option<bool>,
    /// fp16: what stays float32, `norms` (the default) or `outputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16_float32: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowrankSection {
    #[serde(default)]
    pub enable: bool,
    #[serde(default)]
    pub denoise: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrink_method: Option<String>,
    /// `energy`, `ratio` or `fixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_min: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_max: Option<usize>,
    /// Fraction of the selected layers' parameters kept, allocated on the calibration data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_params: Option<f64>,
    /// Factorize even at or above break-even rank.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSection {
    /// A GLUE TSV of the task's train split, relative to the config file; or any data file
    /// (.tsv, .csv, .jsonl, .parquet) with its text columns named below where not usual ones.
    pub data: PathBuf,
    /// Examples drawn; by default as `prune` draws them for `prune.target_macs`
    /// ([`crate::passes::prune::default_calib_samples`]: 512, or 1024 below half the MACs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// `data`'s format (tsv, csv, jsonl, parquet) [default: by its extension].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `data`'s text columns (`--text-column`, `--text-pair-column` of the calibrated passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair_column: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    #[serde(default = "default_measure")]
    pub measure: usize,
    /// Intra-op threads, at most 4 per CPU available (0: ONNX Runtime's default).
    #[serde(default)]
    pub threads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            warmup: default_warmup(),
            measure: default_measure(),
            threads: 0,
            limit: None,
        }
    }
}

fn default_warmup() -> usize {
    10
}
fn default_measure() -> usize {
    50
}

/// A recipe read from a file, with the file's location for resolving relative paths.
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    pub path: PathBuf,
    pub recipe: Recipe,
    /// `data.task`, checked when the recipe was read (`None`: the user's own `data.file`).
    task: Option<Task>,
    /// One line per key of the reference's layout that is ignored (`path:line: ...`).
    notes: Vec<String>,
    /// `--model`: the model to use instead of `model_name`.
    model_override: Option<PathBuf>,
    /// The line of `model.model_name`, for errors found when the model is looked up.
    model_line: Option<usize>,
    /// The lines of `data.file` and `calibration.data`, for files that are not there.
    file_lines: [Option<usize>; 2],
}

impl LoadedRecipe {
    /// The row label: `name`, else the file stem.
    pub fn name(&self) -> String {
        self.recipe.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into())
        })
    }

    /// `p` relative to the config file's folder (absolute paths unchanged).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    pub fn task(&self) -> Option<Task> {
        self.task
    }

    /// How `data.file` is read (`None`: the GLUE folder's split).
    pub fn data_file(&self) -> Option<crate::data::Source> {
        let d = &self.recipe.data;
        let file = d.file.as_ref()?;
        Some(crate::data::Source {
            path: self.resolve(file),
            format: format_named(&d.format),
            columns: crate::data::Columns {
                text: d.text_column.clone(),
                pair: d.text_pair_column.clone(),
                label: d.label_column.clone(),
                named_in: Some("data"),
            },
            task: self.task,
        })
    }

    /// The keys of the reference's layout this recipe has and the tool ignores, one line each
    /// (`config.yaml:10: trainer is ...`), for the front end to show as notes.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The model file to run: `--model` when given, else what `model.model_name` names (a file
    /// relative to the config, or an export under `models/`, see [`model::resolve`]). Refuses a
    /// model whose `config.json` says it is out of scope. Errors name the key or flag.
    pub fn model(&self) -> Result<ResolvedModel, String> {
        let found = match &self.model_override {
            Some(p) if p.is_file() => ResolvedModel {
                path: p.clone(),
                source: "--model".into(),
            },
            Some(p) if p.is_dir() => {
                return Err(format!(
                    "--model {}: is a folder; pass the .onnx file inside it",
                    p.display()
                ))
            }
            Some(p) => return Err(format!("--model {}: no such file", p.display())),
            None => {
                let dir = self.path.parent().unwrap_or(Path::new(""));
                model::resolve(&self.recipe.model.model_name, dir).map_err(|e| format!("{}: {e}", self.model_key()))?
            }
        };
        if let Some(why) = model::config_refusal(&found.path) {
            return Err(match &self.model_override {
                Some(_) => format!("--model {why}"),
                None => format!("{}: {why}", self.model_key()),
            });
        }
        Ok(found)
    }

    /// The files `data.file` and `calibration.data` (when a step calibrates) name must be there:
    /// said by their keys (they were said by the command-line flags when read).
    pub fn check_files(&self) -> Result<(), String> {
        let calibrates = self.plan().map_or(true, |p| p.needs_calibration());
        let files = [
            ("data.file", self.recipe.data.file.as_ref()),
            (
                "calibration.data",
                self.recipe.calibration.as_ref().map(|c| &c.data).filter(|_| calibrates),
            ),
        ];
        for ((key, file), line) in files.into_iter().zip(self.file_lines) {
            let Some(file) = file else { continue };
            let path = self.resolve(file);
            let at = line.map_or(key.to_string(), |l| format!("{key} (line {l})"));
            if path.is_dir() {
                return Err(format!("{at}: {} is a folder; name the data file", path.display()));
            }
            if !path.exists() {
                return Err(format!(
                    "{at}: {}: no such file (a path relative to the recipe's folder)",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// The files running the recipe reads (each with what it is): the recipe, its data and
    /// calibration files, the model and the files read with it ([`crate::eval::files_read_with`]).
    pub fn files_read(&self) -> Vec<(PathBuf, String)> {
        let mut files = vec![(self.path.clone(), format!("the recipe {}", self.path.display()))];
        if let Some(f) = &self.recipe.data.file {
            files.push((self.resolve(f), "a recipe's data.file".into()));
        }
        if let Some(c) = &self.recipe.calibration {
            files.push((self.resolve(&c.data), "a recipe's calibration data".into()));
        }
        if let Ok(m) = self.model() {
            files.extend(
                crate::eval::files_read_with(&m.path)
                    .into_iter()
                    .map(|(p, what)| (p, what.to_string())),
            );
            files.push((m.path, "a recipe's model".into()));
        }
        files
    }

    /// `model.model_name (line N)`.
    fn model_key(&self) -> String {
        match self.model_line {
            Some(l) => format!("model.model_name (line {l})"),
            None => "model.model_name".into(),
        }
    }

    /// The data split as a file stem of the task folder (`validation` → `dev`).
    pub fn split(&self) -> String {
        match self.recipe.data.split.as_str() {
            "validation" | "val" => "dev".into(),
            s => s.into(),
        }
    }

    /// No pass enabled: the model as it is.
    pub fn is_baseline(&self) -> bool {
        let r = &self.recipe;
        !r.rmt_lowrank.enable
            && !r.quantization.enable
            && r.prune.target_macs.is_none()
            && !r.prune.attention_heads.as_ref().is_some_and(|u| u.enable)
            && !r.prune.mlp_neurons.as_ref().is_some_and(|u| u.enable)
    }

    /// Whether every enabled pass is one of the reference experiment's own methods (one-shot
    /// l1/random pruning, its quantization methods, RMT low-rank without calibration).
    pub fn is_reference_method(&self) -> bool {
        let r = &self.recipe;
        let prune_ref = |u: &Option<PruneUnit>| {
            u.as_ref().is_none_or(|u| {
                !u.enable || (u.args.named().is_none() && matches!(u.args.strategy.as_str(), "l1" | "random"))
            })
        };
        !self.is_baseline()
            && r.prune.target_macs.is_none()
            && prune_ref(&r.prune.attention_heads)
            && prune_ref(&r.prune.mlp_neurons)
            && (!r.quantization.enable || matches!(r.quantization.method.as_deref(), Some("dynamic" | "onnx") | None))
            && (!r.rmt_lowrank.enable || r.rmt_lowrank.target_params.is_none())
            && r.calibration.is_none()
    }
}

/// Parses a recipe from YAML text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<LoadedRecipe, RecipeError> {
    parse_with_model(text, path, None)
}

/// Parses a recipe whose model is `model` (`--model`) when given, instead of its `model_name`.
/// A `model_name` naming a model family out of scope (`t5-small`) is refused first, before any
/// other key is looked at, unless `model` replaces it.
pub fn parse_with_model(text: &str, path: &Path, model: Option<&Path>) -> Result<LoadedRecipe, RecipeError> {
    let invalid = |message: String| RecipeError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    // A byte-order mark (Windows editors write one) is not YAML's first document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| invalid(yaml_message(&e, text)))?;
    if !value.is_mapping() {
        return Err(invalid(if value.is_null() {
            "the recipe is empty: it needs at least `model: {model_name: ...}` and `data` (examples in configs/)".into()
        } else {
            "not a recipe: a recipe is a YAML mapping of `model`, `data` and the passes' sections (examples in configs/)".into()
        }));
    }
    if model.is_none() {
        let name = value
            .get("model")
            .and_then(|m| m.get("model_name"))
            .and_then(|n| n.as_str());
        if let Some(why) = name.filter(|n| !n.ends_with(".onnx")).and_then(model::name_refusal) {
            return Err(invalid(format!("{}: {why}", at(text, "model.model_name"))));
        }
    }
    let recipe: Recipe = serde_yaml::from_str(text).map_err(|e| invalid(yaml_message(&e, text)))?;
    check_written(&value, text).map_err(invalid)?;
    let task = check(&recipe, text).map_err(invalid)?;
    let notes = reference::ignored(&recipe)
        .map_err(|(key, why)| invalid(format!("{}: {why}", at(text, key))))?
        .into_iter()
        .map(|n| match line_of_path(text, &n.key.split('.').collect::<Vec<_>>()) {
            Some(l) => format!("{}:{l}: {}", path.display(), n.message),
            None => format!("{}: {}", path.display(), n.message),
        })
        .collect();
    let loaded = LoadedRecipe {
        path: path.to_path_buf(),
        recipe,
        task,
        notes,
        model_override: model.map(Path::to_path_buf),
        model_line: line_of_path(text, &["model", "model_name"]),
        file_lines: [
            line_of_path(text, &["data", "file"]),
            line_of_path(text, &["calibration", "data"]),
        ],
    };
    // The passes' own option checks (names of sets, rules and methods; ranges), before any model is read.
    let plan = loaded.plan().map_err(|e| {
        let section = e.split(['.', ':']).next().unwrap_or("");
        invalid(format!("{}: {e}", at(text, section)))
    })?;
    plan.validate()
        .map_err(|e| invalid(loaded.plan_error(&plan, &e, text)))?;
    let mut loaded = loaded;
    // A calibration section no step reads (fixed-rank low rank with it stays weight SVD).
    if loaded.recipe.calibration.is_some() && !plan.needs_calibration() {
        let line = line_of_path(text, &["calibration"]).map_or(String::new(), |l| format!(":{l}"));
        loaded.notes.push(format!(
            "{}{line}: calibration is read by no step of this recipe (static quantization, pruning with strategy obs or target_macs, low rank with target_params): it is not used",
            path.display()
        ));
    }
    Ok(loaded)
}

/// Reads and parses a recipe file.
pub fn load(path: &Path) -> Result<LoadedRecipe, RecipeError> {
    load_with_model(path, None)
}

/// Reads and parses a recipe file whose model is `model` (`--model`) when given.
pub fn load_with_model(path: &Path, model: Option<&Path>) -> Result<LoadedRecipe, RecipeError> {
    if path.is_dir() {
        return Err(RecipeError::Invalid {
            path: path.to_path_buf(),
            message:
                "a folder, not a recipe: name a .yaml file (`onnx-compress bench FOLDER` runs the recipes of a folder)"
                    .into(),
        });
    }
    // A pipe would be waited on, a device (/dev/zero) read until memory runs out.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(RecipeError::Invalid {
            path: path.to_path_buf(),
            message: "not a file (a device, a pipe or a socket): name a .yaml recipe".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::InvalidData => RecipeError::Invalid {
            path: path.to_path_buf(),
            message: "not a recipe: not UTF-8 text (run and bench take YAML recipes; `eval --model` evaluates a model)"
                .into(),
        },
        _ => RecipeError::Io {
            path: path.to_path_buf(),
            cause,
        },
    })?;
    parse_with_model(&text, path, model)
}

/// The recipe as YAML (what `parse` reads back to an equal recipe).
pub fn to_yaml(recipe: &Recipe) -> String {
    // Plain data (strings, numbers, booleans, lists): serde_yaml cannot fail on it.
    serde_yaml::to_string(recipe).expect("recipes serialize")
}

/// serde_yaml's message with the location spelled as "line L column C" and the key path first,
/// and what a tab in the indentation means.
fn yaml_message(e: &serde_yaml::Error, text: &str) -> String {
    let msg = e.to_string();
    if msg.contains("more than one document") {
        return "more than one YAML document (a second `---`): write one recipe per file".into();
    }
    // A key given twice: serde_yaml names the line of the mapping that holds it (line 1 for a
    // top-level key); name the lines that give it.
    if let (Some((section, key)), Some(loc)) = (
        msg.split_once("duplicate entry with key \"")
            .and_then(|(section, rest)| Some((section, rest.split_once('"')?.0))),
        e.location(),
    ) {
        // The mapping's keys: the lines from its first at its indentation, until one less indented.
        let indent = |l: &str| l.len() - l.trim_start().len();
        let all: Vec<&str> = text.lines().collect();
        let start = loc.line().saturating_sub(1);
        let depth = all.get(start).map_or(0, |l| indent(l));
        let lines: Vec<String> = all
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .take_while(|(_, l)| indent(l) >= depth)
            .filter(|(_, l)| {
                let l = l.trim_start();
                l.strip_prefix(key)
                    .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
            .filter(|(_, l)| indent(l) == depth)
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if lines.len() >= 2 {
            return format!("{section}`{key}` is given twice (lines {}): keep one", lines.join(", "));
        }
    }
    // serde_yaml's words for this tool's numbers are Rust's ("expected usize"): say them plainly.
    let msg = [
        // Without a range: the key's own check says it (a batch size is at least 1).
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ]
    .iter()
    .fold(msg, |m, (rust, plain)| m.replace(rust, plain));
    // A section given as a value ("model: m.onnx") is "expected struct ModelSection"; a number past
    // 64 bits is "as u128, expected any YAML value".
    // (serde's words end the message, before any " at line": a value of the user's that holds
    // the same words is left as it is.)
    let serde_end = |msg: &str, what: &str| -> Option<(usize, usize)> {
        let at = msg.rfind(what)?;
        let rest = &msg[at + what.len()..];
        let end = rest.find(|c: char| !c.is_alphanumeric()).unwrap_or(rest.len());
        let tail = &rest[end..];
        (end > 0 && (tail.is_empty() || tail.starts_with(" at line"))).then_some((at, at + what.len() + end))
    };
    let msg = match serde_end(&msg, ", expected struct ") {
        Some((from, to)) => format!(
            "{}, expected a section: keys indented under it{}",
            &msg[..from],
            &msg[to..]
        ),
        None => msg,
    };
    let msg = ["u128", "i128"].iter().fold(msg, |m, t| {
        m.replace(
            &format!(" as {t}, expected any YAML value"),
            ", a number too large for any setting",
        )
    });
    // serde_yaml already writes "path.to.key: message at line L column C"; keep it, but say
    // where when it only knows the line.
    let msg = match e.location() {
        Some(loc) if !msg.contains("line") => format!("{msg} (line {})", loc.line()),
        _ => msg,
    };
    let tab = e.location().and_then(|loc| {
        let line = text.lines().nth(loc.line().saturating_sub(1))?;
        let indent = &line[..line.len() - line.trim_start().len()];
        indent.contains('\t').then_some(loc.line())
    });
    match tab {
        Some(l) => format!("{msg}: line {l} is indented with a tab, and YAML indents with spaces only"),
        None => msg,
    }
}

/// Checks of what the text says that the parsed recipe no longer shows: a pass section with
/// settings and no `enable` (off, by the reference's rule, so the settings did nothing), and a
/// `data.split` beside `data.file` (which names the file already).
fn check_written(value: &serde_yaml::Value, text: &str) -> Result<(), String> {
    for path in [
        &["quantization"][..],
        &["rmt_lowrank"],
        &["prune", "attention_heads"],
        &["prune", "mlp_neurons"],
    ] {
        let section = path.iter().try_fold(value, |v, k| v.get(k));
        let Some(m) = section.and_then(|s| s.as_mapping()) else {
            continue;
        };
        if !m.is_empty() && m.get("enable").is_none() {
            return Err(format!(
                "{}: has settings but no `enable`, and a section is off unless `enable: true`: add `enable: true` to apply it (or `enable: false` to keep it off)",
                at(text, &path.join("."))
            ));
        }
    }
    let data = value.get("data");
    if data.and_then(|d| d.get("file")).is_some() && data.and_then(|d| d.get("split")).is_some() {
        return Err(format!(
            "{}: picks a file of a GLUE folder; `data.file` names the file already: drop it",
            at(text, "data.split")
        ));
    }
    Ok(())
}

/// The 1-based line where `key` first appears as a mapping key in `text` (for errors found
/// after parsing).
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
        })
        .map(|i| i + 1)
}

/// The 1-based line of the mapping key `path` (each key written inside the one before it, one
/// indentation level deeper; comments skipped), when written in block style. Otherwise the line
/// of the deepest enclosing key found (`args: { prune_amount: 2 }` gives the `args` line), with
/// `false`.
fn find_path(text: &str, path: &[&str]) -> Option<(usize, bool)> {
    let mut want = 0;
    // Indentation of the last key found, and of the keys looked at now (set by the first line
    // inside the last key found).
    let mut parent: Option<usize> = None;
    let mut level: Option<usize> = None;
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = line.len() - t.len();
        if parent.is_some_and(|p| indent <= p) {
            break;
        }
        let t = t.trim_start_matches("- ");
        let key = path.get(want)?;
        if indent == *level.get_or_insert(indent) && t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
        {
            found = Some(i + 1);
            want += 1;
            if want == path.len() {
                return Some((i + 1, true));
            }
            parent = Some(indent);
            level = None;
        }
    }
    found.map(|l| (l, false))
}

/// The line of the block-style key `path` (see [`find_path`]).
fn line_of_path(text: &str, path: &[&str]) -> Option<usize> {
    find_path(text, path).and_then(|(l, exact)| exact.then_some(l))
}

/// `dotted` with the line where it is written: the key itself, else the enclosing key's line
/// (flow style), else the first line with its last key.
fn at(text: &str, dotted: &str) -> String {
    let path: Vec<&str> = dotted.split('.').collect();
    let last = path.last().copied().unwrap_or(dotted);
    match find_path(text, &path).map(|(l, _)| l).or_else(|| line_of(text, last)) {
        Some(l) => format!("{dotted} (line {l})"),
        None => dotted.to_string(),
    }
}

/// Checks that cannot be expressed in types: names of tasks, strategies and methods, ranges.
/// Returns the task.
fn check(rec: &Recipe, text: &str) -> Result<Option<Task>, String> {
    let at = |dotted: &str| at(text, dotted);
    let task = rec
        .data
        .task
        .as_deref()
        .map(|t| Task::from_name(t).map_err(|e| format!("{}: {e}", at("data.task"))))
        .transpose()?;
    check_data(rec, task, &at)?;
    if rec.data.shuffle {
        return Err(format!(
            "{}: true is not supported: evaluation keeps the file's order (set it to false)",
            at("data.shuffle")
        ));
    }
    if rec.data.batch_size == Some(0) {
        return Err(format!("{}: must be at least 1", at("data.batch_size")));
    }
    if rec.data.max_input_length < 2 {
        return Err(format!("{}: must be at least 2", at("data.max_input_length")));
    }
    if rec.model.model_name.as_os_str().is_empty() {
        return Err(format!(
            "{}: empty; give the path of an .onnx model, or a Hugging Face id exported under models/",
            at("model.model_name")
        ));
    }
    for (key, unit, own, other) in [
        (
            "prune.attention_heads",
            &rec.prune.attention_heads,
            "heads_to_remove",
            "neurons_to_remove",
        ),
        (
            "prune.mlp_neurons",
            &rec.prune.mlp_neurons,
            "neurons_to_remove",
            "heads_to_remove",
        ),
    ] {
        let Some(u) = unit else { continue };
        let args = &u.args;
        let arg = |name: &str| at(&format!("{key}.args.{name}"));
        let (own_list, other_list) = if own == "heads_to_remove" {
            (&args.heads_to_remove, &args.neurons_to_remove)
        } else {
            (&args.neurons_to_remove, &args.heads_to_remove)
        };
        if other_list.is_some() {
            let unit = if other == "heads_to_remove" {
                "prune.attention_heads"
            } else {
                "prune.mlp_neurons"
            };
            return Err(format!("{}: belongs to {unit}.args", arg(other)));
        }
        if let Some(a) = args.prune_amount {
            if !(0.0..1.0).contains(&a) {
                return Err(format!("{}: {a} is outside [0, 1)", arg("prune_amount")));
            }
        }
        if !matches!(args.strategy.as_str(), "l1" | "random" | "obs") {
            return Err(format!(
                "{}: unknown strategy '{}' (l1, random, obs)",
                arg("strategy"),
                args.strategy
            ));
        }
        if args.layer_idx.is_some() && own_list.is_none() {
            return Err(format!(
                "{}: says which layer {own} applies to; give {own} or drop it",
                arg("layer_idx")
            ));
        }
        if !u.enable {
            continue;
        }
        match (args.prune_amount, own_list) {
            (Some(_), Some(_)) => return Err(format!("{}: give either prune_amount or {own}, not both", arg(own))),
            (None, None) => {
                return Err(format!(
                    "{}: enabled without prune_amount (the fraction to remove) or {own} (which to remove)",
                    at(key)
                ))
            }
            (None, Some(_)) if args.strategy != "l1" => {
                return Err(format!(
                    "{}: {} chooses by score; {own} names the units itself: drop one",
                    arg("strategy"),
                    args.strategy
                ))
            }
            _ => {}
        }
        if args.strategy == "obs" && rec.calibration.is_none() {
            return Err(format!(
                "{}: obs needs calibration data: add a `calibration:` section with `data: TRAIN.tsv`",
                arg("strategy")
            ));
        }
    }
    if let Some(m) = rec.prune.max_ffn_fraction {
        if !(m > 0.0 && m < 1.0) {
            return Err(format!("{}: {m} is outside (0, 1)", at("prune.max_ffn_fraction")));
        }
        if rec.prune.target_macs.is_none() {
            return Err(format!(
                "{}: bounds the allocation of a MAC budget: add `prune.target_macs`",
                at("prune.max_ffn_fraction")
            ));
        }
    }
    // Without a step that takes it the key would be dropped silently; its value is checked by
    // the pass (prune::validate), whose error names the key.
    if rec.prune.ffn_multiple_of.is_some()
        && rec.prune.target_macs.is_none()
        && !rec.prune.mlp_neurons.as_ref().is_some_and(|u| u.enable)
    {
        return Err(format!(
            "{}: rounds the FFN counts of `prune.target_macs` or `prune.mlp_neurons`: add one",
            at("prune.ffn_multiple_of")
        ));
    }
    if let Some(t) = rec.prune.target_macs {
        if !(t > 0.0 && t < 1.0) {
            return Err(format!(
                "{}: {t} is outside (0, 1) (1 keeps them all: nothing to prune)",
                at("prune.target_macs")
            ));
        }
        if rec.calibration.is_none() {
            return Err(format!(
                "{}: needs calibration data: add a `calibration:` section with `data: TRAIN.tsv`",
                at("prune.target_macs")
            ));
        }
        let enabled = |u: &Option<PruneUnit>| u.as_ref().is_some_and(|u| u.enable);
        if enabled(&rec.prune.attention_heads) || enabled(&rec.prune.mlp_neurons) {
            return Err(format!(
                "{}: choose either a MAC budget or per-unit amounts (attention_heads / mlp_neurons), not both",
                at("prune.target_macs")
            ));
        }
    }
    if rec.quantization.enable {
        let methods = quantization_methods();
        match rec.quantization.method.as_deref() {
            Some(m) if methods.contains(&m) => {}
            Some(m) => {
                return Err(format!(
                    "{}: unknown method '{m}' ({})",
                    at("quantization.method"),
                    methods.join(", ")
                ))
            }
            None => {
                return Err(format!(
                    "{}: enabled without a method ({})",
                    at("quantization"),
                    methods.join(", ")
                ))
            }
        }
        if matches!(rec.quantization.method.as_deref(), Some("static" | "static_ort")) && rec.calibration.is_none() {
            return Err(format!(
                "{}: static quantization needs calibration data: add a `calibration:` section",
                at("quantization.method")
            ));
        }
    }
    let lr = &rec.rmt_lowrank;
    if lr.enable {
        match lr.k_mode.as_deref() {
            None | Some("energy" | "ratio" | "fixed") => {}
            Some(m) => {
                return Err(format!(
                    "{}: unknown k_mode '{m}' (energy, ratio, fixed)",
                    at("rmt_lowrank.k_mode")
                ))
            }
        }
        if lr.target_params.is_some() && rec.calibration.is_none() {
            return Err(format!(
                "{}: needs calibration data: add a `calibration:` section",
                at("rmt_lowrank.target_params")
            ));
        }
    }
    if let Some(c) = &rec.calibration {
        if c.samples == Some(0) {
            return Err(format!("{}: must be at least 1", at("calibration.samples")));
        }
    }
    if rec.eval.limit == Some(0) {
        return Err(format!(
            "{}: must be at least 1 (or absent: every example)",
            at("eval.limit")
        ));
    }
    Ok(task)
}

/// The `data` and `calibration` keys of the user's own files: a task or a file, formats by name,
/// column keys only beside the file they name.
fn check_data(rec: &Recipe, task: Option<Task>, at: &dyn Fn(&str) -> String) -> Result<(), String> {
    use crate::data::Format;
    use crate::options::Named;
    let d = &rec.data;
    let format = |key: &str, f: &Option<String>| match f.as_deref() {
        Some(name) if Format::from_name(name).is_none() => Err(format!(
            "{}: unknown format '{name}' ({})",
            at(key),
            Format::names(", ")
        )),
        _ => Ok(()),
    };
    match &d.file {
        None => {
            if task.is_none() {
                return Err(format!(
                    "{}: give a GLUE task (`task: sst2`) or your own labelled file (`file: dev.csv`)",
                    at("data")
                ));
            }
            for (key, v) in [
                ("format", &d.format),
                ("text_column", &d.text_column),
                ("text_pair_column", &d.text_pair_column),
                ("label_column", &d.label_column),
            ] {
                if v.is_some() {
                    return Err(format!(
                        "{}: describes `data.file`, and there is none (a GLUE folder has its task's own columns)",
                        at(&format!("data.{key}"))
                    ));
                }
            }
        }
        Some(_) => {
            if d.dir.is_some() {
                return Err(format!(
                    "{}: a GLUE folder; `data.file` names the file to evaluate on already: drop one",
                    at("data.dir")
                ));
            }
            format("data.format", &d.format)?;
        }
    }
    // The model's class names: for your own labels, and under a task its outputs' names.
    if let Some(l) = &d.labels {
        crate::data::labels::parse_label_list(l).map_err(|e| format!("{}: {e}", at("data.labels")))?;
    }
    if let Some(c) = &rec.calibration {
        format("calibration.format", &c.format)?;
    }
    Ok(())
}

/// The recipes named on a command line: files as given, folders expanded to their `*.yaml` /
/// `*.yml` files in name order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RecipeError> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|cause| RecipeError::Io { path: p.clone(), cause })?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(RecipeError::Invalid {
                    path: p.clone(),
                    message: "folder holds no .yaml recipe".into(),
                });
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "model:\n  model_name: m.onnx\ndata:\n  task: sst2\n";

    #[test]
    fn minimal_recipe_is_a_baseline_with_reference_defaults() {
        let r = parse(MIN, Path::new("configs/x/base.yaml")).unwrap();
        assert!(r.is_baseline());
        assert!(!r.is_reference_method());
        assert_eq!(r.name(), "base");
        assert_eq!(r.split(), "dev");
        assert_eq!(r.recipe.data.max_input_length, 128);
        assert_eq!(r.recipe.eval.warmup, 10);
        assert_eq!(r.recipe.eval.measure, 50);
        assert_eq!(r.resolve(Path::new("m.onnx")), Path::new("configs/x/m.onnx"));
        let back = parse(&to_yaml(&r.recipe), Path::new("b.yaml")).unwrap();
        assert_eq!(back.recipe, r.recipe);
    }

    #[test]
    fn line_of_finds_nested_keys() {
        let text = "model:\n  model_name: a\nprune:\n  attention_heads:\n    args:\n      prune_amount: 2\n";
        assert_eq!(line_of(text, "prune_amount"), Some(6));
        assert_eq!(line_of(text, "model"), Some(1));
        assert_eq!(line_of(text, "absent"), None);
    }

    #[test]
    fn line_of_path_follows_the_nesting() {
        let text = "# c\nprune:\n  attention_heads:\n    args:\n      prune_amount: 1\n  mlp_neurons:\n    args: { prune_amount: 2 }\n  #magnitude:\n  magnitude:\n    enable: false\nmagnitude: 3\n";
        assert_eq!(
            line_of_path(text, &["prune", "attention_heads", "args", "prune_amount"]),
            Some(5)
        );
        assert_eq!(line_of_path(text, &["prune", "magnitude"]), Some(9));
        assert_eq!(line_of_path(text, &["magnitude"]), Some(11));
        assert_eq!(line_of_path(text, &["prune", "enable"]), None, "not a child of prune");
        // Flow style: the enclosing key's line.
        assert_eq!(
            line_of_path(text, &["prune", "mlp_neurons", "args", "prune_amount"]),
            None
        );
        assert_eq!(
            at(text, "prune.mlp_neurons.args.prune_amount"),
            "prune.mlp_neurons.args.prune_amount (line 7)"
        );
    }

    #[test]
    fn errors_name_key_and_line() {
        let bad = format!("{MIN}prune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: 1.5\n");
        let e = parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("prune.attention_heads.args.prune_amount (line 9)"), "{e}");
        let bad = format!("{MIN}pruning:\n  x: 1\n");
        let e = parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("unknown field `pruning`") && e.contains("line 5"), "{e}");
    }

    /// A pass section with settings and no `enable` is off by the reference's rule, so its
    /// settings would do nothing without a word: refused, saying what to add. A disabled
    /// section needs no settings.
    #[test]
    fn settings_without_enable_are_refused() {
        for (section, line) in [
            ("quantization:\n  method: dynamic\n", "quantization (line 5)"),
            ("rmt_lowrank: {energy: 0.9}\n", "rmt_lowrank (line 5)"),
            (
                "prune:\n  mlp_neurons:\n    args: {prune_amount: 0.2}\n",
                "prune.mlp_neurons (line 6)",
            ),
            (
                "prune:\n  attention_heads: {args: {prune_amount: 0.2}}\n",
                "prune.attention_heads (line 6)",
            ),
        ] {
            let e = parse(&format!("{MIN}{section}"), Path::new("c.yaml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(line) && e.contains("add `enable: true`"), "{e}");
        }
        for off in [
            "quantization:\n  enable: false\n  method: dynamic\n",
            "prune:\n  mlp_neurons: {enable: false}\n",
            "quantization: {}\n",
        ] {
            let r = parse(&format!("{MIN}{off}"), Path::new("c.yaml")).unwrap();
            assert!(r.is_baseline(), "{off}");
        }
    }

    /// A file that is not a recipe, an empty one, a byte-order mark and tab indentation.
    #[test]
    fn what_is_not_a_recipe_is_named() {
        let e = |text: &str| parse(text, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e("").contains("the recipe is empty"), "{}", e(""));
        assert!(e("# a comment\n").contains("the recipe is empty"));
        assert!(e("just words\n").contains("not a recipe"));
        assert!(parse(&format!("\u{feff}{MIN}"), Path::new("c.yaml")).is_ok());
        let tab = e("model:\n\tmodel_name: m.onnx\ndata: {task: sst2}\n");
        assert!(tab.contains("line 2 is indented with a tab"), "{tab}");
        // A key given twice: the lines that give it (serde_yaml named the mapping's first line),
        // at the top level and in a section whose other sections share the key.
        let twice = e("model:\n  model_name: m.onnx\ndata:\n  task: sst2\ndata:\n  task: mrpc\n");
        assert!(
            twice.contains("`data` is given twice (lines 3, 5): keep one"),
            "{twice}"
        );
        let nested = e(&format!(
            "{MIN}rmt_lowrank:\n  enable: false\nquantization:\n  enable: false\n  # off\n  method: dynamic\n  enable: true\n"
        ));
        let at = MIN.lines().count();
        assert!(
            nested.contains(&format!(
                "quantization: `enable` is given twice (lines {}, {}): keep one",
                at + 4,
                at + 7
            )),
            "{nested}"
        );
        // Numbers in words, not Rust's types.
        let float = e("model:\n  model_name: m.onnx\ndata:\n  task: sst2\n  max_input_length: 64.0\n");
        assert!(
            float.contains("data.max_input_length") && float.contains("expected a whole number"),
            "{float}"
        );
        let huge = e("model:\n  model_name: m.onnx\ndata:\n  task: sst2\n  batch_size: 99999999999999999999999\n");
        assert!(
            huge.contains("data.batch_size")
                && huge.contains("a number too large for any setting")
                && !huge.contains("u128"),
            "{huge}"
        );
        let negative = e("model:\n  model_name: m.onnx\ndata:\n  task: sst2\n  batch_size: -99999999999999999999999\n");
        assert!(
            negative.contains("a number too large for any setting") && !negative.contains("i128"),
            "{negative}"
        );
        // A value holding serde's words is left as written.
        let quoted = e("model: \"expected struct Foo, really\"\n");
        assert!(
            quoted.contains("\"expected struct Foo, really\", expected a section: keys indented under it"),
            "{quoted}"
        );
        // A section given a value: no Rust type's name.
        let flat = e("model: m.onnx\ndata:\n  task: sst2\n");
        assert!(
            flat.contains("model: invalid type: string \"m.onnx\", expected a section: keys indented under it")
                && !flat.contains("struct"),
            "{flat}"
        );
        let negative = e("model:\n  model_name: m.onnx\ndata:\n  task: sst2\n  batch_size: -3\n");
        assert!(
            negative.contains("data.batch_size")
                && negative.contains("integer `-3`, expected a whole number")
                && !negative.contains("0 or more"),
            "{negative}"
        );
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("model.onnx");
        std::fs::write(&binary, [0x08u8, 0xff, 0xfe, 0x00]).unwrap();
        let e = load(&binary).unwrap_err().to_string();
        assert!(e.contains("model.onnx: not a recipe: not UTF-8 text"), "{e}");
    }

    #[test]
    fn the_users_own_labelled_file_replaces_the_task() {
        let own = "model:\n  model_name: m.onnx\ndata:\n  file: dev.csv\n  text_column: review\n  label_column: stars\n  labels: bad,good\ncalibration:\n  data: train.jsonl\n  text_column: review\n";
        let r = parse(own, Path::new("cfg/own.yaml")).unwrap();
        assert_eq!(r.task(), None);
        let src = r.data_file().unwrap();
        assert_eq!(src.path, Path::new("cfg/dev.csv"));
        assert_eq!(
            (src.columns.text.as_deref(), src.columns.label.as_deref()),
            (Some("review"), Some("stars"))
        );
        assert_eq!(
            parse(&to_yaml(&r.recipe), Path::new("b.yaml")).unwrap().recipe,
            r.recipe
        );
        // GLUE recipes have no file.
        assert!(parse(MIN, Path::new("c.yaml")).unwrap().data_file().is_none());

        let refused = |text: &str, want: &[&str]| {
            let e = parse(text, Path::new("c.yaml")).unwrap_err().to_string();
            assert!(want.iter().all(|w| e.contains(w)), "{e}");
        };
        refused(
            "model:\n  model_name: m.onnx\ndata:\n  max_input_length: 64\n",
            &["data (line 3)", "task", "file"],
        );
        refused(
            &format!("{MIN}  label_column: y\n"),
            &["data.label_column (line 5)", "data.file"],
        );
        let with_file = "model:\n  model_name: m.onnx\ndata:\n  file: d.csv\n";
        refused(&format!("{with_file}  dir: glue\n"), &["data.dir (line 5)", "drop one"]);
        refused(&format!("{with_file}  split: dev\n"), &["data.split (line 5)"]);
        // Even the default split, written: it would be ignored.
        refused(
            &format!("{with_file}  split: validation\n"),
            &["data.split (line 5)", "drop it"],
        );
        // Class names as a YAML list read as the comma-separated ones (a name with a comma cannot).
        let listed = parse(&format!("{with_file}  labels: [bad, good]\n"), Path::new("c.yaml")).unwrap();
        assert_eq!(listed.recipe.data.labels.as_deref(), Some("bad,good"));
        refused(
            &format!("{with_file}  labels: [\"b,c\", good]\n"),
            &["labels", "\"b,c\"", "comma"],
        );
        // Under a task, the names are the model's outputs' (read by name onto the task's).
        let named = parse(
            &format!("{with_file}  task: sst2\n  labels: negative,positive\n"),
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(named.recipe.data.labels.as_deref(), Some("negative,positive"));
        refused(
            &format!("{with_file}---\n{with_file}"),
            &["more than one YAML document", "one recipe per file"],
        );
        refused(
            &format!("{with_file}  format: xlsx\n"),
            &["data.format (line 5)", "xlsx", "parquet"],
        );
        refused(
            &format!("{with_file}  labels: good\n"),
            &["data.labels (line 5)", "two"],
        );
        refused(
            &format!("{with_file}calibration:\n  data: t.csv\n  format: txt\n"),
            &["calibration.format (line 7)", "txt"],
        );
    }
}
