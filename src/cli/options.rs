//! Flags → library options and plans: defaults that depend on other flags, checks that only make
//! sense on the command line (a flag that does not apply to a mode), and option errors rendered
//! as `--flag`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use onnx_compress::executor::{self, Calibration, Plan, PlanError};
use onnx_compress::glue::Task;
use onnx_compress::options::flag;
use onnx_compress::passes::lowrank::{LowrankOptions, RankRule};
use onnx_compress::passes::prune::{self, PruneOptions, Strategy};
use onnx_compress::passes::quantize::{self, CalibMethod, Mode, QuantizeOptions};
use onnx_compress::passes::Pass;

use onnx_compress::data;
use onnx_compress::eval::EvalData;

use super::flags::{CalibArgs, EvalDataArgs, LowrankArgs, PruneArgs, QuantizeArgs, RecipeEval};

/// Calibration examples drawn by default (quantize: [`QUANTIZE_CALIB_SAMPLES`]; prune: by its
/// target, [`prune::default_calib_samples`]).
pub const CALIB_SAMPLES: usize = 512;
pub const QUANTIZE_CALIB_SAMPLES: usize = 256;

/// An error (of any library call) as one line, option fields named as flags.
pub fn render(e: &anyhow::Error) -> String {
    executor::render_error(e, &|_, field| flag(field))
}

/// A plan's option error as an error naming the flags.
pub fn plan_error(e: PlanError) -> anyhow::Error {
    anyhow::anyhow!(e.error.render(&flag))
}

impl CalibArgs {
    /// The calibration of a pass command, when --calib-data was given. Without it, a flag that
    /// only says how to read or run it is an error (it did nothing); so is --seed unless
    /// `seed_used` (prune's --strategy random).
    pub fn calibration(
        &self,
        default_samples: usize,
        tokenizer: Option<&Path>,
        seed_used: bool,
    ) -> Result<Option<Calibration>> {
        let Some(data) = &self.calib_data else {
            for (set, flag) in [
                (self.calib_samples.is_some(), "--calib-samples"),
                (self.task.is_some(), "--task"),
                (self.file.format.is_some(), "--format"),
                (self.file.text_column.is_some(), "--text-column"),
                (self.file.text_pair_column.is_some(), "--text-pair-column"),
                (self.max_length.is_some(), "--max-length"),
                (self.threads.is_some(), "--threads"),
                (self.seed.is_some() && !seed_used, "--seed"),
            ] {
                if set {
                    bail!("{flag} is about calibration data, and no --calib-data is given: add --calib-data FILE or drop {flag}");
                }
            }
            return Ok(None);
        };
        Ok(Some(Calibration {
            data: data.clone(),
            format: self.file.format,
            columns: self.file.columns(None),
            task: self.task.as_deref().map(Task::from_name).transpose()?,
            samples: self.calib_samples.unwrap_or(default_samples),
            seed: self.seed.unwrap_or(0),
            max_length: self.max_length.unwrap_or(128),
            threads: self.threads.unwrap_or(0),
            tokenizer: tokenizer.map(Path::to_path_buf),
            recorded_as: None,
        }))
    }
}

/// `prune`'s plan: obs with calibration data, else l1 (or --strategy).
pub fn prune_plan(a: &PruneArgs) -> Result<Plan> {
    let calibrated = a.calib.calib_data.is_some();
    let strategy = a
        .strategy
        .unwrap_or(if calibrated { Strategy::Obs } else { Strategy::L1 });
    let opts = PruneOptions {
        heads: a.heads,
        ffn: a.ffn,
        strategy,
        seed: a.calib.seed.unwrap_or(0),
        seq_len: a.seq_len,
        target_macs: a.target_macs,
        max_ffn_fraction: a.max_ffn_fraction.unwrap_or_else(|| {
            a.target_macs
                .map_or(prune::DEFAULT_MAX_FFN_FRACTION, prune::default_max_ffn_fraction)
        }),
        per_layer: a.per_layer,
        ffn_multiple_of: a.ffn_multiple_of,
        // Named units are a recipe feature (the reference's `heads_to_remove`).
        remove_heads: None,
        remove_neurons: None,
    };
    if strategy != Strategy::Obs && calibrated {
        bail!("--calib-data is only used by --strategy obs (the default with calibration data)");
    }
    let plan = Plan::single(
        Pass::Prune(opts),
        a.calib.calibration(
            prune::default_calib_samples(a.target_macs),
            a.io.tokenizer.as_deref(),
            strategy == Strategy::Random,
        )?,
    );
    plan.validate().map_err(plan_error)?;
    if a.heads == 0.0 && a.ffn == 0.0 && a.target_macs.is_none() {
        bail!("nothing to prune: pass --heads F or --ffn F (fractions to remove), or --target-macs F");
    }
    Ok(plan)
}

