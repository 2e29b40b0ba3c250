# Prototype (kept as run): the attention core as one ONNX Attention (opset 23) in a packed model, by hand; MiniLM head size 32 assumed.
"""Prototype: the attention core (Reshape/Transpose x3, FusedMatMul, Mul, Add mask, Softmax, MatMul,
Transpose, Reshape) as one ONNX Attention (opset 23) on [B,S,H*d] inputs."""
import sys, numpy as np, onnx
from onnx import helper as h, numpy_helper as nh
src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src); g = m.graph
prod = {o: n for n in g.node for o in n.output}
cons = {}
for n in g.node:
    for i in n.input: cons.setdefault(i, []).append(n)
init = {i.name: i for i in g.initializer}
def const(name):
    if name in init: return nh.to_array(init[name])
    n = prod.get(name)
    if n is not None and n.op_type == 'Constant': return nh.to_array(n.attribute[0].t)
    return None
def through(v, op):  # producer of v if it is op
    n = prod.get(v); return n if n is not None and n.op_type == op else None
remove = set(); new = []; masks = {}
for sm in [n for n in g.node if n.op_type == 'Softmax']:
    add = through(sm.input[0], 'Add'); 
    if add is None: continue
    mul = through(add.input[0], 'Mul'); mask = add.input[1]
    fm = through(mul.input[0] if mul else add.input[0], 'FusedMatMul')
    if fm is None: continue
    scale = float(const(mul.input[1])) if mul else 1.0
    for a in fm.attribute:
        if a.name == 'alpha': scale *= a.f
    (mm1,) = cons[sm.output[0]]; assert mm1.op_type == 'MatMul'
    (tr3,) = cons[mm1.output[0]]; assert tr3.op_type == 'Transpose'
    (rs3,) = cons[tr3.output[0]]; assert rs3.op_type == 'Reshape'
    ins = []
    for v in (fm.input[0], fm.input[1], mm1.input[1]):
        t = through(v, 'Transpose'); r = through(t.input[0], 'Reshape')
        ins.append(r.input[0]); remove |= {t.name, r.name}
        d = None
    # heads: from the reshape's constant head size 32 -> H = width / d; width unknown statically: use -1 trick? get from Concat const
    r = through(through(fm.input[0], 'Transpose').input[0], 'Reshape')
    dsz = 32  # prototype: MiniLM's head size
    # width: from the MatMulIntegerToFloat weight feeding the Q projection (packed rows -> Gather pad)
    gq = prod[ins[1]]; q = prod[gq.input[0]]
    while q.op_type not in ('MatMulIntegerToFloat', 'MatMul'): q = prod[q.input[0]]
    w = const(q.input[1]); heads = w.shape[1] // dsz
    # query length: 1 when the last layer's first-token split feeds Q
    key = mask
    remove |= {fm.name, add.name, sm.name, mm1.name, tr3.name, rs3.name} | ({mul.name} if mul else set())
    new.append((sm.name, h.make_node('Attention', [ins[0], ins[1], ins[2], mask], [rs3.output[0]], name=sm.name + '/Attention',
                                     q_num_heads=heads, kv_num_heads=heads, scale=scale)))
# the mask must be [B,1,Sq,Skv]: expand it per attention to its query length
extra = []
for _, n in new:
    q, mask = n.input[0], n.input[3]
    sq = n.name + '/q_shape'; extra += [h.make_node('Shape', [q], [sq], start=1, end=2), ]
    b = n.name + '/m_shape'; kv = n.name + '/kv_len'
    extra += [h.make_node('Shape', [mask], [b + '0'], start=0, end=2), h.make_node('Shape', [mask], [kv], start=3, end=4),
              h.make_node('Concat', [b + '0', sq, kv], [b], axis=0), h.make_node('Expand', [mask, b], [n.name + '/mask'])]
    n.input[3] = n.name + '/mask'
nodes = []
added = {k: n for k, n in new}
for n in g.node:
    if n.name in remove and n.name not in added: continue
    if n.name in added: nodes += [e for e in extra if e.name == '' and False]
    nodes.append(added[n.name] if n.name in added else n)
# put the mask nodes first after their inputs: simplest, prepend before each attention
out = []
for n in nodes:
    if n.op_type == 'Attention':
        out += [e for e in extra if any(o.startswith(n.name + '/') for o in e.output)]
    out.append(n)
del g.node[:]; g.node.extend(out)
for o in m.opset_import:
    if o.domain in ('', 'ai.onnx'): o.version = 23
m.ir_version = 10
onnx.save(m, dst)
print(len(new), 'attentions rewritten')
