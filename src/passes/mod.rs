//! Compression passes. Each is a pure function of (model, options, optional calibration data)
//! → (model, report); none parses the command line, prints, or opens sessions itself.

pub mod lowrank;
pub mod prune;
pub mod quantize;

use serde::Serialize;

use crate::onnx::{GraphProto, ModelProto};
use crate::options::OptionError;

/// One batch of captured values: per requested value, its rows for the real tokens
/// (row-major `[tokens, width]`) and its width.
pub type Values = [(Vec<f32>, usize)];

/// What [`Calibrator::capture`] calls once per batch: the sequence position of each real token,
/// and the captured values.
pub type Sink<'a> = dyn FnMut(&[usize], &Values) -> Result<(), PassError> + 'a;

/// Calibration data, as a pass sees it: the ability to run a model on the calibration batches
/// and look at intermediate values. Implemented over ONNX Runtime by
/// [`crate::runtime::OrtCalibrator`]; passes never open sessions themselves.
pub trait Calibrator {
    /// Runs `model` on every calibration batch with `values` exposed as outputs, and calls
    /// `sink` once per batch with the sequence position of each real (non-padding) token (its
    /// length is the token count) and, per requested value, its rows for those tokens (row-major
    /// `[tokens, width]`) and its width.
    fn capture(&mut self, model: &ModelProto, values: &[String], sink: &mut Sink) -> Result<(), PassError>;

    /// The model's logits for every calibration example (row-major [examples, labels]) and the
    /// label count.
    fn logits(&mut self, model: &ModelProto) -> Result<(Vec<f32>, usize), PassError>;

    /// Number of calibration examples.
    fn examples(&self) -> usize;

    /// Number of real (non-padding) tokens in the calibration data.
    fn tokens(&self) -> usize;

    /// Number of batches one `capture` goes through, when known (for progress).
    fn batches(&self) -> Option<usize> {
        None
    }

    /// Seconds spent running models so far.
    fn seconds(&self) -> f64 {
        0.0
    }

    /// What the pass's next runs are for (`fitting layer 3 FFN of 0–5`), shown with the progress
    /// of each run until the next call.
    fn phase(&mut self, _what: &str) {}
}

/// Errors of a pass: bad options, or a model the pass cannot rewrite.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A bad option: the front end renders its field names in its own words.
    #[error("{0}")]
    Options(OptionError),
    #[error(transparent)]
    Structure(#[from] crate::structure::StructureError),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    #[error("{0}")]
    Unsupported(String),
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// One compression pass with its options: what the executor ([`crate::executor`]) runs, one
/// step of a plan. Options are validated once ([`Pass::validate`]) before any file is read.
#[derive(Debug, Clone)]
pub enum Pass {
    Prune(prune::PruneOptions),
    Lowrank(lowrank::LowrankOptions),
    Quantize(quantize::QuantizeOptions),
    /// Re-encodes the model unchanged (the storage mode is the writer's); `external_data` is
    /// recorded in the history.
    Convert {
        external_data: String,
    },
    /// A pass defined outside this module (an experiment, a test), run like the others.
    Custom(std::sync::Arc<dyn CustomPass>),
}

/// A pass defined outside this module: what [`Pass`] asks of each of its own.
pub trait CustomPass: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    fn needs_calibration(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<(), OptionError> {
        Ok(())
    }
    fn apply(&self, model: &ModelProto, calibration: Option<&mut dyn Calibrator>) -> Result<Applied, PassError>;
}

/// What a pass reports: data, rendered by [`crate::report`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PassReport {
    Prune(prune::PruneReport),
    Lowrank(lowrank::LowrankReport),
    Quantize(quantize::QuantizeReport),
    Convert,
    Custom(serde_json::Value),
}

/// A pass's result: the new model, its report, and what its history entry records.
#[derive(Debug, Clone)]
pub struct Applied {
    pub model: ModelProto,
    pub report: PassReport,
    /// The options as the pass used them (for the history).
    pub options: serde_json::Value,
    /// Weight parameters before and after.
    pub params: Option<(usize, usize)>,
}

