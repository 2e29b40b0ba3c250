//! Finds the transformer inside an ONNX graph by its pattern, never by node names:
//! embeddings, each encoder layer (Q/K/V, head count and size and every shape constant that
//! carries them, output projection, FFN and activation, LayerNorms), the pooler and the
//! classifier. Works on the torch classic exporter's layout and on the usual variants
//! (constant vs `Shape→Gather→Concat` shapes, shared or duplicated constants, `Identity`
//! aliases, a single `Gelu` op, fused `Attention` nodes).

mod find;
mod stats;

pub use find::discover;
pub(crate) use find::exposed_output;
pub(crate) use find::is_gemm;
pub use stats::{
    head_macs, layer_macs as stats_layer_macs, macs_per_sequence, neuron_macs, parameter_counts, unit_macs,
    ParameterCounts,
};

use serde::Serialize;

/// A linear layer: `MatMul` (weight stored [in, out]) or `Gemm` (transB=1: [out, in]),
/// optionally followed by an `Add` of a bias. A factorized layer (`x·A·B`, written by the
/// `lowrank` pass) is one `Linear` whose `node`/`weight` are the first factor's (A, [in, rank])
/// and whose [`Factor`] holds the second (B, [rank, out]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Linear {
    /// Index of the MatMul/Gemm node in `graph.node` (the first one of a factorized layer).
    pub node: usize,
    pub node_name: String,
    /// Name of the weight initializer (after resolving Identity aliases); for a factorized
    /// layer, the first factor A.
    pub weight: String,
    /// Name of the bias initializer (Gemm's C input or the following Add's constant input).
    pub bias: Option<String>,
    /// Index of the node adding the bias when it is a separate node: an `Add`, or ONNX Runtime's
    /// `BiasGelu`/`FastGelu` (bias and activation in one op; `output` is then the MatMul's).
    pub bias_node: Option<usize>,
    pub in_features: usize,
    pub out_features: usize,
    /// True when the weight is stored [out, in] (Gemm with transB=1).
    pub transposed: bool,
    /// The value holding the layer's output (after the bias).
    pub output: String,
    /// The second factor of a low-rank layer, `None` for a dense one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<Factor>,
}

/// The second node of a factorized linear layer `x·A·B`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Factor {
    /// Index of the second MatMul/Gemm node.
    pub node: usize,
    pub node_name: String,
    /// The second factor's initializer B: [rank, out], or [out, rank] when `transposed` (Gemm).
    pub weight: String,
    /// The inner width (columns of A, rows of B).
    pub rank: usize,
    pub transposed: bool,
}

impl Linear {
    /// Weight elements (both factors of a low-rank layer) plus the bias.
    pub fn params(&self) -> usize {
        self.weight_params() + if self.bias.is_some() { self.out_features } else { 0 }
    }

    /// Weight elements only: in × out, or rank × (in + out) when factorized.
    pub fn weight_params(&self) -> usize {
        match &self.factor {
            Some(f) => f.rank * (self.in_features + self.out_features),
            None => self.in_features * self.out_features,
        }
    }

    /// Multiply-accumulates per token (= weight elements).
    pub fn macs_per_token(&self) -> u64 {
        self.weight_params() as u64
    }
}

/// What a shape element means.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShapeRole {
    /// Number of heads (e.g. 12 in [B, S, 12, 32]).
    Heads,
    /// Size of one head (32).
    HeadSize,
    /// All heads together (384 in [B, S, 384]).
    AllHeads,
    /// The head axis of a mask expanded to the scores' shape [B, heads, S, S] before it fills
    /// them (a `Where`; transformers 4's DistilBERT under the dynamo exporter, one expansion for
    /// every layer): the mask is the same for every head, so pruning writes 1 there and the
    /// fill broadcasts it over whatever heads each layer keeps.
    MaskHeads,
}

/// One element of a constant that carries a head-dependent size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShapeConst {
    /// The constant's name: an initializer or a `Constant` node's output.
    pub constant: String,
    /// Element index inside that constant.
    pub element: usize,
    pub value: i64,
    pub role: ShapeRole,
    /// The node that uses it (Reshape, or the Concat feeding one): its name, and its index.
    pub used_by: String,
    pub used_by_node: usize,
    /// Number of nodes (in all layers) that consume this constant.
    pub shared_by: usize,
    /// When `used_by` is a shape `Concat` whose result other layers read too (torch's dynamo
    /// exporter builds one for all): the nodes of this attention reading it, which get a copy of
    /// their own when the value changes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub readers: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
