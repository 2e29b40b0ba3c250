//! eval end to end: reference predictions, bucketing, QQP, the synthetic model.

use super::*;

#[test]
fn tokenizer_travels_with_the_converted_model() {
    let Some(src) = sst2_model_with_ort("eval of a converted model") else {
        return;
    };
    let reference = reference_predictions("minilm-l6-sst2");
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model.onnx");
    let out = run_in(dir.path(), &["convert", s(&src), s(&m)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(snapshot(dir.path()), BTreeSet::from([PathBuf::from("model.onnx")]));

    let out = run_in(
        dir.path(),
        &["eval", "--task", "sst2", "--model", s(&m), "--limit", "64", "--json"],
    );
    let v = parse_json(&out);
    assert_eq!(v["tokenizer"], "embedded in the model");
    assert_eq!(v["examples"], 64);
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 64);
    assert_eq!(
        preds.as_slice(),
        &reference[..64],
        "predictions differ from reference.json"
    );
    assert_eq!(snapshot(dir.path()), BTreeSet::from([PathBuf::from("model.onnx")]));
}

#[test]
fn bucketing_does_not_reorder_predictions() {
    let Some(m) = sst2_model_with_ort("SST-2 eval with and without --bucket") else {
        return;
    };
    let reference = reference_predictions("minilm-l6-sst2");
    let cwd = tempfile::tempdir().unwrap();
    for bucket in [false, true] {
        let mut args = vec!["eval", "--task", "sst2", "--model", s(&m), "--json", "--threads", "2"];
        if bucket {
            args.push("--bucket");
        }
        let v = parse_json(&run_in(cwd.path(), &args));
        assert_eq!(v["bucket"], bucket);
        assert_eq!(v["examples"], reference.len());
        let preds = v["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), reference.len());
        for (i, (p, r)) in preds.iter().zip(&reference).enumerate() {
            assert_eq!(p, r, "example {i} (bucket: {bucket})");
        }
        let acc = v["metrics"]["accuracy"].as_f64().unwrap();
        assert!((acc - 0.909404).abs() < 1e-6, "accuracy {acc} (bucket: {bucket})");
    }
}

#[test]
fn qqp_end_to_end_with_the_mrpc_model() {
    let Some(m) = mrpc_model("QQP eval with the MRPC model") else {
        return;
    };
    if !have_ort("QQP eval with the MRPC model") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = write_task_file(dir.path(), "qqp", "dev", &qqp_rows());
    let out = run_in(
        dir.path(),
        &[
            "eval",
            "--task",
            "qqp",
            "--data",
            s(dir.path()),
            "--model",
            s(&m),
            "--json",
        ],
    );
    let v = parse_json(&out);
    assert_eq!(v["task"], "qqp");
    assert_eq!(v["examples"], 10);
    assert_eq!(v["data_file"], s(&f));
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 10);
    assert!(preds.iter().all(|p| p == 0 || p == 1), "{preds:?}");
    let acc = v["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");

    // The text report works too.
    let out = run_in(
        dir.path(),
        &[
            "eval",
            "--task",
            "qqp",
            "--data",
            s(dir.path()),
            "--model",
            s(&m),
            "--limit",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());
}

#[test]
fn qqp_bad_label_names_file_and_line() {
    let Some(m) = mrpc_model("QQP eval with a bad label") else {
        return;
    };
    if !have_ort("QQP eval with a bad label") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = write_task_file(
        dir.path(),
        "qqp",
        "dev",
        &format!("{QQP_HEADER}1\t1\t2\tIs it?\tIs it really?\t1\n2\t3\t4\tWhy?\tHow?\t2\n"),
    );
    let before = snapshot(dir.path());
    let line = eval_fails(
        &["--task", "qqp", "--data", s(dir.path()), "--model", s(&m)],
        &[s(&f), "line 3", "\"2\""],
    );
    assert!(line.contains("0 or 1"), "{line}");
    assert_eq!(snapshot(dir.path()), before);
}

/// Eval that needs neither `../shared` nor a real tokenizer: the tiny synthetic model with a
/// word-level tokenizer, on the QQP file, with and without bucketing, tokenizer given by flag
/// and then embedded by convert.
#[test]
fn eval_runs_on_a_synthetic_model() {
    if !have_ort("eval of the synthetic model") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let tok = dir.path().join("words.json");
    std::fs::write(&tok, tiny_tokenizer_json()).unwrap();
    write_task_file(dir.path(), "qqp", "dev", &qqp_rows());
    let base = [
        "eval",
        "--task",
        "qqp",
        "--data",
        s(dir.path()),
        "--max-length",
        "32",
        "--batch-size",
        "3",
        "--json",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        parse_json(&run_in(dir.path(), &args))
    };
    let plain = run(&["--model", s(&m), "--tokenizer", s(&tok)]);
    assert_eq!(plain["examples"], 10);
    assert_eq!(plain["batches"], 4);
    assert_eq!(plain["tokenizer"], s(&tok));
    let preds = plain["predictions"].as_array().unwrap().clone();
    assert_eq!(preds.len(), 10);
    let bucketed = run(&["--model", s(&m), "--tokenizer", s(&tok), "--bucket"]);
    assert_eq!(bucketed["predictions"].as_array().unwrap(), &preds);
    // A --batch-size past the examples is one batch of them all, said so (it said "of 100000").
    let mut args: Vec<&str> = base.iter().copied().filter(|a| *a != "--json").collect();
    let at = args.iter().position(|a| *a == "--batch-size").unwrap() + 1;
    args[at] = "100000";
    // More threads than CPUs: a note (they take turns).
    let threads = (std::thread::available_parallelism().map_or(1, |n| n.get()) + 1).to_string();
    args.extend(["--model", s(&m), "--tokenizer", s(&tok), "--threads", &threads]);
    let out = run_in(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("note: --threads {threads} with ")),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("(10 examples, 1 batch of 10, max length 32)"),
        "{}",
        text(&out.stdout)
    );

    let converted = dir.path().join("with-tokenizer.onnx");
    let out = run_in(dir.path(), &["convert", s(&m), s(&converted), "--tokenizer", s(&tok)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let embedded = run(&["--model", s(&converted)]);
    assert_eq!(embedded["tokenizer"], "embedded in the model");
    assert_eq!(embedded["predictions"].as_array().unwrap(), &preds);
}

/// A sentence longer than the tiny model's 64 positions would fail inside ONNX Runtime: the
/// tool catches it up front, as one `error:` line naming the flag.
#[test]
fn eval_max_length_beyond_the_position_table_is_one_line() {
    if !have_ort("eval failing inside ONNX Runtime") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let tok = dir.path().join("words.json");
    std::fs::write(&tok, tiny_tokenizer_json()).unwrap();
    let long = vec!["good"; 100].join(" ");
    write_task_file(dir.path(), "sst2", "dev", &format!("sentence\tlabel\n{long} \t1\n"));
    let before = snapshot(dir.path());
    eval_fails(
        &[
            "--task",
            "sst2",
            "--data",
            s(dir.path()),
            "--model",
            s(&m),
            "--tokenizer",
            s(&tok),
            "--max-length",
            "128",
        ],
        &[s(&m), "--max-length 128", "64 positions"],
    );
    assert_eq!(snapshot(dir.path()), before);
}
