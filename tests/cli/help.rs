//! Usage errors and --help.

use super::*;

/// Usage errors are clap's: exit status 2, first line `error: ` naming the flag, no panic.
#[test]
fn usage_errors_name_the_flag() {
    let cases: [(&[&str], &str); 9] = [
        (&["eval", "--task", "sst2"], "--model"),
        (
            &["eval", "--task", "sst2", "--model", "m.onnx", "--batch-size", "abc"],
            "--batch-size",
        ),
        (
            &["eval", "--task", "sst2", "--model", "m.onnx", "--device", "tpu"],
            "--device",
        ),
        (
            &["convert", "a.onnx", "b.onnx", "--external-data", "sometimes"],
            "--external-data",
        ),
        (&["inspect", "m.onnx", "--seq-len", "many"], "--seq-len"),
        // Past 2^20 tokens the MAC counts saturated; 0 counts nothing.
        (&["inspect", "m.onnx", "--seq-len", "0"], "from 1 to 1048576 tokens"),
        (
            &["inspect", "m.onnx", "--seq-len", "1048577"],
            "from 1 to 1048576 tokens",
        ),
        (
            &["prune", "a.onnx", "b.onnx", "--heads", "0.1", "--seq-len", "0"],
            "--seq-len",
        ),
        (
            &[
                "lowrank",
                "a.onnx",
                "b.onnx",
                "--rank",
                "8",
                "--seq-len",
                "18446744073709551615",
            ],
            "--seq-len",
        ),
    ];
    let cwd = tempfile::tempdir().unwrap();
    for (args, flag) in cases {
        let out = run_in(cwd.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(flag),
            "{args:?}:\n{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    assert!(snapshot(cwd.path()).is_empty());
}

/// A value that is not a number gets a tip with one that is, beside clap's own words.
#[test]
fn a_flag_value_that_is_not_a_number_gets_a_tip() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["prune", "a.onnx", "b.onnx", "--heads", "25%"],
            "a fraction as a decimal number, e.g. 0.25",
        ),
        // A percentage is not a fraction: no 0.25 offered.
        (
            &[
                "quantize",
                "a.onnx",
                "b.onnx",
                "--mode",
                "static",
                "--percentile",
                "99.9%",
            ],
            "a decimal number without a % sign",
        ),
        (
            &["prune", "a.onnx", "b.onnx", "--ffn", "0.5", "--ffn-multiple-of=-8"],
            "of 0 or more",
        ),
        (&["lowrank", "a.onnx", "b.onnx", "--energy", "most"], "e.g. 0.25"),
        (
            &["eval", "--task", "sst2", "--model", "m.onnx", "--batch-size", "1e3"],
            "e.g. 32",
        ),
        (
            &["eval", "--task", "sst2", "--model", "m.onnx", "--threads", "2.0"],
            "e.g. 32",
        ),
    ];
    let cwd = tempfile::tempdir().unwrap();
    for (args, example) in cases {
        let out = run_in(cwd.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{stderr}");
        let flag = args
            .iter()
            .rev()
            .find(|a| a.starts_with("--"))
            .unwrap()
            .split('=')
            .next()
            .unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.contains(flag),
            "{args:?}:\n{stderr}"
        );
        assert!(
            stderr.contains("tip: write a") && stderr.contains(example),
            "{args:?}:\n{stderr}"
        );
    }
    // Past the type's range the message says so; a tip about digits would mislead.
    let out = run_in(
        cwd.path(),
        &[
            "eval",
            "--task",
            "sst2",
            "--model",
            "m.onnx",
            "--batch-size",
            "99999999999999999999999",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("too large") && !stderr.contains("tip:"), "{stderr}");
    assert!(snapshot(cwd.path()).is_empty());
}

fn help(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} failed:\n{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    text(&out.stdout)
}

fn assert_mentions(help_text: &str, what: &str, flags: &[&str]) {
    for f in flags {
        let found = help_text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .any(|w| w == *f || w.starts_with(&format!("{f}=")) || w.starts_with(&format!("{f}<")));
        assert!(found, "`{what}` does not mention {f}:\n{help_text}");
    }
}

#[test]
fn help_mentions_every_flag() {
    let top = help(&["--help"]);
    assert_mentions(&top, "--help", &["--ort-lib"]);
    for cmd in ["inspect", "eval", "convert", "diff", "sensitivity"] {
        assert!(top.contains(cmd), "--help does not list {cmd}:\n{top}");
    }
    let diff = help(&["diff", "--help"]);
    assert_mentions(
        &diff,
        "diff --help",
        &[
            "--task",
            "--data",
            "--limit",
            "--threshold",
            "--show",
            "--csv",
            "--json",
            "--labels",
        ],
    );
    let sens = help(&["sensitivity", "--help"]);
    assert_mentions(
        &sens,
        "sensitivity --help",
        &[
            "--calib-data",
            "--calib-samples",
            "--fractions",
            "--no-int8",
            "--out",
            "--json",
        ],
    );
    let eval = help(&["eval", "--help"]);
    assert_mentions(
        &eval,
        "eval --help",
        &[
            "--task",
            "--model",
            "--data",
            "--split",
            "--batch-size",
            "--max-length",
            "--device",
            "--threads",
            "--warmup",
            "--measure",
            "--limit",
            "--bucket",
            "--tokenizer",
            "--json",
            "--ort-lib",
        ],
    );
    let inspect = help(&["inspect", "--help"]);
    assert_mentions(&inspect, "inspect --help", &["--seq-len", "--json", "--ort-lib"]);
    let convert = help(&["convert", "--help"]);
    assert_mentions(
        &convert,
        "convert --help",
        &["--external-data", "--tokenizer", "--json", "--ort-lib"],
    );
    // `help <cmd>` agrees with `<cmd> --help`.
    assert_eq!(help(&["help", "eval"]), eval);
}
