//! Tiny BERT-like classifiers built in code, in the layouts different exporters produce. Used by
//! tests (structure discovery, passes, ONNX Runtime round trips) and as fuzzing seeds.

use crate::onnx::build::{attr_float, attr_int, attr_ints, constant, model, node, value_info, with_attrs, with_domain};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor::{from_f32, from_i64};
use crate::runtime::Batch;

/// How the head-split and head-merge Reshapes get their target shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeStyle {
    /// torch's classic exporter: `Shape→Gather→Unsqueeze` for batch and sequence, Concat with
    /// constants `[-1]` and `[head_size]` (split) and `[-1]` (merge): no constant holds the
    /// head count.
    ConcatInferred,
    /// Concat with explicit `[heads]`, `[head_size]` and `[heads·head_size]` constants.
    ConcatExplicit,
    /// One initializer `[0, 0, heads, head_size]` and one `[0, 0, all]` shared by every layer.
    SharedInitializer,
    /// A `Constant` node `[0, 0, heads, head_size]` per Reshape.
    ConstantPerReshape,
    /// torch's dynamo exporter: batch and sequence as `Shape(x, 0, 1)` and `Shape(x, 1, 2)`,
    /// Concat with constants `[-1]` and `[head_size]` (split) and `[-1]` (merge).
    ShapeSlices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluStyle {
    /// Div, Erf, Add, Mul, Mul (torch classic).
    Erf,
    /// A single `Gelu` op (opset 20).
    Op,
    /// The tanh approximation.
    Tanh,
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub layers: usize,
    pub heads: usize,
    pub head_size: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub labels: usize,
    pub shapes: ShapeStyle,
    pub gelu: GeluStyle,
    /// Weights reached through `Identity` nodes (as de-duplicating exporters write them).
    pub identity_aliases: bool,
    /// One com.microsoft `Attention` node per layer instead of the unfused pattern.
    pub fused_attention: bool,
    /// The guard torch's exporter writes after SDPA's softmax for fully masked rows:
    /// `Where(IsNaN(p), 0, p)` between the Softmax and the context MatMul.
    pub nan_guard: bool,
    /// Embeddings of this width, projected to the hidden size by a Linear after their
    /// LayerNorm (ELECTRA's `embeddings_project`); `None`: embeddings of the hidden size.
    pub embedding_size: Option<usize>,
    pub seed: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            layers: 2,
            heads: 4,
            head_size: 8,
            ffn: 64,
            vocab: 100,
            max_positions: 64,
            labels: 2,
            shapes: ShapeStyle::ConcatInferred,
            gelu: GeluStyle::Erf,
            identity_aliases: false,
            fused_attention: false,
            nan_guard: false,
            embedding_size: None,
            seed: 1,
        }
    }
}

/// xorshift64*: deterministic weights without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

struct G {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    rng: Rng,
    aliases: bool,
    n: usize,
}

