"""A multilayer perceptron, the sinusoid model of the MAML paper (40-40 ReLU)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from metajax.core.model import Model, from_flax
from metajax.typing import Array

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jax.nn.tanh, "gelu": jax.nn.gelu, "silu": jax.nn.silu}
# "maml": the MAML reference code's initialisation (truncated normal, std 0.01, zero bias).
WEIGHT_INITS = {"lecun_normal": nn.initializers.lecun_normal(), "maml": nn.initializers.truncated_normal(0.01)}


class MLP(nn.Module):
    """Dense layers ``hidden_0 .. hidden_{L-1}`` with an activation, then a linear ``head``."""

    hidden: Sequence[int]
    out_features: int
    activation: str = "relu"
    weight_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        del train
        x = x.reshape(x.shape[0], -1)
        init = WEIGHT_INITS[self.weight_init]
        for i, width in enumerate(self.hidden):
            x = ACTIVATIONS[self.activation](nn.Dense(width, kernel_init=init, name=f"hidden_{i}")(x))
        return nn.Dense(self.out_features, kernel_init=init, name="head")(x)


def mlp(
    out_features: int, hidden: Sequence[int] = (40, 40), activation: str = "relu", weight_init: str = "lecun_normal"
) -> Model:
    """An MLP as a pure :class:`Model` pair; inputs ``(n, ...)`` are flattened, output ``(n, out_features)``.

    Example::

      model = mlp(out_features=1, hidden=(40, 40))
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"mlp: unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)} (model.activation)."
        )
    if weight_init not in WEIGHT_INITS:
        raise ValueError(
            f"mlp: unknown weight_init {weight_init!r}; use one of {sorted(WEIGHT_INITS)} (model.weight_init)."
        )
    if any(not isinstance(w, int) or w < 1 for w in hidden):
        raise ValueError(f"mlp: hidden must be a list of positive ints, got {list(hidden)!r} (model.hidden).")
    return from_flax(
        MLP(hidden=tuple(hidden), out_features=out_features, activation=activation, weight_init=weight_init)
    )
