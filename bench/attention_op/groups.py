# Prototype (kept as run): a packed model's attention cores in two length groups per batch.
"""In a packed model (`quantize --unpad`, one ONNX Attention per attention) every attention runs
on the padded [batch, sequence] layout: Q, K and V are spread from the token rows by
Gather(·, pack_padded), and the context is gathered back by Gather(·, pack_rows). Here each batch
is cut in two groups by length (the cut that minimises Σ group size · group length², computed in
the graph from attention_mask), each group padded only to its own longest sequence; each attention
runs once per group and the contexts are gathered back to the token rows.

  python3 bench/attention_op/groups.py IN.onnx OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import helper as h, numpy_helper as nh, TensorProto as T

src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
g = m.graph
prod = {o: n for n in g.node for o in n.output}
cons = {}
for n in g.node:
    for i in n.input:
        cons.setdefault(i, []).append(n)


def c(name, arr):
    g.initializer.append(nh.from_array(np.array(arr, dtype=np.int64), name))
    return name


pro = []  # prologue nodes


def node(op, ins, outs, **kw):
    pro.append(h.make_node(op, ins, outs, name=outs[0], **kw))
    return outs[0]


c("grp_0", [0]); c("grp_1", [1]); c("grp_m1", [-1]); c("grp_s0", 0); c("grp_s1", 1)
c("grp_axes23", [2, 3]); c("grp_zero2", [0, 0]); c("grp_b111", [1, 1, 1])
m64 = node("Cast", ["attention_mask"], ["grp_mask64"], to=T.INT64)
seq = "pack_seq"; batch = "pack_batch"
seq1 = node("Add", [seq, "grp_1"], ["grp_seq1"])
pos1 = node("Range", [node("Squeeze", ["grp_1"], ["grp_one_s"]),
                      node("Squeeze", [seq1], ["grp_seq1_s"]), "grp_s1"], ["grp_pos1"])
ext = node("ReduceMax", [node("Mul", [m64, pos1], ["grp_mpos"]), "grp_1"], ["grp_ext0"], keepdims=0)
ext = node("Max", [ext, "grp_s1"], ["grp_ext"])
srt, order = "grp_sorted", "grp_order"
pro.append(h.make_node("TopK", [ext, batch], [srt, order], largest=0, sorted=1))
# cost of cutting before sorted position k (k = 0: one group): k·sorted[k-1]² + (B-k)·max²
prev = node("Concat", ["grp_0", node("Slice", [srt, "grp_0", "grp_m1"], ["grp_srt_head"])], ["grp_prev"], axis=0)
bs = node("Squeeze", [batch], ["grp_batch_s"])
kv = node("Range", ["grp_s0", bs, "grp_s1"], ["grp_k"])
mx = node("Slice", [srt, "grp_m1", c("grp_big", [2**62])], ["grp_max"])  # [1]
costa = node("Mul", [kv, node("Mul", [prev, prev], ["grp_prev2"])], ["grp_costa"])
costb = node("Mul", [node("Sub", [batch, kv], ["grp_rest"]), node("Mul", [mx, mx], ["grp_max2"])], ["grp_costb"])
kstar = node("ArgMin", [node("Add", [costa, costb], ["grp_cost"])], ["grp_kstar"], keepdims=1)  # [1]
ka = node("Max", [kstar, "grp_1"], ["grp_ka"])  # group A: sorted[0:ka] (never empty)
sa = node("Gather", [srt, node("Sub", [ka, "grp_1"], ["grp_ka1"])], ["grp_sa"])  # [1]
ord_a = node("Slice", [order, "grp_0", ka], ["grp_ord_a"])
ord_b = node("Slice", [order, kstar, batch], ["grp_ord_b"])
idx_a = node("Slice", [node("Gather", ["pack_padded", ord_a], ["grp_pad_a"], axis=0), "grp_0", sa, "grp_1"], ["grp_idx_a"])
idx_b = node("Slice", [node("Gather", ["pack_padded", ord_b], ["grp_pad_b"], axis=0), "grp_0", mx, "grp_1"], ["grp_idx_b"])
# where each sequence's positions start in Concat(flatten(group A), flatten(group B))
rank = node("ScatterElements", [node("ConstantOfShape", [batch], ["grp_zb"], value=nh.from_array(np.array([0], np.int64))),
                                order, kv], ["grp_rank"])
in_a = node("Less", [rank, kstar], ["grp_in_a"])
base_a = node("Mul", [rank, sa], ["grp_base_a"])
base_b = node("Add", [node("Mul", [ka, sa], ["grp_a_len"]),
                      node("Mul", [node("Sub", [rank, kstar], ["grp_rank_b"]), mx], ["grp_off_b"])], ["grp_base_b"])
base = node("Where", [in_a, base_a, base_b], ["grp_base"])
posm = node("Add", [node("Unsqueeze", [base, "grp_1"], ["grp_base_col"]),
                    node("Range", ["grp_s0", node("Squeeze", [seq], ["grp_seq_s"]), "grp_s1"], ["grp_srange"])], ["grp_posm"])
row_pos = node("Gather", [node("Reshape", [posm, "grp_m1"], ["grp_posflat"]), "pack_rows"], ["grp_row_pos"])


def back_to(v, op_names):
    """v's source through the given single-input ops."""
    n = prod.get(v)
    while n is not None and n.op_type in op_names:
        v = n.input[0]; n = prod.get(v)
    return n


