//! No command writes a model ONNX Runtime cannot load and run: before the atomic write, the
//! executor runs every model once on a synthetic batch of its own inputs, non-finite outputs
//! counting as failure. Broken models are made here the way a faulty pass would leave them (a
//! weight whose shape no longer fits, a weight of NaNs): fed through real passes as inputs, the
//! error names the input, not the pass (a pass that writes such a model: `tests/executor.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_error, bin, have_ort, s};
use onnx_compress::onnx::{self, ExternalData, ModelProto, SaveOptions};
use onnx_compress::runtime;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};

fn save(m: &ModelProto, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let opts = SaveOptions {
        external_data: ExternalData::Never,
        ..Default::default()
    };
    onnx::save(m, &p, &opts).unwrap();
    p
}

/// The tiny model with `classifier.weight` replaced: `rows × cols` values of `value`.
fn with_classifier(rows: usize, cols: usize, value: f32) -> ModelProto {
    let mut m = tiny_bert(&SynthOptions::default());
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name() == "classifier.weight")
        .expect("the tiny model has a classifier.weight");
    w.dims = vec![rows as i64, cols as i64];
    w.float_data.clear();
    w.raw_data = Some(
        std::iter::repeat_n(value, rows * cols)
            .flat_map(f32::to_le_bytes)
            .collect::<Vec<u8>>()
            .into(),
    );
    m
}

fn hidden() -> usize {
    let o = SynthOptions::default();
    o.heads * o.head_size
}

#[test]
fn the_check_passes_a_good_model_and_names_what_fails() {
    if !have_ort("run check") {
        return;
    }
    runtime::init(None).unwrap();
    let good = tiny_bert(&SynthOptions::default());
    assert!(
        runtime::check_runs(&good).unwrap(),
        "the tiny model's token inputs are run"
    );

    let wrong_shape = with_classifier(2, hidden() + 3, 0.1);
    let e = runtime::check_runs(&wrong_shape).unwrap_err().to_string();
    assert!(e.contains("ONNX Runtime cannot"), "{e}");

    let nan = with_classifier(2, hidden(), f32::NAN);
    let e = runtime::check_runs(&nan).unwrap_err().to_string();
    assert!(e.contains("output 'logits' holds NaN"), "{e}");

    // Float weights of 1 KiB and more reach ONNX Runtime apart from the graph (as graph inputs
    // fed from the model's memory, so that models past 2 GiB are checked too and ONNX Runtime
    // holds no copy): broken ones are still caught.
    let big = |edit: &dyn Fn(&mut onnx::TensorProto)| {
        let mut m = tiny_bert(&SynthOptions::default());
        let g = m.graph.as_mut().unwrap();
        let t = g
            .initializer
            .iter_mut()
            .filter(|t| t.dims.len() == 2 && t.data_type == Some(1))
            .max_by_key(|t| t.dims.iter().product::<i64>())
            .unwrap();
        let n = t.dims.iter().product::<i64>() as usize;
        assert!(n * 4 >= 1024, "the tiny model's largest weight is handed over apart");
        if t.raw_data.is_none() {
            t.raw_data = Some(
                t.float_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            );
            t.float_data.clear();
        }
        edit(t);
        m
    };
    let transposed = big(&|t| t.dims.swap(0, 1));
    let e = runtime::check_runs(&transposed).unwrap_err().to_string();
    assert!(e.contains("ONNX Runtime cannot"), "{e}");
    let nan = big(&|t| {
        let n = t.raw_data.as_ref().unwrap().len() / 4;
        t.raw_data = Some(
            std::iter::repeat_n(f32::NAN, n)
                .flat_map(f32::to_le_bytes)
                .collect::<Vec<u8>>()
                .into(),
        );
    });
    let e = runtime::check_runs(&nan).unwrap_err().to_string();
    assert!(e.contains("holds NaN"), "{e}");
    // Data that does not fill the shape stays in the graph, and ONNX Runtime refuses it.
    let short = big(&|t| {
        let raw = t.raw_data.as_ref().unwrap();
        t.raw_data = Some(raw.slice(..raw.len() - 4));
    });
    let e = runtime::check_runs(&short).unwrap_err().to_string();
    assert!(e.contains("ONNX Runtime cannot load it"), "{e}");
}

#[test]
fn passes_refuse_to_write_a_model_onnx_runtime_cannot_run() {
    if !have_ort("run check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "wrong shape",
            with_classifier(2, hidden() + 3, 0.1),
            "fails in ONNX Runtime (ONNX Runtime cannot",
        ),
        (
            "NaN weights",
            with_classifier(2, hidden(), f32::NAN),
            "initializer 'classifier.weight' holds NaN",
        ),
    ];
    for (what, model, needle) in cases {
        let input = save(&model, dir.path(), &format!("{}.onnx", what.replace(' ', "_")));
        let before = std::fs::read(&input).unwrap();
        for (pass, args) in [
            ("convert", vec!["convert"]),
            ("prune", vec!["prune", "--heads", "0.25"]),
            ("quantize", vec!["quantize", "--mode", "dynamic"]),
        ] {
            let out = dir.path().join("out.onnx");
            let o = bin().args(&args).args([s(&input), s(&out)]).output().unwrap();
            assert_clean_error(
                &format!("{pass} of a model with {what}"),
                &o,
                &[s(&input), needle, "nothing was written"],
            );
            assert!(!out.exists(), "{pass} of {what}: an output was written");
            assert_eq!(std::fs::read(&input).unwrap(), before, "{pass} changed its input");
        }
    }
    // The same passes on the intact model write their outputs.
    let input = save(&tiny_bert(&SynthOptions::default()), dir.path(), "good.onnx");
    let out = dir.path().join("good.pruned.onnx");
    let o = bin()
        .args(["prune", "--heads", "0.25", s(&input), s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    assert!(out.is_file());
}
