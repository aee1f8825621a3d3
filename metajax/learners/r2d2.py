"""R2-D2: a differentiable closed-form ridge-regression head (Bertinetto, Henriques, Torr, Vedaldi, ICLR 2019).

Per task, the support embeddings ``X`` ``(n, d)`` (with a column of ones for
the bias) are regressed onto one-hot labels ``Y`` ``(n, c)`` in closed form,

    W = X^T (X X^T + lambda I_n)^{-1} Y          (Woodbury: an n x n solve, n << d),

and a query embedding ``z`` is scored ``alpha * [z, 1] W + beta``. The
embedding, ``lambda``, ``alpha`` and ``beta`` are meta-learned by
back-propagating the query cross-entropy through the solve. There is no
inner loop: "adapting" is the solve.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from metajax.core.learner import Learner
from metajax.core.losses import LossFn
from metajax.core.model import Model
from metajax.core.tasks import Task
from metajax.learners.embedding import embedding_learner
from metajax.typing import Array, MetaParams, ModelState, PRNGKey


def ridge_weights(features: Array, targets: Array, lam: Array) -> Array:
    """Closed-form ridge regression through the n x n (Woodbury) system.

    Args:
      features: ``(n, d)`` support features (append a ones column for a bias).
      targets: ``(n, c)`` regression targets (one-hot labels).
      lam: scalar ``> 0``, the ridge penalty.

    Returns:
      ``W`` ``(d, c)`` minimising ``||X W - Y||^2 + lam ||W||^2``.
    """
    gram = features @ features.T + lam * jnp.eye(features.shape[0], dtype=features.dtype)
    return features.T @ jax.scipy.linalg.solve(gram, targets, assume_a="pos")


def _with_bias(z: Array) -> Array:
    return jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], axis=1)


def r2d2(
    model: Model,
    loss: LossFn,
    *,
    ways: Optional[int] = None,
    init_lambda: float = 1.0,
    init_scale: float = 1.0,
    learn_lambda: bool = True,
) -> Learner:
    """R2-D2's ridge-regression head over an embedding ``model``.

    Meta-parameters are ``{"params": embedding params, "log_lambda": (),
    "scale": (), "bias": ()}``: the ridge penalty ``lambda = exp(log_lambda)``
    (frozen with ``learn_lambda=False``) and the affine calibration
    ``alpha`` (``scale``), ``beta`` (``bias``) of the logits. Support and query
    sets are embedded in separate forward passes (as in ProtoNets), so the
    query never changes the regression.

    With ``ways=None`` the one-hot targets have one column per support
    example (any N-way task); classes absent from the support set get logit
    ``-inf``. ``adapt`` returns ``{"params", "weights" (d + 1, c), "scale",
    "bias", "present" (c,)}``; ``predict`` returns logits ``(n, c)``;
    ``evaluate`` metrics have shape ``(1,)``.

    Args:
      model: embedding model returning ``(n, d)`` (no head).
      loss: ``cross_entropy``.
      ways: classes per task, or ``None`` for any.
      init_lambda: initial ridge penalty (> 0).
      init_scale: initial ``alpha`` (``beta`` starts at 0).
      learn_lambda: meta-learn ``lambda`` (the paper does) or keep it fixed.

    Example::

      embed = conv4(out_features=None, batch_norm="standard")
      learner = r2d2(embed, cross_entropy, init_lambda=1.0)
    """
    if ways is not None and (not isinstance(ways, int) or isinstance(ways, bool) or ways < 1):
        raise ValueError(f"r2d2: ways must be a positive int or null, got {ways!r} (learner.ways).")
    for key, value in (("init_lambda", init_lambda), ("init_scale", init_scale)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"r2d2: {key} must be a number > 0, got {value!r} (learner.{key}).")

    def solve(meta_params: MetaParams, z_support: Array, labels: Array) -> dict:
        classes = ways or labels.shape[0]
        targets = jax.nn.one_hot(labels, classes, dtype=z_support.dtype)
        log_lambda = meta_params["log_lambda"] if learn_lambda else jax.lax.stop_gradient(meta_params["log_lambda"])
        return {
            "params": meta_params["params"],
            "weights": ridge_weights(_with_bias(z_support), targets, jnp.exp(log_lambda)),
            "scale": meta_params["scale"],
            "bias": meta_params["bias"],
            "present": targets.sum(axis=0) > 0,
        }

    def logits_of(adapted: dict, z: Array) -> Array:
        logits = adapted["scale"] * (_with_bias(z) @ adapted["weights"]) + adapted["bias"]
        return jnp.where(adapted["present"][None, :], logits, -jnp.inf)

    def init(key: PRNGKey, task: Task) -> tuple[MetaParams, ModelState]:
        params, state = model.init(key, task.support.x)
        meta = {
            "params": params,
            "log_lambda": jnp.log(jnp.asarray(init_lambda, jnp.float32)),
            "scale": jnp.asarray(init_scale, jnp.float32),
            "bias": jnp.zeros((), jnp.float32),
        }
        return meta, state

    return embedding_learner("r2d2", model, loss, init=init, fit=solve, score=logits_of)