/// `lowrank`'s plan: weight SVD, or activation-aware with --calib-data.
pub fn lowrank_plan(a: &LowrankArgs) -> Result<Plan> {
    let rank = match (a.energy, a.ratio, a.rank) {
        (_, Some(r), _) => RankRule::Ratio(r),
        (_, _, Some(k)) => RankRule::Fixed(k),
        (e, _, _) => RankRule::Energy(e.unwrap_or(0.99)),
    };
    let calibrated = a.calib.calib_data.is_some();
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
        activation_aware: calibrated,
    };
    let plan = Plan::single(
        Pass::Lowrank(opts),
        a.calib.calibration(CALIB_SAMPLES, a.io.tokenizer.as_deref(), false)?,
    );
    plan.validate().map_err(plan_error)?;
    if calibrated && a.denoise {
        bail!("--denoise belongs to the weight-only method: drop it or --calib-data");
    }
    Ok(plan)
}

/// `quantize`'s plan; flags that do not apply to the mode are errors.
pub fn quantize_plan(a: &QuantizeArgs) -> Result<Plan> {
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
    if a.mode == Mode::Static && a.calib.calib_data.is_none() {
        bail!("--mode static needs calibration data: add --calib-data TRAIN.tsv (or use --mode dynamic)");
    }
    if a.mode != Mode::Static && a.calib.calib_data.is_some() {
        bail!("--calib-data is only used by --mode static");
    }
    if a.mode == Mode::Fp16 && a.weight_type.is_some() {
        bail!("--weight-type applies to the int8 modes, not --mode fp16");
    }
    if a.mode == Mode::Fp16 {
        for (set, flag) in [
            (a.per_tensor, "--per-tensor"),
            (a.per_channel, "--per-channel"),
            (a.split_first_token, "--split-first-token"),
            (a.no_split_first_token, "--no-split-first-token"),
        ] {
            if set {
                bail!("{flag} applies to the int8 modes, not --mode fp16");
            }
        }
    }
    if a.unpad && a.mode == Mode::Fp16 {
        bail!("--unpad applies to the int8 modes, not --mode fp16");
    }
    if a.fp16_float32.is_some() && a.mode != Mode::Fp16 {
        bail!("--fp16-float32 applies to --mode fp16 only");
    }
    let defaults = QuantizeOptions::default();
    let opts = QuantizeOptions {
        mode: a.mode,
        per_channel: !a.per_tensor,
        weight_type: a.weight_type.unwrap_or(defaults.weight_type),
        activation_type: a.activation_type.unwrap_or(defaults.activation_type),
        calib_method: a.calib_method.unwrap_or(defaults.calib_method),
        percentile: a.percentile.unwrap_or(defaults.percentile),
        exclude: a.exclude.clone(),
        embeddings: !a.no_embeddings,
        static_form: a.static_form.unwrap_or(defaults.static_form),
        // At most one of the two flags is set (the last given wins); fp16 refuses the first above.
        split_first_token: a.split_first_token
            || (!a.no_split_first_token && quantize::split_by_default(a.mode, !a.per_tensor)),
        unpad: a.unpad,
        attention_op: !a.no_attention_op,
        fp16_float32: a.fp16_float32.unwrap_or(defaults.fp16_float32),
    };
    if a.no_attention_op && !opts.ort_forms() {
        bail!("--no-attention-op: no Attention op would be written; only ONNX Runtime's int8 forms with the first-token split write it (--mode dynamic, or --mode static --static-form ort; the split is on by default with per-channel weights, --split-first-token turns it on)");
    }
    let plan = Plan::single(
        Pass::Quantize(opts),
        a.calib
            .calibration(QUANTIZE_CALIB_SAMPLES, a.io.tokenizer.as_deref(), false)?,
    );
    plan.validate().map_err(plan_error)?;
    Ok(plan)
}

