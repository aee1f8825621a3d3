"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra, NeurIPS 2016) as pure functions.

A query ``x`` is classified by attention over the support set:
``p(y = k | x) = sum_i a(x, x_i) [y_i = k]`` with ``a`` the softmax over the
support of the cosine similarity between the query embedding ``f(x)`` and the
support embeddings ``g(x_i)``.

Without full context embeddings (``fce=False``) ``f = g`` = the embedding
network. With them (``fce=True``, sec. 2.1.2 and appendix A of the paper):

- ``g(x_i) = h_fw_i + h_bw_i + g'(x_i)``: a bidirectional LSTM over the
  support embeddings ``g'(x_i)``, with its outputs added to its inputs;
- ``f(x)`` is ``K`` steps of an attention LSTM reading ``f'(x)``:
  ``h_k, c_k = LSTM(f'(x), [h_{k-1} + r_{k-1}, c_{k-1}])``,
  ``h_k <- h_k + f'(x)``, ``r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)``.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.core.learner import Learner
from metajax.core.losses import LossFn
from metajax.core.model import Model
from metajax.core.tasks import Task
from metajax.learners.embedding import embedding_learner
from metajax.learners.protonet import cosine_similarity
from metajax.typing import Array, MetaParams, ModelState, PRNGKey

_EMPTY = -1e30  # a finite "minus infinity": logsumexp over an empty class stays differentiable


class FullContextEmbedding(nn.Module):
    """The paper's context embeddings: ``(support (n, d), query (m, d)) -> (g (n, d), f (m, d))``.

    ``steps`` is the number of attention-LSTM processing steps ``K``.
    """

    steps: int

    @nn.compact
    def __call__(self, support: Array, query: Array) -> tuple[Array, Array]:
        d = support.shape[-1]
        bidirectional = nn.Bidirectional(
            nn.RNN(nn.LSTMCell(d), name="forward"),
            nn.RNN(nn.LSTMCell(d), name="backward"),
            merge_fn=lambda a, b: a + b,
            name="g_lstm",
        )
        g = bidirectional(support[None])[0] + support  # (n, d)

        cell = nn.LSTMCell(d, name="f_lstm")
        c = jnp.zeros_like(query)
        h = jnp.zeros_like(query)
        r = jnp.zeros_like(query)
        for _ in range(self.steps):
            (c, h), _ = cell((c, h + r), query)
            h = h + query
            r = jax.nn.softmax(h @ g.T, axis=-1) @ g  # (m, d)
        return g, h


def _class_log_probs(similarity: Array, labels: Array, classes: int) -> Array:
    """``log p(y = k | query)`` from attention logits ``(m, n)`` over support labels ``(n,)``: ``(m, classes)``."""
    member = jax.nn.one_hot(labels, classes, dtype=bool).T  # (classes, n)
    per_class = jnp.where(member[None], similarity[:, None, :], _EMPTY)  # (m, classes, n)
    return jax.nn.logsumexp(per_class, axis=-1) - jax.nn.logsumexp(similarity, axis=-1, keepdims=True)


def matching(
    model: Model,
    loss: LossFn,
    *,
    fce: bool = False,
    fce_steps: Optional[int] = None,
    scale: float = 1.0,
    ways: Optional[int] = None,
) -> Learner:
    """Matching Networks, with or without full context embeddings.

    ``model`` is the embedding network (``(n, *input_shape) -> (n, d)``).
    Meta-parameters are ``{"params": embedding params}`` and, with
    ``fce=True``, ``"fce"``: the LSTMs' parameters. Support and query sets
    are embedded in separate forward passes (batch statistics never mix them).

    Predictions are the log class probabilities ``log p(y = k | x)``, so the
    softmax cross-entropy of them is the paper's loss. ``scale`` multiplies
    the cosine similarities before the attention softmax (1.0 is the paper's;
    larger values sharpen the attention). With ``ways=None`` there is one
    class per support example; classes absent from the support set get ``-inf``.

    ``adapt`` returns ``{"params", "fce", "support" (n, d), "labels" (n,)}``
    (the context embedding of queries needs the support set, so it is kept);
    ``predict`` returns ``(n, c)``; ``evaluate`` metrics have shape ``(1,)``.

    Args:
      model: embedding model returning ``(n, d)``.
      loss: ``cross_entropy``.
      fce: use full context embeddings.
      fce_steps: attention-LSTM steps ``K`` (default: the support-set size).
      scale: multiplier of the cosine similarities (> 0).
      ways: classes per task, or ``None`` for any.

    Example::

      embed = conv4(out_features=None, batch_norm="standard")
      learner = matching(embed, cross_entropy, fce=True)
    """
    if ways is not None and (not isinstance(ways, int) or isinstance(ways, bool) or ways < 1):
        raise ValueError(f"matching: ways must be a positive int or null, got {ways!r} (learner.ways).")
    if fce_steps is not None and (not isinstance(fce_steps, int) or isinstance(fce_steps, bool) or fce_steps < 1):
        raise ValueError(f"matching: fce_steps must be a positive int or null, got {fce_steps!r} (learner.fce_steps).")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise ValueError(f"matching: scale must be a number > 0, got {scale!r} (learner.scale).")

    def context(n_support: int) -> FullContextEmbedding:
        return FullContextEmbedding(fce_steps or n_support)

    def scores(adapted: dict, z_query: Array) -> Array:
        g = adapted["support"]
        if fce:
            g, z_query = context(g.shape[0]).apply({"params": adapted["fce"]}, g, z_query)
        logits = _class_log_probs(scale * cosine_similarity(z_query, g), adapted["labels"], ways or g.shape[0])
        present = jax.nn.one_hot(adapted["labels"], ways or g.shape[0]).sum(axis=0) > 0
        return jnp.where(present[None, :], logits, -jnp.inf)

    def init(key: PRNGKey, task: Task) -> tuple[MetaParams, ModelState]:
        k_model, k_fce = jax.random.split(key)
        params, state = model.init(k_model, task.support.x)
        meta = {"params": params}
        if fce:
            z, _ = model.apply(params, state, task.support.x, train=False)
            zq, _ = model.apply(params, state, task.query.x, train=False)
            meta["fce"] = context(z.shape[0]).init(k_fce, z, zq)["params"]
        return meta, state

    def adapted_of(meta_params, z_support: Array, labels: Array) -> dict:
        return {
            "params": meta_params["params"],
            "fce": meta_params.get("fce", {}),
            "support": z_support,
            "labels": labels,
        }

    return embedding_learner("matching", model, loss, init=init, fit=adapted_of, score=scores)
