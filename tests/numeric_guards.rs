//! Numerical guards of calibrated pruning: calibration data that makes the least-squares problem
//! singular (all-zero or constant activations) still gives finite weights, and data the model
//! turns into NaN or infinities is refused with an error that names the layer and the value,
//! never written into a model. A calibrator that poisons one captured value stands in for a
//! model that misbehaves on its calibration data.

use ndarray::Array2;
use onnx_compress::onnx::{tensor, GraphIndex, ModelProto};
use onnx_compress::passes::prune::{self, PruneOptions, Strategy};
use onnx_compress::passes::{Calibrator, PassError, Sink};
use onnx_compress::runtime::{Batch, OrtCalibrator, SessionOptions};
use onnx_compress::structure::discover;
use onnx_compress::testkit::shared::require_ort;
use onnx_compress::testkit::synth::{tiny_bert, ShapeStyle, SynthOptions};

fn model() -> ModelProto {
    tiny_bert(&SynthOptions {
        layers: 2,
        heads: 4,
        head_size: 8,
        ffn: 32,
        shapes: ShapeStyle::ConcatExplicit,
        seed: 3,
        ..Default::default()
    })
}

/// 6 batches of 4 sequences of 6..=11 random ids.
fn batches() -> Vec<Batch> {
    let mut s = 17u64;
    let mut next = move |m: u64| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) % m
    };
    (0..6)
        .map(|_| {
            let lens: Vec<usize> = (0..4).map(|_| 6 + next(6) as usize).collect();
            let max = *lens.iter().max().unwrap();
            let mut ids = Array2::zeros((4, max));
            let mut mask = Array2::zeros((4, max));
            let types = Array2::zeros((4, max));
            for (b, &len) in lens.iter().enumerate() {
                for t in 0..len {
                    ids[[b, t]] = 1 + next(99) as i64;
                    mask[[b, t]] = 1;
                }
            }
            Batch {
                input_ids: ids,
                attention_mask: mask,
                token_type_ids: types,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Poison {
    Zero,
    Constant,
    Nan,
    Inf,
}

/// ONNX Runtime's calibrator, with every capture of `value` replaced as `poison` says, and
/// optionally NaN logits.
struct Poisoned {
    inner: OrtCalibrator,
    value: String,
    poison: Poison,
    nan_logits: bool,
    /// Captures of `value` replaced so far (a test whose value is never captured poisons nothing).
    replaced: usize,
}

impl Calibrator for Poisoned {
    fn capture(&mut self, model: &ModelProto, values: &[String], sink: &mut Sink) -> Result<(), PassError> {
        let target = values.iter().position(|v| *v == self.value);
        let poison = self.poison;
        let mut replaced = 0;
        let r = self.inner.capture(model, values, &mut |tokens, vals| {
            let mut owned = vals.to_vec();
            if let Some(i) = target {
                replaced += 1;
                for (k, x) in owned[i].0.iter_mut().enumerate() {
                    *x = match poison {
                        Poison::Zero => 0.0,
                        Poison::Constant => 0.5,
                        Poison::Nan if k % 7 == 3 => f32::NAN,
                        Poison::Inf if k % 5 == 1 => f32::INFINITY,
                        _ => *x,
                    };
                }
            }
            sink(tokens, &owned)
        });
        self.replaced += replaced;
        r
    }

    fn logits(&mut self, model: &ModelProto) -> Result<(Vec<f32>, usize), PassError> {
        let (mut l, n) = self.inner.logits(model)?;
        if self.nan_logits {
            l[1] = f32::NAN;
        }
        Ok((l, n))
    }

    fn examples(&self) -> usize {
        self.inner.examples()
    }

    fn tokens(&self) -> usize {
        self.inner.tokens()
    }
}

fn poisoned(value: &str, poison: Poison) -> Poisoned {
    Poisoned {
        inner: OrtCalibrator::new(batches(), SessionOptions::default()),
        value: value.to_string(),
        poison,
        nan_logits: false,
        replaced: 0,
    }
}

/// The input of layer `l`'s FFN down projection (its activations) and of its attention output
/// projection (the per-head contexts).
fn block_inputs(m: &ModelProto, l: usize) -> (String, String) {
    let t = discover(m).unwrap();
    let ix = GraphIndex::new(m.graph.as_ref().unwrap());
    let layer = &t.layers[l];
    let act = ix.node(layer.ffn.as_ref().unwrap().down.node).input[0].clone();
    let ctx = ix.node(layer.attention.as_ref().unwrap().output.node).input[0].clone();
    (act, ctx)
}

fn per_layer(heads: f64, ffn: f64) -> PruneOptions {
    PruneOptions {
        heads,
        ffn,
        strategy: Strategy::Obs,
        per_layer: true,
        ..Default::default()
    }
}

fn budget(target: f64) -> PruneOptions {
    PruneOptions {
        strategy: Strategy::Obs,
        target_macs: Some(target),
        ..Default::default()
    }
}

/// Every float initializer of `m` is finite.
fn assert_all_finite(m: &ModelProto) {
    for t in &m.graph.as_ref().unwrap().initializer {
        if t.data_type() == 1 {
            let v = tensor::to_f32(t).unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "initializer '{}' is not finite",
                t.name()
            );
        }
    }
}

/// All-zero activations make the Gram matrix singular (only the bias row sees data) and
/// constant ones make it rank one: the damping keeps the refit finite, the pass succeeds, and
/// every layer still has what the options asked for.
#[test]
fn singular_gram_matrices_give_finite_weights() {
    if !require_ort("numerical guards") {
        return;
    }
    let m = model();
    let (act, ctx) = block_inputs(&m, 1);
    for poison in [Poison::Zero, Poison::Constant] {
        for value in [&act, &ctx] {
            let mut c = poisoned(value, poison);
            let (out, _) = prune::prune_calibrated(&m, &per_layer(0.25, 0.25), &mut c)
                .unwrap_or_else(|e| panic!("{poison:?} {value}: {e}"));
            assert!(c.replaced > 0, "{poison:?}: the pass never captured {value}");
            assert_all_finite(&out);
            let t = discover(&out).unwrap();
            assert_eq!(
                t.layers.iter().map(|l| (l.heads(), l.ffn_width())).collect::<Vec<_>>(),
                vec![(3, 24), (3, 24)]
            );
        }
    }
}

/// NaN or infinite activations: an error naming the layer, the block and the value, for both
/// the uniform path and the MAC-budget path (which measures cost curves first).
#[test]
fn non_finite_activations_are_refused_naming_the_layer() {
    if !require_ort("numerical guards") {
        return;
    }
    let m = model();
    let (act, ctx) = block_inputs(&m, 1);
    for (value, block, poison) in [
        (&act, "layer 1 FFN", Poison::Nan),
        (&ctx, "layer 1 attention", Poison::Inf),
    ] {
        for opts in [per_layer(0.25, 0.25), budget(0.7)] {
            let err = prune::prune_calibrated(&m, &opts, &mut poisoned(value, poison))
                .map(|_| ())
                .expect_err("a NaN/Inf activation must fail the pass")
                .to_string();
            assert!(
                err.contains(block) && err.contains(value.as_str()) && err.contains("calibration data"),
                "{poison:?} in {value} ({opts:?}): {err}"
            );
            let kind = if matches!(poison, Poison::Nan) {
                "NaN"
            } else {
                "infinite"
            };
            assert!(err.contains(kind), "{err}");
        }
    }
}

/// NaN logits from the unpruned model: the MAC-budget allocation (which compares predictions)
/// refuses them instead of ranking blocks by NaN.
#[test]
fn non_finite_logits_are_refused() {
    if !require_ort("numerical guards") {
        return;
    }
    let m = model();
    let mut c = poisoned("none", Poison::Zero);
    c.nan_logits = true;
    let err = prune::prune_calibrated(&m, &budget(0.7), &mut c)
        .map(|_| ())
        .expect_err("NaN logits must fail the pass")
        .to_string();
    assert!(err.contains("logits") && err.contains("1 NaN"), "{err}");
}
