//! End-to-end tests of the `onnx-compress` binary: bad inputs give one clean `error:` line
//! (never a panic, never an output file), `convert` never touches its input and keeps models
//! lossless, and `eval` reproduces the reference predictions.
//!
//! Tests that need `../shared` skip with a visible `SKIP:` line when it is missing (and fail
//! under `CI=true`); tests that run ONNX Runtime skip the same way when `.ort/lib` lacks it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use onnx_compress::history;
use onnx_compress::onnx::build::{model, node, value_info};
use onnx_compress::onnx::proto::tensor_proto::DataType;
use onnx_compress::onnx::{self, ExternalData, GraphProto, ModelProto, SaveOptions};
use onnx_compress::testkit::shared::require;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;

const ORT_LIB: &str = ".ort/lib/libonnxruntime.so.1.32.0";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn bin() -> Command {
    Command::cargo_bin("onnx-compress").expect("the onnx-compress binary is built")
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether the project-local ONNX Runtime is installed (for tests that only run the binary).
/// When it is not: panics under `CI=true`, otherwise prints a visible `SKIP:` line.
fn have_ort(what: &str) -> bool {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(ORT_LIB);
    if lib.is_file() {
        return true;
    }
    if in_ci() {
        panic!("{} is missing: CI must install ONNX Runtime ({what})", lib.display());
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: {} not found; run `make setup` ({what})",
        lib.display()
    );
    false
}

fn sst2_model(what: &str) -> Option<PathBuf> {
    require("models/minilm-l6-sst2/model.onnx", what)
}

fn mrpc_model(what: &str) -> Option<PathBuf> {
    require("models/minilm-l6-mrpc/model.onnx", what)
}

/// The `predictions` of a shared model's `reference.json`.
fn reference_predictions(model_dir: &str) -> Vec<Value> {
    let path = require(&format!("models/{model_dir}/reference.json"), "reference predictions")
        .expect("reference.json beside a shared model that exists");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["predictions"]
        .as_array()
        .expect("reference.json has predictions")
        .clone()
}

/// Every path under `dir` (recursively), relative to it.
fn snapshot(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the binary in `cwd` with `args`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    bin().current_dir(cwd).args(args).output().expect("the binary runs")
}

/// Asserts that a run failed cleanly: exit status 1, nothing on stdout, stderr exactly one line
/// starting with `error: ` that contains each of `needles`, and no panic. Returns that line.
fn assert_clean_error(out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit status 1; stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    assert!(stdout.is_empty(), "a failed run printed to stdout:\n{stdout}");
    let trimmed = stderr.strip_suffix('\n').unwrap_or(&stderr);
    assert!(
        stderr.ends_with('\n') && !trimmed.contains('\n') && !trimmed.contains('\r'),
        "stderr is not exactly one line:\n{stderr:?}"
    );
    assert!(
        trimmed.starts_with("error: "),
        "stderr does not start with `error: `:\n{stderr}"
    );
    for n in needles {
        assert!(trimmed.contains(n), "the error does not mention {n:?}:\n{stderr}");
    }
    trimmed.to_string()
}

/// Asserts that no part of the message after `error: ` is repeated, as `a: X: X` would be.
fn assert_not_repeated(line: &str) {
    let parts: Vec<&str> = line.trim_start_matches("error: ").split(": ").collect();
    for w in parts.windows(2) {
        assert_ne!(w[0], w[1], "the error repeats itself: {line}");
    }
}

/// A tiny BERT saved into `dir` (default synth options: vocab 100, 64 positions).
fn save_tiny(dir: &Path, name: &str, external: ExternalData) -> PathBuf {
    let path = dir.join(name);
    let m = tiny_bert(&SynthOptions::default());
    onnx::save(
        &m,
        &path,
        &SaveOptions {
            external_data: external,
            ..Default::default()
        },
    )
    .unwrap();
    path
}

/// A word-level tokenizer.json whose ids all stay below the tiny model's vocabulary of 100.
fn tiny_tokenizer_json() -> String {
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "how", "do", "i", "what", "is", "the", "why", "a", "to", "?", "\"", "good",
        "bad", "film", "learn", "rust", "sky", "blue",
    ];
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), Value::from(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

const QQP_HEADER: &str = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n";

/// Ten QQP rows; the fourth has a stray `"` (GLUE files are not quoted).
fn qqp_rows() -> String {
    let rows = [
        ("How do I learn Rust?", "What is the best way to learn Rust?", 1),
        ("Why is the sky blue?", "What makes the sky appear blue?", 1),
        ("How do I cook rice?", "What is the capital of France?", 0),
        ("What is \"machine learning?", "How does a car engine work?", 0),
        ("Is coffee bad for you?", "Is drinking coffee unhealthy?", 1),
        ("How tall is Mount Everest?", "How old is the universe?", 0),
        ("What are good books to read?", "Which books should I read?", 1),
        (
            "How do I lose weight fast?",
            "What is the best programming language?",
            0,
        ),
        (
            "Where can I buy cheap flights?",
            "How do I find cheap plane tickets?",
            1,
        ),
        ("Why do cats purr?", "How do airplanes fly?", 0),
    ];
    let mut s = String::from(QQP_HEADER);
    for (i, (a, b, l)) in rows.iter().enumerate() {
        s.push_str(&format!("{}\t{}\t{}\t{a}\t{b}\t{l}\n", 1000 + i, 2 * i + 1, 2 * i + 2));
    }
    s
}

/// `<dir>/<task>/<split>.tsv` with `contents`.
fn write_task_file(dir: &Path, task: &str, split: &str, contents: &str) -> PathBuf {
    let p = dir.join(task).join(format!("{split}.tsv"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, contents).unwrap();
    p
}

fn parse_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "the run failed ({:?}):\n{}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(&out.stdout)))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// inspect: bad inputs
// ---------------------------------------------------------------------------------------------

/// Runs `inspect <file>` in a fresh folder and checks for one clean error naming the file.
fn inspect_fails(file: &Path, needles: &[&str]) -> String {
    let cwd = tempfile::tempdir().unwrap();
    let file_dir = file.parent().unwrap().to_path_buf();
    let before = snapshot(&file_dir);
    let out = run_in(cwd.path(), &["inspect", s(file)]);
    let mut all = vec![s(file)];
    all.extend_from_slice(needles);
    let line = assert_clean_error(&out, &all);
    assert!(snapshot(cwd.path()).is_empty(), "inspect wrote into its working folder");
    assert_eq!(snapshot(&file_dir), before, "inspect changed the model's folder");
    line
}

#[test]
fn inspect_rejects_truncated_models() {
    let Some(src) = sst2_model("inspect on truncated copies") else {
        return;
    };
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("first1000.onnx", 1000), ("half.onnx", bytes.len() / 2)] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        inspect_fails(&p, &["not a valid ONNX model", "truncated"]);
    }
}

