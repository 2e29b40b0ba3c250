//! `auto`: the search chooses on a selection part disjoint from calibration, writes the winner and
//! a recipe that `run` rebuilds byte for byte, resumes an interrupted search from its journal to
//! the same result, refuses bad flags before reading anything, and writes nothing when no
//! candidate is within the budget. Run on the shared SST-2 model with small samples (the search
//! itself is measured in bench/RESULTS.md).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use onnx_compress::testkit::shared::require;
use serde_json::Value;

mod common;

use common::{assert_clean_error, bin, have_ort, s, text};

const SST2: &str = "models/minilm-l6-sst2/model.onnx";
const TRAIN: &str = "data/glue/sst2/train.tsv";

struct Shared {
    model: PathBuf,
    train: PathBuf,
    glue: PathBuf,
}

fn shared(what: &str) -> Option<Shared> {
    let model = require(SST2, what)?;
    let train = require(TRAIN, what)?;
    if !have_ort(what) {
        return None;
    }
    let glue = train.parent()?.parent()?.to_path_buf();
    Some(Shared { model, train, glue })
}

/// `auto` on the shared SST-2 model and its train and dev files, writing `out`, with `flags`
/// (whitespace-separated; paths go on with `.args`).
fn args(sh: &Shared, out: &Path, flags: &str) -> Vec<String> {
    let head = [
        "auto",
        s(&sh.model),
        s(out),
        "--task",
        "sst2",
        "--calib-data",
        s(&sh.train),
        "--data",
        s(&sh.glue),
    ];
    head.iter()
        .copied()
        .chain(flags.split_whitespace())
        .map(str::to_string)
        .collect()
}

/// A small search: two low-rank levels and two INT8 forms (eight candidates), chosen by MACs.
fn small_args(sh: &Shared, out: &Path, work: &Path, max_drop: &str) -> Vec<String> {
    let flags = format!(
        "--calib-samples 32 --selection 64 --prune none --lowrank 0.9,0.8 --quant dynamic_per_channel,static \
         --objective macs --max-drop {max_drop} --time-budget 30m"
    );
    let mut a = args(sh, out, &flags);
    a.extend(["--work".to_string(), s(work).to_string()]);
    a
}

fn json(out: &std::process::Output, what: &str) -> Value {
    assert!(out.status.success(), "{what} failed:\n{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{}", text(&out.stdout)))
}

/// What must not depend on an interruption: each row's id, counts and measures.
fn rows_key(r: &Value) -> Vec<String> {
    r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{} {} {} {} {} {}",
                x["id"], x["examples"], x["accuracy"], x["drop"], x["bytes"], x["macs"]
            )
        })
        .collect()
}

#[test]
fn a_search_resumes_after_a_kill_and_run_rebuilds_the_winner_byte_for_byte() {
    let Some(sh) = shared("auto on the shared SST-2 model") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out_a, work_a) = (dir.path().join("a.onnx"), dir.path().join("a.work"));
    let (out_b, work_b) = (dir.path().join("b.onnx"), dir.path().join("b.work"));

    // Uninterrupted.
    let a = bin()
        .args(small_args(&sh, &out_a, &work_a, "100"))
        .args(["--json", "-q"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let ra = json(&a, "auto");
    assert_eq!(ra["calibration_examples"], 32);
    assert_eq!(ra["selection_examples"], 64);
    assert_eq!(ra["train_examples"], 67349);
    let rows = ra["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "the input and eight candidates: {rows:?}");
    assert_eq!(rows[0]["id"], "base");
    // Every budget of 100 points admits all; by MACs the deepest low rank wins, ties to the
    // smaller file (an INT8 form).
    let winner = ra["winner"].as_str().unwrap();
    assert!(winner.starts_with("lr0.80+"), "{winner}");
    let dev = &ra["dev"];
    assert_eq!(dev["examples"], 872);
    let drop = dev["drop"].as_f64().unwrap();
    let sel_drop = dev["selection_drop"].as_f64().unwrap();
    assert!((dev["gap"].as_f64().unwrap() - (drop - sel_drop)).abs() < 1e-9, "{dev}");
    // front.md shows the drops as the JSON has them (a loss is positive) and the gap as their
    // difference, as printed (it showed changes, a loss negative, beside the JSON's gap).
    let md = std::fs::read_to_string(work_a.join("front.md")).unwrap();
    let cells: Vec<Vec<&str>> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| candidate"))
        .map(|l| l.split(" | ").collect())
        .collect();
    assert_eq!(cells.len(), rows.len(), "{md}");
    for (row, c) in rows.iter().zip(&cells) {
        assert_eq!(c[2], format!("{:.2}", row["drop"].as_f64().unwrap() + 0.0), "{md}");
    }
    let gap = dev["gap"].as_f64().unwrap() + 0.0;
    let line = format!("drop {drop:.2} points on dev against {sel_drop:.2} on the selection (gap {gap:+.2})");
    assert!(md.contains(&line), "{line}\n{md}");
    for f in [
        "recipe.yaml",
        "front.md",
        "front.csv",
        "front.json",
        "front.svg",
        "journal.jsonl",
    ] {
        assert!(work_a.join(f).is_file(), "{f} missing");
    }
    let winner_bytes = std::fs::read(&out_a).unwrap();
    // Static INT8 candidates run their split blocks on the real tokens only (the same model,
    // faster on padded batches); dynamic INT8 takes its ranges from the tokens it sees, so it
    // stays padded.
    let recipe_of = |id: &str| std::fs::read_to_string(work_a.join("recipes").join(format!("{id}.yaml"))).unwrap();
    assert!(
        recipe_of("lr0.80+static").contains("unpad: true"),
        "{}",
        recipe_of("lr0.80+static")
    );
    assert!(!recipe_of("lr0.80+dynamic_per_channel").contains("unpad"));
    let unpadded = |p: &Path| {
        onnx_compress::onnx::io::load(p)
            .unwrap()
            .graph
            .unwrap()
            .node
            .iter()
            // Packed tokens (`pack.rs`), or the split blocks unpadded alone.
            .any(|n| n.name().starts_with("/pack/") || n.op_type.as_deref() == Some("GatherND"))
    };
    assert!(unpadded(&work_a.join("candidates").join("lr0.80+static.onnx")));
    assert!(!unpadded(
        &work_a.join("candidates").join("lr0.80+dynamic_per_channel.onnx")
    ));

    // Interrupted once two candidates are in the journal, then resumed.
    let journal = work_b.join("journal.jsonl");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-compress"))
        .args(small_args(&sh, &out_b, &work_b, "100"))
        .arg("-q")
        .env("SOURCE_DATE_EPOCH", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&journal).map_or(0, |j| j.lines().count());
        if lines >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before it could be interrupted"
        );
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "no candidate finished in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out_b.exists(), "the search was interrupted before it wrote its model");
    let done_before = std::fs::read_to_string(&journal).unwrap().lines().count() - 1;
    assert!(done_before < 8, "{done_before} of 8 candidates were done at the kill");
    let b = bin()
        .args(small_args(&sh, &out_b, &work_b, "100"))
        .arg("--json")
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let rb = json(&b, "the resumed auto");
    assert!(
        text(&b.stderr).contains("from the journal"),
        "the resumed search redid its journal's candidates:\n{}",
        text(&b.stderr)
    );
    // Each run says where it would resume from, before its first candidate.
    let resumes = format!("({}: interrupted, the same command resumes from it)", journal.display());
    assert!(text(&b.stderr).contains(&resumes), "{}", text(&b.stderr));
    assert_eq!(rows_key(&ra), rows_key(&rb));
    assert_eq!(ra["winner"], rb["winner"]);
    assert!(
        std::fs::read(&out_b).unwrap() == winner_bytes,
        "the resumed search chose other bytes"
    );
    // Each candidate was scored once: the journal holds each id once.
    let ids: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].to_string())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert_eq!(unique.len(), 8, "{ids:?}");

    // The same search as a plan's jobs, run two at a time in other processes, then collected:
    // the same candidates, the same choice, the same bytes. Collected before any job has run,
    // the plan's jobs are named as the ones to run.
    let (out_c, work_c) = (dir.path().join("c.onnx"), dir.path().join("c.work"));
    let early = bin()
        .args(small_args(&sh, &out_c, &work_c, "100"))
        .args(["--plan", s(&work_c), "-q"])
        .output()
        .unwrap();
    assert!(early.status.success(), "{}", text(&early.stderr));
    let early = bin()
        .args(small_args(&sh, &out_c, &work_c, "100"))
        .args(["--collect", s(&work_c), "-q"])
        .output()
        .unwrap();
    assert_clean_error(
        "collected before its jobs ran",
        &early,
        &[
            "3 of the plan's jobs have no result",
            "base, lr0.90, lr0.80",
            "collect again",
        ],
    );
    assert!(!out_c.exists());
    let c = bin()
        .args(small_args(&sh, &out_c, &work_c, "100"))
        .args(["--jobs", "2", "--json", "-q"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let rc = json(&c, "auto --jobs 2");
    assert_eq!(rows_key(&ra), rows_key(&rc));
    assert_eq!(ra["winner"], rc["winner"]);
    assert!(
        std::fs::read(&out_c).unwrap() == winner_bytes,
        "the collected plan chose other bytes"
    );
    for job in ["base", "lr0.90", "lr0.80"] {
        assert!(work_c.join("jobs").join(format!("{job}.jsonl")).is_file(), "{job}");
    }

    // The winner's recipe rebuilds the same bytes through `run` (one plan instead of auto's
    // structure-then-format builds).
    let rebuilt = dir.path().join("rebuilt.onnx");
    let r = bin()
        .args([
            "run",
            s(&work_a.join("recipe.yaml")),
            "--out",
            s(&rebuilt),
            "--limit",
            "16",
            "-q",
        ])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        std::fs::read(&rebuilt).unwrap() == winner_bytes,
        "run rebuilt other bytes than auto wrote"
    );
}

