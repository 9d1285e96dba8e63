"""Model assembly: the one place where component names become modules.

``build_model`` asks the registry for each part named in a :class:`ModelSpec` and hands
the ready-built parts to the generic modules in :mod:`corekit.modules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corekit.errors import CorekitError
from corekit.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from corekit.modules.decoder import Decoder
    from corekit.spec import ModelSpec, RunSpec
    from corekit.tokenizer import Tokenizer


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from corekit.plugins import get_registry

    return get_registry()


def build_model(
    spec: ModelSpec | RunSpec, registry: Registry | None = None, *, vocab_size: int | None = None
) -> Decoder:
    """Build the decoder a spec describes, randomly initialised.

    Args:
        spec: a run spec or its ``model`` section (already validated).
        registry: the plugin registry; defaults to the shared one.
        vocab_size: overrides ``model.vocab_size`` (e.g. a trained tokenizer's size).
    """
    from corekit.modules.block import Block, norms_per_block
    from corekit.modules.decoder import Decoder
    from corekit.modules.mlp import MLP

    reg = _registry(registry)
    model_spec = getattr(spec, "model", spec)
    vocab = vocab_size or model_spec.vocab_size
    if vocab is None:
        raise CorekitError(
            "model.vocab_size is unknown: set it in the spec, or use a tokenizer whose size "
            "is known before training"
        )
    ctx = model_spec.context(vocab)
    attention, mlp_spec = model_spec.attention, model_spec.mlp
    blocks = []
    for _ in range(ctx.n_layers):
        kernel = reg.build("attention_kernel", attention.kernel, ctx)
        attn = reg.build("attention", attention, ctx, kernel)
        act = reg.build("activation", mlp_spec.activation, ctx)
        mlp = MLP(ctx.d_model, mlp_spec.hidden_dim, act, type(mlp_spec.activation).gated, ctx.bias)
        norms = [reg.build("norm", model_spec.norm, ctx) for _ in range(norms_per_block(ctx.layout))]
        blocks.append(Block(ctx.layout, attn, mlp, norms, ctx.dropout))
    # A post-norm block already ends in a norm (Vaswani et al. 2017): no final norm.
    from torch import nn

    final_norm = nn.Identity() if ctx.layout == "post" else reg.build("norm", model_spec.norm, ctx)
    model = Decoder(
        vocab,
        ctx.d_model,
        ctx.context_length,
        reg.build("positional", model_spec.position, ctx),
        blocks,
        final_norm,
        tie_embeddings=model_spec.tie_embeddings,
        dropout=ctx.dropout,
        init_std=model_spec.init_std,
    )
    model.spec = model_spec
    return model


def build_run_model(spec: RunSpec, registry: Registry | None = None) -> Decoder:
    """The model of a run spec with the structure its saved weights have: :func:`build_model`,
    then each compressor listed under ``compressed`` restores its changes (quantized layers, say),
    then a fine-tuned run's classification head and (unmerged) adapter."""
    reg = _registry(registry)
    model = build_model(spec, reg)
    for params in spec.compressed:
        model = reg.build("compressor", params).restore(model)
    ft = getattr(spec, "finetune", None)
    if ft is not None and ft.task == "classify" and ft.labels:
        from corekit.finetune.model import attach_classifier

        attach_classifier(model, len(ft.labels))
    if unmerged_adapter(spec):
        reg.build("adapter", ft.adapter).apply(model)
        model.requires_grad_(True)  # a loaded model is a plain module; fine-tuning sets what trains
    return model


def unmerged_adapter(spec: RunSpec) -> bool:
    """Whether the run's weights come as base weights plus a separate adapter file."""
    ft = getattr(spec, "finetune", None)
    return ft is not None and ft.adapter is not None and not ft.merged


def load_run_model(spec: RunSpec, weights, registry: Registry | None = None) -> Decoder:
    """:func:`build_run_model` with the weights file ``weights`` loaded into it (and, for a run
    fine-tuned with an unmerged adapter, the adapter file beside it)."""
    from pathlib import Path

    from corekit.weights import load_weights

    extra, ignore = [], ()
    if unmerged_adapter(spec):
        from corekit.finetune.model import ADAPTER_FILE

        extra = [Path(weights).parent / ADAPTER_FILE]
        ignore = ("lm_head.weight",) if spec.finetune.task == "classify" else ()  # the base's, replaced
    return load_weights(build_run_model(spec, registry), weights, *extra, ignore=ignore)


def plain_spec(spec: RunSpec) -> RunSpec:
    """``spec`` as it reads once an unmerged adapter is folded into the weights (itself otherwise)."""
    if not unmerged_adapter(spec):
        return spec
    return spec.model_copy(update={"finetune": spec.finetune.model_copy(update={"merged": True})})


def load_plain_model(spec: RunSpec, weights, registry: Registry | None = None) -> Decoder:
    """:func:`load_run_model`, with an unmerged adapter folded into the weights: the plain model
    export and compressors work on (its spec is :func:`plain_spec`)."""
    reg = _registry(registry)
    model = load_run_model(spec, weights, reg)
    if unmerged_adapter(spec):
        model = reg.build("adapter", spec.finetune.adapter).merge(model)
    return model


def build_tokenizer(spec: RunSpec, registry: Registry | None = None) -> Tokenizer:
    """Build the tokenizer a run spec names (untrained, for tokenizers that need training), with
    the spec's ``tokenizer.added_tokens`` after its vocabulary; ``.load(run.tokenizer)`` it for a run's."""
    from corekit.tokenizer import with_added_tokens

    return with_added_tokens(_registry(registry).build("tokenizer", spec.tokenizer), spec.tokenizer.added_tokens)
