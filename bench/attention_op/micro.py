# One-node timing of the attention core: the exporters chain, contrib MultiHeadAttention, ONNX Attention opset 23 (mask [B,1,S,S]) and opset 24 (nonpad_kv_seqlen). Args: batch seq heads head_size.
import numpy as np, onnx, onnxruntime as ort, time, sys
from onnx import helper as h, TensorProto as T, numpy_helper as nh
B,S,H,D = [int(x) for x in sys.argv[1:5]] if len(sys.argv)>4 else (32,64,8,32)
HD=H*D
def inputs():
    return [h.make_tensor_value_info(n, T.FLOAT, ['B','S',HD]) for n in 'qkv']
def current():
    nodes=[]; inits=[nh.from_array(np.array([0,0,H,D],np.int64),'shp'), nh.from_array(np.array([0,0,HD],np.int64),'oshp')]
    for n in 'qkv':
        nodes.append(h.make_node('Reshape',[n,'shp'],[n+'4']))
        nodes.append(h.make_node('Transpose',[n+'4'],[n+'t'],perm=[0,2,1,3]))
    nodes.append(h.make_node('FusedMatMul',['qt','kt'],['s'],domain='com.microsoft',transB=1,alpha=1/np.sqrt(D)))
    nodes.append(h.make_node('Add',['s','mask'],['sm']))
    nodes.append(h.make_node('Softmax',['sm'],['p'],axis=-1))
    nodes.append(h.make_node('MatMul',['p','vt'],['c']))
    nodes.append(h.make_node('Transpose',['c'],['ct'],perm=[0,2,1,3]))
    nodes.append(h.make_node('Reshape',['ct','oshp'],['out']))
    g=h.make_graph(nodes,'cur',inputs()+[h.make_tensor_value_info('mask',T.FLOAT,['B',1,1,'S'])],[h.make_tensor_value_info('out',T.FLOAT,None)],inits)
    return h.make_model(g,opset_imports=[h.make_opsetid('',17),h.make_opsetid('com.microsoft',1)])
def mha():
    n=h.make_node('MultiHeadAttention',['q','k','v','','kpm'],['out'],domain='com.microsoft',num_heads=H,scale=float(1/np.sqrt(D)))
    g=h.make_graph([n],'mha',inputs()+[h.make_tensor_value_info('kpm',T.INT32,['B','S'])],[h.make_tensor_value_info('out',T.FLOAT,None)])
    return h.make_model(g,opset_imports=[h.make_opsetid('',17),h.make_opsetid('com.microsoft',1)])
def std_attn():
    n=h.make_node('Attention',['q','k','v','bmask'],['out'],q_num_heads=H,kv_num_heads=H,scale=float(1/np.sqrt(D)))
    g=h.make_graph([n],'att',inputs()+[h.make_tensor_value_info('bmask',T.BOOL,['B',1,'S','S'])],[h.make_tensor_value_info('out',T.FLOAT,None)])
    return h.make_model(g,opset_imports=[h.make_opsetid('',23)], ir_version=10)
def att24():
    n=h.make_node('Attention',['q','k','v','','','','nkv'],['out'],q_num_heads=H,kv_num_heads=H,scale=float(1/np.sqrt(D)))
    g=h.make_graph([n],'att',inputs()+[h.make_tensor_value_info('nkv',T.INT64,['B'])],[h.make_tensor_value_info('out',T.FLOAT,None)])
    return h.make_model(g,opset_imports=[h.make_opsetid('',24)], ir_version=11)
rng=np.random.default_rng(0)
q,k,v=[rng.standard_normal((B,S,HD)).astype(np.float32) for _ in range(3)]
lens=rng.integers(S//4,S+1,B); lens[0]=S
m=(np.arange(S)[None,:]<lens[:,None])
so=ort.SessionOptions(); so.intra_op_num_threads=2; so.inter_op_num_threads=1
sess={}
sess['cur']=(ort.InferenceSession(current().SerializeToString(),so,providers=['CPUExecutionProvider']),dict(q=q,k=k,v=v,mask=np.where(m,0,-1e4).astype(np.float32)[:,None,None,:]))
sess['mha']=(ort.InferenceSession(mha().SerializeToString(),so,providers=['CPUExecutionProvider']),dict(q=q,k=k,v=v,kpm=m.astype(np.int32)))
try:
    sess['att23']=(ort.InferenceSession(std_attn().SerializeToString(),so,providers=['CPUExecutionProvider']),dict(q=q,k=k,v=v,bmask=np.ascontiguousarray(np.broadcast_to(m[:,None,None,:],(B,1,S,S)))))
except Exception as e: print('att23 fails',str(e)[:200])
try:
    sess['att24']=(ort.InferenceSession(att24().SerializeToString(),so,providers=['CPUExecutionProvider']),dict(q=q,k=k,v=v,nkv=lens.astype(np.int64)))
    sess['att24'][0].run(None,sess['att24'][1])
except Exception as e: print('att24 fails',str(e)[:300]); sess.pop('att24',None)
outs={k_:s.run(None,f)[0] for k_,(s,f) in sess.items()}
for k_ in outs: 
    d=np.abs(outs[k_]-outs['cur']); print(k_, 'maxdiff valid rows', d[m].max())
res={k_:[] for k_ in sess}
for r in range(7):
    for k_,(s,f) in sess.items():
        t=time.perf_counter()
        for _ in range(30): s.run(None,f)
        res[k_].append((time.perf_counter()-t)/30*1e3)
for k_ in res: print(k_, 'ms', np.median(res[k_]).round(3))
# numpy reference
qh=q.reshape(B,S,H,D).transpose(0,2,1,3); kh=k.reshape(B,S,H,D).transpose(0,2,1,3); vh=v.reshape(B,S,H,D).transpose(0,2,1,3)
sc=qh@kh.transpose(0,1,3,2)/np.sqrt(D); sc=np.where(m[:,None,None,:],sc,-np.inf); p=np.exp(sc-sc.max(-1,keepdims=True)); p/=p.sum(-1,keepdims=True)
ref=(p@vh).transpose(0,2,1,3).reshape(B,S,HD)
for k_ in outs: print(k_, 'vs numpy', np.abs(outs[k_]-ref)[m].max(), 'norm', np.abs(outs[k_]).mean())
