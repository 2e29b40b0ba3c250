//! What the tool records in a model's `metadata_props`: the compression history (one JSON entry
//! per pass) and the tokenizer, so that a compressed model evaluates anywhere without flags.

use serde::{Deserialize, Serialize};

use crate::onnx::proto::StringStringEntryProto;
use crate::onnx::ModelProto;

pub const HISTORY_KEY: &str = "onnx_compress.history";
pub const TOKENIZER_KEY: &str = "onnx_compress.tokenizer_json";
/// The model's class names (a JSON list, index order), copied from config.json's id2label.
pub const LABELS_KEY: &str = "onnx_compress.id2label";

/// One pass applied to the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub pass: String,
    pub tool_version: String,
    /// The pass's options, as it reported them.
    pub options: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_before: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_after: Option<usize>,
    /// Encoder MACs per sequence of 128 tokens (`executor::MAC_SEQ_LEN`), before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_after: Option<u64>,
    /// UTC time, RFC 3339 to the second.
    pub time: String,
}

fn get<'m>(model: &'m ModelProto, key: &str) -> Option<&'m str> {
    model.metadata_props.iter().find(|p| p.key() == key).map(|p| p.value())
}

fn set(model: &mut ModelProto, key: &str, value: String) {
    if let Some(p) = model.metadata_props.iter_mut().find(|p| p.key() == key) {
        p.value = Some(value);
    } else {
        model.metadata_props.push(StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value),
        });
    }
}

/// The recorded history (empty for a model this tool never wrote). A history entry that does
/// not parse is reported as an error rather than dropped.
pub fn history(model: &ModelProto) -> Result<Vec<HistoryEntry>, String> {
    match get(model, HISTORY_KEY) {
        None => Ok(vec![]),
        Some(s) => serde_json::from_str(s).map_err(|e| {
            format!("metadata '{HISTORY_KEY}' is not valid: {e}; remove that metadata entry (onnx in Python: the model's metadata_props) to start a new history")
        }),
    }
}

pub fn append_history(model: &mut ModelProto, entry: HistoryEntry) -> Result<(), String> {
    let mut h = history(model)?;
    h.push(entry);
    set(
        model,
        HISTORY_KEY,
        serde_json::to_string(&h).map_err(|e| e.to_string())?,
    );
    Ok(())
}

pub fn embedded_tokenizer(model: &ModelProto) -> Option<&str> {
    get(model, TOKENIZER_KEY)
}

/// The embedded class names, as JSON (see [`carry_labels`]).
pub fn embedded_labels(model: &ModelProto) -> Option<&str> {
    get(model, LABELS_KEY)
}

pub fn embed_tokenizer(model: &mut ModelProto, tokenizer_json: String) {
    set(model, TOKENIZER_KEY, tokenizer_json);
}

/// Appends a history entry for `pass` (this tool's version, now) to the model's metadata.
pub fn record(
    model: &mut ModelProto,
    pass: &str,
    options: serde_json::Value,
    params: Option<(usize, usize)>,
    macs: Option<(u64, u64)>,
) -> Result<(), String> {
    append_history(
        model,
        HistoryEntry {
            pass: pass.into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            options,
            params_before: params.map(|p| p.0),
            params_after: params.map(|p| p.1),
            macs_before: macs.map(|m| m.0),
            macs_after: macs.map(|m| m.1),
            time: now_utc(),
        },
    )
}

