#!/bin/bash
# Device call B of the third round: pruned widths rounded to multiples (prune --ffn-multiple-of) on CUDA.
exec > >(tee $OUT/check3.log) 2>&1
G=/tmp/g; mkdir -p $G && cp -r .gpu2/. $G/ && cd $G || exit 1
unxz() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; }
cat cuda.part.00 cuda.part.01 > cuda.xz && unxz cuda.xz libonnxruntime_providers_cuda.so && rm cuda.xz
unxz ort.so.xz libonnxruntime.so.1.31.1; unxz oc.xz oc; chmod +x oc
export LD_LIBRARY_PATH=$G:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=$G/libonnxruntime.so.1.31.1
cp tokenizer.json m/
OC=$G/oc
for n in minilm bertbase; do
  $OC prune --heads 0.25 --ffn 0.4 m/$n.onnx m/$n.p.onnx | tail -1
  for k in 8 64; do $OC prune --heads 0.25 --ffn 0.4 --ffn-multiple-of $k m/$n.onnx m/$n.p$k.onnx | tail -1; done
  for v in "" .p .p64; do $OC quantize --mode fp16 --fp16-float32 outputs m/$n$v.onnx m/$n$v.fp16o.onnx | tail -1; done
  $OC inspect m/$n.p8.onnx | sed -n 1p
done
echo -e "model\tbatch\tround\tms_per_batch\tforward_s\taccuracy" > $OUT/speed3.tsv
for r in 1 2; do for b in 32 128; do
  for v in "" .p .p8 .p64 .fp16o .p.fp16o .p64.fp16o; do for n in bertbase minilm; do
    timeout 60 $OC eval --task sst2 --data $G/glue --model m/$n$v.onnx --device cuda --batch-size $b --warmup 3 --measure 20 --json -q > /tmp/e.json 2>/tmp/e.err || { echo "FAIL $n$v b$b: $(tail -c 600 /tmp/e.err)"; continue; }
    python3 -c "import json,sys; d=json.load(open('/tmp/e.json')); print('\t'.join([sys.argv[1],sys.argv[2],sys.argv[3],'%.3f'%d['timing']['ms_per_batch'],'%.3f'%d['forward_seconds'],'%.4f'%d['metrics']['accuracy']]))" $n$v $b $r | tee -a $OUT/speed3.tsv
  done; done
done; done
