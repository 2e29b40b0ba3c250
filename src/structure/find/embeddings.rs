//! The ends of the model: the embeddings before the encoder, the pooler and classifier after it.

use super::*;

pub(super) fn find_embeddings(ix: &GraphIndex) -> Embeddings {
    if let Some(e) = fused_embeddings(ix) {
        return e;
    }
    let mut tables: Vec<(EmbeddingTable, bool)> = Vec::new();
    for (i, n) in ix.graph.node.iter().enumerate() {
        if n.op_type() != "Gather" || n.input.len() != 2 {
            continue;
        }
        let Some((_, rows, dim)) = ix.weight_2d(&n.input[0]) else {
            continue;
        };
        let Some(weight) = ix.constant_name(&n.input[0]) else {
            continue;
        };
        // Indices straight from a graph input (through Cast/Identity) → word or token type.
        let mut idx = ix.resolve(&n.input[1]);
        for _ in 0..3 {
            match ix.producer(idx).map(|p| ix.node(p)) {
                Some(p) if p.op_type() == "Cast" => idx = &p.input[0],
                _ => break,
            }
        }
        let from_input = ix.graph_inputs().contains(&idx);
        tables.push((
            EmbeddingTable {
                weight,
                rows,
                dim,
                gather_node: i,
            },
            from_input,
        ));
    }
    let mut e = Embeddings::default();
    let mut from_inputs: Vec<&EmbeddingTable> = tables.iter().filter(|t| t.1).map(|t| &t.0).collect();
    from_inputs.sort_by_key(|t| std::cmp::Reverse(t.rows));
    if let Some(w) = from_inputs.first() {
        e.word = Some((*w).clone());
    }
    e.token_type = from_inputs.iter().skip(1).find(|t| t.rows <= 16).map(|t| (*t).clone());
    e.position = tables
        .iter()
        .filter(|t| !t.1 || (t.0.rows > 16 && Some(&t.0) != e.word.as_ref()))
        .map(|t| t.0.clone())
        .max_by_key(|t| t.rows);
    // RoBERTa's token types come from a buffer of zeros, not an input: a small table read at
    // computed indices that is not the position table.
    if e.token_type.is_none() {
        e.token_type = tables
            .iter()
            .find(|t| !t.1 && t.0.rows <= 16 && Some(&t.0) != e.position.as_ref())
            .map(|t| t.0.clone());
    }
    // The embedding LayerNorm: after the word embedding Gather, through the Adds of the others.
    if let Some(w) = &e.word {
        if let Some(out) = ix.node(w.gather_node).output.first() {
            e.norm = find_norm(ix, out, 3);
        }
    }
    e
}

/// ONNX Runtime's fused embeddings (com.microsoft `EmbedLayerNormalization`, as its transformer
/// optimizer writes them): input_ids, segment_ids, then the word, position and segment tables,
/// the LayerNorm's γ and β; output 0 the normalized embeddings. Every table's `gather_node` is
/// that node.
fn fused_embeddings(ix: &GraphIndex) -> Option<Embeddings> {
    let (i, n) = ix
        .graph
        .node
        .iter()
        .enumerate()
        .find(|(_, n)| n.op_type() == "EmbedLayerNormalization" && n.domain() == "com.microsoft")?;
    let table = |slot: usize| -> Option<EmbeddingTable> {
        let v = n.input.get(slot).filter(|v| !v.is_empty())?;
        let (_, rows, dim) = ix.weight_2d(v)?;
        Some(EmbeddingTable {
            weight: ix.constant_name(v)?,
            rows,
            dim,
            gather_node: i,
        })
    };
    let constant = |slot: usize| n.input.get(slot).and_then(|v| ix.constant_name(v));
    Some(Embeddings {
        word: table(2),
        position: table(3),
        token_type: table(4),
        norm: Some(Norm {
            node: i,
            node_name: n.name().to_string(),
            kind: n.op_type().to_string(),
            scale: constant(5),
            bias: constant(6),
            skip_bias: None,
            output: n.output.first()?.clone(),
        }),
        project: None,
    })
}

