#!/bin/bash
# Device call C: the shared SST-2 model, float16 with only the logits in float32, on CUDA.
exec > >(tee $OUT/real2.log) 2>&1
G=/tmp/g; mkdir -p $G/real; R=$PWD; cd $G || exit 1
python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" $R/.gpu3/sst2.fp16o.onnx.xz real/sst2.fp16o.onnx
cp tokenizer.json real/
export LD_LIBRARY_PATH=$G:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-} ORT_DYLIB_PATH=$G/libonnxruntime.so.1.31.1
for dev in cuda cpu; do
  ./oc eval --task sst2 --data $G/glue --model real/sst2.fp16o.onnx --device $dev -q --json --warmup 3 --measure 20 > /tmp/r.json; echo "rc $?"
  python3 - /tmp/r.json reference.json <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); r=json.load(open(sys.argv[2]))
same=sum(a==b for a,b in zip(d['predictions'],r['predictions']))
print('real sst2 fp16 (outputs)', d['device'],'acc %.4f'%d['metrics']['accuracy'],'ref fp32 %.4f'%r['accuracy'],'same as fp32 %d/%d'%(same,len(r['predictions'])),'%.2f ms/batch'%d['timing']['ms_per_batch'])
PY
done
