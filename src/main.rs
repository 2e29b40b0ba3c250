//! The `onnx-compress` command line: parses flags ([`cli::flags`]), builds options and plans
//! ([`cli::options`]), calls the library (the pass executor for every command that writes a
//! model) and renders the result. Nothing else.

mod cli;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::flags::{
    AutoArgs, BenchArgs, Cli, Command, ConvertArgs, DiffArgs, EvalArgs, ExternalMode, PassIo, RunArgs, SensitivityArgs,
};
use cli::options;
use onnx_compress::eval::{self, EvalData, EvalOptions};
use onnx_compress::executor::{self, Output, Plan};
use onnx_compress::glue::Task;
use onnx_compress::onnx::{self, ExternalData};
use onnx_compress::passes::quantize::{Mode as QuantMode, QuantizeOptions, WeightType};
use onnx_compress::passes::{Pass, PassReport};
use onnx_compress::runtime::{self, SessionOptions};
use onnx_compress::{auto, bench, calib, diff, inspect, pipeline, recipe, report, sensitivity};

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| cli::number_tip(e).exit());
    // A Ctrl-C or SIGTERM removes the temporary files being written and stops the jobs started.
    if let Err(e) = onnx_compress::interrupt::install() {
        let _ = writeln!(std::io::stderr(), "note: no clean-up on a signal: {e}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", options::render(&e));
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
    // Only commands that write a time read SOURCE_DATE_EPOCH: the others run whatever it holds.
    let reads_only = matches!(
        cli.command,
        Command::Inspect { .. } | Command::Eval(_) | Command::Diff(_) | Command::Sensitivity(_)
    );
    if !reads_only {
        onnx_compress::history::check_source_date_epoch()?;
    }
    let ort_lib = cli.ort_lib.as_deref();
    let quiet = cli.quiet;
    match cli.command {
        Command::Inspect { model, seq_len, json } => {
            let (m, sources) = onnx::load_with_sources(&model)?;
            let s = inspect::summarize(&m, &model, onnx::io::size_on_disk(&sources), seq_len)
                .with_context(|| model.display().to_string())?;
            if json {
                print_json(&s)
            } else {
                print(&report::inspect_text(&s))
            }
        }
        Command::Eval(a) => cmd_eval(ort_lib, quiet, a),
        Command::Prune(a) => pass_command(ort_lib, quiet, &a.io, options::prune_plan(&a)?),
        Command::Lowrank(a) => pass_command(ort_lib, quiet, &a.io, options::lowrank_plan(&a)?),
        Command::Quantize(a) => pass_command(ort_lib, quiet, &a.io, options::quantize_plan(&a)?),
        Command::Convert(a) => cmd_convert(ort_lib, a),
        Command::Run(a) => cmd_run(ort_lib, quiet, a),
        Command::Bench(a) => cmd_bench(ort_lib, quiet, a),
        Command::Diff(a) => cmd_diff(ort_lib, quiet, a),
        Command::Sensitivity(a) => cmd_sensitivity(ort_lib, quiet, a),
        Command::Auto(a) => cmd_auto(ort_lib, quiet, *a),
    }
}

/// A one-step plan of `prune`, `lowrank` or `quantize` through the executor, then its report.
fn pass_command(ort_lib: Option<&Path>, quiet: bool, io: &PassIo, plan: Plan) -> Result<()> {
    // Calibration runs the model, and every written model is run once before it is written.
    runtime::init(ort_lib)?;
    let output = Output::new(io.output.clone(), ExternalData::Auto);
    let name = plan.steps.first().map_or("onnx-compress", |s| s.pass.name());
    let mut stages = cli::progress::Progress::spinner(name, quiet);
    // A one-step plan's stage lines need not name the step again after the command.
    let step_prefix = format!("{name}: ");
    let done = executor::execute(&io.input, &plan, io.tokenizer.as_deref(), Some(&output), &|s| {
        if s == name {
            stages.stage("running the pass")
        } else {
            stages.stage(s.strip_prefix(&step_prefix).unwrap_or(s))
        }
    });
    stages.finish();
    let done = done?;
    for n in &done.notes {
        eprintln!("note: {n}");
    }
    let Some(step) = done.steps.first() else {
        bail!("internal error: the plan ran no step")
    };
    let bytes = done.saved.as_ref().map_or(0, |s| s.bytes);
    match &step.report {
        _ if io.json => print_json(&pass_json(step, io, bytes, &done)?)?,
        PassReport::Prune(r) => print(&report::prune_text(r, &io.output))?,
        PassReport::Lowrank(r) => print(&report::lowrank_text(r, &io.output))?,
        PassReport::Quantize(r) => print(&report::quantize_text(r, &io.output, bytes))?,
        PassReport::Convert | PassReport::Custom(_) => {}
    }
    if let PassReport::Quantize(r) = &step.report {
        saturation_note(&r.options);
    }
    Ok(())
}

