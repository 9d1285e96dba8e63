"""int8 ONNX graphs through onnxruntime's own quantization tools.

Every MatMul weight goes through onnxruntime's ``MatMulNBitsQuantizer`` at 8 bits: stored
as symmetric int8 in blocks of ``BLOCK`` (fewer for narrow models) along the input
dimension, one fp32 scale per block; with ``accuracy_level=4`` the CPU kernels also quantize
the activations to int8 at run time, block by block within each row, and multiply in int8.
Blocks of 32 decoded fastest at batch 1 in ``benchmarks/int8_blocks.py``, for 2.4 points more file
than blocks of 128.
Other embedding tables (Gathers, which that quantizer takes only at 4 bits) go through
``quantize_dynamic``: int8 rows, dequantized after the lookup.

Why not ``quantize_dynamic``'s ``DynamicQuantizeLinear``: it picks one activation scale
for the whole input tensor, so a token's quantized activations depend on the other tokens
in the same call. Decoding with the KV cache (one token per call) and recomputing the
whole sequence then give different logits, and greedy decoding diverges (onnxruntime issue
#10322; measured on the trained tiny model in ``benchmarks/edge_speed.py``). Row-wise
blocks keep every row independent of the others, so a token's logits do not depend on
what else is in the call, and cached and uncached greedy decoding agree (the logits may
still differ in the last bits, as fp32 ones do, since the kernels sum in other orders).

A tied LM head reaches the graph as ``MatMul(x, Transpose(embedding))``; the quantizers
only touch MatMuls whose weight is a constant, so the transpose is materialised first. After
quantization the embedding lookup reads the head's int8 blocks (:func:`share_tied_embedding`),
so the table is stored once, in int8, as in the fp32 model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from corekit.errors import CorekitError

BLOCK = 32
SAVE_EXTERNAL_ABOVE = 1_800_000_000  # bytes of weights; protobuf's limit is 2 GB


def untie_transposed_weights(model) -> dict[str, str]:
    """Replace ``MatMul(x, Transpose(W))`` (W an initializer) by ``MatMul(x, W^T)``; return
    ``{W: name of W^T}``."""
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
    used = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node if n.op_type == "Transpose" and not set(n.output) & used]
    for node in dead:  # the transposes the MatMuls no longer read
        model.graph.node.remove(node)
    return made


def share_tied_embedding(model, table: str, transposed: str) -> bool:
    """Let the embedding lookup read the LM head's int8 blocks instead of its own fp32 table.

    After block quantization, ``transposed`` (the tied head's weight) is a ``MatMulNBits``
    weight: uint8 blocks (N = vocab, K / block, block) with zero point 128 and one fp32 scale
    per block. Row v of those blocks, dequantized, is embedding row v, so each
    ``Gather(table, ids)`` becomes a Gather of the rows and their scales and a dequantization,
    and the fp32 table leaves the graph. Returns whether anything changed.
    """
    head = next((n for n in model.graph.node if n.op_type == "MatMulNBits" and n.input[1].startswith(transposed)), None)
    if head is None:
        return False
    attrs = {a.name: a.i for a in head.attribute}
    if attrs.get("bits") != 8 or len(head.input) > 3 and head.input[3]:  # zero points given: not our layout
        return False
    return gather_from_blocks(model, table, head.input[1], head.input[2], attrs["K"], attrs["N"], attrs["block_size"])


def gather_from_blocks(model, table: str, blocks_name: str, scales_name: str, k: int, n: int, block: int) -> bool:
    """Rewrite every ``Gather(table, ids)`` to read 8-bit blocks instead: ``blocks_name`` is uint8
    (n, ceil(k / block), block) with zero point 128, ``scales_name`` one fp32 scale per block
    (the ``MatMulNBits`` layout). The fp32 table leaves the graph. Returns whether anything changed."""
    from onnx import TensorProto, helper, numpy_helper

    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table
               and all(a.name != "axis" or a.i == 0 for a in n.attribute)]
    if not gathers:
        return False
    blocks = -(-k // block)
    prefix = f"{table}.shared"
    consts = [
        numpy_helper.from_array(np.array([n, blocks], np.int64), f"{prefix}.scale_shape"),
        numpy_helper.from_array(np.array(128.0, np.float32), f"{prefix}.zero_point"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{prefix}.last_axis"),
        numpy_helper.from_array(np.array([blocks * block], np.int64), f"{prefix}.width"),
        numpy_helper.from_array(np.array([0], np.int64), f"{prefix}.start"),
        numpy_helper.from_array(np.array([k], np.int64), f"{prefix}.k"),
    ]
    model.graph.initializer.extend(consts)
    nodes = list(model.graph.node)
    for index, gather in enumerate(gathers):
        ids, out, p = gather.input[1], gather.output[0], f"{prefix}.{index}"
        new = [
            helper.make_node("Gather", [blocks_name, ids], [f"{p}.q"], axis=0),  # (..., blocks, block) uint8
            helper.make_node("Cast", [f"{p}.q"], [f"{p}.qf"], to=TensorProto.FLOAT),
            helper.make_node("Sub", [f"{p}.qf", f"{prefix}.zero_point"], [f"{p}.centred"]),
            helper.make_node("Reshape", [scales_name, f"{prefix}.scale_shape"], [f"{p}.scales2d"]),
            helper.make_node("Gather", [f"{p}.scales2d", ids], [f"{p}.s"], axis=0),  # (..., blocks)
            helper.make_node("Unsqueeze", [f"{p}.s", f"{prefix}.last_axis"], [f"{p}.s1"]),
            helper.make_node("Mul", [f"{p}.centred", f"{p}.s1"], [f"{p}.rows"]),
            helper.make_node("Shape", [ids], [f"{p}.ids_shape"]),
            helper.make_node("Concat", [f"{p}.ids_shape", f"{prefix}.width"], [f"{p}.flat_shape"], axis=0),
            helper.make_node("Reshape", [f"{p}.rows", f"{p}.flat_shape"], [f"{p}.flat"]),
            helper.make_node("Slice", [f"{p}.flat", f"{prefix}.start", f"{prefix}.k", f"{prefix}.last_axis"], [out]),
        ]
        at = nodes.index(gather)
        nodes[at:at + 1] = new
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(table in node.input for node in model.graph.node):
        kept = [i for i in model.graph.initializer if i.name != table]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return True


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
    tied = untie_transposed_weights(model)
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size or block_size_for(model), is_symmetric=True, accuracy_level=4, bits=8,
        op_types_to_quantize=("MatMul",), quant_axes=(("MatMul", 0),),
    )
    root = logging.getLogger()
    saved = root.level, list(root.handlers), logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizers log every node, and advice, at INFO/WARNING
    try:
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
        matmuls = quantizer.model.model
        for table, transposed in tied.items():
            share_tied_embedding(matmuls, table, transposed)
        external = matmuls.ByteSize() > SAVE_EXTERNAL_ABOVE
        # the 8-bit block quantizer leaves Gather alone; the embedding table gets onnxruntime's
        # dynamic int8 (per-tensor weight scale; a Gather's rows need no activation scale)
        quantize_dynamic(matmuls, str(dst), op_types_to_quantize=["Gather"], weight_type=QuantType.QInt8,
                         use_external_data_format=external)
    except Exception as exc:  # onnxruntime's quantizers raise assorted types
        raise CorekitError(f"onnxruntime could not quantize {src} to int8: {exc}") from exc
    finally:
        logging.disable(saved[2])
        # importing onnxruntime's block quantizer calls logging.basicConfig(level=INFO): undo it
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
