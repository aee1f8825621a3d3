"""JAX workloads of the benchmark suite, built from metajax's own components.

Every workload is a :class:`Spec` (shapes and learner) turned into a jitted
step ``(state, task_batch, key) -> (state, metrics)`` with donated state, so a
measurement times exactly what training runs (minus on-device sampling,
which the PyTorch references do not have either).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metajax.core.batching import conv_impl_for
from metajax.core.losses import cross_entropy, mse
from metajax.core.meta import init_meta_state, meta_step
from metajax.core.optim import fixed, head_only
from metajax.core.tasks import Split, Task
from metajax.learners.maml import maml, reptile
from metajax.learners.protonet import protonet
from metajax.models.conv4 import conv4
from metajax.models.mlp import mlp


class Spec(NamedTuple):
    """One benchmark workload.

    Attributes:
      name: e.g. ``"conv4/maml-1-so"``.
      model: ``"conv4"`` or ``"mlp"``.
      learner: ``"maml"``, ``"anil"``, ``"reptile"``, ``"protonet"`` or ``"supervised"``.
      inner_steps: inner SGD steps.
      first_order: first-order MAML.
      tasks: meta-batch size.
      shots, queries, ways: per-class support and query sizes, classes (MLP: points).
      filters: Conv4 width.
      inner_lr: inner SGD learning rate.
    """

    name: str
    model: str
    learner: str
    inner_steps: int = 1
    first_order: bool = False
    tasks: int = 32
    shots: int = 1
    queries: int = 15
    ways: int = 5
    filters: int = 64
    inner_lr: float = 0.4


def conv4_specs(quick: bool) -> list[Spec]:
    """Conv4 / Omniglot shapes: 28x28x1, 5-way 1-shot, 15 queries, meta-batch 32 (tiny with ``quick``)."""
    size = dict(tasks=2, queries=2, filters=8) if quick else {}
    return [
        Spec("conv4/maml-1-so", "conv4", "maml", 1, False, **size),
        Spec("conv4/maml-1-fo", "conv4", "maml", 1, True, **size),
        Spec("conv4/maml-5-so", "conv4", "maml", 5, False, **size),
        Spec("conv4/maml-5-fo", "conv4", "maml", 5, True, **size),
        Spec("conv4/anil-5", "conv4", "anil", 5, False, **size),
        Spec("conv4/reptile-5", "conv4", "reptile", 5, True, **size),
        Spec("conv4/protonet", "conv4", "protonet", 0, False, **size),
        Spec("conv4/supervised", "conv4", "supervised", 0, False, **size),
    ]


def mlp_specs(quick: bool) -> list[Spec]:
    """Sinusoid MLP (40-40): meta-batch 25, K=10 support and 10 query points, inner lr 0.01."""
    size = dict(tasks=2) if quick else dict(tasks=25)
    common = dict(shots=10, queries=10, ways=1, inner_lr=0.01, **size)
    return [
        Spec("mlp/maml-1-so", "mlp", "maml", 1, False, **common),
        Spec("mlp/maml-1-fo", "mlp", "maml", 1, True, **common),
        Spec("mlp/maml-5-so", "mlp", "maml", 5, False, **common),
        Spec("mlp/maml-5-fo", "mlp", "maml", 5, True, **common),
        Spec("mlp/anil-5", "mlp", "anil", 5, False, **common),
        Spec("mlp/reptile-5", "mlp", "reptile", 5, True, **common),
    ]


def task_batch(spec: Spec, seed: int = 0) -> Task:
    """Random tasks of the workload's shapes: ``(tasks, n, 28, 28, 1)`` images or ``(tasks, n, 1)`` points."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    t = spec.tasks
    if spec.model == "mlp":
        sx = jax.random.uniform(k1, (t, spec.shots, 1), minval=-5.0, maxval=5.0)
        qx = jax.random.uniform(k2, (t, spec.queries, 1), minval=-5.0, maxval=5.0)
        return Task(Split(sx, jnp.sin(sx)), Split(qx, jnp.sin(qx)))
    ns, nq = spec.ways * spec.shots, spec.ways * spec.queries
    sx = jax.random.normal(k3, (t, ns, 28, 28, 1))
    qx = jax.random.normal(k4, (t, nq, 28, 28, 1))
    sy = jnp.tile(jnp.repeat(jnp.arange(spec.ways), spec.shots), (t, 1))
    qy = jnp.tile(jnp.repeat(jnp.arange(spec.ways), spec.queries), (t, 1))
    return Task(Split(sx, sy), Split(qx, qy))