/// A pass's JSON: its report, with what the text says beside it: the file written and its size,
/// the notes (also on stderr) and, where the report does not hold them, the calibration counts.
fn pass_json(
    step: &executor::StepOutcome,
    io: &PassIo,
    bytes: u64,
    done: &executor::Outcome,
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(&step.report)?;
    if let Some(o) = v.as_object_mut() {
        // The options as the history records them: the calibration's too.
        o.insert("options".into(), step.options.clone());
        o.insert("output".into(), io.output.display().to_string().into());
        o.insert("output_bytes".into(), bytes.into());
        o.entry("notes").or_insert_with(|| done.notes.clone().into());
        if let (Some(n), Some(t)) = (done.calibration_examples, done.calibration_tokens) {
            o.entry("calibration_examples").or_insert(n.into());
            o.entry("calibration_tokens").or_insert(t.into());
        }
    }
    Ok(v)
}

fn cmd_convert(ort_lib: Option<&Path>, a: ConvertArgs) -> Result<()> {
    // The written model is run once before it is written.
    runtime::init(ort_lib)?;
    let mode = match a.external_data {
        ExternalMode::Auto => ExternalData::Auto,
        ExternalMode::Always => ExternalData::Always,
        ExternalMode::Never => ExternalData::Never,
    };
    let plan = Plan::single(
        Pass::Convert {
            external_data: format!("{mode:?}").to_lowercase(),
        },
        None,
    );
    let output = Output::new(a.output.clone(), mode);
    let done = executor::execute(&a.input, &plan, a.tokenizer.as_deref(), Some(&output), &|_| {})?;
    for n in &done.notes {
        eprintln!("note: {n}");
    }
    let Some(summary) = done.saved else {
        bail!("internal error: convert wrote nothing")
    };
    // Embedding the tokenizer is half of convert's job: say whether it did.
    let embedded = onnx_compress::history::embedded_tokenizer(&done.model).is_some();
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("tokenizer_embedded".into(), embedded.into());
        }
        print_json(&v)
    } else {
        print(&format!(
            "wrote {} ({} bytes){}\n{}\n",
            summary.path.display(),
            summary.bytes,
            summary
                .data_file
                .as_ref()
                .map(|d| format!(" and {} ({} bytes)", d.display(), summary.data_bytes))
                .unwrap_or_default(),
            if embedded {
                "tokenizer embedded"
            } else {
                "no tokenizer embedded: no tokenizer.json beside the input (--tokenizer PATH embeds one)"
            }
        ))
    }
}

fn cmd_eval(ort_lib: Option<&Path>, quiet: bool, a: EvalArgs) -> Result<()> {
    existing_model("--model", &a.model)?;
    let (task, data) = options::eval_data(&a.data)?;
    runtime::init(ort_lib)?;
    let opts = EvalOptions {
        task,
        data,
        labels: a.data.label.labels,
        batch_size: a.batch_size.unwrap_or(Task::batch_size_of(task)),
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
        words: eval::Words::Flags,
    };
    let what = match (&task, &opts.data) {
        (_, EvalData::File(s)) => s.path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        (Some(t), _) => t.to_string(),
        (None, _) => String::new(),
    };
    let mut bar = cli::progress::Progress::bar(&format!("eval {what}"), quiet);
    let progress = |done: usize, total: usize| bar.count(done, total);
    let r = eval::evaluate(&a.model, &opts, &progress);
    bar.finish();
    let r = r?;
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    if a.json {
        print_json(&r)
    } else {
        print(&report::eval_text(&r))
    }
}

/// A model file named by `flag` must exist and not be a folder.
fn existing_model(flag: &str, model: &Path) -> Result<()> {
    if model.is_dir() {
        bail!(
            "{flag} {}: is a directory; pass the .onnx file inside it",
            model.display()
        );
    }
    if !model.is_file() {
        bail!("{flag} {}: no such file", model.display());
    }
    Ok(())
}

