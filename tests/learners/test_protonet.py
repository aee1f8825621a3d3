"""ProtoNets checked against its definition: class means, negative squared distances, softmax cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import Model, Split, Task
from metajax.core.losses import cross_entropy
from metajax.learners.protonet import class_prototypes, protonet


def scaled_identity() -> Model:
    """``f(x) = s * x``: embeddings are the inputs up to one learned scalar, so everything has a closed form."""

    def init(key, example):
        return {"s": jnp.ones((), example.dtype)}, {}

    def apply(params, state, x, *, train):
        return params["s"] * x, state

    return Model(init, apply)


def _task(key, ways=3, shots=2, queries=4, dim=5) -> Task:
    ks, kq, kl = jax.random.split(key, 3)
    y_support = jax.random.permutation(kl, jnp.repeat(jnp.arange(ways), shots))
    y_query = jnp.repeat(jnp.arange(ways), queries)
    means = 3.0 * jnp.eye(ways, dim)
    support = Split(means[y_support] + jax.random.normal(ks, (ways * shots, dim)), y_support.astype(jnp.int32))
    query = Split(means[y_query] + jax.random.normal(kq, (ways * queries, dim)), y_query.astype(jnp.int32))
    return Task(support, query)


def _numpy_logits(task: Task, s: float) -> np.ndarray:
    xs, ys, xq = (np.asarray(a, np.float64) for a in (task.support.x, task.support.y, task.query.x))
    protos = np.stack([s * xs[ys == k].mean(axis=0) for k in range(int(ys.max()) + 1)])
    return -(((s * xq)[:, None, :] - protos[None]) ** 2).sum(-1)


@pytest.mark.parametrize("ways", [3, None])
def test_loss_and_accuracy_match_the_definition(ways):
    task = _task(jax.random.key(0))
    learner = protonet(scaled_identity(), cross_entropy, ways=ways)
    meta = {"params": {"s": jnp.asarray(0.7)}}
    loss, (_, metrics) = learner.task_loss(meta, {}, task, jax.random.key(1))
    logits = _numpy_logits(task, 0.7)
    y = np.asarray(task.query.y)
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    np.testing.assert_allclose(loss, -log_softmax[np.arange(len(y)), y].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], (logits.argmax(-1) == y).mean())


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        task = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, _task(jax.random.key(2))
        )
        learner = protonet(scaled_identity(), cross_entropy)
        f = jax.jit(lambda s: learner.task_loss({"params": {"s": s}}, {}, task, jax.random.key(0))[0])
        h = 1e-6
        np.testing.assert_allclose(jax.grad(f)(0.3), (f(0.3 + h) - f(0.3 - h)) / (2 * h), rtol=1e-6)


def test_prototypes_are_class_means_and_absent_classes_are_masked():
    z = jnp.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    protos, present = class_prototypes(z, jnp.array([1, 1, 0]), 4)
    np.testing.assert_allclose(protos, [[5.0, 5.0], [2.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(present, [True, True, False, False])

    # ways=None: logits over support-size slots; absent classes are -inf and never predicted
    task = _task(jax.random.key(3), ways=2, shots=2, queries=3)
    learner = protonet(scaled_identity(), cross_entropy)
    meta = {"params": {"s": jnp.asarray(1.0)}}
    adapted = learner.adapt(meta, {}, task.support, jax.random.key(0), 0)
    logits = learner.predict(adapted, {}, task.query.x)
    assert logits.shape == (6, 4)
    assert np.all(np.isneginf(logits[:, 2:])) and np.all(np.isfinite(logits[:, :2]))
    np.testing.assert_allclose(logits[:, :2], _numpy_logits(task, 1.0), rtol=1e-5)


def test_euclidean_protonet_is_a_linear_classifier():
    """Snell et al. eq. (4)-(5): -||z - c||^2 = 2 c.z - ||c||^2 - ||z||^2, the last term shared by all classes."""
    task = _task(jax.random.key(4))
    learner = protonet(scaled_identity(), cross_entropy, ways=3)
    adapted = learner.adapt({"params": {"s": jnp.asarray(1.0)}}, {}, task.support, jax.random.key(0), 0)
    c = adapted["prototypes"]
    linear = task.query.x @ (2 * c).T - jnp.sum(c**2, -1)
    softmax = jax.nn.softmax(learner.predict(adapted, {}, task.query.x))
    np.testing.assert_allclose(softmax, jax.nn.softmax(linear), atol=1e-5)


def test_evaluate_adapt_predict_agree_and_labels_are_permutation_equivariant():
    task = _task(jax.random.key(5))
    learner = protonet(scaled_identity(), cross_entropy, distance="cosine", ways=3)
    meta = {"params": {"s": jnp.asarray(1.0)}}
    metrics = learner.evaluate(meta, {}, task, jax.random.key(0), 3)
    assert {k: v.shape for k, v in metrics.items()} == {"accuracy": (1,), "loss": (1,)}
    logits = learner.predict(learner.adapt(meta, {}, task.support, jax.random.key(0), 0), {}, task.query.x)
    assert np.all(np.abs(logits) <= 1 + 1e-6)  # cosine similarities
    np.testing.assert_allclose(metrics["accuracy"][0], np.mean(np.argmax(logits, -1) == task.query.y))

    perm = jnp.array([2, 0, 1])
    relabelled = Task(Split(task.support.x, perm[task.support.y]), Split(task.query.x, perm[task.query.y]))
    again = learner.evaluate(meta, {}, relabelled, jax.random.key(0), 0)
    np.testing.assert_allclose(again["loss"], metrics["loss"], rtol=1e-6)


def test_bad_configs_fail_with_one_line():
    with pytest.raises(ValueError, match="distance='manhattan'"):
        protonet(scaled_identity(), cross_entropy, distance="manhattan")
    with pytest.raises(ValueError, match="ways must be"):
        protonet(scaled_identity(), cross_entropy, ways=0)
    headless = Model(lambda k, x: ({}, {}), lambda p, s, x, *, train: (x, s))  # returns images, not vectors
    learner = protonet(headless, cross_entropy)
    images = Task(Split(jnp.zeros((2, 4, 4, 1)), jnp.arange(2)), Split(jnp.zeros((2, 4, 4, 1)), jnp.arange(2)))
    with pytest.raises(ValueError, match="out_features"):
        learner.evaluate({"params": {}}, {}, images, jax.random.key(0), 0)
