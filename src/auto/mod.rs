//! `auto`: the smallest, leanest or fastest model within an accuracy budget, searched across
//! calibrated pruning, activation-aware low rank and number formats on the user's machine.
//!
//! The training file is split as calibration draws it: the first `calib_samples` of the seeded
//! draw calibrate, the next `selection` examples choose (so the two never meet, and a recipe's
//! `calibration` section reproduces the calibration part). Every choice is made on the selection
//! part; the dev split is read once, at the end, to report the winner's drop beside its selection
//! drop. Each candidate is a recipe ([`space`]); its structure is built once and each number
//! format is applied to that build. A candidate is scored on a quarter of the selection first and
//! dropped there when it is out of the budget beyond doubt ([`select`]); it is within the budget
//! when its drop plus `confidence`'s normal quantile times the paired standard error is (a drop
//! measured on a few thousand examples is itself uncertain by tenths of a point). Pruning levels are
//! searched by bisection (more MACs removed costs more accuracy), then refined between the last
//! level within the budget and the first beyond it, while the time budget lasts. Speed is measured
//! paired against the baseline in this process ([`timing`]). The [`journal`] lets an interrupted
//! search resume.

pub mod front;
pub mod journal;
pub mod plan;
pub mod select;
pub mod space;
pub mod timing;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::eval::{self, EvalData, EvalOptions};
use crate::executor::{self, Output, Plan};
use crate::glue::Task;
use crate::onnx::{self, ExternalData, SaveOptions};
use crate::options::{Named, OptionError};
use crate::passes::quantize::WeightType;
use crate::runtime::{Device, SessionOptions};

use front::{AutoReport, DevResult, Row};
use journal::{Entry, Journal, Settings};
use select::{Scorer, Selection};
use space::{Candidate, Common, Structure};

/// What the search optimizes within the accuracy budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    Speed,
    Size,
    Macs,
}

impl Named for Objective {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            Objective::Speed,
            "speed",
            "fastest, timed paired against the input on this machine",
        ),
        (Objective::Size, "size", "smallest file"),
        (Objective::Macs, "macs", "fewest encoder MACs (ties: smallest file)"),
    ];
}

/// What one `auto` process does.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Build, score and choose (bisection over the pruning levels, within the time budget).
    Search,
    /// A plan's job: build and score one level (`base`: the number formats alone; `p0.60`;
    /// `lr0.80`) into a journal of its own, and stop.
    Only(String),
    /// Choose from the journals of a plan's jobs; build nothing.
    Collect,
}

#[derive(Debug, Clone)]
pub struct AutoOptions {
    pub mode: Mode,
    pub model: PathBuf,
    pub out: PathBuf,
    /// Journal, candidates, recipes and the front.
    pub work: PathBuf,
    /// A GLUE task: its column names, labels and dev split (`None`: the user's own labelled
    /// files, read by `format`, `columns` and `labels`).
    pub task: Option<Task>,
    /// How the training, selection and final evaluation files are read: their format (`None`: by
    /// extension) and columns (named ones override the task's preset and the usual names).
    pub format: Option<crate::data::Format>,
    pub columns: crate::data::Columns,
    /// The model's class names in class order, for labels written as names (`eval --labels`).
    pub labels: Option<String>,
    /// A labelled training file.
    pub calib_data: PathBuf,
    pub calib_samples: usize,
    pub selection: usize,
    /// A labelled file to choose on instead of the part of `calib_data` after calibration's draw
    /// (held-out examples the model was not fine-tuned on).
    pub selection_data: Option<PathBuf>,
    pub seed: u64,
    /// Accuracy points the chosen model may lose on the selection part.
    pub max_drop: f64,
    /// One-sided confidence that a candidate's drop is within `max_drop`: its drop plus this
    /// level's normal quantile times the paired standard error must be (0.5: the drop itself).
    pub confidence: f64,
    pub objective: Objective,
    pub time_budget: Duration,
    pub device: Device,
    pub threads: usize,
    pub max_length: usize,
    /// Encoder MAC fractions kept by calibrated pruning.
    pub prune: Vec<f64>,
    /// Parameter fractions kept by activation-aware low rank.
    pub lowrank: Vec<f64>,
    /// Number formats (recipe `quantization.method` names) tried on every structure, beside float.
    pub quant: Vec<&'static str>,
    /// How their int8 weights are stored.
    pub weight_type: WeightType,
    /// The largest share of one layer's FFN neurons a pruning level may take
    /// (`prune.max_ffn_fraction`; `None`: prune's default for the level's depth).
    pub max_ffn_fraction: Option<f64>,
    /// Static INT8 candidates run their split blocks on the real tokens only (`quantize --unpad`).
    pub unpad: bool,
    /// The final evaluation: a GLUE folder's split (with a task), or a labelled file.
    pub dev: Dev,
    /// Rounds of paired timing (speed).
    pub rounds: usize,
    /// Examples per batch, as the model will serve: the selection and dev are scored in batches
    /// of it (by length; dynamic INT8 finds its ranges per batch) and the paired timing runs them.
    pub batch_size: usize,
}

