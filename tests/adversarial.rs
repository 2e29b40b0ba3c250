//! The adversarial corpus: hostile or broken inputs, each built in code, each run through the
//! real binary (`inspect`, `convert`, `prune`, and `eval` where ONNX Runtime is installed). Every
//! one must give one clear `error:` line naming the file and what is wrong, exit status 1, no
//! panic, no output file, the input untouched; inputs that claim huge sizes must fail before
//! allocating (checked by running the binary under an address-space limit).
//!
//! Data files (GLUE TSV) with CRLF line ends, a BOM and empty lines are valid and must give the
//! same predictions as the clean file; labels out of range and 1 MB lines must fail cleanly or be
//! read correctly, with error messages of bounded length.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use onnx_compress::onnx::build::node;
use onnx_compress::onnx::proto::tensor_proto::DataLocation;
use onnx_compress::onnx::proto::{tensor_shape_proto, type_proto, StringStringEntryProto};
use onnx_compress::onnx::{tensor, ModelProto, TensorProto};
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use prost::Message;
use serde_json::Value;

const ORT_LIB: &str = ".ort/lib/libonnxruntime.so.1.32.0";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn bin() -> Command {
    Command::cargo_bin("onnx-compress").expect("the onnx-compress binary is built")
}

/// Whether ONNX Runtime is installed (needed by `eval` only). Under `CI=true` it must be.
fn have_ort(what: &str) -> bool {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(ORT_LIB);
    if lib.is_file() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing: CI must install ONNX Runtime ({what})", lib.display());
    }
    let _ = writeln!(std::io::stderr(), "SKIP: {} not found ({what})", lib.display());
    false
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every file under `dir` with its bytes (recursively; symlinks as their target path).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes(),
                );
            } else if ft.is_dir() {
                out.insert(rel, Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A failed run: status 1, nothing on stdout, exactly one stderr line `error: …` of bounded
/// length containing every needle, and no panic.
fn assert_clean_error(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: the binary panicked:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: expected exit status 1; stderr:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: a failed run printed:\n{}",
        text(&out.stdout)
    );
    let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
    assert!(
        stderr.ends_with('\n') && !line.contains('\n') && line.starts_with("error: "),
        "{what}: stderr is not one `error:` line:\n{stderr:?}"
    );
    assert!(line.len() < 1000, "{what}: the error line is {} bytes long", line.len());
    for n in needles {
        assert!(line.contains(n), "{what}: the error does not mention {n:?}:\n{line}");
    }
    line.to_string()
}

/// A word-level tokenizer whose ids stay below the tiny model's vocabulary of 100.
fn tokenizer_json() -> String {
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "the", "a", "is",
    ];
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), Value::from(i)))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

const SST2_ROWS: &str = "sentence\tlabel\ngood film \t1\nbad film \t0\nthe film is good \t1\na bad film is bad \t0\n";

/// A folder for one case: the model bytes at `bad.onnx`, a tokenizer, and an SST-2 dev file.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(model: &[u8]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.onnx"), model).unwrap();
        std::fs::write(dir.path().join("words.json"), tokenizer_json()).unwrap();
        std::fs::create_dir_all(dir.path().join("glue/sst2")).unwrap();
        std::fs::write(dir.path().join("glue/sst2/dev.tsv"), SST2_ROWS).unwrap();
        Case { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        bin().current_dir(self.dir.path()).args(args).output().unwrap()
    }

    /// Runs every command on `bad.onnx`; each must fail cleanly, mention the model and each
    /// needle, and leave the folder exactly as it was.
    fn all_fail(&self, what: &str, needles: &[&str]) {
        let model = self.path("bad.onnx");
        let out = self.path("out.onnx");
        let data = self.path("glue");
        let mut commands: Vec<Vec<&str>> = vec![
            vec!["inspect", s(&model)],
            vec!["convert", s(&model), s(&out)],
            vec!["prune", "--heads", "0.25", s(&model), s(&out)],
        ];
        if have_ort("eval of adversarial models") {
            commands.push(vec![
                "eval",
                "--task",
                "sst2",
                "--model",
                s(&model),
                "--data",
                s(&data),
                "--tokenizer",
                "words.json",
            ]);
        }
        for args in commands {
            let before = snapshot(self.dir.path());
            let o = self.run(&args);
            let mut all = vec![s(&model)];
            all.extend_from_slice(needles);
            assert_clean_error(&format!("{what}: {}", args[0]), &o, &all);
            assert_eq!(
                snapshot(self.dir.path()),
                before,
                "{what}: {} changed the folder",
                args[0]
            );
        }
    }
}

