"""Fixed episode manifests on the real Omniglot subsets: export, read back exactly, evaluate like the sampler."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from metajax.config import apply_overrides, experiment_config
from metajax.errors import DataError
from metajax.runner import evaluate as sampled_eval
from metajax.runner.episodes import evaluate_episodes, export_episodes
from metajax.runner.load import load_run
from metajax.runner.train import run

NAME = "protonet-omniglot-5w1s-tiny"
EPISODES = 12


@pytest.fixture(scope="module")
def overrides(omniglot_dir, tmp_path_factory) -> list[str]:
    cache = tmp_path_factory.mktemp("cache")
    return [f"data.root={omniglot_dir}", f"data.cache_dir={cache}"]


@pytest.fixture(scope="module")
def trained(overrides, tmp_path_factory):
    """A two-step ProtoNets run (weights need not be good, only fixed) on the subsets."""
    config = apply_overrides(
        experiment_config(NAME),
        overrides
        + [
            "steps=2",
            "model.filters=4",
            "eval.every=0",
            "eval.test_tasks=8",
            "eval.batch_size=5",
            "checkpoint.every=2",
        ],
    )
    workdir = tmp_path_factory.mktemp("run")
    run(config, workdir, progress=False)
    return workdir


@pytest.fixture(scope="module")
def manifest(overrides, tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    return export_episodes(NAME, out, episodes=EPISODES, overrides=overrides)


def test_manifest_lists_relative_pngs_with_labels(manifest):
    data = json.loads(manifest.read_text())
    assert data["format"] == "metajax-episodes" and data["split"] == "test"
    assert len(data["episodes"]) == EPISODES
    episode = data["episodes"][0]
    assert episode["ways"] == 5 and len(episode["support"]) == 5 and len(episode["query"]) == 25
    assert sorted({item["label"] for item in episode["support"]}) == list(range(5))
    for item in episode["support"] + episode["query"]:
        path = manifest.parent / item["image"]
        assert not item["image"].startswith("/") and path.is_file()
    with Image.open(manifest.parent / episode["support"][0]["image"]) as image:
        assert image.mode == "L" and image.size == (28, 28)


def test_export_reads_back_to_the_sampled_episodes_and_evaluates_identically(trained, manifest):
    results = evaluate_episodes(trained, manifest)

    loaded = load_run(trained)
    config, c = loaded.config, loaded.components
    tester = sampled_eval.make_evaluator(
        c.learner,
        c.source,
        split="test",
        steps=sampled_eval.test_steps(config, c.learner),
        task_batching=config["task_batching"],
    )
    sampled = sampled_eval.evaluate(
        tester,
        loaded.state,
        c.source.init(),
        sampled_eval.split_keys(config["seed"])["test"],
        EPISODES,
        sampled_eval.eval_batch_size(config, EPISODES),
    )
    np.testing.assert_array_equal(results["per_episode"]["accuracy"], sampled["accuracy"][:, -1])
    np.testing.assert_allclose(results["per_episode"]["loss"], sampled["loss"][:, -1], rtol=1e-5)
    assert results["episodes"] == EPISODES and (trained / "eval-episodes-latest.json").is_file()


def test_user_manifest_of_any_size_ways_and_labels(trained, omniglot_dir, tmp_path):
    """3-way 2-shot episodes of raw 105x105 drawings with string labels: preprocessed like the training data."""
    with zipfile.ZipFile(omniglot_dir / "images_background_small2.zip") as archive:
        pngs = sorted(n for n in archive.namelist() if n.endswith(".png") and "Tagalog" in n)
        characters = sorted({n.rsplit("/", 1)[0] for n in pngs})[:3]
        support, query = [], []
        for c, character in enumerate(characters):
            drawings = [n for n in pngs if n.startswith(character + "/")][:4]
            for j, member in enumerate(drawings):
                relative = f"raw/{c}_{j}.png"
                (tmp_path / "raw").mkdir(exist_ok=True)
                Image.open(io.BytesIO(archive.read(member))).save(tmp_path / relative)
                (support if j < 2 else query).append({"image": relative, "label": f"char-{c}"})
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"episodes": [{"support": support, "query": query}]}))
    results = evaluate_episodes(trained, path)
    assert results["ways"] == [3] and results["episodes"] == 1
    assert 0.0 <= results["post_adaptation"]["accuracy"]["mean"] <= 1.0

    path.write_text(json.dumps({"episodes": [{"support": support[:2], "query": query}]}))
    with pytest.raises(DataError, match="have no support image"):
        evaluate_episodes(trained, path)
