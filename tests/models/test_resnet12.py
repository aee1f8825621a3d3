"""ResNet-12: output shapes on 84x84 inputs, the head name ANIL needs, batch-norm state, and config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.registry import get

TINY = (4, 4, 8, 8)


@pytest.fixture(scope="module")
def embed():
    model = get("models", "resnet12-embedding")(out_features=5, channels=TINY)  # out_features is ignored
    params, state = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 20, 20, 3)))
    return model, params, state


def test_84x84_gives_5x5_feature_maps():
    # four 2x2 max-pools with floor: 84 -> 42 -> 21 -> 10 -> 5; MetaOptNet's 16,000-d embedding at 640 channels
    model = get("models", "resnet12-embedding")()
    x = jax.ShapeDtypeStruct((3, 84, 84, 3), jnp.float32)
    params, state = jax.eval_shape(model.init, jax.random.key(0), x)
    z = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=False)[0], params, state, x)
    assert z.shape == (3, 16_000)


def test_standard_bn_updates_state_only_in_training(embed):
    model, params, state = embed
    x = jax.random.normal(jax.random.key(1), (4, 20, 20, 3))
    apply = jax.jit(model.apply, static_argnames="train")
    _, new_state = apply(params, state, x, train=True)
    before, after = jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state)
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    _, same = apply(params, state, x, train=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, jax.tree_util.tree_leaves(same), strict=True))


def test_head_avg_pool_and_transductive():
    model = get("models", "resnet12")(out_features=5, channels=TINY, pool="avg", batch_norm="transductive")
    params, state = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 16, 16, 3)))
    y, _ = jax.jit(model.apply, static_argnames="train")(params, state, jnp.ones((2, 16, 16, 3)), train=True)
    assert y.shape == (2, 5) and "head" in params and state == {}
    assert params["head"]["kernel"].shape == (TINY[-1], 5)
    # 3 convs per block + 1 shortcut conv, 4 blocks: 16 conv kernels
    assert sum("conv" in k or "shortcut" == k.split("_")[-1] for k in params) == 16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"channels": (4, 4, 8)}, "4 positive ints"), ({"batch_norm": "group"}, "batch_norm"), ({"pool": "max"}, "pool")],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get("models", "resnet12")(out_features=5, **kwargs)


def test_drop_block_drops_whole_blocks_about_rate_of_the_units_and_keeps_the_mean():
    from metajax.models.resnet12 import drop_block

    x = jnp.ones((2, 20, 20, 64))
    out = np.asarray(drop_block(jax.random.key(0), x, 0.1, 5))
    zero = out == 0
    assert 0.05 < zero.mean() < 0.12  # overlapping blocks drop a little less than the rate
    np.testing.assert_allclose(out.mean(), 1.0, rtol=1e-5)  # the kept units are scaled up
    for n, i, j, c in zip(*np.nonzero(zero[:, :, :, :8]), strict=True):  # every dropped unit lies in a dropped 5x5
        assert any(
            zero[n, a : a + 5, b : b + 5, c].all() and zero[n, a : a + 5, b : b + 5, c].shape == (5, 5)
            for a in range(max(i - 4, 0), i + 1)
            for b in range(max(j - 4, 0), j + 1)
        )
    small = np.asarray(drop_block(jax.random.key(1), jnp.ones((1, 3, 3, 4)), 0.5, 5))  # block shrinks to the map
    assert set(np.unique(small)) <= {0.0} | set(np.unique(small[small > 0]))


def test_dropout_and_drop_block_need_a_key_in_training_and_vanish_in_evaluation():
    model = get("models", "resnet12-embedding")(channels=TINY, drop_rate=0.1, dropblock_size=2)
    plain = get("models", "resnet12-embedding")(channels=TINY)
    assert model.stochastic and not plain.stochastic
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    params, state = jax.jit(model.init)(jax.random.key(0), x)
    with pytest.raises(ValueError, match="needs apply\\(..., rng=key\\)"):
        jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=True), params, state, x)
    train = jax.jit(lambda p, s, x, k: model.apply(p, s, x, train=True, rng=k)[0])
    a, b = train(params, state, x, jax.random.key(2)), train(params, state, x, jax.random.key(3))
    c = jax.jit(lambda p, s, x: plain.apply(p, s, x, train=True)[0])(params, state, x)
    assert not np.allclose(a, b) and not np.allclose(a, c)
    evaluate = jax.jit(lambda p, s, x: (model.apply(p, s, x, train=False)[0], plain.apply(p, s, x, train=False)[0]))
    np.testing.assert_array_equal(*evaluate(params, state, x))


def test_embedding_learners_pass_their_task_key_to_a_stochastic_model():
    from metajax.core.losses import cross_entropy
    from metajax.core.tasks import Split, Task
    from metajax.learners.protonet import protonet

    model = get("models", "resnet12-embedding")(channels=TINY, drop_rate=0.2, dropblock_size=2)
    x = jax.random.uniform(jax.random.key(1), (6, 16, 16, 3))
    task = Task(Split(x[:3], jnp.arange(3)), Split(x[3:], jnp.arange(3)))
    learner = protonet(model, cross_entropy)
    meta, state = jax.jit(learner.init)(jax.random.key(0), task)
    loss = jax.jit(lambda k: learner.task_loss(meta, state, task, k)[0])
    losses = [float(loss(jax.random.key(k))) for k in (1, 1, 2)]
    assert losses[0] == losses[1] != losses[2]
    evaluate = jax.jit(lambda k: learner.evaluate(meta, state, task, k, 0)["loss"])
    np.testing.assert_array_equal(evaluate(jax.random.key(1)), evaluate(jax.random.key(2)))
