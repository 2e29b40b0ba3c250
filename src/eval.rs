//! `eval`: GLUE dev-set accuracy and speed of a model, measured the way the reference experiment
//! measured (first `warmup` batches untimed, the next `measure` batches timed one by one, forward
//! pass only), with dynamic padding per batch and the predictions in file order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use serde::Serialize;
use tokenizers::utils::truncation::truncate_encodings;
use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::data::{self, Labels};
use crate::glue::{self, Metrics, Prediction, Task};
use crate::history;
use crate::onnx;
use crate::runtime::{self, Batch, Device, SessionOptions};

/// Which examples to evaluate on.
#[derive(Debug, Clone)]
pub enum EvalData {
    /// A GLUE task's `<split>.tsv` under a GLUE folder (`<dir>/<task>/<split>.tsv`).
    Glue { dir: PathBuf, split: String },
    /// A data file in any format ([`crate::data`]); its `task`, when set, is a preset.
    File(data::Source),
}

impl EvalData {
    /// The file read for `task`: the data file, or the split's file in the GLUE folder (`None`
    /// where the folder has none, or no task says which).
    pub fn file(&self, task: Option<Task>) -> Option<PathBuf> {
        match self {
            EvalData::File(source) => Some(source.path.clone()),
            EvalData::Glue { dir, split } => task?.data_file(dir, split).ok(),
        }
    }
}

/// How messages name what to change: a command's flags, or a recipe's keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Words {
    /// `--max-length`, `--tokenizer`.
    #[default]
    Flags,
    /// A command without `--tokenizer` (`auto`): the tokenizer is the model's.
    FlagsWithoutTokenizer,
    /// A recipe: `data.max_input_length`, the tokenizer beside the model.
    Recipe,
}

impl Words {
    /// What sets the input length.
    pub fn max_length(self) -> &'static str {
        match self {
            Words::Recipe => "data.max_input_length",
            _ => "--max-length",
        }
    }

    /// What sets the examples per batch.
    pub fn batch_size(self) -> &'static str {
        match self {
            Words::Recipe => "data.batch_size",
            _ => "--batch-size",
        }
    }

    /// What sets ONNX Runtime's threads.
    pub fn threads(self) -> &'static str {
        match self {
            Words::Recipe => "eval.threads",
            _ => "--threads",
        }
    }

    /// What names the classes.
    pub fn labels(self) -> &'static str {
        match self {
            Words::Recipe => "data.labels",
            _ => "--labels",
        }
    }

    /// How to give the model's class names: "pass --labels with ..." / "set data.labels to ...";
    /// `count` names how many where it is known.
    pub fn give_labels(self, count: Option<usize>) -> String {
        let n = count.map_or(String::new(), |w| format!(" {w}"));
        match self {
            Words::Recipe => format!("set data.labels to the model's{n} class names in class order"),
            _ => format!("pass --labels with the model's{n} class names in class order"),
        }
    }

    /// How to read a file with the model's own classes rather than a task's.
    pub fn leave_out_task(self) -> &'static str {
        match self {
            Words::Recipe => "remove data.task and name the file in data.file",
            _ => "leave out --task",
        }
    }

    /// What to do when no tokenizer is found.
    pub fn give_tokenizer(self) -> &'static str {
        match self {
            Words::Flags => "pass --tokenizer PATH/tokenizer.json",
            _ => "put the model's tokenizer.json beside it, or embed it (onnx-compress convert MODEL OUT --tokenizer PATH/tokenizer.json)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// A GLUE task: its data layout, labels and metrics. `None`: the user's own labels.
    pub task: Option<Task>,
    pub data: EvalData,
    /// `--labels`: the model's class names, comma-separated in class order.
    pub labels: Option<String>,
    pub batch_size: usize,
    pub max_length: usize,
    pub warmup: usize,
    pub measure: usize,
    pub limit: Option<usize>,
    /// Sort by length before batching (predictions are still reported in file order).
    pub bucket: bool,
    pub tokenizer: Option<PathBuf>,
    pub session: SessionOptions,
    /// How errors name the settings.
    pub words: Words,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Batches run (warm-up, timed and any past the measured ones).
    pub batches: usize,
    pub warmup_batches: usize,
    pub timed_batches: usize,
    pub timed_samples: usize,
    pub timed_seconds: f64,
    /// Timed seconds / timed batches × 1000 (the reference's "Avg Forward (ms/batch)").
    pub ms_per_batch: Option<f64>,
    /// Timed samples / timed seconds (the reference's "Throughput (samples/s)").
    pub samples_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The GLUE task, or `null` for the user's own labels.
    pub task: Option<Task>,
    /// The GLUE split (`dev`, ...), or `null` for a data file.
    pub split: Option<String>,
    pub model: PathBuf,
    pub data_file: PathBuf,
    /// The columns read.
    pub columns: data::Chosen,
    /// How labels were read: a GLUE task's, the model's classes (with their names and where they
    /// came from), or scores.
    pub labels: Labels,
    /// Where the model names the task's classes in another order: its outputs read by name.
    pub class_order: Option<ClassOrder>,
    pub examples: usize,
    pub batches: usize,
    pub batch_size: usize,
    pub max_length: usize,
    pub bucket: bool,
    pub device: Device,
    pub threads: usize,
    /// Whether ONNX Runtime flushed denormal floats to zero (the default; `--keep-denormals`).
    pub denormals_flushed: bool,
    pub metrics: Metrics,
    pub timing: Timing,
    pub size_bytes: u64,
    pub size_mb: f64,
    pub size_mib: f64,
    /// Seconds spent tokenizing (each padded batch is made as it runs).
    pub tokenize_seconds: f64,
    /// Seconds in ONNX Runtime over all batches (timed or not).
    pub forward_seconds: f64,
    pub wall_seconds: f64,
    pub tokenizer: String,
    pub ort_library: PathBuf,
    /// Where the examples with an empty or blank text (or second text) are, in file order
    /// ("line 3"; "row 7" in a Parquet file): scored on the tokenizer's special tokens alone.
    pub empty_texts: Vec<String>,
    /// What the reader should know about the numbers (also on stderr): a tokenizer that adds no
    /// special tokens ([`special_tokens_note`]).
    pub notes: Vec<String>,
    /// One per example, in file order: the class (or the score for STS-B).
    pub predictions: Vec<serde_json::Value>,
}

/// Reads a tokenizer.json; the error names the file (after `flag`, e.g. "--tokenizer ").
fn read_tokenizer(path: &Path, flag: &str) -> Result<Tokenizer> {
    let text = tokenizer_text(path, flag)?;
    parse_tokenizer(&text).map_err(|e| anyhow!("{flag}{}: {e}", path.display()))
}

/// The text of a tokenizer.json; a folder or a file that is not text is named as such.
pub fn tokenizer_text(path: &Path, flag: &str) -> Result<String> {
    let at = || format!("{flag}{}", path.display());
    if path.is_dir() {
        bail!("{}: a folder; name the tokenizer.json in it", at());
    }
    // A pipe would be waited on, a device (/dev/zero) read until memory runs out.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        bail!(
            "{}: not a file (a device, a pipe or a socket); name the tokenizer.json",
            at()
        );
    }
    let bytes = std::fs::read(path).with_context(at)?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{}: not a tokenizer.json (not UTF-8 text)", at()))
}

/// A tokenizer from the text of a tokenizer.json; the error says whether the text is JSON at all
/// (tokenizers' own message for JSON of another kind, a `config.json`, names a syntax error).
pub fn parse_tokenizer(text: &str) -> Result<Tokenizer, String> {
    Tokenizer::from_bytes(text.as_bytes()).map_err(|e| {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.get("model").is_none() => {
                "valid JSON but not a tokenizer.json (no \"model\" key: a config.json? the tokenizer is the tokenizer.json beside it)".to_string()
            }
            Ok(_) => {
                // serde's words for a part of it of no known form: "data did not match any
                // variant of untagged enum ModelUntagged at line 1 column 1574".
                let e = e.to_string();
                let why = match e.find("did not match any variant of untagged enum") {
                    Some(_) => format!(
                        "a part of it is of no form tokenizers knows{}",
                        e.find(" at line").map_or("", |at| &e[at..])
                    ),
                    None => e,
                };
                format!("not a tokenizer.json that Hugging Face tokenizers reads ({why})")
            }
            Err(j) => format!("not a tokenizer.json: not valid JSON ({j})"),
        }
    })
}

