"""The run directory: what flows between stages (DESIGN.md, "The run directory").

``runs/NAME/spec.toml`` is the resolved spec and the source of truth; ``tokenizer.json``
is the trained tokenizer; ``data/`` holds the token shards. Each stage reads what earlier
ones wrote and skips itself when its outputs exist and match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import tomllib

from corekit.assemble import build_tokenizer
from corekit.errors import CorekitError
from corekit.io import atomic_write_text, file_sha256
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

    def stored_spec(self) -> dict | None:
        """The resolved spec this run was made with, or None for a new run."""
        if not self.spec.is_file():
            return None
        try:
            return tomllib.loads(self.spec.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CorekitError(f"{self.spec} is unreadable ({exc}); move it away or use another --run-dir") from None

    def write_spec(self, spec: RunSpec) -> None:
        """Record the resolved spec (atomically)."""
        atomic_write_text(self.spec, spec_to_toml(spec))

    def derive(self, spec: RunSpec, source: RunDir) -> None:
        """Start this directory as a run made from ``source`` (compressed or fine-tuned): the new
        spec, a copy of the source's tokenizer file, and its token shards as hard links."""
        import shutil

        from corekit.io import link_tree

        self.write_spec(spec)
        shutil.copy2(source.tokenizer, self.tokenizer)
        if source.data.is_dir():
            link_tree(source.data, self.data)


def _counted(texts: Iterable[str], on_text: Callable[[int], None] | None) -> Iterator[str]:
    for text in texts:
        if on_text is not None:
            on_text(len(text.encode("utf-8")))
        yield text


def prepare_data(spec: RunSpec, run: RunDir, tokenizer: Tokenizer, **kwargs):
    """The data stage: the run's token shards, made with its saved tokenizer (see
    :func:`corekit.data.shards.prepare_shards` for ``workers`` and ``on_progress``)."""
    from corekit.data.shards import prepare_shards

    return prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), **kwargs)


def ensure_tokenizer(
    spec: RunSpec,
    run: RunDir,
    registry: Registry,
    on_text: Callable[[int], None] | None = None,
) -> tuple[Tokenizer, bool]:
    """The run's tokenizer: loaded if the run has one, else trained on the train split.

    Also fills ``model.vocab_size`` from the tokenizer when the spec left it open, and
    writes the run's ``spec.toml``. Returns ``(tokenizer, trained_now)``.
    """
    from corekit.data.sources import split_documents

    stored = run.stored_spec()
    wanted = spec_to_dict(spec)["tokenizer"]
    if stored is not None and stored.get("tokenizer") != wanted:
        raise CorekitError(
            f"{run.path} was made with tokenizer {stored.get('tokenizer')}, but the spec now says {wanted}. "
            "Use another --run-dir (or delete this one) to train a new tokenizer."
        )
    blank: Tokenizer = build_tokenizer(spec, registry)
    trained_now = False
    if run.tokenizer.is_file():
        tokenizer = blank.load(run.tokenizer)
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
        trained_now = True
    size = tokenizer.vocab_size
    if spec.model.vocab_size is None:
        spec.model.vocab_size = padded_vocab(size, spec.model.pad_vocab_multiple)
    elif spec.model.vocab_size < size:
        raise CorekitError(
            f"model.vocab_size={spec.model.vocab_size} is smaller than the trained tokenizer's {size} ids"
        )
    run.write_spec(spec)
    return tokenizer, trained_now
