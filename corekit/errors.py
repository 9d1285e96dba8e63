"""User-facing errors.

Every error a user can cause (a malformed spec, an unknown plugin, a missing file) is a
:class:`CorekitError`. The CLI prints its message as one paragraph and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class CorekitError(Exception):
    """An error caused by the user's input, with a message meant to be read by a person."""


class PluginError(CorekitError):
    """A plugin could not be loaded or conflicts with another one."""


class PluginConflictError(PluginError):
    """Two plugins claim the same ``kind:name``."""


class PluginBuildError(PluginError):
    """A component's build function raised an unexpected exception (chained as ``__cause__``)."""


class UnknownComponentError(CorekitError, LookupError):
    """A (kind, name) pair that no loaded plugin provides."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where it is, what was found, and what is allowed."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(CorekitError):
    """A spec that failed to parse or validate; holds every problem found."""

    def __init__(self, issues: list[SpecIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"invalid spec {source}" if source else "invalid spec"
        lines = [f"{head} ({len(self.issues)} error{'s' if len(self.issues) != 1 else ''}):"]
        lines += [f"  {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))