/// The files a command may read for the model at `model_path` (each with what it is): its
/// external data files, the tokenizers looked for beside it and its `config.json`. None of them
/// may be written over.
pub fn files_read_with(model_path: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut files: Vec<(PathBuf, &'static str)> = crate::onnx::io::external_files(model_path)
        .into_iter()
        .map(|f| (f, "the model's external data"))
        .collect();
    files.extend(tokenizer_candidates(model_path).map(|t| (t, "the model's tokenizer")));
    files.push((crate::data::labels::config_path(model_path), "the model's config.json"));
    files
}

/// Where a model's tokenizer is looked for beside it: `tokenizer.json`, `<model stem>.tokenizer.json`.
fn tokenizer_candidates(model_path: &Path) -> [PathBuf; 2] {
    let dir = model_path.parent().unwrap_or(Path::new("."));
    let stem = model_path.file_stem().unwrap_or_default().to_string_lossy();
    [dir.join("tokenizer.json"), dir.join(format!("{stem}.tokenizer.json"))]
}

/// Finds the tokenizer: `--tokenizer`, then the one embedded in the model's metadata, then
/// `tokenizer.json` beside the model, then `<model stem>.tokenizer.json`. Without one, the error
/// says what to do in `words`.
pub fn load_tokenizer(
    model_path: &Path,
    model: &onnx::ModelProto,
    explicit: Option<&Path>,
    words: Words,
) -> Result<(Tokenizer, String)> {
    if let Some(p) = explicit {
        let t = read_tokenizer(p, "--tokenizer ")?;
        return Ok((t, p.display().to_string()));
    }
    if let Some(json) = history::embedded_tokenizer(model) {
        let t = parse_tokenizer(json).map_err(|e| {
            anyhow!(
                "{}: the tokenizer embedded in it cannot be read ({e}); {}",
                model_path.display(),
                match words {
                    Words::Flags => "pass --tokenizer PATH/tokenizer.json",
                    _ => "embed the model's own (onnx-compress convert MODEL OUT --tokenizer PATH/tokenizer.json)",
                }
            )
        })?;
        return Ok((t, EMBEDDED.into()));
    }
    let candidates = tokenizer_candidates(model_path);
    if let Some(c) = candidates.iter().find(|c| c.is_file()) {
        let t = read_tokenizer(c, "")?;
        return Ok((t, c.display().to_string()));
    }
    // One there that is not a file (a folder, a pipe), and no other: named, not read as none.
    if let Some(c) = candidates.iter().find(|c| c.exists()) {
        bail!(
            "{}: not a file (a folder, a device, a pipe or a socket), where the model's tokenizer is looked for; {}",
            c.display(),
            words.give_tokenizer()
        );
    }
    bail!(
        "no tokenizer for {}: none embedded in the model and no {} or {}; {}",
        model_path.display(),
        candidates[0].display(),
        candidates[1].display(),
        words.give_tokenizer()
    )
}

/// A note where `tokenizer` (from `source`) adds no special tokens to a text: a tokenizer.json
/// without its `post_processor` encodes without [CLS]/[SEP] (<s>/</s>), which every BERT-family
/// classifier was fine-tuned with (the shared SST-2 model loses about 2 points so).
pub fn special_tokens_note(tokenizer: &Tokenizer, source: &str) -> Option<String> {
    let mut t = tokenizer.clone();
    // Padding would mark pad tokens as special.
    t.with_padding(None);
    let enc = t.encode(("a", "b"), true).ok()?;
    if enc.get_special_tokens_mask().contains(&1) {
        return None;
    }
    let fix = if source == EMBEDDED {
        "embed the model's own tokenizer.json in its place (onnx-compress convert MODEL OUT --tokenizer PATH/tokenizer.json)"
    } else {
        "use the tokenizer.json saved with the model"
    };
    Some(format!(
        "the tokenizer ({source}) {NO_SPECIAL_TOKENS} (no post_processor, or one that adds none): texts are encoded without [CLS]/[SEP] (or <s>/</s>), which a classifier fine-tuned with them reads less accurately; {fix}"
    ))
}

/// What [`special_tokens_note`] says, after the tokenizer's source.
const NO_SPECIAL_TOKENS: &str = "adds no special tokens";

/// Where [`load_tokenizer`] says a tokenizer embedded in the model came from.
const EMBEDDED: &str = "embedded in the model";

/// Whether notes `a` and `b` say the same, the tokenizer's source in a [`special_tokens_note`]
/// aside (a pass embeds the tokenizer it read: the evaluation after it reads the same one).
pub fn same_note(a: &str, b: &str) -> bool {
    let special = |n: &str| n.starts_with("the tokenizer (") && n.contains(NO_SPECIAL_TOKENS);
    a == b || (special(a) && special(b))
}

/// Pad tokens looked up in the vocabulary, in this order, when tokenizer.json sets no `padding`:
/// BERT's, T5/ALBERT-style sentencepiece models', and GPT-NeoX's.
pub const KNOWN_PAD_TOKENS: [&str; 3] = ["[PAD]", "<pad>", "<|padding|>"];

/// The id that pads batches: `padding.pad_id` when tokenizer.json sets `padding`, else the id of
/// the first of [`KNOWN_PAD_TOKENS`] in the vocabulary. Call it before [`tokenize`], which turns
/// the tokenizer's own padding off.
pub fn pad_id(tokenizer: &Tokenizer) -> Result<i64> {
    if let Some(p) = tokenizer.get_padding() {
        return Ok(i64::from(p.pad_id));
    }
    KNOWN_PAD_TOKENS
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .map(i64::from)
        .ok_or_else(|| {
            anyhow!(
                "no pad token: tokenizer.json sets no \"padding\" and its vocabulary has none of {}; \
                 add \"padding\": {{\"pad_id\": ID, \"pad_token\": TOKEN, ...}} to tokenizer.json",
                KNOWN_PAD_TOKENS.join(", ")
            )
        })
}

/// [`pad_id`], checked against the model's word-embedding rows (`vocabulary`,
/// [`InputLimits::vocabulary`]): a pad id past them is a tokenizer that is not the model's.
pub fn model_pad_id(tokenizer: &Tokenizer, vocabulary: Option<usize>) -> Result<i64> {
    let pad = pad_id(tokenizer)?;
    match vocabulary {
        Some(rows) if pad >= rows as i64 => bail!(
            "the tokenizer pads with id {pad}, past the {rows} rows of the model's word embeddings: \
             this tokenizer is not the model's; use the model's own tokenizer.json"
        ),
        _ => Ok(pad),
    }
}

/// `text`'s first `cap` bytes at most, or its last where the tokenizer truncates on the left
/// (`direction`), cut at a character boundary.
fn cut(text: &str, cap: usize, direction: TruncationDirection) -> &str {
    if text.len() <= cap {
        return text;
    }
    let mut at = match direction {
        TruncationDirection::Right => cap,
        TruncationDirection::Left => text.len() - cap,
    };
    while !text.is_char_boundary(at) {
        match direction {
            TruncationDirection::Right => at -= 1,
            TruncationDirection::Left => at += 1,
        }
    }
    match direction {
        TruncationDirection::Right => &text[..at],
        TruncationDirection::Left => &text[at..],
    }
}

/// Tokenized examples: ids, type ids, in file order.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<Vec<i64>>,
    pub type_ids: Vec<Vec<i64>>,
}

