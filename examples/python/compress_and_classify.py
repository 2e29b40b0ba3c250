"""Export a Hugging Face classifier to ONNX, compress it with onnx-compress, classify a sentence.

Needs onnx-compress installed with pip (`pip install .` in its checkout: the CLI and
onnxruntime 1.32.0) and `pip install tokenizers`; step 1 also needs
`pip install torch transformers onnx` and the hub (or a local checkpoint folder).

    python examples/python/compress_and_classify.py --checkpoint textattack/bert-base-uncased-SST-2
    python examples/python/compress_and_classify.py --onnx ../shared/models/minilm-l6-sst2/model.onnx

In a notebook, copy CHECKOUT, EXPORT_HF and the functions above `main`, and call them as
`main` does.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

# The onnx-compress checkout, for scripts/export_hf.py (in a notebook: set it by hand).
CHECKOUT = Path(__file__).resolve().parents[2] if "__file__" in globals() else Path("onnx-compress")
EXPORT_HF = CHECKOUT / "scripts" / "export_hf.py"


def onnx_compress():
    """The CLI of this Python environment (also when its bin/ is not on the PATH, as in Jupyter)."""
    beside = Path(sys.executable).parent / "onnx-compress"
    return str(beside) if beside.exists() else shutil.which("onnx-compress") or "onnx-compress"


def export(checkpoint, out_dir):
    """Step 1: model.onnx, tokenizer.json and config.json of a *ForSequenceClassification checkpoint."""
    subprocess.run([sys.executable, str(EXPORT_HF), checkpoint, str(out_dir)], check=True)
    return Path(out_dir) / "model.onnx"


def compress(model, out_dir, calib_data=None, text_column=None):
    """Step 2: optionally prune to 60% of the encoder MACs (calibrated on training texts: a GLUE
    TSV, or any CSV/TSV/JSONL/Parquet file, its text in `text_column` or a usual column name such
    as `text` or `sentence`; a minute or more), then dynamic INT8. Each step writes a model that
    embeds the tokenizer and the label names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if calib_data:
        pruned = out_dir / "model.pruned.onnx"
        columns = ["--text-column", text_column] if text_column else []
        subprocess.run(
            [onnx_compress(), "prune", "--target-macs", "0.6", "--calib-data", str(calib_data), *columns]
            + [str(model), str(pruned)],
            check=True,
        )
        model = pruned
    quantized = out_dir / "model.int8.onnx"
    subprocess.run([onnx_compress(), "quantize", "--mode", "dynamic", str(model), str(quantized)], check=True)
    return quantized


# Tokens per example (pairs: longest first), as `onnx-compress eval` truncates by default.
MAX_LENGTH = 128


def classify(model, text, pair=None, labels=None):
    """Step 3: the label and class probabilities of one sentence (or sentence pair). The label
    names are `labels` where given (as the CLI's --labels), else the ones onnx-compress embedded
    in the model (config.json's id2label), else LABEL_i."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    # onnx-compress embeds the tokenizer in the model; a plain export has tokenizer.json beside it.
    embedded = session.get_modelmeta().custom_metadata_map.get("onnx_compress.tokenizer_json")
    if embedded:
        tokenizer = Tokenizer.from_str(embedded)
    else:
        beside = Path(model).parent / "tokenizer.json"
        if not beside.is_file():
            raise FileNotFoundError(f"{model} embeds no tokenizer and {beside} does not exist: put the export's tokenizer.json there")
        tokenizer = Tokenizer.from_file(str(beside))
    # The tokenizer's own truncation may be shorter than eval's (or absent: a long text would
    # then exceed the model's positions).
    tokenizer.enable_truncation(MAX_LENGTH)
    enc = tokenizer.encode(text, pair)
    values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
    # Feed only the inputs the model declares (DistilBERT-style models have no token_type_ids).
    feed = {i.name: np.array([values[i.name]], dtype=np.int64) for i in session.get_inputs()}
    logits = session.run(None, feed)[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    # The label names onnx-compress embedded (from config.json's id2label), else LABEL_i.
    embedded_labels = session.get_modelmeta().custom_metadata_map.get("onnx_compress.id2label")
    labels = labels or (json.loads(embedded_labels) if embedded_labels else None)
    labels = labels or [f"LABEL_{i}" for i in range(len(probs))]
    return labels[int(probs.argmax())], {l: round(float(p), 4) for l, p in zip(labels, probs)}


def labels_of(model_dir):
    """id2label from the export's config.json, in class order (None without one)."""
    config = Path(model_dir) / "config.json"
    id2label = json.loads(config.read_text()).get("id2label") if config.exists() else None
    return [id2label[k] for k in sorted(id2label, key=int)] if id2label else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="hub id or local checkpoint folder to export (step 1)")
    src.add_argument("--onnx", help="an exported model.onnx instead (step 1 skipped)")
    ap.add_argument("--work", default="models/example", help="folder for the export and the compressed model")
    ap.add_argument("--calib-data", help="training texts (a GLUE TSV, or CSV/TSV/JSONL/Parquet): prune before quantizing")
    ap.add_argument("--text-column", help="the column of --calib-data holding the text (default: a usual name)")
    ap.add_argument("--text", default="a gorgeous, witty, seductive movie.")
    ap.add_argument("--pair", help="second sentence, for pair tasks (MRPC, QQP)")
    args = ap.parse_args()

    try:
        model = Path(args.onnx) if args.onnx else export(args.checkpoint, Path(args.work) / "export")
        compressed = compress(model, args.work, args.calib_data, args.text_column)
        # The label names are the ones the CLI embedded (from config.json beside the input).
        label, probs = classify(compressed, args.text, args.pair)
    except subprocess.CalledProcessError as e:
        # The command printed its error above.
        sys.exit(f"error: {Path(e.cmd[0]).name} {e.cmd[1]} failed (exit status {e.returncode})")
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print(f"{compressed}: {args.text!r} -> {label} {probs}")


if __name__ == "__main__":
    main()
