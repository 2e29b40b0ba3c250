#!/bin/bash
# Device call 3: the shared SST-2 model in float16 (onnx-compress quantize --mode fp16, made off the device) on CUDA.
exec > >(tee $OUT/real.log) 2>&1
G=/tmp/g; R=$G/res; mkdir -p $G/real $R; cd $G || exit 1
python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" $OLDPWD/.gpu3/sst2.fp16.onnx.xz real/sst2.fp16.onnx
cp tokenizer.json real/
LIBS=$(find /opt /usr/local /usr/lib -xdev \( -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' -o -name 'libcurand.so.10' -o -name 'libcudnn.so.9' -o -name 'libcublas.so.13' -o -name 'libcufft.so.12' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$G:$LIBS:${LD_LIBRARY_PATH:-} ORT_DYLIB_PATH=$G/libonnxruntime.so.1.31.1
for dev in cuda cpu cuda; do
  timeout 120 ./oc eval --task sst2 --data $G/glue --model real/sst2.fp16.onnx --device $dev -q --json --warmup 5 --measure 23 > $R/real.fp16.$dev.json; echo "rc $?"
  python3 - $R/real.fp16.$dev.json reference.json <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); r=json.load(open(sys.argv[2]))
same=sum(a==b for a,b in zip(d['predictions'],r['predictions']))
print(d['device'],'acc %.4f'%d['metrics']['accuracy'],'ref fp32 %.4f'%r['accuracy'],'same as fp32 %d/%d'%(same,len(r['predictions'])),'%.2f ms/batch'%d['timing']['ms_per_batch'])
PY
done
tar czf $OUT/res3.tgz -C $G res
