//! Which model file a recipe means: `model.model_name` as a path (relative to the config's
//! folder), else as a Hugging Face id exported under `models/` (`models/<id>/model.onnx`, or
//! `models/<org>--<name>/model.onnx`), looked up from the current directory and from the config's
//! folder. Also recognises models out of this tool's scope (decoder-only and encoder-decoder
//! families) by their name and by the `config.json` an export leaves beside the model.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The model a run uses and how it was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedModel {
    pub path: PathBuf,
    /// `--model`, `model_name` (a path), or `models/ lookup of '<id>'`.
    pub source: String,
}

/// Families this tool does not handle: (name token, family, kind).
const OUT_OF_SCOPE: &[(&str, &str, &str)] = &[
    ("t5", "T5", "an encoder-decoder"),
    ("mt5", "mT5", "an encoder-decoder"),
    ("byt5", "ByT5", "an encoder-decoder"),
    ("longt5", "LongT5", "an encoder-decoder"),
    ("codet5", "CodeT5", "an encoder-decoder"),
    ("umt5", "UMT5", "an encoder-decoder"),
    ("bart", "BART", "an encoder-decoder"),
    ("mbart", "mBART", "an encoder-decoder"),
    ("pegasus", "Pegasus", "an encoder-decoder"),
    ("marian", "Marian", "an encoder-decoder"),
    ("opus", "Marian (opus-mt)", "an encoder-decoder"),
    ("blenderbot", "Blenderbot", "an encoder-decoder"),
    ("prophetnet", "ProphetNet", "an encoder-decoder"),
    ("led", "LED", "an encoder-decoder"),
    ("whisper", "Whisper", "an encoder-decoder"),
    ("gpt", "GPT", "a decoder-only model"),
    ("gpt2", "GPT-2", "a decoder-only model"),
    ("distilgpt2", "GPT-2", "a decoder-only model"),
    ("gptj", "GPT-J", "a decoder-only model"),
    ("llama", "Llama", "a decoder-only model"),
    ("mistral", "Mistral", "a decoder-only model"),
    ("mixtral", "Mixtral", "a decoder-only model"),
    ("qwen", "Qwen", "a decoder-only model"),
    ("gemma", "Gemma", "a decoder-only model"),
    ("phi", "Phi", "a decoder-only model"),
    ("opt", "OPT", "a decoder-only model"),
    ("bloom", "BLOOM", "a decoder-only model"),
    ("falcon", "Falcon", "a decoder-only model"),
    ("pythia", "Pythia", "a decoder-only model"),
];

const SCOPE: &str = "onnx-compress handles BERT-family encoders (encoder-only classifiers such as BERT, MiniLM, \
                     ELECTRA)";

/// The family of a name token: the token itself, or the token without a version number
/// (`gpt2` → `gpt`, `llama3` → `llama`, `qwen2.5` is split on `.` before).
fn family_of(token: &str) -> Option<(&'static str, &'static str)> {
    let t = token.to_ascii_lowercase();
    let base = t.trim_end_matches(|c: char| c.is_ascii_digit());
    let find = |want: &str| OUT_OF_SCOPE.iter().find(|(n, _, _)| *n == want);
    find(&t)
        .or_else(|| (!base.is_empty() && base.len() < t.len()).then(|| find(base)).flatten())
        .map(|&(_, family, kind)| (family, kind))
}

/// Why the hub id `name` is out of scope, when its last part (`t5-small`, `google/flan-t5-base`,
/// `openai-community/gpt2`) names a decoder-only or encoder-decoder family.
pub fn name_refusal(name: &str) -> Option<String> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let (family, kind) = last.split(['-', '_', '.']).find_map(family_of)?;
    Some(format!("'{name}' is a {family} model, {kind}; {SCOPE}"))
}

/// Why the model at `model` is out of scope, from the Hugging Face `config.json` beside it
/// (`model_type`, `is_encoder_decoder`, `is_decoder`), when there is one.
pub fn config_refusal(model: &Path) -> Option<String> {
    // (One that is not a file is named where the names are read, not here: a pipe would wait.)
    let (cfg, text) = crate::data::labels::config_beside(model).ok()??;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let model_type = v.get("model_type").and_then(|t| t.as_str()).unwrap_or("");
    let flag = |k: &str| v.get(k).and_then(|b| b.as_bool()) == Some(true);
    let (family, kind) = match family_of(model_type) {
        Some(f) => f,
        None if flag("is_encoder_decoder") => (model_type, "an encoder-decoder"),
        None if flag("is_decoder") => (model_type, "a decoder"),
        None => return None,
    };
    Some(format!(
        "{} is a {family} model, {kind} (model_type '{model_type}' in {}); {SCOPE}",
        model.display(),
        cfg.display()
    ))
}