impl AutoOptions {
    /// Checks the values on their own, before anything is read.
    pub fn validate(&self) -> Result<(), OptionError> {
        for (flag, grid) in [("prune", &self.prune), ("lowrank", &self.lowrank)] {
            if let Some(f) = grid.iter().find(|f| !(**f > 0.0 && **f < 1.0)) {
                return Err(OptionError::new(
                    flag,
                    format!("`{flag}` fractions must lie in (0, 1); got {f}"),
                ));
            }
        }
        if !(self.max_drop >= 0.0 && self.max_drop.is_finite()) {
            return Err(OptionError::new(
                "max_drop",
                "`max_drop` must be 0 or more (accuracy points)",
            ));
        }
        if !(self.confidence >= 0.5 && self.confidence < 1.0) {
            return Err(OptionError::new(
                "confidence",
                format!(
                    "`confidence` must lie in [0.5, 1) (0.5: the drop itself, 0.9: the drop plus 1.28 standard errors); got {}",
                    self.confidence
                ),
            ));
        }
        if let Some(m) = self.max_ffn_fraction.filter(|m| !(*m > 0.0 && *m < 1.0)) {
            return Err(OptionError::new(
                "max_ffn_fraction",
                format!("`max_ffn_fraction` must lie in (0, 1); got {m}"),
            ));
        }
        if self.selection < 16 {
            return Err(OptionError::new(
                "selection",
                "`selection` must be at least 16 examples",
            ));
        }
        if self.batch_size == 0 {
            return Err(OptionError::new("batch_size", "`batch_size` must be at least 1"));
        }
        if self.calib_samples == 0 {
            return Err(OptionError::new("calib_samples", "`calib_samples` must be at least 1"));
        }
        if self.prune.is_empty() && self.lowrank.is_empty() && self.quant.is_empty() {
            return Err(OptionError::new(
                "quant",
                "nothing to search: give `prune`, `lowrank` or `quant` values",
            ));
        }
        if let Some(t) = self.task.filter(|t| t.is_regression()) {
            return Err(OptionError::new(
                "task",
                format!(
                    "{} is scored by correlation; `auto` budgets accuracy (a classification task)",
                    t.name()
                ),
            ));
        }
        if let (None, Dev::Split { .. }) = (self.task, &self.dev) {
            return Err(OptionError::new(
                "data",
                "without a GLUE `task`, `data` names your own labelled file to report the result on (e.g. dev.csv)",
            ));
        }
        if let Mode::Only(id) = &self.mode {
            if !levels(self).iter().any(|l| l.id() == *id) {
                let known: Vec<String> = levels(self).iter().map(|l| l.id()).collect();
                return Err(OptionError::new(
                    "only",
                    format!("`only` {id}: not a level of this plan ({})", known.join(", ")),
                ));
            }
        }
        if self.device == Device::Cpu && self.quant.contains(&"fp16") {
            return Err(OptionError::new(
                "quant",
                "fp16 is slower than float32 on CPU; try it with `device` cuda",
            ));
        }
        Ok(())
    }

    /// Whether static INT8 candidates are built unpadded: as asked, but never for batches of one
    /// sequence, which have no padding to skip (packing would cost there and buy nothing).
    pub fn unpads(&self) -> bool {
        self.unpad && self.batch_size > 1
    }

    /// How a data file of the search is read (training, selection, the final evaluation).
    pub fn source(&self, path: &Path) -> crate::data::Source {
        crate::data::Source {
            path: path.to_path_buf(),
            format: self.format,
            columns: self.columns.clone(),
            task: self.task,
        }
    }

    /// The file of the final evaluation.
    pub fn dev_file(&self) -> Result<PathBuf> {
        match (&self.dev, self.task) {
            (Dev::File(f), _) => Ok(f.clone()),
            (Dev::Split { dir, split }, Some(t)) => t
                .data_file(dir, split)
                .map_err(|e| anyhow!("the final evaluation needs the {split} split: {e}")),
            (Dev::Split { .. }, None) => bail!("a GLUE folder needs a task; pass --data FILE"),
        }
    }

    /// How the final evaluation reads the dev file (each model once, batched by length).
    fn dev_options(&self) -> EvalOptions {
        EvalOptions {
            task: self.task,
            data: self.dev_data(),
            labels: self.labels.clone(),
            batch_size: self.batch_size,
            max_length: self.max_length,
            warmup: 0,
            measure: 0,
            limit: None,
            bucket: true,
            tokenizer: None,
            session: self.session(),
            words: eval::Words::FlagsWithoutTokenizer,
        }
    }

    /// The final evaluation's examples as `eval` reads them.
    fn dev_data(&self) -> EvalData {
        match &self.dev {
            Dev::File(f) => EvalData::File(self.source(f)),
            Dev::Split { dir, split } => EvalData::Glue {
                dir: dir.clone(),
                split: split.clone(),
            },
        }
    }

    fn session(&self) -> SessionOptions {
        SessionOptions {
            device: self.device,
            threads: self.threads,
            ..Default::default()
        }
    }
}

/// What the chosen model is reported on, once, at the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Dev {
    /// A GLUE folder's split of the task (`dev`).
    Split { dir: PathBuf, split: String },
    /// A labelled data file, read like the training file.
    File(PathBuf),
}

/// The number formats tried by default on a device.
pub fn default_quant(device: Device) -> Vec<&'static str> {
    match device {
        Device::Cpu => vec!["dynamic_per_channel", "static", "static_ort"],
        // INT8 graphs run slower than float32 on ONNX Runtime's CUDA provider (bench/RESULTS.md,
        // "On CUDA"): not worth a candidate's time by default.
        Device::Cuda => vec!["fp16"],
    }
}

/// Where the search reports: `stage` what runs now, `line` a result that stays.
pub struct Ui<'a> {
    pub stage: &'a dyn Fn(&str),
    pub line: &'a dyn Fn(&str),
    /// A note, shown under --quiet too.
    pub note: &'a dyn Fn(&str),
}

/// The search state: the baseline's answers, the journal, what was built and scored.
struct Search<'a> {
    o: &'a AutoOptions,
    ui: &'a Ui<'a>,
    common: Common,
    sel: Selection,
    base: Vec<Option<bool>>,
    journal: Journal,
    entries: Vec<(Candidate, Entry)>,
    failed: Vec<(String, String)>,
    start: Instant,
    /// Seconds each structural level took (build and scoring of all its formats), by kind.
    level_seconds: Vec<(bool, f64)>,
    /// Structural levels the search still plans (for the time left).
    levels_left: usize,
    /// Whether candidates are built (not when collecting a plan's results).
    build: bool,
    /// The jobs (levels) of a collected plan with a candidate that has no result.
    missing: Vec<String>,
    base_macs: Option<u64>,
}

const CANDIDATES: &str = "candidates";

/// The files a search writes into its work folder (a plan's too), besides its candidates.
pub const WORK_FILES: [&str; 10] = [
    journal::FILE,
    "recipe.yaml",
    "front.md",
    "front.csv",
    "front.json",
    "front.svg",
    "front.png",
    "jobs.txt",
    "Makefile",
    "collect.sh",
];
const RECIPES: &str = "recipes";

