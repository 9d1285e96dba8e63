"""Model weights as safetensors, with the resolved spec and plugin versions in the metadata.

Nothing pickled is written or read. A tied LM head is stored once (safetensors refuses
shared tensors) and re-tied on load.
"""

from __future__ import annotations

import json
from pathlib import Path

from corekit.errors import CorekitError
from corekit.io import atomic_write_bytes


def save_weights(model, spec, registry, path: str | Path) -> Path:
    """Write ``model``'s weights to ``path`` atomically, with the spec in the metadata."""
    from safetensors.torch import save

    from corekit import __version__
    from corekit.spec import spec_to_dict

    tied = model.lm_head.weight is model.tok_emb.weight
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    m = spec.model
    used = {("attention", m.attention.name), ("attention_kernel", m.attention.kernel.name), ("norm", m.norm.name),
            ("activation", m.mlp.activation.name), ("positional", m.position.name), ("tokenizer", spec.tokenizer.name)}
    sources = {(kind, name): registry.get(kind, name).source for kind, name in used}
    plugins = {f"{kind}:{name}": f"{src.package} {src.version}".strip() for (kind, name), src in sorted(sources.items())}
    metadata = {"format": "corekit-weights", "corekit": __version__, "spec": json.dumps(spec_to_dict(spec)),
                "plugins": json.dumps(plugins), "tied_embeddings": str(tied)}
    return atomic_write_bytes(path, save(state, metadata=metadata))


def load_weights(model, path: str | Path):
    """Load weights written by :func:`save_weights` into ``model`` (shapes must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CorekitError(f"cannot read weights {path}: {exc}") from None
    tied = model.lm_head.weight is model.tok_emb.weight
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise CorekitError(
            f"{path} does not fit the spec's model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model
