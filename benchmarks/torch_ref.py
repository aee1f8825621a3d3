"""PyTorch reference implementations of the benchmark workloads (optional: needs ``torch``).

Two styles per workload, both functional over a dict of parameters:
  ``loop``: a Python loop over tasks, inner gradients by
    ``torch.autograd.grad(create_graph=not first_order)``, outer gradients
    accumulated by ``backward`` (the learn2learn / higher style).
  ``func``: ``torch.func.vmap`` over tasks of ``torch.func.grad`` of the task
    loss (the inner loop uses ``torch.func.grad`` too).
Conv4 here is the same network as metajax's (3x3 convs, batch norm on batch
statistics, ReLU, 2x2 max-pool, linear head), same shapes and optimizer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.workloads import Spec


def _conv4_params(spec: Spec, device, head: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params, cin = {}, 1
    for i in range(4):
        params[f"w{i}"] = torch.randn(spec.filters, cin, 3, 3, generator=g) / math.sqrt(9 * cin)
        params[f"b{i}"] = torch.zeros(spec.filters)
        params[f"s{i}"] = torch.ones(spec.filters)
        params[f"o{i}"] = torch.zeros(spec.filters)
        cin = spec.filters
    if head:
        params["head_w"] = torch.randn(spec.ways, spec.filters, generator=g) / math.sqrt(spec.filters)
        params["head_b"] = torch.zeros(spec.ways)
    return {k: v.to(device).requires_grad_() for k, v in params.items()}


def _conv4(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for i in range(4):
        x = F.conv2d(x, p[f"w{i}"], p[f"b{i}"], padding=1)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        x = (x - mean) * torch.rsqrt(var + 1e-5) * p[f"s{i}"].view(1, -1, 1, 1) + p[f"o{i}"].view(1, -1, 1, 1)
        x = F.max_pool2d(F.relu(x), 2)
    x = x.flatten(1)
    return x @ p["head_w"].t() + p["head_b"] if "head_w" in p else x


def _mlp_params(spec: Spec, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sizes = [1, 40, 40, 1]
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"w{i}"] = torch.randn(b, a, generator=g) / math.sqrt(a)
        params[f"b{i}"] = torch.zeros(b)
    params["head_w"], params["head_b"] = params.pop("w2"), params.pop("b2")
    return {k: v.to(device).requires_grad_() for k, v in params.items()}


def _mlp(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    x = F.relu(F.linear(x, p["w0"], p["b0"]))
    x = F.relu(F.linear(x, p["w1"], p["b1"]))
    return F.linear(x, p["head_w"], p["head_b"])


def _data(spec: Spec, device):
    g = torch.Generator().manual_seed(0)
    t = spec.tasks
    if spec.model == "mlp":
        sx = torch.rand(t, spec.shots, 1, generator=g) * 10 - 5
        qx = torch.rand(t, spec.queries, 1, generator=g) * 10 - 5
        return [a.to(device) for a in (sx, torch.sin(sx), qx, torch.sin(qx))]
    sx = torch.randn(t, spec.ways * spec.shots, 1, 28, 28, generator=g)
    qx = torch.randn(t, spec.ways * spec.queries, 1, 28, 28, generator=g)
    sy = torch.arange(spec.ways).repeat_interleave(spec.shots).repeat(t, 1)
    qy = torch.arange(spec.ways).repeat_interleave(spec.queries).repeat(t, 1)
    return [a.to(device) for a in (sx, sy, qx, qy)]


def _loss(spec: Spec, pred, y):
    return F.mse_loss(pred, y) if spec.model == "mlp" else F.cross_entropy(pred, y)


def _task_loss(spec: Spec, forward, grad_fn, p, sx, sy, qx, qy):
    """Adapts on the support set with ``grad_fn(loss_of_params, params, names)``; returns the query loss."""
    names = ["head_w", "head_b"] if spec.learner == "anil" else list(p)
    for _ in range(spec.inner_steps):
        grads = grad_fn(lambda q: _loss(spec, forward(q, sx), sy), p, names)
        p = {**p, **{n: p[n] - spec.inner_lr * g for n, g in zip(names, grads, strict=True)}}
    if spec.learner == "reptile":
        return p
    if spec.learner == "protonet":
        one_hot = (sy[:, None] == torch.arange(spec.ways, device=sy.device)).to(sx.dtype)
        protos = (one_hot.t() @ forward(p, sx)) / one_hot.sum(0)[:, None]
        return F.cross_entropy(-(torch.cdist(forward(p, qx), protos) ** 2), qy)
    return _loss(spec, forward(p, qx), qy)


def make_step(spec: Spec, style: str, device: str = "cpu") -> Callable[[], None]:
    """One meta-step (or supervised step) of a workload in ``style`` ``"loop"`` or ``"func"``; returns a thunk."""
    if spec.model == "mlp":
        params, forward = _mlp_params(spec, device), _mlp
    else:
        params = _conv4_params(spec, device, head=spec.learner != "protonet")
        forward = _conv4
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    sx, sy, qx, qy = _data(spec, device)
    create_graph = not spec.first_order and spec.learner not in ("reptile", "protonet")

    def autograd_grad(f, p, names):
        return torch.autograd.grad(f(p), [p[n] for n in names], create_graph=create_graph)

    if spec.learner == "supervised":
        x = torch.cat([sx, qx], 1).flatten(0, 1)
        y = torch.cat([sy, qy], 1).flatten(0, 1)

        def supervised():
            opt.zero_grad()
            F.cross_entropy(forward(params, x), y).backward()
            opt.step()

        return supervised

    if style == "loop":

        def loop():
            opt.zero_grad()
            for t in range(spec.tasks):
                out = _task_loss(spec, forward, autograd_grad, params, sx[t], sy[t], qx[t], qy[t])
                if spec.learner == "reptile":
                    for n, a in out.items():
                        d = (params[n] - a.detach()) / spec.tasks
                        params[n].grad = d if params[n].grad is None else params[n].grad + d
                else:
                    (out / spec.tasks).backward()
            opt.step()

        return loop

    from torch.func import functional_call, grad, vmap  # noqa: F401  (functional_call kept for users)

    def func_grad(f, p, names):
        sub = {n: p[n] for n in names}
        g = grad(lambda s: f({**p, **s}))(sub)
        return [g[n] if create_graph else g[n].detach() for n in names]

    def per_task(p, a, b, c, d):
        if spec.learner == "reptile":
            adapted = _task_loss(spec, forward, func_grad, p, a, b, c, d)
            return {n: p[n] - adapted[n] for n in p}
        return grad(lambda q: _task_loss(spec, forward, func_grad, q, a, b, c, d))(p)

    batched = vmap(per_task, in_dims=(None, 0, 0, 0, 0), randomness="same")

    def func():
        with torch.no_grad():
            detached = {n: v.detach() for n, v in params.items()}
        grads = batched(detached, sx, sy, qx, qy)
        for n, v in params.items():
            v.grad = grads[n].mean(0)
        opt.step()

    return func


def time_step(step: Callable[[], None], reps: int, device: str = "cpu") -> float:
    """Best of ``reps`` calls of ``step``, in seconds (no warm-up: PyTorch has nothing to compile)."""
    times = []
    for _ in range(max(reps, 1)):
        start = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.min(times))
