"""int8 quantization: the tied embedding reads the LM head's int8 blocks, exactly as the kernel does."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from corekit.export.quantize import quantize_int8
from corekit.export.verify import session


def tied_graph(path, vocab: int = 50, width: int = 96) -> np.ndarray:
    """ids -> Gather(W) (the embedding) and x -> MatMul(x, Transpose(W)) (the tied head)."""
    weight = np.random.default_rng(0).normal(0, 0.02, (vocab, width)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["W", "ids"], ["emb"], axis=0),
        helper.make_node("Transpose", ["W"], ["WT"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "WT"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", width])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["b", "t", width]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "t", vocab])],
        [numpy_helper.from_array(weight, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path))
    return weight


def test_tied_embedding_is_stored_once_and_matches_the_head_kernel(tmp_path):
    weight = tied_graph(tmp_path / "fp32.onnx")
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    model = onnx.load(str(tmp_path / "int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not [n for n, a in inits.items() if a.dtype == np.float32 and a.size >= weight.size]  # no fp32 table
    blocks = next(a for a in inits.values() if a.dtype == np.uint8)  # (vocab, n_blocks, block)
    scales = next(a for n, a in inits.items() if n.endswith("_scales")).reshape(blocks.shape[0], -1)
    dequantized = ((blocks.astype(np.float32) - 128) * scales[..., None]).reshape(len(weight), -1)[:, : weight.shape[1]]
    bound = np.abs(scales).repeat(blocks.shape[2], 1)[:, : weight.shape[1]]  # (scales may be negative)
    np.testing.assert_array_less(np.abs(dequantized - weight), bound + 1e-9)

    ids = np.array([[0, 7, 49, 7]])
    x = np.random.default_rng(1).normal(size=(1, 4, weight.shape[1])).astype(np.float32)
    emb, logits = session(tmp_path / "int8.onnx").run(None, {"ids": ids, "x": x})
    # the lookup returns exactly the rows the head's blocks hold ...
    np.testing.assert_array_equal(emb[0], dequantized[ids[0]])
    # ... and the head kernel multiplies by those same rows (its activations are int8 too)
    reference = x @ dequantized.T
    assert np.abs(logits - reference).max() < 0.02 * np.abs(reference).max()
    assert np.abs(logits - x @ weight.T).max() < 0.02 * np.abs(reference).max()
