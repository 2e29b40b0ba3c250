"""Prototype: run the residual stream of a static-INT8 (ORT form, first-token split) BERT graph on
packed real tokens [T, C] (first tokens first), padding only inside attention. Specialised to the
classic BERT export as onnx-compress writes it; for measuring, not for the tool."""
import sys, onnx, numpy as np
from onnx import helper as h, numpy_helper as nh, TensorProto
src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
g = m.graph
nodes = list(g.node)
prod = {o: n for n in nodes for o in n.output}
cons = {}
for n in nodes:
    for i in n.input:
        cons.setdefault(i, []).append(n)
inits = {i.name: i for i in g.initializer}
def const(name, arr):
    t = nh.from_array(np.asarray(arr), name); g.initializer.append(t); return name
E = '/bert/embeddings/LayerNorm/LayerNormalization_output_0'
L = 6
C = 384
MAX = np.iinfo(np.int64).max
const('pk_0', np.array([0], np.int64)); const('pk_1', np.array([1], np.int64)); const('pk_max', np.array([MAX], np.int64))
const('pk_s0', np.array(0, np.int64)); const('pk_s1', np.array(1, np.int64))
const('pk_m1C', np.array([-1, C], np.int64))
new = []
def N(op, ins, outs, name, **kw):
    new.append(h.make_node(op, ins, outs, name=name, **kw)); return outs[0]
# index tensors
N('Shape', ['attention_mask'], ['pk_shape'], 'pk/Shape')
N('Gather', ['pk_shape', 'pk_s0'], ['pk_B'], 'pk/B', axis=0)       # scalar
N('Gather', ['pk_shape', 'pk_s1'], ['pk_S'], 'pk/S', axis=0)
N('Unsqueeze', ['pk_B', 'pk_0'], ['pk_B1'], 'pk/B1')
N('Slice', ['attention_mask', 'pk_1', 'pk_max', 'pk_1'], ['pk_rest'], 'pk/Rest')
N('NonZero', ['pk_rest'], ['pk_nz'], 'pk/NonZero')
N('Gather', ['pk_nz', 'pk_s0'], ['pk_b'], 'pk/b', axis=0)
N('Gather', ['pk_nz', 'pk_s1'], ['pk_s'], 'pk/s', axis=0)
N('Mul', ['pk_b', 'pk_S'], ['pk_bS'], 'pk/bS')
N('Add', ['pk_bS', 'pk_s'], ['pk_bSs'], 'pk/bSs')
N('Add', ['pk_bSs', 'pk_s1'], ['pk_other'], 'pk/other')
N('Range', ['pk_s0', 'pk_B', 'pk_s1'], ['pk_rB'], 'pk/rB')
N('Mul', ['pk_rB', 'pk_S'], ['pk_first'], 'pk/first')
N('Concat', ['pk_first', 'pk_other'], ['pk_idx'], 'pk/idx', axis=0)
N('Shape', ['pk_idx'], ['pk_T1'], 'pk/T1')
N('Squeeze', ['pk_T1'], ['pk_T'], 'pk/T')
N('Range', ['pk_s0', 'pk_T', 'pk_s1'], ['pk_rT'], 'pk/rT')
N('Mul', ['pk_B', 'pk_S'], ['pk_BS'], 'pk/BS')
N('Unsqueeze', ['pk_BS', 'pk_0'], ['pk_BS1'], 'pk/BS1')
N('ConstantOfShape', ['pk_BS1'], ['pk_zeros'], 'pk/zeros', value=nh.from_array(np.array([0], np.int64)))
N('ScatterElements', ['pk_zeros', 'pk_idx', 'pk_rT'], ['pk_padflat'], 'pk/padflat', axis=0)
N('Reshape', ['pk_padflat', 'pk_shape'], ['pk_pad'], 'pk/pad')
# packed embeddings
N('Reshape', [E, 'pk_m1C'], ['pk_E2'], 'pk/E2')
N('Gather', ['pk_E2', 'pk_idx'], ['pk_X0'], 'pk/X0', axis=0)
head = new; new = []
def replace_input(n, old, newv):
    for k, v in enumerate(n.input):
        if v == old: n.input[k] = newv
