#!/usr/bin/env python3
"""Two graph fusions tried on packed int8 models (ONNX Runtime's form), as prototypes; both left.

  python3 bench/attention_op/fusions.py skip-layernorm IN.onnx OUT.onnx
  python3 bench/attention_op/fusions.py merge-qkv IN.onnx OUT.onnx

skip-layernorm: each encoder residual `Add -> LayerNormalization` becomes com.microsoft's
  `SkipLayerNormalization` (ONNX Runtime's own optimizer fuses it only on [batch, sequence, hidden]
  inputs, so on the packed [tokens, hidden] rows it does not; the kernel takes 2-D input).
  The embeddings' Add is left (its sum has other readers in some exports).
merge-qkv: the three `MatMulIntegerToFloat` that read one quantized input (the attention's Q, K and
  V projections) become one with the weights, scales, zero points and biases side by side, then a
  `Split` into the three outputs (one GEMM of width 3h instead of three of width h).

Prints how many it rewrote and the largest logit difference on a random batch (8 sequences of up
to 40 tokens); bench/attention_op/fusions.sh pairs the results with the model on dev. (merge-qkv
computes the same numbers: difference 0. skip-layernorm's sums and norms differ in the last bits,
2e-6 on the float model; on an int8 model that can move an activation across a rounding step of
the next QuantizeLinear, so its difference depends on the batch: 7e-7 on one draw, 6e-2 on another.)
"""
import collections
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def readers(g):
    r = collections.Counter()
    for n in g.node:
        r.update(n.input)
    return r


def skip_layernorm(m):
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    uses = readers(g)
    replace, drop, renamed = {}, set(), {}
    for n in g.node:
        a = producer.get(n.input[0]) if n.op_type == "LayerNormalization" else None
        if a is None or a.op_type != "Add" or "embeddings" in a.name:
            continue
        eps = next((helper.get_attribute_value(x) for x in n.attribute if x.name == "epsilon"), 1e-5)
        outputs = [n.output[0]]
        if uses[a.output[0]] > 1:  # the sum is read elsewhere too: the op's fourth output
            renamed[a.output[0]] = a.output[0] + "_sum"
            outputs = [n.output[0], "", "", renamed[a.output[0]]]
        replace[id(n)] = helper.make_node("SkipLayerNormalization", [a.input[0], a.input[1], n.input[1], n.input[2]],
                                          outputs, name=n.name + "_skip", domain="com.microsoft", epsilon=eps)
        drop.add(id(a))
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    for n in nodes:
        for i, x in enumerate(n.input):
            n.input[i] = renamed.get(x, x)
    del g.node[:]
    g.node.extend(nodes)
    return len(replace)


def merge_qkv(m):
    g = m.graph
    init = {t.name: t for t in g.initializer}
    arr = lambda name: numpy_helper.to_array(init[name])
    by_input = collections.defaultdict(list)
    for n in g.node:
        if n.op_type == "MatMulIntegerToFloat" and n.input[1] in init and len(n.input) == 7:
            by_input[n.input[0]].append(n)
    replace, drop = {}, set()
    for a, ns in by_input.items():
        if len(ns) != 3 or len({(n.input[2], n.input[4]) for n in ns}) != 1:
            continue
        widths = [arr(n.input[1]).shape[1] for n in ns]

        def side_by_side(slot):
            parts = [np.broadcast_to(arr(n.input[slot]).reshape(-1), (w,)) if arr(n.input[slot]).size == 1
                     else arr(n.input[slot]) for n, w in zip(ns, widths)]
            return np.concatenate(parts).astype(arr(ns[0].input[slot]).dtype)

        base = ns[0].name + "_qkv"
        g.initializer.extend([
            numpy_helper.from_array(np.concatenate([arr(n.input[1]) for n in ns], axis=1), base + "_weight"),
            numpy_helper.from_array(side_by_side(3), base + "_scale"),
            numpy_helper.from_array(side_by_side(5), base + "_zero_point"),
            numpy_helper.from_array(side_by_side(6), base + "_bias"),
            numpy_helper.from_array(np.array(widths, np.int64), base + "_widths"),
        ])
        replace[id(ns[0])] = [
            helper.make_node("MatMulIntegerToFloat", [a, base + "_weight", ns[0].input[2], base + "_scale",
                                                      ns[0].input[4], base + "_zero_point", base + "_bias"],
                             [base + "_out"], name=base, domain="com.microsoft"),
            helper.make_node("Split", [base + "_out", base + "_widths"], [n.output[0] for n in ns],
                             name=base + "_split", axis=-1),
        ]
        drop.update(id(n) for n in ns[1:])
    nodes = [x for n in g.node if id(n) not in drop for x in replace.get(id(n), [n])]
    del g.node[:]
    g.node.extend(nodes)
    used = readers(g)
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return len(replace)


def logits(path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0]


def main():
    kind, src, dst = sys.argv[1:4]
    m = onnx.load(src)
    count = {"skip-layernorm": skip_layernorm, "merge-qkv": merge_qkv}[kind](m)
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(m, dst)
    rng = np.random.default_rng(0)
    mask = np.ones((8, 40), np.int64)
    for row in mask:
        row[rng.integers(5, 40):] = 0
    feeds = {"input_ids": rng.integers(1000, 20000, (8, 40)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": np.zeros((8, 40), np.int64)}
    diff = np.abs(logits(src, feeds) - logits(dst, feeds)).max()
    print(f"{kind}: {count} rewritten; largest logit difference on a random batch {diff:.2e}")


if __name__ == "__main__":
    main()
