"""The ``[data]`` section of a run spec (owned by the data stage): where the training text comes
from, how it is cleaned and how it is sharded."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, PositiveInt, model_validator

from corekit.spec import SECTION, cross_field_error


def _non_blank_path(path: str) -> str:
    if not path.strip():  # an empty pattern names the working directory: everything in it
        raise ValueError("an empty or blank path names no file; give a file, a glob or a directory")
    return path


class DataSpec(BaseModel):
    """The ``[data]`` section: where training text comes from, how it is cleaned and sharded."""

    model_config = SECTION
    source: Literal["python-stdlib"] | None = Field(
        "python-stdlib", description="a built-in corpus (the default when no paths are given)"
    )
    paths: list[Annotated[str, AfterValidator(_non_blank_path)]] = Field(
        default_factory=list, description="text files, globs (** allowed), directories, or .jsonl files"
    )
    text_field: str = Field("text", description="the field holding the text in .jsonl files")
    suffixes: list[str] = Field(
        default_factory=list, description="in directories, only files with these suffixes (empty: all)"
    )
    max_document_bytes: PositiveInt = Field(
        1 << 20, description="text files larger than this are streamed and cut into documents at blank lines"
    )
    normalize: bool = Field(True, description="Unicode NFC normalisation")
    dedupe: bool = Field(True, description="drop exact duplicate documents")
    min_chars: int = Field(32, ge=0, description="drop documents shorter than this")
    max_documents: PositiveInt | None = Field(None, description="use only the first N cleaned documents")
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="share of documents held out for validation")
    shard_tokens: PositiveInt = Field(2**24, description="tokens per shard (shards end at document boundaries)")
    workers: PositiveInt | None = Field(None, description="tokenizer processes (default: all cores)")
    val_windows: PositiveInt = Field(64, description="fixed validation windows served to training")

    @model_validator(mode="before")
    @classmethod
    def _paths_replace_default_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("paths") and "source" not in data:
            data = {**data, "source": None}
        return data

    @model_validator(mode="after")
    def _some_text(self) -> DataSpec:
        if self.source is None and not self.paths:
            raise cross_field_error([("source", "no corpus: set source = 'python-stdlib' or give paths")])
        return self
