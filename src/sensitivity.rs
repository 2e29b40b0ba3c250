//! `sensitivity`: where accuracy goes, measured on calibration data — the cost of pruning each
//! attention and FFN block alone at a few fractions (as calibrated pruning would prune it, with
//! its compensation), and the cost of dynamic INT8 on each MatMul alone. Each cost is the mean KL
//! divergence of the model's predictions from the unchanged model's, with the share of unchanged
//! predicted classes beside it (for one output or a headless encoder's hidden states, the mean
//! squared difference): the numbers calibrated pruning's allocator works from, exposed.

use std::time::Instant;

use serde::Serialize;

use crate::onnx::ModelProto;
use crate::passes::prune::{block_costs, check_fractions, BlockCost};
use crate::passes::quantize::{self, Mode, QuantizeOptions};
use crate::passes::{agreement, divergence, ensure_finite, Calibrator, PassError};
use crate::structure;

#[derive(Debug, Clone)]
pub struct SensitivityOptions {
    /// Pruning fractions per block, each in (0, 1).
    pub fractions: Vec<f64>,
    /// Also measure dynamic INT8 per MatMul.
    pub int8: bool,
    /// Sequence length for the MACs saved.
    pub seq_len: usize,
}

impl Default for SensitivityOptions {
    fn default() -> Self {
        SensitivityOptions {
            fractions: vec![0.25, 0.5, 0.75],
            int8: true,
            seq_len: 128,
        }
    }
}

impl SensitivityOptions {
    pub fn validate(&self) -> Result<(), PassError> {
        check_fractions(&self.fractions)?;
        if self.seq_len == 0 {
            return Err(PassError::Options(crate::options::OptionError::new(
                "seq_len",
                "`seq_len` must be at least 1",
            )));
        }
        Ok(())
    }
}

/// The cost of quantizing one MatMul alone.
#[derive(Debug, Clone, Serialize)]
pub struct MatMulCost {
    pub node: String,
    /// The encoder layer (none outside the layers) and the projection it is (`query`, `ffn.up`,
    /// ...; `embeddings.project`, `pooler`, `classifier` outside them), when mapped.
    pub layer: Option<usize>,
    pub role: Option<String>,
    pub divergence: f64,
    pub agreement: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SensitivityReport {
    pub layers: usize,
    pub calibration_examples: usize,
    pub calibration_tokens: usize,
    pub fractions: Vec<f64>,
    pub seq_len: usize,
    pub pruning: Vec<BlockCost>,
    /// How INT8 was measured (empty when not asked for).
    pub int8_mode: Option<String>,
    pub int8: Vec<MatMulCost>,
    /// What a cost is (`kl` or `mse` in the JSON).
    pub cost: Cost,
    /// What to know before reading the costs (too few calibration tokens for the refit).
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// What a sensitivity cost measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cost {
    /// Mean KL divergence of a classifier's predictions from the unchanged model's.
    Kl,
    /// Mean squared difference of the outputs: a one-output model's, or a headless encoder's
    /// hidden states on the real tokens.
    Mse,
}

impl Cost {
    /// The cost in words, and the chart's name for it.
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            Cost::Kl => (
                "mean KL divergence of the predictions from the unchanged model's",
                "KL divergence",
            ),
            Cost::Mse => (
                "mean squared difference of the outputs from the unchanged model's (one output, or a headless encoder's hidden states on the real tokens)",
                "squared difference",
            ),
        }
    }
}

