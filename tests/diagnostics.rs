//! `diff` and `sensitivity`: where two models disagree and where accuracy goes. `diff`'s counts
//! are checked against `eval`'s own predictions of each model; `sensitivity` against the blocks
//! and MatMuls the model has, and against the model itself (no change, no cost).

use std::path::Path;

use onnx_compress::passes::quantize;
use onnx_compress::sensitivity::{self, SensitivityOptions};
use onnx_compress::testkit::shared::{require, require_ort};
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;

mod common;

use common::{assert_clean_error, bin, calibrator, have_ort, s, text};

const SST2: &str = "models/minilm-l6-sst2/model.onnx";

fn json(out: &std::process::Output, what: &str) -> Value {
    assert!(out.status.success(), "{what} failed:\n{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{}", text(&out.stdout)))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn diff_of_a_model_with_itself_agrees_everywhere() {
    let Some(model) = require(SST2, "diff of the shared SST-2 model with itself") else {
        return;
    };
    if !have_ort("diff") {
        return;
    }
    let m = s(&model);
    let out = bin()
        .args(["diff", m, m, "--task", "sst2", "--limit", "48", "--json", "-q"])
        .output()
        .unwrap();
    let r = json(&out, "diff A A");
    assert_eq!(r["examples"], 48);
    assert_eq!(r["flips"], 0);
    assert_eq!(f(&r["agreement"]), 1.0);
    assert!(f(&r["max_abs_logit_diff"]) < 1e-5, "{}", r["max_abs_logit_diff"]);
    let layers = r["layers"].as_array().unwrap();
    // The embeddings' output and each of the 6 layers' outputs.
    assert_eq!(layers.len(), 7, "{layers:?}");
    for l in layers {
        assert!(f(&l["relative_error"]) < 1e-6, "{l}");
    }
    assert!(r["first_past_threshold"].is_null());
    assert_eq!(r["rows"].as_array().unwrap().len(), 48);
}

