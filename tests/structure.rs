//! Structure discovery on graphs built in code (one per exporter layout) and on the shared models.

use onnx_compress::onnx::{self, build, GraphProto, ModelProto};
use onnx_compress::structure::{discover, macs_per_sequence, parameter_counts, Qkv, ShapeRole};
use onnx_compress::testkit::shared;
use onnx_compress::testkit::synth::{tiny_bert, GeluStyle, ShapeStyle, SynthOptions};

fn opts(shapes: ShapeStyle) -> SynthOptions {
    SynthOptions {
        layers: 3,
        heads: 4,
        head_size: 8,
        ffn: 48,
        shapes,
        ..Default::default()
    }
}

fn check_dims(m: &ModelProto, o: &SynthOptions) {
    let t = discover(m).expect("maps");
    assert_eq!(t.layers.len(), o.layers);
    assert_eq!(t.hidden, o.heads * o.head_size);
    for l in &t.layers {
        assert_eq!(l.heads(), o.heads);
        assert_eq!(l.head_size().unwrap(), o.head_size);
        assert_eq!(l.ffn_width(), o.ffn);
        assert_eq!(l.ffn.as_ref().unwrap().up.out_features, o.ffn);
        assert_eq!(l.ffn.as_ref().unwrap().down.in_features, o.ffn);
        assert_eq!(l.attention_norm.kind, "LayerNormalization");
        assert_eq!(l.output_norm.kind, "LayerNormalization");
    }
    let head = t.head.as_ref().expect("head");
    assert_eq!(head.classifier.out_features, o.labels);
    assert!(head.classifier.transposed);
    assert_eq!(head.pooler_activation.as_deref(), Some("tanh"));
    let e = &t.embeddings;
    assert_eq!(e.word.as_ref().map(|w| w.rows), Some(o.vocab));
    assert_eq!(e.token_type.as_ref().map(|w| w.rows), Some(2));
    assert_eq!(e.position.as_ref().map(|w| w.rows), Some(o.max_positions));
    assert!(e.norm.is_some());
    // Every float initializer is attributed to a part.
    let p = parameter_counts(m, &t);
    assert_eq!(p.other, 0, "{p:?}");
}

#[test]
fn torch_classic_layout_with_inferred_head_count() {
    let o = opts(ShapeStyle::ConcatInferred);
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    let t = discover(&m).unwrap();
    for l in &t.layers {
        let a = l.attention.as_ref().unwrap();
        // Three split reshapes carry [head_size]; nothing carries the head count or width.
        assert_eq!(a.shape_consts.len(), 3, "{:?}", a.shape_consts);
        assert!(a
            .shape_consts
            .iter()
            .all(|c| c.role == ShapeRole::HeadSize && c.value == 8));
        assert_eq!(a.inferred_reshapes, 4);
        assert!((a.scale.unwrap() - 1.0 / 8f32.sqrt()).abs() < 1e-7);
        assert!(matches!(a.qkv, Qkv::Separate { .. }));
    }
}

#[test]
fn dynamo_shape_slices_carry_the_head_size() {
    // torch's dynamo exporter: Concat(Shape(x, 0, 1), Shape(x, 1, 2), [-1], [head_size]).
    let o = opts(ShapeStyle::ShapeSlices);
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    for l in &discover(&m).unwrap().layers {
        let a = l.attention.as_ref().unwrap();
        assert_eq!(a.shape_consts.len(), 3, "{:?}", a.shape_consts);
        assert!(a
            .shape_consts
            .iter()
            .all(|c| c.role == ShapeRole::HeadSize && c.value == 8));
        assert_eq!(a.inferred_reshapes, 4);
    }
    // The head size comes from those constants, not the scale: a scale of 1/√2, which read
    // alone would mean heads of 2, changes nothing.
    let mut rescaled = m.clone();
    let g = rescaled.graph.as_mut().unwrap();
    let scale_inputs: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Mul" && n.name().contains("/scale_"))
        .map(|n| n.input[1].clone())
        .collect();
    assert_eq!(scale_inputs.len(), o.layers);
    for c in g.node.iter_mut().filter(|n| scale_inputs.contains(&n.output[0])) {
        c.attribute[0].t = Some(onnx::tensor::from_f32("", &[], &[1.0 / 2f32.sqrt()]));
    }
    check_dims(&rescaled, &o);
}