impl Search<'_> {
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Minutes spent of the budget, and the time the levels still planned would take.
    fn clock(&self) -> String {
        let budget = self.o.time_budget.as_secs_f64();
        let mut s = format!("{:.0} of {:.0} min", self.elapsed() / 60.0, budget / 60.0);
        if !self.level_seconds.is_empty() {
            let per = self.level_seconds.iter().map(|x| x.1).sum::<f64>() / self.level_seconds.len() as f64;
            let left = (per * self.levels_left as f64).min((budget - self.elapsed()).max(0.0));
            s += &format!(", about {:.0} min left", (left / 60.0).ceil());
        }
        s
    }

    fn recipe_text(&self, c: &Candidate) -> String {
        format!(
            "# onnx-compress auto: {}. Rebuild with `onnx-compress run THIS.yaml --out MODEL.onnx`.\n{}",
            c.label(),
            crate::recipe::to_yaml(&space::recipe(c, &self.common))
        )
    }

    /// The candidate's recipe, written to the work folder, and the plan it gives.
    fn plan(&self, c: &Candidate) -> Result<(PathBuf, Plan)> {
        let dir = self.o.work.join(RECIPES);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let path = dir.join(format!("{}.yaml", c.id()));
        let text = self.recipe_text(c);
        onnx::io::write_text(&path, &text)?;
        let loaded = crate::recipe::parse(&text, &path)?;
        let plan = loaded.plan().map_err(|e| anyhow!("{}: {e}", path.display()))?;
        plan.validate()
            .map_err(|e| anyhow!("{}: {}", path.display(), e.error))?;
        Ok((path, plan))
    }

    fn model_path(&self, c: &Candidate) -> PathBuf {
        if c.is_baseline() {
            self.o.model.clone()
        } else {
            self.o.work.join(CANDIDATES).join(format!("{}.onnx", c.id()))
        }
    }

    /// Builds and scores `c` (its structure first, when not built yet), or takes it from the
    /// journal. `None`: it failed (recorded in `failed`).
    fn evaluate(&mut self, c: &Candidate) -> Result<Option<Entry>> {
        let id = c.id();
        if let Some((_, e)) = self.entries.iter().find(|(x, _)| x == c) {
            return Ok(Some(e.clone()));
        }
        if self.failed.iter().any(|(f, _)| *f == id) {
            return Ok(None);
        }
        if let Some(mut e) = self.journal.get(&id, &self.o.work).cloned() {
            // Dropped early under a tighter budget: this budget may admit it. Written before the
            // journal kept the discordant counts: the standard error needs them.
            let looser = e.dropped_early && e.budget < self.o.max_drop;
            let again = looser || e.discordant.is_none();
            if again {
                (self.ui.stage)(&format!("{}: scoring again", c.label()));
                self.score(&self.o.work.join(&e.model))?.fill(&mut e);
                e.budget = self.o.max_drop;
                self.journal.append(e.clone())?;
            }
            let how = if again {
                "built before, scored again"
            } else {
                "from the journal"
            };
            (self.ui.line)(&format!("{}: {how}", self.line_of(c, &e)));
            self.entries.push((c.clone(), e.clone()));
            return Ok(Some(e));
        }
        if !self.build {
            // Named by the plan's job: its level.
            let job = c.structure.id();
            if !self.missing.contains(&job) {
                self.missing.push(job);
            }
            return Ok(None);
        }
        // What the candidate's passes start from.
        let input = if c.quant.is_some() && c.structure != Structure::None {
            match self.evaluate(&c.structural())? {
                Some(_) => self.model_path(&c.structural()),
                None => {
                    self.failed
                        .push((id, format!("its structure {} failed", c.structure.id())));
                    return Ok(None);
                }
            }
        } else {
            self.o.model.clone()
        };
        let (_, full_plan) = self.plan(c)?;
        let plan = if c.quant.is_some() {
            Plan {
                steps: full_plan.steps.last().cloned().into_iter().collect(),
                calibration: full_plan.calibration.clone(),
                labels: full_plan.labels.clone(),
            }
        } else {
            full_plan
        };
        let out = self.model_path(c);
        std::fs::create_dir_all(out.parent().unwrap_or(Path::new("."))).ok();
        let t = Instant::now();
        let label = c.label();
        let stage = |s: &str| (self.ui.stage)(&format!("{label} ({}): {s}", self.clock()));
        let built = executor::execute(
            &input,
            &plan,
            None,
            Some(&Output::new(out.clone(), ExternalData::Auto)),
            &stage,
        );
        let outcome = match built {
            Ok(o) => o,
            Err(e) => {
                // Settings in the words of the candidate's recipe (the one `run` would read).
                let msg = executor::render_error(&e, &|label, f| crate::recipe::recipe_key(label, f));
                (self.ui.line)(&format!("{}: failed: {msg}", c.label()));
                self.failed.push((id, msg));
                return Ok(None);
            }
        };
        let build_seconds = t.elapsed().as_secs_f64();
        // A number format keeps the MACs of what it was applied to (a quantized graph is not
        // mapped again).
        let macs = match (c.quant, c.structure) {
            (None, _) => executor::encoder_macs(&outcome.model),
            (Some(_), Structure::None) => self.base_macs,
            (Some(_), _) => self
                .entries
                .iter()
                .find(|(x, _)| *x == c.structural())
                .and_then(|(_, e)| e.macs),
        };
        stage("scoring on the selection");
        let mut e = Entry {
            id,
            model: format!("{CANDIDATES}/{}.onnx", c.id()),
            build_seconds,
            params: executor::weight_elements(&outcome.model),
            macs,
            bytes: file_size(&out),
            examples: 0,
            correct: 0,
            baseline_correct: 0,
            dropped_early: false,
            budget: self.o.max_drop,
            discordant: None,
        };
        self.score(&out)?.fill(&mut e);
        self.journal.append(e.clone())?;
        (self.ui.line)(&self.line_of(c, &e));
        self.entries.push((c.clone(), e.clone()));
        Ok(Some(e))
    }

    /// Scores a model on the first rung of the selection, and on the rest unless it is out of the
    /// budget beyond doubt.
    fn score(&self, model: &Path) -> Result<Score> {
        let mut scorer = Scorer::open(model, &self.o.session(), &self.sel)?;
        scorer.score(&self.sel, false)?;
        let dropped_early =
            self.sel.rung < self.sel.len() && select::out_of_budget(&self.base, &scorer.right, self.o.max_drop);
        if !dropped_early {
            scorer.score(&self.sel, true)?;
        }
        let (examples, correct) = scorer.counts();
        let (_, lost, gained) = select::discordant(&self.base, &scorer.right);
        Ok(Score {
            examples,
            correct,
            // The candidate's right answers, less those it gained, plus those it lost.
            baseline_correct: correct + lost - gained,
            lost,
            gained,
            dropped_early,
        })
    }

    fn within(&self, e: &Entry) -> bool {
        within(e, self.o.max_drop, self.o.confidence)
    }

    /// `p0.60 + static_ort: selection 0.9121 (−0.20 ± 0.14 points) within the budget`.
    fn line_of(&self, c: &Candidate, e: &Entry) -> String {
        let (drop, se) = drop_and_se(e);
        let verdict = if e.dropped_early {
            format!("out of the budget (dropped after {} examples)", e.examples)
        } else if self.within(e) {
            "within the budget".into()
        } else if drop <= self.o.max_drop + 1e-9 {
            format!(
                "out of the budget at {:.0}% confidence (drop + {:.2} standard errors {:.2} points)",
                self.o.confidence * 100.0,
                select::normal_quantile(self.o.confidence),
                bound_points(e, self.o.confidence)
            )
        } else {
            "out of the budget".into()
        };
        format!(
            "{}: selection {:.4} (drop {:.2} ± {se:.2} points) {verdict}",
            c.label(),
            e.correct as f64 / e.examples.max(1) as f64,
            drop + 0.0
        )
    }

    /// Builds a structure and its number formats; whether the level is within the budget for
    /// the search: some candidate of it is, and (objectives speed and size, when a number format
    /// alone is within the budget) one in a number format. A structure within the budget only in
    /// float loses to that format alone on speed and size, so deeper levels would be searched for
    /// nothing: shallower ones, which may be within in a number format, are next.
    fn level(&mut self, s: Structure) -> Result<bool> {
        let t = Instant::now();
        let (mut any, mut any_format) = (false, false);
        // The input in float is the baseline, not a candidate.
        let float = (s != Structure::None).then_some(None);
        let formats: Vec<Option<&'static str>> =
            float.into_iter().chain(self.o.quant.iter().map(|q| Some(*q))).collect();
        for q in formats {
            let c = Candidate { structure: s, quant: q };
            if let Some(e) = self.evaluate(&c)? {
                let within = self.within(&e);
                any |= within;
                any_format |= within && q.is_some();
            }
        }
        if s == Structure::None {
            return Ok(any);
        }
        self.level_seconds
            .push((matches!(s, Structure::Prune(_)), t.elapsed().as_secs_f64()));
        let counts = level_within(any, any_format, self.format_alone_within(), self.o.objective);
        if any && !counts {
            (self.ui.line)(&format!(
                "{}: within the budget in float only, where a number format alone is faster and smaller: counted as beyond it",
                s.label()
            ));
        }
        Ok(counts)
    }

    /// Whether a number format alone (on the input's structure) was scored within the budget.
    fn format_alone_within(&self) -> bool {
        self.entries
            .iter()
            .any(|(c, e)| c.structure == Structure::None && c.quant.is_some() && self.within(e))
    }

    /// Whether a level of this kind likely fits in the time left (keeping a reserve for timing
    /// and the final evaluation); the first of a kind always runs.
    fn affordable(&self, prune: bool) -> Option<f64> {
        let past: Vec<f64> = self
            .level_seconds
            .iter()
            .filter(|(p, _)| *p == prune)
            .map(|x| x.1)
            .collect();
        let budget = self.o.time_budget.as_secs_f64();
        let reserve = (budget * 0.1).min(180.0);
        if past.is_empty() {
            return (self.elapsed() + reserve < budget).then_some(0.0);
        }
        let estimate = past.iter().sum::<f64>() / past.len() as f64;
        (self.elapsed() + estimate + reserve <= budget).then_some(estimate)
    }
}