fn tiny() -> ModelProto {
    tiny_bert(&SynthOptions::default())
}

fn graph(m: &mut ModelProto) -> &mut onnx_compress::onnx::GraphProto {
    m.graph.as_mut().unwrap()
}

/// The first rank-2 float initializer (a weight) of the tiny model.
fn weight(m: &mut ModelProto) -> &mut TensorProto {
    graph(m)
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 2 && t.data_type() == 1)
        .unwrap()
}

fn external(t: &mut TensorProto, location: &str, offset: u64, length: u64) {
    let e = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.raw_data = None;
    t.float_data.clear();
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![
        e("location", location.into()),
        e("offset", offset.to_string()),
        e("length", length.to_string()),
    ];
}

// ---------------------------------------------------------------------------------------------
// Models that lie about their tensors
// ---------------------------------------------------------------------------------------------

#[test]
fn raw_data_shorter_or_longer_than_its_shape() {
    for delta in [-4i64, 4, -1] {
        let mut m = tiny();
        let w = weight(&mut m);
        let name = w.name().to_string();
        let mut raw = w.raw_data.take().unwrap().to_vec();
        if delta < 0 {
            raw.truncate(raw.len() - (-delta) as usize);
        } else {
            raw.extend(std::iter::repeat_n(0u8, delta as usize));
        }
        w.raw_data = Some(raw.into());
        Case::new(&m.encode_to_vec()).all_fail(&format!("raw_data {delta:+}"), &[&name, "raw_data has", "needs"]);
    }
}

#[test]
fn float_data_count_differs_from_its_shape() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    let mut values = tensor::to_f32(w).unwrap();
    values.pop();
    w.raw_data = None;
    w.float_data = values;
    Case::new(&m.encode_to_vec()).all_fail("float_data short", &[&name, "float_data has", "needs"]);
}

#[test]
fn a_tensor_with_a_shape_but_no_data() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    w.raw_data = None;
    Case::new(&m.encode_to_vec()).all_fail("no data", &[&name, "holds no data"]);
}

#[test]
fn a_tensor_with_missing_dims_is_a_scalar_and_its_payload_must_say_so() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    w.dims.clear();
    Case::new(&m.encode_to_vec()).all_fail("no dims", &[&name, "shape [] needs 4"]);
}

#[test]
fn negative_dims_in_a_tensor() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    w.dims[0] = -w.dims[0];
    Case::new(&m.encode_to_vec()).all_fail("negative dim", &[&name, "negative dimension"]);
}

#[test]
fn negative_dims_in_a_declared_input_shape() {
    let mut m = tiny();
    let input = &mut graph(&mut m).input[0];
    let name = input.name().to_string();
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("the tiny model's inputs are tensors")
    };
    t.shape.as_mut().unwrap().dim[1].value = Some(tensor_shape_proto::dimension::Value::DimValue(-5));
    Case::new(&m.encode_to_vec()).all_fail("negative input dim", &[&name, "negative (-5)"]);
}

/// A 2^40-element tensor claimed with 16 bytes of data: refused from its dims alone.
#[test]
fn a_tensor_claiming_two_to_the_forty_elements() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    w.dims = vec![1 << 20, 1 << 20];
    w.raw_data = Some(vec![0u8; 16].into());
    let bytes = m.encode_to_vec();
    Case::new(&bytes).all_fail("2^40 inline", &[&name, "absurdly large"]);
    // The same with dims that overflow i64 when multiplied.
    let mut m = tiny();
    weight(&mut m).dims = vec![i64::MAX, i64::MAX, 2];
    Case::new(&m.encode_to_vec()).all_fail("overflowing dims", &["absurdly large"]);
}

