"""The ``metajax`` command in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def metajax(*args, cwd=None, timeout=600):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "metajax.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def test_list_shows_every_kind():
    out = metajax("list")
    assert out.returncode == 0, out.stderr
    for kind in ("experiments:", "learners:", "datasets:", "models:", "optimizers:"):
        assert kind in out.stdout
    assert "maml-sinusoid" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "mamll-sinusoid"], "did you mean 'maml-sinusoid'"),
        (["run", "maml-sinusoid", "--set", "learner.inner_stepz=2"], "did you mean 'learner.inner_steps'"),
        (["run", "maml-sinusoid", "--set", "outer_opt.betas=2"], "not used by experiment"),
        (["run", "maml-sinusoid", "--set", "inner_lr=-1"], "learner.inner_opt.lr=-1 is invalid"),
        (["run", "maml-sinusoid", "--set", "task_batching=fast"], "task_batching='fast' is not a strategy"),
        (["eval", "/nonexistent/run"], "not a run directory"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message):
    out = metajax(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_set_parses_literals_and_aliases():
    out = metajax(
        "run",
        "maml-sinusoid",
        "--set",
        "inner_lr=0.5",
        "--set",
        "model.hidden=[20, 20]",
        "--steps",
        "7",
        "--set",
        "outer_opt.b1=0.5",
        "--show-config",
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["learner"]["inner_opt"]["lr"] == 0.5
    assert config["model"]["hidden"] == [20, 20] and config["steps"] == 7
    assert config["outer_opt"]["b1"] == 0.5


def test_maml_sinusoid_2000_steps_halves_the_mse_after_one_step(tmp_path):
    out = metajax(
        "run",
        "maml-sinusoid",
        "--steps",
        "2000",
        "--set",
        "eval.test_tasks=200",
        "--set",
        "eval.every=1000",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    for name in ("config.json", "metrics.jsonl", "results.json"):
        assert (tmp_path / "run" / name).exists()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_tasks"] == 200
    pre = results["pre_adaptation"]["loss"]["mean"]
    post = results["by_inner_step"]["loss"]["mean"][1]
    assert post <= 0.5 * pre, (pre, post)
