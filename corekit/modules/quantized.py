"""Weight-only quantized layers: integer weights with float scales, dequantised on the fly.

Symmetric quantization (no zero point): a weight row is cut into groups along the input
dimension (one group per row is "per channel") and each group stores ``q = round(w / s)``
with ``s = max|w| / qmax``, so ``|w - q * s| <= s / 2``.

- 8 bits: ``q`` in [-127, 127], stored as int8, one byte per weight.
- 4 bits: ``q`` in [-7, 7], two per byte (uint8, ``q + 8``, the even column in the low nibble:
  the layout of onnxruntime's ``MatMulNBits``, so export writes the same integers).

A quantizer plugin (the built-in ``quantize``, or a third party's GPTQ or AWQ) fills these
modules with its own integers and scales; loading, saving and ONNX export then work the same.
The forward pass dequantises the weight and runs a float matmul, or, with
``kernel = "dynamic"``, runs torch.ao's dynamic int8 linear (activations quantized per call).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

QMAX = {8: 127, 4: 7}
KERNELS = ("dequantize", "dynamic")


def quantize_tensor(weight: torch.Tensor, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a (out, in) weight; returns ``(q int8 (out, in), scales (out, groups))``."""
    out_features, in_features = weight.shape
    group = group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size={group} does not divide the input width {in_features}")
    w = weight.detach().float().reshape(out_features, in_features // group, group)
    scales = w.abs().amax(dim=-1) / QMAX[bits]  # (out, groups)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero group stays zero
    q = torch.round(w / scales[..., None]).clamp(-QMAX[bits], QMAX[bits])
    return q.reshape(out_features, in_features).to(torch.int8), scales


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(out, in) int8 values in [-8, 7] -> (out, in / 2) uint8, even columns in the low nibble."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: (out, in / 2) uint8 -> (out, in) int8."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)


