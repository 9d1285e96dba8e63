"""``quantize``: weight-only int8 (per output channel) or int4 (in groups) for every Linear.

Round-to-nearest symmetric quantization (see :mod:`corekit.modules.quantized`); the weights
are stored as integers in safetensors and dequantised on the fly, or run through torch.ao's
dynamic int8 matmuls (``kernel = "dynamic"``). The LM head, and the token embedding (stored
once with it when tied), are kept at 8 bits per row even when the blocks get 4: the logits
are the matmul most sensitive to quantization error, as in the usual GPTQ and llama.cpp
recipes. Export of a quantized run writes these same integers into the ONNX graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from corekit.compress.base import Compressed, Compressor, SourceRun
from corekit.modules.quantized import QuantizedEmbedding, QuantizedLinear, _set


def group_for(width: int, group: int | None) -> int | None:
    """The group a layer of input ``width`` gets: ``group`` if it divides the width, else the
    largest smaller power of two (at least 16) that does, else None (one scale per row).
    Structured pruning, say, can leave widths that the configured group does not divide."""
    if group is None:
        return None
    while group > 16 and width % group:
        group //= 2
    return group if width % group == 0 else None


class Quantize(Compressor):
    """Replaces every ``nn.Linear`` (and the token embedding) by a quantized layer."""

    quantizes = True
    takes_heads = True  # a classifier's linear layers quantize like any others

    def _plan(self, model: nn.Module) -> dict[str, dict]:
        """Quantization settings for each Linear of ``model``, by name."""
        p = self.params
        plan = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                head = module is getattr(model, "lm_head", None)
                bits, group = (8, None) if head else (p.bits, group_for(module.in_features, p.group_size))
                if bits == 4 and group is None and module.in_features % 2:
                    bits = 8  # two int4 weights per byte need an even width: this layer stays 8-bit
                plan[name] = dict(bits=bits, group_size=group, kernel=p.kernel)
        return plan

    def check(self, source: SourceRun) -> None:
        super().check(source)
        from corekit.run import build_run_model

        self._plan(build_run_model(source.spec, source.registry))  # refuses what cannot be packed

    def _convert(self, model: nn.Module, quantize_now: bool) -> nn.Module:
        embedding = getattr(model, "tok_emb", None)
        tied = isinstance(embedding, nn.Embedding) and embedding.weight is getattr(model.lm_head, "weight", None)
        for name, settings in self._plan(model).items():
            linear = model.get_submodule(name)
            if quantize_now:
                new = QuantizedLinear.from_linear(linear, **settings)
            else:
                new = QuantizedLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      **settings).to(linear.weight.device)
            _set(model, name, new)
        if tied:
            model.tok_emb = QuantizedEmbedding(model.lm_head, shared=True)
        elif isinstance(embedding, nn.Embedding):
            table = nn.Linear(embedding.embedding_dim, embedding.num_embeddings, bias=False)
            table.weight = embedding.weight  # (vocab, d): a row per token, quantized per row
            model.tok_emb = QuantizedEmbedding(
                QuantizedLinear.from_linear(table) if quantize_now
                else QuantizedLinear(embedding.embedding_dim, embedding.num_embeddings).to(embedding.weight.device))
        return model

    def compress(self, source: SourceRun, work_dir: Path, progress: Callable[[str], None]) -> Compressed:
        p = self.params
        progress(f"quantizing to int{p.bits}" + (f", groups of {p.group_size}" if p.group_size else ", per channel"))
        model = self._convert(source.load_model(), quantize_now=True)
        layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}
        details = {"bits": p.bits, "group_size": p.group_size, "kernel": p.kernel, "layers": len(layers)}
        other = {n: f"int{m.bits}, group {m.group_size}" for n, m in layers.items()
                 if (m.bits, m.group_size) != (p.bits, p.group_size or m.in_features)}
        if other:
            details["layers_differing"] = other  # the head, and widths the group does not divide
        return Compressed(model, source.spec.model_copy(deep=True), details)

    def restore(self, model: nn.Module) -> nn.Module:
        return self._convert(model, quantize_now=False)


def build(params) -> Quantize:
    """The ``quantize`` compressor."""
    return Quantize(params)
