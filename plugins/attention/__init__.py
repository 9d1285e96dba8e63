"""Attention components: ``mha``, ``gqa`` and ``mqa``.

All three are grouped-query attention with a different number of key/value heads:
multi-head (Vaswani et al. 2017, arXiv:1706.03762) has one per query head, multi-query
(Shazeer 2019, arXiv:1911.02150) one in all, and grouped-query (Ainslie et al. 2023,
arXiv:2305.13245) ``n_kv_heads`` groups. They share one module, ``grouped.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from corekit import hookimpl
from corekit.params import AttentionParams

BUILD = "corekit_plugins.attention.grouped:build"


class MHAParams(AttentionParams):
    """Multi-head attention: each query head has its own key/value head."""

    name: Literal["mha"] = "mha"


class GQAParams(AttentionParams):
    """Grouped-query attention: query heads share n_kv_heads key/value heads."""

    name: Literal["gqa"] = "gqa"
    n_kv_heads: PositiveInt = Field(description="number of key/value heads; must divide n_heads")

    @field_validator("n_kv_heads")
    @classmethod
    def _divides(cls, value: int, info: ValidationInfo) -> int:
        n_heads = info.data.get("n_heads")
        if n_heads is not None and n_heads % value:
            options = [d for d in range(1, n_heads + 1) if n_heads % d == 0]
            raise ValueError(
                f"n_kv_heads={value} must divide n_heads={n_heads}; valid values: {options}"
            )
        return value

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads


class MQAParams(AttentionParams):
    """Multi-query attention: all query heads share one key/value head."""

    name: Literal["mqa"] = "mqa"

    @property
    def kv_heads(self) -> int:
        return 1


@hookimpl
def corekit_register_components(registry):
    for params in (MHAParams, GQAParams, MQAParams):
        registry.add("attention", params, BUILD)
