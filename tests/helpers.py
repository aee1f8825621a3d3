"""Small shared builders for tests: a linear model, a tiny MLP task batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax import Model, Split, Task


def linear_model(dim: int) -> Model:
    """``y = x @ w`` with ``w`` of shape ``(dim, 1)``: second derivatives are known in closed form."""

    def init(key, example):
        return {"w": jax.random.normal(key, (dim, 1), example.dtype)}, {}

    def apply(params, state, x, *, train):
        return x @ params["w"], state

    return Model(init, apply)


def regression_tasks(key, tasks: int, shots: int, dim: int, dtype=jnp.float32) -> Task:
    """Random linear-regression tasks ``(tasks, shots, dim)`` with noise-free targets."""
    kx, kw, kq = jax.random.split(key, 3)
    w = jax.random.normal(kw, (tasks, dim, 1), dtype)
    xs = jax.random.normal(kx, (tasks, shots, dim), dtype)
    xq = jax.random.normal(kq, (tasks, shots, dim), dtype)
    return Task(Split(xs, xs @ w), Split(xq, xq @ w))
