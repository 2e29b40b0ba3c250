//! Calibration data: a seeded sample of a training file (a GLUE TSV or any file [`crate::data`]
//! reads; no labels needed), tokenized and batched for
//! [`crate::runtime::OrtCalibrator`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

use crate::data;
use crate::eval::{make_batch, model_pad_id, tokenize};
use crate::glue::Task;
use crate::runtime::{Batch, OrtCalibrator, SessionOptions};

pub struct Calibration {
    pub batches: Vec<Batch>,
    pub examples: usize,
}

/// The GLUE task of a file: `explicit`, else its header's when it is a GLUE TSV (then the GLUE
/// reader reads it exactly as `eval` does); `None` for any other file.
pub fn task_of(path: &Path, explicit: Option<Task>) -> Result<Option<Task>> {
    if explicit.is_some() {
        return Ok(explicit);
    }
    if data::Format::of_path(path) != Some(data::Format::Tsv) {
        return Ok(None);
    }
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut text))
        .with_context(|| format!("--calib-data {}", path.display()))?;
    let first = String::from_utf8_lossy(&text).lines().next().unwrap_or("").to_string();
    Ok(Task::infer_from_header(&first))
}

/// The order in which calibration draws the `n` examples of a file with `seed` (a seeded
/// Fisher–Yates shuffle): calibration takes the first `samples`; `auto` selects on the ones after
/// them, so the two never share an example.
pub fn draw_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// Reads `source` (labels are not needed), draws `samples` examples with `seed` (all of them when
/// the file has fewer), tokenizes them and batches them by length (less padding; order does not
/// matter here).
#[allow(clippy::too_many_arguments)]
pub fn load(
    source: &data::Source,
    samples: usize,
    seed: u64,
    tokenizer: &mut Tokenizer,
    tokenizer_source: &str,
    max_length: usize,
    vocabulary: Option<usize>,
    batch_size: usize,
    one_length: bool,
) -> Result<Calibration> {
    if samples == 0 {
        bail!("--calib-samples must be at least 1");
    }
    let texts = data::read_texts(source).with_context(|| "calibration data")?;
    let mut order = draw_order(texts.texts.len(), seed);
    order.truncate(samples);
    order.sort_unstable();
    let named = || format!("tokenizer {tokenizer_source}");
    let pad = model_pad_id(tokenizer, vocabulary).with_context(named)?;
    let picked = order.iter().map(|&i| {
        let (a, b) = &texts.texts[i];
        (a.as_str(), b.as_deref())
    });
    let enc = tokenize(tokenizer, picked, &source.path, max_length, vocabulary).with_context(named)?;
    let mut by_len: Vec<usize> = (0..enc.ids.len()).collect();
    by_len.sort_by_key(|&i| enc.ids[i].len());
    let lens: Vec<usize> = by_len.iter().map(|&i| enc.ids[i].len()).collect();
    let batches = token_batches(&lens, batch_size, one_length)
        .into_iter()
        .map(|range| make_batch(&enc, &by_len[range], pad))
        .collect();
    Ok(Calibration {
        batches,
        examples: order.len(),
    })
}

/// Tokens a calibration batch holds at most (its examples × its longest): `rows` examples of
/// 128 tokens. Past 128 tokens a batch holds fewer examples: with 32 of about 450 tokens static
/// INT8 of the shared MiniLM peaked at 3.1 GB, calibrated pruning at 3.9 GB (bench/RESULTS.md,
/// "Stop 63").
const BATCH_TOKENS_PER_ROW: usize = 128;

