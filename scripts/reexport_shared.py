#!/usr/bin/env python3
"""Re-export a shared MiniLM classifier (../shared/models/minilm-l6-*) the way today's exports
look: transformers' default attention (SDPA) through torch's dynamo exporter (opset 18). The
weights are read back from the classic export's ONNX file (named initializers by name; each
`onnx::MatMul_*` weight, stored transposed, by the bias its MatMul's Add reads), loaded into a
`BertForSequenceClassification` built from the folder's config.json (strictly: every parameter
found), checked against ONNX Runtime on the original file, exported, and the export checked
against torch. `onnx-compress eval` of the result is then compared with `reference.json`.

Writes OUT_DIR/model.onnx (one file) and copies tokenizer.json, config.json and vocab.txt.

Usage: python scripts/reexport_shared.py ../shared/models/minilm-l6-sst2 OUT_DIR [--classic-eager]
  --classic-eager  export like the original instead (classic exporter, eager attention): a
                   control that the weights were read back whole
Needs: torch, transformers, onnx, onnxruntime, onnxscript.
"""
import argparse
import os
import shutil
import sys

import numpy as np


def state_dict_from_onnx(path):
    import onnx
    from onnx import numpy_helper

    g = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    state = {k: v for k, v in inits.items() if not k.startswith("onnx::") and not k.startswith("/")}
    for n in g.node:
        if n.op_type != "MatMul" or n.input[1] not in inits or not n.input[1].startswith("onnx::"):
            continue
        adds = [c for c in consumers.get(n.output[0], []) if c.op_type == "Add"]
        biases = [i for a in adds for i in a.input if i.endswith(".bias") and i in inits]
        if len(biases) != 1:
            raise SystemExit(f"{n.name}: no single bias beside weight {n.input[1]}")
        state[biases[0][: -len(".bias")] + ".weight"] = inits[n.input[1]].T.copy()
    return state


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--classic-eager", action="store_true")
    a = p.parse_args()
    import onnxruntime as ort
    import torch
    import transformers as T

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    import _fixture as fx

    config = T.AutoConfig.from_pretrained(a.src)
    attn = "eager" if a.classic_eager else "sdpa"
    model = T.BertForSequenceClassification._from_config(config, attn_implementation=attn).eval()
    state = {k: torch.from_numpy(v) for k, v in state_dict_from_onnx(os.path.join(a.src, "model.onnx")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Buffers (position ids) are not parameters of the export.
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"weights not matched: missing {missing}, unexpected {unexpected}")
    os.makedirs(a.out, exist_ok=True)
    out = os.path.join(a.out, "model.onnx")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 30000, (4, 24), generator=g)
    mask = torch.ones(4, 24, dtype=torch.int64)
    mask[1, 15:] = 0
    mask[3, 7:] = 0
    types = torch.zeros(4, 24, dtype=torch.int64)
    types[:, 12:] = 1
    batch = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
        orig = ort.InferenceSession(os.path.join(a.src, "model.onnx")).run(None, batch)[0]
        print("torch (read back) vs the original ONNX: max |logit difference|", float(np.abs(ref - orig).max()))
        if np.abs(ref - orig).max() > 1e-4:
            raise SystemExit("the weights were not read back whole")
        if a.classic_eager:
            fx.export_classic(model, out, torch)
        else:
            fx.export_dynamo(model, out, torch)
    got = ort.InferenceSession(out).run(None, batch)[0]
    print("re-export vs torch: max |logit difference|", float(np.abs(ref - got).max()))
    for f in ["tokenizer.json", "config.json", "vocab.txt"]:
        if os.path.exists(os.path.join(a.src, f)):
            shutil.copy(os.path.join(a.src, f), a.out)
    import onnx

    m = onnx.load(out)
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"wrote {out}: {os.path.getsize(out)} bytes, torch {torch.__version__}, transformers {T.__version__}, "
          f"attention {attn}; ops {dict(sorted(ops.items()))}")


if __name__ == "__main__":
    main()