#[test]
fn embeddings_projected_to_the_hidden_size_are_part_of_the_embeddings() {
    // ELECTRA: embeddings of width 16, LayerNorm, then a Linear to the hidden size (32).
    let o = SynthOptions {
        embedding_size: Some(16),
        ..opts(ShapeStyle::ConcatInferred)
    };
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    let t = discover(&m).unwrap();
    let p = t.embeddings.project.as_ref().expect("the projection is found");
    assert_eq!((p.in_features, p.out_features), (16, 32));
    assert_eq!(p.weight, "embeddings_project.weight");
    assert_eq!(p.bias.as_deref(), Some("embeddings_project.bias"));
    assert_eq!(t.embeddings.word.as_ref().map(|w| w.dim), Some(16));
    assert_eq!(t.layers[0].input, p.output);
    // Without the projection there is none.
    assert!(discover(&tiny_bert(&opts(ShapeStyle::ConcatInferred)))
        .unwrap()
        .embeddings
        .project
        .is_none());
}

#[test]
fn explicit_concat_constants_are_all_found() {
    let o = opts(ShapeStyle::ConcatExplicit);
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    for l in &discover(&m).unwrap().layers {
        let c = &l.attention.as_ref().unwrap().shape_consts;
        assert_eq!(
            c.iter().filter(|c| c.role == ShapeRole::Heads && c.value == 4).count(),
            3
        );
        assert_eq!(
            c.iter()
                .filter(|c| c.role == ShapeRole::HeadSize && c.value == 8)
                .count(),
            3
        );
        assert_eq!(
            c.iter()
                .filter(|c| c.role == ShapeRole::AllHeads && c.value == 32)
                .count(),
            1
        );
        assert_eq!(l.attention.as_ref().unwrap().inferred_reshapes, 0);
    }
}

#[test]
fn one_shape_initializer_shared_by_all_layers() {
    let o = opts(ShapeStyle::SharedInitializer);
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    let t = discover(&m).unwrap();
    for l in &t.layers {
        let c = &l.attention.as_ref().unwrap().shape_consts;
        let heads: Vec<_> = c.iter().filter(|c| c.role == ShapeRole::Heads).collect();
        assert!(!heads.is_empty());
        assert!(heads
            .iter()
            .all(|c| c.constant == "attention.split_shape" && c.element == 2));
        // 3 layers × 3 reshapes read the split shape: a pass must un-share it before rewriting.
        assert_eq!(heads[0].shared_by, 9);
        let merge: Vec<_> = c.iter().filter(|c| c.role == ShapeRole::AllHeads).collect();
        assert_eq!(merge.len(), 1);
        assert_eq!(merge[0].constant, "attention.merge_shape");
        assert_eq!(merge[0].shared_by, 3);
    }
}

#[test]
fn constant_node_per_reshape() {
    let o = opts(ShapeStyle::ConstantPerReshape);
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    for l in &discover(&m).unwrap().layers {
        let c = &l.attention.as_ref().unwrap().shape_consts;
        assert_eq!(c.iter().filter(|c| c.role == ShapeRole::Heads).count(), 3);
        assert!(c.iter().all(|c| c.shared_by == 1));
    }
}

#[test]
fn gelu_op_identity_aliases_and_opset_20() {
    let o = SynthOptions {
        gelu: GeluStyle::Op,
        identity_aliases: true,
        ..opts(ShapeStyle::ConcatInferred)
    };
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    let t = discover(&m).unwrap();
    assert_eq!(t.layers[0].ffn.as_ref().unwrap().activation, "gelu (fused op)");
    // Weights resolve through the Identity alias to the initializer itself.
    assert_eq!(
        t.layers[0].ffn.as_ref().unwrap().up.weight,
        "encoder.layer.0.intermediate.dense.weight"
    );
}

#[test]
fn tanh_gelu_is_recognized() {
    let o = SynthOptions {
        gelu: GeluStyle::Tanh,
        ..opts(ShapeStyle::ConcatInferred)
    };
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    assert_eq!(
        discover(&m).unwrap().layers[1].ffn.as_ref().unwrap().activation,
        "gelu(tanh)"
    );
}

