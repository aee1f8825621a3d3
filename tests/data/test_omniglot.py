"""The Omniglot reader on the real minimal archives, on generated full-layout archives, and through tfds."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from metajax.data import omniglot as og
from metajax.data.source import sample_tasks
from metajax.errors import DataError
from metajax.registry import get

SMALL1_ALPHABETS = {"Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26}
SMALL2_ALPHABETS = {"Greek": 24, "Japanese_(katakana)": 47, "Latin": 26, "Sanskrit": 42, "Tagalog": 17}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="module")
def loads(omniglot_dir, cache_dir) -> dict[str, og.Omniglot]:
    """The real archives decoded once per module: each alone (cold cache), then both (warm cache)."""
    return {
        "small1": og.load_omniglot([og.SMALL1], root=omniglot_dir, cache_dir=cache_dir),
        "small2": og.load_omniglot([og.SMALL2], root=omniglot_dir, cache_dir=cache_dir),
        "both": og.load_omniglot([og.SMALL2, og.SMALL1], root=omniglot_dir, cache_dir=cache_dir),
    }


def alphabet_counts(data: og.Omniglot) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in data.names:
        counts[name.split("/")[0]] = counts.get(name.split("/")[0], 0) + 1
    return counts


def test_real_subsets_have_the_published_characters(loads):
    small1, small2, both = loads["small1"], loads["small2"], loads["both"]
    assert alphabet_counts(small1) == SMALL1_ALPHABETS and len(small1.names) == 136
    assert alphabet_counts(small2) == SMALL2_ALPHABETS and len(small2.names) == 156
    assert len(both.names) == len(set(both.names)) == 242
    assert both.alphabets() == sorted(SMALL1_ALPHABETS.keys() | SMALL2_ALPHABETS.keys())
    for data in loads.values():
        assert data.images.shape == (len(data.names), 20, 28, 28, 1) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(data.drawers, np.tile(np.arange(1, 21), (len(data.names), 1)))
        assert all(n.split("/")[1].startswith("character") for n in data.names)
    # global ids: distinct per character, within 1..1623, and the same for the shared Greek and Latin
    assert len(set(both.ids.tolist())) == 242 and both.ids.min() >= 1 and both.ids.max() <= 1623
    ids1 = dict(zip(small1.names, small1.ids.tolist(), strict=True))
    ids2 = dict(zip(small2.names, small2.ids.tolist(), strict=True))
    shared = ids1.keys() & ids2.keys()
    assert len(shared) == 50 and all(ids1[n] == ids2[n] for n in shared)
    # the shared characters hold the same images in both archives
    index1, index2 = small1.names.index("Greek/character01"), small2.names.index("Greek/character01")
    np.testing.assert_array_equal(small1.images[index1], small2.images[index2])


def test_ink_is_one_background_zero(loads):
    images = loads["both"].images.astype(np.float32) / 255
    assert images.max() == 1.0 and images.min() == 0.0
    assert 0.02 < images.mean() < 0.3  # thin strokes on a blank page, not the inverse
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.mean() < 0.01


def test_second_load_is_a_cache_hit(loads, omniglot_dir, cache_dir):
    assert loads["small1"].cache_hits == {og.SMALL1: False}
    assert loads["small2"].cache_hits == {og.SMALL2: False}
    assert loads["both"].cache_hits == {og.SMALL1: True, og.SMALL2: True}
    path = og.cache_path(og.SMALL1, root=omniglot_dir, cache_dir=cache_dir)
    assert path.is_file() and cache_dir in path.parents
    assert not list(Path(omniglot_dir).glob("*.npz"))  # never beside the data
    assert og.cache_path(og.SMALL1, root=omniglot_dir, image_size=32, cache_dir=cache_dir) != path
    np.testing.assert_array_equal(loads["both"].images[:136], loads["small1"].images)


def test_subsets_split(loads):
    data = loads["both"]
    splits = og.split_classes(data, "subsets")
    alphabets = {k: {data.names[i].split("/")[0] for i in v} for k, v in splits.items()}
    assert {k: len(v) for k, v in splits.items()} == {"train": 114, "val": 22, "test": 106}
    assert alphabets == {
        "train": {"Balinese", "Greek", "Korean", "Latin"},
        "val": {"Early_Aramaic"},
        "test": {"Japanese_(katakana)", "Sanskrit", "Tagalog"},
    }
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(242))


def test_splits_need_their_archives(loads):
    with pytest.raises(
        DataError, match=r"split 'vinyals' is defined on images_background, images_evaluation.*'subsets'"
    ):
        og.split_classes(loads["both"], "vinyals")
    with pytest.raises(DataError, match=r"images_background_small2 is not loaded"):
        og.split_classes(loads["small1"], "subsets")
    with pytest.raises(DataError, match=r"unknown split 'vinyal'; did you mean 'vinyals'"):
        og.split_classes(loads["both"], "vinyal")


def test_registered_source_samples_test_characters_only(loads, omniglot_dir, cache_dir):
    source = get("datasets", "omniglot")(
        ways=5, shots=1, queries=2, split="subsets", root=str(omniglot_dir), cache_dir=str(cache_dir)
    )
    assert source.output_dim == 5 and source.loss == "cross_entropy"
    assert len(source.info["classes"]["test"]) == 106 and source.info["classes"]["val"][0].startswith("Early_Aramaic/")
    assert set(source.info["archives"]) == {og.SMALL1, og.SMALL2}
    batch = jax.device_get(jax.jit(lambda k: sample_tasks(source, source.init(), k, 4, "test"))(jax.random.key(0)))
    assert batch.support.x.shape == (4, 5, 28, 28, 1) and batch.query.x.shape == (4, 10, 28, 28, 1)
    data = loads["both"]
    flat = data.images.reshape(-1, 28 * 28).astype(np.float32) / 255
    test_names = set(source.info["classes"]["test"])
    for x in batch.support.x.reshape(-1, 28 * 28):
        match = np.flatnonzero(np.abs(flat - x).max(axis=1) < 1e-6)
        assert len(match) >= 1 and data.names[match[0] // 20] in test_names


def one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_truncated_zip_gives_one_line_error(omniglot_dir, tmp_path):
    shutil.copy(Path(omniglot_dir) / f"{og.SMALL1}.zip", tmp_path)
    path = tmp_path / f"{og.SMALL1}.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as error:
        og.load_omniglot([og.SMALL1], root=tmp_path, cache_dir=tmp_path / "cache")
    one_line(error, str(path), "truncated or corrupt", og.URL)


def test_corrupt_member_gives_one_line_error(tmp_path):
    png = io.BytesIO()
    Image.new("1", (8, 8), 1).save(png, format="PNG")
    with zipfile.ZipFile(tmp_path / f"{og.SMALL2}.zip", "w") as z:
        z.writestr(f"{og.SMALL2}/Tagalog/character01/0001_01.png", png.getvalue())
        z.writestr(f"{og.SMALL2}/Tagalog/character01/0001_02.png", b"not a png")
    with pytest.raises(DataError) as error:
        og.load_omniglot([og.SMALL2], root=tmp_path, cache_dir=tmp_path / "cache")
    one_line(error, f"{og.SMALL2}.zip", "truncated or corrupt", og.URL)


def test_missing_archive_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_DATA", str(tmp_path))
    with pytest.raises(DataError) as error:
        og.load_omniglot([og.BACKGROUND], cache_dir=tmp_path / "cache")
    one_line(error, "images_background.zip not found", str(tmp_path / "omniglot"), og.URL, "METAJAX_DATA")


def write_archive(root: Path, name: str, alphabets: dict[str, int], first_id: int, drawings: int, zipped: bool) -> int:
    """Writes ``name`` in the published layout with tiny 1-bit drawings; returns the next global id."""
    files = {}
    next_id = first_id
    for alphabet, count in alphabets.items():
        for number in range(1, count + 1):
            for drawer in range(1, drawings + 1):
                image = Image.new("1", (8, 8), 1)
                image.putpixel((number % 8, drawer % 8), 0)
                png = io.BytesIO()
                image.save(png, format="PNG")
                files[f"{name}/{alphabet}/character{number:02d}/{next_id:04d}_{drawer:02d}.png"] = png.getvalue()
            next_id += 1
    if zipped:
        with zipfile.ZipFile(root / f"{name}.zip", "w") as z:
            for member, data in files.items():
                z.writestr(member, data)
    else:
        for member, data in files.items():
            (root / member).parent.mkdir(parents=True, exist_ok=True)
            (root / member).write_bytes(data)
    return next_id


# The full set's alphabets and character counts (30 background, 964; 20 evaluation, 659).
BACKGROUND_ALPHABETS = {
    **{"Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41},
    **{"Asomtavruli_(Georgian)": 40, "Balinese": 24, "Bengali": 46, "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14},
    **{"Braille": 26, "Burmese_(Myanmar)": 34, "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43},
    **{"Greek": 24, "Gujarati": 48, "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16},
    **{"Japanese_(hiragana)": 52, "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26, "Malay_(Jawi_-_Arabic)": 40},
    **{"Mkhedruli_(Georgian)": 41, "N_Ko": 33, "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14, "Sanskrit": 42},
    **{"Syriac_(Estrangelo)": 23, "Tagalog": 17, "Tifinagh": 55},
}
EVALUATION_ALPHABETS = {
    **{"Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26, "Ge_ez": 26},
    **{"Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26, "Malayalam": 47, "Manipuri": 40},
    **{"Mongolian": 30, "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46, "Sylheti": 28, "Syriac_(Serto)": 23},
    **{"Tengwar": 25, "Tibetan": 42, "ULOG": 26},
}


@pytest.fixture(scope="module")
def full_layout(tmp_path_factory) -> og.Omniglot:
    """Generated full-size archives (1623 characters, 2 drawings of 8x8): background zipped, evaluation unpacked."""
    root = tmp_path_factory.mktemp("omniglot-full")
    next_id = write_archive(root, og.BACKGROUND, BACKGROUND_ALPHABETS, 1, 2, zipped=True)
    write_archive(root, og.EVALUATION, EVALUATION_ALPHABETS, next_id, 2, zipped=False)
    return og.load_omniglot(root=root, image_size=None, cache_dir=root / "cache")


def test_full_layout_splits(full_layout):
    assert len(full_layout.names) == 1623 and full_layout.images.shape[1:] == (2, 8, 8, 1)
    counts = {
        split: {k: len(v) for k, v in og.split_classes(full_layout, split).items()}
        for split in ("vinyals", "background_evaluation", "maml")
    }
    assert counts == {
        "vinyals": {"train": 1028, "val": 172, "test": 423},
        "background_evaluation": {"train": 792, "val": 172, "test": 659},
        "maml": {"train": 1100, "val": 100, "test": 423},
    }
    vinyals = og.split_classes(full_layout, "vinyals")
    test_names = {full_layout.names[i] for i in vinyals["test"]}
    assert "Gurmukhi/character42" in test_names and "Gurmukhi/character41" not in test_names
    maml = [og.split_classes(full_layout, "maml", seed) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(maml[0]["train"], maml[1]["train"])
    assert not np.array_equal(maml[0]["train"], maml[2]["train"])
    for splits in [vinyals, *maml]:
        assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(1623))


def tfds_records(data: og.Omniglot, archive_png: dict[str, list[bytes]]) -> list[dict]:
    """tfds-style records (105x105x3 uint8 at 0/255, ink 0) built from real PNG bytes."""
    records = []
    alphabets = sorted({n.split("/")[0] for n in archive_png})
    for name, pngs in archive_png.items():
        alphabet, character = name.split("/")
        for png in pngs:
            image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.uint8)
            records.append(
                {
                    "image": image,
                    "alphabet": alphabets.index(alphabet),
                    "alphabet_char_id": int(character[len("character") :]) - 1,
                    "label": int(data.ids[data.names.index(name)]) - 1,
                }
            )
    return records


def test_tfds_source_gives_the_same_arrays(loads, omniglot_dir, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    data = loads["small1"]
    names = ["Balinese/character01", "Balinese/character02", "Greek/character03"]
    pngs: dict[str, list[bytes]] = {}
    with zipfile.ZipFile(Path(omniglot_dir) / f"{og.SMALL1}.zip") as z:
        for member in sorted(z.namelist()):
            parts = member.split("/")
            if member.endswith(".png") and "/".join(parts[1:3]) in names:
                pngs.setdefault("/".join(parts[1:3]), []).append(z.read(member))
    records = tfds_records(data, pngs)
    # under the mock, tfds's alphabet names are "0".."49"; map them as the real dataset_info would
    alphabets = sorted({n.split("/")[0] for n in names})
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records):
        monkeypatch.setattr(
            tfds.features.ClassLabel, "names", property(lambda self: alphabets + ["?"] * (self.num_classes - 2))
        )
        got = og.load_omniglot([og.SMALL1], source="tfds")
    assert got.names == names and got.cache_hits == {og.SMALL1: False} and got.checksums == {og.SMALL1: "tfds"}
    for i, name in enumerate(names):
        np.testing.assert_array_equal(got.images[i], data.images[data.names.index(name)])
        assert got.ids[i] == data.ids[data.names.index(name)]
    assert (got.drawers == 0).all()


def test_tfds_random_mock_and_unequal_drawings():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):  # tfds's own random records, read through tfds.data_source
        data = og.load_omniglot([og.SMALL2], source="tfds", image_size=14)
    assert data.images.shape[0] * data.images.shape[1] == 6 and data.images.shape[2:] == (14, 14, 1)
    record = {"image": np.zeros((105, 105, 3), np.uint8), "alphabet": 0, "alphabet_char_id": 0, "label": 0}
    records = [record, record, {**record, "alphabet_char_id": 1, "label": 1}]
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records):
        with pytest.raises(DataError) as error:
            og.load_omniglot([og.SMALL1], source="tfds")
    one_line(error, "tfds omniglot split 'small1'", "[1, 2] drawings", "same number")


def test_tfds_is_imported_lazily():
    code = "import sys, metajax.data.omniglot; assert 'tensorflow_datasets' not in sys.modules, 'eager tfds import'"
    subprocess.run([sys.executable, "-c", code], check=True)
