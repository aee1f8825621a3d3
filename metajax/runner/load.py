"""Loading a trained run to adapt it to new data: the thing a user does after training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from metajax.core.meta import MetaState
from metajax.core.tasks import Split
from metajax.errors import ConfigError
from metajax.registry import load_module
from metajax.runner.build import Components, build, initial_state
from metajax.runner.checkpoint import Checkpoints
from metajax.runner.train import CONFIG_FILE
from metajax.typing import Array, Config


class TrainedRun(NamedTuple):
    """A trained meta-learner restored from a run directory.

    Example::

      run = metajax.load_run("runs/maml-sinusoid-seed0")
      adapted = run.adapt(x_support, y_support)        # (K, 1), (K, 1)
      y = run.predict(adapted, x_new)                   # (n, 1)
    """

    config: Config
    state: MetaState
    components: Components
    step: int

    @property
    def meta_params(self):
        return self.state.meta_params

    def adapt(self, x: Array, y: Array, *, steps: Optional[int] = None, key: Optional[jax.Array] = None) -> Any:
        """Adapts to a support set ``x (n, *input_shape)``, ``y (n, *target_shape)``; ``steps`` defaults to training's."""
        learner = self.components.learner
        steps = learner.inner_steps if steps is None else steps
        key = jax.random.key(0) if key is None else key
        support = Split(jnp.asarray(x), jnp.asarray(y))
        example = self.components.source.example.support
        if support.x.shape[1:] != example.x.shape[1:]:
            raise ValueError(
                f"adapt: inputs have shape {support.x.shape[1:]} per example; this run was trained on {example.x.shape[1:]}."
            )
        return _adapt(learner, self.state, support, key, steps)

    def predict(self, adapted: Any, x: Array) -> Array:
        """Predictions ``(n, output_dim)`` of adapted parameters on inputs ``x (n, *input_shape)``."""
        return _predict(self.components.learner, adapted, self.state.model_state, jnp.asarray(x))


def _adapt(learner, state, support, key, steps):
    return jax.jit(learner.adapt, static_argnums=4)(state.meta_params, state.model_state, support, key, steps)


def _predict(learner, adapted, model_state, x):
    return jax.jit(learner.predict)(adapted, model_state, x)


def load_run(run_dir: str | Path, *, which: str = "latest") -> TrainedRun:
    """Restores a run's meta-parameters from its latest (or ``which="best"``) checkpoint.

    Raises:
      ConfigError: the directory has no ``config.json`` or no checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); pass the --out of a `metajax run`.")
    if which not in ("latest", "best"):
        raise ConfigError(f"load_run: which={which!r}; use 'latest' or 'best'.")
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    record = run_dir / "run.json"
    module = json.loads(record.read_text()).get("experiment_module") if record.exists() else None
    if module:
        load_module(module)  # the user's module may register the components the config names
    components = build(config)
    like = initial_state(components, jax.random.key(config["seed"]))
    ckpts = Checkpoints(
        run_dir / ("checkpoints" if which == "latest" else "best"),
        1 if which == "best" else config["checkpoint"]["keep"],
        config=config,
    )
    try:
        restored = ckpts.restore_latest(like)  # skips a corrupt newest checkpoint with a warning
    finally:
        ckpts.close()
    if restored is None:
        raise ConfigError(f"{run_dir} has no {which} checkpoint yet; train it with `metajax run` first.")
    step, state, _ = restored
    return TrainedRun(config, jax.device_put(state), components, step)
