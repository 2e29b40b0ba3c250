//! eval: bad inputs (task, model, tokenizer, data, flags, ONNX Runtime library) give one clean error.

use super::*;

/// An `eval` that must fail: the model (`{tiny}`: the tiny model saved in the case's folder,
/// else a path in that folder), the data file written (`glue/<task folder>/dev.tsv`, passed as
/// `--data`) if any, the flags after those, and what the error must say. In `model` and
/// `needles`, `{dir}` stands for the case's folder, `{model}` for the model path, `{data}` for
/// the data folder and `{file}` for the data file.
struct BadEval {
    what: &'static str,
    /// Whether ONNX Runtime must be installed for the case to mean anything.
    needs_ort: bool,
    task: &'static str,
    model: &'static str,
    data: Option<(&'static str, &'static str)>,
    flags: &'static [&'static str],
    needles: &'static [&'static str],
}

const BAD_EVALS: &[BadEval] = &[
    BadEval {
        what: "unknown task: lists the known tasks",
        needs_ort: false,
        task: "foo",
        model: "{tiny}",
        data: None,
        flags: &[],
        needles: &["foo", "sst2", "mrpc", "qqp", "known tasks"],
    },
    BadEval {
        what: "nonexistent model",
        needs_ort: false,
        task: "sst2",
        model: "{dir}/missing.onnx",
        data: None,
        flags: &[],
        needles: &["--model", "{model}", "no such file"],
    },
    BadEval {
        what: "a model that is a directory says so",
        needs_ort: false,
        task: "sst2",
        model: "{dir}",
        data: None,
        flags: &[],
        needles: &["--model", "{model}", "directory"],
    },
    BadEval {
        what: "data file with wrong columns",
        needs_ort: true,
        task: "sst2",
        model: "{tiny}",
        data: Some(("sst2", "text\tpolarity\nit is good \t1\n")),
        flags: &[],
        needles: &["{file}", "sentence", "label"],
    },
    BadEval {
        what: "data folder without the task's folder",
        needs_ort: true,
        task: "sst2",
        model: "{tiny}",
        data: Some(("mrpc", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")),
        flags: &[],
        needles: &["SST-2", "dev", "{data}/sst2/dev.tsv"],
    },
    BadEval {
        what: "--batch-size 0",
        needs_ort: true,
        task: "sst2",
        model: "{tiny}",
        data: Some(("sst2", "sentence\tlabel\ngood film \t1\n")),
        flags: &["--batch-size", "0"],
        needles: &["--batch-size"],
    },
    BadEval {
        what: "--limit 0",
        needs_ort: true,
        task: "sst2",
        model: "{tiny}",
        data: Some(("sst2", "sentence\tlabel\ngood film \t1\n")),
        flags: &["--limit", "0"],
        needles: &["--limit"],
    },
];

#[test]
fn eval_bad_inputs_fail_cleanly() {
    for case in BAD_EVALS {
        if case.needs_ort && !have_ort(case.what) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let model = if case.model == "{tiny}" {
            save_tiny(dir.path(), "tiny.onnx", ExternalData::Never)
        } else {
            PathBuf::from(case.model.replace("{dir}", s(dir.path())))
        };
        let data = dir.path().join("glue");
        let mut args = vec!["--task", case.task, "--model", s(&model)];
        let file = case
            .data
            .map(|(folder, contents)| write_task_file(&data, folder, "dev", contents));
        if file.is_some() {
            args.extend(["--data", s(&data)]);
        }
        args.extend_from_slice(case.flags);
        let fill = |n: &str| {
            let n = n.replace("{model}", s(&model)).replace("{data}", s(&data));
            match &file {
                Some(f) => n.replace("{file}", s(f)),
                None => n,
            }
        };
        let needles: Vec<String> = case.needles.iter().map(|n| fill(n)).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        eval_fails(&args, &needles);
    }
}

#[test]
fn eval_without_any_tokenizer_says_how_to_fix_it() {
    let Some(src) = sst2_model_with_ort("eval without a tokenizer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model.onnx");
    std::fs::copy(&src, &m).unwrap();
    let before = snapshot(dir.path());
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--limit", "4"],
        &["tokenizer", s(&m), "--tokenizer"],
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn eval_device_cuda_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let Some(m) = sst2_model_with_ort("eval --device cuda") else {
        return;
    };
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--device", "cuda", "--limit", "4"],
        &["--device cuda", "CUDA", "--features cuda"],
    );
}

#[test]
fn eval_with_a_missing_ort_library_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let m = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let lib = "/nonexistent/libonnxruntime.so";
    eval_fails(
        &["--task", "sst2", "--model", s(&m), "--limit", "4", "--ort-lib", lib],
        &["--ort-lib", lib],
    );
    // A file that is not a library.
    let not_lib = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_lib, "not a shared library\n").unwrap();
    eval_fails(
        &[
            "--task",
            "sst2",
            "--model",
            s(&m),
            "--limit",
            "4",
            "--ort-lib",
            s(&not_lib),
        ],
        &[s(&not_lib), "cannot load ONNX Runtime"],
    );
    // ORT_DYLIB_PATH pointing nowhere is named as such.
    let cwd = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(cwd.path())
        .env("ORT_DYLIB_PATH", lib)
        .args(["eval", "--task", "sst2", "--model", s(&m), "--limit", "4"])
        .output()
        .unwrap();
    assert_clean_error("eval", &out, &["ORT_DYLIB_PATH", lib]);
    // The global flag also works before the subcommand.
    let out = run_in(
        dir.path(),
        &[
            "--ort-lib",
            lib,
            "eval",
            "--task",
            "sst2",
            "--model",
            s(&m),
            "--limit",
            "4",
        ],
    );
    assert_clean_error("eval", &out, &["--ort-lib", lib]);
}

