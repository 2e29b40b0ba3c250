//! inspect: bad inputs give one clean error naming the file; a synthetic model is read.

use super::*;

/// Runs `inspect <file>` in a fresh folder and checks for one clean error naming the file.
fn inspect_fails(file: &Path, needles: &[&str]) -> String {
    let cwd = tempfile::tempdir().unwrap();
    let file_dir = file.parent().unwrap().to_path_buf();
    let before = snapshot(&file_dir);
    let out = run_in(cwd.path(), &["inspect", s(file)]);
    let mut all = vec![s(file)];
    all.extend_from_slice(needles);
    let line = assert_clean_error("inspect", &out, &all);
    assert!(snapshot(cwd.path()).is_empty(), "inspect wrote into its working folder");
    assert_eq!(snapshot(&file_dir), before, "inspect changed the model's folder");
    line
}

#[test]
fn inspect_rejects_truncated_models() {
    let Some(src) = sst2_model("inspect on truncated copies") else {
        return;
    };
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("first1000.onnx", 1000), ("half.onnx", bytes.len() / 2)] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        inspect_fails(&p, &["not a valid ONNX model", "truncated"]);
    }
}

#[test]
fn inspect_rejects_files_that_are_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "notes.txt",
            b"this is a plain text file, not a model\n",
            "not a valid ONNX model",
        ),
        ("empty.onnx", b"", "empty"),
        (
            "image.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0\x1f\xf3\xffa\0\0\0\0IEND\xaeB`\x82",
            "not a valid ONNX model",
        ),
    ];
    for (name, contents, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        inspect_fails(&p, &[needle]);
    }
}

#[test]
fn inspect_rejects_a_model_that_is_not_a_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("relu.onnx");
    let graph = GraphProto {
        name: Some("relu".into()),
        node: vec![node("Relu", "relu", &["x"], &["y"])],
        input: vec![value_info("x", DataType::Float, &[Err("n"), Ok(4)])],
        output: vec![value_info("y", DataType::Float, &[Err("n"), Ok(4)])],
        ..Default::default()
    };
    onnx::save(&model(graph, 17), &p, &SaveOptions::default()).unwrap();
    // The file itself is valid ONNX: the error must be about what it contains.
    let line = inspect_fails(&p, &["not a transformer"]);
    assert!(
        !line.contains("not a valid ONNX model"),
        "a valid non-transformer model is reported as invalid ONNX: {line}"
    );
}

#[test]
fn inspect_rejects_a_nonexistent_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-model.onnx");
    inspect_fails(&p, &["no such file"]);
    assert!(!p.exists());
}

#[test]
fn inspect_nonexistent_path_error_does_not_repeat_itself() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-model.onnx");
    let line = inspect_fails(&p, &["no such file"]);
    assert_not_repeated(&line);
}

#[test]
fn inspect_rejects_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("model-dir");
    std::fs::create_dir(&d).unwrap();
    inspect_fails(&d, &["directory"]);
}

