"""Real-data learning: the tiny Omniglot protocols learn characters of alphabets they never saw.

Each trains its registered ``-tiny`` config on the alphabets of
``images_background_small1`` (but Early_Aramaic, the validation alphabet) and
is tested on 600 5-way 1-shot episodes (5 queries per class) from the
alphabets only in ``images_background_small2`` (Japanese_(katakana),
Sanskrit, Tagalog). Chance is 20%.

Measured on a shared 2-core CPU (seed 0; mean and 95% CI over 600 episodes):
ProtoNets tiny 78.1% +- 1.0; MAML tiny after 3 test-time steps 78.3% +- 1.0
(75.1% +- 1.0 after 1). The bars require the CI's lower end above 65%, well
below those and far above chance, so the test fails when learning breaks,
not when a change of numerics moves a point.
"""

from __future__ import annotations

import pytest

from metajax.config import apply_overrides, experiment_config
from metajax.runner.train import run

pytestmark = pytest.mark.slow

CHANCE = 0.2
# experiment: (bar on test accuracy after the test-time inner steps, measured value it sits below)
BARS = {
    "protonet-omniglot-5w1s-tiny": (0.65, 0.781),
    "maml-omniglot-5w1s-tiny": (0.65, 0.783),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.mark.parametrize("name", sorted(BARS))
def test_tiny_protocol_beats_chance_on_unseen_alphabets(name, omniglot_dir, cache, tmp_path):
    config = apply_overrides(experiment_config(name), [f"data.root={omniglot_dir}", f"data.cache_dir={cache}"])
    assert config["data"]["split"] == "subsets" and config["data"]["ways"] == 5 and config["data"]["shots"] == 1
    results = run(config, tmp_path / "run", progress=False)

    test = results["by_inner_step"]["accuracy"]
    accuracy, ci95 = test["mean"][-1], test["ci95"][-1]
    bar, measured = BARS[name]
    assert results["test_tasks"] == 600
    assert accuracy - ci95 > bar, f"{name}: test accuracy {accuracy:.3f} +- {ci95:.3f} (measured {measured})"
    assert accuracy > CHANCE + 0.3
