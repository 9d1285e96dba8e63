"""The ``[train]`` section of a run spec (owned by the train stage): the optimisation run, its
hardware, precision and strategy, and the optimizer and schedule plugins."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator
from pydantic_core import PydanticCustomError

from corekit.params import REGISTRY_DEFAULT, Slot
from corekit.registry import unknown_message
from corekit.spec import SECTION, cross_field_error

#: Lightning's registered strategy names (``StrategyRegistry.available_strategies()`` of
#: lightning 2.6), written out so that loading a spec does not import Lightning (~6 s);
#: tests/test_spec_strict.py compares it with the installed Lightning's registry.
LIGHTNING_STRATEGIES: tuple[str, ...] = (
    "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook",
    "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true",
    "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
    "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme",
    "fsdp", "fsdp_cpu_offload", "single_device", "single_xla", "xla_debug", "xla", "single_tpu",
)
#: what ``train.strategy`` accepts
STRATEGIES: tuple[str, ...] = ("auto", *LIGHTNING_STRATEGIES)
#: seeds Lightning's ``seed_everything`` (and numpy) accept
MAX_SEED = 2**32 - 1


class TrainSpec(BaseModel):
    """The ``[train]`` section: the optimisation run."""

    model_config = SECTION
    max_steps: PositiveInt = Field(1000, description="optimizer steps")
    batch_size: PositiveInt = Field(16, description="sequences per micro-batch (per device)")
    accumulate: PositiveInt = Field(1, description="micro-batches per optimizer step")
    grad_clip: float = Field(1.0, ge=0.0, description="clip the gradient norm to this (0: off)")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", description="Lightning precision")
    compile: bool = Field(False, description="torch.compile the model")
    # Literal takes the tuple of names at run time; a type checker wants them written out
    strategy: Literal[STRATEGIES] = Field(  # type: ignore[valid-type]  # see the line above
        "auto", description="Lightning strategy: auto | ddp | fsdp | deepspeed | ..."
    )
    devices: PositiveInt | Literal["auto"] = Field("auto", description="devices per node: a positive number or 'auto'")
    num_nodes: PositiveInt = 1
    seed: int = Field(1337, ge=0, le=MAX_SEED, description="seeds weights, data order and dropout (0 .. 2**32-1)")
    eval_every: PositiveInt = Field(100, description="validate every this many optimizer steps")
    checkpoint_every: PositiveInt = Field(100, description="checkpoint every this many optimizer steps")
    log_every: PositiveInt = Field(10, description="log training metrics every this many steps")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    optimizer: Slot["optimizer"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT, description="adamw | sgd | lion | <plugin>"
    )
    scheduler: Slot["scheduler"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT, description="cosine | linear | constant | wsd | <plugin>"
    )

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in STRATEGIES:
            message = unknown_message("Lightning strategy", value, list(STRATEGIES))
            raise PydanticCustomError("unknown_choice", "{message}", {"message": message})
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _positive_or_auto(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        shown = f" (got {value!r})" if isinstance(value, (dict, list)) else ""  # format_errors adds scalars
        raise ValueError(f"devices must be a positive number of devices or 'auto'{shown}")

    @property
    def needs_unfused_optimizer(self) -> bool:
        """Clipping under mixed precision: Lightning clips before the optimizer step, and refuses
        to when a fused optimizer would unscale the gradients inside its own step."""
        return self.precision != "32" and self.grad_clip > 0

    @model_validator(mode="after")
    def _clipping_needs_unfused(self) -> TrainSpec:
        if self.needs_unfused_optimizer and getattr(self.optimizer, "fused", None) is True:
            message = (
                f"a fused optimizer cannot be combined with grad_clip={self.grad_clip} under precision="
                f"{self.precision!r}; leave fused unset (corekit then picks the foreach kernel), or set grad_clip = 0"
            )
            raise cross_field_error([("optimizer.fused", message)])
        return self