/// `model` as the passes take it, or `None` where it already is:
/// - without the graph inputs that name an initializer (torch's
///   `keep_initializers_as_inputs=True` lists every weight so: ONNX's overridable initializers).
///   A pass that resizes or retypes a weight would leave its input declaring the old shape or
///   type, which ONNX Runtime refuses to load. Models of IR version 3, where every initializer
///   must be listed, keep them.
/// - every node named (ONNX allows none): the nodes a pass adds are named after the ones they
///   replace, and two named `_to_float` are an invalid model. An unnamed node takes its first
///   output's name (made unique).
pub(crate) fn prepared(model: &ModelProto) -> Option<ModelProto> {
    use std::collections::HashSet;
    let g = model.graph.as_ref()?;
    let weights: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let listed = model.ir_version() >= 4 && g.input.iter().any(|i| weights.contains(i.name()));
    let unnamed = g.node.iter().any(|n| n.name().is_empty());
    if !listed && !unnamed {
        return None;
    }
    let mut m = model.clone(); // the raw data is shared, not copied
    let g = m.graph.as_mut()?;
    if listed {
        let names: HashSet<String> = g.initializer.iter().map(|t| t.name().to_string()).collect();
        g.input.retain(|i| !names.contains(i.name()));
    }
    if unnamed {
        let mut taken: HashSet<String> = g.node.iter().map(|n| n.name().to_string()).collect();
        for n in g.node.iter_mut().filter(|n| n.name().is_empty()) {
            let base = n.output.first().filter(|o| !o.is_empty()).cloned();
            let base = base.unwrap_or_else(|| n.op_type().to_string());
            n.name = Some(crate::onnx::edit::fresh_name(&mut taken, &format!("{base}_node")));
        }
    }
    Some(m)
}

