"""Where episodes are sampled: on device inside the step, or on the host (``data.placement=host``).

``python -m benchmarks.sampling [--quick] [--steps N] [--json out.json]``

One process, one image array of miniImageNet's shape (100 classes, random
``uint8``), one ProtoNets Conv4-32 meta-step (5-way 1-shot, 15 queries,
meta-batch 4 by default). It times, over the same number of steps:

- ``device``: sampling fused into the compiled step (the default placement);
- ``host``: the runner's path, each batch gathered by numpy in the
  prefetch thread while the device runs the step before
  (:class:`metajax.runner.train.Prefetch`), then ``device_put``;
- ``gather``: the host gather of one batch alone, no step.

and prints seconds per step and the ratio host / device (1.0: the host path
costs nothing; on a CPU the gather thread competes with XLA's threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional

import jax
import numpy as np

from metajax.components import make_optimizer
from metajax.core.batching import conv_impl_for, default_strategy
from metajax.core.losses import cross_entropy
from metajax.core.meta import init_meta_state, meta_step
from metajax.data.episodes import episode_source
from metajax.data.source import sample_tasks
from metajax.data.streamed import host_episode_source
from metajax.learners.protonet import protonet
from metajax.models.conv4 import conv4_embedding
from metajax.runner.train import Prefetch


def build(classes: int, per_class: int, size: int, ways: int, shots: int, queries: int, seed: int = 0):
    images = np.random.default_rng(seed).integers(0, 256, (classes, per_class, size, size, 3), dtype=np.uint8)
    third = classes // 5
    splits = {"train": range(classes - 2 * third), "val": range(classes - 2 * third, classes - third)}
    splits["test"] = range(classes - third, classes)
    device = episode_source(images, splits, ways, shots, queries)
    host = host_episode_source(list(images), splits, ways, shots, queries)
    return device, host


def _time_loop(step, state, args_for, steps: int) -> tuple[float, Any]:
    start = time.perf_counter()
    for s in range(steps):
        state, metrics = step(state, *args_for(s))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps, state


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    shape = dict(classes=30, per_class=20, size=16) if args.quick else dict(classes=100, per_class=600, size=84)
    ways, shots, queries, batch = 5, 1, 15, args.meta_batch
    device_source, host_source = build(**shape, ways=ways, shots=shots, queries=queries)

    strategy = default_strategy(jax.default_backend(), "conv4-embedding")
    learner = protonet(conv4_embedding(filters=32, conv_impl=conv_impl_for(strategy)), cross_entropy)
    outer = make_optimizer({"name": "adam", "lr": 1e-3})
    state0 = init_meta_state(learner, outer, jax.random.key(0), device_source.example)
    step = meta_step(learner, outer, task_batching=strategy)

    def fused(state, data, key):
        k_tasks, k_step = jax.random.split(key)
        return step(state, sample_tasks(device_source, data, k_tasks, batch, "train"), k_step)

    def fed(state, tasks, key):
        return step(state, tasks, jax.random.split(key)[1])

    key = jax.random.key(1)
    on_device = jax.jit(fused, donate_argnums=(0,))
    on_host = jax.jit(fed, donate_argnums=(0,))
    data = jax.device_put(device_source.init())
    example = host_source.host_sample((0,), "train", batch)
    # warm-up (compiles) outside the timed loops
    state, _ = on_device(state0, data, key)
    state, _ = on_host(state, jax.device_put(example), key)

    device_s, state = _time_loop(on_device, state, lambda s: (data, jax.random.fold_in(key, s)), args.steps)
    prefetch = Prefetch(host_source, {"seed": 0, "meta_batch_size": batch}, 0)
    try:
        host_s, state = _time_loop(on_host, state, lambda s: (prefetch.next(), jax.random.fold_in(key, s)), args.steps)
    finally:
        prefetch.close()
    start = time.perf_counter()
    for s in range(args.steps):
        host_source.host_sample((0, 0, s), "train", batch)
    gather_s = (time.perf_counter() - start) / args.steps

    results = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "shape": shape,
        "meta_batch": batch,
        "steps": args.steps,
        "device_s_per_step": device_s,
        "host_s_per_step": host_s,
        "gather_s_per_batch": gather_s,
        "host_over_device": host_s / device_s,
    }
    print(f"backend {results['backend']} ({results['device_kind']}), images {shape}, meta-batch {batch}")
    print(f"{'placement':<10} {'s/step':>10}")
    print(f"{'device':<10} {device_s:>10.4f}")
    print(f"{'host':<10} {host_s:>10.4f}   ratio host/device {host_s / device_s:.2f}")
    print(f"{'gather':<10} {gather_s:>10.4f}   (numpy gather of one batch, no step)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
