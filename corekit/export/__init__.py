"""Export to ONNX: the graph with its KV cache, its verification, int8 quantization and the bundle."""
