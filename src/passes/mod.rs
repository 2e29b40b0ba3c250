//! Compression passes. Each is a pure function of (model, options, optional calibration data)
//! → (model, report); none parses the command line, prints, or opens sessions itself.

pub mod prune;

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
