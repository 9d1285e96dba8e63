"""The component registry: (kind, name) -> Component, and the spec unions built from it.

Plugins fill a :class:`Registry` through the ``corekit_register_components`` hook. The
registry then answers lookups (with the closest match when a name is unknown), builds
components from validated params, and turns ``Slot["kind"]`` fields of pydantic models
into discriminated unions of every registered component of that kind, so a third-party
component validates and appears in the JSON Schema exactly like a built-in one.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from dataclasses import dataclass
from importlib import import_module
from typing import AbstractSet, Annotated, Any, Callable, Iterator, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from corekit.errors import CorekitError, PluginBuildError, PluginConflictError, PluginError, UnknownComponentError
from corekit.kinds import KINDS
from corekit.params import REGISTRY_DEFAULT, Params, SlotMarker

@dataclass(frozen=True)
class Source:
    """Where a component came from: the plugin's package, its version and module."""

    package: str
    version: str
    module: str
    user: bool = False

    def __str__(self) -> str:
        return f"{self.package} {self.version} ({self.module})"


RUNTIME = Source("<runtime>", "", "<runtime>")


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    params: type[Params]
    build: Callable[..., Any] | str
    description: str
    source: Source = RUNTIME

    def builder(self) -> Callable[..., Any]:
        """The build function, importing it first when given as ``"module:attr"``."""
        if callable(self.build):
            return self.build
        module, _, attr = self.build.partition(":")
        return getattr(import_module(module), attr)


