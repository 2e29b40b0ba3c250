#!/usr/bin/env python3
"""Writes the two big random-weight models of issue 17 item 5 (nothing is downloaded):

  OUT/bert-base/model.onnx   BertForSequenceClassification, 12 layers x 768, 12 heads, FFN 3072,
                             vocabulary 30522 (~438 MB, one file); tokenizer.json copied from the
                             shared MiniLM model (the same BERT uncased vocabulary)
  OUT/xlmr-large/model.onnx  XLMRobertaForSequenceClassification shaped like xlm-roberta-large:
                             24 layers x 1024, 16 heads, FFN 4096, vocabulary 250002 (~2.24 GB:
                             over protobuf's 2 GiB, so the weights go to external data)
  OUT/mpnet-base/model.onnx  MPNetForSequenceClassification shaped like mpnet-base (12 layers x
                             768, 12 heads, FFN 3072, vocabulary 30527, relative position bias;
                             written with --only mpnet-base, not by default)
  OUT/modernbert-base/model.onnx  ModernBertForSequenceClassification shaped like ModernBERT-base
                             (22 layers x 768, 12 heads, gated FFN 1152, vocabulary 50368, rotary
                             positions, local attention in two layers of three; SDPA attention,
                             transformers' default; --only modernbert-base, not by default)
  OUT/deberta-v3-base/model.onnx  DebertaV2ForSequenceClassification shaped like deberta-v3-base
                             (12 layers x 768, 12 heads, FFN 3072, vocabulary 128100, relative
                             attention c2p + p2c over 256 position buckets, shared keys; --only
                             deberta-v3-base, not by default)

Weights are seeded random (transformers' own initialisation), so accuracy means nothing: these
models are for pass times, memory and speed. Exported like scripts/export_hf.py (torch's classic
exporter, opset 17, eager attention, dynamic batch and sequence).

  /path/to/venv/bin/python bench/big_export.py OUT [--only NAME]
Needs torch, transformers and onnx.
"""
import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_TOKENIZER = os.path.join(HERE, "..", "..", "shared", "models", "minilm-l6-sst2", "tokenizer.json")


def build(name, torch, transformers):
    torch.manual_seed(17)
    if name == "bert-base":
        cfg = transformers.BertConfig(
            vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, num_labels=2, attn_implementation="eager",
        )
        return transformers.BertForSequenceClassification(cfg), ["input_ids", "attention_mask", "token_type_ids"]
    if name == "mpnet-base":
        cfg = transformers.MPNetConfig(
            vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, num_labels=2, attn_implementation="eager",
        )
        return transformers.MPNetForSequenceClassification(cfg), ["input_ids", "attention_mask"]
    if name == "modernbert-base":
        cfg = transformers.ModernBertConfig(
            vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
            intermediate_size=1152, num_labels=2, attn_implementation="sdpa",
        )
        return transformers.ModernBertForSequenceClassification(cfg), ["input_ids", "attention_mask"]
    if name == "deberta-v3-base":
        cfg = transformers.DebertaV2Config(
            vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, num_labels=2, relative_attention=True, pos_att_type=["p2c", "c2p"],
            position_buckets=256, max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
            position_biased_input=False, type_vocab_size=0, max_position_embeddings=512,
        )
        return transformers.DebertaV2ForSequenceClassification(cfg), ["input_ids", "attention_mask"]
    cfg = transformers.XLMRobertaConfig(
        vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
        num_labels=2, attn_implementation="eager",
    )
    return transformers.XLMRobertaForSequenceClassification(cfg), ["input_ids", "attention_mask"]


def export(name, out_root, torch, transformers):
    model, names = build(name, torch, transformers)
    model.eval()
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 12:] = 0
    types = torch.zeros(2, 16, dtype=torch.int64)
    args = (ids, mask, types)[: len(names)]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model, args, path, input_names=names, output_names=["logits"], dynamic_axes=axes,
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    shutil.copy(SHARED_TOKENIZER, os.path.join(out, "tokenizer.json"))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f != "tokenizer.json")
    print(f"wrote {out}: {len(os.listdir(out))} files, {size / 1e6:.0f} MB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--only", choices=["bert-base", "xlmr-large", "mpnet-base", "modernbert-base", "deberta-v3-base"])
    a = ap.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit(f"error: {e}; run with a Python that has torch and transformers")
    for name in ["bert-base", "xlmr-large", "mpnet-base", "modernbert-base", "deberta-v3-base"]:
        if a.only == name or (a.only is None and name in ("bert-base", "xlmr-large")):
            export(name, a.out, torch, transformers)


if __name__ == "__main__":
    main()
