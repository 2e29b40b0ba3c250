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
use std::path::{Path, PathBuf};
use std::process::Output;

use onnx_compress::onnx::build::node;
use onnx_compress::onnx::proto::tensor_proto::DataLocation;
use onnx_compress::onnx::proto::{tensor_shape_proto, type_proto, StringStringEntryProto};
use onnx_compress::onnx::{tensor, ModelProto, TensorProto};
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use prost::Message;
use serde_json::Value;

mod common;

use common::{assert_clean_error, bin, have_ort, s, text, word_level_tokenizer, BERT_SPECIALS};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

/// A word-level tokenizer whose ids stay below the tiny model's vocabulary of 100.
fn tokenizer_json() -> String {
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "the", "a", "is",
    ];
    word_level_tokenizer(&words, BERT_SPECIALS, Value::Null)
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
// Broken models: one table per kind, each case run through every command by one loop
// ---------------------------------------------------------------------------------------------

/// A broken model: how its bytes are made, files to put beside it, and what every command's
/// error must say besides the model's path. In needles, `{weight}` stands for the name of the
/// tiny model's first weight, `{input}` its first graph input, `{output}` its first graph
/// output, `{initializer}` its first initializer and `{node0_output}` its first node's output.
struct Broken {
    what: &'static str,
    bytes: fn() -> Vec<u8>,
    beside: fn(&Case),
    needles: &'static [&'static str],
}

/// Nothing beside the model but the tokenizer and data every case has.
fn nothing(_: &Case) {}

/// `needle` with the tiny model's names in place of `{weight}`, `{input}`, ...
fn fill(needle: &str) -> String {
    let mut m = tiny();
    let weight = weight(&mut m).name().to_string();
    let g = graph(&mut m);
    needle
        .replace("{weight}", &weight)
        .replace("{input}", g.input[0].name())
        .replace("{output}", g.output[0].name())
        .replace("{initializer}", g.initializer[0].name())
        .replace("{node0_output}", &g.node[0].output[0])
}

/// Runs every case of `table` (see [`Case::all_fail`]).
fn all_fail(table: &[Broken]) {
    for b in table {
        let case = Case::new(&(b.bytes)());
        (b.beside)(&case);
        let needles: Vec<String> = b.needles.iter().map(|n| fill(n)).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        case.all_fail(b.what, &needles);
    }
}

/// The tiny model after `edit`, encoded.
fn edited(edit: fn(&mut ModelProto)) -> Vec<u8> {
    let mut m = tiny();
    edit(&mut m);
    m.encode_to_vec()
}

/// The first weight with `delta` bytes cut from (negative) or added to (positive) its raw data.
fn raw_data_resized(delta: i64) -> Vec<u8> {
    let mut m = tiny();
    let w = weight(&mut m);
    let mut raw = w.raw_data.take().unwrap().to_vec();
    if delta < 0 {
        raw.truncate(raw.len() - (-delta) as usize);
    } else {
        raw.extend(std::iter::repeat_n(0u8, delta as usize));
    }
    w.raw_data = Some(raw.into());
    m.encode_to_vec()
}

/// The first weight stored externally in `w.bin`, at `offset`, for as many bytes as it needs.
fn external_in_w_bin(offset: u64) -> Vec<u8> {
    let mut m = tiny();
    let w = weight(&mut m);
    let bytes = tensor::numel(w).unwrap() as u64 * 4;
    external(w, "w.bin", offset, bytes);
    m.encode_to_vec()
}

/// `w.bin` as long as the first weight's data.
fn w_bin(case: &Case) {
    let n = tensor::numel(weight(&mut tiny())).unwrap();
    std::fs::write(case.path("w.bin"), vec![0u8; n * 4]).unwrap();
}

/// The tiny model's bytes with the first byte of `mark` (set by `edit`) at `at` replaced by `byte`.
fn with_byte(edit: fn(&mut ModelProto), mark: &[u8], at: usize, byte: u8) -> Vec<u8> {
    let mut bytes = edited(edit);
    let start = bytes.windows(mark.len()).position(|w| w == mark).unwrap();
    bytes[start + at] = byte;
    bytes
}

