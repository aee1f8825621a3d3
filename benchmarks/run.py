"""The benchmark suite: ``python -m benchmarks.run [--strategy S] [--workloads ...] [--json out.json] [--quick]``.

For each workload it prints and records meta-steps per second, tasks per
second, compile time and the compiled step's temporary memory, and, when
``torch`` is importable, the same workload in the PyTorch references
(``loop`` and ``func``) with the time ratio ours/theirs on the same line
(below 1: metajax is faster). It also reports the issue's targets: Conv4
MAML vs the faster PyTorch reference, the MAML step vs a plain supervised
step on the same images, and remat's memory growth from 1 to 10 inner steps.
Timings are the best of ``--reps`` calls after one warm-up call; all numbers
of one run come from one process with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Optional

import jax
import numpy as np

from benchmarks import workloads as W
from metajax.core.batching import default_strategy, parse
from metajax.core.steps import compile_timed, jit_step


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def time_jax(spec: W.Spec, strategy: str, reps: int) -> dict[str, Any]:
    """Compiles and times one JAX workload."""
    step, state, batch = W.build_step(spec, strategy)
    jitted = jit_step(step)
    key = jax.random.key(0)
    compiled, compile_s = compile_timed(jitted, state, batch, key)
    memory = compiled.memory_analysis()
    state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    best = float(np.min(times))
    loss = float(np.asarray(metrics["loss"]))
    return {
        "seconds": best,
        "steps_per_s": 1.0 / best,
        "tasks_per_s": spec.tasks / best,
        "compile_s": compile_s,
        "temp_mb": (memory.temp_size_in_bytes / 2**20) if memory is not None else None,
        "loss": loss,
    }


def time_torch(spec: W.Spec, reps: int, device: str) -> dict[str, Any]:
    """The PyTorch references of a workload; ``{style: seconds or error string}``.

    PyTorch runs eagerly (nothing to compile), so there is no warm-up call:
    the time is the best of ``reps`` calls.
    """
    from benchmarks import torch_ref

    out: dict[str, Any] = {}
    styles = ["loop"] if spec.learner == "supervised" else ["loop", "func"]
    for style in styles:
        try:
            best = torch_ref.time_step(torch_ref.make_step(spec, style, device), reps, device)
            out[style] = best
        except Exception as e:  # a reference that torch.func cannot express is reported, not fatal
            out[style] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    return out


def _fmt(x: Any, spec: str = ".3f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def _ratio(ours: Optional[float], theirs: Any) -> Optional[float]:
    return ours / theirs if isinstance(ours, float) and isinstance(theirs, float) and theirs > 0 else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strategy", default="auto", help="task_batching for Conv4 (default: the backend's table entry)"
    )
    parser.add_argument("--mlp-strategy", default="auto", help="task_batching for the MLP")
    parser.add_argument("--workloads", nargs="*", help="names or prefixes, e.g. conv4/maml mlp (default: all)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repetition (smoke run)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per workload (default 3, quick 1)")
    parser.add_argument("--torch-reps", type=int, default=1, help="timed PyTorch calls per reference (default 1)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch references")
    parser.add_argument("--no-memory", action="store_true", help="skip the remat memory measurement")
    parser.add_argument(
        "--compare", nargs="*", default=[], help="extra Conv4 strategies timed on conv4/maml-1-so (rows marked *)"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="skip remaining workloads after this long")
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    backend = jax.default_backend()
    conv_strategy = default_strategy(backend, "conv4") if args.strategy == "auto" else args.strategy
    mlp_strategy = default_strategy(backend, "mlp") if args.mlp_strategy == "auto" else args.mlp_strategy
    parse(conv_strategy), parse(mlp_strategy)
    specs = W.conv4_specs(args.quick) + W.mlp_specs(args.quick)
    if args.workloads:
        specs = [s for s in specs if any(s.name.startswith(w) for w in args.workloads)]
    torch_device = None
    if not args.no_torch:
        # OpenMP threads that spin-wait lose badly on a shared, oversubscribed CPU;
        # passive waiting is PyTorch's best setting there (must be set before import).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import torch

            torch.set_num_threads(_threads())
            torch_device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
        except ImportError:
            pass
    start = time.perf_counter()
    results: dict[str, Any] = {
        "backend": backend,
        "device": str(jax.devices()[0].device_kind),
        "threads": _threads(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "reps": reps,
        "torch_device": torch_device,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "workloads": [],
    }
    header = (
        f"{'workload':18} {'strategy':18} {'compile s':>9} {'step s':>8} {'steps/s':>8} {'tasks/s':>8} {'temp MB':>8}"
    )
    header += f" {'torch loop s':>12} {'ours/loop':>9} {'torch func s':>12} {'ours/func':>9}"
    print(f"backend {backend} ({results['device']}), {results['threads']} threads, torch {torch_device}")
    print(header)
    rows = [(s, mlp_strategy if s.model == "mlp" else conv_strategy) for s in specs]
    for extra in args.compare:
        rows += [(s._replace(name=s.name + "*"), extra) for s in specs if s.name == "conv4/maml-1-so"]
    for spec, strategy in rows:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            print(f"{spec.name:18} skipped (--budget-s)")
            continue
        if spec.learner == "supervised":
            modes = {m: time_jax(spec, m, reps) for m in ("one-batch", "chunks")}
            strategy = min(modes, key=lambda m: modes[m]["seconds"])
            ours = {**modes[strategy], "modes": {m: r["seconds"] for m, r in modes.items()}}
        else:
            ours = time_jax(spec, strategy, reps)
        theirs = time_torch(spec, args.torch_reps, torch_device) if torch_device and not spec.name.endswith("*") else {}
        row = {"name": spec.name, "strategy": strategy, "spec": spec._asdict(), **ours, "torch": theirs}
        row["ratio_loop"] = _ratio(ours["seconds"], theirs.get("loop"))
        row["ratio_func"] = _ratio(ours["seconds"], theirs.get("func"))
        results["workloads"].append(row)
        line = (
            f"{spec.name:18} {strategy:18} {ours['compile_s']:9.2f} {ours['seconds']:8.4f} {ours['steps_per_s']:8.2f}"
        )
        line += f" {ours['tasks_per_s']:8.1f} {_fmt(ours['temp_mb'], '.1f'):>8}"
        line += f" {_fmt(theirs.get('loop'), '.4f'):>12} {_fmt(row['ratio_loop'], '.2f'):>9}"
        line += f" {_fmt(theirs.get('func'), '.4f'):>12} {_fmt(row['ratio_func'], '.2f'):>9}"
        print(line, flush=True)
        for style, value in theirs.items():
            if isinstance(value, str):
                print(f"  torch {style}: {value}")
    results["targets"] = targets(results, args)
    results["total_s"] = time.perf_counter() - start
    for name, value in results["targets"].items():
        print(f"target {name}: {json.dumps(value)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def targets(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The issue's three targets, from this run's numbers."""
    first = {}
    for r in results["workloads"]:
        first.setdefault(r["name"], r)
    out: dict[str, Any] = {}
    maml = first.get("conv4/maml-1-so")
    if maml is not None:
        refs = [v for v in maml["torch"].values() if isinstance(v, float)]
        if refs:
            out["maml_vs_fastest_torch"] = {
                "ours_s": maml["seconds"],
                "torch_s": min(refs),
                "ratio": maml["seconds"] / min(refs),
                "met (<= 1)": maml["seconds"] <= min(refs),
                "goal (<= 0.5)": maml["seconds"] <= 0.5 * min(refs),
            }
        out["compile_s"] = {"seconds": maml["compile_s"], "met (< 30)": maml["compile_s"] < 30}
        sup = first.get("conv4/supervised")
        if sup is not None:
            ratio = maml["seconds"] / sup["seconds"]
            out["maml_vs_supervised"] = {"ratio": ratio, "supervised_mode": sup["strategy"], "met (<= 4)": ratio <= 4}
    if not args.no_memory:
        plain = W.remat_memory((1, 10), False, quick=args.quick)
        remat = W.remat_memory((1, 10), "full", quick=args.quick)
        growth = (plain[10] - plain[1], remat[10] - remat[1])
        out["remat_memory"] = {
            "no_remat_bytes": plain,
            "remat_bytes": remat,
            "growth_no_remat_mb": growth[0] / 2**20,
            "growth_remat_mb": growth[1] / 2**20,
            "met (remat growth <= 1/3)": growth[1] <= growth[0] / 3,
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