/// (layer, role) of each MatMul node name of the mapped model: the encoder layers' projections,
/// and outside them the embeddings' projection, the pooler and the classifier (no layer); a
/// factorized layer's two MatMuls are its role's `A` and `B` factors (`ffn.up A`).
fn roles(t: &structure::Transformer) -> Vec<(String, Option<usize>, String)> {
    let mut linears: Vec<(&structure::Linear, Option<usize>, &str)> = Vec::new();
    if let Some(p) = &t.embeddings.project {
        linears.push((p, None, "embeddings.project"));
    }
    for l in &t.layers {
        let at = Some(l.index);
        if let Some(a) = &l.attention {
            match &a.qkv {
                structure::Qkv::Separate { q, k, v } => {
                    linears.extend([(q, at, "query"), (k, at, "key"), (v, at, "value")]);
                }
                structure::Qkv::Stacked { qkv } => linears.push((qkv, at, "qkv")),
                structure::Qkv::Packed { .. } => {}
            }
            linears.push((&a.output, at, "attention.output"));
        }
        if let Some(f) = &l.ffn {
            linears.extend([(&f.up, at, "ffn.up"), (&f.down, at, "ffn.down")]);
        }
    }
    if let Some(h) = &t.head {
        linears.extend(h.pooler.as_ref().map(|p| (p, None, "pooler")));
        linears.push((&h.classifier, None, "classifier"));
    }
    let mut v = Vec::new();
    for (lin, layer, role) in linears {
        match &lin.factor {
            None => v.push((lin.node_name.clone(), layer, role.to_string())),
            Some(b) => {
                v.push((lin.node_name.clone(), layer, format!("{role} A")));
                v.push((b.node_name.clone(), layer, format!("{role} B")));
            }
        }
    }
    v
}

