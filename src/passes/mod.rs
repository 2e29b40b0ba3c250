//! Compression passes. Each is a pure function of (model, options, optional calibration data)
//! → (model, report); none parses the command line, prints, or opens sessions itself.

pub mod lowrank;
pub mod prune;

use crate::onnx::ModelProto;

/// One batch of captured values: per requested value, its rows for the real tokens
/// (row-major `[tokens, width]`) and its width.
pub type Values = [(Vec<f32>, usize)];

/// Calibration data, as a pass sees it: the ability to run a model on the calibration batches
/// and look at intermediate values. Implemented over ONNX Runtime by
/// [`crate::runtime::OrtCalibrator`]; passes never open sessions themselves.
pub trait Calibrator {
    /// Runs `model` on every calibration batch with `values` exposed as outputs, and calls
    /// `sink` once per batch with the number of real (non-padding) tokens and, per requested
    /// value, its rows for those tokens (row-major `[tokens, width]`) and its width.
    fn capture(
        &mut self,
        model: &ModelProto,
        values: &[String],
        sink: &mut dyn FnMut(usize, &Values) -> Result<(), PassError>,
    ) -> Result<(), PassError>;

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
    fn rounds_like_python() {
        use super::round_half_even as r;
        assert_eq!(
            (r(0.5), r(1.5), r(2.5), r(1.8), r(230.4), r(153.6), r(3.0)),
            (0, 2, 2, 2, 230, 154, 3)
        );
    }
}
