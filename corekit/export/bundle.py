"""``corekit export onnx``: a trained run -> a self-contained, verified edge bundle.

Steps: build the run's model and load its weights; let plugins swap in export-friendly
modules (``corekit_prepare_export``); trace the graph with its KV cache; check it in
onnxruntime against PyTorch (fp32, max abs logit difference <= ``tolerance``); optionally
quantize it to int8 and score both graphs' validation perplexity; write the tokenizer in HF
``tokenizers`` form and the manifest with every file's sha256. Everything is written into a
temporary directory beside ``out`` and renamed into place only when every check passed, so
a failed export leaves no half-written bundle and an existing bundle stays as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from corekit.edge.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MODEL,
    TOKENIZER,
    file_entries,
)
from corekit.errors import CorekitError
from corekit.io import _umask, check_replaceable, file_sha256, staged_dir

#: fp32 max abs logit difference allowed between onnxruntime and PyTorch
TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """What an export wrote and measured."""

    out: Path
    quantize: str
    parity: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)
    perplexity: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _graph_bytes(path: Path) -> int:
    """Size of a graph with its external weights (``<name>.data``), if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _io(layout, vocab_size: int) -> tuple[list[dict], list[dict]]:
    from corekit.export.graph import (
        ATTENTION_MASK,
        INPUT_IDS,
        LOGITS,
        past_names,
        present_names,
    )

    kv = lambda name, length: {"name": name, "dtype": "float32",  # noqa: E731
                               "shape": ["batch", layout.n_kv_heads, length, layout.head_dim]}
    inputs = [{"name": INPUT_IDS, "dtype": "int64", "shape": ["batch", "sequence"]},
              {"name": ATTENTION_MASK, "dtype": "int64", "shape": ["batch", "past_sequence + sequence"]},
              *(kv(n, "past_sequence") for n in past_names(layout.n_layers))]
    outputs = [{"name": LOGITS, "dtype": "float32", "shape": ["batch", "sequence", vocab_size]},
               *(kv(n, "past_sequence + sequence") for n in present_names(layout.n_layers))]
    return inputs, outputs


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def bundle_is_current(out: Path, weights: Path, *, quantize: str, opset: int | None) -> bool:
    """Whether ``out`` holds an intact bundle of these weights with these export settings."""
    from corekit.edge.manifest import read_manifest

    if not (out / MANIFEST).is_file() or not weights.is_file():
        return False
    try:
        manifest = read_manifest(out)
    except CorekitError:
        return False
    source = manifest.get("source")
    return (manifest.get("quantize") == quantize and manifest.get("requested_opset") == opset
            and isinstance(source, dict) and source.get("weights_sha256") == file_sha256(weights))


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a non-empty directory that is not a bundle."""
    check_replaceable(out, MANIFEST, "a corekit bundle")


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    quantize: str = "none",
    opset: int | None = None,
    registry=None,
    tolerance: float = TOLERANCE,
    val_windows: int = 32,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a trained run to an edge bundle at ``out``; see the module docstring.

    Raises:
        CorekitError: the run has no weights, the tokenizer has no HF form, the graph does
            not trace, or its parity check fails (the message gives the figure).
    """
    from corekit import __version__
    from corekit.export.graph import export_graph
    from corekit.export.verify import parity
    from corekit.modules.quantized import dequantized_copy, quantized_modules
    from corekit.run import Run
    from corekit.spec import spec_to_dict

    say = progress or (lambda message: None)
    if quantize not in ("none", "int8"):
        raise CorekitError(f"quantize must be 'none' or 'int8', got {quantize!r}")
    run = Run.open(run_dir, registry)
    registry, weights = run.registry, run.weights
    out = Path(out)
    check_out(out)
    tokenizer = run.tokenizer
    tokenizer_json = tokenizer.edge_json()
    model = run.plain_model().eval()  # an adapter folded in: a plain, faster graph
    spec = run.plain_spec
    head = run.head
    classifier = ({"kind": "classify", "labels": list(head.labels), "pooling": head.pooling,
                   "max_length": head.max_length or spec.model.context_length}
                  if head is not None else None)  # logits over labels, not tokens
    stored = quantized_modules(model)  # a quantized run: its own integers go into the graph
    for module in stored.values():  # the graph computes the exact weight-only product, not torch.ao's
        module.kernel = "dequantize"
    traced = dequantized_copy(model).eval() if stored else model
    hook = getattr(registry, "plugin_manager", None)
    prepared = hook.hook.corekit_prepare_export(model=traced, spec=spec) if hook is not None else None
    graph_model = (prepared if prepared is not None else traced).eval()
    bits = sorted({m.bits for m in stored.values()})
    weights_type = "+".join(f"int{b}" for b in bits) if stored else ("int8" if quantize == "int8" else "float32")

    with staged_dir(out) as tmp:
        fp32 = tmp / (MODEL if quantize == "none" and not stored else "model.fp32.onnx")
        say("tracing the graph with torch.onnx (dynamo)")
        layout = export_graph(graph_model, fp32, opset=opset)
        say("checking onnxruntime against PyTorch")
        check = parity(graph_model, fp32, layout)
        check["tolerance"] = tolerance
        if not check["max_abs_logit_diff"] <= tolerance:
            raise CorekitError(
                "export check failed: onnxruntime and PyTorch logits differ by up to "
                f"{check['max_abs_logit_diff']:.3g} "
                f"(allowed {tolerance:g}) at (batch, new, past) shapes {check['cases']}; no bundle was written. "
                "A component probably behaves differently when traced; offer an export path via corekit_prepare_export"
            )
        report = ExportReport(out=out, quantize=quantize, parity=check)
        if stored:
            from corekit.export.stored import write_stored_integers

            if quantize != "none":
                report.notes.append(f"the run's weights are already {weights_type}: exported as stored, "
                                    f"quantize={quantize!r} not applied on top")
            say(f"writing the run's {weights_type} weights into the graph")
            write_stored_integers(fp32, tmp / MODEL, model)
            say("checking the integer graph against the quantized PyTorch model")
            stored_check = parity(model, tmp / MODEL, layout)
            check["stored_integers_max_abs_logit_diff"] = stored_check["max_abs_logit_diff"]
            if not stored_check["max_abs_logit_diff"] <= tolerance:
                raise CorekitError(
                    f"export check failed: the {weights_type} graph and the quantized PyTorch model differ by up to "
                    f"{stored_check['max_abs_logit_diff']:.3g} (allowed {tolerance:g}); no bundle was written"
                )
            report.sizes = {"float32": _graph_bytes(fp32), weights_type: _graph_bytes(tmp / MODEL)}
            if (run.data / "manifest.json").is_file() and classifier is None:
                say(f"scoring validation perplexity of the {weights_type} graph")
                report.perplexity = _perplexities({weights_type: tmp / MODEL}, layout, model, run.data, val_windows)
            _drop_fp32(tmp, fp32)
        elif quantize == "int8":
            from corekit.export.quantize import quantize_int8

            say("quantizing to int8 with onnxruntime")
            quantize_int8(fp32, tmp / MODEL)
            report.sizes = {"float32": _graph_bytes(fp32), "int8": _graph_bytes(tmp / MODEL)}
            if classifier is not None:
                report.notes.append("a classifier: validation perplexity does not apply")
            elif not (run.data / "manifest.json").is_file():
                say(f"{run.data} has no validation data: perplexity not measured")
                report.notes.append(f"validation perplexity not measured: {run.data} has no prepared data")
            else:
                say("scoring validation perplexity, fp32 and int8")
                report.perplexity = _perplexities(
                    {"float32": fp32, "int8": tmp / MODEL}, layout, model, run.data, val_windows)
            _drop_fp32(tmp, fp32)
        else:
            report.sizes = {"float32": _graph_bytes(fp32)}
        (tmp / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
        inputs, outputs = _io(layout, len(head.labels) if head is not None else model.vocab_size)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        for name in files:  # some writers (onnx external data) make 0600 files; a bundle is shared
            (tmp / name).chmod(0o666 & ~_umask())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "corekit_version": __version__,
            "model": {"vocab_size": model.vocab_size, "context_length": model.context_length,
                      "spec": spec_to_dict(spec)["model"]},
            "task": classifier or {"kind": "generate"},
            "cache": {"n_layers": layout.n_layers, "n_kv_heads": layout.n_kv_heads, "head_dim": layout.head_dim},
            "inputs": inputs,
            "outputs": outputs,
            "tokenizer": {"name": spec.tokenizer.name, "file": TOKENIZER, "vocab_size": tokenizer.vocab_size,
                          "special_tokens": dict(tokenizer.special_tokens), "eot_id": tokenizer.eot_id},
            "dtype": "float32",
            "weights": weights_type,
            "quantize": quantize,
            "opset": _opset(tmp / MODEL),
            "requested_opset": opset,
            "source": {"weights_sha256": file_sha256(weights)},
            "verification": check,
            "perplexity": report.perplexity,
            "files": file_entries(tmp, files),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        report.manifest = manifest
    return report


def _drop_fp32(tmp: Path, fp32: Path) -> None:
    fp32.unlink()
    for extra in tmp.glob("model.fp32.onnx*"):
        extra.unlink()


def _perplexities(graphs: dict[str, Path], layout, model, data: Path, windows: int) -> dict[str, float]:
    from corekit.export.verify import OnnxLogits
    from corekit.train.evaluate import perplexity, validation_loss

    scores = {}
    for name, path in graphs.items():
        logits = OnnxLogits(path, layout, model.vocab_size, model.context_length)
        scores[name] = perplexity(validation_loss(logits, data, model.context_length, max_windows=windows))
    return scores
