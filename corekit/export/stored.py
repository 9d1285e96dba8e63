"""ONNX graphs of quantized runs: the run's own integers, written as ``MatMulNBits`` weights.

A run quantized by a compressor (``corekit compress --with quantize``) holds integer weights
and scales (:class:`corekit.modules.quantized.QuantizedLinear`). Export traces the float model
those integers stand for, then swaps each such MatMul for onnxruntime's ``MatMulNBits`` fed
with exactly the run's integers (8 or 4 bits, zero point 128 or 8) and scales, so the int8/int4
graph computes the same function as the quantized PyTorch model rather than a second,
re-rounded quantization of it. A per-channel scale becomes the same scale for each block of
the row. The embedding lookups then read the 8-bit rows too (a tied table is stored once).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from corekit.errors import CorekitError

#: block length for per-channel weights: any power of two works (all blocks share the row's scale)
CHANNEL_BLOCK = 32


def _key(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _blocks(module, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``(blob uint8 (N, blocks, bytes per block), scales fp32 (N * blocks))`` of a quantized layer."""
    q = module.integers().cpu().numpy().astype(np.int16)  # (N, K)
    n, k = q.shape
    blocks = -(-k // block)
    padded = np.zeros((n, blocks * block), np.int16)  # padding: integer 0, i.e. weight 0
    padded[:, :k] = q
    scales = module.scales.detach().cpu().numpy().astype(np.float32)  # (N, groups)
    if module.group_size != block:  # per channel: every block of a row has the row's scale
        scales = np.repeat(scales, blocks, axis=1)
    if module.bits == 8:
        blob = (padded + 128).astype(np.uint8).reshape(n, blocks, block)
    else:
        import torch

        from corekit.modules.quantized import pack_int4

        blob = pack_int4(torch.from_numpy(padded)).numpy().reshape(n, blocks, block // 2)
    return blob, scales.reshape(-1)


def write_stored_integers(src: str | Path, dst: str | Path, model, *, accuracy_level: int = 0) -> dict[str, int]:
    """Rewrite the float graph ``src`` (traced from ``dequantized_copy(model)``) to ``dst`` with
    ``model``'s integer weights. Returns how many MatMuls and embedding tables were replaced.

    ``accuracy_level`` 0 keeps the activations in fp32, so the graph matches the PyTorch model;
    4 lets onnxruntime quantize them to int8 too (faster on CPU, no longer the same function).
    """
    import onnx
    from onnx import helper, numpy_helper

    from corekit.export.quantize import SAVE_EXTERNAL_ABOVE, gather_from_blocks, untie_transposed_weights
    from corekit.modules.quantized import QuantizedEmbedding, quantized_modules

    graph_model = onnx.load(str(src))
    untie_transposed_weights(graph_model)
    tables = {}
    for module in model.modules():
        if isinstance(module, QuantizedEmbedding):
            tables[_key(module.source().dequantize().detach().cpu().numpy())] = module.source()
    own_tables = {id(m) for m in tables.values()} - {id(getattr(model, "lm_head", None))}
    weights = {_key(m.dequantize().detach().T.cpu().numpy()): m for m in quantized_modules(model).values()
               if id(m) not in own_tables}
    graph = graph_model.graph
    inits = {i.name: i for i in graph.initializer}
    counts = {"matmuls": 0, "tables": 0}
    found: set[str] = set()
    made: dict[str, tuple[str, str, int, int, int]] = {}  # float weight -> its blocks, for the lookups
    nodes = list(graph.node)
    for index, node in enumerate(nodes):
        if node.op_type != "MatMul" or node.input[1] not in inits or len(inits[node.input[1]].dims) != 2:
            continue
        name = node.input[1]
        key = _key(numpy_helper.to_array(inits[name]))
        module = weights.get(key)
        if module is None:
            continue
        found.add(key)
        block = module.group_size if module.group_size != module.in_features else CHANNEL_BLOCK
        if name not in made:
            blob, scales = _blocks(module, block)
            graph.initializer.extend([numpy_helper.from_array(blob, f"{name}_Q{module.bits}G{block}"),
                                      numpy_helper.from_array(scales, f"{name}_scales")])
            made[name] = (f"{name}_Q{module.bits}G{block}", f"{name}_scales", module.in_features, module.out_features,
                          block)
        blob_name, scales_name, k, n, _ = made[name]
        nodes[index] = helper.make_node(
            "MatMulNBits", [node.input[0], blob_name, scales_name], list(node.output), name=node.name or None,
            domain="com.microsoft", K=k, N=n, bits=module.bits, block_size=block, accuracy_level=accuracy_level)
        counts["matmuls"] += 1
    del graph.node[:]
    graph.node.extend(nodes)
    blocks_of = {made[n][0]: made[n] for n in made}
    for name, init in list(inits.items()):
        if len(init.dims) != 2:
            continue
        module = tables.get(_key(numpy_helper.to_array(init)))
        if module is None:
            continue
        # a tied table reuses the head's blocks; another gets 8-bit blocks of its own
        shared = next((v for v in blocks_of.values() if v[0].startswith(f"{name}.transposed_Q8")), None)
        if shared is None:
            blob, scales = _blocks(module, CHANNEL_BLOCK)
            graph.initializer.extend([numpy_helper.from_array(blob, f"{name}_Q8G{CHANNEL_BLOCK}"),
                                      numpy_helper.from_array(scales, f"{name}_scales")])
            shared = (f"{name}_Q8G{CHANNEL_BLOCK}", f"{name}_scales", module.in_features, module.out_features,
                      CHANNEL_BLOCK)
        blob_name, scales_name, k, n, block = shared
        counts["tables"] += gather_from_blocks(graph_model, name, blob_name, scales_name, k, n, block)
    used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if found != set(weights):
        raise CorekitError(
            f"export: found {len(found)} of the run's {len(weights)} quantized layers in the traced graph; "
            "a plugin's module probably computes its weight in a way the tracer folded"
        )
    if not any(o.domain == "com.microsoft" for o in graph_model.opset_import):
        graph_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    external = graph_model.ByteSize() > SAVE_EXTERNAL_ABOVE
    onnx.save(graph_model, str(dst), save_as_external_data=external,
              location=Path(dst).name + ".data" if external else None)
    return counts
