//! Any bytes → the ONNX decoder (with the model checks run on load), then, on whatever decodes,
//! structure discovery, the inspect summary and its text rendering, the history reader, and a
//! re-encode that must decode again. Nothing may panic, abort or allocate without bound.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use onnx_compress::onnx::load_from_bytes;
use onnx_compress::{history, inspect, report, structure};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.onnx");
    let Ok(model) = load_from_bytes(data, path, None) else {
        return;
    };
    let _ = structure::discover(&model);
    if let Ok(summary) = inspect::summarize(&model, path, 0, 128) {
        let _ = report::inspect_text(&summary);
    }
    let _ = history::history(&model);
    let again = model.encode_to_vec();
    load_from_bytes(&again, path, None).expect("a model that decoded once decodes again after re-encoding");
});
