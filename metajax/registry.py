"""Registries of datasets, models, learners, optimizers and experiments by name.

A registry is a dictionary per kind and a decorator; nothing more. Every
built-in dataset, model, learner and optimizer is registered in one place,
:mod:`metajax.components` (library modules never import the registry); built-in experiments
(the ``experiments/`` folder, installed as ``metajax.experiments``) are
imported the first time an experiment is looked up. A user's experiment
module registers the same way: import it, or pass it to ``metajax run --module``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from metajax.errors import ConfigError, UnknownNameError, close_matches

KINDS = ("datasets", "models", "learners", "optimizers", "experiments")
_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}
_BUILTINS_LOADED = False

F = TypeVar("F", bound=Callable)


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise UnknownNameError(f"unknown registry kind {kind!r}{close_matches(kind, KINDS)} Kinds: {', '.join(KINDS)}.")


def register(kind: str, name: str | None = None) -> Callable[[F], F]:
    """Decorator registering ``fn`` under ``name`` (default: its ``__name__``).

    Raises:
      ValueError: if ``name`` is already registered for ``kind``.

    Example::

      @register("experiments", "my-maml")
      def my_maml():
          return {**get("experiments", "maml-sinusoid")(), "steps": 100}
    """
    _check_kind(kind)

    def decorator(fn: F) -> F:
        key = name or fn.__name__
        if key in _REGISTRY[kind]:
            raise ConfigError(
                f"{kind[:-1]} {key!r} is already registered (by {_REGISTRY[kind][key].__module__}); pick another name."
            )
        _REGISTRY[kind][key] = fn
        return fn

    return decorator


def register_experiment(name: str) -> Callable[[F], F]:
    """Registers a function returning an experiment config (a nested dict)."""
    return register("experiments", name)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("metajax.components")
        importlib.import_module("metajax.experiments")


def get(kind: str, name: str) -> Callable:
    """The component registered as ``name``; unknown names raise with close matches."""
    _check_kind(kind)
    _load_builtins()
    try:
        return _REGISTRY[kind][name]
    except (KeyError, TypeError):
        known = sorted(_REGISTRY[kind])
        raise UnknownNameError(
            f"unknown {kind[:-1]} {name!r}{close_matches(name, known)} Known {kind}: {', '.join(known)} "
            "(`metajax list` shows all)."
        ) from None


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind``."""
    _check_kind(kind)
    _load_builtins()
    return sorted(_REGISTRY[kind])


def load_module(spec: str) -> None:
    """Imports a user's experiment module from a file path or an importable module name."""
    _load_builtins()
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise ConfigError(
                f"experiment module file {spec!r} does not exist; pass a .py file or an importable module name."
            )
        module_name = f"metajax_user_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        if module_name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"cannot import experiment module {spec!r} ({e}); pass a .py path or fix PYTHONPATH."
        ) from None
