"""The plugin manager: loads built-in, installed and local plugins into a Registry.

Load order (DESIGN.md):

1. the modules listed in the built-in manifest ``registry.toml``;
2. every entry point of the group ``corekit`` (skipped when
   ``COREKIT_DISABLE_PLUGIN_AUTOLOAD=1``);
3. a user's ``registry.toml`` (``--registry``, ``COREKIT_REGISTRY`` or ``./registry.toml``)
   that may add local modules (dotted names or ``.py`` paths) and disable ``kind:name``.

A third-party plugin that fails to import or register is reported with its package and
skipped (an error under ``strict``); two plugins claiming one ``kind:name`` is an error.
Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tomllib
import warnings
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import pluggy

from corekit import hookspecs
from corekit.errors import PluginConflictError, PluginError
from corekit.registry import KINDS, Registry, Source

ENTRY_POINT_GROUP = "corekit"
AUTOLOAD_ENV = "COREKIT_DISABLE_PLUGIN_AUTOLOAD"
REGISTRY_ENV = "COREKIT_REGISTRY"


class PluginLoadWarning(UserWarning):
    """A third-party or local plugin failed to load and was skipped."""


@dataclass
class RegistryFile:
    """A parsed ``registry.toml``: modules to load, ``kind:name`` entries to disable, and
    the default component of each kind (``[defaults]``)."""

    path: Path | None
    modules: list[str] = field(default_factory=list)
    disable: set[tuple[str, str]] = field(default_factory=set)
    defaults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> RegistryFile:
        """Parse ``path``; a missing or malformed file is a :class:`PluginError`."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PluginError(f"registry file {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PluginError(f"registry file {path} is not valid TOML: {exc}") from None
        unknown = set(data) - {"modules", "disable", "defaults"}
        if unknown:
            raise PluginError(
                f"registry file {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                "allowed keys are 'modules' (a list of module names or .py paths), "
                "'disable' (a list of 'kind:name') and 'defaults' (a table of kind = name)"
            )
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict) or not all(
            k in KINDS and isinstance(v, str) and v for k, v in defaults.items()
        ):
            raise PluginError(
                f"registry file {path}: [defaults] must map component kinds ({', '.join(KINDS)}) "
                f"to component names, got {defaults!r}"
            )
        modules, disable = data.get("modules", []), data.get("disable", [])
        if not (isinstance(modules, list) and all(isinstance(m, str) for m in modules)):
            raise PluginError(f"registry file {path}: 'modules' must be a list of strings, got {modules!r}")
        if not (isinstance(disable, list) and all(isinstance(d, str) for d in disable)):
            raise PluginError(f"registry file {path}: 'disable' must be a list of 'kind:name' strings")
        pairs = set()
        for entry in disable:
            kind, sep, name = entry.partition(":")
            if not sep or kind not in KINDS or not name:
                raise PluginError(
                    f"registry file {path}: disable entry {entry!r} is not 'kind:name' "
                    f"with kind one of {', '.join(KINDS)}"
                )
            pairs.add((kind, name))
        return cls(path, modules, pairs, dict(defaults))


def builtin_manifest() -> RegistryFile:
    """The built-in manifest shipped inside the ``corekit_plugins`` package."""
    ref = resources.files("corekit_plugins") / "registry.toml"
    return RegistryFile.read(Path(str(ref)))


def user_registry_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The user's registry file: ``explicit``, then ``$COREKIT_REGISTRY``, then ``./registry.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    local = Path.cwd() / "registry.toml"
    if local.is_file() and local.resolve() != Path(str(resources.files("corekit_plugins") / "registry.toml")).resolve():
        return local
    return None


def _corekit_version() -> str:
    from corekit import __version__

    return __version__


