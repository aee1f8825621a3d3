"""Registered optimizers and learning-rate schedules."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import ConfigError, apply_overrides, experiment_config
from metajax.components import make_optimizer, make_schedule
from metajax.runner.build import build
from metajax.runner.train import prepare_config


def test_a_number_is_a_constant_learning_rate():
    assert make_schedule(0.1) == 0.1


def test_exponential_staircase_halves_every_transition():
    schedule = make_schedule(
        {"schedule": "exponential", "init_value": 1.0, "transition_steps": 10, "decay_rate": 0.5, "staircase": True}
    )
    np.testing.assert_allclose([schedule(0), schedule(9), schedule(10), schedule(25)], [1.0, 1.0, 0.5, 0.25])


def test_scheduled_sgd_takes_steps_of_the_scheduled_size():
    tx = make_optimizer(
        {"name": "sgd", "lr": {"schedule": "linear", "init_value": 1.0, "end_value": 0.0, "transition_steps": 4}}
    )
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    sizes = []
    for _ in range(5):
        updates, state = tx.update({"w": jnp.ones(())}, state)
        sizes.append(-float(updates["w"]))
    np.testing.assert_allclose(sizes, [1.0, 0.75, 0.5, 0.25, 0.0])


def test_piecewise_scales_multiply_at_json_string_boundaries():
    """MetaOptNet's 0.1 -> 0.006 -> 0.0012 -> 0.00024 at 20 / 40 / 50 (thousand) steps."""
    schedule = make_schedule(
        {"schedule": "piecewise", "init_value": 0.1, "boundaries_and_scales": {"20": 0.06, "40": 0.2, "50": 0.2}}
    )
    np.testing.assert_allclose(
        [schedule(s) for s in (0, 19, 20, 39, 40, 50, 59)], [0.1, 0.1, 0.006, 0.006, 0.0012, 0.00024, 0.00024]
    )


def test_sgd_weight_decay_is_torch_style_l2_before_momentum():
    """With momentum 0.9 and weight decay 0.1, two steps on a zero loss gradient: v1 = wd p0, v2 = 0.9 v1 + wd p1."""
    tx = make_optimizer({"name": "sgd", "lr": 1.0, "momentum": 0.9, "weight_decay": 0.1})
    params = {"w": jnp.asarray(2.0)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.zeros(())}, state, params)
    np.testing.assert_allclose(updates["w"], -0.2)  # -lr * wd * p0
    params = {"w": params["w"] + updates["w"]}  # 1.8
    updates, state = tx.update({"w": jnp.zeros(())}, state, params)
    np.testing.assert_allclose(updates["w"], -(0.9 * 0.2 + 0.1 * 1.8), rtol=1e-6)
    with pytest.raises(ConfigError, match="weight_decay must be a number >= 0"):
        build(
            apply_overrides(
                experiment_config("maml-sinusoid-tiny"), ['outer_opt={"name": "sgd", "lr": 0.1, "weight_decay": -1}']
            )
        )


@pytest.mark.parametrize(
    "lr, message",
    [
        ({"schedule": "lineer", "init_value": 1.0}, "did you mean 'linear'"),
        ({"schedule": "linear", "init_vale": 1.0}, "has no argument 'init_vale'"),
        ({"schedule": "linear", "init_value": 1.0}, "lr schedule 'linear'"),
    ],
)
def test_bad_schedules_are_one_line_config_errors(lr, message):
    with pytest.raises(ConfigError, match=message):
        make_schedule(lr)


def test_a_schedule_in_a_config_builds_before_compiling():
    config = apply_overrides(
        experiment_config("maml-sinusoid-tiny"),
        ['outer_opt.lr={"schedule": "cosine", "init_value": 0.001, "decay_steps": 50}'],
    )
    components = build(prepare_config(config))
    assert isinstance(components.outer_opt, optax.GradientTransformation)
    bad = apply_overrides(experiment_config("maml-sinusoid-tiny"), ['outer_opt.lr={"schedule": "cosin"}'])
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        build(prepare_config(bad))
