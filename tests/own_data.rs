//! The user's own data: `eval --data FILE` and `--calib-data FILE` in CSV, TSV, JSONL and Parquet,
//! with named columns and labels as indexes or names (from `--labels`, config.json or the names a
//! pass embeds); multi-class and regression metrics; and bad data refused in one line naming the
//! file and the line or row.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_error, bin, have_ort, s, text, word_level_tokenizer, BERT_SPECIALS};
use onnx_compress::onnx::{self, ExternalData, SaveOptions};
use onnx_compress::testkit::shared;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;

const WORDS: [&str; 12] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "the", "a", "is", "plot", "dull",
];

/// Twelve sentences and a class (0–2) each; sentence 3 holds a comma and a quote for CSV.
const ROWS: [(&str, usize); 12] = [
    ("good film", 1),
    ("bad film", 0),
    ("the film, is \"good\"", 1),
    ("a bad plot", 0),
    ("the plot is dull", 2),
    ("good good film", 1),
    ("dull film", 2),
    ("a film", 2),
    ("bad bad bad", 0),
    ("the good plot", 1),
    ("is it good", 1),
    ("dull and bad", 0),
];
const NAMES: [&str; 3] = ["negative", "positive", "neutral"];

/// A folder with a tiny random model of `labels` outputs (`model.onnx`), a tokenizer beside it,
/// and, when `config` is set, a config.json naming its classes.
fn model_dir(labels: usize, config: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model.onnx");
    let save = SaveOptions {
        external_data: ExternalData::Never,
        ..Default::default()
    };
    let synth = SynthOptions {
        labels,
        ..Default::default()
    };
    onnx::save(&tiny_bert(&synth), &m, &save).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        word_level_tokenizer(&WORDS, BERT_SPECIALS, Value::Null),
    )
    .unwrap();
    if config {
        let id2label: serde_json::Map<String, Value> =
            (0..labels).map(|i| (i.to_string(), Value::from(NAMES[i]))).collect();
        let cfg = serde_json::json!({"model_type": "bert", "id2label": id2label});
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    }
    (dir, m)
}

/// The rows' texts as a one-column CSV under `column`, quoted.
fn texts_csv(column: &str) -> String {
    std::iter::once(format!("{column}\n"))
        .chain(ROWS.iter().map(|(t, _)| format!("\"{}\"\n", t.replace('"', "\"\""))))
        .collect()
}

