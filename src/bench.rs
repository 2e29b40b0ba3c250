//! `bench`: runs many recipes of one task (or of one data file of the user's) and writes the
//! results table in the reference's columns
//! (Acc, F1, ms/batch, samples/s, size) plus MACs, parameters and the change against the baseline,
//! as Markdown, CSV and JSON, with accuracy-vs-throughput and accuracy-vs-size Pareto charts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::chart::{self, Chart, Kind, Point};
use crate::glue::Task;
use crate::history;
use crate::pipeline::{self, RunOptions, RunReport};
use crate::recipe::LoadedRecipe;

/// One row of the results table.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub variant: String,
    pub config: PathBuf,
    pub baseline: bool,
    pub reference_method: bool,
    pub accuracy: Option<f64>,
    pub f1: Option<f64>,
    pub ms_per_batch: Option<f64>,
    pub samples_per_s: Option<f64>,
    pub size_mib: f64,
    pub size_bytes: u64,
    /// Encoder MACs per sequence of 128 tokens.
    pub encoder_macs: Option<u64>,
    pub params: usize,
    /// Accuracy points lost against the baseline row (positive: worse).
    pub accuracy_drop_points: Option<f64>,
    /// Throughput over the baseline row's.
    pub speedup: Option<f64>,
    /// Size over the baseline row's.
    pub size_ratio: Option<f64>,
    pub examples: usize,
    pub timed_batches: usize,
    pub pass_seconds: f64,
    pub passes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The GLUE task whose split the recipes evaluate on (`None`: the user's file, `data_file`).
    pub task: Option<Task>,
    /// The recipes' own labelled file (`data.file`), when they have no task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<PathBuf>,
    pub date: String,
    pub machine: String,
    pub limit: Option<usize>,
    pub baseline: Option<String>,
    /// The baseline's throughput (samples/s) when it ran first and when it was timed again after
    /// every other variant; speed-ups divide by their mean. One value when no other variant ran.
    pub baseline_samples_per_s: Vec<f64>,
    pub rows: Vec<Row>,
    /// Each variant's full run report (evaluation without per-example predictions).
    pub runs: Vec<RunReport>,
    /// The recipes that failed, each with its error; the table holds the others (empty: none).
    pub failed: Vec<Failure>,
}

/// A recipe that failed while the others ran.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub variant: String,
    pub config: PathBuf,
    /// It would have been the baseline (no pass enabled).
    pub baseline: bool,
    pub error: String,
}

impl Failure {
    /// `variant (config): error` on one line (the error's own leading file name dropped).
    pub fn line(&self) -> String {
        let config = self.config.display().to_string();
        let error = self.error.replace('\n', " ");
        let error = error.strip_prefix(&format!("{config}: ")).unwrap_or(&error);
        format!("{} ({config}): {error}", self.variant)
    }
}

/// This machine, in words: CPU model and logical cores.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} logical cores")
}

/// The rows of `runs`, compared against the first baseline run; speed-ups divide by
/// `base_samples_per_s` when given (the baseline timed more than once), else by its own run's.
pub fn rows(runs: &[RunReport], base_samples_per_s: Option<f64>) -> (Vec<Row>, Option<String>) {
    let base = runs.iter().find(|r| r.baseline);
    let base_sps = base_samples_per_s.or_else(|| base.and_then(|b| b.eval.timing.samples_per_s));
    let rows = runs
        .iter()
        .map(|r| {
            let m = &r.eval.metrics;
            let t = &r.eval.timing;
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            Row {
                variant: r.name.clone(),
                config: r.config.clone(),
                baseline: r.baseline,
                reference_method: r.reference_method,
                accuracy: m.accuracy,
                f1: m.f1,
                ms_per_batch: t.ms_per_batch,
                samples_per_s: t.samples_per_s,
                size_mib: r.eval.size_mib,
                size_bytes: r.eval.size_bytes,
                encoder_macs: r.encoder_macs,
                params: r.params,
                accuracy_drop_points: base
                    .and_then(|b| b.eval.metrics.accuracy)
                    .zip(m.accuracy)
                    .map(|(b, a)| (b - a) * 100.0),
                speedup: ratio(t.samples_per_s, base_sps),
                size_ratio: base.map(|b| r.eval.size_bytes as f64 / b.eval.size_bytes.max(1) as f64),
                examples: r.eval.examples,
                timed_batches: t.timed_batches,
                pass_seconds: r.pass_seconds,
                passes: r.steps.iter().map(|s| s.pass.clone()).collect(),
            }
        })
        .collect();
    (rows, base.map(|b| b.name.clone()))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "—".into())
}

