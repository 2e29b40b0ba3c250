//! convert: never touches its input, writes nothing on failure, and is lossless.

use super::*;

#[cfg(unix)]
#[test]
fn convert_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let original = std::fs::read(&input).unwrap();
    std::os::unix::fs::symlink("model.onnx", dir.path().join("link.onnx")).unwrap();
    std::fs::hard_link(&input, dir.path().join("hard.onnx")).unwrap();
    let before = snapshot(dir.path());
    let dname = dir.path().file_name().unwrap().to_str().unwrap().to_string();

    let same = s(&input).to_string();
    let dot = format!("{}/./model.onnx", s(dir.path()));
    let dotdot = format!("{}/../{dname}/model.onnx", s(dir.path()));
    let slashes = format!("{}//model.onnx", s(dir.path()));
    let link = s(&dir.path().join("link.onnx")).to_string();
    let hard = s(&dir.path().join("hard.onnx")).to_string();
    let cases: Vec<(&str, &str)> = vec![
        (&same, &same),
        (&same, &dot),
        (&same, &dotdot),
        (&same, &slashes),
        (&same, &link),
        (&same, &hard),
        (&link, &same),
        // Relative input, run from the model's folder, against an absolute output.
        ("model.onnx", &same),
        ("./model.onnx", "model.onnx"),
    ];
    for ext in ["auto", "always", "never"] {
        for (i, o) in &cases {
            let out = run_in(dir.path(), &["convert", i, o, "--external-data", ext]);
            assert_clean_error("convert", &out, &[o, "input"]);
            assert_eq!(
                std::fs::read(&input).unwrap(),
                original,
                "convert {i} {o} changed the input"
            );
            assert_eq!(snapshot(dir.path()), before, "convert {i} {o} left files behind");
            assert!(
                std::fs::symlink_metadata(dir.path().join("link.onnx"))
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "convert {i} {o} replaced the symlink"
            );
        }
    }
}

#[test]
fn convert_refuses_to_overwrite_the_inputs_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Always);
    let data = dir.path().join("model.onnx.data");
    assert!(data.is_file(), "the tiny model was saved with external data");
    let (orig_model, orig_data) = (std::fs::read(&input).unwrap(), std::fs::read(&data).unwrap());
    let before = snapshot(dir.path());
    for ext in ["auto", "never", "always"] {
        let out = run_in(dir.path(), &["convert", s(&input), s(&data), "--external-data", ext]);
        assert_clean_error("convert", &out, &[s(&data)]);
        assert_eq!(std::fs::read(&input).unwrap(), orig_model);
        assert_eq!(
            std::fs::read(&data).unwrap(),
            orig_data,
            "the input's external data was overwritten"
        );
        assert_eq!(snapshot(dir.path()), before);
    }
}

#[test]
fn convert_into_a_missing_folder_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let before = snapshot(dir.path());
    let missing = dir.path().join("no-such-dir");
    let output = missing.join("out.onnx");
    for ext in ["auto", "always", "never"] {
        let out = run_in(dir.path(), &["convert", s(&input), s(&output), "--external-data", ext]);
        assert_clean_error("convert", &out, &[s(&output), "does not exist"]);
        assert!(!missing.exists(), "convert created {}", missing.display());
        assert_eq!(snapshot(dir.path()), before, "convert left files behind");
    }
}

#[test]
fn convert_into_a_missing_folder_error_does_not_repeat_itself() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let output = dir.path().join("no-such-dir").join("out.onnx");
    let out = run_in(dir.path(), &["convert", s(&input), s(&output)]);
    let line = assert_clean_error("convert", &out, &[s(&output)]);
    assert_not_repeated(&line);
}

#[test]
fn convert_onto_a_directory_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let target = dir.path().join("out.onnx");
    std::fs::create_dir(&target).unwrap();
    let before = snapshot(dir.path());
    let out = run_in(dir.path(), &["convert", s(&input), s(&target)]);
    assert_clean_error("convert", &out, &[s(&target)]);
    assert_eq!(snapshot(dir.path()), before, "convert left files behind");
}

#[test]
fn convert_with_a_bad_tokenizer_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let bad = dir.path().join("bad-tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let output = dir.path().join("out.onnx");
    let before = snapshot(dir.path());
    let out = run_in(dir.path(), &["convert", s(&input), s(&output), "--tokenizer", s(&bad)]);
    assert_clean_error("convert", &out, &[s(&bad)]);
    let missing = dir.path().join("missing.json");
    let out = run_in(
        dir.path(),
        &["convert", s(&input), s(&output), "--tokenizer", s(&missing)],
    );
    assert_clean_error("convert", &out, &[s(&missing)]);
    assert_eq!(snapshot(dir.path()), before);
}

