"""Devices for a run: the mesh, where the data, state and task batches live, and what the run record says.

A run uses one mesh with one axis, ``"tasks"``: each meta-batch's tasks are
split over it (data parallel over tasks). Meta-parameters and optimizer
state are replicated on every device, or, with ``parallel.params=sharded``,
each leaf is split along its largest dimension that divides the device count
(the compiled step gathers what a device needs and each device keeps
``1/devices`` of the bytes). The task source's data is replicated: every
device samples its own tasks from all of it, so a run holds one copy per
device (in device memory; on CPU devices, in host memory).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metajax.errors import ConfigError
from metajax.runner.build import TASK_AXIS
from metajax.typing import Config, PyTree


def make_mesh(config: Config) -> Optional[Mesh]:
    """The run's mesh over ``parallel.devices`` devices (all when null); ``None`` for a single device.

    The axis type is ``Auto`` (sharding by propagation and explicit constraints): JAX 0.10's
    ``jax.make_mesh`` defaults to ``Explicit`` axes, under which ``with_sharding_constraint`` raises.

    Raises:
      ConfigError: more devices asked for than there are.
    """
    devices = jax.devices()
    wanted = config["parallel"]["devices"]
    count = len(devices) if wanted is None else wanted
    if count > len(devices):
        raise ConfigError(
            f"parallel.devices={count} but {len(devices)} devices are visible ({jax.default_backend()}); lower it, "
            "or on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting."
        )
    if count == 1 and jax.process_count() == 1:
        return None
    return Mesh(devices[:count], (TASK_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
    """The sharding of an array copied on every device of ``mesh`` (``None`` without a mesh)."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """A parameter's sharding for ``parallel.params=sharded``: split along its largest dimension that the
    device count divides, replicated when none does (biases, small heads)."""
    devices = mesh.shape[TASK_AXIS]
    for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
        if shape[dim] >= devices and shape[dim] % devices == 0:
            spec = [None] * len(shape)
            spec[dim] = TASK_AXIS
            return NamedSharding(mesh, PartitionSpec(*spec))
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(state: PyTree, mesh: Optional[Mesh], params: str) -> Any:
    """Shardings of the meta-state's leaves: all replicated, or every parameter-shaped leaf split (``sharded``)."""
    if mesh is None:
        return None
    if params == "replicated":
        return jax.tree_util.tree_map(lambda _: replicated(mesh), state)
    return jax.tree_util.tree_map(lambda leaf: leaf_sharding(tuple(getattr(leaf, "shape", ())), mesh), state)


def place(tree: PyTree, shardings: Any) -> PyTree:
    """``tree`` on devices: ``jax.device_put`` with ``shardings`` (the default device when ``None``)."""
    return jax.device_put(tree, shardings)


def mesh_record(mesh: Optional[Mesh]) -> dict[str, Any]:
    """What ``run.json`` says of the devices: mesh axis names and sizes, device kind and processes."""
    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()[:1]
    return {
        "axes": dict(mesh.shape) if mesh is not None else {TASK_AXIS: 1},
        "devices": len(devices),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "processes": jax.process_count(),
    }
