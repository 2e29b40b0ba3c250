//! No command writes a model ONNX Runtime cannot load and run: before the atomic write, the
//! executor runs every model once on a synthetic batch of its own inputs, non-finite outputs
//! counting as failure. Broken models are made here the way a faulty pass would leave them (a
//! weight whose shape no longer fits, a weight of NaNs) and fed through real passes.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_error, bin, have_ort, s};
use onnx_compress::onnx::{self, ExternalData, ModelProto, SaveOptions};
use onnx_compress::runtime;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use prost::Message;

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
        runtime::check_runs(&good.encode_to_vec()).unwrap(),
        "the tiny model's token inputs are run"
    );

    let wrong_shape = with_classifier(2, hidden() + 3, 0.1);
    let e = runtime::check_runs(&wrong_shape.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ONNX Runtime cannot"), "{e}");

    let nan = with_classifier(2, hidden(), f32::NAN);
    let e = runtime::check_runs(&nan.encode_to_vec()).unwrap_err().to_string();
    assert!(e.contains("output 'logits' holds NaN"), "{e}");
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
            "ONNX Runtime cannot",
        ),
        ("NaN weights", with_classifier(2, hidden(), f32::NAN), "holds NaN"),
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
                &[
                    &format!("{pass} wrote a model that ONNX Runtime does not run"),
                    needle,
                    "nothing was written",
                ],
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