/// In `dir`: the tiny model (100 words, 64 positions), a tokenizer of `words` words
/// ([`common::numbered_tokenizer`]) and a GLUE folder whose SST-2 dev file is `dev`: (model,
/// tokenizer, GLUE folder, dev file).
fn tiny_with_words(dir: &Path, words: usize, dev: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let model = save_tiny(dir, "tiny.onnx", ExternalData::Never);
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(&tokenizer, common::numbered_tokenizer(words)).unwrap();
    let glue = dir.join("glue");
    let file = write_task_file(&glue, "sst2", "dev", dev);
    (model, tokenizer, glue, file)
}

/// `quantize --mode static MODEL OUT --calib-data FILE --max-length 32 -q` with `extra` flags.
fn static_int8(model: &Path, out: &Path, file: &Path, extra: &[&str]) -> Output {
    bin()
        .args([
            "quantize",
            "--mode",
            "static",
            s(model),
            s(out),
            "--calib-data",
            s(file),
        ])
        .args(["--max-length", "32", "-q"])
        .args(extra)
        .output()
        .unwrap()
}

/// A tokenizer with more words than the model's embedding rows (not the model's) is named on
/// the first text that reaches past them, by `eval` and by a calibrated pass, before ONNX
/// Runtime's "indices element out of data bounds"; nothing is written.
#[test]
fn a_tokenizer_past_the_models_vocabulary_is_named() {
    if !have_ort("a tokenizer past the model's vocabulary") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer, glue, file) = tiny_with_words(dir.path(), 120, "sentence\tlabel\nw5 w6\t0\nw5 w110\t1\n");
    let eval_with = |tokenizer: &Path| -> Vec<String> {
        let args = [
            "--task",
            "sst2",
            "--model",
            s(&model),
            "--data",
            s(&glue),
            "--max-length",
            "32",
        ];
        let mut args = args.map(String::from).to_vec();
        args.extend(["--tokenizer".to_string(), s(tokenizer).to_string()]);
        args
    };
    let args = eval_with(&tokenizer);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    eval_fails(
        &args,
        &[s(&file), "\"w110\"", "id 110", "the 100 rows", "not the model's"],
    );
    let out = dir.path().join("int8.onnx");
    let o = static_int8(&model, &out, &file, &["--tokenizer", s(&tokenizer)]);
    assert_clean_error(
        "a calibrated pass with a tokenizer past the vocabulary",
        &o,
        &[
            s(&file),
            "id 110",
            "the 100 rows",
            &format!("tokenizer {}", s(&tokenizer)),
        ],
    );
    assert!(!out.exists());
    // A pad id past the rows: the same, for the padding of a batch ([PAD] is id 119 here).
    let mut padded: Vec<String> = ["[UNK]", "[CLS]", "[SEP]"].map(String::from).to_vec();
    padded.extend((3..119).map(|i| format!("t{i}")));
    padded.push("[PAD]".into());
    let padded: Vec<&str> = padded.iter().map(String::as_str).collect();
    let pad_tokenizer = dir.path().join("pad-tokenizer.json");
    std::fs::write(
        &pad_tokenizer,
        word_level_tokenizer(&padded, BERT_SPECIALS, Value::Null),
    )
    .unwrap();
    write_task_file(&glue, "sst2", "dev", "sentence\tlabel\nt5 t6\t0\nt5\t1\n");
    let args = eval_with(&pad_tokenizer);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    eval_fails(&args, &["pads with id 119", "the 100 rows", "not the model's"]);
}

