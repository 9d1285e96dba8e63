"""The export bundle's manifest, ``corekit-export.json``: what the bundle holds and how to check it.

A bundle is a directory with ``model.onnx`` (plus ``model.onnx.data`` when the weights are
over 2 GB), ``tokenizer.json`` (a HF ``tokenizers`` file) and this manifest. The manifest
carries the format name and version, the resolved model spec, the graph's input and output
names and shapes, the cache layout, special tokens, dtype, opset, the corekit version that
wrote it and the sha256 of every other file. Torch-free: the edge runtime reads it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from corekit.errors import CorekitError
from corekit.io import file_sha256

MANIFEST = "corekit-export.json"
MODEL = "model.onnx"
TOKENIZER = "tokenizer.json"
FORMAT = "corekit-export"
#: bump when a reader of the previous version could not use a new bundle correctly
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "files", "model", "cache", "inputs", "outputs", "tokenizer", "dtype", "opset")


def file_entries(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": ..., "bytes": ...}}`` for the named files of ``directory``."""
    return {name: {"sha256": file_sha256(directory / name), "bytes": (directory / name).stat().st_size}
            for name in names}


def read_manifest(bundle: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Read and check a bundle's manifest.

    Args:
        bundle: the bundle directory.
        verify: also check every listed file's size and sha256.

    Raises:
        CorekitError: the directory, manifest or a listed file is missing, the manifest is
            not valid JSON or not a corekit export manifest, it comes from a newer
            incompatible format version, or a file does not match its sha256.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise CorekitError(f"{bundle} is not a directory; pass the directory written by `corekit export onnx`")
    path = bundle / MANIFEST
    if not path.is_file():
        raise CorekitError(
            f"{bundle} has no {MANIFEST}; it is not a corekit export bundle (or the export did not finish)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorekitError(f"{path} is not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CorekitError(f"{path} is not a corekit export manifest (format {found!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CorekitError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CorekitError(
            f"{bundle} uses bundle format version {version}, but this corekit reads versions up to "
            f"{FORMAT_VERSION}; it was written by a newer corekit ({manifest.get('corekit_version', 'unknown')}). "
            "Upgrade corekit (pip install -U 'corekit[edge]') to run it"
        )
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise CorekitError(f"{path} lacks the fields {missing}; re-export the bundle")
    check_fields(path, manifest)
    if verify:
        verify_files(bundle, manifest["files"])
    return manifest


def check_fields(path: Path, manifest: dict[str, Any]) -> None:
    """Raise a :class:`CorekitError` naming every manifest field the runtime needs that is
    missing or of the wrong type, including a file list that leaves out the model or tokenizer."""
    problems = []

    def need(section: str, keys: tuple[str, ...], kind: type) -> None:
        table = manifest.get(section)
        if not isinstance(table, dict):
            problems.append(f"{section} must be a table")
            return
        problems.extend(f"{section}.{key} must be {kind.__name__}" for key in keys
                        if not isinstance(table.get(key), kind) or isinstance(table.get(key), bool))

    need("cache", ("n_layers", "n_kv_heads", "head_dim"), int)
    need("model", ("vocab_size", "context_length"), int)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int)
        for e in files.values()
    ):
        problems.append("files must map each file name to {sha256, bytes}")
    elif not {MODEL, TOKENIZER} <= set(files) or (
        (path.parent / (MODEL + ".data")).exists() and MODEL + ".data" not in files
    ):
        problems.append(f"files must list {MODEL}, {TOKENIZER} (and {MODEL}.data when present)")
    if not isinstance(manifest.get("tokenizer"), dict):
        problems.append("tokenizer must be a table")
    if not isinstance(manifest.get("inputs"), list) or not all(
        isinstance(i, dict) and "name" in i for i in manifest["inputs"]
    ):
        problems.append("inputs must be a list of {name, ...}")
    if problems:
        raise CorekitError(f"{path} is damaged or hand-edited: {'; '.join(problems)}; re-export the bundle")


def verify_files(bundle: Path, files: dict[str, dict[str, Any]]) -> None:
    """Check that each listed file exists with its recorded size and sha256."""
    for name, entry in files.items():
        path = bundle / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CorekitError(f"{bundle / MANIFEST} lists {name!r}, which is outside the bundle")
        if not path.is_file():
            raise CorekitError(f"{bundle} is missing {name}, which its manifest lists; copy the whole bundle directory")
        if path.stat().st_size != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
            raise CorekitError(
                f"{path} does not match the sha256 in {MANIFEST} (expected {entry.get('sha256')}, "
                f"{entry.get('bytes')} bytes): the file was changed or damaged after export; re-export or copy it again"
            )