// One per layer: the size difference between the variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
pub enum Qkv {
    /// Separate Q, K and V projections.
    Separate { q: Linear, k: Linear, v: Linear },
    /// One linear layer [hidden, 3·all_heads] whose output is split into Q, K and V (in that
    /// order, each head's columns together): ModernBERT's `Wqkv`.
    Stacked { qkv: Linear },
    /// One packed weight [hidden, 3·all_heads] in a fused `Attention` node.
    Packed {
        node: usize,
        node_name: String,
        weight: String,
        bias: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attention {
    pub qkv: Qkv,
    pub output: Linear,
    pub num_heads: usize,
    pub head_size: usize,
    /// Whether the attention is a single fused op (com.microsoft Attention).
    pub fused: bool,
    /// The Softmax node of an unfused attention.
    pub softmax: Option<usize>,
    /// The scale applied to Q·Kᵀ, if found (1/√head_size).
    pub scale: Option<f32>,
    /// Every constant element carrying the head count, head size or all-heads width.
    pub shape_consts: Vec<ShapeConst>,
    /// Reshape nodes of this attention whose target shape has a -1 or 0 where a head-dependent
    /// size would be (inferred at run time: nothing to rewrite there).
    pub inferred_reshapes: usize,
    /// Biases added to the scores with one slice per head (MPNet's relative position bias):
    /// pruning heads must keep those heads' slices.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub head_biases: Vec<HeadBias>,
    /// Weights of other terms added to the scores, computed from Q or K and weights of their own
    /// (DeBERTa's disentangled relative attention: content-to-position and position-to-content
    /// scores from projected relative position embeddings): counted with the attention.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub score_terms: Vec<String>,
    /// The projections inside those terms with a column per head and size (DeBERTa's relative
    /// position embeddings projected by the layer's query and key weights): sliced with the
    /// heads.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub score_projections: Vec<Linear>,
    /// Constants inside those terms with a leading axis per head, [heads, span, size] (ONNX
    /// Runtime's optimizer folds DeBERTa's relative position embeddings, projected by the
    /// layer's query and key weights, into such constants): gathered with the heads.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub score_tables: Vec<String>,
    /// The relative positions those terms score each query against (DeBERTa: the rows of its
    /// relative position embeddings, or of a folded table), for their MACs; `None` when there
    /// are no such terms or the span was not found.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub score_span: Option<usize>,
    /// Why this attention's heads cannot be pruned, when a term or a size in it depends on the
    /// head count in a way this tool does not rewrite, or no shape constant but only the scale
    /// gives its head size.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heads_fixed: Option<String>,
    /// Why this attention's head count must equal that of every other such attention, when a
    /// size holding it is computed once for all layers (torch's dynamo exporter shares the
    /// relative position indices between DeBERTa's layers).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heads_alike: Option<String>,
}

/// A bias added to the attention scores [batch, heads, query, key] with its own values per head,
/// computed from a table with a column per head (a relative position bias: `Gather` of buckets
/// from a [buckets, heads] initializer, transposed to put the heads third from last).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeadBias {
    /// The `Add` of the scores and the bias, and the input slot the bias comes in at.
    pub add_node: usize,
    pub slot: usize,
    /// The [buckets, heads] initializer it is computed from.
    pub table: String,
}

impl Attention {
    pub fn all_heads(&self) -> usize {
        self.num_heads * self.head_size
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ffn {
    pub up: Linear,
    pub down: Linear,
    /// e.g. "gelu(erf)", "gelu(tanh)", "relu", "Gelu op".
    pub activation: String,
    /// Neurons: the down projection's input width.
    pub width: usize,
    /// A gated FFN (GLU: ModernBERT's `act(x·W₁) ⊙ x·W₂`, the two as one up projection of
    /// 2·width columns split in halves): the nodes taking the halves apart. Neuron j is then
    /// the up projection's columns j and width + j.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// Why this FFN's neurons cannot be pruned: its activation reads a per-neuron constant
    /// (one value per neuron, broadcast over the tokens) that this tool does not slice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neurons_fixed: Option<String>,
}

/// How a gated FFN's up projection output is split in halves.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gate {
    /// The two `Slice`s (first half, second half) or the one `Split`.
    pub nodes: Vec<usize>,
    /// Whether the halves' bounds are constants (to rewrite when the width changes) rather than
    /// computed from the tensor's shape.
    pub constant_bounds: bool,
}

impl Ffn {
    /// The up projection's columns of neurons `keep`: one each, or both halves' when gated.
    pub fn up_columns(&self, keep: &[usize]) -> Vec<usize> {
        match self.gate {
            None => keep.to_vec(),
            Some(_) => keep
                .iter()
                .copied()
                .chain(keep.iter().map(|&j| self.width + j))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Norm {
    pub node: usize,
    pub node_name: String,
    /// "LayerNormalization", "SkipLayerNormalization" or "decomposed".
    pub kind: String,
    pub scale: Option<String>,
    pub bias: Option<String>,
    /// SkipLayerNormalization's own bias input (ONNX Runtime folds the preceding projection's
    /// bias into it): added to the input before the residual.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_bias: Option<String>,
    pub output: String,
}

/// One encoder layer: attention, residual and LayerNorm, FFN, residual and LayerNorm. A part
/// whose every head or neuron was pruned is `None`; what remains of it is the constant bias
/// added to the residual (`attention_bias`, `ffn_bias`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EncoderLayer {
    pub index: usize,
    /// The value entering the layer (input of Q, K, V).
    pub input: String,
    pub attention: Option<Attention>,
    pub attention_bias: Option<String>,
    pub attention_norm: Norm,
    pub ffn: Option<Ffn>,
    pub ffn_bias: Option<String>,
    pub output_norm: Norm,
}

impl EncoderLayer {
    pub fn heads(&self) -> usize {
        self.attention.as_ref().map_or(0, |a| a.num_heads)
    }
    pub fn head_size(&self) -> Option<usize> {
        self.attention.as_ref().map(|a| a.head_size)
    }
    pub fn ffn_width(&self) -> usize {
        self.ffn.as_ref().map_or(0, |f| f.width)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingTable {
    pub weight: String,
    pub rows: usize,
    pub dim: usize,
    /// The `Gather` reading it, or ONNX Runtime's fused `EmbedLayerNormalization`.
    pub gather_node: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Embeddings {
    pub word: Option<EmbeddingTable>,
    pub position: Option<EmbeddingTable>,
    pub token_type: Option<EmbeddingTable>,
    pub norm: Option<Norm>,
    /// A Linear from the embeddings' LayerNorm to the first layer that maps the embedding width
    /// to the hidden size (ELECTRA's `embeddings_project`): part of the embeddings, never pruned.
    pub project: Option<Linear>,
}

/// The classification head: optional pooler (dense + activation), then the classifier.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Head {
    pub pooler: Option<Linear>,
    pub pooler_activation: Option<String>,
    /// A LayerNorm between the pooler and the classifier (ModernBERT's prediction head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm: Option<Norm>,
    pub classifier: Linear,
}

/// The mapped transformer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transformer {
    pub hidden: usize,
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
    pub head: Option<Head>,
}

impl Transformer {
    pub fn num_labels(&self) -> Option<usize> {
        self.head.as_ref().map(|h| h.classifier.out_features)
    }

    /// For each layer, the first earlier layer whose attention (first) and FFN (second) read
    /// the same weights as its own — ALBERT runs one layer's weights in every layer — or `None`.
    pub fn shared_weights(&self) -> Vec<(Option<usize>, Option<usize>)> {
        let attention_key = |l: &EncoderLayer| {
            l.attention.as_ref().map(|a| match &a.qkv {
                Qkv::Separate { q, .. } => q.weight.clone(),
                Qkv::Stacked { qkv } => qkv.weight.clone(),
                Qkv::Packed { weight, .. } => weight.clone(),
            })
        };
        let ffn_key = |l: &EncoderLayer| l.ffn.as_ref().map(|f| f.up.weight.clone());
        let first = |i: usize, key: &dyn Fn(&EncoderLayer) -> Option<String>| {
            let k = key(&self.layers[i])?;
            self.layers[..i].iter().position(|l| key(l).as_ref() == Some(&k))
        };
        (0..self.layers.len())
            .map(|i| (first(i, &attention_key), first(i, &ffn_key)))
            .collect()
    }
}

/// Operators whose presence means the model is quantized already.
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QAttention",
    "QGemm",
    "QEmbedLayerNormalization",
    "MatMulNBits",
    "GatherBlockQuantized",
];

/// What shows that `graph` is quantized (or float16) already, in words (`node 'x', a
/// DynamicQuantizeLinear`, `initializer 'w' of float16`); `None` for a float32 graph.
pub fn quantized_evidence(graph: &crate::onnx::proto::GraphProto) -> Option<String> {
    use crate::onnx::proto::tensor_proto::DataType;
    if let Some(n) = graph.node.iter().find(|n| QUANTIZED_OPS.contains(&n.op_type())) {
        return Some(format!("node '{}', a {}", n.name(), n.op_type()));
    }
    // A float16 tensor, or an int8 matrix (a weight; an 8-bit mask or index table is not one).
    let int8 = [DataType::Int8 as i32, DataType::Uint8 as i32];
    graph
        .initializer
        .iter()
        .find(|t| {
            (t.data_type() == DataType::Float16 as i32 && t.dims.iter().product::<i64>() > 1)
                || (int8.contains(&t.data_type()) && t.dims.len() == 2 && t.dims.iter().all(|&d| d > 1))
        })
        .map(|t| {
            format!(
                "initializer '{}' of {}",
                t.name(),
                crate::onnx::tensor::dtype_name(t.data_type())
            )
        })
}

/// Refuses a model quantized already (int8 or float16) that does not map, with discovery's error
/// naming what shows it: the passes that rewrite float32 weights run before quantization. A float
/// model (even one holding a small int8 constant) passes.
pub fn ensure_float(model: &crate::onnx::ModelProto) -> Result<(), StructureError> {
    match model.graph.as_ref().and_then(quantized_evidence) {
        Some(_) => discover(model).map(|_| ()),
        None => Ok(()),
    }
}

/// Why a graph could not be mapped: what was looked for and where the search stopped.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("not a transformer this tool can map: looked for {looked_for}; stopped at {stopped_at}")]
pub struct StructureError {
    pub looked_for: String,
    pub stopped_at: String,
}
