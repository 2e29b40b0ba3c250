//! Helpers shared by the integration tests: the binary, ONNX Runtime's presence, running models,
//! comparing logits, small tokenizers. Each test binary uses some of them.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use onnx_compress::onnx::{edit, tensor, ModelProto};
use onnx_compress::runtime::{self, Batch, OrtCalibrator, SessionOptions};
use onnx_compress::structure::Linear;
use onnx_compress::testkit::synth::random_batches;
use prost::Message;
use serde_json::Value;

/// The project-local ONNX Runtime, as `make setup` installs it.
pub const ORT_LIB: &str = ".ort/lib/libonnxruntime.so.1.32.0";

pub fn bin() -> Command {
    Command::cargo_bin("onnx-compress").expect("the onnx-compress binary is built")
}

pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether this CPU has VNNI. ONNX Runtime's integer kernels multiply 8-bit activations by int8
/// weights; with VNNI (`vpdpbusd`) the products add up in 32 bits, but on an AVX2-only CPU
/// (`vpmaddubsw`) each pair of products is summed in 16 bits first and saturates (ONNX Runtime's
/// quantization docs: use `reduce_range` or U8U8 on such machines). The CPUs this project runs on
/// vary (README, Results), so integer bars hold with VNNI, and looser bars, measured and
/// written next to each, hold without. VNNI is AVX-512 VNNI or AVX-VNNI, as the tool itself
/// reads it ([`runtime::u8s8_saturates`]).
pub fn vnni() -> bool {
    !runtime::u8s8_saturates()
}

