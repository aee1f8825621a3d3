"""Bad input gets one clear line before compiling; damaged checkpoints fall back; numerical guards hold."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import ConfigError, DataError, MetajaxError, apply_overrides, experiment_config, load_run
from metajax.cli import main as cli_main
from metajax.config import validate
from metajax.core.meta import MetaState
from metajax.core.tasks import Split, Task
from metajax.data.episodes import episode_source
from metajax.data.sinusoid import sinusoid
from metajax.errors import CheckpointError, CheckpointWarning, NumericalError, UnknownNameError
from metajax.registry import names, register
from metajax.runner import metrics as metrics_file
from metajax.runner.checkpoint import MANIFEST, Checkpoints
from metajax.runner.record import data_checksums
from metajax.runner.train import divergence, guarded_step, run

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "steps=20",
    "meta_batch_size=2",
    "model.hidden=[8]",
    "checkpoint.every=10",
    "checkpoint.keep=3",
    "log_every=5",
    "eval.every=10",
    "eval.tasks=4",
    "eval.test_tasks=8",
    "eval.batch_size=4",
]


def _config(*overrides):
    return apply_overrides(experiment_config("maml-sinusoid-tiny"), [*TINY, *overrides])


def _numbers(results):
    return {k: v for k, v in results.items() if k != "compile_seconds"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    return workdir, run(_config(), workdir, progress=False)


def _copy(trained, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained[0], target)
    return target


# ---------------------------------------------------------------- corrupt checkpoints


def _largest(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate_meta(step_dir: Path) -> None:  # the file orbax fails on with a raw JSONDecodeError
    path = step_dir / "meta" / "metadata"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _truncate_data(step_dir: Path) -> None:
    path = _largest(step_dir)
    path.write_bytes(path.read_bytes()[:-7])


def _flip_byte(step_dir: Path) -> None:  # orbax alone may restore wrong values silently
    path = _largest(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _drop_manifest(step_dir: Path) -> None:  # a process killed after orbax committed, before the manifest
    (step_dir / MANIFEST).unlink()


@pytest.mark.parametrize("damage", [_truncate_meta, _truncate_data, _flip_byte, _drop_manifest])
def test_corrupt_latest_checkpoint_falls_back_to_previous_with_warning(trained, tmp_path, damage):
    workdir = _copy(trained, tmp_path)
    damage(workdir / "checkpoints" / "20")
    ckpts = Checkpoints(workdir / "checkpoints", 3)
    try:
        with pytest.raises(CheckpointError, match=r"checkpoints/20 is"):
            ckpts.restore(20, _like(workdir))
        with pytest.warns(CheckpointWarning, match=r"checkpoints/20 is .*falling back"):
            step, _, meta = ckpts.restore_latest(_like(workdir))
        assert step == 10 and meta["step"] == 10
    finally:
        ckpts.close()
    if damage is _flip_byte:  # the end-to-end resume: retrains 10 -> 20 and gets the same numbers
        with pytest.warns(CheckpointWarning):
            again = run(json.loads((workdir / "config.json").read_text()), workdir, progress=False)
        assert _numbers(again) == _numbers(trained[1])
        keys = [(r["step"], r["split"]) for r in metrics_file.read(workdir / "metrics.jsonl")]
        assert len(keys) == len(set(keys))


def _like(workdir: Path):
    from metajax.runner.build import build, initial_state

    config = json.loads((workdir / "config.json").read_text())
    return initial_state(build(config), jax.random.key(0))


def test_checkpoint_manifest_lists_every_file_orbax_wrote(trained):
    step_dir = trained[0] / "checkpoints" / "20"
    listed = set(json.loads((step_dir / MANIFEST).read_text())["sha256"])
    on_disk = {str(p.relative_to(step_dir)) for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert listed == on_disk and len(listed) > 3


# ---------------------------------------------------------------- numerical guards

DIVERGING = ['outer_opt={"name": "sgd", "lr": 0.3}', "checkpoint.every=2", "log_every=1", "eval.every=0"]


def test_guarded_step_skips_inside_one_compiled_step():
    traces = []

    def train_step(state, data, key):
        traces.append(1)
        loss = jnp.where(key > 0, jnp.nan, 1.0)
        new = MetaState(state.step + 1, {"w": state.meta_params["w"] + 1.0}, {}, ())
        return new, {"loss": loss, "grad_norm": jnp.float32(1.0)}

    step = jax.jit(guarded_step(train_step, "skip"))
    state = MetaState(jnp.int32(0), {"w": jnp.zeros(3)}, {}, ())
    state, m = step(state, {}, jnp.int32(0))
    assert int(m["nonfinite"]) == 0 and float(state.meta_params["w"][0]) == 1.0
    state, m = step(state, {}, jnp.int32(1))
    assert int(m["nonfinite"]) == 1 and float(state.meta_params["w"][0]) == 1.0 and int(state.step) == 2
    assert len(traces) == 1


def test_divergence_names_tasks_whose_inner_loop_blew_up():
    loss = np.array([[1.0, 0.5, 0.2], [1.0, 20.0, 3.0], [2.0, np.nan, 1.0], [1.0, 1.5, 2.0]])
    assert divergence({"loss": loss}) == {"diverged_tasks": 2, "diverged_task_ids": [1, 2]}


def test_test_results_count_diverged_tasks_and_give_medians(capsys):
    """An inner step size of 0.5 blows up sinusoid MSE: results say how many tasks diverged, and the CLI prints it."""
    from metajax.cli import _print_results
    from metajax.runner.build import build, initial_state
    from metajax.runner.evaluate import test_results
    from metajax.runner.train import prepare_config

    for lr, diverged in ((0.5, True), (0.01, False)):
        config = prepare_config(_config(f"inner_lr={lr}"))
        c = build(config)
        state = initial_state(c, jax.random.key(0))
        results = test_results(c.learner, c.source, state, config, steps=3, tasks=40)
        loss = results["by_inner_step"]["loss"]
        assert len(loss["median"]) == 4 and loss["median"][0] <= loss["mean"][0] * 2
        assert (results["diverged_tasks"] > 30) == diverged and (results["diverged_tasks"] == 0) != diverged
        _print_results(results)
        assert ("diverged: " in capsys.readouterr().out) == diverged


# ---------------------------------------------------------------- reproducibility record


def test_run_json_records_config_versions_code_devices_and_data(trained):
    record = json.loads((trained[0] / "run.json").read_text())
    assert record["config"] == json.loads((trained[0] / "config.json").read_text())
    assert record["packages"]["jax"] == jax.__version__ and record["packages"]["orbax-checkpoint"]
    assert record["device_count"] == jax.device_count() and record["device_kind"]
    assert record["experiment_file"].endswith("sinusoid.py") and len(record["experiment_file_sha256"]) == 64
    assert "metajax_commit" in record and "experiment_file_commit" in record and "data_checksums" in record


def test_data_checksums_come_from_info_and_named_files(tmp_path):
    file = tmp_path / "images.zip"
    file.write_bytes(b"abc")
    info = {"archives": {"small1": "a" * 64}, "files": [str(file)], "sha256": "b" * 64, "shots": 5}
    found = data_checksums(info)
    assert found["archives.small1"] == "a" * 64 and found["sha256"] == "b" * 64
    assert found[str(file.resolve())] == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert len(found) == 3


# ---------------------------------------------------------------- the bad-input table (docs/errors.md)


def _run_fresh(tmp_path, *overrides):
    workdir = tmp_path / "fresh"
    try:
        run(_config(*overrides), workdir, progress=False)
    finally:
        assert not workdir.exists(), "bad input must be refused before the run directory is written"


def _raw_config(tmp_path, mutate):
    config = _config()
    mutate(config)
    workdir = tmp_path / "fresh"
    try:
        run(config, workdir, progress=False)
    finally:
        assert not workdir.exists()


def _inconsistent_source():
    """A source whose tasks have 2 input features while its ``example`` promises 1."""
    base = sinusoid(shots=10)

    def sample(data, key, split):
        task = base.sample(data, key, split)
        widen = lambda s: Split(jnp.concatenate([s.x, s.x], axis=1), s.y)  # noqa: E731
        return Task(widen(task.support), widen(task.query))

    return base._replace(sample=sample, info={"name": "test-inconsistent"})


def _wide_targets_source():
    """A source with 2 regression targets per point that declares output_dim 1 (mse would broadcast)."""
    base = sinusoid(shots=10)
    wide = lambda s: Split(s.x, jnp.concatenate([s.y, s.y], axis=1))  # noqa: E731

    def sample(data, key, split):
        task = base.sample(data, key, split)
        return Task(wide(task.support), wide(task.query))

    example = Task(wide(base.example.support), wide(base.example.query))
    return base._replace(sample=sample, example=example, info={"name": "test-wide-targets"})


if "test-inconsistent" not in names("datasets"):
    register("datasets", "test-inconsistent")(_inconsistent_source)
    register("datasets", "test-wide-targets")(_wide_targets_source)


def _row_run_dir_differs(tmp_path, trained):
    workdir = _copy(trained, tmp_path)
    before = (workdir / "metrics.jsonl").read_bytes()
    try:
        run(_config("outer_lr=0.5"), workdir, progress=False)
    finally:
        assert (workdir / "metrics.jsonl").read_bytes() == before


def _row_run_dir_unreadable(tmp_path, trained):
    workdir = _copy(trained, tmp_path)
    (workdir / "config.json").write_text('{"seed": 0, "ste')
    run(_config(), workdir, progress=False)


def _row_eval_mismatch(tmp_path, trained):
    workdir = _copy(trained, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    config["learner"]["inner_opt"]["lr"] = 0.02
    (workdir / "config.json").write_text(json.dumps(config))
    assert cli_main(["eval", str(workdir)]) == 2  # `metajax eval` refuses it in one line
    load_run(workdir)


def _row_episodes(tmp_path, trained):
    images = np.zeros((8, 4, 6, 6, 1), np.float32)
    episode_source(images, {"train": [0, 1, 2], "val": [3, 4, 5], "test": [6, 7]}, ways=5, shots=1, queries=1)


def _row_placement(tmp_path, trained):
    from metajax.data.tieredimagenet import tieredimagenet

    tieredimagenet(root=str(tmp_path), placement="gpu")


def _row_nonfinite(tmp_path, trained):
    """Stops with the step; the last checkpoint is the last good state, no checkpoint of a bad one."""
    workdir = tmp_path / "run"
    try:
        run(_config(*DIVERGING), workdir, progress=False)
    except NumericalError as e:
        bad = int(re.match(r"step (\d+)", str(e)).group(1))
        assert bad >= 3, "the diverging config must first have a good checkpoint"
        ckpts = Checkpoints(workdir / "checkpoints", 3)
        try:
            last = ckpts.latest_step()
            assert last == (bad - 1) // 2 * 2 and f"checkpoints/{last}" in str(e)
            _, state, _ = ckpts.restore_latest(_like(workdir))
            assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(state))
        finally:
            ckpts.close()
        train = [r for r in metrics_file.read(workdir / "metrics.jsonl") if r["split"] == "train"]
        assert all(np.isfinite(r["loss"]) for r in train if r["step"] < bad)
        raise


def _row_nonfinite_skip(tmp_path, trained):
    """The same run with guard.nonfinite=skip finishes, counting skipped steps; its state stays finite."""
    workdir = tmp_path / "run"
    results = run(_config(*DIVERGING, "guard.nonfinite=skip"), workdir, progress=False)
    assert results["skipped_steps"] >= 1
    logged = sum(r["skipped_steps"] for r in metrics_file.read(workdir / "metrics.jsonl") if r["split"] == "train")
    assert logged == results["skipped_steps"]
    ckpts = Checkpoints(workdir / "checkpoints", 3)
    try:
        step, state, meta = ckpts.restore_latest(_like(workdir))
        assert step == 20 and meta["skipped_steps"] == results["skipped_steps"]
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(state))
    finally:
        ckpts.close()


def _row_corrupt(tmp_path, trained):
    workdir = _copy(trained, tmp_path)
    _flip_byte(workdir / "checkpoints" / "20")
    ckpts = Checkpoints(workdir / "checkpoints", 3)
    with pytest.warns(CheckpointWarning, match="checkpoints/20 is corrupt"):
        assert ckpts.latest_step() == 10
    ckpts.close()


ROWS = {
    "unknown-key": (ConfigError, r"learner\.inner_sptes.*did you mean 'learner\.inner_steps'", lambda t, r: _run_fresh(t, "learner.inner_sptes=5")),
    "unknown-top-level-key": (ConfigError, r"unknown top-level config key 'lerner'; did you mean 'learner'", lambda t, r: _raw_config(t, lambda c: c.update(lerner=c["learner"]))),
    "unknown-component-key": (ConfigError, r"'model\.hiden' is not a parameter of model 'mlp'.*hidden", lambda t, r: _raw_config(t, lambda c: c.update(model={"name": "mlp", "hiden": [4]}))),
    "unknown-name": (UnknownNameError, r"unknown learner 'mamll'; did you mean 'maml'", lambda t, r: _run_fresh(t, "learner.name=mamll")),
    "wrong-type": (ConfigError, r"data\.shots='5' has the wrong type: expected int", lambda t, r: _run_fresh(t, 'data.shots="5"')),
    "wrong-section-type": (ConfigError, r"config eval=5 must be a dict", lambda t, r: _run_fresh(t, "eval=5")),
    "negative-lr": (ConfigError, r"outer_opt\.lr=-0\.001 is invalid: learning rates must be finite", lambda t, r: _run_fresh(t, "outer_lr=-0.001")),
    "non-finite-lr": (ConfigError, r"learner\.inner_opt\.lr=nan", lambda t, r: _run_fresh(t, "inner_lr=NaN")),
    "zero-meta-batch": (ConfigError, r"meta_batch_size must be a positive int", lambda t, r: _run_fresh(t, "meta_batch_size=0")),
    "zero-inner-steps": (ConfigError, r"inner_steps must be an int >= 1", lambda t, r: _run_fresh(t, "inner_steps=0")),
    "bad-guard": (ConfigError, r"guard\.nonfinite must be 'stop' or 'skip'", lambda t, r: _run_fresh(t, "guard.nonfinite=ignore")),
    "bad-task-batching": (ConfigError, r"task_batching='chunked:0' is not a strategy", lambda t, r: _run_fresh(t, "task_batching=chunked:0")),
    "data-unsatisfiable": (ConfigError, r"queries must be an int >= 1", lambda t, r: _run_fresh(t, "data.queries=0")),
    "episodes-too-many-ways": (DataError, r"5-way episodes need 5 classes but split 'train' has 3", _row_episodes),
    "bad-placement": (DataError, r"unknown placement 'gpu'; set data\.placement to 'device'.* or 'host'", _row_placement),
    "source-shape-mismatch": (ConfigError, r"data 'test-inconsistent' split 'train' gives tasks \(support\.x \(10, 2\) float32.*unlike its example \(support\.x \(10, 1\)", lambda t, r: _raw_config(t, lambda c: c.update(data={"name": "test-inconsistent"}))),
    "target-shape-mismatch": (ConfigError, r"data 'test-wide-targets': mse targets support\.y \(10, 2\) do not match output_dim 1", lambda t, r: _raw_config(t, lambda c: c.update(data={"name": "test-wide-targets"}))),
    "model-data-mismatch": (ConfigError, r"model 'conv4' does not fit data 'sinusoid' \(support\.x \(10, 1\)", lambda t, r: _raw_config(t, lambda c: c.update(model={"name": "conv4"}))),
    "run-dir-config-differs": (ConfigError, r"holds a run with a different config \(outer_opt\.lr: 0\.001 -> 0\.5\)", _row_run_dir_differs),
    "run-dir-config-unreadable": (ConfigError, r"config\.json is unreadable", _row_run_dir_unreadable),
    "eval-config-mismatch": (ConfigError, r"written with a different config \(learner\.inner_opt\.lr: 0\.01 -> 0\.02\)", _row_eval_mismatch),
    "nonfinite-loss": (NumericalError, r"^step \d+: non-finite loss or gradient; .*last good checkpoint is .*checkpoints/\d+", _row_nonfinite),
    "nonfinite-skip": (None, None, _row_nonfinite_skip),  # no error: the trigger checks the count
    "corrupt-checkpoint": (None, None, _row_corrupt),  # no error: the trigger checks the warning
}  # fmt: skip


@pytest.mark.parametrize("row", sorted(ROWS))
def test_bad_input_row(row, tmp_path, trained):
    error, pattern, trigger = ROWS[row]
    if error is None:
        trigger(tmp_path, trained)
        return
    with pytest.raises(error, match=pattern) as info:
        trigger(tmp_path, trained)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message


def test_cli_one_line(tmp_path, capsys):
    code = cli_main(
        ["run", "maml-sinusoid-tiny", "--set", "outer_lr=-1", "--out", str(tmp_path / "x"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: config outer_opt.lr=-1 is invalid") and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_docs_table_lists_exactly_the_tested_rows():
    table = (REPO / "docs" / "errors.md").read_text()
    ids = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.M)
    assert sorted(ids) == sorted([*ROWS, "cli-one-line"])


def test_validate_does_not_mutate_and_accepts_every_registered_experiment():
    for name in names("experiments"):
        config = experiment_config(name)
        before = copy.deepcopy(config)
        try:
            validate(config)
        except MetajaxError as e:  # pragma: no cover - a registered experiment must validate
            pytest.fail(f"{name}: {e}")
        assert config == before