#[test]
fn fused_attention_nodes_are_mapped() {
    let o = SynthOptions {
        fused_attention: true,
        ..opts(ShapeStyle::ConcatInferred)
    };
    let m = tiny_bert(&o);
    check_dims(&m, &o);
    let t = discover(&m).unwrap();
    for l in &t.layers {
        assert!(l.attention.as_ref().unwrap().fused);
        assert!(matches!(l.attention.as_ref().unwrap().qkv, Qkv::Packed { .. }));
    }
}

/// Class probabilities appended after the logits (a Softmax no MatMul reads) are not an
/// attention block: the model maps as before (it was refused as "attention block 3").
#[test]
fn a_softmax_over_the_logits_is_not_an_attention() {
    let o = opts(ShapeStyle::ConcatInferred);
    let mut m = tiny_bert(&o);
    let g = m.graph.as_mut().unwrap();
    g.node.push(build::with_attrs(
        build::node("Softmax", "probs_softmax", &["logits"], &["probs"]),
        vec![build::attr_int("axis", -1)],
    ));
    let mut probs = g.output[0].clone();
    probs.name = Some("probs".into());
    g.output.insert(0, probs);
    check_dims(&m, &o);
}

/// Scores computed by ONNX Runtime's FusedMatMul (a graph saved after its session
/// optimizations) map as the MatMul's did, its `alpha` a factor of the scale; one that transposes
/// its first input (Qᵀ) computes no scores and is not taken for them.
#[test]
fn fused_matmul_scores_map_with_alpha_in_the_scale() {
    let o = opts(ShapeStyle::ConcatInferred);
    let fused = |attrs: Vec<(&str, i64)>, alpha: Option<f32>| {
        let mut m = tiny_bert(&o);
        let g = m.graph.as_mut().unwrap();
        let weights: Vec<String> = g.initializer.iter().map(|t| t.name().to_string()).collect();
        for scores in g
            .node
            .iter_mut()
            .filter(|n| n.op_type() == "MatMul" && n.name().contains("/scores"))
        {
            assert!(scores.input.iter().all(|i| !weights.contains(i)), "{}", scores.name());
            scores.op_type = Some("FusedMatMul".into());
            scores.domain = Some("com.microsoft".into());
            scores
                .attribute
                .extend(attrs.iter().map(|(k, v)| build::attr_int(k, *v)));
            if let Some(a) = alpha {
                scores.attribute.push(build::attr_float("alpha", a));
            }
        }
        let fused = g.node.iter().filter(|n| n.op_type() == "FusedMatMul").count();
        assert_eq!(fused, o.layers, "one scores product per layer");
        m
    };
    let plain = discover(&tiny_bert(&o)).unwrap();
    let m = fused(vec![("transB", 0)], None);
    check_dims(&m, &o);
    let t = discover(&m).unwrap();
    for (a, b) in t.layers.iter().zip(&plain.layers) {
        assert_eq!(a.attention.as_ref().unwrap().scale, b.attention.as_ref().unwrap().scale);
    }
    let t = discover(&fused(vec![], Some(0.5))).unwrap();
    for (a, b) in t.layers.iter().zip(&plain.layers) {
        let (a, b) = (
            a.attention.as_ref().unwrap().scale.unwrap(),
            b.attention.as_ref().unwrap().scale.unwrap(),
        );
        assert!((a - 0.5 * b).abs() < 1e-7, "{a} vs 0.5 × {b}");
    }
    let err = discover(&fused(vec![("transA", 1)], None)).unwrap_err().to_string();
    assert!(err.contains("the scores MatMul(Q, Kᵀ) before the Softmax"), "{err}");
}

