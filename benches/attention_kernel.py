"""ONNX Runtime's GroupQueryAttention alone (one node, SmolLM2-135M shapes, past and present
sharing one buffer through IO binding): median CPU time of one call (the calling thread's, so
that time spent waiting for a core on a shared machine does not count). The A side of the kernel A/B;
the B side is `cargo test --release --lib engine::attention::kernel::timing -- --ignored --nocapture`.

Usage: .venv/bin/python benches/attention_kernel.py THREADS"""
import numpy as np, onnxruntime as ort, onnx, time, sys
from onnx import helper, TensorProto as T
H,KV,D=9,3,64
def model():
    n=helper.make_node("GroupQueryAttention",["qkv","","","pk","pv","seqlens","total","cos","sin","pos"],["out","presk","presv"],domain="com.microsoft",num_heads=H,kv_num_heads=KV,do_rotary=1,rotary_interleaved=0,scale=0.125)
    g=helper.make_graph([n],"g",[helper.make_tensor_value_info("qkv",T.FLOAT,[1,None,(H+2*KV)*D]),helper.make_tensor_value_info("pk",T.FLOAT,[1,KV,None,D]),helper.make_tensor_value_info("pv",T.FLOAT,[1,KV,None,D]),helper.make_tensor_value_info("seqlens",T.INT32,[1]),helper.make_tensor_value_info("total",T.INT32,[]),helper.make_tensor_value_info("cos",T.FLOAT,[8192,32]),helper.make_tensor_value_info("sin",T.FLOAT,[8192,32]),helper.make_tensor_value_info("pos",T.INT64,[1,None])],
      [helper.make_tensor_value_info("out",T.FLOAT,None),helper.make_tensor_value_info("presk",T.FLOAT,None),helper.make_tensor_value_info("presv",T.FLOAT,None)])
    return helper.make_model(g,opset_imports=[helper.make_opsetid("",21),helper.make_opsetid("com.microsoft",1)],ir_version=10).SerializeToString()
o=ort.SessionOptions(); o.intra_op_num_threads=int(sys.argv[1]); o.inter_op_num_threads=1
s=ort.InferenceSession(model(),o,providers=["CPUExecutionProvider"])
for past,rows in ((256,2),(1024,2),(4096,2),(0,128),(1024,128),(3968,128)):
    cap=past+256
    k=ort.OrtValue.ortvalue_from_numpy(np.random.rand(1,KV,cap,D).astype(np.float32))
    v=ort.OrtValue.ortvalue_from_numpy(np.random.rand(1,KV,cap,D).astype(np.float32))
    b=s.io_binding()
    b.bind_cpu_input("qkv",np.random.rand(1,rows,(H+2*KV)*D).astype(np.float32))
    b.bind_ortvalue_input("pk",k); b.bind_ortvalue_input("pv",v)
    b.bind_cpu_input("seqlens",np.array([past+rows-1],np.int32)); b.bind_cpu_input("total",np.array(past+rows,np.int32))
    b.bind_cpu_input("cos",np.random.rand(8192,32).astype(np.float32)); b.bind_cpu_input("sin",np.random.rand(8192,32).astype(np.float32))
    b.bind_cpu_input("pos",np.arange(past,past+rows,dtype=np.int64)[None])
    b.bind_output("out"); b.bind_ortvalue_output("presk",k); b.bind_ortvalue_output("presv",v)
    ts=[]
    for i in range(600 if rows==2 else 60):
        t=time.thread_time(); s.run_with_iobinding(b); ts.append(time.thread_time()-t)
    print(f"onnxruntime GQA past {past} rows {rows} threads {sys.argv[1]}: median {np.median(ts)*1e3:.3f} ms CPU per call")
