"""int8 ONNX graphs through onnxruntime's own quantization tools.

Every MatMul weight goes through onnxruntime's ``MatMulNBitsQuantizer`` at 8 bits: stored
as symmetric int8 in blocks of ``BLOCK`` (fewer for narrow models) along the input dimension; with ``accuracy_level=4``
the CPU kernels also quantize the activations to int8 at run time, block by block within
each row, and multiply in int8. The embedding table (a Gather, which that quantizer takes
only at 4 bits) goes through ``quantize_dynamic``: int8 rows, dequantized after the lookup.

Why not ``quantize_dynamic``'s ``DynamicQuantizeLinear``: it picks one activation scale
for the whole input tensor, so a token's quantized activations depend on the other tokens
in the same call. Decoding with the KV cache (one token per call) and recomputing the
whole sequence then give different logits, and greedy decoding diverges (onnxruntime issue
#10322; measured on the trained tiny model in ``benchmarks/edge_speed.py``). Row-wise
blocks keep every row independent of the others, so cached and uncached decoding agree.

A tied LM head reaches the graph as ``MatMul(x, Transpose(embedding))``; the quantizers
only touch MatMuls whose weight is a constant, so the transpose is materialised first
(the int8 graph then holds the table twice, each copy at a quarter of the fp32 size).
"""

from __future__ import annotations

import logging
from pathlib import Path

from corekit.errors import CorekitError

BLOCK = 128
SAVE_EXTERNAL_ABOVE = 1_800_000_000  # bytes of weights; protobuf's limit is 2 GB


def untie_transposed_weights(model) -> int:
    """Replace ``MatMul(x, Transpose(W))`` (W an initializer) by ``MatMul(x, W^T)``; return how many."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    made: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        src = producers.get(node.input[1])
        if src is None or src.op_type != "Transpose" or src.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in src.attribute if a.name == "perm"), None)
        weight = inits[src.input[0]]
        if len(weight.dims) != 2 or perm not in (None, [1, 0]):
            continue
        name = made.get(src.input[0])
        if name is None:
            name = made[src.input[0]] = f"{src.input[0]}.transposed"
            model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(weight).T.copy(), name))
        node.input[1] = name
    return len(made)


def block_size_for(model, largest: int = BLOCK) -> int:
    """The largest power of two <= ``largest`` that divides no weight's input size below it:
    a block longer than a weight's input dimension would be padded, wasting space."""
    inits = {i.name: i for i in model.graph.initializer}
    sizes = [inits[n.input[1]].dims[0] for n in model.graph.node
             if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    block = largest
    while block > 16 and sizes and min(sizes) < block:
        block //= 2
    return block


def quantize_int8(src: str | Path, dst: str | Path, *, block_size: int | None = None) -> None:
    """Write an int8 version of the fp32 graph ``src`` to ``dst`` (see the module docstring).

    ``block_size`` defaults to :data:`BLOCK`, smaller for models narrower than that."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(src))
    untie_transposed_weights(model)
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size or block_size_for(model), is_symmetric=True, accuracy_level=4, bits=8,
        op_types_to_quantize=("MatMul",), quant_axes=(("MatMul", 0),),
    )
    logging.disable(logging.WARNING)  # the quantizers log every node, and advice, at INFO/WARNING
    try:
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
        matmuls = quantizer.model.model
        external = matmuls.ByteSize() > SAVE_EXTERNAL_ABOVE
        # the 8-bit block quantizer leaves Gather alone; the embedding table gets onnxruntime's
        # dynamic int8 (per-tensor weight scale; a Gather's rows need no activation scale)
        quantize_dynamic(matmuls, str(dst), op_types_to_quantize=["Gather"], weight_type=QuantType.QInt8,
                         use_external_data_format=external)
    except Exception as exc:  # onnxruntime's quantizers raise assorted types
        raise CorekitError(f"onnxruntime could not quantize {src} to int8: {exc}") from exc
    finally:
        logging.disable(logging.NOTSET)