#[test]
fn sdpa_nan_guard_between_softmax_and_context_is_walked_through() {
    // torch's exporter guards SDPA's softmax against fully masked rows: Where(IsNaN(p), 0, p).
    let o = SynthOptions {
        nan_guard: true,
        ..opts(ShapeStyle::ConcatInferred)
    };
    let m = tiny_bert(&o);
    assert!(m.graph.as_ref().unwrap().node.iter().any(|n| n.op_type() == "IsNaN"));
    check_dims(&m, &o);
    // The same guard written the other way round: Where(Not(IsNaN(p)), p, 0).
    let mut negated = m.clone();
    let g = negated.graph.as_mut().unwrap();
    let wheres: Vec<usize> = (0..g.node.len()).filter(|&i| g.node[i].op_type() == "Where").collect();
    assert_eq!(wheres.len(), o.layers);
    for (k, &w) in wheres.iter().enumerate().rev() {
        let not_out = format!("guard_not_{k}");
        let nan = g.node[w].input[0].clone();
        g.node
            .insert(w, build::node("Not", &format!("guard/Not_{k}"), &[&nan], &[&not_out]));
        let n = &mut g.node[w + 1];
        n.input = vec![not_out, n.input[2].clone(), n.input[1].clone()];
    }
    check_dims(&negated, &o);
    // A Where whose replacement is not a one-element constant is not a guard: refused, located.
    let mut bad = m.clone();
    let g = bad.graph.as_mut().unwrap();
    let w = g.node.iter().position(|n| n.op_type() == "Where").unwrap();
    g.node[w].input[1] = "attention_mask".into();
    let err = discover(&bad).unwrap_err().to_string();
    assert!(err.contains("context MatMul") && err.contains("IsNaN"), "{err}");
}

#[test]
fn macs_follow_the_formula() {
    let o = opts(ShapeStyle::ConcatInferred);
    let t = discover(&tiny_bert(&o)).unwrap();
    let (s, h, f) = (16u64, 32u64, 48u64);
    // Per layer: 4 projections (s·h·h each), QKᵀ and PV (s·s·h each), FFN (2·s·h·f).
    let per_layer = 4 * s * h * h + 2 * s * s * h + 2 * s * h * f;
    let (enc, head) = macs_per_sequence(&t, 16);
    assert_eq!(enc, 3 * per_layer);
    assert_eq!(head, h * h + h * 2);
}

#[test]
fn a_graph_without_attention_names_what_was_looked_for() {
    let g = GraphProto {
        node: vec![build::node("Relu", "r", &["x"], &["y"])],
        ..Default::default()
    };
    let err = discover(&build::model(g, 17)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Softmax") && msg.contains("Relu"), "{msg}");
}

#[test]
fn a_broken_attention_says_where_it_stopped() {
    // Remove the value projection's MatMul: the search for V must fail with a located message.
    let mut m = tiny_bert(&opts(ShapeStyle::ConcatInferred));
    let g = m.graph.as_mut().unwrap();
    g.node
        .retain(|n| !n.name().starts_with("encoder.layer.1.attention.self.value/MatMul"));
    let err = discover(&m).unwrap_err().to_string();
    assert!(err.contains("attention block 1") && err.contains("value"), "{err}");
}

#[test]
fn shared_models_map_as_documented() {
    for name in ["minilm-l6-sst2", "minilm-l6-mrpc"] {
        let Some(path) = shared::require(&format!("models/{name}/model.onnx"), "structure test") else {
            return;
        };
        let m = onnx::load(&path).unwrap();
        let t = discover(&m).unwrap();
        assert_eq!(t.layers.len(), 6);
        assert_eq!(t.hidden, 384);
        for l in &t.layers {
            assert_eq!((l.heads(), l.head_size().unwrap(), l.ffn_width()), (12, 32, 1536));
            assert_eq!(l.ffn.as_ref().unwrap().activation, "gelu(erf)");
            assert!((l.attention.as_ref().unwrap().scale.unwrap() - 0.176_776_7).abs() < 1e-6);
            // The classic exporter's shapes: [B, S, -1, 32] and [B, S, -1].
            assert_eq!(l.attention.as_ref().unwrap().shape_consts.len(), 3);
            if let Qkv::Separate { q, .. } = &l.attention.as_ref().unwrap().qkv {
                assert!(q.bias.as_deref().unwrap().ends_with("attention.self.query.bias"));
            } else {
                panic!("expected separate Q/K/V");
            }
        }
        let p = parameter_counts(&m, &t);
        assert_eq!(p.other, 0);
        assert_eq!(p.embeddings, (30522 + 512 + 2) * 384 + 2 * 384);
        assert_eq!(t.num_labels(), Some(2));
        // 11,918,592 embeddings + 6 × (592,128 attention + 1,182,336 FFN) + 147,840 pooler + 770 classifier.
        assert_eq!(p.total, 22_713_986);
    }
}
