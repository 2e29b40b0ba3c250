#!/bin/bash
# Device call 4 of the first round (after check.sh): no CUDA run may fall back to the CPU, then
# float32 against float16 at batch 32 and 128 (two rounds).
cd /tmp/g; export LD_LIBRARY_PATH=/tmp/g:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib ORT_DYLIB_PATH=/tmp/g/libonnxruntime.so.1.31.1
D="--task sst2 --data /tmp/g/glue -q --limit 256 --warmup 2 --measure 6"
echo "== no GPU visible"; CUDA_VISIBLE_DEVICES= ./oc eval $D --model m/minilm.onnx --device cuda; echo "rc $?"
mv libonnxruntime_providers_cuda.so x.so; echo "== provider library missing"; ./oc eval $D --model m/minilm.onnx --device cuda; echo "rc $?"; mv x.so libonnxruntime_providers_cuda.so
for b in 32 128; do for r in 1 2; do for x in bertbase bertbase.fp16 minilm minilm.fp16; do
  echo "$x b$b r$r $(./oc eval --task sst2 --data /tmp/g/glue --model m/$x.onnx --device cuda --batch-size $b --warmup 2 --measure 5 --json -q | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f ms/batch"%d["timing"]["ms_per_batch"], "fwd %.3f"%d["forward_seconds"])')"
done; done; done
