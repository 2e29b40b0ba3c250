//! What `eval` and calibration refuse to paper over: a model whose output is NaN or infinite is
//! an error naming the model and the batch (never a prediction of class 0), and batches are
//! padded with the tokenizer's own pad token, whatever its id.

use std::path::{Path, PathBuf};

use onnx_compress::calib;
use onnx_compress::eval::{self, EvalOptions};
use onnx_compress::glue::Task;
use onnx_compress::onnx::{self, tensor, SaveOptions};
use onnx_compress::runtime::SessionOptions;
use onnx_compress::testkit::shared::require_ort;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use serde_json::Value;
use tokenizers::Tokenizer;

mod common;

use common::word_level_tokenizer;

/// `<pad>` at id 5, no `padding` section.
const ANGLE_WORDS: [&str; 10] = [
    "<unk>", "<s>", "</s>", "good", "bad", "<pad>", "film", "a", "very", "long",
];
const ANGLE_SPECIALS: [&str; 4] = ["<unk>", "<pad>", "<s>", "</s>"];

fn tokenizer(json: &str) -> Tokenizer {
    Tokenizer::from_bytes(json.as_bytes()).expect("a valid tokenizer.json")
}

#[test]
fn pad_token_comes_from_the_tokenizer() {
    // A `<pad>` vocabulary entry at a nonzero id.
    let angle = tokenizer(&word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null));
    assert_eq!(eval::pad_id(&angle).unwrap(), 5);

    // BERT's `[PAD]`, as in the shared models (id 0 there; here 2 to tell it from a fallback).
    let bert_words = ["[UNK]", "[CLS]", "[PAD]", "[SEP]", "good"];
    let bert = tokenizer(&word_level_tokenizer(
        &bert_words,
        ["[UNK]", "[PAD]", "[CLS]", "[SEP]"],
        Value::Null,
    ));
    assert_eq!(eval::pad_id(&bert).unwrap(), 2);

    // A `padding` section wins over the vocabulary.
    let padding = serde_json::json!({"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 7, "pad_type_id": 0, "pad_token": "a"});
    let set = tokenizer(&word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, padding));
    assert_eq!(eval::pad_id(&set).unwrap(), 7);

    // No pad token at all: an error that says what was looked for and how to fix it.
    let none_words = ["<unk>", "<s>", "</s>", "good", "<nothing>"];
    let none = tokenizer(&word_level_tokenizer(
        &none_words,
        ["<unk>", "<nothing>", "<s>", "</s>"],
        Value::Null,
    ));
    let err = format!("{:#}", eval::pad_id(&none).unwrap_err());
    for needle in ["no pad token", "[PAD]", "<pad>", "<|padding|>", "\"padding\"", "pad_id"] {
        assert!(err.contains(needle), "the error does not mention {needle:?}: {err}");
    }
}

