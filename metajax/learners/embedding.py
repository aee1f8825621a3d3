"""The shared shape of metric and closed-form-head learners (ProtoNets, Matching Nets, R2-D2, MetaOptNet).

Such a learner embeds the support and query sets with the model, fits a
head in closed form on the support embeddings (prototypes, an attention
memory, a ridge solution) and scores the query embeddings with it. There is
no inner loop, so every ``evaluate`` metric has shape ``(1,)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from metajax.core.learner import Learner
from metajax.core.losses import LossFn
from metajax.core.model import Model
from metajax.core.tasks import Split, Task
from metajax.typing import Array, MetaParams, ModelState, PRNGKey

Fit = Callable[[MetaParams, Array, Array], dict]  # (meta_params, z_support (n, d), labels (n,)) -> adapted
Score = Callable[[dict, Array], Array]  # (adapted, z (m, d)) -> logits (m, classes)


def embedding_learner(
    name: str,
    model: Model,
    loss: LossFn,
    *,
    init: Callable[[PRNGKey, Task], tuple[MetaParams, ModelState]],
    fit: Fit,
    score: Score,
    train_loss: LossFn | None = None,
) -> Learner:
    """A :class:`Learner` from a closed-form head ``fit`` on support embeddings and its ``score``.

    ``fit`` must return a dict holding ``"params"`` (the embedding's weights),
    which ``adapt`` returns and ``predict`` uses. Support and query are
    embedded in separate forward passes, so with batch statistics the query
    never changes the fitted head, and ``adapt`` then ``predict`` gives what
    ``evaluate`` scores. ``train_loss`` (e.g. label-smoothed) replaces ``loss`` in
    training only; evaluation reports ``loss``.
    """

    def embed(params, state: ModelState, x: Array, *, train: bool, rng=None) -> tuple[Array, ModelState]:
        stochastic = {"rng": rng} if model.stochastic and train else {}  # dropout / DropBlock in training only
        z, state = model.apply(params, state, x, train=train, **stochastic)
        if z.ndim != 2:
            raise ValueError(
                f"{name}: the model must return embeddings (n, features), got shape {z.shape}; "
                "build it without a head (an '-embedding' model, or model.out_features: null)."
            )
        return z, state

    def query_logits(meta_params, state, task: Task, *, train: bool, key: PRNGKey | None = None):
        k_support, k_query = jax.random.split(key) if key is not None else (None, None)
        z_support, state = embed(meta_params["params"], state, task.support.x, train=train, rng=k_support)
        z_query, state = embed(meta_params["params"], state, task.query.x, train=train, rng=k_query)
        return score(fit(meta_params, z_support, task.support.y), z_query), state

    def task_loss(meta_params, state, task: Task, key: PRNGKey):
        logits, state = query_logits(meta_params, state, task, train=True, key=key if model.stochastic else None)
        value, metrics = (train_loss or loss)(logits, task.query.y)
        return value, (state, metrics)

    def evaluate(meta_params, state, task: Task, key: PRNGKey, steps: int):
        del key, steps  # no inner loop: every metric has shape (1,)
        logits, _ = query_logits(meta_params, state, task, train=False)
        return jax.tree_util.tree_map(lambda m: m[None], loss(logits, task.query.y)[1])

    def adapt(meta_params, state, support: Split, key: PRNGKey, steps: int) -> dict:
        del key, steps
        z, _ = embed(meta_params["params"], state, support.x, train=False)
        return fit(meta_params, z, support.y)

    def predict(adapted: dict, state: ModelState, x: Array) -> Array:
        z, _ = embed(adapted["params"], state, x, train=False)
        return score(adapted, z)

    return Learner(init, task_loss, evaluate, adapt, predict, None, 0)
