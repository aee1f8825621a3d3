"""``kill -9`` at seeded random moments, restart, and the run ends with exactly the uninterrupted numbers.

One kill lands inside a checkpoint write: ``METAJAX_TEST_PAUSE_SAVE=<step>``
pauses that save after orbax has written every file and before it commits
them (see :mod:`metajax.runner.checkpoint`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metajax import apply_overrides, experiment_config
from metajax.runner import metrics as metrics_file
from metajax.runner.checkpoint import PAUSE_ENV, PAUSE_MARKER

STEPS = 60
OVERRIDES = [
    f"steps={STEPS}",
    "meta_batch_size=4",
    "model.hidden=[16]",
    "checkpoint.every=10",
    "checkpoint.keep=2",
    "log_every=1",
    "eval.every=20",
    "eval.tasks=8",
    "eval.test_tasks=16",
    "eval.batch_size=8",
]
# The worker slows each metrics append a little so kills land mid-run rather than after it.
WORKER = """
import json, sys, time
from metajax.runner import metrics, train
_append = metrics.append
def slow_append(path, records):
    _append(path, records)
    time.sleep(0.02)
metrics.append = slow_append
train.run(json.load(open(sys.argv[1])), sys.argv[2], progress=False)
"""


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    env.update(
        JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    env.update(extra)
    return env


def _start(config_path: Path, workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(config_path), str(workdir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _last_step(workdir: Path) -> int:
    steps = [r["step"] for r in metrics_file.read(workdir / "metrics.jsonl") if r.get("split") == "train"]
    return max(steps, default=0)


def _kill_at(proc: subprocess.Popen, ready, jitter: float, timeout: float = 60.0) -> None:
    """SIGKILLs ``proc`` once ``ready()`` holds, ``jitter`` seconds later; fails if it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"worker ended before the kill point:\n{proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.002)
    time.sleep(jitter)
    assert proc.poll() is None, "worker ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _numbers(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "compile_seconds"}


def _train_records(workdir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "steps_per_s"}
        for r in metrics_file.read(workdir / "metrics.jsonl")
        if r.get("split") in ("train", "val")
    ]


def test_sigkill_at_random_points_then_resume_gives_identical_results(tmp_path):
    config = apply_overrides(experiment_config("maml-sinusoid-tiny"), OVERRIDES)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    cache = tmp_path / "jax-cache"

    straight = tmp_path / "straight"
    proc = _start(config_path, straight, _env(cache))
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-3000:]

    killed = tmp_path / "killed"
    rng = random.Random(1234)
    # Kill points as (first train step to wait for, jitter); None marks the paused checkpoint write.
    plan = [(rng.randint(3, 15), rng.uniform(0, 0.03)), (rng.randint(16, 28), rng.uniform(0, 0.03)), None]
    plan += [(rng.randint(31, 45), rng.uniform(0, 0.03)), (rng.randint(46, 58), rng.uniform(0, 0.03))]
    resumed_from = []
    for point in plan:
        resumed_from.append(_last_step(killed))
        if point is None:
            marker = killed / PAUSE_MARKER
            proc = _start(config_path, killed, _env(cache, **{PAUSE_ENV: "30"}))
            _kill_at(proc, marker.exists, rng.uniform(0, 0.05))
            paused = Path(marker.read_text())
            assert paused.name == "30" and not paused.exists(), "the paused save must not be committed yet"
            marker.unlink()
        else:
            target, jitter = point
            proc = _start(config_path, killed, _env(cache))
            _kill_at(proc, lambda target=target: _last_step(killed) >= target, jitter)
        assert not (killed / "results.json").exists()
    proc = _start(config_path, killed, _env(cache))
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-3000:]

    assert len(plan) >= 5
    assert resumed_from[-1] > 0
    expected = json.loads((straight / "results.json").read_text())
    got = json.loads((killed / "results.json").read_text())
    assert _numbers(got) == _numbers(expected)

    records = metrics_file.read(killed / "metrics.jsonl")
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys)), "a resumed run duplicated metrics lines"
    assert sorted(s for s, split in keys if split == "train") == list(range(1, STEPS + 1))
    assert _train_records(killed) == _train_records(straight)
    assert sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()) == [50, 60]


@pytest.mark.parametrize("garbage", [b'{"step": 7, "split": "tr', b"\xff\xfe"])
def test_metrics_reader_skips_partial_last_line_and_writer_keeps_lines_whole(tmp_path, garbage):
    path = tmp_path / "metrics.jsonl"
    metrics_file.append(path, [{"step": 1, "split": "train", "loss": 1.0}])
    with open(path, "ab") as f:
        f.write(garbage)  # what a writer killed mid-line leaves
    assert [r["step"] for r in metrics_file.read(path)] == [1]
    metrics_file.append(path, [{"step": 2, "split": "train", "loss": 0.5}])
    assert [r["step"] for r in metrics_file.read(path)] == [1, 2]
    metrics_file.truncate_after(path, 1)
    assert [r["step"] for r in metrics_file.read(path)] == [1]