/// Runs `onnx-compress inspect <model>` in `dir` with the address space limited to 1 GiB.
fn inspect_with_memory_limit(dir: &Path, model: &Path) -> Output {
    let exe = assert_cmd::cargo::cargo_bin("onnx-compress");
    std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" inspect \"$1\"")
        .arg(&exe)
        .arg(model)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Lengths taken from the file never size an allocation before they are checked: a 2^32-element
/// external tensor (16 GiB, under the per-tensor bound) over a 1 KiB file, a 2^40-byte length
/// claim, and a protobuf field whose length prefix claims 2^40 bytes all fail cleanly with the
/// address space limited to 1 GiB (an allocation first would abort instead).
#[test]
fn huge_claimed_lengths_fail_before_allocating() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    w.dims = vec![1 << 16, 1 << 16];
    external(w, "w.bin", 0, 1 << 34);
    let case = Case::new(&m.encode_to_vec());
    std::fs::write(case.path("w.bin"), vec![0u8; 1024]).unwrap();
    let o = inspect_with_memory_limit(case.dir.path(), &case.path("bad.onnx"));
    assert_clean_error("16 GiB external tensor", &o, &[&name, "past the end", "w.bin"]);
    case.all_fail("16 GiB external tensor", &[&name, "past the end"]);

    let mut m = tiny();
    let w = weight(&mut m);
    let dims = w.dims.clone();
    external(w, "w.bin", 0, 1 << 40);
    let case = Case::new(&m.encode_to_vec());
    std::fs::write(case.path("w.bin"), vec![0u8; 1024]).unwrap();
    let o = inspect_with_memory_limit(case.dir.path(), &case.path("bad.onnx"));
    assert_clean_error(
        "2^40-byte length",
        &o,
        &[&format!("{dims:?} needs"), "length 1099511627776"],
    );

    // ModelProto { ir_version: 8, graph (field 7, length-delimited): length prefix 2^40 }.
    let mut bytes = vec![0x08, 0x08, 0x3a];
    let mut len: u64 = 1 << 40;
    while len >= 0x80 {
        bytes.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    bytes.push(len as u8);
    bytes.extend_from_slice(&[0u8; 64]);
    let case = Case::new(&bytes);
    let o = inspect_with_memory_limit(case.dir.path(), &case.path("bad.onnx"));
    assert_clean_error("2^40-byte protobuf field", &o, &["not a valid ONNX model", "truncated"]);
    case.all_fail("2^40-byte protobuf field", &["not a valid ONNX model"]);
}

// ---------------------------------------------------------------------------------------------
// Graphs that break the rules
// ---------------------------------------------------------------------------------------------

#[test]
fn a_cycle_in_the_graph() {
    let mut m = tiny();
    let g = graph(&mut m);
    g.node.push(node("Relu", "loop_a", &["loop_b_out"], &["loop_a_out"]));
    g.node.push(node("Relu", "loop_b", &["loop_a_out"], &["loop_b_out"]));
    Case::new(&m.encode_to_vec()).all_fail("two-node cycle", &["cycle", "loop_"]);

    // A node that feeds itself, inside the transformer: the first LayerNormalization reads its
    // own output.
    let mut m = tiny();
    let g = graph(&mut m);
    let ln = g.node.iter_mut().find(|n| n.op_type() == "LayerNormalization").unwrap();
    ln.input[0] = ln.output[0].clone();
    Case::new(&m.encode_to_vec()).all_fail("self loop", &["cycle"]);
}

