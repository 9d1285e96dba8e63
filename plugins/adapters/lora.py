"""LoRA: low-rank adaptation of chosen Linear layers (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models", arXiv:2106.09685).

Each adapted ``nn.Linear`` computing ``W x + b`` becomes a :class:`LoRALinear` computing
``W x + b + (alpha / r) * B A dropout(x)`` with ``A`` (r, in) random and ``B`` (out, r) zero,
so training starts from the base model's function. ``W`` and ``b`` are the base layer's own
Parameters (shared, not copied): their state-dict keys do not change and they stay frozen.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from corekit_plugins.adapters import LoRAParams
from torch import nn

from corekit.errors import CorekitError
from corekit.finetune.adapter import Adapter

_LINEAR_STATE = set(vars(nn.Linear(1, 1, device="meta")))  # what nn.Linear.__init__ sets itself


def _extra_attributes(module: nn.Module) -> dict:
    """Public attributes set on a Linear after construction (e.g. ``residual_projection``)."""
    return {k: v for k, v in vars(module).items() if k not in _LINEAR_STATE and not k.startswith("_")}


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` plus a trainable low-rank update ``scaling * B A``.

    Args:
        base: the float Linear to adapt; its ``weight`` and ``bias`` are shared.
        rank: r, the rank of ``B A``.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout probability on the adapter's input (the base path has none).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.__dict__.update(_extra_attributes(base))
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as PEFT and nn.Linear do
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # no parameters, no keys
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        out = F.linear(x, self.weight, self.bias)  # (..., out)
        if not self.enabled:
            return out
        low = self.lora_dropout(x) @ self.lora_A.t()  # (..., r)
        return out + self.scaling * (low @ self.lora_B.t())  # (..., out)

    def delta(self) -> torch.Tensor:
        """The weight update ``scaling * B A``, (out, in), in the weight's dtype."""
        return (self.scaling * (self.lora_B.float() @ self.lora_A.float())).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}, enabled={self.enabled}"


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _short_names(names: list[str]) -> list[str]:
    """``blocks.0.attn.qkv``, ``blocks.1.attn.qkv`` -> ``blocks.*.attn.qkv`` (order kept)."""
    return list(dict.fromkeys(re.sub(r"\bblocks\.\d+\.", "blocks.*.", n) for n in names))


class LoRA(Adapter):
    """The ``lora`` adapter: :class:`LoRALinear` on every Linear whose name matches a target."""

    def __init__(self, params: LoRAParams) -> None:
        self.params = params

    @staticmethod
    def _adapted(model: nn.Module) -> dict[str, LoRALinear]:
        return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}

    def apply(self, model: nn.Module) -> list[str]:
        p = self.params
        if self._adapted(model):
            raise CorekitError("the model already has LoRA layers: merge them before applying LoRA again")
        linears = {n: m for n, m in model.named_modules() if hasattr(m, "in_features") and hasattr(m, "out_features")}
        chosen = [n for n in linears if any(fnmatch.fnmatchcase(n, pat) for pat in p.targets)]
        if not chosen:
            raise CorekitError(
                f"LoRA targets {p.targets} match no Linear layer of the model; its Linear layers are: "
                f"{', '.join(_short_names(list(linears))) or '(none)'}. Set finetune.adapter.targets "
                "to fnmatch patterns of these names (e.g. '*.attn.qkv')"
            )
        uses: dict[int, int] = {}
        for _, param in model.named_parameters(remove_duplicate=False):
            uses[id(param)] = uses.get(id(param), 0) + 1
        for name in chosen:
            module = linears[name]
            if type(module) is not nn.Linear or not module.weight.is_floating_point():
                raise CorekitError(
                    f"LoRA needs float nn.Linear layers, but {name} is a {type(module).__name__}: "
                    "fine-tune the float run and compress (quantize) it afterwards"
                )
            if uses[id(module.weight)] > 1:
                raise CorekitError(
                    f"{name}'s weight is tied to another module (e.g. the token embedding): merging LoRA "
                    "into it would change both; leave it out of finetune.adapter.targets"
                )
        for name in chosen:
            base = linears[name]
            _set(model, name, LoRALinear(base, p.rank, p.alpha, p.dropout).train(base.training))
        for param in model.parameters():
            param.requires_grad_(False)
        for module in self._adapted(model).values():
            module.lora_A.requires_grad_(True)
            module.lora_B.requires_grad_(True)
        return sorted(chosen)

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{key}": getattr(module, key).detach().contiguous().cpu()
            for name, module in self._adapted(model).items()
            for key in ("lora_A", "lora_B")
        }

    def merge(self, model: nn.Module) -> nn.Module:
        for name, module in self._adapted(model).items():
            with torch.no_grad():
                module.weight.add_(module.delta())
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            linear.weight, linear.bias = module.weight, module.bias
            linear.__dict__.update(_extra_attributes(module))
            for key in ("rank", "scaling", "enabled"):
                linear.__dict__.pop(key, None)
            linear.train(module.training)
            _set(model, name, linear)
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    @contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        modules = list(self._adapted(model).values())
        previous = [m.enabled for m in modules]
        try:
            for m in modules:
                m.enabled = False
            yield model
        finally:
            for m, flag in zip(modules, previous):
                m.enabled = flag


def build(params: LoRAParams) -> LoRA:
    """Build the ``lora`` adapter from its params."""
    return LoRA(params)