/// What the recipes were evaluated on, in words: `SST-2 dev`, or the data file's name.
pub fn dataset(task: Option<Task>, data_file: Option<&Path>) -> String {
    match (task, data_file) {
        (Some(t), _) => format!("{} dev", t.dir_name()),
        (None, Some(f)) => f.file_name().unwrap_or(f.as_os_str()).to_string_lossy().into_owned(),
        (None, None) => "dev".into(),
    }
}

impl BenchReport {
    /// What the recipes were evaluated on, in words (see [`dataset`]).
    pub fn dataset(&self) -> String {
        dataset(self.task, self.data_file.as_deref())
    }
}

/// The table as Markdown, in the reference's columns first.
pub fn markdown(b: &BenchReport) -> String {
    let mut s = format!(
        "### {}{} — {} — {}\n\n",
        b.dataset(),
        b.limit.map(|n| format!(" (first {n} examples)")).unwrap_or_default(),
        b.date,
        b.machine
    );
    s += "| Variant | Acc ↑ | F1 ↑ | Avg Forward (ms/batch) ↓ | Throughput (samples/s) ↑ | Size (MiB) ↓ | MACs@128 (G) | Params (M) | Δ Acc (pts) | Speed-up | Size × |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in &b.rows {
        s += &format!(
            "| {}{} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} | {} | {} |\n",
            // A '|' in a recipe's name would end the cell.
            r.variant.replace('|', "\\|"),
            if r.baseline {
                " (baseline)"
            } else if r.reference_method {
                " (reference method)"
            } else {
                ""
            },
            opt(r.accuracy, 4),
            opt(r.f1, 4),
            opt(r.ms_per_batch, 2),
            opt(r.samples_per_s, 1),
            r.size_mib,
            opt(r.encoder_macs.map(|m| m as f64 / 1e9), 3),
            r.params as f64 / 1e6,
            r.accuracy_drop_points
                .map(|d| format!("{:+.2}", 0.0 - d + 0.0))
                .unwrap_or_else(|| "—".into()),
            opt(r.speedup, 2) + if r.speedup.is_some() { "×" } else { "" },
            opt(r.size_ratio, 3),
        );
    }
    let by_name: Vec<String> = b
        .runs
        .iter()
        .filter_map(|r| {
            let o = r.eval.class_order.as_ref()?;
            Some(format!(
                "{} (its outputs are {}, {})",
                r.name,
                o.names.join(", "),
                o.source
            ))
        })
        .collect();
    if !by_name.is_empty() {
        s += &format!(
            "\nRead by class name (the model names the task's classes in another order): {}.\n",
            by_name.join("; ")
        );
    }
    if let Some(f) = b.failed.iter().find(|f| f.baseline) {
        s += &format!(
            "\nThe baseline recipe ({}) failed: Δ Acc, Speed-up and Size × compare each row with it, so they are left empty.\n",
            f.variant
        );
    } else if !b.rows.is_empty() && !b.rows.iter().any(|r| r.baseline) {
        s += "\nNo baseline among these recipes (one with no pass enabled, as `configs/sst2/01_baseline.yaml`): \
              Δ Acc, Speed-up and Size × compare each row with it, so they are left empty.\n";
    }
    if !b.rows.is_empty() && b.rows.iter().all(|r| r.samples_per_s.is_none()) {
        s += "\nNo speed was measured: every evaluated batch went to the warm-up, or --measure 0 timed none. \
              Evaluate more examples (--limit), lower the warm-up (--warmup, or eval.warmup in the recipes) or \
              time some batches (--measure); the throughput chart needs timed rows.\n";
    }
    if !b.failed.is_empty() {
        s += &format!(
            "\n{} of the recipes failed; their rows are missing:\n\n",
            b.failed.len()
        );
        for f in &b.failed {
            s += &format!("- {}\n", f.line());
        }
    }
    if let [first, last] = b.baseline_samples_per_s[..] {
        s += &format!(
            "\nSpeed-ups divide by the baseline's mean throughput over two runs: {first:.1} samples/s \
             first, {last:.1} after every other variant (the baseline row's own speed-up is its first run's).\n"
        );
        let spread = first.max(last) / first.min(last);
        if spread > NOISY_BASELINE {
            s += &format!(
                "\nThe baseline's two runs differ {spread:.2}×: the machine's speed changed during the bench (other \
                 work on its cores) or too few batches were timed; the speed-ups are not to be trusted. Rerun on a \
                 quiet machine, with more timed batches (--measure, --limit).\n"
            );
        }
    }
    let few: Vec<&str> = b
        .rows
        .iter()
        .filter(|r| r.samples_per_s.is_some() && r.timed_batches < FEW_TIMED_BATCHES)
        .map(|r| r.variant.as_str())
        .collect();
    if !few.is_empty() {
        s += &format!(
            "\nTimed on fewer than {FEW_TIMED_BATCHES} batches (one batch's time is noisy): {}. Time more (--measure, --limit).\n",
            few.join(", ")
        );
    }
    s
}

