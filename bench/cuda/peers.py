# Device-side: ONNX Runtime's own float16 paths (peers), from onnxruntime.transformers (pure Python):
#   NAME.ortfp16.onnx    convert_float_to_float16(keep_io_types=True) of the exported graph
#   NAME.ortopt.onnx     optimize_model(model_type=bert, use_gpu=True, opt_level=0): fused Attention etc., float32
#   NAME.ortopt16.onnx   the same, then convert_float_to_float16(keep_io_types=True) (Optimum's -O4 path)
import sys, onnx
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.float16 import convert_float_to_float16
d = sys.argv[1]
for name, hidden in [("minilm", 384), ("bertbase", 768)]:
    src = f"{d}/{name}.onnx"
    onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=True), f"{d}/{name}.ortfp16.onnx")
    for fp16 in (False, True):
        m = optimizer.optimize_model(src, model_type="bert", num_heads=12, hidden_size=hidden, opt_level=0, use_gpu=True)
        if fp16:
            m.convert_float_to_float16(keep_io_types=True)
        m.save_model_to_file(f"{d}/{name}.ortopt{'16' if fp16 else ''}.onnx")
        print(name, "fp16" if fp16 else "fp32", m.get_fused_operator_statistics(), flush=True)
