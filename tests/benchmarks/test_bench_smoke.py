"""A tiny run of the benchmark suite's code path (no PyTorch, no memory sweep)."""

from __future__ import annotations

import json

import pytest

from benchmarks import run


def test_suite_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = run.main(["--quick", "--no-torch", "--no-memory", "--workloads", "mlp/maml-1", "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    names = [w["name"] for w in results["workloads"]]
    assert names == ["mlp/maml-1-so", "mlp/maml-1-fo"]
    for w in results["workloads"]:
        assert w["seconds"] > 0 and w["compile_s"] > 0 and w["tasks_per_s"] > 0
    assert results["backend"] == "cpu" and results["quick"]
    assert "mlp/maml-1-so" in capsys.readouterr().out


@pytest.mark.slow
def test_sampling_benchmark_smoke(tmp_path):
    from benchmarks import sampling

    out = tmp_path / "sampling.json"
    assert sampling.main(["--quick", "--steps", "2", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["device_s_per_step"] > 0 and results["host_s_per_step"] > 0 and results["host_over_device"] > 0
