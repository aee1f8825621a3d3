"""miniImageNet readers on small files generated in the published formats (full class counts, tiny images)."""

from __future__ import annotations

import pickle

import jax
import numpy as np
import pytest
from PIL import Image

from metajax.data import miniimagenet as mi
from metajax.errors import DataError

COUNTS = {"train": 64, "val": 16, "test": 20}
PER_CLASS, SIZE = 3, 8


def wnids(split: str) -> list[str]:
    offset = {"train": 0, "val": 64, "test": 80}[split]
    return [f"n{offset + i:08d}" for i in range(COUNTS[split])]


def class_images(index: int) -> np.ndarray:
    """``(PER_CLASS, SIZE, SIZE, 3)`` images whose pixels all equal the global class index (so episodes are traceable)."""
    return np.full((PER_CLASS, SIZE, SIZE, 3), index, np.uint8)


def write_pickles(root, counts=COUNTS) -> None:
    """``mini-imagenet-cache-{split}.pkl``: ``image_data`` (N, h, w, 3) uint8 and ``class_dict`` {wnid: [indices]}."""
    index = 0
    for split in ("train", "val", "test"):
        images, class_dict = [], {}
        for wnid in wnids(split)[: counts[split]]:
            class_dict[wnid] = list(range(len(images) * PER_CLASS, (len(images) + 1) * PER_CLASS))
            images.append(class_images(index))
            index += 1
        data = {"image_data": np.concatenate(images), "class_dict": class_dict}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_csv(root) -> None:
    """Ravi & Larochelle's layout: ``images/<wnid><number>.jpg`` and ``{split}.csv`` with ``filename,label``."""
    (root / "images").mkdir(parents=True)
    index = 0
    for split in ("train", "val", "test"):
        lines = ["filename,label"]
        for wnid in wnids(split):
            for j in range(PER_CLASS):
                name = f"{wnid}{j + 1:08d}.jpg"
                Image.fromarray(class_images(index)[j]).save(root / "images" / name, quality=100)
                lines.append(f"{name},{wnid}")
            index += 1
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_pkl")
    write_pickles(root)
    return root


def test_pickles_give_published_class_counts_and_split_membership(pickles):
    source = mi.miniimagenet(ways=5, shots=1, queries=2, root=str(pickles), image_size=None)
    assert source.info["num_classes"] == COUNTS and source.info["format"] == "pickle"
    assert source.info["classes"]["val"] == wnids("val")
    sample = jax.jit(lambda k: [source.sample(source.init(), k, s) for s in ("train", "val", "test")])
    ranges = {"train": (0, 63), "val": (64, 79), "test": (80, 99)}
    for split, task in zip(("train", "val", "test"), sample(jax.random.key(0)), strict=True):
        assert task.support.x.shape == (5, SIZE, SIZE, 3) and task.query.x.shape == (10, SIZE, SIZE, 3)
        ids = np.round(np.asarray(task.support.x)[:, 0, 0, 0] * 255).astype(int)
        lo, hi = ranges[split]
        assert ids.min() >= lo and ids.max() <= hi and len(set(ids)) == 5, (split, ids)
        # a label names one class: every query image of label l is from the support class of label l
        by_label = dict(zip(np.asarray(task.support.y).tolist(), ids.tolist(), strict=True))
        qids = np.round(np.asarray(task.query.x)[:, 0, 0, 0] * 255).astype(int)
        assert all(by_label[int(y)] == q for y, q in zip(np.asarray(task.query.y), qids, strict=True))


