//! Where the shared models and data live, and the rule for tests that need them: skip with a
//! visible message when `../shared` is absent, except under `CI=true`, where it is a failure.

use std::io::Write;
use std::path::PathBuf;

/// `../shared` beside the project.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The shared path `rel` if it exists. When missing: panics under `CI=true`, otherwise prints
/// `SKIP: <what>` to stderr (visible even for passing tests) and returns `None`.
pub fn require(rel: &str, what: &str) -> Option<PathBuf> {
    let p = shared_dir().join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI must run with ../shared beside the project ({what})",
            p.display()
        );
    }
    let _ = writeln!(std::io::stderr(), "SKIP: {} not found ({what})", p.display());
    None
}

/// Initializes ONNX Runtime for a test. When the library is missing: panics under `CI=true`,
/// otherwise prints `SKIP: ...` and returns false.
pub fn require_ort(what: &str) -> bool {
    match crate::runtime::init(None) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("ONNX Runtime is required under CI ({what}): {e:#}");
            }
            let _ = writeln!(std::io::stderr(), "SKIP: {what}: {e:#}");
            false
        }
    }
}
