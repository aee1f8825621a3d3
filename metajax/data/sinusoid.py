"""The sinusoid regression task family of the MAML paper (Finn et al., 2017, sec. 5.1)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metajax.core.tasks import Split, Task
from metajax.data.source import TaskSource
from metajax.typing import PRNGKey


def sinusoid(
    shots: int = 10,
    queries: int | None = None,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> TaskSource:
    """Tasks ``y = A sin(x - phi)`` with ``A ~ U[amplitude]``, ``phi ~ U[phase]``, ``x ~ U[x_range]``.

    Every split draws from the same distribution; held-out tasks differ by key.

    Args:
      shots: support points per task (K).
      queries: query points per task (default: ``shots``).

    Returns:
      A :class:`TaskSource` whose tasks have ``x, y`` of shape ``(shots, 1)``
      (support) and ``(queries, 1)`` (query).

    Example::

      source = sinusoid(shots=5)
      task = source.sample(source.init(), jax.random.key(0), "train")
    """
    queries = shots if queries is None else queries
    for name, value in (("shots", shots), ("queries", queries)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"sinusoid: {name} must be an int >= 1, got {value!r}; set data.{name}.")
    for name, (lo, hi) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
        if not lo <= hi:
            raise ValueError(f"sinusoid: {name} must be [low, high] with low <= high, got {[lo, hi]}; set data.{name}.")

    def sample(data: dict, key: PRNGKey, split: str) -> Task:
        del data, split  # nothing stored: every task is drawn from the key
        k_amp, k_phase, k_x = jax.random.split(key, 3)
        amp = jax.random.uniform(k_amp, (), minval=amplitude[0], maxval=amplitude[1])
        phi = jax.random.uniform(k_phase, (), minval=phase[0], maxval=phase[1])
        x = jax.random.uniform(k_x, (shots + queries, 1), minval=x_range[0], maxval=x_range[1])
        y = amp * jnp.sin(x - phi)
        return Task(Split(x[:shots], y[:shots]), Split(x[shots:], y[shots:]))

    example = Task(
        Split(jnp.zeros((shots, 1)), jnp.zeros((shots, 1))), Split(jnp.zeros((queries, 1)), jnp.zeros((queries, 1)))
    )
    info = {
        "name": "sinusoid",
        "shots": shots,
        "queries": queries,
        "amplitude": list(amplitude),
        "phase": list(phase),
        "x_range": list(x_range),
    }
    return TaskSource(sample, example, 1, "mse", info, init=dict)
