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
    let source = std::error::Error::source(&e);
    let tip = if source.is_some_and(|s| s.is::<std::num::ParseFloatError>()) {
        "write a decimal number, e.g. 0.25 (a fraction is written 0.25, not 25%)"
    } else if source
        .and_then(|s| s.downcast_ref::<std::num::ParseIntError>())
        .is_some_and(|p| *p.kind() == std::num::IntErrorKind::InvalidDigit)
    {
        "write a whole number, e.g. 32 (not 32.0 or 1e3)"
    } else {
        return e;
    };
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
    e
}
