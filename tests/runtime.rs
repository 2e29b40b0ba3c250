//! Models built in code run in ONNX Runtime, and layouts that differ only in how shapes are
//! written compute the same logits.

use ndarray::Array2;
use onnx_compress::onnx::ModelProto;
use onnx_compress::runtime::{self, Batch, SessionOptions};
use onnx_compress::testkit::shared::require_ort;
use onnx_compress::testkit::synth::{sample_batch, tiny_bert, GeluStyle, ShapeStyle, SynthOptions};
use prost::Message;

mod common;

use common::logits_2x2;

fn logits(m: &ModelProto) -> Vec<f32> {
    logits_2x2(m, &sample_batch(), "synthetic model")
}

/// Same length, and every pair within `tol` (a NaN is never within it).
fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn every_shape_layout_computes_the_same_logits() {
    if !require_ort("synthetic models in ONNX Runtime") {
        return;
    }
    let base = logits(&tiny_bert(&SynthOptions::default()));
    for shapes in [
        ShapeStyle::ConcatExplicit,
        ShapeStyle::SharedInitializer,
        ShapeStyle::ConstantPerReshape,
        ShapeStyle::ShapeSlices,
    ] {
        let l = logits(&tiny_bert(&SynthOptions {
            shapes,
            ..Default::default()
        }));
        // Same weights, same arithmetic: only the way shapes are spelled differs.
        assert!(close(&base, &l, 1e-5), "{shapes:?}: {base:?} vs {l:?}");
    }
    let aliased = logits(&tiny_bert(&SynthOptions {
        identity_aliases: true,
        ..Default::default()
    }));
    assert!(close(&base, &aliased, 1e-5));
    // The guard after SDPA's softmax changes nothing where no row is fully masked.
    let guarded = logits(&tiny_bert(&SynthOptions {
        nan_guard: true,
        ..Default::default()
    }));
    assert!(close(&base, &guarded, 1e-5), "{base:?} vs {guarded:?}");
    // The Gelu op (opset 20) is the exact erf form.
    let gelu_op = logits(&tiny_bert(&SynthOptions {
        gelu: GeluStyle::Op,
        ..Default::default()
    }));
    assert!(close(&base, &gelu_op, 1e-4), "{base:?} vs {gelu_op:?}");
    // The tanh approximation is close to erf, not equal.
    let tanh = logits(&tiny_bert(&SynthOptions {
        gelu: GeluStyle::Tanh,
        ..Default::default()
    }));
    assert!(close(&base, &tanh, 1e-2), "{base:?} vs {tanh:?}");
}

#[test]
fn fused_attention_model_runs() {
    if !require_ort("fused Attention in ONNX Runtime") {
        return;
    }
    logits(&tiny_bert(&SynthOptions {
        fused_attention: true,
        ..Default::default()
    }));
}

#[test]
fn padding_does_not_change_a_sequence_logits() {
    if !require_ort("padding invariance") {
        return;
    }
    let m = tiny_bert(&SynthOptions::default());
    let full = logits(&m);
    // The second sequence alone, unpadded.
    let mut model = runtime::open_bytes(&m.encode_to_vec(), "synthetic", &SessionOptions::default()).unwrap();
    let alone = Batch {
        input_ids: Array2::from_shape_vec((1, 4), vec![2, 40, 41, 3]).unwrap(),
        attention_mask: Array2::from_shape_vec((1, 4), vec![1, 1, 1, 1]).unwrap(),
        token_type_ids: Array2::from_shape_vec((1, 4), vec![0, 0, 0, 0]).unwrap(),
    };
    let (l, _) = model.run(&alone).unwrap();
    assert!(close(&full[2..4], &l, 1e-4), "{:?} vs {l:?}", &full[2..4]);
}

/// Calibration copies take their float weights as graph inputs, fed from the model's memory at
/// each run: the same logits as the model opened from its bytes, whether a weight's bytes are
/// aligned as floats (used in place) or not (copied), and when the graph also lists the weight
/// among its inputs (IR 3 models do).
#[test]
fn calibration_copies_fed_their_weights_compute_what_the_model_does() {
    if !require_ort("weights fed to calibration runs") {
        return;
    }
    let m = tiny_bert(&SynthOptions::default());
    let batch = sample_batch();
    let run = |m: &mut runtime::Model| m.run(&batch).unwrap().0;
    let opts = SessionOptions::default();
    let base = run(&mut runtime::open_bytes(&m.encode_to_vec(), "bytes", &opts).unwrap());
    let fed = |m: &ModelProto| run(&mut runtime::open_fed(m, "fed", &opts).unwrap());
    assert!(close(&base, &fed(&m), 1e-5), "aligned, in place");

    let mut shifted = m.clone();
    let mut moved = 0;
    for t in &mut shifted.graph.as_mut().unwrap().initializer {
        if let Some(raw) = t.raw_data.as_ref().filter(|r| r.len() >= 1024) {
            let mut v = vec![0u8];
            v.extend_from_slice(raw);
            t.raw_data = Some(bytes::Bytes::from(v).slice(1..));
            moved += 1;
        }
    }
    assert!(moved > 4, "the tiny model has weights of 1 KiB and more");
    assert!(close(&base, &fed(&shifted), 1e-5), "misaligned, copied");

    let mut listed = m.clone();
    let g = listed.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter()
        .find(|t| t.raw_data.as_ref().is_some_and(|r| r.len() >= 1024))
        .unwrap()
        .clone();
    g.input.push(onnx_compress::onnx::proto::ValueInfoProto {
        name: t.name.clone(),
        r#type: Some(onnx_compress::onnx::proto::TypeProto {
            value: Some(onnx_compress::onnx::proto::type_proto::Value::TensorType(
                onnx_compress::onnx::proto::type_proto::Tensor {
                    elem_type: Some(t.data_type()),
                    shape: None,
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(close(&base, &fed(&listed), 1e-5), "a weight also listed as an input");
}
