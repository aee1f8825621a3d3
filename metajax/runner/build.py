"""Builds an experiment's components from its config: pure construction, no I/O."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metajax.components import make_optimizer
from metajax.core.batching import conv_impl_for, default_strategy, parse_strategy
from metajax.core.learner import Learner
from metajax.core.losses import LOSSES
from metajax.core.meta import MetaState, init_meta_state, meta_step
from metajax.core.model import Model
from metajax.core.tasks import Task, num_tasks, task_keys
from metajax.data.source import TaskSource
from metajax.errors import ConfigError, MetajaxError
from metajax.registry import get
from metajax.typing import Config, Metrics, PRNGKey, PyTree

TASK_AXIS = "tasks"  # the mesh axis a meta-batch's tasks are split over


class Components(NamedTuple):
    """Everything a run needs, built from a validated config."""

    config: Config
    source: TaskSource
    model: Model
    learner: Learner
    outer_opt: optax.GradientTransformation
    # pure, not jitted: train_step(state, data, key) -> (state, metrics), where data is source.init()'s
    # arrays for an on-device source and the step's batch of meta_batch_size tasks for a host-sampled one
    train_step: Callable[..., tuple[MetaState, Metrics]]
    mesh: Optional[Mesh] = None


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


def task_devices(mesh: Optional[Mesh]) -> int:
    """Devices the task axis is split over: the size of ``mesh``'s ``"tasks"`` axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[TASK_AXIS])


def padded_size(num: int, mesh: Optional[Mesh]) -> int:
    """``num`` rounded up to a multiple of the task-axis devices (the padding tasks are masked out)."""
    devices = task_devices(mesh)
    return -(-num // devices) * devices


def pad_tasks(tasks: Task, size: int) -> Task:
    """A batch of tasks grown to ``size`` by repeating its first tasks (for weight-0 padding)."""
    n = num_tasks(tasks)
    if size == n:
        return tasks
    index = jnp.arange(size) % n
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tasks)


def shard_tasks(tasks: Task, mesh: Optional[Mesh]) -> Task:
    """Constrains every leaf's leading task axis to be split over the mesh's ``"tasks"`` axis."""
    if task_devices(mesh) == 1:
        return tasks
    sharding = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    return jax.tree_util.tree_map(lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding), tasks)


def train_keys(key: PRNGKey, num: int) -> dict[str, PRNGKey]:
    """The keys of one training step, each for one purpose: ``key`` is split once.

    Returns ``{"sample": (num,) task keys, "augment": (num,) task keys, "step": key}``;
    task ``i``'s keys depend on ``i`` alone (:func:`task_keys`).
    """
    k_sample, k_augment, k_step = jax.random.split(key, 3)
    return {"sample": task_keys(k_sample, num), "augment": task_keys(k_augment, num), "step": k_step}


def build(config: Config, *, mesh: Optional[Mesh] = None) -> Components:
    """Builds task source, model, learner, outer optimizer and the fused train step.

    Args:
      mesh: devices to split each meta-batch's tasks over (axis ``"tasks"``);
        ``None`` for one device. A meta-batch that does not divide the axis is
        padded with weight-0 tasks, so the step equals the unpadded one.

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
    step = meta_step(learner, outer_opt, task_batching=config["task_batching"], mesh=mesh, task_axis=TASK_AXIS)
    meta_batch = config["meta_batch_size"]
    padded = padded_size(meta_batch, mesh)

    def train_step(state: MetaState, data: PyTree, key: PRNGKey) -> tuple[MetaState, Metrics]:
        """One meta-step: sample (on device) or take (host) a task batch, augment, step; one compiled call.

        ``key`` is split once into the sampling, augmentation and step keys; task ``i``'s keys
        depend on ``i`` alone, so padding the batch for the devices changes no real task.
        """
        keys = train_keys(key, padded)
        if source.on_host:
            tasks = pad_tasks(data, padded)
        else:
            tasks = jax.vmap(lambda k: source.sample(data, k, "train"))(keys["sample"])
        tasks = shard_tasks(tasks, mesh)
        if source.train_augment is not None:
            tasks = jax.vmap(source.train_augment)(keys["augment"], tasks)
        weights = None if padded == meta_batch else (jnp.arange(padded) < meta_batch).astype(jnp.float32)
        return step(state, tasks, keys["step"], weights)

    return Components(config, source, model, learner, outer_opt, train_step, mesh)


def initial_state(components: Components, key: PRNGKey) -> MetaState:
    """The meta-state before training; shape errors surface here, before compilation."""
    return init_meta_state(components.learner, components.outer_opt, key, components.source.example)
