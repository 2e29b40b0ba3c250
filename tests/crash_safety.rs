//! Crash safety: `convert` killed with SIGKILL in the middle of writing a large model leaves the
//! previous output exactly as it was (decodable, byte for byte), never a truncated `.onnx` at the
//! final path; what it leaves behind is a temporary file named after its target
//! (`.<name>.tmp-XXXXXX.partial`), and the next run succeeds regardless. Stopped by SIGTERM or
//! SIGINT (Ctrl-C) instead, it leaves no temporary file at all.
#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onnx_compress::onnx::build::{model, node, value_info};
use onnx_compress::onnx::proto::tensor_proto::DataType;
use onnx_compress::onnx::{self, tensor, ExternalData, GraphProto, ModelProto, SaveOptions};
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};

/// Size of the big model's one initializer, in float32 values (256 MB).
const BIG: usize = 64 << 20;

/// A model with one 256 MB initializer: y = x + w.
fn big_model() -> ModelProto {
    let values: Vec<f32> = (0..BIG).map(|i| (i % 1000) as f32 * 1e-3).collect();
    let g = GraphProto {
        name: Some("big".into()),
        node: vec![node("Add", "add", &["x", "w"], &["y"])],
        initializer: vec![tensor::from_f32("w", &[BIG], &values)],
        input: vec![value_info("x", DataType::Float, &[Err("n")])],
        output: vec![value_info("y", DataType::Float, &[Err("n")])],
        ..Default::default()
    };
    model(g, 17)
}

fn temporaries(dir: &Path, target: &str) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(&format!(".{target}.tmp-")) && n.ends_with(".partial")
        })
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect()
}

/// Starts `convert big.onnx out.onnx [extra]`, waits until the temporary file for `target` holds
/// at least `min_bytes`, and stops the process with `signal`. Returns the temporary file's size at
/// the kill, or `None` when the run finished before it could be caught (then the caller retries).
fn kill_mid_write(dir: &Path, extra: &[&str], target: &str, min_bytes: u64, signal: i32) -> Option<u64> {
    let exe = assert_cmd::cargo::cargo_bin("onnx-compress");
    let mut child = std::process::Command::new(exe)
        .current_dir(dir)
        .args(["convert", "big.onnx", "out.onnx"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut caught = None;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some((_, len)) = temporaries(dir, target).into_iter().find(|t| t.1 >= min_bytes) {
            // SAFETY: kill(2) on the child's pid; no memory is touched.
            assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
            caught = Some(len);
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let status = child.wait().unwrap();
    match caught {
        Some(len) if status.signal() == Some(signal) => Some(len),
        _ => {
            assert!(
                status.success() || status.signal().is_some(),
                "convert failed: {status:?}"
            );
            None
        }
    }
}

/// `external`: save with a side file; `kill_on_model`: with a side file, kill once the model's
/// own temporary appears (the side file is then complete: the moment a save that renamed the
/// side file first would have left the previous model pointing into the new data); `signal`:
/// SIGKILL leaves the temporary, SIGTERM and SIGINT remove it.
fn run_and_check(external: bool, kill_on_model: bool, signal: i32) {
    let dir = tempfile::tempdir().unwrap();
    let big = big_model();
    onnx::save(&big, &dir.path().join("big.onnx"), &SaveOptions::default()).unwrap();
    let total = (BIG * 4) as u64;

    // The previous output: a small, complete model (with its side file when external).
    let mode = if external {
        ExternalData::Always
    } else {
        ExternalData::Never
    };
    let out = dir.path().join("out.onnx");
    let previous = tiny_bert(&SynthOptions::default());
    onnx::save(
        &previous,
        &out,
        &SaveOptions {
            external_data: mode,
            ..Default::default()
        },
    )
    .unwrap();
    let previous_bytes = std::fs::read(&out).unwrap();
    let data = dir.path().join("out.onnx.data");
    let previous_data = external.then(|| std::fs::read(&data).unwrap());

    let (extra, target): (&[&str], &str) = match (external, kill_on_model) {
        (true, false) => (&["--external-data", "always"], "out.onnx.data"),
        (true, true) => (&["--external-data", "always"], "out.onnx"),
        (false, _) => (&["--external-data", "never"], "out.onnx"),
    };
    let min_bytes = if kill_on_model { 0 } else { 1 << 20 };
    let tries = if kill_on_model { 20 } else { 3 };
    let mut killed = None;
    for _ in 0..tries {
        // Restore the previous output in case a try finished the write.
        std::fs::write(&out, &previous_bytes).unwrap();
        if let Some(d) = &previous_data {
            std::fs::write(&data, d).unwrap();
        }
        killed = kill_mid_write(dir.path(), extra, target, min_bytes, signal);
        if killed.is_some() {
            break;
        }
    }
    let at = killed.unwrap_or_else(|| panic!("convert was never caught mid-write in {tries} tries"));
    assert!(at < total, "the temporary file was complete ({at} bytes) when killed");
    eprintln!("killed with {at} of {total} bytes written to .{target}.tmp-*");

    // The final path still holds the previous model, byte for byte, and it decodes.
    // (assert!, not assert_eq!: a failure must not print hundreds of megabytes.)
    assert!(std::fs::read(&out).unwrap() == previous_bytes, "out.onnx changed");
    if let Some(d) = &previous_data {
        assert!(&std::fs::read(&data).unwrap() == d, "out.onnx.data changed");
    }
    let reread = onnx::load(&out).unwrap();
    assert_eq!(reread.graph, previous.graph);
    // No other .onnx appeared; what the kill left is a clearly named temporary.
    let onnx_files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    let mut sorted = onnx_files.clone();
    sorted.sort();
    assert_eq!(sorted, ["big.onnx", "out.onnx"]);
    let left: Vec<_> = ["out.onnx", "out.onnx.data"]
        .iter()
        .flat_map(|t| temporaries(dir.path(), t))
        .collect();
    if signal == libc::SIGKILL {
        assert!(
            !left.is_empty(),
            "no temporary file named .{target}.tmp-*.partial was left"
        );
    } else {
        assert!(left.is_empty(), "signal {signal} left temporary files: {left:?}");
    }

    // The next run writes the new model in full despite the leftovers.
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-compress"))
        .current_dir(dir.path())
        .args(["convert", "big.onnx", "out.onnx"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let new = onnx::load(&out).unwrap();
    let w = &new.graph.as_ref().unwrap().initializer[0];
    assert_eq!(w.dims, vec![BIG as i64]);
    assert!(
        tensor::to_f32(w).unwrap() == tensor::to_f32(&big.graph.as_ref().unwrap().initializer[0]).unwrap(),
        "the completed convert does not hold the big model's weights"
    );
}

#[test]
fn convert_killed_mid_write_leaves_the_previous_output() {
    run_and_check(false, false, libc::SIGKILL);
}

#[test]
fn convert_killed_mid_write_of_external_data_leaves_the_previous_output_and_its_data() {
    run_and_check(true, false, libc::SIGKILL);
}

#[test]
fn convert_killed_between_side_file_and_model_leaves_the_previous_pair() {
    run_and_check(true, true, libc::SIGKILL);
}

#[test]
fn convert_stopped_by_sigterm_mid_write_leaves_no_temporary() {
    run_and_check(false, false, libc::SIGTERM);
}

#[test]
fn convert_interrupted_mid_write_of_external_data_leaves_no_temporary() {
    run_and_check(true, false, libc::SIGINT);
}

#[test]
fn convert_hung_up_mid_write_leaves_no_temporary() {
    run_and_check(false, false, libc::SIGHUP);
}