/// Whether the project-local ONNX Runtime is installed (for tests that only run the binary).
/// When it is not: panics under `CI=true`, otherwise prints a visible `SKIP:` line.
pub fn have_ort(what: &str) -> bool {
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

/// Whether the program `name` runs here (`name --version`). When it does not: panics under
/// `CI=true` (CI must have it), otherwise prints a visible `SKIP:` line.
pub fn have_tool(name: &str, what: &str) -> bool {
    if std::process::Command::new(name).arg("--version").output().is_ok() {
        return true;
    }
    if in_ci() {
        panic!("`{name}` is not installed: CI must have it ({what})");
    }
    let _ = writeln!(std::io::stderr(), "SKIP: `{name}` is not installed ({what})");
    false
}

/// Kills the process `pid` (SIGKILL) unless the returned flag is set within `secs` seconds: a
/// test waiting on a child's output or exit fails instead of hanging when the child hangs.
#[cfg(unix)]
pub fn watchdog(pid: u32, secs: u64) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed().as_secs() < secs {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // SAFETY: kill(2) has no memory effects; a process that has ended is an error ignored.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    });
    done
}

/// The output of `cmd`, killed after `secs` seconds (then the test fails saying so).
#[cfg(unix)]
pub fn output_within(cmd: &mut std::process::Command, secs: u64) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let done = watchdog(child.id(), secs);
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{cmd:?} ran past {secs} s: it hung"
    );
    out
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a run failed cleanly: exit status 1, nothing on stdout, stderr exactly one line
/// starting with `error: `, under 1000 bytes, that contains each of `needles`, and no panic.
/// `what` names the case in failures. Returns that line.
pub fn assert_clean_error(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(!stderr.contains("panicked"), "{what}: the binary panicked:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: expected exit status 1; stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    assert!(stdout.is_empty(), "{what}: a failed run printed to stdout:\n{stdout}");
    let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
    assert!(
        stderr.ends_with('\n') && !line.contains('\n') && !line.contains('\r'),
        "{what}: stderr is not exactly one line:\n{stderr:?}"
    );
    assert!(
        line.starts_with("error: "),
        "{what}: stderr does not start with `error: `:\n{stderr}"
    );
    assert!(line.len() < 1000, "{what}: the error line is {} bytes long", line.len());
    for n in needles {
        assert!(line.contains(n), "{what}: the error does not mention {n:?}:\n{stderr}");
    }
    line.to_string()
}

/// Logits of `m` on each of `batches`, concatenated, and the number of labels; panics (naming
/// `what`) when ONNX Runtime refuses the model or fails on a batch, when a logit is not finite,
/// or when batches give different numbers of labels.
pub fn logits_and_labels(m: &ModelProto, batches: &[Batch], what: &str) -> (Vec<f32>, usize) {
    let mut session = runtime::open_bytes(&m.encode_to_vec(), what, &SessionOptions::default())
        .unwrap_or_else(|e| panic!("{what}: ONNX Runtime refuses the model: {e:#}"));
    let mut all = vec![];
    let mut labels = None;
    for b in batches {
        let (l, n) = session
            .run(b)
            .unwrap_or_else(|e| panic!("{what}: ONNX Runtime fails: {e:#}"));
        assert!(l.iter().all(|v| v.is_finite()), "{what}: {l:?}");
        assert_eq!(
            *labels.get_or_insert(n),
            n,
            "{what}: batches give different label counts"
        );
        all.extend(l);
    }
    (all, labels.unwrap_or(0))
}

/// [`logits_and_labels`] without the label count.
pub fn logits(m: &ModelProto, batches: &[Batch], what: &str) -> Vec<f32> {
    logits_and_labels(m, batches, what).0
}

/// Logits of `m` on `b`, a batch of two examples; checks the output is [2, 2] and finite.
pub fn logits_2x2(m: &ModelProto, b: &Batch, what: &str) -> Vec<f32> {
    let (l, labels) = logits_and_labels(m, std::slice::from_ref(b), what);
    assert_eq!(labels, 2, "{what}");
    assert_eq!(l.len(), 4, "{what}");
    l
}

/// Largest |a[i] − b[i]|; the slices must have the same length.
/// The graph ONNX Runtime runs for `m`, after its own optimizations (which fusions fired).
pub fn optimized(m: &ModelProto) -> ModelProto {
    let dir = tempfile::tempdir().unwrap();
    let (path, opt) = (dir.path().join("in.onnx"), dir.path().join("optimized.onnx"));
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    runtime::open_optimized(&path, &SessionOptions::default(), &opt).unwrap();
    onnx_compress::onnx::load(&opt).unwrap()
}

/// A NaN on either side counts as an infinite difference (`f32::max` would skip it).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

/// ONNX Runtime's calibrator over `batches` random batches drawn with `seed`.
pub fn calibrator(batches: usize, seed: u64) -> OrtCalibrator {
    OrtCalibrator::new(random_batches(batches, seed), SessionOptions::default())
}

/// BERT's special tokens in the order [`word_level_tokenizer`] takes them: unknown, pad, CLS, SEP.
pub const BERT_SPECIALS: [&str; 4] = ["[UNK]", "[PAD]", "[CLS]", "[SEP]"];

/// A word-level tokenizer.json of `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` (ids 0–3) and the words
/// `w4` … `w{n-1}` (id i for `wi`): past a model's vocabulary from `w{rows}` on.
pub fn numbered_tokenizer(n: usize) -> String {
    let words: Vec<String> = (4..n).map(|i| format!("w{i}")).collect();
    let mut vocab = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    vocab.extend(words.iter().map(String::as_str));
    word_level_tokenizer(&vocab, BERT_SPECIALS, Value::Null)
}

/// A word-level tokenizer.json over `words` (ids in order), lowercasing and splitting on
/// whitespace, with `specials` (unknown, pad, CLS, SEP; all in `words`) as its special tokens
/// and `padding` as its padding section.
pub fn word_level_tokenizer(words: &[&str], specials: [&str; 4], padding: Value) -> String {
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), Value::from(i)))
        .collect();
    let id = |t: &str| {
        words
            .iter()
            .position(|w| *w == t)
            .expect("special tokens are in the vocabulary")
    };
    let mut added: Vec<(usize, &str)> = specials.iter().map(|t| (id(t), *t)).collect();
    added.sort();
    let added: Vec<Value> = added
        .iter()
        .map(|(id, t)| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
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

/// Rewrites the float initializer `name` of `m` through `f` (same name, same dims).
pub fn edit_f32(m: &mut ModelProto, name: &str, f: impl FnOnce(&mut Vec<f32>)) {
    let g = m.graph.as_mut().expect("graph");
    let t = g
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no initializer '{name}'"));
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let mut v = tensor::to_f32(t).expect("float32 initializer");
    f(&mut v);
    assert!(edit::replace_initializer(g, name, tensor::from_f32(name, &dims, &v)));
}

/// Zeroes output features `cols` of a linear layer (weight columns in the logical [in, out]
/// sense, whatever the storage layout) and the matching bias entries.
pub fn zero_out_features(m: &mut ModelProto, lin: &Linear, cols: &[usize]) {
    let (inf, outf) = (lin.in_features, lin.out_features);
    edit_f32(m, &lin.weight, |w| {
        assert_eq!(w.len(), inf * outf);
        for r in 0..inf {
            for &c in cols {
                let i = if lin.transposed { c * inf + r } else { r * outf + c };
                w[i] = 0.0;
            }
        }
    });
    if let Some(b) = &lin.bias {
        edit_f32(m, b, |v| {
            for &c in cols {
                v[c] = 0.0;
            }
        });
    }
}

/// Zeroes input features `rows` of a linear layer (weight rows in the logical [in, out] sense).
pub fn zero_in_features(m: &mut ModelProto, lin: &Linear, rows: &[usize]) {
    let (inf, outf) = (lin.in_features, lin.out_features);
    edit_f32(m, &lin.weight, |w| {
        assert_eq!(w.len(), inf * outf);
        for &r in rows {
            for c in 0..outf {
                let i = if lin.transposed { c * inf + r } else { r * outf + c };
                w[i] = 0.0;
            }
        }
    });
}