/// Batches of examples whose lengths are `lens` (ascending), as ranges of them (with
/// `one_length`, each of one length: a model without an attention mask cannot be padded): up to `rows`
/// examples, fewer where their longest is past 128 tokens (at most `rows` × 128 tokens, and at
/// least one example).
fn token_batches(lens: &[usize], rows: usize, one_length: bool) -> Vec<std::ops::Range<usize>> {
    let rows = rows.max(1);
    let budget = rows * BATCH_TOKENS_PER_ROW;
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &len) in lens.iter().enumerate() {
        // Ascending: the example added is the batch's longest.
        let n = i - start + 1;
        if n > rows || (n > 1 && n * len > budget) || (one_length && len != lens[start]) {
            out.push(start..i);
            start = i;
        }
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Where calibration examples come from and how they run: what every calibrated pass needs.
pub struct Spec<'a> {
    /// A GLUE TSV (normally the task's train split) or any file [`crate::data`] reads.
    pub path: &'a Path,
    pub format: Option<data::Format>,
    pub columns: &'a data::Columns,
    /// The GLUE task; `None`: from the file's header when it is a GLUE TSV.
    pub task: Option<Task>,
    pub samples: usize,
    pub seed: u64,
    pub max_length: usize,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
    /// tokenizer.json to use (default: the model's, see [`crate::eval::load_tokenizer`]).
    pub tokenizer: Option<&'a Path>,
}

/// The calibration runner for a pass on `model` (read from `model_path`): the sampled,
/// tokenized examples of `spec`, run through ONNX Runtime (which must be initialized); with a
/// note where the tokenizer adds no special tokens ([`crate::eval::special_tokens_note`]).
pub fn ort_calibrator(
    spec: &Spec,
    model_path: &Path,
    model: &crate::onnx::ModelProto,
) -> Result<(OrtCalibrator, Option<String>)> {
    let source = data::Source {
        path: spec.path.to_path_buf(),
        format: spec.format,
        columns: spec.columns.clone(),
        task: task_of(spec.path, spec.task)?,
    };
    let (mut tokenizer, tokenizer_source) =
        crate::eval::load_tokenizer(model_path, model, spec.tokenizer, crate::eval::Words::Flags)?;
    let note = crate::eval::special_tokens_note(&tokenizer, &tokenizer_source);
    let limits = crate::eval::input_limits(model);
    let data = load(
        &source,
        spec.samples,
        spec.seed,
        &mut tokenizer,
        &tokenizer_source,
        spec.max_length,
        limits.vocabulary,
        32,
        !crate::eval::takes_attention_mask(model),
    )?;
    // Examples longer than the position table fail inside ONNX Runtime ("64 by 128"): say so.
    let longest = data.batches.iter().map(|b| b.input_ids.ncols()).max().unwrap_or(0);
    if let Some(rows) = limits.positions.filter(|&rows| longest > rows) {
        bail!(
            "--calib-data {}: examples of {longest} tokens, past the {rows} positions of {}; pass --max-length {rows}",
            spec.path.display(),
            model_path.display()
        );
    }
    let calibrator = OrtCalibrator::new(
        data.batches,
        SessionOptions {
            threads: spec.threads,
            ..Default::default()
        },
    );
    Ok((calibrator, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to 128 tokens, batches of `rows` as before; longer, fewer examples, never none.
    #[test]
    fn calibration_batches_hold_at_most_rows_times_128_tokens() {
        let sizes = |lens: &[usize], rows| {
            token_batches(lens, rows, false)
                .iter()
                .map(|r| r.len())
                .collect::<Vec<_>>()
        };
        let short: Vec<usize> = (0..70).map(|i| 5 + i).collect();
        assert_eq!(sizes(&short, 32), [32, 32, 6]);
        assert_eq!(sizes(&[128; 64], 32), [32, 32]);
        assert_eq!(sizes(&[512; 20], 32), [8, 8, 4]);
        let mixed: Vec<usize> = [10; 20].into_iter().chain([300; 20]).collect();
        assert_eq!(sizes(&mixed, 32), [20, 13, 7]);
        assert_eq!(sizes(&[600, 700], 1), [1, 1]);
        assert_eq!(sizes(&[], 32), Vec::<usize>::new());
        // Every example once, in order.
        let all: Vec<usize> = token_batches(&mixed, 32, false).into_iter().flatten().collect();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        // One length a batch for a model without an attention mask.
        let lens = [3, 3, 3, 4, 7, 7];
        assert_eq!(token_batches(&lens, 2, true), [0..2, 2..3, 3..4, 4..6]);
        assert_eq!(token_batches(&lens, 32, false).len(), 1);
    }
}