/// Tokenizes `(text, pair)` examples of `file` (named in errors), truncating each to `max_length`.
/// A token id at or past `vocabulary` (the model's word-embedding rows, [`InputLimits`]) is an
/// error naming the text and the token: ONNX Runtime's own is "indices element out of data
/// bounds" — a tokenizer that is not the model's.
pub fn tokenize<'a>(
    tokenizer: &mut Tokenizer,
    texts: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    file: &Path,
    max_length: usize,
    vocabulary: Option<usize>,
) -> Result<Encoded> {
    // The side cut is the tokenizer.json's own ("truncation": {"direction": "Left"}), as
    // transformers takes it where tokenizer_config.json sets no `truncation_side` (that file is
    // not read); its length and strategy give way to `max_length`, longest first.
    let direction = tokenizer
        .get_truncation()
        .map_or(TruncationDirection::Right, |t| t.direction);
    // A text is cut at `cap` bytes first: the tokenizer keeps ~140 bytes of state per byte of
    // text before it truncates (a 200 MB field ran it out of memory), and `max_length` tokens lie
    // far within the cut (256 bytes a token; a word past 100 characters is one [UNK] token). (Of
    // a pair of two texts both past it, which is the longer, the one that gets the odd token of
    // the budget, is then judged on the cut texts.)
    let cap = (max_length * 256).max(1 << 20);
    let texts: Vec<(&str, Option<&str>)> = texts
        .map(|(a, b)| (cut(a, cap, direction), b.map(|b| cut(b, cap, direction))))
        .collect();
    let fail = |e: tokenizers::Error| anyhow!("tokenizing {}: {e}", file.display());
    let pairs = texts.iter().any(|t| t.1.is_some());
    // The special tokens take their place within `max_length`, and some text must fit beside
    // them: below them the tokenizer would not truncate at all, and sequences past the model's
    // positions would fail in ONNX Runtime.
    let added = |pair: bool| {
        use tokenizers::PostProcessor;
        tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(pair))
    };
    let (special, pair_special) = (added(pairs), added(true));
    if max_length <= special {
        bail!(
            "a maximum length of {max_length} tokens (--max-length) leaves no room for text beside the {special} \
             special tokens the tokenizer adds to each {}: set it to {} or more",
            if pairs { "pair" } else { "text" },
            special + 1
        );
    }
    let params = TruncationParams {
        direction,
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    };
    tokenizer
        .with_truncation(Some(params.clone()))
        .map_err(|e| anyhow!("tokenizer truncation at {max_length}: {e}"))?;
    tokenizer.with_padding(None);
    // Pairs: each text encoded whole (the second as type 1, as the tokenizer encodes a pair),
    // then truncated longest first and given its special tokens, as Python's tokenizers and
    // transformers do. The crate's own pair encoding (0.23.2) stops reading each text near
    // `max_length` first, so two texts both past it look equally long and the odd budget's
    // spare token can go to the shorter one. The cut-off pieces are dropped before the special
    // tokens are added: the crate would pair every piece of one with every piece of the other
    // (two texts of 8000 words at `max_length` 64 took 6 GB).
    let pair_budget = TruncationParams {
        max_length: max_length.saturating_sub(pair_special),
        ..params
    };
    let whole = if pairs {
        let mut whole = tokenizer.clone();
        whole
            .with_truncation(None)
            .map_err(|e| anyhow!("tokenizer without truncation: {e}"))?;
        Some(whole)
    } else {
        None
    };
    let mut out = Encoded {
        ids: Vec::with_capacity(texts.len()),
        type_ids: Vec::with_capacity(texts.len()),
    };
    // A few thousand texts at a time: the tokenizer's encodings (tokens, offsets, masks) take
    // several times the ids they are kept for (held for every text, 1.5 KB an SST-2 sentence).
    for (c, chunk) in texts.chunks(ENCODE_CHUNK).enumerate() {
        let enc = if let Some(whole) = &whole {
            chunk
                .iter()
                .map(|&(a, b)| match b {
                    Some(b) => encode_pair(whole, (a, b), &pair_budget),
                    None => tokenizer.encode(a, true),
                })
                .collect::<tokenizers::Result<Vec<_>>>()
                .map_err(fail)?
        } else {
            let inputs: Vec<EncodeInput> = chunk.iter().map(|&(a, _)| EncodeInput::Single(a.into())).collect();
            tokenizer.encode_batch(inputs, true).map_err(fail)?
        };
        if let Some(rows) = vocabulary {
            let past = enc.iter().enumerate().find_map(|(i, e)| {
                let k = e.get_ids().iter().position(|&id| id as usize >= rows)?;
                Some((i, e.get_ids()[k], e.get_tokens()[k].clone()))
            });
            if let Some((i, id, token)) = past {
                let text = texts[c * ENCODE_CHUNK + i].0;
                let short: String = text.chars().take(60).collect();
                let more = if short.len() < text.len() { "…" } else { "" };
                bail!(
                    "{}: the text {short:?}{more} gives token {token:?}, id {id}, past the {rows} rows of the model's word \
                     embeddings: this tokenizer is not the model's; use the model's own tokenizer.json",
                    file.display()
                );
            }
        }
        let wide = |v: &[u32]| v.iter().map(|&i| i64::from(i)).collect::<Vec<i64>>();
        out.ids.extend(enc.iter().map(|e| wide(e.get_ids())));
        out.type_ids.extend(enc.iter().map(|e| wide(e.get_type_ids())));
    }
    Ok(out)
}

/// The pair `(a, b)` encoded by `whole` (a tokenizer that does not truncate), each text whole
/// (the second as type 1, as the tokenizer encodes a pair), cut to `budget` (the tokens left
/// after the special tokens), the cut-off pieces dropped, then given its special tokens.
fn encode_pair(whole: &Tokenizer, (a, b): (&str, &str), budget: &TruncationParams) -> tokenizers::Result<Encoding> {
    let (a, mut b) = (whole.encode(a, false)?, whole.encode(b, false)?);
    b.set_type_ids(vec![1; b.len()]);
    let (mut a, b) = truncate_encodings(a, Some(b), budget)?;
    let mut b = b.ok_or("truncation dropped the pair's second text")?;
    a.take_overflowing();
    b.take_overflowing();
    whole.post_process(a, Some(b), true)
}

/// Texts tokenized at once by [`tokenize`] (its encodings are dropped after each such chunk).
const ENCODE_CHUNK: usize = 4096;

/// Pads the given examples to their longest member.
pub fn make_batch(enc: &Encoded, rows: &[usize], pad_id: i64) -> Batch {
    let seq = rows.iter().map(|&r| enc.ids[r].len()).max().unwrap_or(0).max(1);
    let mut input_ids = Array2::from_elem((rows.len(), seq), pad_id);
    let mut attention_mask = Array2::zeros((rows.len(), seq));
    let mut token_type_ids = Array2::zeros((rows.len(), seq));
    for (b, &r) in rows.iter().enumerate() {
        for (s, (&id, &tt)) in enc.ids[r].iter().zip(&enc.type_ids[r]).enumerate() {
            input_ids[[b, s]] = id;
            attention_mask[[b, s]] = 1;
            token_type_ids[[b, s]] = tt;
        }
    }
    Batch {
        input_ids,
        attention_mask,
        token_type_ids,
    }
}

/// Examples' padded batches, each made when it runs: made all at once they held about 3 KB a
/// row before the first ran (a million rows: 3.4 GB), where the tokens alone take a sixth of it.
#[derive(Debug, Clone)]
pub struct Batches {
    enc: Encoded,
    /// The examples (indexes into `enc`) of each batch, in run order.
    chunks: Vec<Vec<usize>>,
    pad: i64,
}

impl Batches {
    /// `enc`'s examples in batches of `size`, in file order or, with `bucket`, by length
    /// ([`batch_order`], [`run_order`]), padded with `pad`.
    pub fn new(enc: Encoded, size: usize, bucket: bool, pad: i64) -> Batches {
        let order = batch_order(&enc, bucket);
        let made: Vec<&[usize]> = order.chunks(size.max(1)).collect();
        let chunks = run_order(made.len(), bucket)
            .into_iter()
            .map(|c| made[c].to_vec())
            .collect();
        Batches { enc, chunks, pad }
    }

    /// `enc`'s examples in batches of `size` that each hold examples of one length, for a model
    /// that reads no attention mask (padding would change its outputs): by length, run in
    /// [`run_order`]'s shuffle as bucketed batches are.
    pub fn one_length(enc: Encoded, size: usize, pad: i64) -> Batches {
        let order = batch_order(&enc, true);
        let made = one_length_chunks(&order, &enc, size);
        let chunks = run_order(made.len(), true)
            .into_iter()
            .map(|c| made[c].to_vec())
            .collect();
        Batches { enc, chunks, pad }
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Each batch's examples and the batch, made as it is reached.
    pub fn iter(&self) -> impl Iterator<Item = (&[usize], Batch)> + '_ {
        self.chunks
            .iter()
            .map(|rows| (rows.as_slice(), make_batch(&self.enc, rows, self.pad)))
    }

    /// The widest batch's tokens (its longest example's, at least 1 as [`make_batch`] pads).
    pub fn widest(&self) -> usize {
        self.enc.ids.iter().map(Vec::len).max().map_or(0, |n| n.max(1))
    }

    /// The largest token id a batch holds: the examples' and, where a batch pads, the pad id.
    pub fn largest_id(&self) -> Option<i64> {
        let padded = self.chunks.iter().any(|rows| {
            let len = |&r: &usize| self.enc.ids[r].len();
            rows.iter().map(len).min() != rows.iter().map(len).max() || rows.iter().any(|r| len(r) == 0)
        });
        let ids = self.enc.ids.iter().flatten().copied();
        ids.chain(padded.then_some(self.pad)).max()
    }
}

/// `rows` (examples of `enc`, by length) in chunks of at most `size` that each hold examples of
/// one length: the batches of a model that reads no attention mask.
pub fn one_length_chunks<'a>(rows: &'a [usize], enc: &Encoded, size: usize) -> Vec<&'a [usize]> {
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..=rows.len() {
        let len = |r: usize| enc.ids[rows[r]].len();
        if k == rows.len() || k - start == size.max(1) || len(k) != len(start) {
            out.push(&rows[start..k]);
            start = k;
        }
    }
    out
}

/// The order in which examples are batched: file order, or by length (stable) with `bucket`.
pub fn batch_order(enc: &Encoded, bucket: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..enc.ids.len()).collect();
    if bucket {
        order.sort_by_key(|&i| enc.ids[i].len());
    }
    order
}

/// The order in which `n` batches run: as made, or, bucketed, a fixed shuffle of them. Batches
/// made by length run shortest first otherwise, and the timed ones (after the warm-up) would be
/// the shortest of all, not a sample of every length. The order changes no prediction: each batch
/// holds the same examples.
pub fn run_order(n: usize, bucket: bool) -> Vec<usize> {
    if bucket {
        crate::calib::draw_order(n, 0)
    } else {
        (0..n).collect()
    }
}

/// Percentile with linear interpolation between closest ranks (numpy's default).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// The first example of a batch whose `labels` logits (in `logits`, row by row) hold a NaN or
/// an infinity: its index in `rows` and the words for its logits (`logits contain NaN/Inf: NaN,
/// 0.25`).
pub fn non_finite(logits: &[f32], labels: usize, rows: &[usize]) -> Option<(usize, String)> {
    (0..rows.len()).find_map(|k| {
        let row = &logits[k * labels..(k + 1) * labels];
        row.iter().any(|v| !v.is_finite()).then(|| {
            let shown: Vec<String> = row.iter().map(f32::to_string).collect();
            (k, format!("logits contain NaN/Inf: {}", shown.join(", ")))
        })
    })
}

