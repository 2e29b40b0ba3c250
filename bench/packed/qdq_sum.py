#!/usr/bin/env python3
"""Packed QDQ: the bias as Sum (bench/RESULTS.md).

  python3 bench/packed/qdq_sum.py SRC.onnx DST.onnx sum   # each Add reading a QDQ MatMul -> Sum (the prototype)
  python3 bench/packed/qdq_sum.py SRC.onnx DST.onnx add   # each such Sum -> Add (the graph before qdq::bias_sums)

ONNX Runtime's MatMulAddFusion turns a 2-D MatMul and the Add after it into a float Gemm before its
QDQ fusion sees the MatMul; a Sum of the same inputs is the same addition and is not matched.
"""
import sys

import onnx

src, dst, to = sys.argv[1], sys.argv[2], sys.argv[3]
frm = {"sum": "Add", "add": "Sum"}[to]
m = onnx.load(src)
g = m.graph
prod = {o: n for n in g.node for o in n.output}


def qdq_matmul(v):
    p = prod.get(v)
    return p is not None and p.op_type == "MatMul" and p.input[1] in prod and prod[p.input[1]].op_type == "DequantizeLinear"


k = 0
for n in g.node:
    if n.op_type == frm and any(qdq_matmul(i) for i in n.input):
        n.op_type = "Sum" if to == "sum" else "Add"
        k += 1
print(f"{k} {frm} -> {'Sum' if to == 'sum' else 'Add'}")
onnx.save(m, dst)
