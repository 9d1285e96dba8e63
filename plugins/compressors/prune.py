"""``prune``: unstructured magnitude pruning, or structured removal of heads and MLP neurons.

- **Unstructured** (Han et al. 2015, "Learning both Weights and Connections for Efficient
  Neural Networks", arXiv:1506.02626): the smallest-magnitude weights of every Linear inside
  the blocks are set to zero, with one threshold over all of them (``scope = "global"``) or
  the same share in each (``"layer"``). Shapes do not change; the zeros are made permanent.
- **Structured**: whole attention heads (Michel et al. 2019, "Are Sixteen Heads Really Better
  than One?", arXiv:1905.10650) and MLP neurons are removed, the same number in every layer so
  the spec stays uniform, giving a smaller spec and model. Units are ranked by their mean
  contribution on training windows (activation-based width pruning as in LLM-Pruner, Ma et
  al. 2023, arXiv:2305.11627, and Minitron, Muralidharan et al. 2024, arXiv:2407.14679), or
  by weight norms alone. For GQA a unit is a KV group (its key/value head and the query heads
  reading it), so the query/KV ratio is kept; for MQA it is a query head (the one KV head stays).

Either may be followed by a short recovery fine-tuning (``recover_steps``) with the run's
trainer; under unstructured pruning the masks stay attached meanwhile, so pruned weights
receive no gradient and stay zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from corekit.compress.base import Compressed, Compressor, SourceRun
from corekit.errors import CorekitError

#: tokens scored at once when computing each head's write to the residual stream (bounds memory)
_CHUNK = 1024


# --------------------------------------------------------------------------- unstructured
def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside ``model.blocks`` by name: attention and MLP projections.

    Embeddings, the LM head, norms and biases are left alone: they are small, and the
    embedding (often tied to the head) is where magnitude pruning hurts most.
    """
    return {f"blocks.{name}": m for name, m in model.blocks.named_modules() if isinstance(m, nn.Linear)}


def attach_masks(model: nn.Module, sparsity: float, scope: str) -> dict[str, nn.Linear]:
    """Attach L1 magnitude masks zeroing ``round(sparsity * n)`` prunable weights, counted over
    all of them (``scope="global"``) or in each Linear (``"layer"``). Returns the Linears."""
    linears = prunable_linears(model)
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for m in linears.values()],
                                        pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    else:
        for module in linears.values():
            torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    return linears


def make_permanent(linears: dict[str, nn.Linear]) -> int:
    """Fold the masks into the weights (``prune.remove``) and check every masked weight is
    zero; returns how many were masked."""
    masks = {name: m.weight_mask.detach().clone() for name, m in linears.items()}
    for module in linears.values():
        torch_prune.remove(module, "weight")
    for name, mask in masks.items():
        if torch.count_nonzero(linears[name].weight.detach()[mask == 0]):
            raise RuntimeError(f"prune: masked weights of {name} are no longer zero")  # a bug, not a user error
    return sum(int((mask == 0).sum()) for mask in masks.values())


# --------------------------------------------------------------------------- structured plan
@dataclass(frozen=True)
class HeadUnits:
    """How one layer's heads group into the units structured pruning removes."""

    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def count(self) -> int:
        """Units per layer: KV groups when there are several KV heads, else query heads."""
        return self.n_kv_heads if self.n_kv_heads > 1 else self.n_heads

    @property
    def per_unit(self) -> int:
        """Query heads per unit."""
        return self.n_heads // self.count

    @property
    def owns_kv(self) -> bool:
        """Whether a unit takes its own key/value head with it (MHA, GQA); MQA's is shared."""
        return self.n_kv_heads > 1

    def query_heads(self, units: Iterable[int]) -> list[int]:
        """Query heads of ``units``: query head h reads KV head h // per_unit."""
        return [u * self.per_unit + j for u in units for j in range(self.per_unit)]

    def kv_heads(self, units: Iterable[int]) -> list[int]:
        """KV heads that remain when ``units`` are kept."""
        return list(units) if self.owns_kv else list(range(self.n_kv_heads))