/// The examples of a batch for messages, numbered from 0 in file order: `examples 96–127`, or
/// `32 examples from 5 to 980` when bucketing by length gathered them from across the file.
pub fn describe_rows(rows: &[usize]) -> String {
    let (Some(&first), Some(&last)) = (rows.iter().min(), rows.iter().max()) else {
        return "no examples".into();
    };
    if last - first + 1 == rows.len() {
        if first == last {
            format!("example {first}")
        } else {
            format!("examples {first}–{last}")
        }
    } else {
        format!("{} examples from {first} to {last}", rows.len())
    }
}

/// The width of the model's predictions ([`onnx::graph::prediction_value`]) when the graph
/// states it (`[batch, labels]`).
pub fn output_width(model: &onnx::ModelProto) -> Option<usize> {
    use crate::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    let out = onnx::graph::prediction_value(model.graph.as_ref()?)?;
    match onnx::graph::tensor_type(out)?.shape.as_ref()?.dim.last()?.value {
        Some(Dim::DimValue(v)) if v > 0 => usize::try_from(v).ok(),
        _ => None,
    }
}

/// A model whose output has a sequence axis ([batch, sequence, hidden]: an encoder without a
/// classifier, as sentence-embedding models are) has no predictions to evaluate or compare
/// (`eval`, `diff`) or to choose by (`auto`); `command` names the refusing command.
pub(crate) fn refuse_headless(model_path: &Path, proto: &onnx::ModelProto, command: &str) -> Result<()> {
    let Some(out) = proto.graph.as_ref().and_then(onnx::graph::prediction_value) else {
        return Ok(());
    };
    let rank = crate::onnx::graph::declared_rank(out);
    if rank.is_some_and(|r| r >= 3) {
        bail!(
            "{}: its output '{}' is per token (rank {}): a headless encoder; {command} needs a classifier with [batch, labels] logits (compress it with any pass, evaluate it with a head on top)",
            model_path.display(),
            out.name(),
            rank.unwrap_or(0)
        );
    }
    Ok(())
}

/// Refuses a model whose predictions are not float32 (a half-precision export's float16 logits),
/// naming the type, before any work: reading them failed after the first batch in ONNX Runtime's
/// words ("Cannot extract Tensor<f32> from Tensor<f16>").
fn refuse_non_float_output(model_path: &Path, proto: &onnx::ModelProto) -> Result<()> {
    use crate::onnx::proto::tensor_proto::DataType;
    let Some(out) = proto.graph.as_ref().and_then(onnx::graph::prediction_value) else {
        return Ok(());
    };
    match onnx::graph::tensor_type(out).and_then(|t| t.elem_type) {
        Some(ty) if ty != DataType::Float as i32 => bail!(
            "{}: its output '{}' holds {} values, where eval reads float32 logits: evaluate the float32 model \
             (a half-precision export computes and outputs float16; `quantize --mode fp16` keeps float32 inputs and outputs)",
            model_path.display(),
            out.name(),
            onnx::tensor::dtype_name(ty)
        ),
        _ => Ok(()),
    }
}

/// Whether `proto` takes an `attention_mask` input: without one, padding a batch changes the
/// outputs of its shorter examples.
pub fn takes_attention_mask(proto: &onnx::ModelProto) -> bool {
    let Some(g) = proto.graph.as_ref() else { return false };
    g.input
        .iter()
        .any(|i| i.name() == "attention_mask" && !g.initializer.iter().any(|t| t.name() == i.name()))
}

/// Refuses a model whose token inputs have a fixed shape, or elements other than integers,
/// before any work: ONNX Runtime refuses it at the first batch of another size (the session, a
/// float input), after `run` had written its passes' output.
pub(crate) fn refuse_unfed_inputs(model_path: &Path, proto: &onnx::ModelProto) -> Result<()> {
    use crate::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    for i in proto.graph.iter().flat_map(|g| &g.input) {
        if !matches!(i.name(), "input_ids" | "attention_mask" | "token_type_ids") {
            continue;
        }
        let Some(t) = onnx::graph::tensor_type(i) else {
            continue;
        };
        let dims: Vec<i64> = t
            .shape
            .iter()
            .flat_map(|s| &s.dim)
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) => v,
                _ => -1,
            })
            .collect();
        if let Some(why) = crate::runtime::fixed_shape(i.name(), &dims) {
            bail!("{}: {why}", model_path.display());
        }
        use crate::onnx::proto::tensor_proto::DataType;
        if let Some(ty) = t
            .elem_type
            .filter(|ty| ![DataType::Int64 as i32, DataType::Int32 as i32].contains(ty))
        {
            let why = crate::runtime::not_integer(i.name(), &onnx::tensor::dtype_name(ty));
            bail!("{}: {why}", model_path.display());
        }
    }
    Ok(())
}

/// How the labels of a data file are read for the model at `model_path`: `task`'s, else the
/// model's classes (named by `labels`, `--labels`, or the model) or scores.
pub fn labels_of(
    model_path: &Path,
    proto: &onnx::ModelProto,
    task: Option<Task>,
    labels: Option<&str>,
    words: Words,
) -> Result<Labels> {
    // Under a task, --labels names the model's outputs ([`task_order`]); the labels are the task's.
    if let Some(t) = task {
        return Ok(Labels::Glue(t));
    }
    let width = output_width(proto);
    let names = data::model_labels(model_path, proto, labels, words.labels()).map_err(|e| match labels {
        Some(_) => anyhow!(e),
        None => anyhow!("{e}; or {}", words.give_labels(None)),
    })?;
    if width == Some(1) {
        if let (Some(n), Some(_)) = (names, labels) {
            bail!(
                "{} names {} classes but {} has one output (a regression: labels are numbers)",
                words.labels(),
                n.names.len(),
                model_path.display()
            );
        }
        return Ok(Labels::Scores);
    }
    match names {
        Some(n) => {
            if let Some(w) = width.filter(|&w| w != n.names.len()) {
                bail!(
                    "{} has {w} outputs but {} class names ({}) from {}; {}",
                    model_path.display(),
                    n.names.len(),
                    crate::data::labels::few_names(&n.names),
                    n.source,
                    words.give_labels(Some(w))
                );
            }
            Ok(Labels::Classes {
                names: Some(n.names),
                source: n.source,
            })
        }
        None => Ok(Labels::Classes {
            names: None,
            source: format!(
                "no {}, no names embedded in the model, no config.json with id2label beside it",
                words.labels()
            ),
        }),
    }
}

/// Under a task, the model's outputs in the task's class order: where the model names its classes
/// (embedded by a pass, or `id2label` of the `config.json` beside it) with the task's names in
/// another order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassOrder {
    /// The task's class `j` (in `diff` without a task: model A's class `j`) is the model's
    /// output `outputs[j]`.
    pub outputs: Vec<usize>,
    /// The model's class names, in its output order.
    pub names: Vec<String>,
    /// Where the names came from.
    pub source: String,
}

impl ClassOrder {
    /// One example's logits in the task's class order.
    pub fn apply(&self, row: &[f32]) -> Vec<f32> {
        self.outputs.iter().map(|&o| row[o]).collect()
    }
}

/// Whether two class names are one name: alike in any case, `-` or a space for `_`.
pub fn same_class_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().to_lowercase().replace(['-', ' '], "_");
    norm(a) == norm(b)
}

/// The task class a model's class name names: the same name ([`same_class_name`]),
/// else the one task name it begins (3 letters at least: "neg", "pos"), else the task's own label
/// for a class (SST-2's "1": the model's class named "1" is SST-2's label 1, positive).
fn task_class_named(task: Task, name: &str) -> Option<usize> {
    let task_names = task.class_names()?;
    if let Some(j) = task_names.iter().position(|t| same_class_name(t, name)) {
        return Some(j);
    }
    let norm = |s: &str| s.trim().to_lowercase().replace(['-', ' '], "_");
    let wanted = norm(name);
    let begun: Vec<usize> = (0..task_names.len())
        .filter(|&j| wanted.len() >= 3 && norm(task_names[j]).starts_with(&wanted))
        .collect();
    if begun.len() == 1 {
        return Some(begun[0]);
    }
    task.parse_label(name.trim()).and_then(|l| l.class())
}

