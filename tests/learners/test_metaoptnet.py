"""MetaOptNet-SVM: smoke checks, the dual solve against closed forms, KKT and SLSQP, its gradients, and training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize

from metajax.core.losses import cross_entropy
from metajax.core.model import Model
from metajax.core.tasks import Split, Task
from metajax.learners.metaoptnet import metaoptnet, svm_dual
from tests.learners.test_matching import smoke


def _identity() -> Model:
    return Model(lambda key, x: ({"w": jnp.zeros(())}, {}), lambda p, s, x, *, train: (x + p["w"], s))


def _dual_objective(alpha, kernel, onehot):
    return 0.5 * np.sum(kernel * (alpha @ alpha.T)) + 0.5 * np.sum(alpha**2) - np.sum(onehot * alpha)


def _slsqp(kernel, onehot, C):
    """The dual by scipy's SLSQP: an independent reference on a small problem."""
    n, c = onehot.shape
    constraints = [
        {"type": "eq", "fun": lambda a: a.reshape(n, c).sum(axis=1), "jac": lambda a: np.kron(np.eye(n), np.ones(c))},
        {"type": "ineq", "fun": lambda a: C * onehot.ravel() - a, "jac": lambda a: -np.eye(n * c)},
    ]
    result = minimize(
        lambda a: _dual_objective(a.reshape(n, c), kernel, onehot),
        np.zeros(n * c),
        jac=lambda a: (kernel @ a.reshape(n, c) + a.reshape(n, c) - onehot).ravel(),
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert result.success, result.message
    return result.x.reshape(n, c)


def _assert_kkt(alpha, kernel, onehot, C, atol):
    """Feasible, and in each row the entries off their bound share the largest gradient entry (the multiplier)."""
    assert np.all(alpha <= C * onehot + 1e-6)
    np.testing.assert_allclose(alpha.sum(axis=1), 0.0, atol=1e-6)
    grad = kernel @ alpha + alpha - onehot
    free = alpha < C * onehot - 1e-5
    row_max = grad.max(axis=1, keepdims=True)
    assert free.any()
    np.testing.assert_allclose(np.where(free, grad, row_max), np.broadcast_to(row_max, grad.shape), atol=atol)


def _problem(seed, ways, shots, dim, dtype=np.float64):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(ways), shots)
    z = np.maximum(rng.normal(size=(ways, dim))[labels] + rng.normal(size=(ways * shots, dim)), 0.0)
    return z.astype(dtype), np.eye(ways, dtype=dtype)[labels]


def test_metaoptnet_smoke_mlp_non_default_options():  # defaults: the shared smoke test
    smoke("metaoptnet", {"ways": 3, "C": 0.5, "iterations": 7, "init_scale": 2.0}, "mlp")


def test_two_point_dual_matches_the_closed_form():
    # z1 = (2, 0) class 0, z2 = (1, 1) class 1: alpha_1 = (a, -a), alpha_2 = (-b, b) and the objective is
    # (K11 + 1) a^2 + (K22 + 1) b^2 - 2 K12 a b - a - b, so 10 a - 4 b = 1 and 6 b - 4 a = 1: a = 5/22, b = 7/22.
    z = np.array([[2.0, 0.0], [1.0, 1.0]])
    onehot = np.eye(2)
    alpha = np.asarray(svm_dual(jnp.asarray(z @ z.T, jnp.float32), jnp.asarray(onehot, jnp.float32), 1.0, 200))
    a, b = 5 / 22, 7 / 22
    np.testing.assert_allclose(alpha, [[a, -a], [-b, b]], atol=1e-6)
    # With C = 0.1 both box constraints bind: a = b = C (the unconstrained optimum lies beyond the box).
    alpha = svm_dual(jnp.asarray(z @ z.T, jnp.float32), jnp.asarray(onehot, jnp.float32), 0.1, 200)
    np.testing.assert_allclose(alpha, [[0.1, -0.1], [-0.1, 0.1]], atol=1e-6)


def test_dual_is_feasible_optimal_and_matches_slsqp():
    z, onehot = _problem(0, ways=3, shots=2, dim=5)
    kernel, C = z @ z.T, 0.1
    alpha = np.asarray(svm_dual(jnp.asarray(kernel, jnp.float32), jnp.asarray(onehot, jnp.float32), C, 100))
    _assert_kkt(alpha, kernel, onehot, C, atol=1e-3)
    # Agrees with an independent solver.
    np.testing.assert_allclose(alpha, _slsqp(kernel, onehot, C), atol=1e-5)


def test_default_iterations_converge_on_a_realistic_task():
    """5-way 5-shot, 64 ReLU features: 100 steps are close to 3000 steps (float64 reference)."""
    z, onehot = _problem(1, ways=5, shots=5, dim=64)
    kernel = z @ z.T
    with jax.enable_x64(True):
        reference = np.asarray(svm_dual(jnp.asarray(kernel), jnp.asarray(onehot), 0.1, 3000))
    _assert_kkt(reference, kernel, onehot, 0.1, atol=1e-8)
    alpha = np.asarray(svm_dual(jnp.asarray(kernel, jnp.float32), jnp.asarray(onehot, jnp.float32), 0.1, 100))
    query = np.maximum(np.random.default_rng(2).normal(size=(20, 64)), 0.0)
    logits, reference_logits = query @ z.T @ alpha, query @ z.T @ reference
    assert np.max(np.abs(logits - reference_logits)) < 1e-2 * np.max(np.abs(reference_logits))


def test_absent_classes_take_no_part():
    z, onehot = _problem(3, ways=2, shots=2, dim=4)
    kernel = jnp.asarray(z @ z.T, jnp.float32)
    padded = np.concatenate([onehot[:, :1], np.zeros((4, 1)), onehot[:, 1:], np.zeros((4, 1))], axis=1)
    alpha = svm_dual(kernel, jnp.asarray(onehot, jnp.float32), 0.1, 100)
    alpha_padded = np.asarray(svm_dual(kernel, jnp.asarray(padded, jnp.float32), 0.1, 100))
    np.testing.assert_allclose(alpha_padded[:, [0, 2]], alpha, atol=1e-7)
    assert np.all(alpha_padded[:, [1, 3]] == 0.0)