impl Pass {
    /// The pass's name, as recorded in the history.
    pub fn name(&self) -> &'static str {
        match self {
            Pass::Prune(_) => "prune",
            Pass::Lowrank(_) => "lowrank",
            Pass::Quantize(_) => "quantize",
            Pass::Convert { .. } => "convert",
            Pass::Custom(p) => p.name(),
        }
    }

    /// Whether the pass runs the model on calibration data: calibrated (obs) pruning,
    /// activation-aware low rank, static quantization.
    pub fn needs_calibration(&self) -> bool {
        match self {
            Pass::Prune(o) => o.strategy == prune::Strategy::Obs,
            Pass::Lowrank(o) => o.activation_aware,
            Pass::Quantize(o) => o.mode == quantize::Mode::Static,
            Pass::Convert { .. } => false,
            Pass::Custom(p) => p.needs_calibration(),
        }
    }

    /// Checks the options on their own, before any file is read.
    pub fn validate(&self) -> Result<(), OptionError> {
        let r = match self {
            Pass::Prune(o) => prune::validate(o),
            Pass::Lowrank(o) => lowrank::validate(o),
            Pass::Quantize(o) => quantize::validate(o),
            Pass::Convert { .. } => Ok(()),
            Pass::Custom(p) => return p.validate(),
        };
        match r {
            Ok(()) => Ok(()),
            Err(PassError::Options(e)) => Err(e),
            Err(e) => Err(OptionError::new("options", e.to_string())),
        }
    }

    /// Refuses an input the pass cannot rewrite at all, before any calibration data is loaded:
    /// a model quantized already (int8 or float16): `quantize` would compound the error, and
    /// pruning and low rank rewrite float32 weights.
    pub fn check_input(&self, model: &ModelProto) -> Result<(), PassError> {
        match self {
            Pass::Quantize(_) => quantize::ensure_not_quantized(model),
            Pass::Prune(_) | Pass::Lowrank(_) => Ok(crate::structure::ensure_float(model)?),
            Pass::Convert { .. } | Pass::Custom(_) => Ok(()),
        }
    }

    /// Applies the pass to `model`; `calibration` is used by the passes that need it (an error
    /// when they get none).
    pub fn apply(&self, model: &ModelProto, calibration: Option<&mut dyn Calibrator>) -> Result<Applied, PassError> {
        let prepared = prepared(model);
        let model = prepared.as_ref().unwrap_or(model);
        let missing = |field: &'static str, what: &str| {
            PassError::Options(OptionError::new(
                field,
                format!("{what} needs calibration data: add `calib_data` TRAIN.tsv"),
            ))
        };
        match self {
            Pass::Prune(o) => {
                let (model, r) = match (o.strategy, calibration) {
                    (prune::Strategy::Obs, Some(c)) => prune::prune_calibrated(model, o, c)?,
                    (prune::Strategy::Obs, None) => return Err(missing("strategy", "`strategy` obs")),
                    _ => prune::prune(model, o)?,
                };
                let asked = o.heads > 0.0 || o.ffn > 0.0 || o.target_macs.is_some();
                if asked && r.params_after == r.params_before {
                    // Asked to remove some, writing an unchanged copy would look like success
                    // (as low rank refuses). Pruning 0% stays the identity.
                    let field = match o {
                        _ if o.target_macs.is_some() => "target_macs",
                        _ if o.ffn > 0.0 && o.ffn_multiple_of > 1 => "ffn_multiple_of",
                        _ if o.heads > 0.0 => "heads",
                        _ => "ffn",
                    };
                    return Err(PassError::Options(OptionError::new(
                        field,
                        "no head or neuron would be removed (a fraction of a layer's heads or neurons rounds to none, or \
                         `ffn_multiple_of` rounds the kept neurons back to all): the model would not change; ask for more"
                            .to_string(),
                    )));
                }
                Ok(Applied {
                    options: to_json(&r.options)?,
                    params: Some((r.params_before, r.params_after)),
                    model,
                    report: PassReport::Prune(r),
                })
            }
            Pass::Lowrank(o) => {
                let (model, r) = match (o.activation_aware, calibration) {
                    (true, Some(c)) => lowrank::lowrank_calibrated(model, o, c)?,
                    (true, None) => return Err(missing("target_params", "activation-aware low rank")),
                    (false, _) => lowrank::lowrank(model, o)?,
                };
                if r.factorized == 0 {
                    // Writing an unchanged copy would look like success.
                    let why = (r.layers.iter().find(|l| l.at_break_even))
                        .or_else(|| r.layers.iter().find(|l| l.skipped.is_some()))
                        .and_then(|l| l.skipped.clone())
                        .unwrap_or_else(|| "no layer selected".into());
                    let field = match o.rank {
                        _ if o.target_params.is_some() => "target_params",
                        lowrank::RankRule::Energy(_) => "energy",
                        lowrank::RankRule::Ratio(_) => "ratio",
                        lowrank::RankRule::Fixed(_) => "rank",
                    };
                    // Lower ranks help only where a rank reached break-even; layers kept for what
                    // they are (already factorized, shared, not calibrated) need another selection.
                    let (field, advice) = if o.target_params.is_some() && r.layers.iter().any(|l| l.at_break_even) {
                        // The budget bought ranks up to break-even: a smaller one stops below it.
                        (field, "ask for a lower `target_params`".to_string())
                    } else if r.layers.iter().any(|l| l.at_break_even) {
                        // `k_min` named only where it set the rank that reached break-even.
                        let floor = o
                            .k_min
                            .filter(|&k| r.layers.iter().any(|l| l.at_break_even && l.rank == k));
                        let k_min = if floor.is_some() { ", a lower `k_min`" } else { "" };
                        (
                            field,
                            format!("ask for lower ranks (`energy` 0.9, `ratio` 0.25 or `rank` K){k_min} or `force`"),
                        )
                    } else {
                        ("layers", "select other layers (`layers`, `apply_to`)".to_string())
                    };
                    return Err(PassError::Options(OptionError::new(
                        field,
                        format!(
                            "no layer would be factorized ({} selected, e.g. {why}): the model would not change; {advice}",
                            r.layers.len()
                        ),
                    )));
                }
                Ok(Applied {
                    options: to_json(&r.options)?,
                    params: Some((r.params_before, r.params_after)),
                    model,
                    report: PassReport::Lowrank(r),
                })
            }
            Pass::Quantize(o) => {
                let calibration = if o.mode == quantize::Mode::Static {
                    Some(calibration.ok_or_else(|| missing("mode", "`mode` static"))?)
                } else {
                    None
                };
                let (model, r) = quantize::quantize(model, o, calibration)?;
                Ok(Applied {
                    options: quantize::history_options(&r.options)?,
                    params: None,
                    model,
                    report: PassReport::Quantize(r),
                })
            }
            Pass::Convert { external_data } => Ok(Applied {
                model: model.clone(),
                report: PassReport::Convert,
                options: serde_json::json!({ "external_data": external_data }),
                params: None,
            }),
            Pass::Custom(p) => p.apply(model, calibration),
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, PassError> {
    serde_json::to_value(v).map_err(|e| PassError::Internal(format!("options as JSON: {e}")))
}

impl From<OptionError> for PassError {
    fn from(e: OptionError) -> Self {
        PassError::Options(e)
    }
}

/// The model's graph, or an error for a model without one (every model read from a file has
/// one: the loader refuses it otherwise; this is for models built in code).
pub(crate) fn graph(model: &ModelProto) -> Result<&GraphProto, PassError> {
    model.graph.as_ref().ok_or_else(no_graph)
}

/// [`graph`], mutable.
pub(crate) fn graph_mut(model: &mut ModelProto) -> Result<&mut GraphProto, PassError> {
    model.graph.as_mut().ok_or_else(no_graph)
}

fn no_graph() -> PassError {
    PassError::Unsupported("the model has no graph".into())
}

/// Errors unless every value is finite, naming `what` (say, "layer 3 FFN down projection refit")
/// with how many values are NaN or infinite and where the first is. Passes call it on weights
/// they compute before those reach a model, so that a NaN never gets written silently.
pub fn ensure_finite(what: &str, values: &[f32]) -> Result<(), PassError> {
    let Some(first) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let nan = values.iter().filter(|v| v.is_nan()).count();
    let inf = values.iter().filter(|v| v.is_infinite()).count();
    Err(PassError::Unsupported(format!(
        "{what}: {nan} NaN and {inf} infinite value(s) of {} (first at index {first}, {})",
        values.len(),
        values[first]
    )))
}

/// Newest `ai.onnx` opset whose operators this tool's passes know: that of the schema in
/// `proto/` (onnx 1.23.2).
pub const NEWEST_OPSET: i64 = 28;

/// Errors when the model imports an `ai.onnx` opset newer than [`NEWEST_OPSET`]: its operators
/// may mean something the passes do not know, so rewriting it is refused rather than guessed.
/// (`inspect` and `convert` read and copy such models unchanged; ONNX Runtime decides whether it
/// can run them.)
pub fn ensure_known_opsets(model: &ModelProto) -> Result<(), PassError> {
    for o in &model.opset_import {
        let domain = o.domain();
        if (domain.is_empty() || domain == "ai.onnx") && o.version() > NEWEST_OPSET {
            return Err(PassError::Unsupported(format!(
                "the model imports opset ai.onnx {}, newer than the newest this tool knows ({NEWEST_OPSET}); \
                 refusing to rewrite operators whose meaning may have changed",
                o.version()
            )));
        }
    }
    Ok(())
}

/// Python's `round`: halves go to the even neighbour (`round(1.5) == 2`, `round(2.5) == 2`).
pub fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        let f = x.floor();
        if (f as i64) % 2 == 0 {
            f as i64
        } else {
            f as i64 + 1
        }
    } else {
        r as i64
    }
}

