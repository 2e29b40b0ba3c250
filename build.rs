//! Compiles `proto/onnx.proto` (the complete ONNX schema, onnx-ml variant) with prost.
//! The schema must stay complete: prost silently drops fields it does not know.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Large byte payloads (raw_data) as `bytes::Bytes` so that decode can share the input buffer.
    config.bytes(["."]);
    config.compile_protos(&["proto/onnx.proto"], &["proto/"])?;
    Ok(())
}
