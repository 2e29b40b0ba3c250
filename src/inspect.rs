//! `inspect`: what a model is (its transformer structure, sizes, MACs, history), as data.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::history::{self, HistoryEntry};
use crate::onnx::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto, ValueInfoProto};
use crate::onnx::{io, tensor, ModelProto};
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
    pub attention_params: usize,
    pub ffn_params: usize,
    pub macs: u64,
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
    pub hidden: usize,
    pub num_layers: usize,
    pub num_labels: Option<usize>,
    pub layers: Vec<LayerSummary>,
    pub parameters: ParameterCounts,
    pub seq_len: usize,
    pub encoder_macs: u64,
    pub head_macs: u64,
    pub has_embedded_tokenizer: bool,
    pub history: Vec<HistoryEntry>,
    pub structure: Transformer,
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
pub fn summarize(model: &ModelProto, path: &Path, seq_len: usize) -> Result<ModelSummary, StructureError> {
    let t = structure::discover(model)?;
    let params = structure::parameter_counts(model, &t);
    let (encoder_macs, head_macs) = structure::macs_per_sequence(&t, seq_len);
    let graph = model.graph.as_ref();
    let inits: std::collections::HashSet<&str> = graph
        .map(|g| g.initializer.iter().map(|i| i.name()).collect())
        .unwrap_or_default();
    let layers = t
        .layers
        .iter()
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
            macs: structure::stats_layer_macs(l, seq_len),
        })
        .collect();
    Ok(ModelSummary {
        path: path.to_path_buf(),
        file_bytes: io::size_on_disk(path),
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
        hidden: t.hidden,
        num_layers: t.layers.len(),
        num_labels: t.num_labels(),
        layers,
        parameters: params,
        seq_len,
        encoder_macs,
        head_macs,
        has_embedded_tokenizer: history::embedded_tokenizer(model).is_some(),
        history: history::history(model).unwrap_or_default(),
        structure: t,
    })
}