#[test]
fn calibration_batches_are_padded_with_the_tokenizers_pad_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_sst2(dir.path(), "train", &["good film", "a very very long good film", "bad"]);
    let mut tok = tokenizer(&word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null));
    let source = onnx_compress::data::Source {
        path: data,
        format: None,
        columns: Default::default(),
        task: Some(Task::Sst2),
    };
    let c = calib::load(&source, 3, 0, &mut tok, "tokenizer.json", 32, None, 8, false).unwrap();
    assert_eq!(c.batches.len(), 1);
    let b = &c.batches[0];
    let mut padded = 0;
    for (id, mask) in b.input_ids.iter().zip(b.attention_mask.iter()) {
        if *mask == 0 {
            assert_eq!(*id, 5, "a padded position holds {id}, not <pad>'s id 5");
            padded += 1;
        }
    }
    assert!(padded > 0, "the batch has padding");
}

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
        task: Some(Task::Sst2),
        data: onnx_compress::eval::EvalData::Glue {
            dir: data_dir.to_path_buf(),
            split: "dev".into(),
        },
        labels: None,
        batch_size: 2,
        max_length: 32,
        warmup: 0,
        measure: 0,
        limit: None,
        bucket,
        tokenizer: Some(tokenizer.to_path_buf()),
        session: SessionOptions::default(),
        words: onnx_compress::eval::Words::Flags,
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
    let (dims, mut values) = (
        word.dims.iter().map(|&d| d as usize).collect::<Vec<_>>(),
        tensor::to_f32(word).unwrap(),
    );
    let hidden = dims[1];
    values[4 * hidden..5 * hidden].fill(f32::NAN);
    *word = tensor::from_f32("embeddings.word_embeddings.weight", &dims, &values);
    let model = dir.path().join("nan.onnx");
    onnx::save(&m, &model, &SaveOptions::default()).unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null)).unwrap();

    // Examples 0..=5 in batches of 2; only example 3 has `bad`.
    write_sst2(
        dir.path(),
        "dev",
        &["good film", "a good film", "a long film", "a bad film", "good", "film"],
    );
    let err = eval::evaluate(&model, &eval_options(dir.path(), &tok, false), &|_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    for needle in [
        model.to_str().unwrap(),
        "batch 1 (examples 2–3)",
        "example 3 (line 5 of ",
        "logits contain NaN/Inf: NaN, NaN;",
        "evaluate the model it was made from",
    ] {
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

/// A model whose token inputs have a fixed shape fails on the first batch of another size in
/// ONNX Runtime's words ("Got invalid dimensions"): it is refused naming the input, the shape
/// and the fix.
#[test]
fn a_token_input_of_fixed_shape_is_named_with_the_fix() {
    if !require_ort("eval of a model with fixed input shapes") {
        return;
    }
    let mut m = tiny_bert(&SynthOptions::default());
    for input in &mut m.graph.as_mut().unwrap().input {
        let t = tensor_type(input);
        for (d, size) in t.shape.as_mut().unwrap().dim.iter_mut().zip([1, 16]) {
            d.value = Some(onnx_compress::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(size));
        }
    }
    refused_by_eval_and_run(
        &m,
        "fixed.onnx",
        &[
            "input 'input_ids' has a fixed shape [1, 16]",
            "re-export the model with dynamic",
        ],
    );
}

/// The tensor type `v` declares (every input and output of the synthetic model has one).
fn tensor_type(
    v: &mut onnx_compress::onnx::proto::ValueInfoProto,
) -> &mut onnx_compress::onnx::proto::type_proto::Tensor {
    let name = v.name().to_string();
    match v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(onnx_compress::onnx::proto::type_proto::Value::TensorType(t)) => t,
        _ => panic!("'{name}' has no tensor type"),
    }
}

/// Saves `m` as `file` beside an SST-2 dev file: eval refuses it with `needles` (in one error),
/// and `run` of a dynamic INT8 recipe refuses it with the first of them before its passes, writing
/// nothing (it used to write the passes' model, then fail in eval).
fn refused_by_eval_and_run(m: &onnx_compress::onnx::ModelProto, file: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join(file);
    onnx::save(m, &model, &SaveOptions::default()).unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null)).unwrap();
    write_sst2(dir.path(), "dev", &["good film", "a good film"]);
    let err = eval::evaluate(&model, &eval_options(dir.path(), &tok, false), &|_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    for needle in std::iter::once(&file).chain(needles) {
        assert!(msg.contains(needle), "the error does not mention {needle:?}: {msg}");
    }
    let recipe = dir.path().join("int8.yaml");
    std::fs::write(
        &recipe,
        format!("model:\n  model_name: {file}\ndata:\n  task: sst2\n  dir: .\n  max_input_length: 32\nquantization:\n  enable: true\n  method: dynamic\n"),
    )
    .unwrap();
    let out = dir.path().join("out.onnx");
    let o = common::bin()
        .args(["run", recipe.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_clean_error(&format!("run of {file}"), &o, &needles[..1]);
    assert!(!out.exists(), "run wrote {}", out.display());
}

/// A model taking its token ids as floats (cast to integers inside) cannot be fed the tokenizer's
/// ids: eval refuses it naming the input and its type, and `run` before its passes (it used to
/// write the quantized model, then fail when the session opened).
#[test]
fn a_token_input_of_floats_is_refused_before_run_writes() {
    use onnx_compress::onnx::build::{attr_int, node};
    use onnx_compress::onnx::proto::tensor_proto::DataType;
    let mut m = tiny_bert(&SynthOptions::default());
    let g = m.graph.as_mut().unwrap();
    for n in g.node.iter_mut() {
        n.input
            .iter_mut()
            .filter(|x| *x == "input_ids")
            .for_each(|x| *x = "ids_int64".into());
    }
    let mut cast = node("Cast", "ids_int64", &["input_ids"], &["ids_int64"]);
    cast.attribute.push(attr_int("to", DataType::Int64 as i64));
    g.node.insert(0, cast);
    let input = g.input.iter_mut().find(|i| i.name() == "input_ids").unwrap();
    tensor_type(input).elem_type = Some(DataType::Float as i32);
    refused_by_eval_and_run(
        &m,
        "float_ids.onnx",
        &[
            "input 'input_ids' takes float elements",
            "re-export the model with integer",
        ],
    );
}

/// A model whose logits are float16 (a half-precision export) is refused naming the output and
/// its type before any batch runs: ONNX Runtime's "Cannot extract Tensor<f32> from Tensor<f16>"
/// came after the first (helper-61).
#[test]
fn float16_logits_are_refused_naming_the_output() {
    use onnx_compress::onnx::build::{attr_int, node};
    use onnx_compress::onnx::proto::tensor_proto::DataType;
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_bert(&SynthOptions::default());
    let g = m.graph.as_mut().unwrap();
    for n in g.node.iter_mut() {
        n.output
            .iter_mut()
            .filter(|x| *x == "logits")
            .for_each(|x| *x = "logits_f32".into());
    }
    let mut cast = node("Cast", "logits_to_f16", &["logits_f32"], &["logits"]);
    cast.attribute.push(attr_int("to", DataType::Float16 as i64));
    g.node.push(cast);
    let out = g.output.iter_mut().find(|o| o.name() == "logits").unwrap();
    tensor_type(out).elem_type = Some(DataType::Float16 as i32);
    let model = dir.path().join("half.onnx");
    onnx::save(&m, &model, &SaveOptions::default()).unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null)).unwrap();
    write_sst2(dir.path(), "dev", &["good film", "a good film"]);
    let err = eval::evaluate(&model, &eval_options(dir.path(), &tok, false), &|_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    for needle in [
        "half.onnx",
        "output 'logits' holds float16 values",
        "evaluate the float32 model",
    ] {
        assert!(msg.contains(needle), "the error does not mention {needle:?}: {msg}");
    }
}

/// `eval --bucket` batches by length and runs the batches in `eval::run_order`'s shuffle, so the
/// timed batches (after the warm-up) sample every length; not shortest first.
#[test]
fn bucketed_batches_run_in_the_shuffled_order() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    let m = tiny_bert(&SynthOptions::default());
    onnx::save(&m, &model, &SaveOptions::default()).unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null)).unwrap();
    // Sixteen sentences of 16, 15, ..., 1 words: eight batches of two, one length pair each.
    let sentences: Vec<String> = (1..=16).rev().map(|n| vec!["film"; n].join(" ")).collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    write_sst2(dir.path(), "dev", &refs);
    let batches = |bucket: bool| -> Vec<Vec<usize>> {
        let p = eval::prepare(&model, &m, &eval_options(dir.path(), &tok, bucket)).unwrap();
        p.batches.iter().map(|(rows, _)| rows.to_vec()).collect()
    };
    // File order: rows 0-1, 2-3, ...
    let plain: Vec<Vec<usize>> = (0..8).map(|b| vec![2 * b, 2 * b + 1]).collect();
    assert_eq!(batches(false), plain);
    // By length the shortest pair (rows 15, 14) is chunk 0; the chunks run in run_order.
    let by_length: Vec<Vec<usize>> = (0..8).map(|b| vec![15 - 2 * b, 14 - 2 * b]).collect();
    let want: Vec<Vec<usize>> = eval::run_order(8, true)
        .into_iter()
        .map(|c| by_length[c].clone())
        .collect();
    assert_ne!(want, by_length, "the shuffle moves some chunk");
    assert_eq!(batches(true), want);
}

