#!/usr/bin/env python3
"""Export a Hugging Face *ForSequenceClassification checkpoint to ONNX.

Does exactly what produced the shared models (../shared/models/*/README.md,
section "Export"):

  torch.onnx.export(model, (input_ids, attention_mask, token_type_ids),
                    dynamo=False, opset_version=17, do_constant_folding=True)

with the model in eval mode, loaded with attn_implementation="eager", in fp32,
traced on a 2x16 int64 dummy batch whose second row ends in 4 padding
positions. Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64
[batch, sequence]); output `logits` ([batch, num_labels]).

Writes into OUT_DIR:
  model.onnx      the graph (single file)
  tokenizer.json  the checkpoint's fast tokenizer, truncation at --max-length,
                  padding disabled (onnx-compress pads each batch itself)
  config.json     the Hugging Face config

and, unless --no-check, compares onnxruntime with torch on a few sentences
(fails if the max abs logit difference exceeds 1e-4).

Needs internet (for hub ids) and: pip install torch transformers onnx
(plus onnxruntime for the check). None of them is needed for --help.

Usage:
  python scripts/export_hf.py textattack/bert-base-uncased-SST-2 models/bert-base-sst2
  python scripts/export_hf.py ./my-checkpoint out/ --max-length 256 --no-check
"""

import argparse
import inspect
import json
import os
import sys

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
CHECK_TOLERANCE = 1e-4

# Sentences (and one pair) for the torch-vs-onnxruntime check: different
# lengths, so the batch has padding, like the real evaluation.
CHECK_TEXTS = [
    "it 's a charming and often affecting journey . ",
    "unflinchingly bleak and desperate ",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "a",
]
CHECK_PAIRS = [
    ("He said the food was good.", "According to him, the food was fine."),
    (
        "The company posted a loss.",
        "Shares rose 3 percent on Tuesday after the announcement.",
    ),
]


def parse_args():
    ap = argparse.ArgumentParser(
        description="Export a Hugging Face *ForSequenceClassification checkpoint to ONNX "
        "(classic torch exporter, as the shared models were)."
    )
    ap.add_argument(
        "model", metavar="MODEL_ID_OR_DIR", help="hub id or local checkpoint folder"
    )
    ap.add_argument(
        "out_dir", metavar="OUT_DIR", help="output folder (created if missing)"
    )
    ap.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="truncation length written into tokenizer.json (default 128)",
    )
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ap.add_argument(
        "--no-check", action="store_true", help="skip the onnxruntime-vs-torch check"
    )
    return ap.parse_args()


def die(msg):
    sys.exit(f"error: {msg}")


def import_or_die():
    try:
        import torch
        import transformers
    except ImportError as e:
        die(
            f"{e}\n  this script needs torch and transformers: pip install torch transformers onnx"
        )
    return torch, transformers