/// Whether a structural level counts as within the budget for the search, from whether any of
/// its candidates is, whether one in a number format is, and whether a number format alone (on
/// the input's structure) is: a level within only in float counts as beyond where a format
/// alone is within, except for the MACs objective (number formats keep the MACs).
fn level_within(any: bool, any_format: bool, format_alone_within: bool, objective: Objective) -> bool {
    any && (any_format || !format_alone_within || objective == Objective::Macs)
}

/// A candidate's scores on the selection.
struct Score {
    examples: usize,
    correct: usize,
    baseline_correct: usize,
    lost: usize,
    gained: usize,
    dropped_early: bool,
}

impl Score {
    fn fill(self, e: &mut Entry) {
        e.examples = self.examples;
        e.correct = self.correct;
        e.baseline_correct = self.baseline_correct;
        e.dropped_early = self.dropped_early;
        e.discordant = Some([self.lost, self.gained]);
    }
}

/// Accuracy points lost against the baseline on the same selection examples.
pub fn drop_points(e: &Entry) -> f64 {
    (e.baseline_correct as f64 - e.correct as f64) / e.examples.max(1) as f64 * 100.0
}

/// The drop and its paired standard error (points; 0 without the discordant counts).
pub fn drop_and_se(e: &Entry) -> (f64, f64) {
    let se = e
        .discordant
        .map_or(0.0, |[lost, gained]| select::paired_drop(e.examples, lost, gained).1);
    (drop_points(e), se)
}

/// The one-sided upper confidence bound of the drop at `confidence` (points).
pub fn bound_points(e: &Entry, confidence: f64) -> f64 {
    let (drop, se) = drop_and_se(e);
    drop + select::normal_quantile(confidence) * se
}

/// Scored on the whole selection, with a drop whose upper confidence bound is within the budget.
pub fn within(e: &Entry, max_drop: f64, confidence: f64) -> bool {
    !e.dropped_early && bound_points(e, confidence) <= max_drop + 1e-9
}

/// A model's bytes on disk, its external data included.
fn file_size(p: &Path) -> u64 {
    onnx::io::model_size(p)
}

