//! Which ops ONNX Runtime actually runs for a model after its graph optimizations (level all,
//! CPU): saves the optimized graph and counts its op types, to see whether attention, GELU and
//! LayerNorm fusions fire. `cargo run --release --example ort_fusion -- MODEL [MODEL...]`

use std::collections::BTreeMap;

use onnx_compress::onnx;
use onnx_compress::runtime::{self, SessionOptions};

fn main() -> anyhow::Result<()> {
    runtime::init(None)?;
    for path in std::env::args().skip(1) {
        let dir = tempfile::tempdir()?;
        let optimized = dir.path().join("optimized.onnx");
        runtime::open_optimized(std::path::Path::new(&path), &SessionOptions::default(), &optimized)?;
        let m = onnx::load(&optimized)?;
        let mut ops: BTreeMap<String, usize> = BTreeMap::new();
        for n in &m.graph.as_ref().map(|g| g.node.clone()).unwrap_or_default() {
            let key = if n.domain().is_empty() {
                n.op_type().to_string()
            } else {
                format!("{}:{}", n.domain(), n.op_type())
            };
            *ops.entry(key).or_default() += 1;
        }
        println!("{path}");
        for (op, n) in ops {
            println!("  {op:40} {n}");
        }
    }
    Ok(())
}