/// `--data PATH` when it names a file: the file, which cannot take `--split` (a GLUE folder's).
/// `None`: a folder, or no `--data`. A path that is neither is refused as such (a missing
/// `my_data.txt` read as a GLUE folder that needs --task).
fn data_file<'a>(data: &'a Option<PathBuf>, split: &Option<String>) -> Result<Option<&'a PathBuf>> {
    let Some(path) = data.as_ref() else {
        return Ok(None);
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("--data {}: no such file or folder", path.display())
        }
        Err(e) => bail!("--data {}: {e}", path.display()),
    }
    if !path.is_file() {
        bail!(
            "--data {}: not a file (a device, a pipe or a socket); name a data file or a GLUE folder",
            path.display()
        );
    }
    if let Some(split) = split {
        bail!(
            "--split {split} picks a file of a GLUE folder; --data {} is a file already",
            path.display()
        );
    }
    Ok(Some(path))
}

/// The task and examples of `eval` and `diff`: a data file (`--data FILE`, the task a preset) or
/// a GLUE folder's split (needs `--task`).
pub fn eval_data(a: &EvalDataArgs) -> Result<(Option<Task>, EvalData)> {
    if a.task.is_none() && a.data.is_none() {
        bail!(
            "give --task T (a GLUE task: sst2, mrpc, qqp, ...: its dev split) or --data FILE (your own labelled .tsv, .csv, .jsonl or .parquet file)"
        );
    }
    let task = a.task.as_deref().map(Task::from_name).transpose()?;
    let columns = a.file.columns(a.label.label_column.clone());
    let data = match data_file(&a.data, &a.split)? {
        Some(path) => EvalData::File(data::Source {
            path: path.clone(),
            format: a.file.format,
            columns,
            task,
        }),
        None => {
            let dir = &a.data;
            let Some(task) = task else {
                bail!(
                    "--data {}: a GLUE folder needs --task; to evaluate your own labels, pass --data FILE (.tsv, .csv, .jsonl or .parquet)",
                    dir.clone().unwrap_or_default().display()
                );
            };
            if a.file.format.is_some() || !columns.is_empty() {
                bail!(
                    "--format and the --*-column flags apply to a --data FILE; a GLUE folder has {task}'s own columns"
                );
            }
            EvalData::Glue {
                dir: dir.clone().unwrap_or_else(default_data_dir),
                split: a.split.clone().unwrap_or_else(|| "dev".into()),
            }
        }
    };
    Ok((task, data))
}