/// Embeds a tokenizer in `model`: `explicit` (replacing one embedded already), else
/// `tokenizer.json` beside `input` where none is embedded. Returns notes: when `explicit`
/// replaces another embedded tokenizer, and when the tokenizer it embeds has token ids past the
/// model's word embeddings (a text with one of them cannot run: likely another model's
/// tokenizer).
pub fn carry_tokenizer(
    model: &mut ModelProto,
    input: &std::path::Path,
    explicit: Option<&std::path::Path>,
) -> anyhow::Result<Vec<String>> {
    if explicit.is_none() {
        if let Some(text) = embedded_tokenizer(model) {
            // Carried as it is into every output: one that cannot be read fails here, not at eval.
            crate::eval::parse_tokenizer(text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: the tokenizer embedded in it cannot be read ({e}); pass --tokenizer tokenizer.json to replace it",
                    input.display()
                )
            })?;
            return Ok(vec![]);
        }
    }
    let beside = input
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("tokenizer.json");
    let path = explicit
        .map(std::path::Path::to_path_buf)
        .or_else(|| beside.is_file().then(|| beside.clone()));
    let Some(p) = path else {
        // One there that is not a file (a folder, a pipe) is not embedded: said, not an error
        // (a pass needs no tokenizer).
        return Ok(match std::fs::metadata(&beside) {
            Ok(m) if !m.is_file() => vec![format!(
                "{}: not a file (a folder, a device, a pipe or a socket): no tokenizer is embedded in the output",
                beside.display()
            )],
            _ => vec![],
        });
    };
    let flag = if explicit.is_some() { "--tokenizer " } else { "" };
    let text = crate::eval::tokenizer_text(&p, flag)?;
    let tokenizer = crate::eval::parse_tokenizer(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let rows = crate::eval::input_limits(model).vocabulary;
    let largest = tokenizer.get_vocab(true).into_values().max();
    let mut notes = Vec::new();
    if embedded_tokenizer(model).is_some_and(|old| old != text) {
        notes.push(format!(
            "--tokenizer {} replaces the tokenizer embedded in {}",
            p.display(),
            input.display()
        ));
    }
    if let (Some(rows), Some(id)) = (rows, largest) {
        if id as usize >= rows {
            notes.push(format!(
                "the tokenizer {} has token ids up to {id} but the model's word embeddings have {rows} rows: a text with a token past id {} cannot run (is it this model's tokenizer?)",
                p.display(),
                rows - 1
            ));
        }
    }
    // eval and calibration pad their batches: a tokenizer that cannot is carried with a word.
    // (A pad id past the embeddings is the note above.)
    if let Err(e) = crate::eval::pad_id(&tokenizer) {
        notes.push(format!(
            "{}: {e}: eval and calibration cannot batch texts with it",
            p.display()
        ));
    }
    embed_tokenizer(model, text);
    Ok(notes)
}

/// Embeds class names (in class order), replacing any embedded.
pub fn embed_labels(model: &mut ModelProto, names: &[String]) -> anyhow::Result<()> {
    set(model, LABELS_KEY, serde_json::to_string(names)?);
    Ok(())
}

/// Embeds the model's class names (`id2label` of the Hugging Face `config.json` beside `input`)
/// unless names are embedded already, so that `eval` maps string labels of a compressed model
/// moved anywhere. Returns a note where the config's names cannot be read (not carried).
pub fn carry_labels(model: &mut ModelProto, input: &std::path::Path) -> anyhow::Result<Option<String>> {
    use crate::data::labels::names_from_config;
    if embedded_labels(model).is_some() {
        return Ok(None);
    }
    // A config.json that cannot be read (not a file, say) is a note: a pass needs no names.
    let (p, text) = match crate::data::labels::config_beside(input) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(e) => return Ok(Some(format!("{e}; its class names are not carried into the output"))),
    };
    // Names that cannot be read are not carried (a pass needs none): said in a note.
    match names_from_config(&text) {
        // As many names as the model has outputs, else none: eval would refuse the output.
        Ok(Some((names, key))) => match crate::eval::output_width(model).filter(|_| !per_token(model)) {
            Some(w) if w != names.len() => Ok(Some(format!(
                "{}: {key} names {} classes ({}) for the model's {w} outputs; its class names are not carried into the output",
                p.display(),
                names.len(),
                crate::data::labels::few_names(&names)
            ))),
            _ => {
                set(model, LABELS_KEY, serde_json::to_string(&names)?);
                Ok(None)
            }
        },
        Ok(None) => Ok(None),
        Err(e) => Ok(Some(format!(
            "{}: {e}; its class names are not carried into the output",
            p.display()
        ))),
    }
}