/// How the outputs of the model at `model_path` map onto `task`'s classes, by the model's class
/// names (`explicit`: `--labels`, else embedded, else the config.json beside it): `Some` where
/// they are the task's classes in another order (a model fine-tuned with id2label
/// `{0: "positive", 1: "negative"}` scored as SST-2 would otherwise be scored backwards); `None`
/// where there are no names, where they are the task's in its order, or where none is the task's
/// (`LABEL_0`, ...: read in the task's order). Names that put some of the task's classes at other
/// outputs but are not the task's classes each once, or that name another number of classes
/// than the task has, are refused: which output is which class is unknown. A config.json that
/// cannot be read is not the task's business (as before): `None`.
pub fn task_order(
    model_path: &Path,
    proto: &onnx::ModelProto,
    task: Task,
    explicit: Option<&str>,
    words: Words,
) -> Result<Option<ClassOrder>> {
    let setting = words.labels();
    let Some(task_names) = task.class_names() else {
        if let Some(l) = explicit {
            bail!("{setting} {l} names classes, but {task} is a regression (one output, scores): leave out {setting}");
        }
        return Ok(None);
    };
    let model = match data::model_labels(model_path, proto, explicit, setting) {
        Ok(Some(m)) => m,
        Err(e) if explicit.is_some() => bail!(e),
        _ => return Ok(None),
    };
    let named: Vec<Option<usize>> = model.names.iter().map(|n| task_class_named(task, n)).collect();
    let fix = if explicit.is_some() {
        format!("correct {setting} (the model's class names in output order)")
    } else {
        format!("correct the names (id2label), or {}", words.give_labels(None))
    };
    // A model of another width is not the task's (the names are not what is wrong).
    if let Some(w) = output_width(proto).filter(|&w| w == named.len() && w != task_names.len()) {
        bail!(
            "{} has {w} outputs ({}: {}) but {task} has {} classes: is it a {task} model? ({} to evaluate its own classes)",
            model_path.display(),
            model.source,
            crate::data::labels::few_names(&model.names),
            task_names.len(),
            words.leave_out_task()
        );
    }
    // Names the user gave count whatever they are; a model's own names only where they are
    // the task's.
    if explicit.is_none() && named.iter().all(Option::is_none) {
        return Ok(None);
    }
    if named.len() != task_names.len() {
        bail!(
            "{}: {} names {} classes ({}) but {task} has {} ({}); {fix}",
            model_path.display(),
            model.source,
            named.len(),
            crate::data::labels::few_names(&model.names),
            task_names.len(),
            task_names.join(", ")
        );
    }
    if named.iter().enumerate().all(|(i, c)| c.is_none_or(|c| c == i)) {
        return Ok(None);
    }
    let outputs: Option<Vec<usize>> = (0..task_names.len())
        .map(|j| {
            let mut at = named.iter().enumerate().filter(|(_, c)| **c == Some(j)).map(|(i, _)| i);
            at.next().filter(|_| at.next().is_none())
        })
        .collect();
    match outputs {
        Some(outputs) => Ok(Some(ClassOrder {
            outputs,
            names: model.names,
            source: model.source,
        })),
        None => bail!(
            "{}: {} names its classes {} but {task}'s classes are {}: some of {task}'s are at other outputs and not each once, so which output is which class is unknown; {fix}",
            model_path.display(),
            model.source,
            crate::data::labels::few_names(&model.names),
            task_names.join(", ")
        ),
    }
}

/// Every label of `data` must be a class the model (with `outputs` outputs) can produce.
fn check_classes(labels: &Labels, outputs: usize, data: &data::Labelled, file: &Path) -> Result<()> {
    if !matches!(labels, Labels::Classes { names: None, .. }) {
        return Ok(());
    }
    for (e, at) in data.examples.iter().zip(&data.locs) {
        if let Some(c) = e.label.class().filter(|&c| c >= outputs) {
            bail!(
                "label {c} on {at} of {}: the model has {outputs} outputs, so its classes are 0–{}",
                file.display(),
                outputs - 1
            );
        }
    }
    Ok(())
}

/// What to do where ONNX Runtime could not allocate a batch's buffers ("Failed to allocate
/// memory for requested buffer"): a smaller batch (`rows` × `tokens`) or a shorter length, in
/// the words of where they are set.
fn out_of_memory_hint(error: &str, words: Words, rows: usize, tokens: usize) -> Option<String> {
    error.contains("Failed to allocate memory").then(|| {
        format!(
            " (out of memory for a batch of {rows} × {tokens} tokens: lower {}, or {})",
            words.batch_size(),
            words.max_length()
        )
    })
}

/// Progress callback: (batches done, batches total).
pub type Progress<'a> = &'a dyn Fn(usize, usize);

/// What the model's embeddings take: the rows of its position table (the longest input) and of
/// its word embeddings (the largest token id + 1), each `None` where there is no such table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    pub positions: Option<usize>,
    pub vocabulary: Option<usize>,
}

/// [`InputLimits`] from the mapped transformer. On a model the structure is not mapped on (a
/// quantized one, whose tables may be int8), from the constant tables `Gather`s read: the word
/// table is the one indexed by the `input_ids` input; the position table the largest over 16 rows
/// read at indices that are not a graph input (the word and token-type tables' are). Positions
/// counted from the padding index (RoBERTa's: ids from `CumSum` of the mask, plus 1) take as many
/// fewer tokens as the table's first rows they skip.
pub fn input_limits(proto: &onnx::ModelProto) -> InputLimits {
    input_limits_of(proto, crate::structure::discover(proto).ok().as_ref())
}

/// [`input_limits`] of a model mapped already (`mapped`: its transformer; `None` where it is not
/// mapped).
pub fn input_limits_of(proto: &onnx::ModelProto, mapped: Option<&crate::structure::Transformer>) -> InputLimits {
    let Some(graph) = proto.graph.as_ref() else {
        return InputLimits {
            positions: None,
            vocabulary: None,
        };
    };
    let ix = onnx::GraphIndex::new(graph);
    let usable = |rows: usize, gather: &onnx::NodeProto| rows.saturating_sub(position_offset(&ix, gather));
    if let Some(t) = mapped {
        return InputLimits {
            positions: t
                .embeddings
                .position
                .as_ref()
                .map(|p| usable(p.rows, &graph.node[p.gather_node])),
            vocabulary: t.embeddings.word.as_ref().map(|w| w.rows),
        };
    }
    // (the Gather, the indices' source, the table's rows) of every Gather of a constant 2-D table.
    // The source is read through casts: a model taking int32 ids casts them first.
    fn source<'g>(ix: &'g onnx::GraphIndex<'g>, v: &'g str) -> &'g str {
        let mut v = ix.resolve(v);
        while let Some(p) = ix.producer(v).filter(|&p| ix.is_op(p, "Cast")) {
            v = ix.resolve(&ix.node(p).input[0]);
        }
        v
    }
    let tables: Vec<(&onnx::NodeProto, &str, usize)> = graph
        .node
        .iter()
        .filter(|n| n.op_type() == "Gather" && n.input.len() == 2)
        .filter_map(|n| {
            let dims = &ix.constant(&n.input[0])?.tensor().dims;
            (dims.len() == 2).then(|| (n, source(&ix, &n.input[1]), dims[0] as usize))
        })
        .collect();
    InputLimits {
        positions: tables
            .iter()
            .filter(|(_, by, rows)| !ix.graph_inputs().contains(by) && *rows > 16)
            .map(|(n, _, rows)| usable(*rows, n))
            .max(),
        vocabulary: tables.iter().find(|(_, by, _)| *by == "input_ids").map(|t| t.2),
    }
}

/// Where MACs counted at `seq_len` tokens are of inputs longer than the model's `positions`:
/// what to say of the count (every command counting MACs says it the same way).
pub fn past_positions(positions: Option<usize>, seq_len: usize) -> Option<String> {
    positions
        .filter(|&p| seq_len > p)
        .map(|p| format!("past the model's {p} positions: it cannot run that long"))
}

/// Rows of a position table that no input length reaches: where the position ids are a running
/// count of the real tokens (`CumSum`) plus a constant `c` (RoBERTa's padding index, 1), the
/// first `c + 1` rows; else none.
fn position_offset(ix: &onnx::GraphIndex, gather: &onnx::NodeProto) -> usize {
    let Some(add) = gather.input.get(1).and_then(|v| ix.produced_by(v, "Add")) else {
        return 0;
    };
    let add = ix.node(add);
    let Some(c) = add.input.iter().find_map(|v| ix.const_i64(v).filter(|c| c.len() == 1)) else {
        return 0;
    };
    // A CumSum within a few nodes up the other input.
    let mut frontier: Vec<&str> = add.input.iter().map(String::as_str).collect();
    for _ in 0..6 {
        let mut next = vec![];
        for v in frontier {
            if let Some(i) = ix.producer(v) {
                if ix.is_op(i, "CumSum") {
                    return usize::try_from(c[0]).map_or(0, |c| c + 1);
                }
                next.extend(ix.node(i).input.iter().map(String::as_str));
            }
        }
        frontier = next;
    }
    0
}

/// An evaluation's examples, read and tokenized, with their batches planned (each is made as
/// it runs).
pub struct Prepared {
    pub data_file: PathBuf,
    /// The GLUE split, or `None` for a data file.
    pub split: Option<String>,
    /// Labelled, except where [`prepare_to_compare`] read a file without labels.
    pub data: data::Examples,
    pub labels: Labels,
    /// Under a task, the model's outputs in the task's class order where its class names say
    /// they differ ([`task_order`]).
    pub order: Option<ClassOrder>,
    /// The examples' batches, in batching order.
    pub batches: Batches,
    /// Where the tokenizer came from.
    pub tokenizer: String,
    pub tokenize_seconds: f64,
    /// The whole preparation's seconds (reading, labels, tokenizing, planning the batches).
    pub seconds: f64,
    /// Where the examples with an empty or blank text are ([`EvalReport::empty_texts`]).
    pub empty_texts: Vec<String>,
    /// [`EvalReport::notes`].
    pub notes: Vec<String>,
}

