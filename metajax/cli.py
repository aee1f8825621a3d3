"""The ``metajax`` command: list | run | eval.

Bad input is printed as one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from metajax.errors import MetajaxError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metajax", description="Meta-learning experiments in JAX.")
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        help="experiment module to import (a .py path or module name); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list experiments, learners, datasets, models and optimizers")

    run = sub.add_parser("run", help="train a registered experiment (resumes an existing run directory)")
    run.add_argument("name", help="experiment name (see `metajax list`)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. learner.inner_steps=5",
    )
    run.add_argument("--steps", type=int, help="number of meta-steps (same as --set steps=N)")
    run.add_argument("--out", help="run directory (default runs/<experiment>-seed<seed>)")
    run.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ev = sub.add_parser("eval", help="evaluate a trained run on held-out tasks")
    ev.add_argument("run_dir")
    ev.add_argument("--tasks", type=int, help="number of test tasks (default: the run's eval.test_tasks)")
    ev.add_argument("--inner-steps", type=int, help="inner steps at test time (default: the run's)")
    ev.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    ev.add_argument("--episodes", metavar="MANIFEST", help="evaluate on a fixed episode manifest (docs/episodes.md)")

    episodes = sub.add_parser("episodes", help="fixed episode sets").add_subparsers(
        dest="episodes_command", required=True
    )
    export = episodes.add_parser("export", help="write a protocol's sampled episodes as a manifest of PNGs")
    export.add_argument("name", help="experiment name (see `metajax list`)")
    export.add_argument("--out", required=True, help="folder for manifest.json and the images")
    export.add_argument("--episodes", type=int, default=600, help="number of episodes (default 600)")
    export.add_argument("--split", choices=("train", "val", "test"), default="test")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    bench = sub.add_parser("bench", help="speed and memory benchmarks (needs a repository checkout)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for benchmarks.run, e.g. --quick")

    rep = sub.add_parser("report", help="our results beside the published ones: markdown table, JSON and a PNG plot")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (seeds of one experiment group)")
    rep.add_argument("--out", default="report", help="folder for report.md, report.json, report.png (default report/)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = unknown + list(args.bench_args)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return _dispatch(args)
    except MetajaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from metajax import registry

    for module in args.module:
        registry.load_module(module)
    if args.command == "bench":
        try:
            from benchmarks import run as bench_run
        except ImportError:
            raise MetajaxError(
                "metajax bench needs the repository's benchmarks/ package; run it from a metajax checkout."
            ) from None
        return bench_run.main(list(args.bench_args))
    if args.command == "list":
        for kind in registry.KINDS:
            print(f"{kind}: {', '.join(registry.names(kind))}")
        return 0
    if args.command == "run":
        from metajax.config import apply_overrides, experiment_config
        from metajax.runner.train import prepare_config, run

        overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
        config = apply_overrides(experiment_config(args.name), overrides)
        if args.show_config:
            print(json.dumps(prepare_config(config), indent=2))
            return 0
        results = run(
            config, args.out, progress=not args.no_progress, experiment_module=args.module[-1] if args.module else None
        )
        _print_results(results)
        return 0
    if args.command == "episodes":
        from metajax.runner.episodes import export_episodes

        path = export_episodes(args.name, args.out, episodes=args.episodes, split=args.split, overrides=args.overrides)
        print(f"wrote {args.episodes} {args.split} episodes: {path}")
        return 0
    if args.command == "eval" and args.episodes:
        from metajax.runner.episodes import evaluate_episodes

        results = evaluate_episodes(
            Path(args.run_dir), args.episodes, inner_steps=args.inner_steps, which=args.checkpoint
        )
        _print_results(results)
        return 0
    if args.command == "eval":
        from metajax.runner.eval import evaluate_run

        results = evaluate_run(
            Path(args.run_dir), tasks=args.tasks, inner_steps=args.inner_steps, which=args.checkpoint
        )
        _print_results(results)
        return 0
    if args.command == "report":
        from metajax.runner.report import report

        text, _ = report(args.run_dirs, args.out)
        print(text, end="")
        print(f"wrote {Path(args.out) / 'report.md'}, report.json and report.png")
        return 0
    raise AssertionError(args.command)


def _print_results(results: dict) -> None:
    for phase in ("pre_adaptation", "post_adaptation"):
        cells = ", ".join(f"{name} {v['mean']:.4f} ± {v['ci95']:.4f}" for name, v in results[phase].items())
        print(f"{phase}: {cells}")
    curve = results["by_inner_step"]
    for name, s in curve.items():
        print(f"{name} by inner step: " + " ".join(f"{m:.4f}" for m in s["mean"]))
    if results.get("diverged_tasks"):
        print(
            f"diverged: {results['diverged_tasks']} of {results['test_tasks']} test tasks (query loss non-finite or "
            "10x its start at some inner step); median loss by inner step: "
            + " ".join(f"{m:.4f}" for m in curve["loss"]["median"])
        )


if __name__ == "__main__":
    sys.exit(main())
