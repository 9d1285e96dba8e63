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
    from torch import nn

    from corekit.modules.block import Block, norms_per_block
    from corekit.modules.decoder import Decoder

    reg = _registry(registry)
    model_spec = getattr(spec, "model", spec)
    vocab = vocab_size or model_spec.vocab_size
    if vocab is None:
        raise CorekitError(
            "model.vocab_size is unknown: set it in the spec, or use a tokenizer whose size "
            "is known before training"
        )
    ctx = model_spec.context(vocab)
    attention, feedforward = model_spec.attention, model_spec.mlp
    blocks: list[nn.Module] = []
    for _ in range(ctx.n_layers):
        kernel = reg.build("attention_kernel", attention.kernel, ctx)
        attn = reg.build("attention", attention, ctx, kernel)
        act = reg.build("activation", feedforward.activation, ctx)
        mlp = reg.build("feedforward", feedforward, ctx, act)
        norms = [reg.build("norm", model_spec.norm, ctx) for _ in range(norms_per_block(ctx.layout))]
        blocks.append(Block(ctx.layout, attn, mlp, norms, ctx.dropout))
    # A post-norm block already ends in a norm (Vaswani et al. 2017): no final norm.
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


def build_tokenizer(spec: RunSpec, registry: Registry | None = None) -> Tokenizer:
    """Build the tokenizer a run spec names (untrained, for tokenizers that need training), with
    the spec's ``tokenizer.added_tokens`` after its vocabulary; ``.load(run.tokenizer)`` it for a run's."""
    from corekit.tokenizer import with_added_tokens

    return with_added_tokens(_registry(registry).build("tokenizer", spec.tokenizer), spec.tokenizer.added_tokens)