/// Reads the examples `opts` names, with the labels and tokenizer of the model at `model_path`
/// (`proto`), and batches them as `opts` says.
pub fn prepare(model_path: &Path, proto: &onnx::ModelProto, opts: &EvalOptions) -> Result<Prepared> {
    prepare_with(model_path, proto, opts, true)
}

/// [`prepare`], reading the labels only where the data file has a label column: comparing two
/// models (`diff`) needs none.
pub fn prepare_to_compare(model_path: &Path, proto: &onnx::ModelProto, opts: &EvalOptions) -> Result<Prepared> {
    prepare_with(model_path, proto, opts, false)
}

fn prepare_with(
    model_path: &Path,
    proto: &onnx::ModelProto,
    opts: &EvalOptions,
    need_labels: bool,
) -> Result<Prepared> {
    let started = Instant::now();
    if opts.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if opts.max_length < 2 {
        bail!("--max-length must be at least 2");
    }
    let (source, split) = match &opts.data {
        EvalData::Glue { dir, split } => {
            let task = opts
                .task
                .ok_or_else(|| anyhow!("a GLUE folder needs a task (--task); for your own file pass --data FILE"))?;
            let source = data::Source {
                path: task.data_file(dir, split)?,
                format: Some(data::Format::Tsv),
                columns: data::Columns::default(),
                task: Some(task),
            };
            (source, Some(crate::glue::split_name(split).to_string()))
        }
        EvalData::File(source) => (source.clone(), None),
    };
    refuse_headless(model_path, proto, "eval")?;
    refuse_unfed_inputs(model_path, proto)?;
    refuse_non_float_output(model_path, proto)?;
    let labels = labels_of(model_path, proto, opts.task, opts.labels.as_deref(), opts.words)?;
    let class_order = opts
        .task
        .map(|t| task_order(model_path, proto, t, opts.labels.as_deref(), opts.words))
        .transpose()?
        .flatten();
    if opts.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    // Only the first --limit records are read: an error past them does not stop the run.
    let data = data::read_first(&source, &labels, need_labels, opts.limit)?;
    let data_file = source.path.clone();
    // Class indexes past the model's outputs, where its width is declared (else after the first
    // batch): `run` checks before its passes.
    if let (Some(outputs), data::Examples::Labelled(d)) = (output_width(proto), &data) {
        check_classes(&labels, outputs, d, &data_file)?;
    }
    let blank = |t: &str| t.trim().is_empty();
    let empty_texts = (0..data.len())
        .filter(|&i| {
            let (a, b) = data.text(i);
            blank(a) || b.is_some_and(blank)
        })
        .map(|i| data.locs()[i].to_string())
        .collect();
    // A longer input than the position table would fail inside ONNX Runtime: say so up front.
    let limits = input_limits(proto);
    if let Some(rows) = limits.positions {
        if opts.max_length > rows {
            bail!(
                "{} {} exceeds the {rows} positions of {}; set it to {rows} or less",
                opts.words.max_length(),
                opts.max_length,
                model_path.display()
            );
        }
    }
    let (mut tokenizer, tokenizer_source) = load_tokenizer(model_path, proto, opts.tokenizer.as_deref(), opts.words)?;
    let mut notes: Vec<String> = special_tokens_note(&tokenizer, &tokenizer_source).into_iter().collect();
    let unmasked = !takes_attention_mask(proto);
    if unmasked {
        notes.push(format!(
            "{} takes no attention_mask: each batch holds examples of one length (padding would change its predictions)",
            model_path.display()
        ));
    }
    let t_tok = Instant::now();
    let pad = model_pad_id(&tokenizer, limits.vocabulary).with_context(|| format!("tokenizer {tokenizer_source}"))?;
    let texts = (0..data.len()).map(|i| data.text(i));
    let enc = tokenize(&mut tokenizer, texts, &data_file, opts.max_length, limits.vocabulary)
        .with_context(|| format!("tokenizer {tokenizer_source}"))?;
    let batches = if unmasked {
        Batches::one_length(enc, opts.batch_size, pad)
    } else {
        Batches::new(enc, opts.batch_size, opts.bucket, pad)
    };
    Ok(Prepared {
        data_file,
        split,
        data,
        labels,
        order: class_order,
        batches,
        tokenizer: tokenizer_source,
        tokenize_seconds: t_tok.elapsed().as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        empty_texts,
        notes,
    })
}

/// Evaluates the model at `model_path` on the data `opts` names, read with that model's labels
/// and tokenizer.
pub fn evaluate(model_path: &Path, opts: &EvalOptions, progress: Progress) -> Result<EvalReport> {
    let started = Instant::now();
    let (proto, sources) = onnx::load_with_sources(model_path)?;
    let mut prepared = prepare(model_path, &proto, opts)?;
    drop(proto);
    prepared.seconds = started.elapsed().as_secs_f64();
    run_prepared(model_path, &sources, &prepared, opts, progress)
}

/// Evaluates the model at `model_path` on examples prepared already, with the labels and the
/// tokenizer they were prepared with: `run` prepares them on its input model and evaluates the
/// model its passes wrote, which must read them the same way (a `config.json` beside `--out`
/// is not the input's). The report's wall time includes the preparation's.
pub fn evaluate_prepared(
    model_path: &Path,
    prepared: &Prepared,
    opts: &EvalOptions,
    progress: Progress,
) -> Result<EvalReport> {
    // The files it reads (its external data too), for its size on disk.
    let (_, sources) = onnx::load_with_sources(model_path)?;
    run_prepared(model_path, &sources, prepared, opts, progress)
}

