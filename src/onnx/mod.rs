//! The ONNX format: the prost-generated schema, tensors ⇄ plain vectors, a read-only graph index,
//! and lossless, atomic model I/O (including ONNX external data).

pub mod build;
pub mod check;
pub mod edit;
pub mod graph;
pub mod io;
pub mod patch;
pub mod tensor;

pub mod proto {
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use graph::GraphIndex;
pub use io::{load, load_from_bytes, load_with_sources, save, ExternalData, SaveOptions, SaveSummary};
pub use patch::{Patch, PatchError};
pub use proto::{GraphProto, ModelProto, NodeProto, TensorProto};

/// An I/O error in words: a missing file reads "no such file", as the commands' own checks say
/// it, not the OS's "No such file or directory (os error 2)".
fn io_cause(cause: &std::io::Error) -> String {
    match cause.kind() {
        // The OS's own error; this tool's (a missing output folder) says more already.
        std::io::ErrorKind::NotFound if cause.raw_os_error().is_some() => "no such file".into(),
        _ => cause.to_string(),
    }
}

/// Errors of the ONNX layer. Each names the file or tensor it concerns.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{}: {}", path.display(), io_cause(cause))]
    Io {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not a valid ONNX model ({reason})", path.display())]
    NotOnnx { path: std::path::PathBuf, reason: String },
    #[error("{}: external data of tensor '{tensor}': {reason}", path.display())]
    ExternalData {
        path: std::path::PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("refusing to write {}: it is {what}; choose another output path", path.display())]
    OutputIsInput { path: std::path::PathBuf, what: String },
    #[error("graph patch: {0}")]
    Patch(#[from] patch::PatchError),
}