/// RoBERTa counts positions from its padding index (ids are 2 + the token's place): a table of
/// 66 rows takes 64 tokens. `--max-length 66` is refused in those words (ONNX Runtime failed on
/// "idx=66 must be within [-66,65]"), 64 runs.
#[test]
fn robertas_positions_are_counted_past_its_padding_index() {
    if !have_ort("RoBERTa's position limit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("roberta.onnx");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roberta/model.onnx"),
        &model,
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), common::numbered_tokenizer(100)).unwrap();
    let long: Vec<String> = (0..80).map(|i| format!("w{}", 4 + i)).collect();
    let glue = dir.path().join("glue");
    write_task_file(
        &glue,
        "sst2",
        "dev",
        &format!("sentence\tlabel\n{}\t1\nw5\t0\n", long.join(" ")),
    );
    let args = |n: &'static str| {
        [
            "--task",
            "sst2",
            "--model",
            s(&model),
            "--data",
            s(&glue),
            "--max-length",
            n,
        ]
        .map(String::from)
    };
    let refused = args("66");
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    eval_fails(&refused, &["--max-length 66 exceeds the 64 positions"]);
    let ok = bin().arg("eval").args(args("64")).output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}

/// Thousands of threads on a few cores ran for minutes: refused, in eval and in a calibrated
/// pass (before anything is written), with the bound this machine allows.
#[test]
fn more_threads_than_the_machine_can_use_are_refused() {
    if !have_ort("a thread count past the machine") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, _, glue, file) = tiny_with_words(dir.path(), 100, "sentence\tlabel\nw5 w6\t0\nw7\t1\n");
    let most = 4 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let too_many = (most + 1).to_string();
    let most = format!("at most {most}");
    let args = [
        "--task",
        "sst2",
        "--model",
        s(&model),
        "--data",
        s(&glue),
        "--max-length",
        "32",
        "--threads",
        &too_many,
    ];
    eval_fails(&args, &[&format!("{too_many} threads"), "--threads", &most]);
    let out = dir.path().join("int8.onnx");
    let o = static_int8(&model, &out, &file, &["--threads", &too_many]);
    assert_clean_error("a calibrated pass with too many threads", &o, &["--threads", &most]);
    assert!(!out.exists());
}

/// `eval --json --task sst2 --max-length 32` of `model` on the GLUE folder `glue`.
fn sst2_eval_json(model: &Path, glue: &Path) -> Output {
    let args = ["eval", "--json", "--task", "sst2", "--max-length", "32"];
    bin()
        .args(args)
        .args(["--model", s(model), "--data", s(glue)])
        .output()
        .unwrap()
}

/// An empty text in a GLUE file is named by its line in the file (a blank line before it: line 4,
/// where the example is the second).
#[test]
fn empty_texts_of_a_glue_file_are_named_by_their_line() {
    if !have_ort("empty texts of a GLUE file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, _, glue, _) = tiny_with_words(dir.path(), 100, "sentence\tlabel\nw5 w6\t0\n\n \t1\n");
    let out = sst2_eval_json(&model, &glue);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["empty_texts"], serde_json::json!(["line 4"]), "{r}");
}

