//! What `eval` refuses to paper over: a model whose output is NaN or infinite is an error naming
//! the model and the batch (never a prediction of class 0).

use std::path::{Path, PathBuf};

use onnx_compress::eval::{self, EvalOptions};
use onnx_compress::glue::Task;
use onnx_compress::onnx::{self, tensor, SaveOptions};
use onnx_compress::runtime::SessionOptions;
use onnx_compress::testkit::shared::require_ort;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;

/// A word-level tokenizer.json over `words` (ids in order; the first four are special tokens:
/// unknown, pad, CLS, SEP, in `specials`' order), with `padding` as given.
fn tokenizer_json(words: &[&str], specials: [&str; 4], padding: Value) -> String {
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), Value::from(i)))
        .collect();
    let id = |t: &str| words.iter().position(|w| *w == t).expect("special tokens are in the vocabulary");
    let added: Vec<Value> = specials
        .iter()
        .map(|t| {
            serde_json::json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let [unk, _, cls, sep] = specials;
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": padding,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": [sep, id(sep)], "cls": [cls, id(cls)]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk}
    })
    .to_string()
}

/// `<pad>` at id 5, no `padding` section.
const ANGLE_WORDS: [&str; 10] = ["<unk>", "<s>", "</s>", "good", "bad", "<pad>", "film", "a", "very", "long"];
const ANGLE_SPECIALS: [&str; 4] = ["<unk>", "<pad>", "<s>", "</s>"];

/// `<root>/sst2/<split>.tsv` with `sentences`, labelled 1, 0, 1, ...
fn write_sst2(root: &Path, split: &str, sentences: &[&str]) -> PathBuf {
    let p = root.join("sst2").join(format!("{split}.tsv"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut text = String::from("sentence\tlabel\n");
    for (i, s) in sentences.iter().enumerate() {
        text.push_str(&format!("{s} \t{}\n", (i + 1) % 2));
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn eval_options(data_dir: &Path, tokenizer: &Path, bucket: bool) -> EvalOptions {
    EvalOptions {
        task: Task::Sst2,
        split: "dev".into(),
        data_dir: data_dir.to_path_buf(),
        batch_size: 2,
        max_length: 32,
        warmup: 0,
        measure: 0,
        limit: None,
        bucket,
        tokenizer: Some(tokenizer.to_path_buf()),
        session: SessionOptions::default(),
    }
}

/// The tiny synthetic BERT whose embedding of `bad` (id 4) is NaN: every example with that word
/// gets NaN logits, the others finite ones.
#[test]
fn nan_logits_are_an_error_naming_the_model_and_the_batch() {
    if !require_ort("eval of a model that outputs NaN") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_bert(&SynthOptions::default());
    let graph = m.graph.as_mut().unwrap();
    let word = graph
        .initializer
        .iter_mut()
        .find(|t| t.name() == "embeddings.word_embeddings.weight")
        .expect("the synthetic model has word embeddings");
    let (dims, mut values) = (word.dims.iter().map(|&d| d as usize).collect::<Vec<_>>(), tensor::to_f32(word).unwrap());
    let hidden = dims[1];
    values[4 * hidden..5 * hidden].fill(f32::NAN);
    *word = tensor::from_f32("embeddings.word_embeddings.weight", &dims, &values);
    let model = dir.path().join("nan.onnx");
    onnx::save(&m, &model, &SaveOptions::default()).unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, tokenizer_json(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null)).unwrap();

    // Examples 0..=5 in batches of 2; only example 3 has `bad`.
    write_sst2(dir.path(), "dev", &["good film", "a good film", "a long film", "a bad film", "good", "film"]);
    let err = eval::evaluate(&model, &eval_options(dir.path(), &tok, false), &|_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    for needle in [model.to_str().unwrap(), "batch 1 (examples 2–3)", "NaN/Inf", "example 3"] {
        assert!(msg.contains(needle), "the error does not mention {needle:?}: {msg}");
    }

    // Bucketed by length, the batch gathers examples from across the file: still named.
    let err = eval::evaluate(&model, &eval_options(dir.path(), &tok, true), &|_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    for needle in [model.to_str().unwrap(), "batch ", "NaN/Inf", "example 3"] {
        assert!(msg.contains(needle), "the error does not mention {needle:?}: {msg}");
    }

    // Without the NaN word the same model evaluates.
    write_sst2(dir.path(), "dev", &["good film", "a good film", "a long film"]);
    let report = eval::evaluate(&model, &eval_options(dir.path(), &tok, false), &|_, _| {}).unwrap();
    assert_eq!(report.examples, 3);
}