/// The rows as GLUE's SST-2 TSV (classes 0 and 1: the class mod 2).
fn sst2_tsv() -> String {
    std::iter::once("sentence\tlabel\n".to_string())
        .chain(ROWS.iter().map(|(t, l)| format!("{t}\t{}\n", l % 2)))
        .collect()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn eval_json(model: &Path, args: &[&str]) -> Value {
    let out = bin()
        .args(["eval", "--json", "--warmup", "0", "--model", s(model)])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "eval {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// [`eval_json`] on a tiny model (64 positions).
fn eval_tiny(model: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--max-length", "32"];
    all.extend_from_slice(args);
    eval_json(model, &all)
}

fn predictions(r: &Value) -> Vec<Value> {
    r["predictions"].as_array().unwrap().clone()
}

/// The same examples as CSV (quoted), JSONL (string labels) and TSV (class indexes) give the same
/// predictions, and the metrics agree with the predictions recomputed here.
#[test]
fn csv_jsonl_and_tsv_copies_agree_and_metrics_match_the_predictions() {
    if !have_ort("own data formats") {
        return;
    }
    let (dir, model) = model_dir(3, true);
    let csv_body: String = std::iter::once("id,review,label\n".to_string())
        .chain(
            ROWS.iter()
                .enumerate()
                .map(|(i, (t, l))| format!("{i},\"{}\",{}\n", t.replace('"', "\"\""), NAMES[*l])),
        )
        .collect();
    let jsonl: String = ROWS
        .iter()
        .map(|(t, l)| format!("{}\n", serde_json::json!({"text": t, "label": NAMES[*l]})))
        .collect();
    let tsv: String = std::iter::once("text\tlabel\n".to_string())
        .chain(ROWS.iter().map(|(t, l)| format!("{t}\t{l}\n")))
        .collect();
    let csv = write(dir.path(), "reviews.csv", &csv_body);
    let jsonl = write(dir.path(), "reviews.jsonl", &jsonl);
    let tsv = write(dir.path(), "reviews.tsv", &tsv);

    let from_csv = eval_tiny(&model, &["--data", s(&csv), "--text-column", "review"]);
    let from_jsonl = eval_tiny(&model, &["--data", s(&jsonl)]);
    let from_tsv = eval_tiny(&model, &["--data", s(&tsv)]);
    assert_eq!(from_csv["columns"]["text"], "review");
    assert_eq!(from_jsonl["columns"]["text"], "text");
    assert_eq!(from_jsonl["columns"]["label"], "label");
    assert_eq!(predictions(&from_csv), predictions(&from_jsonl));
    assert_eq!(predictions(&from_csv), predictions(&from_tsv));
    assert!(from_csv["task"].is_null());
    assert_eq!(
        from_csv["labels"]["classes"]["names"],
        serde_json::json!(NAMES),
        "{}",
        from_csv["labels"]
    );

    // Recompute accuracy, the confusion matrix, per-class recall and macro-F1 from the
    // predictions and the labels written above.
    let preds: Vec<usize> = predictions(&from_csv)
        .iter()
        .map(|p| p.as_u64().unwrap() as usize)
        .collect();
    let gold: Vec<usize> = ROWS.iter().map(|(_, l)| *l).collect();
    let m = &from_csv["metrics"];
    let correct = preds.iter().zip(&gold).filter(|(p, g)| p == g).count();
    assert!((m["accuracy"].as_f64().unwrap() - correct as f64 / 12.0).abs() < 1e-12);
    let matrix = m["confusion_matrix"].as_array().unwrap();
    let mut f1s = Vec::new();
    for c in 0..3 {
        for (p, cell) in matrix[c].as_array().unwrap().iter().enumerate() {
            let n = (0..12).filter(|&i| gold[i] == c && preds[i] == p).count();
            assert_eq!(cell.as_u64().unwrap() as usize, n, "matrix[{c}][{p}]");
        }
        let tp = (0..12).filter(|&i| gold[i] == c && preds[i] == c).count() as f64;
        let support = gold.iter().filter(|&&g| g == c).count() as f64;
        let predicted = preds.iter().filter(|&&p| p == c).count() as f64;
        let class = &m["per_class"][c];
        assert_eq!(class["name"], NAMES[c]);
        assert!((class["recall"].as_f64().unwrap() - tp / support).abs() < 1e-12);
        let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let recall = tp / support;
        f1s.push(if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        });
    }
    // Every class occurs in the labels, so macro-F1 is the mean over all three.
    let macro_f1 = f1s.iter().sum::<f64>() / 3.0;
    assert!((m["macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-12);

    // Text output: the columns, the label names and where they came from, the class table.
    let out = bin()
        .args([
            "eval",
            "--warmup",
            "0",
            "--max-length",
            "32",
            "--model",
            s(&model),
            "--data",
            s(&jsonl),
        ])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "macro-F1",
        "columns      text \"text\", label \"label\"",
        "negative, positive, neutral (id2label of",
        "precision",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}

/// A task preset reads Hugging Face's class names and a field pandas quoted, in a TSV as in
/// the other formats: the same predictions and accuracy as GLUE's own form of the rows.
#[test]
fn a_task_preset_reads_class_names_and_pandas_quoting_in_a_tsv() {
    if !have_ort("own data preset TSV") {
        return;
    }
    let (dir, model) = model_dir(2, false);
    let glue = sst2_tsv();
    let quoted = |t: &str| {
        if t.contains('"') {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        }
    };
    let pandas: String = std::iter::once("sentence\tlabel\n".to_string())
        .chain(
            ROWS.iter()
                .map(|(t, l)| format!("{}\t{}\n", quoted(t), ["negative", "positive"][l % 2])),
        )
        .collect();
    assert!(ROWS.iter().any(|(t, _)| t.contains('"')), "a row with a quote");
    let a = eval_tiny(
        &model,
        &["--task", "sst2", "--data", s(&write(dir.path(), "glue.tsv", &glue))],
    );
    let b = eval_tiny(
        &model,
        &["--task", "sst2", "--data", s(&write(dir.path(), "pandas.tsv", &pandas))],
    );
    assert_eq!(predictions(&a), predictions(&b));
    assert_eq!(a["metrics"]["accuracy"], b["metrics"]["accuracy"]);

    // Hugging Face's column names in a TSV of a pair task, as in its CSV.
    let pairs = |sep: &str| -> String {
        std::iter::once(format!("sentence1{sep}sentence2{sep}label\n"))
            .chain(ROWS.iter().map(|(t, l)| {
                let t = t.replace(['"', ','], "");
                format!("{t}{sep}{t} film{sep}{}\n", ["not_equivalent", "equivalent"][l % 2])
            }))
            .collect()
    };
    let tsv = eval_tiny(
        &model,
        &[
            "--task",
            "mrpc",
            "--data",
            s(&write(dir.path(), "hf.tsv", &pairs("\t"))),
        ],
    );
    let csv = eval_tiny(
        &model,
        &["--task", "mrpc", "--data", s(&write(dir.path(), "hf.csv", &pairs(",")))],
    );
    assert_eq!(predictions(&tsv), predictions(&csv));
    assert_eq!(tsv["examples"], 12);

    // The task's own folder for the GLUE folder.
    std::fs::create_dir_all(dir.path().join("glue/sst2")).unwrap();
    std::fs::write(dir.path().join("glue/sst2/dev.tsv"), &glue).unwrap();
    let folder = eval_tiny(&model, &["--task", "sst2", "--data", s(&dir.path().join("glue/sst2"))]);
    assert_eq!(predictions(&folder), predictions(&a));

    // Labels -1 and 1, named so (a value starting with '-' is taken by --labels).
    let signed = write(dir.path(), "signed.csv", "text,label\ngood film,1\nbad film,-1\n");
    let r = eval_tiny(&model, &["--data", s(&signed), "--labels", "-1,1"]);
    assert_eq!(r["examples"], 2);

    // A pipe as calibration data is refused, not waited on.
    let fifo = dir.path().join("fifo.csv");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = bin()
        .args([
            "quantize",
            "--mode",
            "static",
            "--calib-data",
            s(&fifo),
            s(&model),
            s(&dir.path().join("q.onnx")),
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "a pipe as calibration data",
        &out,
        &["fifo.csv", "not a file (a device, a pipe or a socket)"],
    );
}

/// A model with one output is a regression: labels are numbers, and Pearson, Spearman and the
/// mean squared error are those of the predictions.
#[test]
fn one_output_models_are_scored_as_regression() {
    if !have_ort("own data regression") {
        return;
    }
    let (dir, model) = model_dir(1, false);
    let scores = [0.5, 1.0, 4.25, 2.0, 3.0, 0.0, 5.0, 2.5, 1.5, 3.5, 4.0, 0.25];
    let body: String = ROWS
        .iter()
        .zip(scores)
        .map(|((t, _), y)| format!("{}\n", serde_json::json!({"sentence": t, "score": y})))
        .collect();
    let data = write(dir.path(), "scores.jsonl", &body);
    let r = eval_tiny(&model, &["--data", s(&data)]);
    assert_eq!(r["labels"], "scores");
    assert_eq!(r["columns"]["label"], "score");
    let preds: Vec<f64> = predictions(&r).iter().map(|p| p.as_f64().unwrap()).collect();
    let mse = preds.iter().zip(scores).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / 12.0;
    let m = &r["metrics"];
    assert!((m["mse"].as_f64().unwrap() - mse).abs() < 1e-5, "{m}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mp, my) = (mean(&preds), mean(&scores));
    let cov: f64 = preds.iter().zip(scores).map(|(p, y)| (p - mp) * (y - my)).sum();
    let vp: f64 = preds.iter().map(|p| (p - mp) * (p - mp)).sum();
    let vy: f64 = scores.iter().map(|y| (y - my) * (y - my)).sum();
    assert!(
        (m["pearson"].as_f64().unwrap() - cov / (vp * vy).sqrt()).abs() < 1e-4,
        "{m}"
    );
    assert!(m["spearman"].is_number() && m["accuracy"].is_null());

    // diff of two regressions: each model's correlations with the gold scores, as eval's.
    let b = dir.path().join("b.onnx");
    let q = bin()
        .args(["quantize", "--mode", "dynamic", s(&model), s(&b)])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", text(&q.stderr));
    let rb = eval_tiny(&b, &["--data", s(&data)]);
    let d = bin()
        .args(["diff", s(&model), s(&b), "--data", s(&data), "--max-length", "32", "-q"])
        .output()
        .unwrap();
    assert!(d.status.success(), "{}", text(&d.stderr));
    assert!(text(&d.stdout).contains("pearson      A "), "{}", text(&d.stdout));
    let d: Value = serde_json::from_slice(
        &bin()
            .args([
                "diff",
                s(&model),
                s(&b),
                "--data",
                s(&data),
                "--max-length",
                "32",
                "--json",
                "-q",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for (key, eval) in [
        ("pearson_a", &m["pearson"]),
        ("spearman_a", &m["spearman"]),
        ("pearson_b", &rb["metrics"]["pearson"]),
        ("spearman_b", &rb["metrics"]["spearman"]),
    ] {
        assert!(
            (d[key].as_f64().unwrap() - eval.as_f64().unwrap()).abs() < 1e-5,
            "{key}: {d}"
        );
    }
    let gold: Vec<f64> = d["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert_eq!(gold, scores, "the rows' gold scores");
    assert!(d["agreement"].is_null() && d["flips"].is_null(), "{d}");
    assert!(d.get("correlation_undefined").is_none(), "{d}");

    // Gold scores all equal: both models' correlations are undefined, and diff says so as eval does.
    let flat: String = ROWS
        .iter()
        .map(|(t, _)| format!("{}\n", serde_json::json!({"sentence": t, "score": 2.0})))
        .collect();
    let flat = write(dir.path(), "flat.jsonl", &flat);
    let args = ["diff", s(&model), s(&b), "--data", s(&flat), "--max-length", "32", "-q"];
    let d = bin().args(args).output().unwrap();
    assert!(d.status.success(), "{}", text(&d.stderr));
    assert!(
        text(&d.stdout).contains(
            "note         A and B: Pearson and Spearman are undefined (the gold scores are all equal): shown as 0"
        ),
        "{}",
        text(&d.stdout)
    );
    let d: Value = serde_json::from_slice(&bin().args(args).arg("--json").output().unwrap().stdout).unwrap();
    assert_eq!(
        d["correlation_undefined"],
        serde_json::json!(["A and B: Pearson and Spearman are undefined (the gold scores are all equal): shown as 0"]),
        "{d}"
    );
    assert!(d["rows"][0].get("pred_a_name").is_none(), "{d}");

    // --labels on a one-output model is refused.
    let out = bin()
        .args(["eval", "--model", s(&model), "--data", s(&data), "--labels", "a,b"])
        .output()
        .unwrap();
    assert_clean_error(
        "--labels on a regression",
        &out,
        &["--labels names 2 classes", "one output"],
    );
}

/// Under a task, a model that names the task's classes in another order is read by name: its
/// outputs are the task's classes as its names say (eval and diff), not by position; names that
/// are not the task's (`LABEL_0`) or abbreviate them in order change nothing; names that put some
/// of the task's classes elsewhere without naming each once, or name another number of classes,
/// are refused; `--labels` names the outputs under a task too.
#[test]
fn a_task_reads_a_models_outputs_by_their_class_names() {
    if !have_ort("task classes by name") {
        return;
    }
    let (dir, model) = model_dir(2, false);
    let glue = sst2_tsv();
    let data = write(dir.path(), "glue.tsv", &glue);
    let args = ["--task", "sst2", "--data", s(&data)];
    let plain = eval_tiny(&model, &args);
    assert!(plain["class_order"].is_null(), "{}", plain["class_order"]);
    // The same model beside a config.json naming its classes.
    let named = |names: &[&str]| -> PathBuf {
        let sub = tempfile::tempdir_in(dir.path()).unwrap().keep();
        std::fs::copy(&model, sub.join("model.onnx")).unwrap();
        std::fs::copy(dir.path().join("tokenizer.json"), sub.join("tokenizer.json")).unwrap();
        let id2label: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), Value::from(*n)))
            .collect();
        std::fs::write(
            sub.join("config.json"),
            serde_json::json!({"id2label": id2label}).to_string(),
        )
        .unwrap();
        sub.join("model.onnx")
    };
    let flip = |p: &Value| -> Vec<Value> {
        predictions(p)
            .iter()
            .map(|c| Value::from(1 - c.as_u64().unwrap()))
            .collect()
    };
    let swapped = named(&["POSITIVE", "Negative"]);
    let r = eval_tiny(&swapped, &args);
    assert_eq!(
        predictions(&r),
        flip(&plain),
        "read by name, every prediction is the other class"
    );
    let (acc, acc_plain) = (
        r["metrics"]["accuracy"].as_f64().unwrap(),
        plain["metrics"]["accuracy"].as_f64().unwrap(),
    );
    assert!((acc + acc_plain - 1.0).abs() < 1e-9, "{acc} + {acc_plain}");
    assert_eq!(r["class_order"]["outputs"], serde_json::json!([1, 0]));
    let out = bin()
        .args([
            "eval",
            "-q",
            "--warmup",
            "0",
            "--max-length",
            "32",
            "--model",
            s(&swapped),
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("read by name: the model's outputs are POSITIVE, Negative (id2label of "),
        "{}",
        text(&out.stdout)
    );
    // --labels names the outputs under a task too: it corrects a model's names, or names them.
    let with_labels = |m: &Path, names: &str| {
        let mut all = args.to_vec();
        all.extend(["--labels", names]);
        eval_tiny(m, &all)
    };
    assert_eq!(
        predictions(&with_labels(&swapped, "negative,positive")),
        predictions(&plain)
    );
    assert_eq!(predictions(&with_labels(&model, "positive,negative")), flip(&plain));
    // The task's own labels as names: SST-2's "1" is positive.
    assert_eq!(predictions(&eval_tiny(&named(&["1", "0"]), &args)), flip(&plain));
    // bench's table says which rows were read by name.
    let glue_dir = dir.path().join("g");
    std::fs::create_dir_all(glue_dir.join("sst2")).unwrap();
    std::fs::write(glue_dir.join("sst2/dev.tsv"), &glue).unwrap();
    let recipe = write(
        dir.path(),
        "swapped.yaml",
        &format!(
            "model:\n  model_name: {}\ndata:\n  task: sst2\n  dir: {}\n  max_input_length: 32\neval:\n  warmup: 0\n",
            s(&swapped),
            s(&glue_dir)
        ),
    );
    let bench_out = dir.path().join("bench");
    let out = bin()
        .args(["bench", s(&recipe), "--out", s(&bench_out), "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = std::fs::read_to_string(bench_out.join("results.md")).unwrap();
    assert!(
        table.contains("Read by class name (the model names the task's classes in another order): swapped (its outputs are POSITIVE, Negative, id2label of "),
        "{table}"
    );
    // inspect shows the names and where they come from.
    let shown = text(&bin().args(["inspect", s(&swapped)]).output().unwrap().stdout);
    assert!(
        shown.contains("classes      POSITIVE, Negative (id2label of "),
        "{shown}"
    );
    // Names that are not the task's, or a config whose names cannot be read (a name twice), keep
    // the task's order.
    for same in [
        &["LABEL_0", "LABEL_1"][..],
        &["neg", "pos"],
        &["negative", "other"],
        &["0", "1"],
        &["positive", "positive"],
    ] {
        let r = eval_tiny(&named(same), &args);
        assert_eq!(predictions(&r), predictions(&plain), "{same:?}");
        assert!(r["class_order"].is_null(), "{same:?}");
    }
    // diff reads each model by its own names: the plain and the swapped copy disagree
    // everywhere under the task.
    let diff = |a: &Path, b: &Path, extra: &[&str]| -> Value {
        let out = bin()
            .args([
                "diff",
                s(a),
                s(b),
                "--data",
                s(&data),
                "--max-length",
                "32",
                "--json",
                "-q",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(diff(&model, &swapped, &["--task", "sst2"])["agreement"], 0.0);
    // Without a task, B is read in A's order where both name the same classes otherwise.
    let (a, b) = (named(&["negative", "positive"]), named(&["Positive", "NEGATIVE"]));
    let d = diff(&a, &b, &[]);
    assert_eq!(d["agreement"], 0.0, "{}", d["class_order_b"]);
    assert_eq!(d["class_order_b"]["outputs"], serde_json::json!([1, 0]));
    assert!(d["class_order_a"].is_null());
    // --labels names both models' outputs alike: read by position.
    let d = diff(&a, &b, &["--labels", "negative,positive"]);
    assert_eq!(d["agreement"], 1.0);
    assert!(d["class_order_b"].is_null());
    // B's names that cannot be read are refused as A's are (they were read by position).
    let out = bin()
        .args(["diff", s(&a), s(&named(&["positive", "positive"]))])
        .args(["--data", s(&data), "--max-length", "32"])
        .output()
        .unwrap();
    assert_clean_error(
        "B's names unreadable",
        &out,
        &["config.json", "both named \"positive\""],
    );
    // Some of the task's names elsewhere, not each once: refused, naming the config.
    for (bad, says) in [
        (&["positive", "other"][..], "which output is which class is unknown"),
        (
            &["positive", "negative", "neutral"],
            "names 3 classes (positive, negative, neutral) but SST-2 has 2",
        ),
        (&["negative", "positive", "neutral"], "names 3 classes"),
    ] {
        let out = bin()
            .args(["eval", "--max-length", "32", "--model", s(&named(bad))])
            .args(args)
            .output()
            .unwrap();
        assert_clean_error(&format!("{bad:?}"), &out, &["config.json names", says, "pass --labels"]);
    }
    // --labels that cannot name the task's classes: refused, not ignored.
    for (extra, says) in [
        (&["--task", "stsb", "--labels", "a,b"][..], "STS-B is a regression"),
        (
            &["--task", "sst2", "--labels", "a,b,c"],
            "--labels names 3 classes (a, b, c) but SST-2 has 2",
        ),
    ] {
        let out = bin()
            .args(["eval", "--max-length", "32", "--model", s(&model), "--data", s(&data)])
            .args(extra)
            .output()
            .unwrap();
        assert_clean_error(&format!("{extra:?}"), &out, &[says]);
    }
    // A model of three named classes is not an SST-2 model: said so, not blamed on its names.
    let (_three_dir, three) = model_dir(3, true);
    let out = bin()
        .args(["eval", "--max-length", "32", "--model", s(&three)])
        .args(args)
        .output()
        .unwrap();
    assert_clean_error(
        "three classes",
        &out,
        &["has 3 outputs", "but SST-2 has 2 classes: is it a SST-2 model?"],
    );
    // A pass does not need names it cannot read: it says so and carries none.
    let dup = named(&["positive", "positive"]);
    let q = dup.with_file_name("q.onnx");
    let out = bin()
        .args(["quantize", "--mode", "dynamic", s(&dup), s(&q)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("both named \"positive\"")
            && text(&out.stderr).contains("not carried into the output"),
        "{}",
        text(&out.stderr)
    );
}

/// `convert` embeds config.json's class names: the converted model, moved away from its
/// config.json, still maps string labels; `--labels` overrides.
#[test]
fn converted_models_carry_their_label_names() {
    if !have_ort("own data labels") {
        return;
    }
    let (dir, model) = model_dir(2, true);
    let elsewhere = tempfile::tempdir().unwrap();
    let converted = elsewhere.path().join("m.onnx");
    let out = bin().args(["convert", s(&model), s(&converted)]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let data = write(
        elsewhere.path(),
        "d.csv",
        "text,label\ngood film,positive\nbad film,negative\ndull,positive\n",
    );
    let r = eval_tiny(&converted, &["--data", s(&data)]);
    assert_eq!(r["labels"]["classes"]["source"], "the names embedded in the model");
    assert_eq!(r["metrics"]["n"], 3);

    let data = write(dir.path(), "e.csv", "text,label\ngood film,yes\nbad film,no\n");
    let r = eval_tiny(&converted, &["--data", s(&data), "--labels", "no,yes"]);
    assert_eq!(r["labels"]["classes"]["source"], "--labels");
    let out = bin()
        .args(["eval", "--model", s(&converted), "--data", s(&data)])
        .output()
        .unwrap();
    assert_clean_error(
        "a label the model's names lack",
        &out,
        &["label \"yes\" on line 2 of", "e.csv", "negative, positive", "--labels"],
    );

    // A recipe's data.labels are embedded in the model it writes, replacing config.json's: the
    // model evaluates on that file without --labels.
    let r = write(
        dir.path(),
        "named.yaml",
        "model:\n  model_name: model.onnx\ndata:\n  file: e.csv\n  labels: [no, yes]\n  max_input_length: 32\neval:\n  warmup: 0\nquantization:\n  enable: true\n  method: dynamic\n",
    );
    let int8 = elsewhere.path().join("int8.onnx");
    let o = bin().args(["run", s(&r), "--out", s(&int8), "-q"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r = eval_tiny(&int8, &["--data", s(&data)]);
    assert_eq!(r["labels"]["classes"]["source"], "the names embedded in the model");
    assert_eq!(r["labels"]["classes"]["names"], serde_json::json!(["no", "yes"]));

    // The written model is evaluated as the input was read: a config.json beside --out is not
    // the input's (its three names failed the evaluation of the written model, after the write).
    let (plain, _) = model_dir(2, false);
    write(plain.path(), "i.csv", "text,label\ngood film,1\nbad film,0\n");
    let r = write(
        plain.path(),
        "plain.yaml",
        "model:\n  model_name: model.onnx\ndata:\n  file: i.csv\n  max_input_length: 32\neval:\n  warmup: 0\nquantization:\n  enable: true\n  method: dynamic\n",
    );
    let foreign = serde_json::json!({"id2label": {"0": "a", "1": "b", "2": "c"}});
    std::fs::write(elsewhere.path().join("config.json"), foreign.to_string()).unwrap();
    let o = bin()
        .args(["run", s(&r), "--out", s(&int8), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let classes = &report["eval"]["labels"]["classes"];
    assert_eq!(classes["names"], Value::Null, "{report}");
    assert!(
        classes["source"].as_str().unwrap().starts_with("no data.labels"),
        "{report}"
    );
    assert_eq!(report["eval"]["metrics"]["n"], 2, "{report}");
}

/// Examples with an empty text (or an empty second text) are scored and listed by where they
/// are, in --json and in the text report (they were scored without a word).
#[test]
fn empty_texts_are_listed() {
    if !have_ort("empty texts") {
        return;
    }
    let (dir, model) = model_dir(2, false);
    let data = write(
        dir.path(),
        "e.csv",
        "text,pair,label\ngood film,plot,1\n,plot,0\nbad,  ,1\ndull,plot,0\n",
    );
    let args = ["--data", s(&data), "--text-pair-column", "pair"];
    let r = eval_tiny(&model, &args);
    assert_eq!(r["empty_texts"], serde_json::json!(["line 3", "line 4"]), "{r}");
    assert_eq!(r["metrics"]["n"], 4);
    let o = bin()
        .args(["eval", "--warmup", "0", "--max-length", "32", "--model", s(&model)])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("empty texts  2 examples (line 3, line 4): scored on the special tokens alone"),
        "{out}"
    );
    let data = write(dir.path(), "f.csv", "text,pair,label\ngood film,plot,1\n");
    assert_eq!(
        eval_tiny(&model, &["--data", s(&data), "--text-pair-column", "pair"])["empty_texts"],
        serde_json::json!([])
    );
}

/// `--limit N` evaluates the first N records and reads no further: a broken record after them
/// (a label outside the model's classes) fails the whole file's evaluation, not the limited one,
/// which predicts those N as the whole file's evaluation does.
#[test]
fn a_limited_evaluation_reads_only_its_records() {
    if !have_ort("eval --limit") {
        return;
    }
    let (dir, model) = model_dir(2, false);
    let good = write(dir.path(), "good.csv", "text,label\ngood film,1\nbad plot,0\ndull,0\n");
    let broken = write(
        dir.path(),
        "broken.csv",
        "text,label\ngood film,1\nbad plot,0\ndull,7\n",
    );
    let whole = bin()
        .args([
            "eval",
            "--warmup",
            "0",
            "--max-length",
            "32",
            "--model",
            s(&model),
            "--data",
            s(&broken),
        ])
        .output()
        .unwrap();
    assert!(
        !whole.status.success(),
        "a label of 7 on a 2-class model must be refused"
    );
    assert!(text(&whole.stderr).contains("line 4"), "{}", text(&whole.stderr));
    let limited = eval_tiny(&model, &["--data", s(&broken), "--limit", "2"]);
    assert_eq!(limited["metrics"]["n"], 2, "{limited}");
    let all = eval_tiny(&model, &["--data", s(&good)]);
    assert_eq!(predictions(&limited)[..], predictions(&all)[..2]);
    // Every batch a warm-up one: no time measured reads 0.0 (an empty sum wrote -0.0).
    let o = bin()
        .args([
            "eval",
            "--json",
            "--warmup",
            "5",
            "--max-length",
            "32",
            "--model",
            s(&model),
        ])
        .args(["--data", s(&good)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["timing"]["timed_batches"], 0, "{r}");
    assert_eq!(r["timing"]["timed_seconds"].to_string(), "0.0", "{r}");
}

/// Calibration needs no labels: the same texts as a text-only CSV and as a GLUE SST-2 TSV give
/// the same statically quantized model.
#[test]
fn calibration_reads_text_only_files_in_any_format() {
    if !have_ort("own data calibration") {
        return;
    }
    let (dir, model) = model_dir(2, false);
    let csv = texts_csv("comment");
    let tsv: String = std::iter::once("sentence\tlabel\n".to_string())
        .chain(ROWS.iter().map(|(t, l)| format!("{t}\t{}\n", l % 2)))
        .collect();
    let csv = write(dir.path(), "texts.csv", &csv);
    let tsv = write(dir.path(), "train.tsv", &tsv);
    let quantize = |data: &Path, out: &Path, extra: &[&str]| {
        let o = bin()
            .args([
                "quantize",
                "--mode",
                "static",
                "--calib-samples",
                "8",
                "--calib-data",
                s(data),
            ])
            .args(extra)
            .args([s(&model), s(out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        onnx::load(out).unwrap()
    };
    let from_csv = quantize(&csv, &dir.path().join("a.onnx"), &["--text-column", "comment"]);
    let from_tsv = quantize(&tsv, &dir.path().join("b.onnx"), &[]);
    assert_eq!(
        from_csv.graph, from_tsv.graph,
        "the same texts calibrate the same model"
    );
    // A file of one column holds the texts, whatever its name.
    let one_column = quantize(&csv, &dir.path().join("a1.onnx"), &[]);
    assert_eq!(
        one_column.graph, from_csv.graph,
        "a one-column file without --text-column"
    );
    // An SST-2 header with labels GLUE's reader refuses ("positive"), or no label column at
    // all: calibration reads the texts alone (the first was refused on its labels).
    let named: String = std::iter::once("sentence\tlabel\n".to_string())
        .chain(ROWS.iter().map(|(t, l)| format!("{t}\t{}\n", NAMES[l % 2])))
        .collect();
    let unlabelled: String = std::iter::once("sentence\n".to_string())
        .chain(ROWS.iter().map(|(t, _)| format!("{t}\n")))
        .collect();
    for (name, body) in [("named.tsv", named), ("unlabelled.tsv", unlabelled)] {
        let file = write(dir.path(), name, &body);
        let m = quantize(&file, &dir.path().join(format!("{name}.onnx")), &[]);
        assert_eq!(m.graph, from_tsv.graph, "{name}");
    }
    // More samples asked for than the file holds: all are used, and said.
    let o = bin()
        .args([
            "quantize",
            "--mode",
            "static",
            "--calib-samples",
            "500",
            "--calib-data",
            s(&tsv),
            "-q",
        ])
        .args([s(&model), s(&dir.path().join("d.onnx"))])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!(
            "note: {} holds {} examples, fewer than the 500 calibration samples asked for: all {} are used",
            tsv.display(),
            ROWS.len(),
            ROWS.len()
        )),
        "{}",
        text(&o.stderr)
    );

    // Without --text-column, of two columns neither of the usual names: the error lists the
    // columns there are.
    let two = write(dir.path(), "texts2.csv", "comment,source\ngood film,web\n");
    let out = bin()
        .args(["quantize", "--mode", "static", "--calib-data", s(&two), s(&model)])
        .arg(dir.path().join("c.onnx"))
        .output()
        .unwrap();
    assert_clean_error(
        "no text column",
        &out,
        &[
            "texts2.csv",
            "which column holds the text?",
            "[\"comment\", \"source\"]",
            "--text-column",
        ],
    );
    assert!(!dir.path().join("c.onnx").exists());

    // Calibrated pruning on fewer tokens than an FFN's neurons says that its refit fits them.
    let o = bin()
        .args(["prune", "--ffn", "0.5", "--calib-data", s(&tsv), "-q"])
        .args([s(&model), s(&dir.path().join("p.onnx"))])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("tokens, fewer than the 64 neurons of an FFN: the refit after pruning"),
        "{}",
        text(&o.stderr)
    );
    // So does activation-aware low rank, which sees no more directions of a layer's inputs.
    let o = bin()
        .args(["lowrank", "--ratio", "0.5", "--calib-data", s(&tsv), "-q"])
        .args([s(&model), s(&dir.path().join("l.onnx"))])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(
        stderr
            .contains("tokens, fewer than the 64 inputs of the widest layer it factorizes: activation-aware low rank"),
        "{stderr}"
    );
    // Without the FFN's down projection the widest input is the hidden size (32).
    let tokens: usize = stderr
        .split("gives ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let o = bin()
        .args([
            "lowrank",
            "--rank",
            "4",
            "--apply-to",
            "qkv_only",
            "--calib-data",
            s(&tsv),
            "-q",
        ])
        .args([s(&model), s(&dir.path().join("l.onnx"))])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(!stderr.contains("64 inputs"), "{stderr}");
    assert_eq!(
        stderr.contains("fewer than the 32 inputs"),
        tokens < 32,
        "{tokens} tokens: {stderr}"
    );
}

/// Bad data: one clear line naming the file and the line or row, exit 1, nothing written.
#[test]
fn bad_data_is_refused_in_one_line() {
    if !have_ort("own data errors") {
        return;
    }
    let (dir, model) = model_dir(2, true);
    let d = dir.path();
    let cases: Vec<(&str, PathBuf, Vec<&str>, Vec<&str>)> = vec![
        (
            "missing column",
            write(d, "a.csv", "text,y\ngood,1\n"),
            vec!["--label-column", "label"],
            vec![
                "a.csv",
                "no label column \"label\"",
                "[\"text\", \"y\"]",
                "--label-column",
            ],
        ),
        (
            "empty file",
            write(d, "b.csv", ""),
            vec![],
            vec!["b.csv", "no examples"],
        ),
        (
            "header only",
            write(d, "b2.jsonl", "\n\n"),
            vec![],
            vec!["b2.jsonl", "no examples"],
        ),
        (
            "wrong field count",
            write(d, "c.csv", "text,label\ngood,1\nbad,0,extra\n"),
            vec![],
            vec!["line 3 of", "c.csv", "3 comma-separated field(s), the header has 2"],
        ),
        (
            "a quote never closed",
            write(d, "c1.csv", "text,label\ngood,1\n\"bad,0\nfine,1\n"),
            vec![],
            vec!["line 3 of", "c1.csv", "a field opens with a quote that is never closed"],
        ),
        (
            "TSV row with a tab too many",
            write(d, "c2.tsv", "text\tlabel\ngood\t1\nbad\tfilm\t0\n"),
            vec![],
            vec!["line 3 of", "c2.tsv", "3 tab-separated field(s)"],
        ),
        (
            "unknown label",
            write(
                d,
                "e.jsonl",
                "{\"text\": \"good\", \"label\": \"positive\"}\n{\"text\": \"meh\", \"label\": \"mixed\"}\n",
            ),
            vec![],
            vec!["label \"mixed\" on line 2 of", "e.jsonl", "negative, positive"],
        ),
        (
            "a class the model cannot produce",
            write(d, "f.csv", "text,label\ngood,1\nbad,0\nmeh,5\n"),
            vec![],
            vec!["label \"5\" on line 4 of", "f.csv", "class indexes 0–1"],
        ),
        (
            "mixed types",
            write(
                d,
                "g.jsonl",
                "{\"text\": \"good\", \"label\": 1}\n{\"text\": \"bad\", \"label\": \"negative\"}\n",
            ),
            vec![],
            vec![
                "line 2 of",
                "g.jsonl",
                "column \"label\" holds a string here but a number on line 1",
            ],
        ),
        (
            "null text",
            write(
                d,
                "h.jsonl",
                "{\"text\": \"good\", \"label\": 1}\n{\"text\": null, \"label\": 0}\n",
            ),
            vec![],
            vec!["line 2 of", "h.jsonl", "null, not text"],
        ),
        (
            "not a Parquet table",
            write(d, "i.parquet", "text,label\ngood,1\n"),
            vec![],
            vec!["i.parquet", "not a readable Parquet table"],
        ),
        (
            "unknown extension",
            write(d, "j.txt", "text,label\ngood,1\n"),
            vec![],
            vec!["j.txt", "cannot tell the format", "--format"],
        ),
        (
            "invalid JSON",
            write(d, "k.jsonl", "{\"text\": \"good\", \"label\": 1}\n{\"text\": \n"),
            vec![],
            vec!["line 2 of", "k.jsonl", "not valid JSON"],
        ),
        (
            "--split with a file",
            write(d, "l.csv", "text,label\ngood,1\n"),
            vec!["--split", "train"],
            vec!["--split train", "l.csv", "is a file already"],
        ),
    ];
    for (what, file, extra, needles) in cases {
        let before = std::fs::read(&file).unwrap();
        let out = bin()
            .args(["eval", "--model", s(&model), "--data", s(&file)])
            .args(&extra)
            .output()
            .unwrap();
        assert_clean_error(what, &out, &needles);
        assert_eq!(std::fs::read(&file).unwrap(), before, "{what}: the data file changed");
    }
    // With --format the extension does not matter.
    let r = eval_tiny(&model, &["--data", s(&d.join("j.txt")), "--format", "csv"]);
    assert_eq!(r["examples"], 1);
    // A GLUE folder needs a task.
    let out = bin()
        .args(["eval", "--model", s(&model), "--data", s(d)])
        .output()
        .unwrap();
    assert_clean_error("folder without --task", &out, &["needs --task", "--data FILE"]);
    // A path that is not there is said so, whatever its extension (a missing my_data.txt read
    // as a GLUE folder that needs --task; a missing calibration file's extension asked about).
    for name in ["absent.txt", "absent.jsonl"] {
        let absent = d.join(name);
        let out = bin()
            .args(["eval", "--model", s(&model), "--data", s(&absent)])
            .output()
            .unwrap();
        assert_clean_error("a missing data file", &out, &[s(&absent), "no such file or folder"]);
        let q = d.join("q.onnx");
        for flags in [vec![], vec!["--format", "csv"]] {
            let out = bin()
                .args(["quantize", "--mode", "static", "--calib-data", s(&absent)])
                .args(&flags)
                .args([s(&model), s(&q)])
                .output()
                .unwrap();
            assert_clean_error("a missing calibration file", &out, &[s(&absent), "no such file"]);
        }
    }
    let out = bin()
        .args([
            "quantize",
            "--mode",
            "static",
            "--calib-data",
            s(d),
            s(&model),
            s(&d.join("q.onnx")),
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "a folder as calibration data",
        &out,
        &["a folder; name a data file in it"],
    );

    // In a recipe the columns are named by its keys, and the errors say which.
    let labelled = write(d, "m.csv", "review,label\ngood,1\nbad,0\n");
    let recipe = |body: &str| {
        write(
            d,
            "r.yaml",
            &format!("model:\n  model_name: model.onnx\ndata:\n  file: m.csv\n  max_input_length: 32\n{body}"),
        )
    };
    let cases = [
        (
            "  text_column: headline\n",
            "no text column \"headline\"",
            "(set by data.text_column)",
        ),
        (
            "  text_column: review\n  label_column: stars\n",
            "no label column \"stars\"",
            "(set by data.label_column)",
        ),
        (
            "  text_column: review\ncalibration:\n  data: m.csv\n  text_column: title\nprune:\n  target_macs: 0.9\n",
            "no text column \"title\"",
            "(set by calibration.text_column)",
        ),
        ("", "which column holds the text?", "set data.text_column"),
    ];
    for (body, missing, key) in cases {
        let r = recipe(body);
        let out = bin().args(["run", s(&r)]).output().unwrap();
        assert_clean_error(key, &out, &["r.yaml", "m.csv", missing, key]);
    }
    assert!(std::fs::read_to_string(&labelled).unwrap().starts_with("review,label"));

    // What the evaluation reads is checked before the passes run, and nothing is written: a
    // label the model cannot have, a length past the model's positions (in the recipe's words).
    write(d, "bad_label.csv", "review,label\ngood,1\nbad,7\n");
    let out = d.join("out.onnx");
    let model_named = format!("positions of {}", d.join("model.onnx").display());
    // A model with no tokenizer, embedded or beside it: what to do in a recipe's terms (it has
    // no --tokenizer).
    let lone = d.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(d.join("model.onnx"), lone.join("model.onnx")).unwrap();
    // The same model, its tokenizer, and no config.json: no class names known.
    let unnamed = d.join("unnamed");
    std::fs::create_dir_all(&unnamed).unwrap();
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(d.join(f), unnamed.join(f)).unwrap();
    }
    let own = "  file: m.csv\n  text_column: review\n  max_input_length: 32\n";
    // (recipe, model, data section, what else the recipe says, what the error must say)
    let mut cases = vec![
        (
            "q.yaml",
            "model.onnx",
            "  file: bad_label.csv\n  text_column: review\n  max_input_length: 32\n",
            "",
            vec!["label \"7\" on line 3", "bad_label.csv", "set data.labels: NAME0,NAME1"],
        ),
        (
            "q.yaml",
            "model.onnx",
            "  file: m.csv\n  text_column: review\n  max_input_length: 100\n",
            "",
            // The user's model, not the temporary copy the passes would have written.
            vec![
                "data.max_input_length 100 exceeds the 64 positions of",
                &model_named,
                "set it to 64 or less",
            ],
        ),
        (
            "unnamed.yaml",
            "unnamed/model.onnx",
            "  file: bad_label.csv\n  text_column: review\n  max_input_length: 32\n",
            "",
            // The class index past the model's outputs, before the passes (it surfaced in the
            // evaluation of the written model).
            vec![
                "label 7 on line 3",
                "bad_label.csv",
                "the model has 2 outputs, so its classes are 0–1",
            ],
        ),
        (
            "lone.yaml",
            "lone/model.onnx",
            own,
            "",
            vec![
                "lone.yaml",
                "no tokenizer for",
                "put the model's tokenizer.json beside it, or embed it (onnx-compress convert MODEL OUT --tokenizer",
            ],
        ),
    ];
    // CUDA asked for in a build without it: said in the recipe's words before the passes (the
    // model was written, then the evaluation failed).
    if !cfg!(feature = "cuda") {
        cases.push((
            "cuda.yaml",
            "model.onnx",
            own,
            "device:\n  cuda: true\n",
            vec!["cuda.yaml", "device.cuda: true", "no CUDA support"],
        ));
    }
    for (name, model, data, extra, want) in cases {
        let r = write(
            d,
            name,
            &format!(
                "model:\n  model_name: {model}\ndata:\n{data}{extra}quantization:\n  enable: true\n  method: dynamic\n"
            ),
        );
        let o = bin().args(["run", s(&r), "--out", s(&out)]).output().unwrap();
        assert_clean_error(name, &o, &want);
        assert!(!out.exists(), "{name}: a model was written before the checks");
    }
    // --data does not replace a recipe's own GLUE folder (it was ignored without a word).
    let r = write(
        d,
        "dir.yaml",
        "model:\n  model_name: model.onnx\ndata:\n  task: sst2\n  dir: glue\n",
    );
    let o = bin().args(["run", s(&r), "--data", "elsewhere"]).output().unwrap();
    assert_clean_error(
        "--data beside data.dir",
        &o,
        &["--data elsewhere", "dir.yaml", "data.dir: glue"],
    );
    // A length past the positions of a quantized model (int8 tables, not mapped) is said before
    // ONNX Runtime fails on a broadcast ("64 by 89").
    let q = d.join("q.onnx");
    let o = bin()
        .args(["quantize", "--mode", "dynamic", s(&model), s(&q)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = bin()
        .args([
            "eval",
            "--model",
            s(&q),
            "--data",
            s(&labelled),
            "--text-column",
            "review",
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "a quantized model's positions",
        &o,
        &["--max-length 128 exceeds the 64 positions of", "q.onnx"],
    );
    // Calibration examples longer than the positions: named before ONNX Runtime fails on them.
    let long = write(d, "long.csv", &format!("text\n{}\nbad\n", vec!["good"; 100].join(" ")));
    let pruned = d.join("pruned.onnx");
    let o = bin()
        .args([
            "prune",
            "--heads",
            "0.5",
            "--calib-data",
            s(&long),
            s(&model),
            s(&pruned),
        ])
        .output()
        .unwrap();
    assert_clean_error(
        "calibration past the positions",
        &o,
        &[
            "--calib-data",
            "long.csv",
            "past the 64 positions of",
            "--max-length 64",
        ],
    );
    assert!(!pruned.exists());
}

/// The Hugging Face `glue` parquet copy of SST-2's dev set gives exactly the reference's
/// predictions, with the task's preset and with the user's own labels.
#[test]
fn hf_parquet_reproduces_the_reference_predictions() {
    let Some(model_dir) = shared::require("models/minilm-l6-sst2", "Parquet eval") else {
        return;
    };
    let Some(glue) = shared::require("data/glue", "Parquet eval") else {
        return;
    };
    if !have_ort("Parquet eval") {
        return;
    }
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("reference.json")).unwrap()).unwrap();
    let model = model_dir.join("model.onnx");
    let parquet = glue.join("sst2/hf_validation.parquet");
    let preset = eval_json(&model, &["--task", "sst2", "--data", s(&parquet)]);
    assert_eq!(preset["examples"], 872);
    assert_eq!(&predictions(&preset), reference["predictions"].as_array().unwrap());
    assert_eq!(
        format!("{:.4}", preset["metrics"]["accuracy"].as_f64().unwrap()),
        format!("{:.4}", reference["accuracy"].as_f64().unwrap())
    );
    let own = eval_json(&model, &["--data", s(&parquet), "--labels", "negative,positive"]);
    assert_eq!(predictions(&own), predictions(&preset));
    assert_eq!(own["metrics"]["accuracy"], preset["metrics"]["accuracy"]);
    assert_eq!(own["columns"]["text"], "sentence");
    let matrix = own["metrics"]["confusion_matrix"].as_array().unwrap();
    let total: u64 = matrix
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 872);
}

/// MRPC's parquet (sentence pairs) agrees with the GLUE TSV that carries the same (HF) text.
#[test]
fn hf_parquet_pairs_match_the_glue_tsv_of_the_same_text() {
    let Some(model_dir) = shared::require("models/minilm-l6-mrpc", "Parquet pairs") else {
        return;
    };
    let Some(glue) = shared::require("data/glue", "Parquet pairs") else {
        return;
    };
    if !have_ort("Parquet pairs") {
        return;
    }
    let model = model_dir.join("model.onnx");
    let parquet = eval_json(
        &model,
        &["--task", "mrpc", "--data", s(&glue.join("mrpc/hf_validation.parquet"))],
    );
    let tsv = eval_json(
        &model,
        &["--task", "mrpc", "--data", s(&glue.join("mrpc/dev.hf_text.tsv"))],
    );
    assert_eq!(parquet["columns"]["pair"], "sentence2");
    assert_eq!(parquet["examples"], 408);
    assert_eq!(predictions(&parquet), predictions(&tsv));
    assert_eq!(parquet["metrics"]["f1"], tsv["metrics"]["f1"]);
}

/// Activation-aware low rank keeps its candidate factors in an anonymous temporary file until
/// the ranks are chosen: a temporary folder it cannot write to is one error naming the folder and
/// TMPDIR, and nothing is written; with a writable one the same command succeeds.
#[test]
fn an_unwritable_temporary_folder_is_named_by_activation_aware_low_rank() {
    if !have_ort("activation-aware low rank's temporary file") {
        return;
    }
    let (dir, model) = model_dir(2, false);
    let data = write(dir.path(), "texts.csv", &texts_csv("text"));
    let out = dir.path().join("small.onnx");
    let lowrank = |tmp: &Path| {
        bin()
            .env("TMPDIR", tmp)
            .args(["lowrank", "--target-params", "0.8", "--calib-data", s(&data)])
            .args([s(&model), s(&out)])
            .output()
            .unwrap()
    };
    let missing = dir.path().join("no-such-folder");
    let o = lowrank(&missing);
    assert_clean_error(
        "an unwritable TMPDIR",
        &o,
        &["temporary file in", "no-such-folder", "set TMPDIR"],
    );
    assert!(!out.exists(), "an output was written");
    let o = lowrank(dir.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.is_file());
    // The history records the budget, not the rank rule it leaves unused.
    let h = onnx_compress::history::history(&onnx::load(&out).unwrap()).unwrap();
    let options = &h.last().unwrap().options;
    assert_eq!(options["target_params"], 0.8);
    assert!(options.get("rank").is_none(), "{options}");
}

/// Recipes that evaluate on the user's own file (`data.file`, as `auto` writes them) are benched
/// without `--task`: one table on that file, the baseline row what `eval --data FILE` measures;
/// without such a recipe, `bench` takes the recipes' one task. Recipes on other data, of several
/// tasks, a `--task` that does not match, and `--data` beside `data.file` (which it would not
/// replace) are refused, naming the recipe.
#[test]
fn recipes_on_the_users_own_file_are_benched_without_a_task() {
    if !have_ort("bench on your own file") {
        return;
    }
    let (dir, model) = model_dir(3, true);
    let body: String = std::iter::once("review,label\n".to_string())
        .chain(
            ROWS.iter()
                .map(|(t, l)| format!("\"{}\",{}\n", t.replace('"', "\"\""), NAMES[*l])),
        )
        .collect();
    let csv = write(dir.path(), "reviews.csv", &body);
    write(dir.path(), "other.csv", &body);
    // A recipe in `recipes/` (paths relative to it), `file` and `model` relative to `dir`.
    let recipe = |file: &str, quantize: &str| {
        format!(
            "model:\n  model_name: ../model.onnx\ndata:\n  file: {file}\n  text_column: review\n  max_input_length: 32\n  batch_size: 4\neval:\n  warmup: 0\nquantization:\n  enable: {}\n  method: dynamic\n",
            !quantize.is_empty()
        )
    };
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    write(&recipes, "01_baseline.yaml", &recipe("../reviews.csv", ""));
    write(&recipes, "02_int8.yaml", &recipe("../reviews.csv", "dynamic"));
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A GLUE task's recipe in the same folder is passed over without --task.
    let glue = write(
        &recipes,
        "03_sst2.yaml",
        "model:\n  model_name: ../model.onnx\ndata:\n  task: sst2\n",
    );
    // `bench CONFIG --out OUT --json`: its report.
    let bench_json = |config: &Path, out: &Path| -> Value {
        let o = bin()
            .args(["bench", s(config), "--out", s(out), "--json", "-q"])
            .output()
            .unwrap();
        assert!(o.status.success(), "bench {}: {}", config.display(), text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let out = dir.path().join("out");
    let r = bench_json(&recipes, &out);
    assert_eq!(r["task"], Value::Null);
    let canonical = std::fs::canonicalize(&csv).unwrap();
    assert_eq!(r["data_file"].as_str(), Some(s(&canonical)));
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["baseline"], true);
    let evaluated = eval_tiny(&model, &["--data", s(&csv), "--text-column", "review"]);
    assert_eq!(rows[0]["accuracy"], evaluated["metrics"]["accuracy"]);
    assert_eq!(rows[1]["passes"], serde_json::json!(["quantization"]));
    assert_eq!(rows[1]["examples"], 12);
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.starts_with("### reviews.csv — "), "{table}");
    let csv_rows = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv_rows
            .lines()
            .skip(1)
            .all(|l| l.starts_with(&format!("{},", canonical.display()))),
        "{csv_rows}"
    );

    // What bench passes over is said: the folder's recipe of another dataset, a recipe named
    // twice. Without a baseline the relative columns are empty, and the table says why; without
    // a timed batch the old throughput chart in the folder goes with the old table.
    assert!(out.join("pareto_throughput.svg").is_file());
    let int8 = recipes.join("02_int8.yaml");
    let o = bin()
        .args(["bench", s(&recipes), s(&int8), "--out", s(&out), "--measure", "0", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (err, table) = (text(&o.stderr), text(&o.stdout));
    assert!(
        err.contains("03_sst2.yaml: passed over, a recipe for sst2, not your own data file"),
        "{err}"
    );
    assert!(err.contains("02_int8.yaml is named twice; benched once"), "{err}");
    // Two recipes of one name: said, since their rows read alike.
    let named = |file: &str| {
        write(
            &elsewhere,
            file,
            &format!("name: Same\n{}", recipe("../reviews.csv", "")),
        )
    };
    let (a, b) = (named("a.yaml"), named("b.yaml"));
    let o = bin()
        .args([
            "bench",
            s(&a),
            s(&b),
            "--out",
            s(&dir.path().join("same")),
            "--measure",
            "0",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("b.yaml are all named 'Same': their rows and chart labels read alike"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        table.contains("no batch") || table.contains("--measure 0 timed none"),
        "{table}"
    );
    assert!(!out.join("pareto_throughput.svg").exists() && !out.join("pareto_throughput.png").exists());
    let o = bin()
        .args(["bench", s(&int8), "--out", s(&out), "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("No baseline among these recipes"),
        "{}",
        text(&o.stdout)
    );

    // A recipe that fails at run time (a layer the model does not have) is said and listed; the
    // others' rows are written, and the exit is not 0.
    let broken = write(
        &elsewhere,
        "04_broken.yaml",
        &(recipe("../reviews.csv", "") + "rmt_lowrank:\n  enable: true\n  k_mode: fixed\n  k: 4\n  layers: [9]\n"),
    );
    let failed_out = dir.path().join("failed_out");
    let o = bin()
        .args(["bench", s(&recipes.join("01_baseline.yaml")), s(&broken), s(&int8)])
        .args(["--out", s(&failed_out), "-q"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a failed recipe exits 0");
    let err = text(&o.stderr);
    assert!(
        err.contains("failed: 04_broken")
            && err.contains("04_broken.yaml")
            && err.contains("1 of 3 recipes failed (04_broken)"),
        "{err}"
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(failed_out.join("results.json")).unwrap()).unwrap();
    let variants: Vec<_> = written["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].clone())
        .collect();
    assert_eq!(variants, [Value::from("01_baseline"), Value::from("02_int8")]);
    assert_eq!(written["failed"][0]["variant"], "04_broken");
    assert!(
        written["failed"][0]["error"].as_str().unwrap().contains('9'),
        "{written}"
    );
    // The CSV lists it too, after the rows that ran: its variant and error, nothing measured.
    let csv = std::fs::read_to_string(failed_out.join("results.csv")).unwrap();
    let last = csv.lines().last().unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with(",config,error"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(
        last.contains(",04_broken,false,,") && last.contains("04_broken.yaml") && !last.ends_with(','),
        "{csv}"
    );
    assert!(
        csv.lines().nth(1).unwrap().ends_with(','),
        "a row that ran has an empty error: {csv}"
    );
    let table = std::fs::read_to_string(failed_out.join("results.md")).unwrap();
    assert!(
        table.contains("1 of the recipes failed") && table.contains("- 04_broken"),
        "{table}"
    );
    // A failed baseline is said as such (not "no baseline"); when every recipe fails, the
    // failures are still written.
    let bad_base = write(
        &elsewhere,
        "05_bad_base.yaml",
        &recipe("../reviews.csv", "").replace("max_input_length: 32", "max_input_length: 1000"),
    );
    let o = bin()
        .args(["bench", s(&bad_base), s(&int8), "--out", s(&failed_out), "-q"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let table = std::fs::read_to_string(failed_out.join("results.md")).unwrap();
    assert!(table.contains("The baseline recipe (05_bad_base) failed"), "{table}");
    let o = bin()
        .args(["bench", s(&bad_base), s(&broken), "--out", s(&failed_out), "-q"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("2 of 2 recipes failed"), "{}", text(&o.stderr));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(failed_out.join("results.json")).unwrap()).unwrap();
    assert_eq!(written["rows"].as_array().map(Vec::len), Some(0), "{written}");
    assert_eq!(written["failed"].as_array().map(Vec::len), Some(2), "{written}");
    // The baseline alone ran: its one throughput is reported (it was left empty).
    let base = recipes.join("01_baseline.yaml");
    let o = bin()
        .args(["bench", s(&base), s(&broken), "--out", s(&failed_out), "-q"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(failed_out.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        written["baseline_samples_per_s"],
        serde_json::json!([written["rows"][0]["samples_per_s"]]),
        "{written}"
    );

    // Two recipes on different files are not one table.
    let other = write(&elsewhere, "other_file.yaml", &recipe("../other.csv", "dynamic"));
    let o = bin().args(["bench", s(&base), s(&other), "-q"]).output().unwrap();
    assert_clean_error(
        "two data files",
        &o,
        &["01_baseline.yaml", "other_file.yaml", "different data (data.file "],
    );
    // Two recipes reading one file by other columns: the keys and both values are named.
    let columns = write(
        &recipes.join("../elsewhere"),
        "columns.yaml",
        &recipe("../reviews.csv", "").replace("  text_column: review\n", ""),
    );
    let o = bin().args(["bench", s(&base), s(&columns), "-q"]).output().unwrap();
    assert_clean_error(
        "other columns",
        &o,
        &["different data (data.text_column 'review' vs not set)"],
    );
    // A recipe of the other kind named directly.
    let o = bin().args(["bench", s(&base), s(&glue), "-q"]).output().unwrap();
    assert_clean_error(
        "a task's recipe beside one on the user's file",
        &o,
        &["03_sst2.yaml", "--task sst2", "without --task"],
    );
    // Without --task and without a recipe on the user's file: their one task, else refused.
    let mrpc = write(
        &elsewhere,
        "mrpc.yaml",
        "model:\n  model_name: ../model.onnx\ndata:\n  task: mrpc\n",
    );
    let o = bin().args(["bench", s(&glue), s(&mrpc), "-q"]).output().unwrap();
    assert_clean_error("two tasks without --task", &o, &["mrpc, sst2", "pass --task"]);
    // A two-class model beside a GLUE folder of SST-2 rows: the task taken from its recipe.
    let (two, _) = model_dir(2, false);
    let sst2 = two.path().join("glue").join("sst2");
    std::fs::create_dir_all(&sst2).unwrap();
    write(&sst2, "dev.tsv", "sentence\tlabel\ngood film\t1\nbad plot\t0\n");
    let one = write(
        two.path(),
        "sst2.yaml",
        "model:\n  model_name: model.onnx\ndata:\n  task: sst2\n  dir: glue\n  max_input_length: 32\neval:\n  warmup: 0\n",
    );
    let r = bench_json(&one, &two.path().join("out"));
    assert_eq!(
        (&r["task"], &r["rows"][0]["examples"]),
        (&Value::from("sst2"), &Value::from(2))
    );
    let o = bin()
        .args(["bench", "--task", "sst2", s(&base), "-q"])
        .output()
        .unwrap();
    assert_clean_error(
        "own data with --task",
        &o,
        &["01_baseline.yaml", "your own data file", "--task sst2"],
    );
    // --data is a GLUE folder; it does not replace a recipe's own file.
    for cmd in [vec!["run", s(&base)], vec!["bench", s(&recipes)]] {
        let o = bin().args(&cmd).args(["--data", s(dir.path()), "-q"]).output().unwrap();
        assert_clean_error(
            "--data beside data.file",
            &o,
            &["--data", "01_baseline.yaml", "data.file", "eval --model"],
        );
    }
}
