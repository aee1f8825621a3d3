"""``metajax report``: our results beside the published ones, aggregated over seeds, as markdown and a plot.

Runs are grouped by experiment name. A group's number is the mean over its
runs (seeds) of each run's test score, with the 95% confidence interval
across seeds (``1.96 * sample std / sqrt(seeds)``; with one seed, the run's
own interval over test tasks is shown and marked so). The published value
comes from the config's ``reference``. Each group is compared with the
registered experiment of the same name: differing steps, data split,
augmentation, ways/shots, model or learner settings are flagged, since the
number then answers another question than the paper's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metajax.errors import ConfigError, MetajaxError

# Config keys that do not change what a run measures.
IGNORED = ("experiment", "seed", "task_batching", "eval", "checkpoint", "log_every", "guard", "reference")
IGNORED_DATA = ("root", "cache_dir", "data_dir", "source", "format")
IGNORED_MODEL = ("conv_impl",)  # follows task_batching by default; the same values either way


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"dir", "config", "results" (or None when unfinished)}`` of one run directory.

    Raises:
      ConfigError: ``run_dir`` has no readable ``config.json``.
    """
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{run_dir} is not a run directory ({type(e).__name__} reading config.json); pass directories "
            "written by `metajax run`."
        ) from None
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        results = None
    return {"dir": str(run_dir), "config": config, "results": results}


def score(results: dict[str, Any]) -> tuple[str, float, float]:
    """``(metric, value, ci95 over test tasks)`` of a run: accuracy in percent, else the loss."""
    post = results["post_adaptation"]
    if "accuracy" in post:
        return "accuracy (%)", 100.0 * post["accuracy"]["mean"], 100.0 * post["accuracy"]["ci95"]
    return "loss", post["loss"]["mean"], post["loss"]["ci95"]