/// The midpoint of two levels, rounded to 0.01, if it is a new level between them.
fn midpoint(a: f64, b: f64) -> Option<f64> {
    let m = ((a + b) / 2.0 * 100.0).round() / 100.0;
    (m > a.min(b) + 1e-9 && m < a.max(b) - 1e-9).then_some(m)
}

/// What auto cannot search with, refused before a work folder or plan is made: the examples the
/// result is reported on given to choose on; a headless encoder (no predictions to choose by), a
/// quantized one (quantization is the last step of a chain). Returns the model read.
pub fn check_inputs(o: &AutoOptions) -> Result<onnx::ModelProto> {
    let dev_file = o.dev_file()?;
    // The same file, or a copy of it (same bytes).
    let same = |f: &Path| {
        std::fs::canonicalize(f).ok() == std::fs::canonicalize(&dev_file).ok()
            || (std::fs::metadata(f).map(|m| m.len()).ok() == std::fs::metadata(&dev_file).map(|m| m.len()).ok()
                && std::fs::read(f)
                    .ok()
                    .is_some_and(|a| std::fs::read(&dev_file).ok() == Some(a)))
    };
    let reported = match &o.dev {
        Dev::Split { split, .. } => format!("{split} split"),
        Dev::File(_) => "file (--data)".into(),
    };
    for (flag, f) in [
        ("--calib-data", Some(&o.calib_data)),
        ("--selection-data", o.selection_data.as_ref()),
    ] {
        if let Some(f) = f.filter(|f| same(f)) {
            bail!(
                "{flag} {} is the {reported} the result is reported on (or a copy of it): choose on other examples",
                f.display()
            );
        }
    }
    let proto = onnx::load(&o.model)?;
    eval::refuse_headless(&o.model, &proto, "auto (which chooses by the predictions)")?;
    eval::refuse_unfed_inputs(&o.model, &proto)?;
    // Every candidate prunes, factors or quantizes float32 weights: a model quantized already
    // (float16 too, which maps) would have each of them fail, after the search.
    if let Some(why) = proto.graph.as_ref().and_then(crate::structure::quantized_evidence) {
        bail!(
            "{}: {why}: the model is quantized already; auto searches from the float32 model (pass that one)",
            o.model.display()
        );
    }
    Ok(proto)
}

/// The calibration and selection examples drawn from the training file (or the selection file's
/// own draw), the file the selection is in and the training file's examples; refuses a
/// selection too small for the budget (a search would spend its time budget to find no
/// candidate within it).
fn draw(o: &AutoOptions) -> Result<(select::Split, &PathBuf, usize)> {
    let source = o.source(&o.calib_data);
    let total = crate::data::read_texts(&source)
        .with_context(|| format!("--calib-data {}", o.calib_data.display()))?
        .texts
        .len();
    let (split, sel_file) = match &o.selection_data {
        None => (
            select::split(total, o.calib_samples, o.selection, o.seed, &o.calib_data)?,
            &o.calib_data,
        ),
        Some(f) => {
            let n = crate::data::read_texts(&crate::data::Source {
                path: f.clone(),
                ..source.clone()
            })
            .with_context(|| format!("--selection-data {}", f.display()))?
            .texts
            .len();
            (
                select::split_apart(total, o.calib_samples, n, o.selection, o.seed, f)?,
                f,
            )
        }
    };
    let floor = select::paired_drop(split.selection.len(), 0, 0).1 * select::normal_quantile(o.confidence);
    if floor > o.max_drop {
        bail!(
            "--max-drop {}: on {} selection examples no candidate can be shown within it at {:.0}% confidence (even one that flips none has a bound of {floor:.2} points); give more examples (a larger --calib-data, or --selection-data), a larger --max-drop, or a lower --confidence (0.5: the drop alone)",
            o.max_drop,
            split.selection.len(),
            o.confidence * 100.0
        );
    }
    Ok((split, sel_file, total))
}

/// What a work folder's journals must have been written with to be reused.
pub fn settings(o: &AutoOptions) -> Settings {
    Settings {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        builds: journal::BUILDS,
        model: o.model.clone(),
        model_bytes: file_size(&o.model),
        // The model with what is read beside it: its external data, tokenizer and config.json (a
        // tokenizer replaced there changes every score).
        model_fingerprint: journal::fingerprint(
            &std::iter::once(o.model.clone())
                .chain(
                    eval::files_read_with(&o.model)
                        .into_iter()
                        .map(|(p, _)| p)
                        .filter(|p| p.is_file()),
                )
                .collect::<Vec<_>>(),
        ),
        calib_data_fingerprint: journal::fingerprint(std::slice::from_ref(&o.calib_data)),
        selection_data_fingerprint: o
            .selection_data
            .as_ref()
            .and_then(|f| journal::fingerprint(std::slice::from_ref(f))),
        task: o.task.map_or("none", |t| t.name()).into(),
        format: o.format.map(|f| f.name().to_string()),
        columns: (!o.columns.is_empty()).then(|| o.columns.clone()),
        labels: o.labels.clone(),
        calib_data: o.calib_data.clone(),
        calib_samples: o.calib_samples,
        selection: o.selection,
        selection_data: o.selection_data.clone(),
        seed: o.seed,
        max_length: o.max_length,
        device: o.device.name().into(),
        weight_type: o.weight_type.name().into(),
        max_ffn_fraction: o.max_ffn_fraction,
        unpad: o.unpads(),
        batch_size: (o.batch_size != Task::batch_size_of(o.task)).then_some(o.batch_size),
    }
}

