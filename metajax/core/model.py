"""Models enter metajax as a pure pair of functions.

``init(key, example) -> (params, state)`` and
``apply(params, state, x, *, train) -> (y, state)``, where ``state`` holds what
is not meta-learned (batch-norm statistics; ``{}`` for stateless models).
A model with stochastic layers (dropout, DropBlock) is marked
``stochastic=True`` and its ``apply`` also takes ``rng=key`` when training.
Flax modules are the way to write one (:func:`from_flax`), but nothing in
metajax depends on a model being a particular class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from metajax.typing import Array, ModelState, Params, PRNGKey


class Model(NamedTuple):
    """A model as two pure functions.

    Attributes:
      init: ``init(key, example) -> (params, state)``; ``example`` is a batch of
        inputs ``(n, *input_shape)``.
      apply: ``apply(params, state, x, *, train) -> (y, state)``; with
        ``train=True`` the returned state carries updated statistics.
      stochastic: ``apply(..., train=True, rng=key)`` draws randomness
        (dropout, DropBlock) from ``key``; learners that train such a model
        pass one (the embedding learners do).
    """

    init: Callable[[PRNGKey, Array], tuple[Params, ModelState]]
    apply: Callable[..., tuple[Array, ModelState]]
    stochastic: bool = False


def from_flax(module: nn.Module, *, stochastic: bool = False) -> Model:
    """Wraps a Flax module whose ``__call__`` takes ``(x, *, train: bool)``.

    The ``params`` collection becomes ``params``; every other collection (for
    example ``batch_stats``) becomes ``state`` and is updated when
    ``train=True``. With ``stochastic=True`` the module's ``"dropout"`` rng
    stream is ``apply``'s ``rng`` keyword, required when ``train=True``.

    Example::

      model = from_flax(MLP(hidden=(40, 40), out_features=1))
      params, state = model.init(jax.random.key(0), jnp.zeros((10, 1)))
      y, state = model.apply(params, state, x, train=True)
    """

    def init(key: PRNGKey, example: Array) -> tuple[Params, ModelState]:
        variables = dict(module.init(key, example, train=False))
        params = variables.pop("params", {})
        return params, variables

    def apply(
        params: Params, state: ModelState, x: Array, *, train: bool, rng: PRNGKey | None = None
    ) -> tuple[Array, ModelState]:
        variables: dict[str, Any] = {"params": params, **state}
        rngs = None
        if stochastic and train:
            if rng is None:
                raise ValueError(
                    f"{type(module).__name__} has dropout or DropBlock and needs apply(..., rng=key) in training; "
                    "use an embedding learner (protonet, matching, r2d2, metaoptnet), which passes one, or set "
                    "model.drop_rate=0"
                )
            rngs = {"dropout": rng}
        if train and state:
            y, new_state = module.apply(variables, x, train=True, mutable=list(state), rngs=rngs)
            return y, dict(new_state)
        return module.apply(variables, x, train=train, rngs=rngs), state

    return Model(init=init, apply=apply, stochastic=stochastic)


def count_params(params: Params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
