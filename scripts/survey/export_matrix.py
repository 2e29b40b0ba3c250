#!/usr/bin/env python3
"""Export one cell of the export matrix (scripts/survey/run_matrix.sh): a tiny random classifier
of FAMILY (hidden 32, 2 layers, 4 heads, FFN 64, vocabulary 100, 2 labels) with attention ATTN
(sdpa or eager), written by EXPORTER to OUT and checked against torch in ONNX Runtime:

- classic: torch.onnx.export(dynamo=False, opset 17)
- dynamo:  torch.onnx.export(dynamo=True, opset 18), weights in OUT.data
- optimum: Optimum's exporter (optimum.exporters.onnx.main_export) on the model saved to a
           folder beside OUT; OUT is the model.onnx it writes (eager attention)

Prints "EXPORTED max diff D", or "CONFIG-FAIL why" when the installed transformers has no such
attention for that family (exit 2).

Usage: python scripts/survey/export_matrix.py FAMILY ATTN EXPORTER OUT
  FAMILY: bert roberta xlm-roberta distilbert electra electra-equal albert mpnet deberta-v3
          modernbert
Needs: torch, transformers, onnx, onnxruntime (and optimum-onnx for EXPORTER optimum).
"""
import os
import shutil
import sys

import torch
import transformers as T

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import _fixture as fx  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def build(family, attn):
    """The model and how many of input_ids, attention_mask, token_type_ids it takes."""
    c = dict(num_labels=2, initializer_range=0.2, vocab_size=100, attn_implementation=attn)
    pad1 = dict(max_position_embeddings=66, pad_token_id=1, type_vocab_size=1)
    if family == "bert":
        return T.BertForSequenceClassification(T.BertConfig(**SMALL, max_position_embeddings=64, **c)), 3
    if family == "roberta":
        return T.RobertaForSequenceClassification(T.RobertaConfig(**SMALL, **pad1, **c)), 2
    if family == "xlm-roberta":
        return T.XLMRobertaForSequenceClassification(T.XLMRobertaConfig(**SMALL, **pad1, **c)), 2
    if family == "distilbert":
        config = T.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, **c)
        return T.DistilBertForSequenceClassification(config), 2
    if family in ("electra", "electra-equal"):
        size = 16 if family == "electra" else 32
        config = T.ElectraConfig(embedding_size=size, **SMALL, max_position_embeddings=64, **c)
        return T.ElectraForSequenceClassification(config), 3
    if family == "albert":
        config = T.AlbertConfig(embedding_size=16, **SMALL, max_position_embeddings=64, **c)
        return T.AlbertForSequenceClassification(config), 3
    if family == "mpnet":
        config = T.MPNetConfig(**SMALL, max_position_embeddings=66, pad_token_id=1, **c)
        return T.MPNetForSequenceClassification(config), 2
    if family == "deberta-v3":
        config = T.DebertaV2Config(
            **SMALL,
            max_position_embeddings=64,
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            type_vocab_size=0,
            **c,
        )
        return T.DebertaV2ForSequenceClassification(config), 2
    if family == "modernbert":
        config = T.ModernBertConfig(
            **SMALL,
            max_position_embeddings=64,
            layer_types=["full_attention", "sliding_attention"],
            local_attention=8,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            cls_token_id=2,
            sep_token_id=3,
            **c,
        )
        return T.ModernBertForSequenceClassification(config), 2
    raise SystemExit(f"unknown family {family}")


def export_optimum(model, out):
    """Optimum's exporter on `model` saved (with a WordPiece tokenizer) beside `out`."""
    from optimum.exporters.onnx import main_export

    folder = out + ".hf"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab))
    T.BertTokenizerFast(os.path.join(folder, "vocab.txt")).save_pretrained(folder)
    out_dir = out + ".optimum"
    main_export(folder, output=out_dir, task="text-classification", do_validation=True)
    shutil.copy(os.path.join(out_dir, "model.onnx"), out)


def main():
    family, attn, exporter, out = sys.argv[1:5]
    torch.manual_seed(0)
    try:
        model, n = build(family, attn)
    except Exception as e:  # the installed transformers has no such attention for the family
        print("CONFIG-FAIL", e)
        sys.exit(2)
    model = model.eval()
    names = fx.NAMES[:n]
    with torch.no_grad():
        if exporter == "classic":
            fx.export_classic(model, out, torch, names=names)
        elif exporter == "dynamo":
            fx.export_dynamo(model, out, torch, names=names)
        else:
            export_optimum(model, out)
        import onnxruntime as ort

        batch = fx.sample_batch(torch)[:n]
        ref = model(**dict(zip(names, batch))).logits.numpy()
        session = ort.InferenceSession(out)
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), batch)}
        got = session.run(None, feed)[0]
    print("EXPORTED max diff", float(abs(ref - got).max()))


if __name__ == "__main__":
    main()
