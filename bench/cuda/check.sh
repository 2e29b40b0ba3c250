#!/bin/bash
# Device call 2 of the first round (after the first part of export.py's call): assemble the CUDA build of ONNX Runtime 1.31.1, then the CUDA checks on random-weight models.
exec > >(tee $OUT/check.log) 2>&1
G=/tmp/g; R=$G/res; mkdir -p $G $R
cp -r .gpu2/. $G/ && cd $G || exit 1
unxz() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; }
cat cuda.part.00 cuda.part.01 > cuda.xz && unxz cuda.xz libonnxruntime_providers_cuda.so && rm cuda.xz
unxz ort.so.xz libonnxruntime.so.1.31.1; unxz oc.xz oc; chmod +x oc; unxz glue/sst2/train.tsv.xz glue/sst2/train.tsv
ls -la $G
LIBS=$(find /opt /usr/local /usr/lib -xdev \( -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' -o -name 'libcurand.so.10' -o -name 'libcudnn.so.9' -o -name 'libcublas.so.13' -o -name 'libcufft.so.12' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$G:$LIBS:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=$G/libonnxruntime.so.1.31.1
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd libonnxruntime_providers_cuda.so | grep -i "not found\|cublas\|cudart\|curand"
cp tokenizer.json m/
OC=$G/oc; D="--task sst2 --data $G/glue"
ev() { # name model device [extra]
  local n=$1 m=$2 dev=$3; shift 3
  echo "== eval $n $dev"; timeout 120 $OC eval $D --model $m --device $dev -q --json --warmup 5 --measure 23 "$@" > $R/$n.$dev.json; echo "rc $?"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d['device'], 'acc %.4f'%d['metrics']['accuracy'], '%.2f ms/batch'%d['timing']['ms_per_batch'], 'forward %.3f s'%d['forward_seconds'])" $R/$n.$dev.json $n
}
# 1. the same model on CPU and on CUDA
ev minilm m/minilm.onnx cpu
ev minilm m/minilm.onnx cuda
echo "== no CUDA libraries in reach: must be an error, not a CPU run"
env LD_LIBRARY_PATH=$G timeout 60 $OC eval $D --model m/minilm.onnx --device cuda -q --limit 64; echo "rc $? (expected non-zero)"
# 2. the passes' outputs on CUDA
timeout 60 $OC quantize --mode fp16 m/minilm.onnx m/minilm.fp16.onnx | tail -2
timeout 120 $OC quantize --mode static --task sst2 --calib-data glue/sst2/train.tsv m/minilm.onnx m/minilm.static.onnx | tail -2
timeout 120 $OC quantize --mode static --static-form ort --task sst2 --calib-data glue/sst2/train.tsv m/minilm.onnx m/minilm.sort.onnx | tail -2
timeout 60 $OC quantize --mode dynamic m/minilm.onnx m/minilm.dyn.onnx | tail -2
timeout 60 $OC prune --heads 0.25 --ffn 0.4 m/minilm.onnx m/minilm.p.onnx | tail -2
timeout 60 $OC quantize --mode fp16 m/minilm.p.onnx m/minilm.p.fp16.onnx | tail -2
timeout 60 $OC quantize --mode fp16 m/bertbase.onnx m/bertbase.fp16.onnx | tail -2
timeout 60 $OC prune --heads 0.25 --ffn 0.4 m/bertbase.onnx m/bertbase.p.onnx | tail -2
timeout 60 $OC quantize --mode fp16 m/bertbase.p.onnx m/bertbase.p.fp16.onnx | tail -2
for x in fp16 static sort dyn p p.fp16; do ev minilm.$x m/minilm.$x.onnx cuda; done
ev minilm.fp16 m/minilm.fp16.onnx cpu
# 3. speed on CUDA, two rounds alternating (ratios within a round)
for r in 1 2; do
  for x in minilm minilm.fp16 minilm.p.fp16 bertbase bertbase.fp16 bertbase.p.fp16; do ev $x.r$r m/$x.onnx cuda; done
done
ev bertbase m/bertbase.onnx cpu
# 4. auto on CUDA (random weights: the path, not the accuracy)
timeout 240 $OC auto m/minilm.onnx m/auto/minilm.auto.onnx --task sst2 --calib-data glue/sst2/train.tsv --data glue --device cuda --prune 0.6 --lowrank none --max-drop 5 --calib-samples 128 --selection 512 --time-budget 3m 2>&1 | tail -40; echo "auto rc ${PIPESTATUS[0]}"
ls -la m m/auto
tar czf $OUT/res.tgz -C $G res m/auto 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv
