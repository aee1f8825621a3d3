"""MAML-family gradients checked against mathematics: closed forms and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import fixed, head_only, learned_lr, maml, mse, reptile
from metajax.core.tasks import task_at
from metajax.models.mlp import mlp
from tests.helpers import linear_model, regression_tasks

ALPHA = 0.1


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def _loss_grad(w, split):
    """Closed forms for L(w) = mean((x w - y)^2): gradient and Hessian."""
    x, y = split.x, split.y
    n = x.shape[0]
    return 2.0 / n * x.T @ (x @ w - y), 2.0 / n * x.T @ x


def _setup(dim=3, shots=4):
    task = task_at(regression_tasks(jax.random.key(1), 1, shots, dim, jnp.float64), 0)
    w = jax.random.normal(jax.random.key(2), (dim, 1), jnp.float64)
    return task, {"params": {"w": w}, "inner_opt": {}}


def _meta_grad(learner, meta, task):
    return jax.grad(lambda m: learner.task_loss(m, {}, task, jax.random.key(0))[0])(meta)


def test_second_order_maml_matches_closed_form_on_linear_model():
    task, meta = _setup()
    learner = maml(linear_model(3), mse, fixed(optax.sgd(ALPHA)), inner_steps=1)
    w = meta["params"]["w"]
    g_s, h_s = _loss_grad(w, task.support)
    w_adapted = w - ALPHA * g_s
    g_q, _ = _loss_grad(w_adapted, task.query)
    expected = (jnp.eye(3) - ALPHA * h_s) @ g_q
    np.testing.assert_allclose(_meta_grad(learner, meta, task)["params"]["w"], expected, rtol=1e-10)


def test_first_order_drops_exactly_the_hessian_term():
    task, meta = _setup()
    fo = maml(linear_model(3), mse, fixed(optax.sgd(ALPHA)), inner_steps=1, first_order=True)
    so = maml(linear_model(3), mse, fixed(optax.sgd(ALPHA)), inner_steps=1)
    w = meta["params"]["w"]
    g_s, h_s = _loss_grad(w, task.support)
    g_q, _ = _loss_grad(w - ALPHA * g_s, task.query)
    grad_fo = _meta_grad(fo, meta, task)["params"]["w"]
    grad_so = _meta_grad(so, meta, task)["params"]["w"]
    np.testing.assert_allclose(grad_fo, g_q, rtol=1e-10)
    np.testing.assert_allclose(grad_so - grad_fo, -ALPHA * h_s @ g_q, rtol=1e-8, atol=1e-12)
    assert np.abs(grad_so - grad_fo).max() > 1e-3  # the Hessian term is really there


def _finite_difference(f, tree, eps=1e-6):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for i, leaf in enumerate(leaves):
        flat = np.array(leaf, np.float64).ravel()
        grad = np.zeros_like(flat)
        for j in range(flat.size):
            for sign in (1, -1):
                bumped = flat.copy()
                bumped[j] += sign * eps
                new = [*leaves[:i], jnp.asarray(bumped.reshape(leaf.shape)), *leaves[i + 1 :]]
                grad[j] += sign * f(jax.tree_util.tree_unflatten(treedef, new)) / (2 * eps)
        out.append(grad.reshape(leaf.shape))
    return jax.tree_util.tree_unflatten(treedef, out)


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_second_order_maml_matches_finite_differences_on_mlp(inner_steps):
    batch = regression_tasks(jax.random.key(3), 1, 5, 2, jnp.float64)
    task = task_at(batch, 0)
    learner = maml(
        mlp(out_features=1, hidden=(4,), activation="tanh"), mse, fixed(optax.sgd(ALPHA)), inner_steps=inner_steps
    )
    meta, _ = learner.init(jax.random.key(4), task)
    meta = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), meta)  # Flax initialises float32
    loss = jax.jit(lambda m: learner.task_loss(m, {}, task, jax.random.key(0))[0])
    analytic = jax.grad(loss)(meta)
    numeric = _finite_difference(lambda m: float(loss(m)), meta)
    for a, n in zip(jax.tree_util.tree_leaves(analytic), jax.tree_util.tree_leaves(numeric), strict=True):
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-8)


def test_reptile_one_sgd_step_equals_closed_form():
    task, meta = _setup()
    learner = reptile(linear_model(3), mse, fixed(optax.sgd(ALPHA)), inner_steps=1)
    grads, _ = learner.meta_gradient(meta, {}, task, jax.random.key(0))
    g_s, _ = _loss_grad(meta["params"]["w"], task.support)
    # Reptile's direction params - adapted = alpha * grad L_support: a scaled SGD step.
    np.testing.assert_allclose(grads["params"]["w"], ALPHA * g_s, rtol=1e-10)


def test_metasgd_learning_rate_gradients_match_closed_form_and_finite_differences():
    task, _ = _setup()
    learner = maml(linear_model(3), mse, learned_lr(optax.sgd(1.0), init_lr=ALPHA), inner_steps=1)
    meta, _ = learner.init(jax.random.key(5), task)
    lrs = jax.random.uniform(jax.random.key(6), (3, 1), jnp.float64, 0.05, 0.2)
    meta = {"params": meta["params"], "inner_opt": {"w": lrs}}
    grad = _meta_grad(learner, meta, task)["inner_opt"]["w"]
    w = meta["params"]["w"]
    g_s, _ = _loss_grad(w, task.support)
    g_q, _ = _loss_grad(w - lrs * g_s, task.query)
    np.testing.assert_allclose(grad, -g_s * g_q, rtol=1e-10)  # d/d alpha of L_q(w - alpha * g_s)
    loss = lambda lr: float(learner.task_loss({"params": meta["params"], "inner_opt": {"w": lr}}, {}, task, None)[0])  # noqa: E731
    np.testing.assert_allclose(grad, _finite_difference(loss, lrs), rtol=1e-6, atol=1e-10)


def test_anil_leaves_the_body_bitwise_unchanged():
    batch = regression_tasks(jax.random.key(7), 1, 5, 2)
    task = task_at(batch, 0)
    learner = maml(mlp(out_features=1, hidden=(8, 8)), mse, head_only(fixed(optax.sgd(0.5))), inner_steps=3)
    meta, _ = learner.init(jax.random.key(8), task)
    adapted = learner.adapt(meta, {}, task.support, None, 3)
    for name in ("hidden_0", "hidden_1"):
        for a, b in zip(
            jax.tree_util.tree_leaves(adapted[name]), jax.tree_util.tree_leaves(meta["params"][name]), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(adapted["head"]["kernel"], meta["params"]["head"]["kernel"])
    # The body still receives a meta-gradient (ANIL trains it in the outer loop).
    grads = _meta_grad(learner, meta, task)
    assert float(jnp.abs(grads["params"]["hidden_0"]["kernel"]).sum()) > 0


def test_anil_with_unknown_head_name_is_a_clear_error():
    task = task_at(regression_tasks(jax.random.key(7), 1, 5, 2), 0)
    learner = maml(mlp(out_features=1), mse, head_only(fixed(optax.sgd(0.5)), "classifier"), inner_steps=1)
    meta, _ = learner.init(jax.random.key(8), task)
    with pytest.raises(ValueError, match="learner.head"):
        learner.adapt(meta, {}, task.support, None, 1)


def test_inner_adam_meta_gradient_is_finite_with_exactly_zero_gradient_entries():
    from metajax.components import make_optimizer

    task, meta = _setup()
    # A support feature that is always zero gives an exactly-zero inner gradient entry.
    task = task._replace(support=task.support._replace(x=task.support.x.at[:, 0].set(0.0)))
    ours = maml(linear_model(3), mse, fixed(make_optimizer({"name": "adam", "lr": 0.01})), inner_steps=2)
    raw = maml(linear_model(3), mse, fixed(optax.adam(0.01, eps_root=0.0)), inner_steps=2)
    assert np.isfinite(_meta_grad(ours, meta, task)["params"]["w"]).all()
    # The pitfall the registered optimizer avoids: optax's default eps_root=0 gives NaN.
    assert not np.isfinite(_meta_grad(raw, meta, task)["params"]["w"]).all()