/// A tokenizer with ids past the model's word embeddings (another model's) is embedded with a
/// note that says so; one that fits is embedded without a word.
#[test]
fn convert_notes_a_tokenizer_larger_than_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    for (n, note) in [(120, true), (100, false)] {
        let tokenizer = dir.path().join(format!("t{n}.json"));
        std::fs::write(&tokenizer, common::numbered_tokenizer(n)).unwrap();
        let output = dir.path().join(format!("out{n}.onnx"));
        let out = run_in(
            dir.path(),
            &["convert", s(&input), s(&output), "--tokenizer", s(&tokenizer)],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        let want = format!(
            "note: the tokenizer {} has token ids up to 119 but the model's word embeddings have 100 rows: a text with a token past id 99 cannot run",
            tokenizer.display()
        );
        assert_eq!(err.contains(&want), note, "{n} tokens: {err}");
        assert!(history::embedded_tokenizer(&onnx::load(&output).unwrap()).is_some());
    }
    // An embedded tokenizer that cannot be read is refused before it is carried on (eval found
    // it later); --tokenizer replaces it.
    let mut broken = onnx::load(&dir.path().join("out100.onnx")).unwrap();
    for p in &mut broken.metadata_props {
        if p.key() == history::TOKENIZER_KEY {
            p.value = Some("garbage".into());
        }
    }
    let broken_path = dir.path().join("broken.onnx");
    onnx::save(&broken, &broken_path, &SaveOptions::default()).unwrap();
    let fixed = dir.path().join("fixed.onnx");
    let out = run_in(dir.path(), &["convert", s(&broken_path), s(&fixed)]);
    assert_clean_error(
        "an unreadable embedded tokenizer",
        &out,
        &[
            "broken.onnx: the tokenizer embedded in it cannot be read",
            "--tokenizer",
        ],
    );
    assert!(!fixed.exists());
    let out = run_in(
        dir.path(),
        &[
            "convert",
            s(&broken_path),
            s(&fixed),
            "--tokenizer",
            s(&dir.path().join("t120.json")),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // --tokenizer replaces an embedded tokenizer, saying so; the same one again is no news.
    let (embedded, other) = (dir.path().join("out100.onnx"), dir.path().join("t120.json"));
    let output = dir.path().join("replaced.onnx");
    let out = run_in(
        dir.path(),
        &["convert", s(&embedded), s(&output), "--tokenizer", s(&other)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = format!(
        "note: --tokenizer {} replaces the tokenizer embedded in {}",
        other.display(),
        embedded.display()
    );
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
    let replaced = onnx::load(&output).unwrap();
    assert_eq!(
        history::embedded_tokenizer(&replaced),
        Some(std::fs::read_to_string(&other).unwrap().as_str())
    );
    let out = run_in(
        dir.path(),
        &[
            "convert",
            s(&output),
            s(&dir.path().join("again.onnx")),
            "--tokenizer",
            s(&other),
        ],
    );
    assert!(
        out.status.success() && !text(&out.stderr).contains("replaces"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn convert_of_a_non_onnx_file_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let output = dir.path().join("out.onnx");
    let before = snapshot(dir.path());
    let out = run_in(dir.path(), &["convert", s(&input), s(&output)]);
    assert_clean_error("convert", &out, &[s(&input), "not a valid ONNX model"]);
    assert_eq!(snapshot(dir.path()), before);
}

fn history_passes(m: &ModelProto) -> Vec<String> {
    history::history(m).unwrap().into_iter().map(|e| e.pass).collect()
}

#[test]
fn convert_shared_model_is_lossless_and_embeds_the_tokenizer() {
    let Some(src) = sst2_model("convert of the shared SST-2 model") else {
        return;
    };
    let tok = src.parent().unwrap().join("tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("model.onnx");
    let out = run_in(dir.path(), &["convert", s(&src), s(&output), "--json"]);
    let summary = parse_json(&out);
    assert_eq!(summary["path"], s(&output));
    assert_eq!(summary["data_file"], Value::Null);
    assert_eq!(summary["tokenizer_embedded"], true);
    assert_eq!(
        summary["bytes"].as_u64().unwrap(),
        std::fs::metadata(&output).unwrap().len()
    );
    assert_eq!(
        snapshot(dir.path()),
        BTreeSet::from([PathBuf::from("model.onnx")]),
        "convert wrote something besides its output"
    );

    let a = onnx::load(&src).unwrap();
    let b = onnx::load(&output).unwrap();
    assert!(a.graph == b.graph, "convert changed the graph");
    assert_eq!(a.ir_version, b.ir_version);
    assert_eq!(a.opset_import, b.opset_import);
    assert_eq!(
        history::embedded_tokenizer(&b),
        Some(std::fs::read_to_string(&tok).unwrap().as_str()),
        "the tokenizer beside the input is not embedded"
    );
    assert_eq!(history_passes(&b), vec!["convert".to_string()]);
}

#[cfg(unix)]
#[test]
fn convert_output_has_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").unwrap();
    let expected = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    std::fs::remove_file(&probe).unwrap();
    for (name, ext) in [("a.onnx", "never"), ("b.onnx", "always")] {
        let output = dir.path().join(name);
        let out = run_in(dir.path(), &["convert", s(&input), s(&output), "--external-data", ext]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        // No tokenizer beside the input: it says none was embedded.
        assert!(
            text(&out.stdout).contains("no tokenizer embedded: no tokenizer.json beside the input"),
            "{}",
            text(&out.stdout)
        );
        let mut files = vec![output.clone()];
        if ext == "always" {
            files.push(onnx::io::data_file_for(&output));
        }
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                expected,
                "{} has mode {mode:o}; a file created by this process gets {expected:o}",
                f.display()
            );
        }
    }
}

#[test]
fn convert_with_external_data_always_round_trips() {
    let Some(src) = sst2_model("convert --external-data always") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let data = dir.path().join("out.onnx.data");
    let out = run_in(
        dir.path(),
        &["convert", s(&src), s(&output), "--external-data", "always", "--json"],
    );
    let summary = parse_json(&out);
    assert_eq!(summary["data_file"], s(&data));
    assert_eq!(
        snapshot(dir.path()),
        BTreeSet::from([PathBuf::from("out.onnx"), PathBuf::from("out.onnx.data")])
    );
    let onnx_len = std::fs::metadata(&output).unwrap().len();
    assert!(
        onnx_len < 1_000_000,
        "out.onnx is {onnx_len} bytes; the tensors should be in out.onnx.data"
    );
    assert_eq!(summary["bytes"].as_u64().unwrap(), onnx_len);
    assert_eq!(
        summary["data_bytes"].as_u64().unwrap(),
        std::fs::metadata(&data).unwrap().len()
    );

    let a = onnx::load(&src).unwrap();
    let b = onnx::load(&output).unwrap();
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    assert_eq!(ga.initializer.len(), gb.initializer.len());
    for (x, y) in ga.initializer.iter().zip(&gb.initializer) {
        assert!(x == y, "initializer {:?} changed", x.name);
    }
    assert!(a.graph == b.graph, "the graph changed through external data");
    assert!(history::embedded_tokenizer(&b).is_some());
    assert_eq!(history_passes(&b), vec!["convert".to_string()]);

    // ONNX Runtime finds the side file too, and eval counts it in the size.
    if have_ort("eval of a model with external data") {
        let reference = reference_predictions("minilm-l6-sst2");
        let out = run_in(
            dir.path(),
            &[
                "eval",
                "--task",
                "sst2",
                "--model",
                s(&output),
                "--limit",
                "16",
                "--json",
            ],
        );
        let v = parse_json(&out);
        assert_eq!(v["predictions"].as_array().unwrap().as_slice(), &reference[..16]);
        assert_eq!(
            v["size_bytes"].as_u64().unwrap(),
            onnx_len + std::fs::metadata(&data).unwrap().len()
        );
    }

    // And back to a single file: a second history entry, same graph.
    let single = dir.path().join("single.onnx");
    let out = run_in(
        dir.path(),
        &["convert", s(&output), s(&single), "--external-data", "never"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c = onnx::load(&single).unwrap();
    assert!(a.graph == c.graph);
    assert_eq!(history_passes(&c), vec!["convert".to_string(), "convert".to_string()]);
    assert!(!dir.path().join("single.onnx.data").exists());
}

#[test]
fn convert_onto_a_folder_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = save_tiny(dir.path(), "model.onnx", ExternalData::Never);
    let folder = dir.path().join("models");
    std::fs::create_dir(&folder).unwrap();
    let before = snapshot(dir.path());
    for target in [s(&folder).to_string(), format!("{}/", s(&folder))] {
        let out = run_in(dir.path(), &["convert", s(&input), &target]);
        assert_clean_error("convert", &out, &[&target, "a folder; name the model file"]);
        assert_eq!(snapshot(dir.path()), before, "convert wrote into or beside the folder");
    }
}