fn cmd_diff(ort_lib: Option<&Path>, quiet: bool, a: DiffArgs) -> Result<()> {
    existing_model("MODEL_A", &a.model_a)?;
    existing_model("MODEL_B", &a.model_b)?;
    let (task, data) = options::eval_data(&a.data)?;
    // The table is not written over a file diff reads.
    if let Some(csv) = &a.csv {
        if csv.as_os_str() == "-" {
            bail!("--csv -: the rows go to a file, not to standard output; name a file (--json prints them too)");
        }
        let mut reads = vec![
            (a.model_a.clone(), "the model MODEL_A"),
            (a.model_b.clone(), "the model MODEL_B"),
        ];
        reads.extend(eval::files_read_with(&a.model_a));
        reads.extend(eval::files_read_with(&a.model_b));
        if let Some(file) = data.file(task) {
            reads.push((file, "the data file"));
        }
        if let Some(t) = &a.tokenizer {
            reads.push((t.clone(), "the tokenizer"));
        }
        for (path, what) in reads {
            onnx::io::ensure_not_read(&path, what, csv).with_context(|| format!("--csv {}", csv.display()))?;
        }
        onnx::io::target_folder(csv).map_err(|e| anyhow::anyhow!("--csv {e}"))?;
    }
    runtime::init(ort_lib)?;
    let opts = diff::DiffOptions {
        eval: EvalOptions {
            task,
            data,
            labels: a.data.label.labels,
            batch_size: a.batch_size.unwrap_or(Task::batch_size_of(task)),
            max_length: a.max_length,
            warmup: 0,
            measure: 0,
            limit: a.limit,
            bucket: false,
            tokenizer: a.tokenizer,
            session: SessionOptions {
                device: a.device,
                threads: a.threads,
                ..Default::default()
            },
            words: eval::Words::Flags,
        },
        threshold: a.threshold,
        show: a.show,
    };
    let mut bar = cli::progress::Progress::bar("diff", quiet);
    let progress = |done: usize, total: usize| bar.count(done, total);
    let r = diff::diff(&a.model_a, &a.model_b, &opts, &progress);
    bar.finish();
    let r = r?;
    if let Some(path) = &a.csv {
        onnx::io::write_text(path, &diff::rows_csv(&r)).map_err(|e| anyhow::anyhow!("--csv {e}"))?;
    }
    if a.json {
        print_json(&r)
    } else {
        print(&report::diff_text(&r))
    }
}