def removed_count(share: float, units: int) -> int:
    """``share`` of ``units`` rounded half up, leaving at least one unit."""
    return max(0, min(math.floor(share * units + 0.5), units - 1))


@dataclass(frozen=True)
class Plan:
    """What structured pruning removes from every layer."""

    heads: HeadUnits
    remove_units: int
    hidden_dim: int
    remove_neurons: int
    gated: bool

    @property
    def keep_units(self) -> int:
        return self.heads.count - self.remove_units

    @property
    def keep_neurons(self) -> int:
        return self.hidden_dim - self.remove_neurons


def plan_structured(model_spec, params) -> Plan:
    """The :class:`Plan` for a ``[model]`` section and :class:`PruneParams`."""
    att = model_spec.attention
    head_dim = att.head_dim or model_spec.d_model // att.n_heads
    heads = HeadUnits(att.n_heads, att.kv_heads, head_dim)
    head_share = params.heads if params.heads is not None else params.sparsity
    neuron_share = params.neurons if params.neurons is not None else params.sparsity
    hidden = model_spec.mlp.hidden_dim
    return Plan(heads, removed_count(head_share, heads.count), hidden, removed_count(neuron_share, hidden),
                model_spec.mlp.gated)


def _parts(block: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    """A block's fused qkv and output projections and its feed-forward up and down projections,
    as its attention and feed-forward modules lay them out (``head_layout``, ``hidden_units``)."""
    heads, units = block.attn.head_layout(), block.mlp.hidden_units()
    return (block.attn.get_submodule(heads.qkv), block.attn.get_submodule(heads.out),
            block.mlp.get_submodule(units.up), block.mlp.get_submodule(units.down))


def pruned_model_spec(model_spec, plan: Plan):
    """``model_spec`` with the heads and hidden width left by ``plan`` (head width kept explicit)."""
    att = model_spec.attention
    if plan.remove_units:
        update = {"n_heads": plan.keep_units * plan.heads.per_unit, "head_dim": plan.heads.head_dim}
        if plan.heads.owns_kv and "n_kv_heads" in type(att).model_fields:
            update["n_kv_heads"] = plan.keep_units
        att = att.model_copy(update=update)
        expected = plan.keep_units if plan.heads.owns_kv else plan.heads.n_kv_heads
        if att.kv_heads != expected:
            raise CorekitError(f"prune: attention {att.name!r} cannot express {att.n_heads} query heads with "
                               f"{expected} key/value heads; use heads=0")
    mlp = model_spec.mlp.model_copy(update={"hidden_dim": plan.keep_neurons})
    return model_spec.model_copy(update={"attention": att, "mlp": mlp})


# --------------------------------------------------------------------------- importance
def _unit_writes(y: torch.Tensor, out_weight: torch.Tensor, heads: HeadUnits) -> torch.Tensor:
    """Summed L2 norms, over tokens, of what each unit writes to the residual stream.

    ``y`` is the input of ``attn.out`` (..., n_heads * head_dim); a unit's write is its heads'
    slice of ``y`` times the matching columns of ``out.weight``, summed over its heads.
    """
    d_model = out_weight.shape[0]
    w = out_weight.detach().float().view(d_model, heads.n_heads, heads.head_dim)  # (d, H, D)
    total = torch.zeros(heads.count)
    for chunk in y.detach().float().reshape(-1, heads.n_heads, heads.head_dim).split(_CHUNK):  # (N, H, D)
        per_head = torch.einsum("nhd,ehd->nhe", chunk, w)  # (N, H, d)
        per_unit = per_head.view(len(chunk), heads.count, heads.per_unit, d_model).sum(2)  # (N, U, d)
        total += per_unit.norm(dim=-1).sum(0)
    return total


def activation_importance(model: nn.Module, plan: Plan, batches: Iterable[torch.Tensor]
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the mean residual-stream write of each head unit and mean |activation| *
    ||down column|| of each neuron, over the tokens of ``batches`` (B, T)."""
    n_layers = len(model.blocks)
    head_sums = [torch.zeros(plan.heads.count) for _ in range(n_layers)]
    neuron_sums = [torch.zeros(plan.hidden_dim) for _ in range(n_layers)]
    tokens = 0

    def on_out(i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            head_sums[i] += _unit_writes(args[0], module.weight, plan.heads)
        return hook

    def on_down(i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            neuron_sums[i] += args[0].detach().float().abs().reshape(-1, plan.hidden_dim).sum(0)
        return hook

    handles = []
    for i, block in enumerate(model.blocks):
        _, out, _, down = _parts(block)
        handles.append(out.register_forward_pre_hook(on_out(i)))
        handles.append(down.register_forward_pre_hook(on_down(i)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for ids in batches:
                model(ids)
                tokens += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if tokens == 0:
        raise CorekitError("prune: no calibration windows were read from the run's train split")
    heads = [s / tokens for s in head_sums]
    neurons = [s / tokens * _parts(b)[3].weight.detach().float().norm(dim=0) for s, b in zip(neuron_sums, model.blocks)]
    return heads, neurons


def magnitude_importance(model: nn.Module, plan: Plan) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, data-free scores: the norm of the weights a unit reads with times the norm
    of those it writes with (a head unit: its q[, k, v] rows and its out columns; a neuron:
    its up row(s) and its down column)."""
    h = plan.heads
    heads, neurons = [], []
    for block in model.blocks:
        qkv_proj, out_proj, up_proj, down_proj = _parts(block)
        qkv, out = qkv_proj.weight.detach().float(), out_proj.weight.detach().float()
        scores = []
        for u in range(h.count):
            rows = _qkv_rows(h, [u], own_kv=h.owns_kv)
            cols = _head_cols(h, h.query_heads([u]))
            scores.append(qkv[rows].norm() * out[:, cols].norm())
        heads.append(torch.stack(scores))
        up = up_proj.weight.detach().float()
        reads = up.view(2, plan.hidden_dim, -1).norm(dim=(0, 2)) if plan.gated else up.norm(dim=1)
        neurons.append(reads * down_proj.weight.detach().float().norm(dim=0))
    return heads, neurons


def keep_top(scores: torch.Tensor, n_remove: int) -> list[int]:
    """Indices of the ``len(scores) - n_remove`` highest scores, in their original order
    (ties keep the earlier unit)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(order[: len(scores) - n_remove].tolist())


# --------------------------------------------------------------------------- structured surgery
def _head_cols(h: HeadUnits, query_heads: list[int]) -> list[int]:
    return [q * h.head_dim + i for q in query_heads for i in range(h.head_dim)]


def _qkv_rows(h: HeadUnits, units: list[int], *, own_kv: bool = True) -> list[int]:
    """Rows of the fused qkv weight ([q heads | k heads | v heads]) that ``units`` keep."""
    d = h.head_dim
    rows = _head_cols(h, h.query_heads(units))
    kv = h.kv_heads(units) if own_kv else []
    k0, v0 = h.n_heads * d, (h.n_heads + h.n_kv_heads) * d
    return rows + [k0 + g * d + i for g in kv for i in range(d)] + [v0 + g * d + i for g in kv for i in range(d)]


def _neuron_rows(plan: Plan, neurons: list[int]) -> list[int]:
    # a gated up projection is [gate | value]: a neuron owns one row in each half
    return neurons + [plan.hidden_dim + j for j in neurons] if plan.gated else neurons


def prune_structured(model: nn.Module, model_spec, plan: Plan, keep_units: list[list[int]],
                     keep_neurons: list[list[int]], registry) -> tuple[nn.Module, object]:
    """The smaller model that keeps, in layer i, head units ``keep_units[i]`` and neurons
    ``keep_neurons[i]``; it computes what ``model`` computes with the other units' output
    columns zeroed. Returns ``(model, its [model] spec)``."""
    from corekit.assemble import build_model

    new_spec = pruned_model_spec(model_spec, plan)
    state = model.state_dict()
    names = {m: n for n, m in model.named_modules()}
    for i, block in enumerate(model.blocks):
        qkv, out, up, down = (names[m] for m in _parts(block))
        rows, cols = _qkv_rows(plan.heads, keep_units[i]), _head_cols(plan.heads, plan.heads.query_heads(keep_units[i]))
        cut = {f"{qkv}.weight": (0, rows), f"{qkv}.bias": (0, rows), f"{out}.weight": (1, cols),
               f"{up}.weight": (0, _neuron_rows(plan, keep_neurons[i])),
               f"{up}.bias": (0, _neuron_rows(plan, keep_neurons[i])), f"{down}.weight": (1, keep_neurons[i])}
        for key, (dim, index) in cut.items():
            if key in state:
                state[key] = state[key].index_select(dim, torch.tensor(index, dtype=torch.long))
    pruned = build_model(new_spec, registry, vocab_size=model.vocab_size)
    pruned.load_state_dict(state)  # strict: every other tensor is copied unchanged
    return pruned.train(model.training), new_spec


def calibration_windows(source: SourceRun, n_batches: int) -> Iterator[torch.Tensor]:
    """The first ``n_batches`` batches of training windows the run's seed draws, (B, T) each."""
    from corekit.data.windows import ShardSet, TrainWindows

    spec = source.spec
    windows = TrainWindows(ShardSet(source.data, "train"), spec.model.context_length, spec.train.seed)
    size = spec.train.batch_size
    total = min(n_batches * size, len(windows))
    for start in range(0, total, size):
        yield torch.stack([windows[i][0] for i in range(start, min(start + size, total))])


# --------------------------------------------------------------------------- the compressor
class Prune(Compressor):
    """Unstructured magnitude pruning, or structured removal of heads and MLP neurons."""

    def check(self, source: SourceRun) -> None:
        super().check(source)
        p, spec = self.params, source.spec
        if p.recover_steps and not source.has_data():
            raise CorekitError(f"prune: recover_steps={p.recover_steps} fine-tunes on the run's data, "
                               f"but {source.data} holds no prepared data; "
                               "run `corekit data prepare` or set recover_steps=0")
        if p.recover_lr is not None and "lr" not in type(spec.train.optimizer).model_fields:
            raise CorekitError(f"prune: recover_lr is set but optimizer {spec.train.optimizer.name!r} has no lr field")
        if p.method != "structured":
            return
        m, registry = spec.model, source.registry
        ctx = m.context()
        attn = registry.build("attention", m.attention, ctx,
                              registry.build("attention_kernel", m.attention.kernel, ctx))
        if not callable(getattr(attn, "head_layout", None)):
            raise CorekitError(f"prune: structured pruning removes whole heads, so the attention module must say where "
                               f"its heads are (head_layout()); attention {m.attention.name!r} builds a "
                               f"{type(attn).__name__}, which does not. Use method=unstructured")
        ff = registry.build("feedforward", m.mlp, ctx, registry.build("activation", m.mlp.activation, ctx))
        if not callable(getattr(ff, "hidden_units", None)):
            raise CorekitError(f"prune: structured pruning removes hidden units, so the feed-forward module must say "
                               f"where they are (hidden_units()); feedforward {m.mlp.name!r} builds a "
                               f"{type(ff).__name__}, which does not. Use method=unstructured")
        plan = plan_structured(m, p)
        if plan.remove_units and type(m.position).depends_on_heads:
            raise CorekitError(f"prune: {m.position.name}'s per-head parameters depend on the head count "
                               f"({plan.heads.n_heads}), so removing heads would change the kept heads' attention; "
                               "set heads=0 to prune neurons only")
        if p.importance == "activation" and not source.has_data():
            raise CorekitError(f"prune: importance='activation' scores units on the run's training windows, but "
                               f"{source.data} holds no prepared data; run `corekit data prepare` or set "
                               "importance=magnitude")
        pruned_model_spec(spec.model, plan)  # an attention that cannot express the new head counts fails now

    def compress(self, source: SourceRun, work_dir: Path, progress: Callable[[str], None]) -> Compressed:
        if self.params.method == "structured":
            return self._structured(source, work_dir, progress)
        return self._unstructured(source, work_dir, progress)

    def _unstructured(self, source: SourceRun, work_dir: Path, progress: Callable[[str], None]) -> Compressed:
        p = self.params
        progress(f"zeroing the {p.sparsity:.0%} smallest block weights ({p.scope} threshold)")
        model = source.load_model()
        linears = attach_masks(model, p.sparsity, p.scope)
        details = {"method": "unstructured", "scope": p.scope, "sparsity_target": p.sparsity}
        if p.recover_steps:  # masks stay attached: pruned weights get zero gradient
            details.update(self._recover(model, source.spec, source, work_dir, progress))
        masked = make_permanent(linears)
        total = sum(m.weight.numel() for m in linears.values())
        zeroed = sum(int((m.weight == 0).sum()) for m in linears.values())
        details.update(prunable_weights=total, masked=masked, zeroed=zeroed, sparsity_achieved=zeroed / total,
                       layers=len(linears))
        return Compressed(model.eval(), source.spec.model_copy(deep=True), details)

    def _structured(self, source: SourceRun, work_dir: Path, progress: Callable[[str], None]) -> Compressed:
        p, spec = self.params, source.spec
        plan = plan_structured(spec.model, p)
        model = source.load_model()
        if p.importance == "activation":
            progress(f"scoring heads and neurons on {p.calibration_batches} batches of training windows")
            heads, neurons = activation_importance(model, plan, calibration_windows(source, p.calibration_batches))
        else:
            heads, neurons = magnitude_importance(model, plan)
        keep_units = [keep_top(s, plan.remove_units) for s in heads]
        keep_neurons = [keep_top(s, plan.remove_neurons) for s in neurons]
        progress(f"removing {plan.remove_units} of {plan.heads.count} head units and {plan.remove_neurons} of "
                 f"{plan.hidden_dim} MLP neurons per layer")
        pruned, model_spec = prune_structured(model, spec.model, plan, keep_units, keep_neurons, source.registry)
        new_spec = spec.model_copy(deep=True).model_copy(update={"model": model_spec})
        details = {
            "method": "structured", "importance": p.importance,
            "heads_before": plan.heads.n_heads, "heads_after": model_spec.attention.n_heads,
            "kv_heads_before": plan.heads.n_kv_heads, "kv_heads_after": model_spec.attention.kv_heads,
            "hidden_dim_before": plan.hidden_dim, "hidden_dim_after": plan.keep_neurons,
            "removed_head_units": [sorted(set(range(plan.heads.count)) - set(k)) for k in keep_units],
        }
        if p.recover_steps:
            details.update(self._recover(pruned, new_spec, source, work_dir, progress))
        return Compressed(pruned.eval(), new_spec, details)

    def _recover(self, model: nn.Module, spec, source: SourceRun, work_dir: Path,
                 progress: Callable[[str], None]) -> dict:
        """Fine-tune ``model`` in place for ``recover_steps`` with the run's trainer settings."""
        from corekit.train.fit import fit_steps, with_steps
        from corekit.train.module import LanguageModelTask

        p = self.params
        if p.recover_lr is not None:
            optimizer = spec.train.optimizer.model_copy(update={"lr": p.recover_lr})
            spec = spec.model_copy(update={"train": spec.train.model_copy(update={"optimizer": optimizer})})
        lr = getattr(spec.train.optimizer, "lr", None)
        progress(f"recovery fine-tuning: {p.recover_steps} steps" + (f" at lr {lr:g}" if lr is not None else ""))
        model.train()  # Lightning keeps each module's mode: a model left in eval would train without dropout
        task = LanguageModelTask(model, with_steps(spec, p.recover_steps), source.registry)
        metrics = fit_steps(task, source.data, work_dir, progress=True)
        model.cpu().eval()
        out = {"recover_steps": p.recover_steps, "recover_lr": lr}
        if "train_loss" in metrics:
            out["recover_train_loss"] = metrics["train_loss"]
        return out


def build(params) -> Prune:
    """The ``prune`` compressor."""
    return Prune(params)