const LYING_TENSORS: &[Broken] = &[
    Broken {
        what: "raw_data -4",
        bytes: || raw_data_resized(-4),
        beside: nothing,
        needles: &["{weight}", "raw_data has", "needs"],
    },
    Broken {
        what: "raw_data +4",
        bytes: || raw_data_resized(4),
        beside: nothing,
        needles: &["{weight}", "raw_data has", "needs"],
    },
    Broken {
        what: "raw_data -1",
        bytes: || raw_data_resized(-1),
        beside: nothing,
        needles: &["{weight}", "raw_data has", "needs"],
    },
    Broken {
        what: "float_data short",
        bytes: || {
            edited(|m| {
                let w = weight(m);
                let mut values = tensor::to_f32(w).unwrap();
                values.pop();
                w.raw_data = None;
                w.float_data = values;
            })
        },
        beside: nothing,
        needles: &["{weight}", "float_data has", "needs"],
    },
    Broken {
        what: "no data",
        bytes: || edited(|m| weight(m).raw_data = None),
        beside: nothing,
        needles: &["{weight}", "holds no data"],
    },
    // Missing dims make a scalar, and its payload must say so.
    Broken {
        what: "no dims",
        bytes: || edited(|m| weight(m).dims.clear()),
        beside: nothing,
        needles: &["{weight}", "shape [] needs 4"],
    },
    Broken {
        what: "negative dim",
        bytes: || {
            edited(|m| {
                let w = weight(m);
                w.dims[0] = -w.dims[0];
            })
        },
        beside: nothing,
        needles: &["{weight}", "negative dimension"],
    },
    Broken {
        what: "negative input dim",
        bytes: || {
            edited(|m| {
                let input = &mut graph(m).input[0];
                let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else {
                    panic!("the tiny model's inputs are tensors")
                };
                t.shape.as_mut().unwrap().dim[1].value = Some(tensor_shape_proto::dimension::Value::DimValue(-5));
            })
        },
        beside: nothing,
        needles: &["{input}", "negative (-5)"],
    },
    // A 2^40-element tensor claimed with 16 bytes of data: refused from its dims alone.
    Broken {
        what: "2^40 inline",
        bytes: || {
            edited(|m| {
                let w = weight(m);
                w.dims = vec![1 << 20, 1 << 20];
                w.raw_data = Some(vec![0u8; 16].into());
            })
        },
        beside: nothing,
        needles: &["{weight}", "absurdly large"],
    },
    // The same with dims that overflow i64 when multiplied.
    Broken {
        what: "overflowing dims",
        bytes: || edited(|m| weight(m).dims = vec![i64::MAX, i64::MAX, 2]),
        beside: nothing,
        needles: &["absurdly large"],
    },
];

#[test]
fn models_that_lie_about_their_tensors() {
    all_fail(LYING_TENSORS);
}

const RULE_BREAKING_GRAPHS: &[Broken] = &[
    Broken {
        what: "two-node cycle",
        bytes: || {
            edited(|m| {
                let g = graph(m);
                g.node.push(node("Relu", "loop_a", &["loop_b_out"], &["loop_a_out"]));
                g.node.push(node("Relu", "loop_b", &["loop_a_out"], &["loop_b_out"]));
            })
        },
        beside: nothing,
        needles: &["cycle", "loop_"],
    },
    // A node that feeds itself, inside the transformer: the first LayerNormalization reads its
    // own output.
    Broken {
        what: "self loop",
        bytes: || {
            edited(|m| {
                let g = graph(m);
                let ln = g.node.iter_mut().find(|n| n.op_type() == "LayerNormalization").unwrap();
                ln.input[0] = ln.output[0].clone();
            })
        },
        beside: nothing,
        needles: &["cycle"],
    },
    Broken {
        what: "value produced twice",
        bytes: || {
            edited(|m| {
                let g = graph(m);
                let first_out = g.node[0].output[0].clone();
                g.node.push(node("Identity", "dup", &["input_ids"], &[&first_out]));
            })
        },
        beside: nothing,
        needles: &["{node0_output}", "produced twice", "'dup'"],
    },
    // A node output that shadows an initializer.
    Broken {
        what: "node output = initializer",
        bytes: || {
            edited(|m| {
                let g = graph(m);
                let init = g.initializer[0].name().to_string();
                g.node.push(node("Identity", "shadow", &["input_ids"], &[&init]));
            })
        },
        beside: nothing,
        needles: &["{initializer}", "also an initializer"],
    },
    Broken {
        what: "duplicate graph output",
        bytes: || {
            edited(|m| {
                let g = graph(m);
                let out = g.output[0].clone();
                g.output.push(out);
            })
        },
        beside: nothing,
        needles: &["{output}", "listed twice"],
    },
];