#[test]
fn inspect_rejects_files_that_are_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "notes.txt",
            b"this is a plain text file, not a model\n",
            "not a valid ONNX model",
        ),
        ("empty.onnx", b"", "empty"),
        (
            "image.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0\x1f\xf3\xffa\0\0\0\0IEND\xaeB`\x82",
            "not a valid ONNX model",
        ),
    ];
    for (name, contents, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        inspect_fails(&p, &[needle]);
    }
}

#[test]
fn inspect_rejects_a_model_that_is_not_a_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("relu.onnx");
    let graph = GraphProto {
        name: Some("relu".into()),
        node: vec![node("Relu", "relu", &["x"], &["y"])],
        input: vec![value_info("x", DataType::Float, &[Err("n"), Ok(4)])],
        output: vec![value_info("y", DataType::Float, &[Err("n"), Ok(4)])],
        ..Default::default()
    };
    onnx::save(&model(graph, 17), &p, &SaveOptions::default()).unwrap();
    // The file itself is valid ONNX: the error must be about what it contains.
    let line = inspect_fails(&p, &["not a transformer"]);
    assert!(
        !line.contains("not a valid ONNX model"),
        "a valid non-transformer model is reported as invalid ONNX: {line}"
    );
}

#[test]
fn inspect_rejects_a_nonexistent_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-model.onnx");
    inspect_fails(&p, &["No such file"]);
    assert!(!p.exists());
}

#[test]
fn inspect_nonexistent_path_error_does_not_repeat_itself() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-model.onnx");
    let line = inspect_fails(&p, &["No such file"]);
    assert_not_repeated(&line);
}

#[test]
fn inspect_rejects_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("model-dir");
    std::fs::create_dir(&d).unwrap();
    inspect_fails(&d, &["directory"]);
}

#[test]
fn inspect_rejects_zero_seq_len() {
    let dir = tempfile::tempdir().unwrap();
    let p = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let out = run_in(dir.path(), &["inspect", s(&p), "--seq-len", "0"]);
    assert_clean_error(&out, &["--seq-len"]);
}

