"""Experiment configs: nested JSON-able dicts, overrides and validation.

A config names each component by its registry key with its keyword
arguments (``inner_opt: {name: sgd, lr: 0.01}``). Validation happens here,
before anything is built or compiled: unknown keys list close matches, and
every component's keys are checked against its factory's parameters.
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
from collections.abc import Iterable
from typing import Any

from metajax.errors import ConfigError, close_matches
from metajax.registry import get
from metajax.typing import Config

# Runner-level keys every experiment has; an experiment's config overrides them.
DEFAULTS: Config = {
    "experiment": None,
    "seed": 0,
    "steps": 1000,
    "meta_batch_size": 25,
    "task_batching": "auto",
    "outer_opt": {"name": "adam", "lr": 1e-3},
    "eval": {"every": 1000, "tasks": 100, "test_tasks": 600, "inner_steps": None, "batch_size": 100},
    "checkpoint": {"every": 1000, "keep": 3},
    "log_every": 100,
    "reference": None,
}

# Short names for nested keys; ``--set inner_lr=0.1`` is ``--set learner.inner_opt.lr=0.1``.
ALIASES = {
    "outer_lr": "outer_opt.lr",
    "inner_lr": "learner.inner_opt.lr",
    "inner_steps": "learner.inner_steps",
    "shots": "data.shots",
    "queries": "data.queries",
    "ways": "data.ways",
}

FREE_FORM = ("reference",)  # recorded as given, never validated


def _merge(base: Config, update: Config) -> Config:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in FREE_FORM and "name" not in value:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def experiment_config(name: str) -> Config:
    """The full config of a registered experiment (defaults filled in)."""
    config = _merge(DEFAULTS, get("experiments", name)())
    config["experiment"] = name
    return config


def parse_value(text: str) -> Any:
    """Parses ``v`` of ``--set k=v`` as JSON, then a Python literal, else a plain string."""
    for parser in (json.loads, ast.literal_eval):
        try:
            return parser(text)
        except (ValueError, SyntaxError, TypeError):
            pass
    return text


def _component_keys(kind: str, cfg: dict) -> set[str] | None:
    """Config keys the component accepts (its factory's keyword parameters); None = any."""
    factory = get(kind, cfg["name"])
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    injected = {"model", "loss", "out_features"}
    return {p.name for p in params if p.name not in injected} | {"name"}


def _component_kind(path: tuple[str, ...], value: Any) -> str | None:
    """Which registry a dict at ``path`` names, if it is a component config."""
    if not isinstance(value, dict) or "name" not in value:
        return None
    last = path[-1]
    if last in ("outer_opt", "inner_opt") or last.endswith("_opt"):
        return "optimizers"
    return {"data": "datasets", "model": "models", "learner": "learners"}.get(last)


def _walk_components(config: Config, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str, dict]]:
    for key, value in config.items():
        if key in FREE_FORM:
            continue
        kind = _component_kind(path + (key,), value)
        if kind is not None:
            yield path + (key,), kind, value
        if isinstance(value, dict):
            yield from _walk_components(value, path + (key,))


def _accepts(config: Config, path: list[str]) -> bool:
    """Whether ``path`` names a key that exists or a parameter of the component holding it."""
    node: Any = config
    for i, key in enumerate(path):
        if not isinstance(node, dict):
            return False
        if key in node:
            node = node[key]
            continue
        kind = _component_kind(tuple(path[:i]) or ("",), node) if i else None
        if kind is None or i != len(path) - 1:
            return False
        allowed = _component_keys(kind, node)
        return allowed is None or key in allowed
    return True


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Applies ``key.path=value`` strings; an unknown key is a :class:`ConfigError` with close matches."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}; e.g. --set learner.inner_steps=5.")
        dotted, text = item.split("=", 1)
        dotted = ALIASES.get(dotted.strip(), dotted.strip())
        set_path(config, dotted, parse_value(text))
    return config


def set_path(config: Config, dotted: str, value: Any) -> None:
    """Sets ``config[a][b] = value`` for ``dotted == "a.b"``, refusing keys the experiment does not use."""
    path = dotted.split(".")
    if not _accepts(config, path):
        known = sorted(flat_keys(config)) + sorted(ALIASES)
        raise ConfigError(
            f"config key {dotted!r} is not used by experiment {config.get('experiment')!r}"
            f"{close_matches(dotted, known)} (`metajax run NAME --show-config` lists the keys)."
        )
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def flat_keys(config: Config, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of ``config``."""
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and key not in FREE_FORM:
            keys.extend(flat_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def _expect(config: Config, key: str, kind: type | tuple[type, ...], check, fix: str) -> None:
    value = config
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        ok = False
    else:
        ok = isinstance(value, kind) and check(value)
    if not ok:
        raise ConfigError(f"config {key}={value!r} is invalid: {fix}.")


def validate(config: Config) -> Config:
    """Checks keys, types and ranges; returns the config unchanged or raises :class:`ConfigError`."""
    unknown = set(config) - set(DEFAULTS) - {"data", "model", "learner"}
    for key in sorted(unknown):
        raise ConfigError(
            f"unknown top-level config key {key!r}{close_matches(key, list(DEFAULTS) + ['data', 'model', 'learner'])}."
        )
    for key in ("data", "model", "learner"):
        if not isinstance(config.get(key), dict) or "name" not in config[key]:
            raise ConfigError(f"config needs {key!r} as a dict with a 'name' key (e.g. {{'name': ...}}).")
    for section in ("eval", "checkpoint"):
        for key in set(config[section]) - set(DEFAULTS[section]):
            raise ConfigError(f"unknown config key {section}.{key!r}{close_matches(key, DEFAULTS[section])}.")
    for path, kind, cfg in _walk_components(config):
        allowed = _component_keys(kind, cfg)
        for key in sorted(set(cfg) - (allowed or set(cfg))):
            raise ConfigError(
                f"config key {'.'.join(path + (key,))!r} is not a parameter of {kind[:-1]} {cfg['name']!r}"
                f"{close_matches(key, allowed)} Its parameters: {', '.join(sorted(allowed - {'name'}))}."
            )
    positive = lambda v: v > 0  # noqa: E731
    _expect(config, "seed", int, lambda v: v >= 0, "seed must be a non-negative int")
    _expect(config, "steps", int, lambda v: v >= 0, "steps must be a non-negative int")
    _expect(config, "meta_batch_size", int, positive, "meta_batch_size must be a positive int")
    _expect(config, "log_every", int, positive, "log_every must be a positive int")
    _expect(config, "eval.every", int, lambda v: v >= 0, "eval.every must be an int >= 0 (0 disables validation)")
    _expect(config, "eval.tasks", int, positive, "eval.tasks must be a positive int")
    _expect(config, "eval.test_tasks", int, positive, "eval.test_tasks must be a positive int")
    _expect(config, "eval.batch_size", int, positive, "eval.batch_size must be a positive int")
    _expect(config, "checkpoint.every", int, positive, "checkpoint.every must be a positive int")
    _expect(config, "checkpoint.keep", int, positive, "checkpoint.keep must be a positive int")
    if config["eval"]["inner_steps"] is not None:
        _expect(config, "eval.inner_steps", int, lambda v: v >= 0, "eval.inner_steps must be an int >= 0 or null")
    for path, kind, cfg in _walk_components(config):
        if kind == "optimizers" and "lr" in cfg:
            _expect(
                config, ".".join(path) + ".lr", (int, float), lambda v: v >= 0, "learning rates must be numbers >= 0"
            )
    return config