#[test]
fn inspect_reads_a_synthetic_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let out = run_in(dir.path(), &["inspect", s(&p), "--json", "--seq-len", "16"]);
    let v = parse_json(&out);
    assert_eq!(v["num_layers"], 2);
    assert_eq!(v["seq_len"], 16);
    assert_eq!(v["has_embedded_tokenizer"], false);
    assert_eq!(v["positions"], 64);
    let out = run_in(dir.path(), &["inspect", s(&p), "--seq-len", "64"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("MACs         per sequence of 64 tokens: encoder"));
    // MACs for a length the model cannot take are given, and said to be past its positions.
    let out = run_in(dir.path(), &["inspect", s(&p), "--seq-len", "100"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("per sequence of 100 tokens (past the model's 64 positions: it cannot run that long)"),
        "{}",
        text(&out.stdout)
    );
    // A history that cannot be read is said to be so (it read as none), and passes name the fix.
    let mut m = onnx::load(&p).unwrap();
    m.metadata_props
        .push(onnx_compress::onnx::proto::StringStringEntryProto {
            key: Some(history::HISTORY_KEY.into()),
            value: Some("{not json".into()),
        });
    let bad = dir.path().join("bad-history.onnx");
    onnx::save(&m, &bad, &SaveOptions::default()).unwrap();
    let out = run_in(dir.path(), &["inspect", s(&bad)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("history      unreadable: metadata 'onnx_compress.history' is not valid"),
        "{}",
        text(&out.stdout)
    );
    assert!(parse_json(&run_in(dir.path(), &["inspect", s(&bad), "--json"]))["history_error"].is_string());
    let out = run_in(dir.path(), &["convert", s(&bad), s(&dir.path().join("c.onnx"))]);
    assert_clean_error("convert", &out, &["is not valid", "remove that metadata entry"]);
}

/// The text report separates its parts by one blank line, whether or not the model is mapped (a
/// dynamically quantized model is not: its MatMuls became MatMulInteger).
#[test]
fn inspect_text_has_single_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = save_tiny(dir.path(), "tiny.onnx", ExternalData::Never);
    let q = dir.path().join("tiny.int8.onnx");
    let out = run_in(dir.path(), &["quantize", "--quiet", "--mode", "dynamic", s(&p), s(&q)]);
    assert!(out.status.success(), "quantize: {}", text(&out.stderr));
    for (what, model, mapped) in [("float", &p, true), ("int8", &q, false)] {
        let out = run_in(dir.path(), &["inspect", s(model)]);
        assert!(out.status.success(), "inspect {what}: {}", text(&out.stderr));
        let report = text(&out.stdout);
        assert!(
            !report.contains("\n\n\n"),
            "inspect {what}: two blank lines in\n{report}"
        );
        assert_eq!(report.contains("not mapped"), !mapped, "inspect {what}:\n{report}");
        assert!(report.contains("\nhistory"), "inspect {what}:\n{report}");
        // What an unmapped model has no value for is null in JSON, not 0.
        let v = parse_json(&run_in(dir.path(), &["inspect", s(model), "--json"]));
        for key in ["hidden", "num_layers", "parameters", "encoder_macs", "head_macs"] {
            assert_eq!(v[key].is_null(), !mapped, "inspect {what} --json: {key} is {}", v[key]);
        }
    }
}

/// The size counts the data file the model names, not a guess from its own name: a model with
/// external data renamed (its data file keeps the old name) is as large as before.
#[test]
fn inspect_counts_the_data_file_the_model_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = save_tiny(dir.path(), "a.onnx", ExternalData::Always);
    let data = dir.path().join("a.onnx.data");
    assert!(data.is_file(), "the tiny model was saved with external data");
    let b = dir.path().join("b.onnx");
    std::fs::rename(&a, &b).unwrap();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let v = parse_json(&run_in(dir.path(), &["inspect", s(&b), "--json"]));
    assert_eq!(v["file_bytes"], size(&b) + size(&data));
}

/// The per-layer table's columns line up whatever the activation's name ("gelu (fused op)" on
/// ONNX Runtime's fused graphs pushed the parameters a column to the right).
#[test]
fn inspect_layer_columns_line_up_on_a_fused_graph() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-fused/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["inspect", s(&model)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let head = stdout.lines().find(|l| l.starts_with("layer  heads")).unwrap();
    let row = stdout.lines().find(|l| l.starts_with("0 ")).unwrap();
    assert!(row.contains("gelu (fused op)"), "{stdout}");
    let column = head.find("attn params").unwrap();
    assert!(
        row[..column].ends_with(' ') && !row[column..].starts_with(' '),
        "the attention parameters start under their header:\n{head}\n{row}"
    );
}

/// A model that maps but holds float16 weights (another tool's fp16 conversion) is said to be
/// quantized already, in the text and in --json (it was described as an ordinary model).
#[test]
fn inspect_says_a_mapped_float16_model_is_quantized_already() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_bert(&SynthOptions::default());
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(onnx_compress::onnx::proto::TensorProto {
        name: Some("half_weight".into()),
        dims: vec![4, 4],
        data_type: Some(DataType::Float16 as i32),
        raw_data: Some(vec![0u8; 32].into()),
        ..Default::default()
    });
    let path = dir.path().join("half.onnx");
    onnx::save(&m, &path, &SaveOptions::default()).unwrap();
    let out = run_in(dir.path(), &["inspect", s(&path)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("quantized    already (initializer 'half_weight' of float16)"),
        "{stdout}"
    );
    let v = parse_json(&run_in(dir.path(), &["inspect", s(&path), "--json"]));
    assert!(v["quantized"].as_str().unwrap().contains("half_weight"), "{v}");
    // A float32 model has no such line.
    let plain = save_tiny(dir.path(), "plain.onnx", ExternalData::Never);
    let out = run_in(dir.path(), &["inspect", s(&plain)]);
    assert!(!text(&out.stdout).contains("quantized "), "{}", text(&out.stdout));
}
