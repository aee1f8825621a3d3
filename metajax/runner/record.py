"""What a run directory records about where it ran: config, versions, devices, code and data."""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import jax

from metajax.typing import Config

PACKAGES = ("metajax", "jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "numpy", "tensorflow-datasets")
# Keys of a source's ``info`` whose values are data file paths or their checksums.
CHECKSUM_KEYS = ("sha256", "checksum", "checksums", "md5")
PATH_KEYS = ("path", "paths", "file", "files", "archive", "archives", "root")
DIGEST = re.compile(r"^(?:(?:sha256|sha1|md5):)?[0-9a-fA-F]{32,128}$")


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(path: Path) -> Optional[str]:
    """The commit of the git checkout holding ``path`` (with ``-dirty`` if modified), or None."""
    try:
        cwd = Path(path).resolve().parent if Path(path).is_file() else Path(path)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if commit.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def environment(experiment_module: Optional[str] = None) -> dict[str, Any]:
    """Package versions, Python, devices and code commits, for ``run.json``."""
    devices = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "metajax_commit": git_commit(Path(__file__)),
        "experiment_module": experiment_module,
        "experiment_module_commit": git_commit(Path(experiment_module)) if experiment_module else None,
    }


def experiment_source(name: Optional[str]) -> dict[str, Any]:
    """The file defining the registered experiment ``name``: path, sha256 and git commit."""
    if not name:
        return {}
    from metajax.errors import MetajaxError
    from metajax.registry import get

    try:
        file = inspect.getsourcefile(get("experiments", name))
    except (MetajaxError, TypeError):
        return {}
    if not file or not Path(file).is_file():
        return {}
    return {
        "experiment_file": file,
        "experiment_file_sha256": sha256_file(Path(file)),
        "experiment_file_commit": git_commit(Path(file)),
    }


def data_checksums(info: Any) -> dict[str, str]:
    """Checksums of the data a task source read: those its ``info`` carries, and sha256 of files it names.

    Returns ``{key path or file path: checksum}``.
    """
    found: dict[str, str] = {}

    def walk(node: Any, where: str, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k), str(k).lower())
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]", key)
        elif isinstance(node, str):
            if any(c in key for c in CHECKSUM_KEYS) or DIGEST.match(node):
                found[where] = node
            elif any(p in key for p in PATH_KEYS) and Path(node).is_file():
                found[str(Path(node).resolve())] = "sha256:" + sha256_file(Path(node))

    walk(info, "", "")
    return found


def run_record(
    config: Config, data_info: dict[str, Any], experiment_module: Optional[str], previous: Optional[Path] = None
) -> dict[str, Any]:
    """The content of ``run.json``: environment, experiment code, data and its checksums, resolved config.

    When ``previous`` (an earlier ``run.json`` of this run directory, e.g.
    before a resume) records another environment, it is kept under ``history``.
    """
    record = {
        **environment(experiment_module),
        **experiment_source(config.get("experiment")),
        "config": config,
        "data": data_info,
        "data_checksums": data_checksums(data_info),
    }
    record = json.loads(json.dumps(record, default=str))
    if previous is not None and Path(previous).exists():
        try:
            old = json.loads(Path(previous).read_text())
        except ValueError:
            old = None
        if isinstance(old, dict):
            history = old.pop("history", [])
            if {k: v for k, v in old.items()} != record:
                history.append(old)
            if history:
                record["history"] = history[-20:]
    return record