#[test]
fn diff_counts_the_flips_eval_sees() {
    let Some(model) = require(SST2, "diff of the shared SST-2 model and a pruned copy") else {
        return;
    };
    if !have_ort("diff") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pruned = dir.path().join("pruned.onnx");
    let out = bin()
        .args(["prune", "--heads", "0.5", "--ffn", "0.5", s(&model), s(&pruned), "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let limit = "200";
    let eval = |m: &Path| {
        let out = bin()
            .args([
                "eval",
                "--task",
                "sst2",
                "--model",
                s(m),
                "--limit",
                limit,
                "--json",
                "-q",
            ])
            .args(["--warmup", "0", "--measure", "1"])
            .output()
            .unwrap();
        json(&out, "eval")
    };
    let (ea, eb) = (eval(&model), eval(&pruned));
    let csv = dir.path().join("rows.csv");
    let out = bin()
        .args([
            "diff",
            s(&model),
            s(&pruned),
            "--task",
            "sst2",
            "--limit",
            limit,
            "--json",
            "-q",
        ])
        .args(["--csv", s(&csv), "--threshold", "0.05"])
        .output()
        .unwrap();
    let r = json(&out, "diff A pruned");
    let (pa, pb) = (
        ea["predictions"].as_array().unwrap(),
        eb["predictions"].as_array().unwrap(),
    );
    let differing = pa.iter().zip(pb).filter(|(a, b)| a != b).count();
    assert!(differing > 0, "pruning half of everything changes some prediction");
    assert_eq!(r["flips"], differing);
    assert!((f(&r["agreement"]) - (1.0 - differing as f64 / 200.0)).abs() < 1e-12);
    assert!((f(&r["accuracy_a"]) - f(&ea["metrics"]["accuracy"])).abs() < 1e-12);
    assert!((f(&r["accuracy_b"]) - f(&eb["metrics"]["accuracy"])).abs() < 1e-12);
    let (rw, wr) = (
        r["a_right_b_wrong"].as_u64().unwrap(),
        r["a_wrong_b_right"].as_u64().unwrap(),
    );
    assert_eq!(
        (rw + wr) as usize,
        differing,
        "SST-2 has two classes: every flip changes correctness"
    );
    // Per example: eval's predictions, and margins that agree with the flips.
    let rows = r["rows"].as_array().unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["pred_a"], pa[i]);
        assert_eq!(row["pred_b"], pb[i]);
        assert!(f(&row["margin_a"]) >= 0.0 && f(&row["margin_b"]) >= 0.0);
        if row["pred_a"] != row["pred_b"] {
            assert!(f(&row["change"]) <= 0.0, "B prefers another class than A's: {row}");
        }
    }
    let shown = r["shown_flips"].as_array().unwrap();
    assert_eq!(shown.len(), differing.min(10));
    assert!(shown
        .iter()
        .all(|fl| fl["text"].as_str().is_some_and(|t| !t.is_empty())));
    // Pruning leaves the embeddings alone; the first layer already differs.
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers[0]["at"], "embeddings");
    assert!(f(&layers[0]["relative_error"]) < 1e-7, "{}", layers[0]);
    assert!(f(&layers[1]["relative_error"]) > 1e-3, "{}", layers[1]);
    let first = layers
        .iter()
        .find(|l| f(&l["relative_error"]) > 0.05)
        .map(|l| l["at"].clone());
    assert_eq!(r["first_past_threshold"], first.unwrap_or(Value::Null));
    // The CSV: a header and one line per example, with eval's predictions.
    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    // Under a task, the names beside the indexes are the task's classes.
    assert_eq!(
        lines[0],
        "index,at,label,pred_a,pred_b,margin_a,margin_b,change,label_name,pred_a_name,pred_b_name"
    );
    assert_eq!(lines.len(), 201);
    let named = |c: &str| ["negative", "positive"][c.parse::<usize>().unwrap()];
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[3], pa[i].to_string(), "{line}");
        assert_eq!(cells[4], pb[i].to_string(), "{line}");
        assert_eq!(
            cells[8..],
            [named(cells[2]), named(cells[3]), named(cells[4])],
            "{line}"
        );
    }
    assert_eq!(rows[0]["pred_a_name"], named(&pa[0].to_string()), "{}", rows[0]);
    // The text report says the same.
    let out = bin()
        .args(["diff", s(&model), s(&pruned), "--task", "sst2", "--limit", limit, "-q"])
        .output()
        .unwrap();
    let t = text(&out.stdout);
    assert!(t.contains(&format!("({differing} of 200 examples flip)")), "{t}");
    assert!(t.contains("hidden states") && t.contains("flips (first"), "{t}");
    // Against a quantized copy the layers it does not compute are not compared: "no point past"
    // speaks of those compared only.
    let quantized = dir.path().join("q.onnx");
    let out = bin()
        .args(["quantize", "--mode", "dynamic", s(&model), s(&quantized), "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bin()
        .args([
            "diff",
            s(&model),
            s(&quantized),
            "--task",
            "sst2",
            "--limit",
            "24",
            "-q",
        ])
        .args(["--threshold", "1000"])
        .output()
        .unwrap();
    let t = text(&out.stdout);
    assert!(t.contains("not compared: "), "{t}");
    assert!(t.contains("(no point past 1000 among those compared)"), "{t}");
    // On the user's own file with named labels, the flips show the classes by name.
    let dev = require("data/glue/sst2/dev.tsv", "diff on a named file").unwrap();
    let own = dir.path().join("own.csv");
    let mut csv_text = String::from("review,sentiment\n");
    for line in std::fs::read_to_string(&dev).unwrap().lines().skip(1).take(200) {
        let (sentence, label) = line.rsplit_once('\t').unwrap();
        let name = if label == "1" { "positive" } else { "negative" };
        csv_text += &format!("\"{}\",{name}\n", sentence.replace('"', "\"\""));
    }
    std::fs::write(&own, csv_text).unwrap();
    let out = bin()
        .args(["diff", s(&model), s(&pruned), "--data", s(&own), "-q"])
        .args([
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--labels",
            "negative,positive",
        ])
        .output()
        .unwrap();
    let t = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(t.contains(&format!("({differing} of 200 examples flip)")), "{t}");
    let flip = t.lines().find(|l| l.starts_with("  line ")).unwrap_or_default();
    assert!(
        flip.contains(" gold positive ") || flip.contains(" gold negative "),
        "the flips do not name the classes: {t}"
    );
    // The JSON rows and the CSV name the classes as the text does (indexes beside them).
    let csv = dir.path().join("own-rows.csv");
    let out = bin()
        .args([
            "diff",
            s(&model),
            s(&pruned),
            "--data",
            s(&own),
            "-q",
            "--json",
            "--csv",
            s(&csv),
        ])
        .args(["--text-column", "review", "--label-column", "sentiment"])
        .args(["--labels", "negative,positive"])
        .output()
        .unwrap();
    let named = json(&out, "diff --json on a named file");
    let names = ["negative", "positive"];
    let csv_rows = std::fs::read_to_string(&csv).unwrap();
    let mut csv_lines = csv_rows.lines();
    assert!(
        csv_lines
            .next()
            .unwrap()
            .ends_with(",label_name,pred_a_name,pred_b_name"),
        "{csv_rows}"
    );
    for (row, line) in named["rows"].as_array().unwrap().iter().zip(csv_lines) {
        for (index, name) in [
            ("label", "label_name"),
            ("pred_a", "pred_a_name"),
            ("pred_b", "pred_b_name"),
        ] {
            assert_eq!(row[name], names[row[index].as_u64().unwrap() as usize], "{row}");
        }
        let fields: Vec<&str> = line.split(',').collect();
        let at = |i: usize| names[fields[i].parse::<usize>().unwrap()];
        assert_eq!(fields[8..], [at(2), at(3), at(4)], "{line}");
    }
    // Without labels (a file of texts alone, GLUE's unlabelled test layout): the same flips and
    // margins, no accuracy.
    let texts = dir.path().join("texts.csv");
    let test = dir.path().join("test.tsv");
    let (mut csv_text, mut tsv_text) = (String::from("review\n"), String::from("index\tsentence\n"));
    for (i, line) in std::fs::read_to_string(&dev)
        .unwrap()
        .lines()
        .skip(1)
        .take(200)
        .enumerate()
    {
        let (sentence, _) = line.rsplit_once('\t').unwrap();
        csv_text += &format!("\"{}\"\n", sentence.replace('"', "\"\""));
        tsv_text += &format!("{i}\t{sentence}\n");
    }
    std::fs::write(&texts, csv_text).unwrap();
    std::fs::write(&test, tsv_text).unwrap();
    for (file, task) in [(&texts, None), (&test, Some("sst2"))] {
        let out = bin()
            .args(["diff", s(&model), s(&pruned), "--data", s(file), "--json", "-q"])
            .args(["--text-column", "review"].iter().filter(|_| task.is_none()))
            .args(task.iter().flat_map(|t| ["--task", *t]))
            .output()
            .unwrap();
        let u = json(&out, "diff on texts alone");
        assert_eq!(u["labelled"], false, "{}", file.display());
        assert_eq!(u["flips"], differing, "{}", file.display());
        assert!(u["accuracy_a"].is_null() && u["a_right_b_wrong"].is_null());
        for (i, row) in u["rows"].as_array().unwrap().iter().enumerate() {
            assert!(row["label"].is_null());
            assert_eq!(row["pred_a"], pa[i]);
            assert_eq!(row["pred_b"], pb[i]);
            assert!((f(&row["change"]) - f(&rows[i]["change"])).abs() < 1e-5, "{row}");
        }
    }
    let out = bin()
        .args([
            "diff",
            s(&model),
            s(&pruned),
            "--data",
            s(&test),
            "--task",
            "sst2",
            "-q",
        ])
        .output()
        .unwrap();
    let t = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        t.contains("accuracy     not measured: the data file has no labels"),
        "{t}"
    );
    let flip = t.lines().find(|l| l.starts_with("  line ")).unwrap_or_default();
    assert!(flip.contains(" A ") && !flip.contains("gold"), "{t}");
    // A label column a flag names must be there.
    let out = bin()
        .args(["diff", s(&model), s(&pruned), "--data", s(&texts), "-q"])
        .args(["--text-column", "review", "--label-column", "sentiment"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no label column \"sentiment\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn diff_and_sensitivity_refuse_bad_input_in_one_line() {
    let Some(model) = require(SST2, "diff and sensitivity errors") else {
        return;
    };
    if !have_ort("diff") {
        return;
    }
    let m = s(&model);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    let run = |args: &[&str]| bin().args(args).output().unwrap();
    assert_clean_error(
        "diff with a missing model",
        &run(&["diff", m, s(&missing), "--task", "sst2"]),
        &["MODEL_B", "nope.onnx", "no such file"],
    );
    // Neither a task nor a file: both named (clap said only "--task <TASK>" was required).
    for cmd in [&["diff", m, m][..], &["eval", "--model", m]] {
        assert_clean_error(
            "no --task and no --data",
            &run(cmd),
            &["--task T", "--data FILE", "labelled"],
        );
    }
    // A text file, and JSON of another kind (a config.json, named as such: not a syntax error).
    let notes = tempfile::NamedTempFile::new().unwrap();
    for (what, body, words) in [
        ("a text file", "not json\n", ["not a tokenizer.json", "not valid JSON"]),
        (
            "a config.json",
            "{\"model_type\": \"bert\", \"hidden_size\": 384}\n",
            ["valid JSON but not a tokenizer.json", "config.json"],
        ),
    ] {
        std::fs::write(notes.path(), body).unwrap();
        let tokenizer = s(notes.path());
        let out = run(&[
            "eval",
            "--model",
            m,
            "--task",
            "sst2",
            "--tokenizer",
            tokenizer,
            "--limit",
            "4",
        ]);
        assert_clean_error(
            &format!("{what} as the tokenizer"),
            &out,
            &["--tokenizer", words[0], words[1]],
        );
    }
    // A folder, and bytes that are not text, on eval and on a pass that embeds the tokenizer.
    let folder = tempfile::tempdir().unwrap();
    let binary = folder.path().join("tokenizer.bin");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    for (tokenizer, words) in [
        (folder.path(), "a folder; name the tokenizer.json in it"),
        (binary.as_path(), "not a tokenizer.json (not UTF-8 text)"),
    ] {
        let t = s(tokenizer);
        let out = folder.path().join("out.onnx");
        for args in [
            vec!["eval", "--model", m, "--task", "sst2", "--tokenizer", t, "--limit", "4"],
            vec!["convert", m, s(&out), "--tokenizer", t],
        ] {
            assert_clean_error(
                &format!("{t} as the tokenizer of {}", args[0]),
                &run(&args),
                &["--tokenizer", t, words],
            );
            assert!(!out.exists());
        }
    }
    // A tokenizer that cannot pad is embedded with a note saying what it cannot do.
    let nopad = folder.path().join("nopad.json");
    std::fs::write(
        &nopad,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},"unk_token":"[UNK]"}}"#,
    )
    .unwrap();
    let out = folder.path().join("nopad.onnx");
    let o = run(&["convert", m, s(&out), "--tokenizer", s(&nopad)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("no pad token") && err.contains("eval and calibration cannot batch texts with it"),
        "{err}"
    );
    assert_clean_error(
        "diff with a bad threshold",
        &run(&["diff", m, m, "--task", "sst2", "--threshold", "0", "--limit", "4"]),
        &["--threshold"],
    );
    assert_clean_error(
        "sensitivity without calibration data",
        &run(&["sensitivity", m]),
        &["--calib-data"],
    );
    // diff --csv onto a file it reads (a model compared, the data) is refused: it wrote over them.
    let copy = dir.path().join("copy.onnx");
    std::fs::copy(&model, &copy).unwrap();
    let data = dir.path().join("d.csv");
    std::fs::write(&data, "sentence,label\ngood film,1\n").unwrap();
    // Nor the files read with a model: the tokenizers looked for beside it (they were written
    // over, exit 0), its config.json.
    for (target, what) in [
        (dir.path().join("tokenizer.json"), "the model's tokenizer"),
        (dir.path().join("copy.tokenizer.json"), "the model's tokenizer"),
        (dir.path().join("config.json"), "the model's config.json"),
    ] {
        assert_clean_error(
            "diff --csv onto a file read with MODEL_B",
            &run(&["diff", m, s(&copy), "--data", s(&data), "--csv", s(&target)]),
            &["--csv", "refusing to write", what],
        );
        assert!(!target.exists(), "{}", target.display());
    }
    for (target, what) in [(&copy, "the model MODEL_B"), (&data, "the data file")] {
        let before = std::fs::read(target).unwrap();
        assert_clean_error(
            "diff --csv onto its input",
            &run(&["diff", m, s(&copy), "--data", s(&data), "--csv", s(target)]),
            &["--csv", "refusing to write", what],
        );
        assert_eq!(std::fs::read(target).unwrap(), before, "{what} changed");
    }
    // Nor the split's file in a GLUE folder (--data DIR), however the path is spelled.
    let glue = dir.path().join("glue");
    std::fs::create_dir_all(glue.join("sst2")).unwrap();
    let dev = glue.join("sst2").join("dev.tsv");
    std::fs::write(&dev, "sentence\tlabel\ngood film \t1\n").unwrap();
    let before = std::fs::read(&dev).unwrap();
    for spelled in [dev.clone(), glue.join("sst2").join("..").join("sst2").join("dev.tsv")] {
        assert_clean_error(
            "diff --csv onto the GLUE folder's dev.tsv",
            &run(&[
                "diff",
                m,
                s(&copy),
                "--task",
                "sst2",
                "--data",
                s(&glue),
                "--csv",
                s(&spelled),
            ]),
            &["--csv", "refusing to write", "the data file"],
        );
    }
    assert_eq!(std::fs::read(&dev).unwrap(), before, "dev.tsv changed");
    std::fs::remove_dir_all(&glue).unwrap();
    // `--csv -` is not standard output: refused (it wrote a file named "-").
    assert_clean_error(
        "diff --csv -",
        &run(&["diff", m, s(&copy), "--data", s(&data), "--csv", "-"]),
        &["--csv -", "name a file"],
    );
    // diff --csv into a folder that is not there: said before the work, naming the folder (it
    // was said after, naming a temporary file).
    let lost = dir.path().join("lost").join("x.csv");
    let o = run(&["diff", m, s(&copy), "--data", s(&data), "--csv", s(&lost)]);
    let line = assert_clean_error(
        "diff --csv in a missing folder",
        &o,
        &[&format!(
            "--csv {}: folder {} does not exist",
            lost.display(),
            lost.parent().unwrap().display()
        )],
    );
    assert!(!line.contains("partial"), "{line}");
    // A model B of another vocabulary (a fixture's 100 words): named before ONNX Runtime's
    // "indices element out of data bounds".
    let albert = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/albert/model.onnx");
    assert_clean_error(
        "diff against a model of another vocabulary",
        &run(&["diff", m, s(&albert), "--data", s(&data), "--limit", "4"]),
        &[
            "albert/model.onnx",
            "the tokenizer (",
            "past the 100 rows of MODEL_B's word embeddings",
        ],
    );
    let train = require("data/glue/sst2/train.tsv", "sensitivity errors").unwrap();
    // bench --out names a folder too.
    let recipe = dir.path().join("r.yaml");
    std::fs::write(&recipe, format!("model:\n  model_name: {m}\ndata:\n  task: sst2\n")).unwrap();
    assert_clean_error(
        "bench --out onto a file",
        &run(&["bench", "--out", s(&data), s(&recipe)]),
        &["--out", "d.csv", "a file, not a folder"],
    );
    std::fs::remove_file(&recipe).unwrap();
    // sensitivity --out names a folder: a file there is refused before any measuring.
    assert_clean_error(
        "sensitivity --out onto a file",
        &run(&["sensitivity", m, "--calib-data", s(&train), "--out", s(&data)]),
        &["--out", "d.csv", "a file, not a folder"],
    );
    // Nor may its files replace what it reads, or meet a folder: refused before measuring.
    let od = dir.path().join("od");
    std::fs::create_dir(&od).unwrap();
    let calib = od.join("sensitivity.csv");
    let text = "sentence,label\nhello,1\n";
    std::fs::write(&calib, text).unwrap();
    assert_clean_error(
        "sensitivity --out holding its calibration data",
        &run(&["sensitivity", m, "--calib-data", s(&calib), "--out", s(&od)]),
        &["--out", "refusing to write", "sensitivity.csv", "the calibration data"],
    );
    assert_eq!(
        std::fs::read_to_string(&calib).unwrap(),
        text,
        "the calibration data is kept"
    );
    std::fs::remove_file(&calib).unwrap();
    std::fs::create_dir(od.join("sensitivity.png")).unwrap();
    assert_clean_error(
        "sensitivity --out holding a folder of its chart's name",
        &run(&["sensitivity", m, "--calib-data", s(&train), "--out", s(&od)]),
        &["--out", "sensitivity.png is a folder", "name another folder"],
    );
    std::fs::remove_dir_all(&od).unwrap();
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_file(&data).unwrap();
    assert_clean_error(
        "sensitivity with a fraction of 1",
        &run(&["sensitivity", m, "--calib-data", s(&train), "--fractions", "0.5,1"]),
        &["--fractions", "(0, 1)"],
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

#[test]
fn sensitivity_measures_every_block_and_every_matmul() {
    if !require_ort("sensitivity on a synthetic model") {
        return;
    }
    let opts = SynthOptions {
        layers: 3,
        ..Default::default()
    };
    let model = tiny_bert(&opts);
    let mut cal = calibrator(2, 7);
    // MACs at the model's 64 positions (at 128 a note would say they are past them).
    let so = SensitivityOptions {
        fractions: vec![0.75, 0.25],
        seq_len: 64,
        ..Default::default()
    };
    let r = sensitivity::sensitivity(&model, &so, &mut cal, &mut |_| {}).unwrap();
    assert_eq!(r.fractions, vec![0.25, 0.75]);
    // Fewer calibration tokens than an FFN's 64 neurons: the refit fits them, and it is said.
    assert_eq!(
        r.notes,
        onnx_compress::passes::prune::few_tokens_note(&model, r.calibration_tokens, true, true)
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(onnx_compress::passes::prune::few_tokens_note(&model, 64, true, true).is_none());
    // Heads alone: the attention output projection reads 4 heads × 8 = 32 values.
    assert!(onnx_compress::passes::prune::few_tokens_note(&model, 32, true, false).is_none());
    let note = onnx_compress::passes::prune::few_tokens_note(&model, 31, true, false).unwrap();
    assert!(note.contains("fewer than the 32 head outputs"), "{note}");
    let note = onnx_compress::passes::prune::few_tokens_note(&model, 63, false, true).unwrap();
    assert!(
        note.contains("gives 63 tokens, fewer than the 64 neurons of an FFN"),
        "{note}"
    );
    // Every layer's attention and FFN at both fractions: 4 heads → 1 and 3 removed; 64 neurons
    // → 16 and 48.
    assert_eq!(r.pruning.len(), 3 * 2 * 2);
    for b in &r.pruning {
        let low = b.fraction == 0.25;
        let want = match (b.block, low) {
            ("attention", true) => 1,
            ("attention", false) => 3,
            ("ffn", true) => 16,
            _ => 48,
        };
        assert_eq!(b.removed, want, "{b:?}");
        assert_eq!(b.layers, [b.layer], "no shared weights: each row is its own layer");
        assert!(b.divergence.is_finite() && b.divergence >= 0.0, "{b:?}");
        let a = b.agreement.unwrap();
        assert!((0.0..=1.0).contains(&a), "{b:?}");
    }
    let total = |fr: f64| {
        r.pruning
            .iter()
            .filter(|b| b.fraction == fr)
            .map(|b| b.divergence)
            .sum::<f64>()
    };
    assert!(
        total(0.75) > total(0.25) && total(0.25) > 0.0,
        "removing more costs more overall: {} vs {}",
        total(0.75),
        total(0.25)
    );
    // One entry per MatMul the int8 modes quantize, each placed in its layer and role.
    let names = quantize::quantizable_matmuls(&model).unwrap();
    assert_eq!(r.int8.iter().map(|m| m.node.clone()).collect::<Vec<_>>(), names);
    let mapped: Vec<_> = r.int8.iter().filter(|m| m.layer.is_some()).collect();
    assert_eq!(mapped.len(), 3 * 6, "q, k, v, output, up, down of each layer");
    assert!(r.int8.iter().all(|m| m.divergence.is_finite() && m.divergence >= 0.0));
    assert!(r.int8.iter().any(|m| m.divergence > 0.0), "int8 changes some logit");

    // A low-rank model cannot be pruned: its INT8 costs are measured, each factor named, and
    // why pruning is not is said.
    use onnx_compress::passes::lowrank::{ApplyTo, LowrankOptions, RankRule};
    let factorized = onnx_compress::passes::Pass::Lowrank(LowrankOptions {
        rank: RankRule::Fixed(4),
        apply_to: ApplyTo::FfnOnly,
        layers: Some(vec![2]),
        ..Default::default()
    })
    .apply(&model, None)
    .unwrap()
    .model;
    let r = sensitivity::sensitivity(&factorized, &so, &mut calibrator(2, 7), &mut |_| {}).unwrap();
    assert!(r.pruning.is_empty() && r.fractions.is_empty());
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("pruning not measured: layer 2 FFN up projection")),
        "{:?}",
        r.notes
    );
    let roles: Vec<_> = r
        .int8
        .iter()
        .filter(|m| m.layer == Some(2))
        .filter_map(|m| m.role.clone())
        .collect();
    assert_eq!(
        roles,
        [
            "query",
            "key",
            "value",
            "attention.output",
            "ffn.up A",
            "ffn.up B",
            "ffn.down A",
            "ffn.down B"
        ]
    );
    assert_eq!(r.int8.len(), quantize::quantizable_matmuls(&factorized).unwrap().len());
    let text = onnx_compress::report::sensitivity_text(&r);
    assert!(!text.contains("pruning one block alone"), "{text}");
    // Without INT8 there is nothing to measure: said so, naming the flag that left nothing.
    let none = SensitivityOptions { int8: false, ..so };
    let e = sensitivity::sensitivity(&factorized, &none, &mut calibrator(2, 7), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--no-int8") && e.contains("nothing is left to measure"),
        "{e}"
    );
}

#[test]
fn sensitivity_writes_its_table_and_chart() {
    let Some(model) = require(SST2, "sensitivity on the shared SST-2 model") else {
        return;
    };
    let Some(train) = require("data/glue/sst2/train.tsv", "sensitivity calibration data") else {
        return;
    };
    if !have_ort("sensitivity") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sens");
    let out = bin()
        .args([
            "sensitivity",
            s(&model),
            "--calib-data",
            s(&train),
            "--calib-samples",
            "16",
        ])
        .args(["--fractions", "0.005,0.5", "--no-int8", "--out", s(&out_dir), "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("measured on 16 calibration examples"), "{t}");
    let rows = t
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" / "));
    assert_eq!(rows.count(), 12, "6 layers × 2 blocks:\n{t}");
    // The fractions as asked (0.005 was "−0%"), each cell with the units it removes.
    assert!(
        t.contains("−0.5%: cost / agree (removed)") && t.contains("−50%: cost"),
        "{t}"
    );
    assert!(t.contains("(6 of 12)") && t.contains("(768 of 1536)"), "{t}");
    let csv = std::fs::read_to_string(out_dir.join("sensitivity.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 24, "{csv}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("sensitivity.json")).unwrap()).unwrap();
    assert_eq!(j["pruning"].as_array().unwrap().len(), 24);
    // MiniLM's layers have their own head counts: no row prunes heads in step, said as the CSV
    // says it (the key was left out when false).
    assert!(
        j["pruning"].as_array().unwrap().iter().all(|r| r["in_step"] == false),
        "{}",
        j["pruning"]
    );
    assert!(j["int8"].as_array().unwrap().is_empty() && j["int8_mode"].is_null());
    let svg = std::fs::read_to_string(out_dir.join("sensitivity.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("attention −50%"));
    assert_eq!(&std::fs::read(out_dir.join("sensitivity.png")).unwrap()[1..4], b"PNG");
    // A file with fewer examples than asked for: said among the report's notes, in its JSON too.
    let small = dir.path().join("small.tsv");
    let head: Vec<String> = std::fs::read_to_string(&train)
        .unwrap()
        .lines()
        .take(9)
        .map(String::from)
        .collect();
    std::fs::write(&small, head.join("\n") + "\n").unwrap();
    let out = bin()
        .args([
            "sensitivity",
            s(&model),
            "--calib-data",
            s(&small),
            "--calib-samples",
            "16",
        ])
        .args(["--fractions", "0.5", "--no-int8", "--json", "-q"])
        .output()
        .unwrap();
    let j = json(&out, "sensitivity on 8 examples");
    assert!(
        j["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("holds 8 examples, fewer than the 16 calibration samples asked for")),
        "{}",
        j["notes"]
    );
}

/// A model named without a folder ("model.onnx", as torch's dynamo exporter writes it with its
/// weights in "model.onnx.data" beside it) reads its external data from the working folder (it
/// used to fail with "error: : No such file or directory").
#[test]
fn a_bare_model_name_finds_its_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let opts = onnx_compress::onnx::SaveOptions {
        external_data: onnx_compress::onnx::ExternalData::Always,
        protect: vec![],
    };
    let m = tiny_bert(&SynthOptions::default());
    let saved = onnx_compress::onnx::save(&m, &dir.path().join("model.onnx"), &opts).unwrap();
    assert!(saved.data_file.is_some());
    let out = bin()
        .current_dir(dir.path())
        .args(["inspect", "model.onnx"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bin()
        .current_dir(dir.path())
        .args(["quantize", "--mode", "fp16", "model.onnx", "half.onnx"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("half.onnx").is_file());
}
