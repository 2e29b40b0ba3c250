//! Tensors ⇄ plain vectors. Every length taken from the file is checked before it sizes anything.

use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::TensorProto;
use super::OnnxError;

/// Largest element count we accept for one tensor (2^34 elements, 64 GiB of f32): a bound on
/// what a claimed shape may make us allocate.
pub const MAX_ELEMENTS: u64 = 1 << 34;

fn err(t: &TensorProto, reason: impl Into<String>) -> OnnxError {
    OnnxError::Tensor {
        name: t.name.clone().unwrap_or_default(),
        reason: reason.into(),
    }
}

/// Number of elements the tensor's dims claim (checked: no negative dims, no overflow).
pub fn numel(t: &TensorProto) -> Result<usize, OnnxError> {
    let mut n: u64 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(err(t, format!("negative dimension {d} in shape {:?}", t.dims)));
        }
        n = n
            .checked_mul(d as u64)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| err(t, format!("shape {:?} is absurdly large", t.dims)))?;
    }
    Ok(n as usize)
}

/// Bytes per element of a fixed-size data type, `None` for strings and unknown types.
pub fn element_size(data_type: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(data_type).ok()? {
        Float | Int32 | Uint32 => 4,
        Double | Int64 | Uint64 | Complex64 => 8,
        Complex128 => 16,
        Float16 | Bfloat16 | Int16 | Uint16 => 2,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz | Float8e8m0 => 1,
        _ => return None,
    })
}

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

/// Marks `t` as stored at `offset` in the external file `location`, `len` bytes, and drops its
/// raw data (the caller keeps or writes it).
pub fn set_external(t: &mut TensorProto, location: &str, offset: u64, len: usize) {
    let entry = |k: &str, v: String| super::proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.external_data = vec![
        entry("location", location.into()),
        entry("offset", offset.to_string()),
        entry("length", len.to_string()),
    ];
    t.data_location = Some(DataLocation::External as i32);
    t.raw_data = None;
}

pub fn dims_usize(t: &TensorProto) -> Result<Vec<usize>, OnnxError> {
    numel(t)?;
    Ok(t.dims.iter().map(|&d| d as usize).collect())
}

/// Float32 values of a FLOAT tensor (raw_data or float_data).
pub fn to_f32(t: &TensorProto) -> Result<Vec<f32>, OnnxError> {
    if t.data_type != Some(DataType::Float as i32) {
        return Err(err(
            t,
            format!(
                "expected float32, found data type {}",
                dtype_name(t.data_type.unwrap_or(0))
            ),
        ));
    }
    let n = numel(t)?;
    if is_external(t) {
        return Err(err(t, "data is still external (load the model with its external data)"));
    }
    if let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty() || t.float_data.is_empty()) {
        if raw.len() != n * 4 {
            return Err(err(
                t,
                format!("raw_data has {} bytes, shape {:?} needs {}", raw.len(), t.dims, n * 4),
            ));
        }
        return Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    if t.float_data.len() != n {
        return Err(err(
            t,
            format!("has {} values, shape {:?} needs {n}", t.float_data.len(), t.dims),
        ));
    }
    Ok(t.float_data.clone())
}

/// Integer values of an INT64 or INT32 tensor.
pub fn to_i64(t: &TensorProto) -> Result<Vec<i64>, OnnxError> {
    let n = numel(t)?;
    if is_external(t) {
        return Err(err(t, "data is still external"));
    }
    let raw = t.raw_data.as_deref().unwrap_or(&[]);
    match DataType::try_from(t.data_type.unwrap_or(0)) {
        Ok(DataType::Int64) => {
            if !raw.is_empty() {
                if raw.len() != n * 8 {
                    return Err(err(
                        t,
                        format!("raw_data has {} bytes, shape needs {}", raw.len(), n * 8),
                    ));
                }
                Ok(raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect())
            } else if t.int64_data.len() == n {
                Ok(t.int64_data.clone())
            } else {
                Err(err(t, format!("has {} values, shape needs {n}", t.int64_data.len())))
            }
        }
        Ok(DataType::Int32) => {
            if !raw.is_empty() {
                if raw.len() != n * 4 {
                    return Err(err(
                        t,
                        format!("raw_data has {} bytes, shape needs {}", raw.len(), n * 4),
                    ));
                }
                Ok(raw
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect())
            } else if t.int32_data.len() == n {
                Ok(t.int32_data.iter().map(|&v| v as i64).collect())
            } else {
                Err(err(t, format!("has {} values, shape needs {n}", t.int32_data.len())))
            }
        }
        _ => Err(err(
            t,
            format!(
                "expected an integer tensor, found {}",
                dtype_name(t.data_type.unwrap_or(0))
            ),
        )),
    }
}

/// A float32 tensor stored as little-endian raw_data.
pub fn from_f32(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let mut raw = Vec::with_capacity(values.len() * 4);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// An int64 tensor stored as little-endian raw_data.
pub fn from_i64(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    let mut raw = Vec::with_capacity(values.len() * 8);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// Bytes the tensor's payload occupies in the file (raw_data or typed fields).
pub fn payload_bytes(t: &TensorProto) -> usize {
    t.raw_data.as_ref().map_or(0, |r| r.len())
        + t.float_data.len() * 4
        + t.int32_data.len() * 4
        + t.int64_data.len() * 8
        + t.double_data.len() * 8
        + t.uint64_data.len() * 8
        + t.string_data.iter().map(|s| s.len()).sum::<usize>()
}

pub fn dtype_name(data_type: i32) -> String {
    DataType::try_from(data_type)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("unknown({data_type})"))
}
