"""MAML and its family: first-order MAML, Meta-SGD and ANIL are inner-optimizer choices."""

from __future__ import annotations

from functools import partial

import jax

from metajax.core.adapt import adapt as run_inner_loop
from metajax.core.learner import Learner
from metajax.core.losses import LossFn
from metajax.core.model import Model
from metajax.core.optim import InnerOptimizer
from metajax.core.tasks import Split, Task
from metajax.typing import MetaParams, ModelState, Params, PRNGKey


def _check_steps(name: str, inner_steps: int) -> None:
    if not isinstance(inner_steps, int) or isinstance(inner_steps, bool) or inner_steps < 1:
        raise ValueError(
            f"{name}: inner_steps must be an int >= 1, got {inner_steps!r}; set learner.inner_steps (e.g. --set inner_steps=1)."
        )


def maml(
    model: Model,
    loss: LossFn,
    inner_opt: InnerOptimizer,
    *,
    inner_steps: int = 1,
    first_order: bool = False,
    remat: bool = False,
) -> Learner:
    """Model-Agnostic Meta-Learning (Finn et al., 2017).

    Meta-parameters are ``{"params": model params, "inner_opt": theta}``; the
    inner loop runs ``inner_steps`` updates of ``inner_opt.build(theta)`` on the
    support set and the loss is scored on the query set. Gradients flow
    through the inner loop (second order) unless ``first_order``.

    Meta-SGD is ``maml(..., inner_opt=learned_lr(...))`` and ANIL is
    ``maml(..., inner_opt=head_only(...))``.

    Example::

      learner = maml(model, mse, fixed(optax.sgd(0.01)), inner_steps=1)
    """
    _check_steps("maml", inner_steps)

    def init(key: PRNGKey, task: Task) -> tuple[MetaParams, ModelState]:
        params, state = model.init(key, task.support.x)
        return {"params": params, "inner_opt": inner_opt.init(params)}, state

    def split_loss(params: Params, state: ModelState, split: Split, *, train: bool):
        pred, state = model.apply(params, state, split.x, train=train)
        value, metrics = loss(pred, split.y)
        return value, (state, metrics)

    def inner(meta_params, state, support, steps, observe=None):
        def support_loss(params, state):
            value, (state, _) = split_loss(params, state, support, train=True)
            return value, state

        tx = inner_opt.build(meta_params["inner_opt"])
        return run_inner_loop(
            support_loss, meta_params["params"], state, tx, steps, first_order=first_order, remat=remat, observe=observe
        )

    def task_loss(meta_params, state, task: Task, key: PRNGKey):
        del key
        result = inner(meta_params, state, task.support, inner_steps)
        value, (state, metrics) = split_loss(result.params, result.model_state, task.query, train=True)
        return value, (state, {**metrics, "support_loss": result.losses[0]})

    def evaluate(meta_params, state, task: Task, key: PRNGKey, steps: int):
        del key

        def observe(params, state):
            return split_loss(params, state, task.query, train=False)[1][1]

        return inner(meta_params, state, task.support, steps, observe).observations

    def adapt(meta_params, state, support: Split, key: PRNGKey, steps: int) -> Params:
        del key
        return inner(meta_params, state, support, steps).params

    def predict(params: Params, state: ModelState, x):
        return model.apply(params, state, x, train=False)[0]

    return Learner(init, task_loss, evaluate, adapt, predict, None, inner_steps)


fomaml = partial(maml, first_order=True)
fomaml.__doc__ = "First-order MAML: :func:`maml` with ``first_order=True``."


def reptile(
    model: Model, loss: LossFn, inner_opt: InnerOptimizer, *, inner_steps: int = 1, remat: bool = False
) -> Learner:
    """Reptile (Nichol et al., 2018): the outer "gradient" is ``params - adapted``.

    With outer SGD of learning rate ``eps`` the meta-update is
    ``params + eps * (adapted - params)``, the Reptile rule. The inner loop
    trains on the support set; the query set is only scored for metrics.

    Example::

      learner = reptile(model, mse, fixed(optax.sgd(0.01)), inner_steps=5)
    """
    _check_steps("reptile", inner_steps)
    base = maml(model, loss, inner_opt, inner_steps=inner_steps, first_order=True, remat=remat)

    def meta_gradient(meta_params, state, task: Task, key: PRNGKey):
        del key
        tx = inner_opt.build(meta_params["inner_opt"])

        def support_loss(params, state):
            pred, state = model.apply(params, state, task.support.x, train=True)
            return loss(pred, task.support.y)[0], state

        result = run_inner_loop(support_loss, meta_params["params"], state, tx, inner_steps, remat=remat)
        grads = {
            "params": jax.tree_util.tree_map(lambda p, a: p - a, meta_params["params"], result.params),
            "inner_opt": jax.tree_util.tree_map(lambda t: 0.0 * t, meta_params["inner_opt"]),
        }
        pred, _ = model.apply(result.params, result.model_state, task.query.x, train=False)
        _, metrics = loss(pred, task.query.y)
        return jax.lax.stop_gradient(grads), (result.model_state, {**metrics, "support_loss": result.losses[0]})

    return base._replace(meta_gradient=meta_gradient)
