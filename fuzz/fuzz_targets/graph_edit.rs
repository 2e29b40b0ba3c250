//! Structured fuzzing of structure discovery and pruning: the bytes choose one of the synthetic
//! BERT layouts and then a list of graph edits (rewire a node input to another value, change an
//! op type, overwrite an element of an integer constant such as a Reshape shape, change an int
//! attribute, drop a node, resize a tensor's dims with matching data). Byte-level mutation of a
//! protobuf rarely gets past the decoder; these edits reach discovery and pruning with graphs
//! that are almost right. Every edited model goes through the load checks first, as the CLI's
//! models do; whatever passes is inspected and pruned. Errors are fine; panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use onnx_compress::onnx::{load_from_bytes, tensor, ModelProto};
use onnx_compress::passes::prune::{prune, PruneOptions, Strategy};
use onnx_compress::testkit::synth::{tiny_bert, GeluStyle, ShapeStyle, SynthOptions};
use onnx_compress::{inspect, structure};
use prost::Message;

const OPS: [&str; 12] = [
    "MatMul", "Add", "Reshape", "Transpose", "Softmax", "LayerNormalization", "Gemm", "Mul", "Div", "Identity",
    "Gelu", "Concat",
];

fn base(b: u8) -> ModelProto {
    let shapes = [
        ShapeStyle::ConcatInferred,
        ShapeStyle::ConcatExplicit,
        ShapeStyle::SharedInitializer,
        ShapeStyle::ConstantPerReshape,
    ][(b & 3) as usize];
    let gelu = [GeluStyle::Erf, GeluStyle::Op, GeluStyle::Tanh][((b >> 2) % 3) as usize];
    tiny_bert(&SynthOptions {
        layers: 1 + ((b >> 4) & 1) as usize,
        heads: 2,
        head_size: 2,
        ffn: 4,
        vocab: 8,
        max_positions: 4,
        shapes,
        gelu,
        fused_attention: b & 0x20 != 0,
        identity_aliases: b & 0x40 != 0,
        ..Default::default()
    })
}

fn edit(m: &mut ModelProto, e: &[u8]) {
    let g = m.graph.as_mut().expect("synthetic models have a graph");
    let n = g.node.len();
    if n == 0 {
        return;
    }
    let i = e[1] as usize % n;
    match e[0] % 6 {
        0 => {
            let values: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
            let node = &mut g.node[i];
            if !node.input.is_empty() && !values.is_empty() {
                let k = e[2] as usize % node.input.len();
                node.input[k] = values[e[3] as usize % values.len()].clone();
            }
        }
        1 => g.node[i].op_type = Some(OPS[e[2] as usize % OPS.len()].to_string()),
        2 => {
            let ints: Vec<usize> = (0..g.initializer.len())
                .filter(|&k| g.initializer[k].data_type() == 7)
                .collect();
            if !ints.is_empty() {
                let t = &mut g.initializer[ints[e[1] as usize % ints.len()]];
                if let Ok(mut v) = tensor::to_i64(t) {
                    if !v.is_empty() {
                        let k = e[2] as usize % v.len();
                        v[k] = i8::from_le_bytes([e[3]]) as i64 * if e[2] & 0x80 != 0 { 1 << 40 } else { 1 };
                        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                        *t = tensor::from_i64(t.name(), &dims, &v);
                    }
                }
            }
        }
        3 => {
            if let Some(a) = g.node[i].attribute.get_mut(e[2] as usize % 4) {
                if a.i.is_some() {
                    a.i = Some(i8::from_le_bytes([e[3]]) as i64);
                }
            }
        }
        4 => {
            g.node.remove(i);
        }
        _ => {
            let k = e[1] as usize % g.initializer.len().max(1);
            if let Some(t) = g.initializer.get_mut(k) {
                if t.data_type() == 1 && !t.dims.is_empty() {
                    let d = (e[2] % 9) as usize;
                    let mut dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                    let axis = e[3] as usize % dims.len();
                    dims[axis] = d;
                    let count: usize = dims.iter().product();
                    *t = tensor::from_f32(t.name(), &dims, &vec![0.5; count]);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mut m = base(first);
    for e in rest.chunks_exact(4).take(16) {
        edit(&mut m, e);
    }
    let path = Path::new("edited.onnx");
    let Ok(m) = load_from_bytes(&m.encode_to_vec(), path, None) else {
        return;
    };
    let Ok(t) = structure::discover(&m) else { return };
    let _ = inspect::summarize(&m, path, 0, 16);
    let _ = structure::macs_per_sequence(&t, 16);
    for (heads, ffn, strategy) in [(0.5, 0.5, Strategy::L1), (0.0, 0.75, Strategy::Random), (0.9, 0.0, Strategy::L1)] {
        let opts = PruneOptions {
            heads,
            ffn,
            strategy,
            seed: first as u64,
            seq_len: 16,
            ..Default::default()
        };
        if let Ok((out, _)) = prune(&m, &opts) {
            let again = load_from_bytes(&out.encode_to_vec(), path, None).expect("a pruned model passes the load checks");
            structure::discover(&again).expect("the pruned model's transformer is still found");
        }
    }
});
