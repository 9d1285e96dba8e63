"""Spec files as plain data: reading TOML/JSON, ``--set`` overrides, and the nesting bound.

Nothing here knows the spec's models (:mod:`corekit.spec` validates the data); it only turns a
file and its overrides into a dict, refusing what the parsers or the validator could not take.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from corekit.errors import SpecError, SpecIssue

#: the deepest nesting of tables and arrays a spec may have (real specs stay under 6); deeper
#: data would exhaust Python's recursion limit in the TOML parser or the validator
MAX_SPEC_DEPTH = 64


def nesting_depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar is 0, ``{"a": [1]}`` is 2).

    Iterative, so it measures data too deep for the recursive code it protects.
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Iterable[Any] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_SPEC_DEPTH:  # no need to walk further
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(what: str) -> str:
    return f"{what} is nested too deeply; a spec may nest tables and arrays at most {MAX_SPEC_DEPTH} levels"


def check_depth(data: Any, source: str | None = None) -> None:
    """A :class:`SpecError` if ``data`` nests deeper than :data:`MAX_SPEC_DEPTH`."""
    if nesting_depth(data) > MAX_SPEC_DEPTH:
        raise SpecError([SpecIssue("", _too_deep(f"the spec {source}" if source else "the spec"))], source)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML or JSON spec file into a dict (a :class:`SpecError` if unreadable or nested
    more than :data:`MAX_SPEC_DEPTH` levels deep)."""
    path = Path(path)
    if not path.is_file():
        problem = f"file {path} does not exist" if not path.exists() else f"{path} is not a file"
        raise SpecError([SpecIssue("", problem)], str(path))
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid TOML: {exc}")], str(path)) from None
    except json.JSONDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid JSON: {exc}")], str(path)) from None
    except RecursionError:  # the parsers recurse once per level of nesting
        raise SpecError([SpecIssue("", _too_deep(f"the spec {path}"))], str(path)) from None
    if not isinstance(data, dict):
        raise SpecError([SpecIssue("", "a spec must be a table/object of sections")], str(path))
    check_depth(data, str(path))
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides; values parse as TOML, else as strings."""
    check_depth(data)  # deepcopy recurses too
    data = copy.deepcopy(data)  # TOML values may be dates, which a JSON round-trip cannot copy
    issues = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            issues.append(SpecIssue("--set", f"{item!r} is not of the form section.field=value"))
            continue
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
            too_deep = len(parts) + nesting_depth(value) > MAX_SPEC_DEPTH
        except tomllib.TOMLDecodeError:
            value, too_deep = raw, False
        except RecursionError:
            too_deep = True
        if too_deep:
            shown = item if len(item) <= 60 else f"{item[:40]}...{item[-10:]}"
            issues.append(SpecIssue("--set", _too_deep(f"the value of {shown!r}")))
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):  # a component given by name only
                child = {"name": child}
            elif not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    if issues:
        raise SpecError(issues)
    return data