#[test]
fn a_value_produced_twice() {
    let mut m = tiny();
    let g = graph(&mut m);
    let first_out = g.node[0].output[0].clone();
    g.node.push(node("Identity", "dup", &["input_ids"], &[&first_out]));
    Case::new(&m.encode_to_vec()).all_fail("value produced twice", &[&first_out, "produced twice", "'dup'"]);

    // A node output that shadows an initializer.
    let mut m = tiny();
    let g = graph(&mut m);
    let init = g.initializer[0].name().to_string();
    g.node.push(node("Identity", "shadow", &["input_ids"], &[&init]));
    Case::new(&m.encode_to_vec()).all_fail("node output = initializer", &[&init, "also an initializer"]);
}

#[test]
fn a_graph_output_listed_twice() {
    let mut m = tiny();
    let g = graph(&mut m);
    let out = g.output[0].clone();
    let name = out.name().to_string();
    g.output.push(out);
    Case::new(&m.encode_to_vec()).all_fail("duplicate graph output", &[&name, "listed twice"]);
}

// ---------------------------------------------------------------------------------------------
// External data that points where it must not
// ---------------------------------------------------------------------------------------------

#[test]
fn external_data_outside_the_models_folder() {
    for location in ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin"] {
        let mut m = tiny();
        let w = weight(&mut m);
        let name = w.name().to_string();
        external(w, location, 0, 16);
        Case::new(&m.encode_to_vec()).all_fail(location, &[&name, "inside the model's folder"]);
    }
    // A symlink inside the folder that leads out of it.
    let mut m = tiny();
    let w = weight(&mut m);
    let n = tensor::numel(w).unwrap() as u64;
    external(w, "link.bin", 0, n * 4);
    let case = Case::new(&m.encode_to_vec());
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.bin"), vec![0u8; (n * 4) as usize]).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.bin"), case.path("link.bin")).unwrap();
    case.all_fail("symlink out", &["resolves outside"]);
}

#[test]
fn external_data_past_the_end_of_its_file() {
    let mut m = tiny();
    let w = weight(&mut m);
    let name = w.name().to_string();
    let bytes = tensor::numel(w).unwrap() as u64 * 4;
    external(w, "w.bin", 64, bytes);
    let case = Case::new(&m.encode_to_vec());
    std::fs::write(case.path("w.bin"), vec![0u8; bytes as usize]).unwrap();
    case.all_fail("past the end", &[&name, "past the end", "w.bin"]);
    // An offset near u64::MAX must not wrap around.
    let mut m = tiny();
    external(weight(&mut m), "w.bin", u64::MAX - 3, bytes);
    let case = Case::new(&m.encode_to_vec());
    std::fs::write(case.path("w.bin"), vec![0u8; bytes as usize]).unwrap();
    case.all_fail("offset wraps", &["past the end"]);
}

// ---------------------------------------------------------------------------------------------
// Strings and versions
// ---------------------------------------------------------------------------------------------

/// prost refuses strings that are not UTF-8; the error says which field, not just "decode failed".
#[test]
fn a_node_name_that_is_not_utf8() {
    let mut m = tiny();
    graph(&mut m).node[3].name = Some("NAME_MARK".into());
    let mut bytes = m.encode_to_vec();
    let at = bytes.windows(9).position(|w| w == b"NAME_MARK").unwrap();
    bytes[at + 4] = 0xff;
    Case::new(&bytes).all_fail("non-UTF-8 node name", &["NodeProto.name", "not valid UTF-8"]);

    let mut m = tiny();
    m.producer_name = Some("PRODUCER".into());
    let mut bytes = m.encode_to_vec();
    let at = bytes.windows(8).position(|w| w == b"PRODUCER").unwrap();
    bytes[at] = 0xc3; // a lead byte followed by ASCII: invalid
    Case::new(&bytes).all_fail("non-UTF-8 producer", &["ModelProto.producer_name", "not valid UTF-8"]);
}

