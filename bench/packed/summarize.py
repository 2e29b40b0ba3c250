import json, statistics as st, sys
for T in ['sst2', 'mrpc']:
    d = json.load(open(f'/work/packed/paired-{T}.json'))
    ms = d['models']
    r = {m['model'].split('/')[-1]: m['ratios'] for m in ms}  # per-round × FP32
    peer = r[f'{T}-ort_dynamic.onnx']
    print(f"== {T}: peer × FP32 median {st.median(peer):.2f}")
    for base in ['base.dyn', 'base', 'p60', 'p50']:
        b, p = r[f'{T}.{base}.blocks.onnx'], r[f'{T}.{base}.packed.onnx']
        pb = [y / x for x, y in zip(b, p)]
        pp = [y / x for x, y in zip(peer, p)]
        print(f"{base:9s} × FP32 blocks {st.median(b):.2f} packed {st.median(p):.2f} ({min(p):.2f}-{max(p):.2f}) | packed/blocks {st.median(pb):.2f} ({min(pb):.2f}-{max(pb):.2f}) | packed/peer {st.median(pp):.2f} ({min(pp):.2f}-{max(pp):.2f})")