def _import_path(path: Path) -> ModuleType:
    name = f"corekit_local_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class Loader:
    """Registers plugins with pluggy and records what each one adds to the registry."""

    def __init__(self, strict: bool, disabled: set[tuple[str, str]]) -> None:
        self.registry = Registry()
        self.strict = strict
        self.disabled = disabled
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        # Historic: each plugin's impl runs the moment it is registered, so every
        # registration can be attributed to its source and rolled back on failure.
        self.pm.hook.corekit_register_components.call_historic(kwargs={"registry": self.registry})

    def register(self, plugin: Any, source: Source, *, third_party: bool) -> None:
        """Register ``plugin``; a failing third-party plugin is warned about and skipped."""
        name = f"{source.package}:{source.module}"
        if self.pm.is_registered(plugin) or self.pm.get_plugin(name) is not None:
            return
        disabled = set() if source.user else self.disabled
        try:
            with self.registry.loading(source, disabled):
                try:
                    self.pm.register(plugin, name=name)
                    # a hook impl whose name matches no hook spec (a typo) is an error
                    self.pm.check_pending()
                except Exception:
                    if self.pm.is_registered(plugin):
                        self.pm.unregister(plugin)
                    raise
        except PluginConflictError:
            raise
        except PluginError as exc:
            if not third_party or self.strict:
                raise
            self._skip(source, exc)
        except Exception as exc:
            if not third_party or self.strict:
                raise PluginError(f"plugin {source} failed to register: {type(exc).__name__}: {exc}") from exc
            self._skip(source, exc)

    def _skip(self, source: Source, exc: BaseException) -> None:
        warnings.warn(
            f"skipped plugin {source.package} ({source.module}): {type(exc).__name__}: {exc}",
            PluginLoadWarning,
            stacklevel=3,
        )

    def import_failed(self, source: Source, exc: BaseException) -> None:
        """Handle a plugin module that raised on import."""
        if self.strict:
            raise PluginError(
                f"plugin {source.package} ({source.module}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        self._skip(source, exc)


def load_registry(
    registry_file: str | os.PathLike[str] | None = None,
    *,
    strict: bool = False,
    autoload: bool | None = None,
    plugins: Iterable[Any] = (),
) -> Registry:
    """Load every plugin and return the filled registry.

    Args:
        registry_file: a user ``registry.toml``; defaults to ``$COREKIT_REGISTRY`` or
            ``./registry.toml``.
        strict: make a third-party plugin that fails to load an error instead of a warning.
        autoload: load the entry-point group ``corekit``; defaults to true unless
            ``COREKIT_DISABLE_PLUGIN_AUTOLOAD=1``.
        plugins: extra plugin objects or modules to register after the others (tests use
            this to install plugins explicitly).
    """
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "") not in ("1", "true", "yes")
    user_path = user_registry_path(registry_file)
    user = RegistryFile.read(user_path) if user_path else RegistryFile(None)
    manifest = builtin_manifest()
    loader = Loader(strict, manifest.disable | user.disable)

    version = _corekit_version()
    for module_name in manifest.modules:
        module = importlib.import_module(module_name)
        loader.register(module, Source("corekit", version, module_name), third_party=False)

    if autoload:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            source = Source(dist.name if dist else ep.name, dist.version if dist else "?", ep.value)
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:
                loader.import_failed(source, exc)
                continue
            loader.register(plugin, source, third_party=True)

    for entry in user.modules:
        source = Source(f"local:{user.path}", "", entry, user=True)
        try:
            if entry.endswith(".py"):
                path = Path(entry)
                base = user.path.parent if user.path is not None else Path.cwd()
                module = _import_path(path if path.is_absolute() else base / path)
            else:
                module = importlib.import_module(entry)
        except (Exception, SystemExit) as exc:
            loader.import_failed(source, exc)
            continue
        loader.register(module, source, third_party=True)

    for plugin in plugins:
        module_name = getattr(plugin, "__name__", type(plugin).__name__)
        loader.register(plugin, Source("<explicit>", "", module_name, user=True), third_party=False)

    for kind, name in sorted(user.disable):
        if (kind, name) not in loader.registry and not any(
            c.kind == kind and c.name == name for c in loader.registry.dropped
        ):
            warnings.warn(f"{user.path}: disable entry '{kind}:{name}' matches no plugin", PluginLoadWarning,
                          stacklevel=2)
    registry = loader.registry
    for kind, name in (manifest.defaults | user.defaults).items():
        if registry.names(kind) and name not in registry.names(kind):
            where = user.path if kind in user.defaults else "the built-in registry.toml"
            warnings.warn(
                f"{where}: default {kind} {name!r} is not loaded (disabled or missing), so specs must name "
                f"their {kind}; set [defaults] {kind} = one of {', '.join(registry.names(kind))}",
                PluginLoadWarning,
                stacklevel=2,
            )
            continue
        registry.defaults[kind] = name
    registry.plugin_manager = loader.pm
    return registry


_REGISTRY: Registry | None = None
_OPTIONS: dict[str, Any] = {}


def configure(registry_file: str | os.PathLike[str] | None = None, strict: bool = False) -> None:
    """Set the options the shared registry is loaded with (the CLI's global flags)."""
    global _REGISTRY
    options = {"registry_file": str(registry_file) if registry_file else None, "strict": strict}
    if options != _OPTIONS:  # the same options keep the registry already loaded
        _OPTIONS.update(options)
        _REGISTRY = None


def get_registry() -> Registry:
    """The shared registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry(_OPTIONS.get("registry_file"), strict=_OPTIONS.get("strict", False))
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the shared registry (None reloads it on next use)."""
    global _REGISTRY
    _REGISTRY = registry
