//! `inspect`: what a model is (its transformer structure, sizes, MACs, history), as data.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::history::{self, HistoryEntry};
use crate::onnx::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto, ValueInfoProto};
use crate::onnx::{tensor, ModelProto};
use crate::structure::{self, ParameterCounts, StructureError, Transformer};

#[derive(Debug, Clone, Serialize)]
pub struct IoInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub index: usize,
    pub heads: usize,
    /// 0 when every head was pruned.
    pub head_size: usize,
    pub ffn_width: usize,
    pub activation: String,
    pub fused_attention: bool,
    /// Constant elements carrying head-dependent sizes (0 when all are inferred at run time).
    pub shape_constants: usize,
    /// Counted once, in the first layer that reads them: 0 in a layer sharing them.
    pub attention_params: usize,
    pub ffn_params: usize,
    /// The first earlier layer whose attention (FFN) weights this one reads (ALBERT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_shared_with: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffn_shared_with: Option<usize>,
    pub macs: u64,
    /// Why this layer's heads are not pruned (whole blocks still are); absent where they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads_fixed: Option<String>,
    /// Why this layer's FFN neurons are not pruned (whole blocks still are); absent where they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neurons_fixed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub ir_version: i64,
    pub opsets: Vec<(String, i64)>,
    pub producer: String,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    /// The architecture recognised: the model family its weights are named after (torch
    /// exports keep module paths), else what the layout says; with what tells it.
    /// `null` where the transformer is not mapped (`unmapped` says why).
    pub architecture: Option<String>,
    /// The family alone (`roberta`, `electra-like`), for scripts.
    pub family: Option<String>,
    /// `hidden`, `num_layers`, `parameters` and the MACs are `None` (`null`) where the
    /// transformer is not mapped (`unmapped` says why).
    pub hidden: Option<usize>,
    /// The embeddings' width when a projection (ELECTRA's `embeddings_project`) maps it to
    /// `hidden` before the first layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    pub num_layers: Option<usize>,
    pub num_labels: Option<usize>,
    pub layers: Vec<LayerSummary>,
    pub parameters: Option<ParameterCounts>,
    pub seq_len: usize,
    /// The longest input the model's position table takes (`None`: no table, or not found).
    pub positions: Option<usize>,
    pub encoder_macs: Option<u64>,
    pub head_macs: Option<u64>,
    pub has_embedded_tokenizer: bool,
    /// The model's class names (embedded, else id2label of the config.json beside it) and where
    /// they came from, or why they cannot be read; `None` where it names none.
    pub class_names: Option<Vec<String>>,
    pub class_names_source: Option<String>,
    pub history: Vec<HistoryEntry>,
    /// Why the recorded history cannot be read (then `history` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_error: Option<String>,
    /// `None` for a model this tool wrote whose graph it can no longer map (e.g. quantized).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structure: Option<Transformer>,
    /// Why the transformer was not mapped (then layers, parameters and MACs are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<String>,
    /// Where the transformer maps but the model is quantized already (float16 by another tool,
    /// say): what shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantized: Option<String>,
}

/// Families named by the first part of their weights' module paths in Hugging Face models.
const FAMILIES: &[(&str, &str)] = &[
    ("bert", "bert"),
    // XLM-R and CamemBERT keep RoBERTa's module names.
    ("roberta", "roberta"),
    ("distilbert", "distilbert"),
    ("electra", "electra"),
    ("albert", "albert"),
    ("deberta", "deberta"),
    ("mpnet", "mpnet"),
];

/// The architecture of a mapped model: the family in its word embedding's weight name, else the
/// layout's tell-tale parts; a projected embedding, missing token types, layers sharing weights
/// and relative positions in the attention are said either way.
fn architecture(t: &structure::Transformer) -> (String, String) {
    let e = &t.embeddings;
    let named = e
        .word
        .as_ref()
        .and_then(|w| w.weight.split(['.', '/']).find(|p| !p.is_empty()))
        .and_then(|p| FAMILIES.iter().find(|(k, _)| *k == p))
        .map(|(_, f)| *f);
    let mut notes = Vec::new();
    if e.project.is_some() {
        notes.push("embeddings projected");
    }
    if e.token_type.is_none() {
        notes.push("no token types");
    }
    if t.head.is_none() {
        notes.push("headless: no classifier");
    }
    let stacked = t.layers.iter().any(|l| {
        l.attention
            .as_ref()
            .is_some_and(|a| matches!(a.qkv, structure::Qkv::Stacked { .. }))
    });
    let gated = t
        .layers
        .iter()
        .any(|l| l.ffn.as_ref().is_some_and(|f| f.gate.is_some()));
    if t.shared_weights().iter().any(|(a, f)| a.is_some() || f.is_some()) {
        notes.push("shared layers");
    }
    let attention = || t.layers.iter().filter_map(|l| l.attention.as_ref());
    if attention().any(|a| !a.score_terms.is_empty()) {
        notes.push("relative attention");
    } else if attention().any(|a| !a.head_biases.is_empty()) {
        notes.push("relative position bias");
    }
    if stacked {
        notes.push("one Q/K/V projection");
    }
    if gated {
        notes.push("gated FFN");
    }
    let family = match named {
        Some(f) => {
            notes.push("named in its weights");
            f
        }
        None if e.project.is_some() => "electra-like",
        None if stacked && gated => "modernbert-like",
        None if e.token_type.is_none() => "distilbert-like",
        None => "bert-like",
    };
    let said = if notes.is_empty() {
        family.to_string()
    } else {
        format!("{family} ({})", notes.join(", "))
    };
    (family.to_string(), said)
}

