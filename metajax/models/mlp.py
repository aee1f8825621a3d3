"""A multilayer perceptron, the sinusoid model of the MAML paper (40-40 ReLU)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from metajax.core.model import Model, from_flax
from metajax.typing import Array

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jax.nn.tanh, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


class MLP(nn.Module):
    """Dense layers ``hidden_0 .. hidden_{L-1}`` with an activation, then a linear ``head``."""

    hidden: Sequence[int]
    out_features: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        del train
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = ACTIVATIONS[self.activation](nn.Dense(width, name=f"hidden_{i}")(x))
        return nn.Dense(self.out_features, name="head")(x)


def mlp(out_features: int, hidden: Sequence[int] = (40, 40), activation: str = "relu") -> Model:
    """An MLP as a pure :class:`Model` pair; inputs ``(n, ...)`` are flattened, output ``(n, out_features)``.

    Example::

      model = mlp(out_features=1, hidden=(40, 40))
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"mlp: unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)} (model.activation)."
        )
    if any(not isinstance(w, int) or w < 1 for w in hidden):
        raise ValueError(f"mlp: hidden must be a list of positive ints, got {list(hidden)!r} (model.hidden).")
    return from_flax(MLP(hidden=tuple(hidden), out_features=out_features, activation=activation))
