//! Redraws the Pareto charts of an earlier `bench` run from its `results.json`, without running
//! any model (e.g. after a change to the chart style):
//! `cargo run --release --example replot -- bench/out/sst2 [OUT_DIR]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use onnx_compress::bench::{self, Row};
use onnx_compress::glue::Task;

fn main() -> std::process::ExitCode {
    match replot() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, as the tool's own errors.
            let msg = format!("{e:#}");
            let msg: Vec<&str> = msg.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("error: {}", msg.join(" "));
            std::process::ExitCode::FAILURE
        }
    }
}

fn replot() -> Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let dir = args.next().context("usage: replot BENCH_DIR [OUT_DIR]")?;
    let out = args.next().unwrap_or_else(|| dir.clone());
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    let task = json["task"].as_str().map(Task::from_name).transpose()?;
    let data_file = json["data_file"].as_str().map(PathBuf::from);
    if task.is_none() && data_file.is_none() {
        anyhow::bail!("{}: neither a task nor a data_file", path.display());
    }
    let date = json["date"].as_str().unwrap_or_default();
    let rows: Vec<Row> = serde_json::from_value(json["rows"].clone()).context("results.json: rows")?;
    let dataset = bench::dataset(task, data_file.as_deref());
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let mut files = vec![];
    bench::write_charts(&bench::charts_of(&dataset, date, &rows), &out, &mut files)?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
