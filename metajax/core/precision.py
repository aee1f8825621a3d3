"""Mixed precision: compute in a low-precision dtype, keep parameters in float32.

Models take a ``dtype`` config value (``"float32"`` or ``"bfloat16"``): inputs
and weights are cast to it for the forward pass, parameters, optimizer state
and gradients stay float32 (the cast's transpose brings gradients back to
float32), and losses are computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.typing import Params, PyTree

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str, *, where: str = "dtype") -> jnp.dtype:
    """The dtype for a config value ``name``.

    Raises:
      ValueError: ``name`` is not one of :data:`DTYPES`.

    Example::

      compute_dtype("bfloat16")  # jnp.bfloat16
    """
    if name not in DTYPES:
        raise ValueError(f"{where}: {name!r} is not a compute dtype; use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def cast_floating(tree: PyTree, dtype: jnp.dtype) -> PyTree:
    """Casts every floating leaf of ``tree`` to ``dtype``; other leaves are unchanged."""

    def cast(leaf):
        return leaf.astype(dtype) if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating) else leaf

    return jax.tree_util.tree_map(cast, tree)


def with_compute_dtype(apply, dtype: str):
    """Wraps a model ``apply`` so it runs in ``dtype`` with float32 params and float32 outputs.

    For models that have no ``dtype`` option of their own.

    Example::

      model = model._replace(apply=with_compute_dtype(model.apply, "bfloat16"))
    """
    low = compute_dtype(dtype)

    def apply_low(params: Params, state, x, *, train: bool, **rng):
        y, state = apply(cast_floating(params, low), state, cast_floating(x, low), train=train, **rng)
        return cast_floating(y, jnp.float32), state

    return apply_low
