"""Proves that two builds of onnx-compress write the same models: `record` runs every recipe of
configs/sst2 and configs/mrpc and every pass command of README.md and the Makefile chain with one
binary and writes a manifest of digests of what each wrote; `compare` sets two manifests side by
side, part by part (graph, initializers, opset/IR header, metadata with the tool version left out,
file bytes), and exits 1 if any graph, initializers or header differ, or an output (or a failure)
is on one side only. Metadata is compared key by key, in any order; where the history differs,
each entry's changed fields are listed so that every difference can be checked against an
intended change of what the history records.

    python3 bench/same_outputs.py record --bin /work/baseline-bin/onnx-compress --out /work/outputs-baseline
    python3 bench/same_outputs.py record --bin target/release/onnx-compress --out /work/outputs-new
    python3 bench/same_outputs.py compare /work/outputs-baseline /work/outputs-new
    python3 bench/same_outputs.py list                  # the commands, by name
    python3 bench/same_outputs.py record ... --only cli/convert 'sst2/0*'   # names or globs

Commands run from the repository root with SOURCE_DATE_EPOCH=0 (the history time is fixed) and
ORT_DYLIB_PATH (default .ort/lib/libonnxruntime.so.1.32.0); paths given to the tool are the
README's, relative to the root (../shared/...), since calibration paths are written into the
history. Each command's output goes to DIR/logs/<name>.log; a failing command is recorded with its
exit code and the run goes on. `record --only` adds to an existing manifest in DIR.

Needs `pip install onnx` (e.g. python3 -m venv /work/venv-bench && /work/venv-bench/bin/pip install onnx).
"""
import argparse
import fnmatch
import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import onnx

from tool import BIN, ROOT, SHARED

HISTORY_KEY = "onnx_compress.history"
ORT_LIB = os.path.join(ROOT, ".ort", "lib", "libonnxruntime.so.1.32.0")


def rel(path):
    return os.path.relpath(path, ROOT)


SST2 = rel(os.path.join(SHARED, "models", "minilm-l6-sst2", "model.onnx"))
MRPC = rel(os.path.join(SHARED, "models", "minilm-l6-mrpc", "model.onnx"))
SST2_TRAIN = rel(os.path.join(SHARED, "data", "glue", "sst2", "train.tsv"))
MRPC_TRAIN = rel(os.path.join(SHARED, "data", "glue", "mrpc", "train.tsv"))

# The pass commands of README.md and the Makefile chain: (name, args); "{out}" is this command's
# output, "{cli/NAME}" another command's output (run first; `--only` pulls it in).
PASSES = [
    ("cli/prune_heads25", ["prune", "--heads", "0.25", SST2, "{out}"]),
    ("cli/prune_h15_ffn10_random7",
     ["prune", "--heads", "0.15", "--ffn", "0.10", "--strategy", "random", "--seed", "7", SST2, "{out}"]),
    ("cli/prune_heads25_calib", ["prune", "--heads", "0.25", "--calib-data", SST2_TRAIN, SST2, "{out}"]),
    ("cli/prune_macs60_mrpc", ["prune", "--target-macs", "0.6", "--calib-data", MRPC_TRAIN, MRPC, "{out}"]),
    ("cli/lowrank_rmt",
     ["lowrank", "--denoise", "--shrink", "gavish_donoho", "--energy", "0.995", "--k-min", "192",
      "--apply-to", "ffn_only", "--layers", "4,5", SST2, "{out}"]),
    ("cli/lowrank_aware",
     ["lowrank", "--calib-data", SST2_TRAIN, "--target-params", "0.69", "--layers", "1,2,3,4,5", SST2, "{out}"]),
    ("cli/quantize_dynamic", ["quantize", "--mode", "dynamic", SST2, "{out}"]),
    ("cli/quantize_static", ["quantize", "--mode", "static", "--calib-data", SST2_TRAIN, SST2, "{out}"]),
    ("cli/quantize_fp16", ["quantize", "--mode", "fp16", SST2, "{out}"]),
    ("cli/convert", ["convert", SST2, "{out}"]),
    # make chain (CHAIN_TASK=sst2): convert -> prune --target-macs 0.6 -> quantize --mode dynamic
    ("cli/chain_pruned", ["prune", "--target-macs", "0.6", "--calib-data", "data/glue/sst2/train.tsv",
                          "{cli/convert}", "{out}"]),
    ("cli/chain_pruned_int8", ["quantize", "--mode", "dynamic", "{cli/chain_pruned}", "{out}"]),
]


