//! Times the stages of `inspect` on one model: read, decode, structure discovery, encode, write.
//! `cargo run --release --example io_timing -- MODEL [REPEATS]` (median of REPEATS, default 7).

use std::time::Instant;

use onnx_compress::onnx::{self, load_from_bytes, SaveOptions};
use onnx_compress::structure;
use prost::Message;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: io_timing MODEL [REPEATS]"))?,
    );
    let repeats: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(7);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("copy.onnx");
    let (mut read, mut decode, mut discover, mut encode, mut write, mut inspect) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..repeats {
        let t = Instant::now();
        let bytes = std::fs::read(&path)?;
        read.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let m = load_from_bytes(&bytes, &path, path.parent())?;
        decode.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s = structure::discover(&m)?;
        discover.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let enc = m.encode_to_vec();
        encode.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        onnx::save(&m, &out, &SaveOptions::default())?;
        write.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (m2, sources) = onnx::load_with_sources(&path)?;
        onnx_compress::inspect::summarize(&m2, &path, onnx::io::size_on_disk(&sources), 128)?;
        inspect.push(t.elapsed().as_secs_f64());
        assert_eq!(enc.len(), bytes.len());
        assert_eq!(s.layers.len(), structure::discover(&m2)?.layers.len());
    }
    println!(
        "model {} ({} bytes), median of {repeats}",
        path.display(),
        std::fs::metadata(&path)?.len()
    );
    for (name, v) in [
        ("read file", read),
        ("decode", decode),
        ("discover structure", discover),
        ("encode", encode),
        ("save (atomic, fsync)", write),
        ("inspect total (load + summarize)", inspect),
    ] {
        println!("{name:34} {:8.2} ms", median(v) * 1000.0);
    }
    Ok(())
}
