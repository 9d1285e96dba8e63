"""Every kind of plugin component, in one table.

A component of a kind is a Params model (derived from the kind's ``params`` base) plus a
``build`` function called exactly as :attr:`Kind.build` says, whose product implements
:attr:`Kind.product`. The registry checks components against this table when they are added,
the ``corekit_register_components`` hook's documentation, ``corekit plugins --kinds``, the JSON
Schema's descriptions and the plugin author's guide (docs/plugins.md) are all read from it,
and a test builds every built-in component and checks its product against it.

Importing this module is cheap (the hook specs read it when ``import corekit`` runs): it names
the Params bases and product interfaces as ``"module:attr"`` strings and imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any



@dataclass(frozen=True)
class Kind:
    """One kind of component and its contract."""

    #: the kind's name, as in ``registry.add(kind, ...)`` and ``[defaults]`` of registry.toml
    name: str
    #: the base class every Params model of this kind derives from, as ``"module:attr"``
    params_base: str
    #: the exact call corekit makes: ``build(params, ...)`` with the arguments it passes
    build: str
    #: the class or interface the product is an instance of, as ``"module:attr"``
    product: str
    #: one line: what a component of this kind is for
    contract: str
    #: more on what the product must do (its methods and shapes)
    details: str = ""
    #: the spec field(s) where components of this kind are chosen
    spec_fields: tuple[str, ...] = ()
    #: whether its products change a built model and are recorded in a run spec's ``changes``
    #: list (they implement :class:`corekit.change.ModelChange`)
    change: bool = False

    @property
    def params(self) -> type:
        """The Params base class, imported (pydantic)."""
        return _load(self.params_base)

    def product_class(self) -> type:
        """The product interface, imported (this imports torch for the model parts)."""
        return _load(self.product)

    def signature(self) -> str:
        """``build(...) -> product``, for messages and docs."""
        return f"{self.build} -> {self.product.replace(':', '.')}"


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


KIND_LIST: tuple[Kind, ...] = (
    Kind(
        "tokenizer", "corekit.params:TokenizerParams", "build(params)", "corekit.tokenizer:Tokenizer",
        "turns text into token ids and back",
        "encode/decode, special tokens at fixed ids; train(texts) for tokenizers that learn a vocabulary, "
        "save/load to one JSON file, and edge_json() for the torch-free runtime",
        ("tokenizer",),
    ),
    Kind(
        "attention", "corekit.params:AttentionParams", "build(params, ctx, kernel)", "torch.nn:Module",
        "mixes information across positions (multi-head, grouped-query, ...)",
        "forward(x, batch, cache) -> (B, T, d_model); kernel is the built attention_kernel. Modules whose heads "
        "structured pruning may remove expose head_layout() -> corekit.modules.attention.HeadLayout",
        ("model.attention",),
    ),
    Kind(
        "attention_kernel", "corekit.params:Params", "build(params, ctx)", "torch.nn:Module",
        "computes softmax(QK^T / sqrt(d)) V for an attention module",
        "forward(q, k, v, bias, is_causal, dropout_p) with q (B, H, Tq, D), k and v (B, H, Tk, D) -> (B, H, Tq, D)",
        ("model.attention.kernel",),
    ),
    Kind(
        "norm", "corekit.params:Params", "build(params, ctx)", "torch.nn:Module",
        "normalises the residual stream",
        "forward(x) maps (..., d_model) to the same shape",
        ("model.norm",),
    ),
    Kind(
        "activation", "corekit.params:ActivationParams", "build(params, ctx)", "torch.nn:Module",
        "the feed-forward block's non-linearity (plain or gated)",
        "forward(h); a gated activation (Params class attribute gated = True) receives twice the hidden width "
        "and returns the hidden width",
        ("model.mlp.activation",),
    ),
    Kind(
        "feedforward", "corekit.params:FeedForwardParams", "build(params, ctx, activation)", "torch.nn:Module",
        "the position-wise block after attention (a dense MLP, a mixture of experts, ...)",
        "forward(x) maps (B, T, d_model) to (B, T, d_model); activation is the built activation component. "
        "Params fill their shape-dependent defaults in complete(ctx). Modules whose hidden units structured "
        "pruning may remove expose hidden_units() -> corekit.modules.mlp.HiddenUnits",
        ("model.mlp",),
    ),
    Kind(
        "positional", "corekit.params:PositionalParams", "build(params, ctx)", "corekit.modules.positional:Positional",
        "tells the model where each token is",
        "overrides what it needs of prepare/embed/rotate/score_bias; Params set the class attribute "
        "depends_on_heads = True when the scheme has per-head parameters (ALiBi's slopes)",
        ("model.position",),
    ),
    Kind(
        "optimizer", "corekit.params:OptimizerParams", "build(params, model)", "torch.optim:Optimizer",
        "updates the weights from gradients",
        "model is the nn.Module being trained (only parameters with requires_grad train); "
        "corekit.optim.decay_groups(model, params) splits them into decayed and undecayed groups",
        ("train.optimizer",),
    ),
    Kind(
        "scheduler", "corekit.params:Params", "build(params, optimizer, max_steps)",
        "torch.optim.lr_scheduler:LRScheduler",
        "sets the learning rate at each optimizer step",
        "stepped once per optimizer step, max_steps times",
        ("train.scheduler",),
    ),
    Kind(
        "compressor", "corekit.params:Params", "build(params)", "corekit.compress.base:Compressor",
        "makes a trained model smaller or faster (quantize, prune, distill)",
        "check(source) refuses before anything is written; compress(source, work_dir, progress) -> Compressed; "
        "restore(model) gives a freshly built model the structure of the compressed weights",
        ("compress", "changes"),
        change=True,
    ),
    Kind(
        "head", "corekit.params:HeadParams", "build(params)", "corekit.change:Head",
        "replaces the LM head with scores over named classes (a classifier)",
        "restore(model) puts the head in model.lm_head, so forward returns (B, T, len(labels)); "
        "labels and pooling say how to read its output",
        ("changes",),
        change=True,
    ),
    Kind(
        "template", "corekit.params:Params", "build(params)", "corekit.finetune.template:Template",
        "renders instructions and conversations as prompt text for instruction tuning",
        "render(messages) -> segments with a train mask; prompt(messages); special_tokens; stop",
        ("finetune.template",),
    ),
    Kind(
        "stage", "corekit.params:StageParams", "build(params)", "corekit.stage:Stage",
        "one step of a run (tokenizer, data, train, ...): owns a spec section, knows whether its outputs "
        "are current, and runs",
        "section and section_field() give its top-level spec section (the run spec is assembled from them); "
        "order places it in corekit run; wanted(spec), current(ctx) and run(ctx) decide and do the work",
        ("<its own section>",),
    ),
    Kind(
        "adapter", "corekit.params:Params", "build(params)", "corekit.finetune.adapter:Adapter",
        "adds a few trainable weights to a frozen model for fine-tuning (LoRA)",
        "apply(model), state(model), merge(model), disabled(model); as a change, restore(model) applies it "
        "and fold(model) merges it",
        ("finetune.adapter", "changes"),
        change=True,
    ),
)

#: every kind by name, in the order above
KINDS: dict[str, Kind] = {kind.name: kind for kind in KIND_LIST}
#: the kinds whose components a run spec's ``changes`` list records
CHANGE_KINDS: tuple[str, ...] = tuple(kind.name for kind in KIND_LIST if kind.change)


def kinds_markdown() -> str:
    """The kinds table as Markdown (the plugin author's guide embeds it)."""
    rows = ["| kind | Params base | build | product | what it is |", "| --- | --- | --- | --- | --- |"]
    for kind in KIND_LIST:
        base = kind.params_base.replace(":", ".")
        rows.append(f"| `{kind.name}` | `{base}` | `{kind.build}` | `{kind.product.replace(':', '.')}` | "
                    f"{kind.contract} |")
    return "\n".join(rows)


def describe(kind: str) -> dict[str, Any]:
    """One kind's contract as plain data (``corekit plugins --kinds --json``)."""
    k = KINDS[kind]
    return {"kind": k.name, "params": k.params_base.replace(":", "."), "build": k.build,
            "product": k.product.replace(":", "."), "contract": k.contract, "details": k.details,
            "spec_fields": list(k.spec_fields), "change": k.change}
