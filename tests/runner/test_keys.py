"""Every key is split once for one purpose: no two uses in a training step or an evaluation share a key."""

from __future__ import annotations

import jax
import numpy as np

from metajax.core.tasks import task_keys
from metajax.runner.build import train_keys
from metajax.runner.evaluate import run_keys, split_keys


def _bits(keys) -> list[tuple[int, ...]]:
    data = np.asarray(jax.random.key_data(keys)).reshape(-1, 2)
    return [tuple(row) for row in data]


def test_training_step_keys_are_all_distinct():
    meta_batch = 32
    keys = train_keys(jax.random.fold_in(run_keys(0)[1], 7), meta_batch)
    used = _bits(keys["sample"]) + _bits(keys["augment"]) + _bits(keys["step"])
    # the step key is split again per task inside meta_step
    used += _bits(task_keys(keys["step"], meta_batch))
    assert len(used) == len(set(used)) == 3 * meta_batch + 1


def test_the_old_collision_is_gone():
    """The runner used fold_in(k_tasks, 1) for augmentation beside split(k_tasks, B) for sampling: bit-identical."""
    k = jax.random.key(3)
    assert _bits(jax.random.fold_in(k, 1)) == _bits(jax.random.split(k, 4)[1])  # why it mattered
    keys = train_keys(k, 4)
    assert not set(_bits(keys["augment"])) & set(_bits(keys["sample"]))


def test_run_keys_and_evaluation_keys_are_distinct():
    k_init, k_train, k_eval = run_keys(0)
    splits = split_keys(0)
    used = _bits(k_init) + _bits(k_train) + _bits(k_eval) + [b for k in splits.values() for b in _bits(k)]
    tasks = [b for k in splits.values() for b in _bits(task_keys(k, 100))]
    assert len(set(used)) == len(used) and len(set(tasks)) == len(tasks)


def test_task_keys_depend_on_the_index_alone():
    k = jax.random.key(5)
    np.testing.assert_array_equal(jax.random.key_data(task_keys(k, 32)[:25]), jax.random.key_data(task_keys(k, 25)))