#[test]
fn inspect_reads_a_synthetic_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let out = run_in(dir.path(), &["inspect", s(&p), "--json", "--seq-len", "16"]);
    let v = parse_json(&out);
    assert_eq!(v["num_layers"], 2);
    assert_eq!(v["seq_len"], 16);
    assert_eq!(v["has_embedded_tokenizer"], false);
    let out = run_in(dir.path(), &["inspect", s(&p)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());
}

// ---------------------------------------------------------------------------------------------
// eval: bad inputs
// ---------------------------------------------------------------------------------------------

/// Runs `eval` in a fresh folder and checks for one clean error; nothing may be written to the
/// working folder.
fn eval_fails(args: &[&str], needles: &[&str]) -> String {
    let cwd = tempfile::tempdir().unwrap();
    let mut full = vec!["eval"];
    full.extend_from_slice(args);
    let out = run_in(cwd.path(), &full);
    let line = assert_clean_error(&out, needles);
    assert!(snapshot(cwd.path()).is_empty(), "eval wrote into its working folder");
    line
}

#[test]
fn eval_unknown_task_lists_known_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    eval_fails(
        &["--task", "foo", "--model", s(&m)],
        &["foo", "sst2", "mrpc", "qqp", "known tasks"],
    );
}

#[test]
fn eval_nonexistent_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("missing.onnx");
    eval_fails(
        &["--task", "sst2", "--model", s(&m)],
        &["--model", s(&m), "no such file"],
    );
}

#[test]
fn eval_model_that_is_a_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    eval_fails(
        &["--task", "sst2", "--model", s(dir.path())],
        &["--model", s(dir.path()), "directory"],
    );
}

#[test]
fn eval_without_any_tokenizer_says_how_to_fix_it() {
    let Some(src) = sst2_model("eval without a tokenizer") else {
        return;
    };
    if !have_ort("eval without a tokenizer") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model.onnx");
    std::fs::copy(&src, &m).unwrap();
    let before = snapshot(dir.path());
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--limit", "4"],
        &["tokenizer", s(&m), "--tokenizer"],
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn eval_data_file_with_wrong_columns() {
    if !have_ort("eval on a malformed data file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let data = dir.path().join("glue");
    let f = write_task_file(&data, "sst2", "dev", "text\tpolarity\nit is good \t1\n");
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--data", s(&data)],
        &[s(&f), "sentence", "label"],
    );
}

#[test]
fn eval_data_dir_without_the_task_folder() {
    if !have_ort("eval on a data folder without sst2") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let data = dir.path().join("glue");
    write_task_file(&data, "mrpc", "dev", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n");
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--data", s(&data)],
        &["SST-2", "dev", s(&data.join("sst2").join("dev.tsv"))],
    );
}

#[test]
fn eval_device_cuda_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let Some(m) = sst2_model("eval --device cuda") else {
        return;
    };
    if !have_ort("eval --device cuda") {
        return;
    }
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--device", "cuda", "--limit", "4"],
        &["--device cuda", "CUDA", "--features cuda"],
    );
}

#[test]
fn eval_rejects_batch_size_zero() {
    if !have_ort("eval --batch-size 0") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let data = dir.path().join("glue");
    write_task_file(&data, "sst2", "dev", "sentence\tlabel\ngood film \t1\n");
    eval_fails(
        &[
            "--task",
            "sst2",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--batch-size",
            "0",
        ],
        &["--batch-size"],
    );
}

#[test]
fn eval_rejects_limit_zero() {
    if !have_ort("eval --limit 0") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let data = dir.path().join("glue");
    write_task_file(&data, "sst2", "dev", "sentence\tlabel\ngood film \t1\n");
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--data", s(&data), "--limit", "0"],
        &["--limit"],
    );
}

