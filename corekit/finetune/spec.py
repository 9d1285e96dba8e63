"""The ``[finetune]`` section of a run spec: base run, task, data and method.

A fine-tuning spec file holds ``[finetune]`` (and optionally ``[train]``, merged over the base
run's, and ``[export]``); the model, tokenizer and data come from the base run. The finished
run's ``spec.toml`` keeps the section, with what fine-tuning decided filled in (the label
names of a classifier), and lists what it did to the model in its ``changes``: a classifier
``head`` and an unmerged ``adapter``, so that loading the run rebuilds exactly the model its
weights belong to.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from corekit.params import REGISTRY_DEFAULT, Slot

SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)
TASKS = ("classify", "instruct", "preference")


class FinetuneData(BaseModel):
    """``[finetune.data]``: the examples. CSV or JSONL by suffix (``.csv``; ``.jsonl``/``.json``)."""

    model_config = SECTION
    train: str = Field(description="training examples: classify {text, label} (CSV or JSONL); instruct {instruction, "
                                   "input?, output} or {messages}; preference {prompt, chosen, rejected}")
    val: str | None = Field(None, description="held-out examples in the same form (default: val_fraction of train)")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of train held out when val is not given")
    text_field: str = Field("text", description="classify: the column/field holding the text")
    label_field: str = Field("label", description="classify: the column/field holding the label")


class FinetuneSpec(BaseModel):
    """``[finetune]``: fine-tune a trained run into a new one."""

    model_config = SECTION
    base: str = Field(description="the trained run directory to start from")
    task: Literal["classify", "instruct", "preference"] = Field(
        description="classify: a classification head replaces the LM head; instruct: supervised instruction "
                    "tuning, loss on responses only; preference: DPO on chosen/rejected pairs"
    )
    data: FinetuneData
    adapter: Slot["adapter"] | None = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        None, description="an adapter (lora | <plugin>): only its weights train and are saved; none: full fine-tuning"
    )
    merge: bool = Field(False, description="fold the adapter into the weights at the end (a plain model)")
    trainable_blocks: Literal["all"] | NonNegativeInt = Field(
        "all", description="without an adapter: 'all' trains everything; k trains the last k blocks, the final norm "
                           "and the head only (0: the head only)"
    )
    # classify
    head: str | dict[str, Any] = Field(
        "classifier", description="classify: the head put in the LM head's place (classifier | <plugin>), by name or "
                                  "as a table of its options; its labels, pooling and max_length come from this section"
    )
    pooling: Literal["last", "mean"] = Field("last", description="classify: the last non-padding token, or the mean")
    labels: list[str] | None = Field(
        None, description="classify: label names in id order (default: the sorted labels of the training data)"
    )
    # instruct / preference
    template: Slot["template"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT, description="alpaca | chatml | <plugin>"
    )
    max_length: PositiveInt | None = Field(
        None, description="longest tokenized example (default: the model's context length); longer ones are cut"
    )
    eval_examples: PositiveInt = Field(32, description="instruct: held-out prompts answered greedily for exact match "
                                                       "and ROUGE-L")
    max_new_tokens: PositiveInt = Field(64, description="instruct: longest generated answer when evaluating")
    beta: PositiveFloat = Field(0.1, description="preference: DPO's beta (strength of the pull to the reference)")

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            if repeated or any(not label.strip() for label in labels):
                raise ValueError(f"labels must be distinct and non-empty; got {labels}")
        return labels