/// Whether the model's predictions have a sequence axis (a headless encoder's hidden states, whose
/// last axis is the hidden size, not classes).
fn per_token(model: &ModelProto) -> bool {
    model
        .graph
        .as_ref()
        .and_then(crate::onnx::graph::prediction_value)
        .and_then(crate::onnx::graph::declared_rank)
        .is_some_and(|r| r >= 3)
}

/// `SOURCE_DATE_EPOCH` when set: seconds since 1970, a whole number from 0 up.
fn source_date_epoch() -> Option<Result<i64, String>> {
    // Set empty, it is unset (as build systems export it to mean).
    let v = std::env::var_os("SOURCE_DATE_EPOCH").filter(|v| !v.is_empty())?;
    let text = v.to_string_lossy();
    // Up to the last second of year 9999, which the time's four-digit year can write.
    const LAST: i64 = 253_402_300_799;
    Some(
        text.trim()
            .parse::<i64>()
            .ok()
            .filter(|s| (0..=LAST).contains(s))
            .ok_or_else(|| format!("SOURCE_DATE_EPOCH={text}: not a whole number of seconds since 1970 from 0 to {LAST} (year 9999), the reproducible-builds convention; set it so (`SOURCE_DATE_EPOCH=$(date +%s)`) or unset it")),
    )
}

/// Refuses a `SOURCE_DATE_EPOCH` that is set but not a time: ignored, it would leave the
/// outputs unreproducible without a word (checked by the commands that write a time).
pub fn check_source_date_epoch() -> anyhow::Result<()> {
    match source_date_epoch() {
        Some(Err(e)) => Err(anyhow::anyhow!(e)),
        _ => Ok(()),
    }
}

/// The time the tool writes, as `YYYY-MM-DDTHH:MM:SSZ`: `SOURCE_DATE_EPOCH` (seconds since
/// 1970, the reproducible-builds convention) when it is set ([`check_source_date_epoch`]
/// refuses it otherwise), so that the same command on the same input writes the same bytes;
/// else the current UTC time.
pub fn now_utc() -> String {
    let epoch = source_date_epoch().and_then(Result::ok);
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    format_utc(secs)
}

/// `secs` since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed).
pub fn format_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class names are carried from config.json only when there are as many as the model has
    /// outputs (3 names for 2 outputs were embedded, and eval of the output refused them).
    #[test]
    fn class_names_are_carried_only_for_as_many_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("m.onnx");
        let config = dir.path().join("config.json");
        let base = crate::testkit::synth::tiny_bert(&Default::default());
        std::fs::write(&config, r#"{"id2label": {"0": "a", "1": "b", "2": "c"}}"#).unwrap();
        let mut m = base.clone();
        let note = carry_labels(&mut m, &input).unwrap().unwrap();
        assert!(
            note.contains("names 3 classes (a, b, c) for the model's 2 outputs"),
            "{note}"
        );
        assert!(embedded_labels(&m).is_none());
        std::fs::write(&config, r#"{"id2label": {"0": "neg", "1": "pos"}}"#).unwrap();
        let mut m = base;
        assert_eq!(carry_labels(&mut m, &input).unwrap(), None);
        assert_eq!(embedded_labels(&m), Some(r#"["neg","pos"]"#));
    }

    #[test]
    fn history_round_trips_through_metadata() {
        let mut m = ModelProto::default();
        assert!(history(&m).unwrap().is_empty());
        let e = HistoryEntry {
            pass: "prune".into(),
            tool_version: "0.1.0".into(),
            options: serde_json::json!({"heads": 0.25}),
            params_before: Some(10),
            params_after: Some(8),
            macs_before: None,
            macs_after: None,
            time: now_utc(),
        };
        append_history(&mut m, e.clone()).unwrap();
        append_history(&mut m, e.clone()).unwrap();
        assert_eq!(history(&m).unwrap(), vec![e.clone(), e]);
        assert_eq!(m.metadata_props.len(), 1);
    }

    #[test]
    fn formats_epoch_seconds_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn now_utc_is_well_formed() {
        let t = now_utc();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
