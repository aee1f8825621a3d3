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
