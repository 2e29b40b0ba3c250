//! The ONNX format: the prost-generated schema, tensors ⇄ plain vectors, a read-only graph index,
//! and lossless, atomic model I/O (including ONNX external data).

pub mod build;
pub mod edit;
pub mod graph;
pub mod io;
pub mod tensor;

pub mod proto {
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use graph::GraphIndex;
pub use io::{load, load_from_bytes, save, ExternalData, SaveOptions, SaveSummary};
pub use proto::{GraphProto, ModelProto, NodeProto, TensorProto};

/// Errors of the ONNX layer. Each names the file or tensor it concerns.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model ({reason})")]
    NotOnnx { path: std::path::PathBuf, reason: String },
    #[error("{path}: external data of tensor '{tensor}': {reason}")]
    ExternalData {
        path: std::path::PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("refusing to write {path}: it is the input model; choose another output path")]
    OutputIsInput { path: std::path::PathBuf },
}
