//! `eval`: GLUE dev-set accuracy and speed of a model, measured the way the reference experiment
//! measured (first `warmup` batches untimed, the next `measure` batches timed one by one, forward
//! pass only), with dynamic padding per batch and the predictions in file order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use serde::Serialize;
use tokenizers::{EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::glue::{self, Dataset, Metrics, Prediction, Task};
use crate::history;
use crate::onnx;
use crate::runtime::{self, Batch, Device, SessionOptions};

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub task: Task,
    pub split: String,
    pub data_dir: PathBuf,
    pub batch_size: usize,
    pub max_length: usize,
    pub warmup: usize,
    pub measure: usize,
    pub limit: Option<usize>,
    /// Sort by length before batching (predictions are still reported in file order).
    pub bucket: bool,
    pub tokenizer: Option<PathBuf>,
    pub session: SessionOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
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
    pub task: Task,
    pub split: String,
    pub model: PathBuf,
    pub data_file: PathBuf,
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
    /// Seconds spent tokenizing and building padded batches.
    pub tokenize_seconds: f64,
    /// Seconds in ONNX Runtime over all batches (timed or not).
    pub forward_seconds: f64,
    pub wall_seconds: f64,
    pub tokenizer: String,
    pub ort_library: PathBuf,
    /// One per example, in file order: the class (or the score for STS-B).
    pub predictions: Vec<serde_json::Value>,
}

/// Finds the tokenizer: `--tokenizer`, then the one embedded in the model's metadata, then
/// `tokenizer.json` beside the model, then `<model stem>.tokenizer.json`.
pub fn load_tokenizer(
    model_path: &Path,
    model: &onnx::ModelProto,
    explicit: Option<&Path>,
) -> Result<(Tokenizer, String)> {
    if let Some(p) = explicit {
        let t = Tokenizer::from_file(p).map_err(|e| anyhow!("--tokenizer {}: {e}", p.display()))?;
        return Ok((t, p.display().to_string()));
    }
    if let Some(json) = history::embedded_tokenizer(model) {
        let t = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| anyhow!("{}: embedded tokenizer is invalid: {e}", model_path.display()))?;
        return Ok((t, "embedded in the model".into()));
    }
    let dir = model_path.parent().unwrap_or(Path::new("."));
    let stem = model_path.file_stem().unwrap_or_default().to_string_lossy();
    let candidates = [dir.join("tokenizer.json"), dir.join(format!("{stem}.tokenizer.json"))];
    for c in &candidates {
        if c.is_file() {
            let t = Tokenizer::from_file(c).map_err(|e| anyhow!("{}: {e}", c.display()))?;
            return Ok((t, c.display().to_string()));
        }
    }
    bail!(
        "no tokenizer for {}: none embedded in the model and no {} or {}; pass --tokenizer PATH/tokenizer.json",
        model_path.display(),
        candidates[0].display(),
        candidates[1].display()
    )
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

/// Tokenized examples: ids, type ids, in file order.
pub struct Encoded {
    pub ids: Vec<Vec<i64>>,
    pub type_ids: Vec<Vec<i64>>,
}

pub fn tokenize(tokenizer: &mut Tokenizer, data: &Dataset, max_length: usize) -> Result<Encoded> {
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| anyhow!("tokenizer truncation at {max_length}: {e}"))?;
    tokenizer.with_padding(None);
    let inputs: Vec<EncodeInput> = data
        .examples
        .iter()
        .map(|e| match &e.text_b {
            Some(b) => EncodeInput::Dual(e.text_a.as_str().into(), b.as_str().into()),
            None => EncodeInput::Single(e.text_a.as_str().into()),
        })
        .collect();
    let enc = tokenizer
        .encode_batch(inputs, true)
        .map_err(|e| anyhow!("tokenizing {}: {e}", data.path.display()))?;
    Ok(Encoded {
        ids: enc
            .iter()
            .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
            .collect(),
        type_ids: enc
            .iter()
            .map(|e| e.get_type_ids().iter().map(|&i| i as i64).collect())
            .collect(),
    })
}

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

/// The order in which examples are batched: file order, or by length (stable) with `bucket`.
pub fn batch_order(enc: &Encoded, bucket: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..enc.ids.len()).collect();
    if bucket {
        order.sort_by_key(|&i| enc.ids[i].len());
    }
    order
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