fn cmd_sensitivity(ort_lib: Option<&Path>, quiet: bool, a: SensitivityArgs) -> Result<()> {
    existing_model("MODEL", &a.model)?;
    let Some(c) = a
        .calib
        .calibration(options::CALIB_SAMPLES, a.tokenizer.as_deref(), false)?
    else {
        bail!("sensitivity measures on calibration data: add --calib-data TRAIN (e.g. data/glue/sst2/train.tsv)");
    };
    c.validate()?;
    let opts = sensitivity::SensitivityOptions {
        fractions: a.fractions,
        int8: !a.no_int8,
        seq_len: a.seq_len,
    };
    opts.validate()?;
    // The output folder, checked before the minutes of measuring.
    if let Some(out) = &a.out {
        let beside = eval::files_read_with(&a.model);
        let mut reads = vec![(a.model.as_path(), "the model")];
        reads.extend(beside.iter().map(|(p, what)| (p.as_path(), *what)));
        if let Some(d) = &a.calib.calib_data {
            reads.push((d.as_path(), "the calibration data"));
        }
        if let Some(t) = &a.tokenizer {
            reads.push((t.as_path(), "the tokenizer"));
        }
        sensitivity::check_out(out, &reads)?;
    }
    let model = onnx::load(&a.model)?;
    runtime::init(ort_lib)?;
    let mut stages = cli::progress::Progress::spinner("sensitivity", quiet);
    stages.stage("loading calibration data");
    let (mut calibrator, note) = calib::ort_calibrator(&c.spec(), &a.model, &model)?;
    let shortfall: Vec<String> = note.into_iter().chain(c.shortfall(calibrator.examples)).collect();
    let r = sensitivity::sensitivity(&model, &opts, &mut calibrator, &mut |s| stages.stage(s));
    stages.finish();
    let mut r = r
        .map_err(anyhow::Error::from)
        .with_context(|| a.model.display().to_string())?;
    // With the report's other notes: in its text, its JSON and sensitivity.json.
    r.notes.splice(0..0, shortfall);
    // The report is printed whether or not its files could be written (a failure is said after
    // it): the measurements are not lost.
    let files = match &a.out {
        Some(dir) => sensitivity::write(&r, dir),
        None => Ok(vec![]),
    };
    if a.json {
        print_json(&r)?;
    } else {
        let mut s = report::sensitivity_text(&r);
        if let Some(f) = files.as_ref().ok().filter(|f| !f.is_empty()) {
            s += &format!(
                "wrote {}\n",
                f.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        print(&s)?;
    }
    files.map(|_| ())
}

fn cmd_auto(ort_lib: Option<&Path>, quiet: bool, a: AutoArgs) -> Result<()> {
    existing_model("MODEL", &a.model)?;
    let mut o = options::auto_options(a.model.as_path(), &a)?;
    if a.plan.is_some() || a.jobs.is_some() {
        let exe = std::env::current_exe().context("finding this binary for the plan's commands")?;
        let w = auto::plan::write(&o, &exe, a.plan.is_some())?;
        let Some(n) = a.jobs else {
            if a.json {
                return print_json(&w);
            }
            return print(&format!(
                "{} jobs written to {}: run each line of jobs.txt (a job array, GNU parallel), or `make -j N -f {}`; then `sh {}` chooses\n",
                w.jobs.len(),
                auto::front::shown(&w.dir),
                auto::plan::quote(&auto::front::shown(&w.dir.join("Makefile"))),
                auto::plan::quote(&auto::front::shown(&w.dir.join("collect.sh")))
            ));
        };
        let progress = cli::progress::Progress::spinner("auto", quiet);
        progress.stage(&format!("{} jobs, {n} at a time", w.jobs.len()));
        let ran = auto::plan::run_local(&w, n, &|done, total| {
            progress.stage(&format!("{done} of {total} jobs done, {n} at a time"))
        });
        drop(progress);
        ran?;
        o.mode = auto::Mode::Collect;
    }
    runtime::init(ort_lib)?;
    let progress = cli::progress::Progress::spinner("auto", quiet);
    let ui = auto::Ui {
        stage: &|s| progress.stage(s),
        line: &|s| progress.line(s),
        note: &|s| progress.note(&format!("note: {s}")),
    };
    let r = auto::auto(&o, &ui);
    drop(progress);
    let r = r?;
    if let auto::Mode::Only(id) = &o.mode {
        if a.json {
            return print_json(&r);
        }
        return print(&format!(
            "job {id}: {} scored; journal {}\n",
            onnx_compress::report::count(r.rows.len(), "candidate", "candidates"),
            r.files.first().map(|f| f.display().to_string()).unwrap_or_default()
        ));
    }
    if r.winner.is_none() {
        // With --json the report still goes to stdout (rows, closest, winner null): a script
        // reads why, beside the exit status and the error below.
        if a.json {
            print_json(&r)?;
        }
        // Candidates that failed are said first: their cause (a full disk) may be the answer.
        let failed = match r.failed.first() {
            Some((id, e)) => format!(
                "{} candidate{} failed (the first, {id}: {e}); ",
                r.failed.len(),
                if r.failed.len() == 1 { "" } else { "s" }
            ),
            None => String::new(),
        };
        let closest = match auto::front::closest(&r, 3) {
            c if c.is_empty() => "no candidate was scored".to_string(),
            c => c.join("; "),
        };
        // Collected from a plan: the jobs with no result yet may hold the winner.
        let missing = match r.missing.len() {
            0 => String::new(),
            n => format!(
                "; {n} of the plan's jobs have no result (not run, or failed: {}): run them, then collect again",
                r.missing.join(", ")
            ),
        };
        // An earlier run's winner files, removed: said, as files a user may have open.
        let removed = match r.removed.len() {
            0 => String::new(),
            _ => format!(
                " (an earlier run's {} removed from it)",
                r.removed
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let removed = removed + &r.not_removed.iter().map(|e| format!("; {e}")).collect::<String>();
        bail!(
            "{failed}no candidate is within --max-drop {} points on the selection (at {:.0}% confidence) and beats the input on {}; nothing written (closest: {closest}){missing}; the journal stays in {}{removed}",
            o.max_drop,
            o.confidence * 100.0,
            onnx_compress::options::Named::name(o.objective),
            o.work.display()
        );
    }
    if a.json {
        print_json(&r)
    } else {
        print(&auto::front::text(&r))
    }
}

/// On a CPU whose u8 × s8 kernels saturate, says so after writing int8 weights as s8: accuracy
/// measured here can differ from a VNNI CPU's, and u8 weights run exactly here.
fn saturation_note(o: &QuantizeOptions) {
    if o.mode != QuantMode::Fp16 && o.weight_type == WeightType::S8 && runtime::u8s8_saturates() {
        let _ = writeln!(
            std::io::stderr().lock(),
            "note: this CPU has no VNNI: ONNX Runtime's u8 × s8 kernels add pairs of products in 16 bits here and can saturate, so INT8 accuracy measured on it can differ from a VNNI CPU's; --weight-type u8 stores the same values for exact kernels on any CPU (about 20% slower here). README: \"The CPU matters for INT8 accuracy\""
        );
    }
}

/// Shows a recipe's notes (keys of the reference's layout it ignores) on stderr, one line each.
fn print_notes(r: &recipe::LoadedRecipe) {
    let mut err = std::io::stderr().lock();
    for n in r.notes() {
        let _ = writeln!(err, "note: {n}");
    }
}

fn cmd_run(ort_lib: Option<&Path>, quiet: bool, a: RunArgs) -> Result<()> {
    let r = recipe::load_with_model(&a.config, a.eval.model.as_deref())?;
    print_notes(&r);
    options::check_data_flag(&a.eval.data, &r)?;
    // The model is found (or its absence explained) before ONNX Runtime is loaded.
    r.model().map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    r.check_files()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    let opts = options::run_options(a.eval, a.out)?;
    runtime::init(ort_lib)?;
    let mut bar = cli::progress::Progress::bar(&format!("run {}", r.name()), quiet);
    let stage = |s: &str| bar.stage(s);
    let progress = |done: usize, total: usize| bar.count(done, total);
    let rep = pipeline::run(&r, &opts, &stage, &progress);
    bar.finish();
    let rep = rep?;
    for n in &rep.notes {
        eprintln!("note: {n}");
    }
    if a.json {
        print_json(&rep)
    } else {
        print(&report::run_text(&rep))
    }
}

fn cmd_bench(ort_lib: Option<&Path>, quiet: bool, a: BenchArgs) -> Result<()> {
    let task = a.task.as_deref().map(Task::from_name).transpose()?;
    let model = a.eval.model.clone();
    let data_flag = a.eval.data.clone();
    let opts = options::run_options(a.eval, None)?;
    let options::BenchRecipes {
        recipes,
        task,
        data_file,
        out,
        notes,
    } = options::bench_recipes(&a.configs, model.as_deref(), task, &data_flag, a.out)?;
    recipes.iter().for_each(print_notes);
    for n in notes {
        eprintln!("note: {n}");
    }
    runtime::init(ort_lib)?;
    let mut bar = cli::progress::Progress::bar("bench", quiet);
    let n = recipes.len();
    let stage = |i: usize, name: &str, s: &str| {
        bar.prefix(&format!("bench [{}/{n}] {name}", i + 1));
        bar.stage(s);
    };
    let progress = |done: usize, total: usize| bar.count(done, total);
    let failed = |f: &bench::Failure| {
        bar.note(&format!("failed: {}", f.line()));
    };
    let rep = bench::bench(&recipes, task, data_file.as_deref(), &opts, &stage, &failed, &progress);
    bar.finish();
    let rep = rep?;
    // The table is printed whether or not its files could be written (a failure is said after
    // it): the runs are not lost.
    let files = bench::write(&rep, &out);
    if a.json {
        print_json(&rep)?;
    } else {
        let mut s = bench::markdown(&rep);
        if let Ok(files) = &files {
            s += "\nwrote ";
            s += &files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            s.push('\n');
        }
        print(&s)?;
    }
    files?;
    if !rep.failed.is_empty() {
        bail!(
            "{} of {} recipes failed ({}); the table of the others is written to {}",
            rep.failed.len(),
            recipes.len(),
            rep.failed
                .iter()
                .map(|f| f.variant.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            out.display()
        );
    }
    Ok(())
}