#[test]
fn eval_with_a_missing_ort_library_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let lib = "/nonexistent/libonnxruntime.so";
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--limit", "4", "--ort-lib", lib],
        &["--ort-lib", lib],
    );
    // A file that is not a library.
    let not_lib = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_lib, "not a shared library\n").unwrap();
    eval_fails(
        &[
            "--task",
            "sst2",
            "--model",
            s(&m),
            "--limit",
            "4",
            "--ort-lib",
            s(&not_lib),
        ],
        &[s(&not_lib), "cannot load ONNX Runtime"],
    );
    // ORT_DYLIB_PATH pointing nowhere is named as such.
    let cwd = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(cwd.path())
        .env("ORT_DYLIB_PATH", lib)
        .args(["eval", "--task", "sst2", "--model", s(&m), "--limit", "4"])
        .output()
        .unwrap();
    assert_clean_error(&out, &["ORT_DYLIB_PATH", lib]);
    // The global flag also works before the subcommand.
    let out = run_in(
        dir.path(),
        &[
            "--ort-lib",
            lib,
            "eval",
            "--task",
            "sst2",
            "--model",
            s(&m),
            "--limit",
            "4",
        ],
    );
    assert_clean_error(&out, &["--ort-lib", lib]);
}

// ---------------------------------------------------------------------------------------------
// convert
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn convert_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let original = std::fs::read(&input).unwrap();
    std::os::unix::fs::symlink("model.onnx", dir.path().join("link.onnx")).unwrap();
    std::fs::hard_link(&input, dir.path().join("hard.onnx")).unwrap();
    let before = snapshot(dir.path());
    let dname = dir.path().file_name().unwrap().to_str().unwrap().to_string();

    let same = s(&input).to_string();
    let dot = format!("{}/./model.onnx", s(dir.path()));
    let dotdot = format!("{}/../{dname}/model.onnx", s(dir.path()));
    let slashes = format!("{}//model.onnx", s(dir.path()));
    let link = s(&dir.path().join("link.onnx")).to_string();
    let hard = s(&dir.path().join("hard.onnx")).to_string();
    let cases: Vec<(&str, &str)> = vec![
        (&same, &same),
        (&same, &dot),
        (&same, &dotdot),
        (&same, &slashes),
        (&same, &link),
        (&same, &hard),
        (&link, &same),
        // Relative input, run from the model's folder, against an absolute output.
        ("model.onnx", &same),
        ("./model.onnx", "model.onnx"),
    ];
    for ext in ["auto", "always", "never"] {
        for (i, o) in &cases {
            let out = run_in(dir.path(), &["convert", i, o, "--external-data", ext]);
            assert_clean_error(&out, &[o, "input"]);
            assert_eq!(
                std::fs::read(&input).unwrap(),
                original,
                "convert {i} {o} changed the input"
            );
            assert_eq!(snapshot(dir.path()), before, "convert {i} {o} left files behind");
            assert!(
                std::fs::symlink_metadata(dir.path().join("link.onnx"))
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "convert {i} {o} replaced the symlink"
            );
        }
    }
}

#[test]
fn convert_refuses_to_overwrite_the_inputs_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Always);
    let data = dir.path().join("model.onnx.data");
    assert!(data.is_file(), "the tiny model was saved with external data");
    let (orig_model, orig_data) = (std::fs::read(&input).unwrap(), std::fs::read(&data).unwrap());
    let before = snapshot(dir.path());
    for ext in ["auto", "never", "always"] {
        let out = run_in(dir.path(), &["convert", s(&input), s(&data), "--external-data", ext]);
        assert_clean_error(&out, &[s(&data)]);
        assert_eq!(std::fs::read(&input).unwrap(), orig_model);
        assert_eq!(
            std::fs::read(&data).unwrap(),
            orig_data,
            "the input's external data was overwritten"
        );
        assert_eq!(snapshot(dir.path()), before);
    }
}

#[test]
fn convert_into_a_missing_folder_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let before = snapshot(dir.path());
    let missing = dir.path().join("no-such-dir");
    let output = missing.join("out.onnx");
    for ext in ["auto", "always", "never"] {
        let out = run_in(dir.path(), &["convert", s(&input), s(&output), "--external-data", ext]);
        assert_clean_error(&out, &[s(&output), "does not exist"]);
        assert!(!missing.exists(), "convert created {}", missing.display());
        assert_eq!(snapshot(dir.path()), before, "convert left files behind");
    }
}

#[test]
fn convert_into_a_missing_folder_error_does_not_repeat_itself() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let output = dir.path().join("no-such-dir").join("out.onnx");
    let out = run_in(dir.path(), &["convert", s(&input), s(&output)]);
    let line = assert_clean_error(&out, &[s(&output)]);
    assert_not_repeated(&line);
}

#[test]
fn convert_onto_a_directory_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let target = dir.path().join("out.onnx");
    std::fs::create_dir(&target).unwrap();
    let before = snapshot(dir.path());
    let out = run_in(dir.path(), &["convert", s(&input), s(&target)]);
    assert_clean_error(&out, &[s(&target)]);
    assert_eq!(snapshot(dir.path()), before, "convert left files behind");
}

