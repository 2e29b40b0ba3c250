//! What `auto` reports: every candidate as a row, the Pareto front of selection accuracy against
//! the objective, the winner, and the files (front.md, front.csv, front.json, front.svg/png).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::journal::Entry;
use super::space::{Candidate, Structure};
use super::timing::Speed;
use super::{bound_points, drop_and_se, within, Objective};
use crate::chart::{self, Chart, Kind, Point};
use crate::glue::Task;
use crate::report::csv_field;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub label: String,
    pub structure: Structure,
    pub quant: Option<String>,
    /// Selection examples scored (fewer than the selection when dropped early).
    pub examples: usize,
    /// Selection accuracy, and the input's on the same examples.
    pub accuracy: f64,
    pub baseline_accuracy: f64,
    /// Accuracy points lost on the selection, the paired standard error of that, and the upper
    /// confidence bound that must be within the budget.
    pub drop: f64,
    pub drop_se: f64,
    pub drop_bound: f64,
    pub within_budget: bool,
    pub dropped_early: bool,
    pub params: usize,
    pub macs: Option<u64>,
    /// Encoder MACs as a fraction of the input's.
    pub macs_fraction: Option<f64>,
    pub bytes: u64,
    pub size_fraction: f64,
    /// Paired speed-up over the input (objective speed; rows within the budget).
    pub speed: Option<Speed>,
    pub build_seconds: f64,
    pub on_front: bool,
    pub model: PathBuf,
    /// The recipe that rebuilds it (`None`: the input).
    pub recipe: Option<PathBuf>,
}

/// The input's measures, which rows are compared with.
pub struct Base {
    pub macs: Option<u64>,
    pub bytes: u64,
    pub max_drop: f64,
    pub confidence: f64,
}

pub fn row(c: &Candidate, e: &Entry, speed: Option<Speed>, model: PathBuf, recipe: Option<PathBuf>, b: &Base) -> Row {
    let (drop, drop_se) = drop_and_se(e);
    let n = e.examples.max(1) as f64;
    Row {
        id: c.id(),
        label: c.label(),
        structure: c.structure,
        quant: c.quant.map(String::from),
        examples: e.examples,
        accuracy: e.correct as f64 / n,
        baseline_accuracy: e.baseline_correct as f64 / n,
        drop,
        drop_se,
        drop_bound: bound_points(e, b.confidence),
        within_budget: within(e, b.max_drop, b.confidence),
        dropped_early: e.dropped_early,
        params: e.params,
        macs: e.macs,
        macs_fraction: match (e.macs, b.macs) {
            (Some(m), Some(base)) if base > 0 => Some(m as f64 / base as f64),
            _ => None,
        },
        bytes: e.bytes,
        size_fraction: e.bytes as f64 / b.bytes.max(1) as f64,
        speed,
        build_seconds: e.build_seconds,
        on_front: false,
        model,
        recipe,
    }
}

/// The row's measure under the objective, as "higher is better" (`None`: not measured).
fn score(r: &Row, objective: Objective) -> Option<f64> {
    match objective {
        Objective::Speed => r.speed.as_ref().map(|s| s.speedup),
        Objective::Size => Some(-(r.bytes as f64)),
        // (Ties go to the smaller file in [`winner`]: a term of bytes × 1e-12 added here was
        // below f64's step at a billion MACs, so the larger of two files won.)
        Objective::Macs => r.macs.map(|m| -(m as f64)),
    }
}

/// Marks the rows no other row beats on both selection accuracy and the objective.
pub fn mark_front(rows: &mut [Row], objective: Objective) {
    let ids: Vec<usize> = (0..rows.len())
        .filter(|&i| !rows[i].dropped_early && score(&rows[i], objective).is_some())
        .collect();
    let points: Vec<Point> = ids
        .iter()
        .map(|&i| Point {
            label: rows[i].id.clone(),
            x: score(&rows[i], objective).unwrap_or(0.0),
            y: rows[i].accuracy,
            kind: Kind::Tool,
        })
        .collect();
    for k in chart::pareto_front(&points, true) {
        rows[ids[k]].on_front = true;
    }
}

/// Whether `r` does better than the input `base` on the objective itself (fewer MACs, not only a
/// smaller file at the same MACs).
fn beats(r: &Row, base: &Row, objective: Objective) -> bool {
    match objective {
        Objective::Speed => matches!((&r.speed, &base.speed), (Some(a), Some(b)) if a.speedup > b.speedup),
        Objective::Size => r.bytes < base.bytes,
        Objective::Macs => matches!((r.macs, base.macs), (Some(a), Some(b)) if a < b),
    }
}