rename = {}
for l in range(L):
    x = E if l == 0 else f'/bert/encoder/layer.{l-1}/output/LayerNorm/LayerNormalization_output_0'
    xp = 'pk_X0' if l == 0 else x  # for l>0 the LN output itself is packed now
    p = f'/bert/encoder/layer.{l}/'
    for n in cons.get(x, []):
        if n.op_type == 'Shape':
            replace_input(n, x, E)   # B and S from the padded embeddings
        elif l == 0 and (n.name.startswith(p) or n.op_type == 'QuantizeLinear' or n.name.startswith('/first_token_query')):
            replace_input(n, x, xp)
    # Q/K/V outputs padded
    for r in ['query', 'key', 'value']:
        out = f'{p}attention/self/{r}/Add_output_0'
        if out not in prod: continue
        q = prod[out]
        if l == L - 1 and r == 'query':
            continue  # first-token query: [B,1,...] already
        pad = out + '_padded'
        for c in cons[out]: replace_input(c, out, pad)
        after = q
        head_after = h.make_node('Gather', [out, 'pk_pad'], [pad], name=f'{p}pk/{r}_pad', axis=0)
        new.append(head_after)
    # context back to packed
    ctx = f'{p}attention/self/Reshape_3_output_0'
    if l < L - 1:
        flat = ctx + '_flat'; pk = ctx + '_packed'
        for c in cons[ctx]: replace_input(c, ctx, pk)
        new.append(h.make_node('Reshape', [ctx, 'pk_ctxshape_' + str(l)], [flat], name=f'{p}pk/ctx_flat'))
        new.append(h.make_node('Gather', [flat, 'pk_idx'], [pk], name=f'{p}pk/ctx_pack', axis=0))
    # FFN split slices: rows instead of sequence
    for n in nodes:
        if n.name == f'/first_token_split/layer.{l}/SliceFirst' and l < L - 1:
            n.input[1:] = ['pk_0', 'pk_B1', 'pk_0']
        if n.name == f'/first_token_split/layer.{l}/SliceAfterFirst' and l < L - 1:
            n.input[1:] = ['pk_B1', 'pk_max', 'pk_0']
        if n.name == f'/first_token_split/layer.{l}/Concat' and l < L - 1:
            for a in n.attribute:
                if a.name == 'axis': a.i = 0
# context widths
for l in range(L - 1):
    p = f'/bert/encoder/layer.{l}/'
    w = [n for n in nodes if n.name == f'{p}attention/output/dense/MatMul'][0].input[1]
    width = nh.to_array(inits[w]).shape[0]
    const('pk_ctxshape_' + str(l), np.array([-1, width], np.int64))
# layer 5's first-token query slice: rows 0:B of the packed layer-4 output, then [B,1,C]
for n in nodes:
    if n.name == '/first_token_query/Slice_0':
        out = n.output[0]
        n.input[1:] = ['pk_0', 'pk_B1', 'pk_0']
        n.output[0] = out + '_rows'
        new.append(h.make_node('Unsqueeze', [out + '_rows', 'pk_1'], [out], name='/first_token_query/pk_unsq'))
# K/V of the last layer read the packed layer-4 output (Q/K/V quantized input is packed): padded by the Gathers above
# topological order: rebuild
allnodes = nodes + head + new
avail = set(i.name for i in g.input) | set(inits) | set(i.name for i in g.initializer) | {''}
order = []; pending = list(allnodes)
while pending:
    rest = []
    for n in pending:
        if all(i in avail for i in n.input):
            order.append(n); avail.update(n.output)
        else:
            rest.append(n)
    if len(rest) == len(pending):
        raise SystemExit('cycle or missing: ' + str([(n.name, [i for i in n.input if i not in avail]) for n in rest[:5]]))
    pending = rest
# dead code elimination
need = set(o.name for o in g.output); keep = []
for n in reversed(order):
    if any(o in need for o in n.output):
        keep.append(n); need.update(n.input)
del g.node[:]
g.node.extend(reversed(keep))
del g.value_info[:]
onnx.save(m, dst)
print('wrote', dst, len(g.node), 'nodes')
