//! The command line: flag definitions and their translation into library options.

pub mod flags;
pub mod options;
pub mod progress;
