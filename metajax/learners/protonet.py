"""Prototypical Networks (Snell, Swersky and Zemel, 2017) as a learner of pure functions.

A class's prototype is the mean embedding of its support examples; a query
is classified by a softmax over negative distances to the prototypes. There
is no inner loop: "adapting" is computing the prototypes.
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

DISTANCES = ("euclidean", "cosine")


def class_prototypes(embeddings: Array, labels: Array, ways: int) -> tuple[Array, Array]:
    """Mean embedding per class.

    Args:
      embeddings: ``(n, features)`` support embeddings.
      labels: ``(n,)`` int labels in ``0 .. ways - 1``.
      ways: number of classes (static).

    Returns:
      ``(prototypes (ways, features), present (ways,) bool)``; a class with no
      support example gets a zero prototype and ``present=False``.
    """
    one_hot = jax.nn.one_hot(labels, ways, dtype=embeddings.dtype)  # (n, ways)
    counts = one_hot.sum(axis=0)
    return (one_hot.T @ embeddings) / jnp.maximum(counts, 1.0)[:, None], counts > 0


def squared_euclidean(queries: Array, prototypes: Array) -> Array:
    """``||q - p||^2`` for every pair: ``(m, d), (ways, d) -> (m, ways)``."""
    return jnp.sum(jnp.square(queries[:, None, :] - prototypes[None, :, :]), axis=-1)


def cosine_similarity(queries: Array, prototypes: Array, eps: float = 1e-8) -> Array:
    """Cosine similarity for every pair: ``(m, d), (ways, d) -> (m, ways)``."""
    q = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), eps)
    p = prototypes / jnp.maximum(jnp.linalg.norm(prototypes, axis=-1, keepdims=True), eps)
    return q @ p.T


def protonet(model: Model, loss: LossFn, *, distance: str = "euclidean", ways: Optional[int] = None) -> Learner:
    """Prototypical Networks.

    ``model`` is the embedding network: it must return features ``(n, d)``
    (for Conv4, build it with ``out_features=None``). Meta-parameters are
    ``{"params": model params}``. Support and query sets are embedded in two
    separate forward passes, so with batch statistics (transductive batch
    norm) the query never changes the prototypes, and ``adapt`` then
    ``predict`` gives exactly what ``evaluate`` scores.

    Logits are ``-||f(x) - c_k||^2`` (``distance="euclidean"``, the paper's
    choice) or the cosine similarity (``"cosine"``). With ``ways=None`` the
    number of classes is not fixed: prototypes are computed for labels
    ``0 .. n_support - 1`` and classes absent from the support set get logit
    ``-inf``, so one trained learner serves any N-way K-shot task.

    ``adapt`` returns ``{"params", "prototypes" (c, d), "present" (c,)}``;
    ``predict`` returns logits ``(n, c)``, where ``c`` is ``ways`` or the
    support size; ``evaluate`` returns metrics of shape ``(1,)``.

    Args:
      model: embedding model returning ``(n, d)``.
      loss: ``cross_entropy`` (distances are logits over classes).
      distance: ``"euclidean"`` or ``"cosine"``.
      ways: classes per task (labels ``0 .. ways - 1``), or ``None`` for any.

    Example::

      embed = conv4(out_features=None, batch_norm="standard")
      learner = protonet(embed, cross_entropy)
    """
    if distance not in DISTANCES:
        raise ValueError(f"protonet: distance={distance!r}; use one of {DISTANCES} (learner.distance).")
    if ways is not None and (not isinstance(ways, int) or isinstance(ways, bool) or ways < 1):
        raise ValueError(f"protonet: ways must be a positive int or null, got {ways!r} (learner.ways).")
    similarity = (lambda q, p: -squared_euclidean(q, p)) if distance == "euclidean" else cosine_similarity

    def prototypes(params, z_support: Array, labels: Array) -> dict:
        protos, present = class_prototypes(z_support, labels, ways or labels.shape[0])
        return {"params": params, "prototypes": protos, "present": present}

    def logits_of(adapted: dict, z: Array) -> Array:
        return jnp.where(adapted["present"][None, :], similarity(z, adapted["prototypes"]), -jnp.inf)

    def init(key: PRNGKey, task: Task) -> tuple[MetaParams, ModelState]:
        params, state = model.init(key, task.support.x)
        return {"params": params}, state

    return embedding_learner(
        "protonet", model, loss, init=init, fit=lambda meta, z, y: prototypes(meta["params"], z, y), score=logits_of
    )