/// The best row within the budget that beats the input on the objective (ties: the smaller
/// file, then the smaller drop, then the id).
pub fn winner(rows: &[Row], objective: Objective) -> Option<String> {
    let base = rows.first()?;
    rows.iter()
        .skip(1)
        .filter(|r| r.within_budget && beats(r, base, objective))
        .filter_map(|r| Some((r, score(r, objective)?)))
        .max_by(|(a, sa), (b, sb)| {
            sa.total_cmp(sb)
                .then(b.bytes.cmp(&a.bytes))
                .then(b.drop.total_cmp(&a.drop))
                .then(b.id.cmp(&a.id))
        })
        .map(|(r, _)| r.id.clone())
}

/// The dev split, read once at the end.
#[derive(Debug, Clone, Serialize)]
pub struct DevResult {
    pub file: PathBuf,
    pub examples: usize,
    /// Examples per batch of the evaluation (`--batch-size`, as the selection's).
    pub batch_size: usize,
    pub baseline_accuracy: f64,
    pub accuracy: f64,
    /// Points lost on dev.
    pub drop: f64,
    /// Points lost on the selection (what the choice saw).
    pub selection_drop: f64,
    /// dev drop − selection drop.
    pub gap: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutoReport {
    pub date: String,
    pub machine: String,
    pub model: PathBuf,
    pub out: Option<PathBuf>,
    pub work: PathBuf,
    /// The GLUE task (`null`: the user's own files).
    pub task: Option<Task>,
    pub objective: Objective,
    pub max_drop: f64,
    /// One-sided confidence of "within the budget": the drop's upper bound at it must be.
    pub confidence: f64,
    pub train_examples: usize,
    pub calibration_examples: usize,
    /// The file the selection was drawn from (the training file, or `--selection-data`).
    pub selection_file: PathBuf,
    pub selection_examples: usize,
    pub seed: u64,
    /// Examples per batch of the scoring and of the paired timing (`--objective speed`), and how
    /// many batches are timed.
    pub timing_batch_size: usize,
    pub timing_batches: usize,
    pub baseline_selection_accuracy: f64,
    /// The input first, then the candidates in the order they were tried.
    pub rows: Vec<Row>,
    pub winner: Option<String>,
    pub dev: Option<DevResult>,
    /// Candidates whose passes failed: (id, error).
    pub failed: Vec<(String, String)>,
    /// Levels the time budget left out.
    pub skipped: Vec<String>,
    /// The jobs (levels) of a collected plan with a candidate without a result (not run, or failed).
    pub missing: Vec<String>,
    pub recipe: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    /// With no winner: an earlier run's recipe.yaml and front files, removed from the work
    /// folder so that they are not read as this run's.
    pub removed: Vec<PathBuf>,
    /// Those that could not be removed, and why.
    pub not_removed: Vec<String>,
    pub wall_seconds: f64,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn speed_cell(r: &Row) -> String {
    r.speed
        .as_ref()
        .map(|s| format!("{:.2} ({:.2}–{:.2})", s.speedup, s.min, s.max))
        .unwrap_or_else(|| "–".into())
}

/// The front as a Markdown table (every row; front rows marked, the winner in bold).
pub fn markdown(r: &AutoReport) -> String {
    let mut s = format!(
        "# auto: {} ({}), objective {}, budget {} points at {:.0}% confidence\n\n{}; {}\n\nSelection: {} examples of {}, scored in batches of {}; calibration: {} of the {} of the training file (seed {}).{}\n\n",
        r.model.display(),
        r.task.map_or("own data", |t| t.name()),
        objective_name(r.objective),
        r.max_drop,
        r.confidence * 100.0,
        r.date,
        r.machine,
        r.selection_examples,
        r.selection_file.display(),
        r.timing_batch_size,
        r.calibration_examples,
        r.train_examples,
        r.seed,
        if r.objective == Objective::Speed {
            format!(" Timed in batches of {} (paired with the input).", r.timing_batch_size)
        } else {
            String::new()
        }
    );
    s += "| candidate | selection acc | drop (points) | ± SE | bound | within budget | MACs | size MB | × input (paired) | build s | front |\n";
    s += "|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|:---:|\n";
    for row in &r.rows {
        let name = if r.winner.as_deref() == Some(row.id.as_str()) {
            format!("**{}** (chosen)", row.label)
        } else {
            row.label.clone()
        };
        let acc = if row.dropped_early {
            format!("{:.4} (first {})", row.accuracy, row.examples)
        } else {
            format!("{:.4}", row.accuracy)
        };
        s += &format!(
            "| {name} | {acc} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} | {} | {:.1} | {} |\n",
            row.drop + 0.0,
            row.drop_se,
            row.drop_bound,
            if row.within_budget { "yes" } else { "no" },
            row.macs_fraction.map_or("–".into(), |f| format!("{:.0}%", f * 100.0)),
            mb(row.bytes),
            speed_cell(row),
            row.build_seconds,
            if row.on_front { "●" } else { "" }
        );
    }
    if let Some(d) = &r.dev {
        s += &format!(
            "\nDev ({}, {} examples, read once): input {:.4}, chosen {:.4}: drop {:.2} points on dev against {:.2} on the selection (gap {:+.2}).\n",
            d.file.display(),
            d.examples,
            d.baseline_accuracy,
            d.accuracy,
            d.drop + 0.0,
            d.selection_drop + 0.0,
            d.gap + 0.0
        );
    }
    for f in &r.failed {
        s += &format!("\n- {} failed: {}", f.0, f.1);
    }
    for k in &r.skipped {
        s += &format!("\n- {k}");
    }
    if !r.missing.is_empty() {
        s += &format!("\n- no result (job not run or failed): {}", r.missing.join(", "));
    }
    // A text file ends with its line's end (the lists above leave the last one open).
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn objective_name(o: Objective) -> &'static str {
    use crate::options::Named;
    o.name()
}

pub fn csv(r: &AutoReport) -> String {
    let mut s = String::from(
        "id,label,examples,accuracy,baseline_accuracy,drop,drop_se,drop_bound,within_budget,dropped_early,params,macs,macs_fraction,bytes,size_fraction,speedup,speedup_min,speedup_max,ms_per_batch,build_seconds,on_front,chosen,recipe\n",
    );
    for row in &r.rows {
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let fields = [
            row.id.clone(),
            row.label.clone(),
            row.examples.to_string(),
            row.accuracy.to_string(),
            row.baseline_accuracy.to_string(),
            row.drop.to_string(),
            row.drop_se.to_string(),
            row.drop_bound.to_string(),
            row.within_budget.to_string(),
            row.dropped_early.to_string(),
            row.params.to_string(),
            row.macs.map(|m| m.to_string()).unwrap_or_default(),
            opt(row.macs_fraction),
            row.bytes.to_string(),
            row.size_fraction.to_string(),
            opt(row.speed.as_ref().map(|x| x.speedup)),
            opt(row.speed.as_ref().map(|x| x.min)),
            opt(row.speed.as_ref().map(|x| x.max)),
            opt(row.speed.as_ref().map(|x| x.ms_per_batch)),
            row.build_seconds.to_string(),
            row.on_front.to_string(),
            (r.winner.as_deref() == Some(row.id.as_str())).to_string(),
            row.recipe.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        ];
        s += &fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
        s += "\n";
    }
    s
}

/// Selection accuracy against the objective's measure (rows scored on the whole selection).
pub fn chart(r: &AutoReport) -> Chart {
    let (x_label, higher) = match r.objective {
        Objective::Speed => ("speed-up over the input (paired, this machine)", true),
        Objective::Size => ("size on disk (MB)", false),
        Objective::Macs => ("encoder MACs (fraction of the input's)", false),
    };
    let x = |w: &Row| match r.objective {
        Objective::Speed => w.speed.as_ref().map(|s| s.speedup),
        Objective::Size => Some(mb(w.bytes)),
        Objective::Macs => w.macs_fraction,
    };
    Chart {
        title: format!(
            "auto, {}: selection accuracy vs {}",
            r.task.map_or("own data", |t| t.dir_name()),
            objective_name(r.objective)
        ),
        x_label: x_label.into(),
        y_label: "selection accuracy".into(),
        x_higher_is_better: higher,
        points: r
            .rows
            .iter()
            .filter(|w| !w.dropped_early)
            .filter_map(|w| {
                Some(Point {
                    label: w.id.clone(),
                    x: x(w)?,
                    y: w.accuracy,
                    kind: if w.structure == Structure::None && w.quant.is_none() {
                        Kind::Baseline
                    } else {
                        Kind::Tool
                    },
                })
            })
            .collect(),
    }
}

/// Writes front.md, front.csv, front.json and the chart (front.svg, front.png) into `dir`.
pub fn write(r: &AutoReport, dir: &Path) -> Result<Vec<PathBuf>> {
    let texts = [
        ("front.md", markdown(r)),
        ("front.csv", csv(r)),
        ("front.json", serde_json::to_string_pretty(r)? + "\n"),
    ];
    crate::results::write_results(dir, "--work", &texts, &|files| {
        let c = chart(r);
        if c.points.len() > 1 {
            chart::write(&c, dir, "front", files).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    })
}

/// A path as the user would type it: relative to the working folder when inside it.
pub fn shown(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
        .display()
        .to_string()
}

/// What `auto` prints: the winner, its selection and dev drops, where things are.
pub fn text(r: &AutoReport) -> String {
    let mut s = String::new();
    let Some(w) = r.winner.as_deref().and_then(|w| r.rows.iter().find(|x| x.id == w)) else {
        return s;
    };
    s += &format!("chosen: {} ({})\n", w.label, w.id);
    s += &format!(
        "  selection: {:.4} vs input {:.4} (drop {:.2} ± {:.2} points; bound {:.2} at {:.0}% confidence, budget {})\n",
        w.accuracy,
        w.baseline_accuracy,
        w.drop + 0.0,
        w.drop_se,
        w.drop_bound,
        r.confidence * 100.0,
        r.max_drop
    );
    if let Some(d) = &r.dev {
        s += &format!(
            "  dev:       {:.4} vs input {:.4} (drop {:.2} points; gap to the selection {:+.2})\n",
            d.accuracy,
            d.baseline_accuracy,
            d.drop + 0.0,
            d.gap + 0.0
        );
    }
    s += &format!(
        "  MACs {}, size {:.2} MB ({:.0}% of the input)",
        w.macs_fraction.map_or("–".into(), |f| format!("{:.0}%", f * 100.0)),
        mb(w.bytes),
        w.size_fraction * 100.0
    );
    if let Some(sp) = &w.speed {
        s += &format!(
            ", {:.2}× the input (paired, {:.2}–{:.2}; batches of {})",
            sp.speedup, sp.min, sp.max, r.timing_batch_size
        );
    }
    s += "\n";
    let tried = r.rows.len() - 1;
    let early = r.rows.iter().filter(|x| x.dropped_early).count();
    let inside = r.rows.iter().skip(1).filter(|x| x.within_budget).count();
    s += &format!(
        "{}: {inside} within the budget, {early} dropped early; {:.0} s\n",
        crate::report::count(tried, "candidate", "candidates"),
        r.wall_seconds
    );
    for k in &r.skipped {
        s += &format!("  {k}\n");
    }
    if !r.missing.is_empty() {
        s += &format!("  no result (job not run or failed): {}\n", r.missing.join(", "));
    }
    if let Some(o) = &r.out {
        s += &format!("wrote {}\n", shown(o));
    }
    if let Some(rec) = &r.recipe {
        s += &format!(
            "recipe: {} (`onnx-compress run {} --out MODEL.onnx` rebuilds it)\n",
            shown(rec),
            super::plan::quote(&shown(rec))
        );
    }
    let others: Vec<String> = r
        .files
        .iter()
        .filter(|f| Some(*f) != r.recipe.as_ref())
        .map(|f| shown(f))
        .collect();
    if !others.is_empty() {
        s += &format!("front: {}\n", others.join(", "));
    }
    s
}

/// When nothing is within the budget: the closest candidates, as lines — closest by the upper
/// confidence bound of the drop, the number the verdict compares with the budget.
pub fn closest(r: &AutoReport, n: usize) -> Vec<String> {
    let mut rows: Vec<&Row> = r.rows.iter().skip(1).collect();
    rows.sort_by(|a, b| a.drop_bound.total_cmp(&b.drop_bound).then(a.drop.total_cmp(&b.drop)));
    rows.iter()
        .take(n)
        .map(|x| {
            format!(
                "{}: drop {:.2} ± {:.2} points (bound {:.2}) on {} selection examples",
                x.label,
                x.drop + 0.0,
                x.drop_se,
                x.drop_bound,
                x.examples
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, macs: u64, bytes: u64, within_budget: bool) -> Row {
        Row {
            id: id.into(),
            label: id.into(),
            structure: Structure::None,
            quant: None,
            examples: 512,
            accuracy: 0.9,
            baseline_accuracy: 0.9,
            drop: 0.0,
            drop_se: 0.0,
            drop_bound: 0.0,
            within_budget,
            dropped_early: false,
            params: 0,
            macs: Some(macs),
            macs_fraction: None,
            bytes,
            size_fraction: 1.0,
            speed: None,
            build_seconds: 0.0,
            on_front: false,
            model: PathBuf::new(),
            recipe: None,
        }
    }

    /// Equal MACs: the smaller file wins, as --help says (at a billion MACs the 40 kB between
    /// MRPC's two static forms fell below f64's step, and the larger won).
    #[test]
    fn a_tie_on_macs_goes_to_the_smaller_file() {
        let rows = [
            row("input", 1_673_000_000, 90_959_779, true),
            row("p0.70+static", 1_004_109_824, 20_910_187, true),
            row("p0.70+static_ort", 1_004_109_824, 20_869_514, true),
            row("p0.50+static", 700_000_000, 20_000_000, false),
        ];
        assert_eq!(winner(&rows, Objective::Macs).as_deref(), Some("p0.70+static_ort"));
        assert_eq!(winner(&rows, Objective::Size).as_deref(), Some("p0.70+static_ort"));
    }
}