/// A SIGTERM to `auto --jobs` alone (as `timeout` or a supervisor sends it) stops its jobs too: they
/// run in their own process groups, which it stops on the way out.
#[cfg(unix)]
#[test]
fn jobs_stop_with_auto() {
    let Some(sh) = shared("auto --jobs stopped by SIGTERM") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, work) = (dir.path().join("o.onnx"), dir.path().join("stopped.work"));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-compress"))
        .args(small_args(&sh, &out, &work, "100"))
        .args(["--jobs", "2", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The jobs are started once their logs are there.
    let start = Instant::now();
    while !work.join("jobs").join("lr0.90.log").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "the jobs never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "auto ended before its jobs started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The processes whose command line names the work folder: the jobs (and auto itself).
    let named = || -> Vec<String> {
        let needle = s(&work).to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle))
            .collect()
    };
    assert!(named().len() >= 2, "no jobs running: {:?}", named());
    // SAFETY: kill(2) on the child's pid. The jobs run for seconds more if not stopped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    let start = Instant::now();
    while !named().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "jobs still running after auto stopped: {:?}",
            named()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn no_candidate_within_the_budget_writes_nothing_and_names_the_closest() {
    let Some(sh) = shared("auto without a winner") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    // INT8 alone keeps the MACs: nothing beats the input on MACs (a budget that 32 selection
    // examples can show a candidate within).
    let o = bin()
        .args(args(
            &sh,
            &out,
            "--calib-samples 16 --selection 32 --prune none --lowrank none --quant dynamic_per_channel \
             --objective macs --max-drop 5 -q",
        ))
        .output()
        .unwrap();
    assert_clean_error(
        "no winner",
        &o,
        &["no candidate", "nothing written", "closest: dynamic_per_channel"],
    );
    assert!(!out.exists());
    // An earlier winner's recipe and front in the work folder (a larger --max-drop, say) are
    // not this run's: removed, and said so.
    let work = dir.path().join("out.auto");
    for stale in ["recipe.yaml", "front.md"] {
        std::fs::write(work.join(stale), "an earlier run's\n").unwrap();
    }
    // With --json: the report on stdout all the same (from the journal), winner null, exit 1.
    let o = bin()
        .args(args(
            &sh,
            &out,
            "--calib-samples 16 --selection 32 --prune none --lowrank none --quant dynamic_per_channel \
             --objective macs --max-drop 5 -q --json",
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["winner"].is_null() && r["rows"].as_array().unwrap().len() == 2, "{r}");
    assert!(text(&o.stderr).contains("no candidate"), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("(an earlier run's recipe.yaml, front.md removed from it)"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r}");
    assert!(!work.join("recipe.yaml").exists() && !work.join("front.md").exists());
    assert!(work.join(onnx_compress::auto::journal::FILE).exists());
    assert!(!out.exists());
    // 32 selection examples cannot show any candidate within half a point (none flipped: a
    // bound of 3.8 points): refused before a candidate is built or a work folder made, saying
    // what to do.
    let out = dir.path().join("small.onnx");
    let o = bin()
        .args(args(
            &sh,
            &out,
            "--calib-samples 16 --selection 32 --prune none --lowrank none --quant dynamic_per_channel \
             --objective size -q",
        ))
        .output()
        .unwrap();
    assert_clean_error(
        "a selection too small for the budget",
        &o,
        &[
            "--max-drop 0.5: on 32 selection examples no candidate can be shown within it",
            "bound of 3.",
            "--selection-data",
        ],
    );
    assert!(!out.exists() && !dir.path().join("small.auto").exists());
    let o = bin()
        .args(args(&sh, &out, "--selection 4096 --max-drop 0 -q"))
        .output()
        .unwrap();
    assert_clean_error(
        "a budget of 0 at 90%",
        &o,
        &["--max-drop 0: on ", "--confidence (0.5: the drop alone)"],
    );
}

#[test]
fn speed_is_timed_paired_for_the_candidates_within_the_budget() {
    let Some(sh) = shared("auto --objective speed") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let o = bin()
        .args(args(
            &sh,
            &out,
            "--calib-samples 16 --selection 32 --prune none --quant dynamic_per_channel,static --max-drop 100 \
             --rounds 3 --json -q",
        ))
        .output()
        .unwrap();
    let r = json(&o, "auto --objective speed");
    let rows = r["rows"].as_array().unwrap();
    // The input against itself: every round's ratio is 1.
    assert_eq!(rows[0]["speed"]["speedup"], 1.0);
    for row in rows {
        let sp = &row["speed"];
        assert_eq!(!sp.is_null(), row["within_budget"] == true, "{row}");
        if !sp.is_null() {
            let (x, lo, hi) = (
                sp["speedup"].as_f64().unwrap(),
                sp["min"].as_f64().unwrap(),
                sp["max"].as_f64().unwrap(),
            );
            assert!(lo <= x && x <= hi && lo > 0.0, "{row}");
        }
    }
    let winner = r["winner"].as_str().unwrap();
    let w = rows.iter().find(|x| x["id"] == winner).unwrap();
    assert!(w["speed"]["speedup"].as_f64().unwrap() > 1.0, "{w}");
    assert!(out.is_file());
    // In the task's batches, static INT8 built unpadded.
    assert_eq!(
        (r["timing_batch_size"].as_u64(), r["timing_batches"].as_u64()),
        (Some(32), Some(1))
    );
    let recipe = std::fs::read_to_string(dir.path().join("out.auto/recipes/base+static.yaml")).unwrap();
    assert!(recipe.contains("unpad: true"), "{recipe}");
}

#[test]
fn batch_size_one_is_timed_one_sequence_at_a_time_with_static_int8_padded() {
    let Some(sh) = shared("auto --batch-size 1") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let o = bin()
        .args(args(
            &sh,
            &out,
            "--calib-samples 16 --selection 32 --prune none --quant static --max-drop 100 --rounds 1 \
             --batch-size 1 --json",
        ))
        .output()
        .unwrap();
    let r = json(&o, "auto --batch-size 1");
    // The same 32 examples as in batches of 32, one at a time.
    assert_eq!(
        (r["timing_batch_size"].as_u64(), r["timing_batches"].as_u64()),
        (Some(1), Some(32))
    );
    let rows = r["rows"].as_array().unwrap();
    assert!(rows.iter().all(|x| !x["speed"].is_null()), "{r}");
    // Dev is evaluated one sequence at a time too.
    assert_eq!(r["dev"]["batch_size"], 1);
    // A lone sequence has no padding: the static candidate is built without --unpad, and says so.
    let recipe = std::fs::read_to_string(dir.path().join("out.auto/recipes/base+static.yaml")).unwrap();
    assert!(!recipe.contains("unpad"), "{recipe}");
    let err = text(&o.stderr);
    assert!(err.contains("built without --unpad"), "{err}");
    // Scored one at a time too (dynamic INT8 answers by its batch): the front says so, and the
    // work folder is not one for the task's batches.
    let front = std::fs::read_to_string(dir.path().join("out.auto/front.md")).unwrap();
    assert!(
        front.contains("scored in batches of 1;") && front.contains("Timed in batches of 1"),
        "{front}"
    );
    let o = bin()
        .args(args(
            &sh,
            &out,
            "--calib-samples 16 --selection 32 --prune none --quant static --max-drop 100 --rounds 1",
        ))
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("batch_size: 1 → null"), "{err}");
}

#[test]
fn bad_flags_are_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, b"not read").unwrap();
    let train = dir.path().join("train.tsv");
    std::fs::write(&train, "sentence\tlabel\nok\t1\n").unwrap();
    let out = dir.path().join("out.onnx");
    let base = |extra: &[&str]| {
        let mut a = vec![
            "auto".to_string(),
            s(&model).into(),
            s(&out).into(),
            "--task".into(),
            "sst2".into(),
            "--calib-data".into(),
            s(&train).into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        bin().args(a).output().unwrap()
    };
    for (what, extra, needles) in [
        (
            "no unit",
            &["--time-budget", "30"][..],
            &["--time-budget 30", "unit"][..],
        ),
        ("fraction", &["--prune", "0.6,1.5"], &["--prune", "(0, 1)"]),
        ("not a fraction", &["--lowrank", "most"], &["--lowrank most"]),
        ("method", &["--quant", "int4"], &["--quant int4", "dynamic_per_channel"]),
        ("fp16 on cpu", &["--quant", "fp16"], &["fp16", "cuda"]),
        ("selection", &["--selection", "8"], &["--selection", "16"]),
        ("negative budget", &["--max-drop", "-1"], &["--max-drop"]),
        ("empty batches", &["--batch-size", "0"], &["--batch-size", "at least 1"]),
        (
            "certain confidence",
            &["--confidence", "1"],
            &["--confidence", "[0.5, 1)"],
        ),
        // Flags that change nothing in the search asked for (each was accepted and ignored).
        (
            "rounds without timing",
            &["--objective", "macs", "--rounds", "3"],
            &["--rounds does nothing here", "--objective speed"],
        ),
        (
            "unpadding without static INT8",
            &["--quant", "dynamic_per_channel", "--no-unpad"],
            &["--no-unpad does nothing here", "static"],
        ),
        (
            "weight type without INT8",
            &["--quant", "none", "--weight-type", "u8"],
            &["--weight-type does nothing here", "int8"],
        ),
        (
            "FFN share without pruning",
            &["--prune", "none", "--max-ffn-fraction", "0.5"],
            &["--max-ffn-fraction does nothing here", "--prune none"],
        ),
    ] {
        let o = base(extra);
        assert_clean_error(what, &o, needles);
    }
    // A device this build cannot use, before the work folder is made.
    if !cfg!(feature = "cuda") {
        let o = base(&["--device", "cuda"]);
        assert_clean_error("cuda without CUDA support", &o, &["--device cuda", "--features cuda"]);
        assert!(!dir.path().join("out.auto").exists(), "auto made its work folder");
    }
    // A plan: one job per level (the plan reads the model, a tiny float BERT here, and finds the
    // file the result is reported on: one of its own, not the shared GLUE folder).
    let plan = dir.path().join("plan");
    let real = dir.path().join("real.onnx");
    let tiny = onnx_compress::testkit::synth::tiny_bert(&Default::default());
    onnx_compress::onnx::save(&tiny, &real, &Default::default()).unwrap();
    let dev = dir.path().join("dev.tsv");
    std::fs::write(&dev, "sentence\tlabel\nfine\t1\n").unwrap();
    // Training data its jobs could search with (a plan whose every job would refuse its data is
    // refused).
    let enough = dir.path().join("enough.tsv");
    std::fs::write(&enough, "sentence\tlabel\n".to_string() + &"ok\t1\n".repeat(600)).unwrap();
    let o = bin()
        .args([
            "auto",
            s(&real),
            s(&out),
            "--task",
            "sst2",
            "--calib-data",
            s(&enough),
            "--calib-samples",
            "64",
            "--max-drop",
            "100",
            "--data",
            s(&dev),
            "--prune",
            "0.6,0.5",
            "--lowrank",
            "0.8",
            "--max-ffn-fraction",
            "0.98",
            "--plan",
            s(&plan),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let jobs = std::fs::read_to_string(plan.join("jobs.txt")).unwrap();
    let ids: Vec<&str> = jobs
        .lines()
        .map(|l| l.split(" --only ").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(ids, ["base", "p0.60", "p0.50", "lr0.80"], "{jobs}");
    // Each job searches with the depth option it was planned with, and times (collect does) in
    // the task's batches.
    assert!(jobs.lines().all(|l| l.contains(" --max-ffn-fraction 0.98 ")), "{jobs}");
    assert!(jobs.lines().all(|l| l.contains(" --batch-size 32 ")), "{jobs}");
    let make = std::fs::read_to_string(plan.join("Makefile")).unwrap();
    assert!(make.contains("$(DONE)/p0.50:"), "{make}");
    assert!(std::fs::read_to_string(plan.join("collect.sh"))
        .unwrap()
        .contains("--collect"));
    // A model quantized already (float16 here) is refused before a plan or work folder: every
    // candidate would fail on its weights.
    let half = dir.path().join("half.onnx");
    let fp16 = onnx_compress::passes::Pass::Quantize(onnx_compress::passes::quantize::QuantizeOptions {
        mode: onnx_compress::passes::quantize::Mode::Fp16,
        ..Default::default()
    })
    .apply(&tiny, None)
    .unwrap();
    onnx_compress::onnx::save(&fp16.model, &half, &Default::default()).unwrap();
    let half_plan = dir.path().join("half-plan");
    let o = bin()
        .args(["auto", s(&half), s(&out), "--task", "sst2", "--calib-data", s(&enough)])
        .args(["--calib-samples", "64", "--data", s(&dev), "--plan", s(&half_plan)])
        .output()
        .unwrap();
    assert_clean_error(
        "a float16 model",
        &o,
        &["of float16", "quantized already", "from the float32 model"],
    );
    assert!(!half_plan.exists());
    let o = bin()
        .args([
            "auto",
            s(&model),
            s(&out),
            "--task",
            "sst2",
            "--calib-data",
            s(&train),
            "--work",
            s(&plan),
            "--only",
            "p0.55",
        ])
        .output()
        .unwrap();
    assert_clean_error("a level not in the plan", &o, &["--only p0.55", "p0.80"]);
    let o = bin()
        .args(["auto", s(&model), s(&out), "--task", "stsb", "--calib-data", s(&train)])
        .output()
        .unwrap();
    assert_clean_error("regression task", &o, &["stsb", "classification"]);
    let o = bin()
        .args(["auto", s(&model), s(&out), "--task", "sst2", "--calib-data", "nope.tsv"])
        .output()
        .unwrap();
    assert_clean_error("missing data", &o, &["--calib-data nope.tsv", "no such file"]);
    let o = bin()
        .args([
            "auto",
            s(&model),
            s(&model),
            "--task",
            "sst2",
            "--calib-data",
            s(&train),
        ])
        .output()
        .unwrap();
    assert_clean_error("output over input", &o, &[]);
    // OUT in a folder that is not there, or OUT a folder: refused as the passes refuse them (a
    // missing folder was made, and written into after a whole search).
    let missing = dir.path().join("missing").join("o.onnx");
    for (what, to, needles) in [
        (
            "a missing folder",
            &missing,
            vec!["folder", "missing", "does not exist"],
        ),
        (
            "a folder",
            &dir.path().to_path_buf(),
            vec!["a folder; name the model file"],
        ),
    ] {
        let o = bin()
            .args(["auto", s(&model), s(to), "--task", "sst2", "--calib-data", s(&train)])
            .output()
            .unwrap();
        assert_clean_error(what, &o, &needles);
    }
    // OUT onto a file the search reads: the training file, the file reported on (given, or the
    // GLUE folder's dev.tsv), the tokenizer beside the model (each was written over, exit 0).
    let held = dir.path().join("held.tsv");
    std::fs::write(&held, "sentence\tlabel\nfine\t0\n").unwrap();
    let glue = dir.path().join("glue");
    std::fs::create_dir_all(glue.join("sst2")).unwrap();
    let dev = glue.join("sst2").join("dev.tsv");
    std::fs::write(&dev, "sentence\tlabel\nfine\t0\n").unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    std::fs::write(&tokenizer, "{}").unwrap();
    let read = |p: &Path| std::fs::read(p).unwrap();
    let before: Vec<Vec<u8>> = [&train, &held, &dev, &tokenizer].iter().map(|p| read(p)).collect();
    for (to, data, what) in [
        (&train, &held, "the training file (--calib-data)"),
        (&held, &held, "the file the result is reported on"),
        (&dev, &glue, "the file the result is reported on"),
        (&tokenizer, &held, "the model's tokenizer"),
    ] {
        let o = bin()
            .args([
                "auto",
                s(&model),
                s(to),
                "--task",
                "sst2",
                "--calib-data",
                s(&train),
                "--data",
                s(data),
            ])
            .output()
            .unwrap();
        assert_clean_error(what, &o, &["refusing to write", what]);
    }
    let after: Vec<Vec<u8>> = [&train, &held, &dev, &tokenizer].iter().map(|p| read(p)).collect();
    assert_eq!(before, after, "a file auto reads changed");
    // Nor the model's external data file (it was written over: the input no longer loaded).
    let ext = dir.path().join("ext");
    std::fs::create_dir(&ext).unwrap();
    let external = onnx_compress::onnx::SaveOptions {
        external_data: onnx_compress::onnx::ExternalData::Always,
        protect: vec![],
    };
    let ext_model = ext.join("m.onnx");
    onnx_compress::onnx::save(
        &onnx_compress::testkit::synth::tiny_bert(&Default::default()),
        &ext_model,
        &external,
    )
    .unwrap();
    let data_file = ext.join("m.onnx.data");
    let data_before = read(&data_file);
    let o = bin()
        .args([
            "auto",
            s(&ext_model),
            s(&data_file),
            "--task",
            "sst2",
            "--calib-data",
            s(&train),
            "--data",
            s(&held),
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "OUT the model's data",
        &o,
        &["refusing to write", "the model's external data"],
    );
    assert_eq!(read(&data_file), data_before);
    // Nor a file the work folder gets: the training file as its front.csv (the front's table was
    // written over it), OUT as a plan's jobs.txt.
    let work = dir.path().join("aw");
    std::fs::create_dir(&work).unwrap();
    let in_work = work.join("front.csv");
    std::fs::copy(&train, &in_work).unwrap();
    let o = bin()
        .args([
            "auto",
            s(&model),
            s(&out),
            "--task",
            "sst2",
            "--calib-data",
            s(&in_work),
            "--data",
            s(&held),
            "--work",
            s(&work),
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "the training file in the work folder",
        &o,
        &["--work", "refusing to write", "front.csv", "the training file"],
    );
    assert_eq!(read(&in_work), read(&train));
    let plan = dir.path().join("pl");
    std::fs::create_dir(&plan).unwrap();
    let o = bin()
        .args([
            "auto",
            s(&model),
            s(&plan.join("jobs.txt")),
            "--task",
            "sst2",
            "--calib-data",
            s(&train),
            "--data",
            s(&held),
            "--plan",
            s(&plan),
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "OUT a plan's file",
        &o,
        &["jobs.txt", "a file auto writes into its work folder", "--plan"],
    );
    assert_eq!(std::fs::read_dir(&plan).unwrap().count(), 0);
    assert!(!dir.path().join("missing").exists());
    assert!(!out.exists());
    assert_eq!(std::fs::read(&model).unwrap(), b"not read");
}

#[test]
fn a_candidate_dropped_early_is_scored_again_under_a_looser_budget() {
    let Some(sh) = shared("auto's early drop") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let search = |max_drop: &str| {
        args(
            &sh,
            &out,
            &format!(
                "--calib-samples 16 --selection 128 --prune none --lowrank 0.3 --quant none --objective macs -q \
                 --max-drop {max_drop} --confidence 0.5"
            ),
        )
    };
    // Low rank to 30% of the parameters loses far more than nothing: out after the first rung
    // (64 of 128 examples), and nothing is written. (A budget of 0 takes --confidence 0.5, the
    // drop alone: at 0.9 even a candidate that flips nothing is not shown to lose nothing.)
    let o = bin().args(search("0")).output().unwrap();
    assert_clean_error(
        "budget 0",
        &o,
        &["no candidate", "low rank to 30% params", "on 64 selection examples"],
    );
    assert!(!out.exists());
    // A budget that admits it: scored on the whole selection, from the model already built.
    let o = bin().args(search("100")).arg("--json").output().unwrap();
    let r = json(&o, "auto --max-drop 100");
    let row = &r["rows"][1];
    assert_eq!(row["id"], "lr0.30");
    assert_eq!(row["examples"], 128, "{row}");
    assert_eq!(row["dropped_early"], false);
    assert_eq!(r["winner"], "lr0.30");
    let journal = std::fs::read_to_string(out.with_extension("auto").join("journal.jsonl")).unwrap();
    let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["examples"].as_u64(), last["budget"].as_f64()),
        (Some(128), Some(100.0)),
        "{journal}"
    );
    assert_eq!(
        journal.lines().count(),
        3,
        "header, the early drop, the rescoring:\n{journal}"
    );
}

#[test]
fn a_selection_file_of_its_own_is_chosen_on_and_dev_is_refused_as_one() {
    let Some(sh) = shared("auto --selection-data") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    // 40 labelled sentences of the training file's own layout, fewer than --selection: all chosen on.
    let held_out = dir.path().join("held_out.tsv");
    let train = std::fs::read_to_string(&sh.train).unwrap();
    let lines: Vec<&str> = train.lines().take(41).collect();
    std::fs::write(&held_out, lines.join("\n") + "\n").unwrap();
    let flags = "--calib-samples 16 --prune none --lowrank none --quant dynamic_per_channel --objective size \
                 --max-drop 100 -q";
    let r = json(
        &bin()
            .args(args(&sh, &out, flags))
            .args(["--selection-data", s(&held_out), "--json"])
            .output()
            .unwrap(),
        "auto --selection-data",
    );
    assert_eq!(r["selection_examples"], 40);
    assert_eq!(
        r["selection_file"].as_str(),
        Some(s(&std::fs::canonicalize(&held_out).unwrap()))
    );
    assert_eq!(r["calibration_examples"], 16);
    assert_eq!(r["winner"], "base+dynamic_per_channel");
    // The dev split the result is reported on cannot be the one chosen on.
    let dev = sh.glue.join("sst2").join("dev.tsv");
    let o = bin()
        .args(args(&sh, &dir.path().join("o2.onnx"), flags))
        .args(["--selection-data", s(&dev)])
        .output()
        .unwrap();
    assert_clean_error("dev as selection", &o, &["--selection-data", "dev split"]);
    // So is a plan's, before its folder is written (its every job would fail), as calibration
    // data too.
    let plan = dir.path().join("plan");
    for flag in ["--selection-data", "--calib-data"] {
        let mut a = args(&sh, &dir.path().join("o3.onnx"), flags);
        let i = a.iter().position(|x| x == "--calib-data").unwrap();
        if flag == "--calib-data" {
            a[i + 1] = s(&dev).into();
        } else {
            a.extend([flag.into(), s(&dev).into()]);
        }
        a.extend(["--plan".into(), s(&plan).into()]);
        let o = bin().args(&a).output().unwrap();
        assert_clean_error("dev in a plan", &o, &[flag, "dev split", "reported on"]);
        assert!(!plan.exists(), "a plan was written with {flag} the dev split");
    }
}

/// What every job of a plan would refuse, or what make cannot run, is refused before the plan is
/// written: a level given twice (two jobs, one journal), a folder path with a space, a selection
/// too small for the budget, a folder of another search's journals; --collect of no folder.
#[test]
fn a_plan_its_jobs_would_refuse_is_not_written() {
    let Some(sh) = shared("auto --plan refusals") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let plan = |flags: &str, folder: &Path| {
        bin()
            .args(args(&sh, &out, flags))
            .args(["--plan", s(folder), "-q"])
            .output()
            .unwrap()
    };
    let small = "--calib-samples 16 --prune none --lowrank none --quant dynamic_per_channel --objective size \
                 --max-drop 100";
    let folder = dir.path().join("plan");
    for (flags, words) in [
        (
            "--calib-samples 16 --prune 0.6,0.60 --objective size".to_string(),
            &["--prune 0.6,0.60", "0.60 is given twice"][..],
        ),
        (
            "--calib-samples 16 --lowrank 0.801,0.804 --objective size".into(),
            &["--lowrank 0.801,0.804", "0.804 is given twice", "two decimals"],
        ),
        (
            "--calib-samples 16 --quant static,static --objective size".into(),
            &["--quant static,static", "twice"],
        ),
        (
            "--calib-samples 16 --selection 100 --max-drop 0.5 --objective size".into(),
            &["--max-drop 0.5", "on 100 selection examples"],
        ),
    ] {
        assert_clean_error("plan refused", &plan(&flags, &folder), words);
        assert!(!folder.exists(), "{flags}: a plan was written");
    }
    let spaced = dir.path().join("my plan");
    assert_clean_error(
        "plan with a space",
        &plan(small, &spaced),
        &["--plan", "make", "a space"],
    );
    assert!(!spaced.exists());
    // --jobs runs the jobs here, without make: such a folder works, and gets no Makefile.
    let o = bin()
        .args(args(&sh, &out, small))
        .args(["--jobs", "1", "--work", s(&spaced), "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(spaced.join("jobs.txt").is_file() && !spaced.join("Makefile").exists());
    // A folder whose job ran with 16 calibration samples, planned again with 32.
    let o = plan(small, &folder);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let job = std::fs::read_to_string(folder.join("jobs.txt")).unwrap();
    let o = std::process::Command::new("sh")
        .args(["-c", job.trim()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let before = std::fs::read(folder.join("Makefile")).unwrap();
    let o = plan(&small.replace("--calib-samples 16", "--calib-samples 32"), &folder);
    assert_clean_error(
        "plan over another search",
        &o,
        &["other settings", "calib_samples: 16 → 32", "another --plan folder"],
    );
    assert_eq!(std::fs::read(folder.join("Makefile")).unwrap(), before);
    // The same settings again: the plan is written over its own folder.
    assert!(plan(small, &folder).status.success());
    let missing = dir.path().join("missing");
    let o = bin()
        .args(args(&sh, &out, small))
        .args(["--collect", s(&missing), "-q"])
        .output()
        .unwrap();
    assert_clean_error("collect of no folder", &o, &["--collect", "no such folder"]);
    assert!(!missing.exists());
    // A folder without a plan is not collected (a journal was started there); a file is no folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = bin()
        .args(args(&sh, &out, small))
        .args(["--collect", s(&empty), "-q"])
        .output()
        .unwrap();
    assert_clean_error("collect of no plan", &o, &["--collect", "no plan there (no jobs.txt)"]);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing written there");
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    for flag in ["--plan", "--work"] {
        let o = bin()
            .args(args(&sh, &out, small))
            .args([flag, s(&file), "-q"])
            .output()
            .unwrap();
        assert_clean_error(flag, &o, &[flag, "a file, not a folder"]);
    }
    for (flags, says) in [
        (
            "--prune none --lowrank none --objective speed --rounds 0",
            "--rounds must be at least 1",
        ),
        ("--prune none --lowrank none --quant none,static", "none stands alone"),
    ] {
        let o = bin().args(args(&sh, &out, flags)).arg("-q").output().unwrap();
        assert_clean_error(flags, &o, &[says]);
    }
}

#[test]
fn a_journal_written_before_the_discordant_counts_is_scored_again_to_the_same_rows() {
    let Some(sh) = shared("auto's older journals") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let search = args(
        &sh,
        &out,
        "--calib-samples 16 --selection 64 --prune none --lowrank 0.9 --quant none --objective macs \
         --max-drop 100 --json",
    );
    let first = json(&bin().args(&search).arg("-q").output().unwrap(), "auto");
    // The journal as an older build wrote it: no `discordant` field in its entries.
    let journal = out.with_extension("auto").join("journal.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("discordant");
            }
            v.to_string()
        })
        .collect();
    assert_eq!(lines.len(), 2, "header and one candidate: {lines:?}");
    assert!(!lines[1].contains("discordant"));
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    std::fs::remove_file(&out).unwrap();

    let o = bin().args(&search).output().unwrap();
    let again = json(&o, "auto over the older journal");
    assert!(
        text(&o.stderr).contains("built before, scored again"),
        "the older entry was taken without its standard error:\n{}",
        text(&o.stderr)
    );
    let key = |r: &Value| {
        let row = &r["rows"][1];
        format!(
            "{} {} {} {} {}",
            row["id"], row["examples"], row["drop"], row["drop_se"], row["drop_bound"]
        )
    };
    assert_eq!(key(&first), key(&again));
    assert!(first["rows"][1]["drop_se"].as_f64().is_some());
    let last: Value = serde_json::from_str(std::fs::read_to_string(&journal).unwrap().lines().last().unwrap()).unwrap();
    assert!(
        last["discordant"].is_array(),
        "the rescored entry keeps its counts: {last}"
    );
}

/// Writes the first `n` examples of an SST-2 TSV as the user's own file: `review` and `sentiment`
/// columns (the label as a name), as CSV or JSON Lines by `path`'s extension.
fn own_copy(tsv: &Path, n: usize, path: &Path) {
    let data = onnx_compress::glue::read_tsv(onnx_compress::glue::Task::Sst2, tsv).unwrap();
    let mut out = String::new();
    let csv = path.extension().is_some_and(|e| e == "csv");
    if csv {
        out += "sentiment,review\n";
    }
    for e in &data.examples[..n] {
        let name = ["negative", "positive"][e.label.class().unwrap()];
        out += &if csv {
            format!("{name},\"{}\"\n", e.text_a.replace('"', "\"\""))
        } else {
            format!("{}\n", serde_json::json!({ "review": e.text_a, "sentiment": name }))
        };
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn the_users_own_files_are_searched_as_the_task_preset_reads_its_copy() {
    let Some(sh) = shared("auto on the user's own files") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The same examples twice: a GLUE folder of the task, and the user's CSV and JSONL copies.
    let glue = dir.path().join("glue");
    std::fs::create_dir_all(glue.join("sst2")).unwrap();
    let head = |from: &Path, lines: usize, to: &Path| {
        let t = std::fs::read_to_string(from).unwrap();
        std::fs::write(to, t.lines().take(lines).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    };
    let dev_tsv = sh.glue.join("sst2").join("dev.tsv");
    head(&sh.train, 401, &glue.join("sst2").join("train.tsv"));
    head(&dev_tsv, 201, &glue.join("sst2").join("dev.tsv"));
    let (train_csv, dev_jsonl) = (dir.path().join("reviews.csv"), dir.path().join("held.jsonl"));
    own_copy(&sh.train, 400, &train_csv);
    own_copy(&dev_tsv, 200, &dev_jsonl);

    let flags = [
        "--calib-samples",
        "32",
        "--selection",
        "128",
        "--prune",
        "none",
        "--lowrank",
        "none",
        "--quant",
        "dynamic_per_channel,static",
        "--objective",
        "size",
        "--max-drop",
        "100",
        "--json",
        "-q",
    ];
    let own_flags = [
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--labels",
        "negative,positive",
    ];
    // `auto` on the user's files writing `out`, reporting on `dev`.
    let own_auto = |out: &Path, dev: &Path| {
        let mut c = bin();
        c.args([
            "auto",
            s(&sh.model),
            s(out),
            "--calib-data",
            s(&train_csv),
            "--data",
            s(dev),
        ])
        .args(own_flags);
        c
    };
    let (out_g, out_o) = (dir.path().join("g.onnx"), dir.path().join("o.onnx"));
    let task = bin()
        .args(["auto", s(&sh.model), s(&out_g), "--task", "sst2", "--calib-data"])
        .arg(glue.join("sst2").join("train.tsv"))
        .args(["--data", s(&glue)])
        .args(flags)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let rg = json(&task, "auto --task sst2");
    let own = own_auto(&out_o, &dev_jsonl)
        .args(flags)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let ro = json(&own, "auto on the user's own files");
    assert_eq!(ro["task"], Value::Null);
    assert_eq!(
        (&ro["train_examples"], &ro["selection_examples"]),
        (&rg["train_examples"], &rg["selection_examples"])
    );
    // The same choices on the same examples: every row's accuracy and drop, the winner, and dev.
    let key = |r: &Value| -> Vec<String> {
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                format!(
                    "{} {} {} {} {}",
                    x["id"], x["examples"], x["accuracy"], x["drop"], x["macs"]
                )
            })
            .collect()
    };
    assert_eq!(key(&ro), key(&rg));
    assert_eq!(key(&ro).len(), 3, "{:?}", key(&ro));
    assert_eq!(ro["winner"], rg["winner"]);
    for k in ["examples", "baseline_accuracy", "accuracy"] {
        assert_eq!(ro["dev"][k], rg["dev"][k], "dev {k}");
    }
    assert_eq!(
        (&ro["dev"]["examples"], &ro["dev"]["batch_size"]),
        (&Value::from(200), &Value::from(32))
    );
    assert_eq!(
        ro["dev"]["file"].as_str(),
        Some(s(&std::fs::canonicalize(&dev_jsonl).unwrap()))
    );

    // Its recipe names the files, columns and labels: `run` rebuilds the same bytes and
    // evaluates on the user's file as it evaluates the task's copy (in file order: the dynamic
    // INT8 winner finds its ranges per batch, so auto's batches by length may differ by an example).
    let work = dir.path().join("o.auto");
    let recipe = std::fs::read_to_string(work.join("recipe.yaml")).unwrap();
    for want in [
        "file: ",
        "held.jsonl",
        "label_column: sentiment",
        "labels: negative,positive",
        "text_column: review",
    ] {
        assert!(recipe.contains(want), "{want}:\n{recipe}");
    }
    assert!(!recipe.contains("task:"), "{recipe}");
    let rebuilt = dir.path().join("rebuilt.onnx");
    let run = bin()
        .args([
            "run",
            s(&work.join("recipe.yaml")),
            "--out",
            s(&rebuilt),
            "--json",
            "-q",
        ])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let rr = json(&run, "run of auto's recipe");
    assert!(
        std::fs::read(&rebuilt).unwrap() == std::fs::read(&out_o).unwrap(),
        "run rebuilt other bytes"
    );
    let run_g = bin()
        .args(["run", s(&dir.path().join("g.auto").join("recipe.yaml")), "--json", "-q"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    let rrg = json(&run_g, "run of auto's recipe of the task");
    assert_eq!(rr["task"], Value::Null);
    assert_eq!(rr["eval"]["examples"], 200);
    assert_eq!(
        rr["eval"]["data_file"].as_str(),
        Some(s(&std::fs::canonicalize(&dev_jsonl).unwrap()))
    );
    assert_eq!(rr["eval"]["metrics"]["accuracy"], rrg["eval"]["metrics"]["accuracy"]);
    assert_eq!(rr["eval"]["predictions"], rrg["eval"]["predictions"]);

    // A plan's jobs carry the columns and labels.
    let plan = dir.path().join("plan");
    let p = own_auto(&dir.path().join("p.onnx"), &dev_jsonl)
        .args(["--calib-samples", "32", "--max-drop", "100"])
        .args(["--prune", "0.6", "--plan", s(&plan), "-q"])
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", text(&p.stderr));
    let jobs = std::fs::read_to_string(plan.join("jobs.txt")).unwrap();
    assert!(
        jobs.lines().count() == 2
            && jobs.lines().all(|l| l
                .contains("--text-column review --label-column sentiment --labels negative,positive")
                && !l.contains("--task")),
        "{jobs}"
    );

    // Without a task, the file to report on must be named.
    let o = bin()
        .args([
            "auto",
            s(&sh.model),
            s(&dir.path().join("x.onnx")),
            "--calib-data",
            s(&train_csv),
        ])
        .args(own_flags)
        .output()
        .unwrap();
    assert_clean_error("no --data", &o, &["without --task", "--data FILE"]);
    // Nor may it be the training file, or a copy of it.
    let o = own_auto(&dir.path().join("x.onnx"), &train_csv).output().unwrap();
    assert_clean_error("dev as training", &o, &["--calib-data", "reported on"]);
    let copy = dir.path().join("copy.csv");
    std::fs::copy(&train_csv, &copy).unwrap();
    let o = own_auto(&dir.path().join("x.onnx"), &copy).output().unwrap();
    assert_clean_error("a copy of dev as training", &o, &["--calib-data", "or a copy of it"]);
    // A label the model does not have in the file reported on: refused before the search, not
    // after it, and before a work folder is made.
    let bad = dir.path().join("bad.jsonl");
    let t = std::fs::read_to_string(&dev_jsonl).unwrap();
    let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
    lines[150] = lines[150]
        .replace("\"positive\"", "\"neutral\"")
        .replace("\"negative\"", "\"neutral\"");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let o = own_auto(&dir.path().join("y.onnx"), &bad).args(flags).output().unwrap();
    assert_clean_error("a bad label in dev", &o, &["\"neutral\"", "line 151", "bad.jsonl"]);
    assert!(!dir.path().join("y.auto").exists(), "a work folder was made");
}

/// The file the result is reported on is read and tokenized before the search: a token past the
/// model's vocabulary there (or a length past its positions) is refused before any candidate is
/// built or the work folder made. It failed after the whole search, whose journal then refused
/// the corrected settings.
#[test]
fn the_reported_file_is_checked_before_the_search() {
    if !have_ort("auto's checks of --data") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roberta/model.onnx"),
        &model,
    )
    .unwrap();
    // Words w4 … w129: past the fixture's vocabulary of 100 from w100 on.
    std::fs::write(dir.path().join("tokenizer.json"), common::numbered_tokenizer(130)).unwrap();
    let train = dir.path().join("train.tsv");
    let rows: String = (0..60)
        .map(|i| format!("w{} w{}\t{}\n", 4 + i, 50 + i / 2, i % 2))
        .collect();
    std::fs::write(&train, format!("sentence\tlabel\n{rows}")).unwrap();
    let dev = dir.path().join("dev.tsv");
    std::fs::write(&dev, "sentence\tlabel\nw5 w6\t1\nw7 w120\t0\n").unwrap();
    let out = dir.path().join("out.onnx");
    let auto = |extra: &[&str]| {
        bin()
            .args(["auto", s(&model), s(&out), "--task", "sst2", "--calib-data", s(&train)])
            .args([
                "--data",
                s(&dev),
                "--calib-samples",
                "8",
                "--max-drop",
                "50",
                "--confidence",
                "0.5",
                "-q",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = auto(&[]);
    assert_clean_error(
        "a length past the positions",
        &o,
        &["--max-length 128 exceeds the", "positions"],
    );
    let o = auto(&["--max-length", "32"]);
    assert_clean_error(
        "a token past the vocabulary in --data",
        &o,
        &["dev.tsv", "\"w120\"", "id 120", "the 100 rows"],
    );
    assert!(
        !out.exists() && !dir.path().join("out.auto").exists(),
        "auto began a search"
    );
}

/// A training file replaced at the same path with the same size (here: two of its lines swapped)
/// is another search: its work folder is refused, naming the file's fingerprint. The journal knew
/// the file by path alone and reused every candidate, reporting the new file's input score beside
/// the old candidates' (and a model replaced so, by its path and size).
#[test]
fn a_file_replaced_at_the_same_path_and_size_is_not_the_journals() {
    let Some(sh) = shared("auto fingerprints") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.tsv");
    let text_of = std::fs::read_to_string(&sh.train).unwrap();
    let lines: Vec<&str> = text_of.lines().take(400).collect();
    std::fs::write(&train, lines.join("\n") + "\n").unwrap();
    let (out, work) = (dir.path().join("out.onnx"), dir.path().join("work"));
    // The model and its tokenizer.json, copied: the tokenizer is replaced below.
    let model = dir.path().join("model").join("model.onnx");
    std::fs::create_dir(model.parent().unwrap()).unwrap();
    std::fs::copy(&sh.model, &model).unwrap();
    let tokenizer = model.with_file_name("tokenizer.json");
    std::fs::copy(sh.model.with_file_name("tokenizer.json"), &tokenizer).unwrap();
    let run = || {
        let mut a = args(
            &sh,
            &out,
            "--calib-samples 16 --selection 64 --prune none --lowrank none --quant dynamic_per_channel \
             --objective size --max-drop 100",
        );
        let at = a.iter().position(|x| x == "--calib-data").unwrap();
        a[at + 1] = s(&train).to_string();
        a[1] = s(&model).to_string();
        bin().args(a).args(["--work", s(&work), "-q"]).output().unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    assert_ne!(swapped, lines);
    std::fs::write(&train, swapped.join("\n") + "\n").unwrap();
    assert_clean_error(
        "a training file replaced",
        &run(),
        &["other settings", "calib_data_fingerprint", "another --work folder"],
    );
    // The file as it was: the journal's search again.
    std::fs::write(&train, lines.join("\n") + "\n").unwrap();
    let o = run();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The tokenizer beside the model replaced (the same tokens, written compact): the model's
    // fingerprint covers it.
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
    std::fs::write(&tokenizer, serde_json::to_string(&json).unwrap()).unwrap();
    assert_clean_error(
        "a tokenizer replaced",
        &run(),
        &["other settings", "model_fingerprint", "another --work folder"],
    );
}

/// A model whose logits are NaN on some selection example is refused naming the model and the
/// example's line in the training file (the selection draws rows from across it).
#[test]
fn nan_logits_on_the_selection_name_the_training_files_line() {
    if !have_ort("auto on a model that outputs NaN") {
        return;
    }
    use onnx_compress::onnx::{self, tensor};
    let dir = tempfile::tempdir().unwrap();
    // The tiny synthetic BERT with the embedding of `bad` (id 4) NaN.
    let mut m = onnx_compress::testkit::synth::tiny_bert(&Default::default());
    let word = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name() == "embeddings.word_embeddings.weight")
        .expect("the synthetic model has word embeddings");
    let dims: Vec<usize> = word.dims.iter().map(|&d| d as usize).collect();
    let mut values = tensor::to_f32(word).unwrap();
    values[4 * dims[1]..5 * dims[1]].fill(f32::NAN);
    *word = tensor::from_f32("embeddings.word_embeddings.weight", &dims, &values);
    let model = dir.path().join("nan.onnx");
    onnx::save(&m, &model, &Default::default()).unwrap();
    let words = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "bad", "good", "film"];
    std::fs::write(
        dir.path().join("tokenizer.json"),
        common::word_level_tokenizer(&words, common::BERT_SPECIALS, Value::Null),
    )
    .unwrap();
    // 600 rows, one of them (line 402: the header is line 1) with `bad`.
    let mut rows = vec!["good film\t1"; 600];
    rows[400] = "bad film\t0";
    let train = dir.path().join("train.tsv");
    std::fs::write(&train, format!("sentence\tlabel\n{}\n", rows.join("\n"))).unwrap();
    let dev = dir.path().join("dev.tsv");
    std::fs::write(&dev, "sentence\tlabel\ngood film\t1\n").unwrap();
    let out = dir.path().join("out.onnx");
    let o = bin()
        .args([
            "auto",
            s(&model),
            s(&out),
            "--task",
            "sst2",
            "--calib-data",
            s(&train),
            "--data",
            s(&dev),
            "--calib-samples",
            "16",
            "--selection",
            "584",
            "--max-length",
            "64",
            "--max-drop",
            "100",
            "--objective",
            "macs",
            "-q",
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "NaN logits on the selection",
        &o,
        &[
            s(&model),
            "selection example ",
            &format!("(line 402 of {})", train.display()),
            "logits contain NaN/Inf",
        ],
    );
    assert!(!out.exists());
}