def commands():
    """Every (name, args): the recipes (`run CONFIG --out ... --limit 8`), then the passes."""
    cmds = []
    for task in ("sst2", "mrpc"):
        for cfg in sorted(glob.glob(os.path.join(ROOT, "configs", task, "*.yaml"))):
            stem = os.path.splitext(os.path.basename(cfg))[0]
            cmds.append((f"{task}/{stem}", ["run", rel(cfg), "--out", "{out}", "--limit", "8"]))
    return cmds + PASSES


def deps(args):
    return [a[1:-1] for a in args if a.startswith("{cli/")]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    with open(path, "rb") as f:
        return sha(f.read())


def metadata(model):
    """The metadata_props as [key, value] pairs, history entries without `tool_version`."""
    props = []
    for p in model.metadata_props:
        value = p.value
        if p.key == HISTORY_KEY:
            entries = json.loads(value)
            for e in entries:
                e.pop("tool_version", None)
            value = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        props.append([p.key, value])
    return props


def digest(path):
    """The manifest entry of one written model: file digests and per-part digests."""
    entry = {"file": file_sha(path)}
    if os.path.exists(path + ".data"):
        entry["data_file"] = file_sha(path + ".data")
    model = onnx.load(path, load_external_data=False)
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    graph.ClearField("initializer")
    graph.ClearField("sparse_initializer")
    entry["graph"] = sha(graph.SerializeToString(deterministic=True))
    inits = hashlib.sha256()
    for t in list(model.graph.initializer) + list(model.graph.sparse_initializer):
        inits.update(sha(t.SerializeToString(deterministic=True)).encode())
    entry["initializers"] = inits.hexdigest()
    header = onnx.ModelProto()
    header.CopyFrom(model)
    header.ClearField("graph")
    header.ClearField("metadata_props")
    header.ClearField("producer_version")  # the tool's version, as tool_version in the history
    entry["header"] = sha(header.SerializeToString(deterministic=True))
    props = metadata(model)
    entry["metadata"] = sha(json.dumps(props, ensure_ascii=False).encode())
    entry["metadata_keys"] = {k: sha(v.encode()) for k, v in props}
    entry["history"] = json.loads(dict(props).get(HISTORY_KEY, "[]"))
    entry["counts"] = {"nodes": len(model.graph.node), "initializers": len(model.graph.initializer)}
    entry["ir_opset"] = [model.ir_version, [[o.domain, o.version] for o in model.opset_import]]
    entry["producer"] = [model.producer_name, model.producer_version]
    return entry


def record(a):
    out = os.path.abspath(a.out)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH="0", ORT_DYLIB_PATH=os.path.abspath(a.ort))
    binary = os.path.abspath(a.bin)
    if not os.path.isdir(os.path.join(ROOT, "data", "glue")):
        print("warning: data/glue is missing (`make data/glue`): the calibrated recipes and the chain will fail")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env).stdout.strip()
    cmds = commands()
    if a.only:
        chosen = {n for n, _ in cmds if any(fnmatch.fnmatchcase(n, p) for p in a.only)}
        if not chosen:
            sys.exit(f"--only {' '.join(a.only)}: no such command (see `list`)")
        table = dict(cmds)
        todo = list(chosen)
        while todo:
            for d in deps(table[todo.pop()]):
                if d not in chosen:
                    chosen.add(d)
                    todo.append(d)
        cmds = [(n, c) for n, c in cmds if n in chosen]
    manifest_path = os.path.join(out, "manifest.json")
    manifest = {"outputs": {}}
    if a.only and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("version") != version:
            print(f"note: {manifest_path} was recorded by {manifest.get('version')}, adding {version}")
    manifest.update(bin=binary, version=version, source_date_epoch="0")
    t_all = time.time()
    for i, (name, args) in enumerate(cmds, 1):
        target = os.path.join(out, name + ".onnx")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        for stale in (target, target + ".data"):
            if os.path.exists(stale):
                os.remove(stale)
        argv = [binary] + [target if x == "{out}" else
                           os.path.join(out, x[1:-1] + ".onnx") if x.startswith("{cli/") else x
                           for x in args]
        log = os.path.join(out, "logs", name.replace("/", "-") + ".log")
        print(f"[{i}/{len(cmds)}] {name}: {' '.join(argv[1:])}", flush=True)
        t = time.time()
        with open(log, "w") as f:
            f.write("$ " + " ".join(argv) + "\n")
            f.flush()
            rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        entry = {"argv": argv[1:], "rc": rc, "seconds": round(time.time() - t, 1), "log": os.path.relpath(log, out)}
        if rc == 0 and os.path.exists(target):
            entry.update(digest(target))
        elif rc == 0:
            entry["output"] = "none written"
        manifest["outputs"][name] = entry
        status = "ok" if rc == 0 else f"FAILED rc={rc} (see {log})"
        print(f"    {status}, {entry['seconds']} s", flush=True)
        with open(manifest_path, "w") as f:  # after every command: an interrupted run keeps the rest
            json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"{len(cmds)} commands in {time.time() - t_all:.0f} s; manifest: {manifest_path}")


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "manifest.json")
    with open(path) as f:
        return json.load(f)