def make_dummy(torch, model, tok):
    """2x16 int64 batch: row 0 full, row 1 with its last 4 positions padded."""
    batch, seq, n_pad = 2, 16, 4
    vocab = model.config.vocab_size
    cls_id = tok.cls_token_id if tok.cls_token_id is not None else 1
    sep_id = tok.sep_token_id if tok.sep_token_id is not None else 2
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    g = torch.Generator().manual_seed(0)
    # Ordinary-token ids from the upper part of the vocabulary (away from the
    # special tokens, which sit at the start in BERT/RoBERTa vocabularies).
    ids = torch.randint(vocab // 4, vocab, (batch, seq), generator=g, dtype=torch.int64)
    mask = torch.ones((batch, seq), dtype=torch.int64)
    ids[:, 0] = cls_id
    ids[0, seq - 1] = sep_id
    ids[1, seq - n_pad - 1] = sep_id
    ids[1, seq - n_pad :] = pad_id
    mask[1, seq - n_pad :] = 0
    token_type = torch.zeros((batch, seq), dtype=torch.int64)
    return ids, mask, token_type


def export_args(model, ids, mask, token_type):
    """Arguments for torch.onnx.export and the input names that go with them.

    BERT-style forward(input_ids, attention_mask, token_type_ids, ...) gets the
    positional tuple, exactly as the shared models were exported. A model with
    another parameter order gets keyword arguments (the classic exporter's
    trailing-dict convention); one without token_type_ids (e.g. DistilBERT)
    is exported without that input (onnx-compress only feeds declared inputs).
    """
    params = list(inspect.signature(model.forward).parameters)
    if params[:3] == INPUT_NAMES:
        return (ids, mask, token_type), list(INPUT_NAMES)
    if "token_type_ids" not in params:
        if params[:2] == INPUT_NAMES[:2]:
            return (ids, mask), INPUT_NAMES[:2]
        return (ids, {"attention_mask": mask}), INPUT_NAMES[:2]
    return (ids, {"attention_mask": mask, "token_type_ids": token_type}), list(
        INPUT_NAMES
    )


def save_tokenizer(tok, path, max_length):
    """Write the fast tokenizer's tokenizer.json with truncation on, padding off."""
    from tokenizers import Tokenizer  # a dependency of transformers

    backend = getattr(tok, "backend_tokenizer", None) or getattr(
        tok, "_tokenizer", None
    )
    if backend is None:
        die(
            "the checkpoint has no fast (Rust) tokenizer, so there is no tokenizer.json to write;"
            " convert it first (e.g. AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    # Copy, so the settings below don't leak into the transformers tokenizer.
    t = Tokenizer.from_str(backend.to_str())
    t.enable_truncation(max_length=max_length)  # longest_first, right, stride 0
    t.no_padding()
    t.save(path)
    return t


def check(torch, model, onnx_path, tokenizer, input_names):
    """Max abs logit difference between torch and onnxruntime on CHECK_*."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        die(
            f"{e}\n  the check needs onnxruntime: pip install onnxruntime (or pass --no-check)"
        )

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    worst = 0.0
    for texts in (CHECK_TEXTS, CHECK_PAIRS):
        encs = tokenizer.encode_batch(texts)
        seq = max(len(e.ids) for e in encs)
        # Pad as onnx-compress does: id 0, mask 0, token type 0.
        arrays = {n: np.zeros((len(encs), seq), dtype=np.int64) for n in INPUT_NAMES}
        for r, e in enumerate(encs):
            n = len(e.ids)
            arrays["input_ids"][r, :n] = e.ids
            arrays["attention_mask"][r, :n] = 1
            arrays["token_type_ids"][r, :n] = e.type_ids
        feed = {n: arrays[n] for n in input_names}
        (ort_logits,) = sess.run(["logits"], feed)
        with torch.no_grad():
            pt_logits = model(
                **{n: torch.from_numpy(a) for n, a in feed.items()}
            ).logits
        diff = float(np.max(np.abs(pt_logits.numpy() - ort_logits)))
        worst = max(worst, diff)
    return worst


def main():
    args = parse_args()
    if args.max_length < 2:
        die("--max-length must be at least 2")

    # Heavy imports only now, so that --help works without torch.
    torch, transformers = import_or_die()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"loading {args.model}")
    try:
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model, attn_implementation="eager"
        )
    except OSError as e:
        die(f"cannot load {args.model!r}: {e}")
    if model.dtype != torch.float32:
        # Recent transformers load in the checkpoint's dtype; export fp32.
        print(f"note: checkpoint dtype {model.dtype}, converting to float32")
    model = model.float().eval()

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, "model.onnx")

    ids, mask, token_type = make_dummy(torch, model, tok)
    ex_args, input_names = export_args(model, ids, mask, token_type)
    dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    dynamic_axes["logits"] = {0: "batch"}

    print(f"exporting to {onnx_path} (opset {args.opset}, inputs {input_names})")
    with torch.no_grad():
        torch.onnx.export(
            model,
            ex_args,
            onnx_path,
            dynamo=False,
            export_params=True,
            opset_version=args.opset,
            do_constant_folding=True,
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
        )

    tokenizer = save_tokenizer(
        tok, os.path.join(args.out_dir, "tokenizer.json"), args.max_length
    )
    model.config.to_json_file(os.path.join(args.out_dir, "config.json"))

    try:
        import onnx

        onnx.checker.check_model(onnx_path, full_check=True)
        print("onnx.checker: ok")
    except ImportError:
        print("note: onnx not installed, skipping onnx.checker (pip install onnx)")

    if not args.no_check:
        diff = check(torch, model, onnx_path, tokenizer, input_names)
        print(f"max abs logit diff torch vs onnxruntime: {diff:.3e}")
        if diff > CHECK_TOLERANCE:
            die(f"export check failed: {diff:.3e} > {CHECK_TOLERANCE:g}")

    summary = {
        "source": args.model,
        "num_labels": model.config.num_labels,
        "id2label": model.config.id2label,
        "inputs": input_names,
        "max_length": args.max_length,
        "opset": args.opset,
    }
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {args.out_dir}/model.onnx, tokenizer.json, config.json")


if __name__ == "__main__":
    main()
