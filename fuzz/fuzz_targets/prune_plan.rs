//! The first 4 bytes pick pruning options (heads and FFN fractions in [0, 1), l1 or random, a
//! seed); the rest is decoded as a model and pruned. A prune that succeeds must leave a model
//! that decodes again and whose transformer is still found.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use onnx_compress::onnx::load_from_bytes;
use onnx_compress::passes::prune::{prune, PruneOptions, Strategy};
use onnx_compress::structure;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, rest) = data.split_at(4);
    let path = Path::new("fuzz.onnx");
    let Ok(model) = load_from_bytes(rest, path, None) else {
        return;
    };
    let opts = PruneOptions {
        heads: head[0] as f64 / 256.0,
        ffn: head[1] as f64 / 256.0,
        strategy: if head[2] & 1 == 0 { Strategy::L1 } else { Strategy::Random },
        seed: head[3] as u64,
        ..Default::default()
    };
    let Ok((out, _report)) = prune(&model, &opts) else {
        return;
    };
    let bytes = out.encode_to_vec();
    let again = load_from_bytes(&bytes, path, None).expect("a pruned model decodes");
    structure::discover(&again).expect("the pruned model's transformer is still found");
});