@pytest.mark.parametrize("iterations", [5, 300])
def test_query_loss_gradient_matches_finite_differences(iterations):
    """The unrolled solve is differentiated exactly, truncated (5) or converged (300); float64 central differences."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        z_support = jnp.asarray(rng.normal(size=(4, 3)))
        labels = jnp.array([0, 1, 2, 0])
        z_query = jnp.asarray(rng.normal(size=(5, 3)))
        query_labels = jnp.array([0, 1, 2, 1, 0])

        def query_loss(zs):
            alpha = svm_dual(zs @ zs.T, jax.nn.one_hot(labels, 3, dtype=zs.dtype), 0.5, iterations)
            return cross_entropy(3.0 * (z_query @ zs.T @ alpha), query_labels)[0]

        grad = np.asarray(jax.jit(jax.grad(query_loss))(z_support))
        eps = 1e-6
        steps = eps * jnp.eye(z_support.size).reshape(-1, *z_support.shape)
        losses = jax.jit(jax.vmap(query_loss))(jnp.concatenate([z_support + steps, z_support - steps]))
        numeric = np.asarray((losses[: len(steps)] - losses[len(steps) :]) / (2 * eps)).reshape(grad.shape)
        assert np.max(np.abs(grad)) > 1e-3
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8 * np.max(np.abs(numeric)))


def test_logits_are_scaled_kernel_sums_and_absent_classes_are_minus_inf():
    support = Split(jnp.array([[2.0, 0.0], [1.0, 1.0]]), jnp.array([0, 1]))
    learner = metaoptnet(_identity(), cross_entropy, ways=3, C=1.0, iterations=200, init_scale=2.0)
    meta, state = learner.init(jax.random.key(0), Task(support, support))
    query = jnp.array([[1.0, -1.0]])
    logits = np.asarray(learner.predict(learner.adapt(meta, state, support, None, 0), state, query))
    a, b = 5 / 22, 7 / 22  # the two-point closed form above
    kernel_q = np.array([2.0, 0.0])  # K(z_i, q)
    np.testing.assert_allclose(logits[0, :2], 2.0 * kernel_q @ np.array([[a, -a], [-b, b]]), rtol=1e-5)
    assert logits[0, 2] == -np.inf


def test_metaoptnet_trains_on_separable_tasks():
    """Twenty Adam steps of a linear embedding on two-class separable tasks lower the query loss."""
    key_w, key_task = jax.random.split(jax.random.key(0))
    dim = 6

    def init(key, x):
        return {"w": 0.1 * jax.random.normal(key, (dim, 4))}, {}

    model = Model(init, lambda p, s, x, *, train: (x @ p["w"], s))
    learner = metaoptnet(model, cross_entropy, ways=2, iterations=30)
    centers = jnp.zeros((2, dim)).at[0, 0].set(1.0).at[1, 0].set(-1.0)

    def task(key):
        ks, kq = jax.random.split(key)
        y = jnp.array([0, 1, 0, 1])
        noise = jax.random.normal(ks, (2, 4, dim))
        return Task(Split(centers[y] + noise[0], y), Split(centers[y] + noise[1], y))

    tasks = jax.vmap(task)(jax.random.split(key_task, 8))
    meta, state = learner.init(key_w, jax.tree_util.tree_map(lambda t: t[0], tasks))
    optimizer = optax.adam(0.05)

    def batch_loss(meta):
        keys = jax.random.split(jax.random.key(1), 8)
        losses, _ = jax.vmap(lambda t, k: learner.task_loss(meta, state, t, k))(tasks, keys)
        return losses.mean()

    @jax.jit
    def train_step(meta, opt_state):
        value, grads = jax.value_and_grad(batch_loss)(meta)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(meta, updates), opt_state, value

    opt_state, values = optimizer.init(meta), []
    for _ in range(21):  # the 21st reports the loss after 20 updates
        meta, opt_state, value = train_step(meta, opt_state)
        values.append(float(value))
    assert values[-1] < 0.7 * values[0], values


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"C": 0.0}, "learner.C"),
        ({"iterations": 0}, "learner.iterations"),
        ({"ways": 0}, "ways"),
        ({"label_smoothing": 1.0}, "learner.label_smoothing"),
    ],
)
def test_bad_config_is_one_line(config, key):
    with pytest.raises(ValueError, match=key) as error:
        metaoptnet(None, cross_entropy, **config)
    assert "\n" not in str(error.value)


def test_label_smoothing_changes_the_training_loss_only():
    model = Model(lambda key, x: ({"w": jnp.eye(2)}, {}), lambda p, s, x, *, train: (x @ p["w"], s))
    y = jnp.array([0, 1, 0, 1])
    x = jnp.array([[1.0, 0.2], [-1.0, 0.1], [0.8, -0.3], [-0.9, 0.0]])
    task = Task(Split(x, y), Split(x + 0.1, y))
    plain, smoothed = (metaoptnet(model, cross_entropy, label_smoothing=e) for e in (0.0, 0.1))
    meta, state = plain.init(jax.random.key(0), task)
    assert plain.task_loss(meta, state, task, None)[0] != smoothed.task_loss(meta, state, task, None)[0]
    for name, value in plain.evaluate(meta, state, task, None, 0).items():
        np.testing.assert_array_equal(value, smoothed.evaluate(meta, state, task, None, 0)[name])


@pytest.mark.slow
def test_metaoptnet_learns_omniglot_subsets(omniglot_dir, tmp_path):
    """150 steps of ``metaoptnet-omniglot-5w1s-tiny``: measured 72.1% test accuracy (chance 20%); bar 55%."""
    from metajax.config import apply_overrides, experiment_config
    from metajax.runner.train import run

    config = apply_overrides(
        experiment_config("metaoptnet-omniglot-5w1s-tiny"), [f"data.root={omniglot_dir}", "steps=150"]
    )
    results = run(config, tmp_path / "run", progress=False)
    assert results["post_adaptation"]["accuracy"]["mean"] > 0.55