def seed_stats(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and 95% CI half-width across seeds (``None`` for one seed)."""
    array = np.asarray(values, np.float64)
    if array.size < 2:
        return float(array.mean()), None
    return float(array.mean()), float(1.96 * array.std(ddof=1) / math.sqrt(array.size))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def protocol(config: dict[str, Any]) -> dict[str, Any]:
    """The config keys that define what a run measures, flattened (``data.shots``, ``learner.inner_opt.lr``...)."""
    kept = {k: v for k, v in config.items() if k not in IGNORED}
    if isinstance(kept.get("data"), dict):
        kept["data"] = {k: v for k, v in kept["data"].items() if k not in IGNORED_DATA}
    if isinstance(kept.get("model"), dict):
        kept["model"] = {k: v for k, v in kept["model"].items() if k not in IGNORED_MODEL}
    return _flat(kept)


def differences(ours: dict[str, Any], registered: dict[str, Any]) -> list[str]:
    """``["steps 400 (registered 60000)", ...]`` for every protocol key that differs."""
    a, b = protocol(ours), protocol(registered)
    return [
        f"{k} {a.get(k, '-')} (registered {b.get(k, '-')})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


def registered_config(name: str | None) -> dict[str, Any] | None:
    """The registered experiment's full config, or ``None`` when the name is not registered."""
    if not name:
        return None
    from metajax.config import experiment_config
    from metajax.runner.train import prepare_config

    try:
        return prepare_config(experiment_config(name))
    except MetajaxError:
        return None


def aggregate(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups runs by experiment and aggregates their seeds; one row per experiment.

    Runs of one experiment that differ from its registered config in the
    same way form their own group (row label ``name [key value, ...]``).

    Each row: ``experiment, seeds, metric, mean, ci95, ci_kind ("seeds" or "tasks"), per_seed, reference, flags,
    dirs``.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    registered: dict[str, dict[str, Any] | None] = {}
    for run in runs:
        name = run["config"].get("experiment") or Path(run["dir"]).name
        if name not in registered:
            registered[name] = registered_config(name)
        diffs = () if registered[name] is None else tuple(differences(run["config"], registered[name]))
        groups.setdefault((name, diffs), []).append(run)
    rows = []
    for (name, diffs), members in sorted(groups.items()):
        flags: list[str] = []
        finished = [r for r in members if r["results"] is not None]
        for r in members:
            if r["results"] is None:
                flags.append(f"{r['dir']}: no results.json (unfinished run), left out")
        if registered[name] is None:
            flags.append("not a registered experiment: protocol not checked")
        flags += [f"differs from the registered protocol: {d}" for d in diffs]
        if len({json.dumps(protocol(r["config"]), sort_keys=True) for r in members}) > 1:
            flags.append("its runs differ in protocol, not only in seed")
        reference = members[0]["config"].get("reference") or {}
        if isinstance(reference, dict) and reference.get("tiny"):
            flags.append(f"tiny variant: {reference['tiny']}")
        keys = [d.split(" ")[0] for d in diffs]
        label = name + (
            f" [{', '.join(keys[:3])}{f' +{len(keys) - 3} more' if len(keys) > 3 else ''} differ]" if keys else ""
        )
        row = {
            "experiment": label,
            "seeds": [r["config"].get("seed") for r in finished],
            "dirs": [r["dir"] for r in members],
            "reference": reference,
            "flags": flags,
            "metric": None,
            "mean": None,
            "ci95": None,
            "ci_kind": None,
            "per_seed": [],
        }
        if finished:
            scores = [score(r["results"]) for r in finished]
            row["metric"] = scores[0][0]
            row["per_seed"] = [s[1] for s in scores]
            row["mean"], row["ci95"] = seed_stats(row["per_seed"])
            row["ci_kind"] = "seeds"
            if row["ci95"] is None:
                row["ci95"], row["ci_kind"] = scores[0][2], "tasks"
        rows.append(row)
    return rows


def _cell(mean: float | None, ci: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if ci is None else f"{mean:.2f} ± {ci:.2f}"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The report table (and its flags, one line each, below it)."""
    lines = [
        "| experiment | seeds | ours | published | paper | protocol |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ref = row["reference"] if isinstance(row["reference"], dict) else {}
        ours = _cell(row["mean"], row["ci95"])
        if row["mean"] is not None and row["ci_kind"] == "tasks":
            ours += " (1 seed: CI over test tasks)"
        where = "; ".join(str(ref[k]) for k in ("paper", "where") if ref.get(k)) or "-"
        if ref.get("verified", "").startswith("unverified"):
            where += " (unverified)"
        status = "as registered" if not row["flags"] else f"{len(row['flags'])} flag(s), see below"
        lines.append(
            f"| {row['experiment']} | {len(row['seeds'])} | {ours} | {_cell(ref.get('value'), ref.get('ci95'))} | "
            f"{where} | {status} |"
        )
    flagged = [(row["experiment"], flag) for row in rows for flag in row["flags"]]
    if flagged:
        lines += ["", "Flags:", ""] + [f"- {name}: {flag}" for name, flag in flagged]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """A PNG of ours vs published per experiment (error bars: 95% CIs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["experiment"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.5 * len(rows)))
    ours = [(i, r["mean"], r["ci95"] or 0.0) for i, r in enumerate(rows) if r["mean"] is not None]
    if ours:
        ax.errorbar(
            [m for _, m, _ in ours],
            [i + 0.12 for i, _, _ in ours],
            xerr=[c for _, _, c in ours],
            fmt="o",
            label="ours",
            capsize=3,
        )
    refs = [
        (i, r["reference"].get("value"), r["reference"].get("ci95") or 0.0)
        for i, r in enumerate(rows)
        if isinstance(r["reference"], dict) and r["reference"].get("value") is not None
    ]
    if refs:
        ax.errorbar(
            [m for _, m, _ in refs],
            [i - 0.12 for i, _, _ in refs],
            xerr=[c for _, _, c in refs],
            fmt="s",
            label="published",
            capsize=3,
        )
    ax.set_yticks(y, names)
    ax.set_xlabel(rows[0]["metric"] or "score" if rows else "score")
    ax.legend(loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout() if max(len(n) for n in names) < 60 else fig.subplots_adjust(left=0.5)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(run_dirs: Sequence[str | Path], out: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Writes ``report.md``, ``report.json`` and ``report.png`` into ``out``; returns the markdown and rows.

    Raises:
      ConfigError: no run directories, or one that is not a run directory.
    """
    if not run_dirs:
        raise ConfigError("metajax report: pass at least one run directory (written by `metajax run`).")
    rows = aggregate(load_run(d) for d in run_dirs)
    text = markdown(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    plot(rows, out / "report.png")
    return text, rows
