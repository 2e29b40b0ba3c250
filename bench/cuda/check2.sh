#!/bin/bash
# Device call B: assemble ONNX Runtime 1.31.1 (CUDA), make this tool's float16 variants, time every model on CUDA.
exec > >(tee $OUT/check2.log) 2>&1
G=/tmp/g; mkdir -p $G && cp -r .gpu2/. $G/ && cd $G || exit 1
unxz() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; }
cat cuda.part.00 cuda.part.01 > cuda.xz && unxz cuda.xz libonnxruntime_providers_cuda.so && rm cuda.xz
unxz ort.so.xz libonnxruntime.so.1.31.1; unxz oc.xz oc; chmod +x oc; unxz glue/sst2/train.tsv.xz glue/sst2/train.tsv
export LD_LIBRARY_PATH=$G:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=$G/libonnxruntime.so.1.31.1
cp tokenizer.json m/
OC=$G/oc
for n in minilm bertbase; do
  $OC quantize --mode fp16 m/$n.onnx m/$n.fp16.onnx | tail -1
  $OC quantize --mode fp16 --fp16-float32 outputs m/$n.onnx m/$n.fp16o.onnx | tail -1
  $OC prune --heads 0.25 --ffn 0.4 m/$n.onnx m/$n.p.onnx | tail -1
  $OC quantize --mode fp16 --fp16-float32 outputs m/$n.p.onnx m/$n.p.fp16o.onnx | tail -1
  $OC quantize --mode fp16 m/$n.ortopt.onnx m/$n.ortopt.fp16.onnx | tail -1
done
echo -e "model\tbatch\tround\tms_per_batch\tforward_s\taccuracy" > $OUT/speed.tsv
for b in 32 128; do for r in 1 2 3; do
  for v in "" .ortopt .fp16 .fp16o .ortfp16 .ortopt16 .ortopt.fp16 .p .p.fp16o; do for n in minilm bertbase; do
    [ $b = 128 ] && [ $r = 3 ] && continue
    timeout 60 $OC eval --task sst2 --data $G/glue --model m/$n$v.onnx --device cuda --batch-size $b --warmup 3 --measure 20 --json -q > /tmp/e.json 2>/tmp/e.err || { echo "FAIL $n$v b$b: $(tail -c 600 /tmp/e.err)"; continue; }
    python3 -c "import json,sys; d=json.load(open('/tmp/e.json')); print('\t'.join([sys.argv[1],sys.argv[2],sys.argv[3],'%.3f'%d['timing']['ms_per_batch'],'%.3f'%d['forward_seconds'],'%.4f'%d['metrics']['accuracy']]))" $n$v $b $r | tee -a $OUT/speed.tsv
  done; done
done; done
# agreement of every float16 model with its float32 model on CUDA (predictions)
for n in minilm bertbase; do for v in "" .fp16 .fp16o .ortfp16 .ortopt16; do
  $OC eval --task sst2 --data $G/glue --model m/$n$v.onnx --device cuda --json -q --warmup 0 --measure 1 > $G/res.$n$v.json
done; python3 - $G $n <<'PY'
import json,sys
g,n=sys.argv[1:]; base=json.load(open(f"{g}/res.{n}.json"))['predictions']
for v in [".fp16",".fp16o",".ortfp16",".ortopt16"]:
    p=json.load(open(f"{g}/res.{n}{v}.json"))['predictions']; print(n+v, "same predictions as float32 on CUDA: %d/%d"%(sum(a==b for a,b in zip(p,base)),len(base)))
PY
done
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv
