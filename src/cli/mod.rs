//! The command line: flag definitions and their translation into library options.

pub mod flags;
pub mod options;
pub mod progress;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Adds a `tip:` line to clap's error for a flag's value that is not a number (clap says only
/// "invalid float literal" or "invalid digit found in string"): what a number looks like there.
pub fn number_tip(mut e: clap::Error) -> clap::Error {
    if e.kind() != ErrorKind::ValueValidation {
        return e;
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let negative = matches!(e.get(ContextKind::InvalidValue), Some(ContextValue::String(v)) if v.starts_with('-'));
    let source = std::error::Error::source(&e);
    let tip = if source.is_some_and(|s| s.is::<std::num::ParseFloatError>()) {
        // The flags that take a share of something, in (0, 1).
        let fraction = [
            "--heads ",
            "--ffn ",
            "--target-macs",
            "--max-ffn-fraction",
            "--energy",
            "--ratio",
            "--target-params",
        ]
        .iter()
        .any(|f| arg.starts_with(f));
        if fraction {
            "write a fraction as a decimal number, e.g. 0.25 (not 25%)"
        } else {
            "write a decimal number without a % sign (--help gives the range)"
        }
    } else if source
        .and_then(|s| s.downcast_ref::<std::num::ParseIntError>())
        .is_some_and(|p| *p.kind() == std::num::IntErrorKind::InvalidDigit)
    {
        if negative {
            "write a whole number of 0 or more, e.g. 32"
        } else {
            "write a whole number, e.g. 32 (not 32.0 or 1e3)"
        }
    } else {
        return e;
    };
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
    e
}
