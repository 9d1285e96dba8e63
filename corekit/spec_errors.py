"""Spec validation errors in the user's terms: pydantic's errors as field paths of the spec,
with what is allowed (see :func:`corekit.spec.load_spec`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from corekit.errors import SpecIssue
from corekit.params import SlotMarker
from corekit.registry import Registry


def format_errors(exc: ValidationError, data: Any, registry: Registry) -> list[SpecIssue]:
    """Turn pydantic errors into :class:`SpecIssue` s with spec field paths."""
    issues: list[SpecIssue] = []
    for err in exc.errors():
        loc = _spec_loc(err["loc"], data)
        if err["type"] == "cross_field":
            for rel, msg in err["ctx"]["issues"]:
                issues.append(SpecIssue(".".join([*map(str, loc), rel]), msg))
            continue
        if err["type"] in ("unknown_component", "missing_component_name"):
            loc = [*loc, "name"]
        path = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(registry, loc[:-1], data)
            what = "section" if len(loc) == 1 else "field"
            msg = f"unknown {what} {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"expected a table, got {type(err.get('input')).__name__} {err.get('input')!r}"
        elif err["type"] not in ("unknown_component", "missing_component_name", "unknown_choice") and not isinstance(
            err.get("input"), (dict, list)
        ):
            msg += f" (got {err.get('input')!r})"
        issues.append(SpecIssue(path, msg))
    return issues


def _spec_loc(loc: tuple[Any, ...], data: Any) -> list[Any]:
    """``loc`` without the union tags pydantic inserts for discriminated unions."""
    out: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, str) and part == node and not last:
            node = {"name": node}
            continue
        if isinstance(node, dict) and part not in node and not last and isinstance(part, str):
            if node.get("name", part) == part:  # the union tag (possibly a default name)
                continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out


def _allowed_fields(registry: Registry, loc: list[Any], data: Any) -> list[str]:
    """Field names of the model at ``loc`` (for 'unknown field' messages)."""
    from corekit.spec import run_spec_type

    cls: type[BaseModel] = run_spec_type(registry, resolved=False)
    node = data
    for part in loc:
        if isinstance(part, int):  # an item of a list: the list's item model applies
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        info = cls.model_fields.get(part)
        if info is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        marker = next((m for m in info.metadata if isinstance(m, SlotMarker)), None)
        if marker is not None:
            name = node if isinstance(node, str) else (node or {}).get("name", registry.defaults.get(marker.kind))
            if not isinstance(name, str) or (marker.kind, name) not in registry:
                return []
            cls = registry.get(marker.kind, name).params
            continue
        candidates = [info.annotation, *getattr(info.annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
        cls = model
    return list(cls.model_fields)
