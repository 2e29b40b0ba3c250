//! Run recipes: the reference experiment's YAML layout (`model`, `data`, `device`,
//! `prune.attention_heads` / `prune.mlp_neurons`, `quantization`, `rmt_lowrank`) with a model path
//! in place of the hub id, plus this project's own keys (`name`, `calibration`, `eval`,
//! `prune.target_macs`, quantization modes, low-rank budgets). Parsing only: unknown keys and wrong
//! types are errors naming the key and its line; [`plan`] maps a recipe to an executor plan and
//! [`crate::pipeline`] carries it out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::glue::Task;

mod plan;

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Path of the .onnx model, relative to the config file (the reference's hub id slot).
    pub model_name: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub task: String,
    /// Default: 32 (MRPC 24), as the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Evaluation keeps file order; `true` is refused.
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default = "default_max_length")]
    pub max_input_length: usize,
    /// `validation` (the reference's name) or `dev`, `train`, or any `<split>.tsv`.
    #[serde(default = "default_split")]
    pub split: String,
    /// GLUE folder (relative to the config file); default: the tool's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

fn default_max_length() -> usize {
    128
}
fn default_split() -> String {
    "validation".into()
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
    /// With calibration: the same fraction in every layer instead of model-wide placement.
    #[serde(default)]
    pub per_layer: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneUnit {
    #[serde(default)]
    pub enable: bool,
    pub args: PruneUnitArgs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneUnitArgs {
    pub prune_amount: f64,
    /// `l1`, `random`, or `obs` (calibrated; needs `calibration`).
    #[serde(default = "default_strategy")]
    pub strategy: String,
    #[serde(default)]
    pub seed: u64,
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
    /// A GLUE TSV of the task's train split, relative to the config file.
    pub data: PathBuf,
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_samples() -> usize {
    512
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    #[serde(default = "default_measure")]
    pub measure: usize,
    /// Intra-op threads (0: ONNX Runtime's default).
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
    /// `data.task`, checked when the recipe was read.
    task: Task,
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

    pub fn task(&self) -> Task {
        self.task
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
            u.as_ref()
                .is_none_or(|u| !u.enable || matches!(u.args.strategy.as_str(), "l1" | "random"))
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
    let invalid = |message: String| RecipeError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let recipe: Recipe = serde_yaml::from_str(text).map_err(|e| invalid(yaml_message(&e)))?;
    let task = check(&recipe, text).map_err(invalid)?;
    let loaded = LoadedRecipe {
        path: path.to_path_buf(),
        recipe,
        task,
    };
    // The passes' own option checks (names of sets, rules and methods; ranges), before any model is read.
    let plan = loaded.plan().map_err(|e| {
        let section = e.split(['.', ':']).next().unwrap_or("");
        invalid(format!("{}: {e}", at(text, section)))
    })?;
    plan.validate()
        .map_err(|e| invalid(loaded.plan_error(&plan, &e, text)))?;
    Ok(loaded)
}

/// Reads and parses a recipe file.
pub fn load(path: &Path) -> Result<LoadedRecipe, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|cause| RecipeError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    parse(&text, path)
}

/// The recipe as YAML (what `parse` reads back to an equal recipe).
pub fn to_yaml(recipe: &Recipe) -> String {
    // Plain data (strings, numbers, booleans, lists): serde_yaml cannot fail on it.
    serde_yaml::to_string(recipe).expect("recipes serialize")
}

/// serde_yaml's message with the location spelled as "line L column C" and the key path first.
fn yaml_message(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    // serde_yaml already writes "path.to.key: message at line L column C"; keep it, but say
    // where when it only knows the line.
    match e.location() {
        Some(loc) if !msg.contains("line") => format!("{msg} (line {})", loc.line()),
        _ => msg,
    }
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

/// `dotted` with the line where its last key is written, when found.
fn at(text: &str, dotted: &str) -> String {
    let last = dotted.rsplit('.').next().unwrap_or(dotted);
    match line_of(text, last) {
        Some(l) => format!("{dotted} (line {l})"),
        None => dotted.to_string(),
    }
}

/// Checks that cannot be expressed in types: names of tasks, strategies and methods, ranges.
/// Returns the task.
fn check(rec: &Recipe, text: &str) -> Result<Task, String> {
    let at = |dotted: &str| at(text, dotted);
    let task = Task::from_name(&rec.data.task).map_err(|e| format!("{}: {e}", at("data.task")))?;
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
            "{}: empty; give the path of an .onnx model",
            at("model.model_name")
        ));
    }
    for (key, unit) in [
        ("prune.attention_heads", &rec.prune.attention_heads),
        ("prune.mlp_neurons", &rec.prune.mlp_neurons),
    ] {
        let Some(u) = unit else { continue };
        let a = u.args.prune_amount;
        if !(0.0..1.0).contains(&a) {
            return Err(format!(
                "{}: {a} is outside [0, 1)",
                at(&format!("{key}.args.prune_amount"))
            ));
        }
        if !matches!(u.args.strategy.as_str(), "l1" | "random" | "obs") {
            return Err(format!(
                "{}: unknown strategy '{}' (l1, random, obs)",
                at(&format!("{key}.args.strategy")),
                u.args.strategy
            ));
        }
        if u.enable && u.args.strategy == "obs" && rec.calibration.is_none() {
            return Err(format!(
                "{}: obs needs calibration data: add a `calibration:` section with `data: TRAIN.tsv`",
                at(&format!("{key}.args.strategy"))
            ));
        }
    }
    if let Some(t) = rec.prune.target_macs {
        if !(t > 0.0 && t <= 1.0) {
            return Err(format!("{}: {t} is outside (0, 1]", at("prune.target_macs")));
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
        if c.samples == 0 {
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
    fn errors_name_key_and_line() {
        let bad = format!("{MIN}prune:\n  attention_heads:\n    enable: true\n    args:\n      prune_amount: 1.5\n");
        let e = parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("prune.attention_heads.args.prune_amount (line 9)"), "{e}");
        let bad = format!("{MIN}pruning:\n  x: 1\n");
        let e = parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("unknown field `pruning`") && e.contains("line 5"), "{e}");
    }
}
