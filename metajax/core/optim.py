"""Inner optimizers built from meta-parameters.

An :class:`InnerOptimizer` is ``init(params) -> theta`` plus
``build(theta) -> optax.GradientTransformation`` (the learned_optimization
shape): ``theta`` is part of the meta-parameters, so anything the inner
update depends on can be meta-learned. Plain optax optimizers enter through
:func:`fixed` with an empty ``theta``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from metajax.typing import Params, PyTree


class InnerOptimizer(NamedTuple):
    """An inner-loop optimizer parameterised by meta-parameters ``theta``.

    Attributes:
      init: ``init(params) -> theta``, the optimizer's meta-parameters for a
        model with parameters shaped like ``params`` (``{}`` when nothing is
        learned).
      build: ``build(theta) -> optax.GradientTransformation``.
    """

    init: Callable[[Params], PyTree]
    build: Callable[[PyTree], optax.GradientTransformation]


def fixed(tx: optax.GradientTransformation) -> InnerOptimizer:
    """An inner optimizer with nothing meta-learned (MAML's SGD, inner Adam, ...).

    Example::

      inner = fixed(optax.sgd(0.01))
    """
    return InnerOptimizer(init=lambda params: {}, build=lambda theta: tx)


def scale_by_tree(factors: PyTree) -> optax.GradientTransformation:
    """Multiplies each update leaf by the matching leaf of ``factors`` (same structure)."""

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda f, u: f * u, factors, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def learned_lr(direction: optax.GradientTransformation, init_lr: float) -> InnerOptimizer:
    """Meta-SGD: a meta-learned learning rate for every parameter entry.

    ``direction`` must be an optimizer with learning rate 1 (for Meta-SGD,
    ``optax.sgd(1.0)``, whose update is ``-g``); the learned rates ``alpha``
    scale it elementwise, so with SGD the inner update is ``-alpha * g``.
    ``theta`` is a pytree shaped like the params, initialised to ``init_lr``.

    Example::

      inner = learned_lr(optax.sgd(1.0), init_lr=0.01)
    """
    return InnerOptimizer(
        init=lambda params: jax.tree_util.tree_map(lambda p: jnp.full_like(p, init_lr), params),
        build=lambda alpha: optax.chain(direction, scale_by_tree(alpha)),
    )


def head_only(inner: InnerOptimizer, is_head: Union[str, Callable[[str], bool]] = "head") -> InnerOptimizer:
    """ANIL: adapt only the head; the body's inner updates are exactly zero.

    Uses ``optax.partition`` with ``optax.set_to_zero()`` for the body (not
    ``optax.masked``, which would pass the body's raw gradients through as
    updates, i.e. gradient *ascent*).

    Args:
      inner: the optimizer for the head.
      is_head: a top-level parameter name, or a predicate on the top-level
        name of each parameter subtree.

    Raises:
      ValueError: at trace time, if no parameter is selected as the head.
    """
    select = (lambda name: name == is_head) if isinstance(is_head, str) else is_head

    def labels(params):
        if not isinstance(params, dict) or not any(select(k) for k in params):
            names = list(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                f"head_only: no top-level parameter matches the head selector {is_head!r}; the model's "
                f"parameters are {names}. Set learner.head to one of them."
            )
        return {k: jax.tree_util.tree_map(lambda _: "head" if select(k) else "body", v) for k, v in params.items()}

    def build(theta):
        return optax.partition({"head": inner.build(theta), "body": optax.set_to_zero()}, labels)

    return InnerOptimizer(init=inner.init, build=build)
