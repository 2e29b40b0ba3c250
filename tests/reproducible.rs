//! The same command on the same input writes the same bytes when `SOURCE_DATE_EPOCH` is set
//! (the reproducible-builds convention): the history's time is taken from it.

use std::path::Path;

use assert_cmd::Command;
use onnx_compress::history;
use onnx_compress::onnx::{self, ExternalData, SaveOptions};
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};

fn prune(input: &Path, output: &Path, epoch: Option<&str>) {
    let mut cmd = Command::cargo_bin("onnx-compress").expect("the onnx-compress binary is built");
    cmd.args(["prune", "--heads", "0.5", "--ffn", "0.25"])
        .arg(input)
        .arg(output);
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn source_date_epoch_makes_two_runs_write_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    let save = SaveOptions {
        external_data: ExternalData::Never,
        ..Default::default()
    };
    onnx::save(&tiny_bert(&SynthOptions::default()), &input, &save).unwrap();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    prune(&input, &a, Some("1700000000"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    prune(&input, &b, Some("1700000000"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let h = history::history(&onnx::load(&a).unwrap()).unwrap();
    assert_eq!(h.last().unwrap().time, "2023-11-14T22:13:20Z");

    // Without it the time is now (this test cannot run in 2023); set empty, it is unset.
    for (name, epoch) in [("c.onnx", None), ("d.onnx", Some(""))] {
        let c = dir.path().join(name);
        prune(&input, &c, epoch);
        let h = history::history(&onnx::load(&c).unwrap()).unwrap();
        let time = &h.last().unwrap().time;
        assert!(
            time.starts_with("20") && time != "2023-11-14T22:13:20Z",
            "{epoch:?}: {time}"
        );
    }
    // The last second a four-digit year writes is taken.
    let e = dir.path().join("e.onnx");
    prune(&input, &e, Some("253402300799"));
    let h = history::history(&onnx::load(&e).unwrap()).unwrap();
    assert_eq!(h.last().unwrap().time, "9999-12-31T23:59:59Z");
}

/// A `SOURCE_DATE_EPOCH` that is not a time is refused, not ignored (the outputs would not be
/// reproducible, without a word).
#[test]
fn a_source_date_epoch_that_is_not_a_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    onnx::save(&tiny_bert(&SynthOptions::default()), &input, &SaveOptions::default()).unwrap();
    let out = dir.path().join("out.onnx");
    // (253402300800: the first second of year 10000, which a four-digit year cannot write.)
    for bad in ["abc", "-5", "1.5", "99999999999999999999", "253402300800"] {
        let o = Command::cargo_bin("onnx-compress")
            .unwrap()
            .args(["prune", "--heads", "0.5"])
            .arg(&input)
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad}: {err}");
        assert!(
            err.contains(&format!("SOURCE_DATE_EPOCH={bad}: not a whole number")),
            "{err}"
        );
        assert!(!out.exists(), "{bad}: a model was written");
    }
    // A command that writes no time runs whatever the variable holds.
    let o = Command::cargo_bin("onnx-compress")
        .unwrap()
        .arg("inspect")
        .arg(&input)
        .env("SOURCE_DATE_EPOCH", "abc")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