#[test]
fn convert_with_a_bad_tokenizer_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let bad = dir.path().join("bad-tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let output = dir.path().join("out.onnx");
    let before = snapshot(dir.path());
    let out = run_in(dir.path(), &["convert", s(&input), s(&output), "--tokenizer", s(&bad)]);
    assert_clean_error(&out, &[s(&bad)]);
    let missing = dir.path().join("missing.json");
    let out = run_in(
        dir.path(),
        &["convert", s(&input), s(&output), "--tokenizer", s(&missing)],
    );
    assert_clean_error(&out, &[s(&missing)]);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn convert_of_a_non_onnx_file_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let output = dir.path().join("out.onnx");
    let before = snapshot(dir.path());
    let out = run_in(dir.path(), &["convert", s(&input), s(&output)]);
    assert_clean_error(&out, &[s(&input), "not a valid ONNX model"]);
    assert_eq!(snapshot(dir.path()), before);
}

fn history_passes(m: &ModelProto) -> Vec<String> {
    history::history(m).unwrap().into_iter().map(|e| e.pass).collect()
}

#[test]
fn convert_shared_model_is_lossless_and_embeds_the_tokenizer() {
    let Some(src) = sst2_model("convert of the shared SST-2 model") else {
        return;
    };
    let tok = src.parent().unwrap().join("tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("model.onnx");
    let out = run_in(dir.path(), &["convert", s(&src), s(&output), "--json"]);
    let summary = parse_json(&out);
    assert_eq!(summary["path"], s(&output));
    assert_eq!(summary["data_file"], Value::Null);
    assert_eq!(
        summary["bytes"].as_u64().unwrap(),
        std::fs::metadata(&output).unwrap().len()
    );
    assert_eq!(
        snapshot(dir.path()),
        BTreeSet::from([PathBuf::from("model.onnx")]),
        "convert wrote something besides its output"
    );

    let a = onnx::load(&src).unwrap();
    let b = onnx::load(&output).unwrap();
    assert!(a.graph == b.graph, "convert changed the graph");
    assert_eq!(a.ir_version, b.ir_version);
    assert_eq!(a.opset_import, b.opset_import);
    assert_eq!(
        history::embedded_tokenizer(&b),
        Some(std::fs::read_to_string(&tok).unwrap().as_str()),
        "the tokenizer beside the input is not embedded"
    );
    assert_eq!(history_passes(&b), vec!["convert".to_string()]);
}

#[cfg(unix)]
#[test]
fn convert_output_has_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").unwrap();
    let expected = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    std::fs::remove_file(&probe).unwrap();
    for (name, ext) in [("a.onnx", "never"), ("b.onnx", "always")] {
        let output = dir.path().join(name);
        let out = run_in(dir.path(), &["convert", s(&input), s(&output), "--external-data", ext]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut files = vec![output.clone()];
        if ext == "always" {
            files.push(onnx::io::data_file_for(&output));
        }
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                expected,
                "{} has mode {mode:o}; a file created by this process gets {expected:o}",
                f.display()
            );
        }
    }
}