/// Whether `name` is written as a model file (`*.onnx`) rather than an id to look up.
fn is_file_name(name: &Path) -> bool {
    name.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) || name.is_absolute()
}

/// The `models/` paths an exported hub id may live at: `models/<id>/model.onnx` and, for
/// `<org>/<name>`, `models/<org>--<name>/model.onnx`.
pub fn export_paths(id: &str) -> Vec<PathBuf> {
    let mut out = vec![Path::new("models").join(id).join("model.onnx")];
    if let Some((org, name)) = id.split_once('/') {
        if !name.contains('/') {
            out.push(Path::new("models").join(format!("{org}--{name}")).join("model.onnx"));
        }
    }
    out
}

/// The model `name` (the recipe's `model_name`) means: the file relative to `config_dir` when it
/// exists, else an export under `models/` of the current directory, then of `config_dir`. The
/// error lists the paths tried and the command that exports the model.
pub fn resolve(name: &Path, config_dir: &Path) -> Result<ResolvedModel, String> {
    let direct = config_dir.join(name);
    if direct.is_file() {
        return Ok(ResolvedModel {
            path: direct,
            source: "model_name".into(),
        });
    }
    if direct.is_dir() {
        return Err(format!(
            "{} is a folder; name the .onnx file inside it",
            direct.display()
        ));
    }
    let id = name.to_string_lossy().replace('\\', "/");
    if is_file_name(name) || id.is_empty() {
        return Err(format!(
            "{} is not a file (paths are relative to the config file)",
            direct.display()
        ));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let here = |d: &Path| d.as_os_str().is_empty() || d == Path::new(".") || d == cwd;
    let mut bases = vec![Path::new("")];
    if !here(config_dir) {
        bases.push(config_dir);
    }
    for base in &bases {
        for rel in export_paths(&id) {
            let p = base.join(rel);
            if p.is_file() {
                return Ok(ResolvedModel {
                    path: p,
                    source: format!("models/ lookup of '{id}'"),
                });
            }
        }
    }
    let rels: Vec<String> = export_paths(&id).iter().map(|p| p.display().to_string()).collect();
    let mut wheres = format!("the current directory ({})", cwd.display());
    if bases.len() > 1 {
        wheres += &format!(" nor in the config's folder ({})", config_dir.display());
    }
    Err(format!(
        "'{id}' is neither a file ({}) nor an exported model: no {} in {wheres}; export it with \
         `python scripts/export_hf.py {id} models/{id}` (from the folder you run in; needs internet), \
         or give a model file with --model PATH",
        direct.display(),
        rels.join(" or "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_scope_families_are_recognised_by_name() {
        for n in [
            "t5-small",
            "google/flan-t5-base",
            "google-t5/t5-small",
            "facebook/bart-large-mnli",
            "openai-community/gpt2",
            "distilgpt2",
            "meta-llama/Llama-3.1-8B",
            "Qwen/Qwen2.5-0.5B",
            "microsoft/phi-2",
            "facebook/opt-125m",
        ] {
            assert!(name_refusal(n).is_some(), "{n}");
        }
        let t5 = name_refusal("t5-small").unwrap();
        assert!(
            t5.contains("'t5-small' is a T5 model, an encoder-decoder") && t5.contains("BERT"),
            "{t5}"
        );
        for n in [
            "textattack/bert-base-uncased-SST-2",
            "textattack/bert-base-uncased-MRPC",
            "distilbert-base-uncased",
            "roberta-base",
            "microsoft/MiniLM-L12-H384-uncased",
            "google/electra-small-discriminator",
            "philschmid/tiny-bert-sst2-distilled",
            "cross-encoder/ms-marco-MiniLM-L-6-v2",
            "optimum/bert-base",
        ] {
            assert_eq!(name_refusal(n), None, "{n}");
        }
    }

    #[test]
    fn export_paths_cover_both_layouts() {
        assert_eq!(
            export_paths("textattack/bert-base-uncased-SST-2"),
            [
                PathBuf::from("models/textattack/bert-base-uncased-SST-2/model.onnx"),
                PathBuf::from("models/textattack--bert-base-uncased-SST-2/model.onnx")
            ]
        );
        assert_eq!(export_paths("t5-small"), [PathBuf::from("models/t5-small/model.onnx")]);
    }
}