/// Fails on the first example of a batch whose `labels` logits (in `logits`, row by row) hold a
/// NaN or an infinity, naming the example (index in the file, from 0) and its logits.
pub fn check_finite(logits: &[f32], labels: usize, rows: &[usize]) -> Result<()> {
    for (k, &r) in rows.iter().enumerate() {
        let row = &logits[k * labels..(k + 1) * labels];
        if row.iter().any(|v| !v.is_finite()) {
            bail!("logits contain NaN/Inf (example {r}: {row:?})");
        }
    }
    Ok(())
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

/// Progress callback: (batches done, batches total).
pub type Progress<'a> = &'a dyn Fn(usize, usize);

pub fn evaluate(model_path: &Path, opts: &EvalOptions, progress: Progress) -> Result<EvalReport> {
    let wall = Instant::now();
    if opts.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if opts.max_length < 2 {
        bail!("--max-length must be at least 2");
    }
    let data_file = opts.task.data_file(&opts.data_dir, &opts.split)?;
    let mut data = glue::read_tsv(opts.task, &data_file)?;
    if let Some(n) = opts.limit {
        if n == 0 {
            bail!("--limit must be at least 1");
        }
        data.examples.truncate(n);
    }
    let proto = onnx::load(model_path)?;
    // A longer input than the position table would fail inside ONNX Runtime: say so up front.
    if let Ok(t) = crate::structure::discover(&proto) {
        if let Some(p) = &t.embeddings.position {
            if opts.max_length > p.rows {
                bail!(
                    "--max-length {} exceeds the {} positions of {}",
                    opts.max_length,
                    p.rows,
                    model_path.display()
                );
            }
        }
    }
    let (mut tokenizer, tokenizer_source) = load_tokenizer(model_path, &proto, opts.tokenizer.as_deref())?;
    drop(proto);
    let ort_library = runtime::init(None)?;
    let mut model = runtime::open(model_path, &opts.session)?;

    let t_tok = Instant::now();
    let pad = pad_id(&tokenizer).with_context(|| format!("tokenizer {tokenizer_source}"))?;
    let enc = tokenize(&mut tokenizer, &data, opts.max_length)?;
    let order = batch_order(&enc, opts.bucket);
    let batches: Vec<(Vec<usize>, Batch)> = order
        .chunks(opts.batch_size)
        .map(|rows| (rows.to_vec(), make_batch(&enc, rows, pad)))
        .collect();
    let tokenize_seconds = t_tok.elapsed().as_secs_f64();

    let n_labels = opts.task.num_labels();
    let mut predictions: Vec<Option<Prediction>> = vec![None; data.examples.len()];
    let mut timed = Vec::new();
    let mut timed_samples = 0;
    let mut forward_seconds = 0.0;
    for (b, (rows, batch)) in batches.iter().enumerate() {
        let t = Instant::now();
        let (logits, labels) = model
            .run(batch)
            .with_context(|| format!("running batch {b} of {}", model_path.display()))?;
        let dt = t.elapsed().as_secs_f64();
        forward_seconds += dt;
        if b >= opts.warmup && b < opts.warmup + opts.measure {
            timed.push(dt);
            timed_samples += rows.len();
        }
        if labels != n_labels {
            bail!(
                "{} outputs {labels} logits per example but {} has {n_labels} labels",
                model_path.display(),
                opts.task
            );
        }
        check_finite(&logits, labels, rows)
            .map_err(|e| anyhow!("{}: batch {b} ({}): {e}", model_path.display(), describe_rows(rows)))?;
        for (k, &r) in rows.iter().enumerate() {
            predictions[r] = Some(Prediction::from_logits(
                opts.task,
                &logits[k * labels..(k + 1) * labels],
            )?);
        }
        progress(b + 1, batches.len());
    }
    let predictions: Vec<Prediction> = predictions
        .into_iter()
        .map(|p| p.ok_or_else(|| anyhow!("internal error: an example got no prediction")))
        .collect::<Result<_>>()?;
    let metrics = glue::compute_metrics(opts.task, &data.examples, &predictions)?;

    let timed_seconds: f64 = timed.iter().sum();
    let mut sorted_ms: Vec<f64> = timed.iter().map(|s| s * 1000.0).collect();
    sorted_ms.sort_by(|a, b| a.total_cmp(b));
    let any = !timed.is_empty() && timed_seconds > 0.0;
    let timing = Timing {
        warmup_batches: opts.warmup.min(batches.len()),
        timed_batches: timed.len(),
        timed_samples,
        timed_seconds,
        ms_per_batch: any.then(|| timed_seconds / timed.len() as f64 * 1000.0),
        samples_per_s: any.then(|| timed_samples as f64 / timed_seconds),
        p50_ms: percentile(&sorted_ms, 50.0),
        p95_ms: percentile(&sorted_ms, 95.0),
    };
    let size_bytes = onnx::io::size_on_disk(model_path);
    Ok(EvalReport {
        task: opts.task,
        split: opts.split.clone(),
        model: model_path.to_path_buf(),
        data_file,
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
        tokenize_seconds,
        forward_seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
        tokenizer: tokenizer_source,
        ort_library,
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
}