def test_csv_format_matches_pickles(tmp_path, pickles):
    write_csv(tmp_path)
    images, splits, names, info = mi.load_miniimagenet(
        tmp_path, format="auto", image_size=None, cache_dir=tmp_path / "c"
    )
    assert info["format"] == "csv" and {s: len(v) for s, v in splits.items()} == COUNTS
    assert images.shape == (100, PER_CLASS, SIZE, SIZE, 3) and names[:2] == wnids("train")[:2]
    reference, *_ = mi.load_miniimagenet(pickles, image_size=None)
    assert np.abs(images.astype(int) - reference.astype(int)).max() <= 2  # JPEG at quality 100
    again = mi.load_miniimagenet(tmp_path, format="csv", image_size=None, cache_dir=tmp_path / "c")
    assert all(again[3]["cache_hits"].values()) and np.array_equal(again[0], images)


def test_resize_to_image_size(pickles):
    images, *_ = mi.load_miniimagenet(pickles, image_size=4)
    assert images.shape == (100, PER_CLASS, 4, 4, 3)


def one_line(error, *parts):
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as error:
        mi.load_miniimagenet(tmp_path, format="pickle")
    one_line(error, "mini-imagenet-cache-train.pkl", "not found", "meta-learning-lstm")
    with pytest.raises(DataError) as error:
        mi.load_miniimagenet(tmp_path)  # auto -> csv
    one_line(error, "train.csv", "not found")


def test_corrupt_pickle(tmp_path):
    write_pickles(tmp_path)
    (tmp_path / "mini-imagenet-cache-val.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError) as error:
        mi.load_miniimagenet(tmp_path)
    one_line(error, "mini-imagenet-cache-val.pkl", "corrupt")


def test_wrong_class_count_is_refused_unless_allowed(tmp_path):
    write_pickles(tmp_path, {"train": 10, "val": 16, "test": 20})
    with pytest.raises(DataError) as error:
        mi.load_miniimagenet(tmp_path)
    one_line(error, "'train' has 10 classes", "published split has 64", "check_counts")
    _, splits, _, _ = mi.load_miniimagenet(tmp_path, check_counts_=False)
    assert len(splits["train"]) == 10


def test_corrupt_image_and_bad_csv(tmp_path):
    write_csv(tmp_path)
    victim = sorted((tmp_path / "images").iterdir())[5]
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as error:
        mi.load_miniimagenet(tmp_path, cache_dir=tmp_path / "c")
    one_line(error, victim.name, "not a readable image")
    (tmp_path / "val.csv").write_text("name,wnid\n")
    with pytest.raises(DataError) as error:
        mi.read_csv_split(tmp_path / "val.csv")
    one_line(error, "val.csv", "filename,label")


# ProtoNets' tiny protocol runs in tests/runner/test_report.py.
TINY_LEARNERS = ("maml", "fomaml", "metasgd", "anil", "reptile", "matching", "r2d2", "metaoptnet")
PROTOCOL_LEARNERS = ("maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "matching", "r2d2", "metaoptnet")


def test_registered_protocols_validate_and_cite():
    from metajax.config import experiment_config
    from metajax.runner.train import prepare_config

    for learner in PROTOCOL_LEARNERS:
        for shots in (1, 5):
            config = prepare_config(experiment_config(f"{learner}-miniimagenet-5w{shots}s"))
            assert config["data"] == {**config["data"], "name": "miniimagenet", "ways": 5, "shots": shots}
            assert config["data"]["image_size"] == 84 and config["data"]["augment"] == "none"
            ref = config["reference"]
            assert ref["column"] == f"5-way {shots}-shot" and 30 < ref["value"] < 80 and ref["ci95"] > 0
            assert ref["paper"] and ref["where"] and ref["protocol"] and "verified" in ref


@pytest.mark.slow
@pytest.mark.parametrize("learner", TINY_LEARNERS)
def test_tiny_protocol_runs_on_generated_files(learner, pickles, tmp_path):
    from metajax.config import apply_overrides, experiment_config
    from metajax.runner.train import run

    config = apply_overrides(experiment_config(f"{learner}-miniimagenet-5w1s-tiny"), [f"data.root={pickles}"])
    results = run(config, tmp_path / "run", progress=False)
    assert results["step"] == config["steps"]
    assert np.isfinite(results["post_adaptation"]["accuracy"]["mean"])