/// Runs the search; writes the winner to `out`, its recipe and the front into the work folder.
/// ONNX Runtime must be initialized. Without a winner, the report's `winner` is `None` and nothing
/// but the journal (and the candidates) is written.
pub fn auto(o: &AutoOptions, ui: &Ui) -> Result<AutoReport> {
    let start = Instant::now();
    // Before the work folder is made: a device this build cannot use, data or a model it cannot
    // search with.
    crate::runtime::check_device(&o.session())?;
    if let Some(n) = crate::runtime::threads_note(o.threads, "--threads") {
        (ui.note)(&n);
    }
    (ui.stage)("reading the model");
    let proto = check_inputs(o)?;
    let (mut tokenizer, tokenizer_source) =
        eval::load_tokenizer(&o.model, &proto, None, eval::Words::FlagsWithoutTokenizer)?;
    if let Some(n) = eval::special_tokens_note(&tokenizer, &tokenizer_source) {
        (ui.note)(&n);
    }
    (ui.stage)("reading the training file");
    let (split, sel_file, total) = draw(o)?;
    let labels = eval::labels_of(
        &o.model,
        &proto,
        o.task,
        o.labels.as_deref(),
        eval::Words::FlagsWithoutTokenizer,
    )?;
    // The file the result is reported on, read and tokenized now as the final evaluation reads
    // it: a bad label, row or column there, a length past the model's positions or a token past
    // its vocabulary would otherwise fail only after the search (and the journal of that search
    // would refuse the corrected settings).
    let dev_opts = o.dev_options();
    let dev_examples = eval::prepare(&o.model, &proto, &dev_opts)?;
    let mut sel = Selection::new(
        &o.source(sel_file),
        &labels,
        eval::output_width(&proto),
        &split.selection,
        &mut tokenizer,
        &tokenizer_source,
        o.max_length,
        eval::input_limits(&proto).vocabulary,
        select::TIMED_BATCHES * Task::batch_size_of(o.task),
        o.batch_size,
        !eval::takes_attention_mask(&proto),
    )?;
    // A model that names the task's classes in another order is scored by name, as eval scores it.
    if let Some(order) = &dev_examples.order {
        sel.labels_to_outputs(order);
    }
    let settings = settings(o);
    let job = match &o.mode {
        Mode::Only(id) => Some(id.as_str()),
        _ => None,
    };
    let flag = match o.mode {
        Mode::Collect => "--collect",
        Mode::Only(_) => "--only",
        Mode::Search => "--work",
    };
    let journal = Journal::open(&o.work, &settings, job, flag)?;
    // A search's journal is where an interrupted one resumes from: said before the first
    // candidate, so that a user who stops it knows.
    let resume = match o.mode {
        Mode::Search => format!(
            " ({}: interrupted, the same command resumes from it)",
            o.work.join(journal::FILE).display()
        ),
        _ => String::new(),
    };
    (ui.line)(&match &o.selection_data {
        None => format!(
            "{}: {} examples; calibration {} and selection {} (disjoint, seed {}); {} in the journal{resume}",
            o.calib_data.display(),
            total,
            split.calibration.len(),
            split.selection.len(),
            o.seed,
            crate::report::count(journal.len(), "candidate", "candidates")
        ),
        Some(f) => format!(
            "calibration: {} of {} examples of {}; selection: {} of {} examples of {} (seed {}); {} in the journal{resume}",
            split.calibration.len(),
            total,
            o.calib_data.display(),
            split.selection.len(),
            split.selection_total,
            f.display(),
            o.seed,
            crate::report::count(journal.len(), "candidate", "candidates")
        ),
    });
    if o.unpad && !o.unpads() {
        (ui.line)("batches of one sequence: static INT8 candidates are built without --unpad (no padding to skip)");
    }
    (ui.stage)("scoring the input on the selection");
    let mut base_scorer = Scorer::open(&o.model, &o.session(), &sel)?;
    base_scorer.score(&sel, true)?;
    let base = base_scorer.right.clone();
    drop(base_scorer);
    let base_acc = base.iter().filter(|r| **r == Some(true)).count() as f64 / sel.len() as f64;
    (ui.line)(&format!("input: selection accuracy {base_acc:.4}"));

    let mut s = Search {
        o,
        ui,
        common: Common {
            model: o.model.clone(),
            task: o.task,
            format: o.format,
            columns: o.columns.clone(),
            labels: o.labels.clone(),
            calib_data: o.calib_data.clone(),
            calib_samples: o.calib_samples,
            seed: o.seed,
            max_length: o.max_length,
            threads: o.threads,
            cuda: o.device == Device::Cuda,
            weight_type: o.weight_type,
            max_ffn_fraction: o.max_ffn_fraction,
            unpad: o.unpads(),
            dev: o.dev.clone(),
        },
        sel,
        base,
        journal,
        entries: vec![],
        failed: vec![],
        start,
        level_seconds: vec![],
        levels_left: 0,
        build: o.mode != Mode::Collect,
        missing: vec![],
        base_macs: executor::encoder_macs(&proto),
    };
    let mut skipped = vec![];
    match &o.mode {
        Mode::Search => search(&mut s, &mut skipped)?,
        Mode::Only(id) => {
            s.level(parse_level(id, o)?)?;
        }
        Mode::Collect => {
            for level in levels(o) {
                s.level(level)?;
            }
        }
    }
    let mut report = AutoReport {
        date: crate::history::now_utc(),
        machine: crate::bench::machine(),
        model: o.model.clone(),
        out: None,
        work: o.work.clone(),
        task: o.task,
        objective: o.objective,
        max_drop: o.max_drop,
        confidence: o.confidence,
        train_examples: total,
        calibration_examples: split.calibration.len(),
        selection_file: sel_file.clone(),
        selection_examples: s.sel.len(),
        seed: o.seed,
        timing_batch_size: o.batch_size,
        timing_batches: s.sel.timing.len(),
        baseline_selection_accuracy: base_acc,
        rows: vec![],
        winner: None,
        dev: None,
        failed: s.failed.clone(),
        skipped,
        missing: s.missing.clone(),
        recipe: None,
        files: vec![],
        removed: vec![],
        not_removed: vec![],
        wall_seconds: 0.0,
    };
    if let Mode::Only(_) = o.mode {
        // A job ends with its journal; the collecting process chooses.
        report.rows = rows(o, &s, &s.entries, &vec![None; s.entries.len()]);
        report.files = vec![o.work.join("jobs").join(format!("{}.jsonl", job.unwrap_or_default()))];
        report.wall_seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    finish(o, s, report, &proto, &dev_examples, start)
}

/// The report's rows of `entries` (with their paired speeds).
fn rows(o: &AutoOptions, s: &Search, entries: &[(Candidate, Entry)], speeds: &[Option<timing::Speed>]) -> Vec<Row> {
    let base = front::Base {
        macs: s.base_macs,
        bytes: file_size(&o.model),
        max_drop: o.max_drop,
        confidence: o.confidence,
    };
    entries
        .iter()
        .zip(speeds)
        .map(|((c, e), sp)| {
            let recipe = (!c.is_baseline()).then(|| o.work.join(RECIPES).join(format!("{}.yaml", c.id())));
            front::row(c, e, sp.clone(), s.model_path(c), recipe, &base)
        })
        .collect()
}

/// The levels of a plan: the number formats alone, every pruning level, every low-rank level.
pub fn levels(o: &AutoOptions) -> Vec<Structure> {
    let mut v = vec![Structure::None];
    v.extend(o.prune.iter().map(|&f| Structure::Prune(f)));
    v.extend(o.lowrank.iter().map(|&f| Structure::Lowrank(f)));
    v
}

/// The level a job id names (`base`, `p0.60`, `lr0.80`), which must be one of the plan's (see
/// [`AutoOptions::validate`]).
fn parse_level(id: &str, o: &AutoOptions) -> Result<Structure> {
    levels(o)
        .into_iter()
        .find(|l| l.id() == id)
        .ok_or_else(|| anyhow!("--only {id}: not a level of this plan"))
}

/// Bisection over the pruning levels, refined twice, then the low-rank levels, while the time
/// budget lasts.
fn search(s: &mut Search, skipped: &mut Vec<String>) -> Result<()> {
    let o = s.o;
    // Number formats alone.
    s.level(Structure::None)?;
    // Pruning levels by bisection: `lo` the last level within the budget, `hi` the first beyond.
    let mut levels = o.prune.clone();
    levels.sort_by(|a, b| b.total_cmp(a));
    levels.dedup();
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut pending = levels.clone();
    let mut refinements = 2;
    loop {
        // Untried levels between lo and hi.
        pending.retain(|&f| lo.is_none_or(|l| f < l) && hi.is_none_or(|h| f > h));
        let next = if !pending.is_empty() {
            Some(pending[pending.len() / 2])
        } else if refinements > 0 {
            refinements -= 1;
            match (lo, hi) {
                (Some(l), Some(h)) => midpoint(l, h),
                _ => None,
            }
        } else {
            None
        };
        let Some(f) = next else { break };
        // Bisection halves what is pending; the refinements follow; then the low-rank levels.
        s.levels_left = (usize::BITS - pending.len().leading_zeros()) as usize + refinements + o.lowrank.len();
        if s.affordable(true).is_none() {
            skipped.push(format!(
                "prune to {:.0}% MACs: not tried, the time budget would run out",
                f * 100.0
            ));
            pending.retain(|&x| x != f);
            continue;
        }
        if s.level(Structure::Prune(f))? {
            lo = Some(f);
        } else {
            hi = Some(f);
        }
        pending.retain(|&x| x != f);
    }
    for (k, &f) in o.lowrank.iter().enumerate() {
        s.levels_left = o.lowrank.len() - k;
        if s.affordable(false).is_none() {
            skipped.push(format!(
                "low rank to {:.0}% params: not tried, the time budget would run out",
                f * 100.0
            ));
            continue;
        }
        s.level(Structure::Lowrank(f))?;
    }
    Ok(())
}

/// Times what is within the budget, chooses, evaluates on dev once, writes the winner, its
/// recipe and the front.
fn finish(
    o: &AutoOptions,
    s: Search,
    mut report: AutoReport,
    proto: &crate::onnx::ModelProto,
    dev: &eval::Prepared,
    start: Instant,
) -> Result<AutoReport> {
    let dev_file = &dev.data_file;
    let ui = s.ui;
    // Rows, the speed of those within the budget, the front and the winner.
    let base_params = executor::weight_elements(proto);
    let base_macs = executor::encoder_macs(proto);
    let base_bytes = file_size(&o.model);
    let base_correct = s.base.iter().filter(|r| **r == Some(true)).count();
    let baseline = Entry {
        discordant: Some([0, 0]),
        id: "base".into(),
        model: o.model.display().to_string(),
        build_seconds: 0.0,
        params: base_params,
        macs: base_macs,
        bytes: base_bytes,
        examples: s.sel.len(),
        correct: base_correct,
        baseline_correct: base_correct,
        dropped_early: false,
        budget: o.max_drop,
    };
    let mut all: Vec<(Candidate, Entry)> = vec![(
        Candidate {
            structure: Structure::None,
            quant: None,
        },
        baseline,
    )];
    all.extend(s.entries.iter().cloned());
    let mut speeds = vec![None; all.len()];
    if o.objective == Objective::Speed {
        let timed: Vec<usize> = (0..all.len()).filter(|&i| i == 0 || s.within(&all[i].1)).collect();
        if timed.len() > 1 {
            let paths: Vec<PathBuf> = timed.iter().map(|&i| s.model_path(&all[i].0)).collect();
            let batches = &s.sel.timing;
            let stage = ui.stage;
            let r = timing::paired(&paths, batches, &o.session(), o.rounds, &|r, n| {
                stage(&format!(
                    "timing {} models paired with the input: round {}/{n}",
                    paths.len(),
                    r + 1
                ))
            })?;
            for (k, &i) in timed.iter().enumerate() {
                speeds[i] = Some(r[k].clone());
            }
        }
    }
    report.rows = rows(o, &s, &all, &speeds);
    front::mark_front(&mut report.rows, o.objective);
    report.winner = front::winner(&report.rows, o.objective);
    let Some(w) = report.winner.clone() else {
        (report.removed, report.not_removed) = remove_results(&o.work);
        report.wall_seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    };
    let wi = report.rows.iter().position(|r| r.id == w).expect("the winner is a row");
    let wc = all[wi].0.clone();

    // The dev split, read once (before the search) for the input and the winner: the winner is
    // read with the input's labels and tokenizer.
    let dev_opts = o.dev_options();
    let on_dev = |path: &Path| -> Result<eval::EvalReport> {
        eval::evaluate_prepared(path, dev, &dev_opts, &|done, total| {
            (ui.stage)(&format!("evaluating on {}: batch {done}/{total}", dev_file.display()))
        })
    };
    let base_dev = on_dev(&o.model)?;
    let win_path = s.model_path(&wc);
    let win_dev = on_dev(&win_path)?;
    let acc = |r: &eval::EvalReport| r.metrics.accuracy.unwrap_or(f64::NAN);
    let sel_drop = report.rows[wi].drop;
    report.dev = Some(DevResult {
        file: dev_file.clone(),
        examples: base_dev.examples,
        batch_size: base_dev.batch_size,
        baseline_accuracy: acc(&base_dev),
        accuracy: acc(&win_dev),
        drop: (acc(&base_dev) - acc(&win_dev)) * 100.0,
        selection_drop: sel_drop,
        gap: (acc(&base_dev) - acc(&win_dev)) * 100.0 - sel_drop,
    });

    // The winner, its recipe, the front.
    (ui.stage)("writing");
    let model = onnx::load(&win_path)?;
    onnx::save(
        &model,
        &o.out,
        &SaveOptions {
            external_data: ExternalData::Auto,
            protect: std::iter::once(o.model.clone())
                .chain(onnx::io::external_files(&o.model))
                .collect(),
        },
    )
    .with_context(|| {
        format!(
            "the chosen model was not written (it is kept as {}, with the search's journal: copy it from there)",
            win_path.display()
        )
    })?;
    report.out = Some(o.out.clone());
    let recipe = o.work.join("recipe.yaml");
    onnx::io::write_text(&recipe, &s.recipe_text(&wc))?;
    report.recipe = Some(recipe.clone());
    report.wall_seconds = start.elapsed().as_secs_f64();
    report.files = front::write(&report, &o.work)?;
    report.files.insert(0, recipe);
    Ok(report)
}

/// The files a winner leaves in the work folder (its recipe, the front), where an earlier run
/// left them: removed when this run has no winner, so that they are not read as its own. The
/// removed ones are returned, and why each other one could not be (the report is made all the
/// same).
fn remove_results(work: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let (mut removed, mut left) = (Vec::new(), Vec::new());
    let winners = WORK_FILES
        .iter()
        .filter(|n| **n == "recipe.yaml" || n.starts_with("front."));
    for name in winners {
        let path = work.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => left.push(format!(
                "{}, an earlier run's, could not be removed ({e}): remove it, as this run chose no candidate",
                path.display()
            )),
        }
    }
    (removed, left)
}