impl G {
    fn name(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_{}", self.n)
    }
    fn push(&mut self, op: &str, inputs: &[&str], prefix: &str) -> String {
        let out = self.name(prefix);
        self.nodes.push(node(op, &out, inputs, &[&out]));
        out
    }
    fn push_attrs(
        &mut self,
        op: &str,
        inputs: &[&str],
        prefix: &str,
        attrs: Vec<crate::onnx::proto::AttributeProto>,
    ) -> String {
        let out = self.name(prefix);
        self.nodes.push(with_attrs(node(op, &out, inputs, &[&out]), attrs));
        out
    }
    /// A float initializer with random values; returns the name nodes should read (an Identity
    /// alias when requested).
    fn weight(&mut self, name: &str, dims: &[usize], scale: f32) -> String {
        let n: usize = dims.iter().product();
        let v = self.rng.vec(n, scale);
        self.inits.push(from_f32(name, dims, &v));
        if self.aliases {
            let alias = format!("{name}__alias");
            self.nodes.push(node("Identity", &alias, &[name], &[&alias]));
            alias
        } else {
            name.to_string()
        }
    }
    fn ones_plus(&mut self, name: &str, n: usize) -> String {
        let v: Vec<f32> = self.rng.vec(n, 0.1).iter().map(|x| 1.0 + x).collect();
        self.inits.push(from_f32(name, &[n], &v));
        name.to_string()
    }
    fn const_i64(&mut self, values: &[i64], dims: &[usize]) -> String {
        let out = self.name("const");
        self.nodes.push(constant(&out, from_i64("", dims, values)));
        out
    }
    fn const_f32(&mut self, v: f32) -> String {
        let out = self.name("constf");
        self.nodes.push(constant(&out, from_f32("", &[], &[v])));
        out
    }
    fn linear(&mut self, x: &str, name: &str, inp: usize, out: usize) -> String {
        let scale = 1.0 / (inp as f32).sqrt();
        let w = self.weight(&format!("{name}.weight"), &[inp, out], scale);
        let b = self.weight(&format!("{name}.bias"), &[out], 0.1);
        let mm = self.push("MatMul", &[x, &w], &format!("{name}/MatMul"));
        self.push("Add", &[&b, &mm], &format!("{name}/Add"))
    }
    fn layer_norm(&mut self, x: &str, name: &str, hidden: usize) -> String {
        let s = self.ones_plus(&format!("{name}.weight"), hidden);
        let b = self.weight(&format!("{name}.bias"), &[hidden], 0.1);
        self.push_attrs(
            "LayerNormalization",
            &[x, &s, &b],
            &format!("{name}/LayerNormalization"),
            vec![attr_int("axis", -1), attr_float("epsilon", 1e-12)],
        )
    }
}