/// The spread of the baseline's two throughputs (larger / smaller) past which the table says
/// its speed-ups are not to be trusted.
const NOISY_BASELINE: f64 = 1.25;
/// Rows timed on fewer batches than this are named as noisy.
const FEW_TIMED_BATCHES: usize = 5;

/// The table as CSV (empty fields where a value does not apply; `task` is the data file's path
/// for recipes on the user's own file), then a row per recipe that failed: its variant, config
/// and `error`, the measurements empty.
pub fn csv(b: &BenchReport) -> String {
    let mut s = String::from(
        "task,variant,baseline,reference_method,accuracy,f1,ms_per_batch,samples_per_s,size_mib,size_bytes,encoder_macs,params,accuracy_drop_points,speedup,size_ratio,examples,timed_batches,pass_seconds,passes,config,error\n",
    );
    let f = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    let task = crate::report::csv_field(&match (b.task, &b.data_file) {
        (Some(t), _) => t.name().to_string(),
        (None, f) => f.as_ref().map(|f| f.display().to_string()).unwrap_or_default(),
    });
    for r in &b.rows {
        s += &[
            task.clone(),
            crate::report::csv_field(&r.variant),
            r.baseline.to_string(),
            r.reference_method.to_string(),
            f(r.accuracy),
            f(r.f1),
            f(r.ms_per_batch),
            f(r.samples_per_s),
            format!("{}", r.size_mib),
            r.size_bytes.to_string(),
            r.encoder_macs.map(|m| m.to_string()).unwrap_or_default(),
            r.params.to_string(),
            f(r.accuracy_drop_points),
            f(r.speedup),
            f(r.size_ratio),
            r.examples.to_string(),
            r.timed_batches.to_string(),
            format!("{:.3}", r.pass_seconds),
            crate::report::csv_field(&r.passes.join("+")),
            crate::report::csv_field(&r.config.display().to_string()),
            String::new(),
        ]
        .join(",");
        s.push('\n');
    }
    for x in &b.failed {
        let mut cells = vec![
            task.clone(),
            crate::report::csv_field(&x.variant),
            x.baseline.to_string(),
        ];
        cells.extend(std::iter::repeat_n(String::new(), 16));
        cells.push(crate::report::csv_field(&x.config.display().to_string()));
        cells.push(crate::report::csv_field(&x.error));
        s += &cells.join(",");
        s.push('\n');
    }
    s
}

/// The two Pareto charts of a benchmark.
pub fn charts(b: &BenchReport) -> Vec<(String, Chart)> {
    charts_of(&b.dataset(), &b.date, &b.rows)
}