/// [`evaluate_prepared`] of a model that reads `sources`.
fn run_prepared(
    model_path: &Path,
    sources: &[PathBuf],
    prepared: &Prepared,
    opts: &EvalOptions,
    progress: Progress,
) -> Result<EvalReport> {
    let wall = Instant::now();
    let Prepared {
        data_file,
        split,
        data,
        labels: labels_read,
        order,
        batches,
        tokenizer: tokenizer_source,
        tokenize_seconds,
        seconds: prepare_seconds,
        empty_texts,
        notes,
    } = prepared;
    let data::Examples::Labelled(data) = data else {
        bail!("{}: no label column (evaluation needs labels)", data_file.display());
    };
    let ort_library = runtime::init(None)?;
    let mut model = runtime::open(model_path, &opts.session)?;

    let mut n_labels = match &labels_read {
        Labels::Glue(t) => Some(t.num_labels()),
        Labels::Scores => Some(1),
        Labels::Classes { names, .. } => names.as_ref().map(Vec::len),
    };
    let mut predictions: Vec<Option<Prediction>> = vec![None; data.examples.len()];
    let mut timed = Vec::new();
    let mut timed_samples = 0;
    let mut forward_seconds = 0.0;
    for (b, (rows, batch)) in batches.iter().enumerate() {
        let t = Instant::now();
        let (logits, labels) = model.run(&batch).map_err(|e| {
            let hint = out_of_memory_hint(&format!("{e:#}"), opts.words, rows.len(), batch.input_ids.ncols());
            e.context(format!(
                "running batch {b} of {}{}",
                model_path.display(),
                hint.unwrap_or_default()
            ))
        })?;
        let dt = t.elapsed().as_secs_f64();
        forward_seconds += dt;
        if b >= opts.warmup && b < opts.warmup + opts.measure {
            timed.push(dt);
            timed_samples += rows.len();
        }
        let (outputs, n) = (labels, *n_labels.get_or_insert(labels));
        if outputs != n {
            bail!(
                "{} outputs {outputs} logits per example but {} {n}",
                model_path.display(),
                match &labels_read {
                    Labels::Glue(t) => format!("{t} has"),
                    Labels::Scores => "a regression (one output) needs".into(),
                    Labels::Classes { source, .. } => format!("the label names ({source}) are"),
                }
            );
        }
        if b == 0 {
            check_classes(labels_read, outputs, data, data_file)?;
        }
        if let Some((k, what)) = non_finite(&logits, outputs, rows) {
            bail!(
                "{}: batch {b} ({}): example {} ({} of {}): {what}; a model that computes no number for an input is broken (an overflow, a NaN weight): evaluate the model it was made from to find the pass that broke it",
                model_path.display(),
                describe_rows(rows),
                rows[k],
                data.locs[rows[k]],
                data_file.display()
            );
        }
        for (k, &r) in rows.iter().enumerate() {
            let row = &logits[k * outputs..(k + 1) * outputs];
            predictions[r] = Some(match &labels_read {
                Labels::Glue(t) => match order {
                    Some(o) => Prediction::from_logits(*t, &o.apply(row))?,
                    None => Prediction::from_logits(*t, row)?,
                },
                Labels::Scores => Prediction::Score(row[0]),
                Labels::Classes { .. } => Prediction::Class(
                    glue::argmax(row).ok_or_else(|| anyhow!("example {r}: the model gave no logits"))?,
                ),
            });
        }
        progress(b + 1, batches.len());
    }
    let predictions: Vec<Prediction> = predictions
        .into_iter()
        .map(|p| p.ok_or_else(|| anyhow!("internal error: an example got no prediction")))
        .collect::<Result<_>>()?;
    let metrics = match &labels_read {
        Labels::Glue(t) => glue::compute_metrics(*t, &data.examples, &predictions)?,
        Labels::Scores => glue::compute_own_metrics(None, None, &data.examples, &predictions)?,
        Labels::Classes { names, .. } => glue::compute_own_metrics(
            Some(n_labels.unwrap_or(0)),
            names.as_deref(),
            &data.examples,
            &predictions,
        )?,
    };

    // An empty sum is -0.0: written so in the JSON.
    let timed_seconds: f64 = timed.iter().sum::<f64>() + 0.0;
    let mut sorted_ms: Vec<f64> = timed.iter().map(|s| s * 1000.0).collect();
    sorted_ms.sort_by(|a, b| a.total_cmp(b));
    let any = !timed.is_empty() && timed_seconds > 0.0;
    let timing = Timing {
        batches: batches.len(),
        warmup_batches: opts.warmup.min(batches.len()),
        timed_batches: timed.len(),
        timed_samples,
        timed_seconds,
        ms_per_batch: any.then(|| timed_seconds / timed.len() as f64 * 1000.0),
        samples_per_s: any.then(|| timed_samples as f64 / timed_seconds),
        p50_ms: percentile(&sorted_ms, 50.0),
        p95_ms: percentile(&sorted_ms, 95.0),
    };
    let size_bytes = onnx::io::size_on_disk(sources);
    Ok(EvalReport {
        task: opts.task,
        split: split.clone(),
        model: model_path.to_path_buf(),
        data_file: data_file.clone(),
        columns: data.columns.clone(),
        labels: labels_read.clone(),
        class_order: order.clone(),
        examples: data.examples.len(),
        batches: batches.len(),
        batch_size: opts.batch_size,
        max_length: opts.max_length,
        bucket: opts.bucket,
        device: opts.session.device,
        threads: opts.session.threads,
        denormals_flushed: opts.session.flush_denormals,
        metrics,
        timing,
        size_bytes,
        size_mb: size_bytes as f64 / 1e6,
        size_mib: size_bytes as f64 / (1024.0 * 1024.0),
        tokenize_seconds: *tokenize_seconds,
        forward_seconds,
        wall_seconds: prepare_seconds + wall.elapsed().as_secs_f64(),
        tokenizer: tokenizer_source.clone(),
        ort_library,
        empty_texts: empty_texts.clone(),
        notes: notes
            .iter()
            .cloned()
            .chain(runtime::threads_note(opts.session.threads, opts.words.threads()))
            .collect(),
        predictions: predictions
            .iter()
            .map(|p| match p {
                Prediction::Class(c) => serde_json::json!(c),
                Prediction::Score(s) => serde_json::json!(s),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_out_of_memory_says_what_to_lower() {
        let ort = "Non-zero status code returned while running Add node. Name:'/bert/embeddings/Add' Status Message: Failed to allocate memory for requested buffer of size 1935360000";
        assert_eq!(
            out_of_memory_hint(ort, Words::Flags, 100000, 12).as_deref(),
            Some(" (out of memory for a batch of 100000 × 12 tokens: lower --batch-size, or --max-length)")
        );
        assert!(out_of_memory_hint(ort, Words::Recipe, 8, 128)
            .unwrap()
            .contains("lower data.batch_size, or data.max_input_length"));
        assert_eq!(out_of_memory_hint("Invalid input name: x", Words::Flags, 8, 128), None);
    }

    #[test]
    fn a_tokenizer_json_of_no_known_form_is_said_without_serde_words() {
        let e = parse_tokenizer(r#"{"model": {"type": "Nonesuch"}, "added_tokens": []}"#).unwrap_err();
        assert!(
            e.starts_with("not a tokenizer.json that Hugging Face tokenizers reads (")
                && !e.contains("untagged")
                && !e.contains("Untagged"),
            "{e}"
        );
    }

    /// Bucketed batches (made shortest first) run in a fixed shuffle: the first ones, warm-up
    /// and timed, reach the long batches too; unbucketed ones run as made.
    #[test]
    fn bucketed_batches_run_in_a_fixed_shuffle() {
        assert_eq!(run_order(5, false), vec![0, 1, 2, 3, 4]);
        let order = run_order(40, true);
        assert_eq!(order, run_order(40, true));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>());
        assert!(order[..10].iter().any(|&b| b >= 20), "{order:?}");
    }

    #[test]
    fn model_class_names_are_matched_to_a_tasks_by_name_or_beginning() {
        let mnli = Task::Mnli;
        assert_eq!(task_class_named(mnli, "CONTRADICTION"), Some(2));
        assert_eq!(task_class_named(mnli, "entail"), Some(0));
        assert_eq!(task_class_named(mnli, "neu"), Some(1));
        // Too short to say, or no task name begins so.
        assert_eq!(task_class_named(mnli, "ne"), None);
        assert_eq!(task_class_named(mnli, "LABEL_0"), None);
        let qnli = Task::Qnli;
        assert_eq!(task_class_named(qnli, "not entailment"), Some(1));
        assert_eq!(task_class_named(qnli, "Not-Entailment"), Some(1));
        assert_eq!(task_class_named(qnli, "entailment"), Some(0));
        let mrpc = Task::Mrpc;
        assert_eq!(task_class_named(mrpc, "equivalent"), Some(1));
        assert_eq!(task_class_named(mrpc, "not_equivalent"), Some(0));
        // The task's own labels: SST-2's 0 and 1.
        assert_eq!(task_class_named(Task::Sst2, "1"), Some(1));
        assert_eq!(task_class_named(Task::Sst2, "0"), Some(0));
        assert_eq!(task_class_named(Task::Sst2, "2"), None);
    }

    /// A word-level BERT-style tokenizer of [PAD] [UNK] [CLS] [SEP] and `w4` … `w63`.
    fn words_tokenizer() -> Tokenizer {
        parse_tokenizer(&words_tokenizer_json().to_string()).unwrap()
    }

    /// [`words_tokenizer`]'s tokenizer.json.
    fn words_tokenizer_json() -> serde_json::Value {
        let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].map(String::from).to_vec();
        vocab.extend((4..64).map(|i| format!("w{i}")));
        let ids: serde_json::Map<String, serde_json::Value> =
            vocab.iter().enumerate().map(|(i, w)| (w.clone(), i.into())).collect();
        let special = |id: usize, t: &str| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
            "decoder": null, "model": {"type": "WordLevel", "vocab": ids, "unk_token": "[UNK]"}
        });
        json
    }

    /// `w{from}` … `w{from + n - 1}`, space-separated.
    fn words(from: usize, n: usize) -> String {
        (from..from + n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
    }

    /// Ids and type ids of `(a, b)` tokenized by `tok` at `max_length`.
    fn encoded(tok: &mut Tokenizer, (a, b): (&str, Option<&str>), max_length: usize) -> (Vec<i64>, Vec<i64>) {
        let mut e = tokenize(tok, [(a, b)].into_iter(), Path::new("f"), max_length, None).unwrap();
        (e.ids.remove(0), e.type_ids.remove(0))
    }

    /// A pair's texts past the budget are cut without keeping their cut-off pieces: the crate's
    /// post-processing pairs every piece of one with every piece of the other (two texts of
    /// 8000 words at max length 64 took 6 GB).
    #[test]
    fn a_long_pair_keeps_no_cut_off_pieces() {
        let mut whole = words_tokenizer();
        whole.with_truncation(None).unwrap();
        let long = words(4, 60);
        let budget = TruncationParams {
            max_length: 9,
            ..Default::default()
        };
        let e = encode_pair(&whole, (&long, &long), &budget).unwrap();
        assert_eq!((e.len(), e.get_overflowing().len()), (12, 0));
    }

    /// Without a post-processor a pair's second text is type 1, as Python's tokenizers encodes
    /// it (the texts were both type 0, the model read one text); the tokenizer.json's
    /// truncation side is kept ("Left": the last tokens stay).
    #[test]
    fn pairs_keep_their_types_and_the_files_truncation_side() {
        let mut json = words_tokenizer_json();
        json["post_processor"] = serde_json::Value::Null;
        let mut bare = parse_tokenizer(&json.to_string()).unwrap();
        assert_eq!(
            encoded(&mut bare, ("w4 w5", Some("w6")), 8),
            (vec![4, 5, 6], vec![0, 0, 1])
        );
        let mut json = words_tokenizer_json();
        json["truncation"] =
            serde_json::json!({"direction": "Left", "max_length": 100, "strategy": "OnlySecond", "stride": 0});
        let mut left = parse_tokenizer(&json.to_string()).unwrap();
        assert_eq!(encoded(&mut left, (&words(4, 9), None), 6).0, [2, 9, 10, 11, 12, 3]);
        // A text past the cap (1 MiB here) is cut at its start, so its last words stay.
        let huge = format!("{}w20 w21", "w5 w6 ".repeat(400_000));
        assert_eq!(encoded(&mut left, (&huge, None), 4).0, [2, 20, 21, 3]);
        // Twice: the side set by the first call is read again, not reset.
        let pair = encoded(&mut left, (&words(4, 9), Some(&words(30, 2))), 8);
        assert_eq!(pair.0, [2, 10, 11, 12, 3, 30, 31, 3]);
        assert_eq!(
            encoded(&mut words_tokenizer(), (&words(4, 9), None), 6).0,
            [2, 4, 5, 6, 7, 3]
        );
    }

    /// A maximum length that leaves no room beside the special tokens is refused: below them the
    /// tokenizer would not truncate (and, in a debug build, its subtraction overflowed).
    #[test]
    fn a_maximum_length_below_the_special_tokens_is_refused() {
        let mut tok = words_tokenizer();
        let beside = "leaves no room for text beside the";
        for (pair, max_length, needle) in [
            (
                Some("w5"),
                3,
                format!("{beside} 3 special tokens the tokenizer adds to each pair: set it to 4"),
            ),
            (
                None,
                2,
                format!("{beside} 2 special tokens the tokenizer adds to each text: set it to 3"),
            ),
            (None, 1, format!("{beside} 2 special tokens")),
        ] {
            let e = tokenize(&mut tok, [("w4", pair)].into_iter(), Path::new("f"), max_length, None).unwrap_err();
            assert!(e.to_string().contains(&needle), "{e}");
        }
        assert_eq!(encoded(&mut tok, ("w4 w5", Some("w6")), 5).0, [2, 4, 3, 6, 3]);
    }

    /// Past one chunk of texts the ids are those of each text tokenized alone, and a token past
    /// the vocabulary is named with its own text.
    #[test]
    fn texts_past_one_chunk_are_tokenized_as_each_alone() {
        let mut tok = words_tokenizer();
        let n = 2 * ENCODE_CHUNK + 5;
        let texts: Vec<String> = (0..n)
            .map(|i| {
                (0..1 + i % 9)
                    .map(|k| format!("w{}", 4 + (i + k) % 30))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        for pairs in [false, true] {
            let items = || texts.iter().map(|t| (t.as_str(), pairs.then_some("w40 w41")));
            let all = tokenize(&mut tok, items(), Path::new("f"), 8, None).unwrap();
            assert_eq!((all.ids.len(), all.type_ids.len()), (n, n));
            for (i, item) in items().enumerate().step_by(997).chain(items().enumerate().skip(n - 3)) {
                let one = tokenize(&mut tok, std::iter::once(item), Path::new("f"), 8, None).unwrap();
                assert_eq!(
                    (&all.ids[i], &all.type_ids[i]),
                    (&one.ids[0], &one.type_ids[0]),
                    "text {i}"
                );
            }
        }
        let mut past = texts.clone();
        past[ENCODE_CHUNK + 7] = "w4 w60".into();
        let e = tokenize(
            &mut tok,
            past.iter().map(|t| (t.as_str(), None)),
            Path::new("f"),
            8,
            Some(50),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("the text \"w4 w60\" gives token \"w60\", id 60"),
            "{e}"
        );
    }

    /// A pair past `max_length` is cut longest first as Python's tokenizers cuts it: with both
    /// texts past the budget, the shorter gets half of it rounded down and the longer the rest,
    /// whichever comes first (the crate's own pair encoding gave the spare token to the second).
    #[test]
    fn pairs_are_truncated_longest_first_as_python_does() {
        let mut tok = words_tokenizer();
        let (long, short) = (words(4, 20), words(30, 15));
        // max_length 12: 9 for the texts; both past it: the shorter gets 4, the longer 5.
        for (a, b, first, second) in [(&long, &short, 5, 4), (&short, &long, 4, 5)] {
            let e = tokenize(
                &mut tok,
                [(a.as_str(), Some(b.as_str()))].into_iter(),
                Path::new("f"),
                12,
                None,
            )
            .unwrap();
            let ids = &e.ids[0];
            assert_eq!(ids.len(), 12, "{ids:?}");
            let sep = ids.iter().position(|&i| i == 3).unwrap();
            assert_eq!((sep - 1, ids.len() - sep - 2), (first, second), "{ids:?}");
            assert_eq!(e.type_ids[0].iter().filter(|&&t| t == 1).count(), second + 1);
        }
        // Equal lengths one past the budget: the first gives half of it rounded down, the second
        // the rest; singles are cut on the right.
        let e = tokenize(
            &mut tok,
            [(words(4, 5).as_str(), Some(words(30, 5).as_str()))].into_iter(),
            Path::new("f"),
            12,
            None,
        )
        .unwrap();
        assert_eq!(e.ids[0], [2, 4, 5, 6, 7, 3, 30, 31, 32, 33, 34, 3]);
        let e = tokenize(&mut tok, [(long.as_str(), None)].into_iter(), Path::new("f"), 6, None).unwrap();
        assert_eq!(e.ids[0], [2, 4, 5, 6, 7, 3]);
        // A text past the cap (1 MiB here) is cut before tokenizing: the same tokens, alone
        // and in a pair.
        let huge = "w5 w6 ".repeat(400_000);
        let small = "w5 w6 ".repeat(100);
        for pair in [None, Some(short.as_str())] {
            let mut ids = |t: &str| {
                tokenize(&mut tok, [(t, pair)].into_iter(), Path::new("f"), 12, None)
                    .unwrap()
                    .ids
            };
            assert_eq!(ids(&huge), ids(&small));
        }
        let right = TruncationDirection::Right;
        assert_eq!(cut("aé", 2, right), "a");
        assert_eq!(cut("aé", 3, right), "aé");
        assert_eq!(cut("éa", 2, TruncationDirection::Left), "a");
        assert_eq!(cut("éa", 3, TruncationDirection::Left), "éa");
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 50) = 2.5; 95 → 3.85
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert!((percentile(&v, 95.0).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn batches_pad_to_longest_and_bucketing_keeps_every_row() {
        let enc = Encoded {
            ids: vec![vec![101, 5, 102], vec![101, 102], vec![101, 7, 8, 9, 102]],
            type_ids: vec![vec![0; 3], vec![0; 2], vec![0, 0, 1, 1, 1]],
        };
        let b = make_batch(&enc, &[0, 1], 0);
        assert_eq!(b.input_ids.shape(), &[2, 3]);
        assert_eq!(b.input_ids.row(1).to_vec(), vec![101, 102, 0]);
        assert_eq!(b.attention_mask.row(1).to_vec(), vec![1, 1, 0]);
        assert_eq!(batch_order(&enc, false), vec![0, 1, 2]);
        assert_eq!(batch_order(&enc, true), vec![1, 0, 2]);
        let b = make_batch(&enc, &[2], 0);
        assert_eq!(b.token_type_ids.row(0).to_vec(), vec![0, 0, 1, 1, 1]);
    }

    /// Batches made as they run hold the same examples, in the same order, as made up front;
    /// the widest and the largest id are those of the batches.
    #[test]
    fn batches_made_as_they_run_are_the_batches() {
        let lens = [3usize, 2, 5, 2, 4, 3, 6];
        let enc = Encoded {
            ids: lens.iter().map(|&n| (0..n as i64).map(|t| 100 + t).collect()).collect(),
            type_ids: lens.iter().map(|&n| vec![0; n]).collect(),
        };
        for bucket in [false, true] {
            let batches = Batches::new(enc.clone(), 2, bucket, 7);
            let order = batch_order(&enc, bucket);
            let chunks: Vec<&[usize]> = order.chunks(2).collect();
            let want: Vec<&[usize]> = run_order(chunks.len(), bucket).into_iter().map(|c| chunks[c]).collect();
            assert_eq!(batches.len(), 4);
            for ((rows, batch), w) in batches.iter().zip(&want) {
                assert_eq!(rows, *w);
                assert_eq!(batch.input_ids, make_batch(&enc, w, 7).input_ids);
            }
            assert_eq!(batches.widest(), 6);
            // Some batch of two has two lengths (in file order 3 and 2; by length 4 and 5), so
            // the pad id is fed: below the tokens here, above them with 900.
            assert_eq!(batches.largest_id(), Some(105));
            assert_eq!(Batches::new(enc.clone(), 2, bucket, 900).largest_id(), Some(900));
        }
        // Equal lengths pad nothing: the pad id is not fed.
        let same = Encoded {
            ids: vec![vec![1, 2], vec![3, 4]],
            type_ids: vec![vec![0; 2]; 2],
        };
        assert_eq!(Batches::new(same, 2, false, 900).largest_id(), Some(4));
        // An example of no tokens is all padding (a batch of one is one pad wide).
        let empty = Encoded {
            ids: vec![vec![], vec![]],
            type_ids: vec![vec![], vec![]],
        };
        let b = Batches::new(empty, 2, false, 900);
        assert_eq!((b.largest_id(), b.widest()), (Some(900), 1));
        assert_eq!(b.iter().next().unwrap().1.input_ids.ncols(), 1);
    }
}
