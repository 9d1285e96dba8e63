"""What a feed-forward module tells plugins that act on its hidden units (structured pruning).

The feed-forward block itself is a plugin (kind ``feedforward``; the dense MLP is
``corekit_plugins.feedforward``); this module holds only the interface the core and other
plugins read from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HiddenUnits:
    """How a feed-forward module lays its hidden units out in its weights; a module offers it as
    ``hidden_units()``.

    The input projection ``up`` (a submodule name, relative to the feed-forward module) has one
    row per hidden unit, or, when ``gated``, two halves ``[gate | value]`` of ``hidden_dim`` rows;
    the output projection ``down`` has one input column per hidden unit.
    """

    hidden_dim: int
    gated: bool
    up: str = "up"
    down: str = "down"
