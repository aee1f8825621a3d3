"""The training loop: the one place (with the CLI) that touches disk, devices and the clock."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from metajax.config import validate
from metajax.core.meta import MetaState
from metajax.errors import ConfigError
from metajax.runner import metrics as metrics_file
from metajax.runner.build import Components, build, initial_state, resolve_task_batching
from metajax.runner.checkpoint import Checkpoints
from metajax.runner.evaluate import evaluate, make_evaluator, run_keys, summarize, test_results, test_steps
from metajax.runner.record import environment
from metajax.typing import Config

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"


def default_workdir(config: Config) -> Path:
    """``runs/<experiment>-seed<seed>``."""
    return Path("runs") / f"{config.get('experiment') or 'run'}-seed{config['seed']}"


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def prepare_config(config: Config) -> Config:
    """Validates and resolves a config (``task_batching="auto"`` to the table's choice)."""
    return resolve_task_batching(validate(copy.deepcopy(config)))


def _check_workdir(workdir: Path, config: Config) -> None:
    path = workdir / CONFIG_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        changes = _diff(recorded, json.loads(json.dumps(config)))
        if changes:
            raise ConfigError(
                f"run directory {workdir} holds a run with a different config ({'; '.join(changes[:3])}"
                f"{' ...' if len(changes) > 3 else ''}); rerun with the recorded config or pass a new --out."
            )


def _score(summary: dict[str, Any], index: int) -> float:
    """Validation score, higher is better: accuracy if the task has it, else minus the loss."""
    if "accuracy" in summary:
        return summary["accuracy"]["mean"][index]
    return -summary["loss"]["mean"][index]


def _flat(summary: dict[str, Any], index: int, prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": s["mean"][index] for name, s in summary.items()} | {
        f"{prefix}{name}_ci95": s["ci95"][index] for name, s in summary.items()
    }


def run(
    config: Config,
    workdir: Optional[str | Path] = None,
    *,
    progress: bool = True,
    experiment_module: Optional[str] = None,
) -> dict[str, Any]:
    """Trains, validates, checkpoints and tests one experiment; resumes if ``workdir`` has a run.

    Args:
      config: a full experiment config (see :func:`metajax.experiment_config`).
      workdir: run directory; defaults to ``runs/<experiment>-seed<seed>``.
      progress: show a progress bar with the current metrics.
      experiment_module: the user module that registered the experiment, recorded in ``run.json``.

    Returns:
      The content of ``results.json``.

    Raises:
      ConfigError: bad config, or ``workdir`` holds a run with a different config.
    """
    config = prepare_config(config)
    workdir = Path(workdir) if workdir is not None else default_workdir(config)
    _check_workdir(workdir, config)
    components = build(config)
    k_init, k_train, k_eval = run_keys(config["seed"])
    state = initial_state(components, k_init)  # shape errors raise here, before compiling

    workdir.mkdir(parents=True, exist_ok=True)
    metrics_file.write_json(workdir / CONFIG_FILE, config)
    metrics_file.write_json(workdir / "run.json", {**environment(experiment_module), "data": components.source.info})
    checkpoints = Checkpoints(workdir / "checkpoints", config["checkpoint"]["keep"])
    best = Checkpoints(workdir / "best", 1)
    try:
        return _train(components, state, workdir, checkpoints, best, k_train, k_eval, progress)
    finally:
        checkpoints.close()
        best.close()


def _train(
    c: Components,
    state: MetaState,
    workdir: Path,
    checkpoints: Checkpoints,
    best: Checkpoints,
    k_train,
    k_eval,
    progress: bool,
) -> dict[str, Any]:
    config = c.config
    steps, log_every = config["steps"], config["log_every"]
    ev = config["eval"]
    train_inner = c.learner.inner_steps

    start, best_score = 0, None
    latest = checkpoints.latest_step()
    if latest is not None:
        state, meta = checkpoints.restore(latest, state)
        start, best_score = latest, meta.get("best_score")
    metrics_file.truncate_after(workdir / METRICS_FILE, start)

    train_step = jax.jit(c.train_step, donate_argnums=0)
    validator = make_evaluator(
        c.learner, c.source, split="val", steps=train_inner, task_batching=config["task_batching"]
    )
    t0 = time.perf_counter()
    state = jax.block_until_ready(state)
    compiled = train_step.lower(state, k_train).compile()
    compile_s = time.perf_counter() - t0

    pending: list[dict[str, Any]] = []
    bar = tqdm(
        total=steps,
        initial=start,
        disable=not progress or None,
        file=sys.stderr,
        dynamic_ncols=True,
        desc=config.get("experiment"),
    )
    t_last, n_last = time.perf_counter(), start
    for step in range(start, steps):
        state, step_metrics = compiled(state, jax.random.fold_in(k_train, step))
        pending.append(step_metrics)
        done = step + 1
        records = []
        if done % log_every == 0 or done == steps:
            mean = {k: float(np.mean(v)) for k, v in jax.device_get(_stack(pending)).items()}
            now = time.perf_counter()
            mean["steps_per_s"] = (done - n_last) / max(now - t_last, 1e-9)
            t_last, n_last, pending = now, done, []
            records.append({"step": done, "split": "train", **mean})
            bar.set_postfix({k: f"{v:.4g}" for k, v in mean.items() if k in ("loss", "accuracy")})
        if ev["every"] and (done % ev["every"] == 0 or done == steps):
            val = summarize(evaluate(validator, state, jax.random.fold_in(k_eval, 0), ev["tasks"], ev["batch_size"]))
            score = _score(val, -1)
            records.append({"step": done, "split": "val", **_flat(val, 0, "pre_"), **_flat(val, -1, "post_")})
            if best_score is None or score > best_score:
                best_score = score
                best.save(done, state, {"step": done, "score": score})
        metrics_file.append(workdir / METRICS_FILE, records)
        if done % config["checkpoint"]["every"] == 0 or done == steps:
            checkpoints.save(done, state, {"step": done, "best_score": best_score})
        bar.update(1)
    bar.close()

    results = test_results(
        c.learner, c.source, state, config, steps=test_steps(config, c.learner), tasks=ev["test_tasks"]
    )
    results.update(best_val_score=best_score, compile_seconds=compile_s)
    metrics_file.write_json(workdir / RESULTS_FILE, results)
    return results


def _stack(records: list[dict[str, Any]]) -> dict[str, Any]:
    return jax.tree_util.tree_map(lambda *xs: jax.numpy.stack(xs), *records)
