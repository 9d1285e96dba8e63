"""Model surgery for fine-tuning: the classification head, a larger vocabulary, freezing.

The classification head takes the LM head's place (``model.lm_head``), so the decoder's
forward returns per-position class logits ``(B, T, n_labels)`` and everything that runs a
decoder (export included) runs a classifier unchanged; pooling picks the last real token's
logits or averages them over real tokens. Averaging logits equals classifying the averaged
hidden state, as the head is affine.
"""

from __future__ import annotations

import torch
from torch import nn



class ClassifierHead(nn.Module):
    """Hidden states -> class logits at every position: ``(B, T, d) -> (B, T, n_labels)``."""

    def __init__(self, d_model: int, n_labels: int, std: float = 0.02) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, n_labels)
        nn.init.normal_(self.proj.weight, 0.0, std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)


def attach_classifier(model: nn.Module, n_labels: int) -> nn.Module:
    """Replace ``model.lm_head`` by a :class:`ClassifierHead` (unties the embedding)."""
    model.lm_head = ClassifierHead(model.tok_emb.embedding_dim, n_labels)
    return model


def is_classifier(model: nn.Module) -> bool:
    return isinstance(getattr(model, "lm_head", None), ClassifierHead)


def pool(logits: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """Per-position logits of right-padded rows -> one row of logits each.

    Args:
        logits: (B, T, C).
        lengths: (B,) real tokens per row (padding follows them).
        pooling: ``last`` (the last real token) or ``mean`` (over real tokens).
    """
    if pooling == "last":
        index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, logits.shape[-1])  # (B, 1, C)
        return logits.gather(1, index).squeeze(1)
    mask = (torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]).to(logits.dtype)  # (B, T)
    return (logits * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(logits.dtype)


def resize_vocab(model: nn.Module, size: int) -> int:
    """Grow the token embedding (and an untied LM head) to ``size`` rows; new rows start at the
    mean of the old ones, so new tokens begin as an average token (Hewitt 2021, "Initializing
    new word embeddings for pretrained language models"). Returns the old size."""
    old = model.tok_emb.num_embeddings
    if size <= old:
        return old
    tied = model.lm_head.weight is model.tok_emb.weight if isinstance(model.lm_head, nn.Linear) else False
    table = model.tok_emb.weight.data
    grown = torch.cat([table, table.mean(0, keepdim=True).expand(size - old, -1)])
    model.tok_emb = nn.Embedding(size, table.shape[1], _weight=grown.clone())
    if tied:
        model.lm_head = nn.Linear(table.shape[1], size, bias=False)
        model.lm_head.weight = model.tok_emb.weight
    elif isinstance(model.lm_head, nn.Linear):
        head = model.lm_head.weight.data
        new_head = nn.Linear(head.shape[1], size, bias=False)
        new_head.weight.data = torch.cat([head, head.mean(0, keepdim=True).expand(size - old, -1)]).clone()
        model.lm_head = new_head
    model.vocab_size = size
    return old


def init_new_rows(model: nn.Module, first: int, end: int) -> list[tuple[str, nn.Parameter]]:
    """Start the rows ``first:end`` (new tokens' ids) of the token embedding, and of an untied LM
    head, at the mean of the rows before them (Hewitt 2021, "Initializing new word embeddings
    for pretrained language models"). Returns those tables by state-dict key."""
    tables = [("tok_emb.weight", model.tok_emb.weight)]
    if isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is not model.tok_emb.weight:
        tables.append(("lm_head.weight", model.lm_head.weight))
    with torch.no_grad():
        for _, table in tables:
            table[first:end] = table[:first].mean(0)
    return tables


def train_rows(param: nn.Parameter, first: int, end: int) -> None:
    """Let only rows ``first:end`` of ``param`` learn (the new tokens' embeddings, when the rest
    of the model is frozen): its gradient is zeroed elsewhere. Keep the table out of weight
    decay too, which would otherwise shrink every row."""
    param.requires_grad_(True)
    mask = torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
    mask[first:end] = 1
    param.register_hook(lambda grad: grad * mask.to(grad.device))


def exclude_from_decay(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Move ``params`` into a parameter group of ``optimizer`` without weight decay (before its
    first step): decoupled decay would shrink the frozen rows of a row-masked table."""
    ids = {id(p) for p in params}
    moved = []
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0):
            keep = [p for p in group["params"] if id(p) not in ids]
            moved += [p for p in group["params"] if id(p) in ids]
            group["params"] = keep
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    if moved:
        optimizer.add_param_group({"params": moved, "weight_decay": 0.0})


def freeze_for(model: nn.Module, trainable_blocks) -> None:
    """Full fine-tuning of part of the model: ``"all"`` trains everything; ``k`` trains the last
    ``k`` blocks, the final norm and the head (0: the head alone)."""
    if trainable_blocks != "all" and trainable_blocks > len(model.blocks):
        from corekit.errors import CorekitError

        raise CorekitError(f"finetune.trainable_blocks = {trainable_blocks}, but the model has {len(model.blocks)} "
                           f"blocks; give 0 to {len(model.blocks)}, or 'all'")
    if trainable_blocks == "all":
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    parts: list[nn.Module] = [model.lm_head]
    if trainable_blocks > 0:
        parts += [*model.blocks[len(model.blocks) - trainable_blocks:], model.norm]
    for part in parts:
        part.requires_grad_(True)
    if not is_classifier(model) and model.lm_head.weight is model.tok_emb.weight:
        model.tok_emb.weight.requires_grad_(True)  # the tied head is the embedding


