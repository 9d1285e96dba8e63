"""The built-in stages (see :mod:`corekit_plugins.stages`). Each imports what it needs when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from corekit.params import REGISTRY_DEFAULT, Slot
from corekit.stage import RunContext, Stage

SAMPLE_PROMPTS = ["def ", "import ", "The "]


def _tokenizer(ctx: RunContext):
    """The run's tokenizer: the one the tokenizer stage left, else the run's saved one."""
    if "tokenizer" not in ctx.results:
        from corekit.run import Run

        ctx.results["tokenizer"] = Run(ctx.run, ctx.spec, ctx.registry).tokenizer
    return ctx.results["tokenizer"]


class TokenizerStage(Stage):
    name = "tokenizer"
    section = "tokenizer"
    order = 10

    def section_field(self) -> tuple[Any, Any]:
        slot = Slot["tokenizer"]  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        return slot, Field(REGISTRY_DEFAULT, description="bytes | bpe | char | <plugin>")

    def run(self, ctx: RunContext) -> None:
        from corekit.rundir import ensure_tokenizer

        ctx.console.print(f"[bold]tokenizer[/] -> {ctx.run.tokenizer}")
        tokenizer, trained = ensure_tokenizer(ctx.spec, ctx.run, ctx.registry)
        ctx.results["tokenizer"] = tokenizer
        ctx.console.print(f"  {'trained' if trained else 'kept'} {ctx.spec.tokenizer.name}, {tokenizer.vocab_size} ids")


class DataStage(Stage):
    name = "data"
    section = "data"
    order = 20

    def section_field(self) -> tuple[Any, Any]:
        from corekit.data.spec import DataSpec

        return DataSpec, Field(default_factory=DataSpec)

    def run(self, ctx: RunContext) -> None:
        from corekit.rundir import prepare_data

        ctx.console.print(f"[bold]data[/] -> {ctx.run.data}")
        result = prepare_data(ctx.spec, ctx.run, _tokenizer(ctx), workers=ctx.workers)
        stats = result.manifest["stats"]
        ctx.console.print(f"  {'unchanged' if result.skipped else 'prepared'}: {stats['train']['tokens']:,} train and "
                          f"{stats['val']['tokens']:,} val tokens")


class TrainStage(Stage):
    name = "train"
    section = "train"
    order = 30

    def section_field(self) -> tuple[Any, Any]:
        from corekit.train.spec import TrainSpec

        return TrainSpec, Field(default_factory=TrainSpec)

    def current(self, ctx: RunContext) -> bool:
        return (ctx.run.path / "model.safetensors").is_file()

    def skipped(self, ctx: RunContext) -> None:
        ctx.console.print(f"[bold]train[/]: {ctx.run.path / 'model.safetensors'} exists; skipped")

    def run(self, ctx: RunContext) -> None:
        from corekit.run import Run
        from corekit.train.evaluate import validation_loss
        from corekit.train.fit import train

        spec, t = ctx.spec, ctx.spec.train
        ctx.results["val_loss_before"] = validation_loss(
            Run(ctx.run, spec, ctx.registry).model(), ctx.run.data, spec.model.context_length,
            max_windows=spec.data.val_windows)
        resume = any((ctx.run.path / "checkpoints").glob("*.ckpt"))  # interrupted: continue where it stopped
        ctx.console.print(f"[bold]train[/]: {t.max_steps} steps" + (" (resuming)" if resume else ""))
        train(spec, ctx.run, ctx.registry, resume=resume, workers=ctx.workers)


class EvaluateStage(Stage):
    name = "evaluate"
    order = 40

    def run(self, ctx: RunContext) -> None:
        from rich.table import Table

        from corekit.generation import generate
        from corekit.run import Run
        from corekit.train.evaluate import perplexity, validation_loss

        spec = ctx.spec
        model = Run(ctx.run, spec, ctx.registry).model()
        after = validation_loss(model, ctx.run.data, spec.model.context_length, max_windows=spec.data.val_windows)
        table = Table(title=f"{ctx.run.path}", title_justify="left", show_header=False)
        before = ctx.results.get("val_loss_before")
        if before is not None:
            table.add_row("val loss before training", f"{before:.4f} (perplexity {perplexity(before):.2f})")
        table.add_row("val loss", f"{after:.4f} (perplexity {perplexity(after):.2f})")
        tokenizer = _tokenizer(ctx)
        samples = generate(model, SAMPLE_PROMPTS, tokenizer=tokenizer, max_new_tokens=64, temperature=0.8,
                           top_k=50, stop_tokens=[tokenizer.eot_id], seed=spec.train.seed)
        ctx.out.print(table)
        for prompt, text in zip(SAMPLE_PROMPTS, samples, strict=True):
            ctx.out.rule(f"sample: {prompt!r}")
            ctx.out.print(prompt + text, markup=False, highlight=False)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, (dict, str)) else value


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


class CompressStage(Stage):
    name = "compress"
    section = "compress"
    order = 50

    def section_field(self) -> tuple[Any, Any]:
        compressors = list[Slot["compressor"]]  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        return (Annotated[compressors, BeforeValidator(_one_or_many)],  # type: ignore[valid-type]  # a run-time alias
                Field(default_factory=list, description="compressors `corekit run` applies after training, in order "
                                                        "([compress] or [[compress]])"))

    def upgrade(self, data: dict[str, Any]) -> dict[str, Any]:
        """Runs compressed before ``changes`` existed list their compressors under ``compressed``."""
        if "compressed" not in data:
            return data
        old = _one_or_many(data["compressed"])
        changes = [{"compressor": c} for c in old] if isinstance(old, list) else [{"compressor": old}]
        rest = {k: v for k, v in data.items() if k != "compressed"}
        return {**rest, "changes": [*changes, *_as_list(data.get("changes"))]}

    def wanted(self, spec: Any) -> bool:
        return bool(spec.compress)

    def run(self, ctx: RunContext) -> None:
        """Each compressor into ``RUN/compress/<i>-<name>`` (skipped when that run was made by the
        same compressor from the same weights); the export stage takes the last one."""
        from corekit.compress.report import compress_and_report
        from corekit.compress.run import report_is_current

        source = ctx.run.path
        for index, params in enumerate(ctx.spec.compress, start=1):
            out = ctx.run.path / "compress" / f"{index}-{params.name}"
            if report_is_current(out, source / "model.safetensors", params):
                ctx.console.print(f"[bold]compress[/]: {out} is current; skipped")
            else:
                compress_and_report(source, params, out, ctx.registry)
            source = out
        ctx.results["final"] = source


class ExportStage(Stage):
    name = "export"
    section = "export"
    order = 60

    def section_field(self) -> tuple[Any, Any]:
        from corekit.export.spec import ExportSpec

        return ExportSpec | None, Field(None, description="what `corekit run` exports at the end (an ONNX bundle)")

    def wanted(self, spec: Any) -> bool:
        return spec.export is not None

    def _paths(self, ctx: RunContext) -> tuple[Path, Path]:
        source = Path(ctx.results.get("final", ctx.run.path))
        return source, ctx.run.path / "export"

    def current(self, ctx: RunContext) -> bool:
        from corekit.export.bundle import bundle_is_current

        source, out = self._paths(ctx)
        e = ctx.spec.export
        return bundle_is_current(out, source / "model.safetensors", quantize=e.quantize, opset=e.opset)

    def skipped(self, ctx: RunContext) -> None:
        ctx.console.print(f"[bold]export[/]: {self._paths(ctx)[1]} is current; skipped")

    def run(self, ctx: RunContext) -> None:
        from corekit.export.report import export_and_report

        source, out = self._paths(ctx)
        e = ctx.spec.export
        ctx.console.print(f"[bold]export[/] {source} -> {out} (onnx, quantize {e.quantize})")
        export_and_report(source, out, quantize=e.quantize, opset=e.opset)


class FinetuneStage(Stage):
    """Fine-tuning makes a new run from a trained one, so it is not a step of ``corekit run``
    over one directory: ``corekit finetune SPEC`` runs it. A fine-tuned run's spec keeps the
    section (how it was made: base, task, data, template); what its model is beyond ``[model]``
    (a classification head, an unmerged adapter) is in its ``changes``."""

    name = "finetune"
    section = "finetune"
    order = 70

    def section_field(self) -> tuple[Any, Any]:
        from corekit.finetune.spec import FinetuneSpec

        return FinetuneSpec | None, Field(None, description="fine-tuning of a trained run (corekit finetune)")

    def upgrade(self, data: dict[str, Any]) -> dict[str, Any]:
        """Runs fine-tuned before ``changes`` existed say ``finetune.merged`` and leave the head and
        the adapter to be read from ``[finetune]``."""
        ft = data.get("finetune")
        if not isinstance(ft, dict) or "merged" not in ft:
            return data
        changes = []
        if ft.get("task") == "classify" and isinstance(ft.get("labels"), list):
            head = {"name": "classifier", "labels": ft["labels"], "pooling": ft.get("pooling", "last")}
            changes.append({"head": head | ({"max_length": ft["max_length"]} if "max_length" in ft else {})})
        if ft.get("adapter") is not None and not ft["merged"]:
            changes.append({"adapter": ft["adapter"]})
        section = {k: v for k, v in ft.items() if k != "merged"}
        return {**data, "finetune": section, "changes": [*_as_list(data.get("changes")), *changes]}

    def wanted(self, spec: Any) -> bool:
        return False

    def run(self, ctx: RunContext) -> None:
        from corekit.errors import CorekitError

        raise CorekitError("a [finetune] spec makes a new run from a trained one: run it with `corekit finetune SPEC`")
