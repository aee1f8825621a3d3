"""The training loop: the one place (with the CLI) that touches disk, devices and the clock."""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from metajax.config import DEFAULTS, _merge, validate
from metajax.core.meta import MetaState
from metajax.errors import ConfigError, MetajaxError, NumericalError
from metajax.runner import metrics as metrics_file
from metajax.runner.build import Components, build, initial_state, resolve_task_batching
from metajax.runner.checkpoint import Checkpoints, comparable, config_changes
from metajax.runner.evaluate import (
    DIVERGENCE_FACTOR,  # noqa: F401  (re-exported)
    divergence,
    eval_batch_size,
    eval_tasks,
    evaluate,
    host_tasks,
    make_evaluator,
    run_keys,
    split_keys,
    summarize,
    test_results,
    test_steps,
)
from metajax.runner.parallel import make_mesh, mesh_record, place, replicated, state_shardings
from metajax.runner.record import run_record
from metajax.typing import Config, Metrics, PRNGKey, PyTree

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"


def default_workdir(config: Config) -> Path:
    """``runs/<experiment>-seed<seed>``."""
    return Path("runs") / f"{config.get('experiment') or 'run'}-seed{config['seed']}"


def prepare_config(config: Config) -> Config:
    """Fills runner keys missing from ``config`` with defaults, validates, and resolves ``task_batching="auto"``."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a dict, got {type(config).__name__}; start from experiment_config(NAME).")
    return resolve_task_batching(validate(_merge(DEFAULTS, copy.deepcopy(config))))


def _check_workdir(workdir: Path, config: Config) -> None:
    path = workdir / CONFIG_FILE
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"run directory {workdir} is a file; pass a directory as --out.")
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{path} is unreadable ({type(e).__name__}); restore it or pass a new --out (run directory)."
            ) from None
        changes = config_changes(comparable(recorded), comparable(json.loads(json.dumps(config))))
        if changes:
            raise ConfigError(
                f"run directory {workdir} holds a run with a different config ({'; '.join(changes[:3])}"
                f"{' ...' if len(changes) > 3 else ''}); rerun with the recorded config or pass a new --out."
            )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else "")[:300]


def guarded_step(train_step, nonfinite: str):
    """Wraps ``train_step`` to flag non-finite metrics (loss, gradient norm) as ``metrics["nonfinite"]``.

    With ``nonfinite="skip"`` a flagged step keeps the previous meta-state (the
    step counter still advances), chosen by ``jnp.where`` inside the compiled
    step: no host round trip and no recompilation.
    """

    def step(state: MetaState, data: PyTree, key: PRNGKey) -> tuple[MetaState, Metrics]:
        new, metrics = train_step(state, data, key)
        finite = jnp.all(
            jnp.stack(
                [
                    jnp.all(jnp.isfinite(v))
                    for v in jax.tree_util.tree_leaves(metrics)
                    if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact)
                ]
            )
        )
        if nonfinite == "skip":
            kept = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
            new = kept._replace(step=new.step)
        return new, {**metrics, "nonfinite": jnp.logical_not(finite).astype(jnp.int32)}

    return step


def _shapes(task) -> str:
    return ", ".join(
        f"{jax.tree_util.keystr(path).lstrip('.')} {tuple(leaf.shape)} {leaf.dtype}"
        for path, leaf in jax.tree_util.tree_leaves_with_path(task)
    )


def check_source(source, name: str, key: PRNGKey) -> None:
    """Checks a task source against its own contract, without compiling.

    Every split's sampled task must have the shapes and dtypes of its example
    (``source.example_for(split)``; the model is initialised from
    ``source.example``), and the targets must suit
    the loss: ``mse`` targets ``(n, output_dim)`` (a mismatch would broadcast
    silently), ``cross_entropy`` integer labels ``(n,)`` in ``[0, output_dim)``.

    Raises:
      ConfigError: one line naming the dataset, the split and the shapes.
    """
    for split in ("train", "val", "test"):
        example = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.asarray(a).dtype), source.example_for(split)
        )
        try:
            if source.on_host:  # one task, drawn on the host: cheap, and its shapes are what the step will get
                got = jax.tree_util.tree_map(
                    lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), source.host_sample((0,), split, 1)
                )
            else:
                got = jax.eval_shape(lambda d, k, split=split: source.sample(d, k, split), data_spec(source), key)
        except MetajaxError:
            raise
        except Exception as e:  # a source that cannot even trace its own split
            raise ConfigError(
                f"data {name!r} cannot sample split {split!r}: {type(e).__name__}: {_first_line(e)}; fix the task source."
            ) from None
        if jax.tree_util.tree_structure(got) != jax.tree_util.tree_structure(example) or _shapes(got) != _shapes(
            example
        ):
            raise ConfigError(
                f"data {name!r} split {split!r} gives tasks ({_shapes(got)}) unlike its example ({_shapes(example)}), "
                "from which the model is built; fix the task source."
            )
    for part in ("support", "query"):
        y = getattr(example, part).y
        if source.loss == "mse" and tuple(y.shape[1:]) != (source.output_dim,):
            raise ConfigError(
                f"data {name!r}: mse targets {part}.y {tuple(y.shape)} do not match output_dim {source.output_dim} "
                f"(expected (n, {source.output_dim})); fix the task source's output_dim or targets."
            )
        if source.loss == "cross_entropy" and (len(y.shape) != 1 or not jnp.issubdtype(y.dtype, jnp.integer)):
            raise ConfigError(
                f"data {name!r}: cross_entropy needs integer labels of shape (n,), got {part}.y {tuple(y.shape)} "
                f"{y.dtype}; fix the task source."
            )


def check_shapes(
    c: Components, key: PRNGKey, shardings: Any = None
) -> tuple[MetaState, Callable[..., Any], dict[str, Callable[..., Any]]]:
    """Initialises the meta-state and traces the train step and evaluators (no compilation).

    Returns the initial state, the jitted train step ``(state, data, key)`` and the
    ``{"val", "test"}`` evaluators ``(state, data, keys)`` (jitted and traced, not yet
    compiled). A model that does not fit the data, or a data request the source cannot
    satisfy, becomes one :class:`ConfigError` line here instead of a trace from inside XLA.

    Args:
      shardings: ``(state, data)`` shardings of a run on a mesh (:mod:`metajax.runner.parallel`), or ``None``.
    """
    config = c.config
    example = c.source.example
    check_source(c.source, config["data"]["name"], key)
    try:
        state = initial_state(c, key)
        guarded = guarded_step(c.train_step, config["guard"]["nonfinite"])
        if shardings is None:
            step = jax.jit(guarded, donate_argnums=(0,))
        else:
            state_sharding, data_sharding = shardings
            step = jax.jit(
                guarded,
                in_shardings=(state_sharding, data_sharding, replicated(c.mesh)),
                out_shardings=(state_sharding, replicated(c.mesh)),
                donate_argnums=(0,),
            )
        step.trace(state, step_data_spec(c), key)
        batch = eval_batch_size(config, config["eval"]["tasks"], c.mesh)
        keys = jax.ShapeDtypeStruct((batch,), key.dtype)
        evaluators = {}
        for split, steps in (("val", c.learner.inner_steps), ("test", test_steps(config, c.learner))):
            evaluators[split] = make_evaluator(
                c.learner, c.source, split=split, steps=steps, task_batching=config["task_batching"], mesh=c.mesh
            )
            evaluators[split].trace(state, eval_data_spec(c.source, batch), keys)
    except MetajaxError:
        raise
    except Exception as e:  # any shape/dtype error while tracing: model and data disagree
        raise ConfigError(
            f"model {config['model']['name']!r} does not fit data {config['data']['name']!r} ({_shapes(example)}, "
            f"loss {c.source.loss}, output_dim {c.source.output_dim}): {type(e).__name__}: {_first_line(e)}; "
            "change model or data in the config."
        ) from None
    return state, step, evaluators


def data_spec(source) -> PyTree:
    """Shapes and dtypes of an on-device source's data (``source.init()``), for tracing without the arrays."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), source.init())


