"""The learner interface: a small bundle of pure functions.

A learner is written for a single task; the framework batches it over the
task axis (see :mod:`metajax.core.batching`). No learner holds mutable state
or knows about devices, logging or files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

from metajax.core.tasks import Split, Task
from metajax.typing import Array, MetaParams, Metrics, ModelState, PRNGKey

Adapted = Any  # what ``predict`` needs after adaptation: adapted params, prototypes, ...


class Learner(NamedTuple):
    """A meta-learner as pure functions of pytrees.

    Attributes:
      init: ``init(key, example_task) -> (meta_params, model_state)``.
      task_loss: ``task_loss(meta_params, model_state, task, key) ->
        (loss, (model_state, metrics))``: adapt on ``task.support``, score on
        ``task.query``. The outer step differentiates it w.r.t. ``meta_params``.
      evaluate: ``evaluate(meta_params, model_state, task, key, steps) -> metrics``
        with every metric of shape ``(steps + 1,)``: the query metrics after
        0, 1, ..., ``steps`` inner steps (learners without an inner loop return
        shape ``(1,)``).
      adapt: ``adapt(meta_params, model_state, support, key, steps) -> adapted``.
      predict: ``predict(adapted, model_state, x) -> y`` for inputs
        ``(n, *input_shape)``.
      meta_gradient: optional ``meta_gradient(meta_params, model_state, task,
        key) -> (grads, (model_state, metrics))`` for learners whose outer
        update is not the gradient of a loss (Reptile). When ``None`` the
        outer step uses ``jax.grad`` of ``task_loss``.
      inner_steps: the number of inner steps used in training (0 if none).
    """

    init: Callable[[PRNGKey, Task], tuple[MetaParams, ModelState]]
    task_loss: Callable[[MetaParams, ModelState, Task, PRNGKey], tuple[Array, tuple[ModelState, Metrics]]]
    evaluate: Callable[[MetaParams, ModelState, Task, PRNGKey, int], Metrics]
    adapt: Callable[[MetaParams, ModelState, Split, PRNGKey, int], Adapted]
    predict: Callable[[Adapted, ModelState, Array], Array]
    meta_gradient: Optional[Callable[..., tuple[MetaParams, tuple[ModelState, Metrics]]]] = None
    inner_steps: int = 0
