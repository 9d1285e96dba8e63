"""The run directory: what flows between stages (DESIGN.md, "The run directory").

``runs/NAME/spec.toml`` is the resolved spec and the source of truth; ``tokenizer.json``
is the trained tokenizer; ``data/`` holds the token shards. Each stage reads what earlier
ones wrote and skips itself when its outputs exist and match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import tomllib

from corekit.assemble import build_tokenizer
from corekit.errors import CorekitError
from corekit.io import atomic_write_text, check_checksum, file_sha256, record_checksum
from corekit.registry import Registry
from corekit.spec import RunSpec, padded_vocab, spec_to_dict, spec_to_toml
from corekit.tokenizer import Tokenizer


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    @classmethod
    def for_spec(cls, spec_file: str | Path, run_dir: str | Path | None = None) -> RunDir:
        """``run_dir``, or ``runs/<spec file stem>`` by default."""
        return cls(Path(run_dir) if run_dir else Path("runs") / Path(spec_file).stem)

    @property
    def spec(self) -> Path:
        return self.path / "spec.toml"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def data(self) -> Path:
        return self.path / "data"

    def holds_weights(self) -> bool:
        """Whether the run has trained weights or training checkpoints: its spec is then fixed."""
        ckpts = self.path / "checkpoints"
        return (self.path / "model.safetensors").is_file() or (ckpts.is_dir() and any(ckpts.glob("*.ckpt")))

    def stored_spec(self) -> dict | None:
        """The resolved spec this run was made with, or None for a new run."""
        if not self.spec.is_file():
            return None
        try:
            return tomllib.loads(self.spec.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CorekitError(f"{self.spec} is unreadable ({exc}); move it away or use another --run-dir") from None

    def load_tokenizer(self, blank: Tokenizer) -> Tokenizer:
        """The run's trained tokenizer: ``blank`` (built from the spec) loading ``tokenizer.json``,
        once the file is checked against its recorded sha256."""
        check_checksum(self.tokenizer, "Restore it from a copy: token ids that differ from the ones the weights "
                                       "and shards were made with give wrong results silently")
        return blank.load(self.tokenizer)

    def write_spec(self, spec: RunSpec) -> None:
        """Record the resolved spec (atomically)."""
        atomic_write_text(self.spec, spec_to_toml(spec))

    def derive(self, spec: RunSpec, source: RunDir) -> None:
        """Start this directory as a run made from ``source`` (compressed or fine-tuned): the new
        spec, a copy of the source's tokenizer file, and its token shards as hard links."""
        import shutil

        from corekit.io import link_tree

        self.write_spec(spec)
        check_checksum(source.tokenizer, "Restore it from a copy before deriving a run from it")
        shutil.copy2(source.tokenizer, self.tokenizer)
        record_checksum(self.tokenizer)
        if source.data.is_dir():
            link_tree(source.data, self.data)


#: fields of a trained run's spec that a later session may change (more steps, other hardware,
#: other logging): none of them changes what the weights are or which tokens train them
RESUMABLE = (
    "train.max_steps", "train.eval_every", "train.checkpoint_every", "train.log_every", "train.num_workers",
    "train.devices", "train.num_nodes", "train.strategy", "train.precision", "train.compile",
    "data.workers", "data.val_windows",
)
#: where the changes made to a trained run's spec are recorded, one JSON object per line
SPEC_CHANGES = "spec-changes.jsonl"


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _later_sections(registry: Registry) -> set[str]:
    """Spec sections of the stages that run after training (they do not change the weights)."""
    from corekit.stage import stages

    built = stages(registry)
    train = next((s.order for s in built if s.name == "train"), None)
    return {s.section for s in built if s.section and train is not None and s.order > train}


def spec_changes(run: RunDir, stored: dict, spec: RunSpec, registry: Registry) -> dict[str, list[Any]]:
    """How ``spec`` differs from the stored spec of ``run``, a run that holds weights:
    ``{field: [old, new]}`` for the fields a later session may change.

    Raises:
        CorekitError: a field outside :data:`RESUMABLE` and the later stages' sections differs
            (named, with both values).
    """
    from corekit.errors import SpecError
    from corekit.spec import load_spec

    try:  # both read through the same defaults, so a field added since is no change
        old = _flat(spec_to_dict(load_spec(stored, registry=registry)))
    except SpecError:
        old = _flat(stored)
    new = _flat(spec_to_dict(spec))
    later = _later_sections(registry)
    keys = sorted(old.keys() | new.keys())
    diff = {key: [old.get(key), new.get(key)] for key in keys if old.get(key) != new.get(key)}
    refused = {k: v for k, v in diff.items() if k not in RESUMABLE and k.split(".", 1)[0] not in later}
    if refused:
        shown = "; ".join(f"{k}: {_shown(a)} -> {_shown(b)}" for k, (a, b) in list(refused.items())[:8])
        more = f" (and {len(refused) - 8} more)" if len(refused) > 8 else ""
        raise CorekitError(
            f"{run.path} holds trained weights, and the spec given differs from its spec.toml in {shown}{more}. "
            "The weights would no longer fit the run's spec, so nothing was changed. Drop those --set values (or "
            "edit the spec file back), or use another --run-dir for a new run; a trained run may change only "
            f"{', '.join(RESUMABLE)} and the sections of later stages ({', '.join(sorted(later)) or 'none'})"
        )
    return diff