def batch_spec(example, num: int) -> PyTree:
    """Shapes and dtypes of a batch of ``num`` tasks shaped like ``example``."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((num, *np.shape(a)), np.asarray(a).dtype), example)


def step_data_spec(c: Components) -> PyTree:
    """What the train step takes as ``data``: the source's data, or a host-sampled batch of meta_batch_size tasks."""
    if c.source.on_host:
        return batch_spec(c.source.example_for("train"), c.config["meta_batch_size"])
    return data_spec(c.source)


def eval_data_spec(source, batch: int) -> PyTree:
    """What an evaluator takes as ``data``: the source's data, or a host-sampled batch of ``batch`` tasks."""
    return batch_spec(source.example, batch) if source.on_host else data_spec(source)


def _score(summary: dict[str, Any], index: int) -> float:
    """Validation score, higher is better: accuracy if the task has it, else minus the loss; NaN is -inf."""
    score = summary["accuracy"]["mean"][index] if "accuracy" in summary else -summary["loss"]["mean"][index]
    return score if np.isfinite(score) else -float("inf")


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
    mesh = make_mesh(config)
    components = build(config, mesh=mesh)
    k_init, k_train, _ = run_keys(config["seed"])
    shardings = run_shardings(components, k_init)
    state, train_step, evaluators = check_shapes(
        components, k_init, shardings
    )  # every input error is raised before this line compiles

    workdir.mkdir(parents=True, exist_ok=True)
    metrics_file.write_json(workdir / CONFIG_FILE, config)
    record = run_record(config, components.source.info, experiment_module, workdir / "run.json")
    metrics_file.write_json(workdir / "run.json", {**record, "mesh": mesh_record(mesh)})
    checkpoints = Checkpoints(workdir / "checkpoints", config["checkpoint"]["keep"], config=config)
    best = Checkpoints(workdir / "best", 1, config=config)
    try:
        return _train(
            components, state, train_step, evaluators, workdir, checkpoints, best, k_train, shardings, progress
        )
    finally:
        checkpoints.close()
        best.close()