/// The Linear that reads the embeddings' output `value` and whose output `starts_layer` accepts
/// (an attention block, or what is left of a pruned one, reads it): a projection from the
/// embedding width to the hidden size, as ELECTRA's `embeddings_project`.
pub(super) fn embedding_projection(
    ix: &GraphIndex,
    value: &str,
    starts_layer: &dyn Fn(&str) -> bool,
) -> Option<Linear> {
    let value = ix.resolve(value);
    ix.consumers(value)
        .iter()
        .filter_map(|&c| linear_at(ix, c))
        .find(|l| ix.resolve(&ix.node(l.node).input[0]) == value && starts_layer(&l.output))
}

/// Whether `target` is `from` or computed from it (looking a few hundred nodes on).
fn reaches(ix: &GraphIndex, from: &str, target: &str) -> bool {
    let mut queue = VecDeque::from([from.to_string()]);
    let mut seen = HashSet::new();
    while let Some(v) = queue.pop_front() {
        if v == target {
            return true;
        }
        for &c in ix.consumers(&v) {
            if seen.len() < 256 && seen.insert(c) {
                queue.extend(ix.node(c).output.iter().cloned());
            }
        }
    }
    false
}

pub(super) fn find_head(ix: &GraphIndex, encoder_out: &str) -> Option<Head> {
    let mut queue = VecDeque::from([encoder_out.to_string()]);
    let mut seen = HashSet::new();
    let mut linears: Vec<Linear> = Vec::new();
    let mut ops: Vec<(usize, String)> = Vec::new();
    while let Some(v) = queue.pop_front() {
        if seen.len() > 48 {
            break;
        }
        for &c in ix.consumers(&v) {
            if !seen.insert(c) {
                continue;
            }
            if let Some(l) = linear_at(ix, c) {
                queue.push_back(l.output.clone());
                if let Some(b) = l.bias_node {
                    seen.insert(b);
                }
                linears.push(l);
                continue;
            }
            let n = ix.node(c);
            ops.push((c, n.op_type().to_string()));
            for o in &n.output {
                queue.push_back(o.clone());
            }
        }
    }
    linears.sort_by_key(|l| l.node);
    // The classifier computes the predictions (the output named `logits`, else the first, as
    // `eval` reads them), the pooler what the classifier reads: another head beside them (an
    // auxiliary output) is neither. A model whose predictions no Linear here computes is headless.
    let predictions = crate::onnx::graph::prediction_output(ix.graph_outputs())?;
    let ci = linears.iter().rposition(|l| reaches(ix, &l.output, predictions))?;
    let classifier = linears.remove(ci);
    let classifier_input = ix.node(classifier.node).input.first()?.clone();
    let pooler = linears
        .iter()
        .rposition(|l| l.node < classifier.node && reaches(ix, &l.output, &classifier_input))
        .map(|i| linears.remove(i));
    // A FusedGemm names its activation.
    let fused = |p: &Linear| {
        let n = ix.node(p.node);
        n.attribute
            .iter()
            .find(|a| a.name() == "activation")
            .and_then(|a| a.s.as_deref())
            .map(|s| String::from_utf8_lossy(s).to_lowercase())
    };
    let pooler_activation = pooler.as_ref().and_then(|p| {
        fused(p).or_else(|| {
            ops.iter()
                .filter(|(i, op)| {
                    *i > p.node
                        && *i < classifier.node
                        && matches!(op.as_str(), "Tanh" | "Relu" | "Gelu" | "Erf" | "Sigmoid")
                })
                .map(|(_, op)| op.to_lowercase())
                .next()
        })
    });
    let norm = pooler.as_ref().and_then(|p| {
        ops.iter()
            .find(|(i, op)| *i > p.node && *i < classifier.node && op == "LayerNormalization")
            .and_then(|(i, _)| find_norm(ix, ix.node(*i).input.first()?, 0))
    });
    Some(Head {
        pooler,
        pooler_activation,
        norm,
        classifier,
    })
}