/// Measures `model` on the calibration data. `stage` is told what runs.
pub fn sensitivity(
    model: &ModelProto,
    opts: &SensitivityOptions,
    calib: &mut dyn Calibrator,
    stage: &mut dyn FnMut(&str),
) -> Result<SensitivityReport, PassError> {
    opts.validate()?;
    // As the passes take it (the copies measured are pruned or quantized ones).
    let prepared = crate::passes::prepared(model);
    let model = prepared.as_ref().unwrap_or(model);
    let start = Instant::now();
    let t = structure::discover(model)?;
    // A low-rank model cannot be pruned; its INT8 costs can still be measured.
    let factorized = crate::passes::prune::factorized(&t);
    if let (false, Some(what)) = (opts.int8, &factorized) {
        return Err(PassError::Unsupported(format!(
            "{what}: pruning a low-rank model is not supported, and --no-int8 leaves its INT8 costs unmeasured: nothing is left to measure; drop --no-int8 to measure them, or measure the model from before lowrank"
        )));
    }
    let (pruning, mut labels) = match factorized {
        Some(_) => (vec![], 0),
        None => block_costs(model, &opts.fractions, opts.seq_len, calib, &mut *stage)?,
    };
    let mut int8 = Vec::new();
    let q = QuantizeOptions {
        mode: Mode::Dynamic,
        per_channel: true,
        embeddings: false,
        split_first_token: false,
        ..Default::default()
    };
    if opts.int8 {
        let (reference, n) = calib.logits(model)?;
        labels = n;
        ensure_finite("the model's logits on the calibration data", &reference)?;
        let roles = roles(&t);
        let names = quantize::quantizable_matmuls(model)?;
        for (i, name) in names.iter().enumerate() {
            stage(&format!("int8 [{}/{}] {name}", i + 1, names.len()));
            let (quantized, _) = quantize::quantize_selected(model, &q, None, &|n| n == name)?;
            let (logits, _) = calib.logits(&quantized)?;
            ensure_finite(&format!("the logits with '{name}' in int8"), &logits)?;
            let role = roles.iter().find(|(n, _, _)| n == name);
            int8.push(MatMulCost {
                node: name.clone(),
                layer: role.and_then(|r| r.1),
                role: role.map(|r| r.2.clone()),
                divergence: divergence(&reference, &logits, labels),
                agreement: agreement(&reference, &logits, labels),
            });
        }
    }
    // A classifier's costs are KL divergences of its predictions; one output's (or a headless
    // encoder's hidden states') are mean squared differences.
    let cost = if labels > 1 { Cost::Kl } else { Cost::Mse };
    let notes = (!opts.fractions.is_empty() && factorized.is_none())
        .then(|| crate::passes::prune::few_tokens_note(model, calib.tokens(), true, true))
        .flatten()
        .into_iter()
        .chain(
            factorized
                .as_ref()
                .map(|what| format!("pruning not measured: {what}: pruning a low-rank model is not supported")),
        )
        .chain(capped_note(&pruning))
        .chain(fixed_note(&t).filter(|_| !opts.fractions.is_empty() && factorized.is_none()))
        .chain(packed_note(&t, opts.int8))
        .chain(
            crate::eval::past_positions(crate::eval::input_limits_of(model, Some(&t)).positions, opts.seq_len)
                .filter(|_| !pruning.is_empty())
                .map(|w| format!("MACs saved are counted at {} tokens, {w} (--seq-len)", opts.seq_len)),
        )
        .collect();
    // The fractions measured (none when pruning was not).
    let mut fractions = if factorized.is_some() {
        vec![]
    } else {
        opts.fractions.clone()
    };
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    Ok(SensitivityReport {
        layers: t.layers.len(),
        calibration_examples: calib.examples(),
        calibration_tokens: calib.tokens(),
        fractions,
        seq_len: opts.seq_len,
        pruning,
        int8_mode: opts
            .int8
            .then(|| "dynamic int8: s8 per-channel weights, u8 per-tensor activations, one MatMul at a time".into()),
        cost,
        int8,
        notes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A note when a block removed fewer units than its fraction asks: calibrated pruning keeps one
/// head of an attention block and a share of an FFN's neurons.
fn capped_note(pruning: &[BlockCost]) -> Option<String> {
    let capped = pruning
        .iter()
        .any(|b| b.removed < crate::passes::prune::units_asked(b.units, b.fraction));
    capped.then(|| {
        format!(
            "as calibrated pruning does, an attention block keeps one head and an FFN {} of its neurons: at the larger fractions a block removes fewer units than the fraction asks (each cell says how many)",
            percent(1.0 - crate::passes::prune::DEFAULT_MAX_FFN_FRACTION)
        )
    })
}

/// A note naming the blocks whose heads or neurons are not pruned (`heads_fixed`,
/// `neurons_fixed`), which have no pruning rows.
fn fixed_note(t: &structure::Transformer) -> Option<String> {
    let blocks: Vec<String> = t
        .layers
        .iter()
        .flat_map(|l| {
            let heads = l
                .attention
                .as_ref()
                .and_then(|a| a.heads_fixed.as_ref())
                .map(|_| "attention");
            let ffn = l.ffn.as_ref().and_then(|f| f.neurons_fixed.as_ref()).map(|_| "FFN");
            [heads, ffn]
                .into_iter()
                .flatten()
                .map(move |b| format!("layer {} {b}", l.index))
        })
        .collect();
    (!blocks.is_empty()).then(|| {
        format!(
            "no pruning rows for {}: pruning leaves their heads or neurons alone (inspect says why)",
            blocks.join(", ")
        )
    })
}

/// A note when INT8 is measured on a fused graph: its packed-QKV `Attention` nodes, which
/// `quantize` turns into `QAttention`, are not MatMuls and have no row.
fn packed_note(t: &structure::Transformer, int8: bool) -> Option<String> {
    let packed = t
        .layers
        .iter()
        .filter(|l| {
            l.attention
                .as_ref()
                .is_some_and(|a| matches!(a.qkv, structure::Qkv::Packed { .. }))
        })
        .count();
    (int8 && packed > 0).then(|| {
        format!(
            "the INT8 rows are MatMuls only: the query, key and value projections inside the {packed} fused Attention nodes (which quantize makes QAttention) are not measured"
        )
    })
}

/// The report as CSV: one row per measurement (`kind` pruning or int8; `layers`, the layers a
/// pruning row prunes, `in_step` whether their heads go in step rather than share weights).
pub fn csv(r: &SensitivityReport) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut s =
        String::from("kind,layer,block,fraction,removed,units,macs_saved,node,divergence,agreement,layers,in_step\n");
    for b in &r.pruning {
        let layers: Vec<String> = b.layers.iter().map(usize::to_string).collect();
        s += &format!(
            "pruning,{},{},{},{},{},{},,{:.6e},{},{},{}\n",
            b.layer,
            b.block,
            b.fraction,
            b.removed,
            b.units,
            b.macs_saved,
            b.divergence,
            opt(b.agreement),
            layers.join(" "),
            b.in_step
        );
    }
    for m in &r.int8 {
        s += &format!(
            "int8,{},{},,,,,{},{:.6e},{},,\n",
            m.layer.map(|l| l.to_string()).unwrap_or_default(),
            m.role.as_deref().unwrap_or(""),
            crate::report::csv_field(&m.node),
            m.divergence,
            opt(m.agreement)
        );
    }
    s
}

/// The chart: per layer, the divergence of each block pruned at each fraction, and of the worst
/// MatMul of the layer in int8.
/// A fraction as a percentage with the digits it needs: 0.5 is "50%", 0.001 "0.1%" (not "0%").
pub fn percent(f: f64) -> String {
    let p = format!("{:.3}", f * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    if p == "0" && f > 0.0 {
        // Below a thousandth of a percent: in exponent form, never "0%".
        return format!("{:.1e}%", f * 100.0);
    }
    format!("{p}%")
}

pub fn chart(r: &SensitivityReport) -> crate::chart::Lines {
    let mut series = Vec::new();
    for block in ["attention", "ffn"] {
        for &f in &r.fractions {
            let points: Vec<(f64, f64)> = r
                .pruning
                .iter()
                .filter(|b| b.block == block && b.fraction == f)
                .map(|b| (b.layer as f64, b.divergence))
                .collect();
            if !points.is_empty() {
                series.push((format!("{block} −{}", percent(f)), points));
            }
        }
    }
    let mut worst: Vec<(f64, f64)> = Vec::new();
    for m in &r.int8 {
        let Some(l) = m.layer else { continue };
        match worst.iter_mut().find(|p| p.0 == l as f64) {
            Some(p) => p.1 = p.1.max(m.divergence),
            None => worst.push((l as f64, m.divergence)),
        }
    }
    if !worst.is_empty() {
        worst.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(("int8 (worst MatMul)".into(), worst));
    }
    crate::chart::Lines {
        title: format!("Sensitivity: {} from the unchanged model", r.cost.words().1),
        x_label: "layer".into(),
        y_label: format!("mean {} (log)", r.cost.words().1),
        series,
    }
}

/// The files [`write`] writes into its folder.
pub const FILES: [&str; 4] = [
    "sensitivity.csv",
    "sensitivity.json",
    "sensitivity.svg",
    "sensitivity.png",
];

/// Checks, before the measuring, that [`write`] can write into `dir` without replacing a file
/// the command reads (`reads`: the path and what it is) and without meeting a folder or a device
/// where a file goes.
pub fn check_out(dir: &std::path::Path, reads: &[(&std::path::Path, &str)]) -> anyhow::Result<()> {
    let reads: Vec<(std::path::PathBuf, String)> =
        reads.iter().map(|(p, w)| (p.to_path_buf(), w.to_string())).collect();
    crate::results::check_results(dir, "--out", &FILES, &reads)
}

/// Writes sensitivity.csv, sensitivity.json and the chart (SVG, PNG) into `dir` ([`FILES`]).
pub fn write(r: &SensitivityReport, dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let texts = [
        ("sensitivity.csv", csv(r)),
        ("sensitivity.json", serde_json::to_string_pretty(r)? + "\n"),
    ];
    crate::results::write_results(dir, "--out", &texts, &|files| {
        crate::chart::write_lines(&chart(r), dir, "sensitivity", files).map_err(anyhow::Error::msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_never_read_zero_for_a_fraction_above_it() {
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(0.001), "0.1%");
        assert_eq!(percent(1e-9), "1.0e-7%");
    }

    #[test]
    fn blocks_that_remove_less_than_asked_are_noted() {
        let cell = |units, fraction, removed| BlockCost {
            layer: 0,
            layers: vec![0],
            block: "ffn",
            units,
            fraction,
            removed,
            macs_saved: 0,
            divergence: 0.0,
            agreement: None,
            in_step: false,
        };
        assert_eq!(capped_note(&[cell(64, 0.5, 32), cell(4, 1e-9, 1)]), None);
        let note = capped_note(&[cell(64, 0.99, 57)]).unwrap();
        assert!(note.contains("an FFN 10% of its neurons"), "{note}");
    }
}