def run_shardings(c: Components, key: PRNGKey) -> Optional[tuple[Any, Any]]:
    """``(state, data)`` shardings of a run on a mesh; ``None`` on one device.

    The state follows ``parallel.params``; the train step's data (the source's
    arrays, or a host-sampled batch) is replicated: each device samples, or
    takes, its own tasks from it.
    """
    if c.mesh is None:
        return None
    like = jax.eval_shape(lambda k: initial_state(c, k), key)
    data = jax.tree_util.tree_map(lambda _: replicated(c.mesh), step_data_spec(c))
    return state_shardings(like, c.mesh, c.config["parallel"]["params"]), data


def _train(
    c: Components,
    state: MetaState,
    train_step: Callable[..., Any],
    evaluators: dict[str, Callable[..., Any]],
    workdir: Path,
    checkpoints: Checkpoints,
    best: Checkpoints,
    k_train,
    shardings: Optional[tuple[Any, Any]],
    progress: bool,
) -> dict[str, Any]:
    config = c.config
    steps, log_every = config["steps"], config["log_every"]
    ev = config["eval"]
    state_sharding, data_sharding = shardings if shardings is not None else (None, None)

    start, best_score, skipped, last_saved = 0, None, 0, None
    state = place(state, state_sharding)  # the restore template: a checkpoint comes back with these shardings
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        start, state, meta = restored
        best_score, skipped, last_saved = meta.get("best_score"), meta.get("skipped_steps", 0), start
    metrics_file.truncate_after(workdir / METRICS_FILE, start)

    # The source's arrays are placed once and passed to every step and evaluation: an argument, never a constant.
    data = None if c.source.on_host else place(c.source.init(), replicated(c.mesh))
    validator = evaluators["val"]
    val_batch = eval_batch_size(config, ev["tasks"], c.mesh)
    val_tasks = eval_tasks(c.source, config, "val", val_batch)
    val_key = split_keys(config["seed"])["val"]
    t0 = time.perf_counter()
    state = jax.block_until_ready(place(state, state_sharding))
    compiled = train_step.lower(state, step_data_spec(c), k_train).compile()
    compile_s = time.perf_counter() - t0

    pending: list[dict[str, Any]] = []
    flags: list[tuple[int, Any]] = []  # (step, nonfinite flag on device), checked at every boundary

    def check(done: int) -> int:
        """Non-finite steps since the last check; in "stop" mode the first one ends the run."""
        nonlocal flags
        if not flags:
            return 0
        values = np.asarray(jax.device_get([f for _, f in flags]))
        bad = [step for (step, _), v in zip(flags, values, strict=True) if v]
        flags = []
        if bad and config["guard"]["nonfinite"] == "stop":
            metrics_file.append(workdir / METRICS_FILE, [{"step": bad[0], "split": "guard", "stopped": "nonfinite"}])
            kept = (
                f"{checkpoints.directory / str(last_saved)}" if last_saved is not None else "none (no checkpoint yet)"
            )
            raise NumericalError(
                f"step {bad[0]}: non-finite loss or gradient; the run stopped at step {bad[0]} and its last good "
                f"checkpoint is {kept}; lower the learning rates, or resume with --set guard.nonfinite=skip to skip "
                "such steps."
            )
        return len(bad)

    bar = tqdm(
        total=steps,
        initial=start,
        disable=not progress or None,
        file=sys.stderr,
        dynamic_ncols=True,
        desc=config.get("experiment"),
    )
    t_last, n_last, window_skipped = time.perf_counter(), start, 0
    batches = Prefetch(c.source, config, start, data_sharding) if c.source.on_host else None
    try:
        for step in range(start, steps):
            step_data = batches.next() if batches is not None else data
            state, step_metrics = compiled(state, step_data, jax.random.fold_in(k_train, step))
            done = step + 1
            flags.append((done, step_metrics.pop("nonfinite")))
            pending.append(step_metrics)
            records = []
            is_log = done % log_every == 0 or done == steps
            is_val = bool(ev["every"]) and (done % ev["every"] == 0 or done == steps)
            is_ckpt = done % config["checkpoint"]["every"] == 0 or done == steps
            if is_log or is_val or is_ckpt:
                found = check(done)
                skipped += found
                window_skipped += found
            if is_log:
                mean = {k: float(np.mean(v)) for k, v in jax.device_get(_stack(pending)).items()}
                now = time.perf_counter()
                mean["steps_per_s"] = (done - n_last) / max(now - t_last, 1e-9)
                mean["skipped_steps"] = window_skipped
                t_last, n_last, pending, window_skipped = now, done, [], 0
                records.append({"step": done, "split": "train", **mean})
                bar.set_postfix({k: f"{v:.4g}" for k, v in mean.items() if k in ("loss", "accuracy")})
            if is_val:
                per_task = evaluate(validator, state, data, val_key, ev["tasks"], val_batch, val_tasks)
                val = summarize(per_task)
                score = _score(val, -1)
                records.append(
                    {
                        "step": done,
                        "split": "val",
                        **_flat(val, 0, "pre_"),
                        **_flat(val, -1, "post_"),
                        **(divergence(per_task) if "loss" in per_task else {}),
                    }
                )
                if best_score is None or score > best_score:
                    best_score = score
                    best.save(done, state, {"step": done, "score": score})
            metrics_file.append(workdir / METRICS_FILE, records)
            if is_ckpt:
                checkpoints.save(done, state, {"step": done, "best_score": best_score, "skipped_steps": skipped})
                last_saved = done
            bar.update(1)
    finally:
        if batches is not None:
            batches.close()
    bar.close()
    check(steps)

    results = test_results(
        c.learner,
        c.source,
        state,
        config,
        steps=test_steps(config, c.learner),
        tasks=ev["test_tasks"],
        data=data,
        evaluator=evaluators["test"],
        mesh=c.mesh,
    )
    results.update(best_val_score=best_score, compile_seconds=compile_s, skipped_steps=skipped)
    metrics_file.write_json(workdir / RESULTS_FILE, results)
    return results


class Prefetch:
    """Train batches of a host-sampled source, each gathered in a thread while the device runs the step before.

    Batch ``s`` is a pure function of the run's seed and ``s`` (:func:`host_tasks`), so the
    thread changes when a batch is made, never which.
    """

    def __init__(self, source, config: Config, start: int, sharding: Any = None):
        self._draw = host_tasks(source, config["seed"], "train", config["meta_batch_size"])
        self._sharding = sharding
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metajax-host-tasks")
        self._step = start
        self._next = self._pool.submit(self._draw, start)

    def next(self):
        """The current step's batch on device; starts gathering the next one."""
        batch = self._next.result()
        self._step += 1
        self._next = self._pool.submit(self._draw, self._step)
        return jax.device_put(batch, self._sharding)

    def close(self) -> None:
        self._next.cancel()
        self._pool.shutdown(wait=True)


def _stack(records: list[dict[str, Any]]) -> dict[str, Any]:
    return jax.tree_util.tree_map(lambda *xs: jax.numpy.stack(xs), *records)
