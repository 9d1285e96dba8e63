"""Attention kernels: ``math`` (explicit masked softmax, the readable reference) and
``flash`` (``torch.nn.functional.scaled_dot_product_attention``: FlashAttention kernels
on GPU, Dao et al. 2022 arXiv:2205.14135, and a fused kernel on CPU)."""

from __future__ import annotations

from typing import Literal

from corekit import hookimpl
from corekit.params import Params


class MathKernelParams(Params):
    """Explicit softmax(QK^T / sqrt(d) + bias) V, written out op by op."""

    name: Literal["math"] = "math"


class FlashKernelParams(Params):
    """torch scaled_dot_product_attention (FlashAttention on GPU, fused on CPU)."""

    name: Literal["flash"] = "flash"


@hookimpl
def corekit_register_components(registry):
    registry.add("attention_kernel", MathKernelParams, "corekit_plugins.attention.sdpa:build_math")
    registry.add("attention_kernel", FlashKernelParams, "corekit_plugins.attention.sdpa:build_flash")