/// The GLUE folder without `--data`: `data/glue`, then `../shared/data/glue`, each here, then in
/// the checkout this binary was built from.
pub fn default_data_dir() -> PathBuf {
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

/// `run`'s and `bench`'s `--data` is the GLUE folder of recipes that name none; a recipe that
/// reads its own file (`data.file`) would pass over it without a word, so it is refused, naming
/// the recipe and where to go instead.
pub fn check_data_flag(data: &Option<PathBuf>, r: &onnx_compress::recipe::LoadedRecipe) -> Result<()> {
    if let (Some(flag), Some(source)) = (data, r.data_file()) {
        bail!(
            "--data {}: {} evaluates on its own file (data.file: {}), which --data does not replace; drop --data, edit data.file, or evaluate the model on another file with `onnx-compress eval --model MODEL --data FILE`",
            flag.display(),
            r.path.display(),
            source.path.display()
        );
    }
    if let (Some(flag), Some(dir)) = (data, &r.recipe.data.dir) {
        bail!(
            "--data {}: {} names its GLUE folder (data.dir: {}), which --data does not replace; drop --data or data.dir",
            flag.display(),
            r.path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The one file `bench` evaluates recipes on without `--task`: every recipe's `data.file`, read
/// alike (same file, format, columns and labels); recipes on different data are refused, naming two.
pub fn one_data_file(recipes: &[onnx_compress::recipe::LoadedRecipe]) -> Result<PathBuf> {
    let read = |r: &onnx_compress::recipe::LoadedRecipe| -> Result<_> {
        let Some(s) = r.data_file() else {
            bail!("{}: names no data.file", r.path.display());
        };
        let path = s.path.canonicalize().unwrap_or_else(|_| s.path.clone());
        Ok((path, s.format, s.columns, r.recipe.data.labels.clone()))
    };
    let first = read(&recipes[0])?;
    for r in &recipes[1..] {
        let this = read(r)?;
        if this != first {
            // Each key that differs, with both values ("not set" where a recipe leaves it to the
            // file's usual names).
            let key = |v: Option<&str>| v.map_or("not set".to_string(), |v| format!("'{v}'"));
            let mut differ: Vec<String> = Vec::new();
            if first.0 != this.0 {
                differ.push(format!("data.file {} vs {}", first.0.display(), this.0.display()));
            }
            if first.1 != this.1 {
                let f = |f: Option<onnx_compress::data::Format>| key(f.map(|f| f.to_string()).as_deref());
                differ.push(format!("data.format {} vs {}", f(first.1), f(this.1)));
            }
            for (name, a, b) in [
                ("data.text_column", &first.2.text, &this.2.text),
                ("data.text_pair_column", &first.2.pair, &this.2.pair),
                ("data.label_column", &first.2.label, &this.2.label),
                ("data.labels", &first.3, &this.3),
            ] {
                if a != b {
                    differ.push(format!("{name} {} vs {}", key(a.as_deref()), key(b.as_deref())));
                }
            }
            bail!(
                "{} and {} evaluate on different data ({}); bench compares recipes on one file read alike: bench them apart, or give them the same data keys",
                recipes[0].path.display(),
                r.path.display(),
                differ.join("; ")
            );
        }
    }
    Ok(first.0)
}

/// What `bench` runs: its recipes, the task they are evaluated on (`None`: the user's own file,
/// `data_file`) and the output folder.
pub struct BenchRecipes {
    pub recipes: Vec<onnx_compress::recipe::LoadedRecipe>,
    pub task: Option<Task>,
    pub data_file: Option<PathBuf>,
    pub out: PathBuf,
    /// What was passed over (a recipe named twice, a folder's recipes of another dataset).
    pub notes: Vec<String>,
}

/// Every recipe named (folders expanded), then the ones of `task`; without it, those on the
/// user's own file, else those of the one task the recipes have. A recipe named by itself that
/// does not fit is refused; one in a folder is passed over. Every recipe's model is found before
/// the first one runs.
pub fn bench_recipes(
    configs: &[PathBuf],
    model: Option<&Path>,
    task: Option<Task>,
    data_flag: &Option<PathBuf>,
    out: Option<PathBuf>,
) -> Result<BenchRecipes> {
    use onnx_compress::recipe;
    let mut loaded = vec![];
    let (mut seen, mut notes) = (Vec::<PathBuf>::new(), vec![]);
    for given in configs {
        for path in recipe::expand(std::slice::from_ref(given))? {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.contains(&canonical) {
                notes.push(format!("{} is named twice; benched once", path.display()));
                continue;
            }
            seen.push(canonical);
            loaded.push((recipe::load_with_model(&path, model)?, given.is_dir()));
        }
    }
    let named = |t: Option<Task>| t.map_or("your own data file".to_string(), |t| format!("--task {}", t.name()));
    let given_task = task.is_some();
    let task = match task {
        Some(t) => Some(t),
        None if loaded.iter().any(|(r, _)| r.task().is_none()) => None,
        None => {
            let mut tasks: Vec<Task> = loaded.iter().filter_map(|(r, _)| r.task()).collect();
            tasks.sort_by_key(|t| t.name());
            tasks.dedup();
            match tasks[..] {
                [one] => Some(one),
                _ => bail!(
                    "the recipes given are for {}: pass --task, or name the recipes of one",
                    tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    };
    let mut recipes = vec![];
    for (r, in_folder) in loaded {
        if r.task() != task {
            if in_folder {
                notes.push(format!(
                    "{}: passed over, a recipe for {}, not {} (one table is one dataset: bench it {})",
                    r.path.display(),
                    r.task().map_or("its own data file".into(), |t| t.name().to_string()),
                    task.map_or("your own data file".into(), |t| t.name().to_string()),
                    r.task().map_or("with the recipes on its file".into(), |t| format!(
                        "with --task {}",
                        t.name()
                    ))
                ));
                continue;
            }
            bail!(
                "{}: a recipe for {}, not {}{}",
                r.path.display(),
                named(r.task()),
                named(task),
                if given_task { "" } else { " (without --task)" }
            );
        }
        check_data_flag(data_flag, &r)?;
        r.model().map_err(|e| anyhow::anyhow!("{}: {e}", r.path.display()))?;
        recipes.push(r);
    }
    if recipes.is_empty() {
        bail!(
            "no recipe for {} in {}",
            task.map_or("your own data file".into(), |t| format!("task {t}")),
            configs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Rows and chart labels are the recipes' names: two alike cannot be told apart there.
    for (i, r) in recipes.iter().enumerate() {
        let name = r.name();
        let same: Vec<String> = recipes[i + 1..]
            .iter()
            .filter(|o| o.name() == name)
            .map(|o| o.path.display().to_string())
            .collect();
        if !same.is_empty() && !recipes[..i].iter().any(|o| o.name() == name) {
            notes.push(format!(
                "{} and {} are all named '{name}': their rows and chart labels read alike (results.csv and results.json name each one's config); give each recipe a name of its own",
                r.path.display(),
                same.join(", ")
            ));
        }
    }
    let data_file = match task {
        Some(_) => None,
        None => Some(one_data_file(&recipes)?),
    };
    let out = out.unwrap_or_else(|| {
        Path::new("bench/out").join(match (task, &data_file) {
            (Some(t), _) => t.name().to_string(),
            (None, f) => f
                .as_ref()
                .and_then(|f| f.file_stem())
                .map_or("data".into(), |s| s.to_string_lossy().into_owned()),
        })
    });
    // The tables go into a folder (made when missing): a file there is refused before the runs.
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {}: a file, not a folder; name a folder for the tables and charts (made when missing)",
            out.display()
        );
    }
    // A folder that takes no files, a folder or a file the recipes read where a result goes: found
    // now, not after every recipe has run.
    let mut reads: Vec<(PathBuf, String)> = recipes.iter().flat_map(|r| r.files_read()).collect();
    if let Some(f) = &data_file {
        reads.push((f.clone(), "the data file".into()));
    }
    onnx_compress::results::check_results(&out, "--out", &onnx_compress::bench::FILES, &reads)?;
    Ok(BenchRecipes {
        notes,
        recipes,
        task,
        data_file,
        out,
    })
}

/// `run`'s and `bench`'s evaluation overrides as run options; `--limit 0` is refused before any
/// recipe is read further.
pub fn run_options(e: RecipeEval, out: Option<PathBuf>) -> Result<onnx_compress::pipeline::RunOptions> {
    if e.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    Ok(onnx_compress::pipeline::RunOptions {
        out,
        limit: e.limit,
        data_dir: e.data.unwrap_or_else(default_data_dir),
        warmup: e.warmup,
        measure: e.measure,
    })
}

/// The options of `auto`: paths made absolute (they go into recipes), defaults that depend on the
/// objective and device, every value checked before anything is read.
pub fn auto_options(model: &Path, a: &super::flags::AutoArgs) -> Result<onnx_compress::auto::AutoOptions> {
    use onnx_compress::auto::{self, Objective};
    let task = a.task.as_deref().map(Task::from_name).transpose()?;
    if !a.calib_data.is_file() {
        bail!("--calib-data {}: no such file", a.calib_data.display());
    }
    // Existing paths without `..` (they are written into recipes); others made absolute.
    let absolute = |p: &Path, what: &str| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .map_err(|e| anyhow::anyhow!("{what} {}: {e}", p.display()))
    };
    let fractions = |flag: &str, v: &Option<Vec<String>>, default: Vec<f64>| -> Result<Vec<f64>> {
        match v {
            None => Ok(default),
            Some(v) if v.len() == 1 && v[0] == "none" => Ok(vec![]),
            Some(v) => {
                let list: Vec<f64> = v
                    .iter()
                    .map(|x| {
                        x.trim()
                            .parse::<f64>()
                            .map_err(|_| anyhow::anyhow!("--{flag} {x}: expected fractions such as 0.8,0.7 or 'none'"))
                    })
                    .collect::<Result<_>>()?;
                // Each level is one job of a plan, named to two decimals (`p0.60`): two of one
                // name would be two jobs writing one journal.
                let named = |x: f64| format!("{x:.2}");
                if let Some(i) = (1..list.len()).find(|&i| list[..i].iter().any(|&y| named(y) == named(list[i]))) {
                    bail!(
                        "--{flag} {}: {} is given twice (levels are told apart to two decimals)",
                        v.join(","),
                        v[i].trim()
                    );
                }
                Ok(list)
            }
        }
    };
    let lowrank = fractions(
        "lowrank",
        &a.lowrank,
        if a.objective == Objective::Speed {
            vec![]
        } else {
            vec![0.8]
        },
    )?;
    let quant = match &a.quant {
        None => auto::default_quant(a.device),
        Some(v) if v.len() == 1 && v[0] == "none" => vec![],
        Some(v) => v
            .iter()
            .map(|m| {
                auto::space::QUANT_METHODS
                    .iter()
                    .find(|k| **k == m.trim())
                    .copied()
                    .ok_or_else(|| {
                        if m.trim() == "none" {
                            anyhow::anyhow!("--quant {}: none stands alone (no INT8 or fp16 candidates); leave it out beside other methods", v.join(","))
                        } else {
                            anyhow::anyhow!(
                                "--quant {m}: unknown method ({}, or none)",
                                auto::space::QUANT_METHODS.join(", ")
                            )
                        }
                    })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    if let Some(i) = (1..quant.len()).find(|&i| quant[..i].contains(&quant[i])) {
        bail!("--quant {}: {} is given twice", quant.join(","), quant[i]);
    }
    let prune = fractions("prune", &a.prune, vec![0.8, 0.7, 0.6, 0.5, 0.4])?;
    // Flags that would change nothing in this search are refused, as the passes refuse theirs.
    let int8 = quant.iter().any(|m| *m != "fp16");
    let static_int8 = quant.iter().any(|m| m.starts_with("static"));
    for (set, flag, why) in [
        (
            a.rounds.is_some() && a.objective != Objective::Speed,
            "--rounds",
            "only --objective speed times candidates",
        ),
        (
            a.weight_type.is_some() && !int8,
            "--weight-type",
            "--quant has no int8 format",
        ),
        (
            a.max_ffn_fraction.is_some() && prune.is_empty(),
            "--max-ffn-fraction",
            "--prune none builds no pruning level",
        ),
        (
            a.no_unpad && !static_int8,
            "--no-unpad",
            "--quant has no static INT8 format (static, static_ort)",
        ),
        (
            a.device == onnx_compress::runtime::Device::Cuda && a.plan.is_some() && !cfg!(feature = "cuda"),
            "--device cuda",
            "the plan's jobs run this binary, built without CUDA support (cargo build --release --features cuda)",
        ),
    ] {
        if set {
            bail!("{flag} does nothing here: {why}; drop it");
        }
    }
    let out = absolute(&a.out, "OUT")?;
    // OUT is written at the end of a search (or by --collect): a folder that is not there is
    // refused now, as every pass refuses it, not after the search.
    if a.only.is_none() {
        if out.is_dir() {
            bail!(
                "{}: a folder; name the model file to write in it (model.onnx)",
                a.out.display()
            );
        }
        onnx_compress::onnx::io::target_folder(&a.out)?;
    }
    let (work, flag) = match (&a.plan, &a.collect, &a.work) {
        (Some(d), _, _) => (absolute(d, "--plan")?, "--plan"),
        (_, Some(d), _) => (absolute(d, "--collect")?, "--collect"),
        (_, _, Some(w)) => (absolute(w, "--work")?, "--work"),
        _ => (out.with_extension("auto"), "the work folder (--work)"),
    };
    if work.exists() && !work.is_dir() {
        bail!("{flag} {}: a file, not a folder; name a folder", work.display());
    }
    if a.jobs == Some(0) {
        bail!("--jobs must be at least 1");
    }
    if a.rounds == Some(0) {
        bail!("--rounds must be at least 1 (a round times every candidate once against the input)");
    }
    let mode = match (&a.collect, &a.only) {
        (Some(d), _) if !work.is_dir() => bail!(
            "--collect {}: no such folder; give the folder the plan was written to (auto ... --plan DIR)",
            d.display()
        ),
        // A folder the plan was not written to: nothing to collect (and no journal to start there).
        (Some(d), _) if !work.join("jobs.txt").is_file() => bail!(
            "--collect {}: no plan there (no jobs.txt); write one with auto ... --plan DIR, run its jobs, then --collect DIR",
            d.display()
        ),
        (Some(_), _) => auto::Mode::Collect,
        (_, Some(id)) => auto::Mode::Only(id.clone()),
        _ => auto::Mode::Search,
    };
    let columns = a.file.columns(a.label.label_column.clone());
    let dev = match data_file(&a.data, &a.split)? {
        Some(f) => auto::Dev::File(absolute(f, "--data")?),
        None => {
            let dir = &a.data;
            if task.is_none() {
                bail!(
                    "without --task, --data FILE names your own labelled file to report the chosen model on (e.g. --data dev.csv); {}",
                    match dir {
                        Some(d) => format!("--data {} is a folder", d.display()),
                        None => "there is none".into(),
                    }
                );
            }
            auto::Dev::Split {
                dir: absolute(&dir.clone().unwrap_or_else(default_data_dir), "--data")?,
                split: a.split.clone().unwrap_or_else(|| "dev".into()),
            }
        }
    };
    let o = auto::AutoOptions {
        mode,
        model: absolute(model, "MODEL")?,
        out,
        work,
        task,
        format: a.file.format,
        columns,
        labels: a.label.labels.clone(),
        calib_data: absolute(&a.calib_data, "--calib-data")?,
        calib_samples: a.calib_samples,
        selection: a.selection,
        selection_data: match &a.selection_data {
            Some(f) if !f.is_file() => bail!("--selection-data {}: no such file", f.display()),
            Some(f) => Some(absolute(f, "--selection-data")?),
            None => None,
        },
        seed: a.seed,
        max_drop: a.max_drop,
        confidence: a.confidence,
        weight_type: a.weight_type.unwrap_or(QuantizeOptions::default().weight_type),
        max_ffn_fraction: a.max_ffn_fraction,
        unpad: !a.no_unpad,
        objective: a.objective,
        time_budget: auto::parse_duration(&a.time_budget)?,
        device: a.device,
        threads: a.threads,
        max_length: a.max_length,
        prune,
        lowrank,
        quant,
        dev,
        rounds: a.rounds.unwrap_or(5),
        batch_size: a.batch_size.unwrap_or(Task::batch_size_of(task)),
    };
    o.validate()?;
    onnx_compress::onnx::io::ensure_distinct(&o.model, &o.out)?;
    // Nor any file the search reads: its data (the GLUE folder's file too) and what is beside
    // the model.
    let mut reads = onnx_compress::eval::files_read_with(&o.model);
    reads.push((o.calib_data.clone(), "the training file (--calib-data)"));
    if let Some(s) = &o.selection_data {
        reads.push((s.clone(), "the selection file (--selection-data)"));
    }
    if let Ok(dev) = o.dev_file() {
        reads.push((dev, "the file the result is reported on"));
    }
    for (path, what) in &reads {
        onnx_compress::onnx::io::ensure_not_read(path, what, &o.out)?;
    }
    // The files the work folder gets (the journal, the front, the recipe, a plan's files): none
    // may be a file the search reads (the training file was written over by the front's table),
    // nor OUT.
    let in_work: Vec<(PathBuf, String)> = reads.into_iter().map(|(p, w)| (p, w.to_string())).collect();
    let folder_flag = if a.plan.is_some() { "--plan" } else { "--work" };
    onnx_compress::results::check_results(&o.work, folder_flag, &onnx_compress::auto::WORK_FILES, &in_work)?;
    if let Some(name) = onnx_compress::auto::WORK_FILES.iter().find(|n| {
        let p = o.work.join(n);
        p == o.out || onnx_compress::onnx::io::same_file(&p, &o.out)
    }) {
        bail!(
            "{}: a file auto writes into its work folder ({folder_flag} {}: {name}); name another OUT",
            a.out.display(),
            o.work.display()
        );
    }
    Ok(o)
}
