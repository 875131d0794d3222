"""ONNX Runtime's 4-bit linear layer as nib's converter writes it (MatMulNBits, block 32,
accuracy_level 4, plus the Q4_1 offset correction Reshape → ReduceSum → MatMul → Add), alone,
at SmolLM2-135M's shapes: median CPU time of one call (the calling thread's, so that time spent
waiting for a core on a shared machine does not count). The A side of the kernel A/B; the B side
is `cargo test --release --lib engine::linear::kernel::timing -- --ignored --nocapture`.

Usage: .venv/bin/python benches/linear_kernel.py THREADS"""
import numpy as np, onnxruntime as ort, time, sys
from onnx import helper, numpy_helper, TensorProto as T


def model(n, k):
    blocks = k // 32
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 16), dtype=np.uint8), "q"),
             numpy_helper.from_array((rng.random(n * blocks, dtype=np.float32) * 1e-2), "s"),
             numpy_helper.from_array((rng.random((blocks, n), dtype=np.float32) * 1e-2), "o"),
             numpy_helper.from_array(np.array([0, 0, blocks, 32], np.int64), "shape"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    nodes = [helper.make_node("MatMulNBits", ["x", "q", "s"], ["y0"], domain="com.microsoft", K=k, N=n, bits=4,
                              block_size=32, accuracy_level=4),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("ReduceSum", ["r", "axes"], ["bs"], keepdims=0),
             helper.make_node("MatMul", ["bs", "o"], ["c"]),
             helper.make_node("Add", ["y0", "c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, None, k])],
                          [helper.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10).SerializeToString()


o = ort.SessionOptions(); o.intra_op_num_threads = int(sys.argv[1]); o.inter_op_num_threads = 1
for n, k in ((3072, 576), (576, 1536)):
    s = ort.InferenceSession(model(n, k), o, providers=["CPUExecutionProvider"])
    for rows in (1, 2, 8, 128):
        x = np.random.rand(1, rows, k).astype(np.float32) - 0.5
        ts = []
        for i in range(40 if rows > 8 else 400):
            t = time.thread_time(); s.run(None, {"x": x}); ts.append(time.thread_time() - t)
        print(f"onnxruntime linear N {n} K {k} rows {rows} threads {sys.argv[1]}: median {np.median(ts)*1e3:.4f} ms CPU per call (least {min(ts)*1e3:.4f})")
