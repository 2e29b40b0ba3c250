# Device-side: random-weight BERT classifiers (MiniLM-L6 shape and BERT-base shape), exported like
# scripts/export_hf.py (classic exporter, opset 17, eager attention, dynamic batch and sequence).
import os, sys, time, torch, transformers
out = sys.argv[1]
shapes = {"minilm": (6, 384, 12, 1536), "bertbase": (12, 768, 12, 3072)}
for name, (L, H, A, F) in shapes.items():
    t = time.time()
    torch.manual_seed(17)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=H, num_hidden_layers=L,
                                  num_attention_heads=A, intermediate_size=F, num_labels=2,
                                  attn_implementation="eager")
    m = transformers.BertForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.int64); mask[1, 12:] = 0
    types = torch.zeros(2, 16, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}; axes["logits"] = {0: "batch"}
    path = os.path.join(out, name + ".onnx")
    with torch.no_grad():
        try:
            torch.onnx.export(m, (ids, mask, types), path, input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False)
        except Exception as e:
            print("classic exporter failed:", e, "; trying dynamo", flush=True)
            torch.onnx.export(m, (ids, mask, types), path, input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=18, dynamo=True, external_data=False)
    print(f"exported {path} {os.path.getsize(path)/1e6:.0f} MB in {time.time()-t:.1f} s", flush=True)