fn io_info(v: &ValueInfoProto) -> IoInfo {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => (
            tensor::dtype_name(t.elem_type()),
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => v.to_string(),
                            Some(Dim::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ("non-tensor".into(), vec![]),
    };
    IoInfo {
        name: v.name().to_string(),
        dtype,
        shape,
    }
}

/// Summarizes a loaded model. Fails with the structure error when the transformer is not found.
///
/// A graph that does not map is an error, except for a model this tool wrote (it has a history)
/// or one quantized already (by any tool): then the summary says why and still gives format,
/// inputs, outputs and the history, so that a chained model (e.g. quantized, whose weights are no
/// longer float MatMuls) can be inspected.
/// The summary of `model`, read from `path` (`file_bytes`: its files' size, [`crate::onnx::io::size_on_disk`]).
pub fn summarize(
    model: &ModelProto,
    path: &Path,
    file_bytes: u64,
    seq_len: usize,
) -> Result<ModelSummary, StructureError> {
    let (history, history_error) = match history::history(model) {
        Ok(h) => (h, None),
        Err(e) => (vec![], Some(e)),
    };
    let quantized = model.graph.as_ref().and_then(structure::quantized_evidence);
    let (t, unmapped) = match (structure::discover(model), quantized.clone()) {
        (Ok(t), _) => (Some(t), None),
        (Err(_), Some(shows)) => (
            None,
            Some(format!(
                "quantized already ({shows}); prune, factor or measure the float32 model, then quantize it"
            )),
        ),
        (Err(e), None) if !history.is_empty() || history_error.is_some() => (None, Some(e.to_string())),
        (Err(e), None) => return Err(e),
    };
    let params = t
        .as_ref()
        .map(|t| structure::parameter_counts(model, t))
        .unwrap_or_default();
    let macs = t.as_ref().map(|t| structure::macs_per_sequence(t, seq_len));
    let graph = model.graph.as_ref();
    let inits: std::collections::HashSet<&str> = graph
        .map(|g| g.initializer.iter().map(|i| i.name()).collect())
        .unwrap_or_default();
    let shared = t.as_ref().map(|t| t.shared_weights()).unwrap_or_default();
    let classes = crate::data::model_labels(path, model, None, "--labels");
    let layers = t
        .iter()
        .flat_map(|t| t.layers.iter())
        .enumerate()
        .map(|(i, l)| LayerSummary {
            index: l.index,
            heads: l.heads(),
            head_size: l.head_size().unwrap_or(0),
            ffn_width: l.ffn_width(),
            activation: l.ffn.as_ref().map_or("-".into(), |f| f.activation.clone()),
            fused_attention: l.attention.as_ref().is_some_and(|a| a.fused),
            shape_constants: l.attention.as_ref().map_or(0, |a| a.shape_consts.len()),
            attention_params: params.attention[i],
            ffn_params: params.ffn[i],
            attention_shared_with: shared.get(i).and_then(|s| s.0),
            ffn_shared_with: shared.get(i).and_then(|s| s.1),
            macs: structure::stats_layer_macs(l, seq_len),
            heads_fixed: l.attention.as_ref().and_then(|a| a.heads_fixed.clone()),
            neurons_fixed: l.ffn.as_ref().and_then(|f| f.neurons_fixed.clone()),
        })
        .collect();
    Ok(ModelSummary {
        positions: crate::eval::input_limits_of(model, t.as_ref()).positions,
        architecture: t.as_ref().map(|t| architecture(t).1),
        family: t.as_ref().map(|t| architecture(t).0),
        path: path.to_path_buf(),
        file_bytes,
        ir_version: model.ir_version(),
        opsets: model
            .opset_import
            .iter()
            .map(|o| (o.domain().to_string(), o.version()))
            .collect(),
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_string(),
        inputs: graph
            .map(|g| {
                g.input
                    .iter()
                    .filter(|v| !inits.contains(v.name()))
                    .map(io_info)
                    .collect()
            })
            .unwrap_or_default(),
        outputs: graph
            .map(|g| g.output.iter().map(io_info).collect())
            .unwrap_or_default(),
        hidden: t.as_ref().map(|t| t.hidden),
        embedding_size: t
            .as_ref()
            .and_then(|t| t.embeddings.project.as_ref())
            .map(|p| p.in_features),
        num_layers: t.as_ref().map(|t| t.layers.len()),
        num_labels: t.as_ref().and_then(|t| t.num_labels()),
        layers,
        parameters: t.is_some().then_some(params),
        seq_len,
        encoder_macs: macs.map(|m| m.0),
        head_macs: macs.map(|m| m.1),
        has_embedded_tokenizer: history::embedded_tokenizer(model).is_some(),
        class_names: classes.as_ref().ok().and_then(|c| c.as_ref().map(|c| c.names.clone())),
        class_names_source: match &classes {
            Ok(c) => c.as_ref().map(|c| c.source.clone()),
            Err(e) => Some(format!("unreadable: {e}")),
        },
        history,
        history_error,
        structure: t,
        quantized: quantized.filter(|_| unmapped.is_none()),
        unmapped,
    })
}