def build_learner(spec: Spec, *, dtype: str = "float32", remat=False, conv_impl: str = "xla"):
    """The metajax learner of a workload (not for ``"supervised"``); ``conv_impl`` for Conv4."""
    if spec.model == "mlp":
        model, loss = mlp(1, hidden=(40, 40)), mse
    else:
        out = None if spec.learner == "protonet" else spec.ways
        model, loss = conv4(out, filters=spec.filters, conv_impl=conv_impl, dtype=dtype), cross_entropy
    inner = fixed(optax.sgd(spec.inner_lr))
    if spec.learner == "maml":
        return maml(model, loss, inner, inner_steps=spec.inner_steps, first_order=spec.first_order, remat=remat)
    if spec.learner == "anil":
        return maml(model, loss, head_only(inner), inner_steps=spec.inner_steps, remat=remat)
    if spec.learner == "reptile":
        return reptile(model, loss, inner, inner_steps=spec.inner_steps, remat=remat)
    if spec.learner == "protonet":
        return protonet(model, loss, ways=spec.ways)
    raise ValueError(f"unknown learner {spec.learner!r}")


def build_step(spec: Spec, strategy: str):
    """``(step, state, batch)``: the un-jitted meta-step, its initial state and a task batch.

    The model's ``conv_impl`` follows the strategy's ``+patches``, as the runner's builder sets it.
    """
    batch = task_batch(spec)
    if spec.learner == "supervised":
        return supervised_step(spec, strategy, batch)
    learner = build_learner(spec, conv_impl=conv_impl_for(strategy))
    outer = optax.adam(1e-3)
    state = init_meta_state(learner, outer, jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], batch))
    return meta_step(learner, outer, task_batching=strategy), state, batch


def supervised_step(spec: Spec, mode: str, batch: Task):
    """A plain supervised Adam step of Conv4 on the same images as the meta-batch (support and query).

    ``mode``: ``"one-batch"`` (all ``tasks * (shots + queries) * ways`` images
    in one forward/backward, XLA convolutions) or ``"chunks"`` (``lax.map``
    over one chunk per task, gradients averaged, patches convolutions).
    """
    # In a lax.map body XLA:CPU's weight-gradient convolution leaves its fast path
    # (docs/performance.md), so the chunked form uses the patches convolution.
    model = conv4(spec.ways, filters=spec.filters, conv_impl="xla" if mode == "one-batch" else "patches")
    x = jnp.concatenate([batch.support.x, batch.query.x], axis=1)
    y = jnp.concatenate([batch.support.y, batch.query.y], axis=1)
    params, mstate = model.init(jax.random.key(1), x[0])
    outer = optax.adam(1e-3)

    def loss_fn(p, xs, ys):
        return cross_entropy(model.apply(p, mstate, xs, train=True)[0], ys)[0]

    def step(state, data, key):
        del key
        p, opt_state = state
        xs, ys = data
        if mode == "one-batch":
            loss, grads = jax.value_and_grad(loss_fn)(p, xs.reshape(-1, *xs.shape[2:]), ys.reshape(-1))
        else:
            loss, grads = jax.lax.map(lambda a: jax.value_and_grad(loss_fn)(p, *a), (xs, ys))
            loss, grads = jnp.mean(loss), jax.tree_util.tree_map(lambda g: jnp.mean(g, 0), grads)
        updates, opt_state = outer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), {"loss": loss}

    return step, (params, outer.init(params)), (x, y)


def remat_memory(steps: tuple[int, ...], remat, *, quick: bool) -> dict[int, int]:
    """Compiled temp bytes of one task's second-order MAML meta-gradient, per inner-step count."""
    spec = Spec("conv4/maml-so", "conv4", "maml", 1, False, tasks=1, **(dict(filters=8, queries=2) if quick else {}))
    task = jax.tree_util.tree_map(lambda a: a[0], task_batch(spec))
    out = {}
    for n in steps:
        learner = build_learner(spec._replace(inner_steps=n), remat=remat)
        meta, mstate = learner.init(jax.random.key(1), task)
        grad = jax.jit(jax.grad(lambda p: learner.task_loss(p, mstate, task, jax.random.key(0))[0]))
        out[n] = int(grad.lower(meta).compile().memory_analysis().temp_size_in_bytes)
    return out