PARTS = [("graph", "graph"), ("initializers", "initializers"), ("header", "opset/IR header"),
         ("metadata", "metadata (tool version excluded)"), ("file", "file bytes")]


def cell(ea, eb, part):
    if ea is None or eb is None:
        return "missing"
    if ea["rc"] != 0 or eb["rc"] != 0:
        return f"failed rc={ea['rc']}" if ea["rc"] == eb["rc"] else f"DIFFERENT (rc {ea['rc']} / {eb['rc']})"
    if part == "file" and ea.get("data_file") != eb.get("data_file"):
        return "DIFFERENT (.data)"
    if part == "metadata":
        if ea.get("metadata_keys") != eb.get("metadata_keys"):
            return "DIFFERENT"
        return "same" if ea.get("metadata") == eb.get("metadata") else "same (keys in another order)"
    return "same" if ea.get(part) == eb.get(part) else "DIFFERENT"


def flat(value, prefix=""):
    """A JSON value as {dotted.path: leaf}."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def history_changes(ha, hb):
    """Per history entry: the fields added, removed and changed from A to B."""
    lines = []
    if len(ha) != len(hb):
        lines.append(f"{len(ha)} history entries vs {len(hb)}")
    for i, (a, b) in enumerate(zip(ha, hb)):
        fa, fb = flat(a), flat(b)
        added = sorted(k for k in fb if k not in fa)
        removed = sorted(k for k in fa if k not in fb)
        changed = sorted(k for k in fa if k in fb and fa[k] != fb[k])
        parts = []
        if added:
            parts.append("added " + ", ".join(added))
        if removed:
            parts.append("removed " + ", ".join(removed))
        if changed:
            parts.append("changed " + ", ".join(f"{k} ({fa[k]!r} -> {fb[k]!r})" for k in changed))
        if parts:
            lines.append(f"entry {i} ({b.get('pass', a.get('pass'))}): " + "; ".join(parts))
    return lines


def compare(a):
    ma, mb = load(a.a), load(a.b)
    oa, ob = ma["outputs"], mb["outputs"]
    print(f"A: {a.a} ({ma.get('version')})  \nB: {a.b} ({mb.get('version')})\n")
    print("| output | " + " | ".join(title for _, title in PARTS) + " |")
    print("|---" * (len(PARTS) + 1) + "|")
    bad, notes = [], []
    for name in sorted(set(oa) | set(ob)):
        ea, eb = oa.get(name), ob.get(name)
        cells = [cell(ea, eb, part) for part, _ in PARTS]
        print(f"| {name} | " + " | ".join(cells) + " |")
        if any(c == "missing" or c.startswith("DIFFERENT") for c in cells[:3]):
            bad.append(name)
        if ea and eb and ea.get("metadata_keys") != eb.get("metadata_keys"):
            ka, kb = ea.get("metadata_keys", {}), eb.get("metadata_keys", {})
            keys = [k for k in sorted(set(ka) | set(kb)) if ka.get(k) != kb.get(k)]
            notes.append(f"- {name}: metadata keys that differ: {', '.join(keys)}")
            if HISTORY_KEY in keys:
                notes += [f"  - {line}" for line in history_changes(ea.get("history", []), eb.get("history", []))]
        if ea and eb and ea.get("counts") != eb.get("counts"):
            notes.append(f"- {name}: nodes/initializers {ea.get('counts')} vs {eb.get('counts')}")
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\n{len(set(oa) | set(ob))} outputs; " +
          (f"{len(bad)} differ or are missing: {', '.join(bad)}" if bad else "all graphs, initializers "
           "and headers the same (metadata differences, if any, are listed above)"))
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run every command with one binary, write DIR/manifest.json")
    r.add_argument("--bin", default=BIN, help="the onnx-compress binary (default target/release)")
    r.add_argument("--out", required=True, help="folder for the models, logs/ and manifest.json")
    r.add_argument("--only", nargs="+", metavar="NAME", help="these commands only (names or globs)")
    r.add_argument("--ort", default=ORT_LIB, help="ONNX Runtime library, passed as ORT_DYLIB_PATH")
    c = sub.add_parser("compare", help="compare two manifests (folders or manifest.json files)")
    c.add_argument("a")
    c.add_argument("b")
    sub.add_parser("list", help="print the commands")
    a = p.parse_args()
    if a.cmd == "record":
        record(a)
    elif a.cmd == "compare":
        sys.exit(compare(a))
    else:
        for name, args in commands():
            print(f"{name:32} {' '.join(args)}")


if __name__ == "__main__":
    main()