/// Documented behaviour for an opset from the future (ai.onnx 99): `inspect` shows it and
/// `convert` copies the model unchanged (neither interprets operators); `prune`, `lowrank` and
/// `quantize` refuse to rewrite operators they may not understand; `eval` passes ONNX Runtime's refusal on as one line.
#[test]
fn an_opset_from_the_future() {
    let mut m = tiny();
    for o in &mut m.opset_import {
        if o.domain().is_empty() {
            o.version = Some(99);
        }
    }
    let case = Case::new(&m.encode_to_vec());
    let model = case.path("bad.onnx");
    let o = case.run(&["inspect", s(&model)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("ai.onnx 99"), "{}", text(&o.stdout));

    let out = case.path("copy.onnx");
    let o = case.run(&["convert", s(&model), s(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let copy = onnx_compress::onnx::load(&out).unwrap();
    assert_eq!(copy.graph, m.graph, "convert changed the graph");
    std::fs::remove_file(&out).unwrap();

    let before = snapshot(case.dir.path());
    let o = case.run(&["prune", "--heads", "0.25", s(&model), s(&out)]);
    assert_clean_error("prune opset 99", &o, &[s(&model), "opset ai.onnx 99", "newer"]);
    assert_eq!(snapshot(case.dir.path()), before);
    for (what, args) in [
        ("lowrank opset 99", vec!["lowrank", "--rank", "2"]),
        ("quantize opset 99", vec!["quantize", "--mode", "dynamic"]),
    ] {
        let mut args = args;
        args.extend([s(&model), s(&out)]);
        let o = case.run(&args);
        assert_clean_error(what, &o, &[s(&model), "opset ai.onnx 99", "newer"]);
        assert_eq!(snapshot(case.dir.path()), before);
    }

    if have_ort("eval of an opset-99 model") {
        let o = case.run(&[
            "eval",
            "--task",
            "sst2",
            "--model",
            s(&model),
            "--data",
            s(&case.path("glue")),
            "--tokenizer",
            "words.json",
        ]);
        assert_clean_error("eval opset 99", &o, &[]);
        assert_eq!(snapshot(case.dir.path()), before);
    }
}

// ---------------------------------------------------------------------------------------------
// Data files
// ---------------------------------------------------------------------------------------------

/// A folder with the tiny model (valid), the tokenizer, and `glue/sst2/dev.tsv` = `contents`.
fn data_case(contents: &[u8]) -> Case {
    let case = Case::new(&tiny().encode_to_vec());
    std::fs::rename(case.path("bad.onnx"), case.path("tiny.onnx")).unwrap();
    std::fs::write(case.path("glue/sst2/dev.tsv"), contents).unwrap();
    case
}

fn eval_args(case: &Case) -> Vec<String> {
    [
        "eval",
        "--task",
        "sst2",
        "--model",
        s(&case.path("tiny.onnx")),
        "--data",
        s(&case.path("glue")),
        "--tokenizer",
        "words.json",
        "--max-length",
        "32",
        "--json",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn eval_predictions(case: &Case) -> Vec<Value> {
    let args = eval_args(case);
    let o = case.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "eval failed: {}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["predictions"].as_array().unwrap().clone()
}

/// CRLF line ends, a BOM, empty lines and trailing blank lines are GLUE files as found in the
/// wild: they read as the clean file does, with the same predictions.
#[test]
fn crlf_bom_and_empty_lines_read_like_the_clean_file() {
    if !have_ort("eval on messy data files") {
        return;
    }
    let clean = eval_predictions(&data_case(SST2_ROWS.as_bytes()));
    assert_eq!(clean.len(), 4);
    let crlf = SST2_ROWS.replace('\n', "\r\n");
    let messy = format!("\u{feff}{}\r\n\r\n", crlf.replacen("\r\n", "\r\n\r\n\n", 2));
    for contents in [crlf, messy] {
        assert_eq!(eval_predictions(&data_case(contents.as_bytes())), clean, "{contents:?}");
    }
}

/// Bad data through `eval` and `prune --calib-data`: one line naming the file and line, no
/// output, nothing changed.
fn data_fails(contents: &[u8], needles: &[&str]) {
    let case = data_case(contents);
    let data = case.path("glue/sst2/dev.tsv");
    let out = case.path("out.onnx");
    let mut runs: Vec<Vec<String>> = vec![[
        "prune",
        "--heads",
        "0.25",
        "--calib-data",
        s(&data),
        "--task",
        "sst2",
        "--tokenizer",
        "words.json",
        s(&case.path("tiny.onnx")),
        s(&out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()];
    if have_ort("eval on bad data files") {
        runs.push(eval_args(&case));
    }
    for args in runs {
        let before = snapshot(case.dir.path());
        let o = case.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut all = vec![s(&data)];
        all.extend_from_slice(needles);
        assert_clean_error(&format!("{}: {needles:?}", args[0]), &o, &all);
        assert_eq!(snapshot(case.dir.path()), before, "{} changed the folder", args[0]);
    }
}

#[test]
fn labels_out_of_range() {
    for (label, line) in [("2", "line 3"), ("-1", "line 3"), ("1.5", "line 3"), ("", "line 3")] {
        let contents = format!("sentence\tlabel\ngood film \t1\nbad film \t{label}\n");
        data_fails(contents.as_bytes(), &[line, "label"]);
    }
}

#[test]
fn data_that_is_not_utf8() {
    data_fails(
        b"sentence\tlabel\ngood film \t1\nbad \xff film \t0\n",
        &["not valid UTF-8", "line 3"],
    );
}

/// A 1 MB sentence is read and truncated to --max-length like any other; a 1 MB line without
/// tabs, a 1 MB label and a 1 MB header give errors of bounded length.
#[test]
fn one_megabyte_lines() {
    let big = "good ".repeat(200_000);
    if have_ort("eval of a 1 MB sentence") {
        let contents = format!("sentence\tlabel\n{big}\t1\nbad film \t0\n");
        let preds = eval_predictions(&data_case(contents.as_bytes()));
        assert_eq!(preds.len(), 2);
    }
    data_fails(format!("sentence\tlabel\n{big}\n").as_bytes(), &["line 2", "field"]);
    data_fails(
        format!("sentence\tlabel\ngood \t{big}\n").as_bytes(),
        &["line 2", "label"],
    );
    let header = "\t".repeat(1 << 20);
    data_fails(format!("{header}x\ngood \t1\n").as_bytes(), &["header", "sentence"]);
}

// ---------------------------------------------------------------------------------------------
// The checks on load accept what they must
// ---------------------------------------------------------------------------------------------

/// Every layout the synthetic builder makes, and the shared exported models, pass the checks
/// made on load (so that they refuse only what is broken).
#[test]
fn valid_models_pass_the_load_checks() {
    use onnx_compress::onnx::load_from_bytes;
    use onnx_compress::testkit::synth::{GeluStyle, ShapeStyle};
    for shapes in [
        ShapeStyle::ConcatInferred,
        ShapeStyle::ConcatExplicit,
        ShapeStyle::SharedInitializer,
        ShapeStyle::ConstantPerReshape,
    ] {
        for gelu in [GeluStyle::Erf, GeluStyle::Op, GeluStyle::Tanh] {
            for (fused, aliases) in [(false, false), (false, true), (true, false)] {
                let m = tiny_bert(&SynthOptions {
                    shapes,
                    gelu,
                    fused_attention: fused,
                    identity_aliases: aliases,
                    ..Default::default()
                });
                let back = load_from_bytes(&m.encode_to_vec(), Path::new("synth.onnx"), None)
                    .unwrap_or_else(|e| panic!("{shapes:?} {gelu:?} fused {fused} aliases {aliases}: {e}"));
                assert_eq!(back, m);
            }
        }
    }
    for name in ["minilm-l6-sst2", "minilm-l6-mrpc"] {
        if let Some(p) = onnx_compress::testkit::shared::require(&format!("models/{name}/model.onnx"), "load checks") {
            onnx_compress::onnx::load(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