/// Builds the model. Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64 [batch,
/// sequence]); output `logits` (float [batch, labels]).
pub fn tiny_bert(o: &SynthOptions) -> ModelProto {
    let hidden = o.heads * o.head_size;
    let all = hidden;
    let mut g = G {
        nodes: vec![],
        inits: vec![],
        rng: Rng(o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        aliases: o.identity_aliases,
        n: 0,
    };
    // Embeddings.
    let emb = o.embedding_size.unwrap_or(hidden);
    let word = g.weight("embeddings.word_embeddings.weight", &[o.vocab, emb], 0.5);
    let pos = g.weight("embeddings.position_embeddings.weight", &[o.max_positions, emb], 0.5);
    let tt = g.weight("embeddings.token_type_embeddings.weight", &[2, emb], 0.5);
    let we = g.push("Gather", &[&word, "input_ids"], "emb/word");
    let te = g.push("Gather", &[&tt, "token_type_ids"], "emb/type");
    let shape_ids = g.push("Shape", &["input_ids"], "emb/Shape");
    let one = g.const_i64(&[1], &[]);
    let seq = g.push_attrs("Gather", &[&shape_ids, &one], "emb/seq", vec![attr_int("axis", 0)]);
    let zero = g.const_i64(&[0], &[]);
    let step = g.const_i64(&[1], &[]);
    let range = g.push("Range", &[&zero, &seq, &step], "emb/Range");
    let pe = g.push("Gather", &[&pos, &range], "emb/pos");
    let a1 = g.push("Add", &[&we, &te], "emb/Add");
    let a2 = g.push("Add", &[&a1, &pe], "emb/Add");
    let mut x = g.layer_norm(&a2, "embeddings.LayerNorm", emb);
    if o.embedding_size.is_some() {
        x = g.linear(&x, "embeddings_project", emb, hidden);
    }

    // Additive mask [B, 1, 1, S].
    let mf = g.push_attrs(
        "Cast",
        &["attention_mask"],
        "mask/Cast",
        vec![attr_int("to", DataType::Float as i64)],
    );
    let onef = g.const_f32(1.0);
    let inv = g.push("Sub", &[&onef, &mf], "mask/Sub");
    let big = g.const_f32(-10000.0);
    let add_mask = g.push("Mul", &[&inv, &big], "mask/Mul");
    let axes = g.const_i64(&[1, 2], &[2]);
    let mask4 = g.push("Unsqueeze", &[&add_mask, &axes], "mask/Unsqueeze");
    let mask_i32 = g.push_attrs(
        "Cast",
        &["attention_mask"],
        "mask/CastI32",
        vec![attr_int("to", DataType::Int32 as i64)],
    );

    let shared_split = "attention.split_shape";
    let shared_merge = "attention.merge_shape";
    if o.shapes == ShapeStyle::SharedInitializer && !o.fused_attention {
        g.inits.push(from_i64(
            shared_split,
            &[4],
            &[0, 0, o.heads as i64, o.head_size as i64],
        ));
        g.inits.push(from_i64(shared_merge, &[3], &[0, 0, all as i64]));
    }

    for l in 0..o.layers {
        let p = format!("encoder.layer.{l}");
        let attn_out = if o.fused_attention {
            let w = g.weight(
                &format!("{p}.attention.qkv.weight"),
                &[hidden, 3 * all],
                1.0 / (hidden as f32).sqrt(),
            );
            let b = g.weight(&format!("{p}.attention.qkv.bias"), &[3 * all], 0.1);
            let out = g.name(&format!("{p}/Attention"));
            g.nodes.push(with_domain(
                with_attrs(
                    node("Attention", &out, &[&x, &w, &b, &mask_i32], &[&out]),
                    vec![attr_int("num_heads", o.heads as i64)],
                ),
                "com.microsoft",
            ));
            out
        } else {
            // Batch and sequence sizes for Concat-built shapes.
            let (bdim, sdim) = if o.shapes == ShapeStyle::ShapeSlices {
                let dim = |g: &mut G, i: i64, what: &str| {
                    g.push_attrs(
                        "Shape",
                        &[&x],
                        &format!("{p}/Shape{what}"),
                        vec![attr_int("start", i), attr_int("end", i + 1)],
                    )
                };
                (dim(&mut g, 0, "B"), dim(&mut g, 1, "S"))
            } else {
                let sh = g.push("Shape", &[&x], &format!("{p}/Shape"));
                let i0 = g.const_i64(&[0], &[]);
                let i1 = g.const_i64(&[1], &[]);
                let b = g.push_attrs(
                    "Gather",
                    &[&sh, &i0],
                    &format!("{p}/GatherB"),
                    vec![attr_int("axis", 0)],
                );
                let s = g.push_attrs(
                    "Gather",
                    &[&sh, &i1],
                    &format!("{p}/GatherS"),
                    vec![attr_int("axis", 0)],
                );
                let ax = g.const_i64(&[0], &[1]);
                let bu = g.push("Unsqueeze", &[&b, &ax], &format!("{p}/UnsqB"));
                let ax2 = g.const_i64(&[0], &[1]);
                let su = g.push("Unsqueeze", &[&s, &ax2], &format!("{p}/UnsqS"));
                (bu, su)
            };
            let split_shape = |g: &mut G| -> String {
                match o.shapes {
                    ShapeStyle::ConcatInferred | ShapeStyle::ShapeSlices => {
                        let m1 = g.const_i64(&[-1], &[1]);
                        let d = g.const_i64(&[o.head_size as i64], &[1]);
                        g.push_attrs(
                            "Concat",
                            &[&bdim, &sdim, &m1, &d],
                            &format!("{p}/Concat"),
                            vec![attr_int("axis", 0)],
                        )
                    }
                    ShapeStyle::ConcatExplicit => {
                        let h = g.const_i64(&[o.heads as i64], &[1]);
                        let d = g.const_i64(&[o.head_size as i64], &[1]);
                        g.push_attrs(
                            "Concat",
                            &[&bdim, &sdim, &h, &d],
                            &format!("{p}/Concat"),
                            vec![attr_int("axis", 0)],
                        )
                    }
                    ShapeStyle::SharedInitializer => shared_split.to_string(),
                    ShapeStyle::ConstantPerReshape => g.const_i64(&[0, 0, o.heads as i64, o.head_size as i64], &[4]),
                }
            };
            let heads_of = |g: &mut G, y: &str, perm: &[i64], what: &str| -> String {
                let shape = split_shape(g);
                let r = g.push("Reshape", &[y, &shape], &format!("{p}/{what}/Reshape"));
                g.push_attrs(
                    "Transpose",
                    &[&r],
                    &format!("{p}/{what}/Transpose"),
                    vec![attr_ints("perm", perm)],
                )
            };
            let q = g.linear(&x, &format!("{p}.attention.self.query"), hidden, all);
            let k = g.linear(&x, &format!("{p}.attention.self.key"), hidden, all);
            let v = g.linear(&x, &format!("{p}.attention.self.value"), hidden, all);
            let qh = heads_of(&mut g, &q, &[0, 2, 1, 3], "q");
            let kh = heads_of(&mut g, &k, &[0, 2, 3, 1], "k");
            let vh = heads_of(&mut g, &v, &[0, 2, 1, 3], "v");
            let scores = g.push("MatMul", &[&qh, &kh], &format!("{p}/scores"));
            let scale = g.const_f32(1.0 / (o.head_size as f32).sqrt());
            let scaled = g.push("Mul", &[&scores, &scale], &format!("{p}/scale"));
            let masked = g.push("Add", &[&scaled, &mask4], &format!("{p}/mask"));
            let probs = g.push_attrs(
                "Softmax",
                &[&masked],
                &format!("{p}/Softmax"),
                vec![attr_int("axis", -1)],
            );
            let probs = if o.nan_guard {
                let nan = g.push("IsNaN", &[&probs], &format!("{p}/guard/IsNaN"));
                let zero = g.const_f32(0.0);
                g.push("Where", &[&nan, &zero, &probs], &format!("{p}/guard/Where"))
            } else {
                probs
            };
            let ctx = g.push("MatMul", &[&probs, &vh], &format!("{p}/context"));
            let ctx_t = g.push_attrs(
                "Transpose",
                &[&ctx],
                &format!("{p}/merge/Transpose"),
                vec![attr_ints("perm", &[0, 2, 1, 3])],
            );
            let merge = match o.shapes {
                ShapeStyle::ConcatInferred | ShapeStyle::ShapeSlices => {
                    let m1 = g.const_i64(&[-1], &[1]);
                    g.push_attrs(
                        "Concat",
                        &[&bdim, &sdim, &m1],
                        &format!("{p}/merge/Concat"),
                        vec![attr_int("axis", 0)],
                    )
                }
                ShapeStyle::ConcatExplicit => {
                    let a = g.const_i64(&[all as i64], &[1]);
                    g.push_attrs(
                        "Concat",
                        &[&bdim, &sdim, &a],
                        &format!("{p}/merge/Concat"),
                        vec![attr_int("axis", 0)],
                    )
                }
                ShapeStyle::SharedInitializer => shared_merge.to_string(),
                ShapeStyle::ConstantPerReshape => g.const_i64(&[0, 0, all as i64], &[3]),
            };
            g.push("Reshape", &[&ctx_t, &merge], &format!("{p}/merge/Reshape"))
        };
        let o_proj = g.linear(&attn_out, &format!("{p}.attention.output.dense"), all, hidden);
        let res1 = g.push("Add", &[&o_proj, &x], &format!("{p}/attention/residual"));
        let ln1 = g.layer_norm(&res1, &format!("{p}.attention.output.LayerNorm"), hidden);
        let up = g.linear(&ln1, &format!("{p}.intermediate.dense"), hidden, o.ffn);
        let act = match o.gelu {
            GeluStyle::Erf => {
                let s2 = g.const_f32(std::f32::consts::SQRT_2);
                let d = g.push("Div", &[&up, &s2], &format!("{p}/gelu/Div"));
                let e = g.push("Erf", &[&d], &format!("{p}/gelu/Erf"));
                let one = g.const_f32(1.0);
                let a = g.push("Add", &[&e, &one], &format!("{p}/gelu/Add"));
                let m = g.push("Mul", &[&up, &a], &format!("{p}/gelu/Mul"));
                let half = g.const_f32(0.5);
                g.push("Mul", &[&m, &half], &format!("{p}/gelu/Mul"))
            }
            GeluStyle::Op => g.push("Gelu", &[&up], &format!("{p}/Gelu")),
            GeluStyle::Tanh => {
                let three = g.const_f32(3.0);
                let cube = g.push("Pow", &[&up, &three], &format!("{p}/gelu/Pow"));
                let c = g.const_f32(0.044715);
                let cc = g.push("Mul", &[&cube, &c], &format!("{p}/gelu/Mul"));
                let inner = g.push("Add", &[&up, &cc], &format!("{p}/gelu/Add"));
                let k = g.const_f32((2.0 / std::f32::consts::PI).sqrt());
                let ki = g.push("Mul", &[&inner, &k], &format!("{p}/gelu/Mul"));
                let t = g.push("Tanh", &[&ki], &format!("{p}/gelu/Tanh"));
                let one = g.const_f32(1.0);
                let t1 = g.push("Add", &[&t, &one], &format!("{p}/gelu/Add"));
                let xm = g.push("Mul", &[&up, &t1], &format!("{p}/gelu/Mul"));
                let half = g.const_f32(0.5);
                g.push("Mul", &[&xm, &half], &format!("{p}/gelu/Mul"))
            }
        };
        let down = g.linear(&act, &format!("{p}.output.dense"), o.ffn, hidden);
        let res2 = g.push("Add", &[&down, &ln1], &format!("{p}/output/residual"));
        x = g.layer_norm(&res2, &format!("{p}.output.LayerNorm"), hidden);
    }
    // Pooler and classifier (Gemm, weights [out, in]).
    let zero = g.const_i64(&[0], &[]);
    let cls = g.push_attrs("Gather", &[&x, &zero], "pooler/Gather", vec![attr_int("axis", 1)]);
    let pw = g.weight("pooler.dense.weight", &[hidden, hidden], 1.0 / (hidden as f32).sqrt());
    let pb = g.weight("pooler.dense.bias", &[hidden], 0.1);
    let pd = g.push_attrs("Gemm", &[&cls, &pw, &pb], "pooler/Gemm", vec![attr_int("transB", 1)]);
    let pt = g.push("Tanh", &[&pd], "pooler/Tanh");
    let cw = g.weight("classifier.weight", &[o.labels, hidden], 1.0);
    let cb = g.weight("classifier.bias", &[o.labels], 0.1);
    g.nodes.push(with_attrs(
        node("Gemm", "classifier/Gemm", &[&pt, &cw, &cb], &["logits"]),
        vec![attr_int("transB", 1)],
    ));

    let sym = [Err("batch"), Err("sequence")];
    let graph = GraphProto {
        name: Some("tiny_bert".into()),
        node: g.nodes,
        initializer: g.inits,
        input: ["input_ids", "attention_mask", "token_type_ids"]
            .iter()
            .map(|n| value_info(n, DataType::Int64, &sym))
            .collect(),
        output: vec![value_info(
            "logits",
            DataType::Float,
            &[Err("batch"), Ok(o.labels as i64)],
        )],
        ..Default::default()
    };
    let opset = if o.gelu == GeluStyle::Op { 20 } else { 17 };
    model(graph, opset)
}

/// Two sequences over the synthetic vocabulary (ids < 100), the second with two padding
/// positions and a second segment in the first: a batch for comparing logits.
pub fn sample_batch() -> Batch {
    let ids = vec![2i64, 17, 33, 54, 9, 3, 2, 40, 41, 3, 0, 0];
    let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    let types = vec![0i64, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0];
    let array = |v: Vec<i64>| ndarray::Array2::from_shape_vec((2, 6), v).unwrap_or_default();
    Batch {
        input_ids: array(ids),
        attention_mask: array(mask),
        token_type_ids: array(types),
    }
}

/// `n` padded batches of 8 random sequences (ids 1..100, lengths 5..=16, the second half of each
/// sequence in segment 1), seeded: calibration data for passes run on [`tiny_bert`] models.
pub fn random_batches(n: usize, seed: u64) -> Vec<Batch> {
    let mut s = seed;
    let mut next = move |m: u64| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) % m
    };
    (0..n)
        .map(|_| {
            let lens: Vec<usize> = (0..8).map(|_| 5 + next(12) as usize).collect();
            let max = *lens.iter().max().unwrap_or(&1);
            let mut ids = ndarray::Array2::zeros((8, max));
            let mut mask = ndarray::Array2::zeros((8, max));
            let mut types = ndarray::Array2::zeros((8, max));
            for (b, &len) in lens.iter().enumerate() {
                for t in 0..len {
                    ids[[b, t]] = 1 + next(99) as i64;
                    mask[[b, t]] = 1;
                    types[[b, t]] = (t >= len / 2) as i64;
                }
            }
            Batch {
                input_ids: ids,
                attention_mask: mask,
                token_type_ids: types,
            }
        })
        .collect()
}