class QuantizedLinear(nn.Module):
    """A linear layer whose weight is stored as integers and per-group scales."""

    def __init__(
        self, in_features: int, out_features: int, *, bits: int = 8, group_size: int | None = None,
        bias: bool = False, kernel: str = "dequantize",
    ) -> None:
        super().__init__()
        if bits not in QMAX:
            raise ValueError(f"bits must be 8 or 4, got {bits}")
        group = group_size or in_features
        if in_features % group or (bits == 4 and group % 2):
            raise ValueError(f"group_size={group_size} must divide in_features={in_features} (and be even for 4 bits)")
        if kernel not in KERNELS or (kernel == "dynamic" and (bits != 8 or group != in_features)):
            raise ValueError(f"kernel {kernel!r}: choose from {KERNELS}; 'dynamic' needs 8 bits per channel")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.kernel = bits, group, kernel
        width = in_features if bits == 8 else in_features // 2
        self.register_buffer("qweight",
                             torch.zeros(out_features, width, dtype=torch.int8 if bits == 8 else torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, in_features // group))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._dynamic: nn.Module | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int = 8, group_size: int | None = None,
                    kernel: str = "dequantize") -> QuantizedLinear:
        """Quantize ``linear``'s weight (round to nearest); the bias is kept in float."""
        module = cls(linear.in_features, linear.out_features, bits=bits, group_size=group_size,
                     bias=linear.bias is not None, kernel=kernel)
        module.set_quantized(*quantize_tensor(linear.weight, bits, group_size))
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module.to(linear.weight.device)

    def set_quantized(self, q: torch.Tensor, scales: torch.Tensor) -> None:
        """Store integer weights ``q`` (out, in) int8 and ``scales`` (out, groups)."""
        if q.shape != (self.out_features, self.in_features) or scales.shape != self.scales.shape:
            raise ValueError(f"expected q {(self.out_features, self.in_features)} "
                             f"and scales {tuple(self.scales.shape)}, "
                             f"got {tuple(q.shape)} and {tuple(scales.shape)}")
        self.qweight.copy_(q.to(torch.int8) if self.bits == 8 else pack_int4(q))
        self.scales.copy_(scales)
        self._dynamic = None

    def integers(self) -> torch.Tensor:
        """The integer weights, (out, in) int8."""
        return self.qweight if self.bits == 8 else unpack_int4(self.qweight)

    def dequantize(self) -> torch.Tensor:
        """The float weight the integers stand for, (out, in)."""
        q = self.integers().float().view(self.out_features, -1, self.group_size)  # (out, groups, group)
        return (q * self.scales[..., None]).view(self.out_features, self.in_features)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._dynamic = None  # new integers: the packed torch.ao weight is stale
        super()._load_from_state_dict(*args, **kwargs)

    def _dynamic_linear(self) -> nn.Module:
        if self._dynamic is None:
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

            with warnings.catch_warnings():  # torch.ao's quantized tensors are deprecated, still supported
                warnings.simplefilter("ignore")
                module = DynamicLinear(self.in_features, self.out_features, bias_=self.bias is not None,
                                       dtype=torch.qint8)
                weight = torch._make_per_channel_quantized_tensor(
                    self.qweight.cpu(), self.scales[:, 0].double().cpu(),
                    torch.zeros(self.out_features, dtype=torch.long), 0)
                module.set_weight_bias(weight, None if self.bias is None else self.bias.detach().float().cpu())
            object.__setattr__(self, "_dynamic", module)  # a cache, not a submodule: never saved
        return self._dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., out)
        if self.kernel == "dynamic" and x.device.type == "cpu" and not torch.is_grad_enabled():
            return self._dynamic_linear()(x.float()).to(x.dtype)
        return F.linear(x, self.dequantize().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, kernel={self.kernel}")


class QuantizedEmbedding(nn.Module):
    """An embedding table stored as int8 rows with one scale per row.

    It reads a per-channel 8-bit :class:`QuantizedLinear` of shape (vocab, d_model): the tied
    LM head's (``shared=True``: the head owns it, so it is stored and moved once), or a table
    of its own.
    """

    def __init__(self, table: QuantizedLinear, *, shared: bool = False) -> None:
        super().__init__()
        if table.bits != 8 or table.group_size != table.in_features:
            raise ValueError("an embedding is quantized per row at 8 bits")
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features
        if shared:
            self._shared = [table]  # a list: not a submodule, so not saved twice
        else:
            self.table = table

    def source(self) -> QuantizedLinear:
        """The quantized table this embedding reads."""
        return self._shared[0] if hasattr(self, "_shared") else self.table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # (...) ids -> (..., d_model)
        table = self.source()
        return table.qweight[ids].float() * table.scales[ids]


def quantized_modules(model: nn.Module) -> dict[str, QuantizedLinear]:
    """Every :class:`QuantizedLinear` in ``model``, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A float copy of ``model``: each quantized layer becomes ``nn.Linear``/``nn.Embedding``
    holding exactly the weights its integers stand for (a shared table stays shared)."""
    import copy

    clone = copy.deepcopy(model)
    shared: list[tuple[nn.Embedding, QuantizedLinear]] = []
    for name, module in list(clone.named_modules()):
        if isinstance(module, QuantizedEmbedding):
            table = module.source()
            embedding = nn.Embedding(module.num_embeddings, module.embedding_dim).to(table.scales.device)
            if hasattr(module, "_shared"):
                shared.append((embedding, table))
            else:
                embedding.weight = nn.Parameter(table.dequantize().detach().clone())
            _set(clone, name, embedding)
    floats: dict[int, nn.Linear] = {}
    for name, module in list(clone.named_modules()):
        if isinstance(module, QuantizedLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            linear.weight = nn.Parameter(module.dequantize().detach().clone())
            if module.bias is not None:
                linear.bias = nn.Parameter(module.bias.detach().clone())
            floats[id(module)] = linear
            _set(clone, name, linear.to(module.scales.device))
    for embedding, table in shared:
        embedding.weight = floats[id(table)].weight  # still tied
    return clone


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)