#[test]
fn graphs_that_break_the_rules() {
    all_fail(RULE_BREAKING_GRAPHS);
}

const EXTERNAL_DATA_ASTRAY: &[Broken] = &[
    Broken {
        what: "../../etc/passwd",
        bytes: || edited(|m| external(weight(m), "../../etc/passwd", 0, 16)),
        beside: nothing,
        needles: &["{weight}", "inside the model's folder"],
    },
    Broken {
        what: "/etc/passwd",
        bytes: || edited(|m| external(weight(m), "/etc/passwd", 0, 16)),
        beside: nothing,
        needles: &["{weight}", "inside the model's folder"],
    },
    Broken {
        what: "sub/../../x.bin",
        bytes: || edited(|m| external(weight(m), "sub/../../x.bin", 0, 16)),
        beside: nothing,
        needles: &["{weight}", "inside the model's folder"],
    },
    // A symlink inside the folder that leads out of it.
    Broken {
        what: "symlink out",
        bytes: || {
            edited(|m| {
                let w = weight(m);
                let n = tensor::numel(w).unwrap() as u64;
                external(w, "link.bin", 0, n * 4);
            })
        },
        // To a file outside the folder that is longer than the weight's data: this test's binary.
        beside: |case| std::os::unix::fs::symlink(std::env::current_exe().unwrap(), case.path("link.bin")).unwrap(),
        needles: &["resolves outside"],
    },
    Broken {
        what: "past the end",
        bytes: || external_in_w_bin(64),
        beside: w_bin,
        needles: &["{weight}", "past the end", "w.bin"],
    },
    // An offset near u64::MAX must not wrap around.
    Broken {
        what: "offset wraps",
        bytes: || external_in_w_bin(u64::MAX - 3),
        beside: w_bin,
        needles: &["past the end"],
    },
];

#[test]
fn external_data_that_points_where_it_must_not() {
    all_fail(EXTERNAL_DATA_ASTRAY);
}

/// prost refuses strings that are not UTF-8; the error says which field, not just "decode failed".
const NOT_UTF8: &[Broken] = &[
    Broken {
        what: "non-UTF-8 node name",
        bytes: || {
            with_byte(
                |m| graph(m).node[3].name = Some("NAME_MARK".into()),
                b"NAME_MARK",
                4,
                0xff,
            )
        },
        beside: nothing,
        needles: &["NodeProto.name", "not valid UTF-8"],
    },
    // A lead byte followed by ASCII: invalid.
    Broken {
        what: "non-UTF-8 producer",
        bytes: || with_byte(|m| m.producer_name = Some("PRODUCER".into()), b"PRODUCER", 0, 0xc3),
        beside: nothing,
        needles: &["ModelProto.producer_name", "not valid UTF-8"],
    },
];

#[test]
fn strings_that_are_not_utf8() {
    all_fail(NOT_UTF8);
}

// ---------------------------------------------------------------------------------------------
// Claimed sizes
// ---------------------------------------------------------------------------------------------

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

