"""Layers import only downward: core <- models, data, learners <- registry/components <- runner <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metajax"

# package -> modules it must never import (anywhere in the file, lazily or not)
FORBIDDEN = {
    "core": ("metajax.learners", "metajax.models", "metajax.data", "metajax.registry", "metajax.components",
             "metajax.runner", "metajax.cli", "metajax.config"),
    "models": ("metajax.learners", "metajax.data", "metajax.registry", "metajax.components", "metajax.runner",
               "metajax.cli", "metajax.config"),
    "data": ("metajax.learners", "metajax.models", "metajax.registry", "metajax.components", "metajax.runner",
             "metajax.cli", "metajax.config"),
    "learners": ("metajax.registry", "metajax.components", "metajax.runner", "metajax.cli", "metajax.config",
                 "metajax.data"),
}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_checker_sees_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from metajax.registry import register\n    import importlib\n"
                     "    importlib.import_module('metajax.runner')\n")  # fmt: skip
    assert {"metajax.registry", "metajax.runner"} <= imported_modules(probe)


def test_every_builtin_is_registered_without_importing_experiments():
    """Datasets, models and learners are registered by metajax.components alone (not by experiment modules)."""
    import metajax.components  # noqa: F401
    from metajax.registry import _REGISTRY

    for kind, name in [("datasets", n) for n in ("sinusoid", "omniglot", "miniimagenet", "tieredimagenet",
                                                  "cifarfs", "fc100")] + [
        ("models", n) for n in ("mlp", "conv4", "conv4-embedding", "resnet12", "resnet12-embedding")] + [
        ("learners", n) for n in ("maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "matching", "r2d2",
                                  "metaoptnet")]:  # fmt: skip
        assert name in _REGISTRY[kind], f"{kind} {name!r} is not registered by metajax.components"
