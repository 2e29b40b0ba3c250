//! Renders reports (data from `inspect`, `eval`, passes) as text for people. JSON output is the
//! reports' own serde form.

use std::fmt::Write;

use crate::eval::EvalReport;
use crate::inspect::{IoInfo, ModelSummary};
use crate::options::Named;
use crate::passes::lowrank::LowrankReport;
use crate::passes::prune::PruneReport;

/// `n` with `one` or `many` after it: "1 batch", "3 batches".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// 22_713_218 → "22.71 M".
pub fn human(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn io_line(v: &[IoInfo]) -> String {
    v.iter()
        .map(|i| format!("{} {} [{}]", i.name, i.dtype, i.shape.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn inspect_text(s: &ModelSummary) -> String {
    let mut o = String::new();
    let p = s.parameters.clone().unwrap_or_default();
    let _ = writeln!(
        o,
        "model        {} ({:.2} MB, {:.2} MiB)",
        s.path.display(),
        s.file_bytes as f64 / 1e6,
        s.file_bytes as f64 / 1048576.0
    );
    let opsets: Vec<String> = s
        .opsets
        .iter()
        .map(|(d, v)| format!("{} {v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    let _ = writeln!(
        o,
        "format       IR {}, opsets {}; producer {}",
        s.ir_version,
        opsets.join(", "),
        s.producer
    );
    let _ = writeln!(o, "inputs       {}", io_line(&s.inputs));
    let _ = writeln!(o, "outputs      {}", io_line(&s.outputs));
    if let Some(why) = &s.unmapped {
        let _ = writeln!(o, "transformer  not mapped: {why}");
    } else {
        if let Some(a) = &s.architecture {
            let _ = writeln!(o, "architecture {a}");
        }
        if let Some(shows) = &s.quantized {
            let _ = writeln!(
                o,
                "quantized    already ({shows}): prune and lowrank need the float32 model"
            );
        }
        let heads: Vec<usize> = s.layers.iter().map(|l| l.heads).collect();
        let widths: Vec<usize> = s.layers.iter().map(|l| l.ffn_width).collect();
        let uniform = |v: &[usize]| v.windows(2).all(|w| w[0] == w[1]);
        // A layer left without heads has no head size.
        let head_size = s.layers.iter().map(|l| l.head_size).find(|&h| h > 0).unwrap_or(0);
        let _ = writeln!(
            o,
            "transformer  {} layers × {} heads × {head_size}, hidden {}{}, FFN {}{}",
            s.num_layers.unwrap_or(0),
            if uniform(&heads) {
                heads.first().map_or("0".into(), |h| h.to_string())
            } else {
                format!("{heads:?}")
            },
            s.hidden.unwrap_or(0),
            s.embedding_size
                .map(|e| format!(" (embeddings {e}, projected)"))
                .unwrap_or_default(),
            if uniform(&widths) {
                widths.first().map_or("0".into(), |h| h.to_string())
            } else {
                format!("{widths:?}")
            },
            s.num_labels.map(|n| format!(", {n} labels")).unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "parameters   {} total: embeddings {}, attention {}, FFN {}, pooler {}, classifier {}, other {}",
            human(p.total as f64),
            human(p.embeddings as f64),
            human(p.attention.iter().sum::<usize>() as f64),
            human(p.ffn.iter().sum::<usize>() as f64),
            human(p.pooler as f64),
            human(p.classifier as f64),
            human(p.other as f64)
        );
        let _ = writeln!(
            o,
            "MACs         per sequence of {} tokens{}: encoder {}, head {}",
            s.seq_len,
            crate::eval::past_positions(s.positions, s.seq_len).map_or(String::new(), |w| format!(" ({w})")),
            human(s.encoder_macs.unwrap_or(0) as f64),
            human(s.head_macs.unwrap_or(0) as f64)
        );
    }
    let _ = writeln!(
        o,
        "tokenizer    {}",
        if s.has_embedded_tokenizer {
            "embedded in the model"
        } else {
            "not embedded (looked up beside the model)"
        }
    );
    match (&s.class_names, &s.class_names_source) {
        (Some(names), Some(source)) => {
            let _ = writeln!(o, "classes      {} ({source})", names.join(", "));
        }
        (None, Some(why)) => {
            let _ = writeln!(o, "classes      {why}");
        }
        _ => {}
    }
    // The activation column is as wide as its widest entry ("gelu (fused op)").
    let act = s
        .layers
        .iter()
        .map(|l| l.activation.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    if s.unmapped.is_none() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "layer  heads  size  ffn    {:<act$} attn params  ffn params  MACs@{}  shape consts",
            "activation", s.seq_len
        );
    }
    for l in &s.layers {
        let _ = writeln!(
            o,
            "{:<6} {:<6} {:<5} {:<6} {:<act$} {:<12} {:<11} {:<8} {}{}",
            l.index,
            l.heads,
            l.head_size,
            l.ffn_width,
            l.activation,
            l.attention_shared_with
                .map_or_else(|| human(l.attention_params as f64), |j| format!("as layer {j}")),
            l.ffn_shared_with
                .map_or_else(|| human(l.ffn_params as f64), |j| format!("as layer {j}")),
            human(l.macs as f64),
            l.shape_constants,
            if l.fused_attention { " (fused attention)" } else { "" }
        );
    }
    // What pruning leaves alone, and why (`prune` refuses a fraction there; a MAC budget keeps them).
    let fixed = s.layers.iter().flat_map(|l| {
        [("heads", &l.heads_fixed), ("FFN neurons", &l.neurons_fixed)]
            .into_iter()
            .filter_map(move |(what, why)| why.as_ref().map(|why| (l.index, what, why)))
    });
    for (i, (layer, what, why)) in fixed.enumerate() {
        if i == 0 {
            let _ = writeln!(o);
        }
        let label = if i == 0 { "not pruned" } else { "" };
        let _ = writeln!(o, "{label:<12} layer {layer}'s {what}: {why}");
    }
    let _ = writeln!(o);
    if let Some(e) = &s.history_error {
        let _ = writeln!(o, "history      unreadable: {e}");
    } else if s.history.is_empty() {
        let _ = writeln!(o, "history      none (not written by onnx-compress)");
    } else {
        let _ = writeln!(o, "history");
        for (i, h) in s.history.iter().enumerate() {
            let mut delta = match (h.params_before, h.params_after) {
                (Some(b), Some(a)) => format!(", params {} → {}", human(b as f64), human(a as f64)),
                _ => String::new(),
            };
            if let (Some(b), Some(a)) = (h.macs_before, h.macs_after) {
                delta += &format!(", MACs@128 {} → {}", human(b as f64), human(a as f64));
            }
            let _ = writeln!(
                o,
                "  {}. {} {} (v{}, {}){delta}",
                i + 1,
                h.pass,
                h.options,
                h.tool_version,
                h.time
            );
        }
    }
    o
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.digits$}"))
}

/// When no batch was timed: why, and what to change.
fn untimed_hint(t: &crate::eval::Timing) -> String {
    let (timed, warmup) = (t.timed_batches, t.warmup_batches);
    if timed > 0 {
        return String::new();
    }
    if t.batches > warmup {
        return "; no speed: no batch is timed with --measure 0 (--measure, or eval.measure in a recipe)".into();
    }
    let all = match warmup {
        1 => "the one batch".to_string(),
        n => format!("all {n} batches"),
    };
    format!(
        "; no speed: {all} went to the warm-up — evaluate more examples (--limit) or \
         lower the warm-up (--warmup, or eval.warmup in a recipe)"
    )
}

fn labels_line(l: &crate::data::Labels) -> String {
    use crate::data::Labels;
    match l {
        Labels::Glue(t) => format!("{t}'s"),
        Labels::Scores => "scores (the model has one output: regression)".into(),
        Labels::Classes { names: Some(n), source } => format!("{} ({source})", n.join(", ")),
        Labels::Classes { names: None, source } => format!("class indexes ({source})"),
    }
}

/// Per-class precision, recall, F1 and support, then the confusion matrix (rows: gold, columns:
/// predicted).
fn class_table(per: &[crate::glue::ClassScores], matrix: &[Vec<usize>]) -> String {
    let mut o = String::new();
    let names: Vec<String> = per
        .iter()
        .map(|c| shorten_name(&c.name.clone().unwrap_or_else(|| c.class.to_string()), 24))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(5).max(9);
    let _ = writeln!(o, "  {:<width$}  precision  recall      F1  support", "class");
    for (c, name) in per.iter().zip(&names) {
        let _ = writeln!(
            o,
            "  {name:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
            c.precision, c.recall, c.f1, c.support
        );
    }
    let _ = write!(o, "  {:<width$}", "confusion");
    for name in &names {
        let _ = write!(o, "  {:>w$}", name, w = name.chars().count().max(6));
    }
    o.push_str("   (rows: gold, columns: predicted)\n");
    for (row, name) in matrix.iter().zip(&names) {
        let _ = write!(o, "  {name:<width$}");
        for (n, col) in row.iter().zip(&names) {
            let _ = write!(o, "  {n:>w$}", w = col.chars().count().max(6));
        }
        o.push('\n');
    }
    o
}

fn shorten_name(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// The `classes` line where a task's classes were read from the model's outputs by name.
fn class_order_line(r: &EvalReport) -> String {
    match (&r.class_order, r.task) {
        (Some(order), Some(t)) => format!(
            "classes      read by name: the model's outputs are {} ({}), so {t}'s {} are its outputs {}\n",
            order.names.join(", "),
            order.source,
            t.class_names().unwrap_or_default().join(", "),
            order
                .outputs
                .iter()
                .map(|&i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}

pub fn eval_text(r: &EvalReport) -> String {
    let mut o = String::new();
    let m = &r.metrics;
    let t = &r.timing;
    let _ = writeln!(o, "model        {}", r.model.display());
    let what = match (&r.task, &r.split) {
        (Some(t), Some(split)) => format!("{t} {split}"),
        _ => r.data_file.display().to_string(),
    };
    let _ = writeln!(
        o,
        "data         {what} ({}, {} of {}, max length {}{})",
        count(r.examples, "example", "examples"),
        count(r.batches, "batch", "batches"),
        // A --batch-size past the examples makes one batch of them all.
        r.batch_size.min(r.examples.max(1)),
        r.max_length,
        if r.bucket { ", length-bucketed" } else { "" }
    );
    o.push_str(&class_order_line(r));
    if !r.empty_texts.is_empty() {
        let shown = r.empty_texts.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let more = if r.empty_texts.len() > 5 { ", …" } else { "" };
        let _ = writeln!(
            o,
            "empty texts  {} ({shown}{more}): scored on the special tokens alone",
            count(r.empty_texts.len(), "example", "examples")
        );
    }
    let mut quality = Vec::new();
    if let Some(a) = m.accuracy {
        quality.push(format!("accuracy {a:.4}"));
    }
    if let Some(f) = m.f1 {
        quality.push(format!("F1 {f:.4}"));
    }
    if let Some(x) = m.mcc {
        quality.push(format!("MCC {x:.4}"));
    }
    if let Some(x) = m.pearson {
        quality.push(format!("Pearson {x:.4}"));
    }
    if let Some(x) = m.spearman {
        quality.push(format!("Spearman {x:.4}"));
    }
    if let Some(x) = m.macro_f1 {
        quality.push(format!("macro-F1 {x:.4}"));
    }
    if let Some(x) = m.mse {
        quality.push(format!("MSE {x:.4}"));
    }
    let _ = writeln!(o, "quality      {}", quality.join(", "));
    if let Some(why) = &m.correlation_undefined {
        let _ = writeln!(o, "note         {why}");
    }
    if r.task.is_none() {
        let cols = &r.columns;
        let _ = writeln!(
            o,
            "columns      text {:?}{}{}",
            cols.text,
            cols.pair.as_ref().map(|p| format!(", pair {p:?}")).unwrap_or_default(),
            cols.label
                .as_ref()
                .map(|l| format!(", label {l:?}"))
                .unwrap_or_default()
        );
        let _ = writeln!(o, "labels       {}", labels_line(&r.labels));
        if let (Some(per), Some(matrix)) = (&m.per_class, &m.confusion_matrix) {
            o.push_str(&class_table(per, matrix));
        }
    }
    let _ = writeln!(
        o,
        "speed        {} ms/batch, {} samples/s (p50 {} ms, p95 {} ms; {} timed after {} warm-up, {}, {}){}",
        opt(t.ms_per_batch, 2),
        opt(t.samples_per_s, 1),
        opt(t.p50_ms, 2),
        opt(t.p95_ms, 2),
        count(t.timed_batches, "batch", "batches"),
        t.warmup_batches,
        format!("{:?}", r.device).to_lowercase(),
        if r.threads == 0 {
            "default threads".to_string()
        } else {
            count(r.threads, "thread", "threads")
        },
        untimed_hint(t)
    );
    let _ = writeln!(o, "size         {:.2} MB ({:.2} MiB)", r.size_mb, r.size_mib);
    let _ = writeln!(
        o,
        "time         tokenize {:.3} s ({:.1}% of forward {:.3} s), wall {:.2} s",
        r.tokenize_seconds,
        100.0 * r.tokenize_seconds / r.forward_seconds.max(1e-9),
        r.forward_seconds,
        r.wall_seconds
    );
    let _ = writeln!(o, "tokenizer    {}", r.tokenizer);
    o
}

pub fn prune_text(r: &PruneReport, output: &std::path::Path) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "layer  heads      neurons      params          MACs@{}", r.seq_len);
    for l in &r.layers {
        // A layer reading an earlier one's weights (ALBERT) has them counted there.
        let params = match l.shares_weights_of {
            Some(j) => format!("{:<17}", format!("as layer {j}")),
            None => format!(
                "{:>7} → {:<7}",
                human(l.params_before as f64),
                human(l.params_after as f64)
            ),
        };
        let _ = writeln!(
            o,
            "{:<6} {:>2} → {:<4} {:>4} → {:<5} {params} {:>8} → {}",
            l.layer,
            l.heads_before,
            l.heads_after,
            l.neurons_before,
            l.neurons_after,
            human(l.macs_before as f64),
            human(l.macs_after as f64)
        );
    }
    let _ = writeln!(
        o,
        "parameters {} → {} ({:.1}%), encoder MACs {} → {} ({:.1}%), {:.2} s{}",
        human(r.params_before as f64),
        human(r.params_after as f64),
        100.0 * r.params_after as f64 / r.params_before.max(1) as f64,
        human(r.encoder_macs_before as f64),
        human(r.encoder_macs_after as f64),
        100.0 * r.encoder_macs_after as f64 / r.encoder_macs_before.max(1) as f64,
        r.seconds,
        if r.calibration_seconds > 0.0 {
            format!(" (calibration {:.1} s)", r.calibration_seconds)
        } else {
            String::new()
        }
    );
    let _ = writeln!(o, "wrote {}", output.display());
    o
}

pub fn run_text(r: &crate::pipeline::RunReport) -> String {
    let mut o = String::new();
    let e = &r.eval;
    let opt = |v: Option<f64>, d: usize| v.map(|v| format!("{v:.d$}")).unwrap_or_else(|| "—".into());
    let _ = writeln!(o, "variant      {} ({})", r.name, r.config.display());
    let found = match r.model_source.as_str() {
        "model_name" => String::new(),
        how => format!(" ({how})"),
    };
    let _ = writeln!(o, "input        {}{found}", r.model.display());
    let evaluated = match &r.output {
        Some(p) => p.display().to_string(),
        None if r.steps.is_empty() => "the input (no pass)".into(),
        None => "the compressed model, in a temporary file".into(),
    };
    let _ = writeln!(o, "evaluated    {evaluated}");
    if r.steps.is_empty() {
        let _ = writeln!(o, "passes       none (baseline)");
    }
    for s in &r.steps {
        let _ = writeln!(o, "pass         {} ({:.2} s): {}", s.pass, s.seconds, s.summary);
    }
    o.push_str(&class_order_line(e));
    let _ = writeln!(
        o,
        "quality      accuracy {}, F1 {} ({} {} examples)",
        opt(e.metrics.accuracy, 4),
        opt(e.metrics.f1, 4),
        e.examples,
        e.split.as_deref().unwrap_or("data")
    );
    let _ = writeln!(
        o,
        "speed        {} ms/batch, {} samples/s ({}, {}, timed after {} warm-up, {}){}",
        opt(e.timing.ms_per_batch, 2),
        opt(e.timing.samples_per_s, 1),
        // The examples timed, not the batch size: a short last batch holds fewer.
        count(e.timing.timed_batches, "batch", "batches"),
        count(e.timing.timed_samples, "example", "examples"),
        e.timing.warmup_batches,
        format!("{:?}", e.device).to_lowercase(),
        untimed_hint(&e.timing)
    );
    let _ = writeln!(
        o,
        "size         {:.2} MiB, {} parameters, encoder MACs@{} {}",
        e.size_mib,
        human(r.params as f64),
        crate::pipeline::MAC_SEQ_LEN,
        r.encoder_macs.map(|m| human(m as f64)).unwrap_or_else(|| "—".into())
    );
    let _ = writeln!(
        o,
        "output       {}",
        r.output
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "not kept (add --out MODEL to keep it)".into())
    );
    let _ = writeln!(
        o,
        "time         passes {:.2} s, calibration data {:.2} s, eval {:.2} s, other {:.2} s, wall {:.2} s",
        r.pass_seconds, r.calibration_load_seconds, e.wall_seconds, r.overhead_seconds, r.wall_seconds
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| Variant | Acc ↑ | F1 ↑ | Avg Forward (ms/batch) ↓ | Throughput (samples/s) ↑ | Size (MiB) ↓ |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| {} | {} | {} | {} | {} | {:.2} |",
        r.name,
        opt(e.metrics.accuracy, 4),
        opt(e.metrics.f1, 4),
        opt(e.timing.ms_per_batch, 2),
        opt(e.timing.samples_per_s, 1),
        e.size_mib
    );
    o
}

pub fn quantize_text(r: &crate::passes::quantize::QuantizeReport, output: &std::path::Path, bytes: u64) -> String {
    use crate::passes::quantize::{Mode, StaticForm};
    let mut o = String::new();
    let mode = match r.options.mode {
        Mode::Static if r.options.static_form == StaticForm::Ort => {
            "static int8 (calibrated, ONNX Runtime's MatMulIntegerToFloat form)"
        }
        Mode::Static => "static int8 (QDQ, calibrated)",
        Mode::Dynamic => "dynamic int8 (DynamicQuantizeMatMul)",
        Mode::Fp16 => "float16",
    };
    let _ = writeln!(o, "mode         {mode}");
    if r.options.mode != Mode::Fp16 {
        let worst = r
            .matmuls
            .iter()
            .map(|m| m.max_weight_error / m.max_half_scale.max(f32::MIN_POSITIVE))
            .fold(0f32, f32::max);
        let _ =
            writeln!(
            o,
            "matmuls      {} quantized{} (weights {}, {}; worst |error| {:.3} of scale/2), {} kept float by --exclude",
            r.matmuls.len(),
            match r.matmuls.iter().filter(|m| m.op == "Attention").count() {
                0 => String::new(),
                k => format!(", {k} of them fused Attention"),
            },
            r.options.weight_type.name(),
            if r.options.per_channel { "per output channel" } else { "per tensor" },
            worst,
            r.excluded.len()
        );
        let _ = writeln!(o, "first token  {}", first_token_text(r));
        if r.attention_ops > 0 {
            let _ = writeln!(
                o,
                "attention    {} {} as one ONNX Attention op each (opset 23: the scores stay in the kernel)",
                r.attention_ops,
                if r.attention_ops == 1 { "core runs" } else { "cores run" }
            );
        }
        if r.attention_length_groups > 0 {
            let _ = writeln!(
                o,
                "attention    {} of them in two length groups per batch (each padded to its own longest sequence)",
                r.attention_length_groups
            );
        }
        if r.keys_read_transposed > 0 {
            let _ = writeln!(
                o,
                "attention    {} {} keys transposed (FusedMatMul transB, no [0,2,3,1] Transpose)",
                r.keys_read_transposed,
                if r.keys_read_transposed == 1 {
                    "score product reads its"
                } else {
                    "score products read their"
                }
            );
        }
        if r.options.mode == Mode::Static {
            let _ = writeln!(
                o,
                "activations  {} quantized with calibrated ranges ({}, {} calibration on {} examples / {} tokens, {:.1} s)",
                r.activations.len(),
                // As the flags and the JSON write them (u8, percentile), not Rust's names.
                format!("{:?}", r.options.activation_type).to_lowercase(),
                format!("{:?}", r.options.calib_method).to_lowercase(),
                r.calibration_examples,
                r.calibration_tokens,
                r.calibration_seconds
            );
        }
        let _ = writeln!(
            o,
            "embeddings   {}",
            if r.embeddings.is_empty() {
                "kept float32".to_string()
            } else {
                // The storage once when every table has the same, else per table.
                let one = r.embeddings.iter().all(|e| e.stored == r.embeddings[0].stored);
                r.embeddings
                    .iter()
                    .map(|e| {
                        let each = if one { String::new() } else { format!(" {}", e.stored) };
                        format!("{} [{}×{}]{each}", e.table, e.rows, e.cols)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
                    + &if one {
                        format!(" {}", r.embeddings[0].stored)
                    } else {
                        String::new()
                    }
            }
        );
    } else {
        let _ = writeln!(
            o,
            "float32      {} nodes (LayerNorm, softmax, logits, --exclude)",
            r.kept_float32.len()
        );
    }
    for w in &r.warnings {
        let _ = writeln!(o, "note         {w}");
    }
    let _ = writeln!(
        o,
        "tensor data  {} → {} bytes ({:.1}%), {:.2} s{}",
        r.weight_bytes_before,
        r.weight_bytes_after,
        100.0 * r.weight_bytes_after as f64 / r.weight_bytes_before.max(1) as f64,
        r.seconds,
        // As prune and lowrank say theirs: the total, then the calibration runs in it.
        if r.calibration_seconds > 0.0 {
            format!(" (calibration {:.1} s)", r.calibration_seconds)
        } else {
            String::new()
        }
    );
    let _ = writeln!(o, "wrote {} ({} bytes)", output.display(), bytes);
    o
}

/// What the first-token split did, in one line.
fn first_token_text(r: &crate::passes::quantize::QuantizeReport) -> String {
    if !r.options.split_first_token {
        return "not split (every block runs all tokens at once)".into();
    }
    // "layer 0", "layers 0,1".
    let list = |l: &[usize]| {
        let s = if l.len() == 1 { "" } else { "s" };
        format!(
            "layer{s} {}",
            l.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        )
    };
    let mut parts = vec![];
    if !r.first_token_split_layers.is_empty() {
        parts.push(format!("FFN split in {}", list(&r.first_token_split_layers)));
    }
    if !r.first_token_split_qkv_layers.is_empty() {
        parts.push(format!("Q/K/V split in {}", list(&r.first_token_split_qkv_layers)));
    }
    if let Some(l) = r.first_token_only_ffn_layer {
        let what = if r.first_token_only_attention_layer == Some(l) {
            "attention query and FFN"
        } else {
            "FFN"
        };
        parts.push(format!(
            "layer {l}'s {what} on the first token only (the rest is not read)"
        ));
    }
    if r.tokens_packed {
        parts.push(format!(
            "every layer on the real tokens only (packed rows, padded again for the attention scores: {})",
            list(&r.unpadded_layers)
        ));
    } else if !r.unpadded_layers.is_empty() {
        parts.push(format!(
            "the other tokens on the real tokens only in {}",
            list(&r.unpadded_layers)
        ));
    } else if r.options.unpad {
        parts.push("nothing unpadded (see the notes)".into());
    }
    if parts.is_empty() {
        "nothing split (see the notes)".into()
    } else {
        parts.join("; ")
    }
}

pub fn lowrank_text(r: &LowrankReport, output: &std::path::Path) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "method       {}", r.method);
    let _ = writeln!(
        o,
        "{:<20} {:>11} {:>5} {:>6} {:>7} {:>8}  {:>17}  note",
        "layer", "shape", "rank", "full", "b-even", "energy", "params"
    );
    for l in &r.layers {
        let _ = writeln!(
            o,
            "{:<20} {:>11} {:>5} {:>6} {:>7.1} {:>8.4}  {:>7} → {:<7}  {}",
            l.name,
            format!("{}×{}", l.in_features, l.out_features),
            if l.rank == 0 {
                "-".to_string()
            } else {
                l.rank.to_string()
            },
            l.full_rank,
            l.break_even,
            l.energy_kept,
            human(l.params_before as f64),
            human(l.params_after as f64),
            if l.factorized {
                "factorized".to_string()
            } else {
                format!("kept: {}", l.skipped.as_deref().unwrap_or(""))
            }
        );
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let _ = writeln!(
        o,
        "layers       {} factorized, {} left as they were (see each one's note); selected params {} → {} ({:.1}%)",
        r.factorized,
        r.skipped,
        human(r.selected_params_before as f64),
        human(r.selected_params_after as f64),
        pct(r.selected_params_after, r.selected_params_before)
    );
    if let (Some(keep), Some(b), Some(a)) = (r.options.target_params, r.budget_weights_before, r.budget_weights_after) {
        let _ = writeln!(
            o,
            "budget       --target-params {keep} of the calibrated layers' weights (biases aside; not the pooler or classifier): {} → {} ({:.1}%)",
            human(b as f64),
            human(a as f64),
            pct(a, b)
        );
    }
    let _ = writeln!(
        o,
        "encoder      Linear params {} → {} ({:.1}%), MACs@{} {} → {} ({:.1}%)",
        human(r.encoder_linear_params_before as f64),
        human(r.encoder_linear_params_after as f64),
        pct(r.encoder_linear_params_after, r.encoder_linear_params_before),
        r.seq_len,
        human(r.encoder_macs_before as f64),
        human(r.encoder_macs_after as f64),
        100.0 * r.encoder_macs_after as f64 / r.encoder_macs_before.max(1) as f64
    );
    let _ = writeln!(
        o,
        "model        params {} → {} ({:.1}%), {:.2} s{}",
        human(r.params_before as f64),
        human(r.params_after as f64),
        pct(r.params_after, r.params_before),
        r.seconds,
        if r.calibration_seconds > 0.0 {
            format!(
                " (calibration {:.1} s on {} examples, {} tokens)",
                r.calibration_seconds,
                r.calibration_examples.unwrap_or(0),
                r.calibration_tokens.unwrap_or(0)
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(o, "wrote {}", output.display());
    o
}

/// One line on what a prune step did (results rows).
pub fn prune_summary(r: &PruneReport) -> String {
    format!(
        "{}: heads {} → {}, FFN neurons {} → {}, encoder MACs ×{:.3}",
        r.options.strategy.name(),
        r.layers.iter().map(|l| l.heads_before).sum::<usize>(),
        r.layers.iter().map(|l| l.heads_after).sum::<usize>(),
        r.layers.iter().map(|l| l.neurons_before).sum::<usize>(),
        r.layers.iter().map(|l| l.neurons_after).sum::<usize>(),
        r.encoder_macs_after as f64 / r.encoder_macs_before.max(1) as f64
    )
}

/// One line on what a low-rank step did (results rows).
pub fn lowrank_summary(r: &LowrankReport) -> String {
    let budget = match (r.options.target_params, r.budget_weights_before, r.budget_weights_after) {
        (Some(keep), Some(b), Some(a)) => format!(
            "; target_params {keep}: the calibrated weights {:.1}% of before",
            100.0 * a as f64 / b.max(1) as f64
        ),
        _ => String::new(),
    };
    format!(
        "{}: {} layers factorized, {} left dense; encoder Linear parameters {:.1}% of before{budget}",
        r.method,
        r.factorized,
        r.skipped,
        100.0 * r.encoder_linear_params_after as f64 / r.encoder_linear_params_before.max(1) as f64
    )
}

/// One line on what a quantization step did (results rows).
pub fn quantize_summary(r: &crate::passes::quantize::QuantizeReport) -> String {
    use crate::passes::quantize::Mode;
    let what = if r.options.mode == Mode::Fp16 {
        format!("float16, {} values kept in float32", r.kept_float32.len())
    } else {
        format!(
            "{} int8: {} MatMuls, {} embedding tables",
            r.options.mode.name(),
            r.matmuls.len(),
            r.embeddings.len()
        )
    };
    format!(
        "{what}; tensor data {:.1}% of before{}",
        100.0 * r.weight_bytes_after as f64 / r.weight_bytes_before.max(1) as f64,
        if r.warnings.is_empty() {
            String::new()
        } else {
            format!("; {}", r.warnings.join("; "))
        }
    )
}

/// `diff`: agreement, flips with their texts, the margin change, the per-layer drift.
pub fn diff_text(r: &crate::diff::DiffReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "A            {}", r.model_a.display());
    let _ = writeln!(o, "B            {}", r.model_b.display());
    let what = match (&r.task, &r.split) {
        (Some(t), Some(split)) => format!("{t} {split}"),
        _ => r.data_file.display().to_string(),
    };
    let _ = writeln!(o, "data         {what} ({})", count(r.examples, "example", "examples"));
    for (which, order) in [("A", &r.class_order_a), ("B", &r.class_order_b)] {
        if let Some(c) = order {
            let _ = writeln!(
                o,
                "classes      {which}'s outputs are {} ({}): read by name, in {}'s order",
                c.names.join(", "),
                c.source,
                r.task.map_or_else(|| "A".to_string(), |t| t.to_string())
            );
        }
    }
    if let (Some(a), Some(flips)) = (r.agreement, r.flips) {
        let _ = writeln!(
            o,
            "agreement    {a:.4} ({flips} of {} flip)",
            count(r.examples, "example", "examples")
        );
    }
    if let (Some(aa), Some(ab), Some(rw), Some(wr)) = (r.accuracy_a, r.accuracy_b, r.a_right_b_wrong, r.a_wrong_b_right)
    {
        let _ = writeln!(
            o,
            "accuracy     A {aa:.4}, B {ab:.4} (B {:+.2} points: {rw} right in A only, {wr} in B only)",
            (ab - aa) * 100.0
        );
    }
    if let (Some(pa), Some(pb), Some(sa), Some(sb)) = (r.pearson_a, r.pearson_b, r.spearman_a, r.spearman_b) {
        let _ = writeln!(
            o,
            "pearson      A {pa:.4}, B {pb:.4} (B {:+.4}); Spearman A {sa:.4}, B {sb:.4} (B {:+.4})",
            pb - pa,
            sb - sa
        );
        for why in &r.correlation_undefined {
            let _ = writeln!(o, "note         {why}");
        }
    }
    if !r.labelled {
        let _ = writeln!(o, "accuracy     not measured: the data file has no labels");
    }
    if let Some(c) = &r.change {
        let what = if r.agreement.is_some() {
            "margin Δ     B's margin for A's class − A's"
        } else {
            "score Δ      B − A"
        };
        let _ = writeln!(
            o,
            "{what}: mean {:+.4}, min {:+.4}, p5 {:+.4}, p25 {:+.4}, median {:+.4}, p75 {:+.4}, p95 {:+.4}, max {:+.4}",
            c.mean, c.min, c.p5, c.p25, c.median, c.p75, c.p95, c.max
        );
    }
    let _ = writeln!(o, "logits       largest difference {:.4}", r.max_abs_logit_diff);
    if !r.layers.is_empty() {
        let _ = writeln!(o, "\nhidden states: ‖h_B − h_A‖ / ‖h_A‖ over all real tokens");
        for l in &r.layers {
            let _ = writeln!(
                o,
                "  {:<12} {:>9.5}{}",
                l.at,
                l.relative_error,
                if r.first_past_threshold.as_deref() == Some(l.at.as_str()) {
                    format!("  ← first past {}", r.threshold)
                } else {
                    String::new()
                }
            );
        }
        if r.first_past_threshold.is_none() {
            // Points left out (a quantized model's, a deeper model's) may be past it.
            let among = if r.layers_note.is_some() {
                " among those compared"
            } else {
                ""
            };
            let _ = writeln!(o, "  (no point past {}{among})", r.threshold);
        }
    }
    if let Some(n) = &r.layers_note {
        let _ = writeln!(o, "note         {n}");
    }
    if !r.shown_flips.is_empty() {
        let _ = writeln!(
            o,
            "\nflips (first {} of {}; margins: top logit − runner-up)",
            r.shown_flips.len(),
            r.flips.unwrap_or_default()
        );
        for f in &r.shown_flips {
            // Classes by name where the labels are named (--labels, the model's); else by index.
            let class = |c: Option<usize>, name: &Option<String>| {
                name.clone()
                    .unwrap_or_else(|| c.map_or("-".to_string(), |c| c.to_string()))
            };
            let text = match &f.text_pair {
                Some(p) => format!("{} ‖ {}", f.text, p),
                None => f.text.clone(),
            };
            // One line per flip: a text's own line breaks and tabs shown as spaces.
            let text = text.replace(['\n', '\r', '\t'], " ");
            let gold = if r.labelled {
                format!("gold {}  ", class(f.row.label, &f.row.label_name))
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "  {:<9} {gold}A {} ({:.3})  B {} ({:.3})  {}",
                f.row.at,
                class(f.row.pred_a, &f.row.pred_a_name),
                f.row.margin_a,
                class(f.row.pred_b, &f.row.pred_b_name),
                f.row.margin_b,
                shorten_name(&text, 100)
            );
        }
    }
    let _ = writeln!(o, "time         {:.2} s; tokenizer {}", r.wall_seconds, r.tokenizer);
    o
}

/// `sensitivity`: a table per kind (pruning: layer × block × fraction; int8: per MatMul).
pub fn sensitivity_text(r: &crate::sensitivity::SensitivityReport) -> String {
    let mut o = String::new();
    let pct = |a: Option<f64>| a.map_or("-".to_string(), |a| format!("{:.1}%", a * 100.0));
    let _ = writeln!(
        o,
        "measured on {} ({}); cost = {}, agree = predictions unchanged",
        count(r.calibration_examples, "calibration example", "calibration examples"),
        count(r.calibration_tokens, "token", "tokens"),
        r.cost.words().0
    );
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    // No table when pruning was not measured (a low-rank model: said in the notes).
    if !r.fractions.is_empty() {
        let _ = writeln!(
            o,
            "\npruning one block alone (calibrated: greedy OBS removal with compensation)"
        );
        // Each cell says the units it removes.
        let mut head = format!("{:<6} {:<10}", "layer", "block");
        for f in &r.fractions {
            head += &format!(
                " {:<32}",
                format!("−{}: cost / agree (removed)", crate::sensitivity::percent(*f))
            );
        }
        let _ = writeln!(o, "{}", head.trim_end());
        for l in 0..r.layers {
            for block in ["attention", "ffn"] {
                let cells: Vec<&crate::passes::prune::BlockCost> =
                    r.pruning.iter().filter(|b| b.layer == l && b.block == block).collect();
                if cells.is_empty() {
                    continue;
                }
                let label = match &cells[0].layers[..] {
                    [first, .., last] if last - first + 1 == cells[0].layers.len() => format!("{first}-{last}"),
                    [_, _, ..] => cells[0]
                        .layers
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => l.to_string(),
                };
                let mut line = format!("{label:<6} {block:<10}");
                for f in &r.fractions {
                    match cells.iter().find(|b| b.fraction == *f) {
                        Some(b) => {
                            line += &format!(
                                " {:<32}",
                                format!(
                                    "{:.2e} / {} ({} of {})",
                                    b.divergence,
                                    pct(b.agreement),
                                    b.removed,
                                    b.units
                                )
                            )
                        }
                        None => line += &format!(" {:<32}", "-"),
                    }
                }
                let _ = writeln!(o, "{}", line.trim_end());
            }
        }
        if r.pruning.iter().any(|b| b.layers.len() > 1 && !b.in_step) {
            let _ = writeln!(
                o,
                "(a row naming several layers: they share one block's weights, and it prunes the block in each)"
            );
        }
        if r.pruning.iter().any(|b| b.in_step) {
            let _ = writeln!(
                o,
                "(attention of several layers: their head count is computed once for all of them, so their heads are pruned in step, as many in each, as calibrated pruning prunes them)"
            );
        }
    }
    if let Some(mode) = &r.int8_mode {
        let _ = writeln!(o, "\nint8 on one MatMul alone ({mode})");
        let _ = writeln!(o, "{:<6} {:<17} {:>10} {:>8}  node", "layer", "role", "cost", "agree");
        for m in &r.int8 {
            let _ = writeln!(
                o,
                "{:<6} {:<17} {:>10.2e} {:>8}  {}",
                m.layer.map_or("-".to_string(), |l| l.to_string()),
                m.role.as_deref().unwrap_or("-"),
                m.divergence,
                pct(m.agreement),
                m.node
            );
        }
    }
    let _ = writeln!(o, "\ntime {:.1} s", r.seconds);
    o
}
