"""GGUF -> ONNX (ONNX Runtime contrib ops) converter for nib's model directories.

Modules: gguf_model (read GGUF), quant (GGUF blocks -> MatMulNBits), graph (ONNX graph),
tokenizer (tokenizer.json + reference BPE), meta (config.json / nib.json), reference (numpy
forward pass), check (numerics and tokenizer checks), convert (the pipeline), synth (tiny
synthetic GGUFs for tests and the Rust fixture).
"""

__version__ = "0.1.0"