/// Mean KL divergence of the pruned model's predictions from the unpruned one's (squared error
/// for a single regression output).
pub fn divergence(reference: &[f32], probe: &[f32], labels: usize) -> f64 {
    let n = (reference.len() / labels.max(1)).max(1);
    if labels <= 1 {
        return reference
            .iter()
            .zip(probe)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    let log_softmax = |z: &[f32]| -> Vec<f64> {
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        z.iter().map(|&v| v as f64 - lse).collect()
    };
    let mut kl = 0.0;
    for (a, b) in reference.chunks(labels).zip(probe.chunks(labels)) {
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl += la.iter().zip(&lb).map(|(p, q)| p.exp() * (p - q)).sum::<f64>();
    }
    kl / n as f64
}

/// Share of examples whose predicted class (argmax of `labels` logits) is the same in `reference`
/// and `probe`; `None` for a single output (a regression).
pub fn agreement(reference: &[f32], probe: &[f32], labels: usize) -> Option<f64> {
    if labels <= 1 {
        return None;
    }
    let (mut same, mut n) = (0usize, 0usize);
    for (a, b) in reference.chunks(labels).zip(probe.chunks(labels)) {
        n += 1;
        if crate::glue::argmax(a) == crate::glue::argmax(b) {
            same += 1;
        }
    }
    Some(same as f64 / n.max(1) as f64)
}

/// Runs of consecutive items whose sizes fit in `budget` together (at least one item each):
/// how captures of calibration statistics are batched to bound memory.
pub(crate) fn runs_within(sizes: impl IntoIterator<Item = usize>, budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes, mut len) = (0, 0, 0);
    for (i, b) in sizes.into_iter().enumerate() {
        if i > start && bytes + b > budget {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
        len = i + 1;
    }
    if start < len {
        runs.push(start..len);
    }
    runs
}

#[cfg(test)]
mod tests {
    /// `prepared` drops weights listed as inputs (not in IR 3, which must list them) and names
    /// unnamed nodes after their first output, unique beside the names already there.
    #[test]
    fn prepared_drops_listed_weights_and_names_every_node() {
        use crate::onnx::build::{model, node, value_info};
        use crate::onnx::proto::tensor_proto::DataType;
        use crate::onnx::{tensor, GraphProto};
        let mut named = node("Relu", "y_node", &["x"], &["z"]);
        named.name = Some("y_node".into());
        let mut unnamed = [
            node("MatMul", "", &["x", "w"], &["y"]),
            node("Relu", "", &["y"], &["out"]),
        ];
        unnamed.iter_mut().for_each(|n| n.name = None);
        let graph = GraphProto {
            node: [unnamed[0].clone(), named, unnamed[1].clone()].into(),
            initializer: vec![tensor::from_f32("w", &[2, 2], &[1.0; 4])],
            input: vec![
                value_info("x", DataType::Float, &[Ok(1), Ok(2)]),
                value_info("w", DataType::Float, &[Ok(2), Ok(2)]),
            ],
            ..Default::default()
        };
        let m = model(graph, 17);
        let p = super::prepared(&m).expect("changed");
        let g = p.graph.as_ref().unwrap();
        let inputs: Vec<&str> = g.input.iter().map(|i| i.name()).collect();
        let names: Vec<&str> = g.node.iter().map(|n| n.name()).collect();
        assert_eq!((inputs, names), (vec!["x"], vec!["y_node_1", "y_node", "out_node"]));
        // IR 3 keeps the listed weight; with every node named and nothing listed, no copy.
        let mut ir3 = p.clone();
        ir3.ir_version = Some(3);
        ir3.graph.as_mut().unwrap().input = m.graph.as_ref().unwrap().input.clone();
        assert!(super::prepared(&ir3).is_none());
        assert!(super::prepared(&p).is_none());
    }

    #[test]
    fn ensure_finite_names_what_and_counts_bad_values() {
        use super::ensure_finite;
        assert!(ensure_finite("empty", &[]).is_ok());
        assert!(ensure_finite("fine", &[0.0, -1.5, f32::MAX, f32::MIN_POSITIVE]).is_ok());
        let e = ensure_finite(
            "layer 2 attention output refit",
            &[1.0, f32::NAN, f32::INFINITY, f32::NAN],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "layer 2 attention output refit: 2 NaN and 1 infinite value(s) of 4 (first at index 1, NaN)"
        );
        let e = ensure_finite("w", &[f32::NEG_INFINITY]).unwrap_err().to_string();
        assert!(e.contains("0 NaN and 1 infinite") && e.contains("-inf"), "{e}");
    }

    #[test]
    fn runs_fit_their_budget_with_at_least_one_item() {
        use super::runs_within;
        assert_eq!(runs_within([3, 3, 3, 3, 3], 6), [0..2, 2..4, 4..5]);
        assert_eq!(runs_within([3, 3, 3], 0), [0..1, 1..2, 2..3]);
        assert_eq!(
            runs_within([3, 3, 3], usize::MAX),
            std::iter::once(0..3).collect::<Vec<_>>()
        );
        assert_eq!(runs_within([7, 1, 1], 5), [0..1, 1..3]);
        assert!(runs_within([], 5).is_empty());
    }

    #[test]
    fn rounds_like_python() {
        use super::round_half_even as r;
        assert_eq!(
            (r(0.5), r(1.5), r(2.5), r(1.8), r(230.4), r(153.6), r(3.0)),
            (0, 2, 2, 2, 230, 154, 3)
        );
    }
}