/// The two Pareto charts of `rows` evaluated on `dataset` (words, see [`dataset`]) on `date`.
pub fn charts_of(dataset: &str, date: &str, rows: &[Row]) -> Vec<(String, Chart)> {
    let kind = |r: &Row| {
        if r.baseline {
            Kind::Baseline
        } else if r.reference_method {
            Kind::Reference
        } else {
            Kind::Tool
        }
    };
    let title = |what: &str| format!("{dataset}: accuracy vs {what} ({})", date.get(..10).unwrap_or(date));
    let points = |x: &dyn Fn(&Row) -> Option<f64>| -> Vec<Point> {
        rows.iter()
            .filter_map(|r| {
                Some(Point {
                    label: r.variant.clone(),
                    x: x(r)?,
                    y: r.accuracy?,
                    kind: kind(r),
                })
            })
            .collect()
    };
    vec![
        (
            "pareto_throughput".into(),
            Chart {
                title: title("throughput"),
                x_label: "throughput (samples/s, CPU)".into(),
                y_label: "accuracy".into(),
                x_higher_is_better: true,
                points: points(&|r| r.samples_per_s),
            },
        ),
        (
            "pareto_size".into(),
            Chart {
                title: title("size"),
                x_label: "size on disk (MiB)".into(),
                y_label: "accuracy".into(),
                x_higher_is_better: false,
                points: points(&|r| Some(r.size_mib)),
            },
        ),
    ]
}

/// The files [`write`] may write into its folder.
pub const FILES: [&str; 7] = [
    "results.md",
    "results.csv",
    "results.json",
    "pareto_throughput.svg",
    "pareto_throughput.png",
    "pareto_size.svg",
    "pareto_size.png",
];

