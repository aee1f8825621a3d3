"""``metajax eval``: test a trained run on held-out tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from metajax.runner import metrics as metrics_file
from metajax.runner.evaluate import test_results, test_steps
from metajax.runner.load import load_run


def evaluate_run(
    run_dir: Path, *, tasks: Optional[int] = None, inner_steps: Optional[int] = None, which: str = "latest"
) -> dict[str, Any]:
    """Evaluates a run's checkpoint on its test tasks; writes ``eval-<which>.json`` in the run directory.

    The test tasks are the ones training's final evaluation used (same key),
    so with default arguments the numbers match ``results.json``.
    """
    trained = load_run(run_dir, which=which)
    config, c = trained.config, trained.components
    steps = inner_steps if inner_steps is not None else test_steps(config, c.learner)
    results = test_results(
        c.learner, c.source, trained.state, config, steps=steps, tasks=tasks or config["eval"]["test_tasks"]
    )
    results["checkpoint"] = which
    metrics_file.write_json(Path(run_dir) / f"eval-{which}.json", results)
    return results