/// A tokenizer.json without its post_processor encodes no [CLS]/[SEP]: eval, a calibrated pass
/// and run say so in a note (the shared SST-2 model loses about 2 points so), and the model's
/// own tokenizer gives none.
#[test]
fn a_tokenizer_that_adds_no_special_tokens_is_noted() {
    if !have_ort("a tokenizer without special tokens") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer, glue, file) = tiny_with_words(dir.path(), 100, "sentence\tlabel\nw5 w6\t0\nw7\t1\n");
    let eval = || sst2_eval_json(&model, &glue);
    let out = eval();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["notes"], serde_json::json!([]), "{r}");
    assert!(!text(&out.stderr).contains("special tokens"), "{}", text(&out.stderr));

    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
    json["post_processor"] = Value::Null;
    std::fs::write(&tokenizer, json.to_string()).unwrap();
    let out = eval();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let note = r["notes"][0].as_str().unwrap_or_default();
    assert!(
        note.contains("adds no special tokens") && note.contains(s(&tokenizer)),
        "{r}"
    );
    assert!(
        text(&out.stderr).contains("note: the tokenizer"),
        "{}",
        text(&out.stderr)
    );

    let written = dir.path().join("int8.onnx");
    let out = static_int8(&model, &written, &file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("adds no special tokens"),
        "{}",
        text(&out.stderr)
    );

    // run: said once, though its calibrated pass and its evaluation both read that tokenizer.
    let recipe = dir.path().join("r.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: r\nmodel:\n  model_name: {}\ndata:\n  task: sst2\n  max_input_length: 32\n  file: {}\ncalibration:\n  data: {}\nquantization:\n  enable: true\n  method: static\n",
            s(&model),
            s(&file),
            s(&file)
        ),
    )
    .unwrap();
    let out = bin().args(["run", s(&recipe), "--json", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).matches("adds no special tokens").count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = r["notes"].as_array().unwrap().iter();
    assert_eq!(
        said.filter(|n| n.as_str().unwrap().contains("adds no special tokens"))
            .count(),
        1,
        "{r}"
    );
}

/// A config.json or tokenizer.json beside the model that is not a file (a folder, a pipe) is
/// named, not read as none (a pipe was waited on for ever by a recipe's model lookup; a folder
/// tokenizer.json read as "no tokenizer").
#[test]
fn a_config_or_tokenizer_beside_the_model_that_is_not_a_file_is_named() {
    if !have_ort("a config.json that is not a file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer, _, _) = tiny_with_words(dir.path(), 100, "sentence\tlabel\nw5 w6\t0\n");
    // Own data (no task): the class names are looked for in config.json.
    let data = dir.path().join("d.csv");
    std::fs::write(&data, "text,label\nw5 w6,0\nw7,1\n").unwrap();
    let config = dir.path().join("config.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap()
        .success());
    // (A pipe read would wait for ever: killed after a minute, the test fails.)
    let eval = || {
        common::output_within(
            std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-compress"))
                .args(["eval", "--max-length", "32", "--model", s(&model)])
                .args(["--data", s(&data)]),
            60,
        )
    };
    assert_clean_error("a pipe as config.json", &eval(), &[s(&config), "not a file"]);
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    assert_clean_error("a folder as config.json", &eval(), &[s(&config), "not a file"]);
    // A pass needs neither the names nor the tokenizer: it goes on, saying what it left out.
    let text_of = std::fs::read_to_string(&tokenizer).unwrap();
    std::fs::remove_file(&tokenizer).unwrap();
    std::fs::create_dir(&tokenizer).unwrap();
    let q = bin()
        .args([
            "quantize",
            "--mode",
            "dynamic",
            s(&model),
            s(&dir.path().join("q.onnx")),
        ])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", text(&q.stderr));
    let said = text(&q.stderr);
    assert!(
        said.contains("class names are not carried") && said.contains("no tokenizer is embedded"),
        "{said}"
    );
    std::fs::remove_dir(&config).unwrap();
    assert_clean_error(
        "a folder as tokenizer.json",
        &eval(),
        &[s(&tokenizer), "not a file", "where the model's tokenizer is looked for"],
    );
    // ... unless <model stem>.tokenizer.json is there: read, as before.
    std::fs::write(dir.path().join("tiny.tokenizer.json"), text_of).unwrap();
    let o = eval();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// Static INT8's report names its activation type and calibration method as the flags write them
/// (`u8`, `percentile`), not as Rust's names for them (`U8`, `Percentile`).
#[test]
fn static_int8_report_names_its_settings_as_the_flags_do() {
    if !have_ort("static int8 report") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, _, _, file) = tiny_with_words(dir.path(), 100, "sentence\tlabel\nw5 w6\t0\nw7\t1\n");
    let out = static_int8(
        &model,
        &dir.path().join("q.onnx"),
        &file,
        &["--calib-method", "percentile"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("quantized with calibrated ranges (u8, percentile calibration on 2 examples"),
        "{}",
        text(&out.stdout)
    );
}