/// Writes results.md, results.csv, results.json and the charts (SVG + PNG) into `dir`.
pub fn write(b: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>> {
    let texts = [
        ("results.md", markdown(b)),
        ("results.csv", csv(b)),
        ("results.json", serde_json::to_string_pretty(b)? + "\n"),
    ];
    crate::results::write_results(dir, "--out", &texts, &|files| write_charts(&charts(b), dir, files))
}

/// Writes each chart with points as `<stem>.svg` and `<stem>.png` into `dir`, adding each file
/// to `files`.
pub fn write_charts(charts: &[(String, Chart)], dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for (stem, c) in charts {
        if c.points.is_empty() {
            // No chart of this run: none of an earlier one is left to be read as its.
            for ext in ["svg", "png"] {
                let old = dir.join(format!("{stem}.{ext}"));
                if old.is_file() {
                    std::fs::remove_file(&old).with_context(|| format!("removing the old chart {}", old.display()))?;
                }
            }
            continue;
        }
        chart::write(c, dir, stem, files).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Runs every recipe (all of task `task`, or all on the user's file `data_file`) and collects the
/// table. A recipe that fails is said through `failed` as it happens and listed in the report
/// (`BenchReport::failed`); the others run on (the report of a bench whose every recipe failed
/// has no rows).
pub fn bench(
    recipes: &[LoadedRecipe],
    task: Option<Task>,
    data_file: Option<&Path>,
    opts: &RunOptions,
    stage: &dyn Fn(usize, &str, &str),
    failed: &dyn Fn(&Failure),
    progress: crate::eval::Progress,
) -> Result<BenchReport> {
    if recipes.is_empty() {
        bail!("no recipe for {} among the configs given", dataset(task, data_file));
    }
    let failure = |r: &LoadedRecipe, e: anyhow::Error| {
        let f = Failure {
            variant: r.name(),
            config: r.path.clone(),
            baseline: r.is_baseline(),
            error: format!("{e:#}"),
        };
        failed(&f);
        f
    };
    let (mut runs, mut failures, mut ran) = (vec![], vec![], vec![]);
    for (i, r) in recipes.iter().enumerate() {
        let name = r.name();
        match pipeline::run(r, opts, &|s| stage(i, &name, s), progress) {
            Ok(mut report) => {
                report.eval.predictions.clear();
                runs.push(report);
                ran.push(i);
            }
            Err(e) => failures.push(failure(r, e)),
        }
    }
    // The machine's speed drifts (±30% within minutes on a shared one): time the baseline again
    // after every other variant, and divide every speed-up by the mean of its two runs.
    let mut baseline_samples_per_s = vec![];
    if let Some(k) = runs.iter().position(|r| r.baseline) {
        if runs.len() > 1 {
            let (i, name) = (ran[k], recipes[ran[k]].name());
            match pipeline::run(
                &recipes[i],
                opts,
                &|s| stage(i, &name, &format!("timed again: {s}")),
                progress,
            ) {
                Ok(again) => {
                    baseline_samples_per_s = [runs[k].eval.timing.samples_per_s, again.eval.timing.samples_per_s]
                        .into_iter()
                        .flatten()
                        .collect()
                }
                Err(e) => failures.push(failure(&recipes[i], e.context("timed again"))),
            }
        } else {
            // No other variant ran: its one run (it is not timed again).
            baseline_samples_per_s.extend(runs[k].eval.timing.samples_per_s);
        }
    }
    let mean = (baseline_samples_per_s.len() == 2).then(|| baseline_samples_per_s.iter().sum::<f64>() / 2.0);
    let (rows, baseline) = rows(&runs, mean);
    Ok(BenchReport {
        task,
        data_file: data_file.map(Path::to_path_buf),
        date: history::now_utc(),
        machine: machine(),
        limit: opts.limit,
        baseline,
        baseline_samples_per_s,
        rows,
        runs,
        failed: failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: &str, baseline: bool, samples_per_s: f64, timed_batches: usize) -> Row {
        Row {
            variant: variant.into(),
            config: PathBuf::from(format!("{variant}.yaml")),
            baseline,
            reference_method: false,
            accuracy: Some(0.9),
            f1: None,
            ms_per_batch: Some(32_000.0 / samples_per_s),
            samples_per_s: Some(samples_per_s),
            size_mib: 1.0,
            size_bytes: 1 << 20,
            encoder_macs: None,
            params: 1,
            accuracy_drop_points: Some(0.0),
            speedup: Some(1.0),
            size_ratio: Some(1.0),
            examples: 64,
            timed_batches,
            pass_seconds: 0.0,
            passes: vec![],
        }
    }

    fn report(baseline_samples_per_s: Vec<f64>, timed_batches: usize) -> BenchReport {
        BenchReport {
            task: Some(Task::Sst2),
            data_file: None,
            date: "today".into(),
            machine: "here".into(),
            limit: None,
            baseline: Some("base".into()),
            baseline_samples_per_s,
            rows: vec![
                row("base", true, 100.0, timed_batches),
                row("int8", false, 200.0, timed_batches),
            ],
            runs: vec![],
            failed: vec![],
        }
    }

    /// A baseline whose two runs disagree, and rows timed on a batch or two, are said under the
    /// table (the speed-ups read as measured).
    #[test]
    fn noisy_speeds_are_said_under_the_table() {
        let quiet = markdown(&report(vec![100.0, 110.0], 50));
        assert!(
            !quiet.contains("not to be trusted") && !quiet.contains("fewer than"),
            "{quiet}"
        );
        let noisy = markdown(&report(vec![95.5, 339.2], 1));
        assert!(noisy.contains("The baseline's two runs differ 3.55×"), "{noisy}");
        assert!(
            noisy.contains("Timed on fewer than 5 batches (one batch's time is noisy): base, int8."),
            "{noisy}"
        );
    }

    #[test]
    fn a_pipe_in_a_recipe_name_stays_in_its_cell() {
        let mut b = report(vec![100.0, 100.0], 50);
        b.rows[1].variant = "a|b".into();
        let md = markdown(&b);
        let line = md.lines().find(|l| l.starts_with("| a")).unwrap();
        assert!(line.starts_with("| a\\|b | "), "{line}");
        assert_eq!(line.matches(" | ").count(), 10, "eleven cells: {line}");
    }
}
