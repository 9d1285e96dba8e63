"""``corekit compress``: a trained run -> a compressed run directory and its report.

The new run has the layout of any run (``spec.toml``, ``tokenizer.json``, ``data/`` as hard
links, ``model.safetensors``), so ``eval``, ``generate``, ``export onnx`` and further
compressors take it unchanged; its spec lists every compressor applied so far in its
``changes``. Beside it, ``compress-report.json`` holds the figures before and after:
parameters, weight file size, validation perplexity, KL from the source model's predictions
and CPU decode tokens/s, measured side by side in one process. Everything is written into a
temporary directory beside ``--out`` and renamed into place only when the compressed model
saved, reloaded and measured; a refused or failed compression leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from corekit.errors import CorekitError, SpecError, SpecIssue
from corekit.io import (
    atomic_write_text,
    check_replaceable,
    file_sha256,
    staged_dir,
)
from corekit.plugins import get_registry

REPORT = "compress-report.json"
FORMAT = "corekit-compress-report"


def compressor_params(name: str, overrides: Iterable[str] = (), registry=None, fields: Mapping[str, Any] | None = None):
    """Validated params of the compressor ``name`` with ``field=value`` overrides (``--set``)."""
    from pydantic import BaseModel, ValidationError, create_model

    from corekit.params import Slot
    from corekit.spec import apply_overrides
    from corekit.spec_errors import format_errors

    registry = registry or get_registry()
    registry.get("compressor", name)  # an unknown name lists the available ones
    try:
        data = apply_overrides({"compressor": {**(fields or {}), "name": name}},
                               [f"compressor.{item}" for item in overrides])
    except SpecError as exc:
        raise SpecError([SpecIssue("--set", i.message.replace("'compressor.", "'", 1)) for i in exc.issues]) from None
    slot = Slot["compressor"]  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
    holder = registry.resolve(create_model("CompressorChoice", __base__=BaseModel, compressor=(slot, ...)))
    try:
        return holder.model_validate(data).compressor
    except ValidationError as exc:
        issues = [SpecIssue(i.path.replace("compressor.", f"{name}.", 1) if i.path.startswith("compressor") else i.path,
                            i.message) for i in format_errors(exc, data, registry)]
        raise SpecError(issues, f"--with {name}") from None


def check_out(out: Path, source: Path) -> None:
    """Refuse an ``--out`` that is the source run, a file, or a non-empty directory that is
    not a compressed run (an earlier compressed run there is replaced whole)."""
    if out.exists() and out.resolve() == source.resolve():
        raise CorekitError(f"--out {out} is the run being compressed; give a new directory")
    check_replaceable(out, REPORT, "a compressed run")


def compress_run(
    run_dir: str | Path,
    params,
    out: str | Path,
    *,
    registry=None,
    measure_speed: bool = True,
    val_windows: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compress the trained run ``run_dir`` with the compressor ``params`` into the new run ``out``.

    Args:
        params: a compressor's validated params (see :func:`compressor_params`).
        measure_speed: also time CPU decoding before and after.
        val_windows: validation windows scored (default: the run's ``data.val_windows``).

    Returns:
        The report, as written to ``out/compress-report.json``.

    Raises:
        CorekitError: the run is not trained, ``out`` is taken, or the compressor refuses
            the run; nothing is written then.
    """
    import torch

    from corekit.compress.base import SourceRun
    from corekit.compress.measure import decode_speed, figures, kl_from
    from corekit.run import Run, load_run_model
    from corekit.rundir import RunDir
    from corekit.spec import load_spec, spec_to_dict
    from corekit.weights import save_weights

    say = progress or (lambda message: None)
    opened = Run.open(run_dir, registry)
    registry, run, spec = opened.registry, opened.dir, opened.spec
    out = Path(out)
    check_out(out, run.path)
    # a run fine-tuned with an unmerged adapter is compressed as the plain model it stands for
    source = SourceRun.of(opened)
    compressor = registry.build("compressor", params)
    compressor.check(source)

    with staged_dir(out) as tmp:
        work = tmp / ".work"
        work.mkdir()
        torch.manual_seed(spec.train.seed)
        result = compressor.compress(source, work, say)
        shutil.rmtree(work)
        data = spec_to_dict(result.spec)
        data.pop("compress", None)  # done: the new run's spec records it in `changes`
        history = [] if compressor.new_model else spec_to_dict(source.spec).get("changes", [])
        data["changes"] = [*history, {"compressor": spec_to_dict(params)}]
        new_spec = load_spec(data, registry=registry)  # the new run's spec must validate
        RunDir(tmp).derive(new_spec, run)
        weights = tmp / "model.safetensors"
        result.model.eval()
        save_weights(result.model, new_spec, registry, weights)

        say("reloading the compressed run and measuring it")
        after = load_run_model(new_spec, weights, registry).eval()  # what eval/generate/export will see
        before = source.load_model()
        classifier = bool(source.spec.change_params("head"))  # scores classes: no token-level figures
        data_dir = run.data if source.has_data() and not classifier else None
        windows = val_windows or spec.data.val_windows
        report: dict[str, Any] = {
            "format": FORMAT,
            "compressor": spec_to_dict(params),
            "source": {"run": str(run.path), "weights_sha256": file_sha256(source.weights),
                       "changes": spec_to_dict(source.spec).get("changes", [])},
            "before": figures(before, source.weights, data_dir, spec.model.context_length, windows),
            "after": figures(after, weights, data_dir, new_spec.model.context_length, windows),
            "details": result.details,
            "notes": [],
        }
        if classifier:
            report["notes"].append("a classifier: perplexity, KL and decode speed (token-level figures) do not apply")
        elif data_dir is None:
            report["notes"].append(f"{run.data} holds no prepared data: perplexity and KL not measured")
        else:
            report["kl_from_source"] = kl_from(before, after, data_dir, spec.model.context_length)
        if measure_speed and not classifier:
            say("timing CPU decoding, before and after")
            speed = decode_speed({"before": before, "after": after}, before.vocab_size)
            report["before"]["decode_tokens_per_s"] = speed["before"]
            report["after"]["decode_tokens_per_s"] = speed["after"]
        atomic_write_text(tmp / REPORT, json.dumps(report, indent=2) + "\n")
    report["out"] = str(out)
    return report


def report_is_current(out: Path, source_weights: Path, params) -> bool:
    """Whether ``out`` is a compressed run made by ``params`` from these source weights."""
    from corekit.spec import spec_to_dict

    try:
        report = json.loads((out / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(report, dict) and (out / "model.safetensors").is_file() and source_weights.is_file()
            and report.get("compressor") == spec_to_dict(params)
            and report.get("source", {}).get("weights_sha256") == file_sha256(source_weights))