/// Models that load but that no pass can make right: the passes name the input, not what they
/// would have written (NaN in a weight, which dynamic int8's rounding used to hide; an operator
/// ONNX Runtime does not know, which `convert` reported as "convert wrote a model that ONNX
/// Runtime does not run"; a graph with no outputs).
#[test]
fn broken_inputs_are_named_as_the_input() {
    let nan = edited(|m| {
        let w = weight(m);
        let mut v = tensor::to_f32(w).unwrap();
        v[3] = f32::NAN;
        *w = tensor::from_f32(w.name(), &[w.dims[0] as usize, w.dims[1] as usize], &v);
    });
    let custom = edited(|m| {
        let out = graph(m).output[0].name().to_string();
        graph(m)
            .node
            .push(node("Mystery", "mystery", &[&out], &["mystery_out"]));
        graph(m).node.last_mut().unwrap().domain = Some("com.acme".into());
        graph(m).output[0].name = Some("mystery_out".into());
        m.opset_import.push(onnx_compress::onnx::proto::OperatorSetIdProto {
            domain: Some("com.acme".into()),
            version: Some(1),
        });
    });
    let no_outputs = edited(|m| graph(m).output.clear());
    let no_inputs = edited(|m| graph(m).input.clear());
    let undefined = edited(|m| {
        let w = weight(m).name().to_string();
        graph(m).initializer.retain(|t| t.name() != w);
    });
    let rewrite = "not a model this tool can rewrite";
    let mut cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("NaN weight", nan, vec!["{weight}", "holds NaN (1 of"]),
        ("no outputs", no_outputs, vec![rewrite, "the graph has no outputs"]),
        ("no inputs", no_inputs, vec![rewrite, "the graph has no inputs"]),
        (
            "undefined value",
            undefined,
            vec![rewrite, "reads '{weight}', which nothing defines"],
        ),
    ];
    if have_ort("an operator ONNX Runtime does not know") {
        cases.push((
            "custom op",
            custom,
            vec!["fails in ONNX Runtime", "Mystery", "fix or re-export the input"],
        ));
    }
    for (what, bytes, needles) in cases {
        let case = Case::new(&bytes);
        let model = case.path("bad.onnx");
        let out = case.path("out.onnx");
        let needles: Vec<String> = needles.iter().map(|n| fill(n)).collect();
        let mut all: Vec<&str> = vec![s(&model)];
        all.extend(needles.iter().map(String::as_str));
        for args in [
            vec!["convert", s(&model), s(&out)],
            vec!["quantize", "--mode", "dynamic", s(&model), s(&out)],
            vec!["lowrank", "--rank", "4", s(&model), s(&out)],
        ] {
            let before = snapshot(case.dir.path());
            let o = case.run(&args);
            assert_clean_error(&format!("{what}: {}", args[0]), &o, &all);
            assert_eq!(
                snapshot(case.dir.path()),
                before,
                "{what}: {} changed the folder",
                args[0]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------------

/// Documented behaviour for an opset from the future (ai.onnx 99; 29, the first past the 28 the
/// tool knows, is refused by the passes alike): `inspect` shows it;
/// `convert` refuses to write it, since ONNX Runtime cannot load it; `prune`, `lowrank` and
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

    // convert would copy it unchanged, but ONNX Runtime cannot load it: no command writes such a
    // model.
    let out = case.path("copy.onnx");
    let before = snapshot(case.dir.path());
    let o = case.run(&["convert", s(&model), s(&out)]);
    assert_clean_error(
        "convert opset 99",
        &o,
        &[
            "fails in ONNX Runtime",
            "the input fails the check every written model gets",
            "Opset 99",
            "nothing was written",
        ],
    );
    assert_eq!(snapshot(case.dir.path()), before, "convert opset 99 changed the folder");

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
    // The bound is the newest opset the tool knows: one past it is refused, it is not.
    let opset = |v: i64| {
        let mut m = tiny();
        for o in &mut m.opset_import {
            if o.domain().is_empty() {
                o.version = Some(v);
            }
        }
        m
    };
    let next = Case::new(&opset(29).encode_to_vec());
    let o = next.run(&[
        "prune",
        "--heads",
        "0.25",
        s(&next.path("bad.onnx")),
        s(&next.path("out.onnx")),
    ]);
    assert_clean_error("prune opset 29", &o, &["opset ai.onnx 29", "newer"]);
    let known = Case::new(&opset(28).encode_to_vec());
    let o = known.run(&[
        "prune",
        "--heads",
        "0.25",
        s(&known.path("bad.onnx")),
        s(&known.path("out.onnx")),
    ]);
    assert!(
        !text(&o.stderr).contains("newer"),
        "opset 28 is known: {}",
        text(&o.stderr)
    );

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
/// `contents` as an SST-2 dev file is refused by eval and, unless only its labels are bad
/// (`labels`: calibration reads no labels, so a calibrated pass takes the file), by a calibrated
/// pass: one line naming the file and `needles`, nothing written.
fn data_fails(contents: &[u8], needles: &[&str], labels: bool) {
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
        "--max-length",
        "32",
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
        if labels && args[0] == "prune" {
            assert!(o.status.success(), "calibration reads no labels: {}", text(&o.stderr));
            std::fs::remove_file(&out).unwrap();
            continue;
        }
        let mut all = vec![s(&data)];
        all.extend_from_slice(needles);
        assert_clean_error(&format!("{}: {needles:?}", args[0]), &o, &all);
        assert_eq!(snapshot(case.dir.path()), before, "{} changed the folder", args[0]);
    }
}

/// A bad data file: its contents and what the error must say besides the file's path.
struct BadData {
    contents: fn() -> Vec<u8>,
    needles: &'static [&'static str],
    /// Only a label is bad: calibration takes the file.
    labels: bool,
}

/// A 1 MB run of words.
fn big() -> String {
    "good ".repeat(200_000)
}

const BAD_DATA: &[BadData] = &[
    // Labels out of range (calibration reads no labels: only eval refuses these).
    BadData {
        contents: || b"sentence\tlabel\ngood film \t1\nbad film \t2\n".to_vec(),
        needles: &["line 3", "label"],
        labels: true,
    },
    BadData {
        contents: || b"sentence\tlabel\ngood film \t1\nbad film \t-1\n".to_vec(),
        needles: &["line 3", "label"],
        labels: true,
    },
    BadData {
        contents: || b"sentence\tlabel\ngood film \t1\nbad film \t1.5\n".to_vec(),
        needles: &["line 3", "label"],
        labels: true,
    },
    BadData {
        contents: || b"sentence\tlabel\ngood film \t1\nbad film \t\n".to_vec(),
        needles: &["line 3", "label"],
        labels: true,
    },
    // Data that is not UTF-8.
    BadData {
        contents: || b"sentence\tlabel\ngood film \t1\nbad \xff film \t0\n".to_vec(),
        needles: &["not valid UTF-8", "line 3"],
        labels: false,
    },
    // A 1 MB line without tabs, a 1 MB label and a 1 MB header give errors of bounded length.
    BadData {
        contents: || format!("sentence\tlabel\n{}\n", big()).into_bytes(),
        needles: &["line 2", "field"],
        labels: true,
    },
    BadData {
        contents: || format!("sentence\tlabel\ngood \t{}\n", big()).into_bytes(),
        needles: &["line 2", "label"],
        labels: true,
    },
    BadData {
        contents: || format!("{}x\ngood \t1\n", "\t".repeat(1 << 20)).into_bytes(),
        needles: &["header", "sentence"],
        labels: false,
    },
];

#[test]
fn bad_data_files_fail_cleanly() {
    for d in BAD_DATA {
        data_fails(&(d.contents)(), d.needles, d.labels);
    }
}

/// A 1 MB sentence is read and truncated to --max-length like any other.
#[test]
fn one_megabyte_sentences_are_read() {
    if have_ort("eval of a 1 MB sentence") {
        let contents = format!("sentence\tlabel\n{}\t1\nbad film \t0\n", big());
        let preds = eval_predictions(&data_case(contents.as_bytes()));
        assert_eq!(preds.len(), 2);
    }
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