class GenericComponent(BaseModel):
    """A component of a kind no loaded plugin provides yet: any ``name`` and fields."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str


def closest(name: str, options: list[str]) -> str | None:
    """The option most similar to ``name``, or None when nothing is close."""
    hits = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return hits[0] if hits else None


def unknown_message(kind: str, name: Any, available: list[str]) -> str:
    """The standard message for a name that no plugin of ``kind`` provides."""
    msg = f"unknown {kind} {name!r}; available: {', '.join(available) or '(none installed)'}"
    hint = closest(str(name), available)
    return msg + (f"; did you mean {hint!r}?" if hint else "")


class Registry:
    """Components by (kind, name), with the plugin that provided each."""

    def __init__(self) -> None:
        self._components: dict[tuple[str, str], Component] = {}
        self._source: Source = RUNTIME
        self._disabled: set[tuple[str, str]] = set()
        self.dropped: list[Component] = []
        #: resolved models, and what is built from them (the run spec type): cleared when components change
        self._resolved: dict[Any, Any] = {}
        #: the pluggy manager that filled this registry (for the other hooks)
        self.plugin_manager: Any = None
        #: kind -> name of the component a spec gets when it names none (registry.toml [defaults])
        self.defaults: dict[str, str] = {}

    # ----------------------------------------------------------------- loading
    @contextlib.contextmanager
    def loading(self, source: Source, disabled: AbstractSet[tuple[str, str]] = frozenset()) -> Iterator[None]:
        """Attribute components added inside the block to ``source``; roll back on error."""
        before, dropped = dict(self._components), len(self.dropped)
        previous, self._source, self._disabled = self._source, source, set(disabled)
        try:
            yield
        except BaseException:
            self._components = before
            del self.dropped[dropped:]
            raise
        finally:
            self._source, self._disabled = previous, set()
            self._resolved.clear()

    def add(
        self,
        kind: str,
        params: type[Params],
        build: Callable[..., Any] | str,
        description: str | None = None,
        *,
        override: bool = False,
    ) -> Component:
        """Register a component.

        Args:
            kind: one of :data:`KINDS`.
            params: its Params model; the ``name`` literal of this model is its name.
            build: the build function (see the hook's docstring for its arguments), or a
                ``"module:attr"`` string imported on first use.
            description: one line for ``corekit plugins``; defaults to the first line of
                the Params docstring.
            override: replace an existing component of the same kind and name. Without
                it, a second component with the same name is an error.
        """
        if kind not in KINDS:
            raise PluginError(
                f"{self._source}: unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}"
            )
        name = _literal_name(params, kind, self._source)
        if params.model_config.get("extra") != "forbid":
            raise PluginError(
                f"{self._source}: {kind} {name!r} params must keep extra='forbid' (unknown fields are errors)"
            )
        base = KINDS[kind].params
        if not issubclass(params, base):
            raise PluginError(
                f"{self._source}: {kind} {name!r} params must subclass {base.__module__}.{base.__name__} "
                f"(a {kind} is built as {KINDS[kind].signature()})"
            )
        if description is None:
            lines = (params.__doc__ or "").strip().splitlines()
            description = lines[0].replace("``", "`") if lines else ""  # a docstring's reST literals, as plain text
        comp = Component(kind, name, params, build, description, self._source)
        key = (kind, name)
        if key in self._disabled:
            self.dropped.append(comp)
            return comp
        existing = self._components.get(key)
        if existing is not None and not override:
            raise PluginConflictError(
                f"two plugins claim {kind}:{name}: {existing.source} and {comp.source}. "
                f"Remove one, disable one in a registry.toml (disable = [\"{kind}:{name}\"]), "
                "or register the replacement with override=True."
            )
        self._components[key] = comp
        self._resolved.clear()
        return comp

    def remove(self, kind: str, name: str) -> Component:
        """Drop a component (used for ``disable`` entries of a user registry)."""
        comp = self.get(kind, name)
        del self._components[(kind, name)]
        self._resolved.clear()
        return comp

    # ----------------------------------------------------------------- lookup
    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._components

    def components(self, kind: str | None = None) -> list[Component]:
        """Registered components, in registration order, optionally of one kind."""
        return [c for c in self._components.values() if kind is None or c.kind == kind]

    def names(self, kind: str) -> list[str]:
        """Names of the registered components of ``kind``."""
        return [c.name for c in self.components(kind)]

    def get(self, kind: str, name: str) -> Component:
        """The component ``kind:name``; an unknown one names the available ones."""
        if kind not in KINDS:
            raise UnknownComponentError(unknown_message("component kind", kind, list(KINDS)))
        comp = self._components.get((kind, name))
        if comp is None:
            raise UnknownComponentError(unknown_message(kind, name, self.names(kind)))
        return comp

    def build(self, kind: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        """Validate ``params`` if needed and call the component's build function.

        Raises:
            PluginBuildError: the build function (or importing it) raised anything other than
                a :class:`CorekitError`; the message names the component and its plugin, and
                the original exception is chained for debugging.
        """
        if isinstance(params, str):
            params = {"name": params}
        if isinstance(params, dict):
            params = self.get(kind, params.get("name", "")).params.model_validate(params)
        comp = self.get(kind, params.name)
        try:
            return comp.builder()(params, *args, **kwargs)
        except CorekitError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split()) or "(no message)"  # one paragraph
            raise PluginBuildError(
                f"{kind} {comp.name!r} from {comp.source} failed to build: {type(exc).__name__}: {detail} "
                "(a bug in the plugin, or parameters it does not support; the traceback is chained to this error)"
            ) from exc

    # ----------------------------------------------------------------- spec types
    def cached(self, key: str) -> Any:
        """A value :meth:`cache` d under ``key`` since the components last changed, else None."""
        return self._resolved.get(key)

    def cache(self, key: str, value: Any) -> Any:
        """Keep ``value`` until components are added or removed; returns it."""
        self._resolved[key] = value
        return value

    def slot_type(self, kind: str) -> Any:
        """The pydantic type of a ``Slot[kind]`` field: a union over the kind's components."""
        default_name = self.defaults.get(kind)
        members = tuple(self.resolve(c.params) for c in self.components(kind))
        if not members:
            inner: Any = GenericComponent
        elif len(members) == 1:
            inner = members[0]
        else:
            inner = Annotated[Union[members], Field(discriminator="name")]
        names = self.names(kind)

        def normalise(value: Any) -> Any:
            if isinstance(value, str):
                value = {"name": value}
            if isinstance(value, dict):
                if "name" not in value and default_name is not None:
                    value = {"name": default_name, **value}
                if "name" not in value:
                    raise PydanticCustomError(
                        "missing_component_name",
                        "a {kind} needs a 'name'; available: {available}",
                        {"kind": kind, "available": ", ".join(names)},
                    )
                if names and value["name"] not in names:
                    raise PydanticCustomError(
                        "unknown_component", "{message}",
                        {"message": unknown_message(kind, value["name"], names), "kind": kind},
                    )
            return value

        shorthand: Any = Literal[tuple(names)] if names else str  # the names are only known at run time
        return Annotated[inner, BeforeValidator(normalise, json_schema_input_type=Union[shorthand, inner])]

    def resolve(self, model: type[BaseModel]) -> type[BaseModel]:
        """``model`` with every ``Slot[...]`` field (at any depth) replaced by its union."""
        if model in self._resolved:
            return self._resolved[model]
        self._resolved[model] = model  # guards against recursive models
        fields: dict[str, Any] = {}
        for fname, info in model.model_fields.items():
            annotation: Any = info.annotation
            if info.metadata:
                args = (annotation, *info.metadata)
                annotation = Annotated[args]
            new = self._rewrite(annotation)
            if new is not annotation:
                kwargs: dict[str, Any] = {"description": _slot_description(annotation, info.description),
                                          "validate_default": True}
                factory = info.default_factory
                if isinstance(factory, type) and issubclass(factory, BaseModel):
                    # an instance of the unresolved model would fail the resolved type
                    kwargs["default_factory"] = dict
                elif factory is not None:
                    kwargs["default_factory"] = factory
                elif info.default is REGISTRY_DEFAULT:
                    default = self.defaults.get(_slot_kind(annotation) or "")
                    if default is not None:  # else the field is required
                        kwargs["default"] = default
                elif not info.is_required():
                    kwargs["default"] = info.default
                fields[fname] = (new, Field(**kwargs))
        result = (
            create_model(model.__name__, __base__=model, __module__=model.__module__, __doc__=model.__doc__, **fields)
            if fields
            else model
        )
        self._resolved[model] = result
        return result

    def _rewrite(self, tp: Any) -> Any:
        origin = get_origin(tp)
        if origin is Annotated:
            base, *meta = get_args(tp)
            marker = next((m for m in meta if isinstance(m, SlotMarker)), None)
            if marker is not None:
                return self.slot_type(marker.kind)
            new = self._rewrite(base)
            args = (new, *meta)
            return tp if new is base else Annotated[args]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.resolve(tp)
        if origin in (Union, types.UnionType):
            args = get_args(tp)
            new_args = tuple(self._rewrite(a) for a in args)
            return tp if new_args == args else Union[new_args]
        if origin in (list, dict, tuple) and get_args(tp):
            args = get_args(tp)
            new_args = tuple(self._rewrite(a) for a in args)
            return tp if new_args == args else typing.cast(Any, origin)[new_args]
        return tp


def _slot_kind(annotation: Any) -> str | None:
    """The kind of a top-level ``Slot[kind]`` annotation (or ``Slot[kind] | None``), else None."""
    if get_origin(annotation) is Annotated:
        marker = next((m for m in get_args(annotation)[1:] if isinstance(m, SlotMarker)), None)
        return marker.kind if marker else None
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = {_slot_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def _slot_description(annotation: Any, description: str | None) -> str | None:
    """A ``Slot[kind]`` field's description, led by the kind's contract from the kinds table."""
    kind = _slot_kind(annotation)
    if kind is None or kind not in KINDS:
        return description
    lead = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} component: {KINDS[kind].contract}"
    return f"{lead} ({description})" if description else lead


def _literal_name(params: type[Params], kind: str, source: Source) -> str:
    info = params.model_fields.get("name") if isinstance(params, type) and issubclass(params, BaseModel) else None
    args = get_args(info.annotation) if info is not None else ()
    if info is None or get_origin(info.annotation) is not Literal or len(args) != 1:
        raise PluginError(
            f"{source}: a {kind} Params model needs a field name: Literal['<name>'] "
            f"(got {getattr(params, '__name__', params)!r})"
        )
    return str(args[0])
