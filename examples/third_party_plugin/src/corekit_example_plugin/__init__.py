"""An example third-party corekit plugin, installed through the entry-point group ``corekit``.

It adds four components of four kinds, and one command:

- norm ``scalenorm``: ScaleNorm (Nguyen & Salazar 2019, "Transformers without Tears",
  arXiv:1910.05895), ``g * x / max(||x||_2, eps)`` with one learned scalar ``g``
  initialised to ``sqrt(d_model)``;
- activation ``squared_relu``: ``relu(x) ** 2`` (So et al. 2021, "Primer",
  arXiv:2109.08668);
- feedforward ``moe``: a mixture of experts, each a dense MLP, with a learned router that
  sends every token to its ``top_k`` experts and mixes their outputs with the softmax of the
  chosen router logits (Shazeer et al. 2017, arXiv:1701.06538; Mixtral, Jiang et al. 2024,
  arXiv:2401.04088);
- stage ``experts`` (section ``[experts]``): after training, ``corekit run`` writes
  ``experts.json``, the share of routing weight each expert gets (:mod:`.experts`);
- command ``corekit experts RUN``: the same figures for any trained run.

This module only defines the Params models and the hook, so listing plugins stays cheap:
torch is imported by the build functions, through :mod:`corekit_example_plugin.modules`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from corekit import hookimpl
from corekit.params import ActivationParams, FeedForwardParams, ModelContext, Params

__version__ = "0.1.0"


class ScaleNormParams(Params):
    """ScaleNorm: scale x to unit L2 norm, times one learned scalar g (init sqrt(d_model))."""

    name: Literal["scalenorm"] = "scalenorm"
    eps: PositiveFloat = 1e-5


class SquaredReLUParams(ActivationParams):
    """Squared ReLU, relu(x)**2 (Primer)."""

    name: Literal["squared_relu"] = "squared_relu"


class MoEParams(FeedForwardParams):
    """Mixture of experts: a router sends each token to its top_k of n_experts dense MLPs."""

    name: Literal["moe"] = "moe"
    n_experts: PositiveInt = Field(4, description="experts per block")
    top_k: PositiveInt = Field(2, description="experts each token is sent to")

    def check(self, ctx: ModelContext):
        if self.top_k > self.n_experts:
            yield "top_k", f"top_k={self.top_k} is more than n_experts={self.n_experts}"


def build_scalenorm(params: ScaleNormParams, ctx: ModelContext):
    from corekit_example_plugin.modules import ScaleNorm

    return ScaleNorm(ctx.d_model, eps=params.eps)


def build_squared_relu(params: SquaredReLUParams, ctx: ModelContext):
    from corekit_example_plugin.modules import SquaredReLU

    return SquaredReLU()


def build_moe(params: MoEParams, ctx: ModelContext, activation):
    from corekit_example_plugin.modules import MixtureOfExperts

    return MixtureOfExperts(ctx.d_model, params.hidden_dim, params.n_experts, params.top_k, activation,
                            gated=params.gated, bias=ctx.bias)


@hookimpl
def corekit_register_components(registry):
    registry.add("norm", ScaleNormParams, build_scalenorm)
    registry.add("activation", SquaredReLUParams, build_squared_relu)
    registry.add("feedforward", MoEParams, build_moe)
    from corekit_example_plugin.experts import ExpertsStageParams

    registry.add("stage", ExpertsStageParams, "corekit_example_plugin.experts:build_stage")


@hookimpl
def corekit_register_commands(app):
    import typer

    from corekit_example_plugin.experts import experts_command

    def experts(
        run_dir: Path = typer.Argument(..., help="a trained run whose model.mlp is moe"),
        windows: int = typer.Option(16, "--windows", min=1, help="validation windows routed"),
    ) -> None:
        """Show the share of routing weight each expert of each layer gets on the run's validation windows."""
        experts_command(run_dir, windows)

    app.command("experts")(experts)
