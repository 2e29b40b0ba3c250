"""× FP32 per model (median over rounds, range), × the peer and op / before per round (median, range)."""
import json, statistics as st, sys
for T in sys.argv[1:] or ["sst2", "mrpc"]:
    d = json.load(open(f"/work/packed/paired-{T}.json"))
    ms = {m["model"].split("/")[-1]: m for m in d["models"]}
    peer = ms[f"{T}-ort_dynamic.onnx"]["ratios"]
    before = ms[f"{T}.p60.packed.onnx"]["ratios"]
    print(f"{T}: batch {d['batch_size']}, {d['rounds']} rounds, ORT {d['ort_version']}")
    for name, m in ms.items():
        r = m["ratios"]
        vs_peer = [a / b for a, b in zip(r, peer)]
        line = f"  {name:26s} x FP32 {m['ratio_median']:.2f} ({m['ratio_min']:.2f}-{m['ratio_max']:.2f})"
        line += f"  x peer {st.median(vs_peer):.2f} ({min(vs_peer):.2f}-{max(vs_peer):.2f})"
        if name == f"{T}.p60.op.onnx":
            vb = [a / b for a, b in zip(r, before)]
            line += f"  op/before {st.median(vb):.2f} ({min(vb):.2f}-{max(vb):.2f})"
        print(line)
