//! End-to-end tests of the `onnx-compress` binary: bad inputs give one clean `error:` line
//! (never a panic, never an output file), `convert` never touches its input and keeps models
//! lossless, and `eval` reproduces the reference predictions.
//!
//! Tests that need `../shared` skip with a visible `SKIP:` line when it is missing (and fail
//! under `CI=true`); tests that run ONNX Runtime skip the same way when `.ort/lib` lacks it.

#[path = "../common/mod.rs"]
mod common;

mod convert;
mod eval_errors;
mod eval_runs;
mod help;
mod inspect;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use onnx_compress::history;
use onnx_compress::onnx::build::{model, node, value_info};
use onnx_compress::onnx::proto::tensor_proto::DataType;
use onnx_compress::onnx::{self, ExternalData, GraphProto, ModelProto, SaveOptions};
use onnx_compress::testkit::shared::require;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;

use common::{assert_clean_error, bin, have_ort, s, text, word_level_tokenizer, BERT_SPECIALS};

fn sst2_model(what: &str) -> Option<PathBuf> {
    require("models/minilm-l6-sst2/model.onnx", what)
}

/// The shared SST-2 model when ONNX Runtime is installed too (else a visible skip, or a failure
/// under CI).
fn sst2_model_with_ort(what: &str) -> Option<PathBuf> {
    let m = sst2_model(what)?;
    have_ort(what).then_some(m)
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

/// Runs the binary in `cwd` with `args`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    bin().current_dir(cwd).args(args).output().expect("the binary runs")
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
    word_level_tokenizer(&words, BERT_SPECIALS, Value::Null)
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

/// Runs `eval` in a fresh folder and checks for one clean error; nothing may be written to the
/// working folder.
fn eval_fails(args: &[&str], needles: &[&str]) -> String {
    let cwd = tempfile::tempdir().unwrap();
    let mut full = vec!["eval"];
    full.extend_from_slice(args);
    let out = run_in(cwd.path(), &full);
    let line = assert_clean_error("eval", &out, needles);
    assert!(snapshot(cwd.path()).is_empty(), "eval wrote into its working folder");
    line
}
