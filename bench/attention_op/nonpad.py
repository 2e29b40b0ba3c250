#!/usr/bin/env python3
"""Does ONNX Runtime's CPU `Attention` skip padded keys when told their count? (issue 17, item 2)

  python3 bench/attention_op/nonpad.py

One-node graphs at an MRPC batch's shapes (24 sequences padded to 100 tokens, real lengths drawn
around MRPC's mean of 53, 12 heads of 32): opset 23's `Attention` with an additive mask [batch, 1,
query, key] (what the quantize pass writes) against opset 24's with `nonpad_kv_seqlen` (each
sequence's count of real keys, no mask). Prints the mean time of each over 30 runs after 3
untimed, and the largest difference of their outputs on the real tokens' rows.
"""
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

B, L, H, D = 24, 100, 12, 32
rng = np.random.default_rng(0)
lens = np.clip(rng.normal(53, 18, B).astype(np.int64), 10, L)
lens[0] = L


def model(opset, mode):
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", H * D]) for n in "QKV"]
    node_in = ["Q", "K", "V"]
    if mode == "mask":
        ins.append(helper.make_tensor_value_info("M", TensorProto.FLOAT, ["b", 1, "s", "s"]))
        node_in.append("M")
    else:
        ins.append(helper.make_tensor_value_info("N", TensorProto.INT64, ["b"]))
        node_in += ["", "", "", "N"]  # attn_mask, past_key, past_value absent
    n = helper.make_node("Attention", node_in, ["Y"], q_num_heads=H, kv_num_heads=H)
    g = helper.make_graph([n], "g", ins, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m.SerializeToString()


q, k, v = [rng.standard_normal((B, L, H * D)).astype(np.float32) for _ in range(3)]
mask = np.zeros((B, 1, L, L), np.float32)
for b in range(B):
    mask[b, :, :, lens[b]:] = -1e9
feeds = {"mask": dict(Q=q, K=k, V=v, M=mask), "nonpad": dict(Q=q, K=k, V=v, N=lens)}
out = {}
for mode, opset in (("mask", 23), ("nonpad", 24)):
    s = ort.InferenceSession(model(opset, mode), providers=["CPUExecutionProvider"])
    out[mode] = s.run(None, feeds[mode])[0]
    for _ in range(3):
        s.run(None, feeds[mode])
    t = time.perf_counter()
    for _ in range(30):
        s.run(None, feeds[mode])
    print(f"{mode} (opset {opset}): {(time.perf_counter() - t) / 30 * 1e3:.2f} ms")
d = np.abs(out["mask"] - out["nonpad"])
for b in range(B):
    d[b, lens[b]:] = 0
print("largest difference on the real rows:", d.max())