def _shown(value: Any) -> str:
    return "(unset)" if value is None else repr(value)


def record_spec_changes(run: RunDir, changed: dict[str, list[Any]]) -> None:
    """Append one line to the run's :data:`SPEC_CHANGES` log (atomically: the whole file is rewritten)."""
    import json
    import time

    from corekit.lock import command_line

    log = run.path / SPEC_CHANGES
    old = log.read_text(encoding="utf-8") if log.is_file() else ""
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command_line(), "changed": changed}
    atomic_write_text(log, old + json.dumps(entry) + "\n")


def _counted(texts: Iterable[str], on_text: Callable[[int], None] | None) -> Iterator[str]:
    for text in texts:
        if on_text is not None:
            on_text(len(text.encode("utf-8")))
        yield text


def prepare_data(spec: RunSpec, run: RunDir, tokenizer: Tokenizer, **kwargs):
    """The data stage: the run's token shards, made with its saved tokenizer (see
    :func:`corekit.data.shards.prepare_shards` for ``workers`` and ``on_progress``), under the
    run's write lock."""
    from corekit.data.shards import prepare_shards
    from corekit.lock import writing

    with writing(run.path):
        return prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), **kwargs)


def ensure_tokenizer(
    spec: RunSpec,
    run: RunDir,
    registry: Registry,
    on_text: Callable[[int], None] | None = None,
) -> tuple[Tokenizer, bool]:
    """The run's tokenizer: loaded if the run has one, else trained on the train split.

    Also fills ``model.vocab_size`` from the tokenizer when the spec left it open, and
    writes the run's ``spec.toml`` (under the run's write lock). A run that holds weights keeps
    its spec: only the fields of :data:`RESUMABLE` (and sections of stages after training) may
    differ, and such changes are recorded in ``spec-changes.jsonl``.
    Returns ``(tokenizer, trained_now)``.

    Raises:
        CorekitError: another tokenizer than the run's, a change to a trained run's model, tokenizer
            or data, or an empty corpus; nothing is written then.
        RunLocked: another process is writing the run.
    """
    from corekit.lock import writing

    with writing(run.path):
        return _ensure_tokenizer(spec, run, registry, on_text)


def _ensure_tokenizer(spec: RunSpec, run: RunDir, registry: Registry,
                      on_text: Callable[[int], None] | None) -> tuple[Tokenizer, bool]:
    from corekit.data.sources import split_documents

    stored = run.stored_spec()
    wanted = spec_to_dict(spec)["tokenizer"]
    if stored is not None and stored.get("tokenizer") != wanted:
        raise CorekitError(
            f"{run.path} was made with tokenizer {stored.get('tokenizer')}, but the spec now says {wanted}. "
            "Use another --run-dir (or delete this one) to train a new tokenizer."
        )
    blank: Tokenizer = build_tokenizer(spec, registry)
    existing = run.load_tokenizer(blank) if run.tokenizer.is_file() else None  # read (and checked) once
    changed: dict[str, list[Any]] = {}
    if stored is not None and run.holds_weights():
        # a trained run's tokenizer is fixed, so its vocabulary size is known before anything is written
        if spec.model.vocab_size is None and existing is not None:
            spec.model.vocab_size = padded_vocab(existing.vocab_size, spec.model.pad_vocab_multiple)
        changed = spec_changes(run, stored, spec, registry)
    trained_now = False
    if existing is not None:
        tokenizer = existing
    else:
        from corekit.data.sources import CleanStats

        stats = CleanStats()
        texts = _counted(split_documents(spec.data, "train", stats), on_text) if blank.needs_training else ()
        tokenizer = blank.train(texts)
        if blank.needs_training and stats.documents_out == 0:
            raise CorekitError(
                f"the corpus is empty after cleaning: {stats.documents_in} documents read, {stats.too_short} shorter "
                f"than data.min_chars={spec.data.min_chars}, {stats.duplicates} duplicates; "
                f"nothing to train the {spec.tokenizer.name} tokenizer on"
            )
        tokenizer.save(run.tokenizer)
        record_checksum(run.tokenizer)
        trained_now = True
    size = tokenizer.vocab_size
    if spec.model.vocab_size is None:
        spec.model.vocab_size = padded_vocab(size, spec.model.pad_vocab_multiple)
    elif spec.model.vocab_size < size:
        raise CorekitError(
            f"model.vocab_size={spec.model.vocab_size} is smaller than the trained tokenizer's {size} ids"
        )
    if changed:
        record_spec_changes(run, changed)
    run.write_spec(spec)
    return tokenizer, trained_now