/// A model that outputs more than its logits, in any order (a hidden state or a pooled vector
/// first), is evaluated on its logits: the output named `logits`, else the first. It was read as
/// a headless encoder, or as one of 32 classes. A headless encoder with its pooled vector after
/// the hidden states stays headless (the pooled vector is no prediction).
#[test]
fn the_logits_are_found_among_other_outputs() {
    if !require_ort("a model with extra outputs") {
        return;
    }
    use onnx_compress::onnx::proto::tensor_proto::DataType;
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_bert(&SynthOptions::default());
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, word_level_tokenizer(&ANGLE_WORDS, ANGLE_SPECIALS, Value::Null)).unwrap();
    write_sst2(
        dir.path(),
        "dev",
        &["good film", "a very long film", "bad", "a good film"],
    );
    let evaluate = |m: &onnx::ModelProto, name: &str| {
        let path = dir.path().join(name);
        onnx::save(m, &path, &SaveOptions::default()).unwrap();
        assert_eq!(eval::output_width(m), Some(2), "{name}");
        eval::evaluate(&path, &eval_options(dir.path(), &tok, false), &|_, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
            .predictions
    };
    let plain = evaluate(&m, "plain.onnx");
    let g = m.graph.as_ref().unwrap();
    let last_norm = g
        .node
        .iter()
        .rev()
        .find(|n| n.op_type() == "LayerNormalization")
        .unwrap()
        .output[0]
        .clone();
    let hidden =
        onnx_compress::onnx::build::value_info(&last_norm, DataType::Float, &[Err("batch"), Err("sequence"), Ok(32)]);
    let mut per_token_first = m.clone();
    per_token_first.graph.as_mut().unwrap().output.insert(0, hidden.clone());
    assert_eq!(evaluate(&per_token_first, "hidden-first.onnx"), plain);
    // The pooled [batch, hidden] vector first: the output named logits it is.
    let tanh = g
        .node
        .iter()
        .find(|n| n.op_type() == "Tanh" && n.name().starts_with("pooler"))
        .unwrap();
    let pooled = onnx_compress::onnx::build::value_info(&tanh.output[0], DataType::Float, &[Err("batch"), Ok(32)]);
    let mut pooled_first = m.clone();
    pooled_first.graph.as_mut().unwrap().output.insert(0, pooled.clone());
    assert_eq!(evaluate(&pooled_first, "pooled-first.onnx"), plain);
    // BertModel's export: the hidden states, then the pooled vector, and no logits: headless.
    let mut headless = m.clone();
    headless.graph.as_mut().unwrap().output = vec![hidden, pooled];
    let path = dir.path().join("headless.onnx");
    onnx::save(&headless, &path, &SaveOptions::default()).unwrap();
    let e = eval::evaluate(&path, &eval_options(dir.path(), &tok, false), &|_, _| {}).unwrap_err();
    assert!(format!("{e:#}").contains("a headless encoder"), "{e:#}");
}
