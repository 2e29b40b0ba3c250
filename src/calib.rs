//! Calibration data: a seeded sample of a GLUE training file, tokenized and batched for
//! [`crate::runtime::OrtCalibrator`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

use crate::eval::{make_batch, pad_id, tokenize};
use crate::glue::{self, Task};
use crate::runtime::{Batch, OrtCalibrator, SessionOptions};

pub struct Calibration {
    pub task: Task,
    pub batches: Vec<Batch>,
    pub examples: usize,
}

/// The task of a GLUE file, from `explicit` or else its header.
pub fn task_of(path: &Path, explicit: Option<Task>) -> Result<Task> {
    if let Some(t) = explicit {
        return Ok(t);
    }
    let text = std::fs::read(path).with_context(|| format!("--calib-data {}", path.display()))?;
    let first = String::from_utf8_lossy(&text[..text.len().min(64 * 1024)])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    match Task::infer_from_header(&first) {
        Some(t) => Ok(t),
        None => bail!(
            "--calib-data {}: cannot tell the task from its header {:?}; pass --task",
            path.display(),
            first.chars().take(80).collect::<String>()
        ),
    }
}

/// Reads `path`, draws `samples` examples with `seed` (all of them when the file has fewer),
/// tokenizes them and batches them by length (less padding; order does not matter here).
pub fn load(
    path: &Path,
    task: Task,
    samples: usize,
    seed: u64,
    tokenizer: &mut Tokenizer,
    max_length: usize,
    batch_size: usize,
) -> Result<Calibration> {
    if samples == 0 {
        bail!("--calib-samples must be at least 1");
    }
    let mut data = glue::read_tsv(task, path)?;
    let n = data.examples.len();
    // Seeded Fisher–Yates, then the first `samples`.
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order.truncate(samples.min(n));
    order.sort_unstable();
    let picked: Vec<_> = order.iter().map(|&i| data.examples[i].clone()).collect();
    data.examples = picked;
    let pad = pad_id(tokenizer)?;
    let enc = tokenize(tokenizer, &data, max_length)?;
    let mut by_len: Vec<usize> = (0..enc.ids.len()).collect();
    by_len.sort_by_key(|&i| enc.ids[i].len());
    let batches = by_len
        .chunks(batch_size.max(1))
        .map(|rows| make_batch(&enc, rows, pad))
        .collect();
    Ok(Calibration {
        task,
        batches,
        examples: data.examples.len(),
    })
}

/// Where calibration examples come from and how they run: what every calibrated pass needs.
pub struct Spec<'a> {
    /// A GLUE TSV (normally the task's train split).
    pub path: &'a Path,
    /// The task; `None`: from the file's header.
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
/// tokenized examples of `spec`, run through ONNX Runtime (which must be initialized).
pub fn ort_calibrator(spec: &Spec, model_path: &Path, model: &crate::onnx::ModelProto) -> Result<OrtCalibrator> {
    let task = task_of(spec.path, spec.task)?;
    let (mut tokenizer, _) = crate::eval::load_tokenizer(model_path, model, spec.tokenizer)?;
    let data = load(
        spec.path,
        task,
        spec.samples,
        spec.seed,
        &mut tokenizer,
        spec.max_length,
        32,
    )?;
    Ok(OrtCalibrator::new(
        data.batches,
        SessionOptions {
            threads: spec.threads,
            ..Default::default()
        },
    ))
}