#[test]
fn convert_with_external_data_always_round_trips() {
    let Some(src) = sst2_model("convert --external-data always") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let data = dir.path().join("out.onnx.data");
    let out = run_in(
        dir.path(),
        &["convert", s(&src), s(&output), "--external-data", "always", "--json"],
    );
    let summary = parse_json(&out);
    assert_eq!(summary["data_file"], s(&data));
    assert_eq!(
        snapshot(dir.path()),
        BTreeSet::from([PathBuf::from("out.onnx"), PathBuf::from("out.onnx.data")])
    );
    let onnx_len = std::fs::metadata(&output).unwrap().len();
    assert!(
        onnx_len < 1_000_000,
        "out.onnx is {onnx_len} bytes; the tensors should be in out.onnx.data"
    );
    assert_eq!(summary["bytes"].as_u64().unwrap(), onnx_len);
    assert_eq!(
        summary["data_bytes"].as_u64().unwrap(),
        std::fs::metadata(&data).unwrap().len()
    );

    let a = onnx::load(&src).unwrap();
    let b = onnx::load(&output).unwrap();
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    assert_eq!(ga.initializer.len(), gb.initializer.len());
    for (x, y) in ga.initializer.iter().zip(&gb.initializer) {
        assert!(x == y, "initializer {:?} changed", x.name);
    }
    assert!(a.graph == b.graph, "the graph changed through external data");
    assert!(history::embedded_tokenizer(&b).is_some());
    assert_eq!(history_passes(&b), vec!["convert".to_string()]);

    // ONNX Runtime finds the side file too, and eval counts it in the size.
    if have_ort("eval of a model with external data") {
        let reference = reference_predictions("minilm-l6-sst2");
        let out = run_in(
            dir.path(),
            &[
                "eval",
                "--task",
                "sst2",
                "--model",
                s(&output),
                "--limit",
                "16",
                "--json",
            ],
        );
        let v = parse_json(&out);
        assert_eq!(v["predictions"].as_array().unwrap().as_slice(), &reference[..16]);
        assert_eq!(
            v["size_bytes"].as_u64().unwrap(),
            onnx_len + std::fs::metadata(&data).unwrap().len()
        );
    }

    // And back to a single file: a second history entry, same graph.
    let single = dir.path().join("single.onnx");
    let out = run_in(
        dir.path(),
        &["convert", s(&output), s(&single), "--external-data", "never"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c = onnx::load(&single).unwrap();
    assert!(a.graph == c.graph);
    assert_eq!(history_passes(&c), vec!["convert".to_string(), "convert".to_string()]);
    assert!(!dir.path().join("single.onnx.data").exists());
}

// ---------------------------------------------------------------------------------------------
// eval: end to end
// ---------------------------------------------------------------------------------------------

#[test]
fn tokenizer_travels_with_the_converted_model() {
    let Some(src) = sst2_model("eval of a converted model") else {
        return;
    };
    if !have_ort("eval of a converted model") {
        return;
    }
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
    let Some(m) = sst2_model("SST-2 eval with and without --bucket") else {
        return;
    };
    if !have_ort("SST-2 eval with and without --bucket") {
        return;
    }
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

// ---------------------------------------------------------------------------------------------
// --help
// ---------------------------------------------------------------------------------------------

/// Usage errors are clap's: exit status 2, first line `error: ` naming the flag, no panic.
#[test]
fn usage_errors_name_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (&["eval", "--task", "sst2"], "--model"),
        (
            &["eval", "--task", "sst2", "--model", "m.onnx", "--batch-size", "abc"],
            "--batch-size",
        ),
        (
            &["eval", "--task", "sst2", "--model", "m.onnx", "--device", "tpu"],
            "--device",
        ),
        (
            &["convert", "a.onnx", "b.onnx", "--external-data", "sometimes"],
            "--external-data",
        ),
        (&["inspect", "m.onnx", "--seq-len", "many"], "--seq-len"),
    ];
    let cwd = tempfile::tempdir().unwrap();
    for (args, flag) in cases {
        let out = run_in(cwd.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(flag),
            "{args:?}:\n{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    assert!(snapshot(cwd.path()).is_empty());
}

fn help(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} failed:\n{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    text(&out.stdout)
}

fn assert_mentions(help_text: &str, what: &str, flags: &[&str]) {
    for f in flags {
        let found = help_text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .any(|w| w == *f || w.starts_with(&format!("{f}=")) || w.starts_with(&format!("{f}<")));
        assert!(found, "`{what}` does not mention {f}:\n{help_text}");
    }
}

#[test]
fn help_mentions_every_flag() {
    let top = help(&["--help"]);
    assert_mentions(&top, "--help", &["--ort-lib"]);
    for cmd in ["inspect", "eval", "convert"] {
        assert!(top.contains(cmd), "--help does not list {cmd}:\n{top}");
    }
    let eval = help(&["eval", "--help"]);
    assert_mentions(
        &eval,
        "eval --help",
        &[
            "--task",
            "--model",
            "--data",
            "--split",
            "--batch-size",
            "--max-length",
            "--device",
            "--threads",
            "--warmup",
            "--measure",
            "--limit",
            "--bucket",
            "--tokenizer",
            "--json",
            "--ort-lib",
        ],
    );
    let inspect = help(&["inspect", "--help"]);
    assert_mentions(&inspect, "inspect --help", &["--seq-len", "--json", "--ort-lib"]);
    let convert = help(&["convert", "--help"]);
    assert_mentions(
        &convert,
        "convert --help",
        &["--external-data", "--tokenizer", "--json", "--ort-lib"],
    );
    // `help <cmd>` agrees with `<cmd> --help`.
    assert_eq!(help(&["help", "eval"]), eval);
}
