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
import math
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
    # What a non-finite loss or gradient does: "stop" the run (the last good
    # checkpoint stays), or "skip" the update inside the compiled step and count it.
    "guard": {"nonfinite": "stop"},
    # Devices: each meta-batch's tasks are split over "devices" (null: every device of every process;
    # an int: the first that many), data parallel; "params" replicated on each device, or "sharded"
    # over them (large backbones). Neither changes results beyond float reassociation.
    "parallel": {"devices": None, "params": "replicated"},
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
    # Learners receive the model and loss positionally. A model's out_features
    # comes from the data (N for N-way) unless the config sets it, e.g. to
    # null for an embedding without a head (ProtoNets).
    injected = {"model", "loss"}
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


# Annotation names (the part before "[") to the Python types a JSON config may hold for them.
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "dict": (dict,),
    "tuple": (list, tuple),
    "list": (list, tuple),
    "Sequence": (list, tuple),
    "None": (type(None),),
}


def _split_union(annotation: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + [current.strip()]


def _allowed_types(param: inspect.Parameter) -> tuple[type, ...] | None:
    """Types a config value for ``param`` may have, from its annotation; None = not checkable."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = text.replace("Optional[", "None | ").rstrip("]") if text.startswith("Optional[") else text
    allowed: tuple[type, ...] = (type(None),) if param.default is None else ()
    for alternative in _split_union(text):
        head = alternative.split("[", 1)[0].strip().rsplit(".", 1)[-1]
        if head not in _TYPES:
            return None
        allowed += _TYPES[head]
    return allowed


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "int", float: "number", bool: "bool", str: "string", dict: "dict", list: "list", tuple: "list"}
    shown = [t for t in types if not (t is int and float in types)]
    return " or ".join(dict.fromkeys(names.get(t, "null") for t in shown))


def _example(param: inspect.Parameter, types: tuple[type, ...]) -> str:
    """A value to show in ``--set key=VALUE``: the default, else one of the right type."""
    if param.default is not inspect.Parameter.empty and param.default is not None:
        return json.dumps(list(param.default) if isinstance(param.default, tuple) else param.default)
    for kind, text in ((float, "0.01"), (int, "1"), (bool, "true"), (list, "[1]"), (str, "NAME")):
        if kind in types:
            return text
    return "VALUE"


def _check_types(path: tuple[str, ...], kind: str, cfg: dict) -> None:
    """Each key of a component config against its factory parameter's annotation."""
    params = inspect.signature(get(kind, cfg["name"])).parameters
    for key, value in cfg.items():
        if key == "name" or key not in params:
            continue
        allowed = _allowed_types(params[key])
        if allowed is None:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            dotted = ".".join(path + (key,))
            raise ConfigError(
                f"config {dotted}={value!r} has the wrong type: expected {_type_name(allowed)}, "
                f"got {type(value).__name__} (e.g. --set {dotted}={_example(params[key], allowed)})."
            )


SECTIONS = ("eval", "checkpoint", "guard", "parallel")  # runner sections with a fixed set of keys
COMPONENTS = ("data", "model", "learner")


def validate(config: Config) -> Config:
    """Checks keys, types and ranges; returns the config unchanged or raises :class:`ConfigError`.

    Every check is on the plain dict: nothing is built or compiled here.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a dict, got {type(config).__name__}; start from experiment_config(NAME).")
    known = list(DEFAULTS) + list(COMPONENTS)
    for key in sorted(set(config) - set(known), key=str):
        raise ConfigError(f"unknown top-level config key {key!r}{close_matches(key, known)}.")
    for key in COMPONENTS:
        if not isinstance(config.get(key), dict) or "name" not in config[key]:
            raise ConfigError(f"config needs {key!r} as a dict with a 'name' key (e.g. {{'name': ...}}).")
        if not isinstance(config[key]["name"], str):
            raise ConfigError(f"config {key}.name={config[key]['name']!r} must be a registered name (a string).")
    for section in SECTIONS:
        if section not in config:
            raise ConfigError(f"config needs the {section!r} section; start from experiment_config(NAME).")
        if not isinstance(config[section], dict):
            raise ConfigError(
                f"config {section}={config[section]!r} must be a dict with keys {', '.join(sorted(DEFAULTS[section]))}."
            )
        for key in sorted(set(config[section]) - set(DEFAULTS[section]), key=str):
            raise ConfigError(f"unknown config key {section}.{key!r}{close_matches(key, DEFAULTS[section])}.")
        for key in sorted(set(DEFAULTS[section]) - set(config[section])):
            raise ConfigError(
                f"config {section} lacks the key {key!r}; e.g. {section}.{key}={DEFAULTS[section][key]!r}."
            )
    for key in set(DEFAULTS) - set(SECTIONS) - set(FREE_FORM) - {"experiment"}:
        if key not in config:
            raise ConfigError(f"config lacks the key {key!r}; e.g. {key}={json.dumps(DEFAULTS[key])}.")
    for path, kind, cfg in _walk_components(config):
        if not isinstance(cfg["name"], str):
            raise ConfigError(f"config {'.'.join(path)}.name={cfg['name']!r} must be a registered name (a string).")
        allowed = _component_keys(kind, cfg)
        for key in sorted(set(cfg) - (allowed or set(cfg)), key=str):
            raise ConfigError(
                f"config key {'.'.join(path + (key,))!r} is not a parameter of {kind[:-1]} {cfg['name']!r}"
                f"{close_matches(key, allowed)} Its parameters: {', '.join(sorted(allowed - {'name'}))}."
            )
        _check_types(path, kind, cfg)
    positive = lambda v: v > 0  # noqa: E731
    if config.get("experiment") is not None and not isinstance(config["experiment"], str):
        raise ConfigError(f"config experiment={config['experiment']!r} must be a string or null.")
    _expect(config, "seed", int, lambda v: 0 <= v < 2**32, "seed must be an int in [0, 2**32)")
    _expect(config, "steps", int, lambda v: v >= 0, "steps must be a non-negative int")
    _expect(config, "meta_batch_size", int, positive, "meta_batch_size must be a positive int")
    _expect(config, "log_every", int, positive, "log_every must be a positive int")
    _expect(config, "task_batching", str, lambda v: True, "task_batching must be 'auto', 'vmap', 'map' or 'chunked:N'")
    _expect(config, "eval.every", int, lambda v: v >= 0, "eval.every must be an int >= 0 (0 disables validation)")
    _expect(config, "eval.tasks", int, positive, "eval.tasks must be a positive int")
    _expect(config, "eval.test_tasks", int, positive, "eval.test_tasks must be a positive int")
    _expect(config, "eval.batch_size", int, positive, "eval.batch_size must be a positive int")
    _expect(config, "checkpoint.every", int, positive, "checkpoint.every must be a positive int")
    _expect(config, "checkpoint.keep", int, positive, "checkpoint.keep must be a positive int")
    _expect(config, "guard.nonfinite", str, lambda v: v in ("stop", "skip"), "guard.nonfinite must be 'stop' or 'skip'")
    _expect(
        config, "parallel.params", str, lambda v: v in ("replicated", "sharded"),
        "parallel.params must be 'replicated' or 'sharded'",
    )  # fmt: skip
    if config["parallel"]["devices"] is not None:
        _expect(config, "parallel.devices", int, positive, "parallel.devices must be a positive int or null (all)")
    if config["eval"]["inner_steps"] is not None:
        _expect(config, "eval.inner_steps", int, lambda v: v >= 0, "eval.inner_steps must be an int >= 0 or null")
    for path, kind, cfg in _walk_components(config):
        if kind == "optimizers" and "lr" in cfg and not isinstance(cfg["lr"], dict):  # dicts: schedules, built later
            _expect(
                config,
                ".".join(path) + ".lr",
                (int, float),
                lambda v: math.isfinite(v) and v >= 0,
                "learning rates must be finite numbers >= 0 (e.g. 0.001)",
            )
    return config
