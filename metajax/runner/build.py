"""Builds an experiment's components from its config: pure construction, no I/O."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import optax

from metajax.components import make_optimizer
from metajax.core.batching import conv_impl_for, default_strategy, parse_strategy
from metajax.core.losses import LOSSES
from metajax.core.meta import MetaState, init_meta_state, meta_step
from metajax.core.model import Model
from metajax.core.tasks import Task
from metajax.data.source import TaskSource, sample_tasks
from metajax.errors import ConfigError, MetajaxError
from metajax.learners.base import Learner
from metajax.registry import get
from metajax.typing import Config, Metrics, PRNGKey


class Components(NamedTuple):
    """Everything a run needs, built from a validated config."""

    config: Config
    source: TaskSource
    model: Model
    learner: Learner
    outer_opt: optax.GradientTransformation
    # pure, not jitted: (state, key) for an on-device source, (state, key, task_batch) for a host-sampled one
    train_step: Callable[..., tuple[MetaState, Metrics]]


def _kwargs(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "name"}


def _takes_conv_impl(model_name: object) -> bool:
    try:
        factory = get("models", model_name)
        return "conv_impl" in inspect.signature(factory).parameters
    except (MetajaxError, TypeError, ValueError):  # unknown name (reported elsewhere), uninspectable callable
        return False


def resolve_conv_impl(config: Config) -> Config:
    """Sets ``model.conv_impl`` from ``task_batching`` when the config leaves it unset or ``"auto"``.

    ``"patches"`` for a ``+patches`` strategy, else ``"xla"``; only for a model
    whose factory takes ``conv_impl``. A value the config names wins over the
    strategy. The model then computes the same way wherever it is traced, and
    the value is recorded in ``config.json``. A config that is already
    resolved, or whose ``task_batching`` is not (yet) a strategy, comes back
    unchanged, so this also completes run records written before the key
    was recorded.
    """
    model = config.get("model")
    if not isinstance(model, dict) or model.get("conv_impl", "auto") != "auto":
        return config
    if not _takes_conv_impl(model.get("name")):
        return config
    try:
        impl = conv_impl_for(config.get("task_batching"))
    except ValueError:
        return config
    return {**config, "model": {**model, "conv_impl": impl}}


def resolve_task_batching(config: Config) -> Config:
    """Replaces ``task_batching="auto"`` by the static table's choice for this backend, then the model's
    ``conv_impl`` left unset or ``"auto"`` by the strategy's (:func:`resolve_conv_impl`)."""
    if config["task_batching"] == "auto":
        config = {**config, "task_batching": default_strategy(jax.default_backend(), config["model"]["name"])}
    try:
        parse_strategy(config["task_batching"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return resolve_conv_impl(config)


def build(config: Config) -> Components:
    """Builds task source, model, learner, outer optimizer and the fused train step.

    Raises:
      ConfigError: a component rejects its config (one line, before compilation).
      DataError: the data is missing, corrupt or cannot satisfy the request.
    """
    try:
        source = get("datasets", config["data"]["name"])(**_kwargs(config["data"]))
        # resolved already for a prepared config; a run record from before model.conv_impl was recorded gets
        # the implementation it was trained with
        model_kwargs = {"out_features": source.output_dim, **_kwargs(resolve_conv_impl(config)["model"])}
        model = get("models", config["model"]["name"])(**model_kwargs)
        loss = LOSSES[source.loss]
        learner = get("learners", config["learner"]["name"])(model, loss, **_kwargs(config["learner"]))
        outer_opt = make_optimizer(config["outer_opt"])
    except MetajaxError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    step = meta_step(learner, outer_opt, task_batching=config["task_batching"])
    meta_batch = config["meta_batch_size"]

    def augmented(tasks: Task, k_tasks: PRNGKey) -> Task:
        if source.train_augment is None:
            return tasks
        keys = jax.random.split(jax.random.fold_in(k_tasks, 1), meta_batch)
        return jax.vmap(source.train_augment)(keys, tasks)

    def train_step(state: MetaState, key: PRNGKey) -> tuple[MetaState, Metrics]:
        """Samples a task batch on device and takes one meta-step: one compiled call."""
        k_tasks, k_step = jax.random.split(key)
        return step(state, augmented(sample_tasks(source, k_tasks, meta_batch, "train"), k_tasks), k_step)

    def host_train_step(state: MetaState, key: PRNGKey, tasks: Task) -> tuple[MetaState, Metrics]:
        """One meta-step on a task batch sampled on the host (the same key split as on device)."""
        k_tasks, k_step = jax.random.split(key)
        return step(state, augmented(tasks, k_tasks), k_step)

    return Components(config, source, model, learner, outer_opt, host_train_step if source.on_host else train_step)


def initial_state(components: Components, key: PRNGKey) -> MetaState:
    """The meta-state before training; shape errors surface here, before compilation."""
    return init_meta_state(components.learner, components.outer_opt, key, components.source.example)