/// Parses a time budget: `90s`, `30m`, `1.5h` (a unit is required).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    // The unit is the letters at the end (`1e3s` is a number in seconds).
    let (num, unit) = t.split_at(t.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow!("--time-budget {s}: expected a number and a unit, such as 90s, 30m or 2h"))?;
    let secs = match unit.trim() {
        "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "" => bail!("--time-budget {s}: give a unit: s, m or h (e.g. 30m)"),
        u => bail!("--time-budget {s}: unknown unit '{u}' (s, m, h)"),
    };
    if secs.is_nan() || secs <= 0.0 {
        bail!("--time-budget {s}: must be more than 0");
    }
    // A year is past any search; a budget past Duration's range would panic (1e999s: infinite).
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    if secs > YEAR {
        bail!("--time-budget {s}: at most a year (8760h)");
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("30").unwrap_err().to_string().contains("unit"));
        assert!(parse_duration("0m").unwrap_err().to_string().contains("more than 0"));
        assert!(parse_duration("-1e999s")
            .unwrap_err()
            .to_string()
            .contains("more than 0"));
        assert!(parse_duration("5d").unwrap_err().to_string().contains("unknown unit"));
        assert_eq!(parse_duration("1e3s").unwrap(), Duration::from_secs(1000));
        assert_eq!(parse_duration("30 m").unwrap(), Duration::from_secs(1800));
        // Past Duration's range it panicked.
        for huge in ["99999999999999999h", "18446744073709551615s", "8761h", "1e999s"] {
            assert!(
                parse_duration(huge).unwrap_err().to_string().contains("at most a year"),
                "{huge}"
            );
        }
    }

    #[test]
    fn a_drop_within_the_budget_must_be_within_it_at_the_confidence_asked() {
        // 1000 examples: 7 lost, 3 gained — 0.40 points down, standard error 0.33 (Agresti and
        // Min's: 7.5 and 3.5 of 1002).
        let e = Entry {
            id: "x".into(),
            model: "x.onnx".into(),
            build_seconds: 0.0,
            params: 0,
            macs: None,
            bytes: 0,
            examples: 1000,
            correct: 900,
            baseline_correct: 904,
            dropped_early: false,
            budget: 0.5,
            discordant: Some([7, 3]),
        };
        let (drop, se) = drop_and_se(&e);
        assert!((drop - 0.4).abs() < 1e-9 && (se - 0.331).abs() < 1e-3, "{drop} {se}");
        assert!(within(&e, 0.5, 0.5));
        assert!(!within(&e, 0.5, 0.9), "bound {}", bound_points(&e, 0.9));
        assert!(within(&e, 0.85, 0.9));
        assert!(!within(
            &Entry {
                dropped_early: true,
                ..e.clone()
            },
            100.0,
            0.5
        ));
    }

    #[test]
    fn a_level_within_only_in_float_is_beyond_where_a_format_alone_is_within() {
        // MRPC (2026-12-04): prune to 70% MACs within in float alone, out with every format,
        // static INT8 alone within: 70% is beyond, so 80% is tried next.
        assert!(!level_within(true, false, true, Objective::Speed));
        assert!(!level_within(true, false, true, Objective::Size));
        assert!(level_within(true, false, true, Objective::Macs));
        assert!(level_within(true, false, false, Objective::Speed));
        assert!(level_within(true, true, true, Objective::Speed));
        assert!(!level_within(false, false, false, Objective::Macs));
    }

    #[test]
    fn midpoints_are_new_levels_rounded_to_a_percent() {
        assert_eq!(midpoint(0.6, 0.5), Some(0.55));
        assert!(midpoint(0.55, 0.5).is_some_and(|m| m > 0.5 && m < 0.55));
        assert_eq!(midpoint(0.51, 0.5), None);
    }
}
