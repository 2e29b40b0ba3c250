//! Compression passes. Each is a pure function of (model, options, optional calibration data)
//! → (model, report); none parses the command line, prints, or opens sessions itself.

pub mod lowrank;
pub mod prune;
pub mod quantize;

use crate::onnx::ModelProto;

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

    /// Seconds spent running models so far.
    fn seconds(&self) -> f64 {
        0.0
    }
}

/// Errors of a pass: bad options, or a model the pass cannot rewrite.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("{0}")]
    Options(String),
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

#[cfg(test)]
mod tests {
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
    fn rounds_like_python() {
        use super::round_half_even as r;
        assert_eq!(
            (r(0.5), r(1.5), r(2.5), r(1.8), r(230.4), r(153.6), r(3.0)),
            (0, 2, 2, 2, 230, 154, 3)
        );
    }
}
