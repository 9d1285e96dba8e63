"""Model weights as safetensors, with the resolved spec and plugin versions in the metadata.

Nothing pickled is written or read. A tensor shared by several modules (a tied LM head) is
stored once under its first name (safetensors refuses shared tensors); the model being
loaded shares it again, so the other names may be absent from the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import AbstractSet

from corekit.errors import CorekitError
from corekit.io import atomic_write_checked, check_checksum


def aliases(state: dict) -> dict[str, str]:
    """``{name: first name}`` for every state-dict entry that shares its tensor with an earlier one."""
    first: dict[tuple, str] = {}
    found = {}
    for name, tensor in state.items():
        if not hasattr(tensor, "untyped_storage"):
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if key in first:
            found[name] = first[key]
        else:
            first[key] = name
    return found


def _tied(model) -> bool:
    head, table = getattr(model, "lm_head", None), getattr(model, "tok_emb", None)
    source = getattr(table, "source", None)  # a quantized embedding reads a table it may share
    if callable(source):
        return source() is head
    return head is not None and getattr(head, "weight", None) is getattr(table, "weight", False)


#: ``{table}.rows_from.{first}`` holds rows ``first:`` of ``table`` (new tokens' embeddings beside a
#: base file that holds the table before them)
ROWS = re.compile(r"^(?P<table>.+)\.rows_from\.(?P<first>\d+)$")


def save_weights(model, spec, registry, path: str | Path, *, only: set[str] | None = None,
                 exclude: AbstractSet[str] = frozenset(), rows: dict[str, int] | None = None) -> Path:
    """Write ``model``'s weights to ``path`` atomically, with the spec in the metadata.

    Args:
        only: keep just these state-dict keys (an adapter file).
        exclude: drop these keys.
        rows: ``{key: first}``: also store rows ``first:`` of these tables, as
            ``{key}.rows_from.{first}`` (the new tokens' rows, beside a base file with the rest).
    """
    from safetensors.torch import save

    from corekit import __version__
    from corekit.spec import change_kind, spec_to_dict

    full = model.state_dict()
    shared = aliases(full)
    state = {k: v.detach().contiguous().cpu() for k, v in full.items()
             if k not in shared and k not in exclude and (only is None or k in only)}
    for key, first in (rows or {}).items():
        state[f"{key}.rows_from.{first}"] = full[key][first:].detach().contiguous().cpu()
    shared = {k: v for k, v in shared.items() if v in state}
    m = spec.model
    used = {("attention", m.attention.name), ("attention_kernel", m.attention.kernel.name), ("norm", m.norm.name),
            ("activation", m.mlp.activation.name), ("feedforward", m.mlp.name), ("positional", m.position.name),
            ("tokenizer", spec.tokenizer.name)}
    used |= {(kind, params.name) for kind, params in map(change_kind, getattr(spec, "changes", []))}
    ft = getattr(spec, "finetune", None)
    if ft is not None:
        used |= {("template", ft.template.name)} | ({("adapter", ft.adapter.name)} if ft.adapter else set())
    sources = {(kind, name): registry.get(kind, name).source for kind, name in used}
    plugins = {f"{kind}:{name}": f"{src.package} {src.version}".strip()
               for (kind, name), src in sorted(sources.items())}
    metadata = {"format": "corekit-weights", "corekit": __version__, "spec": json.dumps(spec_to_dict(spec)),
                "plugins": json.dumps(plugins), "shared": json.dumps(shared),
                "tied_embeddings": str(_tied(model))}
    return atomic_write_checked(path, save(state, metadata=metadata))  # its sha256 recorded beside it


def load_weights(model, path: str | Path, *more: str | Path, ignore: tuple[str, ...] = ()):
    """Load weights written by :func:`save_weights` into ``model`` (shapes must match). Files in
    ``more`` (an adapter's) are read after ``path``; a key they repeat takes their tensor. Keys
    in ``ignore`` may be in the files without being in the model (a base LM head a
    classification head replaced)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state = {}
    for file in (path, *more):
        check_checksum(file, "Restore it from a copy, or train again (a run with checkpoints continues with "
                             "`corekit train SPEC --run-dir RUN --resume`)")
        try:
            state.update(load_file(str(file)))
        except (OSError, SafetensorError) as exc:
            raise CorekitError(f"cannot read weights {file}: {exc}") from None
    names = " + ".join(str(f) for f in (path, *more))
    for key in ignore:
        state.pop(key, None)
    for key, match in [(k, m) for k in state if (m := ROWS.match(k))]:
        table, first = match["table"], int(match["first"])
        if table not in state or state[table].shape[0] < first:
            raise CorekitError(f"{names}: rows from {first} on of {table!r}, but no file holds the rows before them")
        state[table] = torch.cat([state[table][:first], state.pop(key)])
    shared = aliases(model.state_dict())
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise CorekitError(f"{names} does not fit the spec's model: {exc}") from None
    missing = [k for k in missing if not (k in shared and shared[k] in state)]
    if missing or unexpected:
        raise CorekitError(
            f"{names} does not fit the spec's model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model