done = 0
new_nodes = {}  # attention name -> nodes replacing it
masks = {}
for att in [n for n in g.node if n.op_type == "Attention"]:
    srcs = []
    for v in att.input[:3]:
        n = back_to(v, ("Reshape",))
        srcs.append(n.input[0] if n is not None and n.op_type == "Gather" and n.input[1] == "pack_padded" else None)
    if None in srcs:
        continue
    # output chain to Gather(·, pack_rows)
    out = att.output[0]; chain = []
    while True:
        cs = cons.get(out, [])
        if len(cs) != 1:
            break
        n = cs[0]
        if n.op_type in ("Reshape", "Flatten"):
            chain.append(n); out = n.output[0]; continue
        break
    if len(cs) != 1 or cs[0].op_type != "Gather" or cs[0].input[1] != "pack_rows":
        continue
    final = cs[0]
    mexp = prod[att.input[3]]
    assert mexp.op_type == "Expand"
    msrc = mexp.input[0]
    nm = att.name
    out_nodes = []
    if msrc not in masks:
        full = node("Expand", [msrc, node("Concat", [batch, "grp_b111"], ["grp_mbatch_" + msrc], axis=0)], ["grp_mfull_" + msrc])
        masks[msrc] = {}
        for gname, ordv, s in (("a", ord_a, sa), ("b", ord_b, mx)):
            gm = node("Gather", [full, ordv], [f"grp_m{gname}g_" + msrc], axis=0)
            sl = node("Slice", [gm, "grp_zero2", node("Concat", [s, s], [f"grp_ss{gname}_" + msrc], axis=0), "grp_axes23"],
                      [f"grp_m{gname}_" + msrc])
            shp = node("Concat", ["grp_1", "grp_1", s, s], [f"grp_msh{gname}_" + msrc], axis=0)
            masks[msrc][gname] = node("Expand", [sl, shp], [f"grp_mx{gname}_" + msrc])
    outs = []
    for gname, idx in (("a", idx_a), ("b", idx_b)):
        qkv = []
        for j, sv in enumerate(srcs):
            o = f"{nm}/grp_{gname}_{j}"
            out_nodes.append(h.make_node("Gather", [sv, idx], [o], axis=0)); qkv.append(o)
        o = f"{nm}/grp_{gname}_out"
        a = h.make_node("Attention", qkv + [masks[msrc][gname]], [o], name=f"{nm}/{gname}")
        a.attribute.extend(att.attribute)
        out_nodes.append(a)
        f = f"{nm}/grp_{gname}_flat"
        out_nodes.append(h.make_node("Flatten", [o], [f], axis=2)); outs.append(f)
    cat = f"{nm}/grp_cat"
    out_nodes.append(h.make_node("Concat", outs, [cat], axis=0))
    out_nodes.append(h.make_node("Gather", [cat, row_pos], [final.output[0]], axis=0))
    new_nodes[final.name or final.output[0]] = out_nodes
    done += 1

nodes = []
for n in g.node:
    key = n.name or n.output[0]
    nodes.extend(new_nodes.get(key, [n]))
nodes.extend(pro)
# topological order
have = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
order_, left = [], nodes
while left:
    rest = []
    for n in left:
        (order_ if all(i in have for i in n.input) else rest).append(n)
        if order_ and order_[-1] is n:
            have |= set(n.output)
    if len(rest) == len(left):
        raise SystemExit("cycle")
    left = rest
nodes = order_
# drop what no longer feeds anything
needed = {o.name for o in g.output}
keep = []
for n in reversed(nodes):
    if any(o in needed for o in n.output):
        keep.append(n); needed |= set(n.input)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                raise SystemExit("subgraphs not handled in the prototype")
del g.node[:]
g.node.extend(reversed(keep))
onnx.save(m, dst)
print(f"{done} attentions in two groups; {len(nodes) - len(keep)} nodes dropped", file=sys.stderr)
